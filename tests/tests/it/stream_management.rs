//! XEP-0198 stream management against the running binary: acknowledgements, resumption after
//! the connection is cut (what the client did not handle comes again, exactly once), takeover
//! of a connection that is still open, and what happens when nobody resumes in time.

use std::time::Duration;

use tern_tests::client::RawClient;
use tern_tests::server::TestServer;

const SM: &str = "urn:xmpp:sm:3";

/// The top-level stanzas in `text`, in order (the tests send nothing nested).
fn stanzas(text: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = ["<message", "<presence", "<iq"]
        .iter()
        .flat_map(|tag| text.match_indices(tag).map(|(i, _)| i))
        .collect();
    starts.sort_unstable();
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(text.len());
            &text[start..end]
        })
        .collect()
}

/// The ids of the chat messages from bob in `text`, in order.
fn chat_ids(text: &str) -> Vec<String> {
    stanzas(text)
        .into_iter()
        .filter(|s| s.starts_with("<message") && s.contains("<body>"))
        .filter_map(|s| {
            let start = s.find(" id='")? + 5;
            let end = s[start..].find('\'')? + start;
            Some(s[start..end].to_owned())
        })
        .collect()
}

/// Logs in over STARTTLS up to (not including) binding.
async fn authenticated(server: &TestServer, user: &str) -> RawClient {
    authenticated_with(server, user, "pw").await
}

async fn authenticated_with(server: &TestServer, user: &str, password: &str) -> RawClient {
    let mut client = RawClient::connect(server.starttls_port, "localhost").await;
    client.starttls().await;
    client.open().await;
    let answer = client.auth_plain(user, password).await;
    assert!(answer.contains("<success"), "{answer}");
    client
}

/// Enables stream management with resumption; returns the resumption id.
async fn enable(client: &mut RawClient) -> String {
    client
        .send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = client.read_until("/>").await;
    assert!(enabled.contains("<enabled"), "{enabled}");
    assert!(enabled.contains("resume='true'"), "{enabled}");
    let start = enabled.find("id='").expect("resumption id") + 4;
    let end = enabled[start..].find('\'').expect("id end") + start;
    enabled[start..end].to_owned()
}

async fn send_chats(bob: &mut RawClient, ids: std::ops::RangeInclusive<u32>) {
    send_chats_to(bob, "alice@localhost/phone", ids).await;
}

async fn send_chats_to(bob: &mut RawClient, to: &str, ids: std::ops::RangeInclusive<u32>) {
    for n in ids {
        bob.send(&format!(
            "<message to='{to}' type='chat' id='c{n}'><body>number {n}</body></message>"
        ))
        .await;
    }
    // A round trip: everything bob sent has been routed.
    bob.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    bob.read_until("id='sync'").await;
}

fn wanted(ids: std::ops::RangeInclusive<u32>) -> Vec<String> {
    ids.map(|n| format!("c{n}")).collect()
}

