//! [`PostgresStorage`]: the PostgreSQL backend of [`Storage`](super::Storage), for the nodes of
//! a datacenter's local cluster, which all share one database.
//!
//! # Schema
//!
//! The tables are those of the redb backend (see the module docs of `storage`), created by the
//! migrations in `node/migrations/` (embedded in the binary, applied by
//! [`PostgresStorage::migrate`], which `tern db migrate` and `tern serve` call). Owners are two
//! columns, `(domain, localpart)`, the localpart `''` for a bare domain; values are the storage
//! codec's bytes, exactly what redb stores.
//!
//! # Same semantics as redb
//!
//! - Orders: text orders (accounts by localpart, items by key, rooms by JID, owners by domain
//!   then localpart) are made here, with Rust's byte-wise `str` order, so that neither the
//!   database's collation nor its dialect can change them; offline messages and the archive
//!   are ordered by their integer sequence or id in SQL.
//! - Atomicity: every method that changes more than one row does it in one transaction.
//!   Changes that must not race with an account's removal (`modify_roster`, `put_item`) lock
//!   the account's row first (`SELECT ... FOR UPDATE`); offline stores and takes of one owner
//!   are serialized by its `offline_seq` row, so the limit holds under concurrency.
//! - Conflicts: a transaction the server aborts because of a concurrent one (SQLSTATE 40001
//!   serialization failure, 40P01 deadlock; CockroachDB reports every retryable conflict as
//!   40001) is run again, at most [`MAX_ATTEMPTS`] times. `modify_roster` may therefore call
//!   its closure more than once, each time on the roster as then stored.
//! - Archive: appends go to a queue that one task writes in batches (one multi-row `INSERT`
//!   per batch), so an append never waits for the database; every operation that reads or
//!   deletes archived messages first waits (at most [`SETTLE_MAX`]) until the appends made
//!   before it are written. Ids are `BIGINT`: an id above `i64::MAX` is refused with
//!   [`Error::OutOfRange`] (ids are microseconds since 1970, which reach that in 292 000
//!   years); query bounds above it are clamped.
//!
//! # CockroachDB
//!
//! The SQL avoids what CockroachDB lacks: no column collations, advisory locks (the migrator
//! takes one on PostgreSQL only), `LOCK TABLE`, `FOR SHARE`, sequences, `SERIAL`, triggers or
//! stored functions, `UNNEST` of several arrays; multi-row inserts are plain `VALUES` lists.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use jid::BareJid;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection as _, Postgres, QueryBuilder, SqlSafeStr};
use tokio::sync::{mpsc, watch};

use super::Storage;
use super::codec;
use super::error::{Error, Result};
use super::types::{
    AccountData, AccountItem, ArchivePage, ArchiveQuery, ArchivedMessage, DomainRemoval,
    OfflineMessage, OfflineStored, Roster, UserRecord,
};

/// Table names as they appear in errors (the same as redb's).
const JID_USER_NAME: &str = "jid_user";
const JID_ROSTER_NAME: &str = "jid_roster";
const OFFLINE_MSG_NAME: &str = "offline_msg";
const ACCOUNT_ITEM_NAME: &str = "account_item";
const ARCHIVE_NAME: &str = "archive";

/// Most runs of one operation when the server aborts it because of a concurrent one.
const MAX_ATTEMPTS: u32 = 5;

/// Longest wait of a read or delete of the archive for the appends made before it.
const SETTLE_MAX: Duration = Duration::from_secs(2);

/// Archive appends waiting to be written. When the queue is full an append waits for room
/// (back-pressure); nothing is dropped.
const ARCHIVE_QUEUE: usize = 65_536;

/// Most appends in one archive batch: five parameters each, within PostgreSQL's 65 535
/// parameters per statement.
const ARCHIVE_BATCH_MAX: usize = 4096;

/// Rows per multi-row `INSERT` when importing an account.
const IMPORT_CHUNK: usize = 1000;

/// Tries of one archive batch before it is given up (and logged) when the database keeps
/// failing with retryable errors.
const ARCHIVE_WRITE_ATTEMPTS: u32 = 8;

/// Reruns `$attempt` (an expression ending in `.await` that gives a [`Result`]) while it fails
/// with a transaction conflict, at most [`MAX_ATTEMPTS`] times in all, with a short random
/// pause between runs.
macro_rules! retrying {
    ($attempt:expr) => {{
        let mut tries = 1u32;
        loop {
            match $attempt {
                Err(error) if tries < MAX_ATTEMPTS && is_conflict(&error) => {
                    tracing::debug!(%error, tries, "postgres transaction conflict, running it again");
                    tokio::time::sleep(conflict_pause(tries)).await;
                    tries += 1;
                }
                outcome => break outcome,
            }
        }
    }};
}

/// Whether `error` is a transaction the server aborted because of a concurrent one.
fn is_conflict(error: &Error) -> bool {
    match error {
        Error::Postgres {
            source: sqlx::Error::Database(db),
            ..
        } => db
            .code()
            .is_some_and(|code| matches!(code.as_ref(), "40001" | "40P01")),
        _ => false,
    }
}

/// The pause before run `tries + 1` of a conflicting transaction: growing, with jitter so the
/// conflicting transactions do not meet again.
fn conflict_pause(tries: u32) -> Duration {
    Duration::from_millis(u64::from(tries) * 5 + rand::random_range(0..10u64))
}

