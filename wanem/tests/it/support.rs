//! Test servers and helpers shared by the integration tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::MutexGuard;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Serialises the tests that measure time, so they do not compete for the CPU with each other.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the timing lock for the duration of a test.
pub(crate) async fn timing_lock() -> MutexGuard<'static, ()> {
    TIMING.lock().await
}

/// `127.0.0.1:0`.
pub(crate) fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A task that is aborted when dropped.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UDP echo server: replies to each datagram with the same bytes.
pub(crate) async fn echo_server() -> Server {
    let socket = UdpSocket::bind(any_port()).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..len], peer).await;
        }
    });
    Server { addr, task }
}

/// A UDP server that replies `<peer address>|<payload>`, so clients learn which address the
/// server saw them from.
pub(crate) async fn peer_echo_server() -> Server {
    let socket = UdpSocket::bind(any_port()).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
            let mut reply = format!("{peer}|").into_bytes();
            reply.extend_from_slice(&buf[..len]);
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    Server { addr, task }
}

/// What a sink received: the first 4 bytes of each datagram as a big-endian sequence number,
/// with the time it arrived, in arrival order.
pub(crate) type Received = Arc<Mutex<Vec<(u32, Instant)>>>;

/// A UDP server that records every datagram and replies to none.
pub(crate) async fn sink_server() -> (Server, Received) {
    let socket = UdpSocket::bind(any_port()).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let received: Received = Arc::default();
    let log = received.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok(len) = socket.recv(&mut buf).await {
            let at = Instant::now();
            if len >= 4 {
                let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                log.lock().unwrap().push((seq, at));
            }
        }
    });
    (Server { addr, task }, received)
}

/// A datagram of `len` bytes (at least 4) starting with `seq`.
pub(crate) fn numbered(seq: u32, len: usize) -> Vec<u8> {
    let mut payload = vec![0xa5u8; len.max(4)];
    payload[..4].copy_from_slice(&seq.to_be_bytes());
    payload
}

/// Sends `count` numbered datagrams of `len` bytes from `socket` to `to`, `per_ms` of them
/// per millisecond tick, so that no kernel socket buffer overflows on the way.
pub(crate) async fn send_paced(
    socket: &UdpSocket,
    to: SocketAddr,
    count: u32,
    len: usize,
    per_ms: u32,
) -> Vec<Instant> {
    let mut sent_at = Vec::with_capacity(count as usize);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for seq in 0..count {
        if seq % per_ms == 0 {
            tick.tick().await;
        }
        sent_at.push(Instant::now());
        socket.send_to(&numbered(seq, len), to).await.unwrap();
    }
    sent_at
}

/// Polls `check` every 5 ms until it holds or `within` has passed; returns whether it held.
pub(crate) async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends `payload` to `to` and waits up to `timeout` for one reply; the round-trip time, or
/// `None` on timeout.
pub(crate) async fn ping(
    socket: &UdpSocket,
    to: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let start = Instant::now();
    socket.send_to(payload, to).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let len = tokio::time::timeout(timeout, socket.recv(&mut buf))
        .await
        .ok()?
        .unwrap();
    buf.truncate(len);
    Some((start.elapsed(), buf))
}

/// Mean of durations, in milliseconds.
pub(crate) fn mean_ms(values: &[Duration]) -> f64 {
    values.iter().map(|d| d.as_secs_f64() * 1e3).sum::<f64>() / values.len() as f64
}

/// The `q`-quantile (0 to 1) of durations, in milliseconds.
pub(crate) fn quantile_ms(values: &[Duration], q: f64) -> f64 {
    let mut sorted: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}
