//! Bridges between in-process datacenters on loopback, with real QUIC and the mesh's mutual
//! TLS: order per (from, to) pair, exactly-once delivery across link cuts (through the WAN
//! emulator), prompt refusals for a down peer and a full queue, a topology mismatch refused,
//! and garbage from an authenticated peer closing only that peer's connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tern_gd_mesh::frame::{EnvelopeKind, Route};
use tern_gd_mesh::pki::{self, DcIdentity, MeshCa, TransportSettings};
use tern_gd_mesh::{Inbound, LinkConfig, Mesh, PeerAddr, SendError};
use tokio::sync::mpsc::UnboundedReceiver;

const TOPOLOGY: [u8; 32] = [3; 32];

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "tern-bridges-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA and certificates for `dcs` in a fresh directory.
fn pki(tag: &str, dcs: &[&str]) -> TempDir {
    let dir = TempDir::new(tag);
    let ca = MeshCa::init(dir.path()).expect("ca");
    for dc in dcs {
        ca.issue(dc, dir.path()).expect("issue");
    }
    dir
}

/// Quick failure detection, so that a cut of a second kills the connection and the bridge
/// must reconnect (rather than QUIC quietly retransmitting across the cut).
fn settings() -> TransportSettings {
    TransportSettings {
        keep_alive_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(600),
        ..TransportSettings::default()
    }
}

fn endpoint(dir: &Path, dc: &str, known: &[&str]) -> quinn::Endpoint {
    let identity = DcIdentity::load(dir, dc).expect("identity");
    let known = known.iter().map(|s| (*s).to_owned()).collect();
    let server = pki::server_config(&identity, known, &settings()).expect("server");
    quinn::Endpoint::server(server, "127.0.0.1:0".parse().expect("addr")).expect("endpoint")
}

fn client(dir: &Path, dc: &str) -> quinn::ClientConfig {
    let identity = DcIdentity::load(dir, dc).expect("identity");
    pki::client_config(&identity, &settings()).expect("client")
}

fn peer(dc: &str, addr: SocketAddr) -> PeerAddr {
    PeerAddr {
        dc: dc.to_owned(),
        addr,
        server_name: pki::server_name(dc),
    }
}

fn config(dc: &str) -> LinkConfig {
    LinkConfig {
        backoff: (Duration::from_millis(20), Duration::from_millis(200)),
        ..LinkConfig::new(dc, TOPOLOGY)
    }
}

fn route(from: &str, to: &str) -> Route {
    Route {
        from: from.to_owned(),
        to: to.to_owned(),
        kind: EnvelopeKind::Message,
        grt_index: 1,
    }
}

