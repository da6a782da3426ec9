//! The `roster` category: read a user's roster or one contact, add or delete a contact, make
//! two users (or every pair of a list) subscribed to each other. Changes go through
//! [`crate::modules::roster`], which stores them and pushes them to the user's online resources
//! (RFC 6121 §2.1.6). Every command works on accounts of this node's datacenter; for an account
//! homed elsewhere it says which datacenter to ask.

use std::sync::Arc;

use async_graphql::{Context, Object, Result, SimpleObject};
use jid::BareJid;

use super::args::home_user;
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

    /// The item `contact` (a bare JID) of the roster of the account `user`; `NOT_FOUND` when
    /// the roster has no such item.
    async fn get_contact(
        &self,
        ctx: &Context<'_>,
        user: String,
        contact: String,
    ) -> Result<Contact> {
        graphql(get_contact(node(ctx)?, &user, &contact).await)
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

    /// Removes `contact` (a bare JID) from the roster of the account `user` as a client's
    /// roster remove would (RFC 6121 §2.5): subscriptions both ways are cancelled and the
    /// removal is pushed. `NOT_FOUND` when the roster has no such item.
    async fn delete_contact(
        &self,
        ctx: &Context<'_>,
        user: String,
        contact: String,
    ) -> Result<RosterPayload> {
        graphql(delete_contact(node(ctx)?, &user, &contact).await)
    }

    /// Makes every two of the accounts `users` (2 to 100 bare JIDs) subscribed to each other,
    /// as `setMutualSubscription` does for one pair.
    async fn subscribe_all_to_all(
        &self,
        ctx: &Context<'_>,
        users: Vec<String>,
    ) -> Result<RosterPayload> {
        graphql(subscribe_all_to_all(node(ctx)?, &users).await)
    }
}

/// Fewest and most accounts `subscribeAllToAll` takes.
const ALL_TO_ALL_USERS: std::ops::RangeInclusive<usize> = 2..=100;

async fn list_contacts(node: &Arc<Node>, user: &str) -> AdminResult<Vec<Contact>> {
    let jid = home_user(node, user, "listContacts").await?;
    let roster = node
        .storage
        .get_roster(&jid)
        .await
        .map_err(|e| AdminError::internal("listContacts", &e))?;
    Ok(roster.items.values().map(Contact::from).collect())
}

async fn get_contact(node: &Arc<Node>, user: &str, contact: &str) -> AdminResult<Contact> {
    let user = home_user(node, user, "getContact").await?;
    let contact = contact_jid(contact)?;
    let roster = node
        .storage
        .get_roster(&user)
        .await
        .map_err(|e| AdminError::internal("getContact", &e))?;
    roster
        .items
        .get(contact.as_str())
        .map(Contact::from)
        .ok_or_else(|| not_in_roster(&user, &contact))
}

