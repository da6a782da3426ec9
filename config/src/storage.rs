//! `[storage]`: which database backend holds the node's persistent data, and where.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::reader::{ConfigValues, Diagnostics, Section};

/// File name of the redb database inside the data directory when `storage.path` is not set.
pub const DEFAULT_DATABASE_FILE: &str = "tern.redb";

/// The `[storage]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// The database backend. Default [`StorageBackend::Redb`].
    pub backend: StorageBackend,
    /// The database file, resolved: `storage.path` when set, else
    /// `<general.data_dir>/tern.redb`.
    pub path: PathBuf,
}

impl Storage {
    /// The default storage for a node whose data directory is `data_dir`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self {
            backend: StorageBackend::Redb,
            path: data_dir.join(DEFAULT_DATABASE_FILE),
        }
    }
}

/// A database backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageBackend {
    /// The embedded redb database, one file per node; written `"redb"`.
    Redb,
}

impl StorageBackend {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redb => "redb",
        }
    }
}

impl fmt::Display for StorageBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads `[storage]`; `data_dir` is the already-read `general.data_dir`, which gives the
/// default database path.
pub(crate) fn read(mut section: Section<'_>, d: &mut Diagnostics, data_dir: &Path) -> Storage {
    let defaults = Storage::in_data_dir(data_dir);
    let storage = Storage {
        backend: section
            .choice(d, "backend", &[("redb", StorageBackend::Redb)])
            .unwrap_or(defaults.backend),
        path: section.file_path(d, "path").unwrap_or(defaults.path),
    };
    section.finish(d);
    storage
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
            errors("[storage]\nbackend = \"postgres\"\npath = \"\"\n"),
            [
                "tern.toml: storage.backend: expected \"redb\", found \"postgres\"",
                "tern.toml: storage.path: must not be empty",
            ]
        );
    }

    #[test]
    fn backend_name() {
        assert_eq!(StorageBackend::Redb.to_string(), "redb");
    }
}
