//! Local reads of the routing table with one million users: lookup latency (criterion, and a
//! p99 over individually timed lookups) and memory per user entry (RSS growth while the table
//! is built, from /proc/self/status), and the time and size of a snapshot of that table.
//!
//! `cargo bench -p tern-raft-store --bench routing`

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use jid::BareJid;
use tern_raft_store::{Command, DcRole, RoutingTable};

const USERS: u64 = 1_000_000;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn build() -> RoutingTable {
    let mut table = RoutingTable::new();
    let setup = [
        Command::UpsertDc {
            name: "eu".into(),
            bridge_endpoints: vec![],
            role: DcRole::Voter,
        },
        Command::UpsertDc {
            name: "us".into(),
            bridge_endpoints: vec![],
            role: DcRole::Voter,
        },
        Command::AddDomain {
            domain: "example.com".into(),
            host_type: "default".into(),
            dynamic: false,
            serving: vec![],
        },
    ];
    let mut index = 0;
    for command in &setup {
        index += 1;
        table.apply(index, command).expect("setup");
    }
    for i in 0..USERS {
        index += 1;
        let command = Command::CreateUser {
            jid: format!("user{i}@example.com"),
            dc: if i % 2 == 0 { "eu" } else { "us" }.into(),
        };
        table.apply(index, &command).expect("create");
    }
    table
}

fn routing(c: &mut Criterion) {
    let before = rss_bytes();
    let table = build();
    let after = rss_bytes();
    assert_eq!(table.user_count() as u64, USERS);
    println!(
        "memory: {} users, RSS {} -> {} KiB, {:.1} bytes per user entry",
        USERS,
        before / 1024,
        after / 1024,
        (after - before) as f64 / USERS as f64
    );
    // Keys to look up, spread over the table (a stride co-prime with the size).
    let keys: Vec<BareJid> = (0..10_000u64)
        .map(|i| BareJid::new(&format!("user{}@example.com", (i * 7_919) % USERS)).expect("jid"))
        .collect();
    // p99 of single lookups, each timed on its own (includes the clock's own cost).
    let mut times: Vec<u64> = keys
        .iter()
        .cycle()
        .take(200_000)
        .map(|key| {
            let started = Instant::now();
            let found = black_box(table.user_home(black_box(key)));
            let took = started.elapsed();
            assert!(found.home.is_some());
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)
        })
        .collect();
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "lookup, single timed: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        times[times.len() - 1]
    );
    snapshot(&table);
    let mut i = 0;
    c.bench_function("user_home (1M users)", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(table.user_home(&keys[i]))
        });
    });
}

/// Writes and reads back a snapshot of the whole table, once, timed.
fn snapshot(table: &RoutingTable) {
    let started = Instant::now();
    let bytes = black_box(table.to_snapshot());
    let written = started.elapsed();
    let started = Instant::now();
    let restored = RoutingTable::from_snapshot(black_box(&bytes)).expect("snapshot");
    let read = started.elapsed();
    assert_eq!(restored.user_count(), table.user_count());
    assert_eq!(restored.applied_index(), table.applied_index());
    let probe = BareJid::new("user123457@example.com").expect("jid");
    assert_eq!(restored.user_home(&probe), table.user_home(&probe));
    println!(
        "snapshot: {} bytes ({:.1} per user), to_snapshot {:.1} ms, from_snapshot {:.1} ms",
        bytes.len(),
        bytes.len() as f64 / USERS as f64,
        written.as_secs_f64() * 1e3,
        read.as_secs_f64() * 1e3
    );
}

criterion_group!(benches, routing);
criterion_main!(benches);
