//! XEP-0016 privacy lists and XEP-0191 blocking command, on one set of data: an account's
//! named privacy lists and its default list; the blocklist is the list named
//! [`BLOCKLIST`], whose items deny every kind of stanza, and it always applies on top of the
//! default (or a session's active) list — as in MongooseIM, blocking is a view of privacy lists.
//!
//! Enforcement, at the account's home (where its sessions are kept, so edge sessions too):
//! - stanzas *to* the account from a contact its lists deny: messages and IQ requests come back
//!   with `<service-unavailable/>` (XEP-0016 §2.13, XEP-0191 §3.3), presence is dropped;
//! - stanzas *from* the account's clients to a denied contact: `<not-acceptable/>` with
//!   `<blocked xmlns='urn:xmpp:blocking:errors'/>` for messages and IQs (XEP-0191 §3.4),
//!   outbound presence dropped.
//!
//! Inbound checks use the blocklist and the default list (an incoming stanza for the account is
//! not yet any one session's) — unless a session of the account chose an active list: then
//! the account-wide check uses the blocklist only, and each session is checked as the stanza
//! is given to it, with its active list or the default ([`session_accepts`]). Outbound checks
//! use the blocklist and the sending session's active list, or the default. Lists live in memory for the accounts that have any (loaded at
//! start), so an account without lists costs one map lookup per stanza.

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;
use jid::{BareJid, Jid};
use serde::{Deserialize, Serialize};
use tern_xmpp_proto::{Element, Stanza, StanzaCondition, StanzaError, StanzaKind, ns};

use super::result_for;
use crate::node::Node;
use crate::sm::Session;
use crate::storage::{Roster, Subscription};

/// XEP-0016's namespace.
pub const NS_PRIVACY: &str = "jabber:iq:privacy";
/// XEP-0191's namespace.
pub const NS_BLOCKING: &str = "urn:xmpp:blocking";
/// XEP-0191's error namespace.
const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// The privacy list that holds the blocklist.
pub const BLOCKLIST: &str = "urn:xmpp:blocking";
/// The account item kind.
const KIND: &str = "privacy";
/// Most items one list may hold.
const MAX_ITEMS: usize = 1000;

/// What an item matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Match {
    /// Every contact (an item without `type`: the fall-through).
    All,
    /// A JID, as XEP-0016 §2.1 compares them.
    Jid,
    /// A roster group.
    Group,
    /// A subscription state (`both`, `to`, `from`, `none`).
    Subscription,
}

/// Which stanzas an item covers (all when none is named).
pub mod stanzas {
    /// `<message/>`.
    pub const MESSAGE: u8 = 1;
    /// `<iq/>`.
    pub const IQ: u8 = 2;
    /// Incoming presence.
    pub const PRESENCE_IN: u8 = 4;
    /// Outgoing presence.
    pub const PRESENCE_OUT: u8 = 8;
    /// All of them.
    pub const ALL: u8 = MESSAGE | IQ | PRESENCE_IN | PRESENCE_OUT;
}

/// One item of a privacy list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// What it matches on.
    pub matches: Match,
    /// The JID, group or subscription it matches.
    pub value: String,
    /// Allow or deny.
    pub allow: bool,
    /// Its position: items apply in increasing order, the first that matches decides.
    pub order: u32,
    /// The stanzas it covers, a [`stanzas`] mask.
    pub stanzas: u8,
}

/// An account's privacy lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lists {
    /// The default list's name.
    pub default: Option<String>,
    /// Lists by name, items sorted by order.
    pub lists: BTreeMap<String, Vec<Item>>,
}

impl Lists {
    fn is_empty(&self) -> bool {
        self.default.is_none() && self.lists.values().all(Vec::is_empty)
    }

    fn blocklist(&self) -> &[Item] {
        self.lists.get(BLOCKLIST).map_or(&[], Vec::as_slice)
    }
}

/// The lists of the accounts that have any.
#[derive(Debug, Default)]
pub struct Privacy {
    lists: DashMap<BareJid, Arc<Lists>>,
    /// How many accounts have lists: routing skips every lookup while it is 0.
    count: std::sync::atomic::AtomicUsize,
}

