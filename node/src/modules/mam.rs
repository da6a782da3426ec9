//! XEP-0313 message archive management for 1:1 messages (`urn:xmpp:mam:2`), with XEP-0059
//! result set paging and XEP-0359 stanza ids.
//!
//! An account's archive lives at its home. A message with a body is archived once when it
//! enters the account's home for delivery (incoming, tagged with
//! `<stanza-id xmlns='urn:xmpp:sid:0' id='…' by='account'/>` before any resource gets it) and
//! once when one of the account's clients sends it (outgoing). A stanza id claimed by a client
//! for the account's own archive is removed first (XEP-0359 §3), so a re-routed message (an
//! edge session's leftovers, a move between datacenters) is never archived twice.
//!
//! Archive ids are microseconds since the Unix epoch, unique per node, so a time filter is an
//! id range. Preferences (`always` / `never` / `roster`, with always and never lists) decide
//! what is kept; `[modules.mam] retention` prunes older messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jid::{BareJid, Jid};
use serde::{Deserialize, Serialize};
use tern_xmpp_proto::{Element, Stanza, StanzaCondition, StanzaError, StanzaKind, ns};

use super::result_for;
use crate::node::Node;
use crate::sm::Session;
use crate::storage::{ArchiveQuery, ArchivedMessage};

/// The protocol's namespace.
pub const NS: &str = "urn:xmpp:mam:2";
/// The previous version's namespace, still used by some clients: the same protocol here (its
/// `<fin/>` also comes in the IQ result).
pub const NS_V1: &str = "urn:xmpp:mam:1";
/// XEP-0359 unique and stable stanza ids.
pub const NS_SID: &str = "urn:xmpp:sid:0";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_DATA: &str = "jabber:x:data";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_HINTS: &str = "urn:xmpp:hints";
/// The account item holding the preferences.
const KIND: &str = "mam";
/// Results per page when the client names none, and the most it may ask for.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 250;

/// The last id handed out on this node.
static LAST_ID: AtomicU64 = AtomicU64::new(0);

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A new archive id: the current time in microseconds, above every id handed out before.
pub(crate) fn next_id() -> u64 {
    let now = now_micros();
    let previous = LAST_ID
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(now);
    now.max(previous + 1)
}

/// What the account keeps (XEP-0313 §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefs {
    /// `always`, `never` or `roster`.
    pub default: String,
    /// Bare JIDs always archived.
    pub always: Vec<String>,
    /// Bare JIDs never archived.
    pub never: Vec<String>,
}

impl Default for Prefs {
    fn default() -> Self {
        Self {
            default: "always".to_owned(),
            always: Vec::new(),
            never: Vec::new(),
        }
    }
}

/// The preferences of the accounts that changed them from the default, in memory (loaded at
/// start), so archiving a message reads no storage.
#[derive(Debug, Default)]
pub struct ArchivePrefs {
    map: dashmap::DashMap<BareJid, Arc<Prefs>>,
    count: AtomicU64,
}

impl ArchivePrefs {
    fn get(&self, user: &BareJid) -> Option<Arc<Prefs>> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.map.get(user).map(|p| p.clone())
    }

    fn put(&self, user: &BareJid, prefs: Prefs) {
        if prefs == Prefs::default() {
            self.map.remove(user);
        } else {
            self.map.insert(user.clone(), Arc::new(prefs));
        }
        self.count.store(self.map.len() as u64, Ordering::Relaxed);
    }

    /// Forgets `user` (removed, or moved away).
    pub fn forget(&self, user: &BareJid) {
        self.map.remove(user);
        self.count.store(self.map.len() as u64, Ordering::Relaxed);
    }

    /// Forgets every account of `domain`.
    pub fn forget_domain(&self, domain: &str) {
        self.map.retain(|user, _| user.domain().as_str() != domain);
        self.count.store(self.map.len() as u64, Ordering::Relaxed);
    }
}

