//! `[http]`: web client transports on the HTTP listeners (`[[listen.http]]`): XMPP over
//! WebSocket (RFC 7395) and BOSH (XEP-0124/0206), their paths, the origins allowed, and limits.

use std::time::Duration;

use crate::reader::{ConfigValues, Diagnostics, Section};
use crate::units::{KIB, MIB};

/// The `[http]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http {
    /// Path of the WebSocket endpoint; `None` (written `""`) turns WebSocket off. Default `/ws`.
    pub websocket_path: Option<String>,
    /// Path of the BOSH endpoint; `None` (written `""`) turns BOSH off. Default `/http-bind`.
    pub bosh_path: Option<String>,
    /// Origins (`scheme://host[:port]`) whose pages may connect; empty (the default) allows
    /// every origin. Requests without an `Origin` header (not from a browser) are always
    /// allowed.
    pub allowed_origins: Vec<String>,
    /// Largest WebSocket message or BOSH request body accepted, 1KiB..=16MiB. Default 256KiB
    /// (a body may carry several stanzas; each stanza is also held to `limits.max_stanza_size`).
    pub max_message_size: usize,
    /// Most WebSocket and BOSH sessions open at once from one IP address, at least 1. Default
    /// 100.
    pub max_sessions_per_ip: usize,
    /// BOSH settings.
    pub bosh: Bosh,
}

/// `[http.bosh]`: the limits a BOSH session negotiates within (XEP-0124 §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bosh {
    /// Longest a request may wait for data (`wait`), at least 1s. Default 60s.
    pub max_wait: Duration,
    /// Most requests the server holds at once (`hold`), 1..=5. Default 1.
    pub max_hold: u32,
    /// Most requests a client may have open at once (`requests`), at least `max_hold + 1`.
    /// Default 2.
    pub max_requests: u32,
    /// Longest time without a request before the session counts as gone (`inactivity`), at
    /// least 5s. Default 60s. With stream management the session then waits for resumption.
    pub inactivity: Duration,
    /// Shortest interval between empty requests when the client polls (`polling`). Default 2s.
    pub polling: Duration,
    /// Longest pause a client may ask for (`maxpause`). Default 120s.
    pub max_pause: Duration,
}

impl Default for Bosh {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(60),
            max_hold: 1,
            max_requests: 2,
            inactivity: Duration::from_secs(60),
            polling: Duration::from_secs(2),
            max_pause: Duration::from_secs(120),
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Self {
            websocket_path: Some("/ws".to_owned()),
            bosh_path: Some("/http-bind".to_owned()),
            allowed_origins: Vec::new(),
            max_message_size: 256 * 1024,
            max_sessions_per_ip: 100,
            bosh: Bosh::default(),
        }
    }
}

/// Reads `[http]`, falling back to the default for every key not set or not valid.
pub(crate) fn read(mut section: Section<'_>, d: &mut Diagnostics) -> Http {
    let defaults = Http::default();
    let websocket_path = path(&mut section, d, "websocket_path", defaults.websocket_path);
    let bosh_path = path(&mut section, d, "bosh_path", defaults.bosh_path);
    if websocket_path.is_some() && websocket_path == bosh_path {
        d.report(
            &section.key_path("bosh_path"),
            "must differ from http.websocket_path",
        );
    }
    let allowed_origins = section
        .string_array(d, "allowed_origins")
        .map(|entries| {
            entries
                .into_iter()
                .filter_map(|(path, origin)| {
                    let origin = origin?;
                    let valid = ["http://", "https://"].iter().any(|scheme| {
                        origin.strip_prefix(scheme).is_some_and(|rest| {
                            let host = rest.trim_end_matches('/');
                            !host.is_empty() && !host.contains(['/', ' '])
                        })
                    });
                    if !valid {
                        d.report(
                            &path,
                            format!("expected an origin like \"https://chat.example.com\", found {origin:?}"),
                        );
                        return None;
                    }
                    Some(origin.trim_end_matches('/').to_ascii_lowercase())
                })
                .collect()
        })
        .unwrap_or(defaults.allowed_origins);
    let max_message_size = section
        .size_in(d, "max_message_size", KIB, 16 * MIB)
        .unwrap_or(defaults.max_message_size);
    let max_sessions_per_ip = section
        .integer_in(d, "max_sessions_per_ip", 1, None)
        .unwrap_or(defaults.max_sessions_per_ip);
    let bosh = read_bosh(section.section(d, "bosh"), d);
    section.finish(d);
    Http {
        websocket_path,
        bosh_path,
        allowed_origins,
        max_message_size,
        max_sessions_per_ip,
        bosh,
    }
}