impl Privacy {
    /// Whether any account of this node has lists.
    pub fn any(&self) -> bool {
        self.count.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    fn get(&self, user: &BareJid) -> Option<Arc<Lists>> {
        if !self.any() {
            return None;
        }
        self.lists.get(user).map(|l| l.clone())
    }

    fn recount(&self) {
        self.count
            .store(self.lists.len(), std::sync::atomic::Ordering::Relaxed);
    }

    fn put(&self, user: &BareJid, lists: Lists) {
        if lists.is_empty() {
            self.lists.remove(user);
        } else {
            self.lists.insert(user.clone(), Arc::new(lists));
        }
        self.recount();
    }

    /// Forgets `user` (its account was removed or moved away).
    pub fn forget(&self, user: &BareJid) {
        self.lists.remove(user);
        self.recount();
    }

    /// Forgets every account of `domain`.
    pub fn forget_domain(&self, domain: &str) {
        self.lists
            .retain(|user, _| user.domain().as_str() != domain);
        self.recount();
    }
}

/// Whether `user`'s presence may go to `contact` (broadcasts skip denied contacts).
pub async fn presence_out_allowed(node: &Node, session: &Session, contact: &str) -> bool {
    let user = session.jid.to_bare();
    if node.privacy.get(&user).is_none() {
        return true;
    }
    let Ok(contact) = Jid::new(contact) else {
        return true;
    };
    let probe = Element::new("presence", ns::CLIENT);
    let Ok(stanza) = Stanza::from_element(&probe, ns::CLIENT) else {
        return true;
    };
    let active = session.privacy_list();
    allowed(node, &user, active.as_deref(), &contact, &stanza, false).await
}

/// Loads the lists of every account that has any (at start).
pub async fn load(node: &Node) -> crate::storage::Result<usize> {
    let owners = node.storage.item_owners(KIND).await?;
    for owner in &owners {
        reload(node, owner).await;
    }
    Ok(owners.len())
}

/// Reads `user`'s lists from storage into memory (after a change, or an account moved here).
pub async fn reload(node: &Node, user: &BareJid) {
    match read(node, user).await {
        Ok(lists) => node.privacy.put(user, lists),
        Err(e) => tracing::error!(%user, error = %e, "privacy lists not loaded"),
    }
}

async fn read(node: &Node, user: &BareJid) -> crate::storage::Result<Lists> {
    Ok(match node.storage.get_item(user, KIND, "").await? {
        Some(bytes) => postcard::from_bytes(&bytes).unwrap_or_else(|e| {
            tracing::error!(%user, error = %e, "unreadable privacy lists ignored");
            Lists::default()
        }),
        None => Lists::default(),
    })
}

async fn write(node: &Node, user: &BareJid, lists: Lists) -> crate::storage::Result<()> {
    let value = if lists.is_empty() {
        None
    } else {
        // Plain data into a Vec cannot fail.
        Some(postcard::to_allocvec(&lists).expect("privacy lists always encode"))
    };
    node.storage.put_item(user, KIND, "", value).await?;
    node.privacy.put(user, lists);
    Ok(())
}

/// Whether a list's item value `pattern` (a JID as XEP-0016 §2.1 writes it) matches `contact`.
fn jid_matches(pattern: &str, contact: &Jid) -> bool {
    let Ok(pattern) = Jid::new(pattern) else {
        return false;
    };
    if pattern.domain() != contact.domain() {
        return false;
    }
    match (pattern.node(), pattern.resource()) {
        (Some(node), Some(resource)) => {
            contact.node() == Some(node) && contact.resource() == Some(resource)
        }
        (Some(node), None) => contact.node() == Some(node),
        (None, Some(resource)) => contact.resource() == Some(resource),
        (None, None) => true,
    }
}

/// The class of `stanza` seen from the account: `inbound` for stanzas to it.
fn class_of(stanza: &Stanza, inbound: bool) -> u8 {
    match (stanza.kind, inbound) {
        (StanzaKind::Message, _) => stanzas::MESSAGE,
        (StanzaKind::Iq, _) => stanzas::IQ,
        (StanzaKind::Presence, true) => stanzas::PRESENCE_IN,
        (StanzaKind::Presence, false) => stanzas::PRESENCE_OUT,
    }
}

/// The decision of `items` for `contact` and `class` (`None`: no item matched).
fn decide(items: &[Item], contact: &Jid, class: u8, roster: Option<&Roster>) -> Option<bool> {
    items.iter().find_map(|item| {
        if item.stanzas & class == 0 {
            return None;
        }
        let matched = match item.matches {
            Match::All => true,
            Match::Jid => jid_matches(&item.value, contact),
            Match::Group | Match::Subscription => {
                let entry = roster.and_then(|r| r.items.get(contact.to_bare().as_str()));
                match item.matches {
                    Match::Group => entry.is_some_and(|e| e.groups.contains(&item.value)),
                    _ => {
                        let state = entry.map_or(Subscription::None, |e| e.subscription);
                        state.as_str() == item.value
                    }
                }
            }
        };
        matched.then_some(item.allow)
    })
}

fn needs_roster(items: &[Item]) -> bool {
    items
        .iter()
        .any(|i| matches!(i.matches, Match::Group | Match::Subscription))
}

/// Whether the lists of `user` (with `active` as the session's list, if any) let `stanza`
/// pass between `user` and `contact`.
async fn allowed(
    node: &Node,
    user: &BareJid,
    active: Option<&str>,
    contact: &Jid,
    stanza: &Stanza,
    inbound: bool,
) -> bool {
    allowed_by(node, user, active, contact, stanza, inbound, true).await
}

/// [`allowed`], optionally without the default list (`with_default == false`: only the
/// blocklist and `active`).
async fn allowed_by(
    node: &Node,
    user: &BareJid,
    active: Option<&str>,
    contact: &Jid,
    stanza: &Stanza,
    inbound: bool,
    with_default: bool,
) -> bool {
    let Some(lists) = node.privacy.get(user) else {
        return true;
    };
    let class = class_of(stanza, inbound);
    if decide(lists.blocklist(), contact, class, None) == Some(false) {
        return false;
    }
    let default = with_default.then(|| lists.default.clone()).flatten();
    let name = active.map(str::to_owned).or(default);
    let Some(items) = name.as_deref().and_then(|n| lists.lists.get(n)) else {
        return true;
    };
    let roster = if needs_roster(items) {
        node.storage.get_roster(user).await.ok()
    } else {
        None
    };
    decide(items, contact, class, roster.as_ref()) != Some(false)
}

/// A stanza from `from` to the account `user` (at its home): `false` when its lists deny it,
/// after answering as the protocols say.
pub async fn inbound_allowed(node: &Arc<Node>, user: &BareJid, stanza: &Stanza) -> bool {
    if node.privacy.get(user).is_none() {
        return true;
    }
    let Some(from) = stanza.from().and_then(|f| Jid::new(f).ok()) else {
        return true;
    };
    if from.to_bare() == *user || from.node().is_none() {
        // The account itself and servers are never filtered.
        return true;
    }
    // With an active list somewhere, the default list is applied per session instead.
    let per_session = any_active(node, user);
    if allowed_by(node, user, None, &from, stanza, true, !per_session).await {
        return true;
    }
    if refusal_answered(stanza) {
        node.bounce(stanza, StanzaCondition::ServiceUnavailable)
            .await;
    }
    false
}

/// Whether a session of `user` chose an active list.
fn any_active(node: &Node, user: &BareJid) -> bool {
    node.sm.any_resource(user, |s| s.privacy_list().is_some())
}

/// Whether inbound stanzas for `user` must also be checked session by session (some session
/// chose an active list); cheap when no account has lists.
pub fn filters_sessions(node: &Node, user: &BareJid) -> bool {
    node.privacy.any() && node.privacy.get(user).is_some() && any_active(node, user)
}

/// Whether `session`'s active list (or the account's default) lets the inbound `stanza` reach
/// it. Called, when [`filters_sessions`] says so, as the stanza is given to the session.
pub async fn session_accepts(node: &Node, session: &Session, stanza: &Stanza) -> bool {
    let user = session.jid.to_bare();
    let Some(from) = stanza.from().and_then(|f| Jid::new(f).ok()) else {
        return true;
    };
    if from.to_bare() == user || from.node().is_none() {
        return true;
    }
    let active = session.privacy_list();
    allowed(node, &user, active.as_deref(), &from, stanza, true).await
}

/// Whether a refused inbound stanza is answered with an error (messages and IQ requests).
pub fn refusal_answered(stanza: &Stanza) -> bool {
    match stanza.kind {
        StanzaKind::Message => !stanza.is_type("error") && !stanza.is_type("groupchat"),
        StanzaKind::Iq => stanza.is_type("get") || stanza.is_type("set"),
        StanzaKind::Presence => false,
    }
}

/// A stanza the client of `session` sends to `to`: `false` when the account's lists deny it,
/// after answering the client.
pub async fn outbound_allowed(
    node: &Arc<Node>,
    session: &Session,
    to: &Jid,
    stanza: &Stanza,
) -> bool {
    let user = session.jid.to_bare();
    if node.privacy.get(&user).is_none() || to.to_bare() == user {
        return true;
    }
    let active = session.privacy_list();
    if allowed(node, &user, active.as_deref(), to, stanza, false).await {
        return true;
    }
    let answers = match stanza.kind {
        StanzaKind::Message => !stanza.is_type("error"),
        StanzaKind::Iq => stanza.is_type("get") || stanza.is_type("set"),
        StanzaKind::Presence => false,
    };
    if answers && let Ok(element) = stanza.element(ns::CLIENT) {
        let mut reply =
            add_blocked(StanzaError::new(StanzaCondition::NotAcceptable).reply_to(&element));
        reply.set_attr("to", session.jid.to_string());
        if let Ok(reply) = Stanza::from_element(&reply, ns::CLIENT) {
            node.deliver(session, &reply);
        }
    }
    false
}

/// Adds XEP-0191's `<blocked/>` to the `<error/>` of an error reply.
fn add_blocked(reply: Element) -> Element {
    let mut out = Element::new(reply.name(), reply.ns());
    for (name, value) in reply.attrs() {
        out.set_attr(name, value);
    }
    for child in reply.children() {
        if child.name() == "error" {
            out.append_child(
                child
                    .clone()
                    .with_child(Element::new("blocked", NS_BLOCKING_ERRORS)),
            );
        } else {
            out.append_child(child.clone());
        }
    }
    out
}

// ---- XEP-0191 --------------------------------------------------------------------------------

/// A blocking command from the client of `session`.
pub async fn handle_blocking(
    node: &Arc<Node>,
    session: &Session,
    iq: &Element,
    request: &Element,
) -> Element {
    if !node.config.modules.blocking.enabled {
        return StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(iq);
    }
    let user = session.jid.to_bare();
    let get = iq.attr("type") == Some("get");
    match (request.name(), get) {
        ("blocklist", true) => {
            session.set_blocklist_requested();
            let lists = node.privacy.get(&user).unwrap_or_default();
            let mut list = Element::new("blocklist", NS_BLOCKING);
            for item in lists.blocklist() {
                list.append_child(
                    Element::new("item", NS_BLOCKING).with_attr("jid", item.value.clone()),
                );
            }
            result_for(iq).with_child(list)
        }
        ("block" | "unblock", false) => {
            let mut jids = Vec::new();
            for item in request.children().filter(|c| c.is("item", NS_BLOCKING)) {
                match item.attr("jid").map(Jid::new) {
                    Some(Ok(jid)) => jids.push(jid.to_string()),
                    _ => return StanzaError::new(StanzaCondition::JidMalformed).reply_to(iq),
                }
            }
            let block = request.name() == "block";
            if block && jids.is_empty() {
                return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
            }
            match change_blocklist(node, &user, block, &jids).await {
                Ok(added) => {
                    push_blocking(node, &user, request.name(), &jids);
                    if block {
                        hide_from(node, &user, &added).await;
                    }
                    result_for(iq)
                }
                Err(condition) => StanzaError::new(condition).reply_to(iq),
            }
        }
        _ => StanzaError::new(StanzaCondition::BadRequest).reply_to(iq),
    }
}

/// Adds (or removes; all of them for an empty unblock) `jids` to `user`'s blocklist; returns
/// the JIDs newly blocked.
async fn change_blocklist(
    node: &Node,
    user: &BareJid,
    block: bool,
    jids: &[String],
) -> Result<Vec<String>, StanzaCondition> {
    let mut lists = read(node, user)
        .await
        .map_err(|_| StanzaCondition::InternalServerError)?;
    let list = lists.lists.entry(BLOCKLIST.to_owned()).or_default();
    let mut added = Vec::new();
    if block {
        for jid in jids {
            if !list.iter().any(|i| i.value == *jid) {
                added.push(jid.clone());
                list.push(Item {
                    matches: Match::Jid,
                    value: jid.clone(),
                    allow: false,
                    order: u32::try_from(list.len()).unwrap_or(u32::MAX),
                    stanzas: stanzas::ALL,
                });
            }
        }
        if list.len() > MAX_ITEMS {
            return Err(StanzaCondition::ResourceConstraint);
        }
    } else if jids.is_empty() {
        list.clear();
    } else {
        list.retain(|i| !jids.contains(&i.value));
    }
    if lists.lists.get(BLOCKLIST).is_some_and(Vec::is_empty) {
        lists.lists.remove(BLOCKLIST);
    }
    write(node, user, lists)
        .await
        .map_err(|_| StanzaCondition::InternalServerError)?;
    Ok(added)
}

/// Pushes a block or unblock to the sessions of `user` that asked for the blocklist.
fn push_blocking(node: &Node, user: &BareJid, what: &str, jids: &[String]) {
    for session in node.sm.resources(user) {
        if !session.blocklist_requested() {
            continue;
        }
        let mut change = Element::new(what, NS_BLOCKING);
        for jid in jids {
            change.append_child(Element::new("item", NS_BLOCKING).with_attr("jid", jid.clone()));
        }
        let push = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("push-{}", node.conn_id()))
            .with_attr("to", session.jid.to_string())
            .with_child(change);
        if let Ok(stanza) = Stanza::from_element(&push, ns::CLIENT) {
            node.deliver(&session, &stanza);
        }
    }
}

