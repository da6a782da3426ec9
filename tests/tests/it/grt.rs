//! The global routing table across processes: four `tern serve` nodes of one topology (three
//! datacenters with a voter each, and a learner in the first), Raft over TCP on loopback.
//! Domain changes and account homes written on one node are seen on every other; the group
//! survives the loss of its leader.

use std::path::Path;
use std::time::Duration;

use tern_tests::server::{TestServer, free_ports, output_text, temp_dir};

/// Polls `check` until it returns `Some` (at most 30 s).
fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    tern_tests::server::eventually(what, Duration::from_secs(30), check)
}

fn write_topology(path: &Path, raft_ports: &[u16; 4]) {
    let [p1, p2, p3, p4] = raft_ports;
    let text = format!(
        r#"[[dc]]
name = "dc1"
raft = "voter"

  [[dc.node]]
  id = 1
  name = "dc1-a"
  raft_addr = "127.0.0.1:{p1}"
  voter = true

  [[dc.node]]
  id = 4
  name = "dc1-b"
  raft_addr = "127.0.0.1:{p4}"
  voter = false

[[dc]]
name = "dc2"
raft = "voter"

  [[dc.node]]
  id = 2
  name = "dc2-a"
  raft_addr = "127.0.0.1:{p2}"

[[dc]]
name = "dc3"
raft = "voter"

  [[dc.node]]
  id = 3
  name = "dc3-a"
  raft_addr = "127.0.0.1:{p3}"
"#
    );
    std::fs::write(path, text).expect("write topology");
}

/// The `leader:` line of `tern ctl mesh status`, if a leader is known.
fn leader_of(server: &TestServer) -> Option<u64> {
    let out = server.ctl(&["mesh", "status"]);
    if !out.status.success() {
        return None;
    }
    output_text(&out)
        .lines()
        .find_map(|l| l.strip_prefix("leader: "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn four_nodes_share_one_routing_table() {
    let root = temp_dir("grt-mesh");
    let topology = root.join("topology.toml");
    let raft_ports = free_ports::<4>();
    write_topology(&topology, &raft_ports);
    let dcs = ["dc1", "dc2", "dc3", "dc1"];
    let mut servers: Vec<TestServer> = (1..=4u64)
        .map(|id| {
            let dir = root.join(format!("node{id}"));
            std::fs::create_dir_all(&dir).expect("node dir");
            let extra = format!(
                "[cluster]\ndc = \"{}\"\nnode_id = {id}\ntopology = \"{}\"\n",
                dcs[id as usize - 1],
                topology.display()
            );
            TestServer::configure(dir, &extra)
        })
        .collect();
    for server in &mut servers {
        server.spawn();
    }

    // One leader, known to all; the learner joined.
    let leader = eventually("an agreed leader", || {
        let views: Vec<Option<u64>> = servers.iter().map(leader_of).collect();
        let first = views[0]?;
        views.iter().all(|v| *v == Some(first)).then_some(first)
    });
    assert!((1..=3).contains(&leader), "a voter leads, not the learner");
    eventually("node 4 as a learner", || {
        let status = output_text(&servers[0].ctl(&["mesh", "status"]));
        status
            .lines()
            .any(|l| l.starts_with("learners:") && l.contains("4 (dc1"))
            .then_some(())
    });

    // A domain added on one node is served by every node.
    let out = servers[2].ctl(&[
        "domain",
        "add",
        "--domain",
        "dyn.test",
        "--host-type",
        "default",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    for server in &servers {
        eventually("dyn.test everywhere", || {
            output_text(&server.ctl(&["domain", "list"]))
                .contains("dyn.test")
                .then_some(())
        });
    }

    // An account registered on dc1 with its home in dc2: every node reads dc2.
    let out = servers[0].ctl(&[
        "account",
        "register",
        "--username",
        "roamer",
        "--domain",
        "localhost",
        "--password",
        "pw",
        "--home",
        "dc2",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    for server in &servers {
        eventually("roamer's home everywhere", || {
            let out = server.ctl(&["mesh", "home", "--jid", "roamer@localhost"]);
            (out.status.success() && output_text(&out).contains("dc2")).then_some(())
        });
    }
    let out = servers[3].ctl(&["mesh", "home", "--jid", "nobody@localhost"]);
    assert!(!out.status.success(), "no home: {}", output_text(&out));

    // The leader goes away; the two other voters elect a new one and keep committing.
    assert!(servers[leader as usize - 1].stop(), "clean stop");
    let survivors: Vec<usize> = (0..4).filter(|i| *i != leader as usize - 1).collect();
    let new_leader = eventually("a new leader", || {
        let l = leader_of(&servers[survivors[0]])?;
        (l != leader).then_some(l)
    });
    assert_ne!(new_leader, leader);
    let writer = &servers[survivors[0]];
    eventually("a write after the leader's loss", || {
        writer
            .ctl(&[
                "domain",
                "add",
                "--domain",
                "after.test",
                "--host-type",
                "default",
            ])
            .status
            .success()
            .then_some(())
    });
    for i in &survivors {
        eventually("after.test on the survivors", || {
            output_text(&servers[*i].ctl(&["domain", "list"]))
                .contains("after.test")
                .then_some(())
        });
    }

    // The old leader comes back and catches up.
    servers[leader as usize - 1].spawn();
    eventually("after.test on the restarted node", || {
        output_text(&servers[leader as usize - 1].ctl(&["domain", "list"]))
            .contains("after.test")
            .then_some(())
    });
    for server in &mut servers {
        server.stop();
    }
    let _ = std::fs::remove_dir_all(&root);
}
