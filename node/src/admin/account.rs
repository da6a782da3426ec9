//! The `account` category: list, count and register accounts, check and change passwords,
//! remove accounts. The work is done by [`crate::accounts`]; this module checks the arguments
//! and shapes the answers.

use std::sync::Arc;

use async_graphql::{Context, Object, Result, SimpleObject};

use super::args::{local_user, mesh_domain, served_domain};
use super::error::{AdminError, AdminResult, graphql};
use super::schema::node;
use crate::accounts;
use crate::node::Node;

/// What an account mutation did.
#[derive(Debug, SimpleObject)]
pub(crate) struct AccountPayload {
    /// The account's bare JID.
    jid: String,
    /// A sentence saying what was done.
    message: String,
}

/// The answer of `checkPassword`.
#[derive(Debug, SimpleObject)]
pub(crate) struct CheckPasswordPayload {
    /// Whether the password is the account's.
    correct: bool,
    /// A sentence saying so.
    message: String,
}

/// `query { account { ... } }`.
pub(crate) struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The accounts of a domain served here, as bare JIDs sorted by localpart.
    async fn list_users(&self, ctx: &Context<'_>, domain: String) -> Result<Vec<String>> {
        graphql(list_users(node(ctx)?, &domain).await)
    }

    /// The number of accounts of a domain served here.
    async fn count_users(&self, ctx: &Context<'_>, domain: String) -> Result<u64> {
        graphql(count_users(node(ctx)?, &domain).await)
    }

    /// Whether `password` is the password of the account `user` (a bare JID).
    async fn check_password(
        &self,
        ctx: &Context<'_>,
        user: String,
        password: String,
    ) -> Result<CheckPasswordPayload> {
        graphql(check_password(node(ctx)?, &user, &password).await)
    }
}

/// `mutation { account { ... } }`.
pub(crate) struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Creates the account `username@domain`, homed in the datacenter `home` (default: this
    /// node's). `USER_EXISTS` if it exists.
    async fn register_user(
        &self,
        ctx: &Context<'_>,
        domain: String,
        username: String,
        password: String,
        home: Option<String>,
    ) -> Result<AccountPayload> {
        graphql(register_user(node(ctx)?, &domain, &username, &password, home.as_deref()).await)
    }

    /// Removes the account `user` (a bare JID) with its roster, and ends its sessions.
    async fn remove_user(&self, ctx: &Context<'_>, user: String) -> Result<AccountPayload> {
        graphql(remove_user(node(ctx)?, &user).await)
    }

    /// Replaces the password of the account `user` (a bare JID). Sessions stay connected.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        user: String,
        new_password: String,
    ) -> Result<AccountPayload> {
        graphql(change_password(node(ctx)?, &user, &new_password).await)
    }
}

async fn list_users(node: &Arc<Node>, domain: &str) -> AdminResult<Vec<String>> {
    let domain = served_domain(node, domain)?;
    let users = node
        .storage
        .list_users(&domain)
        .await
        .map_err(|e| AdminError::internal("listUsers", &e))?;
    Ok(users.into_iter().map(|jid| jid.to_string()).collect())
}

async fn count_users(node: &Arc<Node>, domain: &str) -> AdminResult<u64> {
    let domain = served_domain(node, domain)?;
    node.storage
        .count_users(&domain)
        .await
        .map_err(|e| AdminError::internal("countUsers", &e))
}

async fn check_password(
    node: &Arc<Node>,
    user: &str,
    password: &str,
) -> AdminResult<CheckPasswordPayload> {
    let jid = local_user(node, user)?;
    let correct = accounts::check_password(node, &jid, password)
        .await
        .map_err(|e| AdminError::from_account("checkPassword", e))?;
    let message = if correct {
        format!("the password of {jid} is correct")
    } else {
        format!("the password of {jid} is wrong")
    };
    Ok(CheckPasswordPayload { correct, message })
}

async fn register_user(
    node: &Arc<Node>,
    domain: &str,
    username: &str,
    password: &str,
    home: Option<&str>,
) -> AdminResult<AccountPayload> {
    let domain = mesh_domain(node, domain)?;
    let jid = accounts::account_jid(node, username, &domain)
        .map_err(|e| AdminError::from_account("registerUser", e))?;
    accounts::register(node, &jid, password, home)
        .await
        .map_err(|e| AdminError::from_account("registerUser", e))?;
    tracing::info!(jid = %jid, "account registered through the admin API");
    Ok(AccountPayload {
        message: format!("registered {jid}"),
        jid: jid.to_string(),
    })
}

