//! `idle_conns`: memory per idle, authenticated TLS client connection on a running `tern` node.
//!
//! ```text
//! idle_conns --addr 127.0.0.1:5222 --domain localhost --users 5000 --password P --pid SERVER_PID
//!            [--direct-tls] [--register] [--concurrency 200] [--settle 3] [--prefix idle]
//! ```
//!
//! The tool reads the server's resident set (`VmRSS` in `/proc/PID/status`), opens one
//! connection per user `{prefix}0..{prefix}{N-1}` — STARTTLS (or direct TLS), SASL PLAIN, resource
//! binding, roster fetch, initial presence and a ping round trip, as a real client logs in — with
//! at most `--concurrency` logins in flight, keeps them all open and idle until the server's RSS
//! settles, reads it again, and prints
//! `connections=N rss_before_kib=… rss_after_kib=… per_connection_bytes=…` and one JSON line.
//! Then it closes every stream cleanly and reports the RSS after the close too.
//!
//! With `--register` it first creates the users itself by XEP-0077 in-band registration (the
//! node needs `[modules.register] enabled = true`); an existing account counts as created.
//!
//! The client is deliberately light: one thread (`current_thread` runtime), no buffer kept per
//! idle connection beyond the TLS stream itself. The process needs one file descriptor per
//! connection: raise the soft limit (`ulimit -n 20000`) before starting it and the server.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls_pki_types::ServerName;
use tern_xmpp_proto::element::escape;
use tern_xmpp_proto::{Element, Frame, Framer, Limits, ns};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long one login (or registration) may take, TCP connect to the ping answer.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per connection before the run is abandoned (a loaded server may drop a handshake).
const ATTEMPTS: u32 = 3;
/// Bytes read from a socket at a time during a login.
const READ_CHUNK: usize = 4096;
/// The resource every session binds.
const RESOURCE: &str = "idle";

const USAGE: &str = "usage: idle_conns --addr HOST:PORT --domain DOMAIN --users N --password P \
    --pid SERVER_PID [--direct-tls] [--register] [--concurrency N] [--settle SECS] [--prefix NAME]";

/// Command-line settings.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    /// The client listener of the node.
    addr: SocketAddr,
    /// The XMPP domain (the stream's `to`, the TLS server name).
    domain: String,
    /// How many connections (and users) to open.
    users: usize,
    /// The password of every user.
    password: String,
    /// The server's process id, for `/proc/PID/status`.
    pid: u32,
    /// The listener is direct TLS (XEP-0368) rather than STARTTLS.
    direct_tls: bool,
    /// Register the users in band before measuring.
    register: bool,
    /// Logins in flight at once.
    concurrency: usize,
    /// Minimum wait for the server's memory to settle.
    settle: Duration,
    /// Username prefix; users are `{prefix}0..{prefix}{N-1}`.
    prefix: String,
}

impl Args {
    /// Parses the arguments after the program name; `Ok(None)` when help was asked for.
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Self>> {
        let mut addr = None;
        let mut domain = None;
        let mut users = None;
        let mut password = None;
        let mut pid = None;
        let mut direct_tls = false;
        let mut register = false;
        let mut concurrency = 200;
        let mut settle = Duration::from_secs(3);
        let mut prefix = "idle".to_owned();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| anyhow!("{flag} needs a value"));
            match flag.as_str() {
                "--addr" => {
                    let v = value()?;
                    addr = Some(v.parse().with_context(|| format!("--addr {v:?}"))?);
                }
                "--domain" => domain = Some(value()?),
                "--users" => users = Some(number(&flag, &value()?)?),
                "--password" => password = Some(value()?),
                "--pid" => pid = Some(number(&flag, &value()?)?),
                "--concurrency" => concurrency = number(&flag, &value()?)?,
                "--settle" => settle = Duration::from_secs(number(&flag, &value()?)?),
                "--prefix" => prefix = value()?,
                "--direct-tls" => direct_tls = true,
                "--register" => register = true,
                "-h" | "--help" => return Ok(None),
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        let missing = |name: &str| anyhow!("{name} is required\n{USAGE}");
        let args = Self {
            addr: addr.ok_or_else(|| missing("--addr"))?,
            domain: domain.ok_or_else(|| missing("--domain"))?,
            users: users.ok_or_else(|| missing("--users"))?,
            password: password.ok_or_else(|| missing("--password"))?,
            pid: pid.ok_or_else(|| missing("--pid"))?,
            direct_tls,
            register,
            concurrency,
            settle,
            prefix,
        };
        ensure!(args.users > 0, "--users must be at least 1");
        ensure!(args.concurrency > 0, "--concurrency must be at least 1");
        ensure!(!args.password.is_empty(), "--password must not be empty");
        Ok(Some(args))
    }

