//! A userspace WAN emulator for testing Tern's QUIC bridges where the kernel has no `netem`.
//!
//! A [`Relay`] is a UDP relay placed between two endpoints: clients send to the relay, the
//! relay forwards to the upstream address from one socket per client, and forwards the
//! replies back. Both directions go through a [`Shape`]: one-way delay, jitter (with or
//! without reordering), independent random loss and an optional rate limit. The link can be
//! cut and healed at any time, as if a cable were pulled and plugged back. It is meant for
//! QUIC (client mappings are stable while in use, so connection IDs and peer addresses do
//! not change under a live connection) but relays any UDP traffic.
//!
//! The `tern-wanem` binary runs relays from the command line, steered by a line-based TCP
//! control protocol ([`ControlServer`]). Operators' guide: `docs/wanem.md`.
//!
//! # Layout
//!
//! - `relay` — [`Relay`] (the sockets, client mappings and their expiry), [`RelayHandle`]
//!   (steer a running relay from elsewhere), [`RelayConfig`] (queue limit, idle timeout,
//!   mapping limit).
//! - `scheduler` — one task per direction: a min-heap of departure times and one timer, no
//!   task per datagram; decides loss, jitter and rate-limit timing with a seedable RNG.
//! - `shape` — [`Shape`], what the link does to each datagram.
//! - `stats` — [`Stats`], [`DirectionStats`]: forwarded and dropped datagrams and bytes.
//! - `control` — the control protocol: [`ControlServer`], [`parse_request`], [`execute`].
//! - `units` — reading `20ms`, `10MB`, `1%`: [`parse_duration`], [`parse_rate`],
//!   [`parse_probability`].
//! - `error` — [`Error`] and [`Result`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tern_wanem::{Relay, Shape};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tern_wanem::Result<()> {
//! let upstream = "127.0.0.1:7400".parse().unwrap();
//! let shape = Shape::ideal().with_delay(Duration::from_millis(20)); // 40 ms RTT
//! let relay = Relay::start("127.0.0.1:0".parse().unwrap(), upstream, shape).await?;
//! // Point the QUIC client at `relay.local_addr()` instead of the server.
//! relay.cut();
//! relay.heal();
//! assert_eq!(relay.stats().to_upstream.forwarded_datagrams, 0);
//! relay.stop().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod control;
mod error;
mod relay;
mod scheduler;
mod shape;
mod stats;
mod units;

pub use control::{
    Command, ControlServer, MAX_CONNECTIONS, MAX_LINE, PairReport, Request, StatsReport, execute,
    parse_request,
};
pub use error::{Error, Result};
pub use relay::{Relay, RelayConfig, RelayHandle};
pub use shape::{Shape, ShapeSummary};
pub use stats::{DirectionStats, Stats};
pub use units::{parse_duration, parse_probability, parse_rate, parse_size};
