//! `[[listen.c2s]]`: the client (c2s) listeners, each with its address and TLS mode;
//! `[[listen.http]]`: the HTTP listeners for web clients (WebSocket, BOSH).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use crate::reader::{ConfigValues, Diagnostics, Section};

/// The `[listen]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Client listeners, at least one. Default: STARTTLS on `0.0.0.0:5222` and direct TLS on
    /// `0.0.0.0:5223`.
    pub c2s: Vec<C2sListener>,
    /// HTTP listeners for web clients (`[http]` says what they serve); may be empty. Default:
    /// plain HTTP on `127.0.0.1:5280` (for a TLS-terminating proxy in front, or local pages)
    /// and HTTPS with the node's certificate on `0.0.0.0:5443`.
    pub http: Vec<HttpListener>,
}

impl Default for Listen {
    fn default() -> Self {
        let any = Ipv4Addr::UNSPECIFIED;
        Self {
            c2s: vec![
                C2sListener {
                    address: SocketAddr::from((any, 5222)),
                    tls: TlsMode::StartTls,
                    starttls_required: true,
                },
                C2sListener {
                    address: SocketAddr::from((any, 5223)),
                    tls: TlsMode::Direct,
                    starttls_required: true,
                },
            ],
            http: vec![
                HttpListener {
                    address: SocketAddr::from((Ipv4Addr::LOCALHOST, 5280)),
                    tls: HttpTls::None,
                    secure: false,
                },
                HttpListener {
                    address: SocketAddr::from((any, 5443)),
                    tls: HttpTls::Direct,
                    secure: true,
                },
            ],
        }
    }
}

/// One `[[listen.http]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpListener {
    /// IP address and port to bind (required); port 0 picks a free port.
    pub address: SocketAddr,
    /// Plain HTTP or HTTPS. Default [`HttpTls::None`].
    pub tls: HttpTls,
    /// Whether streams on this listener count as encrypted (PLAIN and channel-binding-free
    /// mechanisms allowed). Always true with HTTPS; set it on plain HTTP only behind a proxy
    /// that terminates TLS. Default: true with HTTPS, false without.
    pub secure: bool,
}

/// Whether an HTTP listener speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpTls {
    /// Plain HTTP; written `"none"`.
    None,
    /// HTTPS with the node's certificate; written `"direct"`.
    Direct,
}

/// One `[[listen.c2s]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct C2sListener {
    /// IP address and port to bind (required). Port 0 picks a free port and is exempt from the
    /// uniqueness check.
    pub address: SocketAddr,
    /// How TLS starts on this listener. Default [`TlsMode::StartTls`].
    pub tls: TlsMode,
    /// Whether clients must use STARTTLS before authenticating. Only meaningful for
    /// [`TlsMode::StartTls`]; ignored for direct TLS. Default `true`.
    pub starttls_required: bool,
}

/// How TLS starts on a client listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// Plain TCP, upgraded with STARTTLS (RFC 6120 §5); written `"starttls"`.
    StartTls,
    /// TLS from the first byte (XEP-0368); written `"direct"`.
    Direct,
}

impl TlsMode {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartTls => "starttls",
            Self::Direct => "direct",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads `[listen]`; when `c2s` is not set the two default listeners are used.
pub(crate) fn read(mut section: Section<'_>, d: &mut Diagnostics) -> Listen {
    let c2s_path = section.key_path("c2s");
    let c2s = match section.sections(d, "c2s") {
        None => Listen::default().c2s,
        Some(entries) => {
            if entries.is_empty() {
                d.report(&c2s_path, "must list at least one listener");
            }
            entries
                .into_iter()
                .map(|entry| match entry {
                    Some(entry) => read_c2s(entry, d),
                    // Not a table (reported); a stand-in keeps later indexes aligned.
                    None => stand_in(),
                })
                .collect()
        }
    };
    let http = match section.sections(d, "http") {
        None => Listen::default().http,
        Some(entries) => entries
            .into_iter()
            .map(|entry| match entry {
                Some(entry) => read_http(entry, d),
                None => Listen::default().http[0].clone(),
            })
            .collect(),
    };
    section.finish(d);
    Listen { c2s, http }
}

fn read_http(mut entry: Section<'_>, d: &mut Diagnostics) -> HttpListener {
    if !entry.contains("address") {
        d.report(&entry.key_path("address"), "missing required key");
    }
    let fallback = &Listen::default().http[0];
    let tls = entry
        .choice(
            d,
            "tls",
            &[("none", HttpTls::None), ("direct", HttpTls::Direct)],
        )
        .unwrap_or(fallback.tls);
    let secure_path = entry.key_path("secure");
    let secure = match entry.boolean(d, "secure") {
        Some(false) if tls == HttpTls::Direct => {
            d.report(&secure_path, "cannot be false with tls = \"direct\"");
            true
        }
        Some(secure) => secure,
        None => tls == HttpTls::Direct,
    };
    let listener = HttpListener {
        address: entry.socket_addr(d, "address").unwrap_or(fallback.address),
        tls,
        secure,
    };
    entry.finish(d);
    listener
}

fn read_c2s(mut entry: Section<'_>, d: &mut Diagnostics) -> C2sListener {
    if !entry.contains("address") {
        d.report(&entry.key_path("address"), "missing required key");
    }
    let fallback = stand_in();
    let listener = C2sListener {
        address: entry.socket_addr(d, "address").unwrap_or(fallback.address),
        tls: entry
            .choice(
                d,
                "tls",
                &[("starttls", TlsMode::StartTls), ("direct", TlsMode::Direct)],
            )
            .unwrap_or(fallback.tls),
        starttls_required: entry
            .boolean(d, "starttls_required")
            .unwrap_or(fallback.starttls_required),
    };
    entry.finish(d);
    listener
}

/// Placeholder for an entry or field that had an error; the configuration is rejected anyway.
fn stand_in() -> C2sListener {
    C2sListener {
        address: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5222)),
        tls: TlsMode::StartTls,
        starttls_required: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{config, errors};

