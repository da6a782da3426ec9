//! [`Grt`]: the handle the rest of Tern uses: local reads, writes that find the leader, read-index
//! for linearizable reads, membership changes and status. No openraft type appears in its API.
//!
//! - **Reads** ([`GrtReader`]) take a shared lock on the applied table and return at once; every
//!   answer carries the index it reflects.
//! - **Writes** ([`Grt::write`]) go to the local Raft if it leads, otherwise to the leader over
//!   the [`Transport`]; "not the leader" is retried (following the hint, or after a short pause
//!   while an election runs) until the write deadline, after which the caller gets
//!   [`GrtError::QuorumUnavailable`].
//! - **Linearizable reads** ([`Grt::linearizable`]): the leader confirms its leadership with a
//!   quorum and names the index a read must reflect; this node waits until it has applied that
//!   far, then reads locally.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use jid::BareJid;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};

use crate::command::Command;
use crate::routing::{Applied, ApplyError, DcId, DomainEntry, Lookup, RoutingTable};
use crate::store::{self, OpenError, Shared};
use crate::transport::{
    ForwardError, MembershipChange, NetworkFactory, Reply, Rpc, Transport, decode_frame,
    encode_frame,
};
use crate::types::{Batch, Member, NodeId, Raft, Response};

/// Timing and compaction settings of one node's Raft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrtOptions {
    /// How often the leader heartbeats.
    pub heartbeat: Duration,
    /// Elections start after a random time in this range without a heartbeat.
    pub election_timeout: (Duration, Duration),
    /// Deadline of one Raft RPC.
    pub rpc_deadline: Duration,
    /// How long a write (or a linearizable read) may wait for a leader and a quorum.
    pub write_deadline: Duration,
    /// A snapshot is taken after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot (so a slightly lagging follower needs no snapshot).
    pub keep_after_snapshot: u64,
}

impl GrtOptions {
    /// Settings for a WAN deployment: elections slower than the longest round trip between
    /// datacenters.
    pub fn wan() -> Self {
        Self {
            heartbeat: Duration::from_millis(250),
            election_timeout: (Duration::from_millis(1_500), Duration::from_millis(3_000)),
            rpc_deadline: Duration::from_millis(1_000),
            write_deadline: Duration::from_secs(5),
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
        }
    }

    /// Settings for one process or a loopback network: fast elections (tests, single node).
    pub fn local() -> Self {
        Self {
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
            rpc_deadline: Duration::from_millis(500),
            write_deadline: Duration::from_secs(2),
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
        }
    }

    fn raft_config(&self) -> Result<Config, GrtError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Config {
            cluster_name: "tern-grt".to_owned(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_timeout.0),
            election_timeout_max: ms(self.election_timeout.1),
            install_snapshot_timeout: ms(self.rpc_deadline),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            ..Config::default()
        }
        .validate()
        .map_err(|e| GrtError::Config(e.to_string()))
    }
}

impl Default for GrtOptions {
    fn default() -> Self {
        Self::wan()
    }
}

/// What failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GrtError {
    /// The command was committed, and the state machine refused it (every node alike).
    #[error("refused at index {index}: {reason}")]
    Refused {
        /// The log index that consumed it.
        index: u64,
        /// Why.
        reason: ApplyError,
    },
    /// No leader with a quorum answered before the deadline: a majority of voters is down or
    /// partitioned away. A write may still commit later if the partition heals; commands are
    /// idempotent, so retrying it is safe.
    #[error(
        "no quorum of the routing table's voters answered within {0:?} (a majority is down or unreachable)"
    )]
    QuorumUnavailable(Duration),
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] Arc<OpenError>),
    /// The timing settings are inconsistent.
    #[error("routing table settings: {0}")]
    Config(String),
    /// A membership change was refused (another one in progress, unknown node, …).
    #[error("membership change refused: {0}")]
    Membership(String),
    /// Raft stopped or its storage failed.
    #[error("routing table failed: {0}")]
    Fatal(String),
}

/// A change applied to the table, as seen by subscribers (only commands that changed something).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The log index.
    pub index: u64,
    /// The command; `None` when a snapshot replaced the whole table (re-read what you need).
    pub command: Option<Command>,
}

