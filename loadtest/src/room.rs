//! XEP-0045 (multi-user chat) as the `muc` scenario uses it: the room's address, the stanzas
//! that join and configure it, and recognising the room's answers on the readers' hot path.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Result, ensure};
use memchr::memmem;
use tern_xmpp_proto::element::escape;
use tern_xmpp_proto::{Element, ns};

use crate::client::{attr, stanza_condition};
use crate::stats::{Hist, new_histogram};

/// XEP-0045.
const NS_MUC: &str = "http://jabber.org/protocol/muc";
/// XEP-0045 owner use cases.
const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// XEP-0004 data forms.
const NS_DATA: &str = "jabber:x:data";
/// The id of the instant-configuration IQ (distinct from anything else the harness sends).
const CONFIG_ID: &str = "lt-room-cfg";

/// A room's bare JID, `room@service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomJid {
    jid: String,
    /// `jid` escaped for an attribute value.
    xml: String,
}

impl RoomJid {
    /// A bare JID with a local part and a domain, no resource.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let (local, domain) = text.split_once('@').unwrap_or(("", text));
        ensure!(
            !local.is_empty() && !domain.is_empty() && !domain.contains(['@', '/']),
            "--room {text:?}: want a room's bare JID, ROOM@SERVICE (such as loadtest@muc.localhost)"
        );
        Ok(Self {
            jid: text.to_owned(),
            xml: escape(text),
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.jid
    }

    /// The room's JID escaped for an attribute value.
    pub(crate) fn xml(&self) -> &str {
        &self.xml
    }

    /// Whether `from` (an attribute value as written, escaped) is the room or one of its
    /// occupants (`room/nick`); JIDs compare without regard to ASCII case, as servers
    /// normalise them.
    fn is_from(&self, from: &str) -> bool {
        let bare = from.split_once('/').map_or(from, |(bare, _)| bare);
        bare.eq_ignore_ascii_case(&self.xml)
    }

    /// The presence that joins the room as `nick`, asking for no history.
    pub(crate) fn join(&self, nick: &str) -> String {
        format!(
            "<presence to='{}/{}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>",
            self.xml,
            escape(nick)
        )
    }

    /// The owner's answer to a new (locked) room: accept the default configuration, which
    /// makes it an instant room that others may join (XEP-0045 §10.1.2).
    pub(crate) fn instant_config(&self) -> String {
        format!(
            "<iq type='set' id='{CONFIG_ID}' to='{}'><query xmlns='{NS_OWNER}'><x xmlns='{NS_DATA}' type='submit'/></query></iq>",
            self.xml
        )
    }
}

/// What a presence from the room means for the join of the occupant that received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoomPresence {
    /// The occupant's own presence (status 110): it is in. `created` (status 201): it made a
    /// new room, which stays locked until configured.
    Joined { created: bool },
    /// The join was refused, with this stanza error condition.
    Refused(String),
    /// Another occupant's presence.
    Other,
}

/// How `presence` (a whole `<presence>` element) relates to `room`; `None` when it is not from
/// the room.
pub(crate) fn room_presence(room: &RoomJid, presence: &[u8]) -> Option<RoomPresence> {
    let head = &presence[..memchr::memchr(b'>', presence).unwrap_or(presence.len())];
    if !room.is_from(attr(head, "from")?) {
        return None;
    }
    if attr(head, "type") == Some("error") {
        let condition = Element::parse(presence, ns::CLIENT).map_or_else(
            |_| "(unparsable error)".to_owned(),
            |e| stanza_condition(&e),
        );
        return Some(RoomPresence::Refused(condition));
    }
    let has_code = |code: &str| {
        memmem::find(presence, format!("code='{code}'").as_bytes()).is_some()
            || memmem::find(presence, format!("code=\"{code}\"").as_bytes()).is_some()
    };
    Some(if has_code("110") {
        RoomPresence::Joined {
            created: has_code("201"),
        }
    } else {
        RoomPresence::Other
    })
}

/// The room's answer to the instant configuration: `Ok` when accepted, the error condition
/// when refused; `None` for any other stanza.
pub(crate) fn config_answer(stanza: &[u8]) -> Option<Result<(), String>> {
    if !stanza.starts_with(b"<iq") {
        return None;
    }
    let head = &stanza[..memchr::memchr(b'>', stanza).unwrap_or(stanza.len())];
    if attr(head, "id") != Some(CONFIG_ID) {
        return None;
    }
    match attr(head, "type")? {
        "result" => Some(Ok(())),
        "error" => Some(Err(Element::parse(stanza, ns::CLIENT).map_or_else(
            |_| "(unparsable error)".to_owned(),
            |e| stanza_condition(&e),
        ))),
        _ => None,
    }
}