#[tokio::test]
async fn resumption_after_a_cut_delivers_every_unacknowledged_message_once() {
    let server = TestServer::start(
        "sm-resume",
        "[modules.stream_management]\nresume_timeout = \"60s\"\n",
    );
    server.register("alice", "localhost", "pw");
    server.register("bob", "localhost", "pw");
    let mut alice = authenticated(&server, "alice").await;
    let features = alice.open().await;
    assert!(
        features.contains(&format!("<sm xmlns='{SM}'/>")),
        "{features}"
    );
    alice
        .send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>")
        .await;
    alice.read_until("</iq>").await;
    let id = enable(&mut alice).await;
    alice.send("<presence/>").await;
    // Acknowledgements both ways: alice's one stanza is counted.
    alice.send(&format!("<r xmlns='{SM}'/>")).await;
    let acked = alice.read_until(&format!("<a xmlns='{SM}' h='1'/>")).await;
    let mut received = acked.clone();

    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "desk").await;
    send_chats(&mut bob, 1..=20).await;
    received.push_str(&alice.read_until("number 20").await);
    received.push_str(&alice.read_for(Duration::from_millis(200)).await);
    assert_eq!(chat_ids(&received), wanted(1..=20), "{received}");
    assert!(
        received.contains(&format!("<r xmlns='{SM}'/>")),
        "the server asks for acks"
    );
    // Alice handled everything up to message 10, then her connection is cut before she
    // acknowledges anything.
    let upto_ten = received.find("number 10").expect("message 10");
    let handled = stanzas(&received[..upto_ten]).len();
    drop(alice);
    // More arrive while she is away: they wait in the detached session.
    send_chats(&mut bob, 21..=25).await;

    let mut alice = authenticated(&server, "alice").await;
    alice.open().await;
    alice
        .send(&format!(
            "<resume xmlns='{SM}' previd='{id}' h='{handled}'/>"
        ))
        .await;
    let resumed = alice.read_until("number 25").await;
    assert!(
        resumed.contains(&format!("<resumed xmlns='{SM}' previd='{id}' h='1'/>")),
        "{resumed}"
    );
    let rest = alice.read_for(Duration::from_millis(300)).await;
    let all = format!("{resumed}{rest}");
    assert_eq!(
        chat_ids(&all),
        wanted(11..=25),
        "each once, in order: {all}"
    );
    // The resumed stream is the same session: a message from it is stamped with its JID, and
    // it answers ack requests with the counter carried over.
    alice
        .send("<message to='bob@localhost/desk' type='chat' id='back'><body>back</body></message>")
        .await;
    let at_bob = bob.read_until("</message>").await;
    assert!(at_bob.contains("from='alice@localhost/phone'"), "{at_bob}");
    alice.send(&format!("<r xmlns='{SM}'/>")).await;
    alice.read_until(&format!("<a xmlns='{SM}' h='2'/>")).await;
    // Bob never saw alice go offline.
    let at_bob = bob.read_for(Duration::from_millis(200)).await;
    assert!(!at_bob.contains("unavailable"), "{at_bob}");
    let metrics = crate::admin::reqwest_metrics(server.admin_port).await;
    assert!(
        metrics.contains("tern_c2s_resumptions_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tern_c2s_sessions_detached 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_open_connection_is_taken_over_and_a_stranger_cannot_resume() {
    let server = TestServer::start("sm-takeover", "");
    server.register("alice", "localhost", "pw");
    server.register("bob", "localhost", "pw");
    let mut old = RawClient::login(server.starttls_port, "localhost", "alice", "pw", "phone").await;
    let id = enable(&mut old).await;

    let mut bob = authenticated(&server, "bob").await;
    bob.open().await;
    bob.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"))
        .await;
    let refused = bob.read_until("</failed>").await;
    assert!(refused.contains("<item-not-found"), "{refused}");

    let mut new = authenticated(&server, "alice").await;
    new.open().await;
    new.send(&format!("<resume xmlns='{SM}' previd='{id}' h='0'/>"))
        .await;
    let resumed = new.read_until("/>").await;
    assert!(resumed.contains("<resumed"), "{resumed}");
    let ended = old.read_for(Duration::from_secs(2)).await;
    assert!(ended.contains("<conflict"), "{ended}");
    assert!(old.closed().await);
    // The session works on the new connection.
    let mut carol = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "x").await;
    carol
        .send("<message to='alice@localhost/phone' id='hi'><body>hi</body></message>")
        .await;
    let got = new.read_until("</message>").await;
    assert!(got.contains("<body>hi</body>"), "{got}");
}

#[tokio::test]
async fn without_resumption_in_time_unacknowledged_messages_go_to_offline_storage() {
    let server = TestServer::start(
        "sm-expire",
        "[modules.stream_management]\nresume_timeout = \"1s\"\n",
    );
    server.register("alice", "localhost", "pw");
    server.register("bob", "localhost", "pw");
    let mut alice =
        RawClient::login(server.starttls_port, "localhost", "alice", "pw", "phone").await;
    let id = enable(&mut alice).await;
    alice.send("<presence/>").await;
    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "desk").await;
    send_chats(&mut bob, 1..=20).await;
    alice.read_until("number 20").await;
    drop(alice);
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let count = server.ctl(&["offline", "count", "--user", "alice@localhost"]);
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        "20",
        "{count:?}"
    );
    let mut alice = authenticated(&server, "alice").await;
    alice.open().await;
    alice
        .send(&format!("<resume xmlns='{SM}' previd='{id}' h='3'/>"))
        .await;
    let failed = alice.read_until("</failed>").await;
    assert!(failed.contains("<item-not-found"), "{failed}");
    // A new session gets them from storage at its initial presence, once each.
    alice
        .send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>")
        .await;
    alice.read_until("</iq>").await;
    alice.send("<presence/>").await;
    let got = alice.read_until("number 20").await;
    let more = alice.read_for(Duration::from_millis(300)).await;
    let all = format!("{got}{more}");
    assert_eq!(chat_ids(&all), wanted(1..=20), "{all}");
    assert!(
        all.contains("urn:xmpp:delay"),
        "stored messages carry a delay: {all}"
    );
}

