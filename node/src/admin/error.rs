//! [`AdminError`]: why an admin operation failed, as the GraphQL error a client sees.
//!
//! Every error becomes a GraphQL error whose `message` is this type's display text and whose
//! `extensions.code` is [`AdminError::code`], so scripts can match on the code and people can
//! read the message. Internal failures are logged with their source chain; the client only
//! learns which operation failed.

use async_graphql::ErrorExtensions;

use tern_raft_store::{ApplyError, GrtError};

use crate::accounts::AccountError;
use crate::modules::muc::MucAdminError;
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
    /// The operation contradicts the state it would change: a domain that exists with another
    /// host type, a static domain that cannot change at runtime.
    #[error("{0}")]
    Conflict(String),
    /// The routing table could not commit the change: no quorum of its voters answered. The
    /// change was not confirmed (it may still apply if the partition heals); commands are
    /// idempotent, so retrying is safe once the voters are back.
    #[error("{0}")]
    Unavailable(String),
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
            Self::Conflict(_) => "CONFLICT",
            Self::Unavailable(_) => "UNAVAILABLE",
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
            AccountError::UnknownDc(dc) => Self::BadInput(format!("unknown datacenter {dc}")),
            e @ AccountError::Remote { .. } => Self::Unavailable(e.to_string()),
            AccountError::Routing(GrtError::Refused {
                reason: ApplyError::UserExists { jid, .. },
                ..
            }) => Self::UserExists(jid),
            AccountError::Routing(source) => Self::from_grt(operation, source),
        }
    }

    /// The routing table error of `operation` as an admin error: a lost quorum is
    /// [`Self::Unavailable`], a refused command says why, a broken table is internal.
    pub(crate) fn from_grt(operation: &'static str, e: GrtError) -> Self {
        match e {
            GrtError::QuorumUnavailable(_) => Self::Unavailable(e.to_string()),
            GrtError::Refused { reason, .. } => Self::refused(reason),
            GrtError::Membership(_) => Self::Conflict(e.to_string()),
            GrtError::Open(_) | GrtError::Config(_) | GrtError::Fatal(_) => {
                Self::internal(operation, &e)
            }
        }
    }

    /// Why the routing table refused a command, as an admin error.
    fn refused(reason: ApplyError) -> Self {
        match reason {
            ApplyError::UnknownDomain(domain) => {
                Self::NotFound(format!("domain {domain} does not exist"))
            }
            ApplyError::HostTypeConflict { domain, existing } => Self::Conflict(format!(
                "domain {domain} already exists with host type {existing}; \
                 remove it first to give it another host type"
            )),
            ApplyError::StaticDomain(domain) => Self::Conflict(static_domain(&domain)),
            ApplyError::DomainDisabled(domain) => {
                Self::Conflict(format!("domain {domain} is disabled"))
            }
            ApplyError::UnknownDc(dc) => Self::BadInput(format!("unknown datacenter {dc}")),
            ApplyError::UserExists { jid, dc } => {
                Self::Conflict(format!("{jid} already lives in datacenter {dc}"))
            }
            ApplyError::UnknownUser(jid) => Self::NotFound(format!("account {jid} does not exist")),
            ApplyError::BadJid(jid) => Self::BadInput(format!("invalid JID {jid:?}")),
            other @ (ApplyError::DcInUse { .. }
            | ApplyError::TooManyDcs
            | ApplyError::DomainFull(_)) => Self::Conflict(other.to_string()),
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

    /// The error of an administrative room operation as an admin error: an existing room is
    /// [`Self::Conflict`], a room homed in another datacenter [`Self::NotFound`] naming it.
    pub(crate) fn from_muc(e: MucAdminError) -> Self {
        match e {
            MucAdminError::NotFound(_) | MucAdminError::Elsewhere(_) => {
                Self::NotFound(e.to_string())
            }
            MucAdminError::Exists(_) => Self::Conflict(e.to_string()),
            MucAdminError::BadInput(why) => Self::BadInput(why),
            MucAdminError::Unavailable(why) => Self::Unavailable(why),
        }
    }
}

/// The message for a change refused because `domain` is static.
pub(crate) fn static_domain(domain: &str) -> String {
    format!(
        "domain {domain} is static (from the configuration file) and cannot be changed at runtime"
    )
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
    fn routing_errors_map_to_codes() {
        use std::time::Duration;
        let refused = |reason| GrtError::Refused { index: 7, reason };
        let cases = [
            (
                GrtError::QuorumUnavailable(Duration::from_secs(10)),
                "UNAVAILABLE",
            ),
            (
                refused(ApplyError::UnknownDomain("x.org".into())),
                "NOT_FOUND",
            ),
            (
                refused(ApplyError::HostTypeConflict {
                    domain: "x.org".into(),
                    existing: "big".into(),
                }),
                "CONFLICT",
            ),
            (
                refused(ApplyError::StaticDomain("x.org".into())),
                "CONFLICT",
            ),
            (refused(ApplyError::UnknownDc("mars".into())), "BAD_INPUT"),
            (GrtError::Fatal("storage".into()), "INTERNAL"),
        ];
        for (e, code) in cases {
            assert_eq!(AdminError::from_grt("test", e.clone()).code(), code, "{e}");
        }
        let e = AdminError::from_grt("test", GrtError::QuorumUnavailable(Duration::from_secs(10)));
        assert!(e.to_string().contains("no quorum"), "{e}");
        let e = AdminError::from_account(
            "registerUser",
            AccountError::Routing(GrtError::QuorumUnavailable(Duration::from_secs(3))),
        );
        assert_eq!(e.code(), "UNAVAILABLE");
        let e = AdminError::from_account(
            "registerUser",
            AccountError::Routing(refused(ApplyError::UserExists {
                jid: "a@x.org".into(),
                dc: "eu".into(),
            })),
        );
        assert_eq!(e.code(), "USER_EXISTS");
        assert_eq!(
            AdminError::from_account("registerUser", AccountError::UnknownDc("mars".into())).code(),
            "BAD_INPUT"
        );
    }

    #[test]
    fn muc_errors_map_to_codes() {
        let cases = [
            (
                MucAdminError::NotFound("room r@muc.localhost".into()),
                "NOT_FOUND",
                "room r@muc.localhost not found",
            ),
            (
                MucAdminError::Elsewhere("eu-west".into()),
                "NOT_FOUND",
                "the room lives in datacenter eu-west: run the command against a node there",
            ),
            (
                MucAdminError::Exists("r@muc.localhost".into()),
                "CONFLICT",
                "room r@muc.localhost exists already",
            ),
            (
                MucAdminError::BadInput("no such affiliation".into()),
                "BAD_INPUT",
                "no such affiliation",
            ),
            (
                MucAdminError::Unavailable("the MUC service is off".into()),
                "UNAVAILABLE",
                "the MUC service is off",
            ),
        ];
        for (e, code, message) in cases {
            let e = AdminError::from_muc(e);
            assert_eq!((e.code(), e.to_string().as_str()), (code, message));
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
