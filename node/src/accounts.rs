//! Accounts: creating, checking and removing users, with credentials stored only as SCRAM
//! salted keys (SHA-1 and SHA-256), never the password.
//!
//! Used by the admin API, XEP-0077 in-band registration and SASL.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jid::BareJid;
use tern_xmpp_proto::sasl::{ScramKeys, StoredCredentials};
use tern_xmpp_proto::{StreamCondition, StreamError};

use tern_raft_store::{Command, GrtError};

use crate::edge::Refusal;
use crate::node::Node;
use crate::storage::{self, ScramRecord, UserRecord};

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The JID is not a valid `user@domain`.
    #[error("invalid user JID {0:?}")]
    InvalidJid(String),
    /// The domain is not served by this node.
    #[error("domain {0} is not served here")]
    UnknownDomain(String),
    /// The account exists already.
    #[error("account {0} already exists")]
    Exists(String),
    /// The account does not exist.
    #[error("account {0} does not exist")]
    NotFound(String),
    /// The password is empty.
    #[error("the password must not be empty")]
    EmptyPassword,
    /// Storage failed.
    #[error("storage failed")]
    Storage(#[source] storage::Error),
    /// The home datacenter named is not in the routing table.
    #[error("unknown datacenter {0}")]
    UnknownDc(String),
    /// The home datacenter could not create the account.
    #[error("datacenter {dc} did not create the account: {reason}")]
    Remote {
        /// The home datacenter.
        dc: String,
        /// What it said, or why it could not be asked.
        reason: String,
    },
    /// The routing table did not record the account's home (nothing was created).
    #[error("the routing table did not record the account: {0}")]
    Routing(#[source] GrtError),
}

/// Parses and checks `user@domain` for an account on this node.
pub fn account_jid(node: &Node, user: &str, domain: &str) -> Result<BareJid, AccountError> {
    let text = format!("{user}@{domain}");
    let jid = BareJid::new(&text).map_err(|_| AccountError::InvalidJid(text.clone()))?;
    if jid.node().is_none() || user.is_empty() {
        return Err(AccountError::InvalidJid(text));
    }
    let domain = jid.domain().as_str();
    if !node.serves(domain) && node.domains.served_elsewhere(domain).is_none() {
        return Err(AccountError::UnknownDomain(jid.domain().to_string()));
    }
    Ok(jid)
}

fn record_for(node: &Node, password: &str) -> Result<UserRecord, AccountError> {
    if password.is_empty() {
        return Err(AccountError::EmptyPassword);
    }
    let mut salt1 = [0u8; 16];
    let mut salt256 = [0u8; 16];
    rand::fill(&mut salt1);
    rand::fill(&mut salt256);
    let creds = StoredCredentials::derive(
        password,
        &salt1,
        &salt256,
        node.config.auth.scram_iterations,
    );
    let created_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(UserRecord {
        sha1: to_record(creds.sha1),
        sha256: to_record(creds.sha256),
        created_unix,
    })
}

fn to_record(k: ScramKeys) -> ScramRecord {
    ScramRecord {
        salt: k.salt,
        iterations: k.iterations,
        stored_key: k.stored_key,
        server_key: k.server_key,
    }
}

fn to_keys(r: ScramRecord) -> ScramKeys {
    ScramKeys {
        salt: r.salt,
        iterations: r.iterations,
        stored_key: r.stored_key,
        server_key: r.server_key,
    }
}

/// Creates an account homed in `home` (default: this node's datacenter) and records its home in
/// the global routing table. PBKDF2 runs on the blocking pool. If the routing table cannot
/// record the home, the account is not kept.
pub async fn register(
    node: &Arc<Node>,
    jid: &BareJid,
    password: &str,
    home: Option<&str>,
) -> Result<(), AccountError> {
    let home = home.unwrap_or(&node.config.cluster.dc).to_owned();
    if node.grt.reader().with(|t| t.dc_id(&home).is_none()) {
        return Err(AccountError::UnknownDc(home));
    }
    let here = home == node.config.cluster.dc;
    if here && !node.serves(jid.domain().as_str()) {
        // A domain of the mesh that this datacenter does not serve: its users live elsewhere.
        return Err(AccountError::UnknownDomain(jid.domain().to_string()));
    }
    if !here && node.mesh.get().is_some() {
        // The account's data lives at its home: that datacenter creates it.
        return node
            .register_remote(&home, jid, password)
            .await
            .map_err(|refusal| refused(refusal, jid, &home));
    }
    let record = {
        let node = node.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || record_for(&node, &password))
            .await
            .map_err(|_| AccountError::EmptyPassword)??
    };
    node.storage
        .create_user(jid, record)
        .await
        .map_err(|e| match e {
            storage::Error::UserExists { .. } => AccountError::Exists(jid.to_string()),
            other => AccountError::Storage(other),
        })?;
    let command = Command::CreateUser {
        jid: jid.to_string(),
        dc: home,
    };
    if let Err(e) = node.grt.write(command).await {
        if let Err(undo) = node.storage.remove_user(jid).await {
            tracing::error!(%jid, error = %undo, "cannot undo an account the routing table refused");
        }
        return Err(AccountError::Routing(e));
    }
    Ok(())
}

