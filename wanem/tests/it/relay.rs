//! The relay's behaviour, measured with real UDP sockets on 127.0.0.1.

use std::collections::BTreeSet;
use std::time::Duration;

use tern_wanem::{Relay, RelayConfig, Shape};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::support::{
    any_port, echo_server, eventually, mean_ms, peer_echo_server, ping, quantile_ms, send_paced,
    sink_server, timing_lock,
};

const PING_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_both_ways_without_shaping() {
    let echo = echo_server().await;
    let relay = Relay::start(any_port(), echo.addr, Shape::default())
        .await
        .unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    let (_, reply) = ping(&client, relay.local_addr(), b"hello", PING_TIMEOUT)
        .await
        .expect("a reply through the relay");
    assert_eq!(reply, b"hello");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_adds_twice_the_one_way_delay_to_the_rtt() {
    let _timing = timing_lock().await;
    let echo = echo_server().await;
    let delay = Duration::from_millis(20);
    let relay = Relay::start(any_port(), echo.addr, Shape::ideal().with_delay(delay))
        .await
        .unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    let mut rtts = Vec::new();
    for i in 0..50u32 {
        let (rtt, reply) = ping(&client, relay.local_addr(), &i.to_be_bytes(), PING_TIMEOUT)
            .await
            .expect("no loss is configured");
        assert_eq!(reply, i.to_be_bytes());
        rtts.push(rtt);
    }
    let mean = mean_ms(&rtts);
    let min = quantile_ms(&rtts, 0.0);
    eprintln!(
        "delay 20ms: RTT mean {mean:.3} ms, min {min:.3}, p50 {:.3}, p99 {:.3}, max {:.3}",
        quantile_ms(&rtts, 0.5),
        quantile_ms(&rtts, 0.99),
        quantile_ms(&rtts, 1.0)
    );
    // A datagram never leaves before its time, so no RTT is below twice the delay.
    assert!(min >= 40.0, "an RTT of {min} ms is below 2 x 20 ms");
    assert!(
        (40.0..60.0).contains(&mean),
        "mean RTT {mean} ms is not within 40..60 ms"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_shape_applies_to_later_datagrams() {
    let _timing = timing_lock().await;
    let echo = echo_server().await;
    let relay = Relay::start(any_port(), echo.addr, Shape::default())
        .await
        .unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    let (fast, _) = ping(&client, relay.local_addr(), b"a", PING_TIMEOUT)
        .await
        .unwrap();
    assert!(fast < Duration::from_millis(30), "unshaped RTT {fast:?}");

    relay
        .set_shape(Shape::ideal().with_delay(Duration::from_millis(30)))
        .unwrap();
    let (slow, _) = ping(&client, relay.local_addr(), b"b", PING_TIMEOUT)
        .await
        .unwrap();
    assert!(slow >= Duration::from_millis(60), "shaped RTT {slow:?}");

    relay.update_shape(|s| s.delay = Duration::ZERO).unwrap();
    let (fast_again, _) = ping(&client, relay.local_addr(), b"c", PING_TIMEOUT)
        .await
        .unwrap();
    assert!(
        fast_again < Duration::from_millis(30),
        "RTT after removing the delay {fast_again:?}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_shapes_are_refused_and_leave_the_shape_unchanged() {
    let echo = echo_server().await;
    assert!(
        Relay::start(any_port(), echo.addr, Shape::ideal().with_loss(1.5))
            .await
            .is_err()
    );
    let shape = Shape::ideal().with_delay(Duration::from_millis(5));
    let relay = Relay::start(any_port(), echo.addr, shape.clone())
        .await
        .unwrap();
    assert!(relay.set_shape(Shape::ideal().with_loss(-1.0)).is_err());
    assert!(relay.update_shape(|s| s.rate_limit = Some(0)).is_err());
    assert_eq!(relay.shape(), shape);
    relay.stop().await;
}

/// Sends 1,000 numbered datagrams through a relay with 30% loss and the given seed; returns
/// the sequence numbers the sink received and the relay's loss count.
async fn lossy_run(seed: u64) -> (BTreeSet<u32>, u64) {
    let (sink, received) = sink_server().await;
    let shape = Shape::ideal().with_loss(0.3).with_seed(Some(seed));
    let relay = Relay::start(any_port(), sink.addr, shape).await.unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    send_paced(&client, relay.local_addr(), 1000, 64, 10).await;
    let done = eventually(Duration::from_secs(5), || {
        let up = relay.stats().to_upstream;
        up.forwarded_datagrams + up.dropped_datagrams == 1000
            && received.lock().unwrap().len() as u64 == up.forwarded_datagrams
    })
    .await;
    let stats = relay.stats().to_upstream;
    assert!(done, "not everything was accounted for: {stats:?}");
    assert_eq!(
        stats.dropped_loss, stats.dropped_datagrams,
        "only loss drops"
    );
    let seqs = received.lock().unwrap().iter().map(|(s, _)| *s).collect();
    relay.stop().await;
    (seqs, stats.dropped_loss)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_drops_about_the_configured_share_reproducibly() {
    let (first, lost) = lossy_run(42).await;
    eprintln!("loss 0.3, seed 42: {lost} of 1000 dropped");
    assert!(
        (200..=400).contains(&lost),
        "{lost} of 1000 dropped at loss 0.3"
    );
    assert_eq!(first.len() as u64, 1000 - lost);

    let (second, lost_again) = lossy_run(42).await;
    assert_eq!(lost_again, lost, "same seed, same number of drops");
    assert_eq!(second, first, "same seed, same datagrams dropped");

    let (other, _) = lossy_run(43).await;
    assert_ne!(other, first, "another seed drops other datagrams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_loss_drops_everything() {
    let echo = echo_server().await;
    let relay = Relay::start(any_port(), echo.addr, Shape::ideal().with_loss(1.0))
        .await
        .unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    for _ in 0..10 {
        client.send_to(b"x", relay.local_addr()).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(2), || relay
            .stats()
            .to_upstream
            .dropped_loss
            == 10)
        .await
    );
    assert_eq!(relay.stats().to_upstream.forwarded_datagrams, 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_drops_everything_and_heal_restores() {
    let echo = echo_server().await;
    let relay = Relay::start(any_port(), echo.addr, Shape::default())
        .await
        .unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    let to = relay.local_addr();
    assert!(ping(&client, to, b"before", PING_TIMEOUT).await.is_some());

    relay.cut();
    assert!(relay.is_cut());
    for _ in 0..20 {
        client.send_to(b"lost", to).await.unwrap();
    }
    assert!(
        ping(&client, to, b"lost too", Duration::from_millis(300))
            .await
            .is_none(),
        "a datagram crossed a cut link"
    );
    let stats = relay.stats();
    assert!(stats.cut);
    assert_eq!(stats.to_upstream.dropped_cut, 21);
    assert_eq!(stats.to_upstream.forwarded_datagrams, 1);

    relay.partition(false);
    assert!(!relay.is_cut());
    let (_, reply) = ping(&client, to, b"after", PING_TIMEOUT)
        .await
        .expect("the healed link carries datagrams again");
    assert_eq!(reply, b"after");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_drops_datagrams_already_in_flight() {
    let _timing = timing_lock().await;
    let echo = echo_server().await;
    // Requests reach the echo server after 300 ms; replies would reach the client 300 ms
    // later. Cutting at 450 ms catches the replies on the wire.
    let relay = Relay::start(
        any_port(),
        echo.addr,
        Shape::ideal().with_delay(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    for _ in 0..10 {
        client
            .send_to(b"in flight", relay.local_addr())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    relay.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.heal();
    let mut buf = [0u8; 64];
    let late = tokio::time::timeout(Duration::from_millis(400), client.recv(&mut buf)).await;
    assert!(late.is_err(), "a reply in flight survived the cut");
    let stats = relay.stats();
    assert_eq!(stats.to_upstream.forwarded_datagrams, 10);
    assert_eq!(stats.to_client.dropped_cut, 10);
    assert_eq!(stats.to_client.forwarded_datagrams, 0);
    assert_eq!(stats.to_client.queued_bytes, 0);
    relay.stop().await;
}

/// Sends 1,000 numbered datagrams through a jittery relay; returns the order they arrived in.
async fn jittery_run(reorder: bool) -> Vec<u32> {
    let (sink, received) = sink_server().await;
    let shape = Shape::ideal()
        .with_delay(Duration::from_millis(5))
        .with_jitter(Duration::from_millis(4))
        .with_reorder(reorder)
        .with_seed(Some(7));
    let relay = Relay::start(any_port(), sink.addr, shape).await.unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    send_paced(&client, relay.local_addr(), 1000, 64, 10).await;
    let all = eventually(Duration::from_secs(5), || {
        received.lock().unwrap().len() == 1000
    })
    .await;
    assert!(all, "lost datagrams: {:?}", relay.stats());
    relay.stop().await;
    received.lock().unwrap().iter().map(|(s, _)| *s).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_without_reorder_keeps_order() {
    let order = jittery_run(false).await;
    let expected: Vec<u32> = (0..1000).collect();
    assert_eq!(order, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_with_reorder_reorders() {
    let order = jittery_run(true).await;
    let inversions = order.windows(2).filter(|w| w[0] > w[1]).count();
    eprintln!("jitter ±4 ms with reorder at 10 datagrams/ms: {inversions} inversions");
    assert!(inversions > 10, "only {inversions} inversions");
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_gets_its_own_mapping_and_replies() {
    let server = peer_echo_server().await;
    let relay = Relay::start(any_port(), server.addr, Shape::default())
        .await
        .unwrap();
    let a = UdpSocket::bind(any_port()).await.unwrap();
    let b = UdpSocket::bind(any_port()).await.unwrap();
    let to = relay.local_addr();

    let reply = |r: Vec<u8>| {
        let text = String::from_utf8(r).unwrap();
        let (peer, payload) = text.split_once('|').unwrap();
        (peer.to_owned(), payload.to_owned())
    };
    // Send both before reading either, so the replies are in flight at the same time.
    a.send_to(b"from a", to).await.unwrap();
    b.send_to(b"from b", to).await.unwrap();
    let mut buf = vec![0u8; 1500];
    let len = tokio::time::timeout(PING_TIMEOUT, a.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let (peer_a, payload_a) = reply(buf[..len].to_vec());
    let len = tokio::time::timeout(PING_TIMEOUT, b.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let (peer_b, payload_b) = reply(buf[..len].to_vec());
    assert_eq!(payload_a, "from a");
    assert_eq!(payload_b, "from b");
    assert_ne!(peer_a, peer_b, "the server must see two distinct peers");
    assert_ne!(peer_a, a.local_addr().unwrap().to_string());

    // The mapping is stable: the same client keeps the same upstream address.
    let (_, again) = ping(&a, to, b"again", PING_TIMEOUT).await.unwrap();
    assert_eq!(reply(again).0, peer_a);
    assert_eq!(relay.stats().mappings, 2);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_mappings_expire_and_come_back() {
    let echo = echo_server().await;
    let config = RelayConfig {
        idle_timeout: Duration::from_millis(200),
        ..RelayConfig::default()
    };
    let relay = Relay::start_with(any_port(), echo.addr, Shape::default(), config)
        .await
        .unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    assert!(
        ping(&client, relay.local_addr(), b"1", PING_TIMEOUT)
            .await
            .is_some()
    );
    assert_eq!(relay.stats().mappings, 1);
    assert!(eventually(Duration::from_secs(3), || relay.stats().mappings == 0).await);
    assert!(
        ping(&client, relay.local_addr(), b"2", PING_TIMEOUT)
            .await
            .is_some()
    );
    assert_eq!(relay.stats().mappings, 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_table_limit_turns_away_extra_clients() {
    let echo = echo_server().await;
    let config = RelayConfig {
        max_mappings: 1,
        ..RelayConfig::default()
    };
    let relay = Relay::start_with(any_port(), echo.addr, Shape::default(), config)
        .await
        .unwrap();
    let a = UdpSocket::bind(any_port()).await.unwrap();
    let b = UdpSocket::bind(any_port()).await.unwrap();
    assert!(
        ping(&a, relay.local_addr(), b"a", PING_TIMEOUT)
            .await
            .is_some()
    );
    assert!(
        ping(&b, relay.local_addr(), b"b", Duration::from_millis(300))
            .await
            .is_none()
    );
    let stats = relay.stats();
    assert_eq!(stats.mappings, 1);
    assert_eq!(stats.to_upstream.dropped_other, 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_datagrams_and_bytes_per_direction() {
    let echo = echo_server().await;
    let relay = Relay::start(any_port(), echo.addr, Shape::default())
        .await
        .unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    for _ in 0..10 {
        ping(&client, relay.local_addr(), &[7u8; 100], PING_TIMEOUT)
            .await
            .unwrap();
    }
    relay.cut();
    for _ in 0..5 {
        client
            .send_to(&[7u8; 30], relay.local_addr())
            .await
            .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(2), || relay
            .stats()
            .to_upstream
            .dropped_datagrams
            == 5)
        .await
    );
    let stats = relay.stats();
    assert_eq!(stats.to_upstream.forwarded_datagrams, 10);
    assert_eq!(stats.to_upstream.forwarded_bytes, 1000);
    assert_eq!(stats.to_client.forwarded_datagrams, 10);
    assert_eq!(stats.to_client.forwarded_bytes, 1000);
    assert_eq!(stats.to_upstream.dropped_bytes, 150);
    assert_eq!(stats.to_upstream.dropped_cut, 5);
    assert_eq!(stats.to_client.dropped_datagrams, 0);
    assert_eq!(stats.to_upstream.queued_bytes, 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_limit_bounds_the_bytes_held() {
    let _timing = timing_lock().await;
    let (sink, received) = sink_server().await;
    let config = RelayConfig {
        queue_limit_bytes: 10_000,
        ..RelayConfig::default()
    };
    let shape = Shape::ideal().with_delay(Duration::from_secs(1));
    let relay = Relay::start_with(any_port(), sink.addr, shape, config)
        .await
        .unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    send_paced(&client, relay.local_addr(), 50, 1000, 10).await;
    assert!(
        eventually(Duration::from_millis(900), || {
            relay.stats().to_upstream.dropped_queue_full == 40
        })
        .await,
        "{:?}",
        relay.stats()
    );
    assert_eq!(relay.stats().to_upstream.queued_bytes, 10_000);
    assert!(
        eventually(Duration::from_secs(3), || received.lock().unwrap().len()
            == 10)
        .await
    );
    let seqs: Vec<u32> = received.lock().unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (0..10).collect::<Vec<u32>>(), "the first ten fit");
    assert_eq!(relay.stats().to_upstream.queued_bytes, 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_paces_a_burst() {
    let _timing = timing_lock().await;
    let (sink, received) = sink_server().await;
    // 100 kB/s: each 1,000-byte datagram takes 10 ms on the link.
    let shape = Shape::ideal().with_rate_limit(Some(100_000));
    let relay = Relay::start(any_port(), sink.addr, shape).await.unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    let start = Instant::now();
    send_paced(&client, relay.local_addr(), 50, 1000, 50).await;
    assert!(
        eventually(Duration::from_secs(3), || received.lock().unwrap().len()
            == 50)
        .await
    );
    let log = received.lock().unwrap().clone();
    let first = log[0].1.duration_since(start);
    let last = log[49].1.duration_since(start);
    eprintln!("rate 100 kB/s, 50 x 1000 B: first after {first:?}, last after {last:?}");
    assert!(first >= Duration::from_millis(10), "first after {first:?}");
    assert!(
        (Duration::from_millis(500)..Duration::from_millis(700)).contains(&last),
        "the 50th datagram arrived after {last:?}, expected about 500 ms"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_the_listening_socket() {
    let echo = echo_server().await;
    let relay = Relay::start(any_port(), echo.addr, Shape::default())
        .await
        .unwrap();
    let addr = relay.local_addr();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    assert!(ping(&client, addr, b"x", PING_TIMEOUT).await.is_some());
    let handle = relay.handle();
    relay.stop().await;
    // The port is free again, and the handle outlives the relay harmlessly.
    let rebound = UdpSocket::bind(addr).await;
    assert!(rebound.is_ok(), "port still held: {rebound:?}");
    handle.cut();
    assert_eq!(handle.stats().to_upstream.forwarded_datagrams, 1);
}

/// A std-thread UDP echo server, for tests whose tokio runtime must not serve it.
struct ThreadEcho {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ThreadEcho {
    fn start() -> Self {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((len, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..len], peer);
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ThreadEcho {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

/// The relay keeps real time on its own thread: a caller whose tokio clock is paused (and
/// would skip any timer on its own runtime) still sees the full delay, measured in real time.
#[tokio::test(start_paused = true)]
async fn keeps_real_time_when_the_callers_clock_is_paused() {
    let _timing = timing_lock().await;
    let echo = ThreadEcho::start();
    let relay = Relay::start(
        any_port(),
        echo.addr,
        Shape::ideal().with_delay(Duration::from_millis(25)),
    )
    .await
    .unwrap();
    // A blocking client: this runtime is not needed for the relay to make progress.
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(PING_TIMEOUT)).unwrap();
    let start = std::time::Instant::now();
    client.send_to(b"paused", relay.local_addr()).unwrap();
    let mut buf = [0u8; 64];
    let len = client.recv(&mut buf).expect("a reply through the relay");
    let rtt = start.elapsed();
    assert_eq!(&buf[..len], b"paused");
    assert!(
        rtt >= Duration::from_millis(50),
        "RTT {rtt:?} below 2 x 25 ms"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_not_listening_yet_then_listening() {
    // Find a free port, then leave it closed for a while.
    let port = UdpSocket::bind(any_port())
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = Relay::start(any_port(), port, Shape::default())
        .await
        .unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    // Each datagram the relay sends draws an ICMP "port unreachable"; none may turn into a
    // drop or stop the mapping.
    for round in 0..20 {
        for _ in 0..5 {
            client
                .send_to(b"nobody home", relay.local_addr())
                .await
                .unwrap();
        }
        if round % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert!(
        eventually(Duration::from_secs(2), || {
            relay.stats().to_upstream.forwarded_datagrams == 100
        })
        .await,
        "{:?}",
        relay.stats().to_upstream
    );
    assert_eq!(relay.stats().to_upstream.dropped_datagrams, 0);
    // The server comes up on that port: the same mapping now works.
    let server = UdpSocket::bind(port).await.unwrap();
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let (len, peer) = server.recv_from(&mut buf).await.unwrap();
        server.send_to(&buf[..len], peer).await.unwrap();
    });
    let (_, reply) = ping(&client, relay.local_addr(), b"hello", PING_TIMEOUT)
        .await
        .expect("the late server is reached through the same mapping");
    assert_eq!(reply, b"hello");
    echo.await.unwrap();
    assert_eq!(relay.stats().mappings, 1);
    relay.stop().await;
}
