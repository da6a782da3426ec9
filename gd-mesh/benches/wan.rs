//! The mesh's added latency over a WAN: two datacenters in one process, the bridge from dc1 to
//! dc2 through the WAN emulator with 20 ms each way (40 ms round trip), 5,000 envelopes per
//! second from dc1 to dc2 over 100 conversations. Each envelope carries its send time; the
//! receiver subtracts it. The baseline, measured in the same run through the same relay at the
//! same rate, is plain UDP datagrams: what the emulated link itself costs. The difference is
//! what the mesh adds (framing, QUIC, TLS, queues, acknowledgements).
//!
//! `cargo bench -p tern-gd-mesh --bench wan` (about 30 s; `WAN_SECONDS`, `WAN_RATE` override).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_gd_mesh::frame::{EnvelopeKind, Route};
use tern_gd_mesh::pki::{self, DcIdentity, MeshCa, TransportSettings};
use tern_gd_mesh::{LinkConfig, Mesh, PeerAddr};
use tern_wanem::{Relay, Shape};

const ONE_WAY: Duration = Duration::from_millis(20);

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn report(name: &str, mut micros: Vec<u64>) -> (u64, u64, u64) {
    micros.sort_unstable();
    let (p50, p99, max) = (
        percentile(&micros, 50.0),
        percentile(&micros, 99.0),
        *micros.last().unwrap_or(&0),
    );
    println!(
        "{name}: {} samples, one-way p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        micros.len(),
        p50 as f64 / 1e3,
        p99 as f64 / 1e3,
        max as f64 / 1e3
    );
    (p50, p99, max)
}

/// Sends `count` items at `rate` per second, calling `send(i)` on schedule (open loop).
async fn paced(rate: u64, count: u64, mut send: impl FnMut(u64)) {
    let started = tokio::time::Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    for i in 0..count {
        tokio::time::sleep_until(started + interval * u32::try_from(i).unwrap_or(u32::MAX)).await;
        send(i);
    }
}

async fn baseline(rate: u64, count: u64, base: Instant) -> Vec<u64> {
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sink_addr: SocketAddr = sink.local_addr().expect("addr");
    let relay = Relay::start("127.0.0.1:0".parse().expect("addr"), sink_addr, shape())
        .await
        .expect("relay");
    let via = relay.local_addr();
    let source = std::sync::Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(count as usize);
        let mut buf = [0u8; 64];
        while (latencies.len() as u64) < count {
            let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_secs(5), sink.recv_from(&mut buf)).await
            else {
                break;
            };
            let sent = u64::from_be_bytes(buf[..8.min(n)].try_into().unwrap_or([0; 8]));
            let now = base.elapsed().as_micros() as u64;
            latencies.push(
                now.saturating_sub(sent)
                    .saturating_sub(ONE_WAY.as_micros() as u64),
            );
        }
        latencies
    });
    let sender = source.clone();
    paced(rate, count, move |_| {
        let stamp = (base.elapsed().as_micros() as u64).to_be_bytes();
        let _ = sender.try_send_to(&stamp, via);
    })
    .await;
    let latencies = receiver.await.expect("receiver");
    relay.stop().await;
    latencies
}

fn shape() -> Shape {
    Shape {
        delay: ONE_WAY,
        ..Shape::default()
    }
}