async fn remove_user(node: &Arc<Node>, user: &str) -> AdminResult<AccountPayload> {
    let jid = local_user(node, user)?;
    accounts::remove(node, &jid)
        .await
        .map_err(|e| AdminError::from_account("removeUser", e))?;
    tracing::info!(jid = %jid, "account removed through the admin API");
    Ok(AccountPayload {
        message: format!("removed {jid}"),
        jid: jid.to_string(),
    })
}

async fn change_password(
    node: &Arc<Node>,
    user: &str,
    new_password: &str,
) -> AdminResult<AccountPayload> {
    let jid = local_user(node, user)?;
    accounts::change_password(node, &jid, new_password)
        .await
        .map_err(|e| AdminError::from_account("changePassword", e))?;
    tracing::info!(jid = %jid, "password changed through the admin API");
    Ok(AccountPayload {
        message: format!("changed the password of {jid}"),
        jid: jid.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::test_node;

    #[tokio::test]
    async fn register_check_change_remove() {
        let (node, _dir) = test_node("account-ops").await;
        let made = register_user(&node, "localhost", "alice", "pw-one", None)
            .await
            .unwrap();
        assert_eq!(made.jid, "alice@localhost");
        assert_eq!(
            register_user(&node, "localhost", "alice", "x", None)
                .await
                .unwrap_err()
                .code(),
            "USER_EXISTS"
        );
        assert!(
            check_password(&node, "alice@localhost", "pw-one")
                .await
                .unwrap()
                .correct
        );
        assert!(
            !check_password(&node, "alice@localhost", "nope")
                .await
                .unwrap()
                .correct
        );
        change_password(&node, "alice@localhost", "pw-two")
            .await
            .unwrap();
        assert!(
            check_password(&node, "alice@localhost", "pw-two")
                .await
                .unwrap()
                .correct
        );
        assert_eq!(
            list_users(&node, "localhost").await.unwrap(),
            ["alice@localhost"]
        );
        assert_eq!(count_users(&node, "localhost").await.unwrap(), 1);
        remove_user(&node, "alice@localhost").await.unwrap();
        assert_eq!(count_users(&node, "localhost").await.unwrap(), 0);
        assert_eq!(
            remove_user(&node, "alice@localhost")
                .await
                .unwrap_err()
                .code(),
            "NOT_FOUND"
        );
    }

    #[tokio::test]
    async fn rejects_bad_registrations() {
        let (node, _dir) = test_node("account-bad").await;
        let cases = [
            ("example.org", "bob", "pw", "UNKNOWN_DOMAIN"),
            ("localhost", "", "pw", "BAD_INPUT"),
            ("localhost", "bob", "", "BAD_INPUT"),
            ("localhost", "b@b", "pw", "BAD_INPUT"),
        ];
        for (domain, user, password, code) in cases {
            let e = register_user(&node, domain, user, password, None)
                .await
                .unwrap_err();
            assert_eq!(e.code(), code, "{domain} {user:?} {password:?}: {e}");
        }
        assert_eq!(count_users(&node, "localhost").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn registers_with_a_home_datacenter() {
        let (node, _dir) = test_node("account-home").await;
        let made = register_user(&node, "localhost", "alice", "pw", Some("local"))
            .await
            .unwrap();
        assert_eq!(made.jid, "alice@localhost");
        let alice = jid::BareJid::new("alice@localhost").unwrap();
        let reader = node.grt.reader();
        let home = reader.user_home(&alice).home.expect("alice has a home");
        assert_eq!(reader.dc_name(home).as_deref(), Some("local"));

        let e = register_user(&node, "localhost", "bob", "pw", Some("nowhere"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
        assert_eq!(e.to_string(), "unknown datacenter nowhere");
        assert_eq!(count_users(&node, "localhost").await.unwrap(), 1);
        let bob = jid::BareJid::new("bob@localhost").unwrap();
        assert!(reader.user_home(&bob).home.is_none());
    }

    #[tokio::test]
    async fn registers_on_a_dynamic_domain_only_while_enabled() {
        let (node, _dir) = test_node("account-dynamic").await;
        node.grt
            .write(tern_raft_store::Command::AddDomain {
                domain: "chat.example".into(),
                host_type: "default".into(),
                dynamic: true,
                serving: vec![],
            })
            .await
            .unwrap();
        register_user(&node, "chat.example", "alice", "pw", None)
            .await
            .unwrap();
        node.grt
            .write(tern_raft_store::Command::SetDomainStatus {
                domain: "chat.example".into(),
                enabled: false,
            })
            .await
            .unwrap();
        let e = register_user(&node, "chat.example", "bob", "pw", None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "UNKNOWN_DOMAIN");
    }

    #[tokio::test]
    async fn unknown_accounts_are_not_found() {
        let (node, _dir) = test_node("account-missing").await;
        let e = check_password(&node, "ghost@localhost", "pw")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
        let e = change_password(&node, "ghost@localhost", "pw")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
    }
}
