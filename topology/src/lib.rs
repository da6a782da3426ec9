//! The deployment's shape, read from `topology.toml`: its datacenters (DCs), each DC's nodes,
//! the QUIC bridge endpoints, the Raft voters and learners of the global routing table, and
//! which DCs serve which XMPP domains. Every node of every DC reads the same file. Every
//! problem in the file is reported at once, each naming the file, the key path and the rule.
//!
//! The only Tern crate this one depends on is the leaf `tern-toml-check`.
//!
//! # Layout
//!
//! - `topology` — [`Topology`] (the validated whole, its lookups and
//!   [`Topology::single`]), [`Dc`], [`Node`], [`Domain`], [`DcRole`].
//! - `validate` — a parsed file into a [`Topology`]: per-entry reading, then the rules that
//!   span entries (uniqueness, node counts, voter nodes, an odd number of voting DCs, domain
//!   DCs). It reads with `tern-toml-check`: TOML parsing (syntax errors with line and column),
//!   typed getters that record problems instead of stopping, and the unknown-key report.
//! - `id` — [`NodeId`], [`DcId`], [`NodeName`]: types that only hold valid values.
//! - `endpoint` — [`BridgeEndpoint`] (`host:port`) and Raft addresses (`IP:port`).
//! - `error` — [`TopologyError`] (`file: key: rule`), [`TopologyErrors`] (all of them; both
//!   the `tern-toml-check` error types under this crate's names), [`NameError`],
//!   [`AddressError`].
//!
//! The file format, every key and every rule are described for operators in
//! `docs/topology.md`; this crate's tests check that every example there is valid.
//!
//! # Example
//!
//! ```
//! use tern_topology::{DcRole, NodeId, Topology};
//!
//! let text = r#"
//! [[dc]]
//! name = "eu-west"
//!   [[dc.node]]
//!   id = 1
//!   name = "eu-west-1"
//!   raft_addr = "10.0.0.1:7500"
//!   [[dc.node]]
//!   id = 2
//!   name = "eu-west-2"
//!   raft_addr = "10.0.0.2:7500"
//! "#;
//! let topology = Topology::from_toml_str(text, "topology.toml")?;
//! let eu = topology.dc("eu-west").expect("eu-west is listed");
//! assert_eq!(eu.role, DcRole::Voter);
//! assert_eq!(topology.voters(), [NodeId::new(1).expect("nonzero")]);
//! assert_eq!(topology.learners(), [NodeId::new(2).expect("nonzero")]);
//!
//! let errors = Topology::from_toml_str("[[dc]]\nname = \"EU\"\n", "topology.toml").unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "topology.toml: dc[0].name: invalid DC name \"EU\": must contain only lowercase \
//!      letters a-z, digits 0-9 and '-', found 'E'\n\
//!      topology.toml: dc[0].node: a DC needs at least one node: add a [[dc.node]] entry"
//! );
//! # Ok::<(), tern_topology::TopologyErrors>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod endpoint;
mod error;
mod id;
mod topology;
mod validate;

pub use endpoint::{BridgeEndpoint, BridgeHost};
pub use error::{
    AddressError, NameError, Result, TopologyError, TopologyErrors, TopologyErrors as Error,
};
pub use id::{DcId, MAX_NAME_CHARS, NodeId, NodeName};
pub use topology::{Dc, DcRole, Domain, Node, Topology};

#[cfg(test)]
mod tests;