/// A client of an account homed in dc1, connected to dc2, loses its connection and resumes at
/// dc3: dc2 hands over what the client did not handle, the home lets the new session take the
/// old one's place, and what was still on its way to dc2 follows — each message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumption_in_another_datacenter() {
    use crate::mesh::{login, one_at_a_time, register, three_dcs, wait_home};
    let _one = one_at_a_time().await;
    let (root, mut servers) = three_dcs("mesh-sm", "5s");
    register(&servers[0], "alice");
    register(&servers[2], "carol");
    for server in &servers {
        for user in ["alice", "carol"] {
            wait_home(server, user);
        }
    }
    let mut alice = login(&servers[1], "alice", "roam").await;
    let id = enable(&mut alice).await;
    assert!(id.ends_with(".dc2"), "the id names the datacenter: {id}");
    alice.send("<presence/>").await;
    // Everything alice reads counts towards what she handled, her own presence included.
    let mut received = alice.read_until("from='alice@localhost/roam'").await;
    alice.send(&format!("<r xmlns='{SM}'/>")).await;
    received.push_str(&alice.read_until(&format!("<a xmlns='{SM}' h='1'/>")).await);
    let mut carol = login(&servers[2], "carol", "desk").await;
    send_chats_to(&mut carol, "alice@localhost/roam", 1..=20).await;
    received.push_str(&alice.read_until("number 20").await);
    received.push_str(&alice.read_for(Duration::from_millis(200)).await);
    assert_eq!(chat_ids(&received), wanted(1..=20), "{received}");
    let upto_ten = received.find("number 10").expect("message 10");
    let handled = stanzas(&received[..upto_ten]).len();
    drop(alice);
    send_chats_to(&mut carol, "alice@localhost/roam", 21..=25).await;

    let mut alice = authenticated_with(&servers[2], "alice", "pw-alice").await;
    alice.open().await;
    alice
        .send(&format!(
            "<resume xmlns='{SM}' previd='{id}' h='{handled}'/>"
        ))
        .await;
    let resumed = alice.read_until("number 25").await;
    assert!(
        resumed.contains(&format!("<resumed xmlns='{SM}' previd='{id}' h='1'/>")),
        "{resumed}"
    );
    let rest = alice.read_for(Duration::from_millis(500)).await;
    let all = format!("{resumed}{rest}");
    assert_eq!(
        chat_ids(&all),
        wanted(11..=25),
        "each once, in order: {all}"
    );
    // The home holds one session for alice, now carried by dc3.
    let listed = tern_tests::server::output_text(&servers[0].ctl(&["--json", "session", "list"]));
    let sessions: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let alice_sessions: Vec<&serde_json::Value> = sessions["session"]["listSessions"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|s| s["jid"] == "alice@localhost/roam")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(alice_sessions.len(), 1, "{listed}");
    assert_eq!(alice_sessions[0]["datacenter"], "dc3", "{listed}");
    assert_eq!(alice_sessions[0]["available"], true, "{listed}");
    // It carries on: new messages arrive, and alice's own go out with her JID.
    send_chats_to(&mut carol, "alice@localhost/roam", 26..=26).await;
    let later = alice.read_until("number 26").await;
    assert_eq!(chat_ids(&later), wanted(26..=26), "{later}");
    alice
        .send(
            "<message to='carol@localhost/desk' type='chat' id='back'><body>back</body></message>",
        )
        .await;
    let at_carol = carol.read_until("<body>back</body>").await;
    assert!(
        at_carol.contains("from='alice@localhost/roam'"),
        "{at_carol}"
    );
    // A second cut: the id now lives at dc3, and a resumption asked at dc1 (the home) is sent
    // on there. The client says it handled nothing more: all since message 11 comes again.
    drop(alice);
    let mut alice = authenticated_with(&servers[0], "alice", "pw-alice").await;
    alice.open().await;
    alice
        .send(&format!(
            "<resume xmlns='{SM}' previd='{id}' h='{handled}'/>"
        ))
        .await;
    let again = alice.read_until("number 26").await;
    assert!(
        again.contains(&format!("<resumed xmlns='{SM}' previd='{id}' h='2'/>")),
        "{again}"
    );
    assert_eq!(chat_ids(&again), wanted(11..=26), "{again}");
    send_chats_to(&mut carol, "alice@localhost/roam", 27..=27).await;
    let later = alice.read_until("number 27").await;
    assert_eq!(chat_ids(&later), wanted(27..=27), "{later}");

    for server in &mut servers {
        server.stop();
    }
    let _ = std::fs::remove_dir_all(&root);
}
