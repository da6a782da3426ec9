// openraft's storage traits fix the error type, `StorageError`, which is large; it is only
// built on failures, so boxing it would buy nothing on the paths that matter.
#![allow(clippy::result_large_err)]

//! Raft storage on redb: the log, the vote, the committed index and the current snapshot in one
//! database file per node (`grt.redb`), and the state machine in memory.
//!
//! Tables:
//! - `raft_log`: log index → encoded entry;
//! - `raft_meta`: `vote` | `committed` | `last_purged` → encoded value;
//! - `raft_snapshot`: `current` → encoded snapshot (metadata and the table's bytes).
//!
//! Every stored value is one format byte ([`FORMAT`]) then postcard.
//!
//! The state machine lives only in memory ([`SmData`], shared with the readers behind a
//! `RwLock`). Durability comes from the log and the snapshot: on open the table is restored from
//! the current snapshot, and openraft re-applies the log from there up to the saved committed
//! index. Snapshots are written to disk before openraft learns of them, so a log is never purged
//! past what a snapshot holds.
//!
//! redb is synchronous; writes run on tokio's blocking pool so that an fsync never stalls the
//! Raft core's thread. Each `append` is one write transaction, committed (and fsynced) before the
//! flush callback fires.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftLogReader, RaftSnapshotBuilder,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, oneshot};

use crate::grt::Change;

use crate::routing::RoutingTable;
use crate::types::{
    Batch, Entry, LogId, Response, Responses, Snapshot, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig, Vote,
};

/// The format byte in front of every stored value.
const FORMAT: u8 = 1;

const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");
const SNAPSHOT: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_snapshot");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_CURRENT: &str = "current";

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory could not be made.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// redb refused the file.
    #[error("cannot open the routing table's database {path}: {source}")]
    Database {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: Box<redb::Error>,
    },
    /// The log writer thread could not be started.
    #[error("cannot start the routing table's log writer: {0}")]
    Thread(std::io::Error),
    /// The stored snapshot cannot be read.
    #[error("the routing table's snapshot in {path} is unreadable: {reason}")]
    Snapshot {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    // Serialising plain data into a Vec cannot fail.
    out.extend(postcard::to_allocvec(value).expect("plain data always encodes"));
    out
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((other, _)) => Err(format!("unknown stored format {other}")),
        None => Err("empty stored value".to_owned()),
    }
}

fn io_error(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl ToString) -> StorageError {
    openraft::StorageIOError::new(subject, verb, AnyError::error(e)).into()
}

/// The applied state: the routing table and what openraft needs to know about it.
#[derive(Debug, Default)]
pub(crate) struct SmData {
    pub(crate) table: RoutingTable,
    pub(crate) last_applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
}

/// The applied state shared by the state machine (writer) and every reader, and the channel
/// that tells subscribers what changed.
#[derive(Debug)]
pub(crate) struct Shared {
    data: RwLock<SmData>,
    events: broadcast::Sender<Change>,
}

/// Changes buffered per subscriber before it lags.
const EVENT_BUFFER: usize = 1024;

