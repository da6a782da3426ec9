//! [`RedbStorage`]: the embedded redb backend of [`Storage`](super::Storage).
//!
//! redb is synchronous, so every transaction runs on tokio's blocking pool through
//! [`RedbStorage::blocking`]; the database handle is shared there by `Arc`.
//!
//! Writes: redb allows one write transaction at a time, which is what makes
//! [`modify_roster`](super::Storage::modify_roster) lose no concurrent update. Writers first take
//! an async lock (`write_lock`) and only then a blocking thread, so waiting writers never pile up
//! on the blocking pool. This matters for `modify_roster`, whose transaction is opened on the pool,
//! comes back to the async caller to run its closure, and needs a pool thread again to commit: if
//! waiting writers could fill the pool, that commit would never get a thread.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use jid::BareJid;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::codec;
use super::error::{Error, Result};
use super::types::{
    AccountData, AccountItem, ArchivePage, ArchiveQuery, ArchivedMessage, DomainRemoval,
    OfflineMessage, OfflineStored, Roster, UserRecord,
};
use super::{Storage, domain_range, jid_from_key, user_key};

/// Accounts: `user_key` -> versioned [`UserRecord`].
const JID_USER: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("jid_user");
/// Rosters: `user_key` -> versioned [`Roster`].
const JID_ROSTER: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("jid_roster");
/// Account count per domain, updated with `jid_user` in the same transaction.
const DOMAIN_USERCOUNT: TableDefinition<'_, &str, u64> = TableDefinition::new("domain_usercount");

/// Offline messages: (`user_key`, sequence) -> versioned [`OfflineMessage`]. A user's sequence
/// numbers are contiguous (messages are only ever taken all at once), so the first and last key
/// of the user's range give the count.
const OFFLINE_MSG: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("offline_msg");

/// Message archives (XEP-0313): (`user_key`, id) -> versioned [`ArchivedMessage`].
const ARCHIVE: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("archive");
const ARCHIVE_NAME: &str = "archive";

/// Per-account items of modules: (`user_key`, `"<kind>\0<key>"`) -> the module's bytes.
const ACCOUNT_ITEM: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("account_item");

/// Persistent MUC rooms: room bare JID -> the MUC module's bytes.
const MUC_ROOM: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("muc_room");

/// Deletes every row of the owner `key` from a table keyed by (owner, sequence or id).
fn clear_owner(
    table: &mut redb::Table<'_, (&'static str, u64), &'static [u8]>,
    key: &str,
) -> Result<()> {
    table
        .retain_in::<(&str, u64), _>((key, 0)..=(key, u64::MAX), |_, _| false)
        .or_backend("remove")
}

/// The item key of `key` within `kind`.
fn item_key(kind: &str, key: &str) -> String {
    format!("{kind}\0{key}")
}

/// Table names as they appear in errors.
const JID_USER_NAME: &str = "jid_user";
const JID_ROSTER_NAME: &str = "jid_roster";
const OFFLINE_MSG_NAME: &str = "offline_msg";
const ACCOUNT_ITEM_NAME: &str = "account_item";

