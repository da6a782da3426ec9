//! The `tern-wanem` binary end to end: flags, the printed addresses, the control protocol.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;
use tokio::process::{Child, ChildStdout, Command};

use crate::control::ControlClient;
use crate::support::{any_port, echo_server, ping, timing_lock};

/// Starts the binary with `args`; the child is killed when dropped.
fn spawn(args: &[&str]) -> (Child, tokio::io::Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern-wanem"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, BufReader::new(stdout).lines())
}

async fn next_line(lines: &mut tokio::io::Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the binary prints its addresses")
        .unwrap()
        .expect("a line before end of output")
}

/// Reads `relay LISTEN -> UPSTREAM`.
fn relay_line(line: &str) -> (SocketAddr, SocketAddr) {
    let rest = line.strip_prefix("relay ").unwrap();
    let (listen, upstream) = rest.split_once(" -> ").unwrap();
    (listen.parse().unwrap(), upstream.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_relays_with_delay_and_obeys_the_control_protocol() {
    let _timing = timing_lock().await;
    let echo = echo_server().await;
    let upstream = echo.addr.to_string();
    let (mut child, mut lines) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--delay",
        "10ms",
        "--control",
        "127.0.0.1:0",
    ]);
    let (listen, printed_upstream) = relay_line(&next_line(&mut lines).await);
    assert_eq!(printed_upstream, echo.addr);
    let control_addr: SocketAddr = next_line(&mut lines)
        .await
        .strip_prefix("control ")
        .unwrap()
        .parse()
        .unwrap();

    let client = UdpSocket::bind(any_port()).await.unwrap();
    let (rtt, reply) = ping(
        &client,
        listen,
        b"through the binary",
        Duration::from_secs(2),
    )
    .await
    .expect("a reply through the binary");
    assert_eq!(reply, b"through the binary");
    assert!(
        rtt >= Duration::from_millis(20),
        "RTT {rtt:?} below 2 x 10 ms"
    );

    let mut control = ControlClient::connect(control_addr).await;
    assert_eq!(control.send("cut").await, "ok");
    assert!(
        ping(&client, listen, b"x", Duration::from_millis(300))
            .await
            .is_none()
    );
    assert_eq!(control.send("heal").await, "ok");
    assert_eq!(control.send("delay 0ms").await, "ok");
    assert!(
        ping(&client, listen, b"y", Duration::from_secs(2))
            .await
            .is_some()
    );
    let stats: serde_json::Value = serde_json::from_str(&control.send("stats").await).unwrap();
    assert_eq!(stats["pairs"][0]["to_upstream"]["forwarded_datagrams"], 2);
    assert_eq!(stats["pairs"][0]["to_upstream"]["dropped_cut"], 1);
    assert_eq!(stats["pairs"][0]["shape"]["delay_ms"], 0.0);

    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_runs_several_pairs() {
    let echo = echo_server().await;
    let pair = format!("127.0.0.1:0={}", echo.addr);
    let (mut child, mut lines) = spawn(&["--pair", &pair, "--pair", &pair, "--loss", "0%"]);
    let (first, _) = relay_line(&next_line(&mut lines).await);
    let (second, _) = relay_line(&next_line(&mut lines).await);
    assert_ne!(first, second);
    let client = UdpSocket::bind(any_port()).await.unwrap();
    for to in [first, second] {
        assert!(
            ping(&client, to, b"z", Duration::from_secs(2))
                .await
                .is_some()
        );
    }
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_refuses_bad_flags() {
    for args in [
        &["--listen", "127.0.0.1:0"][..],
        &["--pair", "127.0.0.1:0", "--delay", "1ms"][..],
        &["--pair", "127.0.0.1:0=127.0.0.1:9", "--loss", "2"][..],
        &["--pair", "127.0.0.1:0=127.0.0.1:9", "--delay", "soon"][..],
        &[][..],
    ] {
        let status = Command::new(env!("CARGO_BIN_EXE_tern-wanem"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(!status.success(), "{args:?} was accepted");
    }
}
