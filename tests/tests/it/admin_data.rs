//! `tern ctl roster get-contact / delete-contact / subscribe-all-to-all` and
//! `tern ctl stanza get-last-messages` against a running node, with what raw clients see of the
//! same rosters and archives.

use tern_tests::client::RawClient;
use tern_tests::server::{TestServer, ctl_ok, ctl_refused};

#[tokio::test]
async fn roster_commands_change_what_clients_see() {
    let server = TestServer::start("admin-roster", "");
    for user in ["alice", "bob", "carol"] {
        server.register(user, "localhost", "pw");
    }
    let done = ctl_ok(
        &server,
        &[
            "roster",
            "subscribe-all-to-all",
            "--user",
            "alice@localhost",
            "--user",
            "bob@localhost",
            "--user",
            "carol@localhost",
        ],
    );
    assert_eq!(done.trim(), "3 users are now subscribed to each other");
    for (user, contact) in [
        ("alice", "bob"),
        ("alice", "carol"),
        ("bob", "carol"),
        ("carol", "alice"),
    ] {
        let line = ctl_ok(
            &server,
            &[
                "roster",
                "get-contact",
                "--user",
                &format!("{user}@localhost"),
                "--contact",
                &format!("{contact}@localhost"),
            ],
        );
        assert_eq!(
            line.trim(),
            format!("{contact}@localhost subscription=both name=- groups=- ask=none")
        );
    }
    ctl_ok(
        &server,
        &[
            "roster",
            "add-contact",
            "--user",
            "alice@localhost",
            "--contact",
            "bob@localhost",
            "--name",
            "Bob B",
            "--group",
            "Work",
            "--group",
            "Friends",
        ],
    );
    let line = ctl_ok(
        &server,
        &[
            "roster",
            "get-contact",
            "--user",
            "alice@localhost",
            "--contact",
            "bob@localhost",
        ],
    );
    assert_eq!(
        line.trim(),
        "bob@localhost subscription=both name=\"Bob B\" groups=Work,Friends ask=none"
    );
    let refused = ctl_refused(
        &server,
        &[
            "roster",
            "subscribe-all-to-all",
            "--user",
            "alice@localhost",
        ],
    );
    assert!(refused.contains("between 2 and 100"), "{refused}");

    // Alice's client asks for the roster, so removals are pushed to it.
    let mut alice = RawClient::login(server.starttls_port, "localhost", "alice", "pw", "a").await;
    alice
        .send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let roster = alice.read_until("</iq>").await;
    assert!(
        roster.contains("jid='bob@localhost'") && roster.contains("jid='carol@localhost'"),
        "{roster}"
    );

    let done = ctl_ok(
        &server,
        &[
            "roster",
            "delete-contact",
            "--user",
            "alice@localhost",
            "--contact",
            "bob@localhost",
        ],
    );
    assert_eq!(
        done.trim(),
        "removed bob@localhost from the roster of alice@localhost"
    );
    let push = alice.read_until("</iq>").await;
    assert!(
        push.contains("type='set'")
            && push.contains("<item jid='bob@localhost' subscription='remove'/>"),
        "{push}"
    );
    let missing = ctl_refused(
        &server,
        &[
            "roster",
            "get-contact",
            "--user",
            "alice@localhost",
            "--contact",
            "bob@localhost",
        ],
    );
    assert!(
        missing.contains("error: bob@localhost is not in the roster of alice@localhost"),
        "{missing}"
    );
    ctl_refused(
        &server,
        &[
            "roster",
            "delete-contact",
            "--user",
            "alice@localhost",
            "--contact",
            "bob@localhost",
        ],
    );
    // The roster remove cancelled Bob's subscription to Alice and hers to him.
    let line = ctl_ok(
        &server,
        &[
            "roster",
            "get-contact",
            "--user",
            "bob@localhost",
            "--contact",
            "alice@localhost",
        ],
    );
    assert!(line.contains("subscription=none"), "{line}");
    let list = ctl_ok(&server, &["roster", "list", "--user", "alice@localhost"]);
    assert_eq!(list, "carol@localhost\n");
}

/// The `TIMESTAMP` of a `get-last-messages` line.
fn timestamp(line: &str) -> &str {
    line.split(' ').next().expect("a timestamp")
}

