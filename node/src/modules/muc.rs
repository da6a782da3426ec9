//! XEP-0045 multi-user chat: a service at `muc.<domain>` (`[modules.muc] host`), whose rooms are
//! homed in one datacenter each.
//!
//! **Where a room lives.** The routing table maps each room's JID to its home datacenter
//! (`SetRoomHome`, written when the room is created there). Every stanza for a room goes to its
//! home like a stanza for a user, so an occupant may be connected to any datacenter; the room's
//! own stanzas (presence, messages to occupants) are routed to the occupants' full JIDs from
//! the home.
//!
//! **What a room keeps.** In memory: occupants (nick → role, affiliation and the sessions of one
//! user under that nick), the recent history and the subject. Persistent rooms also keep their
//! configuration, affiliations and subject in storage (`Storage::put_room`), loaded at start;
//! their occupants come back as clients rejoin (XEP-0410 self-pings find out they must).
//!
//! **Protocol.** Join with `<x xmlns='…muc'/>` (a new room is created locked, its creator its
//! owner, status 201; `<x type='submit'/>` to `muc#owner` makes it an instant room), presence to
//! every occupant with `muc#user` items and status codes (110 self, 100 non-anonymous, 201
//! created, 210 nick changed by the service, 303 nick change, 307 kicked, 301 banned), history on
//! join (`maxstanzas`, `maxchars`, `seconds`, `since`), subject, groupchat messages, private
//! messages, nick changes, configuration (XEP-0004 form), affiliations and roles through
//! `muc#admin` (kick, ban, voice, membership), destruction with an alternate venue, disco for the
//! service and its rooms, XEP-0410 self-ping.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use serde::{Deserialize, Serialize};
use tern_gd_mesh::Inbound;
use tern_gd_mesh::frame::{EnvelopeKind, Route};
use tern_raft_store::Command;
use tern_xmpp_proto::stanza::Stanza;
use tern_xmpp_proto::{Element, StanzaCondition, StanzaError, StanzaKind, ns};

use super::result_for;
use crate::node::Node;

/// XEP-0045.
pub const NS: &str = "http://jabber.org/protocol/muc";
/// XEP-0045 user use cases.
pub const NS_USER: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0045 owner use cases.
pub const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// XEP-0045 admin use cases.
pub const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const NS_DATA: &str = "jabber:x:data";
const NS_CONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
const NS_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
const NS_REQUEST: &str = "http://jabber.org/protocol/muc#request";
const NS_REGISTER: &str = "jabber:iq:register";
const NS_REGISTER_FORM: &str = "http://jabber.org/protocol/muc#register";
/// XEP-0421.
const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";

/// A user's standing in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Affiliation {
    /// Banned.
    Outcast,
    /// No affiliation.
    None,
    /// A member.
    Member,
    /// An admin.
    Admin,
    /// An owner.
    Owner,
}

impl Affiliation {
    fn name(self) -> &'static str {
        match self {
            Self::Outcast => "outcast",
            Self::None => "none",
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Self::Outcast,
            Self::None,
            Self::Member,
            Self::Admin,
            Self::Owner,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }
}

/// An occupant's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Not in the room (kicked).
    None,
    /// May not speak in a moderated room.
    Visitor,
    /// May speak.
    Participant,
    /// May kick and grant voice.
    Moderator,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Visitor => "visitor",
            Self::Participant => "participant",
            Self::Moderator => "moderator",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Self::None,
            Self::Visitor,
            Self::Participant,
            Self::Moderator,
        ]
        .into_iter()
        .find(|r| r.name() == name)
    }
}

/// Who sees occupants' real JIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Whois {
    /// Moderators only (semi-anonymous).
    Moderators,
    /// Everyone (non-anonymous).
    Anyone,
}

/// A room's configuration (XEP-0045 §10.2 `muc#roomconfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub public: bool,
    pub members_only: bool,
    pub moderated: bool,
    pub password: Option<String>,
    pub max_users: u32,
    pub whois: Whois,
    pub allow_invites: bool,
    pub change_subject: bool,
    /// Most messages kept for history on join.
    pub history: u32,
    /// `muc#roomconfig_presencebroadcast`: the roles whose presence the other occupants see.
    pub presence_broadcast: RoleSet,
    /// `muc#roomconfig_getmemberlist`: the roles (besides admins and owners) that may read the
    /// member list.
    pub get_member_list: RoleSet,
}

/// A set of the three roles an occupant may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSet(u8);

impl RoleSet {
    /// Every role.
    pub const ALL: Self = Self(0b111);

    fn bit(role: Role) -> u8 {
        match role {
            Role::None => 0,
            Role::Visitor => 0b001,
            Role::Participant => 0b010,
            Role::Moderator => 0b100,
        }
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        self.0 & Self::bit(role) != 0
    }

    /// The set named by form values (`moderator`, `participant`, `visitor`); unknown names are
    /// `None`.
    fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut set = 0;
        for value in values {
            match Role::from_name(value) {
                Some(role) if role != Role::None => set |= Self::bit(role),
                _ => return None,
            }
        }
        Some(Self(set))
    }

    fn names(self) -> impl Iterator<Item = &'static str> {
        [Role::Moderator, Role::Participant, Role::Visitor]
            .into_iter()
            .filter(move |r| self.contains(*r))
            .map(Role::name)
    }
}

impl RoomConfig {
    fn defaults(node: &Node) -> Self {
        let c = &node.config.modules.muc;
        Self {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password: None,
            max_users: c.max_users,
            whois: Whois::Moderators,
            allow_invites: false,
            change_subject: false,
            history: c.history,
            presence_broadcast: RoleSet::ALL,
            get_member_list: RoleSet::ALL,
        }
    }
}

/// What a persistent room keeps in storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RoomRecord {
    config: RoomConfig,
    affiliations: BTreeMap<String, Affiliation>,
    subject: Option<(String, String)>,
    /// Makes the room's XEP-0421 occupant ids.
    salt: [u8; 16],
    /// Registered nicks, by bare JID (XEP-0045 §7.10).
    registered: BTreeMap<String, String>,
}

/// One occupant (a nick), with every session of its user joined under it.
#[derive(Debug, Clone)]
struct Occupant {
    bare: BareJid,
    sessions: Vec<FullJid>,
    role: Role,
    /// The last presence of the occupant's sessions (its children: show, status, caps…).
    presence: Element,
    /// Messages it may still send now (refilled at `max_messages_per_second`), and when it was
    /// last refilled.
    allowance: (f64, std::time::Instant),
}

impl Occupant {
    /// Takes one message from the occupant's allowance; `false` when it sends too fast.
    fn may_send(&mut self, per_second: u32) -> bool {
        let rate = f64::from(per_second);
        let now = std::time::Instant::now();
        let (tokens, last) = self.allowance;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate * 2.0);
        if refilled < 1.0 {
            self.allowance = (refilled, now);
            return false;
        }
        self.allowance = (refilled - 1.0, now);
        true
    }
}

/// A room at its home.
#[derive(Debug)]
struct Room {
    jid: BareJid,
    config: RoomConfig,
    affiliations: BTreeMap<String, Affiliation>,
    occupants: BTreeMap<String, Occupant>,
    /// (nick, text) of the subject.
    subject: Option<(String, String)>,
    /// Recent groupchat messages (as broadcast, without `to`) with when they were sent.
    history: VecDeque<(Bytes, SystemTime)>,
    /// Created and not yet configured: only its owner may enter.
    locked: bool,
    /// Destroyed: out of the map; a stanza that still found it starts afresh.
    gone: bool,
    /// Makes the room's XEP-0421 occupant ids (kept with a persistent room).
    salt: [u8; 16],
    /// Registered nicks, by bare JID.
    registered: BTreeMap<String, String>,
    /// Per datacenter that delivers to some occupants: the occupant sessions it was told of.
    mirrors: BTreeMap<String, MirrorSent>,
    /// The last version given to an occupant list sent to another datacenter.
    mirror_version: u64,
}

/// The rooms homed on this node.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: DashMap<BareJid, Arc<tokio::sync::Mutex<Room>>>,
    /// Rooms homed in other datacenters: the occupant sessions this one delivers to.
    mirrors: DashMap<BareJid, Mirror>,
    /// Requests forwarded to occupants, by the id they were given (ids grow with time, so the
    /// first key is the oldest).
    forwarded: std::sync::Mutex<BTreeMap<String, Forwarded>>,
}

/// A request forwarded to an occupant, waiting for its answer.
#[derive(Debug)]
struct Forwarded {
    requester: FullJid,
    id: String,
    target: String,
}

/// What a datacenter knows of a room homed elsewhere: its occupant sessions that it delivers
/// to, as the home last said.
#[derive(Debug)]
struct Mirror {
    home: String,
    version: u64,
    sessions: Vec<FullJid>,
    /// Those of them whose occupant is a moderator (they see real JIDs).
    moderators: std::collections::HashSet<String>,
}

/// [`EnvelopeKind::RoomOccupants`]'s payload.
#[derive(Debug, Serialize, Deserialize)]
struct OccupantsRecord {
    version: u64,
    sessions: Vec<String>,
    moderators: Vec<String>,
}

/// [`EnvelopeKind::RoomFanout`]'s payload.
#[derive(Debug, Serialize, Deserialize)]
struct FanoutRecord {
    version: u64,
    stanza: Vec<u8>,
    /// The stanza as moderators see it, when that differs (an occupant's presence with its real
    /// JID in a semi-anonymous room).
    moderator_stanza: Option<Vec<u8>>,
    /// Sessions that get their own copy from the home (the occupant's own, for its presence).
    skip: Vec<String>,
}

/// [`EnvelopeKind::RoomBatch`]'s payload.
#[derive(Debug, Serialize, Deserialize)]
struct BatchRecord {
    stanzas: Vec<Vec<u8>>,
}

/// Most bytes of stanzas in one [`EnvelopeKind::RoomBatch`] (a frame holds about 1 MiB).
const BATCH_BYTES: usize = 512 * 1024;

/// The stanzas answering a join: routed one by one, or, for a newcomer whose account lives in
/// another datacenter, gathered and sent there in order, in as few envelopes as fit.
struct JoinReply {
    batch: Option<(String, Vec<Vec<u8>>)>,
}

impl JoinReply {
    fn for_session(node: &Node, session: &FullJid) -> Self {
        let batch = node
            .remote_home(&session.to_bare())
            .map(|(dc, _)| (dc, Vec::new()));
        Self { batch }
    }

    async fn push(&mut self, node: &Arc<Node>, element: Element) {
        match &mut self.batch {
            Some((_, stanzas)) => {
                if let Ok(stanza) = Stanza::from_element(&element, ns::CLIENT) {
                    stanzas.push(stanza.raw().to_vec());
                }
            }
            None => send(node, element).await,
        }
    }

    async fn push_stanza(&mut self, node: &Arc<Node>, stanza: Stanza) {
        match &mut self.batch {
            Some((_, stanzas)) => stanzas.push(stanza.raw().to_vec()),
            None => node.route(stanza).await,
        }
    }

    async fn finish(self, node: &Arc<Node>, room: &BareJid) {
        let Some((dc, stanzas)) = self.batch else {
            return;
        };
        let mut chunks: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
        let mut size = 0;
        for stanza in stanzas {
            if size + stanza.len() > BATCH_BYTES && !chunks.last().is_some_and(Vec::is_empty) {
                chunks.push(Vec::new());
                size = 0;
            }
            size += stanza.len();
            if let Some(last) = chunks.last_mut() {
                last.push(stanza);
            }
        }
        for chunk in chunks.into_iter().filter(|c| !c.is_empty()) {
            let sent = node.mesh.get().and_then(|mesh| {
                let payload = postcard::to_allocvec(&BatchRecord {
                    stanzas: chunk.clone(),
                })
                .ok()?;
                mesh.send(
                    &dc,
                    room_route(room, EnvelopeKind::RoomBatch),
                    Bytes::from(payload),
                )
                .ok()
            });
            if sent.is_some() {
                node.metrics.mesh_sent();
                continue;
            }
            // The bridge refused: one by one (each then fails or bounces as routing says).
            for bytes in chunk {
                if let Ok(stanza) = Stanza::from_frame(Bytes::from(bytes)) {
                    node.route(stanza).await;
                }
            }
        }
    }
}

/// A room's home sends what answers a join of an occupant whose account lives here: routed,
/// in order.
pub async fn batch_from_home(node: &Arc<Node>, inbound: Inbound) {
    let Ok(record) = postcard::from_bytes::<BatchRecord>(&inbound.envelope.stanza) else {
        tracing::warn!(peer = %inbound.peer, "unreadable room batch dropped");
        return;
    };
    for bytes in record.stanzas {
        match Stanza::from_frame(Bytes::from(bytes)) {
            Ok(stanza) => node.route(stanza).await,
            Err(_) => {
                tracing::warn!(peer = %inbound.peer, "unreadable stanza in a room batch dropped")
            }
        }
    }
}

/// What a room told a datacenter of its occupants there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct MirrorSent {
    sessions: Vec<String>,
    moderators: Vec<String>,
    /// The version of that list (each datacenter has its own).
    version: u64,
}

impl Rooms {
    /// Rooms in memory (persistent ones and those with occupants).
    pub fn count(&self) -> usize {
        self.rooms.len()
    }
}

/// The MUC service domain for a served `domain`.
pub fn service_for(node: &Node, domain: &str) -> String {
    node.config.modules.muc.host.replace("@HOST@", domain)
}