/// Newly blocked contacts stop seeing the account as available (XEP-0191 §3.3).
async fn hide_from(node: &Arc<Node>, user: &BareJid, blocked: &[String]) {
    for session in node.sm.resources(user) {
        if !session.is_available() {
            continue;
        }
        for contact in blocked {
            let unavailable = Element::new("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", session.jid.to_string())
                .with_attr("to", contact.clone());
            if let Ok(stanza) = Stanza::from_element(&unavailable, ns::CLIENT) {
                node.route(stanza).await;
            }
        }
    }
}

// ---- XEP-0016 --------------------------------------------------------------------------------

fn list_element(name: &str, items: &[Item]) -> Element {
    let mut list = Element::new("list", NS_PRIVACY).with_attr("name", name.to_owned());
    for item in items {
        let mut e = Element::new("item", NS_PRIVACY)
            .with_attr("action", if item.allow { "allow" } else { "deny" })
            .with_attr("order", item.order.to_string());
        match item.matches {
            Match::All => {}
            Match::Jid => {
                e = e
                    .with_attr("type", "jid")
                    .with_attr("value", item.value.clone())
            }
            Match::Group => {
                e = e
                    .with_attr("type", "group")
                    .with_attr("value", item.value.clone())
            }
            Match::Subscription => {
                e = e
                    .with_attr("type", "subscription")
                    .with_attr("value", item.value.clone());
            }
        }
        if item.stanzas != stanzas::ALL {
            for (bit, name) in [
                (stanzas::MESSAGE, "message"),
                (stanzas::IQ, "iq"),
                (stanzas::PRESENCE_IN, "presence-in"),
                (stanzas::PRESENCE_OUT, "presence-out"),
            ] {
                if item.stanzas & bit != 0 {
                    e.append_child(Element::new(name, NS_PRIVACY));
                }
            }
        }
        list.append_child(e);
    }
    list
}

