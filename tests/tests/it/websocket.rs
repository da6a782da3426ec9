//! XMPP over WebSocket (RFC 7395) against the running binary: a web client logs in with
//! SCRAM, binds and chats with a TCP client; bad upgrades and bad messages get their answers;
//! a lost WebSocket's session is resumed (XEP-0198) over a new one; XEP-0156 discovery.

use std::time::Duration;

use tern_tests::client::{FRAMING, RawClient};
use tern_tests::server::TestServer;

const SM: &str = "urn:xmpp:sm:3";

/// A WebSocket client of `user` (password `pw`), authenticated with SCRAM-SHA-256 and bound
/// to `resource`.
async fn ws_login(server: &TestServer, user: &str, resource: &str) -> RawClient {
    let mut client = RawClient::connect_ws(server.http_port, "localhost").await;
    client.open().await;
    let answer = client.auth_scram_sha256(user, "pw", false, &[]).await;
    assert!(answer.contains("<success"), "{answer}");
    client.bind(resource).await;
    client
}

/// A plain HTTP GET; returns the whole response.
async fn http_get(port: u16, path: &str, extra: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Connection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_logs_in_and_chats_with_a_tcp_client() {
    let server = TestServer::start("ws-chat", "");
    server.register("alice", "localhost", "pw");
    server.register("bob", "localhost", "pw");

    let mut alice = RawClient::connect_ws(server.http_port, "localhost").await;
    let features = alice.open().await;
    assert!(
        features.starts_with(&format!("<open xmlns='{FRAMING}' id='")),
        "{features}"
    );
    assert!(
        features.contains("from='localhost' version='1.0'"),
        "{features}"
    );
    assert!(
        features.contains(
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms"
        ),
        "{features}"
    );
    // Plain HTTP is not encrypted: no PLAIN, no STARTTLS (it cannot be upgraded).
    assert!(
        features.contains("<mechanism>SCRAM-SHA-256</mechanism>"),
        "{features}"
    );
    assert!(!features.contains("PLAIN"), "{features}");
    assert!(!features.contains("starttls"), "{features}");
    let answer = alice.auth_scram_sha256("alice", "pw", false, &[]).await;
    assert!(answer.contains("<success"), "{answer}");
    assert_eq!(alice.bind("web").await, "alice@localhost/web");
    alice.send("<presence xmlns='jabber:client'/>").await;

    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "desk").await;
    bob.send(
        "<message to='alice@localhost/web' id='m1' type='chat'><body>over tcp</body></message>",
    )
    .await;
    let got = alice.read_until("</message>").await;
    assert!(
        got.contains("<message xmlns='jabber:client'") && got.contains("from='bob@localhost/desk'"),
        "one message, namespaced: {got}"
    );
    assert!(got.contains("<body>over tcp</body>"), "{got}");
    alice
        .send("<message xmlns='jabber:client' to='bob@localhost/desk' id='m2' type='chat'><body>over ws</body></message>")
        .await;
    let got = bob.read_until("</message>").await;
    assert!(got.contains("from='alice@localhost/web'"), "{got}");
    assert!(got.contains("<body>over ws</body>"), "{got}");

    // The session is listed with its transport, and counted.
    let web = server.listed_session("alice@localhost/web");
    assert_eq!(web["transport"], "websocket", "{web}");
    let metrics = crate::admin::reqwest_metrics(server.admin_port).await;
    assert!(
        metrics.contains("tern_c2s_connections_total{transport=\"websocket\"} 1"),
        "{metrics}"
    );

    // <close/> is answered with <close/>, then the WebSocket ends.
    alice.send(&format!("<close xmlns='{FRAMING}'/>")).await;
    let closing = alice.read_until("/>").await;
    assert!(
        closing.contains(&format!("<close xmlns='{FRAMING}'/>")),
        "{closing}"
    );
    assert!(alice.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upgrades_and_bad_messages_get_their_answers() {
    let server = TestServer::start(
        "ws-bad",
        "[http]\nallowed_origins = [\"https://chat.example\"]\nmax_message_size = \"4KiB\"\nmax_sessions_per_ip = 4\n",
    );
    let port = server.http_port;
    // No `xmpp` subprotocol: 400.
    let refused = RawClient::connect_ws_with(port, "/ws", "localhost", &[], None).await;
    assert_eq!(refused.err(), Some(400));
    // A page from an origin that is not allowed: 403; an allowed one gets in.
    let refused = RawClient::connect_ws_with(
        port,
        "/ws",
        "localhost",
        &["xmpp"],
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(refused.err(), Some(403));
    let allowed = RawClient::connect_ws_with(
        port,
        "/ws",
        "localhost",
        &["xmpp"],
        Some("https://chat.example"),
    )
    .await;
    assert!(allowed.is_ok());
    drop(allowed);

    // A stanza before <open/>: a stream error, <close/>, and the WebSocket ends.
    let mut c = RawClient::connect_ws(port, "localhost").await;
    c.send("<message xmlns='jabber:client' to='bob@localhost'><body>x</body></message>")
        .await;
    let got = c.read_until(&format!("<close xmlns='{FRAMING}'/>")).await;
    assert!(got.contains("<not-authorized"), "{got}");
    assert!(c.closed().await);

    // Half an element in a message: not well-formed.
    let mut c = RawClient::connect_ws(port, "localhost").await;
    c.open().await;
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>")
        .await;
    let got = c.read_until(&format!("<close xmlns='{FRAMING}'/>")).await;
    assert!(got.contains("<not-well-formed"), "{got}");
    assert!(c.closed().await);

    // A binary message: unsupported encoding.
    let mut c = RawClient::connect_ws(port, "localhost").await;
    c.open().await;
    c.send_binary(b"<presence/>").await;
    let got = c.read_until(&format!("<close xmlns='{FRAMING}'/>")).await;
    assert!(got.contains("<unsupported-encoding"), "{got}");
    assert!(c.closed().await);

    // A message over max_message_size ends the WebSocket.
    let mut c = RawClient::connect_ws(port, "localhost").await;
    c.open().await;
    let big = format!(
        "<message xmlns='jabber:client' to='bob@localhost'><body>{}</body></message>",
        "x".repeat(8 * 1024)
    );
    c.try_send(&big).await;
    assert!(
        c.closed().await,
        "an oversized message closes the websocket"
    );

    // Per-IP limit: four sessions at once, the fifth is refused with 429 until one ends.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(RawClient::connect_ws(port, "localhost").await);
    }
    let refused = RawClient::connect_ws_with(port, "/ws", "localhost", &["xmpp"], None).await;
    assert_eq!(refused.err(), Some(429));
    let mut first = held.remove(0);
    first.open().await;
    first.send(&format!("<close xmlns='{FRAMING}'/>")).await;
    assert!(first.closed().await);
    let mut admitted = None;
    for _ in 0..50 {
        if let Ok(c) = RawClient::connect_ws_with(port, "/ws", "localhost", &["xmpp"], None).await {
            admitted = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        admitted.is_some(),
        "a slot freed by a closed session is reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_websocket_session_is_resumed_over_a_new_one() {
    let server = TestServer::start("ws-resume", "");
    server.register("alice", "localhost", "pw");
    server.register("bob", "localhost", "pw");
    let mut alice = ws_login(&server, "alice", "web").await;
    alice
        .send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = alice.read_until("/>").await;
    let start = enabled.find("id='").expect("resumption id") + 4;
    let end = enabled[start..].find('\'').expect("id end") + start;
    let previd = enabled[start..end].to_owned();
    // No presence: the only stanzas the session sends her are bob's messages, so `h` counts
    // them.

    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "desk").await;
    for n in 1..=3 {
        bob.send(&format!(
            "<message to='alice@localhost/web' id='c{n}' type='chat'><body>n{n}</body></message>"
        ))
        .await;
        alice.read_until(&format!("<body>n{n}</body>")).await;
    }
    // The WebSocket goes away without <close/>: the session waits for its client.
    drop(alice);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 4..=5 {
        bob.send(&format!(
            "<message to='alice@localhost/web' id='c{n}' type='chat'><body>n{n}</body></message>"
        ))
        .await;
    }
    let mut again = RawClient::connect_ws(server.http_port, "localhost").await;
    again.open().await;
    let answer = again.auth_scram_sha256("alice", "pw", false, &[]).await;
    assert!(answer.contains("<success"), "{answer}");
    again.open().await;
    // It handled the first message only: the other four come (again) once, in order.
    again
        .send(&format!("<resume xmlns='{SM}' previd='{previd}' h='1'/>"))
        .await;
    let resumed = again.read_until("<body>n5</body>").await;
    assert!(resumed.contains("<resumed"), "{resumed}");
    let order: Vec<usize> = (2..=5)
        .map(|n| {
            resumed
                .find(&format!("<body>n{n}</body>"))
                .expect("each once")
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{resumed}");
    assert!(!resumed.contains("<body>n1</body>"), "{resumed}");
    let more = again.read_for(Duration::from_millis(500)).await;
    assert!(!more.contains("<body>"), "nothing twice: {more}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_meta_lists_the_endpoints() {
    let server = TestServer::start("ws-host-meta", "");
    let port = server.http_port;
    let json = http_get(
        port,
        "/.well-known/host-meta.json",
        "Origin: https://page.example\r\n",
    )
    .await;
    assert!(json.starts_with("HTTP/1.1 200"), "{json}");
    assert!(
        json.contains("access-control-allow-origin: https://page.example"),
        "{json}"
    );
    assert!(
        json.contains(&format!(
            "{{\"href\":\"ws://127.0.0.1:{port}/ws\",\"rel\":\"urn:xmpp:alt-connections:websocket\"}}"
        )),
        "{json}"
    );
    let xml = http_get(port, "/.well-known/host-meta", "").await;
    assert!(
        xml.contains(&format!(
            "<Link rel='urn:xmpp:alt-connections:websocket' href='ws://127.0.0.1:{port}/ws'/>"
        )),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            "<Link rel='urn:xmpp:alt-connections:xbosh' href='http://127.0.0.1:{port}/http-bind'/>"
        )),
        "{xml}"
    );
    assert!(
        json.contains(&format!(
            "{{\"href\":\"http://127.0.0.1:{port}/http-bind\",\"rel\":\"urn:xmpp:alt-connections:xbosh\"}}"
        )),
        "{json}"
    );
    assert!(xml.contains("application/xrd+xml"), "{xml}");
}

/// A WebSocket client of an account homed in another datacenter is an edge session like a TCP
/// one: SCRAM with credentials from the home, messages both ways across the mesh, and the home
/// lists the session with its datacenter and transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_at_another_datacenter_is_an_edge_session() {
    use crate::mesh::{available, one_at_a_time, register, three_dcs, wait_home};
    let _one = one_at_a_time().await;
    let (root, mut servers) = three_dcs("ws-edge", "1s");
    register(&servers[0], "alice");
    register(&servers[2], "bob");
    for server in &servers {
        wait_home(server, "alice");
        wait_home(server, "bob");
    }
    // alice lives at dc1 and connects to dc2 over a WebSocket.
    let mut alice = RawClient::connect_ws(servers[1].http_port, "localhost").await;
    alice.open().await;
    let answer = alice
        .auth_scram_sha256("alice", "pw-alice", false, &[])
        .await;
    assert!(answer.contains("<success"), "{answer}");
    assert_eq!(alice.bind("web").await, "alice@localhost/web");
    let mut bob = available(&servers[2], "bob", "desk").await;
    bob.send(
        "<message to='alice@localhost/web' id='e1' type='chat'><body>to the edge</body></message>",
    )
    .await;
    let got = alice.read_until("</message>").await;
    assert!(
        got.contains("from='bob@localhost/desk'") && got.contains("<body>to the edge</body>"),
        "{got}"
    );
    alice
        .send("<message xmlns='jabber:client' to='bob@localhost/desk' id='e2' type='chat'><body>from the edge</body></message>")
        .await;
    let got = bob.read_until("</message>").await;
    assert!(
        got.contains("from='alice@localhost/web'") && got.contains("<body>from the edge</body>"),
        "{got}"
    );
    let web = servers[0].listed_session("alice@localhost/web");
    assert_eq!(web["datacenter"], "dc2", "{web}");
    assert_eq!(web["transport"], "websocket", "{web}");
    for server in &mut servers {
        server.stop();
    }
    let _ = std::fs::remove_dir_all(&root);
}
