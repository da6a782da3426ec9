//! RFC 6121 §2: roster management (`jabber:iq:roster`) and XEP-0237 roster versioning.
//!
//! The roster lives in storage (one record per account, with a version counter bumped on every
//! change). Every change is pushed to the account's sessions that requested the roster
//! ("interested resources"). The subscription state machine that also changes rosters lives
//! in [`super::presence`].

use std::sync::Arc;

use jid::{BareJid, Jid};
use tern_xmpp_proto::stanza::Stanza;
use tern_xmpp_proto::{Element, StanzaCondition, StanzaError, ns};

use crate::node::Node;
use crate::sm::Session;
use crate::storage::{self, Roster, RosterItem, Subscription};

/// Why a roster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    /// The account does not exist.
    #[error("account {0} does not exist")]
    NoSuchAccount(String),
    /// Storage failed.
    #[error("storage failed")]
    Storage(#[source] storage::Error),
}

impl From<storage::Error> for RosterError {
    fn from(e: storage::Error) -> Self {
        match e {
            storage::Error::UserNotFound { jid } => Self::NoSuchAccount(jid),
            other => Self::Storage(other),
        }
    }
}

/// The `<item/>` of a roster item.
pub fn item_element(item: &RosterItem) -> Element {
    let mut e = Element::new("item", ns::ROSTER)
        .with_attr("jid", item.jid.clone())
        .with_attr("subscription", item.subscription.as_str());
    if let Some(name) = &item.name {
        e.set_attr("name", name.clone());
    }
    if item.ask {
        e.set_attr("ask", "subscribe");
    }
    for group in &item.groups {
        e.append_child(Element::new("group", ns::ROSTER).with_text(group.clone()));
    }
    e
}

/// Sends a roster push of `item` (or its removal) at `version` to every interested resource.
pub fn push(node: &Node, user: &BareJid, version: u64, item: Element) {
    for session in node.sm.resources(user) {
        if !session.presence().interested {
            continue;
        }
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("push{version}-{}", session.conn_id))
            .with_attr("to", session.jid.to_string())
            .with_child(
                Element::new("query", ns::ROSTER)
                    .with_attr("ver", version.to_string())
                    .with_child(item.clone()),
            );
        if let Ok(stanza) = Stanza::from_element(&iq, ns::CLIENT) {
            node.deliver(&session, &stanza);
        }
    }
}

/// Pushes the current state of `contact` in `roster` (a removal if it is gone).
pub fn push_item(node: &Node, user: &BareJid, roster: &Roster, contact: &str) {
    let item = match roster.items.get(contact) {
        Some(item) => item_element(item),
        None => Element::new("item", ns::ROSTER)
            .with_attr("jid", contact.to_owned())
            .with_attr("subscription", "remove"),
    };
    push(node, user, roster.version, item);
}

/// Handles a roster IQ from the account's own session; returns the reply.
pub async fn handle_iq(node: &Arc<Node>, session: &Session, iq: &Element) -> Element {
    let user = session.jid.to_bare();
    let Some(query) = iq.get_child("query", ns::ROSTER) else {
        return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
    };
    match iq.attr("type") {
        Some("get") => roster_get(node, session, &user, iq, query).await,
        Some("set") => roster_set(node, &user, iq, query).await,
        _ => StanzaError::new(StanzaCondition::BadRequest).reply_to(iq),
    }
}

fn result_for(iq: &Element) -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "result")
        .with_attr_opt("id", iq.attr("id"))
}

async fn roster_get(
    node: &Arc<Node>,
    session: &Session,
    user: &BareJid,
    iq: &Element,
    query: &Element,
) -> Element {
    let roster = match node.storage.get_roster(user).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "roster read failed");
            return StanzaError::new(StanzaCondition::InternalServerError).reply_to(iq);
        }
    };
    session.update_presence(|p| p.interested = true);
    let version = roster.version.to_string();
    if query.attr("ver") == Some(version.as_str()) {
        // XEP-0237: the client's copy is current; changes will come as pushes.
        return result_for(iq);
    }
    let mut reply_query = Element::new("query", ns::ROSTER).with_attr("ver", version);
    for item in roster.items.values() {
        reply_query.append_child(item_element(item));
    }
    result_for(iq).with_child(reply_query)
}

