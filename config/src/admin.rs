//! `[admin]`: the loopback-only admin API listener and its bearer token.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use crate::reader::{ConfigValues, Diagnostics, Section};

/// Shortest admin token accepted, in characters.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The `[admin]` section.
///
/// `Debug` shows whether a token is set but never the token itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Admin {
    /// Whether the admin API listens at all. Default `true`.
    pub enabled: bool,
    /// Where the admin API listens; always a loopback address (127.0.0.0/8 or ::1).
    /// Default `127.0.0.1:5551`.
    pub address: SocketAddr,
    /// The bearer token clients must present: at least [`MIN_TOKEN_CHARS`] characters, no
    /// whitespace or control characters. `None` (the default): the node creates
    /// `<data_dir>/admin.token` at first start.
    pub token: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            enabled: true,
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 5551)),
            token: None,
        }
    }
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("enabled", &self.enabled)
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Reads `[admin]`, falling back to the default for every key not set or not valid.
pub(crate) fn read(mut section: Section<'_>, d: &mut Diagnostics) -> Admin {
    let defaults = Admin::default();
    let enabled = section.boolean(d, "enabled").unwrap_or(defaults.enabled);
    let address = match section.socket_addr(d, "address") {
        Some(address) if !address.ip().is_loopback() => {
            d.report(
                &section.key_path("address"),
                format!("must be a loopback address (127.0.0.0/8 or ::1), found \"{address}\""),
            );
            defaults.address
        }
        Some(address) => address,
        None => defaults.address,
    };
    let token = section
        .string(d, "token")
        .and_then(|token| match check_token(token) {
            Some(problem) => {
                d.report(&section.key_path("token"), problem);
                None
            }
            None => Some(token.to_owned()),
        });
    section.finish(d);
    Admin {
        enabled,
        address,
        token,
    }
}

/// Why `token` is not acceptable, without ever echoing it; `None` when it is fine.
fn check_token(token: &str) -> Option<String> {
    let chars = token.chars().count();
    if chars < MIN_TOKEN_CHARS {
        return Some(format!(
            "must be at least {MIN_TOKEN_CHARS} characters long, found {chars}"
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain whitespace or control characters".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{config, errors};

    #[test]
    fn reads_all_keys() {
        let c = config(
            "[admin]\nenabled = false\naddress = \"[::1]:6000\"\ntoken = \"0123456789abcdef\"\n",
        );
        assert_eq!(
            c.admin,
            Admin {
                enabled: false,
                address: "[::1]:6000".parse().expect("address"),
                token: Some("0123456789abcdef".to_owned()),
            }
        );
    }

    #[test]
    fn accepts_any_127_address() {
        let c = config("[admin]\naddress = \"127.1.2.3:5551\"\n");
        assert_eq!(c.admin.address, "127.1.2.3:5551".parse().expect("address"));
    }

    #[test]
    fn rejects_non_loopback_address() {
        assert_eq!(
            errors("[admin]\naddress = \"0.0.0.0:5551\"\n"),
            [
                "tern.toml: admin.address: must be a loopback address (127.0.0.0/8 or ::1), \
              found \"0.0.0.0:5551\""
            ]
        );
        assert_eq!(
            errors("[admin]\naddress = \"[2001:db8::1]:5551\"\n"),
            [
                "tern.toml: admin.address: must be a loopback address (127.0.0.0/8 or ::1), \
              found \"[2001:db8::1]:5551\""
            ]
        );
    }

    #[test]
    fn rejects_short_token_without_echoing_it() {
        let lines = errors("[admin]\ntoken = \"hunter2\"\n");
        assert_eq!(
            lines,
            ["tern.toml: admin.token: must be at least 16 characters long, found 7"]
        );
        assert!(!lines[0].contains("hunter2"));
    }

    #[test]
    fn rejects_token_with_whitespace() {
        assert_eq!(
            errors("[admin]\ntoken = \"0123456789 abcdef\"\n"),
            ["tern.toml: admin.token: must not contain whitespace or control characters"]
        );
    }

    #[test]
    fn rejects_wrong_types() {
        assert_eq!(
            errors("[admin]\nenabled = \"yes\"\ntoken = 12345678901234567\n"),
            [
                "tern.toml: admin.enabled: expected a boolean, found a string",
                "tern.toml: admin.token: expected a string, found an integer",
            ]
        );
    }

    #[test]
    fn debug_redacts_token() {
        let admin = Admin {
            token: Some("super-secret-token-value".to_owned()),
            ..Admin::default()
        };
        let shown = format!("{admin:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