/// Maps a redb error to [`Error::Backend`] naming the operation.
trait OrBackend<T> {
    fn or_backend(self, op: &'static str) -> Result<T>;
}

impl<T, E: Into<redb::Error>> OrBackend<T> for Result<T, E> {
    fn or_backend(self, op: &'static str) -> Result<T> {
        self.map_err(|source| Error::Backend {
            op,
            source: source.into(),
        })
    }
}

/// The redb storage backend: one database file holding every table of the node.
#[derive(Clone)]
pub struct RedbStorage {
    db: Arc<Database>,
    /// Held by every write from before its transaction starts until after it ends.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Archive appends, committed in batches by a writer thread.
    archive: Arc<ArchiveWriter>,
}

/// The archive's writer thread: takes everything appended since its last commit into one
/// transaction. `appended` and `committed` count appends, so a query can wait for those made
/// before it.
/// How often the archive writer makes its commits durable (an fsync).
const ARCHIVE_DURABLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long the archive writer gathers appends after the first one before committing them.
const ARCHIVE_LINGER: std::time::Duration = std::time::Duration::from_millis(50);
/// Most appends in one archive commit.
const ARCHIVE_BATCH_MAX: usize = 8192;

/// One archive append: the account's key, the id, the encoded message.
type Append = (String, u64, Vec<u8>);

struct ArchiveWriter {
    queue: std::sync::Mutex<Option<std::sync::mpsc::Sender<Append>>>,
    appended: std::sync::atomic::AtomicU64,
    committed: std::sync::atomic::AtomicU64,
}

impl ArchiveWriter {
    /// The thread holds the database only while it writes a batch, so dropping the storage
    /// closes the file at once (a reopen in the same process must not find it open).
    fn start(db: &Arc<Database>) -> Result<Arc<Self>> {
        let db = Arc::downgrade(db);
        let (tx, rx) = std::sync::mpsc::channel::<Append>();
        let writer = Arc::new(Self {
            queue: std::sync::Mutex::new(Some(tx)),
            appended: std::sync::atomic::AtomicU64::new(0),
            committed: std::sync::atomic::AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&writer);
        std::thread::Builder::new()
            .name("tern-archive".to_owned())
            .spawn(move || {
                // Batches commit without an fsync; one durable commit a second (or when idle)
                // makes everything before it persistent.
                let mut last_durable = std::time::Instant::now();
                let mut pending_durability = false;
                loop {
                    let first = match rx.recv_timeout(ARCHIVE_DURABLE_EVERY) {
                        Ok(first) => first,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            if pending_durability && let Some(db) = db.upgrade() {
                                let result = write(&db, |_| Ok(()));
                                if let Err(e) = result {
                                    tracing::error!(error = %e, "archive not made durable");
                                }
                                pending_durability = false;
                                last_durable = std::time::Instant::now();
                            }
                            continue;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    // Gather for a moment: every commit copies each leaf it touches (one per
                    // account appended to), so fewer, larger batches cost less per message.
                    // Only archive queries wait for this. Sleeping, rather than waiting on the
                    // channel, spares a wake-up per append.
                    std::thread::sleep(ARCHIVE_LINGER);
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter().take(ARCHIVE_BATCH_MAX));
                    let n = batch.len() as u64;
                    let Some(db) = db.upgrade() else {
                        break;
                    };
                    let durable = last_durable.elapsed() >= ARCHIVE_DURABLE_EVERY;
                    let result = db
                        .begin_write()
                        .or_backend("begin_write")
                        .and_then(|mut txn| {
                            if !durable {
                                txn.set_durability(redb::Durability::None)
                                    .or_backend("set_durability")?;
                            }
                            finish(txn, |txn| {
                                let mut table = txn.open_table(ARCHIVE).or_backend("open_table")?;
                                for (user, id, value) in &batch {
                                    table
                                        .insert((user.as_str(), *id), value.as_slice())
                                        .or_backend("insert")?;
                                }
                                Ok(())
                            })
                        });
                    drop(db);
                    if durable {
                        last_durable = std::time::Instant::now();
                        pending_durability = false;
                    } else {
                        pending_durability = true;
                    }
                    if let Err(e) = result {
                        tracing::error!(error = %e, messages = n, "archive batch not written");
                    }
                    let Some(writer) = weak.upgrade() else {
                        break;
                    };
                    writer
                        .committed
                        .fetch_add(n, std::sync::atomic::Ordering::AcqRel);
                }
            })
            .map_err(Error::ArchiveThread)?;
        Ok(writer)
    }

    fn append(&self, user: String, id: u64, value: Vec<u8>) -> Result<()> {
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(tx) = queue.as_ref() else {
            return Err(Error::Closed);
        };
        self.appended
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        tx.send((user, id, value)).map_err(|_| Error::Closed)
    }

    /// Waits (at most 2 s) until every append made before the call is committed.
    async fn settle(&self) {
        let target = self.appended.load(std::sync::atomic::Ordering::Acquire);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.committed.load(std::sync::atomic::Ordering::Acquire) < target
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

impl std::fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStorage").finish_non_exhaustive()
    }
}

impl RedbStorage {
    /// Opens the database at `path`, creating its parent directory, the file and the tables if
    /// they do not exist. Synchronous: call it at startup or from a blocking context.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let db = Database::create(path).or_backend("open")?;
        write(&db, |txn| {
            txn.open_table(JID_USER).or_backend("open_table")?;
            txn.open_table(JID_ROSTER).or_backend("open_table")?;
            txn.open_table(DOMAIN_USERCOUNT).or_backend("open_table")?;
            txn.open_table(OFFLINE_MSG).or_backend("open_table")?;
            txn.open_table(ACCOUNT_ITEM).or_backend("open_table")?;
            txn.open_table(ARCHIVE).or_backend("open_table")?;
            txn.open_table(MUC_ROOM).or_backend("open_table")?;
            Ok(())
        })?;
        tracing::debug!(path = %path.display(), "redb storage opened");
        let db = Arc::new(db);
        Ok(Self {
            archive: ArchiveWriter::start(&db)?,
            db,
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Runs `f` with the database on tokio's blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|source| Error::TaskFailed { source })?
    }

    /// Runs `f` in one write transaction on the blocking pool, under the write lock.
    async fn blocking_write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        let _writing = self.write_lock.lock().await;
        self.blocking(move |db| write(db, f)).await
    }
}

/// Runs `f` in one write transaction: commits if it returns `Ok`, aborts otherwise.
fn write<T>(db: &Database, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
    let txn = db.begin_write().or_backend("begin_write")?;
    finish(txn, f)
}

/// Runs `f` in the open transaction `txn`, then commits it if `f` succeeded or aborts it.
fn finish<T>(txn: WriteTransaction, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
    match f(&txn) {
        Ok(value) => {
            txn.commit().or_backend("commit")?;
            Ok(value)
        }
        Err(err) => {
            abort(txn);
            Err(err)
        }
    }
}

/// Aborts `txn`; a failing abort is only logged since the caller already reports an error.
fn abort(txn: WriteTransaction) {
    if let Err(error) = txn.abort() {
        tracing::warn!(%error, "redb abort failed after a failed transaction");
    }
}

/// Whether the account stored under `key` exists, inside a write transaction.
fn user_exists(txn: &WriteTransaction, key: &str) -> Result<bool> {
    let users = txn.open_table(JID_USER).or_backend("open_table")?;
    Ok(users.get(key).or_backend("get")?.is_some())
}

/// The first and last sequence numbers of the offline messages stored under `key`.
fn offline_bounds(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    key: &str,
) -> Result<Option<(u64, u64)>> {
    let mut range = table
        .range::<(&str, u64)>((key, 0)..=(key, u64::MAX))
        .or_backend("range")?;
    let Some(first) = range.next() else {
        return Ok(None);
    };
    let first = first.or_backend("range")?.0.value().1;
    let last = match range.next_back() {
        Some(last) => last.or_backend("range")?.0.value().1,
        None => first,
    };
    Ok(Some((first, last)))
}

/// The range of every item of the account stored under `user`.
fn user_items(user: &str) -> std::ops::Range<(&str, &str)> {
    (user, "")..(user, "\u{10ffff}")
}

/// An item key back into (kind, key).
fn split_item_key(user: &str, item: &str) -> Result<(String, String)> {
    let (kind, key) = item.split_once('\0').ok_or_else(|| Error::BadKey {
        table: ACCOUNT_ITEM_NAME,
        key: format!("{}/{}", user.escape_debug(), item.escape_debug()),
    })?;
    Ok((kind.to_owned(), key.to_owned()))
}

/// The roster stored under `key` in `table`, or the empty roster.
fn read_roster(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Roster> {
    match table.get(key).or_backend("get")? {
        Some(bytes) => codec::decode(JID_ROSTER_NAME, key, bytes.value()),
        None => Ok(Roster::default()),
    }
}

#[async_trait::async_trait]
impl Storage for RedbStorage {
    async fn create_user(&self, user: &BareJid, record: UserRecord) -> Result<()> {
        if user.node().is_none() {
            return Err(Error::NoLocalpart {
                jid: user.to_string(),
            });
        }
        let key = user_key(user);
        let domain = user.domain().as_str().to_owned();
        let value = codec::encode(JID_USER_NAME, &record)?;
        let jid = user.to_string();
        self.blocking_write(move |txn| {
            let mut users = txn.open_table(JID_USER).or_backend("open_table")?;
            if users.get(key.as_str()).or_backend("get")?.is_some() {
                return Err(Error::UserExists { jid });
            }
            users
                .insert(key.as_str(), value.as_slice())
                .or_backend("insert")?;
            let mut counts = txn.open_table(DOMAIN_USERCOUNT).or_backend("open_table")?;
            let count = counts
                .get(domain.as_str())
                .or_backend("get")?
                .map_or(0, |count| count.value());
            counts
                .insert(domain.as_str(), count.saturating_add(1))
                .or_backend("insert")?;
            Ok(())
        })
        .await
    }

    async fn get_user(&self, user: &BareJid) -> Result<Option<UserRecord>> {
        let key = user_key(user);
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend("begin_read")?;
            let users = txn.open_table(JID_USER).or_backend("open_table")?;
            let Some(bytes) = users.get(key.as_str()).or_backend("get")? else {
                return Ok(None);
            };
            codec::decode(JID_USER_NAME, &key, bytes.value()).map(Some)
        })
        .await
    }

    async fn set_user_credentials(&self, user: &BareJid, record: UserRecord) -> Result<()> {
        let key = user_key(user);
        let value = codec::encode(JID_USER_NAME, &record)?;
        let jid = user.to_string();
        self.blocking_write(move |txn| {
            let mut users = txn.open_table(JID_USER).or_backend("open_table")?;
            if users.get(key.as_str()).or_backend("get")?.is_none() {
                return Err(Error::UserNotFound { jid });
            }
            users
                .insert(key.as_str(), value.as_slice())
                .or_backend("insert")?;
            Ok(())
        })
        .await
    }

