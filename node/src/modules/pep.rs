//! XEP-0163 personal eventing (PEP): a XEP-0060 publish-subscribe service on every account's
//! bare JID, with XEP-0223 private storage (`whitelist` nodes), XEP-0402 bookmarks kept in step
//! with XEP-0048 bookmarks in private XML storage (`urn:xmpp:bookmarks:1#compat`), and XEP-0398
//! avatar conversion between PEP and vCard.
//!
//! **Nodes** are created by the first publish (with `publish-options`) or by `<create/>`; each
//! keeps its access model (`presence`, the default; `open`; `whitelist`: the owner only), its
//! `max_items` (1 by default, `max` = `[modules.pep] max_items`) and its items, newest last, as
//! one account item of kind [`KIND`] (so they are removed and moved with the account).
//!
//! **Who is notified** (XEP-0163 §4): the account's own available resources and the available
//! resources of contacts with a presence subscription to it (not for `whitelist` nodes) whose
//! XEP-0115 capabilities list `NODE+notify`. The home of an account sees every available
//! presence of its sessions and every presence its contacts broadcast to it (also from other
//! datacenters); it remembers the resources and their `ver`, asks an unknown `ver` once with a
//! disco#info query (sent from the account's bare JID, so the answer comes back to this home),
//! keeps the answer when its hash verifies (XEP-0115 §5), and sends a resource the last item of
//! each node it wants when it becomes available or its capabilities become known.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use serde::{Deserialize, Serialize};
use sha1::{Digest as _, Sha1};
use tern_xmpp_proto::element::escape;
use tern_xmpp_proto::stanza::Stanza;
use tern_xmpp_proto::{Element, StanzaCondition, StanzaError, ns};

use super::result_for;
use crate::node::Node;
use crate::sm::lock;

/// XEP-0060.
pub const NS: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0060 owner use cases.
pub const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// XEP-0060 event notifications.
pub const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// XEP-0060 application errors.
const NS_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// XEP-0115.
const NS_CAPS: &str = "http://jabber.org/protocol/caps";
/// XEP-0004.
const NS_DATA: &str = "jabber:x:data";
/// XEP-0402 bookmarks node.
pub const NS_BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
/// XEP-0402: bookmarks kept in step with XEP-0048 private storage.
pub const BOOKMARKS_COMPAT: &str = "urn:xmpp:bookmarks:1#compat";
/// XEP-0048 bookmarks, as stored in private XML storage.
pub const NS_BOOKMARKS_LEGACY: &str = "storage:bookmarks";
/// XEP-0084 avatar nodes.
const NS_AVATAR_DATA: &str = "urn:xmpp:avatar:data";
const NS_AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0398.
pub const PEP_VCARD_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";
/// The account item kind of PEP nodes.
pub const KIND: &str = "pep";
/// Prefix of the ids of the server's capability queries.
const CAPS_QUERY: &str = "tern-caps-";

/// The disco#info features of the PEP service of an account.
pub const FEATURES: [&str; 16] = [
    NS,
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
];

/// Who may read a node's items and be notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Access {
    /// Anyone may read; contacts with a presence subscription are notified.
    Open,
    /// Contacts with a presence subscription (and the owner).
    Presence,
    /// The owner only (XEP-0223 private storage).
    Whitelist,
}

impl Access {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "open" => Some(Self::Open),
            "presence" => Some(Self::Presence),
            "whitelist" => Some(Self::Whitelist),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Presence => "presence",
            Self::Whitelist => "whitelist",
        }
    }
}

/// One published item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Item {
    id: String,
    /// The payload element, as XML.
    xml: String,
}

/// A node with its configuration and items (newest last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NodeRecord {
    access: Access,
    max_items: u32,
    items: Vec<Item>,
}

/// Configuration asked for in `publish-options` or a configuration form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Options {
    access: Option<Access>,
    max_items: Option<u32>,
}

/// What went wrong, as the stanza error to answer with.
#[derive(Debug)]
struct Refusal(StanzaError);

impl Refusal {
    fn plain(condition: StanzaCondition) -> Self {
        Self(StanzaError::new(condition))
    }

    /// A XEP-0060 error with its application condition.
    fn with(condition: StanzaCondition, pubsub: &str) -> Self {
        Self(
            StanzaError::new(condition)
                .with_app_element(Element::new(pubsub.to_owned(), NS_ERRORS)),
        )
    }
}

impl From<crate::storage::Error> for Refusal {
    fn from(e: crate::storage::Error) -> Self {
        match e {
            crate::storage::Error::UserNotFound { .. } => {
                Self::plain(StanzaCondition::ItemNotFound)
            }
            e => {
                tracing::error!(error = %e, "pep storage failed");
                Self::plain(StanzaCondition::InternalServerError)
            }
        }
    }
}

/// When a `ver` was asked for, and the (account, resource) pairs waiting for the answer.
type Waiting = (std::time::Instant, Vec<(BareJid, String)>);

/// A capabilities query without an answer is sent again (to the next resource that announces
/// the `ver`) after this long.
const ASK_AGAIN: std::time::Duration = std::time::Duration::from_secs(30);

/// What the homes here know of the resources that may want notifications (XEP-0115).
#[derive(Debug, Default)]
pub struct Caps {
    /// Per account: the available resources its PEP service has seen (its own and its
    /// contacts'), with their capabilities `ver` if they sent one.
    seen: DashMap<BareJid, HashMap<String, Option<Arc<str>>>>,
    /// Verified `ver` → features.
    features: DashMap<Arc<str>, Arc<HashSet<String>>>,
    /// `ver`s asked for, with the (account, resource) pairs waiting for the answer.
    pending: Mutex<HashMap<Arc<str>, Waiting>>,
    next_query: AtomicU64,
}

