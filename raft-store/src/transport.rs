//! How Raft RPCs travel: the [`Transport`] trait, the wire frames, openraft's network adapter,
//! and an in-process transport with fault injection for tests.
//!
//! The trait moves opaque frames: the crate encodes every RPC (openraft's append-entries, vote
//! and install-snapshot, and Tern's own forwarded writes, read-index and membership requests)
//! into one request frame and expects one reply frame. A transport only carries bytes to the
//! node at `addr` and hands them to [`Grt::handle`](crate::Grt::handle) there, within the
//! deadline it is given. So the same trait runs over a channel (tests), TCP on loopback
//! ([`crate::tcp`]) and, later, the mesh's QUIC bridges.
//!
//! Frames are one format byte ([`FRAME_FORMAT`]) then postcard.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::types::{Member, NodeId, Response, TypeConfig};

/// The format byte in front of every frame.
pub const FRAME_FORMAT: u8 = 1;

/// Why a frame did not come back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The target cannot be reached (refused, reset, partitioned).
    #[error("node {target} at {addr} is unreachable: {reason}")]
    Unreachable {
        /// Target node.
        target: NodeId,
        /// Its address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// No reply before the deadline.
    #[error("node {target} did not answer within {deadline:?}")]
    Timeout {
        /// Target node.
        target: NodeId,
        /// The deadline given.
        deadline: Duration,
    },
    /// The reply was not a frame this version understands.
    #[error("bad frame from node {target}: {reason}")]
    BadFrame {
        /// Target node.
        target: NodeId,
        /// What was wrong.
        reason: String,
    },
}

/// Carries one request frame to a node and brings its reply back, within a deadline.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends `frame` to node `target` at `addr`; returns the reply frame, or an error when the
    /// node cannot be reached or does not answer within `deadline`.
    async fn call(
        &self,
        target: NodeId,
        addr: &str,
        frame: Vec<u8>,
        deadline: Duration,
    ) -> Result<Vec<u8>, TransportError>;
}

/// A membership change, forwarded to the leader like a write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MembershipChange {
    AddLearner { id: NodeId, member: Member },
    AddVoters { ids: Vec<NodeId> },
    RemoveVoters { ids: Vec<NodeId> },
    RemoveNodes { ids: Vec<NodeId> },
}

/// Every request that travels between nodes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Rpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Client writes forwarded to the node believed to be the leader, to be committed as one
    /// entry; `deadline_ms` is what is left of the callers' deadline.
    Write {
        commands: Vec<Command>,
        deadline_ms: u64,
    },
    /// "Confirm you are leader and tell me the index a linearizable read must wait for."
    ReadIndex {
        deadline_ms: u64,
    },
    Membership {
        change: MembershipChange,
        deadline_ms: u64,
    },
}

/// Why a forwarded request was not done by the node that received it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ForwardError {
    /// It is not the leader; maybe it knows who is.
    NotLeader { leader: Option<NodeId> },
    /// It is the leader but could not commit before the deadline.
    QuorumUnavailable,
    /// The leader refused a membership change (another in progress, unknown node, …).
    Refused(String),
    /// Anything else, in words.
    Failed(String),
}

/// The reply to each [`Rpc`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// The committed log index and what the state machine answered, per command.
    Write(Result<(u64, Vec<Response>), ForwardError>),
    /// The index to wait for.
    ReadIndex(Result<u64, ForwardError>),
    /// The log index of the committed membership change.
    Membership(Result<u64, ForwardError>),
    /// The request frame itself could not be read.
    BadRequest(String),
}

pub(crate) fn encode_frame<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FRAME_FORMAT];
    // Plain data into a Vec: cannot fail.
    out.extend(postcard::to_allocvec(value).expect("frames always encode"));
    out
}

pub(crate) fn decode_frame<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&FRAME_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((other, _)) => Err(format!("unknown frame format {other}")),
        None => Err("empty frame".to_owned()),
    }
}

/// openraft's view of the transport: one client per target node.
pub(crate) struct NetworkFactory {
    pub(crate) transport: Arc<dyn Transport>,
}