/// Whether `domain` is the MUC service of a domain served here.
pub fn is_service(node: &Node, domain: &str) -> bool {
    if !node.config.modules.muc.enabled {
        return false;
    }
    let host = &node.config.modules.muc.host;
    let Some((prefix, suffix)) = host.split_once("@HOST@") else {
        return false;
    };
    domain
        .strip_prefix(prefix)
        .and_then(|d| d.strip_suffix(suffix))
        .is_some_and(|served| node.serves(served))
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn stamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

fn parse_stamp(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(text))
        .ok()
}

/// Loads the persistent rooms homed here at start.
pub async fn load(node: &Node) {
    let stored = match node.storage.list_rooms().await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!(error = %e, "persistent rooms not loaded");
            return;
        }
    };
    let mut loaded = 0;
    for (jid, bytes) in stored {
        let (Ok(jid), Ok(record)) = (
            BareJid::new(&jid),
            postcard::from_bytes::<RoomRecord>(&bytes),
        ) else {
            tracing::warn!(room = %jid, "unreadable stored room skipped");
            continue;
        };
        let room = Room {
            jid: jid.clone(),
            config: record.config,
            affiliations: record.affiliations,
            occupants: BTreeMap::new(),
            subject: record.subject,
            history: VecDeque::new(),
            locked: false,
            gone: false,
            salt: record.salt,
            registered: record.registered,
            mirrors: BTreeMap::new(),
            mirror_version: 0,
        };
        node.rooms
            .rooms
            .insert(jid, Arc::new(tokio::sync::Mutex::new(room)));
        loaded += 1;
    }
    if loaded > 0 {
        tracing::info!(rooms = loaded, "persistent rooms loaded");
    }
}

async fn save(node: &Node, room: &Room) {
    if !room.config.persistent {
        return;
    }
    let record = RoomRecord {
        config: room.config.clone(),
        affiliations: room.affiliations.clone(),
        subject: room.subject.clone(),
        salt: room.salt,
        registered: room.registered.clone(),
    };
    match postcard::to_allocvec(&record) {
        Ok(bytes) => {
            if let Err(e) = node.storage.put_room(&room.jid, Some(bytes)).await {
                tracing::error!(room = %room.jid, error = %e, "room not stored");
            }
        }
        Err(e) => tracing::error!(room = %room.jid, error = %e, "room not encoded"),
    }
}

/// The datacenter a room lives in when it is another one (and bridges run).
fn home_elsewhere(node: &Node, room: &BareJid) -> Option<(String, u64)> {
    node.mesh.get()?;
    node.grt.reader().with(|t| {
        let lookup = t.room_home(room);
        let home = lookup.home?;
        if t.dc_id(&node.config.cluster.dc) == Some(home) {
            return None;
        }
        Some((t.dc(home)?.name.clone(), lookup.as_of))
    })
}

/// A stanza for the MUC service or one of its rooms.
pub async fn route(node: &Arc<Node>, stanza: Stanza, to: Jid, mesh: bool) {
    let Some(room_node) = to.node() else {
        return service_stanza(node, stanza, &to).await;
    };
    let room = BareJid::from_parts(Some(room_node), to.domain());
    if mesh && let Some((dc, index)) = home_elsewhere(node, &room) {
        return node.route_to_dc(stanza, &to, &dc, index, None).await;
    }
    if stanza.kind == StanzaKind::Iq
        && (stanza.is_type("result") || stanza.is_type("error"))
        && to.resource().is_some()
    {
        // An answer to a request the room forwarded (it may come from a bare JID: an
        // account's server answering for it).
        return answer_forwarded(node, &stanza).await;
    }
    let Some(from) = stanza.from().and_then(|f| FullJid::new(f).ok()) else {
        if stanza.kind != StanzaKind::Presence {
            node.bounce(&stanza, StanzaCondition::BadRequest).await;
        }
        return;
    };
    let nick = to.resource().map(|r| r.as_str().to_owned());
    match stanza.kind {
        StanzaKind::Presence => presence(node, &room, &from, nick, stanza).await,
        StanzaKind::Message => message(node, &room, &from, nick, stanza).await,
        StanzaKind::Iq => iq(node, &room, &from, nick, stanza).await,
    }
}

// ---- The service -----------------------------------------------------------------------------

async fn service_stanza(node: &Arc<Node>, stanza: Stanza, to: &Jid) {
    if stanza.kind != StanzaKind::Iq {
        if stanza.kind == StanzaKind::Message && !stanza.is_type("error") {
            node.bounce(&stanza, StanzaCondition::ServiceUnavailable)
                .await;
        }
        return;
    }
    if !(stanza.is_type("get") || stanza.is_type("set")) {
        return;
    }
    let Ok(iq) = stanza.element(ns::CLIENT) else {
        return node.bounce(&stanza, StanzaCondition::BadRequest).await;
    };
    let query = iq.children().next();
    let get = iq.attr("type") == Some("get");
    let reply = match query {
        Some(q) if get && q.is("query", ns::DISCO_INFO) && q.attr("node").is_none() => {
            let mut info = Element::new("query", ns::DISCO_INFO).with_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "conference")
                    .with_attr("type", "text")
                    .with_attr("name", "Chatrooms"),
            );
            for feature in [NS, ns::DISCO_INFO, ns::DISCO_ITEMS, "muc_unique"] {
                info.append_child(
                    Element::new("feature", ns::DISCO_INFO).with_attr("var", feature),
                );
            }
            result_for(&iq).with_child(info)
        }
        Some(q) if get && q.is("query", ns::DISCO_ITEMS) && q.attr("node").is_none() => {
            let service = to.domain().as_str().to_owned();
            let mut items = Element::new("query", ns::DISCO_ITEMS);
            for (jid, name) in public_rooms(node, &service).await {
                items.append_child(
                    Element::new("item", ns::DISCO_ITEMS)
                        .with_attr("jid", jid)
                        .with_attr_opt("name", (!name.is_empty()).then_some(name)),
                );
            }
            result_for(&iq).with_child(items)
        }
        Some(q) if get && q.is("unique", "http://jabber.org/protocol/muc#unique") => {
            let name = format!("{:x}", now_micros());
            result_for(&iq).with_child(
                Element::new("unique", "http://jabber.org/protocol/muc#unique").with_text(name),
            )
        }
        Some(q) if get && q.is("ping", ns::PING) => result_for(&iq),
        _ => StanzaError::new(StanzaCondition::FeatureNotImplemented).reply_to(&iq),
    };
    send(node, reply).await;
}

/// The public rooms of `service` homed here that are open for joining, sorted by JID.
async fn public_rooms(node: &Node, service: &str) -> Vec<(String, String)> {
    let rooms: Vec<Arc<tokio::sync::Mutex<Room>>> = node
        .rooms
        .rooms
        .iter()
        .filter(|e| e.key().domain().as_str() == service)
        .map(|e| e.value().clone())
        .collect();
    let mut out = Vec::new();
    for room in rooms {
        let room = room.lock().await;
        if room.config.public && !room.locked {
            out.push((room.jid.to_string(), room.config.name.clone()));
        }
    }
    out.sort();
    out
}

async fn send(node: &Arc<Node>, element: Element) {
    if let Ok(stanza) = Stanza::from_element(&element, ns::CLIENT) {
        node.route(stanza).await;
    }
}

fn error_presence(
    room: &BareJid,
    nick: Option<&str>,
    to: &FullJid,
    condition: StanzaCondition,
) -> Element {
    let from = match nick {
        Some(n) => format!("{room}/{n}"),
        None => room.to_string(),
    };
    Element::new("presence", ns::CLIENT)
        .with_attr("from", from)
        .with_attr("to", to.to_string())
        .with_attr("type", "error")
        .with_child(Element::new("x", NS))
        .with_child(StanzaError::new(condition).to_element(ns::CLIENT))
}

// ---- Presence: join, leave, nick change ------------------------------------------------------

async fn presence(
    node: &Arc<Node>,
    room_jid: &BareJid,
    from: &FullJid,
    nick: Option<String>,
    stanza: Stanza,
) {
    if stanza.is_type("error") {
        // An occupant's client that answers with an error is gone (XEP-0045 §7.2.? "kick on
        // error").
        if let Some(room) = node.rooms.rooms.get(room_jid).map(|r| r.clone()) {
            let mut room = room.lock().await;
            if let Some(nick) = room.nick_of(from) {
                leave(node, &mut room, from, &nick, None).await;
            }
        }
        return;
    }
    let Ok(element) = stanza.element(ns::CLIENT) else {
        return;
    };
    let unavailable = stanza.is_type("unavailable");
    if stanza.type_().is_some() && !unavailable {
        // Subscriptions and probes have no meaning for a room.
        return;
    }
    let Some(nick) = nick.filter(|n| !n.trim().is_empty()) else {
        if !unavailable {
            send(
                node,
                error_presence(room_jid, None, from, StanzaCondition::JidMalformed),
            )
            .await;
        }
        return;
    };
    let mut room = loop {
        let existing = node.rooms.rooms.get(room_jid).map(|r| r.clone());
        let room = match existing {
            Some(room) => room,
            None if unavailable => return,
            None => match create(node, room_jid, from).await {
                Ok(Some(room)) => room,
                Ok(None) => return node.route(stanza).await,
                Err(condition) => {
                    let refusal = error_presence(room_jid, Some(&nick), from, condition);
                    return send(node, refusal).await;
                }
            },
        };
        let guard = room.lock_owned().await;
        if !guard.gone {
            break guard;
        }
        // Destroyed while we waited: look again (it may be created anew).
    };
    let current = room.nick_of(from);
    match current {
        Some(current) if unavailable => {
            leave(node, &mut room, from, &current, Some(&element)).await;
        }
        None if unavailable => {}
        Some(current) if current == nick => {
            // A presence update: broadcast to everyone.
            if let Some(occupant) = room.occupants.get_mut(&nick) {
                occupant.presence = presence_children(&element);
            }
            broadcast_presence(node, &mut room, &nick, &[], false).await;
        }
        Some(current) => change_nick(node, &mut room, from, &current, &nick, &element).await,
        None => join(node, &mut room, from, &nick, &element).await,
    }
    sync_mirrors(node, &mut room).await;
    let empty = room.occupants.is_empty() && !room.config.persistent;
    let jid = room.jid.clone();
    drop(room);
    if empty {
        destroy_quietly(node, &jid).await;
    }
}

impl Room {
    fn nick_of(&self, full: &FullJid) -> Option<String> {
        self.occupants
            .iter()
            .find(|(_, o)| o.sessions.contains(full))
            .map(|(nick, _)| nick.clone())
    }

    fn affiliation(&self, bare: &BareJid) -> Affiliation {
        self.affiliations
            .get(bare.as_str())
            .copied()
            .unwrap_or(Affiliation::None)
    }

    fn default_role(&self, affiliation: Affiliation) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    fn occupant_count(&self) -> usize {
        self.occupants.len()
    }

    /// XEP-0421: the occupant id of `user` in this room, stable for the room's life and
    /// meaningless outside it.
    fn occupant_id(&self, user: &BareJid) -> String {
        use base64::Engine as _;
        use sha2::{Digest as _, Sha256};
        let mut hash = Sha256::new();
        hash.update(self.salt);
        hash.update(self.jid.as_str().as_bytes());
        hash.update([0]);
        hash.update(user.as_str().as_bytes());
        base64::engine::general_purpose::STANDARD.encode(&hash.finalize()[..18])
    }

    fn occupant_id_element(&self, user: &BareJid) -> Element {
        Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", self.occupant_id(user))
    }
}

/// Creates a room homed here for its first occupant `creator`; the routing table records its
/// home first, so that every datacenter routes to it.
async fn create(
    node: &Arc<Node>,
    room_jid: &BareJid,
    creator: &FullJid,
) -> Result<Option<Arc<tokio::sync::Mutex<Room>>>, StanzaCondition> {
    if !node.serves(creator.domain().as_str()) {
        // Rooms are created by users of the domains served here.
        return Err(StanzaCondition::NotAllowed);
    }
    let limit = node.config.modules.muc.max_rooms_per_user as usize;
    let owned = node
        .rooms
        .rooms
        .iter()
        .filter(|e| {
            e.value()
                .try_lock()
                .is_ok_and(|r| r.affiliation(&creator.to_bare()) == Affiliation::Owner)
        })
        .count();
    if owned >= limit {
        return Err(StanzaCondition::ResourceConstraint);
    }
    let applied = node
        .grt
        .write(Command::CreateRoom {
            jid: room_jid.to_string(),
            dc: node.config.cluster.dc.clone(),
        })
        .await;
    match applied {
        Ok(applied) => {
            if let Err(e) = node
                .grt
                .wait_applied(applied.index, Duration::from_secs(5))
                .await
            {
                tracing::warn!(room = %room_jid, error = %e, "room home slow to show here");
            }
        }
        Err(e) => {
            tracing::warn!(room = %room_jid, error = %e, "room home not recorded");
            return Err(StanzaCondition::ServiceUnavailable);
        }
    }
    if home_elsewhere(node, room_jid).is_some() {
        // Another datacenter created it first: the join goes there.
        return Ok(None);
    }
    let mut affiliations = BTreeMap::new();
    affiliations.insert(creator.to_bare().to_string(), Affiliation::Owner);
    let room = Arc::new(tokio::sync::Mutex::new(Room {
        jid: room_jid.clone(),
        config: RoomConfig::defaults(node),
        affiliations,
        occupants: BTreeMap::new(),
        subject: None,
        history: VecDeque::new(),
        locked: true,
        gone: false,
        salt: {
            let mut salt = [0u8; 16];
            rand::fill(&mut salt);
            salt
        },
        registered: BTreeMap::new(),
        mirrors: BTreeMap::new(),
        mirror_version: 0,
    }));
    // Two joins may race to create it: the first one in the map wins.
    let entry = node
        .rooms
        .rooms
        .entry(room_jid.clone())
        .or_insert(room)
        .clone();
    tracing::debug!(room = %room_jid, creator = %creator, "room created");
    Ok(Some(entry))
}

