//! `[storage]`: which database backend holds the node's persistent data, and where.
//!
//! Two backends: the embedded redb file (the default, one per node) and PostgreSQL, shared by
//! the nodes of a datacenter's local cluster. The PostgreSQL URL may carry a password, so it is
//! never printed: `Debug` and [`Postgres::redacted_url`] hide it, and errors never echo it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reader::{ConfigValues, Diagnostics, Section};

/// File name of the redb database inside the data directory when `storage.path` is not set.
pub const DEFAULT_DATABASE_FILE: &str = "tern.redb";

/// Default number of connections in the PostgreSQL pool (`storage.pool_size`).
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// Largest `storage.pool_size` accepted.
pub const MAX_POOL_SIZE: u32 = 1024;

/// Default time allowed to open a PostgreSQL connection (`storage.connect_timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[storage]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// The database backend. Default [`StorageBackend::Redb`].
    pub backend: StorageBackend,
    /// The redb database file, resolved: `storage.path` when set, else
    /// `<general.data_dir>/tern.redb`. Not used by the PostgreSQL backend.
    pub path: PathBuf,
    /// The PostgreSQL connection settings: `Some` exactly when `backend` is
    /// [`StorageBackend::Postgres`].
    pub postgres: Option<Postgres>,
}

impl Storage {
    /// The default storage for a node whose data directory is `data_dir`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self {
            backend: StorageBackend::Redb,
            path: data_dir.join(DEFAULT_DATABASE_FILE),
            postgres: None,
        }
    }
}

/// A database backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageBackend {
    /// The embedded redb database, one file per node; written `"redb"`.
    Redb,
    /// A PostgreSQL server (or a server speaking its protocol); written `"postgres"`.
    Postgres,
}

impl StorageBackend {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redb => "redb",
            Self::Postgres => "postgres",
        }
    }
}

impl fmt::Display for StorageBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to reach PostgreSQL (`backend = "postgres"`).
///
/// `Debug` shows the URL with its password replaced; see [`Postgres::redacted_url`].
#[derive(Clone, PartialEq, Eq)]
pub struct Postgres {
    /// The connection URL, `postgres://user:password@host:port/database?options`. May hold a
    /// password: never log it, log [`Postgres::redacted_url`].
    pub url: String,
    /// Connections kept in the pool, 1..=[`MAX_POOL_SIZE`]. Default [`DEFAULT_POOL_SIZE`].
    pub pool_size: u32,
    /// How long opening a connection (or waiting for a free one) may take before the
    /// operation fails. Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
}

impl Postgres {
    /// The URL with the password (in the user part, or a `password=` option) replaced by
    /// `<redacted>`: what logs and messages may show.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Marks what stands for a hidden password.
const REDACTED: &str = "<redacted>";

/// `url` with its password hidden: the part after `:` in the user information, and the value
/// of every `password` query option.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    // The authority ends at the first '/', '?' or '#'; its user information at its last '@'.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:{REDACTED}@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((query, fragment)) => (query, Some(fragment)),
                None => (query, None),
            };
            let options: Vec<String> = query
                .split('&')
                .map(|option| match option.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}={REDACTED}")
                    }
                    _ => option.to_owned(),
                })
                .collect();
            let mut tail = format!("{path}?{}", options.join("&"));
            if let Some(fragment) = fragment {
                tail.push('#');
                tail.push_str(fragment);
            }
            tail
        }
        None => tail.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// The URL schemes PostgreSQL clients accept.