/// Maps a sqlx error to [`Error::Postgres`] naming the operation.
trait OrPostgres<T> {
    fn or_pg(self, op: &'static str) -> Result<T>;
}

impl<T> OrPostgres<T> for std::result::Result<T, sqlx::Error> {
    fn or_pg(self, op: &'static str) -> Result<T> {
        self.map_err(|source| Error::Postgres { op, source })
    }
}

/// The key columns of an owner: `(domain, localpart)`, the localpart `""` for a bare domain.
fn owner(user: &BareJid) -> (&str, &str) {
    (
        user.domain().as_str(),
        user.node().map_or("", |node| node.as_str()),
    )
}

/// The bare JID stored as `(domain, localpart)` in `table`.
fn jid_from_columns(table: &'static str, domain: &str, localpart: &str) -> Result<BareJid> {
    let parsed = if localpart.is_empty() {
        BareJid::new(domain)
    } else {
        BareJid::new(&format!("{localpart}@{domain}"))
    };
    parsed.map_err(|_| Error::BadKey {
        table,
        key: format!("{}@{}", localpart.escape_debug(), domain.escape_debug()),
    })
}

/// A stored archive id, or [`Error::OutOfRange`].
fn archive_id(id: u64) -> Result<i64> {
    i64::try_from(id).map_err(|_| Error::OutOfRange {
        what: "archive id",
        value: id,
    })
}

/// A stored id or sequence number read back (never negative: only [`archive_id`] and
/// sequence numbers from 0 are written).
fn stored_u64(table: &'static str, name: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::BadKey {
        table,
        key: format!("{name}#{value}"),
    })
}

/// A count from the database (never negative).
fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A row count reported by the server.
fn affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
    result.rows_affected()
}

/// One archived message on its way to the database.
#[derive(Debug, Clone)]
struct ArchiveRow {
    domain: String,
    localpart: String,
    id: i64,
    with: String,
    message: Vec<u8>,
}

/// `rows` without the earlier of two rows for the same (owner, id): the later one wins, as a
/// second insert under the same key does in redb. (One `INSERT ... ON CONFLICT DO UPDATE`
/// must not touch a row twice.)
fn last_per_key<'r>(rows: impl DoubleEndedIterator<Item = &'r ArchiveRow>) -> Vec<&'r ArchiveRow> {
    let mut seen = HashSet::new();
    let mut kept: Vec<&ArchiveRow> = rows
        .rev()
        .filter(|row| seen.insert((row.domain.as_str(), row.localpart.as_str(), row.id)))
        .collect();
    kept.reverse();
    kept
}

/// Writes `rows` (distinct keys) to the archive, replacing rows with the same key, in
/// statements of at most `chunk` rows.
async fn insert_archive(conn: &mut PgConnection, rows: &[&ArchiveRow], chunk: usize) -> Result<()> {
    for part in rows.chunks(chunk.max(1)) {
        let mut query: QueryBuilder<Postgres> =
            QueryBuilder::new("INSERT INTO archive (domain, localpart, id, with_jid, message) ");
        query.push_values(part, |mut values, row| {
            values
                .push_bind(row.domain.as_str())
                .push_bind(row.localpart.as_str())
                .push_bind(row.id)
                .push_bind(row.with.as_str())
                .push_bind(row.message.as_slice());
        });
        query.push(
            " ON CONFLICT (domain, localpart, id) \
             DO UPDATE SET with_jid = excluded.with_jid, message = excluded.message",
        );
        query.build().execute(&mut *conn).await.or_pg("insert")?;
    }
    Ok(())
}

/// The archive's writer: a queue of appends and one task writing them in batches.
/// `appended` counts appends queued, the task publishes in `committed` how many it has
/// written (or given up), so a reader can wait for the appends made before it.
struct ArchiveWriter {
    queue: mpsc::Sender<ArchiveRow>,
    appended: AtomicU64,
    committed: watch::Receiver<u64>,
}

impl ArchiveWriter {
    /// Starts the writer task; it ends once the writer is dropped and its queue is written.
    fn start(pool: PgPool) -> Arc<Self> {
        let (queue, rows) = mpsc::channel(ARCHIVE_QUEUE);
        let (written, committed) = watch::channel(0u64);
        tokio::spawn(write_archive(pool, rows, written));
        Arc::new(Self {
            queue,
            appended: AtomicU64::new(0),
            committed,
        })
    }

    async fn append(&self, row: ArchiveRow) -> Result<()> {
        self.appended.fetch_add(1, Ordering::AcqRel);
        if self.queue.send(row).await.is_err() {
            // The task is gone: this append will never be counted as written.
            self.appended.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Waits (at most [`SETTLE_MAX`]) until every append made before the call is written.
    async fn settle(&self) {
        let target = self.appended.load(Ordering::Acquire);
        let mut committed = self.committed.clone();
        let reached = tokio::time::timeout(SETTLE_MAX, async move {
            committed
                .wait_for(|&written| written >= target)
                .await
                .is_ok()
        })
        .await;
        if !matches!(reached, Ok(true)) {
            tracing::warn!("archive appends not yet written; reading without them");
        }
    }
}

/// The writer task: takes whatever is queued (up to [`ARCHIVE_BATCH_MAX`]) and writes it in one
/// statement, retrying while the database fails in a way that may pass.
async fn write_archive(
    pool: PgPool,
    mut rows: mpsc::Receiver<ArchiveRow>,
    written: watch::Sender<u64>,
) {
    let mut batch = Vec::with_capacity(ARCHIVE_BATCH_MAX);
    while rows.recv_many(&mut batch, ARCHIVE_BATCH_MAX).await > 0 {
        let n = batch.len() as u64;
        let mut tries = 1u32;
        loop {
            let outcome = async {
                let mut conn = pool.acquire().await.or_pg("acquire")?;
                insert_archive(&mut conn, &last_per_key(batch.iter()), ARCHIVE_BATCH_MAX).await
            }
            .await;
            match outcome {
                Ok(()) => break,
                Err(error) if tries < ARCHIVE_WRITE_ATTEMPTS && error.is_retryable() => {
                    tracing::warn!(%error, messages = n, tries, "archive batch not written yet, retrying");
                    tokio::time::sleep(Duration::from_millis((50u64 << tries).min(2000))).await;
                    tries += 1;
                }
                Err(error) => {
                    tracing::error!(%error, messages = n, "archive batch not written");
                    break;
                }
            }
        }
        batch.clear();
        written.send_modify(|count| *count += n);
    }
}

/// The schema migrations (`node/migrations/NNNN_name.sql`), embedded: (version, description,
/// SQL). sqlx's `migrate!` macro would read the directory, but it needs sqlx's `macros`
/// feature, which this build leaves out; a new migration is added here.
const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "init", include_str!("../../migrations/0001_init.sql"))];

