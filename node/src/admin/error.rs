//! [`AdminError`]: why an admin operation failed, as the GraphQL error a client sees.
//!
//! Every error becomes a GraphQL error whose `message` is this type's display text and whose
//! `extensions.code` is [`AdminError::code`], so scripts can match on the code and people can
//! read the message. Internal failures are logged with their source chain; the client only
//! learns which operation failed.

use async_graphql::ErrorExtensions;

use crate::accounts::AccountError;
use crate::modules::roster::RosterError;

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// An argument is not valid (a malformed JID, an empty password, XML that is not a stanza).
    #[error("{0}")]
    BadInput(String),
    /// The domain is not served by this node.
    #[error("domain {0} is not served here")]
    UnknownDomain(String),
    /// The account to create exists already.
    #[error("account {0} already exists")]
    UserExists(String),
    /// The account, session or other object named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The node failed while doing the operation (storage, a task); details are in its log.
    #[error("internal error: {0} failed, see the node's log")]
    Internal(&'static str),
}

impl AdminError {
    /// The `extensions.code` of the GraphQL error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadInput(_) => "BAD_INPUT",
            Self::UnknownDomain(_) => "UNKNOWN_DOMAIN",
            Self::UserExists(_) => "USER_EXISTS",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// Logs `source` at `error` level and returns [`Self::Internal`] for `operation`.
    pub(crate) fn internal(operation: &'static str, source: &dyn std::error::Error) -> Self {
        tracing::error!(operation, error = %ErrorChain(source), "admin operation failed");
        Self::Internal(operation)
    }

    /// The account error of `operation` as an admin error.
    pub(crate) fn from_account(operation: &'static str, e: AccountError) -> Self {
        match e {
            AccountError::InvalidJid(jid) => Self::BadInput(format!("invalid user JID {jid:?}")),
            AccountError::UnknownDomain(domain) => Self::UnknownDomain(domain),
            AccountError::Exists(jid) => Self::UserExists(jid),
            AccountError::NotFound(jid) => Self::NotFound(format!("account {jid} does not exist")),
            AccountError::EmptyPassword => {
                Self::BadInput("the password must not be empty".to_owned())
            }
            AccountError::Storage(source) => Self::internal(operation, &source),
        }
    }

    /// The roster error of `operation` as an admin error.
    pub(crate) fn from_roster(operation: &'static str, e: RosterError) -> Self {
        match e {
            RosterError::NoSuchAccount(jid) => {
                Self::NotFound(format!("account {jid} does not exist"))
            }
            RosterError::Storage(source) => Self::internal(operation, &source),
        }
    }
}

impl ErrorExtensions for AdminError {
    fn extend(&self) -> async_graphql::Error {
        let code = self.code();
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| ext.set("code", code))
    }
}

/// The result of an admin operation.
pub(crate) type AdminResult<T> = Result<T, AdminError>;

/// Turns an operation's result into a resolver's result, with the error code attached.
pub(crate) fn graphql<T>(result: AdminResult<T>) -> async_graphql::Result<T> {
    result.map_err(|e| e.extend())
}

/// Displays an error with its sources, `outer: inner: innermost`.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphql_error_carries_message_and_code() {
        let e = AdminError::UserExists("alice@localhost".into()).extend();
        assert_eq!(e.message, "account alice@localhost already exists");
        let ext = e.extensions.expect("extensions are set");
        assert_eq!(
            ext.get("code"),
            Some(&async_graphql::Value::from("USER_EXISTS"))
        );
    }

    #[test]
    fn account_errors_map_to_codes() {
        let cases = [
            (AccountError::InvalidJid("@x".into()), "BAD_INPUT"),
            (
                AccountError::UnknownDomain("x.org".into()),
                "UNKNOWN_DOMAIN",
            ),
            (AccountError::Exists("a@x".into()), "USER_EXISTS"),
            (AccountError::NotFound("a@x".into()), "NOT_FOUND"),
            (AccountError::EmptyPassword, "BAD_INPUT"),
        ];
        for (e, code) in cases {
            assert_eq!(AdminError::from_account("test", e).code(), code);
        }
    }

    #[test]
    fn internal_error_hides_the_cause() {
        let source = std::io::Error::other("disk on fire");
        let e = AdminError::internal("listUsers", &source);
        assert_eq!(e.code(), "INTERNAL");
        assert!(!e.to_string().contains("disk"), "{e}");
        assert!(e.to_string().contains("listUsers"), "{e}");
    }

    #[test]
    fn error_chain_lists_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(ErrorChain(&e).to_string(), "outer: inner");
    }
}
