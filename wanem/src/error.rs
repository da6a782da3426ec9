//! The one error type of this crate, [`Error`], and its [`Result`] alias.

use std::io;
use std::net::SocketAddr;

/// Everything that can go wrong when starting a relay or a control server, changing a shape or
/// reading a value such as `20ms` or `10MB`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A UDP or TCP socket could not be bound to the address.
    #[error("cannot bind {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The address a socket was bound to could not be read back.
    #[error("cannot read the local address of a socket")]
    LocalAddr(#[source] io::Error),
    /// The relay's own thread or its runtime could not be started.
    #[error("cannot start the relay thread")]
    Thread(#[source] io::Error),
    /// A [`Shape`](crate::Shape) holds a value out of range.
    #[error("invalid shape: {field} {reason}")]
    InvalidShape {
        /// The field at fault (`loss`, `rate_limit`, ...).
        field: &'static str,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A text could not be read as the value wanted.
    #[error("invalid {what} {value:?}: {reason}")]
    Parse {
        /// What was being read (`duration`, `rate`, `loss`, ...).
        what: &'static str,
        /// The text given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