fn parse_item(e: &Element) -> Result<Item, StanzaCondition> {
    let allow = match e.attr("action") {
        Some("allow") => true,
        Some("deny") => false,
        _ => return Err(StanzaCondition::BadRequest),
    };
    let order = e
        .attr("order")
        .and_then(|o| o.parse::<u32>().ok())
        .ok_or(StanzaCondition::BadRequest)?;
    let value = e.attr("value").unwrap_or_default().to_owned();
    let matches = match e.attr("type") {
        None => Match::All,
        Some("jid") if Jid::new(&value).is_ok() => Match::Jid,
        Some("group") if !value.is_empty() => Match::Group,
        Some("subscription") if matches!(value.as_str(), "both" | "to" | "from" | "none") => {
            Match::Subscription
        }
        _ => return Err(StanzaCondition::BadRequest),
    };
    let mut mask = 0;
    for child in e.children() {
        mask |= match child.name() {
            "message" => stanzas::MESSAGE,
            "iq" => stanzas::IQ,
            "presence-in" => stanzas::PRESENCE_IN,
            "presence-out" => stanzas::PRESENCE_OUT,
            _ => return Err(StanzaCondition::BadRequest),
        };
    }
    Ok(Item {
        matches,
        value,
        allow,
        order,
        stanzas: if mask == 0 { stanzas::ALL } else { mask },
    })
}