async fn join(node: &Arc<Node>, room: &mut Room, from: &FullJid, nick: &str, element: &Element) {
    let bare = from.to_bare();
    let affiliation = room.affiliation(&bare);
    let refuse = |condition| error_presence(&room.jid, Some(nick), from, condition);
    if room.locked && affiliation != Affiliation::Owner {
        return send(node, refuse(StanzaCondition::ItemNotFound)).await;
    }
    if affiliation == Affiliation::Outcast {
        return send(node, refuse(StanzaCondition::Forbidden)).await;
    }
    if room.config.members_only && affiliation < Affiliation::Member {
        return send(node, refuse(StanzaCondition::RegistrationRequired)).await;
    }
    if let Some(other) = room.occupants.get(nick)
        && other.bare != bare
    {
        return send(node, refuse(StanzaCondition::Conflict)).await;
    }
    if room
        .registered
        .iter()
        .any(|(owner, registered)| registered == nick && owner != bare.as_str())
    {
        // Someone else registered this nick.
        return send(node, refuse(StanzaCondition::Conflict)).await;
    }
    let muc = element.get_child("x", NS);
    if let Some(password) = &room.config.password
        && affiliation < Affiliation::Admin
    {
        let given = muc
            .and_then(|x| x.get_child("password", NS))
            .map(Element::text);
        if given.as_deref() != Some(password.as_str()) {
            return send(node, refuse(StanzaCondition::NotAuthorized)).await;
        }
    }
    let joining_nick = !room.occupants.contains_key(nick);
    if joining_nick
        && room.occupant_count() >= room.config.max_users as usize
        && affiliation < Affiliation::Admin
    {
        return send(node, refuse(StanzaCondition::ServiceUnavailable)).await;
    }
    let created = room.locked && room.occupants.is_empty();
    let mut reply = JoinReply::for_session(node, from);
    // The occupants already there, to the newcomer.
    for (other_nick, other) in &room.occupants {
        if other_nick != nick && room.config.presence_broadcast.contains(other.role) {
            let p = occupant_presence(room, other_nick, other, from, false, &[]);
            reply.push(node, p).await;
        }
    }
    let role = room.default_role(affiliation);
    let presence = presence_children(element);
    match room.occupants.get_mut(nick) {
        Some(occupant) => {
            occupant.sessions.push(from.clone());
            occupant.presence = presence;
        }
        None => {
            room.occupants.insert(
                nick.to_owned(),
                Occupant {
                    bare,
                    sessions: vec![from.clone()],
                    role,
                    presence,
                    allowance: (
                        f64::from(node.config.modules.muc.max_messages_per_second) * 2.0,
                        std::time::Instant::now(),
                    ),
                },
            );
        }
    }
    let mut codes = Vec::new();
    if room.config.whois == Whois::Anyone {
        codes.push(100);
    }
    if created {
        codes.push(201);
    }
    // Its presence to everyone (its own copy joins the reply, in order).
    sync_mirrors(node, room).await;
    if let Some(occupant) = room.occupants.get(nick).cloned()
        && let Some(own) =
            fan_presence(node, room, nick, &occupant, false, &codes, Some(from)).await
    {
        reply.push(node, own).await;
    }
    // History, then the subject (XEP-0045 §7.2.15–16).
    for bytes in history_for(room, muc.and_then(|x| x.get_child("history", NS))) {
        if let Ok(message) = Stanza::from_frame(bytes) {
            reply
                .push_stanza(node, message.with_addresses(None, Some(from.as_str())))
                .await;
        }
    }
    let (subject_nick, subject) = room.subject.clone().unwrap_or_default();
    let subject_from = if subject_nick.is_empty() {
        room.jid.to_string()
    } else {
        format!("{}/{subject_nick}", room.jid)
    };
    let subject = Element::new("message", ns::CLIENT)
        .with_attr("from", subject_from)
        .with_attr("to", from.to_string())
        .with_attr("type", "groupchat")
        .with_child(Element::new("subject", ns::CLIENT).with_text(subject));
    reply.push(node, subject).await;
    reply.finish(node, &room.jid).await;
}

/// The history to send a newcomer, as the `<history/>` it asked for allows.
fn history_for(room: &Room, request: Option<&Element>) -> Vec<Bytes> {
    let attr = |name: &str| request.and_then(|h| h.attr(name));
    let max_stanzas = attr("maxstanzas")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    let max_chars = attr("maxchars")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    let since = attr("seconds")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| SystemTime::now() - Duration::from_secs(s));
    let since_stamp = attr("since").and_then(parse_stamp);
    let mut out = Vec::new();
    let mut chars = 0usize;
    for (bytes, at) in room.history.iter().rev() {
        if out.len() >= max_stanzas {
            break;
        }
        if since.is_some_and(|s| *at < s) || since_stamp.is_some_and(|s| *at < s) {
            break;
        }
        let delayed = with_delay(bytes, &room.jid, *at);
        chars += delayed.len();
        if chars > max_chars {
            break;
        }
        out.push(delayed);
    }
    out.reverse();
    out
}

/// `message` with a XEP-0203 delay naming the room.
fn with_delay(message: &Bytes, room: &BareJid, at: SystemTime) -> Bytes {
    let delay = format!(
        "<delay xmlns='{}' from='{}' stamp='{}'/>",
        ns::DELAY,
        tern_xmpp_proto::element::escape(room.as_str()),
        stamp(at)
    );
    let Some(end) = message.len().checked_sub(b"</message>".len()) else {
        return message.clone();
    };
    let mut out = Vec::with_capacity(message.len() + delay.len());
    out.extend_from_slice(&message[..end]);
    out.extend_from_slice(delay.as_bytes());
    out.extend_from_slice(&message[end..]);
    Bytes::from(out)
}

/// The children of a client's presence worth repeating to the occupants (not the MUC payload).
fn presence_children(element: &Element) -> Element {
    let mut out = Element::new("presence", ns::CLIENT);
    for child in element.children() {
        if child.ns() != NS && child.ns() != NS_USER {
            out.append_child(child.clone());
        }
    }
    out
}

/// The presence of occupant `nick` as `to` sees it.
fn occupant_presence(
    room: &Room,
    nick: &str,
    occupant: &Occupant,
    to: &FullJid,
    unavailable: bool,
    codes: &[u16],
) -> Element {
    let to_is_moderator = room
        .nick_of(to)
        .and_then(|n| room.occupants.get(&n))
        .is_some_and(|o| o.role == Role::Moderator);
    let own = occupant.sessions.contains(to);
    presence_view(
        room,
        nick,
        occupant,
        to_is_moderator,
        own,
        unavailable,
        codes,
    )
    .with_attr("to", to.to_string())
}

/// Occupant `nick`'s presence, without `to`, as a moderator (`moderator_view`) or another
/// occupant sees it, or as its own sessions do (`own`).
fn presence_view(
    room: &Room,
    nick: &str,
    occupant: &Occupant,
    moderator_view: bool,
    own: bool,
    unavailable: bool,
    codes: &[u16],
) -> Element {
    let mut p =
        Element::new("presence", ns::CLIENT).with_attr("from", format!("{}/{nick}", room.jid));
    if unavailable {
        p.set_attr("type", "unavailable");
    }
    for child in occupant.presence.children() {
        if (!unavailable || child.is("status", ns::CLIENT)) && child.ns() != NS_OCCUPANT_ID {
            p.append_child(child.clone());
        }
    }
    p.append_child(room.occupant_id_element(&occupant.bare));
    let show_jid = room.config.whois == Whois::Anyone || moderator_view;
    let mut item = Element::new("item", NS_USER)
        .with_attr("affiliation", room.affiliation(&occupant.bare).name())
        .with_attr(
            "role",
            if unavailable {
                "none"
            } else {
                occupant.role.name()
            },
        );
    if show_jid && let Some(first) = occupant.sessions.first() {
        item.set_attr("jid", first.to_string());
    }
    let mut x = Element::new("x", NS_USER).with_child(item);
    for code in codes {
        // 110 goes only to the occupant itself; 100/201 only in its own presence too.
        if matches!(code, 100 | 201 | 110) && !own {
            continue;
        }
        x.append_child(Element::new("status", NS_USER).with_attr("code", code.to_string()));
    }
    if own {
        x.append_child(Element::new("status", NS_USER).with_attr("code", "110"));
    }
    p.append_child(x);
    p
}

/// Sends occupant `nick`'s presence to every occupant's sessions.
async fn broadcast_presence(
    node: &Arc<Node>,
    room: &mut Room,
    nick: &str,
    codes: &[u16],
    unavailable: bool,
) {
    // Roles may have changed: the other datacenters learn who the moderators are first.
    sync_mirrors(node, room).await;
    let Some(occupant) = room.occupants.get(nick).cloned() else {
        return;
    };
    fan_presence(node, room, nick, &occupant, unavailable, codes, None).await;
}

/// Sends occupant `nick`'s presence to every occupant session: its own sessions and those no
/// other datacenter delivers get theirs one by one, each datacenter that delivers to some gets
/// one copy (and one as moderators see it, if that differs).
async fn fan_presence(
    node: &Arc<Node>,
    room: &Room,
    nick: &str,
    occupant: &Occupant,
    unavailable: bool,
    codes: &[u16],
    hold: Option<&FullJid>,
) -> Option<Element> {
    let mut mirrored: std::collections::HashSet<String> = std::collections::HashSet::new();
    // An occupant whose role the room does not broadcast is seen by its own sessions only
    // (leaving is always told: the others saw it arrive under a broadcast role, or not at all).
    let hidden = !unavailable && !room.config.presence_broadcast.contains(occupant.role);
    if let Some(mesh) = node.mesh.get()
        && !room.mirrors.is_empty()
        && !hidden
    {
        let plain = presence_view(room, nick, occupant, false, false, unavailable, codes);
        let moderators = (room.config.whois != Whois::Anyone)
            .then(|| presence_view(room, nick, occupant, true, false, unavailable, codes));
        let bytes = |e: &Element| {
            Stanza::from_element(e, ns::CLIENT)
                .ok()
                .map(|s| s.raw().to_vec())
        };
        if let Some(plain) = bytes(&plain) {
            let moderator_stanza = moderators.as_ref().and_then(bytes);
            let skip: Vec<String> = occupant.sessions.iter().map(ToString::to_string).collect();
            for (dc, sent) in &room.mirrors {
                let record = FanoutRecord {
                    version: sent.version,
                    stanza: plain.clone(),
                    moderator_stanza: moderator_stanza.clone(),
                    skip: skip.clone(),
                };
                let Ok(payload) = postcard::to_allocvec(&record) else {
                    continue;
                };
                if mesh
                    .send(
                        dc,
                        room_route(&room.jid, EnvelopeKind::RoomFanout),
                        Bytes::from(payload),
                    )
                    .is_ok()
                {
                    node.metrics.mesh_sent();
                    mirrored.extend(sent.sessions.iter().filter(|s| !skip.contains(s)).cloned());
                }
            }
        }
    }
    let mut held = None;
    for other in room.occupants.values() {
        if hidden && other.bare != occupant.bare {
            continue;
        }
        for session in &other.sessions {
            if !mirrored.contains(session.as_str()) {
                let p = occupant_presence(room, nick, occupant, session, unavailable, codes);
                if hold == Some(session) {
                    held = Some(p);
                } else {
                    send(node, p).await;
                }
            }
        }
    }
    held
}

/// `from` leaves (or is removed): its sessions under `nick` go, the others see it.
async fn leave(
    node: &Arc<Node>,
    room: &mut Room,
    from: &FullJid,
    nick: &str,
    element: Option<&Element>,
) {
    let Some(occupant) = room.occupants.get_mut(nick) else {
        return;
    };
    if occupant.sessions.len() > 1 {
        // Another session of the user stays under the nick: only this one is told.
        occupant.sessions.retain(|s| s != from);
        let mut gone = occupant.clone();
        gone.sessions = vec![from.clone()];
        let p = occupant_presence(room, nick, &gone, from, true, &[]);
        return send(node, p).await;
    }
    if let Some(element) = element {
        occupant.presence = presence_children(element);
    }
    let gone = occupant.clone();
    fan_presence(node, room, nick, &gone, true, &[], None).await;
    room.occupants.remove(nick);
}

