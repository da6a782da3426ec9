//! The one openraft type configuration of the crate, and the public, openraft-free types that
//! travel through it: [`Member`] (a node of the group) and [`Response`] (what applying an entry
//! answered).
//!
//! Nothing here that names openraft is public: the rest of Tern sees `Member`, `Response`,
//! [`NodeId`] and the handle in [`crate::grt`], never a generic parameter of openraft.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::routing::{Applied, ApplyError};

/// A Raft node's id: unique across the whole deployment, never zero (the topology assigns it).
pub type NodeId = u64;

/// A node of the Raft group as the group remembers it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The datacenter it belongs to (topology name).
    pub dc: String,
    /// Where it answers Raft RPCs (the transport decides what the string means: `host:port` for
    /// TCP, anything for the in-process transport).
    pub addr: String,
}

impl Member {
    /// A member of `dc` reachable at `addr`.
    pub fn new(dc: impl Into<String>, addr: impl Into<String>) -> Self {
        Self {
            dc: dc.into(),
            addr: addr.into(),
        }
    }
}

/// What applying one command answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The command was applied (perhaps changing nothing: commands are idempotent).
    Applied(Applied),
    /// The command was refused; every node refuses it alike.
    Refused(ApplyError),
}

/// The payload of one log entry: the commands of concurrent writers, gathered so that they
/// share one append and one fsync. Applied in order, all at the entry's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Batch(pub(crate) Vec<Command>);

/// What applying one log entry answered: one response per command of its batch (none for a
/// leader's blank entry or a membership change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Responses(pub(crate) Vec<Response>);

openraft::declare_raft_types!(
    /// The routing table's Raft types: commands in, responses out, members by [`NodeId`].
    pub(crate) TypeConfig:
        D = Batch,
        R = Responses,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = Cursor<Vec<u8>>,
);

pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type Vote = openraft::Vote<NodeId>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub(crate) type Snapshot = openraft::Snapshot<TypeConfig>;
pub(crate) type StorageError = openraft::StorageError<NodeId>;
pub(crate) type Raft = openraft::Raft<TypeConfig>;