/// A node's view of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrtStatus {
    /// This node.
    pub id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: &'static str,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// The last log index this node holds.
    pub last_log_index: u64,
    /// The last index applied to its table.
    pub applied_index: u64,
    /// The last index its current snapshot covers.
    pub snapshot_index: Option<u64>,
    /// Voting members.
    pub voters: BTreeMap<NodeId, Member>,
    /// Non-voting members.
    pub learners: BTreeMap<NodeId, Member>,
}

/// A write waiting for the batcher.
struct PendingWrite {
    command: Command,
    done: oneshot::Sender<Result<Applied, GrtError>>,
}

/// Most commands in one log entry.
const MAX_BATCH: usize = 1_024;

/// Batches in flight at once from one node (each waits for its commit).
const MAX_IN_FLIGHT: usize = 4;

/// Gathers the writes queued while earlier batches are in flight into one batch each. Ends
/// when the handle is dropped.
async fn batcher(inner: Weak<Inner>, mut writes: mpsc::UnboundedReceiver<PendingWrite>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = writes.recv().await {
        // Wait for a slot before gathering, so that the batch grows while others are flushed.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match writes.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let grt = Grt { inner };
        tokio::spawn(async move {
            grt.write_batch(batch).await;
            drop(slot);
        });
    }
}

pub(crate) struct Inner {
    id: NodeId,
    /// Writes for the batcher.
    writes: mpsc::UnboundedSender<PendingWrite>,
    /// Closed once Raft's tasks have all let go of it.
    db: Weak<redb::Database>,
    raft: Raft,
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
    options: GrtOptions,
}

/// A node's handle on the global routing table. Cheap to clone.
#[derive(Clone)]
pub struct Grt {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Grt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grt")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

/// Local, synchronous reads of the applied table. Cheap to clone.
#[derive(Clone)]
pub struct GrtReader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GrtReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrtReader").finish_non_exhaustive()
    }
}

impl GrtReader {
    /// Where a user lives, and as of which index.
    pub fn user_home(&self, jid: &BareJid) -> Lookup {
        self.shared.read().table.user_home(jid)
    }

    /// Where a MUC room lives.
    pub fn room_home(&self, jid: &BareJid) -> Lookup {
        self.shared.read().table.room_home(jid)
    }

    /// A domain's entry (a copy).
    pub fn domain(&self, domain: &str) -> Option<DomainEntry> {
        self.shared.read().table.domain(domain).cloned()
    }

    /// A datacenter's topology name.
    pub fn dc_name(&self, id: DcId) -> Option<String> {
        self.shared.read().table.dc(id).map(|dc| dc.name.clone())
    }

    /// The last log index applied (commands, blank and membership entries alike).
    pub fn applied_index(&self) -> u64 {
        self.shared.read().last_applied.map_or(0, |id| id.index)
    }