async fn change_nick(
    node: &Arc<Node>,
    room: &mut Room,
    from: &FullJid,
    old: &str,
    new: &str,
    element: &Element,
) {
    let registered_by_other = room
        .registered
        .iter()
        .any(|(owner, nick)| nick == new && *owner != from.to_bare().as_str());
    if registered_by_other
        || room
            .occupants
            .get(new)
            .is_some_and(|other| other.bare != from.to_bare())
    {
        return send(
            node,
            error_presence(&room.jid, Some(new), from, StanzaCondition::Conflict),
        )
        .await;
    }
    let Some(mut occupant) = room.occupants.remove(old) else {
        return;
    };
    // Unavailable from the old nick with 303 and the new nick, to everyone.
    let mut targets: Vec<FullJid> = room
        .occupants
        .values()
        .flat_map(|o| o.sessions.iter().cloned())
        .chain(occupant.sessions.iter().cloned())
        .collect();
    targets.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    room.occupants.insert(old.to_owned(), occupant.clone());
    for to in &targets {
        let mut p = occupant_presence(room, old, &occupant, to, true, &[]);
        amend_user_x(&mut p, |x| {
            let item = x
                .children()
                .find(|c| c.is("item", NS_USER))
                .cloned()
                .map(|i| i.with_attr("nick", new.to_owned()));
            x.retain_children(|c| !c.is("item", NS_USER));
            if let Some(item) = item {
                x.append_child(item);
            }
            x.append_child(Element::new("status", NS_USER).with_attr("code", "303"));
        });
        send(node, p).await;
    }
    room.occupants.remove(old);
    occupant.presence = presence_children(element);
    room.occupants.insert(new.to_owned(), occupant);
    broadcast_presence(node, room, new, &[], false).await;
}

// ---- Messages ---------------------------------------------------------------------------------

async fn message(
    node: &Arc<Node>,
    room_jid: &BareJid,
    from: &FullJid,
    nick: Option<String>,
    stanza: Stanza,
) {
    if stanza.is_type("error") {
        return;
    }
    let Some(room) = node.rooms.rooms.get(room_jid).map(|r| r.clone()) else {
        return node.bounce(&stanza, StanzaCondition::ItemNotFound).await;
    };
    let mut room = room.lock().await;
    if room.gone {
        return node.bounce(&stanza, StanzaCondition::ItemNotFound).await;
    }
    let Some(sender) = room.nick_of(from) else {
        // Only occupants speak, invite or write privately (XEP-0045 §7.9).
        return node.bounce(&stanza, StanzaCondition::NotAcceptable).await;
    };
    let limits = &node.config.modules.muc;
    if stanza.raw().len() > limits.max_message_size {
        let error = StanzaError::new(StanzaCondition::NotAcceptable)
            .with_text("the message is larger than this room accepts");
        return node.bounce_with(&stanza, error).await;
    }
    if let Some(occupant) = room.occupants.get_mut(&sender)
        && !occupant.may_send(limits.max_messages_per_second)
    {
        let error = StanzaError::new(StanzaCondition::ResourceConstraint)
            .with_text("too many messages: slow down");
        return node.bounce_with(&stanza, error).await;
    }
    let Ok(element) = stanza.element(ns::CLIENT) else {
        return;
    };
    if let Some(to_nick) = nick {
        // A private message to an occupant.
        let Some(target) = room.occupants.get(&to_nick) else {
            return node.bounce(&stanza, StanzaCondition::ItemNotFound).await;
        };
        if stanza.is_type("groupchat") {
            return node.bounce(&stanza, StanzaCondition::BadRequest).await;
        }
        let from_nick = format!("{}/{sender}", room.jid);
        for session in target.sessions.clone() {
            let mut out = element.clone();
            out.set_attr("from", from_nick.clone());
            out.set_attr("to", session.to_string());
            if !out.has_child("x", NS_USER) {
                out.append_child(Element::new("x", NS_USER));
            }
            out.retain_children(|c| !c.is("occupant-id", NS_OCCUPANT_ID));
            out.append_child(room.occupant_id_element(&from.to_bare()));
            send(node, out).await;
        }
        return;
    }
    if let Some(x) = element.get_child("x", NS_USER)
        && let Some(invite) = x.get_child("invite", NS_USER)
    {
        return mediated_invite(node, &room, from, invite).await;
    }
    if let Some(form) = element.get_child("x", NS_DATA)
        && form_type(form).as_deref() == Some(NS_REQUEST)
    {
        return voice_request(node, &mut room, &sender, form).await;
    }
    if !stanza.is_type("groupchat") {
        return node.bounce(&stanza, StanzaCondition::BadRequest).await;
    }
    let role = room.occupants.get(&sender).map_or(Role::None, |o| o.role);
    if role < Role::Participant {
        return node.bounce(&stanza, StanzaCondition::Forbidden).await;
    }
    let subject = element.get_child("subject", ns::CLIENT).map(Element::text);
    if let Some(subject) = &subject {
        if !(room.config.change_subject || role == Role::Moderator) {
            return node.bounce(&stanza, StanzaCondition::Forbidden).await;
        }
        room.subject = Some((sender.clone(), subject.clone()));
        save(node, &room).await;
    }
    // As broadcast: from the sender's nick, with a stanza id assigned by the room.
    let mut out = element.clone();
    out.remove_attr("to");
    out.set_attr("from", format!("{}/{sender}", room.jid));
    out.retain_children(|c| {
        !c.is("stanza-id", "urn:xmpp:sid:0") && !c.is("occupant-id", NS_OCCUPANT_ID)
    });
    let sender_bare = from.to_bare();
    out.append_child(room.occupant_id_element(&sender_bare));
    let id = crate::modules::mam::next_id();
    out.append_child(
        Element::new("stanza-id", "urn:xmpp:sid:0")
            .with_attr("id", id.to_string())
            .with_attr("by", room.jid.to_string()),
    );
    let Ok(out) = Stanza::from_element(&out, ns::CLIENT) else {
        return;
    };
    // XEP-0313 for the room: its archive is kept under its JID, like an account's.
    if node.config.modules.mam.enabled && subject.is_none() && element.has_child("body", ns::CLIENT)
    {
        let archived = crate::storage::ArchivedMessage {
            with: format!("{}/{sender}", room.jid),
            incoming: true,
            stanza: out.raw().to_vec(),
        };
        if let Err(e) = node.storage.archive_append(&room.jid, id, archived).await {
            tracing::warn!(room = %room.jid, error = %e, "room message not archived");
        }
    }
    if subject.is_none() && element.has_child("body", ns::CLIENT) && room.config.history > 0 {
        room.history
            .push_back((out.raw().clone(), SystemTime::now()));
        while room.history.len() > room.config.history as usize {
            room.history.pop_front();
        }
    }
    broadcast_message(node, &room, &out).await;
}

/// Gives a room stanza (without `to`) to every occupant session: one copy over each bridge to
/// a datacenter that delivers to some of them (it fans out there), one route per session for
/// the others.
async fn broadcast_message(node: &Arc<Node>, room: &Room, stanza: &Stanza) {
    let mut mirrored: std::collections::HashSet<&str> = std::collections::HashSet::new();
    if let Some(mesh) = node.mesh.get() {
        for (dc, sent) in &room.mirrors {
            let sessions = &sent.sessions;
            let record = FanoutRecord {
                version: sent.version,
                stanza: stanza.raw().to_vec(),
                moderator_stanza: None,
                skip: Vec::new(),
            };
            let Ok(payload) = postcard::to_allocvec(&record) else {
                continue;
            };
            let route = room_route(&room.jid, EnvelopeKind::RoomFanout);
            match mesh.send(dc, route, Bytes::from(payload)) {
                Ok(()) => {
                    node.metrics.mesh_sent();
                    mirrored.extend(sessions.iter().map(String::as_str));
                }
                Err(e) => {
                    // Its occupants get the stanza one by one below.
                    tracing::debug!(room = %room.jid, %dc, error = %e, "room fan-out not sent");
                }
            }
        }
    }
    for occupant in room.occupants.values() {
        for session in &occupant.sessions {
            if !mirrored.contains(session.as_str()) {
                node.route(stanza.with_addresses(None, Some(session.as_str())))
                    .await;
            }
        }
    }
}

/// The route of a room's control envelopes: on the room's own stream, so in order.
fn room_route(room: &BareJid, kind: EnvelopeKind) -> Route {
    Route {
        from: room.to_string(),
        to: room.to_string(),
        kind,
        grt_index: 0,
    }
}

/// Tells each datacenter that delivers to some of the room's occupants (their accounts live
/// there) which sessions those are, when that changed; a datacenter with none left is told
/// an empty list.
async fn sync_mirrors(node: &Arc<Node>, room: &mut Room) {
    let Some(mesh) = node.mesh.get() else {
        return;
    };
    let mut wanted: BTreeMap<String, MirrorSent> = BTreeMap::new();
    for occupant in room.occupants.values() {
        if let Some((dc, _)) = node.remote_home(&occupant.bare) {
            let sent = wanted.entry(dc).or_default();
            let sessions = occupant.sessions.iter().map(ToString::to_string);
            if occupant.role == Role::Moderator {
                sent.moderators.extend(sessions.clone());
            }
            sent.sessions.extend(sessions);
        }
    }
    let dcs: std::collections::BTreeSet<String> =
        wanted.keys().chain(room.mirrors.keys()).cloned().collect();
    for dc in dcs {
        let mut sent = wanted.remove(&dc).unwrap_or_default();
        sent.sessions.sort();
        sent.moderators.sort();
        if room
            .mirrors
            .get(&dc)
            .is_some_and(|old| old.sessions == sent.sessions && old.moderators == sent.moderators)
        {
            continue;
        }
        room.mirror_version += 1;
        sent.version = room.mirror_version;
        let record = OccupantsRecord {
            version: sent.version,
            sessions: sent.sessions.clone(),
            moderators: sent.moderators.clone(),
        };
        let Ok(payload) = postcard::to_allocvec(&record) else {
            continue;
        };
        match mesh.send(
            &dc,
            room_route(&room.jid, EnvelopeKind::RoomOccupants),
            Bytes::from(payload),
        ) {
            Ok(()) if sent.sessions.is_empty() => {
                room.mirrors.remove(&dc);
            }
            Ok(()) => {
                room.mirrors.insert(dc, sent);
            }
            Err(e) => {
                // Not told: its occupants get room stanzas one by one until it can be.
                tracing::debug!(room = %room.jid, %dc, error = %e, "room occupants not sent");
                room.mirrors.remove(&dc);
            }
        }
    }
}

/// A room's home says which of its occupant sessions this datacenter delivers to.
pub fn occupants_from_home(node: &Node, inbound: &Inbound) {
    let envelope = &inbound.envelope;
    let (Ok(room), Ok(record)) = (
        BareJid::new(&envelope.route.from),
        postcard::from_bytes::<OccupantsRecord>(&envelope.stanza),
    ) else {
        tracing::warn!(peer = %inbound.peer, "unreadable room occupants dropped");
        return;
    };
    if record.sessions.is_empty() {
        node.rooms.mirrors.remove(&room);
        return;
    }
    let sessions = record
        .sessions
        .iter()
        .filter_map(|s| FullJid::new(s).ok())
        .collect();
    node.rooms.mirrors.insert(
        room,
        Mirror {
            home: inbound.peer.clone(),
            version: record.version,
            sessions,
            moderators: record.moderators.into_iter().collect(),
        },
    );
}

/// A room's home sends one copy of a room stanza: given to each occupant session known here.
pub async fn fanout_from_home(node: &Arc<Node>, inbound: Inbound) {
    let envelope = inbound.envelope;
    let (Ok(room), Ok(record)) = (
        BareJid::new(&envelope.route.from),
        postcard::from_bytes::<FanoutRecord>(&envelope.stanza),
    ) else {
        tracing::warn!(peer = %inbound.peer, "unreadable room fan-out dropped");
        return;
    };
    let Ok(stanza) = Stanza::from_frame(Bytes::from(record.stanza)) else {
        tracing::warn!(peer = %inbound.peer, "unreadable room stanza dropped");
        return;
    };
    let for_moderators = record
        .moderator_stanza
        .and_then(|bytes| Stanza::from_frame(Bytes::from(bytes)).ok());
    let sessions: Vec<(FullJid, bool)> = match node.rooms.mirrors.get(&room) {
        Some(mirror) if mirror.version == record.version && mirror.home == inbound.peer => mirror
            .sessions
            .iter()
            .filter(|s| !record.skip.iter().any(|k| k == s.as_str()))
            .map(|s| (s.clone(), mirror.moderators.contains(s.as_str())))
            .collect(),
        _ => {
            // Envelopes of one room come in order, so this means the lists were lost (this
            // node restarted): the home sends them again when it hears of the restart.
            tracing::info!(%room, peer = %inbound.peer, "room fan-out without a current occupant list dropped");
            return;
        }
    };
    for (session, moderator) in sessions {
        let copy = match (&for_moderators, moderator) {
            (Some(variant), true) => variant,
            _ => &stanza,
        };
        node.route(copy.with_addresses(None, Some(session.as_str())))
            .await;
    }
}

/// Datacenter `peer` (re)started: what it knew of rooms homed here is gone (they are told
/// again), and the rooms homed there lost their occupants (their lists here are dropped).
pub async fn peer_started(node: &Arc<Node>, peer: &str) {
    node.rooms.mirrors.retain(|_, m| m.home != peer);
    let rooms: Vec<Arc<tokio::sync::Mutex<Room>>> =
        node.rooms.rooms.iter().map(|e| e.value().clone()).collect();
    for room in rooms {
        let mut room = room.lock().await;
        if room.mirrors.remove(peer).is_some() || !room.occupants.is_empty() {
            sync_mirrors(node, &mut room).await;
        }
    }
}

/// The `FORM_TYPE` of a data form.
fn form_type(form: &Element) -> Option<String> {
    form.children()
        .find(|f| f.is("field", NS_DATA) && f.attr("var") == Some("FORM_TYPE"))
        .and_then(|f| f.get_child("value", NS_DATA))
        .map(Element::text)
}

/// The value of field `var` of a data form.
fn form_value(form: &Element, var: &str) -> Option<String> {
    form.children()
        .find(|f| f.is("field", NS_DATA) && f.attr("var") == Some(var))
        .and_then(|f| f.get_child("value", NS_DATA))
        .map(|v| v.text().trim().to_owned())
}