/// The migrator of [`MIGRATIONS`]; its checksums are those `sqlx migrate` would record.
fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// What [`PostgresStorage::migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// Migrations applied by this call (0: the schema was up to date).
    pub applied: usize,
    /// The schema version now (the highest migration applied).
    pub version: i64,
}

/// The PostgreSQL storage backend: a connection pool and the archive's writer.
#[derive(Clone)]
pub struct PostgresStorage {
    pool: PgPool,
    archive: Arc<ArchiveWriter>,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage")
            .field("connections", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl PostgresStorage {
    /// Connects with the `[storage]` settings and applies the migrations not applied yet
    /// (what `tern serve` does).
    pub async fn open(settings: &tern_config::Postgres) -> Result<Self> {
        let storage = Self::connect(settings).await?;
        let migrated = storage.migrate().await?;
        tracing::info!(
            url = %settings.redacted_url(),
            applied = migrated.applied,
            version = migrated.version,
            "postgres storage opened"
        );
        Ok(storage)
    }

    /// Connects with the `[storage]` settings; applies no migration.
    pub async fn connect(settings: &tern_config::Postgres) -> Result<Self> {
        let options = PgConnectOptions::from_str(&settings.url).or_pg("parse the url")?;
        Self::connect_with(options, settings.pool_size, settings.connect_timeout).await
    }

    /// Connects with explicit options: a pool of at most `pool_size` connections, each
    /// opened (or waited for) within `connect_timeout`. One connection is opened (and closed)
    /// now, so an unreachable server, a missing database or refused credentials fail here,
    /// with the server's reason.
    pub async fn connect_with(
        options: PgConnectOptions,
        pool_size: u32,
        connect_timeout: Duration,
    ) -> Result<Self> {
        let options = options.application_name("tern");
        // One connection of our own first: a pool that cannot connect only says that it timed
        // out, this says why (refused, no such database, authentication failed, ...).
        let first = tokio::time::timeout(connect_timeout, PgConnection::connect_with(&options))
            .await
            .map_err(|_| {
                sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no connection within storage.connect_timeout",
                ))
            })
            .and_then(|connected| connected)
            .or_pg("connect")?;
        first.close().await.or_pg("connect")?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(connect_timeout)
            .connect_lazy_with(options);
        Ok(Self {
            archive: ArchiveWriter::start(pool.clone()),
            pool,
        })
    }

    /// Applies the embedded migrations not applied yet, each in its own transaction. On
    /// PostgreSQL concurrent callers (nodes starting together) wait for each other on an
    /// advisory lock; CockroachDB has none, so there the migrator runs without it and
    /// concurrent first starts may fail (run `tern db migrate` once before starting them).
    pub async fn migrate(&self) -> Result<Migrated> {
        let before = self.applied_migrations().await?;
        let version: String = sqlx::query_scalar("SELECT version()")
            .fetch_one(&self.pool)
            .await
            .or_pg("version")?;
        let mut migrator = migrator();
        if version.contains("CockroachDB") {
            migrator.set_locking(false);
        }
        migrator
            .run(&self.pool)
            .await
            .map_err(|source| Error::Migrate { source })?;
        let after = self.applied_migrations().await?;
        Ok(Migrated {
            applied: after.len().saturating_sub(before.len()),
            version: after.last().copied().unwrap_or(0),
        })
    }

