//! In-process clusters of the routing table: elections, forwarding, partitions, snapshots,
//! restarts and membership changes, with 1, 3 and 5 voters on the in-process transport (cut
//! links simulate crashes and partitions) and one run over TCP on loopback.
//!
//! Time is real (openraft's timers and redb's fsyncs run for real) but short: LAN settings with
//! 50 ms heartbeats. Every wait is bounded and every assertion checks what the nodes applied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jid::BareJid;
use tern_raft_store::tcp::{TcpTransport, serve};
use tern_raft_store::{
    Command, DcRole, Grt, GrtError, GrtOptions, InProcess, Member, NodeId, Transport,
};

const WAIT: Duration = Duration::from_secs(10);

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "tern-grt-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("temporary directory");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn member(id: NodeId) -> Member {
    Member::new(format!("dc{id}"), format!("node-{id}"))
}

fn options() -> GrtOptions {
    GrtOptions {
        write_deadline: Duration::from_secs(3),
        ..GrtOptions::local()
    }
}

/// Nodes 1..=n on one in-process hub, each with its own store directory.
struct Cluster {
    hub: InProcess,
    dir: TempDir,
    nodes: BTreeMap<NodeId, Grt>,
    options: GrtOptions,
}

impl Cluster {
    async fn start(name: &str, voters: u64, options: GrtOptions) -> Self {
        let mut cluster = Self {
            hub: InProcess::new(),
            dir: TempDir::new(name),
            nodes: BTreeMap::new(),
            options,
        };
        let members: BTreeMap<NodeId, Member> = (1..=voters).map(|id| (id, member(id))).collect();
        for id in 1..=voters {
            let grt = cluster.open(id).await;
            grt.initialize(members.clone()).await.expect("initialize");
        }
        cluster.leader().await;
        cluster
    }

    fn store(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node{id}/grt.redb"))
    }

    async fn open(&mut self, id: NodeId) -> Grt {
        let grt = Grt::open(
            id,
            self.store(id),
            self.hub.endpoint(id),
            self.options.clone(),
        )
        .await
        .expect("open");
        self.hub.register(&grt);
        self.nodes.insert(id, grt.clone());
        grt
    }

    fn node(&self, id: NodeId) -> &Grt {
        &self.nodes[&id]
    }

    /// Waits until the running, connected nodes agree on one leader.
    async fn leader(&self) -> NodeId {
        self.leader_among(&self.nodes.keys().copied().collect::<Vec<_>>())
            .await
    }

