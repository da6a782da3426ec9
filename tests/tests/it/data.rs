//! `tern ctl offline / vcard / last / private` against a running node, and what clients see of
//! the same data.

use tern_tests::client::RawClient;
use tern_tests::server::{TestServer, ctl_ok, output_text};

#[tokio::test]
async fn per_account_data_through_tern_ctl() {
    let server = TestServer::start("data-ctl", "");
    server.register("alice", "localhost", "pw");
    server.register("bob", "localhost", "pw");

    // vCard set by the operator, read by a client.
    assert_eq!(
        ctl_ok(&server, &["vcard", "get", "--user", "alice@localhost"]).trim(),
        "-"
    );
    ctl_ok(
        &server,
        &[
            "vcard",
            "set",
            "--user",
            "alice@localhost",
            "--vcard",
            "<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN></vCard>",
        ],
    );
    let printed = ctl_ok(&server, &["vcard", "get", "--user", "alice@localhost"]);
    assert!(printed.contains("<FN>Alice Liddell</FN>"), "{printed}");
    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "r").await;
    bob.send("<iq type='get' id='v1' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    let got = bob.read_until("</iq>").await;
    assert!(
        got.contains("Alice Liddell") && got.contains("type='result'"),
        "{got}"
    );
    let refused = server.ctl(&[
        "vcard",
        "set",
        "--user",
        "alice@localhost",
        "--vcard",
        "<notavcard/>",
    ]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("vCard"),
        "{}",
        output_text(&refused)
    );

    // Private XML set by a client, read by the operator.
    bob.send(
        "<iq type='set' id='p1'><query xmlns='jabber:iq:private'>\
         <prefs xmlns='urn:example:prefs'><color>teal</color></prefs></query></iq>",
    )
    .await;
    let got = bob.read_until("id='p1'").await;
    assert!(!got.contains("type='error'"), "{got}");
    let printed = ctl_ok(
        &server,
        &[
            "private",
            "get",
            "--user",
            "bob@localhost",
            "--element",
            "prefs",
            "--namespace",
            "urn:example:prefs",
        ],
    );
    assert!(printed.contains("<color>teal</color>"), "{printed}");

    // Last activity.
    assert!(
        ctl_ok(&server, &["last", "get", "--user", "alice@localhost"])
            .contains("alice@localhost: no activity recorded")
    );
    ctl_ok(
        &server,
        &[
            "last",
            "set",
            "--user",
            "alice@localhost",
            "--timestamp",
            "1000",
            "--status",
            "on holiday",
        ],
    );
    let printed = ctl_ok(&server, &["last", "get", "--user", "alice@localhost"]);
    assert!(
        printed.contains("last seen 1970-01-01T00:16:40Z") && printed.contains(": on holiday"),
        "{printed}"
    );

    // Offline messages counted and deleted.
    for n in 0..3 {
        bob.send(&format!(
            "<message to='alice@localhost' type='chat'><body>{n}</body></message>"
        ))
        .await;
    }
    bob.send("<iq type='get' id='s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    bob.read_until("id='s'").await;
    assert_eq!(
        ctl_ok(&server, &["offline", "count", "--user", "alice@localhost"]).trim(),
        "3"
    );
    assert!(
        ctl_ok(&server, &["offline", "delete", "--user", "alice@localhost"])
            .contains("deleted 3 offline messages")
    );
    assert_eq!(
        ctl_ok(&server, &["offline", "count", "--user", "alice@localhost"]).trim(),
        "0"
    );
    let unknown = server.ctl(&["offline", "count", "--user", "nobody@localhost"]);
    assert!(!unknown.status.success());
    assert!(output_text(&unknown).contains("does not exist"));

    // Removing the account removes all of it.
    ctl_ok(&server, &["account", "remove", "--user", "alice@localhost"]);
    ctl_ok(
        &server,
        &[
            "account",
            "register",
            "--username",
            "alice",
            "--domain",
            "localhost",
            "--password",
            "pw2",
        ],
    );
    assert_eq!(
        ctl_ok(&server, &["vcard", "get", "--user", "alice@localhost"]).trim(),
        "-"
    );
    assert!(
        ctl_ok(&server, &["last", "get", "--user", "alice@localhost"])
            .contains("no activity recorded")
    );
}

/// `urn:xmpp:mam:1`, which older clients still speak, answers like `urn:xmpp:mam:2`, in its
/// own namespace.
#[tokio::test]
async fn the_previous_archive_namespace_is_answered_too() {
    let server = TestServer::start("mam1", "");
    server.register("alice", "localhost", "pw");
    server.register("bob", "localhost", "pw");
    let mut alice = RawClient::login(server.starttls_port, "localhost", "alice", "pw", "a").await;
    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "b").await;
    for n in 1..=3 {
        bob.send(&format!(
            "<message to='alice@localhost/a' type='chat'><body>m{n}</body></message>"
        ))
        .await;
        alice.read_until(&format!("<body>m{n}</body>")).await;
    }
    alice
        .send(
            "<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:1' queryid='old'>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set></query></iq>",
        )
        .await;
    let got = alice.read_until("id='q1'").await;
    let got = got + &alice.read_until("</iq>").await;
    assert_eq!(
        got.matches("<result xmlns='urn:xmpp:mam:1' queryid='old'")
            .count(),
        2,
        "{got}"
    );
    assert!(
        got.contains("<body>m1</body>") && got.contains("<body>m2</body>"),
        "{got}"
    );
    assert!(!got.contains("<body>m3</body>"), "{got}");
    assert!(
        got.contains("<fin xmlns='urn:xmpp:mam:1'>"),
        "not complete: {got}"
    );
    assert!(got.contains("<count>3</count>"), "{got}");
}