    /// The username of connection `i`.
    fn user(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value
        .parse()
        .with_context(|| format!("{flag} {value:?} is not a number"))
}

/// A TLS connector with the ring provider that trusts the server's self-signed certificate
/// (the harness's own, shared with the integration tests).
fn tls_connector() -> Result<TlsConnector> {
    Ok(tern_tests::client::insecure_connector())
}

/// One XMPP stream during negotiation: the transport and a framer for what the server sends.
struct Wire<S> {
    io: S,
    framer: Framer,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    fn new(io: S) -> Self {
        Self {
            io,
            framer: Framer::new(Limits::default()),
            buf: vec![0; READ_CHUNK],
        }
    }

    async fn send(&mut self, xml: &str) -> Result<()> {
        self.io.write_all(xml.as_bytes()).await.context("write")?;
        self.io.flush().await.context("flush")
    }

    /// Opens (or restarts) the stream and returns the server's `<stream:features/>`.
    async fn open(&mut self, domain: &str) -> Result<Element> {
        self.framer = Framer::new(Limits::default());
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' to='{}' \
             version='1.0' xml:lang='en'>",
            ns::CLIENT,
            ns::STREAMS,
            escape(domain)
        ))
        .await?;
        match self.next_frame().await? {
            Frame::Header(_) => {}
            Frame::Element(_) => bail!("the server sent an element before its stream header"),
            Frame::Close => bail!("the server closed the stream before opening it"),
        }
        self.expect("stream features", |e| e.is("features", ns::STREAMS))
            .await
    }

    async fn next_frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = self.framer.next_frame().context("server stream")? {
                return Ok(frame);
            }
            let n = self.io.read(&mut self.buf).await.context("read")?;
            ensure!(n > 0, "the server closed the connection");
            self.framer.push(&self.buf[..n]);
        }
    }

    /// The next element for which `wanted` holds, skipping others (presence pushes and the
    /// like); a stream error or the end of the stream is an error.
    async fn expect(&mut self, what: &str, wanted: impl Fn(&Element) -> bool) -> Result<Element> {
        loop {
            let bytes = match self.next_frame().await? {
                Frame::Element(bytes) => bytes,
                Frame::Header(_) => bail!("unexpected stream header while waiting for {what}"),
                Frame::Close => bail!("the server closed the stream while waiting for {what}"),
            };
            let element = Element::parse(&bytes, ns::CLIENT)
                .with_context(|| format!("parse {}", String::from_utf8_lossy(&bytes)))?;
            if element.is("error", ns::STREAMS) {
                bail!(
                    "stream error while waiting for {what}: {}",
                    first_child_name(&element)
                );
            }
            if wanted(&element) {
                return Ok(element);
            }
        }
    }

    /// Sends an IQ and waits for its result; an error reply is an error.
    async fn iq(&mut self, id: &str, xml: &str) -> Result<Element> {
        self.send(xml).await?;
        let reply = self
            .expect(id, |e| e.is("iq", ns::CLIENT) && e.attr("id") == Some(id))
            .await?;
        match reply.attr("type") {
            Some("result") => Ok(reply),
            _ => bail!("iq {id} failed: {}", stanza_condition(&reply)),
        }
    }

    /// STARTTLS on an open plaintext stream: `<starttls/>` and the server's `<proceed/>`.
    async fn starttls(&mut self, features: &Element) -> Result<()> {
        ensure!(
            features.has_child("starttls", ns::TLS),
            "the server does not offer STARTTLS"
        );
        self.send(&format!("<starttls xmlns='{}'/>", ns::TLS))
            .await?;
        let answer = self.expect("proceed", |e| e.ns() == ns::TLS).await?;
        ensure!(
            answer.name() == "proceed",
            "STARTTLS refused: <{}/>",
            answer.name()
        );
        Ok(())
    }

    /// SASL PLAIN on a secure stream, then the stream restart; returns the new features.
    async fn authenticate(&mut self, domain: &str, user: &str, password: &str) -> Result<Element> {
        let credentials = BASE64.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='{}' mechanism='PLAIN'>{credentials}</auth>",
            ns::SASL
        ))
        .await?;
        let outcome = self
            .expect("sasl outcome", |e| {
                e.ns() == ns::SASL && matches!(e.name(), "success" | "failure")
            })
            .await?;
        if outcome.name() == "failure" {
            bail!(
                "authentication of {user} failed: {}",
                first_child_name(&outcome)
            );
        }
        self.open(domain).await
    }

    /// Binds a resource, fetches the roster, sends initial presence and waits for a ping
    /// answer, so the session is fully set up on the server when this returns.
    async fn start_session(&mut self, domain: &str, features: &Element) -> Result<String> {
        ensure!(
            features.has_child("bind", ns::BIND),
            "the server does not offer resource binding"
        );
        let bound = self
            .iq(
                "bind",
                &format!(
                    "<iq type='set' id='bind'><bind xmlns='{}'><resource>{RESOURCE}</resource></bind></iq>",
                    ns::BIND
                ),
            )
            .await?;
        let jid = bound
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("jid", ns::BIND))
            .map(Element::text)
            .ok_or_else(|| anyhow!("the bind result has no jid"))?;
        self.iq(
            "roster",
            &format!(
                "<iq type='get' id='roster'><query xmlns='{}'/></iq>",
                ns::ROSTER
            ),
        )
        .await?;
        self.send("<presence/>").await?;
        self.iq(
            "ping",
            &format!(
                "<iq type='get' id='ping' to='{}'><ping xmlns='{}'/></iq>",
                escape(domain),
                ns::PING
            ),
        )
        .await?;
        Ok(jid)
    }

    /// XEP-0077 registration on a secure, unauthenticated stream; `Ok(false)` when the
    /// account already exists.
    async fn register(&mut self, features: &Element, user: &str, password: &str) -> Result<bool> {
        ensure!(
            features.has_child("register", ns::REGISTER_FEATURE),
            "the server does not offer in-band registration (set [modules.register] enabled = true)"
        );
        self.send(&format!(
            "<iq type='set' id='reg'><query xmlns='{}'><username>{}</username><password>{}</password></query></iq>",
            ns::REGISTER,
            escape(user),
            escape(password)
        ))
        .await?;
        let reply = self
            .expect("registration result", |e| {
                e.is("iq", ns::CLIENT) && e.attr("id") == Some("reg")
            })
            .await?;
        match (reply.attr("type"), stanza_condition(&reply).as_str()) {
            (Some("result"), _) => Ok(true),
            (Some("error"), "conflict") => Ok(false),
            (_, condition) => bail!("registration of {user} failed: {condition}"),
        }
    }

    /// Ends the stream cleanly.
    async fn close(&mut self) -> Result<()> {
        self.send("</stream:stream>").await?;
        self.io.shutdown().await.context("shutdown")
    }
}

