//! The PKI's files: PEM reading with errors naming the file, and atomic writes (private keys
//! with mode 0600, the directory with mode 0700 when it is made here).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::PkiError;

/// Reads a file, naming it in the error.
pub(super) fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file, in file order; at least one.
pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PkiError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PkiError::CertificateCount {
            path: path.to_path_buf(),
            found: 0,
            expected: "at least one",
        });
    }
    Ok(certs)
}

/// The one certificate of a PEM file (the CA's), with the file's text.
pub(super) fn read_single_cert(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    let mut certs = read_certs(path)?;
    if certs.len() != 1 {
        return Err(PkiError::CertificateCount {
            path: path.to_path_buf(),
            found: certs.len(),
            expected: "exactly one",
        });
    }
    Ok(certs.remove(0))
}

/// The first private key of a PEM file.
pub(super) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => PkiError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        source => PkiError::Pem {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Makes `dir` (and its parents) if missing; a directory made here gets mode 0700, since it
/// holds private keys. An existing directory is left as it is.
pub(super) fn ensure_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` through a temporary file renamed over it, so a reader never sees
/// half a file and a crash never leaves one. With `secret`, the file has mode 0600 from its
/// creation on.
pub(super) fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = temp_path(path);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(err)?;
    // A temporary file left by an earlier crash keeps its old mode: set it again.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(source) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(err(source));
    }
    Ok(())
}

/// `<path>.tmp`, beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
