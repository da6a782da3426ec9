//! RFC 6121 §3–4: subscriptions and presence.
//!
//! - Outbound presence from a client ([`outbound`]): broadcast of available/unavailable
//!   presence to subscribers and the account's own resources, probes of contacts on initial
//!   presence, directed presence, and the user's side of subscription management.
//! - Inbound subscription stanzas and probes for a local account ([`inbound`]): the contact's
//!   side of the state machine (RFC 6121 Appendix A), with roster pushes and delivery to the
//!   interested resources; requests that find nobody online wait in the roster
//!   (`pending_in`) and are redelivered at the next initial presence.
//! - [`session_ended`]: `unavailable` on the user's behalf when a stream ends.
//!
//! Subscription stanzas are always stamped with the user's bare JID (RFC 6121 §3.1.2).

use std::sync::Arc;

use bytes::Bytes;
use jid::{BareJid, Jid};
use tern_xmpp_proto::stanza::Stanza;
use tern_xmpp_proto::{Element, StanzaCondition, ns};

use super::{last, offline, privacy, vcard};
use crate::node::Node;
use crate::router::is_subscription;
use crate::sm::Session;
use crate::storage::{Roster, RosterItem, Subscription};

/// A presence from the client of `session` (`from` stamped), addressed to `to` (validated).
pub async fn outbound(node: &Arc<Node>, session: &Arc<Session>, stanza: Stanza, to: Option<Jid>) {
    let user = session.jid.to_bare();
    match to {
        None => match stanza.type_() {
            None => broadcast_available(node, session, stanza).await,
            Some("unavailable") => broadcast_unavailable(node, session, &stanza).await,
            // Subscription or probe without an address: meaningless, ignored.
            _ => {}
        },
        Some(to) => {
            if is_subscription(&stanza) {
                subscription_outbound(node, &user, &to.to_bare(), &stanza).await;
                return;
            }
            let target = to.to_string();
            match stanza.type_() {
                None => session.update_presence(|p| {
                    p.directed.insert(target);
                }),
                Some("unavailable") => session.update_presence(|p| {
                    p.directed.remove(&target);
                }),
                _ => {}
            }
            node.route(stanza).await;
        }
    }
}

fn priority_of(stanza: &Stanza) -> i8 {
    stanza
        .element(ns::CLIENT)
        .ok()
        .and_then(|e| {
            e.get_child("priority", ns::CLIENT)
                .and_then(|p| p.text().trim().parse::<i16>().ok())
        })
        .map(|p| p.clamp(-128, 127) as i8)
        .unwrap_or(0)
}

async fn roster_of(node: &Node, user: &BareJid) -> Roster {
    match node.storage.get_roster(user).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "roster read failed");
            Roster::default()
        }
    }
}

async fn broadcast_available(node: &Arc<Node>, session: &Arc<Session>, stanza: Stanza) {
    let user = session.jid.to_bare();
    // XEP-0153: the account's avatar hash, when the client did not announce it.
    let stanza = match stanza.element(ns::CLIENT) {
        Ok(element) => match vcard::with_avatar_hash(node, &user, &element).await {
            Some(updated) => Stanza::from_element(&updated, ns::CLIENT).unwrap_or(stanza),
            None => stanza,
        },
        Err(_) => stanza,
    };
    let priority = priority_of(&stanza);
    let (initial, takes_offline) = session.update_presence(|p| {
        let initial = p.available.is_none();
        // XEP-0160: stored messages go to the first available presence that can receive
        // messages to the bare JID (non-negative priority, RFC 6121 §8.5.2.1.1).
        let takes_offline = priority >= 0 && (initial || p.priority < 0);
        p.available = Some(stanza.raw().clone());
        p.priority = priority;
        (initial, takes_offline)
    });
    // XEP-0163: the account's own resource, with its capabilities, for PEP notifications.
    super::pep::presence_seen(node, &user, &session.jid, Some(&stanza)).await;
    let roster = roster_of(node, &user).await;
    let from = session.jid.to_string();
    for item in roster.items.values() {
        if item.subscription.has_from()
            && privacy::presence_out_allowed(node, session, &item.jid).await
        {
            node.route(stanza.with_addresses(Some(&from), Some(&item.jid)))
                .await;
        }
    }
    // RFC 6121 §4.2.2: to all of the user's available resources, this one included.
    let own = stanza.with_addresses(Some(&from), Some(&user.to_string()));
    for other in node.sm.resources(&user) {
        if other.is_available() {
            node.deliver(&other, &own);
        }
    }
    if !initial {
        if takes_offline {
            offline::deliver_stored(node, session).await;
        }
        return;
    }
    // Initial presence: probe the contacts this user is subscribed to.
    for item in roster.items.values() {
        if item.subscription.has_to() {
            probe_contact(node, session, &item.jid).await;
        }
    }
    redeliver_pending(node, session, &roster);
    if takes_offline {
        offline::deliver_stored(node, session).await;
    }
}

