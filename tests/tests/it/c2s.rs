//! Client sessions: login, chat, resource conflicts, addressing rules.

use tern_tests::client::RawClient;
use tern_tests::server::TestServer;

#[tokio::test]
async fn two_users_chat_over_starttls_and_direct_tls() {
    let server = TestServer::start("chat", "");
    server.register("alice", "localhost", "wonderland");
    server.register("bob", "localhost", "builder");
    let mut alice = RawClient::login(
        server.starttls_port,
        "localhost",
        "alice",
        "wonderland",
        "home",
    )
    .await;
    // Bob uses direct TLS (XEP-0368).
    let mut bob = RawClient::connect_tls(server.tls_port, "localhost").await;
    let features = bob.open().await;
    assert!(
        !features.contains("starttls"),
        "no STARTTLS on a direct TLS port: {features}"
    );
    assert!(bob.auth_plain("bob", "builder").await.contains("<success"));
    assert_eq!(bob.bind("phone").await, "bob@localhost/phone");
    bob.send("<presence/>").await;
    bob.read_until("from='bob@localhost/phone'").await;

    // To the full JID.
    alice
        .send("<message to='bob@localhost/phone' id='m1' type='chat'><body>hi bob</body></message>")
        .await;
    let got = bob.read_until("</message>").await;
    assert!(got.contains("from='alice@localhost/home'"), "{got}");
    assert!(got.contains("<body>hi bob</body>"), "{got}");
    // To the bare JID: the available resource gets it.
    alice
        .send("<message to='bob@localhost' id='m2' type='chat'><body>bare</body></message>")
        .await;
    let got = bob.read_until("</message>").await;
    assert!(got.contains("<body>bare</body>"), "{got}");
    // And back.
    bob.send("<message to='alice@localhost/home' id='m3'><body>yo</body></message>")
        .await;
    let got = alice.read_until("</message>").await;
    assert!(got.contains("from='bob@localhost/phone'"), "{got}");
}

#[tokio::test]
async fn spoofed_from_never_gets_through() {
    let server = TestServer::start("spoof", "");
    server.register("alice", "localhost", "pw-alice");
    server.register("bob", "localhost", "pw-bob");
    let mut alice =
        RawClient::login(server.starttls_port, "localhost", "alice", "pw-alice", "a").await;
    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw-bob", "b").await;
    alice
        .send("<message from='admin@localhost/x' to='bob@localhost/b'><body>trust me</body></message>")
        .await;
    let got = bob.read_until("</message>").await;
    assert!(got.contains("from='alice@localhost/a'"), "{got}");
    assert!(!got.contains("admin@localhost"), "{got}");
}