impl Caps {
    fn wants(&self, ver: Option<&Arc<str>>, feature: &str) -> bool {
        ver.and_then(|v| self.features.get(v))
            .is_some_and(|f| f.contains(feature))
    }
}

/// Serialises writes to nodes (read-modify-write of one record).
static WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn enabled(node: &Node) -> bool {
    node.config.modules.pep.enabled
}

async fn load(node: &Node, owner: &BareJid, name: &str) -> Result<Option<NodeRecord>, Refusal> {
    let Some(bytes) = node.storage.get_item(owner, KIND, name).await? else {
        return Ok(None);
    };
    match postcard::from_bytes(&bytes) {
        Ok(record) => Ok(Some(record)),
        Err(e) => {
            tracing::error!(%owner, node = name, error = %e, "unreadable pep node");
            Err(Refusal::plain(StanzaCondition::InternalServerError))
        }
    }
}

async fn store(
    node: &Node,
    owner: &BareJid,
    name: &str,
    record: Option<&NodeRecord>,
) -> Result<(), Refusal> {
    let value = match record {
        Some(r) => Some(
            postcard::to_allocvec(r)
                .map_err(|_| Refusal::plain(StanzaCondition::InternalServerError))?,
        ),
        None => None,
    };
    node.storage.put_item(owner, KIND, name, value).await?;
    Ok(())
}

/// The options of a XEP-0004 form (`publish-options` or a node configuration).
fn read_options(node: &Node, form: &Element) -> Result<Options, Refusal> {
    let mut options = Options::default();
    for field in form.children().filter(|c| c.is("field", NS_DATA)) {
        let value = field
            .get_child("value", NS_DATA)
            .map(|v| v.text().trim().to_owned())
            .unwrap_or_default();
        match field.attr("var") {
            Some("pubsub#access_model") => {
                options.access = Some(
                    Access::from_name(&value)
                        .ok_or_else(|| Refusal::plain(StanzaCondition::NotAcceptable))?,
                );
            }
            Some("pubsub#max_items") => {
                let cap = node.config.modules.pep.max_items;
                let max = if value == "max" {
                    cap
                } else {
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=cap).contains(n))
                        .ok_or_else(|| Refusal::plain(StanzaCondition::NotAcceptable))?
                };
                options.max_items = Some(max);
            }
            // Items are always kept; the other options have one fixed value here.
            _ => {}
        }
    }
    Ok(options)
}

fn new_record(options: &Options) -> NodeRecord {
    NodeRecord {
        access: options.access.unwrap_or(Access::Presence),
        max_items: options.max_items.unwrap_or(1),
        items: Vec::new(),
    }
}

fn item_element(item: &Item) -> Element {
    let mut element = Element::new("item", NS).with_attr("id", item.id.clone());
    if let Ok(payload) = Element::parse(item.xml.as_bytes(), NS) {
        element.append_child(payload);
    }
    element
}

/// A new item id: the time in microseconds (unique enough per node and growing).
fn new_item_id() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return format!("{next:x}"),
            Err(p) => prev = p,
        }
    }
}

/// Whether `requester` may read `owner`'s node with `access`.
async fn may_read(node: &Node, owner: &BareJid, requester: &BareJid, access: Access) -> bool {
    if requester == owner {
        return true;
    }
    match access {
        Access::Open => true,
        Access::Whitelist => false,
        Access::Presence => subscribed(node, owner, requester).await,
    }
}

/// Whether `contact` has a subscription to `owner`'s presence.
async fn subscribed(node: &Node, owner: &BareJid, contact: &BareJid) -> bool {
    match node.storage.get_roster(owner).await {
        Ok(roster) => roster
            .items
            .get(contact.as_str())
            .is_some_and(|i| i.subscription.has_from()),
        Err(_) => false,
    }
}

fn access_error(access: Access) -> Refusal {
    match access {
        Access::Whitelist => Refusal::with(StanzaCondition::NotAllowed, "closed-node"),
        _ => Refusal::with(
            StanzaCondition::NotAuthorized,
            "presence-subscription-required",
        ),
    }
}

// ---- Requests -------------------------------------------------------------------------------

/// A `pubsub` or `pubsub#owner` request to `owner`'s PEP service from `requester` (full JID).
pub async fn handle_iq(
    node: &Arc<Node>,
    owner: &BareJid,
    requester: &Jid,
    iq: &Element,
    query: &Element,
) -> Element {
    if !enabled(node) {
        return StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(iq);
    }
    let is_owner = requester.to_bare() == *owner;
    let get = iq.attr("type") == Some("get");
    let result = match (query.ns(), get) {
        (NS, true) => items(node, owner, &requester.to_bare(), query).await,
        (NS, false) if is_owner => owner_set(node, owner, query).await,
        (NS_OWNER, _) if is_owner => owner_config(node, owner, query, get).await,
        (NS, false) | (NS_OWNER, _) => Err(Refusal::plain(StanzaCondition::Forbidden)),
        _ => Err(Refusal::plain(StanzaCondition::BadRequest)),
    };
    match result {
        Ok(Some(payload)) => result_for(iq).with_child(payload),
        Ok(None) => result_for(iq),
        Err(Refusal(error)) => error.reply_to(iq),
    }
}