/// The presence of a contact's available sessions, delivered to `session`: read here when the
/// contact lives here, asked with a `probe` stanza over the mesh (or S2S) otherwise.
async fn probe_contact(node: &Arc<Node>, session: &Arc<Session>, contact: &str) {
    let Ok(contact_jid) = BareJid::new(contact) else {
        return;
    };
    // A contact of another server, or one homed in another datacenter of the mesh: its home
    // answers a probe with the presence of its sessions.
    if !node.serves(contact_jid.domain().as_str()) || node.remote_home(&contact_jid).is_some() {
        let probe = Element::new("presence", ns::CLIENT)
            .with_attr("type", "probe")
            .with_attr("from", session.jid.to_bare().to_string())
            .with_attr("to", contact.to_owned());
        if let Ok(stanza) = Stanza::from_element(&probe, ns::CLIENT) {
            node.route(stanza).await;
        }
        return;
    }
    let to = session.jid.to_string();
    for other in node.sm.resources(&contact_jid) {
        if let Some(raw) = other.presence().available
            && let Ok(presence) = Stanza::from_frame(raw)
        {
            let presence = presence.with_addresses(Some(&other.jid.to_string()), Some(&to));
            node.deliver(session, &presence);
        }
    }
}

/// Subscription requests received while the user was offline.
fn redeliver_pending(node: &Node, session: &Session, roster: &Roster) {
    let user = session.jid.to_bare().to_string();
    for (contact, xml) in &roster.pending_in {
        let stanza = Stanza::from_frame(Bytes::from(xml.clone()))
            .ok()
            .or_else(|| subscribe_from(contact, &user));
        if let Some(stanza) = stanza {
            node.deliver(session, &stanza);
        }
    }
    for item in roster.items.values().filter(|i| i.pending_in) {
        if let Some(stanza) = subscribe_from(&item.jid, &user) {
            node.deliver(session, &stanza);
        }
    }
}

fn subscribe_from(contact: &str, user: &str) -> Option<Stanza> {
    let presence = Element::new("presence", ns::CLIENT)
        .with_attr("type", "subscribe")
        .with_attr("from", contact.to_owned())
        .with_attr("to", user.to_owned());
    Stanza::from_element(&presence, ns::CLIENT).ok()
}

async fn broadcast_unavailable(node: &Arc<Node>, session: &Session, stanza: &Stanza) {
    let (was_available, directed) = session.update_presence(|p| {
        let was = p.available.take().is_some();
        (was, std::mem::take(&mut p.directed))
    });
    let user = session.jid.to_bare();
    super::pep::presence_seen(node, &user, &session.jid, None).await;
    let from = session.jid.to_string();
    let roster = roster_of(node, &user).await;
    let mut sent_to = std::collections::HashSet::new();
    if was_available {
        // XEP-0012: recorded before anyone hears of it, so a contact that asks right after the
        // `unavailable` finds it.
        let others_available = node
            .sm
            .any_resource(&user, |o| o.conn_id != session.conn_id && o.is_available());
        if !others_available {
            let status = stanza
                .element(ns::CLIENT)
                .ok()
                .and_then(|e| e.get_child("status", ns::CLIENT).map(Element::text))
                .unwrap_or_default();
            last::record(node, &user, status).await;
        }
        for item in roster.items.values() {
            if item.subscription.has_from()
                && privacy::presence_out_allowed(node, session, &item.jid).await
            {
                sent_to.insert(item.jid.clone());
                node.route(stanza.with_addresses(Some(&from), Some(&item.jid)))
                    .await;
            }
        }
        let own = stanza.with_addresses(Some(&from), Some(&user.to_string()));
        for other in node.sm.resources(&user) {
            if other.conn_id == session.conn_id || other.is_available() {
                node.deliver(&other, &own);
            }
        }
    }
    for target in directed {
        if !sent_to.contains(&target) {
            node.route(stanza.with_addresses(Some(&from), Some(&target)))
                .await;
        }
    }
}

