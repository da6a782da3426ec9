//! The harness measured against known answers: a real Tern node that loses nothing, and a fake
//! server that drops, duplicates and reorders messages on a fixed pattern and counts what it
//! did, so the harness's loss, duplicate and reordering figures can be checked exactly. The fake
//! server also never closes a stream, so the harness's give-up path is exercised.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use tern_tests::server::{TestServer, free_ports, temp_dir};
use tern_xmpp_proto::{Element, Frame, Framer, Limits, ns};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// Runs the harness binary; returns its JSON summary, panicking with its output on failure.
fn loadtest(args: &[&str], json: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tern-loadtest"))
        .args(args)
        .arg("--json")
        .arg(json)
        .arg("--quiet")
        .output()
        .expect("run tern-loadtest");
    assert!(
        out.status.success(),
        "tern-loadtest {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(json).expect("json written");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON does not parse: {e}\n{text}"))
}

fn u(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

fn f(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// Percentiles must be ordered and inside the recorded range.
fn check_latency(latency: &Value, count: u64) {
    assert_eq!(u(&latency["count"]), count, "{latency}");
    let (p50, p90, p99, p999, max) = (
        f(&latency["p50_ms"]),
        f(&latency["p90_ms"]),
        f(&latency["p99_ms"]),
        f(&latency["p999_ms"]),
        f(&latency["max_ms"]),
    );
    assert!(
        0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{latency}"
    );
    assert!(max < 10_000.0, "{latency}");
}

#[test]
fn tern_chat_and_login_are_counted_without_loss() {
    let server = TestServer::start("loadtest", "[modules.register]\nenabled = true\n");
    let address = format!("127.0.0.1:{}", server.starttls_port);
    let direct = format!("127.0.0.1:{}", server.tls_port);
    let data = server.dir.join("data");
    let data = data.to_str().expect("utf-8 path");
    let scratch = temp_dir("loadtest-out");
    let json = scratch.join("chat.json");
    let html = scratch.join("chat.html");

    // Provision through the admin API, then chat over STARTTLS + SCRAM-SHA-256.
    let chat = loadtest(
        &[
            "--server",
            &address,
            "--users",
            "8",
            "--provision",
            "admin",
            "--tern-data",
            data,
            "--label",
            "tern",
            "--html",
            html.to_str().expect("utf-8"),
            "chat",
            "--rate",
            "200",
            "--duration",
            "2s",
        ],
        &json,
    );
    assert_eq!(chat["schema"], 1);
    assert_eq!(chat["label"], "tern");
    assert_eq!(chat["provision"]["created"], 8);
    assert_eq!(chat["target"]["sasl"], "SCRAM-SHA-256");
    let delivery = &chat["chat"]["delivery"];
    assert_eq!(u(&delivery["sent"]), 400, "{chat}");
    assert_eq!(u(&delivery["delivered"]), 400, "{chat}");
    for field in [
        "lost",
        "duplicates",
        "reordered",
        "unexpected",
        "pairs_with_loss",
    ] {
        assert_eq!(u(&delivery[field]), 0, "{field}: {chat}");
    }
    check_latency(&chat["chat"]["latency"], 400);
    let buckets: u64 = chat["latency_buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| u(&b["count"]))
        .sum();
    assert_eq!(buckets, 400);
    assert!(!chat["timeline"].as_array().expect("timeline").is_empty());
    let page = std::fs::read_to_string(&html).expect("html written");
    assert!(page.contains("<svg") && page.contains("Throughput over time"));

    // The same accounts again: provisioning finds them, login over direct TLS + SCRAM-SHA-1.
    let login = loadtest(
        &[
            "--server",
            &direct,
            "--tls",
            "direct",
            "--sasl",
            "scram-sha-1",
            "--users",
            "8",
            "--provision",
            "admin",
            "--tern-data",
            data,
            "login",
            "--rounds",
            "2",
        ],
        &scratch.join("login.json"),
    );
    assert_eq!(login["provision"]["existed"], 8);
    let rounds = login["login"]["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2);
    for round in rounds {
        assert_eq!(round["logins"], 8);
        check_latency(&round["latency"], 8);
    }
    assert_eq!(rounds[1]["salted_password_cached"], true);

    // In-band registration (XEP-0077): new accounts are created, existing ones counted.
    let ibr = loadtest(
        &[
            "--server",
            &address,
            "--users",
            "3",
            "--prefix",
            "ib",
            "--provision",
            "ibr",
            "provision",
        ],
        &scratch.join("ibr.json"),
    );
    assert_eq!(ibr["provision"]["created"], 3, "{ibr}");
    let again = loadtest(
        &[
            "--server",
            &address,
            "--users",
            "4",
            "--prefix",
            "ib",
            "--provision",
            "ibr",
            "provision",
        ],
        &scratch.join("ibr2.json"),
    );
    assert_eq!(
        (
            again["provision"]["created"].clone(),
            again["provision"]["existed"].clone()
        ),
        (1.into(), 3.into()),
        "{again}"
    );

    // A scenario file gives the same run; flags after it override it.
    let file = scratch.join("ramp.toml");
    std::fs::write(
        &file,
        format!(
            "scenario = \"ramp\"\nserver = \"{address}\"\nusers = 4\n[ramp]\nstart = 50\nfactor = 2\nstep_duration = \"1s\"\nmax_rate = 100\n"
        ),
    )
    .expect("write scenario");
    let ramp = loadtest(
        &["run", file.to_str().expect("utf-8"), "--p99-ms", "2000"],
        &scratch.join("ramp.json"),
    );
    let steps = ramp["ramp"]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{ramp}");
    assert_eq!(f(&ramp["ramp"]["p99_bound_ms"]), 2000.0);
    assert_eq!(f(&ramp["ramp"]["max_sustained_rate"]), 100.0, "{ramp}");
    assert_eq!(u(&ramp["ramp"]["delivery"]["lost"]), 0);

    // Wrong password: a clear error, exit status 1.
    let out = Command::new(env!("CARGO_BIN_EXE_tern-loadtest"))
        .args([
            "--server",
            &address,
            "--users",
            "2",
            "--password",
            "wrong",
            "--quiet",
        ])
        .args(["chat", "--duration", "1s"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not-authorized"), "{stderr}");
    std::fs::remove_dir_all(&scratch).ok();
}

#[test]
fn tern_room_messages_reach_every_occupant() {
    // At most 20 occupants per room, so a 21st user is refused.
    let server = TestServer::start("loadtest-muc", "[modules.muc]\nmax_users = 20\n");
    let address = format!("127.0.0.1:{}", server.starttls_port);
    let data = server.dir.join("data");
    let data = data.to_str().expect("utf-8 path");
    let scratch = temp_dir("loadtest-muc-out");
    let common = [
        "--server",
        &address,
        "--provision",
        "admin",
        "--tern-data",
        data,
        "--concurrency",
        "8",
    ];

    // 20 occupants, 10 of them sending 20 messages/s for 2 s: 40 messages, each at all 20.
    let mut args = common.to_vec();
    args.extend([
        "--users",
        "20",
        "muc",
        "--room",
        "bench@muc.localhost",
        "--rate",
        "20",
        "--duration",
        "2s",
    ]);
    let summary = loadtest(&args, &scratch.join("muc.json"));
    assert_eq!(summary["scenario"], "muc");
    let muc = &summary["muc"];
    assert_eq!(muc["room"], "bench@muc.localhost");
    assert_eq!(u(&muc["occupants"]), 20, "{summary}");
    assert_eq!(muc["created"], true, "{summary}");
    assert_eq!(u(&muc["senders"]), 10, "{summary}");
    check_latency(&muc["join_latency"], 20);
    assert_eq!(u(&muc["messages"]), 40, "{summary}");
    let delivery = &muc["delivery"];
    assert_eq!(u(&delivery["sent"]), 40 * 20, "{summary}");
    assert_eq!(u(&delivery["delivered"]), 40 * 20, "{summary}");
    for field in [
        "lost",
        "duplicates",
        "reordered",
        "unexpected",
        "pairs_with_loss",
    ] {
        assert_eq!(u(&delivery[field]), 0, "{field}: {summary}");
    }
    assert_eq!(u(&muc["bounced"]), 0, "{summary}");
    // Every delivery measured once, the sender's own echo included.
    check_latency(&muc["latency"], 40 * 20);

    // The room went away with its last occupant; now one user too many: the room refuses the
    // last join, and the run fails naming the condition.
    let mut args = common.to_vec();
    args.extend([
        "--users",
        "21",
        "--quiet",
        "muc",
        "--room",
        "bench@muc.localhost",
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_tern-loadtest"))
        .args(&args)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("service-unavailable"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&scratch).ok();
}

#[test]
fn tern_chat_over_websocket_loses_nothing() {
    // The generated configuration has a plain HTTP listener; add an HTTPS one for `wss://`.
    let [https_port] = free_ports();
    let server = TestServer::start(
        "loadtest-ws",
        &format!("[[listen.http]]\naddress = \"127.0.0.1:{https_port}\"\ntls = \"direct\"\n"),
    );
    let plain = format!("127.0.0.1:{}", server.http_port);
    let https = format!("127.0.0.1:{https_port}");
    let data = server.dir.join("data");
    let data = data.to_str().expect("utf-8 path");
    let scratch = temp_dir("loadtest-ws-out");

    // `ws://`, SCRAM-SHA-256: every message arrives once, in order.
    let chat = loadtest(
        &[
            "--server",
            &plain,
            "--websocket",
            "/ws",
            "--users",
            "8",
            "--provision",
            "admin",
            "--tern-data",
            data,
            "chat",
            "--rate",
            "200",
            "--duration",
            "2s",
        ],
        &scratch.join("chat.json"),
    );
    assert_eq!(chat["target"]["websocket"], "/ws", "{chat}");
    assert_eq!(chat["target"]["tls"], "none", "{chat}");
    let delivery = &chat["chat"]["delivery"];
    assert_eq!(u(&delivery["sent"]), 400, "{chat}");
    assert_eq!(u(&delivery["delivered"]), 400, "{chat}");
    for field in ["lost", "duplicates", "reordered", "unexpected"] {
        assert_eq!(u(&delivery[field]), 0, "{field}: {chat}");
    }
    check_latency(&chat["chat"]["latency"], 400);

    // `wss://` with stream management: logins, then presence and an `<enable/>` on the stream.
    let login = loadtest(
        &[
            "--server",
            &https,
            "--tls",
            "direct",
            "--websocket",
            "/ws",
            "--stream-management",
            "--users",
            "8",
            "login",
            "--rounds",
            "1",
        ],
        &scratch.join("login.json"),
    );
    assert_eq!(login["target"]["tls"], "direct", "{login}");
    let rounds = login["login"]["rounds"].as_array().expect("rounds");
    assert_eq!(rounds[0]["logins"], 8, "{login}");
    check_latency(&rounds[0]["latency"], 8);

    // A plain WebSocket is not a secure channel: PLAIN is not offered there.
    let out = Command::new(env!("CARGO_BIN_EXE_tern-loadtest"))
        .args(["--server", &plain, "--websocket", "/ws", "--sasl", "plain"])
        .args(["--users", "1", "--quiet", "login", "--rounds", "1"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not offer PLAIN"), "{stderr}");
    std::fs::remove_dir_all(&scratch).ok();
}

/// What the fake server did to the messages it was given.
#[derive(Debug, Default, Clone, Copy)]
struct Faults {
    received: u64,
    dropped: u64,
    duplicated: u64,
    /// Held messages released right after a later message of the same pair.
    reordered: u64,
}

/// A message held back, with when it was held.
type Held = (Vec<u8>, Instant);

#[derive(Default)]
struct Fake {
    /// Local part → the writer of its connection.
    sessions: Mutex<HashMap<String, mpsc::UnboundedSender<Vec<u8>>>>,
    faults: Mutex<Faults>,
    /// (from, to) → one held message.
    held: Mutex<HashMap<(String, String), Held>>,
}

impl Fake {
    fn deliver(&self, to: &str, bytes: Vec<u8>) {
        if let Some(tx) = self.sessions.lock().expect("lock").get(to) {
            let _ = tx.send(bytes);
        }
    }

    /// Every 10 messages: #3 dropped, #5 held until the pair's next message (or 300 ms), #7
    /// delivered twice.
    fn route(&self, from: &str, to: &str, stanza: Vec<u8>) {
        let pair = (from.to_owned(), to.to_owned());
        let mut faults = self.faults.lock().expect("lock");
        let k = faults.received;
        faults.received += 1;
        let mut held = self.held.lock().expect("lock");
        match k % 10 {
            3 => {
                faults.dropped += 1;
                return;
            }
            5 if !held.contains_key(&pair) => {
                held.insert(pair, (stanza, Instant::now()));
                return;
            }
            _ => {}
        }
        self.deliver(to, stanza.clone());
        if let Some((late, _)) = held.remove(&pair) {
            faults.reordered += 1;
            self.deliver(to, late);
        }
        if k % 10 == 7 {
            faults.duplicated += 1;
            self.deliver(to, stanza);
        }
    }

    /// Releases messages held longer than 300 ms, in order (not reordered).
    fn flush_old(&self) {
        let _faults = self.faults.lock().expect("lock");
        let mut held = self.held.lock().expect("lock");
        let old: Vec<_> = held
            .iter()
            .filter(|(_, (_, at))| at.elapsed() > Duration::from_millis(300))
            .map(|(pair, _)| pair.clone())
            .collect();
        for pair in old {
            if let Some((stanza, _)) = held.remove(&pair) {
                self.deliver(&pair.1, stanza);
            }
        }
    }
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='fake' version='1.0'>";

async fn next_frame<S: AsyncRead + Unpin>(io: &mut S, framer: &mut Framer) -> Option<Frame> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(frame) = framer.next_frame().ok()? {
            return Some(frame);
        }
        let n = io.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        framer.push(&buf[..n]);
    }
}

async fn next_element<S: AsyncRead + Unpin>(io: &mut S, framer: &mut Framer) -> Option<Element> {
    match next_frame(io, framer).await? {
        Frame::Element(bytes) => Element::parse(&bytes, ns::CLIENT).ok(),
        _ => None,
    }
}

/// Opens a stream: waits for the client's header and answers with ours and `features`.
async fn open<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, features: &str) -> Option<Framer> {
    let mut framer = Framer::new(Limits::default());
    let Frame::Header(_) = next_frame(io, &mut framer).await? else {
        return None;
    };
    io.write_all(format!("{HEADER}<stream:features>{features}</stream:features>").as_bytes())
        .await
        .ok()?;
    Some(framer)
}

async fn serve(tcp: TcpStream, acceptor: TlsAcceptor, fake: Arc<Fake>) -> Option<()> {
    let mut tcp = tcp;
    let mut framer = open(
        &mut tcp,
        &format!("<starttls xmlns='{}'><required/></starttls>", ns::TLS),
    )
    .await?;
    next_element(&mut tcp, &mut framer).await?;
    tcp.write_all(format!("<proceed xmlns='{}'/>", ns::TLS).as_bytes())
        .await
        .ok()?;
    let mut tls = acceptor.accept(tcp).await.ok()?;
    let mut framer = open(
        &mut tls,
        &format!(
            "<mechanisms xmlns='{}'><mechanism>PLAIN</mechanism></mechanisms>",
            ns::SASL
        ),
    )
    .await?;
    let auth = next_element(&mut tls, &mut framer).await?;
    let plain = base64::engine::general_purpose::STANDARD
        .decode(auth.text().trim())
        .ok()?;
    let user = String::from_utf8(plain.split(|&b| b == 0).nth(1)?.to_vec()).ok()?;
    tls.write_all(format!("<success xmlns='{}'/>", ns::SASL).as_bytes())
        .await
        .ok()?;
    let mut framer = open(&mut tls, &format!("<bind xmlns='{}'/>", ns::BIND)).await?;
    let (mut read, mut write) = tokio::io::split(tls);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    fake.sessions
        .lock()
        .expect("lock")
        .insert(user.clone(), tx.clone());
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if write.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    while let Some(frame) = next_frame(&mut read, &mut framer).await {
        let Frame::Element(bytes) = frame else {
            // Never answer the client's `</stream:stream>` and keep the connection open: the
            // harness must give up waiting and still count what arrived.
            std::future::pending::<()>().await;
            break;
        };
        let Ok(element) = Element::parse(&bytes, ns::CLIENT) else {
            break;
        };
        let id = element.attr("id").unwrap_or("").to_owned();
        match element.name() {
            "iq" if element.has_child("bind", ns::BIND) => {
                let _ = tx.send(format!(
                    "<iq type='result' id='{id}'><bind xmlns='{}'><jid>{user}@localhost/lt</jid></bind></iq>",
                    ns::BIND
                ).into_bytes());
            }
            "iq" => {
                let _ = tx.send(format!("<iq type='result' id='{id}'/>").into_bytes());
            }
            "message" => {
                let to = element.attr("to").unwrap_or("");
                let local = to.split('@').next().unwrap_or("").to_owned();
                fake.route(&user, &local, bytes.to_vec());
            }
            _ => {}
        }
    }
    fake.sessions.lock().expect("lock").remove(&user);
    drop(tx);
    let _ = writer.await;
    Some(())
}

fn acceptor() -> TlsAcceptor {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    TlsAcceptor::from(Arc::new(config))
}

#[test]
fn loss_duplicates_and_reordering_from_a_faulty_server_are_counted_exactly() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let fake = Arc::new(Fake::default());
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let acceptor = acceptor();
    let server_fake = fake.clone();
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve(tcp, acceptor.clone(), server_fake.clone()));
        }
    });
    let flusher = fake.clone();
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flusher.flush_old();
        }
    });
    let scratch = temp_dir("loadtest-fake");
    let started = Instant::now();
    let summary = loadtest(
        &[
            "--server",
            &address,
            "--users",
            "6",
            "--sasl",
            "plain",
            "chat",
            "--rate",
            "300",
            "--duration",
            "2s",
            "--drain",
            "2s",
        ],
        &scratch.join("fake.json"),
    );
    // Login, 2 s of sends, the drain, and the 10 s grace for streams the server never closes.
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the harness took {:?}",
        started.elapsed()
    );
    let faults = *fake.faults.lock().expect("lock");
    let delivery = &summary["chat"]["delivery"];
    assert_eq!(faults.received, 600, "{faults:?}");
    assert_eq!(u(&delivery["sent"]), 600, "{summary}");
    assert_eq!(faults.dropped, 60);
    assert_eq!(faults.duplicated, 60);
    assert!(faults.reordered > 0, "{faults:?}");
    assert_eq!(u(&delivery["lost"]), faults.dropped, "{summary}");
    assert_eq!(u(&delivery["delivered"]), 600 - faults.dropped, "{summary}");
    assert_eq!(u(&delivery["duplicates"]), faults.duplicated, "{summary}");
    assert_eq!(u(&delivery["reordered"]), faults.reordered, "{summary}");
    assert_eq!(u(&delivery["unexpected"]), 0, "{summary}");
    assert!(u(&delivery["pairs_with_loss"]) > 0);
    // Latency counts each delivered message once (duplicates are not measured again).
    check_latency(&summary["chat"]["latency"], 600 - faults.dropped);
    runtime.shutdown_timeout(Duration::from_secs(1));
    std::fs::remove_dir_all(&scratch).ok();
}