    async fn leader_among(&self, ids: &[NodeId]) -> NodeId {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let views: Vec<_> = ids.iter().map(|id| self.node(*id).status()).collect();
            if let Some(leader) = views[0].leader {
                let agreed = views.iter().all(|s| s.leader == Some(leader));
                let leads = ids.contains(&leader) && self.node(leader).status().role == "leader";
                if agreed && leads {
                    return leader;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader among {ids:?}: {views:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Crashes a node: cut from everyone and stopped; its store stays.
    async fn crash(&mut self, id: NodeId) {
        self.hub.set_node(id, false);
        let grt = self.nodes.remove(&id).expect("running");
        grt.shutdown().await;
    }

    async fn restart(&mut self, id: NodeId) -> Grt {
        let grt = self.open(id).await;
        self.hub.set_node(id, true);
        grt
    }

    async fn stop_all(&mut self) {
        for (_, grt) in std::mem::take(&mut self.nodes) {
            grt.shutdown().await;
        }
    }
}

async fn setup_dc_and_domain(grt: &Grt) {
    grt.write(Command::UpsertDc {
        name: "eu".into(),
        bridge_endpoints: vec![],
        role: DcRole::Voter,
    })
    .await
    .expect("dc");
    grt.write(Command::UpsertDc {
        name: "us".into(),
        bridge_endpoints: vec![],
        role: DcRole::Voter,
    })
    .await
    .expect("dc");
    grt.write(Command::AddDomain {
        domain: "example.com".into(),
        host_type: "default".into(),
        dynamic: false,
        serving: vec![],
    })
    .await
    .expect("domain");
}

fn user(i: u64) -> String {
    format!("user{i}@example.com")
}

async fn create_users(grt: &Grt, range: std::ops::Range<u64>, dc: &str) -> u64 {
    let mut last = 0;
    for i in range {
        let applied = grt
            .write(Command::CreateUser {
                jid: user(i),
                dc: dc.into(),
            })
            .await
            .expect("create user");
        assert!(applied.changed);
        last = applied.index;
    }
    last
}

fn home_of(grt: &Grt, i: u64) -> Option<String> {
    let reader = grt.reader();
    let lookup = reader.user_home(&BareJid::new(&user(i)).expect("jid"));
    lookup.home.and_then(|dc| reader.dc_name(dc))
}

async fn all_applied(cluster: &Cluster, index: u64) {
    for grt in cluster.nodes.values() {
        grt.wait_applied(index, WAIT)
            .await
            .unwrap_or_else(|e| panic!("node {} did not apply {index}: {e}", grt.id()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_voter_commits_and_restarts_from_disk() {
    let mut cluster = Cluster::start("one", 1, options()).await;
    let grt = cluster.node(1).clone();
    setup_dc_and_domain(&grt).await;
    let index = create_users(&grt, 0..20, "eu").await;
    let lookup = grt
        .reader()
        .user_home(&BareJid::new(&user(19)).expect("jid"));
    assert_eq!(
        lookup.version, index,
        "an entry's version is the index that wrote it"
    );
    assert!(lookup.as_of >= index);

    // The same creation again changes nothing; a creation elsewhere is refused, deterministically.
    let again = grt
        .write(Command::CreateUser {
            jid: user(3),
            dc: "eu".into(),
        })
        .await
        .expect("idempotent");
    assert!(!again.changed);
    let refused = grt
        .write(Command::CreateUser {
            jid: user(3),
            dc: "us".into(),
        })
        .await;
    assert!(
        matches!(refused, Err(GrtError::Refused { .. })),
        "{refused:?}"
    );

    cluster.stop_all().await;
    drop(grt);
    let grt = cluster.restart(1).await;
    cluster.leader().await;
    grt.wait_applied(index, WAIT).await.expect("replayed");
    for i in 0..20 {
        assert_eq!(
            home_of(&grt, i).as_deref(),
            Some("eu"),
            "user {i} after restart"
        );
    }
    let next = create_users(&grt, 20..21, "us").await;
    assert!(next > index);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_forward_writes_and_replicate() {
    let mut cluster = Cluster::start("three", 3, options()).await;
    let leader = cluster.leader().await;
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("follower");
    let via = cluster.node(follower).clone();
    setup_dc_and_domain(&via).await;
    let index = create_users(&via, 0..10, "us").await;
    all_applied(&cluster, index).await;
    for grt in cluster.nodes.values() {
        for i in 0..10 {
            assert_eq!(home_of(grt, i).as_deref(), Some("us"), "node {}", grt.id());
        }
    }
    // A linearizable read on a follower reflects the last write.
    let (reader, at) = via.linearizable().await.expect("read index");
    assert!(at >= index);
    assert!(reader.applied_index() >= index);
    cluster.stop_all().await;
}

async fn leader_crash_and_reelection(voters: u64) {
    let mut cluster = Cluster::start(&format!("crash{voters}"), voters, options()).await;
    let old = cluster.leader().await;
    setup_dc_and_domain(cluster.node(old)).await;
    let first = create_users(cluster.node(old), 0..5, "eu").await;
    all_applied(&cluster, first).await;

    cluster.crash(old).await;
    let new = cluster.leader().await;
    assert_ne!(new, old);
    let survivor = cluster.nodes.keys().copied().max().expect("a survivor");
    let second = create_users(cluster.node(survivor), 5..10, "us").await;
    assert!(second > first);

    // The old leader comes back as a follower and catches up.
    cluster.restart(old).await;
    all_applied(&cluster, second).await;
    for i in 5..10 {
        assert_eq!(home_of(cluster.node(old), i).as_deref(), Some("us"));
    }
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_survive_a_leader_crash() {
    leader_crash_and_reelection(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_voters_survive_a_leader_crash() {
    leader_crash_and_reelection(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partition_cannot_commit_and_converges_after_heal() {
    let mut cluster = Cluster::start(
        "partition",
        5,
        GrtOptions {
            write_deadline: Duration::from_millis(1_500),
            ..GrtOptions::local()
        },
    )
    .await;
    let leader = cluster.leader().await;
    setup_dc_and_domain(cluster.node(leader)).await;
    let before = create_users(cluster.node(leader), 0..3, "eu").await;
    all_applied(&cluster, before).await;

    // The old leader and one follower on one side, three nodes on the other.
    let other = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("other");
    let minority = [leader, other];
    let majority: Vec<NodeId> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| !minority.contains(id))
        .collect();
    cluster.hub.partition(&[&minority, &majority]);

    let started = std::time::Instant::now();
    let refused = cluster
        .node(other)
        .write(Command::CreateUser {
            jid: user(100),
            dc: "eu".into(),
        })
        .await;
    assert!(
        matches!(refused, Err(GrtError::QuorumUnavailable(_))),
        "minority write: {refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed within the deadline"
    );
    // Reads on the minority keep answering, with the index they reflect.
    let lookup = cluster
        .node(other)
        .reader()
        .user_home(&BareJid::new(&user(1)).expect("jid"));
    assert!(lookup.home.is_some());
    assert!(lookup.as_of >= before);
    assert!(matches!(
        cluster.node(other).linearizable().await,
        Err(GrtError::QuorumUnavailable(_))
    ));

    // The majority elects its own leader and commits.
    let new = cluster.leader_among(&majority).await;
    assert!(majority.contains(&new));
    let after = create_users(cluster.node(new), 3..6, "us").await;
    assert_eq!(
        home_of(cluster.node(other), 4),
        None,
        "not yet seen by the minority"
    );

    cluster.hub.heal();
    all_applied(&cluster, after).await;
    for id in minority {
        for i in 3..6 {
            assert_eq!(home_of(cluster.node(id), i).as_deref(), Some("us"));
        }
    }
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_nodes_catch_up_by_snapshot() {
    let options = GrtOptions {
        snapshot_every: 40,
        keep_after_snapshot: 5,
        ..options()
    };
    let mut cluster = Cluster::start("snapshot", 3, options).await;
    let leader = cluster.leader().await;
    setup_dc_and_domain(cluster.node(leader)).await;
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("follower");
    cluster.crash(follower).await;

    let last = create_users(cluster.node(leader), 0..150, "eu").await;
    let status = cluster.node(leader).status();
    assert!(
        status.snapshot_index.is_some_and(|s| s > 100),
        "the leader compacted its log: {status:?}"
    );

    // A follower that was down during all of it, and a learner added afterwards.
    cluster.restart(follower).await;
    let learner = 4;
    cluster.open(learner).await;
    cluster
        .node(leader)
        .add_learner(learner, member(learner))
        .await
        .expect("add learner");
    all_applied(&cluster, last).await;
    for id in [follower, learner] {
        let grt = cluster.node(id);
        assert!(
            grt.status().snapshot_index.is_some(),
            "node {id} installed a snapshot: {:?}",
            grt.status()
        );
        assert_eq!(grt.reader().with(|t| t.user_count()), 150, "node {id}");
        assert_eq!(home_of(grt, 149).as_deref(), Some("eu"));
    }
    assert_eq!(cluster.node(learner).status().role, "learner");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restarts_from_disk_with_nothing_lost() {
    let options = GrtOptions {
        snapshot_every: 30,
        keep_after_snapshot: 3,
        ..options()
    };
    let mut cluster = Cluster::start("restart", 3, options).await;
    let leader = cluster.leader().await;
    setup_dc_and_domain(cluster.node(leader)).await;
    let last = create_users(cluster.node(leader), 0..70, "eu").await;
    all_applied(&cluster, last).await;
    cluster.stop_all().await;
    for id in 1..=3 {
        cluster.restart(id).await;
    }
    cluster.leader().await;
    all_applied(&cluster, last).await;
    for grt in cluster.nodes.values() {
        assert_eq!(grt.reader().with(|t| t.user_count()), 70);
        assert_eq!(home_of(grt, 0).as_deref(), Some("eu"));
    }
    let leader = cluster.leader().await;
    create_users(cluster.node(leader), 70..71, "us").await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_are_promoted_demoted_and_removed() {
    let mut cluster = Cluster::start("membership", 1, options()).await;
    for id in [2, 3] {
        cluster.open(id).await;
        cluster
            .node(1)
            .add_learner(id, member(id))
            .await
            .expect("learner");
    }
    let status = cluster.node(1).status();
    assert_eq!(status.voters.keys().copied().collect::<Vec<_>>(), [1]);
    assert_eq!(status.learners.keys().copied().collect::<Vec<_>>(), [2, 3]);

    // Promotion from a learner's side is forwarded to the leader.
    cluster.node(3).promote(&[2, 3]).await.expect("promote");
    let status = cluster.node(1).status();
    assert_eq!(status.voters.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);

    cluster.node(2).demote(&[3]).await.expect("demote");
    let status = cluster.node(1).status();
    assert_eq!(status.voters.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert!(status.learners.contains_key(&3));

    cluster.node(1).remove(&[3]).await.expect("remove");
    let status = cluster.node(1).status();
    assert!(!status.learners.contains_key(&3) && !status.voters.contains_key(&3));
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_over_tcp() {
    let dir = TempDir::new("tcp");
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
    }
    let members: BTreeMap<NodeId, Member> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let addr = l.local_addr().expect("addr").to_string();
            (i as u64 + 1, Member::new(format!("dc{}", i + 1), addr))
        })
        .collect();
    let transport: Arc<dyn Transport> = Arc::new(TcpTransport::new());
    let mut nodes = Vec::new();
    let mut servers = Vec::new();
    for (listener, id) in listeners.into_iter().zip(1u64..) {
        let grt = Grt::open(
            id,
            dir.path().join(format!("node{id}/grt.redb")),
            transport.clone(),
            options(),
        )
        .await
        .expect("open");
        servers.push(serve(listener, grt.clone()));
        grt.initialize(members.clone()).await.expect("initialize");
        nodes.push(grt);
    }
    let leader = nodes[0].wait_for_leader(WAIT).await.expect("leader");
    let via = nodes
        .iter()
        .find(|g| g.id() != leader)
        .expect("follower")
        .clone();
    setup_dc_and_domain(&via).await;
    let last = create_users(&via, 0..10, "eu").await;
    for grt in &nodes {
        grt.wait_applied(last, WAIT).await.expect("applied");
        assert_eq!(home_of(grt, 9).as_deref(), Some("eu"));
    }
    for grt in &nodes {
        grt.shutdown().await;
    }
    for server in servers {
        server.abort();
    }
}