async fn add_contact(
    node: &Arc<Node>,
    user: &str,
    contact: &str,
    name: Option<String>,
    groups: Vec<String>,
) -> AdminResult<RosterPayload> {
    let user = home_user(node, user, "addContact").await?;
    let contact = contact_jid(contact)?;
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
    let a = home_user(node, user_a, "setMutualSubscription").await?;
    let b = home_user(node, user_b, "setMutualSubscription").await?;
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

async fn delete_contact(node: &Arc<Node>, user: &str, contact: &str) -> AdminResult<RosterPayload> {
    let user = home_user(node, user, "deleteContact").await?;
    let contact = contact_jid(contact)?;
    let removed = roster::remove_item(node, &user, &contact)
        .await
        .map_err(|e| AdminError::from_roster("deleteContact", e))?;
    if !removed {
        return Err(not_in_roster(&user, &contact));
    }
    tracing::info!(user = %user, contact = %contact, "roster item removed through the admin API");
    Ok(RosterPayload {
        message: format!("removed {contact} from the roster of {user}"),
    })
}

async fn subscribe_all_to_all(node: &Arc<Node>, users: &[String]) -> AdminResult<RosterPayload> {
    if !ALL_TO_ALL_USERS.contains(&users.len()) {
        return Err(AdminError::BadInput(format!(
            "name between {} and {} accounts, not {}",
            ALL_TO_ALL_USERS.start(),
            ALL_TO_ALL_USERS.end(),
            users.len()
        )));
    }
    // Every account is checked before anything changes.
    let mut jids: Vec<BareJid> = Vec::with_capacity(users.len());
    for user in users {
        let jid = home_user(node, user, "subscribeAllToAll").await?;
        if jids.contains(&jid) {
            return Err(AdminError::BadInput(format!(
                "{jid} is named twice; name each account once"
            )));
        }
        jids.push(jid);
    }
    for (i, a) in jids.iter().enumerate() {
        for b in &jids[i + 1..] {
            roster::admin_set_mutual_subscription(node, a, b)
                .await
                .map_err(|e| AdminError::from_roster("subscribeAllToAll", e))?;
        }
    }
    let count = jids.len();
    tracing::info!(
        users = count,
        "all-to-all subscriptions set through the admin API"
    );
    Ok(RosterPayload {
        message: format!("{count} users are now subscribed to each other"),
    })
}

/// A contact's bare JID.
fn contact_jid(contact: &str) -> AdminResult<BareJid> {
    BareJid::new(contact)
        .map_err(|e| AdminError::BadInput(format!("invalid contact JID {contact:?}: {e}")))
}

/// The error for a contact the roster does not have.
fn not_in_roster(user: &BareJid, contact: &BareJid) -> AdminError {
    AdminError::NotFound(format!("{contact} is not in the roster of {user}"))
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
    use crate::admin::tests::{create_account, next_stanza, test_node, test_session};
    use crate::storage::Subscription;

    async fn roster_of(node: &Node, user: &str) -> crate::storage::Roster {
        node.storage
            .get_roster(&BareJid::new(user).unwrap())
            .await
            .unwrap()
    }

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

    #[tokio::test]
    async fn get_contact_returns_one_item() {
        let (node, _dir) = test_node("roster-get").await;
        create_account(&node, "alice@localhost").await;
        add_contact(
            &node,
            "alice@localhost",
            "bob@example.org",
            Some("Bob".into()),
            vec!["Work".into()],
        )
        .await
        .unwrap();
        let contact = get_contact(&node, "alice@localhost", "Bob@Example.org")
            .await
            .unwrap();
        assert_eq!(contact.jid, "bob@example.org");
        assert_eq!(contact.name.as_deref(), Some("Bob"));
        assert_eq!(contact.groups, ["Work"]);
        assert_eq!(contact.subscription, "none");
        let e = get_contact(&node, "alice@localhost", "carol@example.org")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
        assert_eq!(
            e.to_string(),
            "carol@example.org is not in the roster of alice@localhost"
        );
        let e = get_contact(&node, "alice@localhost", "bob@@x")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
        let e = get_contact(&node, "ghost@localhost", "bob@example.org")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
        assert_eq!(e.to_string(), "account ghost@localhost does not exist");
    }

    #[tokio::test]
    async fn delete_contact_removes_the_item_and_pushes_the_removal() {
        let (node, _dir) = test_node("roster-delete").await;
        create_account(&node, "alice@localhost").await;
        create_account(&node, "bob@localhost").await;
        set_mutual_subscription(&node, "alice@localhost", "bob@localhost")
            .await
            .unwrap();
        let (session, mut rx) = test_session(&node, "alice@localhost/desk");
        session.update_presence(|p| p.interested = true);
        let before = roster_of(&node, "alice@localhost").await.version;
        let done = delete_contact(&node, "alice@localhost", "bob@localhost")
            .await
            .unwrap();
        assert_eq!(
            done.message,
            "removed bob@localhost from the roster of alice@localhost"
        );
        let push = next_stanza(&mut rx).await;
        assert!(push.contains("type='set'"), "{push}");
        assert!(
            push.contains("<item jid='bob@localhost' subscription='remove'/>"),
            "{push}"
        );
        assert!(push.contains(&format!("ver='{}'", before + 1)), "{push}");
        assert!(
            !roster_of(&node, "alice@localhost")
                .await
                .items
                .contains_key("bob@localhost")
        );
        // Both directions were cancelled: Bob no longer has Alice's presence nor she his.
        let bob = roster_of(&node, "bob@localhost").await;
        assert_eq!(
            bob.items["alice@localhost"].subscription,
            Subscription::None
        );

        let e = delete_contact(&node, "alice@localhost", "bob@localhost")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
        assert_eq!(
            e.to_string(),
            "bob@localhost is not in the roster of alice@localhost"
        );
        let e = delete_contact(&node, "ghost@localhost", "bob@localhost")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
    }

    #[tokio::test]
    async fn subscribe_all_to_all_subscribes_every_pair() {
        let (node, _dir) = test_node("roster-all").await;
        let users = ["a@localhost", "b@localhost", "c@localhost", "d@localhost"];
        for user in users {
            create_account(&node, user).await;
        }
        let names: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        let done = subscribe_all_to_all(&node, &names).await.unwrap();
        assert_eq!(done.message, "4 users are now subscribed to each other");
        for user in users {
            let roster = roster_of(&node, user).await;
            assert_eq!(roster.items.len(), users.len() - 1, "{user}");
            for contact in users.iter().filter(|c| **c != user) {
                assert_eq!(
                    roster.items[*contact].subscription,
                    Subscription::Both,
                    "{user} -> {contact}"
                );
            }
        }
    }

    #[tokio::test]
    async fn subscribe_all_to_all_checks_every_account_first() {
        let (node, _dir) = test_node("roster-all-bad").await;
        create_account(&node, "a@localhost").await;
        create_account(&node, "b@localhost").await;
        let list = |users: &[&str]| users.iter().map(|u| (*u).to_owned()).collect::<Vec<_>>();
        for users in [
            list(&["a@localhost"]),
            list(&[]),
            list(&["a@localhost", "b@localhost", "A@localhost"]),
            list(&["a@localhost", "not a jid@"]),
        ] {
            let e = subscribe_all_to_all(&node, &users).await.unwrap_err();
            assert_eq!(e.code(), "BAD_INPUT", "{users:?}: {e}");
        }
        let too_many: Vec<String> = (0..101).map(|n| format!("u{n}@localhost")).collect();
        let e = subscribe_all_to_all(&node, &too_many).await.unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
        assert!(e.to_string().contains("between 2 and 100"), "{e}");
        let e = subscribe_all_to_all(
            &node,
            &list(&["a@localhost", "b@localhost", "ghost@localhost"]),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
        assert!(roster_of(&node, "a@localhost").await.items.is_empty());
    }
}
