//! The global routing table (GRT): who lives in which datacenter, replicated by Raft.
//!
//! Every node applies the same log of typed commands to the same state machine and answers
//! lookups from memory; each answer carries the log index it reflects, so a caller can tell a
//! stale answer from a fresh one. Logins and logouts never write the table.
//!
//! # Layout
//! - [`command`]: the typed, idempotent commands (`CreateUser`, `RehomeUser`, `AddDomain`, …)
//!   and their versioned wire encoding.
//! - [`routing`]: the state machine itself: `apply(index, command)` and local reads.
//! - `types`: the one openraft type configuration (private), [`Member`] and [`Response`].
//! - `store`: log, vote and snapshot storage on redb; the in-memory applied state.
//! - [`transport`]: the [`Transport`] trait Raft RPCs travel through, and an in-process
//!   implementation with fault injection.
//! - [`tcp`]: the same trait over TCP (length-prefixed frames, one deadline per call).
//! - [`grt`]: [`Grt`], the handle: local reads, writes forwarded to the leader, read-index,
//!   membership, status.
//!
//! No openraft type appears in the public API: openraft is an implementation detail that a
//! later version can replace behind the same handle.

#![warn(missing_docs)]

pub mod command;
pub mod grt;
pub mod routing;
mod store;
pub mod tcp;
pub mod transport;
mod types;

pub use command::{Command, DcRole, DecodeError};
pub use grt::{Change, Grt, GrtError, GrtOptions, GrtReader, GrtStatus};
pub use routing::{Applied, ApplyError, DcId, DomainEntry, DomainStatus, Lookup, RoutingTable};
pub use store::OpenError;
pub use transport::{InProcess, Transport, TransportError};
pub use types::{Member, NodeId, Response};