/// A `jabber:iq:privacy` request from the client of `session`.
pub async fn handle_privacy(
    node: &Arc<Node>,
    session: &Session,
    iq: &Element,
    query: &Element,
) -> Element {
    if !node.config.modules.blocking.enabled {
        return StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(iq);
    }
    let user = session.jid.to_bare();
    let Ok(mut lists) = read(node, &user).await else {
        return StanzaError::new(StanzaCondition::InternalServerError).reply_to(iq);
    };
    let children: Vec<&Element> = query.children().collect();
    if iq.attr("type") == Some("get") {
        return match children.as_slice() {
            [] => {
                let mut q = Element::new("query", NS_PRIVACY);
                if let Some(active) = session.privacy_list() {
                    q.append_child(Element::new("active", NS_PRIVACY).with_attr("name", active));
                }
                if let Some(default) = &lists.default {
                    q.append_child(
                        Element::new("default", NS_PRIVACY).with_attr("name", default.clone()),
                    );
                }
                for name in lists.lists.keys() {
                    q.append_child(
                        Element::new("list", NS_PRIVACY).with_attr("name", name.clone()),
                    );
                }
                result_for(iq).with_child(q)
            }
            [list] if list.name() == "list" => {
                match list.attr("name").and_then(|n| lists.lists.get(n)) {
                    Some(items) => result_for(iq).with_child(
                        Element::new("query", NS_PRIVACY)
                            .with_child(list_element(list.attr("name").unwrap_or_default(), items)),
                    ),
                    None => StanzaError::new(StanzaCondition::ItemNotFound).reply_to(iq),
                }
            }
            _ => StanzaError::new(StanzaCondition::BadRequest).reply_to(iq),
        };
    }
    let [request] = children.as_slice() else {
        return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
    };
    let name = request.attr("name").map(str::to_owned);
    match request.name() {
        "active" => {
            if let Some(name) = &name
                && !lists.lists.contains_key(name)
            {
                return StanzaError::new(StanzaCondition::ItemNotFound).reply_to(iq);
            }
            session.set_privacy_list(name);
            result_for(iq)
        }
        "default" => {
            if let Some(name) = &name
                && !lists.lists.contains_key(name)
            {
                return StanzaError::new(StanzaCondition::ItemNotFound).reply_to(iq);
            }
            // XEP-0016 §2.6 lets a server refuse to change the default while other sessions
            // rely on it; Tern changes it at once, for every session.
            lists.default = name;
            store_and_reply(node, &user, lists, iq).await
        }
        "list" => {
            let Some(name) = name else {
                return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
            };
            let mut items = Vec::new();
            for child in request.children() {
                match parse_item(child) {
                    Ok(item) => items.push(item),
                    Err(condition) => return StanzaError::new(condition).reply_to(iq),
                }
            }
            if items.len() > MAX_ITEMS {
                return StanzaError::new(StanzaCondition::ResourceConstraint).reply_to(iq);
            }
            if items.is_empty() {
                // Removing a list that is the default, or some session's active list, is refused.
                let in_use = lists.default.as_deref() == Some(name.as_str())
                    || node
                        .sm
                        .resources(&user)
                        .iter()
                        .any(|s| s.privacy_list().as_deref() == Some(name.as_str()));
                if in_use {
                    return StanzaError::new(StanzaCondition::Conflict).reply_to(iq);
                }
                if lists.lists.remove(&name).is_none() {
                    return StanzaError::new(StanzaCondition::ItemNotFound).reply_to(iq);
                }
            } else {
                items.sort_by_key(|i| i.order);
                lists.lists.insert(name.clone(), items);
            }
            let reply = store_and_reply(node, &user, lists, iq).await;
            push_privacy(node, &user, &name);
            reply
        }
        _ => StanzaError::new(StanzaCondition::BadRequest).reply_to(iq),
    }
}

