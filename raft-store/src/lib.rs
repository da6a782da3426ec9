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
//!
//! The openraft wiring (log, vote and snapshot storage on redb, the type config, membership and
//! the network trait) builds on these two modules.

#![warn(missing_docs)]

pub mod command;
pub mod routing;

pub use command::{Command, DcRole, DecodeError};
pub use routing::{Applied, ApplyError, DcId, DomainEntry, DomainStatus, Lookup, RoutingTable};
