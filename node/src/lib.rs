//! The Tern XMPP node: listeners, sessions, router, modules, storage, admin API and metrics.
//!
//! # Layout
//! - [`server`]: builds a node from its configuration and runs its listeners until shutdown.
//! - [`node`]: the shared services of one process ([`node::Node`]).
//! - [`c2s`]: client listeners and the connection task around the sans-IO stream.
//! - [`http`]: the HTTP listeners for web clients: WebSocket (RFC 7395) and BOSH (XEP-0124).
//! - [`session`]: what a bound session does with the stanzas its client sends.
//! - [`sm`]: the session manager (bound resources, outbound queues, presence state).
//! - [`router`]: where a stanza goes (local session, later other nodes, DCs and S2S, or an error).
//! - [`modules`]: server features: roster, presence, disco, ping, version, registration.
//! - [`accounts`]: account creation, password checks and removal.
//! - [`storage`]: the storage interface and its backends, redb and PostgreSQL.
//! - [`db`]: `tern db migrate`, the PostgreSQL schema migrations applied with no node running.
//! - [`mesh`]: the node's side of the mesh: starting this datacenter's bridges, sending stanzas
//!   for users homed elsewhere over them, routing what they deliver.
//! - [`grt`]: the node's side of the global routing table: opening it (one voter alone, or the
//!   topology's group), the served domains, reactions to domain changes.
//! - [`tls`]: certificates (configured or self-signed) and channel binding.
//! - [`admin`]: the GraphQL admin API and `/metrics` on the loopback admin listener.
//! - [`ctl`]: `tern ctl`, the admin API's command-line client.
//! - [`mesh_pki`]: `tern mesh`, the global mesh's certificates (CA and per-DC certificates).
//! - [`dev_mesh`]: `tern dev mesh`, a multi-datacenter deployment on one machine (files for N
//!   datacenters on loopback, and the nodes started and stopped together).
//! - [`metrics`]: Prometheus counters.
//! - [`telemetry`]: tracing subscriber setup.

pub mod accounts;
pub mod admin;
pub mod c2s;
pub mod csi;
pub mod ctl;
pub mod db;
pub mod dev_mesh;
pub mod edge;
pub mod grt;
pub mod http;
pub mod mesh;
pub mod mesh_pki;
pub mod metrics;
pub mod modules;
pub mod node;
pub mod rehome;
pub mod resume;
pub mod router;
pub mod server;
pub mod session;
pub mod sm;
pub mod storage;
pub mod telemetry;
pub mod tls;
