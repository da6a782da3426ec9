//! The `roster` category: read a user's roster, add a contact, make two users subscribed to each
//! other. Changes go through [`crate::modules::roster`], which stores them and pushes them to
//! the user's online resources (RFC 6121 §2.1.6).

use std::sync::Arc;

use async_graphql::{Context, Object, Result, SimpleObject};
use jid::BareJid;

use super::args::local_user;
use super::error::{AdminError, AdminResult, graphql};
use super::schema::node;
use crate::modules::roster;
use crate::node::Node;
use crate::storage::RosterItem;

/// One roster item.
#[derive(Debug, SimpleObject)]
pub(crate) struct Contact {
    /// The contact's bare JID.
    jid: String,
    /// The name the user gave the contact.
    name: Option<String>,
    /// The roster groups the contact is in.
    groups: Vec<String>,
    /// The subscription state: `none`, `to`, `from` or `both` (RFC 6121 §2.1.2.5).
    subscription: String,
    /// Whether the user asked to subscribe to the contact's presence and has no answer yet
    /// (`ask='subscribe'`).
    ask: bool,
    /// Whether the contact asked to subscribe to the user's presence and the user has not
    /// answered.
    pending_in: bool,
    /// Whether the user pre-approved a subscription request from the contact.
    approved: bool,
}

impl From<&RosterItem> for Contact {
    fn from(item: &RosterItem) -> Self {
        Self {
            jid: item.jid.clone(),
            name: item.name.clone(),
            groups: item.groups.clone(),
            subscription: item.subscription.as_str().to_owned(),
            ask: item.ask,
            pending_in: item.pending_in,
            approved: item.approved,
        }
    }
}

/// What a roster mutation did.
#[derive(Debug, SimpleObject)]
pub(crate) struct RosterPayload {
    /// A sentence saying what was done.
    message: String,
}

/// `query { roster { ... } }`.
pub(crate) struct RosterQuery;

#[Object]
impl RosterQuery {
    /// The roster of the account `user` (a bare JID), sorted by contact JID.
    async fn list_contacts(&self, ctx: &Context<'_>, user: String) -> Result<Vec<Contact>> {
        graphql(list_contacts(node(ctx)?, &user).await)
    }
}

/// `mutation { roster { ... } }`.
pub(crate) struct RosterMutation;

#[Object]
impl RosterMutation {
    /// Adds `contact` (a bare JID) to the roster of the account `user`, or updates its name and
    /// groups. The subscription state is left as it is.
    async fn add_contact(
        &self,
        ctx: &Context<'_>,
        user: String,
        contact: String,
        name: Option<String>,
        groups: Option<Vec<String>>,
    ) -> Result<RosterPayload> {
        graphql(
            add_contact(
                node(ctx)?,
                &user,
                &contact,
                name,
                groups.unwrap_or_default(),
            )
            .await,
        )
    }

    /// Makes the accounts `userA` and `userB` subscribed to each other's presence (`both` on
    /// both rosters), adding the items if needed.
    async fn set_mutual_subscription(
        &self,
        ctx: &Context<'_>,
        user_a: String,
        user_b: String,
    ) -> Result<RosterPayload> {
        graphql(set_mutual_subscription(node(ctx)?, &user_a, &user_b).await)
    }
}

/// `user` as a local account that exists.
async fn existing_user(node: &Node, user: &str, operation: &'static str) -> AdminResult<BareJid> {
    let jid = local_user(node, user)?;
    match node.storage.get_user(&jid).await {
        Ok(Some(_)) => Ok(jid),
        Ok(None) => Err(AdminError::NotFound(format!(
            "account {jid} does not exist"
        ))),
        Err(e) => Err(AdminError::internal(operation, &e)),
    }
}

async fn list_contacts(node: &Arc<Node>, user: &str) -> AdminResult<Vec<Contact>> {
    let jid = existing_user(node, user, "listContacts").await?;
    let roster = node
        .storage
        .get_roster(&jid)
        .await
        .map_err(|e| AdminError::internal("listContacts", &e))?;
    Ok(roster.items.values().map(Contact::from).collect())
}

