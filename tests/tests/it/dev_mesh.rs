//! `tern dev mesh`, the real binary: with `--no-start` it writes a three-datacenter mesh that
//! three `tern serve` processes then run as one routing table (one leader, homes seen
//! everywhere); without it, the command starts a two-datacenter mesh itself, refuses a second
//! one on the same ports, and stops its nodes on SIGTERM; a node that fails at start stops the
//! others and has the end of its log shown.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tern_tests::server::{TestServer, output_text, temp_dir, tern_bin};

/// Polls `check` until it returns `Some` (at most 60 s).
fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    tern_tests::server::eventually(what, Duration::from_secs(60), check)
}

/// Datacenter `k`'s first port with base port `base`, as `tern dev mesh` lays them out.
fn dc_base(base: u16, k: u16) -> u16 {
    base + 1000 * k
}

/// A `--base-port` in `from..from + 3000` (a multiple of 100) whose derived ports for `dcs`
/// datacenters all bind on 127.0.0.1 right now: TCP for clients, Raft and admin, UDP for the
/// bridge. Each test gets its own `from`, so tests running at once never share a port, and all
/// stay below the ephemeral range, so the other tests' `free_ports` do not take them.
fn free_base(dcs: u16, from: u16) -> u16 {
    let seed = std::process::id() % 30;
    for attempt in 0..30 {
        let slot = u16::try_from((seed + attempt * 7) % 30).expect("below 30");
        let base = from + slot * 100;
        let mut held = (Vec::new(), Vec::new());
        let all_bind = (1..=dcs).all(|k| {
            let b = dc_base(base, k);
            [b, b + 1, b + 58, b + 78, b + 329].iter().all(|p| {
                TcpListener::bind(("127.0.0.1", *p))
                    .map(|l| held.0.push(l))
                    .is_ok()
            }) && UdpSocket::bind(("127.0.0.1", b + 79))
                .map(|s| held.1.push(s))
                .is_ok()
        });
        if all_bind {
            return base;
        }
    }
    panic!("no free block of ports from {from}");
}

/// Runs `tern dev mesh args…` in `cwd` to completion.
fn dev_mesh(cwd: &Path, args: &[&str]) -> Output {
    Command::new(tern_bin())
        .current_dir(cwd)
        .args(["dev", "mesh"])
        .args(args)
        .output()
        .expect("run tern dev mesh")
}