    /// The versions of the migrations applied so far, in order (none before the first run).
    async fn applied_migrations(&self) -> Result<Vec<i64>> {
        let exists: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
        )
        .fetch_one(&self.pool)
        .await
        .or_pg("list migrations")?;
        if exists == 0 {
            return Ok(Vec::new());
        }
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .or_pg("list migrations")
    }

    /// The versions of the embedded migrations, in order.
    pub fn known_migrations() -> Vec<i64> {
        MIGRATIONS.iter().map(|&(version, _, _)| version).collect()
    }

    /// The connection pool (for tests that look at the tables directly).
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        self.pool.begin().await.or_pg("begin")
    }

    async fn try_remove_user(&self, user: &BareJid) -> Result<bool> {
        let (domain, localpart) = owner(user);
        let mut tx = self.begin().await?;
        let removed = sqlx::query("DELETE FROM jid_user WHERE domain = $1 AND localpart = $2")
            .bind(domain)
            .bind(localpart)
            .execute(&mut *tx)
            .await
            .or_pg("remove_user")?;
        if affected(&removed) == 0 {
            return Ok(false);
        }
        for statement in [
            "DELETE FROM jid_roster WHERE domain = $1 AND localpart = $2",
            "DELETE FROM offline_msg WHERE domain = $1 AND localpart = $2",
            "DELETE FROM offline_seq WHERE domain = $1 AND localpart = $2",
            "DELETE FROM account_item WHERE domain = $1 AND localpart = $2",
            "DELETE FROM archive WHERE domain = $1 AND localpart = $2",
        ] {
            sqlx::query(statement)
                .bind(domain)
                .bind(localpart)
                .execute(&mut *tx)
                .await
                .or_pg("remove_user")?;
        }
        tx.commit().await.or_pg("commit")?;
        Ok(true)
    }

    async fn try_remove_domain(&self, domain: &str) -> Result<DomainRemoval> {
        let mut tx = self.begin().await?;
        let mut removed = [0u64; 6];
        for (statement, removed) in [
            "DELETE FROM jid_user WHERE domain = $1",
            "DELETE FROM jid_roster WHERE domain = $1",
            "DELETE FROM offline_msg WHERE domain = $1",
            "DELETE FROM account_item WHERE domain = $1",
            "DELETE FROM archive WHERE domain = $1",
            "DELETE FROM offline_seq WHERE domain = $1",
        ]
        .into_iter()
        .zip(&mut removed)
        {
            let done = sqlx::query(statement)
                .bind(domain)
                .execute(&mut *tx)
                .await
                .or_pg("remove_domain")?;
            *removed = affected(&done);
        }
        tx.commit().await.or_pg("commit")?;
        let [accounts, rosters, offline, items, archived, _] = removed;
        Ok(DomainRemoval {
            accounts,
            rosters,
            offline,
            items,
            archived,
        })
    }

    async fn try_modify_roster(
        &self,
        user: &BareJid,
        f: &mut (dyn for<'r> FnMut(&'r mut Roster) + Send),
    ) -> Result<Roster> {
        let (domain, localpart) = owner(user);
        let mut tx = self.begin().await?;
        lock_account(&mut tx, user).await?;
        let stored: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT roster FROM jid_roster WHERE domain = $1 AND localpart = $2",
        )
        .bind(domain)
        .bind(localpart)
        .fetch_optional(&mut *tx)
        .await
        .or_pg("get_roster")?;
        let mut roster = match stored {
            Some(bytes) => codec::decode(JID_ROSTER_NAME, &user.to_string(), &bytes)?,
            None => Roster::default(),
        };
        f(&mut roster);
        let value = codec::encode(JID_ROSTER_NAME, &roster)?;
        sqlx::query(
            "INSERT INTO jid_roster (domain, localpart, roster) VALUES ($1, $2, $3) \
             ON CONFLICT (domain, localpart) DO UPDATE SET roster = excluded.roster",
        )
        .bind(domain)
        .bind(localpart)
        .bind(value)
        .execute(&mut *tx)
        .await
        .or_pg("modify_roster")?;
        tx.commit().await.or_pg("commit")?;
        Ok(roster)
    }

    async fn try_store_offline(
        &self,
        user: &BareJid,
        value: &[u8],
        limit: u64,
    ) -> Result<OfflineStored> {
        let (domain, localpart) = owner(user);
        let mut tx = self.begin().await?;
        // Takes (or creates) the owner's sequence row, locked until the end of the
        // transaction, and moves it on by one; a full store rolls that back.
        let next: i64 = sqlx::query_scalar(
            "INSERT INTO offline_seq (domain, localpart, next_seq) VALUES ($1, $2, 1) \
             ON CONFLICT (domain, localpart) DO UPDATE SET next_seq = offline_seq.next_seq + 1 \
             RETURNING next_seq",
        )
        .bind(domain)
        .bind(localpart)
        .fetch_one(&mut *tx)
        .await
        .or_pg("store_offline")?;
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM offline_msg WHERE domain = $1 AND localpart = $2",
        )
        .bind(domain)
        .bind(localpart)
        .fetch_one(&mut *tx)
        .await
        .or_pg("store_offline")?;
        let stored = count(stored);
        if stored >= limit {
            return Ok(OfflineStored::Full);
        }
        sqlx::query(
            "INSERT INTO offline_msg (domain, localpart, seq, message) VALUES ($1, $2, $3, $4)",
        )
        .bind(domain)
        .bind(localpart)
        .bind(next - 1)
        .bind(value)
        .execute(&mut *tx)
        .await
        .or_pg("store_offline")?;
        tx.commit().await.or_pg("commit")?;
        Ok(OfflineStored::Stored(stored + 1))
    }

    async fn try_take_offline(&self, user: &BareJid) -> Result<Vec<Bytes>> {
        let (domain, localpart) = owner(user);
        let mut tx = self.begin().await?;
        // Waits for a store of this owner in progress, so its message is taken or left whole.
        sqlx::query(
            "SELECT next_seq FROM offline_seq WHERE domain = $1 AND localpart = $2 FOR UPDATE",
        )
        .bind(domain)
        .bind(localpart)
        .fetch_optional(&mut *tx)
        .await
        .or_pg("take_offline")?;
        let mut rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "DELETE FROM offline_msg WHERE domain = $1 AND localpart = $2 RETURNING seq, message",
        )
        .bind(domain)
        .bind(localpart)
        .fetch_all(&mut *tx)
        .await
        .or_pg("take_offline")?;
        rows.sort_unstable_by_key(|(seq, _)| *seq);
        let name = user.to_string();
        let mut out = Vec::with_capacity(rows.len());
        for (seq, bytes) in rows {
            // A message that does not decode fails the take and, with the rollback, deletes
            // nothing.
            let message: OfflineMessage =
                codec::decode(OFFLINE_MSG_NAME, &format!("{name}#{seq}"), &bytes)?;
            out.push(Bytes::from(message.stanza));
        }
        tx.commit().await.or_pg("commit")?;
        Ok(out)
    }

    async fn try_put_item(
        &self,
        user: &BareJid,
        kind: &str,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<()> {
        let (domain, localpart) = owner(user);
        let mut tx = self.begin().await?;
        lock_account(&mut tx, user).await?;
        let statement = match value {
            Some(value) => sqlx::query(
                "INSERT INTO account_item (domain, localpart, kind, item_key, value) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (domain, localpart, kind, item_key) DO UPDATE SET value = excluded.value",
            )
            .bind(domain)
            .bind(localpart)
            .bind(kind)
            .bind(key)
            .bind(value),
            None => sqlx::query(
                "DELETE FROM account_item \
                 WHERE domain = $1 AND localpart = $2 AND kind = $3 AND item_key = $4",
            )
            .bind(domain)
            .bind(localpart)
            .bind(kind)
            .bind(key),
        };
        statement.execute(&mut *tx).await.or_pg("put_item")?;
        tx.commit().await.or_pg("commit")?;
        Ok(())
    }

    async fn try_import_user(&self, user: &BareJid, import: &Import) -> Result<()> {
        let (domain, localpart) = owner(user);
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO jid_user (domain, localpart, record) VALUES ($1, $2, $3) \
             ON CONFLICT (domain, localpart) DO UPDATE SET record = excluded.record",
        )
        .bind(domain)
        .bind(localpart)
        .bind(import.record.as_slice())
        .execute(&mut *tx)
        .await
        .or_pg("import_user")?;
        sqlx::query(
            "INSERT INTO jid_roster (domain, localpart, roster) VALUES ($1, $2, $3) \
             ON CONFLICT (domain, localpart) DO UPDATE SET roster = excluded.roster",
        )
        .bind(domain)
        .bind(localpart)
        .bind(import.roster.as_slice())
        .execute(&mut *tx)
        .await
        .or_pg("import_user")?;
        for statement in [
            "DELETE FROM offline_msg WHERE domain = $1 AND localpart = $2",
            "DELETE FROM account_item WHERE domain = $1 AND localpart = $2",
            "DELETE FROM archive WHERE domain = $1 AND localpart = $2",
        ] {
            sqlx::query(statement)
                .bind(domain)
                .bind(localpart)
                .execute(&mut *tx)
                .await
                .or_pg("import_user")?;
        }
        let offline: Vec<(i64, &[u8])> = (0i64..)
            .zip(import.offline.iter().map(Vec::as_slice))
            .collect();
        for part in offline.chunks(IMPORT_CHUNK) {
            let mut query: QueryBuilder<Postgres> =
                QueryBuilder::new("INSERT INTO offline_msg (domain, localpart, seq, message) ");
            query.push_values(part, |mut values, (seq, message)| {
                values
                    .push_bind(domain)
                    .push_bind(localpart)
                    .push_bind(*seq)
                    .push_bind(*message);
            });
            query.build().execute(&mut *tx).await.or_pg("import_user")?;
        }
        let next_seq = i64::try_from(offline.len()).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO offline_seq (domain, localpart, next_seq) VALUES ($1, $2, $3) \
             ON CONFLICT (domain, localpart) DO UPDATE SET next_seq = excluded.next_seq",
        )
        .bind(domain)
        .bind(localpart)
        .bind(next_seq)
        .execute(&mut *tx)
        .await
        .or_pg("import_user")?;
        for part in import.items.chunks(IMPORT_CHUNK) {
            let mut query: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO account_item (domain, localpart, kind, item_key, value) ",
            );
            query.push_values(part, |mut values, item| {
                values
                    .push_bind(domain)
                    .push_bind(localpart)
                    .push_bind(item.kind.as_str())
                    .push_bind(item.key.as_str())
                    .push_bind(item.value.as_slice());
            });
            query.build().execute(&mut *tx).await.or_pg("import_user")?;
        }
        insert_archive(&mut tx, &last_per_key(import.archive.iter()), IMPORT_CHUNK).await?;
        tx.commit().await.or_pg("commit")?;
        Ok(())
    }
}

