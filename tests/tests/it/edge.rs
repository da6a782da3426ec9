//! Edge sessions: clients connected to a datacenter other than their account's home, on three
//! `tern serve` processes joined by bridges. Login with the home's credentials, one account
//! with sessions in two datacenters, chat and IQs through the home, an account created at its
//! home from another datacenter (`--home`), and a user who moves between datacenters while
//! messages to it are in flight: every one reaches a session of it, none twice.

use std::collections::BTreeSet;
use std::time::Duration;

use tern_tests::client::RawClient;
use tern_tests::server::{TestServer, output_text};

use crate::mesh::{
    available, eventually, login, one_at_a_time, register, three_dcs, three_dcs_with, wait_home,
};

/// Registers each `(datacenter index, user)` there and waits until every datacenter knows
/// every home.
fn homes(servers: &[TestServer], users: &[(usize, &str)]) {
    for (dc, user) in users {
        register(&servers[*dc], user);
    }
    for server in servers {
        for (_, user) in users {
            wait_home(server, user);
        }
    }
}

/// Stops every datacenter and removes their files.
fn finish(root: std::path::PathBuf, mut servers: Vec<TestServer>) {
    for server in &mut servers {
        server.stop();
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// The bodies of every `<message>` in `text` that has one, as numbers.
fn numbered_bodies(text: &str) -> Vec<u32> {
    text.split("<body>")
        .skip(1)
        .filter_map(|rest| rest.split("</body>").next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_connects_to_any_datacenter() {
    let _one = one_at_a_time().await;
    // A dead peer is noticed after the bridge's idle timeout, then declared down after
    // `down_after`: both short here.
    let (root, mut servers) = three_dcs_with(
        "mesh-edge",
        "2s",
        "idle_timeout = \"1s\"\nkeepalive = \"300ms\"\n",
        None,
    );
    register(&servers[0], "alice");
    register(&servers[1], "bob");
    // carol is created at her home, dc3, by a command run against dc1.
    let out = servers[0].ctl(&[
        "account",
        "register",
        "--username",
        "carol",
        "--domain",
        "localhost",
        "--password",
        "pw-carol",
        "--home",
        "dc3",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    for server in &servers {
        for user in ["alice", "bob", "carol"] {
            wait_home(server, user);
        }
    }
    let out = servers[0].ctl(&["account", "list", "--domain", "localhost"]);
    assert!(
        !output_text(&out).contains("carol"),
        "carol's account lives at dc3, not dc1: {}",
        output_text(&out)
    );

    // A wrong password is refused at an edge as at the home.
    let mut wrong = RawClient::connect(servers[1].starttls_port, "localhost").await;
    wrong.starttls().await;
    wrong.open().await;
    let answer = wrong.auth_plain("alice", "not-her-password").await;
    assert!(answer.contains("not-authorized"), "{answer}");

    // alice at her home (dc1) and at an edge (dc2), both available at priority 0.
    let mut desk = available(&servers[0], "alice", "desk").await;
    let mut roam = available(&servers[1], "alice", "roam").await;
    // The home keeps the edge session, and says where its client is.
    let roaming = servers[0].listed_session("alice@localhost/roam");
    assert_eq!(roaming["datacenter"], "dc2", "{roaming}");
    assert_eq!(roaming["available"], true, "{roaming}");

    // A bare-JID message reaches both sessions (RFC 6121 §8.5.2.1.1: same top priority).
    let mut bob = login(&servers[1], "bob", "phone").await;
    bob.send("<message to='alice@localhost' id='b1' type='chat'><body>both</body></message>")
        .await;
    for client in [&mut desk, &mut roam] {
        let got = client.read_until("</message>").await;
        assert!(
            got.contains("from='bob@localhost/phone'") && got.contains("<body>both</body>"),
            "{got}"
        );
    }

    // carol, at her home dc3 (credentials created there), and alice's edge session talk.
    let mut carol = login(&servers[2], "carol", "desk").await;
    carol
        .send(
            "<message to='alice@localhost/roam' id='c1' type='chat'><body>to roam</body></message>",
        )
        .await;
    let got = roam.read_until("</message>").await;
    assert!(
        got.contains("from='carol@localhost/desk'") && got.contains("to roam"),
        "{got}"
    );
    roam.send(
        "<message to='carol@localhost/desk' id='r1' type='chat'><body>hi carol</body></message>",
    )
    .await;
    let got = carol.read_until("</message>").await;
    assert!(
        got.contains("from='alice@localhost/roam'") && got.contains("hi carol"),
        "{got}"
    );

    // The roster lives at the home: the edge session's query is answered from there, and an
    // IQ to an unknown resource comes back as an error.
    roam.send("<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let got = roam.read_until("</iq>").await;
    assert!(
        got.contains("id='r2'") && got.contains("type='result'"),
        "{got}"
    );
    roam.send(
        "<iq to='bob@localhost/nowhere' id='r3' type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    let got = roam.read_until("</iq>").await;
    assert!(got.contains("service-unavailable"), "{got}");

    // An edge session that ends is unavailable to its contacts at the home: desk sees it go.
    roam.send("</stream:stream>").await;
    assert!(roam.closed().await, "the edge closes the stream");
    let got = desk.read_until("type='unavailable'").await;
    assert!(got.contains("from='alice@localhost/roam'"), "{got}");
    eventually("alice/roam gone at her home", || {
        let listed = output_text(&servers[0].ctl(&["session", "list"]));
        (!listed.contains("alice@localhost/roam")).then_some(())
    });

    // The edge datacenter dies (SIGKILL) with alice connected there: once it has been
    // unreachable for mesh.idle_timeout + mesh.down_after (1 s + 2 s), her home ends that
    // session and her contacts see it go.
    let _roam = available(&servers[1], "alice", "roam").await;
    let got = desk.read_until("from='alice@localhost/roam'").await;
    assert!(!got.contains("unavailable"), "{got}");
    servers[1].kill();
    let got = desk.read_until("type='unavailable'").await;
    assert!(got.contains("from='alice@localhost/roam'"), "{got}");
    let listed = output_text(&servers[0].ctl(&["session", "list"]));
    assert!(!listed.contains("alice@localhost/roam"), "{listed}");
    // bob's home is dc2, now dead: his login elsewhere is a temporary failure, not a wrong
    // password.
    let mut homeless = RawClient::connect(servers[0].starttls_port, "localhost").await;
    homeless.starttls().await;
    homeless.open().await;
    let answer = homeless.auth_plain("bob", "pw-bob").await;
    assert!(answer.contains("temporary-auth-failure"), "{answer}");

    // carol (homed in dc3) connected at dc1; dc3 restarts and lost her session: its start
    // announcement makes dc1 close her stream, so her client logs in again.
    let mut visiting = available(&servers[0], "carol", "visit").await;
    servers[2].stop();
    servers[2].spawn();
    let got = visiting.read_until("</stream:stream>").await;
    assert!(got.contains("<reset"), "{got}");
    // While dc1 cannot reach her home, a login is a temporary failure (the client retries);
    // once the bridge is back, it succeeds.
    eventually("dc1's bridge to dc3 back up", || {
        let status = output_text(&servers[0].ctl(&["mesh", "status"]));
        status.contains("dc3 up").then_some(())
    });
    let mut again = available(&servers[0], "carol", "visit").await;

    // An account is changed at its home whichever node the command runs against: a password
    // set through dc1 is the one dc3 checks, and a removal through dc1 deletes carol at dc3
    // and ends her session at the edge.
    let out = servers[0].ctl(&[
        "account",
        "change-password",
        "--user",
        "carol@localhost",
        "--password",
        "pw-carol-2",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let _fresh = RawClient::login(
        servers[2].starttls_port,
        "localhost",
        "carol",
        "pw-carol-2",
        "fresh",
    )
    .await;
    let out = servers[0].ctl(&["account", "remove", "--user", "carol@localhost"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let got = again.read_until("</stream:stream>").await;
    assert!(got.contains("not-authorized"), "{got}");
    let at_dc3 = output_text(&servers[2].ctl(&["account", "list", "--domain", "localhost"]));
    assert!(!at_dc3.contains("carol"), "{at_dc3}");

    finish(root, servers);
}

/// alice (homed in dc1) is connected to dc2 while carol (dc3) sends her a numbered stream of
/// messages; halfway through, alice leaves dc2 and reconnects to dc3 under the same resource.
/// Every message reaches one of her two sessions (the old one before it closed; the new one
/// live or from offline storage), none twice — the move MongooseIM's suite accepts losing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_moving_between_datacenters_loses_nothing_in_flight() {
    let _one = one_at_a_time().await;
    const TOTAL: u32 = 300;
    let (root, servers) = three_dcs("mesh-move", "5s");
    homes(&servers, &[(0, "alice"), (2, "carol")]);
    let mut old = available(&servers[1], "alice", "roam").await;
    let mut carol = login(&servers[2], "carol", "desk").await;

    // carol sends at a steady pace, so messages are on their way during the whole move.
    let sender = tokio::spawn(async move {
        for n in 1..=TOTAL {
            carol
                .send(&format!(
                    "<message to='alice@localhost/roam' id='m{n}' type='chat'><body>{n}</body></message>"
                ))
                .await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        carol
    });
    // After the first few, alice leaves dc2: the client closes the old stream and reads
    // everything the server still writes.
    let mut seen = old.read_until("<body>20</body>").await;
    old.send("</stream:stream>").await;
    assert!(old.closed().await, "the old stream closes");
    seen.push_str(&old.read_for(Duration::from_millis(10)).await);
    let received = numbered_bodies(&seen);
    let mut new = login(&servers[2], "alice", "roam").await;
    new.send("<presence/>").await;
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        text.push_str(&new.read_for(Duration::from_millis(300)).await);
        let got: BTreeSet<u32> = numbered_bodies(&text)
            .into_iter()
            .chain(received.iter().copied())
            .collect();
        if got.len() as u32 == TOTAL || std::time::Instant::now() > deadline {
            break;
        }
    }
    assert!(
        !received.is_empty() && received.len() < TOTAL as usize,
        "the move happened with messages on their way: {} before it",
        received.len()
    );
    let mut all = received.clone();
    all.extend(numbered_bodies(&text));
    let unique: BTreeSet<u32> = all.iter().copied().collect();
    assert_eq!(
        unique,
        (1..=TOTAL).collect::<BTreeSet<u32>>(),
        "every message reached alice"
    );
    assert_eq!(all.len(), unique.len(), "none twice: {all:?}");
    let mut carol = sender.await.expect("sender");
    let bounced = carol.read_for(Duration::from_millis(300)).await;
    assert!(!bounced.contains("type='error'"), "{bounced}");

    finish(root, servers);
}

/// `example.test` is served by dc1 and dc2 only (the topology says so): dc3 refuses its clients
/// and its accounts, but routes stanzas to its users over the bridges, and an account of it can
/// be created from dc3 at a datacenter that serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_served_by_some_datacenters_only() {
    let _one = one_at_a_time().await;
    let (root, servers) = three_dcs("mesh-serving", "2s");
    let listed = output_text(&servers[2].ctl(&["domain", "list"]));
    assert!(
        listed.contains("example.test enabled static") && listed.contains("serving=dc1,dc2"),
        "{listed}"
    );
    // No accounts of it at dc3 ...
    let refused = servers[2].ctl(&[
        "account",
        "register",
        "--username",
        "dave",
        "--domain",
        "example.test",
        "--password",
        "pw-dave",
    ]);
    assert!(!refused.status.success(), "{}", output_text(&refused));
    assert!(
        output_text(&refused).contains("example.test"),
        "{}",
        output_text(&refused)
    );
    // ... but from dc3, one homed at dc1.
    let out = servers[2].ctl(&[
        "account",
        "register",
        "--username",
        "dave",
        "--domain",
        "example.test",
        "--password",
        "pw-dave",
        "--home",
        "dc1",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    register(&servers[2], "carol");
    for server in &servers {
        wait_home(server, "carol");
        eventually("dave's home known", || {
            server
                .ctl(&["mesh", "home", "--jid", "dave@example.test"])
                .status
                .success()
                .then_some(())
        });
    }

    // dc3 does not take streams for the domain.
    let mut client = RawClient::connect(servers[2].starttls_port, "example.test").await;
    client
        .send(&tern_tests::client::header("example.test"))
        .await;
    let got = client.read_until("</stream:stream>").await;
    assert!(got.contains("host-unknown"), "{got}");

    // dave logs in at dc2 (it serves the domain; his home is dc1) and carol at dc3 writes to him.
    let mut dave = RawClient::login(
        servers[1].starttls_port,
        "example.test",
        "dave",
        "pw-dave",
        "laptop",
    )
    .await;
    let mut carol = login(&servers[2], "carol", "desk").await;
    carol
        .send("<message to='dave@example.test/laptop' id='d1' type='chat'><body>hello dave</body></message>")
        .await;
    let got = dave.read_until("</message>").await;
    assert!(
        got.contains("from='carol@localhost/desk'") && got.contains("hello dave"),
        "{got}"
    );
    dave.send("<message to='carol@localhost/desk' id='d2' type='chat'><body>hi</body></message>")
        .await;
    let got = carol.read_until("</message>").await;
    assert!(got.contains("from='dave@example.test/laptop'"), "{got}");
    // A user of the domain that does not exist: an error, from dc3 at once.
    carol
        .send("<message to='nobody@example.test' id='d3' type='chat'><body>?</body></message>")
        .await;
    let got = carol.read_until("</message>").await;
    assert!(
        got.contains("id='d3'") && got.contains("service-unavailable"),
        "{got}"
    );
    // The domain itself is answered by a datacenter that serves it.
    carol
        .send("<iq to='example.test' id='d4' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let got = carol.read_until("id='d4'").await;
    assert!(
        got.contains("id='d4'") && got.contains("type='result'"),
        "{got}"
    );

    finish(root, servers);
}

/// alice's home moves from dc1 to dc3 (`tern ctl mesh rehome`, run against dc2) while bob keeps
/// writing to her: her password, roster and offline messages move with her, and every message
/// — stored before, held during, or sent after the move — reaches her at dc3 exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_moves_home_with_its_data_and_messages_in_flight() {
    let _one = one_at_a_time().await;
    const STREAM: u32 = 150;
    let (root, servers) = three_dcs("mesh-rehome", "5s");
    homes(&servers, &[(0, "alice"), (1, "bob")]);
    // alice subscribes to bob's presence; then she goes offline.
    {
        let mut alice = login(&servers[0], "alice", "desk").await;
        let mut bob = available(&servers[1], "bob", "phone").await;
        bob.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
            .await;
        bob.read_until("id='r'").await;
        alice
            .send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
            .await;
        alice.read_until("id='r1'").await;
        alice
            .send("<presence to='bob@localhost' type='subscribe'/>")
            .await;
        bob.read_until("type='subscribe'").await;
        bob.send("<presence to='alice@localhost' type='subscribed'/>")
            .await;
        let got = alice.read_until("subscription='to'").await;
        assert!(got.contains("bob@localhost"), "{got}");
        alice.send("</stream:stream>").await;
        assert!(alice.closed().await);
    }
    let mut bob = login(&servers[1], "bob", "phone").await;
    for n in 1..=5 {
        bob.send(&format!(
            "<message to='alice@localhost' type='chat'><body>{n}</body></message>"
        ))
        .await;
    }

    // bob keeps writing while the move runs.
    let writer = tokio::spawn(async move {
        for n in 6..=5 + STREAM {
            bob.send(&format!(
                "<message to='alice@localhost' type='chat'><body>{n}</body></message>"
            ))
            .await;
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        bob
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let out = servers[1].ctl(&["mesh", "rehome", "--jid", "alice@localhost", "--dc", "dc3"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("moved alice@localhost from dc1 to dc3"),
        "{}",
        output_text(&out)
    );
    let mut bob = writer.await.expect("writer");

    for server in &servers {
        eventually("alice's new home known", || {
            let out = output_text(&server.ctl(&["mesh", "home", "--jid", "alice@localhost"]));
            out.contains("alice@localhost: dc3").then_some(())
        });
    }
    let at_dc1 = output_text(&servers[0].ctl(&["account", "list", "--domain", "localhost"]));
    assert!(!at_dc1.contains("alice"), "dc1 deleted its copy: {at_dc1}");
    let at_dc3 = output_text(&servers[2].ctl(&["account", "list", "--domain", "localhost"]));
    assert!(at_dc3.contains("alice@localhost"), "{at_dc3}");

    // Her password and roster moved; all her messages wait at dc3.
    let mut alice = login(&servers[2], "alice", "laptop").await;
    alice
        .send("<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let roster = alice.read_until("id='r2'").await;
    let roster = roster + &alice.read_until("</iq>").await;
    assert!(
        roster.contains("jid='bob@localhost'") && roster.contains("subscription='to'"),
        "{roster}"
    );
    alice.send("<presence/>").await;
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while numbered_bodies(&text).len() < (5 + STREAM) as usize
        && std::time::Instant::now() < deadline
    {
        text.push_str(&alice.read_for(Duration::from_millis(300)).await);
    }
    let bodies = numbered_bodies(&text);
    let unique: BTreeSet<u32> = bodies.iter().copied().collect();
    assert_eq!(
        unique,
        (1..=5 + STREAM).collect::<BTreeSet<u32>>(),
        "every message reached alice at her new home"
    );
    assert_eq!(bodies.len(), unique.len(), "none twice");
    let errors = bob.read_for(Duration::from_millis(300)).await;
    assert!(!errors.contains("type='error'"), "{errors}");

    finish(root, servers);
}

/// An account larger than one call frame (24 private documents of 60 KB: about 1.4 MB) moves in
/// parts and arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_account_moves_in_parts() {
    let _one = one_at_a_time().await;
    let (root, servers) = three_dcs("mesh-rehome-large", "5s");
    homes(&servers, &[(0, "alice")]);
    let filler = "x".repeat(60_000);
    for n in 0..24 {
        let xml = format!("<doc xmlns='urn:example:{n}'>{n}:{filler}</doc>");
        let out = servers[0].ctl(&["private", "set", "--user", "alice@localhost", "--xml", &xml]);
        assert!(out.status.success(), "{}", output_text(&out));
    }
    let out = servers[2].ctl(&["mesh", "rehome", "--jid", "alice@localhost", "--dc", "dc2"]);
    assert!(out.status.success(), "{}", output_text(&out));
    for n in [0, 23] {
        let out = servers[1].ctl(&[
            "private",
            "get",
            "--user",
            "alice@localhost",
            "--element",
            "doc",
            "--namespace",
            &format!("urn:example:{n}"),
        ]);
        let text = output_text(&out);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains(&format!(">{n}:{filler}</doc>")),
            "document {n} whole"
        );
    }
    // The password moved too: alice logs in at her new home.
    let mut alice = login(&servers[1], "alice", "desk").await;
    alice.send("</stream:stream>").await;
    finish(root, servers);
}