/// XEP-0045 §7.13 / §8.6: a visitor asks for voice (the request goes to the moderators), or a
/// moderator answers one (`muc#request_allow`).
async fn voice_request(node: &Arc<Node>, room: &mut Room, sender: &str, form: &Element) {
    let sender_role = room.occupants.get(sender).map_or(Role::None, |o| o.role);
    let allow = form_value(form, "muc#request_allow");
    if let Some(allow) = allow
        && sender_role == Role::Moderator
    {
        // A moderator's answer.
        let Some(nick) = form_value(form, "muc#roomnick") else {
            return;
        };
        if matches!(allow.as_str(), "true" | "1")
            && let Some(occupant) = room.occupants.get_mut(&nick)
            && occupant.role == Role::Visitor
        {
            occupant.role = Role::Participant;
            broadcast_presence(node, room, &nick, &[], false).await;
        }
        return;
    }
    if sender_role != Role::Visitor {
        return;
    }
    let Some(occupant) = room.occupants.get(sender) else {
        return;
    };
    let field = |var: &str, kind: &str, value: String| {
        Element::new("field", NS_DATA)
            .with_attr("var", var.to_owned())
            .with_attr("type", kind.to_owned())
            .with_child(Element::new("value", NS_DATA).with_text(value))
    };
    let request = Element::new("x", NS_DATA)
        .with_attr("type", "form")
        .with_child(Element::new("title", NS_DATA).with_text("Voice request"))
        .with_child(field("FORM_TYPE", "hidden", NS_REQUEST.to_owned()))
        .with_child(field("muc#role", "list-single", "participant".to_owned()))
        .with_child(field("muc#jid", "jid-single", occupant.bare.to_string()))
        .with_child(field("muc#roomnick", "text-single", sender.to_owned()))
        .with_child(field("muc#request_allow", "boolean", "false".to_owned()));
    let moderators: Vec<FullJid> = room
        .occupants
        .values()
        .filter(|o| o.role == Role::Moderator)
        .flat_map(|o| o.sessions.iter().cloned())
        .collect();
    for to in moderators {
        send(
            node,
            Element::new("message", ns::CLIENT)
                .with_attr("from", room.jid.to_string())
                .with_attr("to", to.to_string())
                .with_child(request.clone()),
        )
        .await;
    }
}

async fn mediated_invite(node: &Arc<Node>, room: &Room, from: &FullJid, invite: &Element) {
    let Some(to) = invite.attr("to") else {
        return;
    };
    let mut x = Element::new("x", NS_USER).with_child({
        let mut i = Element::new("invite", NS_USER).with_attr("from", from.to_bare().to_string());
        if let Some(reason) = invite.get_child("reason", NS_USER) {
            i.append_child(reason.clone());
        }
        i
    });
    if let Some(password) = &room.config.password {
        x.append_child(Element::new("password", NS_USER).with_text(password.clone()));
    }
    send(
        node,
        Element::new("message", ns::CLIENT)
            .with_attr("from", room.jid.to_string())
            .with_attr("to", to.to_owned())
            .with_child(x),
    )
    .await;
}

// ---- IQs --------------------------------------------------------------------------------------

async fn iq(
    node: &Arc<Node>,
    room_jid: &BareJid,
    from: &FullJid,
    nick: Option<String>,
    stanza: Stanza,
) {
    if !(stanza.is_type("get") || stanza.is_type("set")) {
        return;
    }
    let Ok(iq) = stanza.element(ns::CLIENT) else {
        return node.bounce(&stanza, StanzaCondition::BadRequest).await;
    };
    let Some(room) = node.rooms.rooms.get(room_jid).map(|r| r.clone()) else {
        return send(
            node,
            StanzaError::new(StanzaCondition::ItemNotFound).reply_to(&iq),
        )
        .await;
    };
    let mut room = room.lock().await;
    if room.gone {
        return send(
            node,
            StanzaError::new(StanzaCondition::ItemNotFound).reply_to(&iq),
        )
        .await;
    }
    let query = iq.children().next().cloned();
    let get = iq.attr("type") == Some("get");
    if let Some(nick) = nick {
        // XEP-0410: a ping to one's own occupant JID says whether one is still joined.
        let reply = match &query {
            Some(q) if q.is("ping", ns::PING) && room.nick_of(from).as_deref() == Some(&nick) => {
                result_for(&iq)
            }
            Some(q) if q.is("ping", ns::PING) => {
                StanzaError::new(StanzaCondition::NotAcceptable).reply_to(&iq)
            }
            _ => match forward_iq(node, &room, from, &nick, &iq) {
                Some(forwarded) => forwarded,
                None => StanzaError::new(StanzaCondition::ItemNotFound).reply_to(&iq),
            },
        };
        return send(node, reply).await;
    }
    let affiliation = room.affiliation(&from.to_bare());
    let reply = match query {
        Some(q)
            if get
                && q.is("query", ns::DISCO_INFO)
                && q.attr("node") == Some("x-roomuser-item") =>
        {
            // XEP-0045 §7.2.4: the nick the asker registered, if any.
            let mut info =
                Element::new("query", ns::DISCO_INFO).with_attr("node", "x-roomuser-item");
            if let Some(nick) = room.registered.get(from.to_bare().as_str()) {
                info.append_child(
                    Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", "conference")
                        .with_attr("type", "text")
                        .with_attr("name", nick.clone()),
                );
            }
            result_for(&iq).with_child(info)
        }
        Some(q) if get && q.is("query", ns::DISCO_INFO) => {
            room_info(&room, &iq, node.config.modules.mam.enabled)
        }
        Some(q) if q.is("query", NS_REGISTER) => {
            register(node, &mut room, from, &iq, &q, get).await
        }
        Some(q)
            if (q.ns() == crate::modules::mam::NS || q.ns() == crate::modules::mam::NS_V1)
                && node.config.modules.mam.enabled =>
        {
            let may_read = (room.config.public && !room.config.members_only)
                || affiliation >= Affiliation::Member
                || room.nick_of(from).is_some();
            if !may_read {
                StanzaError::new(StanzaCondition::Forbidden).reply_to(&iq)
            } else {
                let ns = if q.ns() == crate::modules::mam::NS_V1 {
                    crate::modules::mam::NS_V1
                } else {
                    crate::modules::mam::NS
                };
                let jid = room.jid.clone();
                drop(room);
                let reply = match (q.name(), get) {
                    ("query", false) => {
                        let to = from.to_string();
                        let results = crate::modules::mam::Results::Jid(&to);
                        crate::modules::mam::run_query(node, &jid, results, &iq, &q, ns).await
                    }
                    ("query", true) => crate::modules::mam::query_form(&iq, ns),
                    _ => StanzaError::new(StanzaCondition::FeatureNotImplemented).reply_to(&iq),
                };
                return send(node, reply).await;
            }
        }
        Some(q) if get && q.is("query", ns::DISCO_ITEMS) => {
            result_for(&iq).with_child(Element::new("query", ns::DISCO_ITEMS))
        }
        Some(q) if get && q.is("ping", ns::PING) => result_for(&iq),
        Some(q) if q.is("query", NS_OWNER) => {
            if affiliation != Affiliation::Owner {
                StanzaError::new(StanzaCondition::Forbidden).reply_to(&iq)
            } else if get {
                result_for(&iq)
                    .with_child(Element::new("query", NS_OWNER).with_child(config_form(&room)))
            } else {
                let reply = owner_set(node, &mut room, &iq, &q).await;
                if q.has_child("destroy", NS_OWNER) && reply.attr("type") == Some("result") {
                    let jid = room.jid.clone();
                    drop(room);
                    destroy_quietly(node, &jid).await;
                    return send(node, reply).await;
                }
                reply
            }
        }
        Some(q) if q.is("query", NS_ADMIN) => admin(node, &mut room, from, &iq, &q, get).await,
        _ => StanzaError::new(StanzaCondition::FeatureNotImplemented).reply_to(&iq),
    };
    send(node, reply).await;
}

/// Most requests forwarded to occupants and not answered yet; past it the oldest are forgotten.
const MAX_FORWARDED: usize = 10_000;

/// A request an occupant sent to another occupant's JID, forwarded to the latter (a vCard
/// request to the occupant's account, whose server answers it; anything else to its session):
/// the request with its id replaced and `from` made the sender's occupant JID, so the answer
/// comes back to the room. `None` when the target is not in the room or the sender is not an
/// occupant.
fn forward_iq(
    node: &Node,
    room: &Room,
    from: &FullJid,
    target_nick: &str,
    iq: &Element,
) -> Option<Element> {
    let sender_nick = room.nick_of(from)?;
    let target = room.occupants.get(target_nick)?;
    let to = if iq.has_child("vCard", super::vcard::NS) {
        target.bare.to_string()
    } else {
        target.sessions.first()?.to_string()
    };
    let id = format!("tern-muc-{:x}", crate::modules::mam::next_id());
    {
        let mut pending = node
            .rooms
            .forwarded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.len() >= MAX_FORWARDED
            && let Some(oldest) = pending.keys().next().cloned()
        {
            pending.remove(&oldest);
        }
        pending.insert(
            id.clone(),
            Forwarded {
                requester: from.clone(),
                id: iq.attr("id").unwrap_or_default().to_owned(),
                target: format!("{}/{target_nick}", room.jid),
            },
        );
    }
    let mut out = iq.clone();
    out.set_attr("id", id);
    out.set_attr("from", format!("{}/{sender_nick}", room.jid));
    out.set_attr("to", to);
    Some(out)
}

/// The answer to a forwarded request: back to who asked, from the target's occupant JID.
async fn answer_forwarded(node: &Arc<Node>, stanza: &Stanza) {
    let Some(id) = stanza.id().filter(|id| id.starts_with("tern-muc-")) else {
        return;
    };
    let pending = node
        .rooms
        .forwarded
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(id);
    let Some(pending) = pending else {
        return;
    };
    let Ok(mut answer) = stanza.element(ns::CLIENT) else {
        return;
    };
    answer.set_attr("id", pending.id);
    answer.set_attr("from", pending.target);
    answer.set_attr("to", pending.requester.to_string());
    send(node, answer).await;
}

/// XEP-0045 §7.10: registering (or giving up) a nick with the room; a registered user becomes
/// a member.
async fn register(
    node: &Arc<Node>,
    room: &mut Room,
    from: &FullJid,
    iq: &Element,
    query: &Element,
    get: bool,
) -> Element {
    let bare = from.to_bare();
    if get {
        let mut answer = Element::new("query", NS_REGISTER);
        if let Some(nick) = room.registered.get(bare.as_str()) {
            answer.append_child(Element::new("registered", NS_REGISTER));
            answer.append_child(Element::new("username", NS_REGISTER).with_text(nick.clone()));
            return result_for(iq).with_child(answer);
        }
        let form = Element::new("x", NS_DATA)
            .with_attr("type", "form")
            .with_child(
                Element::new("field", NS_DATA)
                    .with_attr("var", "FORM_TYPE")
                    .with_attr("type", "hidden")
                    .with_child(Element::new("value", NS_DATA).with_text(NS_REGISTER_FORM)),
            )
            .with_child(
                Element::new("field", NS_DATA)
                    .with_attr("var", "muc#register_roomnick")
                    .with_attr("type", "text-single")
                    .with_attr("label", "Nickname")
                    .with_child(Element::new("required", NS_DATA)),
            );
        answer.append_child(
            Element::new("instructions", NS_REGISTER)
                .with_text("Choose the nickname to register with this room."),
        );
        answer.append_child(form);
        return result_for(iq).with_child(answer);
    }
    if room.affiliation(&bare) == Affiliation::Outcast {
        return StanzaError::new(StanzaCondition::Forbidden).reply_to(iq);
    }
    if query.has_child("remove", NS_REGISTER) {
        room.registered.remove(bare.as_str());
        if room.affiliation(&bare) == Affiliation::Member {
            room.affiliations.remove(bare.as_str());
        }
        save(node, room).await;
        return result_for(iq);
    }
    let nick = query
        .get_child("x", NS_DATA)
        .and_then(|form| form_value(form, "muc#register_roomnick"))
        .filter(|n| !n.is_empty());
    let Some(nick) = nick else {
        return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
    };
    let taken = room
        .registered
        .iter()
        .any(|(owner, n)| *n == nick && owner != bare.as_str())
        || room.occupants.get(&nick).is_some_and(|o| o.bare != bare);
    if taken {
        return StanzaError::new(StanzaCondition::Conflict).reply_to(iq);
    }
    room.registered.insert(bare.to_string(), nick);
    if room.affiliation(&bare) == Affiliation::None {
        room.affiliations
            .insert(bare.to_string(), Affiliation::Member);
    }
    save(node, room).await;
    result_for(iq)
}

