//! Three datacenters, three `tern serve` processes on loopback, joined by QUIC bridges with the
//! mesh's mutual TLS and by the routing table's Raft: users homed in different datacenters chat
//! both ways (full and bare JIDs, with and without initial presence), an offline recipient's
//! error comes back across the mesh, and a datacenter stopped for good is reported to senders
//! with `<remote-server-timeout/>` promptly.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tern_tests::client::RawClient;
use tern_tests::server::{TestServer, free_ports, free_udp_port, output_text, temp_dir, tern_bin};

/// Three-datacenter tests run one at a time: each starts three servers and their bridges, and
/// several at once on a small machine both slow each other down and race for free ports.
pub(crate) async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static MESHES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    MESHES.lock().await
}

/// Polls `check` until it returns `Some` (at most 30 s).
pub(crate) fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    tern_tests::server::eventually(what, Duration::from_secs(30), check)
}

/// Registers `user@localhost` (password `pw-<user>`) through `server`, so it lives in that DC.
pub(crate) fn register(server: &TestServer, user: &str) {
    server.register(user, "localhost", &format!("pw-{user}"));
}

/// Waits until `observer`'s copy of the routing table knows where `user` lives.
pub(crate) fn wait_home(observer: &TestServer, user: &str) {
    eventually(&format!("{user}'s home known"), || {
        observer
            .ctl(&["mesh", "home", "--jid", &format!("{user}@localhost")])
            .status
            .success()
            .then_some(())
    });
}

/// `user` logged in at `server` as `resource`, without presence.
pub(crate) async fn login(server: &TestServer, user: &str, resource: &str) -> RawClient {
    RawClient::login(
        server.starttls_port,
        "localhost",
        user,
        &format!("pw-{user}"),
        resource,
    )
    .await
}

/// `user` logged in at `server` as `resource`, available.
pub(crate) async fn available(server: &TestServer, user: &str, resource: &str) -> RawClient {
    let mut client = login(server, user, resource).await;
    client.send("<presence/>").await;
    client
        .read_until(&format!("from='{user}@localhost/{resource}'"))
        .await;
    client
}

/// A UDP port free right now on 127.0.0.1.
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
    // One of the configured domains is served by two of the three datacenters.
    text.push_str("[[domain]]\nname = \"example.test\"\ndcs = [\"dc1\", \"dc2\"]\n");
    std::fs::write(path, text).expect("write topology");
}

/// Three DCs with bridges and Raft, every bridge up and a leader elected.
pub(crate) fn three_dcs(tag: &str, down_after: &str) -> (std::path::PathBuf, Vec<TestServer>) {
    three_dcs_with(tag, down_after, "", None)
}

