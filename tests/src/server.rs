//! Starting the real `tern` binary for a test.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `tern` binary under test: `$TERN_BIN`, else `target/debug/tern` of this workspace.
pub fn tern_bin() -> PathBuf {
    if let Ok(path) = std::env::var("TERN_BIN") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/tern");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p tern-node --bin tern` first (the test script does)",
        path.display()
    );
    path
}

/// The block test ports come from: above the ranges `tern dev mesh` tests lay their
/// datacenters out in (10,000–29,400) and below the kernel's ephemeral range (32,768 up), so no
/// outgoing connection or `bind(0)` of a test running at the same time can take a port between
/// its pick and the server's bind (which happened when ports were picked by binding port 0).
const TEST_PORTS: std::ops::Range<u32> = 29_500..32_700;

/// The next candidate port: a process-wide counter through [`TEST_PORTS`], starting at an
/// offset from the process id, so tests of one process never get the same port twice (until
/// the block wraps, thousands of picks later) and two processes rarely start at one place.
fn next_candidate() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let seed = (std::process::id().wrapping_mul(2_654_435_761)) % span;
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % span;
    u16::try_from(TEST_PORTS.start + n).expect("test ports fit in u16")
}

/// `N` distinct ports on 127.0.0.1 that are free for TCP right now, from [`TEST_PORTS`].
pub fn free_ports<const N: usize>() -> [u16; N] {
    std::array::from_fn(|_| free_port_where(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()))
}

/// A port on 127.0.0.1 free for UDP right now (a bridge endpoint), from [`TEST_PORTS`].
pub fn free_udp_port() -> u16 {
    free_port_where(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok())
}

fn free_port_where(free: impl Fn(u16) -> bool) -> u16 {
    for _ in TEST_PORTS {
        let port = next_candidate();
        if free(port) {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

/// A fresh, unique temporary directory (removed when the test server is dropped).
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("tern-it-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A command's standard output then standard error, as text.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `within`; panics naming
/// `what` after that.
pub fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `tern serve` process with its own ports and data directory.
#[derive(Debug)]
pub struct TestServer {
    /// The scratch directory (config file, data dir).
    pub dir: PathBuf,
    /// The configuration file.
    pub config: PathBuf,
    /// STARTTLS client port.
    pub starttls_port: u16,
    /// Direct TLS client port.
    pub tls_port: u16,
    /// Admin API port.
    pub admin_port: u16,
    /// Plain HTTP port for web clients (WebSocket `/ws`, BOSH `/http-bind`); 0 when the
    /// configuration was written by someone else.
    pub http_port: u16,
    child: Option<Child>,
    keep_dir: bool,
}

impl TestServer {
    /// Starts a server; `extra` is appended to the generated configuration (TOML).
    pub fn start(tag: &str, extra: &str) -> Self {
        let dir = temp_dir(tag);
        let mut server = Self::configure(dir, extra);
        server.spawn();
        server
    }

    /// Writes the configuration for a server in `dir` without starting it.
    pub fn configure(dir: PathBuf, extra: &str) -> Self {
        let [starttls_port, tls_port, admin_port, http_port] = free_ports();
        let config = dir.join("tern.toml");
        let text = format!(
            r#"[general]
domains = ["localhost", "example.test"]
data_dir = "{data}"
log_level = "info"

[[listen.c2s]]
address = "127.0.0.1:{starttls_port}"
tls = "starttls"

[[listen.c2s]]
address = "127.0.0.1:{tls_port}"
tls = "direct"

[[listen.http]]
address = "127.0.0.1:{http_port}"
tls = "none"

[admin]
address = "127.0.0.1:{admin_port}"

{extra}
"#,
            data = dir.join("data").display()
        );
        std::fs::write(&config, text).expect("write config");
        Self {
            dir,
            config,
            starttls_port,
            tls_port,
            admin_port,
            http_port,
            child: None,
            keep_dir: false,
        }
    }

    /// A server for a configuration written by someone else (`tern dev mesh`, say), used as it
    /// is; nothing is started. `dir` receives the log (`server.log`) and is removed on drop;
    /// `ports` are the STARTTLS, direct TLS and admin ports the configuration names.
    pub fn from_config(dir: PathBuf, config: PathBuf, ports: [u16; 3]) -> Self {
        let [starttls_port, tls_port, admin_port] = ports;
        Self {
            dir,
            config,
            starttls_port,
            tls_port,
            admin_port,
            http_port: 0,
            child: None,
            keep_dir: false,
        }
    }

    /// Starts (or restarts) the process and waits until it accepts clients.
    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("server.log")).expect("log file");
        let child = Command::new(tern_bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tern");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let http = (self.http_port != 0).then_some(self.http_port);
        for port in [self.starttls_port, self.tls_port, self.admin_port]
            .into_iter()
            .chain(http)
        {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!("tern exited early ({status}):\n{}", self.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "tern did not listen on {port}:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Kills the process at once (SIGKILL): no shutdown, nothing flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The entry of session `jid` in `tern ctl --json session list` (its transport, datacenter,
    /// availability…); panics with the whole list when it is not there.
    pub fn listed_session(&self, jid: &str) -> serde_json::Value {
        let listed = output_text(&self.ctl(&["--json", "session", "list"]));
        let sessions: serde_json::Value = serde_json::from_str(&listed).expect("json");
        sessions["session"]["listSessions"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["jid"] == jid).cloned())
            .unwrap_or_else(|| panic!("{jid} not listed: {listed}"))
    }

    /// Stops the process (SIGTERM, then kill after 5 s) and returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs `tern ctl --config <config> args…`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(tern_bin())
            .arg("ctl")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run tern ctl")
    }

    /// Registers `user@domain` with `tern ctl account register`, panicking on failure.
    pub fn register(&self, user: &str, domain: &str, password: &str) {
        let out = self.ctl(&[
            "account",
            "register",
            "--username",
            user,
            "--domain",
            domain,
            "--password",
            password,
        ]);
        assert!(
            out.status.success(),
            "register {user}@{domain} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Keeps the scratch directory after the test (for debugging).
    pub fn keep(&mut self) {
        self.keep_dir = true;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        if !self.keep_dir && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `tern ctl` against `server` and expects success; returns its output.
pub fn ctl_ok(server: &TestServer, args: &[&str]) -> String {
    let out = server.ctl(args);
    assert!(
        out.status.success(),
        "tern ctl {args:?}: {}",
        output_text(&out)
    );
    output_text(&out)
}

/// Runs `tern ctl` against `server` and expects exit code 1 (the node refused the request);
/// returns its output.
pub fn ctl_refused(server: &TestServer, args: &[&str]) -> String {
    let out = server.ctl(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "tern ctl {args:?}: {}",
        output_text(&out)
    );
    output_text(&out)
}