/// Loads the preferences of every account that has some (at start).
pub async fn load(node: &Node) -> crate::storage::Result<usize> {
    let owners = node.storage.item_owners(KIND).await?;
    for owner in &owners {
        reload(node, owner).await;
    }
    Ok(owners.len())
}

/// Reads `user`'s preferences into memory (after an account moved here).
pub async fn reload(node: &Node, user: &BareJid) {
    if let Ok(Some(bytes)) = node.storage.get_item(user, KIND, "prefs").await
        && let Ok(prefs) = postcard::from_bytes::<Prefs>(&bytes)
    {
        node.mam_prefs.put(user, prefs);
    }
}

async fn prefs(node: &Node, user: &BareJid) -> Prefs {
    node.mam_prefs
        .get(user)
        .map(|p| (*p).clone())
        .unwrap_or_default()
}

/// Whether `user` archives its messages with `peer`.
async fn keeps(node: &Node, user: &BareJid, peer: &str) -> bool {
    let Some(prefs) = node.mam_prefs.get(user) else {
        // The default: always.
        return true;
    };
    if prefs.never.iter().any(|j| j == peer) {
        return false;
    }
    if prefs.always.iter().any(|j| j == peer) {
        return true;
    }
    match prefs.default.as_str() {
        "never" => false,
        "roster" => node
            .storage
            .get_roster(user)
            .await
            .is_ok_and(|r| r.items.contains_key(peer)),
        _ => true,
    }
}

/// Whether `message` is archived at all: a chat or normal message with a body, without a
/// XEP-0334 hint against storing it.
fn archivable(message: &Element) -> bool {
    matches!(message.attr("type").unwrap_or("normal"), "chat" | "normal")
        && message.has_child("body", ns::CLIENT)
        && !message.has_child("no-store", NS_HINTS)
        && !message.has_child("no-permanent-store", NS_HINTS)
}

/// Cheap test on the bytes before anything is parsed.
fn may_archive(stanza: &Stanza) -> bool {
    stanza.kind == StanzaKind::Message
        && !stanza.is_type("groupchat")
        && !stanza.is_type("headline")
        && !stanza.is_type("error")
        && contains(stanza.raw(), "<body")
}