/// The name of an element's first child (a stream or SASL error condition).
fn first_child_name(element: &Element) -> String {
    element
        .children()
        .next()
        .map_or_else(|| "(no condition)".to_owned(), |c| c.name().to_owned())
}

/// The RFC 6120 condition of a stanza error reply.
fn stanza_condition(reply: &Element) -> String {
    reply
        .children()
        .find(|c| c.name() == "error")
        .and_then(|e| e.children().find(|c| c.ns() == ns::STANZAS))
        .map_or_else(
            || "(no error condition)".to_owned(),
            |c| c.name().to_owned(),
        )
}

/// A connection that has passed TLS and is ready for SASL, with its current features.
async fn connect_secure(
    args: &Args,
    tls: &TlsConnector,
) -> Result<(Wire<TlsStream<TcpStream>>, Element)> {
    let tcp = TcpStream::connect(args.addr)
        .await
        .with_context(|| format!("connect to {}", args.addr))?;
    tcp.set_nodelay(true).context("nodelay")?;
    let name = ServerName::try_from(args.domain.clone()).context("tls server name")?;
    let tcp = if args.direct_tls {
        tcp
    } else {
        let mut plain = Wire::new(tcp);
        let features = plain.open(&args.domain).await?;
        plain.starttls(&features).await?;
        plain.io
    };
    let io = tls.connect(name, tcp).await.context("tls handshake")?;
    let mut wire = Wire::new(io);
    let features = wire.open(&args.domain).await?;
    Ok((wire, features))
}