async fn mesh(rate: u64, count: u64, base: Instant, dir: &std::path::Path) -> Vec<u64> {
    let ca = MeshCa::init(dir).expect("ca");
    for dc in ["dc1", "dc2"] {
        ca.issue(dc, dir).expect("issue");
    }
    let known: Vec<String> = vec!["dc1".into(), "dc2".into()];
    let settings = TransportSettings::default();
    let endpoint = |dc: &str| {
        let identity = DcIdentity::load(dir, dc).expect("identity");
        let server = pki::server_config(&identity, known.clone(), &settings).expect("server");
        let client = pki::client_config(&identity, &settings).expect("client");
        (
            quinn::Endpoint::server(server, "127.0.0.1:0".parse().expect("addr")).expect("bind"),
            client,
        )
    };
    let (e1, c1) = endpoint("dc1");
    let (e2, c2) = endpoint("dc2");
    let a1 = e1.local_addr().expect("addr");
    let a2 = e2.local_addr().expect("addr");
    // The WAN sits in front of dc2's listener: both directions of dc1's bridge cross it.
    let relay = Relay::start("127.0.0.1:0".parse().expect("addr"), a2, shape())
        .await
        .expect("relay");
    let peer = |dc: &str, addr| PeerAddr {
        dc: dc.to_owned(),
        addr,
        server_name: pki::server_name(dc),
    };
    let topology = [1; 32];
    let (m1, _rx1) = Mesh::start(
        LinkConfig::new("dc1", topology),
        e1,
        c1,
        vec![peer("dc2", relay.local_addr())],
    )
    .expect("start");
    let (m2, mut rx2) = Mesh::start(
        LinkConfig::new("dc2", topology),
        e2,
        c2,
        vec![peer("dc1", a1)],
    )
    .expect("start");
    while !m1.status().iter().any(|l| l.connected) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Warm up the streams (one envelope per conversation), then measure.
    for pair in 0..100 {
        let route = Route {
            from: format!("u{pair}@localhost/r"),
            to: format!("v{pair}@localhost"),
            kind: EnvelopeKind::Message,
            grt_index: 1,
        };
        m1.send("dc2", route, Bytes::from(0u64.to_be_bytes().to_vec()))
            .expect("send");
    }
    for _ in 0..100 {
        rx2.recv().await.expect("warm-up");
    }
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(count as usize);
        while (latencies.len() as u64) < count {
            let Ok(Some(inbound)) = tokio::time::timeout(Duration::from_secs(5), rx2.recv()).await
            else {
                break;
            };
            let bytes = &inbound.envelope.stanza;
            let sent = u64::from_be_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
            let now = base.elapsed().as_micros() as u64;
            latencies.push(
                now.saturating_sub(sent)
                    .saturating_sub(ONE_WAY.as_micros() as u64),
            );
        }
        latencies
    });
    let sender = m1.clone();
    paced(rate, count, move |i| {
        let pair = i % 100;
        let route = Route {
            from: format!("u{pair}@localhost/r"),
            to: format!("v{pair}@localhost"),
            kind: EnvelopeKind::Message,
            grt_index: 1,
        };
        let mut stanza = (base.elapsed().as_micros() as u64).to_be_bytes().to_vec();
        stanza.extend_from_slice(b"<message to='v@localhost'><body>latency probe</body></message>");
        let _ = sender.send("dc2", route, Bytes::from(stanza));
    })
    .await;
    let latencies = receiver.await.expect("receiver");
    m1.stop();
    m2.stop();
    relay.stop().await;
    latencies
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("wan: benchmark");
        return;
    }
    let seconds = env("WAN_SECONDS", 10);
    let rate = env("WAN_RATE", 5_000);
    let count = seconds * rate;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir: PathBuf = std::env::temp_dir().join(format!("tern-wan-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let base = Instant::now();
    println!(
        "WAN: {} ms one way ({} ms round trip), {rate} messages/s for {seconds} s",
        ONE_WAY.as_millis(),
        2 * ONE_WAY.as_millis()
    );
    let udp = runtime.block_on(baseline(rate, count, base));
    let (b50, b99, _) = report(
        "baseline (UDP through the emulator), minus the injected delay",
        udp,
    );
    let bridged = runtime.block_on(mesh(rate, count, base, &dir));
    let received = bridged.len() as u64;
    let (m50, m99, _) = report(
        "mesh (dc1 -> dc2 bridge), minus the injected delay",
        bridged,
    );
    println!(
        "added by the mesh over the emulated link: p50 {:.2} ms, p99 {:.2} ms ({} of {count} delivered)",
        m50.saturating_sub(b50) as f64 / 1e3,
        m99.saturating_sub(b99) as f64 / 1e3,
        received
    );
    let _ = std::fs::remove_dir_all(&dir);
}
