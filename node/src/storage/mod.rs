//! Persistent data of a node: accounts and rosters, behind the [`Storage`] trait.
//!
//! Modules only see `Arc<dyn Storage>` ([`SharedStorage`]); the embedded default is
//! [`RedbStorage`] (one redb file per node); [`PostgresStorage`] keeps the same tables in a
//! PostgreSQL database that the nodes of a local cluster share (`[storage] backend`).
//!
//! # Layout
//!
//! - `types.rs`: the stored records ([`UserRecord`], [`ScramRecord`], [`Roster`], ...).
//! - `codec.rs`: value encoding, one format version byte then the postcard body, shared by
//!   backends so every stored value can evolve.
//! - `error.rs`: [`Error`] and [`Result`].
//! - `redb.rs`: [`RedbStorage`], the redb backend.
//! - `postgres.rs`: [`PostgresStorage`], the PostgreSQL backend; its schema is
//!   `node/migrations/*.sql`, one table per redb table below (owners as `(domain, localpart)`
//!   columns), plus `offline_seq` (an owner's next offline sequence number).
//! - `conformance.rs` (tests only): the checks every backend must pass, run against each.
//!
//! # Keys and tables
//!
//! Account keys are not the `user@domain` string but `"<domain>\0<localpart>"`
//! (`user_key`): all accounts of one domain are then one contiguous key range
//! (`"<domain>\0"` up to `"<domain>\u{1}"`), so listing a domain is a range scan, sorted by
//! localpart. A domain never contains NUL (it is not allowed in JIDs), so the split is exact.
//!
//! | Table | Key | Value |
//! |---|---|---|
//! | `jid_user` | `user_key(bare JID)` | version byte + postcard [`UserRecord`] |
//! | `jid_roster` | `user_key(bare JID)` | version byte + postcard [`Roster`] |
//! | `domain_usercount` | domain | `u64` number of accounts, kept in the same transaction as `jid_user` |
//! | `offline_msg` | `(user_key(bare JID), sequence)` | version byte + postcard [`OfflineMessage`] |
//! | `archive` | `(user_key(bare JID), id)` | version byte + postcard [`ArchivedMessage`] (XEP-0313) |
//! | `account_item` | `(user_key(bare JID), "<kind>\0<key>")` | the module's bytes (vCard, private XML, last activity, privacy lists, …) |
//!
//! `offline_msg` and `account_item` keys are tuples: a user's messages are one contiguous range ordered by their
//! sequence number, and a domain's are the range of the domain's `user_key` prefixes.

mod codec;
#[cfg(test)]
mod conformance;
mod error;
mod postgres;
mod redb;
mod types;

use std::sync::Arc;

use bytes::Bytes;
use jid::BareJid;

pub use self::error::{Error, Result};
pub use self::postgres::{Migrated, PostgresStorage};
pub use self::redb::RedbStorage;
pub use self::types::{
    AccountData, AccountItem, ArchivePage, ArchiveQuery, ArchivedMessage, DomainRemoval,
    OfflineMessage, OfflineStored, Roster, RosterItem, ScramRecord, Subscription, UserRecord,
};

/// A storage backend shared by every module of a node.
pub type SharedStorage = Arc<dyn Storage>;