/// A full login of user `i`; returns the idle TLS stream.
async fn login(args: &Args, tls: &TlsConnector, i: usize) -> Result<TlsStream<TcpStream>> {
    let user = args.user(i);
    let (mut wire, _) = connect_secure(args, tls).await?;
    let features = wire
        .authenticate(&args.domain, &user, &args.password)
        .await?;
    wire.start_session(&args.domain, &features).await?;
    Ok(wire.io)
}

/// Registers user `i`; `Ok(false)` when it existed already.
async fn register(args: &Args, tls: &TlsConnector, i: usize) -> Result<bool> {
    let (mut wire, features) = connect_secure(args, tls).await?;
    let created = wire
        .register(&features, &args.user(i), &args.password)
        .await?;
    wire.close().await?;
    Ok(created)
}

/// Runs `task(i)` for every `i < n` with at most `concurrency` in flight, each retried up to
/// [`ATTEMPTS`] times under [`LOGIN_TIMEOUT`]; returns the outputs in index order.
async fn run_all<T, F, Fut>(what: &str, n: usize, concurrency: usize, task: F) -> Result<Vec<T>>
where
    T: 'static,
    F: Fn(usize) -> Fut + Clone + 'static,
    Fut: Future<Output = Result<T>> + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut set = JoinSet::new();
    for i in 0..n {
        let permits = Arc::clone(&permits);
        let task = task.clone();
        set.spawn_local(async move {
            let _permit = permits.acquire_owned().await.context("semaphore closed")?;
            let mut last = anyhow!("no attempt made");
            for _ in 0..ATTEMPTS {
                match tokio::time::timeout(LOGIN_TIMEOUT, task(i)).await {
                    Ok(Ok(out)) => return Ok((i, out)),
                    Ok(Err(e)) => last = e,
                    Err(_) => last = anyhow!("timed out after {LOGIN_TIMEOUT:?}"),
                }
            }
            Err(last.context(format!("connection {i}")))
        });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut done = 0;
    let step = (n / 10).max(1);
    while let Some(joined) = set.join_next().await {
        let (i, value) = joined.context("task panicked")??;
        out[i] = Some(value);
        done += 1;
        if done % step == 0 || done == n {
            eprintln!("{what}: {done}/{n}");
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| anyhow!("{what} {i} did not finish")))
        .collect()
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    parse_vm_rss(&status).ok_or_else(|| anyhow!("no VmRSS line in {path}"))
}

/// The `VmRSS:   1234 kB` line of a `/proc/PID/status` text.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(value)
}

/// Waits at least `settle`, then until two reads a second apart differ by at most 1% (giving
/// up after 30 more seconds); returns the last read.
async fn settled_rss(pid: u32, settle: Duration) -> Result<u64> {
    tokio::time::sleep(settle).await;
    let mut last = rss_kib(pid)?;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_kib(pid)?;
        let settled = now.abs_diff(last) * 100 <= last;
        last = now;
        if settled {
            break;
        }
    }
    Ok(last)
}

/// Server memory per connection, in bytes, from two RSS reads in KiB.
fn per_connection_bytes(before_kib: u64, after_kib: u64, connections: usize) -> i64 {
    let delta = i128::from(after_kib) - i128::from(before_kib);
    let per = delta * 1024 / i128::try_from(connections.max(1)).unwrap_or(i128::MAX);
    i64::try_from(per).unwrap_or(i64::MAX)
}