/// The stream of `session` ended: `unavailable` on its behalf if it was available or sent
/// directed presence (RFC 6121 §4.5.2).
pub async fn session_ended(node: &Arc<Node>, session: &Session) {
    let state = session.presence();
    if state.available.is_none() && state.directed.is_empty() {
        return;
    }
    let unavailable = Element::new("presence", ns::CLIENT)
        .with_attr("type", "unavailable")
        .with_attr("from", session.jid.to_string());
    if let Ok(stanza) = Stanza::from_element(&unavailable, ns::CLIENT) {
        broadcast_unavailable(node, session, &stanza).await;
    }
}

/// Routes a subscription stanza of `type_` from `user` (bare) to `contact`.
pub async fn send_subscription(node: &Arc<Node>, user: &str, contact: &str, type_: &str) {
    let presence = Element::new("presence", ns::CLIENT)
        .with_attr("type", type_.to_owned())
        .with_attr("from", user.to_owned())
        .with_attr("to", contact.to_owned());
    if let Ok(stanza) = Stanza::from_element(&presence, ns::CLIENT) {
        node.route(stanza).await;
    }
}

/// Sends the current presence of each available session of `user` to `contact`.
pub async fn send_current_presence(node: &Arc<Node>, user: &BareJid, contact: &str) {
    for session in node.sm.resources(user) {
        if let Some(raw) = session.presence().available
            && let Ok(presence) = Stanza::from_frame(raw)
        {
            node.route(presence.with_addresses(Some(&session.jid.to_string()), Some(contact)))
                .await;
        }
    }
}

async fn send_unavailable_from_sessions(node: &Arc<Node>, user: &BareJid, contact: &str) {
    for session in node.sm.resources(user) {
        if session.is_available() {
            let unavailable = Element::new("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", session.jid.to_string())
                .with_attr("to", contact.to_owned());
            if let Ok(stanza) = Stanza::from_element(&unavailable, ns::CLIENT) {
                node.route(stanza).await;
            }
        }
    }
}

/// Applies `change` to the roster item of `contact` in `user`'s roster, in one transaction.
/// Returns the stored roster and whether anything changed (the version is bumped then).
async fn change_item(
    node: &Node,
    user: &BareJid,
    contact: &str,
    mut change: impl FnMut(&mut Roster) -> bool + Send,
) -> Option<(Roster, bool)> {
    let mut changed = false;
    let result = node
        .storage
        .modify_roster(user, &mut |roster: &mut Roster| {
            changed = change(roster);
            if changed {
                roster.version += 1;
            }
        })
        .await;
    match result {
        Ok(roster) => Some((roster, changed)),
        Err(e) => {
            tracing::warn!(error = %e, user = %user, contact, "roster update failed");
            None
        }
    }
}

