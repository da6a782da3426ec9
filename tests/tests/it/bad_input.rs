//! Bad input: each case has a specified answer, and the server keeps serving.

use std::time::{Duration, Instant};

use tern_tests::client::{RawClient, header};
use tern_tests::server::TestServer;

async fn stream_error_after(server: &TestServer, login: bool, payload: &str) -> String {
    let mut c = if login {
        RawClient::login(server.starttls_port, "localhost", "mallory", "pw", "r").await
    } else {
        let mut c = RawClient::connect(server.starttls_port, "localhost").await;
        c.starttls().await;
        c.open().await;
        c
    };
    c.try_send(payload).await;
    let got = c.read_until("</stream:stream>").await;
    assert!(c.closed().await, "connection closed after the stream error");
    got
}

#[tokio::test]
async fn bad_input_gets_stream_errors_and_the_server_survives() {
    let server = TestServer::start("bad", "[limits]\nmax_stanza_size = \"4KiB\"\n");
    server.register("mallory", "localhost", "pw");
    let cases: [(&str, bool, String, &[&str]); 7] = [
        (
            "malformed",
            true,
            "<message><body></message></body>".into(),
            &["not-well-formed"],
        ),
        (
            "oversized",
            true,
            format!("<message><body>{}</body></message>", "x".repeat(8192)),
            &["policy-violation"],
        ),
        (
            "doctype",
            true,
            "<!DOCTYPE lol [<!ENTITY lol 'lol'>]>".into(),
            &["restricted-xml", "not-well-formed"],
        ),
        (
            "entity",
            true,
            "<message><body>&lol;</body></message>".into(),
            &["not-well-formed", "restricted-xml"],
        ),
        (
            "pi",
            true,
            "<?evil stuff?>".into(),
            &["restricted-xml", "not-well-formed"],
        ),
        (
            "comment",
            true,
            "<!-- hello -->".into(),
            &["restricted-xml", "not-well-formed"],
        ),
        (
            "before auth",
            false,
            "<message to='a@localhost'><body>x</body></message>".into(),
            &["not-authorized"],
        ),
    ];
    for (name, login, payload, expected) in cases {
        let got = stream_error_after(&server, login, &payload).await;
        assert!(
            expected.iter().any(|e| got.contains(&format!(
                "<{e} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
            ))),
            "{name}: expected one of {expected:?}, got {got}"
        );
    }
    let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
    let got = stream_error_after(&server, true, &format!("<message>{deep}</message>")).await;
    assert!(got.contains("<policy-violation"), "deep nesting: {got}");
    let attrs: String = (0..80).map(|i| format!(" a{i}='x'")).collect();
    let got = stream_error_after(&server, true, &format!("<message{attrs}/>")).await;
    assert!(
        got.contains("<policy-violation"),
        "too many attributes: {got}"
    );
    // Still serving.
    let mut c = RawClient::login(server.starttls_port, "localhost", "mallory", "pw", "after").await;
    c.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(
        c.read_until("id='p'")
            .await
            .ends_with("<iq type='result' id='p'")
    );
}

#[tokio::test]
async fn wrong_password_fails_after_the_configured_delay() {
    let server = TestServer::start("wrongpw", "[auth]\nfailure_delay = \"700ms\"\n");
    server.register("trent", "localhost", "right");
    let mut c = RawClient::connect(server.starttls_port, "localhost").await;
    c.starttls().await;
    c.open().await;
    let started = Instant::now();
    let answer = c.auth_plain("trent", "wrong").await;
    let took = started.elapsed();
    assert!(answer.contains("<not-authorized/>"), "{answer}");
    assert!(
        took >= Duration::from_millis(650),
        "failure came after {took:?}"
    );
    // Unknown users fail the same way.
    let answer = c.auth_plain("nobody", "x").await;
    assert!(answer.contains("<not-authorized/>"), "{answer}");
    // A retry with the right password works.
    let answer = c.auth_plain("trent", "right").await;
    assert!(answer.contains("<success"), "{answer}");
}

#[tokio::test]
async fn header_for_an_unknown_host_is_refused() {
    let server = TestServer::start("host", "");
    let mut c = RawClient::connect(server.starttls_port, "localhost").await;
    c.send(&header("not-served.example")).await;
    let got = c.read_until("</stream:stream>").await;
    assert!(got.contains("<host-unknown"), "{got}");
}
