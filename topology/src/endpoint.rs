//! Addresses peers dial: [`BridgeEndpoint`] (`host:port`, the host an IP address or a host
//! name) and Raft addresses (`IP:port` only, checked by [`parse_raft_addr`]). Neither may use
//! port 0 or an unspecified IP (`0.0.0.0`, `[::]`): a peer cannot dial those.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::AddressError;

/// The longest host name, in characters (RFC 1035, without a trailing dot).
const MAX_HOST_NAME_CHARS: usize = 253;

/// The host part of a [`BridgeEndpoint`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BridgeHost {
    /// An IP address.
    Ip(IpAddr),
    /// A host name, lowercased (`bridge.eu-west.example.com`); resolved when dialled.
    Name(String),
}

/// Where a DC accepts QUIC bridge connections: a host (IP address or host name) and a port.
///
/// Written `"10.0.0.1:7400"`, `"[2001:db8::1]:7400"` or `"bridge.example.com:7400"`. Host
/// names are lowercased, so two spellings of one endpoint compare equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BridgeEndpoint {
    host: BridgeHost,
    port: u16,
}

impl BridgeEndpoint {
    /// The host.
    pub fn host(&self) -> &BridgeHost {
        &self.host
    }

    /// The port, never 0.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address when the host is an IP address; `None` for a host name.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            BridgeHost::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            BridgeHost::Name(_) => None,
        }
    }
}

impl FromStr for BridgeEndpoint {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, AddressError> {
        let (host, port) = split_host_port(text)?;
        let host = match parse_ip(host) {
            Some(ip) => BridgeHost::Ip(ip),
            None if is_host_name(host) => BridgeHost::Name(host.to_ascii_lowercase()),
            None => {
                return Err(AddressError::InvalidHost {
                    found: host.to_owned(),
                });
            }
        };
        let endpoint = Self { host, port };
        if let BridgeHost::Ip(ip) = endpoint.host {
            check_dialable(SocketAddr::new(ip, port))?;
        }
        Ok(endpoint)
    }
}

impl fmt::Display for BridgeEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            BridgeHost::Ip(ip) => SocketAddr::new(*ip, self.port).fmt(f),
            BridgeHost::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl Serialize for BridgeEndpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A Raft address: `IP:port`, dialable (no port 0, no unspecified IP). Host names are not
/// allowed, so every node agrees on the address without a resolver.
pub(crate) fn parse_raft_addr(text: &str) -> Result<SocketAddr, AddressError> {
    let (host, port) = split_host_port(text)?;
    let address = match parse_ip(host) {
        Some(ip) => SocketAddr::new(ip, port),
        None if is_host_name(host) => return Err(AddressError::NotIp),
        None => {
            return Err(AddressError::InvalidHost {
                found: host.to_owned(),
            });
        }
    };
    check_dialable(address)?;
    Ok(address)
}

/// Splits `host:port` (`[v6]:port` for IPv6) and checks the port; the host is returned as
/// written, brackets included.
fn split_host_port(text: &str) -> Result<(&str, u16), AddressError> {
    let (host, port) = if text.starts_with('[') {
        let Some(end) = text.find(']') else {
            return Err(AddressError::InvalidHost {
                found: text.to_owned(),
            });
        };
        let (host, rest) = text.split_at(end + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, port),
            None if rest.is_empty() => return Err(AddressError::MissingPort),
            None => {
                return Err(AddressError::InvalidHost {
                    found: text.to_owned(),
                });
            }
        }
    } else {
        text.rsplit_once(':').ok_or(AddressError::MissingPort)?
    };
    Ok((host, parse_port(port)?))
}

/// An IPv4 address, or an IPv6 address in brackets.
fn parse_ip(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

fn check_dialable(address: SocketAddr) -> Result<(), AddressError> {
    if address.port() == 0 {
        return Err(AddressError::ZeroPort);
    }
    if address.ip().is_unspecified() {
        return Err(AddressError::Unspecified { ip: address.ip() });
    }
    Ok(())
}

fn parse_port(text: &str) -> Result<u16, AddressError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u16>() {
        Ok(0) => Err(AddressError::ZeroPort),
        Ok(port) if digits => Ok(port),
        _ => Err(AddressError::InvalidPort {
            found: text.to_owned(),
        }),
    }
}