async fn wait_connected(mesh: &Mesh, dc: &str) {
    for _ in 0..500 {
        if mesh.status().iter().any(|l| l.dc == dc && l.connected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never connected to {dc}: {:?}", mesh.dc(), mesh.status());
}

/// Receives `count` envelopes and checks: no duplicates, each pair in order.
async fn receive_in_order(rx: &mut UnboundedReceiver<Inbound>, count: usize) -> Vec<Inbound> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} envelopes arrived", got.len()))
            .expect("mesh running");
        got.push(next);
    }
    let mut last: HashMap<(String, String), u64> = HashMap::new();
    for inbound in &got {
        let r = &inbound.envelope.route;
        let n: u64 = std::str::from_utf8(&inbound.envelope.stanza)
            .expect("utf8")
            .parse()
            .expect("number");
        let prev = last.insert((r.from.clone(), r.to.clone()), n);
        assert!(
            prev.is_none_or(|p| p + 1 == n),
            "pair {}→{}: {n} after {prev:?}",
            r.from,
            r.to
        );
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_arrive_once_and_in_order_per_pair() {
    let dir = pki("order", &["dc1", "dc2"]);
    let e1 = endpoint(dir.path(), "dc1", &["dc1", "dc2"]);
    let e2 = endpoint(dir.path(), "dc2", &["dc1", "dc2"]);
    let a2 = e2.local_addr().expect("addr");
    let a1 = e1.local_addr().expect("addr");
    let (m1, _rx1) = Mesh::start(
        config("dc1"),
        e1,
        client(dir.path(), "dc1"),
        vec![peer("dc2", a2)],
    )
    .expect("start");
    let (m2, mut rx2) = Mesh::start(
        config("dc2"),
        e2,
        client(dir.path(), "dc2"),
        vec![peer("dc1", a1)],
    )
    .expect("start");
    wait_connected(&m1, "dc2").await;
    // Ten conversations, interleaved, 100 messages each.
    let mut counters = [0u64; 10];
    for i in 0..1_000 {
        let pair = i % 10;
        counters[pair] += 1;
        m1.send(
            "dc2",
            route(&format!("u{pair}@localhost/r"), "v@localhost"),
            Bytes::from(counters[pair].to_string()),
        )
        .expect("queued");
    }
    let got = receive_in_order(&mut rx2, 1_000).await;
    assert!(
        got.iter()
            .all(|i| i.peer == "dc1" && i.envelope.origin == "dc1")
    );
    // Everything acknowledged: nothing waits any more.
    for _ in 0..200 {
        if m1.status()[0].queued == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(m1.status()[0].queued, 0, "{:?}", m1.status());
    assert_eq!(m1.status()[0].in_flight, 0, "{:?}", m1.status());
    assert!(rx2.try_recv().is_err(), "no duplicate arrives");
    m1.stop();
    m2.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_link_twice_loses_and_duplicates_nothing() {
    let dir = pki("cut", &["dc1", "dc2"]);
    let e1 = endpoint(dir.path(), "dc1", &["dc1", "dc2"]);
    let e2 = endpoint(dir.path(), "dc2", &["dc1", "dc2"]);
    let a1 = e1.local_addr().expect("addr");
    let relay = tern_wanem::Relay::start(
        "127.0.0.1:0".parse().expect("addr"),
        e2.local_addr().expect("addr"),
        tern_wanem::Shape::default(),
    )
    .await
    .expect("relay");
    let via = relay.local_addr();
    let mut c1 = config("dc1");
    c1.down_after = Duration::from_secs(60);
    let (m1, _rx1) =
        Mesh::start(c1, e1, client(dir.path(), "dc1"), vec![peer("dc2", via)]).expect("start");
    let (m2, mut rx2) = Mesh::start(
        config("dc2"),
        e2,
        client(dir.path(), "dc2"),
        vec![peer("dc1", a1)],
    )
    .expect("start");
    wait_connected(&m1, "dc2").await;
    let mut sent = 0u64;
    let mut send = |n: u64| {
        for _ in 0..n {
            sent += 1;
            m1.send(
                "dc2",
                route("a@localhost/x", "b@localhost"),
                Bytes::from(sent.to_string()),
            )
            .expect("queued");
        }
    };
    // Each cut outlasts the QUIC idle timeout: the connection dies, the bridge reconnects, the
    // peer's welcome says what it has, and the rest is sent again.
    send(300);
    relay.cut();
    send(200);
    // Written to the connection, which does not know yet that nothing gets through: in flight.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = m1.status()[0].clone();
    assert!(
        during.connected && during.in_flight > 0 && during.in_flight <= during.queued,
        "{during:?}"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(!m1.status()[0].connected, "the cut killed the bridge");
    assert_eq!(
        m1.status()[0].in_flight,
        0,
        "nothing is in flight without a connection"
    );
    relay.heal();
    send(200);
    wait_connected(&m1, "dc2").await;
    relay.cut();
    send(150);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    relay.heal();
    send(150);
    let got = receive_in_order(&mut rx2, 1_000).await;
    assert_eq!(got.len(), 1_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rx2.try_recv().is_err(),
        "no duplicate arrives after the heal"
    );
    m1.stop();
    m2.stop();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_peer_and_a_full_queue_are_refused_at_once() {
    let dir = pki("down", &["dc1", "dc3"]);
    let e1 = endpoint(dir.path(), "dc1", &["dc1", "dc3"]);
    // dc3's address: a port nobody answers on.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let nowhere = silent.local_addr().expect("addr");
    drop(silent);
    let mut c1 = config("dc1");
    c1.down_after = Duration::from_millis(500);
    c1.queue_limit = 10;
    let (m1, _rx) = Mesh::start(
        c1,
        e1,
        client(dir.path(), "dc1"),
        vec![peer("dc3", nowhere)],
    )
    .expect("start");
    for i in 0..10 {
        m1.send(
            "dc3",
            route("a@localhost", "c@localhost"),
            Bytes::from(format!("{i}")),
        )
        .expect("queued while not yet down");
    }
    assert!(matches!(
        m1.send("dc3", route("a@localhost", "c@localhost"), Bytes::new()),
        Err(SendError::QueueFull { limit: 10, .. })
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let started = std::time::Instant::now();
    assert!(matches!(
        m1.send("dc3", route("a@localhost", "c@localhost"), Bytes::new()),
        Err(SendError::Down { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "refused without waiting"
    );
    assert!(matches!(
        m1.send("dc9", route("a@localhost", "c@localhost"), Bytes::new()),
        Err(SendError::UnknownDc(_))
    ));
    m1.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_another_topology_is_refused() {
    let dir = pki("topology", &["dc1", "dc2"]);
    let e1 = endpoint(dir.path(), "dc1", &["dc1", "dc2"]);
    let e2 = endpoint(dir.path(), "dc2", &["dc1", "dc2"]);
    let (a1, a2) = (
        e1.local_addr().expect("addr"),
        e2.local_addr().expect("addr"),
    );
    let (m1, _rx1) = Mesh::start(
        config("dc1"),
        e1,
        client(dir.path(), "dc1"),
        vec![peer("dc2", a2)],
    )
    .expect("start");
    let other = LinkConfig {
        topology: [9; 32],
        ..config("dc2")
    };
    let (m2, _rx2) =
        Mesh::start(other, e2, client(dir.path(), "dc2"), vec![peer("dc1", a1)]).expect("start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!m1.status()[0].connected, "{:?}", m1.status());
    assert!(!m2.status()[0].connected, "{:?}", m2.status());
    m1.stop();
    m2.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_peer_closes_only_its_connection() {
    let dir = pki("garbage", &["dc1", "dc2", "dc3"]);
    let known = ["dc1", "dc2", "dc3"];
    let e1 = endpoint(dir.path(), "dc1", &known);
    let e2 = endpoint(dir.path(), "dc2", &known);
    let (a1, a2) = (
        e1.local_addr().expect("addr"),
        e2.local_addr().expect("addr"),
    );
    let (m1, _rx1) = Mesh::start(
        config("dc1"),
        e1,
        client(dir.path(), "dc1"),
        vec![peer("dc2", a2)],
    )
    .expect("start");
    let (m2, mut rx2) = Mesh::start(
        config("dc2"),
        e2,
        client(dir.path(), "dc2"),
        vec![peer("dc1", a1)],
    )
    .expect("start");
    wait_connected(&m1, "dc2").await;

    // dc3 has a valid certificate but speaks garbage.
    let rogue = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    let connection = rogue
        .connect_with(client(dir.path(), "dc3"), a2, &pki::server_name("dc2"))
        .expect("connect")
        .await
        .expect("TLS accepted: the certificate is valid");
    let (mut send, _recv) = connection.open_bi().await.expect("stream");
    send.write_all(&[0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0x00])
        .await
        .expect("write");
    let closed = tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .expect("the listener closes the rogue connection");
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );

    // The real peer is unaffected.
    m1.send("dc2", route("a@localhost", "b@localhost"), Bytes::from("1"))
        .expect("queued");
    let got = receive_in_order(&mut rx2, 1).await;
    assert_eq!(got[0].peer, "dc1");
    m1.stop();
    m2.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_restart_keeps_its_queue_in_order() {
    let dir = pki("restart", &["dc1", "dc2"]);
    let known = ["dc1", "dc2"];
    let store = dir.path().join("dc1-mesh.redb");
    // dc2 is not up yet: everything dc1 sends waits in its queue.
    let e2 = endpoint(dir.path(), "dc2", &known);
    let a2 = e2.local_addr().expect("addr");
    drop(e2);
    let c1 = LinkConfig {
        store: Some(store.clone()),
        ..config("dc1")
    };
    let e1 = endpoint(dir.path(), "dc1", &known);
    let (m1, _rx1) = Mesh::start(
        c1.clone(),
        e1,
        client(dir.path(), "dc1"),
        vec![peer("dc2", a2)],
    )
    .expect("start");
    for n in 1..=200u64 {
        m1.send(
            "dc2",
            route("a@localhost/x", "b@localhost"),
            Bytes::from(n.to_string()),
        )
        .expect("queued");
    }
    assert_eq!(m1.status()[0].queued, 200);
    assert_eq!(
        m1.status()[0].in_flight,
        0,
        "nothing sent while dc2 is away"
    );
    m1.stop();
    drop(m1);
    // Give the writer thread its last batch, then start a new life of dc1 on the same file.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new life listens on a new port (the old socket may linger a moment).
    let e1 = endpoint(dir.path(), "dc1", &known);
    let a1 = e1.local_addr().expect("addr");
    let (m1, _rx1) =
        Mesh::start(c1, e1, client(dir.path(), "dc1"), vec![peer("dc2", a2)]).expect("restart");
    assert_eq!(m1.status()[0].queued, 200, "the queue came back");
    m1.send(
        "dc2",
        route("a@localhost/x", "b@localhost"),
        Bytes::from("201"),
    )
    .expect("queued after the restored ones");
    // Now dc2 comes up on its address and gets all 201, in order, once.
    let e2 = quinn::Endpoint::server(
        pki::server_config(
            &DcIdentity::load(dir.path(), "dc2").expect("identity"),
            known.iter().map(|s| (*s).to_owned()).collect(),
            &settings(),
        )
        .expect("server"),
        a2,
    )
    .expect("endpoint");
    let (m2, mut rx2) = Mesh::start(
        config("dc2"),
        e2,
        client(dir.path(), "dc2"),
        vec![peer("dc1", a1)],
    )
    .expect("start");
    let got = receive_in_order(&mut rx2, 201).await;
    assert_eq!(
        std::str::from_utf8(&got[0].envelope.stanza).expect("utf8"),
        "1"
    );
    assert_eq!(
        std::str::from_utf8(&got[200].envelope.stanza).expect("utf8"),
        "201"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx2.try_recv().is_err(), "nothing twice");
    m1.stop();
    m2.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_requests_and_calls_ride_the_bridge_on_their_own_streams() {
    let dir = pki("raft", &["dc1", "dc2"]);
    let known = ["dc1", "dc2"];
    let e1 = endpoint(dir.path(), "dc1", &known);
    let e2 = endpoint(dir.path(), "dc2", &known);
    let (a1, a2) = (
        e1.local_addr().expect("addr"),
        e2.local_addr().expect("addr"),
    );
    let (m1, _rx1) = Mesh::start(
        config("dc1"),
        e1,
        client(dir.path(), "dc1"),
        vec![peer("dc2", a2)],
    )
    .expect("start");
    let (m2, mut rx2) = Mesh::start(
        config("dc2"),
        e2,
        client(dir.path(), "dc2"),
        vec![peer("dc1", a1)],
    )
    .expect("start");
    m2.serve_raft(std::sync::Arc::new(|request: Bytes| {
        Box::pin(async move {
            let mut reply = b"reply to ".to_vec();
            reply.extend_from_slice(&request);
            reply
        })
    }));
    wait_connected(&m1, "dc2").await;
    // Envelopes and Raft calls interleave without disturbing each other.
    m1.send("dc2", route("a@localhost", "b@localhost"), Bytes::from("1"))
        .expect("queued");
    for i in 0..20 {
        let reply = m1
            .raft_call(
                "dc2",
                Bytes::from(format!("vote {i}")),
                Duration::from_secs(5),
            )
            .await
            .expect("reply");
        assert_eq!(&reply[..], format!("reply to vote {i}").as_bytes());
    }
    receive_in_order(&mut rx2, 1).await;
    // No Raft service on dc1 yet: dc2's call gets an empty reply, and the bridges stay up.
    let empty = m2
        .raft_call("dc1", Bytes::from("x"), Duration::from_secs(2))
        .await
        .expect("an answer");
    assert!(empty.is_empty());
    assert!(m2.status()[0].connected && m1.status()[0].connected);
    assert!(
        m1.raft_call("dc9", Bytes::from("x"), Duration::from_secs(1))
            .await
            .is_err()
    );
    // The node's own calls have their own service: Raft requests never reach it, and the
    // other way round.
    m2.serve_calls(std::sync::Arc::new(|request: Bytes| {
        Box::pin(async move {
            let mut reply = b"call answered: ".to_vec();
            reply.extend_from_slice(&request);
            reply
        })
    }));
    let reply = m1
        .call("dc2", Bytes::from("credentials"), Duration::from_secs(5))
        .await
        .expect("reply");
    assert_eq!(&reply[..], b"call answered: credentials");
    let reply = m1
        .raft_call("dc2", Bytes::from("append"), Duration::from_secs(5))
        .await
        .expect("reply");
    assert_eq!(&reply[..], b"reply to append");
    let unanswered = m2
        .call("dc1", Bytes::from("x"), Duration::from_secs(2))
        .await
        .expect("an answer");
    assert!(unanswered.is_empty(), "no call service on dc1");
    m1.stop();
    m2.stop();
}