/// The user's side of subscription management (RFC 6121 §3, outbound).
async fn subscription_outbound(
    node: &Arc<Node>,
    user: &BareJid,
    contact: &BareJid,
    stanza: &Stanza,
) {
    let key = contact.to_string();
    let user_text = user.to_string();
    let type_ = stanza.type_().map(str::to_owned).unwrap_or_default();
    match type_.as_str() {
        "subscribe" => {
            if let Some((roster, changed)) = change_item(node, user, &key, |roster| {
                let item = roster
                    .items
                    .entry(key.clone())
                    .or_insert_with(|| RosterItem::new(key.clone()));
                if item.subscription.has_to() || item.ask {
                    return false;
                }
                item.ask = true;
                true
            })
            .await
                && changed
            {
                super::roster::push_item(node, user, &roster, &key);
            }
            node.route(stanza.with_addresses(Some(&user_text), Some(&key)))
                .await;
        }
        "subscribed" => {
            let Some((roster, changed)) = change_item(node, user, &key, |roster| {
                let from_map = roster.pending_in.remove(&key).is_some();
                let item_pending = roster.items.get(&key).is_some_and(|i| i.pending_in);
                if !from_map && !item_pending {
                    return false;
                }
                let item = roster
                    .items
                    .entry(key.clone())
                    .or_insert_with(|| RosterItem::new(key.clone()));
                item.pending_in = false;
                item.subscription = match item.subscription {
                    Subscription::None | Subscription::From => Subscription::From,
                    Subscription::To | Subscription::Both => Subscription::Both,
                };
                true
            })
            .await
            else {
                return;
            };
            if !changed {
                // No pending request: pre-approval is not offered, so nothing to do.
                return;
            }
            super::roster::push_item(node, user, &roster, &key);
            node.route(stanza.with_addresses(Some(&user_text), Some(&key)))
                .await;
            send_current_presence(node, user, &key).await;
        }
        "unsubscribe" => {
            if let Some((roster, changed)) = change_item(node, user, &key, |roster| {
                let Some(item) = roster.items.get_mut(&key) else {
                    return false;
                };
                if !item.subscription.has_to() && !item.ask {
                    return false;
                }
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::Both | Subscription::From => Subscription::From,
                    Subscription::To | Subscription::None => Subscription::None,
                };
                true
            })
            .await
                && changed
            {
                super::roster::push_item(node, user, &roster, &key);
            }
            node.route(stanza.with_addresses(Some(&user_text), Some(&key)))
                .await;
        }
        "unsubscribed" => {
            let mut had_from = false;
            if let Some((roster, changed)) = change_item(node, user, &key, |roster| {
                let from_map = roster.pending_in.remove(&key).is_some();
                let Some(item) = roster.items.get_mut(&key) else {
                    return from_map;
                };
                if !item.subscription.has_from() && !item.pending_in {
                    return from_map;
                }
                had_from = item.subscription.has_from();
                item.pending_in = false;
                item.subscription = match item.subscription {
                    Subscription::Both | Subscription::To => Subscription::To,
                    Subscription::From | Subscription::None => Subscription::None,
                };
                true
            })
            .await
                && changed
            {
                super::roster::push_item(node, user, &roster, &key);
            }
            node.route(stanza.with_addresses(Some(&user_text), Some(&key)))
                .await;
            if had_from {
                send_unavailable_from_sessions(node, user, &key).await;
            }
        }
        _ => {}
    }
}