fn bare_of(jid: Option<&str>) -> Option<String> {
    jid.and_then(|j| Jid::new(j).ok())
        .map(|j| j.to_bare().to_string())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Whether the message needs a closer look than its envelope: a stanza id, or a hint.
fn needs_parsing(stanza: &Stanza) -> bool {
    contains(stanza.raw(), NS_SID) || contains(stanza.raw(), NS_HINTS)
}

/// `raw` (a whole `<message>…</message>`) with `child` inserted before its end tag.
fn insert_before_end(raw: &[u8], child: &str) -> Option<bytes::Bytes> {
    let end = raw.len().checked_sub(b"</message>".len())?;
    if &raw[end..] != b"</message>" {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() + child.len());
    out.extend_from_slice(&raw[..end]);
    out.extend_from_slice(child.as_bytes());
    out.extend_from_slice(&raw[end..]);
    Some(bytes::Bytes::from(out))
}

/// A message entering `user`'s home for delivery: archived (unless it already carries the
/// account's stanza id, i.e. was archived before), and given its stanza id.
pub async fn archive_incoming(node: &Arc<Node>, user: &BareJid, stanza: Stanza) -> Stanza {
    if !node.config.modules.mam.enabled || !may_archive(&stanza) {
        return stanza;
    }
    if !needs_parsing(&stanza) {
        // The common case, read from the envelope and the bytes: nothing is parsed.
        let Some(peer) = bare_of(stanza.from()) else {
            return stanza;
        };
        if !keeps(node, user, &peer).await {
            return stanza;
        }
        let id = next_id();
        let tag = format!(
            "<stanza-id xmlns='{NS_SID}' id='{id}' by='{}'/>",
            tern_xmpp_proto::element::escape(user.as_str())
        );
        let Some(tagged) =
            insert_before_end(stanza.raw(), &tag).and_then(|bytes| Stanza::from_frame(bytes).ok())
        else {
            return stanza;
        };
        store_raw(node, user, id, peer, true, tagged.raw().to_vec()).await;
        return tagged;
    }
    let Ok(mut message) = stanza.element(ns::CLIENT) else {
        return stanza;
    };
    let by = user.to_string();
    if message
        .children()
        .any(|c| c.is("stanza-id", NS_SID) && c.attr("by") == Some(by.as_str()))
    {
        return stanza;
    }
    let Some(peer) = bare_of(message.attr("from")) else {
        return stanza;
    };
    if !archivable(&message) || !keeps(node, user, &peer).await {
        return stanza;
    }
    let id = next_id();
    message.append_child(
        Element::new("stanza-id", NS_SID)
            .with_attr("id", id.to_string())
            .with_attr("by", by),
    );
    let Ok(tagged) = Stanza::from_element(&message, ns::CLIENT) else {
        return stanza;
    };
    store(node, user, id, peer, true, &message).await;
    tagged
}

/// A message the client of `session` sends: archived for its account; a stanza id the client
/// put in for the account itself is removed first.
pub async fn archive_outgoing(node: &Arc<Node>, session: &Session, stanza: Stanza) -> Stanza {
    if !node.config.modules.mam.enabled || stanza.kind != StanzaKind::Message {
        return stanza;
    }
    let claims_id = stanza
        .raw()
        .windows(NS_SID.len())
        .any(|w| w == NS_SID.as_bytes());
    if !claims_id && !may_archive(&stanza) {
        return stanza;
    }
    let Ok(mut message) = stanza.element(ns::CLIENT) else {
        return stanza;
    };
    let user = session.jid.to_bare();
    let stanza = if claims_id {
        message.retain_children(|c| !c.is("stanza-id", NS_SID));
        match Stanza::from_element(&message, ns::CLIENT) {
            Ok(cleaned) => cleaned,
            Err(_) => return stanza,
        }
    } else {
        stanza
    };
    if !may_archive(&stanza) || !archivable(&message) {
        return stanza;
    }
    let Some(peer) = bare_of(message.attr("to")) else {
        return stanza;
    };
    if peer != user.to_string() && keeps(node, &user, &peer).await {
        store(node, &user, next_id(), peer, false, &message).await;
    }
    stanza
}

async fn store(
    node: &Node,
    user: &BareJid,
    id: u64,
    with: String,
    incoming: bool,
    message: &Element,
) {
    store_raw(
        node,
        user,
        id,
        with,
        incoming,
        message.to_xml(ns::CLIENT).into_bytes(),
    )
    .await;
}

async fn store_raw(
    node: &Node,
    user: &BareJid,
    id: u64,
    with: String,
    incoming: bool,
    stanza: Vec<u8>,
) {
    let archived = ArchivedMessage {
        with,
        incoming,
        stanza,
    };
    if let Err(e) = node.storage.archive_append(user, id, archived).await {
        tracing::warn!(%user, error = %e, "message not archived");
    }
}

/// Deletes archived messages older than `[modules.mam] retention`, every ten minutes.
pub fn prune_periodically(node: &Arc<Node>) -> Option<tokio::task::JoinHandle<()>> {
    let retention = node.config.modules.mam.retention?;
    let node = node.clone();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            let before = now_micros()
                .saturating_sub(u64::try_from(retention.as_micros()).unwrap_or(u64::MAX));
            match node.storage.archive_prune(before).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(pruned = n, "archived messages past their retention deleted")
                }
                Err(e) => tracing::warn!(error = %e, "archive not pruned"),
            }
        }
    }))
}

// ---- Queries -----------------------------------------------------------------------------

fn field(var: &str, kind: Option<&str>) -> Element {
    Element::new("field", NS_DATA)
        .with_attr("var", var.to_owned())
        .with_attr_opt("type", kind.map(str::to_owned))
}