async fn store_and_reply(node: &Node, user: &BareJid, lists: Lists, iq: &Element) -> Element {
    match write(node, user, lists).await {
        Ok(()) => result_for(iq),
        Err(e) => {
            tracing::error!(%user, error = %e, "privacy lists not stored");
            StanzaError::new(StanzaCondition::InternalServerError).reply_to(iq)
        }
    }
}

/// Tells every session of `user` that the list `name` changed (XEP-0016 §2.7).
fn push_privacy(node: &Node, user: &BareJid, name: &str) {
    for session in node.sm.resources(user) {
        let push =
            Element::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", format!("push-{}", node.conn_id()))
                .with_attr("to", session.jid.to_string())
                .with_child(Element::new("query", NS_PRIVACY).with_child(
                    Element::new("list", NS_PRIVACY).with_attr("name", name.to_owned()),
                ));
        if let Ok(stanza) = Stanza::from_element(&push, ns::CLIENT) {
            node.deliver(&session, &stanza);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::new(s).expect("jid")
    }

    #[test]
    fn jids_match_as_xep_0016_compares_them() {
        let contact = jid("romeo@example.net/orchard");
        for (pattern, matches) in [
            ("romeo@example.net/orchard", true),
            ("romeo@example.net/garden", false),
            ("romeo@example.net", true),
            ("example.net/orchard", true),
            ("example.net", true),
            ("juliet@example.net", false),
            ("example.org", false),
        ] {
            assert_eq!(jid_matches(pattern, &contact), matches, "{pattern}");
        }
    }

    #[test]
    fn the_first_matching_item_by_order_decides() {
        let item = |matches, value: &str, allow, order, stanzas| Item {
            matches,
            value: value.to_owned(),
            allow,
            order,
            stanzas,
        };
        let items = vec![
            item(Match::Jid, "nurse@example.com", true, 1, stanzas::ALL),
            item(Match::Jid, "example.com", false, 2, stanzas::MESSAGE),
            item(Match::All, "", true, 3, stanzas::ALL),
        ];
        let m = stanzas::MESSAGE;
        assert_eq!(
            decide(&items, &jid("nurse@example.com"), m, None),
            Some(true)
        );
        assert_eq!(
            decide(&items, &jid("tybalt@example.com"), m, None),
            Some(false)
        );
        assert_eq!(
            decide(&items, &jid("tybalt@example.com"), stanzas::IQ, None),
            Some(true),
            "the deny covers messages only"
        );
        assert_eq!(
            decide(&items[..2], &jid("romeo@example.net"), m, None),
            None
        );
    }

    #[test]
    fn items_parse_and_print_back() {
        let xml = "<list xmlns='jabber:iq:privacy' name='l'>\
                   <item type='jid' value='a@b' action='deny' order='1'><message/><presence-in/></item>\
                   <item action='allow' order='2'/></list>";
        let list = Element::parse(xml.as_bytes(), NS_PRIVACY).expect("xml");
        let items: Vec<Item> = list
            .children()
            .map(|c| parse_item(c).expect("item"))
            .collect();
        assert_eq!(items[0].stanzas, stanzas::MESSAGE | stanzas::PRESENCE_IN);
        assert_eq!(items[1].matches, Match::All);
        let printed = list_element("l", &items).to_xml("");
        assert!(
            printed.contains("value='a@b'") && printed.contains("<presence-in/>"),
            "{printed}"
        );
        let bad = Element::parse(b"<item action='maybe' order='1'/>", NS_PRIVACY).expect("xml");
        assert_eq!(parse_item(&bad), Err(StanzaCondition::BadRequest));
    }
}