/// A subscription stanza or probe for the local account `user` (RFC 6121 §3, inbound, and
/// §4.3 probes).
pub async fn inbound(node: &Arc<Node>, stanza: Stanza, user: BareJid) {
    let Some(from) = stanza.from().and_then(|f| Jid::new(f).ok()) else {
        return;
    };
    let contact = from.to_bare();
    let key = contact.to_string();
    let user_text = user.to_string();
    let type_ = stanza.type_().map(str::to_owned).unwrap_or_default();
    match type_.as_str() {
        "probe" => {
            let roster = roster_of(node, &user).await;
            let subscribed = roster
                .items
                .get(&key)
                .is_some_and(|i| i.subscription.has_from());
            if !subscribed || contact == user {
                return;
            }
            let prober = from.to_string();
            let mut any = false;
            for session in node.sm.resources(&user) {
                if let Some(raw) = session.presence().available
                    && let Ok(presence) = Stanza::from_frame(raw)
                {
                    any = true;
                    node.route(
                        presence.with_addresses(Some(&session.jid.to_string()), Some(&prober)),
                    )
                    .await;
                }
            }
            if !any {
                let unavailable = Element::new("presence", ns::CLIENT)
                    .with_attr("type", "unavailable")
                    .with_attr("from", user_text)
                    .with_attr("to", prober);
                if let Ok(stanza) = Stanza::from_element(&unavailable, ns::CLIENT) {
                    node.route(stanza).await;
                }
            }
        }
        "subscribe" => {
            let raw = String::from_utf8_lossy(stanza.raw()).into_owned();
            let mut auto_approve = false;
            let result = change_item(node, &user, &key, |roster| {
                match roster.items.get_mut(&key) {
                    Some(item) if item.subscription.has_from() => {
                        auto_approve = true;
                        false
                    }
                    Some(item) => {
                        let changed = !item.pending_in;
                        item.pending_in = true;
                        changed
                    }
                    None => {
                        roster.pending_in.insert(key.clone(), raw.clone());
                        false
                    }
                }
            })
            .await;
            if result.is_none() {
                return;
            }
            if auto_approve {
                // Already subscribed: answer for the user (RFC 6121 §3.1.3).
                send_subscription(node, &user_text, &key, "subscribed").await;
                return;
            }
            deliver_to_interested(node, &user, &stanza);
        }
        "subscribed" => {
            if let Some((roster, true)) = change_item(node, &user, &key, |roster| {
                let Some(item) = roster.items.get_mut(&key) else {
                    return false;
                };
                if !item.ask {
                    return false;
                }
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::None | Subscription::To => Subscription::To,
                    Subscription::From | Subscription::Both => Subscription::Both,
                };
                true
            })
            .await
            {
                super::roster::push_item(node, &user, &roster, &key);
                deliver_to_interested(node, &user, &stanza);
            }
        }
        "unsubscribe" => {
            let mut had_from = false;
            if let Some((roster, true)) = change_item(node, &user, &key, |roster| {
                let from_map = roster.pending_in.remove(&key).is_some();
                let Some(item) = roster.items.get_mut(&key) else {
                    return from_map;
                };
                if !item.subscription.has_from() && !item.pending_in {
                    return from_map;
                }
                had_from = item.subscription.has_from();
                item.pending_in = false;
                item.subscription = match item.subscription {
                    Subscription::Both | Subscription::To => Subscription::To,
                    Subscription::From | Subscription::None => Subscription::None,
                };
                true
            })
            .await
            {
                super::roster::push_item(node, &user, &roster, &key);
                deliver_to_interested(node, &user, &stanza);
                if had_from {
                    // RFC 6121 §3.3.3: the contact no longer sees the user's presence.
                    send_unavailable_from_sessions(node, &user, &key).await;
                }
            }
        }
        "unsubscribed" => {
            if let Some((roster, true)) = change_item(node, &user, &key, |roster| {
                let Some(item) = roster.items.get_mut(&key) else {
                    return false;
                };
                if !item.subscription.has_to() && !item.ask {
                    return false;
                }
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::Both | Subscription::From => Subscription::From,
                    Subscription::To | Subscription::None => Subscription::None,
                };
                true
            })
            .await
            {
                super::roster::push_item(node, &user, &roster, &key);
                deliver_to_interested(node, &user, &stanza);
            }
        }
        _ => {
            node.bounce(&stanza, StanzaCondition::BadRequest).await;
        }
    }
}

/// Delivers a subscription stanza to the user's available resources that asked for the
/// roster (RFC 6121 §3.1.3), stamped from the contact's bare JID.
fn deliver_to_interested(node: &Node, user: &BareJid, stanza: &Stanza) {
    let from = stanza
        .from()
        .and_then(|f| Jid::new(f).ok())
        .map(|j| j.to_bare().to_string());
    let stanza = stanza.with_addresses(from.as_deref(), Some(&user.to_string()));
    for session in node.sm.resources(user) {
        let p = session.presence();
        if p.available.is_some() && p.interested {
            node.deliver(&session, &stanza);
        }
    }
}