    /// Runs `read` on the table under the shared lock. Keep it short: the writer waits.
    pub fn with<R>(&self, read: impl FnOnce(&RoutingTable) -> R) -> R {
        read(&self.shared.read().table)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long to wait before asking again when no leader is known.
const ELECTION_PAUSE: Duration = Duration::from_millis(25);

impl Grt {
    /// Opens the node's store at `path` and starts its Raft. The node takes part in the group
    /// once [`initialize`](Self::initialize)d or added by a leader.
    pub async fn open(
        id: NodeId,
        path: impl Into<PathBuf>,
        transport: Arc<dyn Transport>,
        options: GrtOptions,
    ) -> Result<Self, GrtError> {
        let path = path.into();
        let config = Arc::new(options.raft_config()?);
        let (log, sm, shared, db) = tokio::task::spawn_blocking(move || store::open(&path))
            .await
            .map_err(|e| GrtError::Fatal(e.to_string()))?
            .map_err(Arc::new)?;
        let network = NetworkFactory {
            transport: transport.clone(),
        };
        let raft = Raft::new(id, config, network, log, sm)
            .await
            .map_err(|e| GrtError::Fatal(e.to_string()))?;
        let (writes, queue) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            id,
            writes,
            db,
            raft,
            shared,
            transport,
            options,
        });
        tokio::spawn(batcher(Arc::downgrade(&inner), queue));
        Ok(Self { inner })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Starts a new group with these voters, unless this node already belongs to one (then it
    /// does nothing). Every first voter may call it with the same set.
    pub async fn initialize(&self, voters: BTreeMap<NodeId, Member>) -> Result<(), GrtError> {
        let raft = &self.inner.raft;
        if raft
            .is_initialized()
            .await
            .map_err(|e| GrtError::Fatal(e.to_string()))?
        {
            return Ok(());
        }
        match raft.initialize(voters).await {
            Ok(()) => Ok(()),
            // Another voter's leader reached us first: we belong to the group already.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(GrtError::Fatal(e.to_string())),
        }
    }

    /// A reader of the local table.
    pub fn reader(&self) -> GrtReader {
        GrtReader {
            shared: self.inner.shared.clone(),
        }
    }

    /// Changes applied from now on (a lagging receiver gets `Lagged` and should re-read).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.shared.subscribe()
    }

    /// Commits `command` and returns what applying it did. Concurrent writes are gathered into
    /// one log entry (one append, one fsync) by the node's write batcher.
    pub async fn write(&self, command: Command) -> Result<Applied, GrtError> {
        let (done, result) = oneshot::channel();
        self.inner
            .writes
            .send(PendingWrite { command, done })
            .map_err(|_| GrtError::Fatal("the routing table is shutting down".to_owned()))?;
        result
            .await
            .unwrap_or_else(|_| Err(GrtError::Fatal("the write batcher stopped".to_owned())))
    }

    /// Commits a batch gathered by the batcher and answers each of its writers.
    async fn write_batch(&self, batch: Vec<PendingWrite>) {
        let deadline = Instant::now() + self.inner.options.write_deadline;
        let commands: Vec<Command> = batch.iter().map(|w| w.command.clone()).collect();
        let outcome = self
            .drive(
                deadline,
                |grt, left| {
                    let commands = commands.clone();
                    async move { grt.write_here(commands, left).await }
                },
                |left| Rpc::Write {
                    commands: commands.clone(),
                    deadline_ms: millis(left),
                },
                |reply| match reply {
                    Reply::Write(r) => Some(r),
                    _ => None,
                },
            )
            .await;
        match outcome {
            Ok((index, responses)) if responses.len() == batch.len() => {
                for (write, response) in batch.into_iter().zip(responses) {
                    let result = match response {
                        Response::Applied(applied) => Ok(applied),
                        Response::Refused(reason) => Err(GrtError::Refused { index, reason }),
                    };
                    let _ = write.done.send(result);
                }
            }
            Ok((index, responses)) => {
                let e = GrtError::Fatal(format!(
                    "index {index} answered {} commands out of {}",
                    responses.len(),
                    batch.len()
                ));
                for write in batch {
                    let _ = write.done.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for write in batch {
                    let _ = write.done.send(Err(e.clone()));
                }
            }
        }
    }

    /// Waits until the local table reflects every write committed before the call (read-index),
    /// and returns a reader and the index it reflects at least.
    pub async fn linearizable(&self) -> Result<(GrtReader, u64), GrtError> {
        let deadline = Instant::now() + self.inner.options.write_deadline;
        let index = self
            .drive(
                deadline,
                |grt, left| async move { grt.read_index_here(left).await },
                |left| Rpc::ReadIndex {
                    deadline_ms: millis(left),
                },
                |reply| match reply {
                    Reply::ReadIndex(r) => Some(r),
                    _ => None,
                },
            )
            .await?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.wait_applied(index, left).await?;
        Ok((self.reader(), index))
    }

    /// Waits until this node has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), GrtError> {
        self.inner
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "routing table read")
            .await
            .map(drop)
            .map_err(|_| GrtError::QuorumUnavailable(timeout))
    }