/// An account's data encoded for [`PostgresStorage::try_import_user`]: items one per (kind,
/// key), the last of duplicates winning as in redb.
struct Import {
    record: Vec<u8>,
    roster: Vec<u8>,
    offline: Vec<Vec<u8>>,
    items: Vec<AccountItem>,
    archive: Vec<ArchiveRow>,
}

/// Locks the account row of `user` until the end of `tx`; [`Error::UserNotFound`] without an
/// account. A change made under this lock cannot interleave with the account's removal.
async fn lock_account(tx: &mut PgConnection, user: &BareJid) -> Result<()> {
    let (domain, localpart) = owner(user);
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM jid_user WHERE domain = $1 AND localpart = $2 FOR UPDATE",
    )
    .bind(domain)
    .bind(localpart)
    .fetch_optional(&mut *tx)
    .await
    .or_pg("lock account")?;
    if found.is_none() {
        return Err(Error::UserNotFound {
            jid: user.to_string(),
        });
    }
    Ok(())
}

#[async_trait::async_trait]
impl Storage for PostgresStorage {
    async fn create_user(&self, user: &BareJid, record: UserRecord) -> Result<()> {
        if user.node().is_none() {
            return Err(Error::NoLocalpart {
                jid: user.to_string(),
            });
        }
        let (domain, localpart) = owner(user);
        let value = codec::encode(JID_USER_NAME, &record)?;
        let done = retrying!(
            sqlx::query(
                "INSERT INTO jid_user (domain, localpart, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (domain, localpart) DO NOTHING",
            )
            .bind(domain)
            .bind(localpart)
            .bind(value.as_slice())
            .execute(&self.pool)
            .await
            .or_pg("create_user")
        )?;
        if affected(&done) == 0 {
            return Err(Error::UserExists {
                jid: user.to_string(),
            });
        }
        Ok(())
    }

