-- Prosody configuration for the tern-loadtest comparison (loadtest/compare.sh).
--
-- Written for the Debian bookworm package (Prosody 0.12.3, Lua 5.4, epoll backend).
-- compare.sh copies this file into its work directory and replaces @WORK@ with that
-- directory, so all state (account files, pid file, admin socket, log) lives there; nothing
-- under /etc/prosody or /var/lib/prosody is used. It starts `prosody -F --config <copy>` as
-- root (run_as_root below), so the process it starts is the Lua interpreter itself.
--
-- Goal: the same service Tern offers in the comparison (STARTTLS required, SCRAM-SHA-256
-- against hashed credentials, in-band registration) with every throughput cap removed:
-- mod_limits not loaded (no c2s rate), no registration throttle, large stanza limit, no
-- message archive, warnings-only logging. Everything listens on 127.0.0.1.

---------- Process ----------

run_as_root = true -- the work directory belongs to root; nothing here needs privileges
pidfile = "@WORK@/prosody/prosody.pid"
data_path = "@WORK@/prosody/data"
admin_socket = "@WORK@/prosody/prosody.sock"

-- Warnings and errors only, to a file: nothing is written per stanza or per login.
log = { warn = "@WORK@/prosody/prosody.log" }

---------- Network ----------

interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { 5422 } -- RFC 6120 STARTTLS
c2s_direct_tls_ports = { 5423 } -- XEP-0368 direct TLS, for runs with --tls direct
s2s_ports = {} -- no server-to-server listener
-- Lua 5.4's generational collector: shorter pauses on a heap that holds thousands of sessions.
gc = { mode = "generational" }

network_settings = {
	-- The default accept backlog is 128; a login burst of thousands of clients needs more.
	tcp_backlog = 4096;
	-- Small stanzas are written at once, as Tern and ejabberd do (no Nagle delay).
	tcp_nodelay = true;
}

-- Self-signed certificate for "localhost", made by compare.sh with openssl.
certificates = "@WORK@/tls"
ssl = {
	certificate = "@WORK@/tls/localhost.crt";
	key = "@WORK@/tls/localhost.key";
}

c2s_require_encryption = true -- STARTTLS before authentication, as on Tern and ejabberd
s2s_require_encryption = true

-- The authenticated stanza limit defaults to 256 KiB; raise it so it never decides anything.
c2s_stanza_size_limit = 16 * 1024 * 1024

---------- Authentication ----------
--
-- SCRAM-SHA-256 with hashed storage. Prosody 0.12 keeps one SCRAM hash per account in
-- internal_hashed storage and advertises SCRAM for exactly that hash: by default SHA-1
-- (SCRAM-SHA-1 only). The option `password_hash = "SHA-256"` (read by
-- mod_auth_internal_hashed, see /usr/lib/prosody/modules/mod_auth_internal_hashed.lua)
-- switches the stored credentials to SHA-256, and then SCRAM-SHA-256 (and PLAIN over TLS) is
-- what the server offers; SCRAM-SHA-1 is no longer offered. So no compromise is needed: the
-- comparison runs SCRAM-SHA-256 against hashed storage on all three servers. (The
-- alternative, internal_plain storage, would also offer SCRAM-SHA-256 but keeps plaintext
-- passwords and runs PBKDF2 on every login, which neither Tern nor ejabberd does.)
authentication = "internal_hashed"
password_hash = "SHA-256"
-- Prosody's default is 10000; Tern and ejabberd default to 4096. Same work for every server
-- (and for the load harness, which runs PBKDF2 on the client side of each login).
default_iteration_count = 4096
storage = "internal"

---------- In-band registration (XEP-0077) ----------

allow_registration = true
-- mod_register_limits throttles only when registration_throttle_max (or the old
-- min_seconds_between_registrations) is set, and 127.0.0.1 is on its allowlist by default;
-- neither option is set here, so registrations are never throttled.
registration_allowlist = { "127.0.0.1", "::1" }

---------- Modules ----------
--
-- The instant-messaging set of Debian's stock prosody.cfg.lua, without mod_limits (c2s
-- rate limits), mod_mam (message archive), mod_http*/bosh/websocket and mod_pep (not
-- needed by the harness). mod_posix, mod_c2s, mod_presence, mod_message, mod_iq and
-- mod_offline are always loaded by Prosody itself.
modules_enabled = {
	"roster";
	"saslauth";
	"tls";
	"disco";
	"carbons";
	"blocklist";
	"vcard_legacy";
	"private";
	"smacks";
	"version";
	"uptime";
	"time";
	"ping";
	"register";
	"admin_shell"; -- used by compare.sh for bulk account creation
}
modules_disabled = { "s2s"; "s2s_auth_certs" }

VirtualHost "localhost"
