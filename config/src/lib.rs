//! Typed, validated configuration for a Tern node: one TOML file per node, read in two stages
//! so that every problem in the file is reported at once, each naming the file, the key path
//! and the rule.
//!
//! # Layout
//!
//! - `raw` — stage one: TOML text into a [`RawConfig`]; syntax errors name the line and column.
//! - `validate` — stage two: [`RawConfig`] into a [`Config`]; runs the section readers, reports
//!   unknown top-level keys, then the cross-field checks (listener addresses do not collide,
//!   admin listener included; TLS certificate and key come as a pair).
//! - `reader` — the getters for sizes, durations, socket addresses and paths, on top of the
//!   shared reader of `tern-toml-check` (typed getters that record problems instead of
//!   stopping, and the unknown-key report).
//! - `units` — sizes (`"64KiB"`) and durations (`"30s"`).
//! - `error` — [`ConfigError`] (`file: key: rule`) and [`ConfigErrors`] (all of them), the
//!   `tern-toml-check` error types under this crate's names.
//! - One module per section, each owning its typed struct, its defaults and its per-key rules:
//!   `general` ([`General`]), `listener` ([`Listen`]), `admin` ([`Admin`]), `tls` ([`Tls`]),
//!   `auth` ([`Auth`]), `limits` ([`Limits`]), `modules` ([`Modules`]), `storage` ([`Storage`]).
//!
//! The only Tern crate this one depends on is the leaf `tern-toml-check`.
//!
//! The key reference for operators is `docs/configuration.md`; `docs/config/example.toml` sets
//! every key to its default and is checked by this crate's tests.
//!
//! # Example
//!
//! ```
//! use tern_config::Config;
//!
//! let config = Config::from_toml_str("[general]\ndomains = [\"Example.org\"]\n", "tern.toml")?;
//! assert_eq!(config.general.domains, ["example.org"]);
//!
//! let errors = Config::from_toml_str("[general]\ncolour = \"blue\"\n", "tern.toml").unwrap_err();
//! assert_eq!(errors.to_string(), "tern.toml: general.colour: unknown key");
//! # Ok::<(), tern_config::ConfigErrors>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod auth;
mod cluster;
mod error;
#[cfg(test)]
mod fixture;
mod general;
mod http;
mod limits;
mod listener;
mod mesh;
mod modules;
mod raw;
mod reader;
mod storage;
mod tls;
mod units;
mod validate;

use std::path::Path;

pub use admin::{Admin, MIN_TOKEN_CHARS};
pub use auth::{Auth, MAX_SCRAM_ITERATIONS, MIN_SCRAM_ITERATIONS, SUPPORTED_MECHANISMS};
pub use cluster::{Cluster, MAX_DC_NAME};
pub use error::{ConfigError, ConfigErrors, ConfigErrors as Error, Result};
pub use general::{General, MAX_DOMAIN_BYTES};
pub use http::{Bosh, Http};
pub use limits::{Limits, MAX_STANZA_SIZE, MIN_STANZA_SIZE};
pub use listener::{C2sListener, HttpListener, HttpTls, Listen, TlsMode};
pub use mesh::Mesh;
pub use modules::{
    Mam, Modules, Muc, Offline, Pep, Ping, Register, Stored, StreamManagement, Toggle, Version,
};
pub use raw::RawConfig;
pub use storage::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_DATABASE_FILE, DEFAULT_POOL_SIZE, MAX_POOL_SIZE, Postgres,
    Storage, StorageBackend,
};
pub use tls::Tls;

/// A node's whole configuration, validated: every value has its type, is within its rules, and
/// the cross-field checks passed. Only this type reaches the rest of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[general]`: domains, data directory, log level.
    pub general: General,
    /// `[listen]`: client listeners.
    pub listen: Listen,
    /// `[admin]`: the admin API listener.
    pub admin: Admin,
    /// `[tls]`: certificate and key files.
    pub tls: Tls,
    /// `[auth]`: SASL mechanisms and password hashing.
    pub auth: Auth,
    /// `[limits]`: parser, connection and queue limits.
    pub limits: Limits,
    /// `[modules.*]`: optional XMPP modules.
    pub modules: Modules,
    /// `[storage]`: database backend, and its file or server.
    pub storage: Storage,
    /// `[cluster]`: datacenter, node id, topology file.
    pub cluster: Cluster,
    /// `[mesh]`: bridges to the other datacenters.
    pub mesh: Mesh,
    /// `[http]`: WebSocket and BOSH on the HTTP listeners.
    pub http: Http,
}