/// `<items/>`: the newest items (up to `max_items`), or those asked for by id.
async fn items(
    node: &Node,
    owner: &BareJid,
    requester: &BareJid,
    query: &Element,
) -> Result<Option<Element>, Refusal> {
    let Some(request) = query.get_child("items", NS) else {
        // Subscriptions and the other entity use cases are not offered by PEP here.
        return Err(Refusal::with(
            StanzaCondition::FeatureNotImplemented,
            "unsupported",
        ));
    };
    let name = request
        .attr("node")
        .ok_or_else(|| Refusal::with(StanzaCondition::BadRequest, "nodeid-required"))?;
    let record = load(node, owner, name)
        .await?
        .ok_or_else(|| Refusal::plain(StanzaCondition::ItemNotFound))?;
    if !may_read(node, owner, requester, record.access).await {
        return Err(access_error(record.access));
    }
    let wanted: Vec<&str> = request
        .children()
        .filter(|c| c.is("item", NS))
        .filter_map(|c| c.attr("id"))
        .collect();
    let chosen: Vec<&Item> = if wanted.is_empty() {
        let max = request
            .attr("max_items")
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        let skip = record.items.len().saturating_sub(max);
        record.items.iter().skip(skip).collect()
    } else {
        record
            .items
            .iter()
            .filter(|i| wanted.contains(&i.id.as_str()))
            .collect()
    };
    let mut out = Element::new("items", NS).with_attr("node", name.to_owned());
    for item in chosen {
        out.append_child(item_element(item));
    }
    Ok(Some(Element::new("pubsub", NS).with_child(out)))
}

/// Publish, retract and create, by the owner.
async fn owner_set(
    node: &Arc<Node>,
    owner: &BareJid,
    query: &Element,
) -> Result<Option<Element>, Refusal> {
    let options = match query
        .get_child("publish-options", NS)
        .and_then(|p| p.get_child("x", NS_DATA))
    {
        Some(form) => Some(read_options(node, form)?),
        None => None,
    };
    if let Some(publish) = query.get_child("publish", NS) {
        let name = publish
            .attr("node")
            .ok_or_else(|| Refusal::with(StanzaCondition::BadRequest, "nodeid-required"))?;
        let item = publish.get_child("item", NS);
        let payload = item.and_then(|i| {
            let mut children = i.children();
            match (children.next(), children.next()) {
                (Some(p), None) => Some(p),
                _ => None,
            }
        });
        let Some(payload) = payload else {
            return Err(Refusal::with(
                StanzaCondition::BadRequest,
                "invalid-payload",
            ));
        };
        let id = item
            .and_then(|i| i.attr("id"))
            .map_or_else(new_item_id, str::to_owned);
        publish_item(node, owner, name, &id, payload, options.as_ref()).await?;
        let reply = Element::new("pubsub", NS).with_child(
            Element::new("publish", NS)
                .with_attr("node", name.to_owned())
                .with_child(Element::new("item", NS).with_attr("id", id)),
        );
        return Ok(Some(reply));
    }
    if let Some(retract) = query.get_child("retract", NS) {
        let name = retract
            .attr("node")
            .ok_or_else(|| Refusal::with(StanzaCondition::BadRequest, "nodeid-required"))?;
        let ids: Vec<String> = retract
            .children()
            .filter(|c| c.is("item", NS))
            .filter_map(|c| c.attr("id").map(str::to_owned))
            .collect();
        if ids.is_empty() {
            return Err(Refusal::with(StanzaCondition::BadRequest, "item-required"));
        }
        let notify = matches!(retract.attr("notify"), Some("true" | "1"));
        retract_items(node, owner, name, &ids, notify).await?;
        return Ok(None);
    }
    if let Some(create) = query.get_child("create", NS) {
        let name = create
            .attr("node")
            .ok_or_else(|| Refusal::with(StanzaCondition::NotAcceptable, "nodeid-required"))?;
        let options = match query
            .get_child("configure", NS)
            .and_then(|c| c.get_child("x", NS_DATA))
        {
            Some(form) => read_options(node, form)?,
            None => Options::default(),
        };
        let _write = WRITES.lock().await;
        if load(node, owner, name).await?.is_some() {
            return Err(Refusal::plain(StanzaCondition::Conflict));
        }
        store(node, owner, name, Some(&new_record(&options))).await?;
        return Ok(None);
    }
    Err(Refusal::with(
        StanzaCondition::FeatureNotImplemented,
        "unsupported",
    ))
}

