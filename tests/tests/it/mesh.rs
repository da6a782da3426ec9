//! Three datacenters, three `tern serve` processes on loopback, joined by QUIC bridges with the
//! mesh's mutual TLS and by the routing table's Raft: users homed in different datacenters chat
//! both ways (full and bare JIDs, with and without initial presence), an offline recipient's
//! error comes back across the mesh, and a datacenter stopped for good is reported to senders
//! with `<remote-server-timeout/>` promptly.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tern_tests::client::RawClient;
use tern_tests::server::{TestServer, free_ports, output_text, temp_dir, tern_bin};

/// Polls `check` until it returns `Some` (at most 30 s).
fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    tern_tests::server::eventually(what, Duration::from_secs(30), check)
}

/// A UDP port free right now on 127.0.0.1.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("udp port")
}

fn mesh_pki(dir: &Path, dcs: &[&str]) {
    let run = |args: &[&str]| {
        let out = Command::new(tern_bin())
            .args(args)
            .output()
            .expect("run tern mesh");
        assert!(out.status.success(), "tern {args:?}: {}", output_text(&out));
    };
    let dir = dir.to_str().expect("utf8 path");
    run(&["mesh", "ca", "init", "--dir", dir]);
    for dc in dcs {
        run(&["mesh", "cert", "issue", "--dc", dc, "--dir", dir]);
    }
}

fn write_topology(path: &Path, raft: &[u16; 3], bridge: &[u16; 3]) {
    let mut text = String::new();
    for k in 0..3 {
        text.push_str(&format!(
            "[[dc]]\nname = \"dc{n}\"\nraft = \"voter\"\nbridge = [\"127.0.0.1:{b}\"]\n\n  [[dc.node]]\n  id = {n}\n  name = \"dc{n}-a\"\n  raft_addr = \"127.0.0.1:{r}\"\n\n",
            n = k + 1,
            b = bridge[k],
            r = raft[k],
        ));
    }
    std::fs::write(path, text).expect("write topology");
}