/// Three DCs; `mesh_extra` is added to every node's `[mesh]`; with `dc2_via`, the topology
/// names that address as dc2's bridge endpoint (a relay in front of dc2, which listens on
/// `dc2_listen`), so dc1's and dc3's bridges to dc2 cross it.
pub(crate) fn three_dcs_with(
    tag: &str,
    down_after: &str,
    mesh_extra: &str,
    dc2_via: Option<(u16, u16)>,
) -> (std::path::PathBuf, Vec<TestServer>) {
    let root = temp_dir(tag);
    let pki = root.join("pki");
    mesh_pki(&pki, &["dc1", "dc2", "dc3"]);
    let topology = root.join("topology.toml");
    let raft = free_ports::<3>();
    let mut bridge = [free_udp_port(), free_udp_port(), free_udp_port()];
    if let Some((via, _)) = dc2_via {
        bridge[1] = via;
    }
    write_topology(&topology, &raft, &bridge);
    let mut servers: Vec<TestServer> = (1..=3u64)
        .map(|id| {
            let dir = root.join(format!("dc{id}"));
            std::fs::create_dir_all(&dir).expect("dir");
            let listen = match dc2_via {
                Some((_, listen)) if id == 2 => format!("listen = \"127.0.0.1:{listen}\"\n"),
                _ => String::new(),
            };
            let extra = format!(
                "[cluster]\ndc = \"dc{id}\"\nnode_id = {id}\ntopology = \"{}\"\n\n[mesh]\npki_dir = \"{}\"\ndown_after = \"{down_after}\"\n{listen}{mesh_extra}",
                topology.display(),
                pki.display()
            );
            TestServer::configure(dir, &extra)
        })
        .collect();
    for server in &mut servers {
        server.spawn();
    }
    // Every bridge up, one Raft leader, and the three datacenters declared in the routing
    // table (each node writes its own in the background; an account cannot be homed in a
    // datacenter the table does not know yet).
    for server in &servers {
        eventually("bridges up, a leader, every datacenter declared", || {
            let status = output_text(&server.ctl(&["mesh", "status"]));
            let bridges = status
                .lines()
                .find(|l| l.starts_with("bridges: "))?
                .to_owned();
            let leader = status.lines().any(|l| {
                l.strip_prefix("leader: ")
                    .is_some_and(|v| v.trim().parse::<u64>().is_ok())
            });
            let declared = status.lines().any(|l| l == "datacenters: dc1, dc2, dc3");
            (leader && declared && bridges.matches(" up ").count() == 2).then_some(())
        });
    }
    (root, servers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_datacenters_chat_across_the_mesh() {
    let _one = one_at_a_time().await;
    let (root, mut servers) = three_dcs("mesh3", "1s");
    // Each user registered (and homed) where it logs in.
    register(&servers[0], "alice");
    register(&servers[1], "bob");
    register(&servers[2], "carol");
    for server in &servers {
        for user in ["alice", "bob", "carol"] {
            wait_home(server, user);
        }
    }

    let mut alice = login(&servers[0], "alice", "home").await;
    let mut bob = available(&servers[1], "bob", "phone").await;

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
    let mut carol = login(&servers[2], "carol", "desk").await;
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
/// message reaches it exactly once. Its user is offline and offline storage is turned off, so
/// each one comes back to the sender as one error: exactly fifty errors, in order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_datacenter_gets_what_was_sent_meanwhile_exactly_once() {
    let _one = one_at_a_time().await;
    let (root, mut servers) = three_dcs_with(
        "mesh-kill",
        "60s",
        "\n[modules.offline]\nenabled = false\n",
        None,
    );
    register(&servers[0], "alice");
    register(&servers[1], "bob");
    wait_home(&servers[0], "bob");
    let mut alice = login(&servers[0], "alice", "home").await;

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

/// How many connections dc1's bridge to dc2 has made, when it is up.
fn connects_to_dc2(dc1: &TestServer) -> Option<u32> {
    let status = output_text(&dc1.ctl(&["mesh", "status"]));
    let line = status.lines().find(|l| l.starts_with("bridges: "))?;
    let dc2 = line.split(", ").find(|b| b.contains("dc2 up "))?;
    dc2.split("connects=").nth(1)?.trim().parse().ok()
}

/// 1,000 messages from a user in dc1 to a user in dc2 while the link between them (through the
/// WAN emulator) is cut twice, each time longer than the bridges' idle timeout: the bridge dies,
/// reconnects, re-sends what was not acknowledged, and every message arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_survive_two_link_cuts_in_order() {
    let _one = one_at_a_time().await;
    let dc2_listen = free_udp_port();
    let relay = tern_wanem::Relay::start(
        "127.0.0.1:0".parse().expect("addr"),
        format!("127.0.0.1:{dc2_listen}").parse().expect("addr"),
        tern_wanem::Shape {
            delay: Duration::from_millis(5),
            ..tern_wanem::Shape::default()
        },
    )
    .await
    .expect("relay");
    let via = relay.local_addr().port();
    let (root, mut servers) = three_dcs_with(
        "mesh-cuts",
        "60s",
        "idle_timeout = \"1s\"\nkeepalive = \"200ms\"\n",
        Some((via, dc2_listen)),
    );
    register(&servers[0], "alice");
    register(&servers[1], "bob");
    wait_home(&servers[0], "bob");
    let mut alice = login(&servers[0], "alice", "home").await;
    let mut bob = available(&servers[1], "bob", "phone").await;

    let reader = tokio::spawn(async move {
        let mut bodies = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut text = String::new();
        while bodies.len() < 1_000 && Instant::now() < deadline {
            text.push_str(&bob.read_for(Duration::from_millis(300)).await);
            while let Some(end) = text.find("</message>") {
                let message: String = text.drain(..end + "</message>".len()).collect();
                if let Some(body) = message
                    .split("<body>")
                    .nth(1)
                    .and_then(|b| b.split("</body>").next())
                {
                    bodies.push(body.parse::<u32>().expect("number"));
                }
            }
        }
        bodies
    });
    let mut sent = 0u32;
    for (count, cut) in [(300, true), (300, true), (400, false)] {
        for _ in 0..count {
            sent += 1;
            alice
                .send(&format!(
                    "<message to='bob@localhost/phone' type='chat'><body>{sent}</body></message>"
                ))
                .await;
        }
        if cut {
            let before = connects_to_dc2(&servers[0]).unwrap_or(0);
            relay.cut();
            tokio::time::sleep(Duration::from_millis(1_800)).await;
            relay.heal();
            // The bridge died during the cut (idle timeout 1 s) and comes back as a new
            // connection.
            eventually("the bridge to dc2 back up", || {
                (connects_to_dc2(&servers[0]) == Some(before + 1)).then_some(())
            });
        }
    }
    let bodies = reader.await.expect("reader");
    assert_eq!(bodies.len(), 1_000, "all arrived");
    assert_eq!(bodies, (1..=1_000).collect::<Vec<u32>>(), "in order, once");
    assert_eq!(
        connects_to_dc2(&servers[0]),
        Some(3),
        "the bridge to dc2 reconnected after each cut"
    );

    for server in &mut servers {
        server.stop();
    }
    relay.stop().await;
    let _ = std::fs::remove_dir_all(&root);
}

/// The value of the counter `name` in a node's `/metrics`.
async fn counter(server: &TestServer, name: &str) -> u64 {
    let text = crate::admin::reqwest_metrics(server.admin_port).await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

/// XEP-0045 across datacenters: a room homed at dc1 with occupants whose accounts live at dc2
/// and dc3 (three each) and one at dc1. A room message crosses each bridge once, however many
/// occupants the datacenter behind it delivers to, and every one of them gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_message_crosses_each_bridge_once() {
    let _one = one_at_a_time().await;
    let (root, mut servers) = three_dcs("mesh-muc-fanout", "5s");
    register(&servers[0], "owner");
    let guests: Vec<String> = (1..=6).map(|n| format!("guest{n}")).collect();
    // Odd guests live at dc2, even ones at dc3.
    let home = |n: usize| if n.is_multiple_of(2) { 1 } else { 2 };
    for (n, guest) in guests.iter().enumerate() {
        register(&servers[home(n)], guest);
    }
    for server in &servers {
        wait_home(server, "owner");
        for guest in &guests {
            wait_home(server, guest);
        }
    }
    let room = "hall@muc.localhost";
    let mut owner = login(&servers[0], "owner", "desk").await;
    owner
        .send(&format!(
            "<presence to='{room}/Owner'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))
        .await;
    owner.read_until("code='201'").await;
    owner
        .send(&format!(
            "<iq type='set' id='cfg' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
        ))
        .await;
    owner.read_until("id='cfg'").await;
    // The room's home reaches every datacenter's table before the guests join.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut clients = Vec::new();
    let mut last_join = 0;
    for (n, guest) in guests.iter().enumerate() {
        let mut client = login(&servers[home(n)], guest, "phone").await;
        let before_join = counter(&servers[0], "tern_mesh_stanzas_sent_total").await;
        client
            .send(&format!("<presence to='{room}/{guest}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"))
            .await;
        let joined = client.read_until("<subject").await;
        // Everything answering the join came in order: the others' presence, then its own.
        assert_eq!(joined.matches("<presence").count(), n + 2, "{joined}");
        assert!(joined.contains("code='110'"), "{joined}");
        last_join = counter(&servers[0], "tern_mesh_stanzas_sent_total").await - before_join;
        clients.push(client);
    }
    // The last newcomer's join crossed dc1's bridges in at most four envelopes (its occupant
    // list, its presence to each other datacenter, and everything answering it in one batch),
    // not one per occupant already there.
    assert!(last_join <= 4, "{last_join} envelopes for the sixth join");
    // Presence and joins have settled; now one message.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = counter(&servers[0], "tern_mesh_stanzas_sent_total").await;
    owner
        .send(&format!(
            "<message to='{room}' type='groupchat' id='m1'><body>to everyone</body></message>"
        ))
        .await;
    owner.read_until("to everyone").await;
    for client in &mut clients {
        let got = client.read_until("to everyone").await;
        assert!(got.contains(&format!("from='{room}/Owner'")), "{got}");
    }
    let after = counter(&servers[0], "tern_mesh_stanzas_sent_total").await;
    assert_eq!(
        after - before,
        2,
        "one envelope to each of dc2 and dc3 for three occupants there each"
    );
    // The same for presence: the owner's new status reaches the six guests in one envelope per
    // datacenter, each with the room's muc#user item.
    owner
        .send(&format!(
            "<presence to='{room}/Owner'><show>away</show></presence>"
        ))
        .await;
    for client in &mut clients {
        let got = client.read_until("<show>away</show>").await;
        assert!(got.contains(&format!("from='{room}/Owner'")), "{got}");
        let rest = client.read_until("</presence>").await;
        assert!(rest.contains("role='moderator'"), "{rest}");
        assert!(
            !rest.contains("jid="),
            "a semi-anonymous room hides the owner's JID: {rest}"
        );
    }
    let presence_sent = counter(&servers[0], "tern_mesh_stanzas_sent_total").await;
    assert_eq!(
        presence_sent - after,
        2,
        "one presence envelope to each datacenter"
    );
    // A guest who leaves no longer gets room messages; the others still do.
    let mut gone = clients.remove(0);
    gone.send(&format!(
        "<presence to='{room}/guest1' type='unavailable'/>"
    ))
    .await;
    gone.read_until("type='unavailable'").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    clients[0]
        .send(&format!(
            "<message to='{room}' type='groupchat' id='m2'><body>second</body></message>"
        ))
        .await;
    owner.read_until("second").await;
    for client in &mut clients {
        client.read_until("second").await;
    }
    let late = gone.read_for(Duration::from_millis(500)).await;
    assert!(!late.contains("second"), "{late}");
    for server in &mut servers {
        server.stop();
    }
    let _ = std::fs::remove_dir_all(&root);
}