/// The `leader:` of `tern ctl mesh status`, if one is known.
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
fn three_datacenters_written_then_run_as_one_routing_table() {
    let root = temp_dir("dev-mesh");
    let base = free_base(3, 10_000);
    let base_arg = base.to_string();
    // A relative --dir: every file must still name absolute paths.
    let out = dev_mesh(
        &root,
        &[
            "--dcs",
            "3",
            "--dir",
            "mesh",
            "--no-start",
            "--base-port",
            &base_arg,
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let dir = root.join("mesh");
    let shown = dir.display().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains(&format!("3 datacenters in {shown}, domain localhost")),
        "{stdout}"
    );
    for k in 1..=3u16 {
        let b = dc_base(base, k);
        for expected in [
            format!("dc{k} (Raft voter, node {k})"),
            format!(
                "host 127.0.0.1, port {b} (STARTTLS) or {} (direct TLS)",
                b + 1
            ),
            format!(
                "ctl --config {shown}/dc{k}/tern.toml account register --username U --domain \
                 localhost --password P [--home dcJ]"
            ),
            format!("serve --config {shown}/dc{k}/tern.toml"),
        ] {
            assert!(stdout.contains(&expected), "{expected:?} in\n{stdout}");
        }
    }

    // The files.
    for file in [
        "ca.pem", "ca.key", "dc1.pem", "dc1.key", "dc2.pem", "dc3.key",
    ] {
        assert!(dir.join("pki").join(file).is_file(), "pki/{file}");
    }
    let topology = std::fs::read_to_string(dir.join("topology.toml")).expect("topology");
    assert_eq!(
        topology.matches("raft = \"voter\"").count(),
        3,
        "{topology}"
    );
    assert!(!topology.contains("learner"), "{topology}");
    for k in 1..=3u16 {
        let b = dc_base(base, k);
        for expected in [
            format!("name = \"dc{k}-1\""),
            format!("raft_addr = \"127.0.0.1:{}\"", b + 78),
            format!("bridge = [\"127.0.0.1:{}\"]", b + 79),
        ] {
            assert!(topology.contains(&expected), "{expected:?} in\n{topology}");
        }
        let config = std::fs::read_to_string(dir.join(format!("dc{k}/tern.toml"))).expect("config");
        for expected in [
            format!("data_dir = \"{shown}/dc{k}/data\""),
            format!("address = \"127.0.0.1:{b}\"\ntls = \"starttls\""),
            format!("address = \"127.0.0.1:{}\"\ntls = \"direct\"", b + 1),
            format!("[admin]\naddress = \"127.0.0.1:{}\"", b + 329),
            format!("dc = \"dc{k}\"\nnode_id = {k}\ntopology = \"{shown}/topology.toml\""),
            format!("[mesh]\npki_dir = \"{shown}/pki\""),
        ] {
            assert!(config.contains(&expected), "{expected:?} in\n{config}");
        }
    }

    // Out-of-range counts: a usage error, nothing written.
    for dcs in ["0", "10"] {
        let out = dev_mesh(&root, &["--dcs", dcs, "--dir", "other", "--no-start"]);
        assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
        assert!(
            output_text(&out).contains(&format!("--dcs {dcs}: a dev mesh has 1 to 9 datacenters")),
            "{}",
            output_text(&out)
        );
    }
    assert!(!root.join("other").exists());

    // The three nodes, run from the generated files.
    let mut servers: Vec<TestServer> = (1..=3u16)
        .map(|k| {
            let b = dc_base(base, k);
            let dc_dir = dir.join(format!("dc{k}"));
            TestServer::from_config(
                dc_dir.clone(),
                dc_dir.join("tern.toml"),
                [b, b + 1, b + 329],
            )
        })
        .collect();
    for server in &mut servers {
        server.spawn();
    }
    let leader = eventually("one leader known to all three", || {
        let views: Vec<Option<u64>> = servers.iter().map(leader_of).collect();
        let first = views[0]?;
        views.iter().all(|v| *v == Some(first)).then_some(first)
    });
    assert!((1..=3).contains(&leader), "leader {leader}");
    for server in &servers {
        eventually("the three datacenters in the table", || {
            output_text(&server.ctl(&["mesh", "status"]))
                .lines()
                .any(|l| l == "datacenters: dc1, dc2, dc3")
                .then_some(())
        });
    }

    // alice registers in dc1 (homed there), bob through dc2 with --home dc2; dc3 knows both.
    servers[0].register("alice", "localhost", "secret");
    let out = servers[1].ctl(&[
        "account",
        "register",
        "--username",
        "bob",
        "--domain",
        "localhost",
        "--password",
        "secret",
        "--home",
        "dc2",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    for (jid, home) in [("bob@localhost", "dc2"), ("alice@localhost", "dc1")] {
        eventually("the home as dc3 reads it", || {
            let out = servers[2].ctl(&["mesh", "home", "--jid", jid]);
            (out.status.success() && output_text(&out).starts_with(&format!("{jid}: {home} ")))
                .then_some(())
        });
    }
    for server in &mut servers {
        assert!(server.stop(), "clean stop:\n{}", server.log());
    }

    // A second run rewrites the files and keeps the CA and the data.
    let ca = std::fs::read(dir.join("pki/ca.pem")).expect("ca.pem");
    std::fs::write(dir.join("topology.toml"), "broken").expect("spoil the topology");
    let out = dev_mesh(
        &root,
        &[
            "--dcs",
            "3",
            "--dir",
            &shown,
            "--no-start",
            "--base-port",
            &base_arg,
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("(CA kept, certificates kept)"),
        "{}",
        output_text(&out)
    );
    assert_eq!(std::fs::read(dir.join("pki/ca.pem")).expect("ca.pem"), ca);
    assert_eq!(
        std::fs::read_to_string(dir.join("topology.toml")).expect("topology"),
        topology
    );
    assert!(dir.join("dc1/data/tern.redb").is_file());
    assert!(dir.join("dc2/data/grt.redb").is_file());

    drop(servers);
    let _ = std::fs::remove_dir_all(&root);
}

/// A `tern dev mesh` run in the background: stops it (SIGTERM, then SIGKILL, with the nodes it
/// reported) if the test ends early.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    node_pids: Vec<u32>,
}

impl Background {
    fn start(cwd: &Path, args: &[&str], stderr: &Path) -> Self {
        let mut child = Command::new(tern_bin())
            .current_dir(cwd)
            .args(["dev", "mesh"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).expect("stderr file"))
            .spawn()
            .expect("start tern dev mesh");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            node_pids: Vec::new(),
        }
    }

    /// Reads output until a line starting with `prefix`; records the nodes' pids on the way.
    fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                return false;
            };
            if let Some(pid) = line
                .split_once("(pid ")
                .and_then(|(_, rest)| rest.split_once(')'))
                .and_then(|(pid, _)| pid.parse().ok())
            {
                self.node_pids.push(pid);
            }
            let found = line.starts_with(prefix);
            self.seen.push(line);
            if found {
                return true;
            }
        }
        false
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                for pid in &self.node_pids {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

#[test]
fn started_by_the_command_two_datacenters_come_up_and_stop_on_sigterm() {
    let root = temp_dir("dev-mesh-run");
    let base = free_base(2, 17_000);
    let base_arg = base.to_string();
    let dir = root.join("mesh");
    let dir_arg = dir.display().to_string();
    let mut mesh = Background::start(
        &root,
        &["--dcs", "2", "--dir", &dir_arg, "--base-port", &base_arg],
        &root.join("stderr"),
    );
    let up = mesh.wait_for_line("All 2 datacenters are up", Duration::from_secs(60));
    assert!(
        up,
        "not up:\n{}\n{}",
        mesh.output(),
        std::fs::read_to_string(root.join("stderr")).unwrap_or_default()
    );
    assert_eq!(mesh.node_pids.len(), 2, "{}", mesh.output());
    let output = mesh.output();
    assert!(
        output.contains(&format!("log       {dir_arg}/dc2/tern.log")),
        "{output}"
    );
    for k in 1..=2u16 {
        let b = dc_base(base, k);
        assert!(
            TcpStream::connect(("127.0.0.1", b)).is_ok(),
            "dc{k} clients"
        );
        assert!(
            TcpStream::connect(("127.0.0.1", b + 329)).is_ok(),
            "dc{k} admin"
        );
    }

    // Two DCs: dc1 votes, dc2 is a learner DC that follows it.
    let dc2 = TestServer::from_config(
        root.join("ctl-dc2"),
        dir.join("dc2/tern.toml"),
        [
            dc_base(base, 2),
            dc_base(base, 2) + 1,
            dc_base(base, 2) + 329,
        ],
    );
    eventually("dc2 following dc1 as a learner", || {
        let status = output_text(&dc2.ctl(&["mesh", "status"]));
        (status.lines().any(|l| l == "role: learner") && status.lines().any(|l| l == "leader: 1"))
            .then_some(())
    });
    drop(dc2);

    // The same ports again: refused, naming the first port in use; nothing is started.
    let out = dev_mesh(
        &root,
        &["--dcs", "2", "--dir", "second", "--base-port", &base_arg],
    );
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(&format!(
            "127.0.0.1:{} (dc1's STARTTLS client port) is in use",
            dc_base(base, 1)
        )),
        "{}",
        output_text(&out)
    );
    assert!(!root.join("second/dc1/tern.log").exists());

    // SIGTERM: the nodes stop, then the command exits 0.
    let status = Command::new("kill")
        .arg(mesh.child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = mesh.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "tern dev mesh did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    mesh.wait_for_line("stopping the datacenters", Duration::from_secs(5));
    assert!(exit.success(), "{exit}: {}", mesh.output());
    for pid in &mesh.node_pids {
        assert!(!pid_alive(*pid), "node {pid} still running");
    }
    for k in 1..=2u16 {
        assert!(
            TcpStream::connect(("127.0.0.1", dc_base(base, k))).is_err(),
            "dc{k} still accepts clients"
        );
        let log = std::fs::read_to_string(dir.join(format!("dc{k}/tern.log"))).expect("log");
        assert!(log.contains("stopped"), "dc{k} log:\n{log}");
    }
    drop(mesh);
    let _ = std::fs::remove_dir_all(&root);
}

/// The processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[test]
fn a_node_that_fails_at_start_stops_the_others_and_shows_its_log() {
    let root = temp_dir("dev-mesh-fail");
    let base = free_base(2, 23_000);
    let dir = root.join("mesh");
    // dc2's database is not a database: its node exits at once.
    std::fs::create_dir_all(dir.join("dc2/data")).expect("data dir");
    std::fs::write(dir.join("dc2/data/tern.redb"), "not a database").expect("spoil");
    let started = Instant::now();
    let out = dev_mesh(
        &root,
        &[
            "--dcs",
            "2",
            "--dir",
            "mesh",
            "--base-port",
            &base.to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "dc2 exited before it was ready (exit status: 1); the end of {}:",
            dir.join("dc2/tern.log").display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "cannot open database {}",
            dir.join("dc2/data/tern.redb").display()
        )),
        "the log's end is shown: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "reported at once, not after the timeout"
    );
    // dc1 was started, and stopped with the failure.
    assert!(dir.join("dc1/tern.log").is_file());
    let config = dir.join("dc1/tern.toml").display().to_string();
    let left = processes_with(&config);
    assert!(left.is_empty(), "still running: {left:?}");
    let _ = std::fs::remove_dir_all(&root);
}
