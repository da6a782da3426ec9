//! A node on the PostgreSQL storage backend: `tern db migrate`, then `tern serve` keeping
//! accounts, rosters and offline messages in the database across a restart.
//!
//! Needs the server of `TERN_TEST_POSTGRES_URL` (see `tests/services/postgres.sh`); without it
//! the test returns at once, and `tern-node`'s `postgres_server_is_configured` test fails
//! instead, saying why. Names are unique per run, so the database may be reused.

use tern_tests::client::RawClient;
use tern_tests::server::{TestServer, ctl_ok, output_text, temp_dir};

/// The test server's URL; `None` when unset or `skip`.
fn postgres_url() -> Option<String> {
    std::env::var("TERN_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty() && url != "skip")
}

#[tokio::test]
async fn a_node_keeps_its_data_in_postgres_across_a_restart() {
    let Some(url) = postgres_url() else {
        eprintln!("TERN_TEST_POSTGRES_URL not set: skipped");
        return;
    };
    let run = format!(
        "{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let (alice, bob) = (format!("alice{run}"), format!("bob{run}"));
    let extra = format!("[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 4\n");
    let mut server = TestServer::configure(temp_dir("postgres"), &extra);

    // `tern db migrate` applies the schema (or finds it there) and exits; a second run has
    // nothing left to apply.
    for pass in 0..2 {
        let out = std::process::Command::new(tern_tests::server::tern_bin())
            .args(["db", "migrate", "--config"])
            .arg(&server.config)
            .output()
            .expect("run tern db migrate");
        let text = output_text(&out);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("schema at version 1"), "{text}");
        if pass == 1 {
            assert!(text.contains(": 0 migration(s) applied"), "{text}");
        }
    }

    server.spawn();
    server.register(&alice, "localhost", "pw");
    server.register(&bob, "localhost", "pw");
    let mut a = RawClient::login(server.starttls_port, "localhost", &alice, "pw", "r").await;
    a.send(&format!(
        "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>\
         <item jid='{bob}@localhost' name='Bob'><group>Friends</group></item></query></iq>"
    ))
    .await;
    let got = a.read_until("id='r1'").await;
    assert!(got.contains("type='result'"), "{got}");
    for n in 1..=2 {
        a.send(&format!(
            "<message to='{bob}@localhost' type='chat' id='m{n}'><body>while away {n}</body></message>"
        ))
        .await;
    }
    a.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.read_until("id='p1'").await;
    drop(a);

    // Everything is in PostgreSQL: a restarted node finds it.
    assert!(server.stop(), "{}", server.log());
    server.spawn();
    let mut a = RawClient::login(server.starttls_port, "localhost", &alice, "pw", "r").await;
    a.send("<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let roster = a.read_until("</query>").await;
    assert!(
        roster.contains(&format!("jid='{bob}@localhost'")) && roster.contains("Friends"),
        "{roster}"
    );
    let mut b = RawClient::login(server.starttls_port, "localhost", &bob, "pw", "r").await;
    b.send("<presence/>").await;
    let got = b.read_until("while away 2").await;
    let first = got.find("while away 1").expect("first offline message");
    let second = got.find("while away 2").expect("second offline message");
    assert!(first < second, "{got}");
    drop(b);
    assert_eq!(
        ctl_ok(
            &server,
            &["offline", "count", "--user", &format!("{bob}@localhost")]
        )
        .trim(),
        "0"
    );
    let log = server.log();
    assert!(log.contains("postgres storage opened"), "{log}");
}