fn room_info(room: &Room, iq: &Element, mam: bool) -> Element {
    let c = &room.config;
    let mut q = Element::new("query", ns::DISCO_INFO).with_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "conference")
            .with_attr("type", "text")
            .with_attr(
                "name",
                if c.name.is_empty() {
                    room.jid.node().map(|n| n.to_string()).unwrap_or_default()
                } else {
                    c.name.clone()
                },
            ),
    );
    let features = [
        NS,
        if c.persistent {
            "muc_persistent"
        } else {
            "muc_temporary"
        },
        if c.public { "muc_public" } else { "muc_hidden" },
        if c.members_only {
            "muc_membersonly"
        } else {
            "muc_open"
        },
        if c.moderated {
            "muc_moderated"
        } else {
            "muc_unmoderated"
        },
        if c.password.is_some() {
            "muc_passwordprotected"
        } else {
            "muc_unsecured"
        },
        if c.whois == Whois::Anyone {
            "muc_nonanonymous"
        } else {
            "muc_semianonymous"
        },
        "urn:xmpp:sid:0",
        NS_OCCUPANT_ID,
        NS_REGISTER,
        ns::PING,
    ];
    for f in features {
        q.append_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
    }
    if mam {
        for f in [crate::modules::mam::NS, crate::modules::mam::NS_V1] {
            q.append_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
        }
    }
    let field = |var: &str, value: String| {
        Element::new("field", NS_DATA)
            .with_attr("var", var.to_owned())
            .with_child(Element::new("value", NS_DATA).with_text(value))
    };
    q.append_child(
        Element::new("x", NS_DATA)
            .with_attr("type", "result")
            .with_child(
                Element::new("field", NS_DATA)
                    .with_attr("var", "FORM_TYPE")
                    .with_attr("type", "hidden")
                    .with_child(Element::new("value", NS_DATA).with_text(NS_ROOMINFO)),
            )
            .with_child(field("muc#roominfo_description", c.description.clone()))
            .with_child(field(
                "muc#roominfo_occupants",
                room.occupant_count().to_string(),
            ))
            .with_child(field(
                "muc#roominfo_subject",
                room.subject.clone().map(|(_, s)| s).unwrap_or_default(),
            )),
    );
    result_for(iq).with_child(q)
}

fn config_form(room: &Room) -> Element {
    let c = &room.config;
    let field = |var: &str, kind: &str, value: String| {
        Element::new("field", NS_DATA)
            .with_attr("var", var.to_owned())
            .with_attr("type", kind.to_owned())
            .with_child(Element::new("value", NS_DATA).with_text(value))
    };
    let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
    Element::new("x", NS_DATA)
        .with_attr("type", "form")
        .with_child(
            Element::new("field", NS_DATA)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(Element::new("value", NS_DATA).with_text(NS_CONFIG)),
        )
        .with_child(field(
            "muc#roomconfig_roomname",
            "text-single",
            c.name.clone(),
        ))
        .with_child(field(
            "muc#roomconfig_roomdesc",
            "text-single",
            c.description.clone(),
        ))
        .with_child(field(
            "muc#roomconfig_persistentroom",
            "boolean",
            flag(c.persistent),
        ))
        .with_child(field(
            "muc#roomconfig_publicroom",
            "boolean",
            flag(c.public),
        ))
        .with_child(field(
            "muc#roomconfig_membersonly",
            "boolean",
            flag(c.members_only),
        ))
        .with_child(field(
            "muc#roomconfig_moderatedroom",
            "boolean",
            flag(c.moderated),
        ))
        .with_child(field(
            "muc#roomconfig_passwordprotectedroom",
            "boolean",
            flag(c.password.is_some()),
        ))
        .with_child(field(
            "muc#roomconfig_roomsecret",
            "text-private",
            c.password.clone().unwrap_or_default(),
        ))
        .with_child(field(
            "muc#roomconfig_maxusers",
            "list-single",
            c.max_users.to_string(),
        ))
        .with_child(field(
            "muc#roomconfig_whois",
            "list-single",
            if c.whois == Whois::Anyone {
                "anyone"
            } else {
                "moderators"
            }
            .to_owned(),
        ))
        .with_child(field(
            "muc#roomconfig_allowinvites",
            "boolean",
            flag(c.allow_invites),
        ))
        .with_child(field(
            "muc#roomconfig_changesubject",
            "boolean",
            flag(c.change_subject),
        ))
        .with_child(field(
            "muc#maxhistoryfetch",
            "text-single",
            c.history.to_string(),
        ))
        .with_child(roles_field(
            "muc#roomconfig_presencebroadcast",
            c.presence_broadcast,
        ))
        .with_child(roles_field(
            "muc#roomconfig_getmemberlist",
            c.get_member_list,
        ))
}

/// A `list-multi` field of roles with the three options.
fn roles_field(var: &str, set: RoleSet) -> Element {
    let mut f = Element::new("field", NS_DATA)
        .with_attr("var", var.to_owned())
        .with_attr("type", "list-multi");
    for role in RoleSet::ALL.names() {
        f.append_child(
            Element::new("option", NS_DATA)
                .with_attr("label", role.to_owned())
                .with_child(Element::new("value", NS_DATA).with_text(role.to_owned())),
        );
    }
    for role in set.names() {
        f.append_child(Element::new("value", NS_DATA).with_text(role.to_owned()));
    }
    f
}

/// A submitted configuration form, the cancel of one, or a destruction.
async fn owner_set(node: &Arc<Node>, room: &mut Room, iq: &Element, query: &Element) -> Element {
    if let Some(destroy) = query.get_child("destroy", NS_OWNER) {
        let mut d = Element::new("destroy", NS_USER).with_attr_opt("jid", destroy.attr("jid"));
        if let Some(reason) = destroy.get_child("reason", NS_OWNER) {
            d.append_child(Element::new("reason", NS_USER).with_text(reason.text()));
        }
        let targets: Vec<(String, FullJid)> = room
            .occupants
            .iter()
            .flat_map(|(n, o)| o.sessions.iter().map(|s| (n.clone(), s.clone())))
            .collect();
        for (nick, to) in targets {
            let p = Element::new("presence", ns::CLIENT)
                .with_attr("from", format!("{}/{nick}", room.jid))
                .with_attr("to", to.to_string())
                .with_attr("type", "unavailable")
                .with_child(
                    Element::new("x", NS_USER)
                        .with_child(
                            Element::new("item", NS_USER)
                                .with_attr("affiliation", "none")
                                .with_attr("role", "none"),
                        )
                        .with_child(d.clone()),
                );
            send(node, p).await;
        }
        room.occupants.clear();
        sync_mirrors(node, room).await;
        room.config.persistent = false;
        return result_for(iq);
    }
    let Some(form) = query.get_child("x", NS_DATA) else {
        return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
    };
    if form.attr("type") == Some("cancel") {
        return result_for(iq);
    }
    let was_persistent = room.config.persistent;
    let mut c = room.config.clone();
    for field in form.children().filter(|f| f.is("field", NS_DATA)) {
        let value = field
            .get_child("value", NS_DATA)
            .map(|v| v.text().trim().to_owned())
            .unwrap_or_default();
        let truthy = matches!(value.as_str(), "1" | "true");
        match field.attr("var").unwrap_or_default() {
            "muc#roomconfig_roomname" => c.name = value,
            "muc#roomconfig_roomdesc" => c.description = value,
            "muc#roomconfig_persistentroom" => c.persistent = truthy,
            "muc#roomconfig_publicroom" => c.public = truthy,
            "muc#roomconfig_membersonly" => c.members_only = truthy,
            "muc#roomconfig_moderatedroom" => c.moderated = truthy,
            "muc#roomconfig_passwordprotectedroom" if !truthy => c.password = None,
            "muc#roomconfig_roomsecret" => {
                c.password = (!value.is_empty()).then_some(value);
            }
            "muc#roomconfig_maxusers" => {
                let cap = node.config.modules.muc.max_users;
                match value.parse::<u32>() {
                    Ok(n) if (1..=cap).contains(&n) => c.max_users = n,
                    _ => return StanzaError::new(StanzaCondition::NotAcceptable).reply_to(iq),
                }
            }
            "muc#roomconfig_whois" => {
                c.whois = if value == "anyone" {
                    Whois::Anyone
                } else {
                    Whois::Moderators
                };
            }
            "muc#roomconfig_allowinvites" => c.allow_invites = truthy,
            "muc#roomconfig_changesubject" => c.change_subject = truthy,
            "muc#maxhistoryfetch" => {
                if let Ok(n) = value.parse::<u32>() {
                    c.history = n.min(1000);
                }
            }
            var @ ("muc#roomconfig_presencebroadcast" | "muc#roomconfig_getmemberlist") => {
                let values: Vec<String> = field
                    .children()
                    .filter(|v| v.is("value", NS_DATA))
                    .map(|v| v.text().trim().to_owned())
                    .collect();
                let Some(set) = RoleSet::parse(values.iter().map(String::as_str)) else {
                    return StanzaError::new(StanzaCondition::NotAcceptable).reply_to(iq);
                };
                if var == "muc#roomconfig_presencebroadcast" {
                    c.presence_broadcast = set;
                } else {
                    c.get_member_list = set;
                }
            }
            _ => {}
        }
    }
    // XEP-0045 §10.2.1: occupants learn of a change (104), and of the room becoming
    // non-anonymous (172) or semi-anonymous (173).
    let mut codes = Vec::new();
    if !room.locked && c != room.config {
        codes.push(104);
        if c.whois != room.config.whois {
            codes.push(if c.whois == Whois::Anyone { 172 } else { 173 });
        }
    }
    room.config = c;
    room.locked = false;
    while room.history.len() > room.config.history as usize {
        room.history.pop_front();
    }
    if room.config.persistent {
        save(node, room).await;
    } else if was_persistent && let Err(e) = node.storage.put_room(&room.jid, None).await {
        tracing::warn!(room = %room.jid, error = %e, "room record not deleted");
    }
    if !codes.is_empty() {
        let mut x = Element::new("x", NS_USER);
        for code in codes {
            x.append_child(Element::new("status", NS_USER).with_attr("code", code.to_string()));
        }
        let notice = Element::new("message", ns::CLIENT)
            .with_attr("from", room.jid.to_string())
            .with_attr("type", "groupchat")
            .with_attr("id", format!("tern-config-{:x}", now_micros()))
            .with_child(x);
        if let Ok(notice) = Stanza::from_element(&notice, ns::CLIENT) {
            broadcast_message(node, room, &notice).await;
        }
    }
    result_for(iq)
}

/// `muc#admin`: lists by affiliation or role, and changes of either.
async fn admin(
    node: &Arc<Node>,
    room: &mut Room,
    from: &FullJid,
    iq: &Element,
    query: &Element,
    get: bool,
) -> Element {
    let actor_affiliation = room.affiliation(&from.to_bare());
    let actor_role = room
        .nick_of(from)
        .and_then(|n| room.occupants.get(&n).map(|o| o.role))
        .unwrap_or(Role::None);
    let items: Vec<&Element> = query
        .children()
        .filter(|c| c.is("item", NS_ADMIN))
        .collect();
    if items.is_empty() {
        return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
    }
    if get {
        // Admins and moderators read every list; others the member list, when their role may.
        let members_only_asked = items
            .iter()
            .all(|i| i.attr("affiliation") == Some("member"));
        let may_read = actor_affiliation >= Affiliation::Admin
            || actor_role >= Role::Moderator
            || (members_only_asked
                && actor_role != Role::None
                && room.config.get_member_list.contains(actor_role));
        if !may_read {
            return StanzaError::new(StanzaCondition::Forbidden).reply_to(iq);
        }
        let mut out = Element::new("query", NS_ADMIN);
        for item in items {
            if let Some(affiliation) = item.attr("affiliation").and_then(Affiliation::from_name) {
                for (jid, a) in &room.affiliations {
                    if *a == affiliation {
                        out.append_child(
                            Element::new("item", NS_ADMIN)
                                .with_attr("affiliation", a.name())
                                .with_attr("jid", jid.clone()),
                        );
                    }
                }
            } else if let Some(role) = item.attr("role").and_then(Role::from_name) {
                for (nick, o) in &room.occupants {
                    if o.role == role {
                        out.append_child(
                            Element::new("item", NS_ADMIN)
                                .with_attr("role", role.name())
                                .with_attr("nick", nick.clone())
                                .with_attr("affiliation", room.affiliation(&o.bare).name()),
                        );
                    }
                }
            }
        }
        return result_for(iq).with_child(out);
    }
    // Every item is checked against the room as the earlier items leave it, and only when all
    // pass is anything applied: a request either changes everything it asks for or nothing.
    let mut affiliations = room.affiliations.clone();
    let mut roles: BTreeMap<String, Role> = BTreeMap::new();
    let mut changes = Vec::new();
    for item in items {
        let reason = item.get_child("reason", NS_ADMIN).map(Element::text);
        if let Some(affiliation) = item.attr("affiliation").and_then(Affiliation::from_name) {
            let Some(jid) = item
                .attr("jid")
                .and_then(|j| Jid::new(j).ok())
                .map(|j| j.to_bare())
            else {
                return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
            };
            let current = affiliations
                .get(jid.as_str())
                .copied()
                .unwrap_or(Affiliation::None);
            // Owners change anything; admins change members, outcasts and none, below admin.
            let allowed = actor_affiliation == Affiliation::Owner
                || (actor_affiliation == Affiliation::Admin
                    && current < Affiliation::Admin
                    && affiliation < Affiliation::Admin);
            if !allowed {
                return StanzaError::new(StanzaCondition::NotAllowed).reply_to(iq);
            }
            if affiliation == Affiliation::None {
                affiliations.remove(jid.as_str());
            } else {
                affiliations.insert(jid.to_string(), affiliation);
            }
            if current == Affiliation::Owner
                && !affiliations.values().any(|a| *a == Affiliation::Owner)
            {
                // A room keeps at least one owner.
                return StanzaError::new(StanzaCondition::Conflict).reply_to(iq);
            }
            changes.push(AdminChange::Affiliation(jid, affiliation, reason));
        } else if let Some(role) = item.attr("role").and_then(Role::from_name) {
            let Some(nick) = item.attr("nick").map(str::to_owned) else {
                return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
            };
            let Some(target) = room.occupants.get(&nick) else {
                return StanzaError::new(StanzaCondition::ItemNotFound).reply_to(iq);
            };
            if roles.get(&nick) == Some(&Role::None) {
                // Kicked by an earlier item of this request.
                return StanzaError::new(StanzaCondition::ItemNotFound).reply_to(iq);
            }
            let target_affiliation = affiliations
                .get(target.bare.as_str())
                .copied()
                .unwrap_or(Affiliation::None);
            if actor_role < Role::Moderator && actor_affiliation < Affiliation::Admin {
                return StanzaError::new(StanzaCondition::Forbidden).reply_to(iq);
            }
            if target_affiliation >= Affiliation::Admin
                && actor_affiliation <= target_affiliation
                && target.bare != from.to_bare()
            {
                return StanzaError::new(StanzaCondition::NotAllowed).reply_to(iq);
            }
            roles.insert(nick.clone(), role);
            changes.push(AdminChange::Role(nick, role, reason));
        } else {
            return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
        }
    }
    if affiliations != room.affiliations {
        room.affiliations = affiliations;
        save(node, room).await;
    }
    for change in changes {
        match change {
            AdminChange::Affiliation(jid, affiliation, reason) => {
                apply_affiliation(node, room, &jid, affiliation, reason.as_deref()).await;
            }
            AdminChange::Role(nick, Role::None, reason) => {
                kick(node, room, &nick, 307, reason.as_deref()).await;
            }
            AdminChange::Role(nick, role, _) => {
                if let Some(o) = room.occupants.get_mut(&nick) {
                    o.role = role;
                    broadcast_presence(node, room, &nick, &[], false).await;
                }
            }
        }
    }
    result_for(iq)
}