/// The query form (XEP-0313 §4.1.1) of version `ns`.
fn form(ns: &'static str) -> Element {
    Element::new("x", NS_DATA)
        .with_attr("type", "form")
        .with_child(
            field("FORM_TYPE", Some("hidden"))
                .with_child(Element::new("value", NS_DATA).with_text(ns)),
        )
        .with_child(field("with", Some("jid-single")))
        .with_child(field("start", Some("text-single")))
        .with_child(field("end", Some("text-single")))
        .with_child(field("after-id", Some("text-single")))
        .with_child(field("before-id", Some("text-single")))
        .with_child(field("ids", Some("text-multi")))
}

fn parse_time(text: &str) -> Option<u64> {
    let time = humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(text))
        .ok()?;
    time.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_micros()).ok())
}

fn stamp(id: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(id)).to_string()
}

/// The form's values, by field.
fn values(form: Option<&Element>) -> Vec<(String, Vec<String>)> {
    form.map(|x| {
        x.children()
            .filter(|f| f.is("field", NS_DATA))
            .map(|f| {
                (
                    f.attr("var").unwrap_or_default().to_owned(),
                    f.children()
                        .filter(|v| v.is("value", NS_DATA))
                        .map(Element::text)
                        .collect(),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Turns a query into storage terms; `Err` answers the client.
fn parse_query(query: &Element) -> Result<(ArchiveQuery, bool), StanzaCondition> {
    let ns = query.ns();
    let mut q = ArchiveQuery {
        from: 0,
        to: u64::MAX,
        max: DEFAULT_PAGE,
        ..ArchiveQuery::default()
    };
    let id_of = |text: &str| {
        text.trim()
            .parse::<u64>()
            .map_err(|_| StanzaCondition::ItemNotFound)
    };
    for (var, vals) in values(query.get_child("x", NS_DATA)) {
        let first = vals.first().map(String::as_str).unwrap_or_default();
        match var.as_str() {
            "FORM_TYPE" => {
                if first != ns {
                    return Err(StanzaCondition::BadRequest);
                }
            }
            "with" => {
                let jid = Jid::new(first).map_err(|_| StanzaCondition::JidMalformed)?;
                q.with = Some(jid.to_bare().to_string());
            }
            "start" => {
                q.from = q
                    .from
                    .max(parse_time(first).ok_or(StanzaCondition::BadRequest)?)
            }
            "end" => {
                q.to =
                    q.to.min(parse_time(first).ok_or(StanzaCondition::BadRequest)?)
            }
            "after-id" => q.from = q.from.max(id_of(first)?.saturating_add(1)),
            "before-id" => q.to = q.to.min(id_of(first)?.saturating_sub(1)),
            "ids" => q.ids = Some(vals.iter().map(|v| id_of(v)).collect::<Result<_, _>>()?),
            _ => return Err(StanzaCondition::BadRequest),
        }
    }
    if let Some(set) = query.get_child("set", NS_RSM) {
        if let Some(max) = set.get_child("max", NS_RSM) {
            let max: usize = max
                .text()
                .trim()
                .parse()
                .map_err(|_| StanzaCondition::BadRequest)?;
            q.max = max.min(MAX_PAGE);
        }
        if let Some(after) = set.get_child("after", NS_RSM) {
            q.from = q.from.max(id_of(&after.text())?.saturating_add(1));
        }
        if let Some(before) = set.get_child("before", NS_RSM) {
            // An empty `<before/>` asks for the last page.
            q.from_end = true;
            let text = before.text();
            if !text.trim().is_empty() {
                q.to = q.to.min(id_of(&text)?.saturating_sub(1));
            }
        }
    }
    let flip = query.has_child("flip-page", ns);
    Ok((q, flip))
}

/// A `urn:xmpp:mam:2` request from the client of `session` about its own archive.
pub async fn handle_iq(
    node: &Arc<Node>,
    session: &Session,
    iq: &Element,
    query: &Element,
) -> Element {
    if !node.config.modules.mam.enabled {
        return StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(iq);
    }
    let user = session.jid.to_bare();
    let get = iq.attr("type") == Some("get");
    let ns = if query.ns() == NS_V1 { NS_V1 } else { NS };
    match (query.name(), get) {
        ("query", true) => query_form(iq, ns),
        ("query", false) => run_query(node, &user, Results::Session(session), iq, query, ns).await,
        ("prefs", true) => result_for(iq).with_child(prefs_element(&prefs(node, &user).await, ns)),
        ("prefs", false) => set_prefs(node, &user, iq, query).await,
        _ => StanzaError::new(StanzaCondition::BadRequest).reply_to(iq),
    }
}

/// The answer to a request for the query form.
pub(crate) fn query_form(iq: &Element, ns: &'static str) -> Element {
    result_for(iq).with_child(Element::new("query", ns).with_child(form(ns)))
}

/// Where the results of an archive query go.
pub(crate) enum Results<'a> {
    /// To the querying client's own session (its account's archive).
    Session(&'a Session),
    /// Routed to this full JID (a room's archive, XEP-0313 for MUC).
    Jid(&'a str),
}

/// Runs `query` on `user`'s archive (an account's or a room's): one `<result/>` message per
/// archived message to the asker, and the IQ answer with `<fin/>`.
pub(crate) async fn run_query(
    node: &Arc<Node>,
    user: &BareJid,
    results: Results<'_>,
    iq: &Element,
    query: &Element,
    ns: &'static str,
) -> Element {
    let (q, flip) = match parse_query(query) {
        Ok(parsed) => parsed,
        Err(condition) => return StanzaError::new(condition).reply_to(iq),
    };
    let page = match node.storage.archive_query(user, q).await {
        Ok(page) => page,
        Err(e) => {
            tracing::error!(%user, error = %e, "archive query failed");
            return StanzaError::new(StanzaCondition::InternalServerError).reply_to(iq);
        }
    };
    let query_id = query.attr("queryid").map(str::to_owned);
    let mut messages = page.messages;
    if flip {
        messages.reverse();
    }
    for (id, archived) in &messages {
        let Ok(original) = Element::parse(&archived.stanza, ns::CLIENT) else {
            continue;
        };
        let forwarded = Element::new("forwarded", NS_FORWARD)
            .with_child(Element::new("delay", ns::DELAY).with_attr("stamp", stamp(*id)))
            .with_child(original);
        let to = match &results {
            Results::Session(session) => session.jid.to_string(),
            Results::Jid(jid) => (*jid).to_owned(),
        };
        let result = Element::new("message", ns::CLIENT)
            .with_attr("to", to)
            .with_attr("from", user.to_string())
            .with_child(
                Element::new("result", ns)
                    .with_attr_opt("queryid", query_id.clone())
                    .with_attr("id", id.to_string())
                    .with_child(forwarded),
            );
        if let Ok(stanza) = Stanza::from_element(&result, ns::CLIENT) {
            match &results {
                Results::Session(session) => {
                    node.deliver(session, &stanza);
                }
                Results::Jid(_) => node.route(stanza).await,
            }
        }
    }
    let mut set = Element::new("set", NS_RSM);
    if let (Some((first, _)), Some((last, _))) = (messages.first(), messages.last()) {
        set.append_child(Element::new("first", NS_RSM).with_text(first.to_string()));
        set.append_child(Element::new("last", NS_RSM).with_text(last.to_string()));
    }
    set.append_child(Element::new("count", NS_RSM).with_text(page.count.to_string()));
    let mut fin = Element::new("fin", ns).with_child(set);
    if page.complete {
        fin.set_attr("complete", "true");
    }
    result_for(iq).with_child(fin)
}

fn prefs_element(prefs: &Prefs, ns: &str) -> Element {
    let list = |name: &str, jids: &[String]| {
        let mut e = Element::new(name, ns);
        for jid in jids {
            e.append_child(Element::new("jid", ns).with_text(jid.clone()));
        }
        e
    };
    Element::new("prefs", ns)
        .with_attr("default", prefs.default.clone())
        .with_child(list("always", &prefs.always))
        .with_child(list("never", &prefs.never))
}

async fn set_prefs(node: &Node, user: &BareJid, iq: &Element, request: &Element) -> Element {
    let default = request.attr("default").unwrap_or("always");
    if !matches!(default, "always" | "never" | "roster") {
        return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
    }
    let jids = |name: &str| -> Result<Vec<String>, StanzaCondition> {
        request
            .get_child(name, request.ns())
            .map(|list| {
                list.children()
                    .filter(|j| j.is("jid", request.ns()))
                    .map(|j| {
                        Jid::new(j.text().trim())
                            .map(|jid| jid.to_bare().to_string())
                            .map_err(|_| StanzaCondition::JidMalformed)
                    })
                    .collect()
            })
            .unwrap_or(Ok(Vec::new()))
    };
    let prefs = match (jids("always"), jids("never")) {
        (Ok(always), Ok(never)) => Prefs {
            default: default.to_owned(),
            always,
            never,
        },
        (Err(c), _) | (_, Err(c)) => return StanzaError::new(c).reply_to(iq),
    };
    // Plain data into a Vec cannot fail.
    let bytes = postcard::to_allocvec(&prefs).expect("preferences always encode");
    match node
        .storage
        .put_item(user, KIND, "prefs", Some(bytes))
        .await
    {
        Ok(()) => {
            node.mam_prefs.put(user, prefs.clone());
            result_for(iq).with_child(prefs_element(&prefs, request.ns()))
        }
        Err(e) => {
            tracing::error!(%user, error = %e, "archive preferences not stored");
            StanzaError::new(StanzaCondition::InternalServerError).reply_to(iq)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_grow_and_never_repeat() {
        let mut last = 0;
        for _ in 0..1000 {
            let id = next_id();
            assert!(id > last);
            last = id;
        }
    }

    #[test]
    fn queries_become_id_ranges() {
        let xml = "<query xmlns='urn:xmpp:mam:2' queryid='q'>\
            <x xmlns='jabber:x:data' type='submit'>\
            <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
            <field var='with'><value>juliet@capulet.lit/balcony</value></field>\
            <field var='start'><value>2010-06-07T00:00:00Z</value></field>\
            <field var='after-id'><value>1275868800000005</value></field></x>\
            <set xmlns='http://jabber.org/protocol/rsm'><max>500</max><before/></set></query>";
        let query = Element::parse(xml.as_bytes(), NS).expect("xml");
        let (q, flip) = parse_query(&query).expect("parsed");
        assert_eq!(q.with.as_deref(), Some("juliet@capulet.lit"));
        assert_eq!(
            q.from, 1_275_868_800_000_006,
            "after-id is later than start"
        );
        assert_eq!(q.to, u64::MAX);
        assert_eq!(q.max, MAX_PAGE);
        assert!(q.from_end && !flip);
        let bad = Element::parse(
            b"<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><after>x</after></set></query>",
            NS,
        )
        .expect("xml");
        assert_eq!(parse_query(&bad).err(), Some(StanzaCondition::ItemNotFound));
    }

    #[test]
    fn the_stanza_id_goes_before_the_end_tag() {
        let tagged = insert_before_end(
            b"<message to='a@x'><body>hi</body></message>",
            "<stanza-id xmlns='urn:xmpp:sid:0' id='1' by='a@x'/>",
        )
        .expect("inserted");
        assert_eq!(
            &tagged[..],
            b"<message to='a@x'><body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' id='1' by='a@x'/></message>"
        );
        assert!(insert_before_end(b"<message/>", "<x/>").is_none());
    }

    #[test]
    fn what_is_archived() {
        let m = |xml: &str| Element::parse(xml.as_bytes(), ns::CLIENT).expect("xml");
        assert!(archivable(&m(
            "<message type='chat'><body>x</body></message>"
        )));
        assert!(archivable(&m("<message><body>x</body></message>")));
        assert!(!archivable(&m(
            "<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )));
        assert!(!archivable(&m(
            "<message type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>"
        )));
        assert!(!archivable(&m(
            "<message type='headline'><body>x</body></message>"
        )));
    }
}