/// Three DCs with bridges and Raft, every bridge up and a leader elected.
fn three_dcs(tag: &str, down_after: &str) -> (std::path::PathBuf, Vec<TestServer>) {
    let root = temp_dir(tag);
    let pki = root.join("pki");
    mesh_pki(&pki, &["dc1", "dc2", "dc3"]);
    let topology = root.join("topology.toml");
    let raft = free_ports::<3>();
    let bridge = [free_udp_port(), free_udp_port(), free_udp_port()];
    write_topology(&topology, &raft, &bridge);
    let mut servers: Vec<TestServer> = (1..=3u64)
        .map(|id| {
            let dir = root.join(format!("dc{id}"));
            std::fs::create_dir_all(&dir).expect("dir");
            let extra = format!(
                "[cluster]\ndc = \"dc{id}\"\nnode_id = {id}\ntopology = \"{}\"\n\n[mesh]\npki_dir = \"{}\"\ndown_after = \"{down_after}\"\n",
                topology.display(),
                pki.display()
            );
            TestServer::configure(dir, &extra)
        })
        .collect();
    for server in &mut servers {
        server.spawn();
    }
    // Every bridge up, one Raft leader.
    for server in &servers {
        eventually("bridges up and a leader", || {
            let status = output_text(&server.ctl(&["mesh", "status"]));
            let bridges = status
                .lines()
                .find(|l| l.starts_with("bridges: "))?
                .to_owned();
            let leader = status.lines().any(|l| {
                l.strip_prefix("leader: ")
                    .is_some_and(|v| v.trim().parse::<u64>().is_ok())
            });
            (leader && bridges.matches(" up ").count() == 2).then_some(())
        });
    }
    (root, servers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_datacenters_chat_across_the_mesh() {
    let (root, mut servers) = three_dcs("mesh3", "1s");
    // Each user registered (and homed) where it logs in.
    servers[0].register("alice", "localhost", "pw-a");
    servers[1].register("bob", "localhost", "pw-b");
    servers[2].register("carol", "localhost", "pw-c");
    for server in &servers {
        eventually("every home known everywhere", || {
            ["alice", "bob", "carol"]
                .iter()
                .all(|u| {
                    server
                        .ctl(&["mesh", "home", "--jid", &format!("{u}@localhost")])
                        .status
                        .success()
                })
                .then_some(())
        });
    }

    let mut alice = RawClient::login(
        servers[0].starttls_port,
        "localhost",
        "alice",
        "pw-a",
        "home",
    )
    .await;
    let mut bob = RawClient::login(
        servers[1].starttls_port,
        "localhost",
        "bob",
        "pw-b",
        "phone",
    )
    .await;
    bob.send("<presence/>").await;
    bob.read_until("from='bob@localhost/phone'").await;

    // dc1 → dc2, full JID and bare JID.
    alice
        .send("<message to='bob@localhost/phone' id='m1' type='chat'><body>full</body></message>")
        .await;
    let got = bob.read_until("</message>").await;
    assert!(got.contains("from='alice@localhost/home'"), "{got}");
    assert!(got.contains("<body>full</body>"), "{got}");
    alice
        .send("<message to='bob@localhost' id='m2' type='chat'><body>bare</body></message>")
        .await;
    let got = bob.read_until("</message>").await;
    assert!(got.contains("<body>bare</body>"), "{got}");
    // dc2 → dc1 back, to alice who sent no initial presence (full JID still reaches her).
    bob.send("<message to='alice@localhost/home' id='m3' type='chat'><body>back</body></message>")
        .await;
    let got = alice.read_until("</message>").await;
    assert!(got.contains("from='bob@localhost/phone'"), "{got}");
    assert!(got.contains("<body>back</body>"), "{got}");

    // dc3 → dc2 from a client without initial presence.
    let mut carol = RawClient::login(
        servers[2].starttls_port,
        "localhost",
        "carol",
        "pw-c",
        "desk",
    )
    .await;
    carol
        .send("<message to='bob@localhost' id='m4' type='chat'><body>from dc3</body></message>")
        .await;
    let got = bob.read_until("</message>").await;
    assert!(got.contains("from='carol@localhost/desk'"), "{got}");

    // An IQ to a resource in another DC and its answer come back across the mesh.
    alice
        .send("<iq to='bob@localhost/phone' id='q1' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let got = bob.read_until("</iq>").await;
    assert!(got.contains("id='q1'"), "{got}");
    bob.send("<iq to='alice@localhost/home' id='q1' type='result'/>")
        .await;
    let got = alice.read_until("type='result'").await;
    assert!(got.contains("id='q1'"), "{got}");

    // A resource that does not exist at the home: the error comes back over the mesh.
    alice
        .send("<iq to='bob@localhost/gone' id='q2' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let got = alice.read_until("</iq>").await;
    assert!(
        got.contains("id='q2'") && got.contains("type='error'"),
        "{got}"
    );
    assert!(got.contains("service-unavailable"), "{got}");

    // A presence subscription across the mesh: carol (dc3) subscribes to bob (dc2); each roster
    // lives at its owner's home, the requests and answers cross the bridges, and carol then
    // receives bob's presence. (Subscription requests go to resources that asked for their
    // roster, RFC 6121 §3.1.3.)
    bob.send("<iq type='get' id='gb'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    bob.read_until("id='gb'").await;
    carol
        .send("<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq><presence/>")
        .await;
    carol.read_until("id='g'").await;
    carol
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    let got = carol.read_until("ask='subscribe'").await;
    assert!(got.contains("bob@localhost"), "{got}");
    let got = bob.read_until("type='subscribe'").await;
    assert!(got.contains("from='carol@localhost'"), "{got}");
    bob.send("<presence to='carol@localhost' type='subscribed'/>")
        .await;
    let got = bob.read_until("subscription='from'").await;
    assert!(got.contains("carol@localhost"), "{got}");
    let got = carol.read_until("subscription='to'").await;
    assert!(got.contains("bob@localhost"), "{got}");
    let got = carol.read_until("from='bob@localhost/phone'").await;
    assert!(
        got.contains("<presence"),
        "bob's presence reached dc3: {got}"
    );
    // Bob changes his presence: the broadcast reaches his subscriber in the other DC.
    bob.send("<presence><show>away</show></presence>").await;
    let got = carol.read_until("</presence>").await;
    assert!(got.contains("<show>away</show>"), "{got}");

    // dc3 stops for good: after mesh.down_after, stanzas to its users bounce at once.
    assert!(servers[2].stop(), "clean stop");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let started = Instant::now();
    alice
        .send("<message to='carol@localhost' id='m5' type='chat'><body>anyone?</body></message>")
        .await;
    let got = alice.read_until("</message>").await;
    assert!(
        got.contains("id='m5'") && got.contains("type='error'"),
        "{got}"
    );
    assert!(got.contains("remote-server-timeout"), "{got}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the sender is answered promptly"
    );
    // The remaining two still chat.
    bob.send(
        "<message to='alice@localhost/home' id='m6' type='chat'><body>still here</body></message>",
    )
    .await;
    let got = alice.read_until("</message>").await;
    assert!(
        got.contains("id='m6'") && got.contains("still here"),
        "{got}"
    );

    for server in &mut servers {
        server.stop();
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// dc2 is killed with SIGKILL while dc1 sends to a user homed there; when dc2 comes back, every
/// message reaches it exactly once. Its user is offline, so each one comes back to the sender as
/// one error (offline storage arrives with a later issue): exactly fifty errors, in order, none
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_datacenter_gets_what_was_sent_meanwhile_exactly_once() {
    let (root, mut servers) = three_dcs("mesh-kill", "60s");
    servers[0].register("alice", "localhost", "pw-a");
    servers[1].register("bob", "localhost", "pw-b");
    eventually("bob's home known at dc1", || {
        servers[0]
            .ctl(&["mesh", "home", "--jid", "bob@localhost"])
            .status
            .success()
            .then_some(())
    });
    let mut alice = RawClient::login(
        servers[0].starttls_port,
        "localhost",
        "alice",
        "pw-a",
        "home",
    )
    .await;

    servers[1].kill();
    for n in 1..=50 {
        alice
            .send(&format!(
                "<message to='bob@localhost/phone' id='k{n}' type='chat'><body>{n}</body></message>"
            ))
            .await;
    }
    // Nothing comes back while dc2 is dead: the messages wait in dc1's queue.
    let early = alice.read_for(Duration::from_millis(500)).await;
    assert!(!early.contains("type='error'"), "{early}");

    servers[1].spawn();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 50 && Instant::now() < deadline {
        let chunk = alice.read_for(Duration::from_millis(500)).await;
        for part in chunk.split("<message").skip(1) {
            if part.contains("type='error'")
                && let Some(id) = part
                    .split("id='k")
                    .nth(1)
                    .and_then(|r| r.split('\'').next())
            {
                seen.push(id.parse::<u32>().expect("id"));
            }
        }
    }
    assert_eq!(seen, (1..=50).collect::<Vec<u32>>(), "each once, in order");
    let late = alice.read_for(Duration::from_millis(700)).await;
    assert!(!late.contains("type='error'"), "no duplicate: {late}");

    for server in &mut servers {
        server.stop();
    }
    let _ = std::fs::remove_dir_all(&root);
}
