//! `[limits]`: per-stanza parser limits, connection and handshake limits, and the per-session
//! outbound queue bound.

use std::time::Duration;

use crate::reader::{ConfigValues, Diagnostics, Section};
use crate::units::{KIB, MIB};

/// Smallest `max_stanza_size` accepted, in bytes (1KiB).
pub const MIN_STANZA_SIZE: usize = 1024;
/// Largest `max_stanza_size` accepted, in bytes (16MiB).
pub const MAX_STANZA_SIZE: usize = 16 * 1024 * 1024;

/// The `[limits]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest stanza accepted, in bytes, 1KiB..=16MiB; a bigger one ends the stream with
    /// `<policy-violation/>`. Default 64KiB.
    pub max_stanza_size: usize,
    /// Deepest element nesting inside one stanza, 2..=256. Default 32.
    pub max_depth: usize,
    /// Most attributes on one element, 1..=1024. Default 64.
    pub max_attributes: usize,
    /// Most concurrent client connections on this node, at least 1. Default 10000.
    pub max_connections: usize,
    /// Time from TCP accept until the session is bound, at least 1s. Default 60s.
    pub handshake_timeout: Duration,
    /// Outbound stanzas queued per session before it is closed with `<resource-constraint/>`,
    /// 16..=1000000. Default 1024.
    pub session_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stanza_size: 64 * 1024,
            max_depth: 32,
            max_attributes: 64,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(60),
            session_queue: 1024,
        }
    }
}

/// Reads `[limits]`, falling back to the default for every key not set or not valid.
pub(crate) fn read(mut section: Section<'_>, d: &mut Diagnostics) -> Limits {
    let defaults = Limits::default();
    let limits = Limits {
        max_stanza_size: section
            .size_in(d, "max_stanza_size", KIB, 16 * MIB)
            .unwrap_or(defaults.max_stanza_size),
        max_depth: section
            .integer_in(d, "max_depth", 2, Some(256))
            .unwrap_or(defaults.max_depth),
        max_attributes: section
            .integer_in(d, "max_attributes", 1, Some(1024))
            .unwrap_or(defaults.max_attributes),
        max_connections: section
            .integer_in(d, "max_connections", 1, None)
            .unwrap_or(defaults.max_connections),
        handshake_timeout: section
            .duration_at_least(d, "handshake_timeout", Duration::from_secs(1))
            .unwrap_or(defaults.handshake_timeout),
        session_queue: section
            .integer_in(d, "session_queue", 16, Some(1_000_000))
            .unwrap_or(defaults.session_queue),
    };
    section.finish(d);
    limits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{config, errors};

    fn stanza_size(value: &str) -> Result<usize, Vec<String>> {
        let text = format!("[limits]\nmax_stanza_size = {value}\n");
        match crate::Config::from_toml_str(&text, "tern.toml") {
            Ok(c) => Ok(c.limits.max_stanza_size),
            Err(e) => Err(e.iter().map(ToString::to_string).collect()),
        }
    }

    #[test]
    fn sizes_accept_units_and_plain_bytes() {
        assert_eq!(stanza_size("\"64KiB\""), Ok(65536));
        assert_eq!(stanza_size("\"1MiB\""), Ok(1_048_576));
        assert_eq!(stanza_size("\"16MiB\""), Ok(16_777_216));
        assert_eq!(stanza_size("\"1024B\""), Ok(1024));
        assert_eq!(stanza_size("\"2048\""), Ok(2048));
        assert_eq!(stanza_size("4096"), Ok(4096));
    }

    #[test]
    fn sizes_reject_fractions_and_unknown_units() {
        assert_eq!(
            stanza_size("\"1.5KiB\""),
            Err(vec![
                "tern.toml: limits.max_stanza_size: invalid size \"1.5KiB\": expected a whole \
                 number of bytes, optionally followed by B, KiB, MiB or GiB"
                    .to_owned()
            ])
        );
        assert_eq!(
            stanza_size("\"64KB\""),
            Err(vec![
                "tern.toml: limits.max_stanza_size: invalid size \"64KB\": expected a whole \
                 number of bytes, optionally followed by B, KiB, MiB or GiB"
                    .to_owned()
            ])
        );
        assert_eq!(
            stanza_size("-5"),
            Err(vec![
                "tern.toml: limits.max_stanza_size: invalid size -5: must not be negative"
                    .to_owned()
            ])
        );
        assert_eq!(
            stanza_size("1.5"),
            Err(vec![
                "tern.toml: limits.max_stanza_size: expected a size such as \"64KiB\" or a \
                 number of bytes, found a float"
                    .to_owned()
            ])
        );
    }

    #[test]
    fn sizes_outside_range_are_rejected() {
        assert_eq!(
            stanza_size("\"512\""),
            Err(vec![
                "tern.toml: limits.max_stanza_size: must be between 1KiB and 16MiB, found 512B"
                    .to_owned()
            ])
        );
        assert_eq!(
            stanza_size("\"17MiB\""),
            Err(vec![
                "tern.toml: limits.max_stanza_size: must be between 1KiB and 16MiB, found 17MiB"
                    .to_owned()
            ])
        );
    }

    #[test]
    fn reads_all_keys() {
        let c = config(
            "[limits]\nmax_stanza_size = \"256KiB\"\nmax_depth = 2\nmax_attributes = 1024\n\
             max_connections = 1\nhandshake_timeout = \"1s\"\nsession_queue = 16\n",
        );
        assert_eq!(
            c.limits,
            Limits {
                max_stanza_size: 262_144,
                max_depth: 2,
                max_attributes: 1024,
                max_connections: 1,
                handshake_timeout: Duration::from_secs(1),
                session_queue: 16,
            }
        );
    }

    #[test]
    fn rejects_counts_out_of_range() {
        assert_eq!(
            errors(
                "[limits]\nmax_depth = 1\nmax_attributes = 1025\nmax_connections = 0\n\
                 session_queue = 1_000_001\n"
            ),
            [
                "tern.toml: limits.max_depth: must be between 2 and 256, found 1",
                "tern.toml: limits.max_attributes: must be between 1 and 1024, found 1025",
                "tern.toml: limits.max_connections: must be at least 1, found 0",
                "tern.toml: limits.session_queue: must be between 16 and 1000000, found 1000001",
            ]
        );
        assert_eq!(
            errors("[limits]\nmax_depth = 257\nsession_queue = 15\n"),
            [
                "tern.toml: limits.max_depth: must be between 2 and 256, found 257",
                "tern.toml: limits.session_queue: must be between 16 and 1000000, found 15",
            ]
        );
    }

    #[test]
    fn rejects_short_handshake_timeout() {
        assert_eq!(
            errors("[limits]\nhandshake_timeout = \"500ms\"\n"),
            ["tern.toml: limits.handshake_timeout: must be at least 1s, found 500ms"]
        );
        assert_eq!(
            errors("[limits]\nhandshake_timeout = \"soon\"\n"),
            ["tern.toml: limits.handshake_timeout: invalid duration \"soon\""]
        );
    }

    #[test]
    fn limit_constants_match_rules() {
        assert_eq!(MIN_STANZA_SIZE as u64, KIB);
        assert_eq!(MAX_STANZA_SIZE as u64, 16 * MIB);
    }
}
