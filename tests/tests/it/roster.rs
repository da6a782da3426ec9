//! Rosters: pushes to every interested resource, versioning, persistence across restarts.

use tern_tests::client::RawClient;
use tern_tests::server::TestServer;

#[tokio::test]
async fn roster_set_is_pushed_and_survives_a_restart() {
    let mut server = TestServer::start("roster", "");
    server.register("romeo", "localhost", "pw");
    let mut phone =
        RawClient::login(server.starttls_port, "localhost", "romeo", "pw", "phone").await;
    let mut desk = RawClient::login(server.starttls_port, "localhost", "romeo", "pw", "desk").await;
    for c in [&mut phone, &mut desk] {
        c.send("<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>")
            .await;
        let got = c.read_until("</iq>").await;
        assert!(got.contains("type='result' id='r0'"), "{got}");
    }
    phone
        .send("<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='juliet@example.test' name='Juliet'><group>Verona</group></item></query></iq>")
        .await;
    // Both interested resources get the push.
    for c in [&mut phone, &mut desk] {
        let push = c.read_until("</iq>").await;
        assert!(
            push.contains("jid='juliet@example.test'") && push.contains("ver='1'"),
            "{push}"
        );
        assert!(push.contains("<group>Verona</group>"), "{push}");
    }
    drop(phone);
    drop(desk);
    assert!(server.stop(), "clean shutdown:\n{}", server.log());
    server.spawn();
    let mut c = RawClient::login(server.starttls_port, "localhost", "romeo", "pw", "again").await;
    // Versioning: the current version gets an empty result.
    c.send("<iq type='get' id='r2'><query xmlns='jabber:iq:roster' ver='1'/></iq>")
        .await;
    let got = c.read_until("id='r2'").await;
    let rest = c.read_until(">").await;
    assert!(
        rest.trim_start().starts_with("/>") || rest.contains("/>"),
        "empty result expected: {got}{rest}"
    );
    c.send("<iq type='get' id='r3'><query xmlns='jabber:iq:roster' ver='0'/></iq>")
        .await;
    let got = c.read_until("</iq>").await;
    assert!(
        got.contains("jid='juliet@example.test'") && got.contains("name='Juliet'"),
        "{got}"
    );
    // Removal is pushed with subscription='remove'.
    c.send("<iq type='set' id='r4'><query xmlns='jabber:iq:roster'><item jid='juliet@example.test' subscription='remove'/></query></iq>").await;
    let got = c.read_until("subscription='remove'").await;
    assert!(got.contains("juliet@example.test"), "{got}");
}

#[tokio::test]
async fn subscription_handshake_reaches_both() {
    let server = TestServer::start("subs", "");
    server.register("ann", "localhost", "pw");
    server.register("ben", "localhost", "pw");
    let mut ann = RawClient::login(server.starttls_port, "localhost", "ann", "pw", "r").await;
    let mut ben = RawClient::login(server.starttls_port, "localhost", "ben", "pw", "r").await;
    for c in [&mut ann, &mut ben] {
        c.send("<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq><presence/>")
            .await;
        c.read_until("id='g'").await;
    }
    ann.send("<presence to='ben@localhost' type='subscribe'/>")
        .await;
    let got = ann.read_until("ask='subscribe'").await;
    assert!(got.contains("ben@localhost"), "{got}");
    let got = ben.read_until("type='subscribe'").await;
    assert!(got.contains("from='ann@localhost'"), "{got}");
    ben.send("<presence to='ann@localhost' type='subscribed'/>")
        .await;
    let got = ben.read_until("subscription='from'").await;
    assert!(got.contains("ann@localhost"), "{got}");
    let got = ann.read_until("subscription='to'").await;
    assert!(got.contains("ben@localhost"), "{got}");
    // Ann now receives Ben's presence.
    let got = ann.read_until("from='ben@localhost/r'").await;
    assert!(got.contains("<presence"), "{got}");
    // Ben cancels: Ann's subscription goes back to none.
    ben.send("<presence to='ann@localhost' type='unsubscribed'/>")
        .await;
    let got = ann.read_until("subscription='none'").await;
    assert!(got.contains("ben@localhost"), "{got}");
}

#[tokio::test]
async fn subscription_request_waits_for_an_offline_contact() {
    let server = TestServer::start("pending", "");
    server.register("cat", "localhost", "pw");
    server.register("dog", "localhost", "pw");
    let mut cat = RawClient::login(server.starttls_port, "localhost", "cat", "pw", "r").await;
    cat.send("<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    cat.read_until("</iq>").await;
    cat.send("<presence to='dog@localhost' type='subscribe'/>")
        .await;
    cat.read_until("ask='subscribe'").await;
    // Dog logs in twice: the request is kept until answered, and shown at each login.
    for round in 0..2 {
        let mut dog = RawClient::login(server.starttls_port, "localhost", "dog", "pw", "r").await;
        dog.send("<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq><presence/>")
            .await;
        let got = dog.read_until("type='subscribe'").await;
        assert!(got.contains("from='cat@localhost'"), "round {round}: {got}");
        if round == 1 {
            dog.send("<presence to='cat@localhost' type='subscribed'/>")
                .await;
            let got = cat.read_until("subscription='to'").await;
            assert!(got.contains("dog@localhost"), "{got}");
        }
    }
}