/// An endpoint path: starts with `/`; `""` turns the endpoint off.
fn path(
    section: &mut Section<'_>,
    d: &mut Diagnostics,
    key: &'static str,
    default: Option<String>,
) -> Option<String> {
    match section.string(d, key) {
        None => default,
        Some("") => None,
        Some(p) if p.starts_with('/') && !p.contains(char::is_whitespace) => Some(p.to_owned()),
        Some(p) => {
            d.report(
                &section.key_path(key),
                format!(
                    "expected a path starting with \"/\" (or \"\" to turn it off), found {p:?}"
                ),
            );
            default
        }
    }
}

fn read_bosh(mut section: Section<'_>, d: &mut Diagnostics) -> Bosh {
    let defaults = Bosh::default();
    let max_hold = section
        .integer_in(d, "max_hold", 1, Some(5))
        .unwrap_or(defaults.max_hold);
    let requests_path = section.key_path("max_requests");
    let max_requests = section
        .integer_in(d, "max_requests", 2, Some(10))
        .unwrap_or(defaults.max_requests);
    if max_requests <= max_hold {
        d.report(
            &requests_path,
            format!("must be more than max_hold ({max_hold}), found {max_requests}"),
        );
    }
    let bosh = Bosh {
        max_wait: section
            .duration_at_least(d, "max_wait", Duration::from_secs(1))
            .unwrap_or(defaults.max_wait),
        max_hold,
        max_requests,
        inactivity: section
            .duration_at_least(d, "inactivity", Duration::from_secs(5))
            .unwrap_or(defaults.inactivity),
        polling: section.duration(d, "polling").unwrap_or(defaults.polling),
        max_pause: section
            .duration(d, "max_pause")
            .unwrap_or(defaults.max_pause),
    };
    section.finish(d);
    bosh
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{config, errors};

    #[test]
    fn defaults_and_settings() {
        assert_eq!(config("").http, Http::default());
        let c = config(
            "[http]\nwebsocket_path = \"/xmpp-websocket\"\nbosh_path = \"\"\n\
             allowed_origins = [\"https://Chat.Example.com/\"]\nmax_message_size = \"64KiB\"\n\
             max_sessions_per_ip = 3\n\n[http.bosh]\nmax_wait = \"30s\"\nmax_hold = 2\n\
             max_requests = 3\ninactivity = \"20s\"\npolling = \"1s\"\nmax_pause = \"60s\"\n",
        );
        assert_eq!(c.http.websocket_path.as_deref(), Some("/xmpp-websocket"));
        assert_eq!(c.http.bosh_path, None);
        assert_eq!(c.http.allowed_origins, ["https://chat.example.com"]);
        assert_eq!(c.http.max_message_size, 64 * 1024);
        assert_eq!(c.http.max_sessions_per_ip, 3);
        assert_eq!(c.http.bosh.max_wait, Duration::from_secs(30));
        assert_eq!(c.http.bosh.max_hold, 2);
        assert_eq!(c.http.bosh.max_requests, 3);
        assert_eq!(c.http.bosh.inactivity, Duration::from_secs(20));
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            errors("[http]\nwebsocket_path = \"ws\"\n"),
            [
                "tern.toml: http.websocket_path: expected a path starting with \"/\" (or \"\" to turn it off), found \"ws\""
            ]
        );
        assert_eq!(
            errors("[http]\nbosh_path = \"/ws\"\n"),
            ["tern.toml: http.bosh_path: must differ from http.websocket_path"]
        );
        assert_eq!(
            errors("[http]\nallowed_origins = [\"chat.example.com\"]\n"),
            [
                "tern.toml: http.allowed_origins[0]: expected an origin like \"https://chat.example.com\", found \"chat.example.com\""
            ]
        );
        assert_eq!(
            errors("[http.bosh]\nmax_hold = 2\n"),
            ["tern.toml: http.bosh.max_requests: must be more than max_hold (2), found 2"]
        );
        assert_eq!(
            errors("[http.bosh]\ninactivity = \"1s\"\n"),
            ["tern.toml: http.bosh.inactivity: must be at least 5s, found 1s"]
        );
        assert_eq!(
            errors("[http]\nmax_sessions_per_ip = 0\n"),
            ["tern.toml: http.max_sessions_per_ip: must be at least 1, found 0"]
        );
    }
}