/// Whether `text` is a host name: dot-separated labels of 1 to 63 characters from `a`-`z`
/// (either case), `0`-`9` and `-`, no label starting or ending with `-`, at most 253
/// characters, and a last label that is not all digits (that would be a malformed IPv4
/// address such as `10.0.0.256`).
fn is_host_name(text: &str) -> bool {
    if text.is_empty() || text.len() > MAX_HOST_NAME_CHARS {
        return false;
    }
    let labels_ok = text.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    let last_numeric = text
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && !last_numeric
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(text: &str) -> BridgeEndpoint {
        text.parse().expect(text)
    }

    #[test]
    fn parses_ip_and_host_name_endpoints() {
        let e = endpoint("10.0.0.1:7400");
        assert_eq!(e.host(), &BridgeHost::Ip("10.0.0.1".parse().expect("ip")));
        assert_eq!(e.port(), 7400);
        assert_eq!(
            e.socket_addr(),
            Some("10.0.0.1:7400".parse().expect("addr"))
        );
        assert_eq!(e.to_string(), "10.0.0.1:7400");

        let e = endpoint("[2001:DB8::1]:7400");
        assert_eq!(e.to_string(), "[2001:db8::1]:7400");

        let e = endpoint("Bridge.EU-west.example.com:7400");
        assert_eq!(
            e.host(),
            &BridgeHost::Name("bridge.eu-west.example.com".to_owned())
        );
        assert_eq!(e.socket_addr(), None);
        assert_eq!(e.to_string(), "bridge.eu-west.example.com:7400");
        assert_eq!(e, endpoint("bridge.eu-west.example.com:7400"));
        assert_eq!(endpoint("localhost:1").port(), 1);
    }

    #[test]
    fn rejects_malformed_endpoints() {
        let cases: [(&str, AddressError); 10] = [
            ("10.0.0.1", AddressError::MissingPort),
            ("bridge", AddressError::MissingPort),
            (
                "bridge:",
                AddressError::InvalidPort {
                    found: String::new(),
                },
            ),
            (
                "bridge:70000",
                AddressError::InvalidPort {
                    found: "70000".to_owned(),
                },
            ),
            (
                "bridge:+80",
                AddressError::InvalidPort {
                    found: "+80".to_owned(),
                },
            ),
            ("bridge:0", AddressError::ZeroPort),
            ("10.0.0.1:0", AddressError::ZeroPort),
            (
                "0.0.0.0:7400",
                AddressError::Unspecified {
                    ip: "0.0.0.0".parse().expect("ip"),
                },
            ),
            (
                "::1:7400",
                AddressError::InvalidHost {
                    found: "::1".to_owned(),
                },
            ),
            (
                "10.0.0.256:7400",
                AddressError::InvalidHost {
                    found: "10.0.0.256".to_owned(),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<BridgeEndpoint>(), Err(expected), "{text}");
        }
        assert_eq!(
            "[::1]".parse::<BridgeEndpoint>(),
            Err(AddressError::MissingPort)
        );
        assert_eq!(
            "[::1]x:1".parse::<BridgeEndpoint>(),
            Err(AddressError::InvalidHost {
                found: "[::1]x:1".to_owned()
            })
        );
        assert_eq!(
            "[nope]:7400".parse::<BridgeEndpoint>(),
            Err(AddressError::InvalidHost {
                found: "[nope]".to_owned()
            })
        );
        for host in ["-bad.example", "a..b", "under_score", "sp ace", ""] {
            let text = format!("{host}:7400");
            assert_eq!(
                text.parse::<BridgeEndpoint>(),
                Err(AddressError::InvalidHost {
                    found: host.to_owned()
                }),
                "{text}"
            );
        }
        let long = format!("{}.com:7400", "a.".repeat(126));
        assert!(long.parse::<BridgeEndpoint>().is_err());
    }

    #[test]
    fn raft_addresses_are_dialable_ip_addresses() {
        assert_eq!(
            parse_raft_addr("127.0.0.1:7500"),
            Ok("127.0.0.1:7500".parse().expect("addr"))
        );
        assert_eq!(
            parse_raft_addr("[::1]:7500"),
            Ok("[::1]:7500".parse().expect("addr"))
        );
        assert_eq!(
            parse_raft_addr("node1.example.com:7500"),
            Err(AddressError::NotIp)
        );
        assert_eq!(parse_raft_addr("node1:7500"), Err(AddressError::NotIp));
        assert_eq!(
            parse_raft_addr("::1:7500"),
            Err(AddressError::InvalidHost {
                found: "::1".to_owned()
            })
        );
        assert_eq!(parse_raft_addr("127.0.0.1"), Err(AddressError::MissingPort));
        assert_eq!(parse_raft_addr("127.0.0.1:0"), Err(AddressError::ZeroPort));
        assert_eq!(
            parse_raft_addr("127.0.0.1:99999"),
            Err(AddressError::InvalidPort {
                found: "99999".to_owned()
            })
        );
        assert_eq!(
            parse_raft_addr("[::]:7500"),
            Err(AddressError::Unspecified {
                ip: "::".parse().expect("ip")
            })
        );
    }
}
