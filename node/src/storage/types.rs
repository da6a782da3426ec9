//! Records kept by the storage layer: accounts (SCRAM credentials), rosters and offline
//! messages.
//!
//! Every type here is stored with postcard behind a format version byte (see `codec.rs`), so
//! fields may only change together with a new format version.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// SCRAM (RFC 5802) salted credentials for one hash function; the password itself is never kept.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramRecord {
    /// Random salt used to derive the salted password.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramRecord {
    // The keys are password equivalents for an attacker who can read logs: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramRecord")
            .field("salt_len", &self.salt.len())
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// One account: SCRAM credentials for SHA-1 and SHA-256, and when it was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Credentials for SCRAM-SHA-1(-PLUS).
    pub sha1: ScramRecord,
    /// Credentials for SCRAM-SHA-256(-PLUS).
    pub sha256: ScramRecord,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
}

/// RFC 6121 roster subscription state of one contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Subscription {
    /// Neither side is subscribed to the other's presence.
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both directions.
    Both,
}

impl Subscription {
    /// The value of the roster `subscription` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::To => "to",
            Self::From => "from",
            Self::Both => "both",
        }
    }

    /// Parses a roster `subscription` attribute value; `None` for anything else (including
    /// `remove`, which is a request, not a state).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Self::None),
            "to" => Some(Self::To),
            "from" => Some(Self::From),
            "both" => Some(Self::Both),
            _ => None,
        }
    }

    /// Whether the user receives the contact's presence (`to` or `both`).
    pub fn has_to(self) -> bool {
        matches!(self, Self::To | Self::Both)
    }

    /// Whether the contact receives the user's presence (`from` or `both`).
    pub fn has_from(self) -> bool {
        matches!(self, Self::From | Self::Both)
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One contact in a roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterItem {
    /// The contact's bare JID, normalized (also the key of the item in [`Roster::items`]).
    pub jid: String,
    /// Display name chosen by the user.
    pub name: Option<String>,
    /// Roster groups the contact is in.
    pub groups: Vec<String>,
    /// Subscription state.
    pub subscription: Subscription,
    /// The user sent a subscription request the contact has not answered (`ask='subscribe'`).
    pub ask: bool,
    /// The contact asked to subscribe to the user and the user has not answered.
    pub pending_in: bool,
    /// The user pre-approved a subscription request from the contact (RFC 6121 3.4).
    pub approved: bool,
}

impl RosterItem {
    /// A new item for `jid` with no name, no groups, subscription `none` and no flags.
    pub fn new(jid: impl Into<String>) -> Self {
        Self {
            jid: jid.into(),
            name: None,
            groups: Vec::new(),
            subscription: Subscription::None,
            ask: false,
            pending_in: false,
            approved: false,
        }
    }
}

/// A user's roster with its version (XEP-0237 roster versioning).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// Roster version; callers bump it on every change they push to clients. 0 = never stored.
    pub version: u64,
    /// Contacts, keyed by normalized bare JID.
    pub items: BTreeMap<String, RosterItem>,
    /// Inbound subscription requests from contacts NOT in the roster: bare JID -> the original
    /// `<presence type='subscribe'/>` XML, redelivered at login.
    pub pending_in: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_string_round_trip() {
        for sub in [
            Subscription::None,
            Subscription::To,
            Subscription::From,
            Subscription::Both,
        ] {
            assert_eq!(Subscription::parse(sub.as_str()), Some(sub));
            assert_eq!(sub.to_string(), sub.as_str());
        }
        assert_eq!(Subscription::parse("remove"), None);
        assert_eq!(Subscription::parse("Both"), None);
    }

    #[test]
    fn subscription_directions() {
        assert!(Subscription::Both.has_to() && Subscription::Both.has_from());
        assert!(Subscription::To.has_to() && !Subscription::To.has_from());
        assert!(!Subscription::From.has_to() && Subscription::From.has_from());
        assert!(!Subscription::None.has_to() && !Subscription::None.has_from());
    }

    #[test]
    fn scram_debug_hides_keys() {
        let record = ScramRecord {
            salt: vec![1, 2, 3],
            iterations: 4096,
            stored_key: b"SECRETSTORED".to_vec(),
            server_key: b"SECRETSERVER".to_vec(),
        };
        let shown = format!("{record:?}");
        assert!(shown.contains("4096"));
        assert!(!shown.contains("83, 69, 67"), "{shown}");
        assert!(!shown.contains("stored_key"), "{shown}");
    }

    #[test]
    fn new_roster_item_has_no_subscription() {
        let item = RosterItem::new("juliet@example.com");
        assert_eq!(item.jid, "juliet@example.com");
        assert_eq!(item.subscription, Subscription::None);
        assert!(!item.ask && !item.pending_in && !item.approved);
        assert!(item.groups.is_empty() && item.name.is_none());
    }
}

