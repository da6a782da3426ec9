//! The admin CLI and metrics, against a running node.

use tern_tests::client::RawClient;
use tern_tests::server::TestServer;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn ctl_manages_accounts_and_sessions() {
    let server = TestServer::start("ctl", "");
    server.register("zoe", "localhost", "secret");
    let out = server.ctl(&[
        "account",
        "register",
        "--username",
        "zoe",
        "--domain",
        "localhost",
        "--password",
        "x",
    ]);
    assert!(!out.status.success(), "duplicate registration must fail");
    let out = server.ctl(&["account", "list", "--domain", "localhost"]);
    assert!(stdout(&out).contains("zoe@localhost"), "{}", stdout(&out));
    let out = server.ctl(&[
        "account",
        "check-password",
        "--user",
        "zoe@localhost",
        "--password",
        "secret",
    ]);
    assert!(out.status.success());
    let out = server.ctl(&[
        "account",
        "check-password",
        "--user",
        "zoe@localhost",
        "--password",
        "nope",
    ]);
    assert!(!out.status.success());
    let mut c =
        RawClient::login(server.starttls_port, "localhost", "zoe", "secret", "laptop").await;
    let out = server.ctl(&["session", "list"]);
    assert!(
        stdout(&out).contains("zoe@localhost/laptop"),
        "{}",
        stdout(&out)
    );
    let out = server.ctl(&[
        "stanza",
        "send-message",
        "--from",
        "localhost",
        "--to",
        "zoe@localhost/laptop",
        "--body",
        "from admin",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = c.read_until("</message>").await;
    assert!(got.contains("<body>from admin</body>"), "{got}");
    let out = server.ctl(&["session", "kick", "--user", "zoe@localhost/laptop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(c.closed().await);
    let metrics = reqwest_metrics(server.admin_port).await;
    assert!(
        metrics.contains("tern_sasl_logins_total{mechanism=\"PLAIN\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tern_c2s_connections_total{transport=\"c2s_starttls\"}"),
        "{metrics}"
    );
}

#[test]
fn ctl_explains_when_the_server_is_not_running() {
    let server = TestServer::configure(tern_tests::server::temp_dir("ctl-down"), "");
    let out = server.ctl(&["server", "status"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`tern serve`"), "{stderr}");
    // With a token left by an earlier run but no server listening.
    let mut server = TestServer::start("ctl-stopped", "");
    assert!(server.stop());
    let out = server.ctl(&["server", "status"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is `tern serve` running"), "{stderr}");
}

/// GET /metrics with a plain HTTP/1.1 request.
pub(crate) async fn reqwest_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}