    async fn get_user(&self, user: &BareJid) -> Result<Option<UserRecord>> {
        let (domain, localpart) = owner(user);
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT record FROM jid_user WHERE domain = $1 AND localpart = $2")
                .bind(domain)
                .bind(localpart)
                .fetch_optional(&self.pool)
                .await
                .or_pg("get_user")?;
        stored
            .map(|bytes| codec::decode(JID_USER_NAME, &user.to_string(), &bytes))
            .transpose()
    }

    async fn set_user_credentials(&self, user: &BareJid, record: UserRecord) -> Result<()> {
        let (domain, localpart) = owner(user);
        let value = codec::encode(JID_USER_NAME, &record)?;
        let done = retrying!(
            sqlx::query("UPDATE jid_user SET record = $3 WHERE domain = $1 AND localpart = $2")
                .bind(domain)
                .bind(localpart)
                .bind(value.as_slice())
                .execute(&self.pool)
                .await
                .or_pg("set_user_credentials")
        )?;
        if affected(&done) == 0 {
            return Err(Error::UserNotFound {
                jid: user.to_string(),
            });
        }
        Ok(())
    }

    async fn remove_user(&self, user: &BareJid) -> Result<bool> {
        self.archive.settle().await;
        retrying!(self.try_remove_user(user).await)
    }

    async fn list_users(&self, domain: &str) -> Result<Vec<BareJid>> {
        let mut localparts: Vec<String> =
            sqlx::query_scalar("SELECT localpart FROM jid_user WHERE domain = $1")
                .bind(domain)
                .fetch_all(&self.pool)
                .await
                .or_pg("list_users")?;
        localparts.sort_unstable();
        localparts
            .iter()
            .map(|localpart| jid_from_columns(JID_USER_NAME, domain, localpart))
            .collect()
    }

    async fn count_users(&self, domain: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jid_user WHERE domain = $1")
            .bind(domain)
            .fetch_one(&self.pool)
            .await
            .or_pg("count_users")?;
        Ok(count(n))
    }

    async fn remove_domain(&self, domain: &str) -> Result<DomainRemoval> {
        self.archive.settle().await;
        retrying!(self.try_remove_domain(domain).await)
    }