    /// Waits until some node is known to lead; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, GrtError> {
        let metrics = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|_| GrtError::QuorumUnavailable(timeout))?;
        metrics
            .current_leader
            .ok_or(GrtError::QuorumUnavailable(timeout))
    }

    /// Adds a non-voting member (it receives the log, by snapshot first if it is far behind).
    pub async fn add_learner(&self, id: NodeId, member: Member) -> Result<u64, GrtError> {
        self.change(MembershipChange::AddLearner { id, member })
            .await
    }

    /// Makes learners voters.
    pub async fn promote(&self, ids: &[NodeId]) -> Result<u64, GrtError> {
        self.change(MembershipChange::AddVoters { ids: ids.to_vec() })
            .await
    }

    /// Makes voters learners.
    pub async fn demote(&self, ids: &[NodeId]) -> Result<u64, GrtError> {
        self.change(MembershipChange::RemoveVoters { ids: ids.to_vec() })
            .await
    }

    /// Removes members from the group (voters are demoted first).
    pub async fn remove(&self, ids: &[NodeId]) -> Result<u64, GrtError> {
        let status = self.status();
        let voters: Vec<NodeId> = ids
            .iter()
            .copied()
            .filter(|id| status.voters.contains_key(id))
            .collect();
        if !voters.is_empty() {
            self.demote(&voters).await?;
        }
        self.change(MembershipChange::RemoveNodes { ids: ids.to_vec() })
            .await
    }

    async fn change(&self, change: MembershipChange) -> Result<u64, GrtError> {
        let deadline = Instant::now() + self.inner.options.write_deadline;
        self.drive(
            deadline,
            |grt, left| {
                let change = change.clone();
                async move { grt.membership_here(change, left).await }
            },
            |left| Rpc::Membership {
                change: change.clone(),
                deadline_ms: millis(left),
            },
            |reply| match reply {
                Reply::Membership(r) => Some(r),
                _ => None,
            },
        )
        .await
    }

    /// Builds a snapshot now (and compacts the log behind it).
    pub async fn snapshot(&self) -> Result<(), GrtError> {
        self.inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| GrtError::Fatal(e.to_string()))
    }

    /// This node's view of the group.
    pub fn status(&self) -> GrtStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut voters = BTreeMap::new();
        let mut learners = BTreeMap::new();
        for (id, member) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.insert(*id, member.clone());
            } else {
                learners.insert(*id, member.clone());
            }
        }
        GrtStatus {
            id: self.inner.id,
            role: match metrics.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            snapshot_index: metrics.snapshot.map(|id| id.index),
            voters,
            learners,
        }
    }

    /// Stops this node's Raft and waits (up to a few seconds) until its tasks have closed the
    /// store, so that the same file can be opened again at once.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "routing table did not stop cleanly");
        }
        for _ in 0..200 {
            if self.inner.db.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!("routing table store still open 2 s after shutdown");
    }

    /// A deadline another node asked for, capped by this node's own write deadline.
    fn remote_deadline(&self, millis: u64) -> Duration {
        Duration::from_millis(millis).min(self.inner.options.write_deadline)
    }

    /// Answers one request frame from another node (the server side of every [`Transport`]).
    pub async fn handle(&self, frame: &[u8]) -> Vec<u8> {
        let raft = &self.inner.raft;
        let reply = match decode_frame::<Rpc>(frame) {
            Err(e) => Reply::BadRequest(e),
            Ok(Rpc::AppendEntries(req)) => Reply::AppendEntries(raft.append_entries(req).await),
            Ok(Rpc::Vote(req)) => Reply::Vote(raft.vote(req).await),
            Ok(Rpc::InstallSnapshot(req)) => {
                Reply::InstallSnapshot(raft.install_snapshot(req).await)
            }
            Ok(Rpc::Write {
                commands,
                deadline_ms,
            }) => Reply::Write(
                self.write_here(commands, self.remote_deadline(deadline_ms))
                    .await,
            ),
            Ok(Rpc::ReadIndex { deadline_ms }) => Reply::ReadIndex(
                self.read_index_here(self.remote_deadline(deadline_ms))
                    .await,
            ),
            Ok(Rpc::Membership {
                change,
                deadline_ms,
            }) => Reply::Membership(
                self.membership_here(change, self.remote_deadline(deadline_ms))
                    .await,
            ),
        };
        encode_frame(&reply)
    }

    /// Runs a request here if this node leads, else at the leader; retries "not the leader"
    /// until `deadline`.
    async fn drive<T, Fut>(
        &self,
        deadline: Instant,
        here: impl Fn(Self, Duration) -> Fut,
        remote: impl Fn(Duration) -> Rpc,
        unpack: impl Fn(Reply) -> Option<Result<T, ForwardError>>,
    ) -> Result<T, GrtError>
    where
        Fut: Future<Output = Result<T, ForwardError>>,
    {
        let total = self.inner.options.write_deadline;
        let mut target: Option<NodeId> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(GrtError::QuorumUnavailable(total));
            }
            let leader = target.or_else(|| self.inner.raft.metrics().borrow().current_leader);
            target = None;
            let outcome = match leader {
                None => Err(ForwardError::NotLeader { leader: None }),
                Some(id) if id == self.inner.id => here(self.clone(), left).await,
                Some(id) => self.forward(id, remote(left), left, &unpack).await,
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err(ForwardError::NotLeader { leader: Some(next) }) if Some(next) != leader => {
                    target = Some(next);
                }
                Err(ForwardError::NotLeader { .. }) => {
                    tokio::time::sleep(ELECTION_PAUSE.min(left)).await;
                }
                Err(ForwardError::QuorumUnavailable) => {
                    return Err(GrtError::QuorumUnavailable(total));
                }
                Err(ForwardError::Refused(reason)) => return Err(GrtError::Membership(reason)),
                Err(ForwardError::Failed(reason)) => return Err(GrtError::Fatal(reason)),
            }
        }
    }

    async fn forward<T>(
        &self,
        leader: NodeId,
        rpc: Rpc,
        left: Duration,
        unpack: &impl Fn(Reply) -> Option<Result<T, ForwardError>>,
    ) -> Result<T, ForwardError> {
        let addr = {
            let metrics = self.inner.raft.metrics().borrow().clone();
            metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|m| m.addr.clone())
        };
        let Some(addr) = addr else {
            return Err(ForwardError::NotLeader { leader: None });
        };
        match self
            .inner
            .transport
            .call(leader, &addr, encode_frame(&rpc), left)
            .await
        {
            Ok(bytes) => match decode_frame::<Reply>(&bytes).map(unpack) {
                Ok(Some(result)) => result,
                Ok(None) | Err(_) => Err(ForwardError::Failed(format!(
                    "node {leader} answered with an unexpected frame"
                ))),
            },
            Err(e) => {
                tracing::debug!(error = %e, "forward to the routing table's leader failed");
                Err(ForwardError::NotLeader { leader: None })
            }
        }
    }

    async fn write_here(
        &self,
        commands: Vec<Command>,
        left: Duration,
    ) -> Result<(u64, Vec<Response>), ForwardError> {
        match tokio::time::timeout(left, self.inner.raft.client_write(Batch(commands))).await {
            Err(_) => Err(ForwardError::QuorumUnavailable),
            Ok(Ok(response)) => Ok((response.log_id.index, response.data.0)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ForwardError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(e)) => Err(ForwardError::Failed(e.to_string())),
        }
    }

    async fn read_index_here(&self, left: Duration) -> Result<u64, ForwardError> {
        match tokio::time::timeout(left, self.inner.raft.get_read_log_id()).await {
            Err(_) => Err(ForwardError::QuorumUnavailable),
            Ok(Ok((read, _applied))) => Ok(read.map_or(0, |id| id.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ForwardError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                Err(ForwardError::QuorumUnavailable)
            }
            Ok(Err(e)) => Err(ForwardError::Failed(e.to_string())),
        }
    }

    async fn membership_here(
        &self,
        change: MembershipChange,
        left: Duration,
    ) -> Result<u64, ForwardError> {
        let raft = &self.inner.raft;
        let work = async {
            match change {
                MembershipChange::AddLearner { id, member } => {
                    raft.add_learner(id, member, true).await
                }
                MembershipChange::AddVoters { ids } => {
                    raft.change_membership(
                        ChangeMembers::AddVoterIds(ids.into_iter().collect()),
                        true,
                    )
                    .await
                }
                MembershipChange::RemoveVoters { ids } => {
                    raft.change_membership(
                        ChangeMembers::RemoveVoters(ids.into_iter().collect()),
                        true,
                    )
                    .await
                }
                MembershipChange::RemoveNodes { ids } => {
                    raft.change_membership(
                        ChangeMembers::RemoveNodes(ids.into_iter().collect()),
                        false,
                    )
                    .await
                }
            }
        };
        match tokio::time::timeout(left, work).await {
            Err(_) => Err(ForwardError::QuorumUnavailable),
            Ok(Ok(response)) => Ok(response.log_id.index),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ForwardError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(ForwardError::Refused(e.to_string()))
            }
            Ok(Err(e)) => Err(ForwardError::Failed(e.to_string())),
        }
    }
}
