//! Committed writes per second on one node with redb: many concurrent `Grt::write` calls, so
//! openraft batches them into one log append (one redb transaction, one fsync) per round.
//!
//! `cargo bench -p tern-raft-store --bench writes`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tern_raft_store::{Command, DcRole, Grt, GrtOptions, InProcess, Member};

/// Writes per measured batch.
const BATCH: u64 = 4_000;

fn writes(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("tern-grt-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let grt = runtime.block_on(async {
        let hub = InProcess::new();
        let options = GrtOptions {
            write_deadline: Duration::from_secs(30),
            ..GrtOptions::local()
        };
        let grt = Grt::open(1, dir.join("grt.redb"), hub.endpoint(1), options)
            .await
            .expect("open");
        hub.register(&grt);
        grt.initialize(BTreeMap::from([(1, Member::new("eu", "bench"))]))
            .await
            .expect("initialize");
        grt.wait_for_leader(Duration::from_secs(10))
            .await
            .expect("leader");
        for command in [
            Command::UpsertDc {
                name: "eu".into(),
                bridge_endpoints: vec![],
                role: DcRole::Voter,
            },
            Command::AddDomain {
                domain: "example.com".into(),
                host_type: "default".into(),
                dynamic: false,
                serving: vec![],
            },
        ] {
            grt.write(command).await.expect("setup");
        }
        grt
    });
    let next = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group("grt_writes");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    for concurrency in [1u64, 64, 512] {
        group.bench_function(format!("create_user/concurrency_{concurrency}"), |b| {
            b.iter_custom(|iters| {
                let grt = grt.clone();
                let next = next.clone();
                runtime.block_on(async move {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let mut tasks = Vec::new();
                        for _ in 0..concurrency {
                            let grt = grt.clone();
                            let next = next.clone();
                            tasks.push(tokio::spawn(async move {
                                for _ in 0..BATCH / concurrency {
                                    let i = next.fetch_add(1, Ordering::Relaxed);
                                    grt.write(Command::CreateUser {
                                        jid: format!("user{i}@example.com"),
                                        dc: "eu".into(),
                                    })
                                    .await
                                    .expect("write");
                                }
                            }));
                        }
                        for task in tasks {
                            task.await.expect("writer");
                        }
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();
    runtime.block_on(grt.shutdown());
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, writes);
criterion_main!(benches);