/// Why a room may have refused a join (its stanza error `condition`), for the error message.
pub(crate) fn refusal_hint(condition: &str) -> &'static str {
    match condition {
        "item-not-found" => " (the room is locked: its owner has not configured it)",
        "service-unavailable" => {
            " (is the room full? Tern admits [modules.muc] max_users occupants, 200 by default)"
        }
        "conflict" => " (another user holds that nick)",
        "registration-required" => " (the room is members-only)",
        "not-authorized" => " (the room has a password)",
        "forbidden" => " (the user is banned from the room)",
        "not-allowed" => " (the service creates rooms only for users of the domains it serves)",
        "resource-constraint" => {
            " (the first user owns too many rooms: Tern's [modules.muc] max_rooms_per_user)"
        }
        _ => "",
    }
}

/// How the joins of a swarm's users are going: written by the readers as the room answers,
/// read by the scenario.
#[derive(Debug)]
pub(crate) struct Joins {
    pub(crate) room: RoomJid,
    /// Per user: when its join was sent, ns since the swarm's epoch (0: not yet).
    sent_ns: Vec<AtomicU64>,
    /// Per user: when its own presence came back (0: not yet).
    joined_ns: Vec<AtomicU64>,
    joined: AtomicU64,
    /// Whether a join created the room (status 201).
    created: AtomicBool,
    /// The first refusal: user and condition.
    refused: OnceLock<(u32, String)>,
    /// The room's answer to the instant configuration.
    configured: OnceLock<Result<(), String>>,
}

impl Joins {
    pub(crate) fn new(room: RoomJid, users: usize) -> Self {
        Self {
            room,
            sent_ns: (0..users).map(|_| AtomicU64::new(0)).collect(),
            joined_ns: (0..users).map(|_| AtomicU64::new(0)).collect(),
            joined: AtomicU64::new(0),
            created: AtomicBool::new(false),
            refused: OnceLock::new(),
            configured: OnceLock::new(),
        }
    }

    /// User `index` sent its join at `now_ns`.
    pub(crate) fn sent(&self, index: usize, now_ns: u64) {
        self.sent_ns[index].store(now_ns.max(1), Ordering::Relaxed);
    }

