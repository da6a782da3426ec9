//! Finding the node `tern ctl` talks to: its admin address and token.
//!
//! With `--config FILE` the file is loaded; without it the embedded defaults apply (data in
//! `./tern-data`, admin API on `127.0.0.1:5551`), so `tern ctl` run where `tern serve` runs with
//! defaults just works. Then:
//! - token: `admin.token` from the configuration, else the content of `<data_dir>/admin.token`
//!   (made by the node at first start; `tern ctl` never creates it);
//! - address: the content of `<data_dir>/admin.addr` (written by the running node, right even
//!   when its admin port is 0) when present and valid, else `admin.address`.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tern_config::Config;

use super::error::CtlError;
use crate::admin::{ADDR_FILE, TOKEN_FILE};

/// Where and how to reach a node's admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The admin listener's address.
    pub(crate) address: SocketAddr,
    /// The bearer token.
    pub(crate) token: String,
    /// Where the token came from, for messages: the token file's path, or `admin.token in FILE`.
    pub(crate) token_source: String,
    /// The node's data directory.
    pub(crate) data_dir: PathBuf,
}

/// Finds the admin API of the node configured by `config` (or the embedded defaults).
pub(crate) fn discover(config: Option<&Path>) -> Result<Target, CtlError> {
    let (loaded, file) = match config {
        Some(path) => (
            Config::load(path).map_err(CtlError::Config)?,
            path.display().to_string(),
        ),
        None => (
            Config::embedded_default(),
            "the embedded defaults".to_owned(),
        ),
    };
    if !loaded.admin.enabled {
        return Err(CtlError::AdminDisabled { file });
    }
    let data_dir = loaded.general.data_dir.clone();
    let (token, token_source) = match &loaded.admin.token {
        Some(token) => (token.clone(), format!("admin.token in {file}")),
        None => {
            let path = data_dir.join(TOKEN_FILE);
            (read_token(&path)?, path.display().to_string())
        }
    };
    let address = read_addr_file(&data_dir.join(ADDR_FILE)).unwrap_or(loaded.admin.address);
    Ok(Target {
        address,
        token,
        token_source,
        data_dir,
    })
}

/// The token in a token file: its first line, trimmed.
fn read_token(path: &Path) -> Result<String, CtlError> {
    let text = fs::read_to_string(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            CtlError::TokenMissing {
                path: path.to_path_buf(),
            }
        } else {
            CtlError::TokenUnreadable {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(CtlError::TokenUnreadable {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, "the file holds no token"),
        });
    }
    Ok(token.to_owned())
}

/// The address in an address file, if it exists and holds one.
fn read_addr_file(path: &Path) -> Option<SocketAddr> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::TempDir;

    /// A config file in `dir` whose data directory is `dir/data`, with `extra` appended.
    fn config_file(dir: &TempDir, extra: &str) -> PathBuf {
        fs::create_dir_all(dir.path()).unwrap();
        let data = dir.path().join("data");
        let path = dir.path().join("tern.toml");
        fs::write(
            &path,
            format!(
                "[general]\ndata_dir = {:?}\n[admin]\naddress = \"127.0.0.1:6001\"\n{extra}",
                data.display().to_string()
            ),
        )
        .unwrap();
        path
    }

    #[test]
    fn reads_token_file_and_configured_address() {
        let dir = TempDir::new("ctl-discover-file");
        let config = config_file(&dir, "");
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join(TOKEN_FILE), "file-token-0123456789\n").unwrap();
        let target = discover(Some(&config)).unwrap();
        assert_eq!(target.address, "127.0.0.1:6001".parse().unwrap());
        assert_eq!(target.token, "file-token-0123456789");
        assert_eq!(target.data_dir, data);
        assert_eq!(
            target.token_source,
            data.join(TOKEN_FILE).display().to_string()
        );
    }

    #[test]
    fn addr_file_wins_over_the_configured_address() {
        let dir = TempDir::new("ctl-discover-addr");
        let config = config_file(&dir, "");
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join(TOKEN_FILE), "file-token-0123456789\n").unwrap();
        fs::write(data.join(ADDR_FILE), "127.0.0.1:43210\n").unwrap();
        assert_eq!(
            discover(Some(&config)).unwrap().address,
            "127.0.0.1:43210".parse().unwrap()
        );
        fs::write(data.join(ADDR_FILE), "garbage\n").unwrap();
        assert_eq!(
            discover(Some(&config)).unwrap().address,
            "127.0.0.1:6001".parse().unwrap()
        );
    }

    #[test]
    fn configured_token_wins_over_the_file() {
        let dir = TempDir::new("ctl-discover-token");
        let config = config_file(&dir, "token = \"configured-token-0123\"\n");
        let target = discover(Some(&config)).unwrap();
        assert_eq!(target.token, "configured-token-0123");
        assert!(
            target.token_source.starts_with("admin.token in "),
            "{}",
            target.token_source
        );
    }

    #[test]
    fn missing_token_file_is_explained() {
        let dir = TempDir::new("ctl-discover-missing");
        let config = config_file(&dir, "");
        let e = discover(Some(&config)).unwrap_err();
        assert!(matches!(e, CtlError::TokenMissing { .. }), "{e:?}");
        assert!(e.to_string().contains("admin.token"), "{e}");
    }

    #[test]
    fn disabled_admin_api_is_an_error() {
        let dir = TempDir::new("ctl-discover-disabled");
        let config = config_file(&dir, "enabled = false\n");
        let e = discover(Some(&config)).unwrap_err();
        assert!(matches!(e, CtlError::AdminDisabled { .. }), "{e:?}");
    }

    #[test]
    fn bad_config_lists_its_problems() {
        let dir = TempDir::new("ctl-discover-bad");
        let config = config_file(&dir, "colour = \"blue\"\n");
        let e = discover(Some(&config)).unwrap_err();
        assert!(e.to_string().contains("admin.colour: unknown key"), "{e}");
        let e = discover(Some(&dir.path().join("absent.toml"))).unwrap_err();
        assert!(e.to_string().contains("cannot read file"), "{e}");
    }

    #[test]
    fn defaults_use_tern_data_and_port_5551() {
        // Without --config, the defaults are relative to the working directory; only check
        // what does not depend on it.
        let defaults = Config::embedded_default();
        assert_eq!(defaults.general.data_dir, PathBuf::from("tern-data"));
        assert_eq!(defaults.admin.address, "127.0.0.1:5551".parse().unwrap());
        match discover(None) {
            Ok(target) => assert_eq!(target.data_dir, PathBuf::from("tern-data")),
            Err(e) => assert!(
                matches!(e, CtlError::TokenMissing { ref path } if path == Path::new("tern-data/admin.token")),
                "{e:?}"
            ),
        }
    }
}
