"""Start, configure and stop a real `tern` server process for the interop suite.

A `TernServer` owns one temporary data directory, one generated TOML config
with free 127.0.0.1 ports, and one `tern serve` child process whose stderr is
written to a file so it can be dumped when a test fails.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Servers started and not yet stopped; conftest dumps their logs on failure.
RUNNING: list["TernServer"] = []

_account_counter = itertools.count(1)


def tern_binary() -> Path:
    """Path of the server binary: $TERN_BIN or ../../target/debug/tern."""
    default = HERE / ".." / ".." / "target" / "debug" / "tern"
    return Path(os.environ.get("TERN_BIN", str(default))).resolve()


def free_ports(count: int) -> list[int]:
    """Return `count` distinct currently-free TCP ports on 127.0.0.1."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def toml_value(value) -> str:
    """Render a Python scalar or list as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")


@dataclass(frozen=True)
class Account:
    """A registered account: bare JID and password."""

    user: str
    domain: str
    password: str

    @property
    def jid(self) -> str:
        return f"{self.user}@{self.domain}"


class ServerDied(AssertionError):
    """The server process exited while it was expected to be serving."""


class TernServer:
    """One `tern serve` process with its own config, ports and data dir."""

    def __init__(self, workdir: Path, *, register: bool = False,
                 failure_delay: str = "200ms",
                 max_stanza_size: str = "64KiB",
                 domains: tuple[str, ...] = ("localhost", "example.test"),
                 extra_sections: dict[str, dict] | None = None,
                 http: bool = False):
        self.binary = tern_binary()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.config_path = workdir / "tern.toml"
        self.stderr_path = workdir / "tern.stderr"
        self.stdout_path = workdir / "tern.stdout"
        self.domains = domains
        self.failure_delay = failure_delay
        self.max_stanza_size = max_stanza_size
        self.register_enabled = register
        self.extra_sections = extra_sections or {}
        (self.starttls_port, self.direct_port, self.admin_port,
         self.http_port) = free_ports(4)
        #: Whether a plain-HTTP listener (WebSocket `/ws`, BOSH `/http-bind`) is
        #: configured on `http_port`.
        self.http = http
        self.proc: subprocess.Popen | None = None
        self._exit_expected = False
        self._stderr_file = None
        self._stdout_file = None

    # -- configuration ---------------------------------------------------

    def config_text(self) -> str:
        log_level = os.environ.get("TERN_INTEROP_LOG", "info")
        lines = [
            "[general]",
            f"domains = {toml_value(list(self.domains))}",
            f"data_dir = {toml_value(str(self.data_dir))}",
            f"log_level = {toml_value(log_level)}",
            "",
            # Without an HTTP listener of its own, a server would bind the defaults (5280, 5443).
            *([] if self.http else ["[listen]", "http = []", ""]),
            "[[listen.c2s]]",
            f'address = "127.0.0.1:{self.starttls_port}"',
            'tls = "starttls"',
            "",
            "[[listen.c2s]]",
            f'address = "127.0.0.1:{self.direct_port}"',
            'tls = "direct"',
            "",
            *([
                "[[listen.http]]",
                f'address = "127.0.0.1:{self.http_port}"',
                'tls = "none"',
                "",
            ] if self.http else []),
            "[admin]",
            f'address = "127.0.0.1:{self.admin_port}"',
            "",
            "[auth]",
            f"failure_delay = {toml_value(self.failure_delay)}",
            "",
            "[limits]",
            f"max_stanza_size = {toml_value(self.max_stanza_size)}",
            "",
            "[modules.register]",
            f"enabled = {toml_value(self.register_enabled)}",
            "",
        ]
        for section, keys in self.extra_sections.items():
            lines.append(f"[{section}]")
            for key, value in keys.items():
                lines.append(f"{key} = {toml_value(value)}")
            lines.append("")
        return "\n".join(lines)

    # -- process lifecycle -------------------------------------------------

    def start(self, timeout: float = 30.0) -> "TernServer":
        if not self.binary.is_file():
            raise FileNotFoundError(
                f"tern binary not found at {self.binary}; build it with "
                "`cargo build -p tern-node --bin tern` or set TERN_BIN")
        self.config_path.write_text(self.config_text())
        self._stderr_file = open(self.stderr_path, "wb")
        self._stdout_file = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=self._stdout_file,
            stderr=self._stderr_file, cwd=self.workdir)
        RUNNING.append(self)
        deadline = time.monotonic() + timeout
        pending = {self.starttls_port, self.direct_port}
        if self.http:
            pending.add(self.http_port)
        while pending:
            if self.proc.poll() is not None:
                raise ServerDied(
                    f"tern exited with {self.proc.returncode} during startup:\n"
                    + self.log_tail())
            for port in list(pending):
                try:
                    with socket.create_connection(("127.0.0.1", port), 0.2):
                        pending.discard(port)
                except OSError:
                    pass
            if pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"tern did not accept on ports {sorted(pending)} within "
                        f"{timeout}s:\n" + self.log_tail())
                time.sleep(0.05)
        while not self.cert_path.is_file():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.cert_path} was not created")
            time.sleep(0.05)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise ServerDied(f"tern is not running (exit code {code}):\n"
                             + self.log_tail())

    def terminate(self) -> None:
        """Send SIGTERM as a test step; the exit is then not a crash."""
        assert self.proc is not None
        self._exit_expected = True
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int | None:
        """SIGTERM, wait up to 10 s, then SIGKILL. Returns the exit code.

        Raises ServerDied if the process had already exited on its own
        before being asked to stop (a crash during the tests).
        """
        if self.proc is None:
            return None
        died_early = self.proc.poll() is not None and not self._exit_expected
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in (self._stderr_file, self._stdout_file):
            if f is not None:
                f.close()
        if self in RUNNING:
            RUNNING.remove(self)
        if died_early:
            raise ServerDied(
                f"tern exited on its own with code {self.proc.returncode} "
                "before the end of the tests:\n" + self.log_tail())
        return self.proc.returncode

    def log_tail(self, max_lines: int = 200) -> str:
        text = ""
        for path in (self.stderr_path, self.stdout_path):
            try:
                content = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            if content:
                lines = content.splitlines()[-max_lines:]
                text += f"--- {path.name} ---\n" + "\n".join(lines) + "\n"
        return text or "(no output)"

    # -- TLS -----------------------------------------------------------------

    @property
    def cert_path(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    def client_ssl_context(self) -> ssl.SSLContext:
        """Context that trusts exactly the server's self-signed certificate.

        Hostname checking is off (the cert covers the served domains, but the
        tests connect to 127.0.0.1); the chain itself is verified.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(self.cert_path))
        return ctx

    # -- admin CLI -------------------------------------------------------------

    def ctl(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.binary), "ctl", "--config", str(self.config_path), *args],
            capture_output=True, text=True, timeout=timeout, cwd=self.workdir)

    def register(self, user: str, password: str,
                 domain: str = "localhost") -> Account:
        res = self.ctl("account", "register", "--username", user,
                       "--domain", domain, "--password", password)
        assert res.returncode == 0, (
            f"`tern ctl account register {user}@{domain}` exited "
            f"{res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}")
        return Account(user, domain, password)

    def new_account(self, prefix: str = "user",
                    domain: str = "localhost") -> Account:
        """Register a fresh account with a unique name via `tern ctl`."""
        n = next(_account_counter)
        return self.register(f"{prefix}{n}", f"pw-{prefix}-{n}-Secret!", domain)