async fn run(args: Arc<Args>) -> Result<()> {
    let tls = tls_connector()?;
    if args.register {
        let started = Instant::now();
        let created = run_all("register", args.users, args.concurrency, {
            let (args, tls) = (Arc::clone(&args), tls.clone());
            move |i| {
                let (args, tls) = (Arc::clone(&args), tls.clone());
                async move { register(&args, &tls, i).await }
            }
        })
        .await?;
        let new = created.iter().filter(|c| **c).count();
        eprintln!(
            "registered {new} new users ({} existed) in {:.1}s",
            args.users - new,
            started.elapsed().as_secs_f64()
        );
    }
    let rss_before_kib = settled_rss(args.pid, args.settle).await?;
    eprintln!("server rss before: {rss_before_kib} KiB");
    let started = Instant::now();
    let streams = run_all("login", args.users, args.concurrency, {
        let (args, tls) = (Arc::clone(&args), tls.clone());
        move |i| {
            let (args, tls) = (Arc::clone(&args), tls.clone());
            async move { login(&args, &tls, i).await }
        }
    })
    .await?;
    let open_seconds = started.elapsed().as_secs_f64();
    let connections = streams.len();
    let rss_after_kib = settled_rss(args.pid, args.settle).await?;
    let client_rss_kib = rss_kib(std::process::id())?;
    let per_connection = per_connection_bytes(rss_before_kib, rss_after_kib, connections);
    println!(
        "connections={connections} rss_before_kib={rss_before_kib} rss_after_kib={rss_after_kib} \
         per_connection_bytes={per_connection}"
    );

    let streams: Vec<_> = streams.into_iter().map(Some).collect();
    let streams = Rc::new(RefCell::new(streams));
    run_all("close", connections, args.concurrency, {
        let streams = Rc::clone(&streams);
        move |i| {
            let stream = streams.borrow_mut()[i].take();
            async move {
                // A stream taken by an earlier attempt was already being closed.
                let Some(stream) = stream else {
                    return Ok(());
                };
                Wire::new(stream).close().await
            }
        }
    })
    .await?;
    let rss_closed_kib = settled_rss(args.pid, args.settle).await?;
    let summary = serde_json::json!({
        "connections": connections,
        "transport": if args.direct_tls { "direct-tls" } else { "starttls" },
        "rss_before_kib": rss_before_kib,
        "rss_after_kib": rss_after_kib,
        "rss_closed_kib": rss_closed_kib,
        "per_connection_bytes": per_connection,
        "open_seconds": (open_seconds * 10.0).round() / 10.0,
        "client_rss_kib": client_rss_kib,
    });
    println!("{summary}");
    Ok(())
}

fn main() -> Result<()> {
    let Some(args) = Args::parse(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run(Arc::new(args)))
}