/// Delete, purge and configuration, by the owner.
async fn owner_config(
    node: &Arc<Node>,
    owner: &BareJid,
    query: &Element,
    get: bool,
) -> Result<Option<Element>, Refusal> {
    let Some(op) = query.children().next() else {
        return Err(Refusal::plain(StanzaCondition::BadRequest));
    };
    let name = op
        .attr("node")
        .ok_or_else(|| Refusal::with(StanzaCondition::BadRequest, "nodeid-required"))?
        .to_owned();
    let _write = WRITES.lock().await;
    let mut record = load(node, owner, &name)
        .await?
        .ok_or_else(|| Refusal::plain(StanzaCondition::ItemNotFound))?;
    match (op.name(), get) {
        ("delete", false) => {
            store(node, owner, &name, None).await?;
            drop(_write);
            let event = Element::new("delete", NS_EVENT).with_attr("node", name.clone());
            notify(node, owner, &name, record.access, event).await;
            Ok(None)
        }
        ("purge", false) => {
            record.items.clear();
            store(node, owner, &name, Some(&record)).await?;
            drop(_write);
            let event = Element::new("purge", NS_EVENT).with_attr("node", name.clone());
            notify(node, owner, &name, record.access, event).await;
            Ok(None)
        }
        ("configure", true) => Ok(Some(
            Element::new("pubsub", NS_OWNER).with_child(
                Element::new("configure", NS_OWNER)
                    .with_attr("node", name)
                    .with_child(config_form(&record)),
            ),
        )),
        ("configure", false) => {
            let form = op
                .get_child("x", NS_DATA)
                .ok_or_else(|| Refusal::plain(StanzaCondition::BadRequest))?;
            let options = read_options(node, form)?;
            if let Some(access) = options.access {
                record.access = access;
            }
            if let Some(max) = options.max_items {
                record.max_items = max;
                let excess = record.items.len().saturating_sub(max as usize);
                record.items.drain(..excess);
            }
            store(node, owner, &name, Some(&record)).await?;
            Ok(None)
        }
        _ => Err(Refusal::with(
            StanzaCondition::FeatureNotImplemented,
            "unsupported",
        )),
    }
}

fn config_form(record: &NodeRecord) -> Element {
    let field = |var: &str, value: String| {
        Element::new("field", NS_DATA)
            .with_attr("var", var.to_owned())
            .with_child(Element::new("value", NS_DATA).with_text(value))
    };
    Element::new("x", NS_DATA)
        .with_attr("type", "form")
        .with_child(
            Element::new("field", NS_DATA)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(
                    Element::new("value", NS_DATA)
                        .with_text("http://jabber.org/protocol/pubsub#node_config"),
                ),
        )
        .with_child(field(
            "pubsub#access_model",
            record.access.name().to_owned(),
        ))
        .with_child(field("pubsub#max_items", record.max_items.to_string()))
        .with_child(field("pubsub#persist_items", "true".to_owned()))
}