/// One checked item of a `muc#admin` change, applied once every item of the request passed.
enum AdminChange {
    Affiliation(BareJid, Affiliation, Option<String>),
    Role(String, Role, Option<String>),
}

/// Applies a new affiliation to a user's occupants: banned ones are removed (301), members-only
/// rooms remove those who are no longer members (321), the others get their new standing.
async fn apply_affiliation(
    node: &Arc<Node>,
    room: &mut Room,
    jid: &BareJid,
    affiliation: Affiliation,
    reason: Option<&str>,
) {
    let nicks: Vec<String> = room
        .occupants
        .iter()
        .filter(|(_, o)| o.bare == *jid)
        .map(|(n, _)| n.clone())
        .collect();
    for nick in nicks {
        if affiliation == Affiliation::Outcast {
            kick(node, room, &nick, 301, reason).await;
        } else if room.config.members_only && affiliation < Affiliation::Member {
            kick(node, room, &nick, 321, reason).await;
        } else {
            let role = room.default_role(affiliation);
            if let Some(o) = room.occupants.get_mut(&nick) {
                o.role = role;
            }
            broadcast_presence(node, room, &nick, &[], false).await;
        }
    }
}

/// Changes the `muc#user` payload of presence `p` in place.
fn amend_user_x(p: &mut Element, f: impl FnOnce(&mut Element)) {
    let x = p.children().find(|c| c.is("x", NS_USER)).cloned();
    if let Some(mut x) = x {
        f(&mut x);
        p.retain_children(|c| !c.is("x", NS_USER));
        p.append_child(x);
    }
}

/// Removes occupant `nick` with status `code` (307 kicked, 301 banned, 321 not a member).
async fn kick(node: &Arc<Node>, room: &mut Room, nick: &str, code: u16, reason: Option<&str>) {
    let Some(occupant) = room.occupants.get(nick).cloned() else {
        return;
    };
    let targets: Vec<FullJid> = room
        .occupants
        .values()
        .flat_map(|o| o.sessions.iter().cloned())
        .collect();
    for to in targets {
        let mut p = occupant_presence(room, nick, &occupant, &to, true, &[]);
        amend_user_x(&mut p, |x| {
            if let Some(reason) = reason {
                let item = x.children().find(|c| c.is("item", NS_USER)).cloned();
                x.retain_children(|c| !c.is("item", NS_USER));
                if let Some(item) = item {
                    let reason = Element::new("reason", NS_USER).with_text(reason.to_owned());
                    x.append_child(item.with_child(reason));
                }
            }
            x.append_child(Element::new("status", NS_USER).with_attr("code", code.to_string()));
        });
        send(node, p).await;
    }
    room.occupants.remove(nick);
    sync_mirrors(node, room).await;
}

/// Forgets a room that is empty and not persistent: from memory, storage and the routing
/// table.
async fn destroy_quietly(node: &Arc<Node>, jid: &BareJid) {
    let Some(room) = node.rooms.rooms.get(jid).map(|r| r.clone()) else {
        return;
    };
    {
        let mut room = room.lock().await;
        if !room.occupants.is_empty() || room.config.persistent || room.gone {
            // Someone joined meanwhile, or it was kept: nothing to do.
            return;
        }
        room.gone = true;
        node.rooms.rooms.remove(jid);
    }
    if let Err(e) = node.storage.put_room(jid, None).await {
        tracing::warn!(room = %jid, error = %e, "room record not deleted");
    }
    if let Err(e) = node.storage.archive_remove(jid).await {
        tracing::warn!(room = %jid, error = %e, "room archive not deleted");
    }
    if let Err(e) = node
        .grt
        .write(Command::DeleteRoom {
            jid: jid.to_string(),
        })
        .await
    {
        tracing::warn!(room = %jid, error = %e, "room home not forgotten");
    }
    tracing::debug!(room = %jid, "room destroyed");
}

/// A served domain is removed: its MUC service's rooms here are destroyed (occupants told),
/// their records and archives deleted; returns how many. The routing table drops their
/// entries with the domain's.
pub async fn remove_service_rooms(node: &Arc<Node>, domain: &str) -> usize {
    let service = service_for(node, domain);
    let rooms: Vec<(BareJid, Arc<tokio::sync::Mutex<Room>>)> = node
        .rooms
        .rooms
        .iter()
        .filter(|e| e.key().domain().as_str() == service)
        .map(|e| (e.key().clone(), e.value().clone()))
        .collect();
    let mut removed = 0;
    for (jid, room) in rooms {
        {
            let mut guard = room.lock().await;
            let reason = Element::new("reason", NS_OWNER).with_text("the domain was removed");
            let query = Element::new("query", NS_OWNER)
                .with_child(Element::new("destroy", NS_OWNER).with_child(reason));
            let iq = Element::new("iq", ns::CLIENT).with_attr("type", "set");
            owner_set(node, &mut guard, &iq, &query).await;
            guard.gone = true;
            node.rooms.rooms.remove(&jid);
        }
        if let Err(e) = node.storage.put_room(&jid, None).await {
            tracing::warn!(room = %jid, error = %e, "room record not deleted");
        }
        if let Err(e) = node.storage.archive_remove(&jid).await {
            tracing::warn!(room = %jid, error = %e, "room archive not deleted");
        }
        removed += 1;
    }
    removed
}

// ---- Administration (`tern ctl muc`, the admin API) ---------------------------------------------

/// Why an administrative operation on rooms failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MucAdminError {
    /// No such room (or occupant) here.
    NotFound(String),
    /// The room exists already.
    Exists(String),
    /// The room lives in another datacenter (named): ask a node there.
    Elsewhere(String),
    /// The request is not acceptable; the text says why.
    BadInput(String),
    /// The service is off, or storage or the routing table failed.
    Unavailable(String),
}

impl std::fmt::Display for MucAdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound(what) => write!(f, "{what} not found"),
            Self::Exists(room) => write!(f, "room {room} exists already"),
            Self::Elsewhere(dc) => write!(
                f,
                "the room lives in datacenter {dc}: run the command against a node there"
            ),
            Self::BadInput(why) | Self::Unavailable(why) => f.write_str(why),
        }
    }
}

/// A room as listed by the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room's JID.
    pub jid: String,
    /// Its name (configuration).
    pub name: String,
    /// Occupants now.
    pub occupants: usize,
    /// Whether it is kept across restarts and when empty.
    pub persistent: bool,
    /// Whether the service lists it.
    pub public: bool,
}

/// An occupant as listed by the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OccupantSummary {
    /// The nick.
    pub nick: String,
    /// The full JID of (the first session of) the user.
    pub jid: String,
    /// Its role.
    pub role: &'static str,
    /// Its affiliation.
    pub affiliation: &'static str,
}

/// One archived room message, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMessage {
    /// The archive (and stanza) id, microseconds since the Unix epoch.
    pub id: u64,
    /// The sender's occupant JID (`room/nick`).
    pub from: String,
    /// The body.
    pub body: String,
    /// The message as broadcast.
    pub stanza: String,
}

/// The room `room` homed here, or why not.
async fn admin_room(
    node: &Node,
    room: &BareJid,
) -> Result<Arc<tokio::sync::Mutex<Room>>, MucAdminError> {
    if !node.config.modules.muc.enabled {
        return Err(MucAdminError::Unavailable(
            "the MUC service is off".to_owned(),
        ));
    }
    if !is_service(node, room.domain().as_str()) {
        return Err(MucAdminError::BadInput(format!(
            "{} is not a MUC service of this server",
            room.domain()
        )));
    }
    if let Some((dc, _)) = home_elsewhere(node, room) {
        return Err(MucAdminError::Elsewhere(dc));
    }
    node.rooms
        .rooms
        .get(room)
        .map(|r| r.clone())
        .ok_or_else(|| MucAdminError::NotFound(format!("room {room}")))
}

/// The rooms homed here, optionally only those of one service domain, sorted by JID.
pub async fn admin_list_rooms(node: &Node, service: Option<&str>) -> Vec<RoomSummary> {
    let rooms: Vec<Arc<tokio::sync::Mutex<Room>>> = node
        .rooms
        .rooms
        .iter()
        .filter(|e| service.is_none_or(|s| e.key().domain().as_str() == s))
        .map(|e| e.value().clone())
        .collect();
    let mut out = Vec::new();
    for room in rooms {
        let room = room.lock().await;
        if room.gone {
            continue;
        }
        out.push(RoomSummary {
            jid: room.jid.to_string(),
            name: room.config.name.clone(),
            occupants: room.occupant_count(),
            persistent: room.config.persistent,
            public: room.config.public,
        });
    }
    out.sort_by(|a, b| a.jid.cmp(&b.jid));
    out
}

/// The occupants of `room`, sorted by nick.
pub async fn admin_occupants(
    node: &Node,
    room: &BareJid,
) -> Result<Vec<OccupantSummary>, MucAdminError> {
    let room = admin_room(node, room).await?;
    let room = room.lock().await;
    Ok(room
        .occupants
        .iter()
        .map(|(nick, o)| OccupantSummary {
            nick: nick.clone(),
            jid: o
                .sessions
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
            role: o.role.name(),
            affiliation: room.affiliation(&o.bare).name(),
        })
        .collect())
}

