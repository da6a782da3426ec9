//! The storage error type shared by every backend.

use std::path::PathBuf;

/// Result of a storage operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `create_user` was called for an account that already exists.
    #[error("user {jid} already exists")]
    UserExists {
        /// The bare JID of the account.
        jid: String,
    },
    /// The operation needs an account that does not exist.
    #[error("user {jid} does not exist")]
    UserNotFound {
        /// The bare JID of the account.
        jid: String,
    },
    /// An account JID must have a localpart (`user@domain`), a bare domain cannot be a user.
    #[error("{jid} has no localpart and cannot be a user account")]
    NoLocalpart {
        /// The JID that was given.
        jid: String,
    },
    /// The storage's archive writer has stopped (the node is shutting down).
    #[error("the archive writer has stopped")]
    Closed,
    /// The archive writer's thread could not be started.
    #[error("cannot start the archive writer thread")]
    ArchiveThread(#[source] std::io::Error),
    /// A stored value is empty, so it has no format version byte.
    #[error("empty value in table {table} under key {key:?}")]
    EmptyValue {
        /// Table holding the value.
        table: &'static str,
        /// Key of the value, printable form.
        key: String,
    },
    /// A stored value starts with a format version this build does not know.
    #[error("value in table {table} under key {key:?} has unknown format version {version}")]
    UnknownFormat {
        /// Table holding the value.
        table: &'static str,
        /// Key of the value, printable form.
        key: String,
        /// The version byte found.
        version: u8,
    },
    /// A stored value has a known format version but its body does not decode.
    #[error("value in table {table} under key {key:?} does not decode")]
    Decode {
        /// Table holding the value.
        table: &'static str,
        /// Key of the value, printable form.
        key: String,
        /// What the decoder reported.
        #[source]
        source: postcard::Error,
    },
    /// A stored value decodes but is followed by unexpected bytes.
    #[error("value in table {table} under key {key:?} has {extra} trailing bytes")]
    TrailingBytes {
        /// Table holding the value.
        table: &'static str,
        /// Key of the value, printable form.
        key: String,
        /// Number of bytes left after the value.
        extra: usize,
    },
    /// A key read back from a table is not a valid stored key.
    #[error("malformed key {key:?} in table {table}")]
    BadKey {
        /// Table holding the key.
        table: &'static str,
        /// The key, printable form.
        key: String,
    },
    /// A value could not be encoded for storage.
    #[error("cannot encode value for table {table}")]
    Encode {
        /// Table the value was meant for.
        table: &'static str,
        /// What the encoder reported.
        #[source]
        source: postcard::Error,
    },
    /// The directory holding the database file could not be created.
    #[error("cannot create directory {}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The redb backend failed.
    #[error("redb backend failed during {op}")]
    Backend {
        /// The operation that failed (for example `begin_write`, `commit`).
        op: &'static str,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// The PostgreSQL backend failed.
    #[error("postgres backend failed during {op}")]
    Postgres {
        /// The operation that failed (for example `connect`, `create_user`, `commit`).
        op: &'static str,
        /// What sqlx reported.
        #[source]
        source: sqlx::Error,
    },
    /// The PostgreSQL schema migrations could not be applied.
    #[error("cannot apply the postgres schema migrations")]
    Migrate {
        /// What the migrator reported.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A number does not fit the backend's column (PostgreSQL keeps archive ids as signed
    /// 64-bit integers).
    #[error("{what} {value} is out of range for the database")]
    OutOfRange {
        /// What the number is (`archive id`).
        what: &'static str,
        /// The number.
        value: u64,
    },
    /// The blocking task running a backend transaction panicked or was cancelled.
    #[error("storage task did not complete")]
    TaskFailed {
        /// What tokio reported.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Error {
    /// Whether retrying the same operation later may succeed.
    ///
    /// Backend I/O trouble and aborted tasks may be transient; logical errors (existing or
    /// missing users) and corrupt data are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Backend { source, .. } => matches!(source, redb::Error::Io(_)),
            Self::Postgres { source, .. } => postgres_retryable(source),
            Self::TaskFailed { source } => source.is_cancelled(),
            _ => false,
        }
    }
}

/// Whether a PostgreSQL failure may go away by itself: the connection or the pool (network,
/// server restart, no free connection in time), or a transaction the server aborted because
/// of a concurrent one (serialization failure, deadlock).
fn postgres_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exception; 57P01..57P03: the server is shutting down or
            // starting; 40001 serialization failure, 40P01 deadlock detected.
            code.starts_with("08")
                || matches!(
                    code.as_ref(),
                    "40001" | "40P01" | "57P01" | "57P02" | "57P03"
                )
        }),
        _ => false,
    }
}