async fn roster_set(node: &Arc<Node>, user: &BareJid, iq: &Element, query: &Element) -> Element {
    let items: Vec<&Element> = query
        .children()
        .filter(|c| c.is("item", ns::ROSTER))
        .collect();
    let [item] = items.as_slice() else {
        return StanzaError::new(StanzaCondition::BadRequest)
            .with_text("a roster set carries exactly one item")
            .reply_to(iq);
    };
    let contact = match item.attr("jid").map(Jid::new) {
        Some(Ok(jid)) if jid.resource().is_none() => jid.to_bare(),
        Some(Ok(_)) => {
            return StanzaError::new(StanzaCondition::BadRequest)
                .with_text("a roster item is a bare JID")
                .reply_to(iq);
        }
        _ => return StanzaError::new(StanzaCondition::JidMalformed).reply_to(iq),
    };
    let mut groups: Vec<String> = Vec::new();
    for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let name = g.text();
        if name.trim().is_empty() {
            return StanzaError::new(StanzaCondition::NotAcceptable)
                .with_text("empty group name")
                .reply_to(iq);
        }
        if groups.contains(&name) {
            return StanzaError::new(StanzaCondition::BadRequest)
                .with_text("duplicate group")
                .reply_to(iq);
        }
        groups.push(name);
    }
    let name = item
        .attr("name")
        .map(str::to_owned)
        .filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.len() > 1024) || groups.iter().any(|g| g.len() > 1024) {
        return StanzaError::new(StanzaCondition::NotAcceptable)
            .with_text("name too long")
            .reply_to(iq);
    }
    let result = if item.attr("subscription") == Some("remove") {
        remove_item(node, user, &contact).await
    } else {
        upsert_item(node, user, &contact, name, groups)
            .await
            .map(|_| true)
    };
    match result {
        Ok(true) => result_for(iq),
        Ok(false) => StanzaError::new(StanzaCondition::ItemNotFound).reply_to(iq),
        Err(e) => {
            tracing::error!(error = %e, "roster write failed");
            StanzaError::new(StanzaCondition::InternalServerError).reply_to(iq)
        }
    }
}

/// Adds or updates an item's name and groups (never its subscription), then pushes it.
pub async fn upsert_item(
    node: &Arc<Node>,
    user: &BareJid,
    contact: &BareJid,
    name: Option<String>,
    groups: Vec<String>,
) -> Result<Roster, RosterError> {
    let key = contact.to_string();
    let roster = node
        .storage
        .modify_roster(user, &mut |roster: &mut Roster| {
            let item = roster
                .items
                .entry(key.clone())
                .or_insert_with(|| RosterItem::new(key.clone()));
            item.name = name.clone();
            item.groups = groups.clone();
            if roster.pending_in.remove(&key).is_some() {
                item.pending_in = true;
            }
            roster.version += 1;
        })
        .await?;
    push_item(node, user, &roster, &key);
    Ok(roster)
}

/// Removes an item (RFC 6121 §2.5): cancels both subscription directions with the contact and
/// pushes the removal. `Ok(false)` if there was no such item.
pub async fn remove_item(
    node: &Arc<Node>,
    user: &BareJid,
    contact: &BareJid,
) -> Result<bool, RosterError> {
    let key = contact.to_string();
    let mut removed: Option<RosterItem> = None;
    let roster = node
        .storage
        .modify_roster(user, &mut |roster: &mut Roster| {
            removed = roster.items.remove(&key);
            if removed.is_some() {
                roster.version += 1;
            }
        })
        .await?;
    let Some(old) = removed else {
        return Ok(false);
    };
    push_item(node, user, &roster, &key);
    let user_text = user.to_string();
    if old.subscription.has_to() || old.ask {
        super::presence::send_subscription(node, &user_text, &key, "unsubscribe").await;
    }
    if old.subscription.has_from() || old.pending_in {
        super::presence::send_subscription(node, &user_text, &key, "unsubscribed").await;
    }
    Ok(true)
}

/// Admin API: adds a contact to a user's roster (name and groups; the subscription is left as
/// it is) and pushes it to the user's online resources.
pub async fn admin_add_contact(
    node: &Arc<Node>,
    user: &BareJid,
    contact: &BareJid,
    name: Option<String>,
    groups: Vec<String>,
) -> Result<(), RosterError> {
    if !node.account_exists(user).await {
        return Err(RosterError::NoSuchAccount(user.to_string()));
    }
    upsert_item(node, user, contact, name, groups)
        .await
        .map(|_| ())
}

/// Admin API: makes `a` and `b` subscribed to each other (`both` on both rosters), pushes the
/// change, and exchanges the current presence of their available sessions.
pub async fn admin_set_mutual_subscription(
    node: &Arc<Node>,
    a: &BareJid,
    b: &BareJid,
) -> Result<(), RosterError> {
    for user in [a, b] {
        if !node.account_exists(user).await {
            return Err(RosterError::NoSuchAccount(user.to_string()));
        }
    }
    for (user, contact) in [(a, b), (b, a)] {
        let key = contact.to_string();
        let roster = node
            .storage
            .modify_roster(user, &mut |roster: &mut Roster| {
                roster.pending_in.remove(&key);
                let item = roster
                    .items
                    .entry(key.clone())
                    .or_insert_with(|| RosterItem::new(key.clone()));
                item.subscription = Subscription::Both;
                item.ask = false;
                item.pending_in = false;
                roster.version += 1;
            })
            .await?;
        push_item(node, user, &roster, &key);
    }
    for (user, contact) in [(a, b), (b, a)] {
        super::presence::send_current_presence(node, user, &contact.to_string()).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_element_carries_state() {
        let mut item = RosterItem::new("juliet@example.com");
        item.name = Some("Juliet".into());
        item.groups = vec!["Friends".into(), "Verona".into()];
        item.subscription = Subscription::From;
        item.ask = true;
        let xml = item_element(&item).to_xml(ns::ROSTER);
        assert_eq!(
            xml,
            "<item jid='juliet@example.com' subscription='from' name='Juliet' ask='subscribe'>\
             <group>Friends</group><group>Verona</group></item>"
        );
    }
}
