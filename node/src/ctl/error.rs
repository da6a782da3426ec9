//! [`CtlError`]: why a `tern ctl` command failed, and the exit code that says so.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code when the node refused the command (a GraphQL error) or a password check failed.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code when `tern ctl` could not talk to the node: configuration, token, connection.
pub const EXIT_UNAVAILABLE: u8 = 3;

/// Why a `tern ctl` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The configuration file could not be loaded; the lines name the file, key and rule.
    #[error("{0}")]
    Config(tern_config::ConfigErrors),
    /// The configuration turns the admin API off.
    #[error("the admin API is disabled in {file} (admin.enabled = false)")]
    AdminDisabled {
        /// The configuration file.
        file: String,
    },
    /// No token is configured and the token file does not exist.
    #[error(
        "no admin token: {} does not exist (has `tern serve` run with this data directory? \
         or set admin.token in the config)",
        .path.display()
    )]
    TokenMissing {
        /// The token file looked for.
        path: PathBuf,
    },
    /// The token file exists but cannot be read or is empty.
    #[error("cannot read the admin token from {}", .path.display())]
    TokenUnreadable {
        /// The token file.
        path: PathBuf,
        /// What reading it reported.
        #[source]
        source: io::Error,
    },
    /// An argument given as `-` could not be read from standard input.
    #[error("cannot read standard input")]
    Stdin(#[source] io::Error),
    /// Nothing answers at the admin address.
    #[error("cannot reach the admin API at {address}: is `tern serve` running? ({reason})")]
    Unreachable {
        /// The address tried.
        address: SocketAddr,
        /// Why, in a few words (`connection refused`, `timed out`).
        reason: String,
    },
    /// The connection broke while sending the request or reading the answer.
    #[error("the exchange with the admin API at {address} failed")]
    Exchange {
        /// The admin address.
        address: SocketAddr,
        /// What the socket reported.
        #[source]
        source: io::Error,
    },
    /// The node answered 401: the token is not the node's.
    #[error("the admin token was refused (check {token_file} or admin.token in the config)")]
    TokenRefused {
        /// Where the token was read from, as shown to the user.
        token_file: String,
    },
    /// The node answered with an unexpected HTTP status.
    #[error("the admin API answered HTTP {status}: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer is not a valid HTTP or GraphQL response.
    #[error("the admin API sent an answer that cannot be read: {0}")]
    BadResponse(String),
    /// The node refused the command; the message is the node's.
    #[error("{message}")]
    Refused {
        /// The GraphQL error messages, joined by `; `.
        message: String,
        /// The `extensions.code` of the first error, if any.
        code: Option<String>,
    },
}

impl CtlError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Refused { .. } => ExitCode::from(EXIT_REFUSED),
            _ => ExitCode::from(EXIT_UNAVAILABLE),
        }
    }

    /// The `extensions.code` the node sent, for [`Self::Refused`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// Displays an error and its sources, `outer: inner`.
pub(crate) struct Chain<'a>(pub(crate) &'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

/// A short lowercase reason for a failed connection.
pub(crate) fn connect_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".to_owned(),
        io::ErrorKind::AddrNotAvailable => "address not available".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_message_names_the_address_and_reason() {
        let e = CtlError::Unreachable {
            address: "127.0.0.1:5551".parse().unwrap(),
            reason: connect_reason(&io::Error::from(io::ErrorKind::ConnectionRefused)),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach the admin API at 127.0.0.1:5551: is `tern serve` running? \
             (connection refused)"
        );
        assert_eq!(e.exit_code(), ExitCode::from(EXIT_UNAVAILABLE));
    }

    #[test]
    fn refused_commands_exit_with_one() {
        let e = CtlError::Refused {
            message: "account a@localhost already exists".into(),
            code: Some("USER_EXISTS".into()),
        };
        assert_eq!(e.exit_code(), ExitCode::from(EXIT_REFUSED));
        assert_eq!(e.code(), Some("USER_EXISTS"));
        assert_eq!(e.to_string(), "account a@localhost already exists");
    }

    #[test]
    fn chain_shows_sources() {
        let e = CtlError::TokenUnreadable {
            path: PathBuf::from("/d/admin.token"),
            source: io::Error::other("is a directory"),
        };
        assert_eq!(
            Chain(&e).to_string(),
            "cannot read the admin token from /d/admin.token: is a directory"
        );
    }
}