    async fn get_roster(&self, user: &BareJid) -> Result<Roster> {
        let (domain, localpart) = owner(user);
        let stored: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT roster FROM jid_roster WHERE domain = $1 AND localpart = $2",
        )
        .bind(domain)
        .bind(localpart)
        .fetch_optional(&self.pool)
        .await
        .or_pg("get_roster")?;
        match stored {
            Some(bytes) => codec::decode(JID_ROSTER_NAME, &user.to_string(), &bytes),
            None => Ok(Roster::default()),
        }
    }

    async fn modify_roster(
        &self,
        user: &BareJid,
        f: &mut (dyn for<'r> FnMut(&'r mut Roster) + Send),
    ) -> Result<Roster> {
        retrying!(self.try_modify_roster(user, &mut *f).await)
    }

    async fn store_offline(
        &self,
        user: &BareJid,
        stanza: Bytes,
        limit: usize,
    ) -> Result<OfflineStored> {
        let value = codec::encode(
            OFFLINE_MSG_NAME,
            &OfflineMessage {
                stanza: stanza.to_vec(),
            },
        )?;
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        retrying!(self.try_store_offline(user, &value, limit).await)
    }

    async fn take_offline(&self, user: &BareJid) -> Result<Vec<Bytes>> {
        retrying!(self.try_take_offline(user).await)
    }

    async fn count_offline(&self, user: &BareJid) -> Result<u64> {
        let (domain, localpart) = owner(user);
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM offline_msg WHERE domain = $1 AND localpart = $2",
        )
        .bind(domain)
        .bind(localpart)
        .fetch_one(&self.pool)
        .await
        .or_pg("count_offline")?;
        Ok(count(n))
    }

    async fn get_item(&self, user: &BareJid, kind: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let (domain, localpart) = owner(user);
        sqlx::query_scalar(
            "SELECT value FROM account_item \
             WHERE domain = $1 AND localpart = $2 AND kind = $3 AND item_key = $4",
        )
        .bind(domain)
        .bind(localpart)
        .bind(kind)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .or_pg("get_item")
    }

    async fn put_item(
        &self,
        user: &BareJid,
        kind: &str,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<()> {
        retrying!(self.try_put_item(user, kind, key, value.as_deref()).await)
    }

    async fn list_items(&self, user: &BareJid, kind: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let (domain, localpart) = owner(user);
        let mut items: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT item_key, value FROM account_item \
             WHERE domain = $1 AND localpart = $2 AND kind = $3",
        )
        .bind(domain)
        .bind(localpart)
        .bind(kind)
        .fetch_all(&self.pool)
        .await
        .or_pg("list_items")?;
        items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(items)
    }

    async fn item_owners(&self, kind: &str) -> Result<Vec<BareJid>> {
        let mut owners: Vec<(String, String)> =
            sqlx::query_as("SELECT DISTINCT domain, localpart FROM account_item WHERE kind = $1")
                .bind(kind)
                .fetch_all(&self.pool)
                .await
                .or_pg("item_owners")?;
        owners.sort_unstable();
        owners
            .iter()
            .map(|(domain, localpart)| jid_from_columns(ACCOUNT_ITEM_NAME, domain, localpart))
            .collect()
    }

    async fn put_room(&self, room: &BareJid, value: Option<Vec<u8>>) -> Result<()> {
        let jid = room.to_string();
        retrying!(
            match &value {
                Some(value) => sqlx::query(
                    "INSERT INTO muc_room (jid, state) VALUES ($1, $2) \
                     ON CONFLICT (jid) DO UPDATE SET state = excluded.state",
                )
                .bind(jid.as_str())
                .bind(value.as_slice()),
                None => sqlx::query("DELETE FROM muc_room WHERE jid = $1").bind(jid.as_str()),
            }
            .execute(&self.pool)
            .await
            .or_pg("put_room")
        )?;
        Ok(())
    }

    async fn list_rooms(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut rooms: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT jid, state FROM muc_room")
            .fetch_all(&self.pool)
            .await
            .or_pg("list_rooms")?;
        rooms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(rooms)
    }

    async fn archive_append(
        &self,
        user: &BareJid,
        id: u64,
        message: ArchivedMessage,
    ) -> Result<()> {
        let id = archive_id(id)?;
        let value = codec::encode(ARCHIVE_NAME, &message)?;
        let (domain, localpart) = owner(user);
        self.archive
            .append(ArchiveRow {
                domain: domain.to_owned(),
                localpart: localpart.to_owned(),
                id,
                with: message.with,
                message: value,
            })
            .await
    }

    async fn archive_query(&self, user: &BareJid, query: ArchiveQuery) -> Result<ArchivePage> {
        self.archive.settle().await;
        let empty = ArchivePage {
            complete: true,
            ..ArchivePage::default()
        };
        // Stored ids are at most i64::MAX: a range starting above holds none.
        let Ok(from) = i64::try_from(query.from) else {
            return Ok(empty);
        };
        let to = i64::try_from(query.to).unwrap_or(i64::MAX);
        if from > to {
            return Ok(empty);
        }
        let ids: Option<Vec<i64>> = query.ids.as_ref().map(|ids| {
            ids.iter()
                .filter_map(|&id| i64::try_from(id).ok())
                .collect()
        });
        let (domain, localpart) = owner(user);
        let mut sql: QueryBuilder<Postgres> = QueryBuilder::new("");
        let counting = query.max == 0;
        if counting {
            sql.push("SELECT count(*) FROM archive");
        } else {
            sql.push("SELECT id, message, count(*) OVER () FROM archive");
        }
        sql.push(" WHERE domain = ")
            .push_bind(domain)
            .push(" AND localpart = ")
            .push_bind(localpart)
            .push(" AND id >= ")
            .push_bind(from)
            .push(" AND id <= ")
            .push_bind(to);
        if let Some(with) = &query.with {
            sql.push(" AND with_jid = ").push_bind(with.as_str());
        }
        if let Some(ids) = &ids {
            sql.push(" AND id = ANY(")
                .push_bind(ids.as_slice())
                .push(")");
        }
        if counting {
            let total: i64 = sql
                .build_query_scalar()
                .fetch_one(&self.pool)
                .await
                .or_pg("archive_query")?;
            let total = count(total);
            return Ok(ArchivePage {
                messages: Vec::new(),
                complete: total == 0,
                count: total,
            });
        }
        sql.push(if query.from_end {
            " ORDER BY id DESC LIMIT "
        } else {
            " ORDER BY id ASC LIMIT "
        })
        .push_bind(i64::try_from(query.max).unwrap_or(i64::MAX));
        let rows: Vec<(i64, Vec<u8>, i64)> = sql
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .or_pg("archive_query")?;
        let total = rows.first().map_or(0, |row| count(row.2));
        let name = user.to_string();
        let mut messages = Vec::with_capacity(rows.len());
        for (id, bytes, _) in rows {
            let id = stored_u64(ARCHIVE_NAME, &name, id)?;
            let message: ArchivedMessage =
                codec::decode(ARCHIVE_NAME, &format!("{name}#{id}"), &bytes)?;
            messages.push((id, message));
        }
        if query.from_end {
            messages.reverse();
        }
        Ok(ArchivePage {
            complete: total <= messages.len() as u64,
            count: total,
            messages,
        })
    }

    async fn archive_prune(&self, before: u64) -> Result<u64> {
        self.archive.settle().await;
        // Every stored id is below `before` when it is past the largest storable id.
        let done = retrying!(
            match i64::try_from(before) {
                Ok(before) => sqlx::query("DELETE FROM archive WHERE id < $1").bind(before),
                Err(_) => sqlx::query("DELETE FROM archive"),
            }
            .execute(&self.pool)
            .await
            .or_pg("archive_prune")
        )?;
        Ok(affected(&done))
    }

    async fn archive_remove(&self, owner_jid: &BareJid) -> Result<()> {
        self.archive.settle().await;
        let (domain, localpart) = owner(owner_jid);
        retrying!(
            sqlx::query("DELETE FROM archive WHERE domain = $1 AND localpart = $2")
                .bind(domain)
                .bind(localpart)
                .execute(&self.pool)
                .await
                .or_pg("archive_remove")
        )?;
        Ok(())
    }

    async fn export_user(&self, user: &BareJid) -> Result<Option<AccountData>> {
        self.archive.settle().await;
        retrying!(export(&self.pool, user).await)
    }

    async fn import_user(&self, user: &BareJid, data: AccountData) -> Result<()> {
        if user.node().is_none() {
            return Err(Error::NoLocalpart {
                jid: user.to_string(),
            });
        }
        let (domain, localpart) = owner(user);
        let mut items: Vec<AccountItem> = Vec::with_capacity(data.items.len());
        {
            let mut seen = HashSet::new();
            for item in data.items.into_iter().rev() {
                if seen.insert((item.kind.clone(), item.key.clone())) {
                    items.push(item);
                }
            }
            items.reverse();
        }
        let import = Import {
            record: codec::encode(JID_USER_NAME, &data.record)?,
            roster: codec::encode(JID_ROSTER_NAME, &data.roster)?,
            offline: data
                .offline
                .iter()
                .map(|message| codec::encode(OFFLINE_MSG_NAME, message))
                .collect::<Result<_>>()?,
            items,
            archive: data
                .archive
                .into_iter()
                .map(|(id, message)| {
                    Ok(ArchiveRow {
                        domain: domain.to_owned(),
                        localpart: localpart.to_owned(),
                        id: archive_id(id)?,
                        message: codec::encode(ARCHIVE_NAME, &message)?,
                        with: message.with,
                    })
                })
                .collect::<Result<_>>()?,
        };
        self.archive.settle().await;
        retrying!(self.try_import_user(user, &import).await)
    }
}