async fn add_contact(
    node: &Arc<Node>,
    user: &str,
    contact: &str,
    name: Option<String>,
    groups: Vec<String>,
) -> AdminResult<RosterPayload> {
    let user = existing_user(node, user, "addContact").await?;
    let contact = BareJid::new(contact)
        .map_err(|e| AdminError::BadInput(format!("invalid contact JID {contact:?}: {e}")))?;
    let name = name.filter(|n| !n.is_empty());
    let groups = check_groups(groups)?;
    roster::admin_add_contact(node, &user, &contact, name, groups)
        .await
        .map_err(|e| AdminError::from_roster("addContact", e))?;
    tracing::info!(user = %user, contact = %contact, "roster item set through the admin API");
    Ok(RosterPayload {
        message: format!("added {contact} to the roster of {user}"),
    })
}

async fn set_mutual_subscription(
    node: &Arc<Node>,
    user_a: &str,
    user_b: &str,
) -> AdminResult<RosterPayload> {
    let a = existing_user(node, user_a, "setMutualSubscription").await?;
    let b = existing_user(node, user_b, "setMutualSubscription").await?;
    if a == b {
        return Err(AdminError::BadInput(format!(
            "userA and userB are both {a}; name two different accounts"
        )));
    }
    roster::admin_set_mutual_subscription(node, &a, &b)
        .await
        .map_err(|e| AdminError::from_roster("setMutualSubscription", e))?;
    tracing::info!(user_a = %a, user_b = %b, "mutual subscription set through the admin API");
    Ok(RosterPayload {
        message: format!("{a} and {b} are now subscribed to each other"),
    })
}

/// Group names must not be empty (RFC 6121 §2.1.2.4); duplicates are dropped, order kept.
fn check_groups(groups: Vec<String>) -> AdminResult<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(groups.len());
    for group in groups {
        if group.is_empty() {
            return Err(AdminError::BadInput(
                "a roster group name must not be empty".to_owned(),
            ));
        }
        if !out.contains(&group) {
            out.push(group);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::{create_account, test_node};
    use crate::storage::Subscription;

    #[tokio::test]
    async fn add_contact_then_list() {
        let (node, _dir) = test_node("roster-add").await;
        create_account(&node, "alice@localhost").await;
        add_contact(
            &node,
            "alice@localhost",
            "bob@example.org",
            Some("Bob".into()),
            vec!["Friends".into(), "Work".into(), "Friends".into()],
        )
        .await
        .unwrap();
        let contacts = list_contacts(&node, "alice@localhost").await.unwrap();
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[0].jid, "bob@example.org");
        assert_eq!(contacts[0].name.as_deref(), Some("Bob"));
        assert_eq!(contacts[0].groups, ["Friends", "Work"]);
        assert_eq!(contacts[0].subscription, "none");
        assert!(!contacts[0].ask);
    }

    #[tokio::test]
    async fn mutual_subscription_sets_both() {
        let (node, _dir) = test_node("roster-mutual").await;
        create_account(&node, "alice@localhost").await;
        create_account(&node, "bob@localhost").await;
        set_mutual_subscription(&node, "alice@localhost", "bob@localhost")
            .await
            .unwrap();
        for (user, contact) in [
            ("alice@localhost", "bob@localhost"),
            ("bob@localhost", "alice@localhost"),
        ] {
            let roster = node
                .storage
                .get_roster(&BareJid::new(user).unwrap())
                .await
                .unwrap();
            assert_eq!(roster.items[contact].subscription, Subscription::Both);
        }
        let e = set_mutual_subscription(&node, "alice@localhost", "alice@localhost")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
    }

    #[tokio::test]
    async fn unknown_users_and_bad_groups_are_rejected() {
        let (node, _dir) = test_node("roster-bad").await;
        let e = list_contacts(&node, "ghost@localhost").await.unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
        let e = set_mutual_subscription(&node, "ghost@localhost", "bob@localhost")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
        create_account(&node, "alice@localhost").await;
        let e = add_contact(
            &node,
            "alice@localhost",
            "bob@localhost",
            None,
            vec![String::new()],
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
        let e = add_contact(&node, "alice@localhost", "bob@@x", None, Vec::new())
            .await
            .unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
    }
}