/// Creates `room` here, owned by `owner`, configured and persistent (an administrator's room
/// outlives its occupants); a name is optional.
pub async fn admin_create_room(
    node: &Arc<Node>,
    room: &BareJid,
    owner: &BareJid,
    name: Option<&str>,
) -> Result<(), MucAdminError> {
    match admin_room(node, room).await {
        Ok(_) => return Err(MucAdminError::Exists(room.to_string())),
        Err(MucAdminError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    if room.node().is_none() {
        return Err(MucAdminError::BadInput(
            "a room JID needs a local part".to_owned(),
        ));
    }
    let applied = node
        .grt
        .write(Command::CreateRoom {
            jid: room.to_string(),
            dc: node.config.cluster.dc.clone(),
        })
        .await
        .map_err(|e| {
            MucAdminError::Unavailable(format!("the routing table did not record the room: {e}"))
        })?;
    if let Err(e) = node
        .grt
        .wait_applied(applied.index, Duration::from_secs(5))
        .await
    {
        tracing::warn!(%room, error = %e, "room home slow to show here");
    }
    if let Some((dc, _)) = home_elsewhere(node, room) {
        // Another datacenter created it first.
        return Err(MucAdminError::Elsewhere(dc));
    }
    let mut config = RoomConfig::defaults(node);
    config.persistent = true;
    if let Some(name) = name {
        config.name = name.to_owned();
    }
    let mut affiliations = BTreeMap::new();
    affiliations.insert(owner.to_string(), Affiliation::Owner);
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let new = Room {
        jid: room.clone(),
        config,
        affiliations,
        occupants: BTreeMap::new(),
        subject: None,
        history: VecDeque::new(),
        locked: false,
        gone: false,
        salt,
        registered: BTreeMap::new(),
        mirrors: BTreeMap::new(),
        mirror_version: 0,
    };
    save(node, &new).await;
    node.rooms
        .rooms
        .insert(room.clone(), Arc::new(tokio::sync::Mutex::new(new)));
    Ok(())
}

/// Destroys `room`: its occupants are told (with `reason` and an alternate venue), and it is
/// forgotten everywhere.
pub async fn admin_destroy_room(
    node: &Arc<Node>,
    room: &BareJid,
    reason: Option<&str>,
    alternate: Option<&str>,
) -> Result<(), MucAdminError> {
    let handle = admin_room(node, room).await?;
    {
        let mut guard = handle.lock().await;
        let mut destroy = Element::new("destroy", NS_OWNER).with_attr_opt("jid", alternate);
        if let Some(reason) = reason {
            destroy.append_child(Element::new("reason", NS_OWNER).with_text(reason.to_owned()));
        }
        let query = Element::new("query", NS_OWNER).with_child(destroy);
        let iq = Element::new("iq", ns::CLIENT).with_attr("type", "set");
        owner_set(node, &mut guard, &iq, &query).await;
    }
    destroy_quietly(node, room).await;
    Ok(())
}

/// Kicks occupant `nick` out of `room` (status 307).
pub async fn admin_kick(
    node: &Arc<Node>,
    room: &BareJid,
    nick: &str,
    reason: Option<&str>,
) -> Result<(), MucAdminError> {
    let handle = admin_room(node, room).await?;
    let mut guard = handle.lock().await;
    if !guard.occupants.contains_key(nick) {
        return Err(MucAdminError::NotFound(format!(
            "occupant {nick} of {room}"
        )));
    }
    kick(node, &mut guard, nick, 307, reason).await;
    Ok(())
}

/// Sets `user`'s affiliation with `room` (`owner`, `admin`, `member`, `outcast` or `none`);
/// occupants see the change, banned ones are removed.
pub async fn admin_set_affiliation(
    node: &Arc<Node>,
    room: &BareJid,
    user: &BareJid,
    affiliation: &str,
) -> Result<(), MucAdminError> {
    let Some(affiliation) = Affiliation::from_name(affiliation) else {
        return Err(MucAdminError::BadInput(format!(
            "unknown affiliation {affiliation:?} (owner, admin, member, outcast, none)"
        )));
    };
    let handle = admin_room(node, room).await?;
    let mut guard = handle.lock().await;
    let owners = guard
        .affiliations
        .values()
        .filter(|a| **a == Affiliation::Owner)
        .count();
    if guard.affiliation(user) == Affiliation::Owner
        && affiliation != Affiliation::Owner
        && owners == 1
    {
        return Err(MucAdminError::BadInput(format!(
            "{user} is the only owner of {room}"
        )));
    }
    if affiliation == Affiliation::None {
        guard.affiliations.remove(user.as_str());
    } else {
        guard.affiliations.insert(user.to_string(), affiliation);
    }
    save(node, &guard).await;
    apply_affiliation(node, &mut guard, user, affiliation, None).await;
    Ok(())
}

/// Sends `body` to `room` as a groupchat message of `user`, who must be an occupant.
pub async fn admin_send_message(
    node: &Arc<Node>,
    room: &BareJid,
    user: &BareJid,
    body: &str,
) -> Result<(), MucAdminError> {
    let handle = admin_room(node, room).await?;
    let session = {
        let guard = handle.lock().await;
        guard
            .occupants
            .values()
            .find(|o| o.bare == *user)
            .and_then(|o| o.sessions.first().cloned())
    };
    let Some(session) = session else {
        return Err(MucAdminError::NotFound(format!(
            "occupant {user} of {room}"
        )));
    };
    let message = Element::new("message", ns::CLIENT)
        .with_attr("from", session.to_string())
        .with_attr("to", room.to_string())
        .with_attr("type", "groupchat")
        .with_child(Element::new("body", ns::CLIENT).with_text(body.to_owned()));
    let stanza = Stanza::from_element(&message, ns::CLIENT)
        .map_err(|e| MucAdminError::BadInput(format!("not a message: {e:?}")))?;
    route(node, stanza, Jid::from(room.clone()), false).await;
    Ok(())
}

/// Invites `user` to `room` on behalf of `from` (a mediated invitation from the room).
pub async fn admin_invite(
    node: &Arc<Node>,
    room: &BareJid,
    from: &BareJid,
    user: &BareJid,
    reason: Option<&str>,
) -> Result<(), MucAdminError> {
    let handle = admin_room(node, room).await?;
    let guard = handle.lock().await;
    let mut invite = Element::new("invite", NS_USER).with_attr("to", user.to_string());
    if let Some(reason) = reason {
        invite.append_child(Element::new("reason", NS_USER).with_text(reason.to_owned()));
    }
    let Ok(inviter) = FullJid::new(&format!("{from}/admin")) else {
        return Err(MucAdminError::BadInput(format!("{from} cannot invite")));
    };
    mediated_invite(node, &guard, &inviter, &invite).await;
    Ok(())
}

/// Changes `room`'s configuration: `changes` are `muc#roomconfig_*` fields and values, as a
/// client's form would give them.
pub async fn admin_configure(
    node: &Arc<Node>,
    room: &BareJid,
    changes: &[(String, String)],
) -> Result<(), MucAdminError> {
    let handle = admin_room(node, room).await?;
    let mut guard = handle.lock().await;
    let mut form = Element::new("x", NS_DATA).with_attr("type", "submit");
    for (var, value) in changes {
        let mut field = Element::new("field", NS_DATA).with_attr("var", var.clone());
        if var.ends_with("_presencebroadcast") || var.ends_with("_getmemberlist") {
            // Lists of roles are written "moderator,participant".
            for role in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                field.append_child(Element::new("value", NS_DATA).with_text(role.to_owned()));
            }
        } else {
            field.append_child(Element::new("value", NS_DATA).with_text(value.clone()));
        }
        form.append_child(field);
    }
    let query = Element::new("query", NS_OWNER).with_child(form);
    let iq = Element::new("iq", ns::CLIENT).with_attr("type", "set");
    let reply = owner_set(node, &mut guard, &iq, &query).await;
    if reply.attr("type") == Some("result") {
        Ok(())
    } else {
        Err(MucAdminError::BadInput(
            "a value is not acceptable (maxusers above the service's limit?)".to_owned(),
        ))
    }
}

/// The newest `limit` archived messages of `room` (oldest first), before `before` (µs) if given.
pub async fn admin_messages(
    node: &Arc<Node>,
    room: &BareJid,
    limit: usize,
    before: Option<u64>,
) -> Result<Vec<RoomMessage>, MucAdminError> {
    admin_room(node, room).await?;
    let query = crate::storage::ArchiveQuery {
        from: 0,
        to: before.map_or(u64::MAX, |b| b.saturating_sub(1)),
        max: limit,
        from_end: true,
        ..crate::storage::ArchiveQuery::default()
    };
    let page = node
        .storage
        .archive_query(room, query)
        .await
        .map_err(|e| MucAdminError::Unavailable(format!("the archive cannot be read: {e}")))?;
    Ok(page
        .messages
        .into_iter()
        .map(|(id, archived)| {
            let element = Element::parse(&archived.stanza, ns::CLIENT).ok();
            RoomMessage {
                id,
                from: archived.with,
                body: element
                    .as_ref()
                    .and_then(|e| e.get_child("body", ns::CLIENT).map(Element::text))
                    .unwrap_or_default(),
                stanza: String::from_utf8_lossy(&archived.stanza).into_owned(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::test_node;

    fn room_with_history(n: usize) -> Room {
        let jid = BareJid::new("r@muc.localhost").unwrap();
        let start = SystemTime::now() - Duration::from_secs(1000);
        let history = (0..n)
            .map(|i| {
                let xml = format!(
                    "<message from='r@muc.localhost/a' type='groupchat'><body>{i}</body></message>"
                );
                (
                    Bytes::from(xml),
                    start + Duration::from_secs(i as u64 * 100),
                )
            })
            .collect();
        Room {
            jid,
            config: RoomConfig {
                name: String::new(),
                description: String::new(),
                persistent: false,
                public: true,
                members_only: false,
                moderated: false,
                password: None,
                max_users: 10,
                whois: Whois::Moderators,
                allow_invites: false,
                change_subject: false,
                history: 20,
                presence_broadcast: RoleSet::ALL,
                get_member_list: RoleSet::ALL,
            },
            affiliations: BTreeMap::new(),
            occupants: BTreeMap::new(),
            subject: None,
            history,
            locked: false,
            gone: false,
            salt: [7; 16],
            registered: BTreeMap::new(),
            mirrors: BTreeMap::new(),
            mirror_version: 0,
        }
    }

    fn bodies(out: &[Bytes]) -> Vec<String> {
        out.iter()
            .map(|b| {
                let text = String::from_utf8_lossy(b);
                let start = text.find("<body>").unwrap() + 6;
                let end = text.find("</body>").unwrap();
                text[start..end].to_owned()
            })
            .collect()
    }

    #[test]
    fn history_follows_what_the_newcomer_asks_for() {
        let room = room_with_history(10);
        assert_eq!(bodies(&history_for(&room, None)).len(), 10);
        let ask = |xml: &str| Element::parse(xml.as_bytes(), NS).unwrap();
        let h = ask("<history xmlns='http://jabber.org/protocol/muc' maxstanzas='3'/>");
        assert_eq!(bodies(&history_for(&room, Some(&h))), ["7", "8", "9"]);
        // Message i is 1000 - 100·i seconds old: the last five are younger than 550 s.
        let h = ask("<history xmlns='http://jabber.org/protocol/muc' seconds='550'/>");
        assert_eq!(
            bodies(&history_for(&room, Some(&h))),
            ["5", "6", "7", "8", "9"]
        );
        let h = ask("<history xmlns='http://jabber.org/protocol/muc' maxchars='0'/>");
        assert!(history_for(&room, Some(&h)).is_empty());
        let all = history_for(&room, None);
        assert!(
            String::from_utf8_lossy(&all[0])
                .contains("<delay xmlns='urn:xmpp:delay' from='r@muc.localhost'"),
            "history carries delays"
        );
    }

    #[test]
    fn occupant_ids_are_stable_per_room_and_differ_between_users() {
        let room = room_with_history(0);
        let a = BareJid::new("a@localhost").unwrap();
        let b = BareJid::new("b@localhost").unwrap();
        assert_eq!(room.occupant_id(&a), room.occupant_id(&a));
        assert_ne!(room.occupant_id(&a), room.occupant_id(&b));
        let mut other = room_with_history(0);
        other.salt = [8; 16];
        assert_ne!(
            room.occupant_id(&a),
            other.occupant_id(&a),
            "another room, another id"
        );
    }

    #[tokio::test]
    async fn removing_a_domain_destroys_its_rooms() {
        let (node, _dir) = test_node("muc-domain").await;
        let owner = BareJid::new("boss@localhost").unwrap();
        for name in ["a", "b"] {
            let room = BareJid::new(&format!("{name}@muc.localhost")).unwrap();
            admin_create_room(&node, &room, &owner, None).await.unwrap();
        }
        assert_eq!(remove_service_rooms(&node, "localhost").await, 2);
        assert!(admin_list_rooms(&node, None).await.is_empty());
        assert!(node.storage.list_rooms().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_service_domain_follows_the_host_pattern() {
        let (node, _dir) = test_node("muc-service").await;
        assert!(is_service(&node, "muc.localhost"));
        assert!(!is_service(&node, "localhost"));
        assert!(!is_service(&node, "muc.elsewhere.example"));
        assert_eq!(service_for(&node, "localhost"), "muc.localhost");
    }

    #[tokio::test]
    async fn administrators_create_configure_and_destroy_rooms() {
        let (node, _dir) = test_node("muc-admin").await;
        let room = BareJid::new("team@muc.localhost").unwrap();
        let owner = BareJid::new("boss@localhost").unwrap();
        admin_create_room(&node, &room, &owner, Some("Team"))
            .await
            .unwrap();
        assert_eq!(
            admin_create_room(&node, &room, &owner, None).await,
            Err(MucAdminError::Exists(room.to_string()))
        );
        let listed = admin_list_rooms(&node, Some("muc.localhost")).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].name.as_str(), listed[0].persistent),
            ("Team", true)
        );
        admin_configure(
            &node,
            &room,
            &[("muc#roomconfig_roomname".into(), "Renamed".into())],
        )
        .await
        .unwrap();
        assert!(
            admin_configure(
                &node,
                &room,
                &[("muc#roomconfig_maxusers".into(), "0".into())]
            )
            .await
            .is_err()
        );
        let member = BareJid::new("m@localhost").unwrap();
        admin_set_affiliation(&node, &room, &member, "member")
            .await
            .unwrap();
        assert!(matches!(
            admin_set_affiliation(&node, &room, &owner, "none").await,
            Err(MucAdminError::BadInput(_))
        ));
        assert!(matches!(
            admin_kick(&node, &room, "nobody", None).await,
            Err(MucAdminError::NotFound(_))
        ));
        // Kept in storage: a restart finds it with its name and affiliations.
        let stored = node.storage.list_rooms().await.unwrap();
        assert_eq!(stored.len(), 1);
        let record: RoomRecord = postcard::from_bytes(&stored[0].1).unwrap();
        assert_eq!(record.config.name, "Renamed");
        assert_eq!(
            record.affiliations.get("m@localhost"),
            Some(&Affiliation::Member)
        );
        let archived = crate::storage::ArchivedMessage {
            with: "team@muc.localhost/boss".into(),
            incoming: true,
            stanza: b"<message type='groupchat'><body>x</body></message>".to_vec(),
        };
        node.storage
            .archive_append(&room, 1, archived)
            .await
            .unwrap();
        assert_eq!(
            admin_messages(&node, &room, 10, None).await.unwrap().len(),
            1
        );
        admin_destroy_room(&node, &room, Some("done"), None)
            .await
            .unwrap();
        let all = crate::storage::ArchiveQuery {
            to: u64::MAX,
            max: 10,
            ..Default::default()
        };
        let left = node.storage.archive_query(&room, all).await.unwrap();
        assert_eq!(left.count, 0, "the archive goes with the room");
        assert!(admin_list_rooms(&node, None).await.is_empty());
        assert!(node.storage.list_rooms().await.unwrap().is_empty());
        assert!(matches!(
            admin_occupants(&node, &room).await,
            Err(MucAdminError::NotFound(_))
        ));
    }
}