    async fn remove_user(&self, user: &BareJid) -> Result<bool> {
        // An append still queued would land after the removal and outlive the account.
        self.archive.settle().await;
        let key = user_key(user);
        let domain = user.domain().as_str().to_owned();
        self.blocking_write(move |txn| {
            let mut users = txn.open_table(JID_USER).or_backend("open_table")?;
            if users.remove(key.as_str()).or_backend("remove")?.is_none() {
                return Ok(false);
            }
            let mut rosters = txn.open_table(JID_ROSTER).or_backend("open_table")?;
            rosters.remove(key.as_str()).or_backend("remove")?;
            let mut offline = txn.open_table(OFFLINE_MSG).or_backend("open_table")?;
            clear_owner(&mut offline, &key)?;
            let mut items = txn.open_table(ACCOUNT_ITEM).or_backend("open_table")?;
            items
                .retain_in::<(&str, &str), _>(user_items(&key), |_, _| false)
                .or_backend("remove")?;
            let mut archive = txn.open_table(ARCHIVE).or_backend("open_table")?;
            clear_owner(&mut archive, &key)?;
            let mut counts = txn.open_table(DOMAIN_USERCOUNT).or_backend("open_table")?;
            let count = counts
                .get(domain.as_str())
                .or_backend("get")?
                .map_or(0, |count| count.value());
            if count <= 1 {
                counts.remove(domain.as_str()).or_backend("remove")?;
            } else {
                counts
                    .insert(domain.as_str(), count - 1)
                    .or_backend("insert")?;
            }
            Ok(true)
        })
        .await
    }

    async fn remove_domain(&self, domain: &str) -> Result<DomainRemoval> {
        self.archive.settle().await;
        let (start, end) = domain_range(domain);
        let domain = domain.to_owned();
        self.blocking_write(move |txn| {
            let mut removal = DomainRemoval::default();
            let range = start.as_str()..end.as_str();
            let mut users = txn.open_table(JID_USER).or_backend("open_table")?;
            users
                .retain_in::<&str, _>(range.clone(), |_, _| {
                    removal.accounts += 1;
                    false
                })
                .or_backend("remove")?;
            let mut rosters = txn.open_table(JID_ROSTER).or_backend("open_table")?;
            rosters
                .retain_in::<&str, _>(range, |_, _| {
                    removal.rosters += 1;
                    false
                })
                .or_backend("remove")?;
            let mut offline = txn.open_table(OFFLINE_MSG).or_backend("open_table")?;
            offline
                .retain_in::<(&str, u64), _>((start.as_str(), 0)..(end.as_str(), 0), |_, _| {
                    removal.offline += 1;
                    false
                })
                .or_backend("remove")?;
            let mut items = txn.open_table(ACCOUNT_ITEM).or_backend("open_table")?;
            items
                .retain_in::<(&str, &str), _>((start.as_str(), "")..(end.as_str(), ""), |_, _| {
                    removal.items += 1;
                    false
                })
                .or_backend("remove")?;
            let mut archive = txn.open_table(ARCHIVE).or_backend("open_table")?;
            archive
                .retain_in::<(&str, u64), _>((start.as_str(), 0)..(end.as_str(), 0), |_, _| {
                    removal.archived += 1;
                    false
                })
                .or_backend("remove")?;
            let mut counts = txn.open_table(DOMAIN_USERCOUNT).or_backend("open_table")?;
            counts.remove(domain.as_str()).or_backend("remove")?;
            Ok(removal)
        })
        .await
    }

