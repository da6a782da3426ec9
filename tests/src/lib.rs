//! Test harness for Tern's cross-crate and multi-process tests.
//!
//! # Layout
//! - [`server`]: starts the real `tern` binary on free loopback ports with a temporary data
//!   directory, and runs `tern ctl` against it.
//! - [`client`]: a raw XMPP client over TCP/TLS for tests that must send exact bytes (bad
//!   input, protocol edge cases); real-client interoperability lives in `tests/interop/`.

pub mod client;
pub mod server;