/// An account operation its home datacenter refused, as an account error.
fn refused(refusal: Refusal, jid: &BareJid, home: &str) -> AccountError {
    match refusal {
        Refusal::Exists => AccountError::Exists(jid.to_string()),
        Refusal::NotFound => AccountError::NotFound(jid.to_string()),
        Refusal::UnknownDomain => AccountError::UnknownDomain(jid.domain().to_string()),
        Refusal::Failed(reason) => AccountError::Remote {
            dc: home.to_owned(),
            reason,
        },
    }
}

/// Replaces an account's password (at its home, when that is another datacenter).
pub async fn change_password(
    node: &Arc<Node>,
    jid: &BareJid,
    password: &str,
) -> Result<(), AccountError> {
    if password.is_empty() {
        return Err(AccountError::EmptyPassword);
    }
    if let Some((home, _)) = node.remote_home(jid) {
        return node
            .change_remote_account(&home, jid, Some(password))
            .await
            .map_err(|refusal| refused(refusal, jid, &home));
    }
    let record = {
        let node = node.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || record_for(&node, &password))
            .await
            .map_err(|_| AccountError::EmptyPassword)??
    };
    node.storage
        .set_user_credentials(jid, record)
        .await
        .map_err(|e| match e {
            storage::Error::UserNotFound { .. } => AccountError::NotFound(jid.to_string()),
            other => AccountError::Storage(other),
        })
}

/// Checks a password against the stored keys.
pub async fn check_password(
    node: &Arc<Node>,
    jid: &BareJid,
    password: &str,
) -> Result<bool, AccountError> {
    let Some(creds) = credentials(node, jid).await else {
        return Err(AccountError::NotFound(jid.to_string()));
    };
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || creds.verify_password(&password))
        .await
        .map_err(|_| AccountError::NotFound(jid.to_string()))
}

/// Removes an account and its roster, and ends its sessions (at its home, when that is another
/// datacenter).
pub async fn remove(node: &Arc<Node>, jid: &BareJid) -> Result<(), AccountError> {
    if let Some((home, _)) = node.remote_home(jid) {
        return node
            .change_remote_account(&home, jid, None)
            .await
            .map_err(|refusal| refused(refusal, jid, &home));
    }
    let removed = node
        .storage
        .remove_user(jid)
        .await
        .map_err(AccountError::Storage)?;
    node.privacy.forget(jid);
    node.mam_prefs.forget(jid);
    if !removed {
        return Err(AccountError::NotFound(jid.to_string()));
    }
    match node
        .grt
        .write(Command::DeleteUser {
            jid: jid.to_string(),
        })
        .await
    {
        Ok(_) | Err(GrtError::Refused { .. }) => {}
        // The account is gone here; a stale home only sends stanzas to a DC that answers
        // "no such user". Say so rather than fail the removal.
        Err(e) => {
            tracing::warn!(%jid, error = %e, "removed account's home not deleted from the routing table")
        }
    }
    for session in node.sm.resources(jid) {
        session
            .close(StreamError::new(StreamCondition::NotAuthorized).with_text("account removed"));
    }
    Ok(())
}

/// The stored SCRAM credentials of an account, for SASL: from this node's storage, or from the
/// account's home when it lives in another datacenter (an edge session, [`crate::edge`]).
/// `Ok(None)`: no such account; `Err`: they cannot be had now (storage failed, the home is
/// unreachable), logged here.
pub async fn lookup_credentials(
    node: &Node,
    jid: &BareJid,
) -> Result<Option<StoredCredentials>, CredentialsUnavailable> {
    if node.moves.is_moving(jid) {
        return Err(CredentialsUnavailable);
    }
    let stored = match node.remote_home(jid) {
        Some((home, _)) => node.remote_credentials(&home, jid).await.map_err(|e| {
            tracing::info!(%home, error = %e, "credentials of a remote account unavailable");
            CredentialsUnavailable
        }),
        None => node.storage.get_user(jid).await.map_err(|e| {
            tracing::error!(error = %e, "credential lookup failed");
            CredentialsUnavailable
        }),
    }?;
    Ok(stored.map(|user| StoredCredentials {
        sha1: to_keys(user.sha1),
        sha256: to_keys(user.sha256),
    }))
}

/// The credentials of an account cannot be had now (the failure is logged where it happened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialsUnavailable;

/// [`lookup_credentials`], with a failure taken as no account.
pub async fn credentials(node: &Node, jid: &BareJid) -> Option<StoredCredentials> {
    lookup_credentials(node, jid).await.ok().flatten()
}
