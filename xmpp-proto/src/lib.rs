//! Sans-IO XMPP for Tern: no sockets, no clock, no runtime (STYLE.md §2).
//!
//! Everything here is a plain state machine or a pure function, driven by bytes and an injected
//! `now`, so it is tested with byte vectors. The async shell in `tern-node` only moves bytes and
//! arms timers.
//!
//! # Layout
//! - [`ns`]: namespace constants.
//! - [`framing`]: finds complete top-level elements in the byte stream, under limits.
//! - [`element`]: a small element tree for the stanzas a module must read or build.
//! - [`stanza`]: envelopes (`to`, `from`, `id`, `type`) read off the raw bytes, and `from` stamping.
//! - [`error`]: RFC 6120 stream and stanza errors.
//! - [`sasl`]: SASL server mechanisms (PLAIN, SCRAM-SHA-1/256 and -PLUS).
//! - [`stream`]: the server side of the RFC 6120 c2s stream negotiation state machine.

#![warn(missing_docs)]

pub mod element;
pub mod error;
pub mod framing;
pub mod ns;
pub mod sasl;
pub mod stanza;
pub mod stream;

pub use element::{Element, Node, ParseError};
pub use error::{ErrorType, StanzaCondition, StanzaError, StreamCondition, StreamError};
pub use framing::{Frame, Framer, FramingError, Limits};
pub use stanza::{Stanza, StanzaKind, StartTag};
