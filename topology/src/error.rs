//! The errors this crate produces: [`TopologyError`] (one problem in a topology file, naming the
//! file, the key path and the rule) and [`TopologyErrors`] (every problem found in one load, never
//! empty), the `tern-toml-check` error types under this crate's names; and the two value errors behind some of those rules, [`NameError`] (a DC or node name)
//! and [`AddressError`] (a Raft address or bridge endpoint).

use crate::id::MAX_NAME_CHARS;

/// One problem in a topology file.
///
/// Displays as `file: key: rule`, for example
/// `topology.toml: dc[1].node[0].raft_addr: duplicate address 127.0.0.1:7500 (also
/// dc[0].node[0].raft_addr)`. Problems that concern the whole file (it cannot be read, or it is
/// not valid TOML) have an empty `key` and display as `file: rule`. `file` is the name as given
/// to [`Topology::load`](crate::Topology::load) or
/// [`Topology::from_toml_str`](crate::Topology::from_toml_str).
pub type TopologyError = tern_toml_check::Error;

/// Every problem found while loading one topology file, in a stable order: per-entry problems
/// in file order (each `[[dc]]` with its nodes, then each `[[domain]]`), then unknown top-level
/// keys, then the checks that span several entries.
///
/// Displays as one [`TopologyError`] per line. Never empty when returned by this crate.
pub type TopologyErrors = tern_toml_check::Errors;

/// `Result` with [`TopologyErrors`] as the default error type.
pub type Result<T, E = TopologyErrors> = std::result::Result<T, E>;

/// Why a text is not a valid DC or node name ([`DcId`](crate::DcId),
/// [`NodeName`](crate::NodeName)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is the empty string.
    #[error("must not be empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_CHARS`](crate::MAX_NAME_CHARS).
    #[error("must be at most {MAX_NAME_CHARS} characters, found {chars}")]
    TooLong {
        /// How many characters the name has.
        chars: usize,
    },
    /// The name holds a character other than `a`-`z`, `0`-`9` and `-`.
    #[error("must contain only lowercase letters a-z, digits 0-9 and '-', found {found:?}")]
    BadCharacter {
        /// The first character that is not allowed.
        found: char,
    },
    /// The name starts or ends with `-`.
    #[error("must not start or end with '-'")]
    EdgeHyphen,
}

/// Why a text is not a valid Raft address or bridge endpoint
/// ([`BridgeEndpoint`](crate::BridgeEndpoint)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// There is no `:port` after the host.
    #[error("expected host:port, such as \"10.0.0.1:7400\" or \"bridge.example.com:7400\"")]
    MissingPort,
    /// The port is not a number from 1 to 65535.
    #[error("invalid port {found:?}: expected a number from 1 to 65535")]
    InvalidPort {
        /// The text after the last `:`.
        found: String,
    },
    /// The port is 0, which no peer can dial.
    #[error("port 0 cannot be dialled: give the port this endpoint listens on")]
    ZeroPort,
    /// The host is neither an IP address nor a valid host name.
    #[error(
        "invalid host {found:?}: expected an IPv4 address, an IPv6 address in brackets \
         ([::1]) or a host name"
    )]
    InvalidHost {
        /// The text before the port.
        found: String,
    },
    /// The IP is the unspecified address (`0.0.0.0`, `::`), which no peer can dial.
    #[error("unspecified address {ip} cannot be dialled: give the address peers reach")]
    Unspecified {
        /// The address as written, normalised.
        ip: std::net::IpAddr,
    },
    /// A host name where only an IP address is allowed (Raft addresses).
    #[error(
        "expected IP:port such as \"10.0.0.1:7500\" or \"[::1]:7500\"; host names are not allowed here"
    )]
    NotIp,
}