#[tokio::test]
async fn same_full_jid_replaces_the_older_session() {
    let server = TestServer::start("conflict", "");
    server.register("carol", "localhost", "pw");
    let mut first =
        RawClient::login(server.starttls_port, "localhost", "carol", "pw", "desk").await;
    let mut second =
        RawClient::login(server.starttls_port, "localhost", "carol", "pw", "desk").await;
    let got = first.read_until("</stream:stream>").await;
    assert!(
        got.contains("<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "{got}"
    );
    assert!(first.closed().await);
    // The new session works.
    second
        .send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let got = second.read_until("id='p1'").await;
    assert!(got.ends_with("<iq type='result' id='p1'"), "{got}");
}

#[tokio::test]
async fn server_generates_a_resource_when_none_is_asked() {
    let server = TestServer::start("genres", "");
    server.register("dave", "localhost", "pw");
    let mut c = RawClient::connect(server.starttls_port, "localhost").await;
    c.starttls().await;
    c.open().await;
    assert!(c.auth_plain("dave", "pw").await.contains("<success"));
    c.open().await;
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    let got = c.read_until("</iq>").await;
    assert!(got.contains("<jid>dave@localhost/"), "{got}");
}

#[tokio::test]
async fn addressing_errors_are_answered() {
    let server = TestServer::start("addr", "");
    server.register("erin", "localhost", "pw");
    let mut c = RawClient::login(server.starttls_port, "localhost", "erin", "pw", "r").await;
    // Unknown account on a served domain.
    c.send("<message to='nobody@localhost' id='u1'><body>x</body></message>")
        .await;
    let got = c.read_until("</message>").await;
    assert!(
        got.contains("type='error'") && got.contains("<service-unavailable"),
        "{got}"
    );
    // Invalid JID.
    c.send("<message to='a@b@c' id='u2'><body>x</body></message>")
        .await;
    let got = c.read_until("</message>").await;
    assert!(got.contains("<jid-malformed"), "{got}");
    // An IQ in a namespace nobody serves: an error, never silence.
    c.send("<iq type='get' id='u3' to='localhost'><query xmlns='urn:example:nothing'/></iq>")
        .await;
    let got = c.read_until("</iq>").await;
    assert!(
        got.contains("id='u3'") && got.contains("<service-unavailable"),
        "{got}"
    );
    // A domain this server does not serve (no S2S yet).
    c.send("<message to='someone@elsewhere.example' id='u4'><body>x</body></message>")
        .await;
    let got = c.read_until("</message>").await;
    assert!(got.contains("<remote-server-not-found"), "{got}");
    // Disco, version and ping are served.
    c.send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let got = c.read_until("</iq>").await;
    assert!(
        got.contains("category='server'") && got.contains("var='urn:xmpp:ping'"),
        "{got}"
    );
    c.send("<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    let got = c.read_until("</iq>").await;
    assert!(got.contains("<name>Tern</name>"), "{got}");
}

#[tokio::test]
async fn unavailable_is_broadcast_when_a_client_disconnects() {
    let server = TestServer::start("unavail", "");
    server.register("fay", "localhost", "pw");
    server.register("gus", "localhost", "pw");
    let out = server.ctl(&[
        "roster",
        "set-mutual-subscription",
        "--user-a",
        "fay@localhost",
        "--user-b",
        "gus@localhost",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut fay = RawClient::login(server.starttls_port, "localhost", "fay", "pw", "r").await;
    fay.send("<presence/>").await;
    fay.read_until("from='fay@localhost/r'").await;
    let mut gus = RawClient::login(server.starttls_port, "localhost", "gus", "pw", "r").await;
    gus.send("<presence/>").await;
    // Fay sees Gus come online; Gus gets Fay's presence from the probe.
    let got = fay.read_until("from='gus@localhost/r'").await;
    assert!(!got.contains("unavailable"), "{got}");
    let got = gus.read_until("from='fay@localhost/r'").await;
    assert!(!got.is_empty());
    drop(gus);
    let got = fay.read_until("type='unavailable'").await;
    assert!(got.contains("gus@localhost/r"), "{got}");
}

#[tokio::test]
async fn scram_plus_binds_to_the_tls_channel() {
    let server = TestServer::start("plus", "");
    server.register("hal", "localhost", "open the pod bay doors");
    for direct in [false, true] {
        let mut c = if direct {
            RawClient::connect_tls(server.tls_port, "localhost").await
        } else {
            let mut c = RawClient::connect(server.starttls_port, "localhost").await;
            c.starttls().await;
            c
        };
        let features = c.open().await;
        assert!(
            features.contains("<mechanism>SCRAM-SHA-256-PLUS</mechanism>"),
            "{features}"
        );
        assert!(
            features.contains("<channel-binding type='tls-exporter'/>"),
            "{features}"
        );
        let binding = c.tls_exporter().expect("TLS 1.3 exporter");
        // The wrong channel (a man in the middle would see another one) is refused.
        let wrong = [0u8; 32];
        let answer = c
            .auth_scram_sha256("hal", "open the pod bay doors", true, &wrong)
            .await;
        assert!(answer.contains("<not-authorized/>"), "{answer}");
        let answer = c
            .auth_scram_sha256("hal", "open the pod bay doors", true, &binding)
            .await;
        assert!(answer.contains("<success"), "direct={direct}: {answer}");
    }
    // Plain SCRAM-SHA-256 works too, and a wrong password fails.
    let mut c = RawClient::connect(server.starttls_port, "localhost").await;
    c.starttls().await;
    c.open().await;
    let answer = c.auth_scram_sha256("hal", "wrong", false, &[]).await;
    assert!(answer.contains("<not-authorized/>"), "{answer}");
    let answer = c
        .auth_scram_sha256("hal", "open the pod bay doors", false, &[])
        .await;
    assert!(answer.contains("<success"), "{answer}");
}

#[tokio::test]
async fn silent_clients_are_pinged_then_dropped() {
    let server = TestServer::start(
        "ping",
        "[modules.ping]\nidle_interval = \"1s\"\ntimeout = \"1s\"\n",
    );
    server.register("ivy", "localhost", "pw");
    // A client that answers stays.
    let mut alive = RawClient::login(server.starttls_port, "localhost", "ivy", "pw", "a").await;
    let ping = alive.read_until("</iq>").await;
    assert!(ping.contains("<ping xmlns='urn:xmpp:ping'/>"), "{ping}");
    let start = ping.find("id='").expect("ping id") + 4;
    let id = &ping[start..start + ping[start..].find('\'').expect("id end")];
    alive
        .send(&format!("<iq type='result' id='{id}' to='localhost'/>"))
        .await;
    // A client that stays silent is dropped with <connection-timeout/>.
    let mut silent = RawClient::login(server.starttls_port, "localhost", "ivy", "pw", "s").await;
    let got = silent.read_until("</stream:stream>").await;
    assert!(got.contains("<ping xmlns='urn:xmpp:ping'/>"), "{got}");
    assert!(got.contains("<connection-timeout"), "{got}");
    // The one that answered was pinged again rather than dropped.
    let again = alive.read_until("</iq>").await;
    assert!(again.contains("<ping xmlns='urn:xmpp:ping'/>"), "{again}");
}