#[tokio::test]
async fn last_messages_come_from_the_archive() {
    let server = TestServer::start("admin-mam", "");
    for user in ["alice", "bob", "carol"] {
        server.register(user, "localhost", "pw");
    }
    let mut alice = RawClient::login(server.starttls_port, "localhost", "alice", "pw", "a").await;
    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "b").await;
    let mut carol = RawClient::login(server.starttls_port, "localhost", "carol", "pw", "c").await;
    for n in 1..=3 {
        bob.send(&format!(
            "<message to='alice@localhost/a' type='chat'><body>b{n}</body></message>"
        ))
        .await;
        alice.read_until(&format!("<body>b{n}</body>")).await;
    }
    alice
        .send("<message to='carol@localhost/c' type='chat'><body>two\nlines</body></message>")
        .await;
    carol.read_until("</message>").await;

    let printed = ctl_ok(
        &server,
        &["stanza", "get-last-messages", "--caller", "alice@localhost"],
    );
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 4, "{printed}");
    for (n, line) in lines[..3].iter().enumerate() {
        assert!(
            line.ends_with(&format!(
                " bob@localhost/b -> alice@localhost/a: b{}",
                n + 1
            )),
            "{printed}"
        );
    }
    assert!(
        lines[3].ends_with(" alice@localhost/a -> carol@localhost/c: two\\nlines"),
        "{printed}"
    );
    let stamps: Vec<&str> = lines.iter().map(|l| timestamp(l)).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{printed}");
    assert!(
        stamps.iter().all(|s| s.len() == 27 && s.ends_with('Z')),
        "{printed}"
    );

    // The newest two, only those with Bob, and the page before a message.
    let printed = ctl_ok(
        &server,
        &[
            "stanza",
            "get-last-messages",
            "--caller",
            "alice@localhost",
            "--limit",
            "2",
        ],
    );
    assert_eq!(printed, format!("{}\n{}\n", lines[2], lines[3]));
    let printed = ctl_ok(
        &server,
        &[
            "stanza",
            "get-last-messages",
            "--caller",
            "alice@localhost",
            "--with",
            "bob@localhost",
            "--limit",
            "2",
        ],
    );
    assert_eq!(printed, format!("{}\n{}\n", lines[1], lines[2]));
    let printed = ctl_ok(
        &server,
        &[
            "stanza",
            "get-last-messages",
            "--caller",
            "alice@localhost",
            "--before",
            stamps[2],
        ],
    );
    assert_eq!(printed, format!("{}\n{}\n", lines[0], lines[1]));

    // JSON: the archive id is the stanza id Alice's client got with the message.
    let printed = ctl_ok(
        &server,
        &[
            "--json",
            "stanza",
            "get-last-messages",
            "--caller",
            "bob@localhost",
        ],
    );
    let data: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
    let messages = data["stanza"]["getLastMessages"]
        .as_array()
        .expect("a list");
    assert_eq!(messages.len(), 3, "{printed}");
    assert_eq!(messages[0]["sender"], "bob@localhost/b");
    assert_eq!(messages[0]["recipient"], "alice@localhost/a");
    assert_eq!(messages[0]["body"], "b1");
    assert!(
        messages[0]["stanza"]
            .as_str()
            .is_some_and(|x| x.contains("<body>b1</body>")),
        "{printed}"
    );
    let printed = ctl_ok(
        &server,
        &[
            "--json",
            "stanza",
            "get-last-messages",
            "--caller",
            "alice@localhost",
            "--limit",
            "1",
            "--with",
            "carol@localhost",
        ],
    );
    let data: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
    let sent = &data["stanza"]["getLastMessages"][0];
    assert_eq!(sent["body"], "two\nlines");
    bob.send("<message to='alice@localhost/a' type='chat'><body>b4</body></message>")
        .await;
    // The stanza id follows the body.
    alice.read_until("<body>b4</body>").await;
    let got = alice.read_until("</message>").await;
    let printed = ctl_ok(
        &server,
        &[
            "--json",
            "stanza",
            "get-last-messages",
            "--caller",
            "alice@localhost",
            "--limit",
            "1",
        ],
    );
    let data: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
    let id = data["stanza"]["getLastMessages"][0]["id"]
        .as_str()
        .expect("an id");
    assert!(
        got.contains(&format!("id='{id}' by='alice@localhost'")),
        "{id} not in {got}"
    );

    // Nothing with Dave, a wrong limit, an unknown account.
    assert_eq!(
        ctl_ok(
            &server,
            &[
                "stanza",
                "get-last-messages",
                "--caller",
                "carol@localhost",
                "--with",
                "dave@localhost",
            ],
        ),
        ""
    );
    let refused = ctl_refused(
        &server,
        &[
            "stanza",
            "get-last-messages",
            "--caller",
            "alice@localhost",
            "--limit",
            "501",
        ],
    );
    assert!(refused.contains("between 1 and 500"), "{refused}");
    let refused = ctl_refused(
        &server,
        &[
            "stanza",
            "get-last-messages",
            "--caller",
            "nobody@localhost",
        ],
    );
    assert!(refused.contains("does not exist"), "{refused}");
}