    #[test]
    fn entries_replace_the_defaults() {
        let c = config(
            "[[listen.c2s]]\naddress = \"[::]:5222\"\n\n\
             [[listen.c2s]]\naddress = \"127.0.0.1:5223\"\ntls = \"direct\"\n\n\
             [[listen.c2s]]\naddress = \"127.0.0.1:6222\"\ntls = \"starttls\"\nstarttls_required = false\n",
        );
        assert_eq!(
            c.listen.c2s,
            [
                C2sListener {
                    address: "[::]:5222".parse().expect("address"),
                    tls: TlsMode::StartTls,
                    starttls_required: true,
                },
                C2sListener {
                    address: "127.0.0.1:5223".parse().expect("address"),
                    tls: TlsMode::Direct,
                    starttls_required: true,
                },
                C2sListener {
                    address: "127.0.0.1:6222".parse().expect("address"),
                    tls: TlsMode::StartTls,
                    starttls_required: false,
                },
            ]
        );
    }

    #[test]
    fn starttls_required_false_is_allowed_on_direct() {
        let c = config(
            "[[listen.c2s]]\naddress = \"127.0.0.1:5223\"\ntls = \"direct\"\nstarttls_required = false\n",
        );
        assert_eq!(c.listen.c2s[0].tls, TlsMode::Direct);
        assert!(!c.listen.c2s[0].starttls_required);
    }

    #[test]
    fn rejects_unknown_tls_mode() {
        assert_eq!(
            errors(
                "[[listen.c2s]]\naddress = \"0.0.0.0:5222\"\n\n\
                 [[listen.c2s]]\naddress = \"0.0.0.0:5223\"\ntls = \"tsl\"\n"
            ),
            ["tern.toml: listen.c2s[1].tls: expected \"starttls\" or \"direct\", found \"tsl\""]
        );
        assert_eq!(
            errors("[[listen.c2s]]\naddress = \"0.0.0.0:5222\"\ntls = true\n"),
            ["tern.toml: listen.c2s[0].tls: expected \"starttls\" or \"direct\", found a boolean"]
        );
    }

    #[test]
    fn rejects_missing_and_invalid_address() {
        assert_eq!(
            errors("[[listen.c2s]]\ntls = \"direct\"\n"),
            ["tern.toml: listen.c2s[0].address: missing required key"]
        );
        assert_eq!(
            errors("[[listen.c2s]]\naddress = \"localhost:5222\"\n"),
            [
                "tern.toml: listen.c2s[0].address: invalid socket address \"localhost:5222\": \
              expected IP:port such as \"0.0.0.0:5222\" or \"[::]:5222\""
            ]
        );
        assert_eq!(
            errors("[[listen.c2s]]\naddress = 5222\n"),
            [
                "tern.toml: listen.c2s[0].address: expected an address such as \"0.0.0.0:5222\", \
              found an integer"
            ]
        );
    }

    #[test]
    fn rejects_unknown_key_in_entry() {
        assert_eq!(
            errors("[[listen.c2s]]\naddress = \"0.0.0.0:5222\"\nprot = 5222\n"),
            ["tern.toml: listen.c2s[0].prot: unknown key"]
        );
        assert_eq!(
            errors("[listen]\ns2s = []\n"),
            ["tern.toml: listen.s2s: unknown key"]
        );
    }

    #[test]
    fn rejects_empty_list_and_bad_shapes() {
        assert_eq!(
            errors("[listen]\nc2s = []\n"),
            ["tern.toml: listen.c2s: must list at least one listener"]
        );
        assert_eq!(
            errors("[listen]\nc2s = \"0.0.0.0:5222\"\n"),
            ["tern.toml: listen.c2s: expected an array of tables, found a string"]
        );
        assert_eq!(
            errors("[listen]\nc2s = [{ address = \"0.0.0.0:5222\" }, 7]\n"),
            ["tern.toml: listen.c2s[1]: expected a table, found an integer"]
        );
        assert_eq!(
            errors("listen = 1\n"),
            ["tern.toml: listen: expected a table, found an integer"]
        );
        assert_eq!(
            errors("[[listen.c2s]]\naddress = \"0.0.0.0:5222\"\nstarttls_required = \"yes\"\n"),
            ["tern.toml: listen.c2s[0].starttls_required: expected a boolean, found a string"]
        );
    }

    #[test]
    fn tls_mode_names() {
        assert_eq!(TlsMode::StartTls.to_string(), "starttls");
        assert_eq!(TlsMode::Direct.as_str(), "direct");
    }
}
