//! XEP-0160 offline messages: stored while the account has no available resource, delivered in
//! order at its initial presence with a XEP-0203 delay, limited per account.

use std::time::Duration;

use tern_tests::client::RawClient;
use tern_tests::server::TestServer;

/// Sends a ping to the server and waits for its answer: everything `client` sent before has
/// been routed by then.
async fn sync(client: &mut RawClient, id: &str) {
    client
        .send(&format!(
            "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    let got = client.read_until(&format!("id='{id}'")).await;
    assert!(!got.contains("type='error'"), "{got}");
}

/// The `<message/>` stanzas in `text`, in order.
fn messages(text: &str) -> Vec<&str> {
    text.match_indices("<message")
        .map(|(start, _)| {
            let end = text[start..].find("</message>").expect("whole message") + start;
            &text[start..end + "</message>".len()]
        })
        .collect()
}

#[tokio::test]
async fn stored_messages_arrive_in_order_at_initial_presence() {
    let server = TestServer::start("offline", "");
    server.register("alice", "localhost", "pw");
    server.register("bob", "localhost", "pw");
    // Bob has a bound session that has not sent presence yet: not available, so messages to
    // his bare JID go to storage (RFC 6121 §8.5.2.2).
    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "phone").await;
    let mut alice = RawClient::login(server.starttls_port, "localhost", "alice", "pw", "r").await;

    alice
        .send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let info = alice.read_until("</iq>").await;
    assert!(info.contains("var='msgoffline'"), "{info}");

    for n in 1..=3 {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='m{n}'><body>chat {n}</body></message>"
            ))
            .await;
        if n == 2 {
            alice
                .send("<message to='bob@localhost' type='headline' id='h1'><body>news</body></message>")
                .await;
        }
    }
    sync(&mut alice, "s1").await;
    let early = bob.read_for(Duration::from_millis(300)).await;
    assert!(!early.contains("<message"), "before presence: {early}");

    bob.send("<presence/>").await;
    let got = bob.read_until("chat 3</body>").await;
    let got = format!("{got}{}", bob.read_for(Duration::from_millis(500)).await);
    let delivered = messages(&got);
    assert_eq!(delivered.len(), 3, "{got}");
    for (n, message) in delivered.iter().enumerate() {
        let n = n + 1;
        assert!(
            message.contains(&format!("<body>chat {n}</body>")),
            "{message}"
        );
        assert!(message.contains(&format!("id='m{n}'")), "{message}");
        assert!(message.contains("from='alice@localhost/r'"), "{message}");
        assert!(
            message.contains("<delay xmlns='urn:xmpp:delay' from='localhost' stamp='"),
            "{message}"
        );
    }
    assert!(!got.contains("news"), "a headline is never stored: {got}");
    drop(bob);

    // Taken once: a later login finds nothing more.
    let mut again = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "desk").await;
    again.send("<presence/>").await;
    let later = again.read_for(Duration::from_millis(800)).await;
    assert!(!later.contains("<message"), "second login: {later}");
    // Alice got no error for any of them.
    let alice_got = alice.read_for(Duration::from_millis(200)).await;
    assert!(!alice_got.contains("type='error'"), "{alice_got}");
}

#[tokio::test]
async fn a_full_store_bounces_with_resource_constraint() {
    let server = TestServer::start("offline-full", "[modules.offline]\nmax_messages = 2\n");
    server.register("alice", "localhost", "pw");
    server.register("bob", "localhost", "pw");
    let mut alice = RawClient::login(server.starttls_port, "localhost", "alice", "pw", "r").await;
    for n in 1..=3 {
        alice
            .send(&format!(
                "<message to='bob@localhost' id='m{n}'><body>note {n}</body></message>"
            ))
            .await;
    }
    let bounce = alice.read_until("</message>").await;
    assert!(
        bounce.contains("type='error'") && bounce.contains("id='m3'"),
        "{bounce}"
    );
    assert!(bounce.contains("<resource-constraint"), "{bounce}");
    sync(&mut alice, "s1").await;

    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "r").await;
    bob.send("<presence/>").await;
    let got = bob.read_until("note 2</body>").await;
    let got = format!("{got}{}", bob.read_for(Duration::from_millis(500)).await);
    let delivered = messages(&got);
    assert_eq!(delivered.len(), 2, "{got}");
    assert!(
        delivered[0].contains("note 1") && delivered[1].contains("note 2"),
        "{got}"
    );
    assert!(!got.contains("note 3"), "{got}");
}

#[tokio::test]
async fn disabled_module_answers_service_unavailable() {
    let server = TestServer::start("offline-off", "[modules.offline]\nenabled = false\n");
    server.register("alice", "localhost", "pw");
    server.register("bob", "localhost", "pw");
    let mut alice = RawClient::login(server.starttls_port, "localhost", "alice", "pw", "r").await;
    alice
        .send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let info = alice.read_until("</iq>").await;
    assert!(!info.contains("msgoffline"), "{info}");
    alice
        .send("<message to='bob@localhost' type='chat' id='m1'><body>hi</body></message>")
        .await;
    let bounce = alice.read_until("</message>").await;
    assert!(bounce.contains("<service-unavailable"), "{bounce}");
    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "r").await;
    bob.send("<presence/>").await;
    let got = bob.read_for(Duration::from_millis(500)).await;
    assert!(!got.contains("<message"), "{got}");
}