    /// Accounts for a presence user `index` received at `now_ns`; `true` when it came from the
    /// room (nothing else is to be done with it).
    pub(crate) fn presence(&self, index: u32, presence: &[u8], now_ns: u64) -> bool {
        let Some(what) = room_presence(&self.room, presence) else {
            return false;
        };
        match what {
            RoomPresence::Joined { created } => {
                let slot = &self.joined_ns[index as usize];
                // Counted once: the room repeats status 110 when the occupant's presence changes.
                if slot
                    .compare_exchange(0, now_ns.max(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    self.joined.fetch_add(1, Ordering::Relaxed);
                }
                if created {
                    self.created.store(true, Ordering::Relaxed);
                }
            }
            RoomPresence::Refused(condition) => {
                let _ = self.refused.set((index, condition));
            }
            RoomPresence::Other => {}
        }
        true
    }

    /// Accounts for the answer to the instant configuration; `true` when `stanza` was it.
    pub(crate) fn iq(&self, stanza: &[u8]) -> bool {
        let Some(answer) = config_answer(stanza) else {
            return false;
        };
        let _ = self.configured.set(answer);
        true
    }

    /// Users in the room.
    pub(crate) fn joined(&self) -> u64 {
        self.joined.load(Ordering::Relaxed)
    }

    /// Whether user `index` is in the room.
    pub(crate) fn has_joined(&self, index: usize) -> bool {
        self.joined_ns[index].load(Ordering::Relaxed) != 0
    }

    pub(crate) fn created(&self) -> bool {
        self.created.load(Ordering::Relaxed)
    }

    /// The first join the room refused: user and condition.
    pub(crate) fn refused(&self) -> Option<&(u32, String)> {
        self.refused.get()
    }

    pub(crate) fn configured(&self) -> Option<&Result<(), String>> {
        self.configured.get()
    }

    /// Join latencies (join sent → own presence back) of the users in the room, µs.
    pub(crate) fn latency(&self) -> Hist {
        let mut hist = new_histogram();
        for (sent, joined) in self.sent_ns.iter().zip(&self.joined_ns) {
            let (sent, joined) = (sent.load(Ordering::Relaxed), joined.load(Ordering::Relaxed));
            if sent != 0 && joined != 0 {
                hist.saturating_record((joined.saturating_sub(sent) / 1000).max(1));
            }
        }
        hist
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomJid {
        RoomJid::parse("Bench@muc.localhost").expect("room")
    }

    #[test]
    fn room_jids_are_bare_with_a_local_part() {
        assert_eq!(room().as_str(), "Bench@muc.localhost");
        for bad in [
            "muc.localhost",
            "@muc.localhost",
            "bench@",
            "bench@muc.localhost/nick",
            "a@b@c",
        ] {
            assert!(RoomJid::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            RoomJid::parse("a'b@muc.x").expect("room").xml(),
            "a&apos;b@muc.x"
        );
    }

    #[test]
    fn join_and_configuration_stanzas_parse() {
        let join = Element::parse(room().join("lt7").as_bytes(), ns::CLIENT).expect("join");
        assert_eq!(join.attr("to"), Some("Bench@muc.localhost/lt7"));
        let history = join
            .get_child("x", NS_MUC)
            .and_then(|x| x.get_child("history", NS_MUC))
            .expect("history");
        assert_eq!(history.attr("maxstanzas"), Some("0"));
        let iq = Element::parse(room().instant_config().as_bytes(), ns::CLIENT).expect("iq");
        assert_eq!(iq.attr("type"), Some("set"));
        let form = iq
            .get_child("query", NS_OWNER)
            .and_then(|q| q.get_child("x", NS_DATA))
            .expect("form");
        assert_eq!(form.attr("type"), Some("submit"));
    }

    #[test]
    fn presences_from_the_room_are_told_apart() {
        let room = room();
        let own = b"<presence from='bench@muc.localhost/lt0' to='lt0@localhost/lt'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator'/><status code='110'/><status code='201'/></x></presence>";
        assert_eq!(
            room_presence(&room, own),
            Some(RoomPresence::Joined { created: true })
        );
        let own = b"<presence to=\"lt1@localhost/lt\" from=\"bench@muc.localhost/lt1\"><x xmlns=\"http://jabber.org/protocol/muc#user\"><status code=\"100\"/><status code=\"110\"/></x></presence>";
        assert_eq!(
            room_presence(&room, own),
            Some(RoomPresence::Joined { created: false })
        );
        let other = b"<presence from='bench@muc.localhost/lt2' to='lt1@localhost/lt'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant'/></x></presence>";
        assert_eq!(room_presence(&room, other), Some(RoomPresence::Other));
        let refused = b"<presence from='bench@muc.localhost/lt3' to='lt3@localhost/lt' type='error'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>";
        assert_eq!(
            room_presence(&room, refused),
            Some(RoomPresence::Refused("service-unavailable".into()))
        );
        let elsewhere = b"<presence from='lt5@localhost/lt'><status>110</status></presence>";
        assert_eq!(room_presence(&room, elsewhere), None);
        let other_room = b"<presence from='bench2@muc.localhost/lt0'><x xmlns='http://jabber.org/protocol/muc#user'><status code='110'/></x></presence>";
        assert_eq!(room_presence(&room, other_room), None);
    }

    #[test]
    fn joins_are_counted_once_with_their_latency() {
        let joins = Joins::new(room(), 3);
        let own = b"<presence from='bench@muc.localhost/lt1'><x xmlns='http://jabber.org/protocol/muc#user'><status code='110'/></x></presence>";
        joins.sent(1, 1_000_000);
        assert!(joins.presence(1, own, 3_000_000));
        assert!(joins.presence(1, own, 9_000_000));
        assert!(!joins.presence(1, b"<presence from='x@y/z'/>", 9_000_000));
        assert_eq!(joins.joined(), 1);
        assert!(joins.has_joined(1) && !joins.has_joined(0));
        assert!(!joins.created());
        let latency = joins.latency();
        assert_eq!(latency.len(), 1);
        assert_eq!(latency.max(), 2000);
        let refused = b"<presence from='bench@muc.localhost/lt2' type='error'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>";
        assert!(joins.presence(2, refused, 1));
        assert_eq!(
            joins.refused(),
            Some(&(2, "resource-constraint".to_owned()))
        );
    }

    #[test]
    fn refusals_come_with_a_hint() {
        assert!(refusal_hint("service-unavailable").contains("max_users"));
        assert!(refusal_hint("item-not-found").contains("locked"));
        assert_eq!(refusal_hint("undefined-condition"), "");
    }

    #[test]
    fn configuration_answers_are_recognised() {
        let joins = Joins::new(room(), 1);
        assert!(!joins.iq(b"<iq type='result' id='roster'/>"));
        assert!(joins.configured().is_none());
        assert!(joins.iq(b"<iq from='bench@muc.localhost' type='result' id='lt-room-cfg'/>"));
        assert_eq!(joins.configured(), Some(&Ok(())));
        assert_eq!(
            config_answer(b"<iq type=\"error\" id=\"lt-room-cfg\"><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"),
            Some(Err("forbidden".to_owned()))
        );
    }
}
