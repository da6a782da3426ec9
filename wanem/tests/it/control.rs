//! The control protocol against running relays.

use std::net::SocketAddr;
use std::time::Duration;

use tern_wanem::{ControlServer, Relay, Shape};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UdpSocket};

use crate::support::{any_port, echo_server, ping};

/// A control connection that sends one line and reads one reply line.
pub(crate) struct ControlClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl ControlClient {
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        Self {
            reader: BufReader::new(read),
            writer,
        }
    }

    pub(crate) async fn send(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.read_line().await
    }

    pub(crate) async fn read_line(&mut self) -> String {
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(2), self.reader.read_line(&mut reply))
            .await
            .expect("a reply in time")
            .unwrap();
        reply.trim_end().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_change_the_shape_and_report_errors() {
    let echo = echo_server().await;
    let relay = Relay::start(any_port(), echo.addr, Shape::default())
        .await
        .unwrap();
    let server = ControlServer::start(any_port(), vec![relay.handle()])
        .await
        .unwrap();
    let mut control = ControlClient::connect(server.local_addr()).await;

    assert_eq!(control.send("delay 20ms").await, "ok");
    assert_eq!(control.send("jitter 2ms").await, "ok");
    assert_eq!(control.send("loss 0.01").await, "ok");
    assert_eq!(control.send("rate 10MB").await, "ok");
    assert_eq!(control.send("reorder on").await, "ok");
    assert_eq!(control.send("seed 9").await, "ok");
    let shape = relay.shape();
    assert_eq!(shape.delay, Duration::from_millis(20));
    assert_eq!(shape.jitter, Duration::from_millis(2));
    assert_eq!(shape.loss, 0.01);
    assert_eq!(shape.rate_limit, Some(10_000_000));
    assert!(shape.reorder);
    assert_eq!(shape.seed, Some(9));

    for bad in ["loss 2", "delay soon", "explode", "pair 3 cut"] {
        let reply = control.send(bad).await;
        assert!(reply.starts_with("error: "), "{bad:?} got {reply:?}");
    }
    assert_eq!(relay.shape(), shape, "errors change nothing");
    assert!(control.send("help").await.contains("delay"));

    assert_eq!(control.send("quit").await, "ok");
    let mut rest = String::new();
    let read = control.reader.read_line(&mut rest).await.unwrap();
    assert_eq!(read, 0, "the server closes the connection after quit");
    server.stop().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_heal_and_stats_over_the_control_connection() {
    let echo = echo_server().await;
    let relay = Relay::start(any_port(), echo.addr, Shape::default())
        .await
        .unwrap();
    let server = ControlServer::start(any_port(), vec![relay.handle()])
        .await
        .unwrap();
    let mut control = ControlClient::connect(server.local_addr()).await;
    let client = UdpSocket::bind(any_port()).await.unwrap();
    let to = relay.local_addr();

    assert!(
        ping(&client, to, b"one", Duration::from_secs(2))
            .await
            .is_some()
    );
    assert_eq!(control.send("cut").await, "ok");
    assert!(relay.is_cut());
    assert!(
        ping(&client, to, b"two", Duration::from_millis(300))
            .await
            .is_none()
    );

    let stats: serde_json::Value = serde_json::from_str(&control.send("stats").await).unwrap();
    let pair = &stats["pairs"][0];
    assert_eq!(pair["pair"], 0);
    assert_eq!(pair["listen"], to.to_string());
    assert_eq!(pair["upstream"], echo.addr.to_string());
    assert_eq!(pair["cut"], true);
    assert_eq!(pair["mappings"], 1);
    assert_eq!(pair["to_upstream"]["forwarded_datagrams"], 1);
    assert_eq!(pair["to_upstream"]["forwarded_bytes"], 3);
    assert_eq!(pair["to_upstream"]["dropped_cut"], 1);
    assert_eq!(pair["to_client"]["forwarded_datagrams"], 1);
    assert_eq!(pair["shape"]["delay_ms"], 0.0);

    assert_eq!(control.send("heal").await, "ok");
    assert!(
        ping(&client, to, b"three", Duration::from_secs(2))
            .await
            .is_some()
    );
    server.stop().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_prefix_targets_one_relay() {
    let echo = echo_server().await;
    let first = Relay::start(any_port(), echo.addr, Shape::default())
        .await
        .unwrap();
    let second = Relay::start(any_port(), echo.addr, Shape::default())
        .await
        .unwrap();
    let server = ControlServer::start(any_port(), vec![first.handle(), second.handle()])
        .await
        .unwrap();
    let mut control = ControlClient::connect(server.local_addr()).await;

    assert_eq!(control.send("pair 1 cut").await, "ok");
    assert!(!first.is_cut());
    assert!(second.is_cut());
    assert_eq!(control.send("delay 5ms").await, "ok");
    assert_eq!(first.shape().delay, Duration::from_millis(5));
    assert_eq!(second.shape().delay, Duration::from_millis(5));

    let stats: serde_json::Value =
        serde_json::from_str(&control.send("pair 1 stats").await).unwrap();
    assert_eq!(stats["pairs"].as_array().unwrap().len(), 1);
    assert_eq!(stats["pairs"][0]["pair"], 1);
    assert_eq!(stats["pairs"][0]["cut"], true);
    let all: serde_json::Value = serde_json::from_str(&control.send("stats").await).unwrap();
    assert_eq!(all["pairs"].as_array().unwrap().len(), 2);
    server.stop().await;
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_lines_close_the_connection() {
    let echo = echo_server().await;
    let relay = Relay::start(any_port(), echo.addr, Shape::default())
        .await
        .unwrap();
    let server = ControlServer::start(any_port(), vec![relay.handle()])
        .await
        .unwrap();
    let mut control = ControlClient::connect(server.local_addr()).await;
    let long = "x".repeat(tern_wanem::MAX_LINE + 10);
    assert_eq!(control.send(&long).await, "error: line too long");
    let mut rest = String::new();
    assert_eq!(control.reader.read_line(&mut rest).await.unwrap(), 0);
    server.stop().await;
    relay.stop().await;
}