/// What deleting a domain's data removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DomainRemoval {
    /// Accounts deleted.
    pub accounts: u64,
    /// Rosters deleted.
    pub rosters: u64,
    /// Offline messages (XEP-0160) deleted.
    pub offline: u64,
    /// Other per-account items deleted (vCards, private XML, last activity, privacy lists).
    pub items: u64,
    /// Archived messages (XEP-0313) deleted.
    pub archived: u64,
}

/// One message kept for an offline user (XEP-0160): the stanza as it will be delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineMessage {
    /// The serialized `<message/>`, `<delay/>` already added.
    pub stanza: Vec<u8>,
}

/// The outcome of [`Storage::store_offline`](super::Storage::store_offline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineStored {
    /// Stored; the user now has this many offline messages.
    Stored(u64),
    /// The user already had the limit: nothing was stored.
    Full,
}

/// Everything stored for one account, as it moves between datacenters when the account's home
/// changes ([`Storage::export_user`](super::Storage::export_user),
/// [`Storage::import_user`](super::Storage::import_user)). Every per-account store a later
/// module adds belongs here too, or a move would leave it behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountData {
    /// Credentials and creation time.
    pub record: UserRecord,
    /// The roster.
    pub roster: Roster,
    /// Offline messages, oldest first.
    pub offline: Vec<OfflineMessage>,
    /// Every other per-account item, as (kind, key, value).
    pub items: Vec<AccountItem>,
    /// The message archive, as (id, message), oldest first.
    pub archive: Vec<(u64, ArchivedMessage)>,
}

/// One per-account item of a module ([`Storage::put_item`](super::Storage::put_item)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountItem {
    /// The module's kind (`vcard`, `private`, …).
    pub kind: String,
    /// The key within the kind.
    pub key: String,
    /// The module's bytes.
    pub value: Vec<u8>,
}

/// One archived message (XEP-0313), as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedMessage {
    /// The bare JID of the other party.
    pub with: String,
    /// Whether the account received it (`false`: sent it).
    pub incoming: bool,
    /// The message as delivered (with its XEP-0359 stanza id).
    pub stanza: Vec<u8>,
}

/// A query of an account's archive ([`Storage::archive_query`](super::Storage::archive_query)).
/// Archive ids grow with time (microseconds since the Unix epoch, made unique per node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveQuery {
    /// Only messages with this bare JID.
    pub with: Option<String>,
    /// Ids in `from..=to` (time bounds and `after-id`/`before-id` turned into ids).
    pub from: u64,
    /// Upper bound, inclusive.
    pub to: u64,
    /// Only these ids (XEP-0313 `ids`), if given.
    pub ids: Option<Vec<u64>>,
    /// Most messages returned.
    pub max: usize,
    /// From the newest end (RSM `<before/>`): the page is the last `max` matches.
    pub from_end: bool,
}

/// A page of an archive query, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchivePage {
    /// (id, message), oldest first.
    pub messages: Vec<(u64, ArchivedMessage)>,
    /// Whether no match was left out beyond the page, in the direction of the query.
    pub complete: bool,
    /// How many messages matched in all.
    pub count: u64,
}
