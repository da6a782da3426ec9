//! How close to their scheduled time datagrams leave, at thousands of datagrams per second.

use std::time::Duration;

use tern_wanem::{Relay, Shape};
use tokio::net::UdpSocket;

use crate::support::{
    any_port, eventually, mean_ms, quantile_ms, send_paced, sink_server, timing_lock,
};

/// One-way latency through a relay with a 10 ms delay, 3,000 datagrams at about 5,000 per
/// second: every datagram takes at least the delay, and on average at most 2 ms more (the
/// timer has 1 ms granularity, and the two loopback hops and task wake-ups add a little).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_delay_is_accurate_at_thousands_of_datagrams_per_second() {
    let _timing = timing_lock().await;
    let (sink, received) = sink_server().await;
    let delay = Duration::from_millis(10);
    let relay = Relay::start(any_port(), sink.addr, Shape::ideal().with_delay(delay))
        .await
        .unwrap();
    let client = UdpSocket::bind(any_port()).await.unwrap();
    let started = tokio::time::Instant::now();
    let sent_at = send_paced(&client, relay.local_addr(), 3000, 200, 5).await;
    let send_secs = started.elapsed().as_secs_f64();
    assert!(
        eventually(Duration::from_secs(5), || received.lock().unwrap().len()
            == 3000)
        .await,
        "lost datagrams: {:?}",
        relay.stats()
    );
    let log = received.lock().unwrap().clone();
    let one_way: Vec<Duration> = log
        .iter()
        .map(|(seq, at)| at.duration_since(sent_at[*seq as usize]))
        .collect();
    let excess: Vec<Duration> = one_way.iter().map(|d| d.saturating_sub(delay)).collect();
    let min = quantile_ms(&one_way, 0.0);
    let mean_excess = mean_ms(&excess);
    eprintln!(
        "one-way delay 10ms at {:.0} datagrams/s: min {min:.3} ms; excess over the delay: \
         mean {mean_excess:.3} ms, p50 {:.3}, p99 {:.3}, max {:.3}",
        3000.0 / send_secs,
        quantile_ms(&excess, 0.5),
        quantile_ms(&excess, 0.99),
        quantile_ms(&excess, 1.0),
    );
    assert!(
        min >= 10.0,
        "a datagram left {min} ms after arriving, before its delay"
    );
    assert!(mean_excess < 2.0, "mean excess {mean_excess} ms");
    relay.stop().await;
}
