//! XEP-0163 PEP against the running binary with raw streams: every refusal has its XEP-0060
//! error (with the pubsub#errors condition), nodes are listed by who may read them, and node
//! configuration and deletion work for the owner only.

use tern_tests::client::RawClient;
use tern_tests::server::TestServer;

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

async fn iq(client: &mut RawClient, id: &str, body: &str) -> String {
    client.send(&format!("<iq id='{id}' {body}</iq>")).await;
    // Whatever came before the answer (a notification, say) is skipped.
    let head = client.read_until(&format!("id='{id}'")).await;
    let start = head.rfind("<iq").unwrap_or(0);
    let tag_end = client.read_until(">").await;
    let mut reply = format!("{}{tag_end}", &head[start..]);
    if !reply.ends_with("/>") {
        reply.push_str(&client.read_until("</iq>").await);
    }
    reply
}

fn publish(node: &str, item: &str, payload: &str, access: Option<&str>) -> String {
    let options = access.map_or_else(String::new, |a| {
        format!(
            "<publish-options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>\
             <field var='pubsub#access_model'><value>{a}</value></field></x></publish-options>"
        )
    });
    format!(
        "type='set'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{item}'>{payload}</item></publish>{options}</pubsub>"
    )
}

#[tokio::test]
async fn pep_refusals_and_owner_operations() {
    let server = TestServer::start("pep", "[modules.pep]\nmax_item_size = \"1KiB\"\n");
    for user in ["alice", "bob"] {
        server.register(user, "localhost", "pw");
    }
    let mut alice = RawClient::login(server.starttls_port, "localhost", "alice", "pw", "a").await;
    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "b").await;

    let tune = "<tune xmlns='http://jabber.org/protocol/tune'><artist>Yes</artist></tune>";
    let got = iq(&mut alice, "p1", &publish("tune", "t1", tune, None)).await;
    assert!(
        got.contains("type='result'") && got.contains("<item id='t1'/>"),
        "{got}"
    );
    let got = iq(
        &mut alice,
        "p2",
        &publish(
            "secret",
            "s1",
            "<note xmlns='urn:example'>x</note>",
            Some("whitelist"),
        ),
    )
    .await;
    assert!(got.contains("type='result'"), "{got}");
    let got = iq(
        &mut alice,
        "p3",
        &publish(
            "public",
            "o1",
            "<note xmlns='urn:example'>hello</note>",
            Some("open"),
        ),
    )
    .await;
    assert!(got.contains("type='result'"), "{got}");

    // bob has no subscription: presence-model nodes are closed to him, open ones are not.
    let got = iq(
        &mut bob,
        "i1",
        &format!(
            "type='get' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><items node='tune'/></pubsub>"
        ),
    )
    .await;
    assert!(
        got.contains("<not-authorized")
            && got.contains(&format!(
                "<presence-subscription-required xmlns='{ERRORS}'/>"
            )),
        "{got}"
    );
    let got = iq(
        &mut bob,
        "i2",
        &format!("type='get' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><items node='secret'/></pubsub>"),
    )
    .await;
    assert!(
        got.contains("<not-allowed") && got.contains("<closed-node"),
        "{got}"
    );
    let got = iq(
        &mut bob,
        "i3",
        &format!("type='get' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><items node='public'/></pubsub>"),
    )
    .await;
    assert!(
        got.contains("<item id='o1'>") && got.contains("hello"),
        "{got}"
    );
    let got = iq(
        &mut bob,
        "i4",
        &format!("type='get' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><items node='nothing'/></pubsub>"),
    )
    .await;
    assert!(got.contains("<item-not-found"), "{got}");
    // Only the owner publishes.
    let got = iq(
        &mut bob,
        "i5",
        &format!("to='alice@localhost' {}", publish("tune", "t9", tune, None)),
    )
    .await;
    assert!(got.contains("<forbidden"), "{got}");
    // Nodes listed by who may read them.
    let got = iq(
        &mut bob,
        "d1",
        "type='get' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/>",
    )
    .await;
    assert!(
        got.contains("node='public'") && !got.contains("node='secret'"),
        "{got}"
    );
    let got = iq(
        &mut alice,
        "d2",
        "type='get'><query xmlns='http://jabber.org/protocol/disco#items'/>",
    )
    .await;
    for name in ["tune", "secret", "public"] {
        assert!(got.contains(&format!("node='{name}'")), "{got}");
    }

    // The owner's own refusals: another access model, a payload over the limit, a missing
    // item.
    let got = iq(
        &mut alice,
        "e1",
        &publish("secret", "s2", "<n xmlns='urn:x'/>", Some("open")),
    )
    .await;
    assert!(
        got.contains("<conflict")
            && got.contains(&format!("<precondition-not-met xmlns='{ERRORS}'/>")),
        "{got}"
    );
    let big = format!("<n xmlns='urn:x'>{}</n>", "y".repeat(2000));
    let got = iq(&mut alice, "e2", &publish("tune", "t2", &big, None)).await;
    assert!(
        got.contains("<not-acceptable") && got.contains("<payload-too-big"),
        "{got}"
    );
    let got = iq(
        &mut alice,
        "e3",
        &format!("type='set'><pubsub xmlns='{PUBSUB}'><retract node='tune'><item id='nope'/></retract></pubsub>"),
    )
    .await;
    assert!(got.contains("<item-not-found"), "{got}");
    let got = iq(
        &mut alice,
        "e4",
        &format!("type='set'><pubsub xmlns='{PUBSUB}'><create node='tune'/></pubsub>"),
    )
    .await;
    assert!(got.contains("<conflict"), "{got}");

    // Configuration and deletion by the owner.
    let got = iq(
        &mut alice,
        "c1",
        &format!("type='get'><pubsub xmlns='{OWNER}'><configure node='secret'/></pubsub>"),
    )
    .await;
    assert!(
        got.contains("var='pubsub#access_model'") && got.contains("<value>whitelist</value>"),
        "{got}"
    );
    let got = iq(
        &mut bob,
        "c2",
        &format!("type='set' to='alice@localhost'><pubsub xmlns='{OWNER}'><delete node='public'/></pubsub>"),
    )
    .await;
    assert!(got.contains("<forbidden"), "{got}");
    let got = iq(
        &mut alice,
        "c3",
        &format!("type='set'><pubsub xmlns='{OWNER}'><delete node='public'/></pubsub>"),
    )
    .await;
    assert!(got.contains("type='result'"), "{got}");
    let got = iq(
        &mut bob,
        "c4",
        &format!("type='get' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><items node='public'/></pubsub>"),
    )
    .await;
    assert!(got.contains("<item-not-found"), "{got}");
}