/// Everything stored for `user`, read in one read-only transaction that sees one snapshot.
async fn export(pool: &PgPool, user: &BareJid) -> Result<Option<AccountData>> {
    let (domain, localpart) = owner(user);
    let name = user.to_string();
    let mut tx = pool.begin().await.or_pg("begin")?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .or_pg("export_user")?;
    let record: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT record FROM jid_user WHERE domain = $1 AND localpart = $2")
            .bind(domain)
            .bind(localpart)
            .fetch_optional(&mut *tx)
            .await
            .or_pg("export_user")?;
    let Some(record) = record else {
        return Ok(None);
    };
    let record: UserRecord = codec::decode(JID_USER_NAME, &name, &record)?;
    let roster: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT roster FROM jid_roster WHERE domain = $1 AND localpart = $2")
            .bind(domain)
            .bind(localpart)
            .fetch_optional(&mut *tx)
            .await
            .or_pg("export_user")?;
    let roster = match roster {
        Some(bytes) => codec::decode(JID_ROSTER_NAME, &name, &bytes)?,
        None => Roster::default(),
    };
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT seq, message FROM offline_msg WHERE domain = $1 AND localpart = $2 ORDER BY seq",
    )
    .bind(domain)
    .bind(localpart)
    .fetch_all(&mut *tx)
    .await
    .or_pg("export_user")?;
    let offline = rows
        .iter()
        .map(|(seq, bytes)| codec::decode(OFFLINE_MSG_NAME, &format!("{name}#{seq}"), bytes))
        .collect::<Result<Vec<OfflineMessage>>>()?;
    let mut items: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT kind, item_key, value FROM account_item WHERE domain = $1 AND localpart = $2",
    )
    .bind(domain)
    .bind(localpart)
    .fetch_all(&mut *tx)
    .await
    .or_pg("export_user")?;
    // redb's order: by kind, then key.
    items.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let items = items
        .into_iter()
        .map(|(kind, key, value)| AccountItem { kind, key, value })
        .collect();
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT id, message FROM archive WHERE domain = $1 AND localpart = $2 ORDER BY id",
    )
    .bind(domain)
    .bind(localpart)
    .fetch_all(&mut *tx)
    .await
    .or_pg("export_user")?;
    let mut archive = Vec::with_capacity(rows.len());
    for (id, bytes) in rows {
        let id = stored_u64(ARCHIVE_NAME, &name, id)?;
        archive.push((
            id,
            codec::decode(ARCHIVE_NAME, &format!("{name}#{id}"), &bytes)?,
        ));
    }
    tx.commit().await.or_pg("commit")?;
    Ok(Some(AccountData {
        record,
        roster,
        offline,
        items,
        archive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `node/migrations/` is embedded, under its number and name, with its text.
    #[test]
    fn every_migration_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let stem = name.strip_suffix(".sql").expect("only .sql files");
            let (version, description) = stem.split_once('_').expect("NNNN_name.sql");
            let text = std::fs::read_to_string(&path).unwrap();
            files.push((
                version.parse::<i64>().unwrap(),
                description.to_owned(),
                text,
            ));
        }
        files.sort();
        let embedded: Vec<(i64, String, String)> = MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| (version, description.to_owned(), sql.to_owned()))
            .collect();
        assert_eq!(files, embedded);
        let versions = PostgresStorage::known_migrations();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(migrator().iter().count(), MIGRATIONS.len());
    }

    #[test]
    fn later_archive_rows_win_within_a_batch() {
        let row = |id: i64, with: &str| ArchiveRow {
            domain: "a.example".into(),
            localpart: "alice".into(),
            id,
            with: with.into(),
            message: Vec::new(),
        };
        let rows = [
            row(1, "a"),
            row(2, "b"),
            row(1, "c"),
            row(3, "d"),
            row(2, "e"),
        ];
        let kept: Vec<(i64, &str)> = last_per_key(rows.iter())
            .iter()
            .map(|row| (row.id, row.with.as_str()))
            .collect();
        assert_eq!(kept, [(1, "c"), (3, "d"), (2, "e")]);
    }

    #[test]
    fn archive_ids_fit_bigint_or_are_refused() {
        assert_eq!(archive_id(0).unwrap(), 0);
        assert_eq!(archive_id(i64::MAX as u64).unwrap(), i64::MAX);
        assert!(matches!(
            archive_id(i64::MAX as u64 + 1),
            Err(Error::OutOfRange { .. })
        ));
    }
}