pub(crate) struct Network {
    transport: Arc<dyn Transport>,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Network {
        Network {
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Wire(String);

impl Network {
    async fn round_trip<E: std::error::Error>(
        &self,
        rpc: &Rpc,
        option: &RPCOption,
    ) -> Result<Reply, RPCError<NodeId, Member, E>> {
        let frame = encode_frame(rpc);
        let reply = self
            .transport
            .call(self.target, &self.addr, frame, option.hard_ttl())
            .await
            .map_err(|e| match e {
                TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Timeout { .. } | TransportError::BadFrame { .. } => {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        decode_frame(&reply).map_err(|e| RPCError::Network(NetworkError::new(&Wire(e))))
    }

    fn unexpected<E: std::error::Error>(reply: &Reply) -> RPCError<NodeId, Member, E> {
        RPCError::Network(NetworkError::new(&Wire(format!(
            "unexpected reply {reply:?}"
        ))))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.round_trip(&Rpc::AppendEntries(rpc), &option).await? {
            Reply::AppendEntries(Ok(response)) => Ok(response),
            Reply::AppendEntries(Err(e)) => Err(RemoteError::new(self.target, e).into()),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.round_trip(&Rpc::InstallSnapshot(rpc), &option).await? {
            Reply::InstallSnapshot(Ok(response)) => Ok(response),
            Reply::InstallSnapshot(Err(e)) => Err(RemoteError::new(self.target, e).into()),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.round_trip(&Rpc::Vote(rpc), &option).await? {
            Reply::Vote(Ok(response)) => Ok(response),
            Reply::Vote(Err(e)) => Err(RemoteError::new(self.target, e).into()),
            other => Err(Self::unexpected(&other)),
        }
    }
}

/// A transport inside one process: frames go straight to the target's handle. Links can be cut
/// to simulate partitions and crashed nodes (a cut link answers "unreachable" at once).
#[derive(Default, Clone)]
pub struct InProcess {
    inner: Arc<Mutex<Hub>>,
}

#[derive(Default)]
struct Hub {
    nodes: HashMap<NodeId, Weak<crate::grt::Inner>>,
    /// Unordered pairs that cannot talk.
    cut: HashSet<(NodeId, NodeId)>,
    /// Nodes that cannot talk to anyone.
    isolated: HashSet<NodeId>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess").finish_non_exhaustive()
    }
}

impl InProcess {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `grt` reachable as its node id (replacing an earlier registration: a restart).
    pub fn register(&self, grt: &crate::Grt) {
        self.hub()
            .nodes
            .insert(grt.id(), Arc::downgrade(&grt.inner));
    }

    /// Cuts or heals the link between `a` and `b` (both directions).
    pub fn set_link(&self, a: NodeId, b: NodeId, up: bool) {
        let key = (a.min(b), a.max(b));
        let mut hub = self.hub();
        if up {
            hub.cut.remove(&key);
        } else {
            hub.cut.insert(key);
        }
    }

    /// Cuts (`false`) or heals every link of `node`.
    pub fn set_node(&self, node: NodeId, up: bool) {
        let mut hub = self.hub();
        if up {
            hub.isolated.remove(&node);
        } else {
            hub.isolated.insert(node);
        }
    }

    /// Splits the nodes into groups that can talk only inside themselves; `heal` undoes it.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        for (i, a) in groups.iter().enumerate() {
            for b in &groups[i + 1..] {
                for &x in *a {
                    for &y in *b {
                        self.set_link(x, y, false);
                    }
                }
            }
        }
    }

    /// Heals every cut link and isolated node.
    pub fn heal(&self) {
        let mut hub = self.hub();
        hub.cut.clear();
        hub.isolated.clear();
    }

    /// A transport for node `from`: it sees the hub's faults from that node's side.
    pub fn endpoint(&self, from: NodeId) -> Arc<dyn Transport> {
        Arc::new(Endpoint {
            hub: self.clone(),
            from,
        })
    }
}

struct Endpoint {
    hub: InProcess,
    from: NodeId,
}

#[async_trait::async_trait]
impl Transport for Endpoint {
    async fn call(
        &self,
        target: NodeId,
        addr: &str,
        frame: Vec<u8>,
        deadline: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let unreachable = |reason: &str| TransportError::Unreachable {
            target,
            addr: addr.to_owned(),
            reason: reason.to_owned(),
        };
        let node = {
            let hub = self.hub.hub();
            let key = (self.from.min(target), self.from.max(target));
            if hub.cut.contains(&key)
                || hub.isolated.contains(&self.from)
                || hub.isolated.contains(&target)
            {
                return Err(unreachable("link cut"));
            }
            hub.nodes.get(&target).and_then(Weak::upgrade)
        };
        let Some(node) = node else {
            return Err(unreachable("no such node running"));
        };
        let grt = crate::Grt { inner: node };
        let reply = tokio::time::timeout(deadline, grt.handle(&frame))
            .await
            .map_err(|_| TransportError::Timeout { target, deadline })?;
        // A link cut while the call was in flight loses the reply, as a real network would.
        let hub = self.hub.hub();
        let key = (self.from.min(target), self.from.max(target));
        if hub.cut.contains(&key)
            || hub.isolated.contains(&self.from)
            || hub.isolated.contains(&target)
        {
            return Err(unreachable("link cut"));
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_garbage() {
        let rpc = Rpc::Write {
            commands: vec![Command::DeleteUser { jid: "a@x".into() }],
            deadline_ms: 5,
        };
        let frame = encode_frame(&rpc);
        assert_eq!(frame[0], FRAME_FORMAT);
        let back: Rpc = decode_frame(&frame).expect("decodes");
        assert!(matches!(back, Rpc::Write { deadline_ms: 5, .. }));
        assert!(decode_frame::<Rpc>(&[]).is_err());
        assert!(decode_frame::<Rpc>(&[7, 1, 2]).is_err());
        assert!(decode_frame::<Rpc>(&[FRAME_FORMAT, 250, 250, 250]).is_err());
        for len in 0..frame.len() {
            // Truncated frames never panic.
            let _ = decode_frame::<Rpc>(&frame[..len]);
        }
    }
}
