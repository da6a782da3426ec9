//! Integration tests of `tern-wanem`: real UDP sockets on 127.0.0.1 through a relay.
//!
//! - `relay` — delay, jitter, loss, cut/heal, rate limit, queue limit, mappings, stats.
//! - `precision` — how close departures are to their scheduled time at thousands per second.
//! - `control` — the control protocol against a running relay.
//! - `binary` — the `tern-wanem` binary end to end.
//! - `support` — echo and sink servers, timing helpers.

mod binary;
mod control;
mod precision;
mod relay;
mod support;