const POSTGRES_SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// Reads `[storage]`; `data_dir` is the already-read `general.data_dir`, which gives the
/// default database path.
pub(crate) fn read(mut section: Section<'_>, d: &mut Diagnostics, data_dir: &Path) -> Storage {
    let defaults = Storage::in_data_dir(data_dir);
    let backend = section
        .choice(
            d,
            "backend",
            &[
                ("redb", StorageBackend::Redb),
                ("postgres", StorageBackend::Postgres),
            ],
        )
        .unwrap_or(defaults.backend);
    let path_set = section.contains("path");
    let path = section.file_path(d, "path").unwrap_or(defaults.path);

    let url_set = section.contains("url");
    let url = section.string(d, "url").and_then(|url| {
        // The URL may hold a password: the message never repeats it.
        if POSTGRES_SCHEMES
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            Some(url.to_owned())
        } else {
            d.report(
                &section.key_path("url"),
                "must be a postgres:// or postgresql:// URL",
            );
            None
        }
    });
    let pool_size_set = section.contains("pool_size");
    let pool_size = section
        .integer_in::<u32>(d, "pool_size", 1, Some(i64::from(MAX_POOL_SIZE)))
        .unwrap_or(DEFAULT_POOL_SIZE);
    let timeout_set = section.contains("connect_timeout");
    let connect_timeout = section
        .duration_at_least(d, "connect_timeout", Duration::from_millis(100))
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);

    let postgres = match backend {
        StorageBackend::Redb => {
            for (set, key) in [
                (url_set, "url"),
                (pool_size_set, "pool_size"),
                (timeout_set, "connect_timeout"),
            ] {
                if set {
                    d.report(
                        &section.key_path(key),
                        "only used with storage.backend = \"postgres\"",
                    );
                }
            }
            None
        }
        StorageBackend::Postgres => {
            if path_set {
                d.report(
                    &section.key_path("path"),
                    "only used with storage.backend = \"redb\"",
                );
            }
            if !url_set {
                d.report(
                    &section.key_path("url"),
                    "required when storage.backend = \"postgres\"",
                );
            }
            // A rejected URL was reported above; the placeholder never reaches a node, since
            // the configuration as a whole is refused.
            Some(Postgres {
                url: url.unwrap_or_default(),
                pool_size,
                connect_timeout,
            })
        }
    };
    section.finish(d);
    Storage {
        backend,
        path,
        postgres,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{config, errors};

    #[test]
    fn default_path_follows_data_dir() {
        let c = config("[general]\ndata_dir = \"/srv/tern\"\n");
        assert_eq!(c.storage.path, PathBuf::from("/srv/tern/tern.redb"));
        assert_eq!(c.storage.backend, StorageBackend::Redb);
        assert_eq!(c.storage.postgres, None);
    }

    #[test]
    fn explicit_path_wins() {
        let c = config(
            "[general]\ndata_dir = \"/srv/tern\"\n\n[storage]\nbackend = \"redb\"\npath = \"db/node.redb\"\n",
        );
        assert_eq!(c.storage.path, PathBuf::from("db/node.redb"));
    }

    #[test]
    fn rejects_unknown_backend_and_empty_path() {
        assert_eq!(
            errors("[storage]\nbackend = \"mysql\"\npath = \"\"\n"),
            [
                "tern.toml: storage.backend: expected \"redb\" or \"postgres\", found \"mysql\"",
                "tern.toml: storage.path: must not be empty",
            ]
        );
    }

    #[test]
    fn backend_name() {
        assert_eq!(StorageBackend::Redb.to_string(), "redb");
        assert_eq!(StorageBackend::Postgres.to_string(), "postgres");
    }

    #[test]
    fn postgres_with_defaults() {
        let c = config("[storage]\nbackend = \"postgres\"\nurl = \"postgres://tern@db/tern\"\n");
        assert_eq!(c.storage.backend, StorageBackend::Postgres);
        assert_eq!(
            c.storage.postgres,
            Some(Postgres {
                url: "postgres://tern@db/tern".to_owned(),
                pool_size: DEFAULT_POOL_SIZE,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            })
        );
    }

    #[test]
    fn postgres_with_every_key() {
        let c = config(
            "[storage]\nbackend = \"postgres\"\nurl = \"postgresql://db.internal:5433/x\"\n\
             pool_size = 64\nconnect_timeout = \"3s\"\n",
        );
        let pg = c.storage.postgres.expect("postgres settings");
        assert_eq!(pg.url, "postgresql://db.internal:5433/x");
        assert_eq!(pg.pool_size, 64);
        assert_eq!(pg.connect_timeout, Duration::from_secs(3));
    }

    #[test]
    fn postgres_needs_a_url() {
        assert_eq!(
            errors("[storage]\nbackend = \"postgres\"\n"),
            ["tern.toml: storage.url: required when storage.backend = \"postgres\""]
        );
    }

    #[test]
    fn rejects_bad_url_without_echoing_it() {
        let lines = errors("[storage]\nbackend = \"postgres\"\nurl = \"mysql://u:hunter2@db/x\"\n");
        assert_eq!(
            lines,
            ["tern.toml: storage.url: must be a postgres:// or postgresql:// URL"]
        );
        assert!(!lines[0].contains("hunter2"));
    }

    #[test]
    fn rejects_bad_pool_size_and_timeout() {
        assert_eq!(
            errors(
                "[storage]\nbackend = \"postgres\"\nurl = \"postgres://db/x\"\npool_size = 0\n\
                 connect_timeout = \"10ms\"\n"
            ),
            [
                "tern.toml: storage.pool_size: must be between 1 and 1024, found 0",
                "tern.toml: storage.connect_timeout: must be at least 100ms, found 10ms",
            ]
        );
    }

    #[test]
    fn keys_of_the_other_backend_are_errors() {
        assert_eq!(
            errors("[storage]\nurl = \"postgres://db/x\"\npool_size = 4\n"),
            [
                "tern.toml: storage.url: only used with storage.backend = \"postgres\"",
                "tern.toml: storage.pool_size: only used with storage.backend = \"postgres\"",
            ]
        );
        assert_eq!(
            errors(
                "[storage]\nbackend = \"postgres\"\nurl = \"postgres://db/x\"\npath = \"a.redb\"\n"
            ),
            ["tern.toml: storage.path: only used with storage.backend = \"redb\""]
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let c = config(
            "[storage]\nbackend = \"postgres\"\n\
             url = \"postgres://tern:s3cret@db:5432/tern?sslmode=require&password=zq9Other\"\n",
        );
        let shown = format!("{c:?}");
        let pg = c.storage.postgres.expect("postgres settings");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("zq9Other"), "{shown}");
        assert_eq!(
            pg.redacted_url(),
            "postgres://tern:<redacted>@db:5432/tern?sslmode=require&password=<redacted>"
        );
    }

    #[test]
    fn redaction_keeps_urls_without_password() {
        for url in [
            "postgres://db/tern",
            "postgres://tern@db/tern",
            "postgresql://[::1]:5432/tern?host=/run/pg",
            "postgres://tern@db/tern#frag",
        ] {
            assert_eq!(redact_url(url), url);
        }
        assert_eq!(
            redact_url("postgres://a:b@c@db/x"),
            "postgres://a:<redacted>@db/x"
        );
    }
}