/// Accounts, rosters and offline messages. Every method is one transaction; implementations never block the async
/// caller (blocking backends run their work on tokio's blocking pool).
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Creates an account; [`Error::UserExists`] if it exists, [`Error::NoLocalpart`] if `user`
    /// is a bare domain.
    async fn create_user(&self, user: &BareJid, record: UserRecord) -> Result<()>;

    /// The account record, or `None` if there is no such account.
    async fn get_user(&self, user: &BareJid) -> Result<Option<UserRecord>>;

    /// Replaces the credentials of an existing account; [`Error::UserNotFound`] if it does not
    /// exist.
    async fn set_user_credentials(&self, user: &BareJid, record: UserRecord) -> Result<()>;

    /// Deletes an account together with its roster and offline messages; `false` if there was
    /// no such account.
    async fn remove_user(&self, user: &BareJid) -> Result<bool>;

    /// The accounts of `domain` (normalized, as `BareJid::domain()` gives it), sorted by
    /// localpart.
    async fn list_users(&self, domain: &str) -> Result<Vec<BareJid>>;

    /// The number of accounts of `domain`.
    async fn count_users(&self, domain: &str) -> Result<u64>;

    /// Deletes every account of `domain` and everything stored for them (rosters, offline
    /// messages), in one
    /// transaction; says how much it deleted. Deleting a domain with no data deletes nothing.
    async fn remove_domain(&self, domain: &str) -> Result<DomainRemoval>;

    /// The roster of `user`; an empty roster (version 0) if none is stored.
    async fn get_roster(&self, user: &BareJid) -> Result<Roster>;

    /// Reads the roster of `user` (empty if none), runs `f` on it and stores the result, all in
    /// one transaction, so concurrent calls never lose an update. Returns the roster as stored.
    /// [`Error::UserNotFound`] if `user` has no account, so a roster can never outlive, or
    /// predate, its account. `f` must not block or panic: it runs while the write transaction
    /// is held.
    async fn modify_roster(
        &self,
        user: &BareJid,
        f: &mut (dyn for<'r> FnMut(&'r mut Roster) + Send),
    ) -> Result<Roster>;

    /// Appends `stanza` to the offline messages of `user` (XEP-0160), after every message
    /// stored before it. When `user` already has `limit` messages nothing is stored and the
    /// answer is [`OfflineStored::Full`].
    async fn store_offline(
        &self,
        user: &BareJid,
        stanza: Bytes,
        limit: usize,
    ) -> Result<OfflineStored>;

    /// Every offline message of `user` in the order they were stored, deleting them in the same
    /// transaction.
    async fn take_offline(&self, user: &BareJid) -> Result<Vec<Bytes>>;

    /// The number of offline messages of `user`.
    async fn count_offline(&self, user: &BareJid) -> Result<u64>;

    /// The item `key` of `kind` stored for `user` (a module's per-account data: `vcard`,
    /// `private`, `last`, `privacy`, …), or `None`.
    async fn get_item(&self, user: &BareJid, kind: &str, key: &str) -> Result<Option<Vec<u8>>>;

    /// Stores (`Some`) or deletes (`None`) the item `key` of `kind` for `user`;
    /// [`Error::UserNotFound`] if `user` has no account, so no item outlives its account.
    async fn put_item(
        &self,
        user: &BareJid,
        kind: &str,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<()>;

    /// Every item of `kind` stored for `user`, as (key, value), sorted by key.
    async fn list_items(&self, user: &BareJid, kind: &str) -> Result<Vec<(String, Vec<u8>)>>;

    /// The accounts that have at least one item of `kind` (a scan of every item: for loading
    /// a module's state at start).
    async fn item_owners(&self, kind: &str) -> Result<Vec<BareJid>>;

    /// Stores (`Some`) or deletes (`None`) the persistent state of the MUC room `room` (the
    /// module's bytes).
    async fn put_room(&self, room: &BareJid, value: Option<Vec<u8>>) -> Result<()>;

    /// Every stored MUC room, as (room JID, the module's bytes), sorted by JID.
    async fn list_rooms(&self) -> Result<Vec<(String, Vec<u8>)>>;

    /// Appends `message` to `user`'s archive under `id` (unique, growing; a second append
    /// under the same id replaces the first). Never waits for the disk: appends are committed
    /// in batches by the backend; a query, export, import, prune or removal through the same
    /// storage handle sees every append made before it.
    async fn archive_append(&self, user: &BareJid, id: u64, message: ArchivedMessage)
    -> Result<()>;

    /// A page of `user`'s archive.
    async fn archive_query(&self, user: &BareJid, query: ArchiveQuery) -> Result<ArchivePage>;

    /// Deletes archived messages with ids below `before`, of every account; returns how many.
    async fn archive_prune(&self, before: u64) -> Result<u64>;

    /// Deletes the whole archive kept under `owner` (a MUC room that is destroyed; an account's
    /// goes with [`Storage::remove_user`]).
    async fn archive_remove(&self, owner: &BareJid) -> Result<()>;

    /// Everything stored for `user` (one read transaction), or `None` without an account.
    async fn export_user(&self, user: &BareJid) -> Result<Option<AccountData>>;

    /// Stores `data` as everything there is for `user`, replacing what was stored (one
    /// transaction): the account is created if missing, its roster and offline messages are
    /// exactly those of `data` afterwards.
    async fn import_user(&self, user: &BareJid, data: AccountData) -> Result<()>;
}

/// The storage key of an account or roster: `"<domain>\0<localpart>"` (see the module docs).
pub(crate) fn user_key(user: &BareJid) -> String {
    let domain = user.domain().as_str();
    let node = user.node().map_or("", |node| node.as_str());
    let mut key = String::with_capacity(domain.len() + 1 + node.len());
    key.push_str(domain);
    key.push('\0');
    key.push_str(node);
    key
}

/// The half-open key range `[start, end)` holding every account of `domain`.
pub(crate) fn domain_range(domain: &str) -> (String, String) {
    (format!("{domain}\0"), format!("{domain}\u{1}"))
}

/// Turns a key made by [`user_key`] back into the account's bare JID; `None` if malformed.
pub(crate) fn jid_from_key(key: &str) -> Option<BareJid> {
    let (domain, node) = key.split_once('\0')?;
    if node.is_empty() {
        return BareJid::new(domain).ok();
    }
    BareJid::new(&format!("{node}@{domain}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_key_round_trips() {
        let jid = BareJid::new("Juliet@Capulet.example").unwrap();
        let key = user_key(&jid);
        assert_eq!(key, format!("{}\0{}", jid.domain(), jid.node().unwrap()));
        assert_eq!(jid_from_key(&key), Some(jid));
    }

    #[test]
    fn domain_range_holds_only_that_domain() {
        let (start, end) = domain_range("a.example");
        let inside = user_key(&BareJid::new("zed@a.example").unwrap());
        let longer = user_key(&BareJid::new("amy@a.example.org").unwrap());
        let sub = user_key(&BareJid::new("amy@a.exampl").unwrap());
        assert!(start.as_str() <= inside.as_str() && inside.as_str() < end.as_str());
        assert!(!(start.as_str() <= longer.as_str() && longer.as_str() < end.as_str()));
        assert!(!(start.as_str() <= sub.as_str() && sub.as_str() < end.as_str()));
    }

    #[test]
    fn malformed_key_is_rejected() {
        assert_eq!(jid_from_key("no-separator"), None);
        assert_eq!(jid_from_key("example.com\0bad@part"), None);
    }

    #[test]
    fn jids_cannot_contain_the_key_separator() {
        assert!(BareJid::new("user@a\0b.example").is_err());
        assert!(BareJid::new("us\0er@a.example").is_err());
    }
}