#[cfg(test)]
mod tests {
    use tern_xmpp_proto::sasl::{Mechanism, StoredCredentials};
    use tern_xmpp_proto::stream::{Command, Entropy, Event, ServerStream, StreamConfig, TlsPolicy};
    use tokio::io::DuplexStream;

    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_every_flag() {
        let args = Args::parse(argv(
            "--addr 127.0.0.1:5223 --domain localhost --users 5000 --password pw --pid 42 \
             --direct-tls --register --concurrency 50 --settle 5 --prefix bench",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(args.addr, "127.0.0.1:5223".parse().unwrap());
        assert_eq!(args.users, 5000);
        assert_eq!(args.pid, 42);
        assert!(args.direct_tls && args.register);
        assert_eq!(args.concurrency, 50);
        assert_eq!(args.settle, Duration::from_secs(5));
        assert_eq!(args.user(7), "bench7");
    }

    #[test]
    fn defaults_and_missing_arguments() {
        let args = Args::parse(argv(
            "--addr 127.0.0.1:5222 --domain localhost --users 3 --password pw --pid 1",
        ))
        .unwrap()
        .unwrap();
        assert!(!args.direct_tls && !args.register);
        assert_eq!(args.concurrency, 200);
        assert_eq!(args.user(0), "idle0");
        let err = Args::parse(argv(
            "--addr 127.0.0.1:5222 --users 3 --password pw --pid 1",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("--domain is required"), "{err}");
        assert!(Args::parse(argv("--users")).is_err());
        assert!(Args::parse(argv("--users x")).is_err());
        assert!(Args::parse(argv("--bogus")).is_err());
        assert_eq!(Args::parse(argv("--help")).unwrap(), None);
    }

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\ttern\nVmPeak:\t  99 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name:\ttern\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn divides_growth_by_connections() {
        assert_eq!(per_connection_bytes(10_000, 20_000, 1000), 10_240);
        assert_eq!(per_connection_bytes(20_000, 10_000, 1000), -10_240);
        assert_eq!(per_connection_bytes(0, 0, 0), 0);
    }

    struct Counter(u8);

    impl Entropy for Counter {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }

    /// The real sans-IO server stream on the far end of an in-memory pipe, as a direct-TLS
    /// listener (the pipe stands in for TLS). It knows the user `idle0` with password `pw`,
    /// answers IQs like the node, and registers `new` but not `idle0` (which exists).
    async fn fake_server(mut io: DuplexStream) {
        let config = StreamConfig {
            tls: TlsPolicy::AlreadySecure,
            mechanisms: vec![Mechanism::Plain],
            registration: true,
            failure_delay: Duration::ZERO,
            ..StreamConfig::default()
        };
        let now = Instant::now();
        let mut stream = ServerStream::new(Arc::new(config), Box::new(Counter(0)), now);
        let mut buf = vec![0; 1024];
        loop {
            let n = match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            stream.handle_input(now, &buf[..n]);
            loop {
                let Some(event) = stream.poll_event() else {
                    // A delayed SASL failure is due at once (no failure delay).
                    if stream.poll_timeout().is_some_and(|t| t <= now) {
                        stream.handle_timeout(now);
                        continue;
                    }
                    break;
                };
                let command = match event {
                    Event::CredentialsNeeded { username, .. } => Command::Credentials(
                        (username == "idle0")
                            .then(|| StoredCredentials::derive("pw", b"s1", b"s2", 1)),
                    ),
                    Event::BindRequested { resource } => {
                        Command::Bound(format!("idle0@localhost/{}", resource.unwrap_or_default()))
                    }
                    Event::RegistrationIq(iq) => {
                        let id = iq.attr("id").unwrap_or_default().to_owned();
                        let user = iq
                            .get_child("query", ns::REGISTER)
                            .and_then(|q| q.get_child("username", ns::REGISTER))
                            .map(Element::text);
                        let reply = if user.as_deref() == Some("new") {
                            format!("<iq type='result' id='{id}'/>")
                        } else {
                            format!(
                                "<iq type='error' id='{id}'><error type='cancel'><conflict xmlns='{}'/></error></iq>",
                                ns::STANZAS
                            )
                        };
                        Command::Send(reply.into_bytes().into())
                    }
                    Event::Stanza(stanza) if stanza.kind == tern_xmpp_proto::StanzaKind::Iq => {
                        let id = stanza.id().unwrap_or_default().to_owned();
                        // A presence push first, which the client must skip.
                        let reply = format!(
                            "<presence from='idle0@localhost/idle'/><iq type='result' id='{id}'/>"
                        );
                        Command::Send(reply.into_bytes().into())
                    }
                    _ => continue,
                };
                stream.handle_command(now, command);
            }
            let mut out = bytes::BytesMut::new();
            if stream.poll_transmit(&mut out) && io.write_all(&out).await.is_err() {
                return;
            }
            if stream.is_closed() {
                return;
            }
        }
    }

    fn pipe() -> Wire<DuplexStream> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(fake_server(server));
        Wire::new(client)
    }

    #[tokio::test]
    async fn logs_in_binds_and_pings_against_the_real_stream_core() {
        let mut wire = pipe();
        let features = wire.open("localhost").await.unwrap();
        assert!(features.get_child("mechanisms", ns::SASL).is_some());
        let features = wire.authenticate("localhost", "idle0", "pw").await.unwrap();
        let jid = wire.start_session("localhost", &features).await.unwrap();
        assert_eq!(jid, "idle0@localhost/idle");
        wire.close().await.unwrap();
    }

    #[tokio::test]
    async fn reports_a_wrong_password() {
        let mut wire = pipe();
        wire.open("localhost").await.unwrap();
        let err = wire
            .authenticate("localhost", "idle0", "nope")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not-authorized"), "{err}");
    }

    #[tokio::test]
    async fn registration_counts_an_existing_account_as_done() {
        let mut wire = pipe();
        let features = wire.open("localhost").await.unwrap();
        assert!(wire.register(&features, "new", "pw").await.unwrap());
        assert!(!wire.register(&features, "idle0", "pw").await.unwrap());
    }

    #[tokio::test]
    async fn a_stream_error_ends_the_wait() {
        let mut wire = pipe();
        wire.open("localhost").await.unwrap();
        // A stanza before authentication is refused with a stream error.
        wire.send("<message to='a@b'><body>x</body></message>")
            .await
            .unwrap();
        let err = wire.expect("anything", |_| false).await.unwrap_err();
        assert!(err.to_string().contains("not-authorized"), "{err}");
    }
}
