//! The global distribution mesh: authenticated QUIC bridges between datacenters.
//!
//! # Layout
//! - [`pki`]: the mesh's own certificate authority and per-DC certificates (`tern mesh ca init`,
//!   `tern mesh cert issue --dc ID`), and the mutual-TLS configurations of the bridges: a peer
//!   is accepted only with a certificate from the mesh CA that names a DC of the topology.
//! - [`frame`]: the versioned binary frames on a bridge (envelopes, acks, the handshake), with
//!   a decoder that never panics and never allocates without bound.
//! - [`link`]: the bridges: [`Mesh`] dials every peer and accepts theirs; envelopes in order per
//!   (from, to) pair on hashed streams, cumulative acks, re-sending after reconnects,
//!   de-duplication, bounded queues and prompt refusals when a peer is down.
//! - [`queue`]: the bridges' durable state in redb: queued envelopes and delivered positions,
//!   kept across restarts.

#![warn(missing_docs)]

pub mod frame;
pub mod link;
pub mod pki;
pub mod queue;

pub use link::{
    CallFuture, CallHandler, Inbound, LinkConfig, LinkStatus, Mesh, PeerAddr, SendError,
};