impl Shared {
    fn new(data: SmData) -> Self {
        Self {
            data: RwLock::new(data),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, SmData> {
        self.data.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmData> {
        self.data.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.events.subscribe()
    }
}

/// A snapshot as stored: its metadata and the table's bytes.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Runs blocking storage work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?
}

/// What [`open`] gives: the log store, the state machine restored from the current snapshot,
/// the shared applied state for readers, and a weak handle on the database (it is closed when
/// the last strong one, held by Raft's tasks, goes).
pub(crate) type Opened = (LogStore, StateMachine, Arc<Shared>, Weak<Database>);

/// Opens (or creates) the store at `path`.
pub(crate) fn open(path: &Path) -> Result<Opened, OpenError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| OpenError::CreateDir {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let db_error = |e: redb::Error| OpenError::Database {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    // A store closed a moment ago in this process (a restart in tests, or after a shutdown)
    // may still be releasing its lock on another thread: wait for it, briefly.
    let mut attempts = 0;
    let db = loop {
        match Database::create(path) {
            Ok(db) => break db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if attempts < 300 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(db_error(e.into())),
        }
    };
    let txn = db.begin_write().map_err(|e| db_error(e.into()))?;
    txn.open_table(LOG).map_err(|e| db_error(e.into()))?;
    txn.open_table(META).map_err(|e| db_error(e.into()))?;
    txn.open_table(SNAPSHOT).map_err(|e| db_error(e.into()))?;
    txn.commit().map_err(|e| db_error(e.into()))?;
    let db = Arc::new(db);

    let mut data = SmData::default();
    let stored = read_snapshot(&db).map_err(|e| OpenError::Snapshot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if let Some(stored) = stored {
        data.table =
            RoutingTable::from_snapshot(&stored.data).map_err(|e| OpenError::Snapshot {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        data.last_applied = stored.meta.last_log_id;
        data.membership = stored.meta.last_membership;
    }
    let shared = Arc::new(Shared::new(data));
    let weak = Arc::downgrade(&db);
    let log = LogStore::new(db.clone()).map_err(OpenError::Thread)?;
    let sm = StateMachine {
        db,
        shared: shared.clone(),
    };
    Ok((log, sm, shared, weak))
}

fn read_snapshot(db: &Database) -> Result<Option<StoredSnapshot>, StorageError> {
    let read =
        |e: &dyn ToString| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e.to_string());
    let txn = db.begin_read().map_err(|e| read(&e))?;
    let table = txn.open_table(SNAPSHOT).map_err(|e| read(&e))?;
    let Some(value) = table.get(KEY_CURRENT).map_err(|e| read(&e))? else {
        return Ok(None);
    };
    decode(value.value()).map(Some).map_err(|e| read(&e))
}

fn write_snapshot(db: &Database, stored: &StoredSnapshot) -> Result<(), StorageError> {
    let write = |e: &dyn ToString| {
        io_error(
            ErrorSubject::Snapshot(Some(stored.meta.signature())),
            ErrorVerb::Write,
            e.to_string(),
        )
    };
    let bytes = encode(stored);
    let txn = db.begin_write().map_err(|e| write(&e))?;
    {
        let mut table = txn.open_table(SNAPSHOT).map_err(|e| write(&e))?;
        table
            .insert(KEY_CURRENT, bytes.as_slice())
            .map_err(|e| write(&e))?;
    }
    txn.commit().map_err(|e| write(&e))
}

/// The log, the vote and the committed index.
///
/// Writes go through one writer thread ([`writer`]) in the order they were made; the thread
/// takes everything queued since its last commit into one redb transaction and one fsync, then
/// reports each append as flushed. So concurrent client writes, which openraft hands over one
/// append at a time, share fsyncs. Appended entries are readable at once: until the writer has
/// committed them they are served from `pending`.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
    pending: Arc<Mutex<BTreeMap<u64, Entry>>>,
    ops: std::sync::mpsc::Sender<Op>,
}

/// One write for the writer thread.
enum Op {
    Append {
        entries: Vec<(LogId, Vec<u8>)>,
        callback: LogFlushed<TypeConfig>,
    },
    /// The committed index (a replay hint: nobody waits for it).
    Committed(Vec<u8>),
    Vote(Vec<u8>, oneshot::Sender<Result<(), String>>),
    /// Deletes the entries from this index on.
    Truncate(u64, oneshot::Sender<Result<(), String>>),
    /// Deletes the entries up to this index and records the last purged id.
    Purge(u64, Vec<u8>, oneshot::Sender<Result<(), String>>),
}

/// Most operations one transaction takes.
const MAX_BATCH: usize = 4_096;

/// The writer thread: runs until every [`LogStore`] clone is gone.
fn writer(
    db: Arc<Database>,
    pending: Arc<Mutex<BTreeMap<u64, Entry>>>,
    ops: std::sync::mpsc::Receiver<Op>,
) {
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = write_batch(&db, &batch).map_err(|e| e.to_string());
        for op in batch {
            match op {
                Op::Append { entries, callback } => {
                    if result.is_ok() {
                        let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
                        for (id, _) in &entries {
                            if pending.get(&id.index).is_some_and(|e| e.log_id == *id) {
                                pending.remove(&id.index);
                            }
                        }
                    }
                    callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                Op::Committed(_) => {}
                Op::Vote(_, done) | Op::Truncate(_, done) | Op::Purge(_, _, done) => {
                    let _ = done.send(result.clone());
                }
            }
        }
    }
}

fn write_batch(db: &Database, batch: &[Op]) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    let hint_only = batch.iter().all(|op| matches!(op, Op::Committed(_)));
    if hint_only {
        txn.set_durability(Durability::None)?;
    }
    {
        let mut log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        for op in batch {
            match op {
                Op::Append { entries, .. } => {
                    for (id, bytes) in entries {
                        log.insert(id.index, bytes.as_slice())?;
                    }
                }
                Op::Committed(bytes) => {
                    meta.insert(KEY_COMMITTED, bytes.as_slice())?;
                }
                Op::Vote(bytes, _) => {
                    meta.insert(KEY_VOTE, bytes.as_slice())?;
                }
                Op::Truncate(from, _) => {
                    log.retain_in::<u64, _>(*from.., |_, _| false)?;
                }
                Op::Purge(upto, bytes, _) => {
                    meta.insert(KEY_LAST_PURGED, bytes.as_slice())?;
                    log.retain_in::<u64, _>(..=*upto, |_, _| false)?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    fn new(db: Arc<Database>) -> Result<Self, std::io::Error> {
        let pending = Arc::new(Mutex::new(BTreeMap::new()));
        let (ops, rx) = std::sync::mpsc::channel();
        let thread_db = db.clone();
        let thread_pending = pending.clone();
        std::thread::Builder::new()
            .name("grt-log-writer".to_owned())
            .spawn(move || writer(thread_db, thread_pending, rx))?;
        Ok(Self { db, pending, ops })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `op` (which carries `done`) and waits until the writer has committed it.
    async fn submit(
        &self,
        op: Op,
        done: oneshot::Receiver<Result<(), String>>,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
    ) -> Result<(), StorageError> {
        self.ops
            .send(op)
            .map_err(|_| io_error(subject.clone(), verb, "the log writer has stopped"))?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_error(subject, verb, e)),
            Err(_) => Err(io_error(subject, verb, "the log writer has stopped")),
        }
    }

    fn get_meta<T: DeserializeOwned>(
        &self,
        key: &str,
        subject: ErrorSubject<u64>,
    ) -> Result<Option<T>, StorageError> {
        let read = |e: &dyn ToString| io_error(subject.clone(), ErrorVerb::Read, e.to_string());
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(META).map_err(|e| read(&e))?;
        let Some(value) = table.get(key).map_err(|e| read(&e))? else {
            return Ok(None);
        };
        decode(value.value()).map(Some).map_err(|e| read(&e))
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        if let Some((_, entry)) = self.pending().last_key_value() {
            return Ok(Some(entry.log_id));
        }
        let read = |e: &dyn ToString| io_error(ErrorSubject::Logs, ErrorVerb::Read, e.to_string());
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(LOG).map_err(|e| read(&e))?;
        let Some((_, value)) = table.last().map_err(|e| read(&e))? else {
            return Ok(None);
        };
        let entry: Entry = decode(value.value()).map_err(|e| read(&e))?;
        Ok(Some(entry.log_id))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let read = |e: &dyn ToString| io_error(ErrorSubject::Logs, ErrorVerb::Read, e.to_string());
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        // Pending first, then the file: an entry the writer commits in between is then found in
        // one or the other (never in neither).
        let pending: Vec<Entry> = self
            .pending()
            .range((start, end))
            .map(|(_, e)| e.clone())
            .collect();
        let mut entries: BTreeMap<u64, Entry> = BTreeMap::new();
        {
            let txn = self.db.begin_read().map_err(|e| read(&e))?;
            let table = txn.open_table(LOG).map_err(|e| read(&e))?;
            for item in table.range::<u64>((start, end)).map_err(|e| read(&e))? {
                let (key, value) = item.map_err(|e| read(&e))?;
                entries.insert(key.value(), decode(value.value()).map_err(|e| read(&e))?);
            }
        }
        for entry in pending {
            entries.insert(entry.log_id.index, entry);
        }
        Ok(entries.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> =
            self.get_meta(KEY_LAST_PURGED, ErrorSubject::Logs)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.submit(
            Op::Vote(encode(vote), tx),
            rx,
            ErrorSubject::Vote,
            ErrorVerb::Write,
        )
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    /// The committed index is a hint for replay after a restart: queued without waiting and
    /// written with the next batch (without an fsync of its own when alone), since a stale
    /// value only means replaying less at start and learning the rest from the leader.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.ops
            .send(Op::Committed(encode(&committed)))
            .map_err(|_| {
                io_error(
                    ErrorSubject::Store,
                    ErrorVerb::Write,
                    "the log writer has stopped",
                )
            })
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .get_meta::<Option<LogId>>(KEY_COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        {
            let mut pending = self.pending();
            for entry in entries {
                encoded.push((entry.log_id, encode(&entry)));
                pending.insert(entry.log_id.index, entry);
            }
        }
        self.ops
            .send(Op::Append {
                entries: encoded,
                callback,
            })
            .map_err(|_| {
                io_error(
                    ErrorSubject::Logs,
                    ErrorVerb::Write,
                    "the log writer has stopped",
                )
            })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.pending().retain(|index, _| *index < log_id.index);
        let (tx, rx) = oneshot::channel();
        self.submit(
            Op::Truncate(log_id.index, tx),
            rx,
            ErrorSubject::Logs,
            ErrorVerb::Delete,
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.pending().retain(|index, _| *index > log_id.index);
        let (tx, rx) = oneshot::channel();
        self.submit(
            Op::Purge(log_id.index, encode(&log_id), tx),
            rx,
            ErrorSubject::Logs,
            ErrorVerb::Delete,
        )
        .await
    }
}

/// The state machine: applies entries to the shared table; builds and installs snapshots.
pub(crate) struct StateMachine {
    db: Arc<Database>,
    shared: Arc<Shared>,
}

/// Builds a snapshot of the shared table; created by openraft when it decides to compact.
pub(crate) struct SnapshotBuilder {
    db: Arc<Database>,
    shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (data, last_log_id, last_membership) = {
            let state = self.shared.read();
            (
                state.table.to_snapshot(),
                state.last_applied,
                state.membership.clone(),
            )
        };
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{stamp}", id.leader_id.term, id.index),
            None => format!("0-0-{stamp}"),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let stored = StoredSnapshot { meta, data };
        let db = self.db.clone();
        let stored = blocking(move || write_snapshot(&db, &stored).map(|()| stored)).await?;
        tracing::debug!(
            snapshot = %stored.meta.snapshot_id,
            bytes = stored.data.len(),
            "routing table snapshot built"
        );
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.shared.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Responses>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut changes = Vec::new();
        let mut responses = Vec::new();
        let mut state = self.shared.write();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Responses::default(),
                EntryPayload::Normal(Batch(commands)) => {
                    let index = entry.log_id.index;
                    let results = state.table.apply_batch(index, &commands);
                    let mut out = Vec::with_capacity(results.len());
                    for (command, result) in commands.into_iter().zip(results) {
                        out.push(match result {
                            Ok(applied) => {
                                if applied.changed {
                                    changes.push(Change {
                                        index,
                                        command: Some(command),
                                    });
                                }
                                Response::Applied(applied)
                            }
                            Err(refused) => Response::Refused(refused),
                        });
                    }
                    Responses(out)
                }
                EntryPayload::Membership(membership) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Responses::default()
                }
            };
            responses.push(response);
        }
        drop(state);
        for change in changes {
            // No subscriber is not an error.
            let _ = self.shared.events.send(change);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let table = RoutingTable::from_snapshot(&data).map_err(|e| {
            io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e,
            )
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let db = self.db.clone();
        blocking(move || write_snapshot(&db, &stored)).await?;
        let mut state = self.shared.write();
        state.table = table;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        drop(state);
        let _ = self.shared.events.send(Change {
            index: meta.last_log_id.map_or(0, |id| id.index),
            command: None,
        });
        tracing::info!(snapshot = %meta.snapshot_id, "routing table installed from a snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let db = self.db.clone();
        let stored = blocking(move || read_snapshot(&db)).await?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    /// Builds a fresh store in its own temporary directory for each test of the suite.
    struct Fresh;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempdir::Dir> for Fresh {
        async fn build(&self) -> Result<(tempdir::Dir, LogStore, StateMachine), StorageError> {
            let dir = tempdir::Dir::new();
            let (log, sm, _, _) = open(&dir.path().join("grt.redb"))
                .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's storage conformance suite, on redb.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Fresh).expect("the redb store passes openraft's storage suite");
    }

    mod tempdir {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicU64, Ordering};

        /// A directory removed on drop.
        pub(crate) struct Dir(PathBuf);

        impl Dir {
            pub(crate) fn new() -> Self {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let path = std::env::temp_dir().join(format!(
                    "tern-raft-store-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).expect("temporary directory");
                Self(path)
            }

            pub(crate) fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