impl Config {
    /// Reads and validates the file at `path`; messages name the file as `path` displays.
    pub fn load(path: &Path) -> Result<Self> {
        tern_toml_check::load_file(path, Self::from_toml_str)
    }

    /// Parses and validates TOML text; `file` is the name used in messages.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Self> {
        Self::validate(&RawConfig::parse(text, file)?)
    }

    /// Stage two: validates an already-parsed file, reporting every problem at once.
    pub fn validate(raw: &RawConfig) -> Result<Self> {
        validate::validate(raw)
    }

    /// The configuration `tern serve` uses without `--config`: every key at its default
    /// (domain `localhost`, STARTTLS on 5222, direct TLS on 5223, admin API on
    /// 127.0.0.1:5551, data in `tern-data/`).
    pub fn embedded_default() -> Self {
        let general = General::default();
        let storage = Storage::in_data_dir(&general.data_dir);
        Self {
            general,
            listen: Listen::default(),
            admin: Admin::default(),
            tls: Tls::default(),
            auth: Auth::default(),
            limits: Limits::default(),
            modules: Modules::default(),
            storage,
            cluster: Cluster::default(),
            mesh: Mesh::default(),
            http: Http::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::embedded_default()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::fixture::{config, errors};

    const EXAMPLE: &str = include_str!("../../docs/config/example.toml");

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::embedded_default();
        assert_eq!(c.general.domains, ["localhost"]);
        assert_eq!(c.general.data_dir, PathBuf::from("tern-data"));
        assert_eq!(c.general.log_level, "info");
        assert_eq!(
            c.listen.c2s,
            [
                C2sListener {
                    address: addr("0.0.0.0:5222"),
                    tls: TlsMode::StartTls,
                    starttls_required: true,
                },
                C2sListener {
                    address: addr("0.0.0.0:5223"),
                    tls: TlsMode::Direct,
                    starttls_required: true,
                },
            ]
        );
        assert!(c.admin.enabled);
        assert_eq!(c.admin.address, addr("127.0.0.1:5551"));
        assert_eq!(c.admin.token, None);
        assert_eq!(c.tls.cert_file, None);
        assert_eq!(c.tls.key_file, None);
        assert_eq!(
            c.auth.mechanisms,
            [
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-256",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-1",
                "PLAIN"
            ]
        );
        assert_eq!(c.auth.failure_delay, Duration::from_secs(1));
        assert_eq!(c.auth.scram_iterations, 4096);
        assert_eq!(c.limits.max_stanza_size, 64 * 1024);
        assert_eq!(c.limits.max_depth, 32);
        assert_eq!(c.limits.max_attributes, 64);
        assert_eq!(c.limits.max_connections, 10_000);
        assert_eq!(c.limits.handshake_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.session_queue, 1024);
        assert!(!c.modules.register.enabled);
        assert_eq!(c.modules.ping.idle_interval, Some(Duration::from_secs(300)));
        assert_eq!(c.modules.ping.timeout, Duration::from_secs(30));
        assert!(!c.modules.version.show_os);
        assert_eq!(c.storage.backend, StorageBackend::Redb);
        assert_eq!(c.storage.path, PathBuf::from("tern-data/tern.redb"));
        assert_eq!(Config::default(), c);
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        assert_eq!(config(""), Config::embedded_default());
        assert_eq!(
            config("[general]\n[listen]\n[admin]\n[tls]\n[auth]\n[limits]\n[modules]\n[storage]\n"),
            Config::embedded_default()
        );
    }

    #[test]
    fn checked_in_example_equals_the_defaults() {
        let c = Config::from_toml_str(EXAMPLE, "docs/config/example.toml")
            .unwrap_or_else(|e| panic!("example.toml does not validate:\n{e}"));
        assert_eq!(c, Config::embedded_default());
    }

    #[test]
    fn full_file_parses_to_expected_values() {
        let text = r#"
[general]
domains = ["Example.org", "chat.example.org"]
data_dir = "/var/lib/tern"
log_level = "info,tern_node=debug"

[[listen.c2s]]
address = "[::]:5222"
tls = "starttls"
starttls_required = false

[[listen.c2s]]
address = "[::]:5223"
tls = "direct"

[[listen.http]]
address = "127.0.0.1:5280"
secure = true

[admin]
enabled = true
address = "[::1]:5551"
token = "a-token-of-thirty-two-characters"

[tls]
cert_file = "/etc/tern/fullchain.pem"
key_file = "/etc/tern/privkey.pem"

[auth]
mechanisms = ["SCRAM-SHA-256", "SCRAM-SHA-1"]
failure_delay = "2s"
scram_iterations = 100_000

[limits]
max_stanza_size = "1MiB"
max_depth = 64
max_attributes = 128
max_connections = 50000
handshake_timeout = "30s"
session_queue = 4096

[modules.register]
enabled = true

[modules.ping]
idle_interval = "0s"
timeout = "1m"

[modules.version]
show_os = true

[storage]
backend = "redb"
path = "/srv/tern/node1.redb"

[cluster]
dc = "eu-west"
node_id = 3
topology = "/etc/tern/topology.toml"
"#;
        let expected = Config {
            general: General {
                domains: vec!["example.org".to_owned(), "chat.example.org".to_owned()],
                host_types: vec!["default".to_owned()],
                data_dir: PathBuf::from("/var/lib/tern"),
                log_level: "info,tern_node=debug".to_owned(),
            },
            listen: Listen {
                c2s: vec![
                    C2sListener {
                        address: addr("[::]:5222"),
                        tls: TlsMode::StartTls,
                        starttls_required: false,
                    },
                    C2sListener {
                        address: addr("[::]:5223"),
                        tls: TlsMode::Direct,
                        starttls_required: true,
                    },
                ],
                http: vec![HttpListener {
                    address: addr("127.0.0.1:5280"),
                    tls: HttpTls::None,
                    secure: true,
                }],
            },
            admin: Admin {
                enabled: true,
                address: addr("[::1]:5551"),
                token: Some("a-token-of-thirty-two-characters".to_owned()),
            },
            tls: Tls {
                cert_file: Some(PathBuf::from("/etc/tern/fullchain.pem")),
                key_file: Some(PathBuf::from("/etc/tern/privkey.pem")),
            },
            auth: Auth {
                mechanisms: vec!["SCRAM-SHA-256".to_owned(), "SCRAM-SHA-1".to_owned()],
                failure_delay: Duration::from_secs(2),
                scram_iterations: 100_000,
            },
            limits: Limits {
                max_stanza_size: 1024 * 1024,
                max_depth: 64,
                max_attributes: 128,
                max_connections: 50_000,
                handshake_timeout: Duration::from_secs(30),
                session_queue: 4096,
            },
            modules: Modules {
                register: Register { enabled: true },
                ping: Ping {
                    idle_interval: None,
                    timeout: Duration::from_secs(60),
                },
                version: Version { show_os: true },
                offline: Offline::default(),
                ..Modules::default()
            },
            storage: Storage {
                backend: StorageBackend::Redb,
                path: PathBuf::from("/srv/tern/node1.redb"),
                postgres: None,
            },
            cluster: Cluster {
                dc: "eu-west".to_owned(),
                node_id: 3,
                topology: Some(PathBuf::from("/etc/tern/topology.toml")),
            },
            mesh: Mesh::default(),
            http: Http::default(),
        };
        assert_eq!(config(text), expected);
    }

    #[test]
    fn reports_every_error_in_one_file() {
        let text = r#"
colour = "blue"

[general]
domains = []
colour = "red"

[[listen.c2s]]
address = "0.0.0.0:5222"
prot = 5222

[[listen.c2s]]
address = "0.0.0.0:5222"
tls = "tsl"

[admin]
address = "10.0.0.1:5551"
token = "short"

[tls]
cert_file = "cert.pem"

[auth]
failure_delay = "abc"
mechanisms = ["PLAIN", "DIGEST-MD5"]

[limits]
max_stanza_size = "1.5KiB"
max_depth = 1

[modules.ping]
timeout = 30

[storage]
backend = "sqlite"
"#;
        assert_eq!(
            errors(text),
            [
                "tern.toml: general.domains: must list at least one domain",
                "tern.toml: general.colour: unknown key",
                "tern.toml: listen.c2s[0].prot: unknown key",
                "tern.toml: listen.c2s[1].tls: expected \"starttls\" or \"direct\", found \"tsl\"",
                "tern.toml: admin.address: must be a loopback address (127.0.0.0/8 or ::1), \
                 found \"10.0.0.1:5551\"",
                "tern.toml: admin.token: must be at least 16 characters long, found 5",
                "tern.toml: auth.mechanisms[1]: unknown mechanism \"DIGEST-MD5\", expected one of \
                 SCRAM-SHA-256-PLUS, SCRAM-SHA-256, SCRAM-SHA-1-PLUS, SCRAM-SHA-1, PLAIN",
                "tern.toml: auth.failure_delay: invalid duration \"abc\"",
                "tern.toml: limits.max_stanza_size: invalid size \"1.5KiB\": expected a whole \
                 number of bytes, optionally followed by B, KiB, MiB or GiB",
                "tern.toml: limits.max_depth: must be between 2 and 256, found 1",
                "tern.toml: modules.ping.timeout: expected a duration string such as \"30s\", \
                 found an integer",
                "tern.toml: storage.backend: expected \"redb\" or \"postgres\", found \"sqlite\"",
                "tern.toml: colour: unknown key",
                "tern.toml: listen.c2s[1].address: \"0.0.0.0:5222\" is already used by \
                 listen.c2s[0].address",
                "tern.toml: tls.key_file: required when tls.cert_file is set",
            ]
        );
    }

    #[test]
    fn errors_display_one_per_line() {
        let e = Config::from_toml_str("a = 1\nb = 2\n", "node.toml").expect_err("unknown keys");
        assert_eq!(
            e.to_string(),
            "node.toml: a: unknown key\nnode.toml: b: unknown key"
        );
    }

    #[test]
    fn unknown_top_level_section_is_reported() {
        assert_eq!(
            errors("[s2s]\nenabled = true\n\n[bridges]\n"),
            [
                "tern.toml: bridges: unknown key",
                "tern.toml: s2s: unknown key"
            ]
        );
    }

    #[test]
    fn wrong_section_types_are_reported() {
        assert_eq!(
            errors("general = \"x\"\nmodules = []\n"),
            [
                "tern.toml: general: expected a table, found a string",
                "tern.toml: modules: expected a table, found an array",
            ]
        );
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let e = Config::from_toml_str("[general\n", "conf/tern.toml").expect_err("syntax");
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].file, "conf/tern.toml");
        assert!(
            e.to_string()
                .starts_with("conf/tern.toml: invalid TOML at line 1, column "),
            "{e}"
        );
    }

    #[test]
    fn load_reads_the_file_and_names_it() {
        let c = tern_toml_check::testing::check_load(
            "tern-config-test",
            Config::load,
            "[general]\ndomains = [\"example.net\"]\n",
            "[limits]\nmax_depth = 0\n",
            "limits.max_depth: must be between 2 and 256, found 0",
        );
        assert_eq!(c.general.domains, ["example.net"]);
    }

    #[test]
    fn validate_accepts_a_parsed_file() {
        let raw = RawConfig::parse("[modules.register]\nenabled = true\n", "tern.toml")
            .expect("valid toml");
        let c = Config::validate(&raw).expect("valid config");
        assert!(c.modules.register.enabled);
    }
}