    async fn list_users(&self, domain: &str) -> Result<Vec<BareJid>> {
        let (start, end) = domain_range(domain);
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend("begin_read")?;
            let users = txn.open_table(JID_USER).or_backend("open_table")?;
            let mut out = Vec::new();
            for entry in users
                .range::<&str>(start.as_str()..end.as_str())
                .or_backend("range")?
            {
                let (key, _) = entry.or_backend("range")?;
                let key = key.value();
                let jid = jid_from_key(key).ok_or_else(|| Error::BadKey {
                    table: JID_USER_NAME,
                    key: key.escape_debug().to_string(),
                })?;
                out.push(jid);
            }
            Ok(out)
        })
        .await
    }

    async fn count_users(&self, domain: &str) -> Result<u64> {
        let domain = domain.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend("begin_read")?;
            let counts = txn.open_table(DOMAIN_USERCOUNT).or_backend("open_table")?;
            Ok(counts
                .get(domain.as_str())
                .or_backend("get")?
                .map_or(0, |count| count.value()))
        })
        .await
    }

    async fn get_roster(&self, user: &BareJid) -> Result<Roster> {
        let key = user_key(user);
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend("begin_read")?;
            let rosters = txn.open_table(JID_ROSTER).or_backend("open_table")?;
            read_roster(&rosters, &key)
        })
        .await
    }

    async fn modify_roster(
        &self,
        user: &BareJid,
        f: &mut (dyn for<'r> FnMut(&'r mut Roster) + Send),
    ) -> Result<Roster> {
        // `f` borrows from the caller, so it cannot move to the blocking pool: the transaction
        // is opened there, comes back here for `f` (synchronous, no await while it runs), and
        // goes back to the pool to be committed. Other writers wait on `write_lock` meanwhile.
        let _writing = self.write_lock.lock().await;
        let key = user_key(user);
        let jid = user.to_string();
        let (txn, key, mut roster) = self
            .blocking(move |db| {
                let txn = db.begin_write().or_backend("begin_write")?;
                let loaded = user_exists(&txn, &key).and_then(|exists| {
                    if !exists {
                        return Err(Error::UserNotFound { jid });
                    }
                    let rosters = txn.open_table(JID_ROSTER).or_backend("open_table")?;
                    read_roster(&rosters, &key)
                });
                match loaded {
                    Ok(roster) => Ok((txn, key, roster)),
                    Err(err) => {
                        abort(txn);
                        Err(err)
                    }
                }
            })
            .await?;
        f(&mut roster);
        let value = codec::encode(JID_ROSTER_NAME, &roster);
        self.blocking(move |_| {
            finish(txn, |txn| {
                let value = value?;
                let mut rosters = txn.open_table(JID_ROSTER).or_backend("open_table")?;
                rosters
                    .insert(key.as_str(), value.as_slice())
                    .or_backend("insert")?;
                Ok(())
            })
        })
        .await?;
        Ok(roster)
    }

    async fn store_offline(
        &self,
        user: &BareJid,
        stanza: Bytes,
        limit: usize,
    ) -> Result<OfflineStored> {
        let key = user_key(user);
        let value = codec::encode(
            OFFLINE_MSG_NAME,
            &OfflineMessage {
                stanza: stanza.to_vec(),
            },
        )?;
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        self.blocking_write(move |txn| {
            let mut offline = txn.open_table(OFFLINE_MSG).or_backend("open_table")?;
            let (count, next) = match offline_bounds(&offline, &key)? {
                Some((first, last)) => (last - first + 1, last + 1),
                None => (0, 0),
            };
            if count >= limit {
                return Ok(OfflineStored::Full);
            }
            offline
                .insert((key.as_str(), next), value.as_slice())
                .or_backend("insert")?;
            Ok(OfflineStored::Stored(count + 1))
        })
        .await
    }

    async fn take_offline(&self, user: &BareJid) -> Result<Vec<Bytes>> {
        let key = user_key(user);
        self.blocking_write(move |txn| {
            let mut offline = txn.open_table(OFFLINE_MSG).or_backend("open_table")?;
            let mut out = Vec::new();
            for entry in offline
                .extract_from_if::<(&str, u64), _>(
                    (key.as_str(), 0)..=(key.as_str(), u64::MAX),
                    |_, _| true,
                )
                .or_backend("remove")?
            {
                let (seq, bytes) = entry.or_backend("remove")?;
                let name = format!("{}#{}", key.escape_debug(), seq.value().1);
                let message: OfflineMessage =
                    codec::decode(OFFLINE_MSG_NAME, &name, bytes.value())?;
                out.push(Bytes::from(message.stanza));
            }
            Ok(out)
        })
        .await
    }

    async fn count_offline(&self, user: &BareJid) -> Result<u64> {
        let key = user_key(user);
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend("begin_read")?;
            let offline = txn.open_table(OFFLINE_MSG).or_backend("open_table")?;
            Ok(offline_bounds(&offline, &key)?.map_or(0, |(first, last)| last - first + 1))
        })
        .await
    }

    async fn get_item(&self, user: &BareJid, kind: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let user = user_key(user);
        let key = item_key(kind, key);
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend("begin_read")?;
            let table = txn.open_table(ACCOUNT_ITEM).or_backend("open_table")?;
            Ok(table
                .get((user.as_str(), key.as_str()))
                .or_backend("get")?
                .map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn put_item(
        &self,
        user: &BareJid,
        kind: &str,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<()> {
        let jid = user.to_string();
        let user = user_key(user);
        let key = item_key(kind, key);
        self.blocking_write(move |txn| {
            if !user_exists(txn, &user)? {
                return Err(Error::UserNotFound { jid });
            }
            let mut table = txn.open_table(ACCOUNT_ITEM).or_backend("open_table")?;
            match value {
                Some(value) => {
                    table
                        .insert((user.as_str(), key.as_str()), value.as_slice())
                        .or_backend("insert")?;
                }
                None => {
                    table
                        .remove((user.as_str(), key.as_str()))
                        .or_backend("remove")?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn put_room(&self, room: &BareJid, value: Option<Vec<u8>>) -> Result<()> {
        let key = room.to_string();
        self.blocking_write(move |txn| {
            let mut table = txn.open_table(MUC_ROOM).or_backend("open_table")?;
            match value {
                Some(value) => {
                    table
                        .insert(key.as_str(), value.as_slice())
                        .or_backend("insert")?;
                }
                None => {
                    table.remove(key.as_str()).or_backend("remove")?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn list_rooms(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend("begin_read")?;
            let table = txn.open_table(MUC_ROOM).or_backend("open_table")?;
            let mut out = Vec::new();
            for entry in table.iter().or_backend("iter")? {
                let (k, v) = entry.or_backend("iter")?;
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    async fn list_items(&self, user: &BareJid, kind: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let user = user_key(user);
        let start = item_key(kind, "");
        let end = format!("{kind}\u{1}");
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend("begin_read")?;
            let table = txn.open_table(ACCOUNT_ITEM).or_backend("open_table")?;
            let mut out = Vec::new();
            for entry in table
                .range::<(&str, &str)>(
                    (user.as_str(), start.as_str())..(user.as_str(), end.as_str()),
                )
                .or_backend("range")?
            {
                let (k, value) = entry.or_backend("range")?;
                let (_, key) = split_item_key(&user, k.value().1)?;
                out.push((key, value.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    async fn archive_append(
        &self,
        user: &BareJid,
        id: u64,
        message: ArchivedMessage,
    ) -> Result<()> {
        let value = codec::encode(ARCHIVE_NAME, &message)?;
        self.archive.append(user_key(user), id, value)
    }

    async fn archive_query(&self, user: &BareJid, query: ArchiveQuery) -> Result<ArchivePage> {
        self.archive.settle().await;
        let key = user_key(user);
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend("begin_read")?;
            let table = txn.open_table(ARCHIVE).or_backend("open_table")?;
            if query.from > query.to {
                return Ok(ArchivePage {
                    complete: true,
                    ..ArchivePage::default()
                });
            }
            let range = table
                .range::<(&str, u64)>((key.as_str(), query.from)..=(key.as_str(), query.to))
                .or_backend("range")?;
            let mut page = ArchivePage {
                complete: true,
                ..ArchivePage::default()
            };
            let mut keep = |id: u64, bytes: &[u8]| -> Result<bool> {
                if query.ids.as_ref().is_some_and(|ids| !ids.contains(&id)) {
                    return Ok(false);
                }
                let name = format!("{}#{id}", key.escape_debug());
                let message: ArchivedMessage = codec::decode(ARCHIVE_NAME, &name, bytes)?;
                if query.with.as_ref().is_some_and(|w| *w != message.with) {
                    return Ok(false);
                }
                page.count += 1;
                if page.messages.len() < query.max {
                    page.messages.push((id, message));
                } else {
                    page.complete = false;
                }
                Ok(true)
            };
            if query.from_end {
                for entry in range.rev() {
                    let (k, v) = entry.or_backend("range")?;
                    keep(k.value().1, v.value())?;
                }
                page.messages.reverse();
            } else {
                for entry in range {
                    let (k, v) = entry.or_backend("range")?;
                    keep(k.value().1, v.value())?;
                }
            }
            Ok(page)
        })
        .await
    }

    async fn archive_remove(&self, owner: &BareJid) -> Result<()> {
        self.archive.settle().await;
        let key = user_key(owner);
        self.blocking_write(move |txn| {
            let mut archive = txn.open_table(ARCHIVE).or_backend("open_table")?;
            clear_owner(&mut archive, &key)?;
            Ok(())
        })
        .await
    }

    async fn archive_prune(&self, before: u64) -> Result<u64> {
        self.archive.settle().await;
        self.blocking_write(move |txn| {
            let mut table = txn.open_table(ARCHIVE).or_backend("open_table")?;
            let mut pruned = 0;
            table
                .retain(|(_, id), _| {
                    let old = id < before;
                    pruned += u64::from(old);
                    !old
                })
                .or_backend("remove")?;
            Ok(pruned)
        })
        .await
    }

    async fn item_owners(&self, kind: &str) -> Result<Vec<BareJid>> {
        let prefix = item_key(kind, "");
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend("begin_read")?;
            let table = txn.open_table(ACCOUNT_ITEM).or_backend("open_table")?;
            let mut owners: Vec<BareJid> = Vec::new();
            for entry in table.iter().or_backend("iter")? {
                let (k, _) = entry.or_backend("iter")?;
                let (user, item) = k.value();
                if item.starts_with(prefix.as_str()) {
                    let jid = jid_from_key(user).ok_or_else(|| Error::BadKey {
                        table: ACCOUNT_ITEM_NAME,
                        key: user.escape_debug().to_string(),
                    })?;
                    if owners.last() != Some(&jid) {
                        owners.push(jid);
                    }
                }
            }
            Ok(owners)
        })
        .await
    }

    async fn export_user(&self, user: &BareJid) -> Result<Option<AccountData>> {
        // The export must hold every message archived before it (the account is moving).
        self.archive.settle().await;
        let key = user_key(user);
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend("begin_read")?;
            let users = txn.open_table(JID_USER).or_backend("open_table")?;
            let Some(bytes) = users.get(key.as_str()).or_backend("get")? else {
                return Ok(None);
            };
            let record: UserRecord = codec::decode(JID_USER_NAME, &key, bytes.value())?;
            let rosters = txn.open_table(JID_ROSTER).or_backend("open_table")?;
            let roster = read_roster(&rosters, &key)?;
            let table = txn.open_table(OFFLINE_MSG).or_backend("open_table")?;
            let mut offline = Vec::new();
            for entry in table
                .range::<(&str, u64)>((key.as_str(), 0)..=(key.as_str(), u64::MAX))
                .or_backend("range")?
            {
                let (seq, bytes) = entry.or_backend("range")?;
                let name = format!("{}#{}", key.escape_debug(), seq.value().1);
                offline.push(codec::decode(OFFLINE_MSG_NAME, &name, bytes.value())?);
            }
            let table = txn.open_table(ACCOUNT_ITEM).or_backend("open_table")?;
            let mut items = Vec::new();
            for entry in table
                .range::<(&str, &str)>(user_items(&key))
                .or_backend("range")?
            {
                let (k, value) = entry.or_backend("range")?;
                let (kind, item) = split_item_key(&key, k.value().1)?;
                items.push(AccountItem {
                    kind,
                    key: item,
                    value: value.value().to_vec(),
                });
            }
            let table = txn.open_table(ARCHIVE).or_backend("open_table")?;
            let mut archive = Vec::new();
            for entry in table
                .range::<(&str, u64)>((key.as_str(), 0)..=(key.as_str(), u64::MAX))
                .or_backend("range")?
            {
                let (k, value) = entry.or_backend("range")?;
                let id = k.value().1;
                let name = format!("{}#{id}", key.escape_debug());
                archive.push((id, codec::decode(ARCHIVE_NAME, &name, value.value())?));
            }
            Ok(Some(AccountData {
                record,
                roster,
                offline,
                items,
                archive,
            }))
        })
        .await
    }

    async fn import_user(&self, user: &BareJid, data: AccountData) -> Result<()> {
        if user.node().is_none() {
            return Err(Error::NoLocalpart {
                jid: user.to_string(),
            });
        }
        let key = user_key(user);
        let domain = user.domain().as_str().to_owned();
        let record = codec::encode(JID_USER_NAME, &data.record)?;
        let roster = codec::encode(JID_ROSTER_NAME, &data.roster)?;
        let offline = data
            .offline
            .iter()
            .map(|message| codec::encode(OFFLINE_MSG_NAME, message))
            .collect::<Result<Vec<_>>>()?;
        let items = data.items;
        let archive = data
            .archive
            .iter()
            .map(|(id, message)| Ok((*id, codec::encode(ARCHIVE_NAME, message)?)))
            .collect::<Result<Vec<_>>>()?;
        // Appends queued before the import belong to what it replaces.
        self.archive.settle().await;
        self.blocking_write(move |txn| {
            let mut users = txn.open_table(JID_USER).or_backend("open_table")?;
            let existed = users
                .insert(key.as_str(), record.as_slice())
                .or_backend("insert")?
                .is_some();
            if !existed {
                let mut counts = txn.open_table(DOMAIN_USERCOUNT).or_backend("open_table")?;
                let count = counts
                    .get(domain.as_str())
                    .or_backend("get")?
                    .map_or(0, |count| count.value());
                counts
                    .insert(domain.as_str(), count.saturating_add(1))
                    .or_backend("insert")?;
            }
            let mut rosters = txn.open_table(JID_ROSTER).or_backend("open_table")?;
            rosters
                .insert(key.as_str(), roster.as_slice())
                .or_backend("insert")?;
            let mut table = txn.open_table(OFFLINE_MSG).or_backend("open_table")?;
            clear_owner(&mut table, &key)?;
            for (seq, message) in (0u64..).zip(&offline) {
                table
                    .insert((key.as_str(), seq), message.as_slice())
                    .or_backend("insert")?;
            }
            let mut table = txn.open_table(ACCOUNT_ITEM).or_backend("open_table")?;
            table
                .retain_in::<(&str, &str), _>(user_items(&key), |_, _| false)
                .or_backend("remove")?;
            for item in &items {
                let k = item_key(&item.kind, &item.key);
                table
                    .insert((key.as_str(), k.as_str()), item.value.as_slice())
                    .or_backend("insert")?;
            }
            let mut table = txn.open_table(ARCHIVE).or_backend("open_table")?;
            clear_owner(&mut table, &key)?;
            for (id, message) in &archive {
                table
                    .insert((key.as_str(), *id), message.as_slice())
                    .or_backend("insert")?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::types::{RosterItem, ScramRecord, Subscription};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "tern-storage-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            Self(path)
        }

        fn db_path(&self) -> PathBuf {
            // A nested path also checks that `open` creates parent directories.
            self.0.join("data").join("tern.redb")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    fn scram(seed: u8) -> ScramRecord {
        ScramRecord {
            salt: vec![seed; 16],
            iterations: 4096,
            stored_key: vec![seed.wrapping_add(1); 32],
            server_key: vec![seed.wrapping_add(2); 32],
        }
    }

    fn record(seed: u8) -> UserRecord {
        UserRecord {
            sha1: scram(seed),
            sha256: scram(seed.wrapping_add(10)),
            created_unix: 1_700_000_000 + u64::from(seed),
        }
    }

    fn item(jid: &str, subscription: Subscription) -> RosterItem {
        RosterItem {
            name: Some("Nick".to_owned()),
            groups: vec!["Friends".to_owned(), "Work".to_owned()],
            subscription,
            ask: true,
            ..RosterItem::new(jid)
        }
    }

    fn msg(body: &str) -> Bytes {
        Bytes::from(format!("<message><body>{body}</body></message>"))
    }

    #[tokio::test]
    async fn offline_messages_come_back_in_order_once() {
        let dir = TempDir::new("offline");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        let bob = jid("bob@a.example");
        assert_eq!(store.count_offline(&alice).await.unwrap(), 0);
        assert!(store.take_offline(&alice).await.unwrap().is_empty());
        // More than ten, so an ordering by string instead of number would show.
        for n in 0..12 {
            let stored = store
                .store_offline(&alice, msg(&format!("a{n}")), 100)
                .await
                .unwrap();
            assert_eq!(stored, OfflineStored::Stored(n + 1));
        }
        store.store_offline(&bob, msg("b0"), 100).await.unwrap();
        assert_eq!(store.count_offline(&alice).await.unwrap(), 12);
        assert_eq!(store.count_offline(&bob).await.unwrap(), 1);

        let taken = store.take_offline(&alice).await.unwrap();
        let expected: Vec<Bytes> = (0..12).map(|n| msg(&format!("a{n}"))).collect();
        assert_eq!(taken, expected);
        assert_eq!(store.count_offline(&alice).await.unwrap(), 0);
        assert!(store.take_offline(&alice).await.unwrap().is_empty());
        // Another user's messages are untouched.
        assert_eq!(store.take_offline(&bob).await.unwrap(), vec![msg("b0")]);

        // Storing again after a take starts a fresh, ordered list.
        store.store_offline(&alice, msg("x"), 100).await.unwrap();
        store.store_offline(&alice, msg("y"), 100).await.unwrap();
        assert_eq!(
            store.take_offline(&alice).await.unwrap(),
            vec![msg("x"), msg("y")]
        );
    }

    #[tokio::test]
    async fn offline_limit_stores_nothing_more() {
        let dir = TempDir::new("offline-limit");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        for n in 0..3 {
            let stored = store
                .store_offline(&alice, msg(&n.to_string()), 3)
                .await
                .unwrap();
            assert_eq!(stored, OfflineStored::Stored(n + 1));
        }
        assert_eq!(
            store.store_offline(&alice, msg("over"), 3).await.unwrap(),
            OfflineStored::Full
        );
        assert_eq!(store.count_offline(&alice).await.unwrap(), 3);
        assert_eq!(
            store.take_offline(&alice).await.unwrap(),
            vec![msg("0"), msg("1"), msg("2")]
        );
        assert_eq!(
            store.store_offline(&alice, msg("again"), 3).await.unwrap(),
            OfflineStored::Stored(1)
        );
    }

    #[tokio::test]
    async fn an_account_exported_and_imported_elsewhere_is_the_same() {
        let (from, to) = (TempDir::new("export"), TempDir::new("import"));
        let a = RedbStorage::open(&from.db_path()).unwrap();
        let b = RedbStorage::open(&to.db_path()).unwrap();
        let alice = jid("alice@example.com");
        a.create_user(&alice, record(1)).await.unwrap();
        a.modify_roster(&alice, &mut |r| {
            r.items.insert(
                "bob@example.com".into(),
                item("bob@example.com", Subscription::Both),
            );
        })
        .await
        .unwrap();
        for body in ["one", "two", "three"] {
            a.store_offline(&alice, msg(body), 10).await.unwrap();
        }
        a.put_item(&alice, "vcard", "", Some(b"<vCard/>".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            a.export_user(&jid("nobody@example.com")).await.unwrap(),
            None
        );
        let data = a.export_user(&alice).await.unwrap().expect("exported");
        assert_eq!(data.offline.len(), 3);
        assert_eq!(data.items.len(), 1);
        // Exporting takes nothing away.
        assert_eq!(a.count_offline(&alice).await.unwrap(), 3);

        // The destination had an older copy: it is replaced, not merged.
        b.create_user(&alice, record(9)).await.unwrap();
        b.store_offline(&alice, msg("stale"), 10).await.unwrap();
        b.put_item(&alice, "private", "stale", Some(vec![1]))
            .await
            .unwrap();
        b.import_user(&alice, data.clone()).await.unwrap();
        assert_eq!(b.get_item(&alice, "private", "stale").await.unwrap(), None);
        assert_eq!(b.export_user(&alice).await.unwrap(), Some(data.clone()));
        assert_eq!(b.count_users("example.com").await.unwrap(), 1);
        let taken = b.take_offline(&alice).await.unwrap();
        assert_eq!(taken, vec![msg("one"), msg("two"), msg("three")]);

        // Into an empty store: the account counts.
        let fresh = TempDir::new("import-fresh");
        let c = RedbStorage::open(&fresh.db_path()).unwrap();
        c.import_user(&alice, data).await.unwrap();
        assert_eq!(c.count_users("example.com").await.unwrap(), 1);
        assert!(c.get_user(&alice).await.unwrap().is_some());
        assert_eq!(c.get_roster(&alice).await.unwrap().items.len(), 1);
    }

    #[tokio::test]
    async fn account_items_are_kept_per_kind_and_go_with_their_account() {
        let dir = TempDir::new("items");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        let bob = jid("bob@a.example");
        let carol = jid("carol@b.example");
        assert!(matches!(
            store.put_item(&alice, "vcard", "", Some(vec![1])).await,
            Err(Error::UserNotFound { .. })
        ));
        for user in [&alice, &bob, &carol] {
            store.create_user(user, record(1)).await.unwrap();
        }
        store
            .put_item(&alice, "private", "b", Some(b"two".to_vec()))
            .await
            .unwrap();
        store
            .put_item(&alice, "private", "a", Some(b"one".to_vec()))
            .await
            .unwrap();
        store
            .put_item(&alice, "privatex", "z", Some(b"other kind".to_vec()))
            .await
            .unwrap();
        store
            .put_item(&bob, "private", "a", Some(b"bob's".to_vec()))
            .await
            .unwrap();
        store
            .put_item(&carol, "vcard", "", Some(b"carol".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            store.list_items(&alice, "private").await.unwrap(),
            vec![("a".into(), b"one".to_vec()), ("b".into(), b"two".to_vec())]
        );
        assert_eq!(
            store.get_item(&bob, "private", "a").await.unwrap(),
            Some(b"bob's".to_vec())
        );
        store.put_item(&alice, "private", "a", None).await.unwrap();
        assert_eq!(store.get_item(&alice, "private", "a").await.unwrap(), None);
        // Removing an account takes its items, and only its.
        assert!(store.remove_user(&alice).await.unwrap());
        assert!(
            store
                .list_items(&alice, "private")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .list_items(&alice, "privatex")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.list_items(&bob, "private").await.unwrap().len(), 1);
        assert_eq!(
            store.item_owners("vcard").await.unwrap(),
            vec![carol.clone()]
        );
        assert_eq!(
            store.item_owners("private").await.unwrap(),
            vec![bob.clone()]
        );
        assert!(store.item_owners("privacy").await.unwrap().is_empty());
        // Removing a domain counts them.
        let removal = store.remove_domain("a.example").await.unwrap();
        assert_eq!(removal.items, 1);
        assert_eq!(
            store.get_item(&carol, "vcard", "").await.unwrap(),
            Some(b"carol".to_vec())
        );
    }

    #[tokio::test]
    async fn archive_pages_both_ways_and_filters() {
        use crate::storage::{ArchivePage, ArchiveQuery, ArchivedMessage};
        let dir = TempDir::new("archive");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        store.create_user(&alice, record(1)).await.unwrap();
        for id in 1..=10u64 {
            let with = if id % 2 == 0 {
                "bob@a.example"
            } else {
                "carol@a.example"
            };
            let message = ArchivedMessage {
                with: with.into(),
                incoming: true,
                stanza: format!("<message><body>{id}</body></message>").into_bytes(),
            };
            store.archive_append(&alice, id, message).await.unwrap();
        }
        let all = ArchiveQuery {
            to: u64::MAX,
            max: 4,
            ..ArchiveQuery::default()
        };
        let ids =
            |page: &ArchivePage| -> Vec<u64> { page.messages.iter().map(|(id, _)| *id).collect() };
        // Appends are visible to the next query.
        let first = store.archive_query(&alice, all.clone()).await.unwrap();
        assert_eq!(ids(&first), [1, 2, 3, 4]);
        assert!(!first.complete);
        assert_eq!(first.count, 10);
        let last = store
            .archive_query(
                &alice,
                ArchiveQuery {
                    from_end: true,
                    ..all.clone()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&last), [7, 8, 9, 10], "the newest page, oldest first");
        let tail = store
            .archive_query(
                &alice,
                ArchiveQuery {
                    from: 9,
                    ..all.clone()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&tail), [9, 10]);
        assert!(tail.complete);
        let bob = store
            .archive_query(
                &alice,
                ArchiveQuery {
                    with: Some("bob@a.example".into()),
                    max: 100,
                    ..all.clone()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&bob), [2, 4, 6, 8, 10]);
        let picked = store
            .archive_query(
                &alice,
                ArchiveQuery {
                    ids: Some(vec![3, 5]),
                    ..all.clone()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&picked), [3, 5]);
        // The archive moves with the account and goes with it.
        let data = store.export_user(&alice).await.unwrap().unwrap();
        assert_eq!(data.archive.len(), 10);
        assert_eq!(store.archive_prune(6).await.unwrap(), 5);
        let left = store.archive_query(&alice, all.clone()).await.unwrap();
        assert_eq!(left.count, 5);
        assert!(store.remove_user(&alice).await.unwrap());
        store.create_user(&alice, record(1)).await.unwrap();
        assert_eq!(store.archive_query(&alice, all).await.unwrap().count, 0);
    }

    #[tokio::test]
    async fn remove_user_deletes_offline_messages() {
        let dir = TempDir::new("offline-remove");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        let bob = jid("bob@a.example");
        store.create_user(&alice, record(1)).await.unwrap();
        store.create_user(&bob, record(2)).await.unwrap();
        store.store_offline(&alice, msg("1"), 10).await.unwrap();
        store.store_offline(&alice, msg("2"), 10).await.unwrap();
        store.store_offline(&bob, msg("3"), 10).await.unwrap();
        assert!(store.remove_user(&alice).await.unwrap());
        assert_eq!(store.count_offline(&alice).await.unwrap(), 0);
        assert_eq!(store.count_offline(&bob).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn corrupt_offline_message_is_an_error_and_kept() {
        let dir = TempDir::new("offline-corrupt");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        store.store_offline(&alice, msg("1"), 10).await.unwrap();
        let key = user_key(&alice);
        write(&store.db, |txn| {
            let mut offline = txn.open_table(OFFLINE_MSG).or_backend("open_table")?;
            offline
                .insert((key.as_str(), 1), [9u8, 1].as_slice())
                .or_backend("insert")?;
            Ok(())
        })
        .unwrap();
        let err = store.take_offline(&alice).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnknownFormat {
                    table: "offline_msg",
                    version: 9,
                    ..
                }
            ),
            "{err:?}"
        );
        // The failed take deleted nothing.
        assert_eq!(store.count_offline(&alice).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn create_then_get_returns_record() {
        let dir = TempDir::new("create");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        assert_eq!(store.get_user(&alice).await.unwrap(), None);
        store.create_user(&alice, record(1)).await.unwrap();
        assert_eq!(store.get_user(&alice).await.unwrap(), Some(record(1)));
    }

    #[tokio::test]
    async fn creating_existing_user_fails_and_keeps_record() {
        let dir = TempDir::new("exists");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        store.create_user(&alice, record(1)).await.unwrap();
        let err = store.create_user(&alice, record(2)).await.unwrap_err();
        assert!(
            matches!(err, Error::UserExists { ref jid } if jid == "alice@a.example"),
            "{err:?}"
        );
        assert_eq!(store.get_user(&alice).await.unwrap(), Some(record(1)));
        assert_eq!(store.count_users("a.example").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn domain_cannot_be_a_user() {
        let dir = TempDir::new("domain-user");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let err = store
            .create_user(&jid("a.example"), record(1))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NoLocalpart { .. }), "{err:?}");
        assert_eq!(store.count_users("a.example").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn list_and_count_are_per_domain_and_sorted() {
        let dir = TempDir::new("list");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        for name in ["carol@a.example", "alice@a.example", "bob@a.example"] {
            store.create_user(&jid(name), record(1)).await.unwrap();
        }
        for name in ["zed@b.example", "amy@b.example"] {
            store.create_user(&jid(name), record(2)).await.unwrap();
        }
        // A domain that extends another one's name must not leak into it.
        store
            .create_user(&jid("dan@a.example.org"), record(3))
            .await
            .unwrap();

        assert_eq!(
            store.list_users("a.example").await.unwrap(),
            vec![
                jid("alice@a.example"),
                jid("bob@a.example"),
                jid("carol@a.example")
            ]
        );
        assert_eq!(
            store.list_users("b.example").await.unwrap(),
            vec![jid("amy@b.example"), jid("zed@b.example")]
        );
        assert_eq!(store.count_users("a.example").await.unwrap(), 3);
        assert_eq!(store.count_users("b.example").await.unwrap(), 2);
        assert_eq!(store.count_users("a.example.org").await.unwrap(), 1);
        assert_eq!(store.count_users("c.example").await.unwrap(), 0);
        assert!(store.list_users("c.example").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn remove_domain_deletes_only_that_domain() {
        let dir = TempDir::new("remove-domain");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        for who in ["a@gone.example", "b@gone.example", "c@kept.example"] {
            store.create_user(&jid(who), record(1)).await.unwrap();
        }
        store
            .modify_roster(&jid("a@gone.example"), &mut |r: &mut Roster| r.version += 1)
            .await
            .unwrap();
        for who in [
            "a@gone.example",
            "a@gone.example",
            "b@gone.example",
            "c@kept.example",
        ] {
            store.store_offline(&jid(who), msg(who), 10).await.unwrap();
        }
        let removal = store.remove_domain("gone.example").await.unwrap();
        assert_eq!(
            removal,
            DomainRemoval {
                accounts: 2,
                rosters: 1,
                offline: 3,
                items: 0,
                archived: 0,
            }
        );
        assert_eq!(
            store.count_offline(&jid("a@gone.example")).await.unwrap(),
            0
        );
        assert_eq!(
            store.count_offline(&jid("c@kept.example")).await.unwrap(),
            1
        );
        assert_eq!(store.count_users("gone.example").await.unwrap(), 0);
        assert!(store.list_users("gone.example").await.unwrap().is_empty());
        assert_eq!(store.count_users("kept.example").await.unwrap(), 1);
        assert_eq!(
            store.remove_domain("gone.example").await.unwrap(),
            DomainRemoval::default()
        );
    }

    #[tokio::test]
    async fn remove_user_updates_list_and_count() {
        let dir = TempDir::new("remove");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        let bob = jid("bob@a.example");
        store.create_user(&alice, record(1)).await.unwrap();
        store.create_user(&bob, record(2)).await.unwrap();

        assert!(store.remove_user(&alice).await.unwrap());
        assert!(!store.remove_user(&alice).await.unwrap());
        assert_eq!(store.get_user(&alice).await.unwrap(), None);
        assert_eq!(
            store.list_users("a.example").await.unwrap(),
            vec![bob.clone()]
        );
        assert_eq!(store.count_users("a.example").await.unwrap(), 1);

        assert!(store.remove_user(&bob).await.unwrap());
        assert_eq!(store.count_users("a.example").await.unwrap(), 0);
        // The account can be created again after removal.
        store.create_user(&alice, record(3)).await.unwrap();
        assert_eq!(store.get_user(&alice).await.unwrap(), Some(record(3)));
    }

    #[tokio::test]
    async fn credentials_change_replaces_record() {
        let dir = TempDir::new("credentials");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        let err = store
            .set_user_credentials(&alice, record(5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UserNotFound { .. }), "{err:?}");
        assert_eq!(store.get_user(&alice).await.unwrap(), None);

        store.create_user(&alice, record(1)).await.unwrap();
        store.set_user_credentials(&alice, record(5)).await.unwrap();
        assert_eq!(store.get_user(&alice).await.unwrap(), Some(record(5)));
        assert_eq!(store.count_users("a.example").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn roster_modify_round_trip() {
        let dir = TempDir::new("roster");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        store.create_user(&alice, record(1)).await.unwrap();
        assert_eq!(store.get_roster(&alice).await.unwrap(), Roster::default());

        let stored = store
            .modify_roster(&alice, &mut |roster| {
                roster.version += 1;
                let contact = item("bob@b.example", Subscription::To);
                roster.items.insert(contact.jid.clone(), contact);
                roster.pending_in.insert(
                    "eve@c.example".to_owned(),
                    "<presence type='subscribe' from='eve@c.example'/>".to_owned(),
                );
            })
            .await
            .unwrap();
        assert_eq!(stored.version, 1);
        assert_eq!(store.get_roster(&alice).await.unwrap(), stored);

        let stored = store
            .modify_roster(&alice, &mut |roster| {
                roster.version += 1;
                roster.pending_in.clear();
                if let Some(contact) = roster.items.get_mut("bob@b.example") {
                    contact.subscription = Subscription::Both;
                    contact.ask = false;
                }
            })
            .await
            .unwrap();
        let read = store.get_roster(&alice).await.unwrap();
        assert_eq!(read, stored);
        assert_eq!(read.version, 2);
        assert!(read.pending_in.is_empty());
        let contact = &read.items["bob@b.example"];
        assert_eq!(contact.subscription, Subscription::Both);
        assert_eq!(
            contact.groups,
            vec!["Friends".to_owned(), "Work".to_owned()]
        );
        assert!(!contact.ask);
    }

    #[tokio::test]
    async fn roster_of_unknown_user_is_not_written() {
        let dir = TempDir::new("roster-unknown");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let ghost = jid("ghost@a.example");
        let mut called = false;
        let err = store
            .modify_roster(&ghost, &mut |roster| {
                called = true;
                roster.version = 9;
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UserNotFound { .. }), "{err:?}");
        assert!(!called);
        assert_eq!(store.get_roster(&ghost).await.unwrap(), Roster::default());
    }

    #[tokio::test]
    async fn data_persists_across_reopen() {
        let dir = TempDir::new("reopen");
        let alice = jid("alice@a.example");
        {
            let store = RedbStorage::open(&dir.db_path()).unwrap();
            store.create_user(&alice, record(1)).await.unwrap();
            store
                .modify_roster(&alice, &mut |roster| {
                    roster.version = 41;
                    let contact = item("bob@b.example", Subscription::From);
                    roster.items.insert(contact.jid.clone(), contact);
                })
                .await
                .unwrap();
        }
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        assert_eq!(store.get_user(&alice).await.unwrap(), Some(record(1)));
        assert_eq!(store.count_users("a.example").await.unwrap(), 1);
        let roster = store.get_roster(&alice).await.unwrap();
        assert_eq!(roster.version, 41);
        assert_eq!(
            roster.items["bob@b.example"].subscription,
            Subscription::From
        );
    }

    #[tokio::test]
    async fn remove_user_deletes_roster() {
        let dir = TempDir::new("remove-roster");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        store.create_user(&alice, record(1)).await.unwrap();
        store
            .modify_roster(&alice, &mut |roster| {
                roster.version = 3;
                let contact = item("bob@b.example", Subscription::Both);
                roster.items.insert(contact.jid.clone(), contact);
            })
            .await
            .unwrap();
        assert!(store.remove_user(&alice).await.unwrap());
        assert_eq!(store.get_roster(&alice).await.unwrap(), Roster::default());
        // A new account under the same name starts with an empty roster.
        store.create_user(&alice, record(2)).await.unwrap();
        assert_eq!(store.get_roster(&alice).await.unwrap(), Roster::default());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_roster_modifications_lose_no_update() {
        let dir = TempDir::new("concurrent");
        let store: Arc<dyn Storage> = Arc::new(RedbStorage::open(&dir.db_path()).unwrap());
        let alice = jid("alice@a.example");
        store.create_user(&alice, record(1)).await.unwrap();

        let mut tasks = Vec::new();
        for n in 0..50u32 {
            let store = Arc::clone(&store);
            let alice = alice.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .modify_roster(&alice, &mut |roster| {
                        roster.version += 1;
                        let contact = format!("c{n}@b.example");
                        roster
                            .items
                            .insert(contact.clone(), RosterItem::new(contact));
                    })
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let roster = store.get_roster(&alice).await.unwrap();
        assert_eq!(roster.version, 50);
        assert_eq!(roster.items.len(), 50);
    }

    #[test]
    fn writers_cannot_starve_a_roster_commit_of_blocking_threads() {
        // With two blocking threads, writers parked in `begin_write` on the pool would leave no
        // thread for the commit of a `modify_roster` holding the transaction.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = TempDir::new("starve");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        let outcome = runtime.block_on(async {
            store.create_user(&alice, record(1)).await.unwrap();
            let mut tasks = tokio::task::JoinSet::new();
            for n in 0..20u8 {
                let store = store.clone();
                let alice = alice.clone();
                tasks.spawn(async move {
                    store
                        .create_user(&jid(&format!("u{n}@a.example")), record(n))
                        .await
                        .unwrap();
                    store
                        .modify_roster(&alice, &mut |roster| roster.version += 1)
                        .await
                        .unwrap();
                });
            }
            let all = async {
                while let Some(done) = tasks.join_next().await {
                    done.unwrap();
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(30), all).await?;
            let version = store.get_roster(&alice).await.unwrap().version;
            let count = store.count_users("a.example").await.unwrap();
            Ok::<_, tokio::time::error::Elapsed>((version, count))
        });
        // On a deadlock the blocking threads never return: do not wait for them.
        runtime.shutdown_background();
        assert_eq!(outcome.expect("writers deadlocked"), (20, 21));
    }

    #[tokio::test]
    async fn corrupt_value_is_an_error() {
        let dir = TempDir::new("corrupt");
        let store = RedbStorage::open(&dir.db_path()).unwrap();
        let alice = jid("alice@a.example");
        store.create_user(&alice, record(1)).await.unwrap();
        let key = user_key(&alice);
        write(&store.db, |txn| {
            let mut users = txn.open_table(JID_USER).or_backend("open_table")?;
            users
                .insert(key.as_str(), [codec::FORMAT_V1, 0xff, 0xff].as_slice())
                .or_backend("insert")?;
            let mut rosters = txn.open_table(JID_ROSTER).or_backend("open_table")?;
            rosters
                .insert(key.as_str(), [77u8, 1, 2].as_slice())
                .or_backend("insert")?;
            Ok(())
        })
        .unwrap();
        let err = store.get_user(&alice).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Decode {
                    table: "jid_user",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = store.get_roster(&alice).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnknownFormat {
                    table: "jid_roster",
                    version: 77,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = store
            .modify_roster(&alice, &mut |roster| roster.version += 1)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnknownFormat { .. }), "{err:?}");
    }
}
