//! The admin API's bearer token: the configured `admin.token`, or `<data_dir>/admin.token`,
//! made at first start (32 random bytes as 64 hex digits, file mode 0600) and reused after.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;

/// Name of the token file in the data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// Random bytes in a generated token.
const TOKEN_BYTES: usize = 32;

/// The admin token: `configured` when set (`admin.token` in the configuration), otherwise the
/// content of `<data_dir>/admin.token`, which is created with a fresh random token (mode 0600 on
/// Unix) when it does not exist yet. The data directory is created if needed.
///
/// Fails when the file cannot be read or written, or exists but holds no token.
pub fn load_or_create_token(data_dir: &Path, configured: Option<&str>) -> io::Result<String> {
    if let Some(token) = configured {
        return Ok(token.to_owned());
    }
    let path = data_dir.join(TOKEN_FILE);
    match read_token(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    fs::create_dir_all(data_dir)?;
    let token = new_token();
    match create_private(&path) {
        Ok(mut file) => {
            file.write_all(format!("{token}\n").as_bytes())?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "created the admin token");
            Ok(token)
        }
        // Another process made it between our read and create: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_token(&path),
        Err(e) => Err(e),
    }
}

/// Reads a token file; the token is its first line without surrounding whitespace.
fn read_token(path: &Path) -> io::Result<String> {
    let text = fs::read_to_string(path)?;
    warn_if_readable_by_others(path);
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds no token", path.display()),
        ));
    }
    Ok(token.to_owned())
}

/// 32 random bytes as lowercase hex.
fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(unix)]
fn create_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> io::Result<fs::File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "the admin token file is readable by other users; run chmod 600 on it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::TempDir;

    #[test]
    fn creates_a_token_at_first_start_and_reuses_it() {
        let dir = TempDir::new("token-create");
        let data_dir = dir.path().join("nested").join("data");
        let first = load_or_create_token(&data_dir, None).unwrap();
        assert_eq!(first.len(), 2 * TOKEN_BYTES);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()), "{first}");
        let stored = fs::read_to_string(data_dir.join(TOKEN_FILE)).unwrap();
        assert_eq!(stored.trim(), first);
        let second = load_or_create_token(&data_dir, None).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn two_data_dirs_get_different_tokens() {
        let dir = TempDir::new("token-distinct");
        let a = load_or_create_token(&dir.path().join("a"), None).unwrap();
        let b = load_or_create_token(&dir.path().join("b"), None).unwrap();
        assert_ne!(a, b);
    }

    #[cfg(unix)]
    #[test]
    fn token_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = TempDir::new("token-mode");
        load_or_create_token(dir.path(), None).unwrap();
        let mode = fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn configured_token_wins_and_no_file_is_made() {
        let dir = TempDir::new("token-config");
        let token = load_or_create_token(dir.path(), Some("configured-token-0123")).unwrap();
        assert_eq!(token, "configured-token-0123");
        assert!(!dir.path().join(TOKEN_FILE).exists());
    }

    #[test]
    fn configured_token_wins_over_an_existing_file() {
        let dir = TempDir::new("token-config-file");
        let made = load_or_create_token(dir.path(), None).unwrap();
        let token = load_or_create_token(dir.path(), Some("configured-token-0123")).unwrap();
        assert_eq!(token, "configured-token-0123");
        assert_ne!(token, made);
    }

    #[test]
    fn hand_written_token_file_is_trimmed() {
        let dir = TempDir::new("token-trim");
        fs::create_dir_all(dir.path()).unwrap();
        fs::write(dir.path().join(TOKEN_FILE), "  my-own-token-value  \n").unwrap();
        let token = load_or_create_token(dir.path(), None).unwrap();
        assert_eq!(token, "my-own-token-value");
    }

    #[test]
    fn empty_token_file_is_an_error() {
        let dir = TempDir::new("token-empty");
        fs::create_dir_all(dir.path()).unwrap();
        fs::write(dir.path().join(TOKEN_FILE), "\n").unwrap();
        let e = load_or_create_token(dir.path(), None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("holds no token"), "{e}");
    }
}