/// XEP-0030 items of `owner`'s PEP service: the nodes `requester` may read.
pub async fn node_list(node: &Node, owner: &BareJid, requester: &BareJid) -> Vec<Element> {
    if !enabled(node) {
        return Vec::new();
    }
    let nodes = match node.storage.list_items(owner, KIND).await {
        Ok(nodes) => nodes,
        Err(e) => {
            tracing::error!(%owner, error = %e, "pep nodes not listed");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (name, bytes) in nodes {
        let Ok(record) = postcard::from_bytes::<NodeRecord>(&bytes) else {
            continue;
        };
        if may_read(node, owner, requester, record.access).await {
            out.push(
                Element::new("item", ns::DISCO_ITEMS)
                    .with_attr("jid", owner.to_string())
                    .with_attr("node", name),
            );
        }
    }
    out
}

// ---- Publishing -----------------------------------------------------------------------------

/// Publishes `payload` as item `id` of `owner`'s node `name` (created with `options` if it does
/// not exist; an existing node must have the access model asked for) and notifies.
async fn publish_item(
    node: &Arc<Node>,
    owner: &BareJid,
    name: &str,
    id: &str,
    payload: &Element,
    options: Option<&Options>,
) -> Result<(), Refusal> {
    let xml = payload.to_xml("");
    if xml.len() > node.config.modules.pep.max_item_size {
        return Err(Refusal::with(
            StanzaCondition::NotAcceptable,
            "payload-too-big",
        ));
    }
    let access = {
        let _write = WRITES.lock().await;
        let mut record = match load(node, owner, name).await? {
            Some(record) => {
                if let Some(access) = options.and_then(|o| o.access)
                    && access != record.access
                {
                    return Err(Refusal::with(
                        StanzaCondition::Conflict,
                        "precondition-not-met",
                    ));
                }
                record
            }
            None => new_record(&options.cloned().unwrap_or_default()),
        };
        if let Some(max) = options.and_then(|o| o.max_items) {
            record.max_items = max;
        }
        record.items.retain(|i| i.id != id);
        record.items.push(Item {
            id: id.to_owned(),
            xml: xml.clone(),
        });
        let excess = record.items.len().saturating_sub(record.max_items as usize);
        record.items.drain(..excess);
        store(node, owner, name, Some(&record)).await?;
        record.access
    };
    let event = Element::new("items", NS_EVENT)
        .with_attr("node", name.to_owned())
        .with_child({
            let mut item = Element::new("item", NS_EVENT).with_attr("id", id.to_owned());
            item.append_child(payload.clone());
            item
        });
    notify(node, owner, name, access, event).await;
    after_change(node, owner, name).await;
    Ok(())
}

async fn retract_items(
    node: &Arc<Node>,
    owner: &BareJid,
    name: &str,
    ids: &[String],
    notify_them: bool,
) -> Result<(), Refusal> {
    let access = {
        let _write = WRITES.lock().await;
        let mut record = load(node, owner, name)
            .await?
            .ok_or_else(|| Refusal::plain(StanzaCondition::ItemNotFound))?;
        let before = record.items.len();
        record.items.retain(|i| !ids.contains(&i.id));
        if record.items.len() == before {
            return Err(Refusal::plain(StanzaCondition::ItemNotFound));
        }
        store(node, owner, name, Some(&record)).await?;
        record.access
    };
    if notify_them {
        let mut event = Element::new("items", NS_EVENT).with_attr("node", name.to_owned());
        for id in ids {
            event.append_child(Element::new("retract", NS_EVENT).with_attr("id", id.clone()));
        }
        notify(node, owner, name, access, event).await;
    }
    after_change(node, owner, name).await;
    Ok(())
}

/// Keeps the data other protocols show in step with a changed node.
async fn after_change(node: &Arc<Node>, owner: &BareJid, name: &str) {
    if name == NS_BOOKMARKS && node.config.modules.private.enabled {
        bookmarks_to_private(node, owner).await;
    }
    if name == NS_AVATAR_METADATA && node.config.modules.vcard.enabled {
        avatar_to_vcard(node, owner).await;
    }
}

/// Sends the event `payload` of `owner`'s node `name` to everyone who should get it.
async fn notify(node: &Arc<Node>, owner: &BareJid, name: &str, access: Access, payload: Element) {
    let feature = format!("{name}+notify");
    let seen: Vec<(String, Option<Arc<str>>)> = node
        .caps
        .seen
        .get(owner)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    if seen.is_empty() {
        return;
    }
    let roster = if access == Access::Whitelist {
        None
    } else {
        node.storage.get_roster(owner).await.ok()
    };
    for (full, ver) in seen {
        if !node.caps.wants(ver.as_ref(), &feature) {
            continue;
        }
        let Ok(full_jid) = FullJid::new(&full) else {
            continue;
        };
        let bare = full_jid.to_bare();
        let allowed = bare == *owner
            || roster.as_ref().is_some_and(|r| {
                r.items
                    .get(bare.as_str())
                    .is_some_and(|i| i.subscription.has_from())
            });
        if allowed {
            send_event(node, owner, &full, payload.clone()).await;
        }
    }
}

async fn send_event(node: &Arc<Node>, owner: &BareJid, to: &str, payload: Element) {
    let message = Element::new("message", ns::CLIENT)
        .with_attr("from", owner.to_string())
        .with_attr("to", to.to_owned())
        .with_attr("type", "headline")
        .with_child(Element::new("event", NS_EVENT).with_child(payload));
    if let Ok(stanza) = Stanza::from_element(&message, ns::CLIENT) {
        node.route(stanza).await;
    }
}

/// Sends `to` the last item of each of `owner`'s nodes its capabilities want and it may read.
async fn send_last_items(node: &Arc<Node>, owner: &BareJid, to: &FullJid) {
    let Some(ver) = node
        .caps
        .seen
        .get(owner)
        .and_then(|m| m.get(to.as_str()).cloned())
        .flatten()
    else {
        return;
    };
    let Some(features) = node.caps.features.get(&ver).map(|f| f.clone()) else {
        return;
    };
    let wanted: Vec<&str> = features
        .iter()
        .filter_map(|f| f.strip_suffix("+notify"))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let requester = to.to_bare();
    for name in wanted {
        let Ok(Some(record)) = load(node, owner, name).await else {
            continue;
        };
        let Some(last) = record.items.last() else {
            continue;
        };
        if !may_read(node, owner, &requester, record.access).await {
            continue;
        }
        let mut item = item_element(last);
        item = retag(item, NS_EVENT);
        let event = Element::new("items", NS_EVENT)
            .with_attr("node", name.to_owned())
            .with_child(item);
        send_event(node, owner, to.as_str(), event).await;
    }
}

/// `item` moved to namespace `ns` (its payload keeps its own).
fn retag(item: Element, ns: &str) -> Element {
    let mut out = Element::new("item", ns.to_owned());
    for (name, value) in item.attrs() {
        out.set_attr(name.to_owned(), value.to_owned());
    }
    for child in item.children() {
        out.append_child(child.clone());
    }
    out
}

// ---- Presence and capabilities ---------------------------------------------------------------

/// An available (`true`) or unavailable presence of `from` reached `owner`'s home: its own
/// session's, or a contact's broadcast to it.
pub async fn presence_seen(
    node: &Arc<Node>,
    owner: &BareJid,
    from: &FullJid,
    presence: Option<&Stanza>,
) {
    if !enabled(node) {
        return;
    }
    let Some(presence) = presence else {
        if let Some(mut seen) = node.caps.seen.get_mut(owner) {
            seen.remove(from.as_str());
        }
        node.caps.seen.remove_if(owner, |_, m| m.is_empty());
        return;
    };
    let caps = caps_of(presence);
    let ver: Option<Arc<str>> = caps.as_ref().map(|(_, v)| Arc::from(v.as_str()));
    tracing::trace!(%owner, resource = %from, caps = ?caps, "presence seen by pep");
    let changed = {
        let mut seen = node.caps.seen.entry(owner.clone()).or_default();
        let before = seen.insert(from.to_string(), ver.clone());
        before != Some(ver.clone())
    };
    if !changed {
        return;
    }
    let Some((caps_node, ver)) = caps else {
        return;
    };
    let ver: Arc<str> = Arc::from(ver.as_str());
    if node.caps.features.contains_key(&ver) {
        return send_last_items(node, owner, from).await;
    }
    let ask = {
        let mut pending = lock(&node.caps.pending);
        let now = std::time::Instant::now();
        let (asked, waiting) = pending
            .entry(ver.clone())
            .or_insert_with(|| (now, Vec::new()));
        waiting.push((owner.clone(), from.to_string()));
        let again = now.duration_since(*asked) >= ASK_AGAIN;
        if again {
            *asked = now;
        }
        waiting.len() == 1 || again
    };
    if ask {
        tracing::debug!(%owner, resource = %from, %ver, "asking for unknown capabilities");
        let n = node.caps.next_query.fetch_add(1, Ordering::Relaxed);
        let query = format!(
            "<iq type='get' id='{CAPS_QUERY}{n}' from='{}' to='{}'><query xmlns='{}' node='{}#{}'/></iq>",
            escape(owner.as_str()),
            escape(from.as_str()),
            ns::DISCO_INFO,
            escape(&caps_node),
            escape(&ver)
        );
        if let Ok(stanza) = Stanza::from_frame(bytes::Bytes::from(query)) {
            node.route(stanza).await;
        }
    }
}

/// The XEP-0115 `(node, ver)` a presence announces (SHA-1 hashes only; the legacy form without
/// `hash` is not cached).
fn caps_of(presence: &Stanza) -> Option<(String, String)> {
    let raw = presence.raw();
    if !raw.windows(NS_CAPS.len()).any(|w| w == NS_CAPS.as_bytes()) {
        return None;
    }
    let element = presence.element(ns::CLIENT).ok()?;
    let c = element.get_child("c", NS_CAPS)?;
    if c.attr("hash") != Some("sha-1") {
        return None;
    }
    Some((c.attr("node")?.to_owned(), c.attr("ver")?.to_owned()))
}

/// Whether `stanza` (an IQ result or error for an account) answers one of our capability
/// queries; if so it is consumed here.
pub async fn caps_answer(node: &Arc<Node>, stanza: &Stanza) -> bool {
    if !stanza.id().is_some_and(|id| id.starts_with(CAPS_QUERY)) {
        return false;
    }
    let Ok(iq) = stanza.element(ns::CLIENT) else {
        return true;
    };
    let Some(query) = iq.get_child("query", ns::DISCO_INFO) else {
        return true;
    };
    let Some(ver) = query
        .attr("node")
        .and_then(|n| n.rsplit_once('#'))
        .map(|(_, v)| v.to_owned())
    else {
        return true;
    };
    let ver: Arc<str> = Arc::from(ver.as_str());
    let waiting = lock(&node.caps.pending)
        .remove(&ver)
        .map(|(_, waiting)| waiting)
        .unwrap_or_default();
    if iq.attr("type") != Some("result") || verification_string_hash(query) != *ver {
        tracing::debug!(%ver, "capabilities answer refused (error or hash mismatch)");
        return true;
    }
    let features: HashSet<String> = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|c| c.attr("var").map(str::to_owned))
        .collect();
    node.caps.features.insert(ver, Arc::new(features));
    for (owner, full) in waiting {
        if let Ok(full) = FullJid::new(&full) {
            send_last_items(node, &owner, &full).await;
        }
    }
    true
}

/// XEP-0115 §5.1: the SHA-1 verification string of a disco#info answer, base64.
fn verification_string_hash(query: &Element) -> String {
    let mut s = String::new();
    let mut identities: Vec<String> = query
        .children()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .map(|c| {
            format!(
                "{}/{}/{}/{}<",
                c.attr("category").unwrap_or_default(),
                c.attr("type").unwrap_or_default(),
                c.attr("xml:lang").unwrap_or_default(),
                c.attr("name").unwrap_or_default()
            )
        })
        .collect();
    identities.sort();
    s.extend(identities);
    let mut features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|c| c.attr("var"))
        .collect();
    features.sort_unstable();
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    let mut forms: Vec<(String, String)> = query
        .children()
        .filter(|c| c.is("x", NS_DATA))
        .filter_map(|form| {
            let mut form_type = None;
            let mut fields: Vec<(String, Vec<String>)> = Vec::new();
            for field in form.children().filter(|c| c.is("field", NS_DATA)) {
                let mut values: Vec<String> = field
                    .children()
                    .filter(|v| v.is("value", NS_DATA))
                    .map(Element::text)
                    .collect();
                match field.attr("var") {
                    Some("FORM_TYPE") => form_type = values.pop(),
                    Some(var) => {
                        values.sort();
                        fields.push((var.to_owned(), values));
                    }
                    None => {}
                }
            }
            let form_type = form_type?;
            fields.sort();
            let mut text = format!("{form_type}<");
            for (var, values) in fields {
                text.push_str(&var);
                text.push('<');
                for v in values {
                    text.push_str(&v);
                    text.push('<');
                }
            }
            Some((form_type, text))
        })
        .collect();
    forms.sort();
    for (_, text) in forms {
        s.push_str(&text);
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

// ---- XEP-0402 compatibility with XEP-0048 --------------------------------------------------

/// The XEP-0402 node's options (XEP-0402 §5.1).
fn bookmarks_options(node: &Node) -> Options {
    Options {
        access: Some(Access::Whitelist),
        max_items: Some(node.config.modules.pep.max_items),
    }
}

/// XEP-0048 bookmarks were stored in private XML storage: the XEP-0402 node follows (one item
/// per room; rooms gone are retracted), with notifications.
pub async fn private_bookmarks_stored(node: &Arc<Node>, owner: &BareJid, storage: &Element) {
    if !enabled(node) {
        return;
    }
    let mut wanted: Vec<(String, Element)> = Vec::new();
    for conference in storage
        .children()
        .filter(|c| c.is("conference", NS_BOOKMARKS_LEGACY))
    {
        let Some(jid) = conference.attr("jid") else {
            continue;
        };
        let autojoin = matches!(conference.attr("autojoin"), Some("true" | "1"));
        let mut modern = Element::new("conference", NS_BOOKMARKS)
            .with_attr("autojoin", if autojoin { "true" } else { "false" })
            .with_attr_opt("name", conference.attr("name"));
        for (name, legacy) in [("nick", "nick"), ("password", "password")] {
            if let Some(value) = conference.get_child(legacy, NS_BOOKMARKS_LEGACY) {
                modern.append_child(Element::new(name, NS_BOOKMARKS).with_text(value.text()));
            }
        }
        wanted.push((jid.to_owned(), modern));
    }
    let existing: Vec<String> = match load(node, owner, NS_BOOKMARKS).await {
        Ok(Some(record)) => record.items.into_iter().map(|i| i.id).collect(),
        _ => Vec::new(),
    };
    let options = bookmarks_options(node);
    for (jid, payload) in &wanted {
        if let Err(Refusal(e)) = publish_quietly(node, owner, jid, payload, &options).await {
            tracing::warn!(%owner, condition = e.condition.as_str(), "bookmark not mirrored to pep");
        }
    }
    let gone: Vec<String> = existing
        .into_iter()
        .filter(|id| !wanted.iter().any(|(jid, _)| jid == id))
        .collect();
    if !gone.is_empty() {
        let _ = retract_quietly(node, owner, &gone).await;
    }
}

/// Publishes a bookmark item without writing private storage back (it is the source).
async fn publish_quietly(
    node: &Arc<Node>,
    owner: &BareJid,
    id: &str,
    payload: &Element,
    options: &Options,
) -> Result<(), Refusal> {
    let access = {
        let _write = WRITES.lock().await;
        let mut record = load(node, owner, NS_BOOKMARKS)
            .await?
            .unwrap_or_else(|| new_record(options));
        let xml = payload.to_xml("");
        if record.items.iter().any(|i| i.id == id && i.xml == xml) {
            return Ok(());
        }
        record.items.retain(|i| i.id != id);
        record.items.push(Item {
            id: id.to_owned(),
            xml,
        });
        store(node, owner, NS_BOOKMARKS, Some(&record)).await?;
        record.access
    };
    let mut item = Element::new("item", NS_EVENT).with_attr("id", id.to_owned());
    item.append_child(payload.clone());
    let event = Element::new("items", NS_EVENT)
        .with_attr("node", NS_BOOKMARKS)
        .with_child(item);
    notify(node, owner, NS_BOOKMARKS, access, event).await;
    Ok(())
}

async fn retract_quietly(node: &Arc<Node>, owner: &BareJid, ids: &[String]) -> Result<(), Refusal> {
    let access = {
        let _write = WRITES.lock().await;
        let Some(mut record) = load(node, owner, NS_BOOKMARKS).await? else {
            return Ok(());
        };
        record.items.retain(|i| !ids.contains(&i.id));
        store(node, owner, NS_BOOKMARKS, Some(&record)).await?;
        record.access
    };
    let mut event = Element::new("items", NS_EVENT).with_attr("node", NS_BOOKMARKS);
    for id in ids {
        event.append_child(Element::new("retract", NS_EVENT).with_attr("id", id.clone()));
    }
    notify(node, owner, NS_BOOKMARKS, access, event).await;
    Ok(())
}

/// The XEP-0402 node changed: private storage's XEP-0048 bookmarks follow (URLs kept).
async fn bookmarks_to_private(node: &Arc<Node>, owner: &BareJid) {
    let Ok(Some(record)) = load(node, owner, NS_BOOKMARKS).await else {
        return;
    };
    let probe = Element::new("storage", NS_BOOKMARKS_LEGACY);
    let old = super::private::get_xml(node, owner, &probe)
        .await
        .ok()
        .flatten()
        .and_then(|xml| Element::parse(xml.as_bytes(), NS_BOOKMARKS_LEGACY).ok());
    let mut storage = Element::new("storage", NS_BOOKMARKS_LEGACY);
    if let Some(old) = &old {
        for url in old.children().filter(|c| c.is("url", NS_BOOKMARKS_LEGACY)) {
            storage.append_child(url.clone());
        }
    }
    for item in &record.items {
        let Ok(conference) = Element::parse(item.xml.as_bytes(), NS_BOOKMARKS) else {
            continue;
        };
        if !conference.is("conference", NS_BOOKMARKS) {
            continue;
        }
        let autojoin = matches!(conference.attr("autojoin"), Some("true" | "1"));
        let mut legacy = Element::new("conference", NS_BOOKMARKS_LEGACY)
            .with_attr("jid", item.id.clone())
            .with_attr("autojoin", if autojoin { "true" } else { "false" })
            .with_attr_opt("name", conference.attr("name"));
        for name in ["nick", "password"] {
            if let Some(value) = conference.get_child(name, NS_BOOKMARKS) {
                legacy
                    .append_child(Element::new(name, NS_BOOKMARKS_LEGACY).with_text(value.text()));
            }
        }
        storage.append_child(legacy);
    }
    if let Err(condition) = super::private::set(node, owner, &storage).await {
        tracing::warn!(%owner, condition = condition.as_str(), "bookmarks not mirrored to private storage");
    }
}

// ---- XEP-0398 avatar conversion --------------------------------------------------------------

/// The account published new avatar metadata (XEP-0084): its vCard photo follows, from the
/// data node's item of the same id.
async fn avatar_to_vcard(node: &Arc<Node>, owner: &BareJid) {
    let Ok(Some(metadata)) = load(node, owner, NS_AVATAR_METADATA).await else {
        return;
    };
    let Some(last) = metadata.items.last() else {
        return;
    };
    let Ok(meta) = Element::parse(last.xml.as_bytes(), NS_AVATAR_METADATA) else {
        return;
    };
    let mime = meta
        .get_child("info", NS_AVATAR_METADATA)
        .and_then(|i| i.attr("type"))
        .unwrap_or("image/png")
        .to_owned();
    let data = match load(node, owner, NS_AVATAR_DATA).await {
        Ok(Some(record)) => record
            .items
            .iter()
            .find(|i| i.id == last.id)
            .and_then(|i| Element::parse(i.xml.as_bytes(), NS_AVATAR_DATA).ok())
            .map(|d| d.text()),
        _ => None,
    };
    super::vcard::set_photo(node, owner, data.as_deref().map(|d| (mime.as_str(), d))).await;
}

/// The account's vCard photo changed (XEP-0398): the avatar nodes follow. `photo`: the MIME
/// type and the base64 data, or `None` when the vCard has no photo any more.
pub async fn vcard_photo_changed(node: &Arc<Node>, owner: &BareJid, photo: Option<(&str, &str)>) {
    if !enabled(node) {
        return;
    }
    let options = Options {
        access: None,
        max_items: None,
    };
    let Some((mime, data)) = photo else {
        let metadata = Element::new("metadata", NS_AVATAR_METADATA);
        let _ = publish_plain(
            node,
            owner,
            NS_AVATAR_METADATA,
            "current",
            &metadata,
            &options,
        )
        .await;
        return;
    };
    let cleaned: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&cleaned) else {
        return;
    };
    let id = super::vcard::hex(&Sha1::digest(&bytes));
    let payload = Element::new("data", NS_AVATAR_DATA).with_text(cleaned);
    if publish_plain(node, owner, NS_AVATAR_DATA, &id, &payload, &options)
        .await
        .is_err()
    {
        return;
    }
    let metadata = Element::new("metadata", NS_AVATAR_METADATA).with_child(
        Element::new("info", NS_AVATAR_METADATA)
            .with_attr("id", id.clone())
            .with_attr("bytes", bytes.len().to_string())
            .with_attr("type", mime.to_owned()),
    );
    let _ = publish_plain(node, owner, NS_AVATAR_METADATA, &id, &metadata, &options).await;
}

/// Publishes and notifies without the conversions of [`after_change`] (their source is the
/// caller).
async fn publish_plain(
    node: &Arc<Node>,
    owner: &BareJid,
    name: &str,
    id: &str,
    payload: &Element,
    options: &Options,
) -> Result<(), Refusal> {
    let access = {
        let _write = WRITES.lock().await;
        let mut record = load(node, owner, name)
            .await?
            .unwrap_or_else(|| new_record(options));
        record.items.retain(|i| i.id != id);
        record.items.push(Item {
            id: id.to_owned(),
            xml: payload.to_xml(""),
        });
        let excess = record.items.len().saturating_sub(record.max_items as usize);
        record.items.drain(..excess);
        store(node, owner, name, Some(&record)).await?;
        record.access
    };
    let mut item = Element::new("item", NS_EVENT).with_attr("id", id.to_owned());
    item.append_child(payload.clone());
    let event = Element::new("items", NS_EVENT)
        .with_attr("node", name.to_owned())
        .with_child(item);
    notify(node, owner, name, access, event).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0115 §5.2's simple example.
    #[test]
    fn verification_string_of_the_simple_example() {
        let query = Element::parse(
            b"<query xmlns='http://jabber.org/protocol/disco#info' node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>\
              <identity category='client' name='Exodus 0.9.1' type='pc'/>\
              <feature var='http://jabber.org/protocol/caps'/>\
              <feature var='http://jabber.org/protocol/disco#info'/>\
              <feature var='http://jabber.org/protocol/disco#items'/>\
              <feature var='http://jabber.org/protocol/muc'/></query>",
            ns::CLIENT,
        )
        .unwrap();
        assert_eq!(
            verification_string_hash(&query),
            "QgayPKawpkPSDYmwT/WM94uAlu0="
        );
    }

    /// XEP-0115 §5.3's complex example (identities in two languages, an extended form).
    #[test]
    fn verification_string_of_the_complex_example() {
        let query = Element::parse(
            "<query xmlns='http://jabber.org/protocol/disco#info' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>\
              <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
              <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
              <feature var='http://jabber.org/protocol/caps'/>\
              <feature var='http://jabber.org/protocol/disco#info'/>\
              <feature var='http://jabber.org/protocol/disco#items'/>\
              <feature var='http://jabber.org/protocol/muc'/>\
              <x xmlns='jabber:x:data' type='result'>\
                <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
                <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
                <field var='os'><value>Mac</value></field>\
                <field var='os_version'><value>10.5.1</value></field>\
                <field var='software'><value>Psi</value></field>\
                <field var='software_version'><value>0.11</value></field>\
              </x></query>"
                .as_bytes(),
            ns::CLIENT,
        )
        .unwrap();
        assert_eq!(
            verification_string_hash(&query),
            "q07IKJEyjvHSyhy//CH0CxmKi8w="
        );
    }

    #[test]
    fn item_ids_grow() {
        let a = u64::from_str_radix(&new_item_id(), 16).unwrap();
        let b = u64::from_str_radix(&new_item_id(), 16).unwrap();
        assert!(b > a);
    }
}
