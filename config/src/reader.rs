//! The getters for values that only `tern.toml` has, on top of the shared TOML reader
//! ([`Section`], [`Diagnostics`] from `tern-toml-check`): sizes (`"64KiB"`), durations
//! (`"30s"`), socket addresses and file paths, each recording its problem in [`Diagnostics`]
//! instead of stopping.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::Value;

pub(crate) use tern_toml_check::{Diagnostics, Section};

use crate::units::{format_duration, format_size, parse_duration, parse_size};

/// Typed getters for `tern.toml`'s own kinds of values; each marks `key` as known, gives
/// `None` when the key is not set, and reports a value it rejects.
pub(crate) trait ConfigValues {
    /// A duration string (`"30s"`).
    fn duration(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<Duration>;

    /// A duration of at least `min`.
    fn duration_at_least(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        min: Duration,
    ) -> Option<Duration>;

    /// A size: a string with a unit (`"64KiB"`) or a plain number of bytes.
    fn size(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<u64>;

    /// A size in `min..=max` bytes, as `usize`.
    fn size_in(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        min: u64,
        max: u64,
    ) -> Option<usize>;

    /// An IP socket address (`"0.0.0.0:5222"`, `"[::1]:5222"`); host names are not resolved.
    fn socket_addr(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<SocketAddr>;

    /// A non-empty file system path.
    fn file_path(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<PathBuf>;
}

impl ConfigValues for Section<'_> {
    fn duration(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<Duration> {
        let text = self.typed(d, key, "a duration string such as \"30s\"", Value::as_str)?;
        match parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(_) => {
                d.report(&self.key_path(key), format!("invalid duration {text:?}"));
                None
            }
        }
    }

    fn duration_at_least(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        min: Duration,
    ) -> Option<Duration> {
        let duration = self.duration(d, key)?;
        if duration < min {
            d.report(
                &self.key_path(key),
                format!(
                    "must be at least {}, found {}",
                    format_duration(min),
                    format_duration(duration)
                ),
            );
            return None;
        }
        Some(duration)
    }

    fn size(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<u64> {
        let value = self.typed(
            d,
            key,
            "a size such as \"64KiB\" or a number of bytes",
            |v| match v {
                Value::String(_) | Value::Integer(_) => Some(v),
                _ => None,
            },
        )?;
        let parsed = match value {
            Value::Integer(n) => {
                u64::try_from(*n).map_err(|_| format!("invalid size {n}: must not be negative"))
            }
            Value::String(text) => {
                parse_size(text).map_err(|e| format!("invalid size {text:?}: {e}"))
            }
            // `typed` above only lets strings and integers through.
            _ => return None,
        };
        match parsed {
            Ok(bytes) => Some(bytes),
            Err(rule) => {
                d.report(&self.key_path(key), rule);
                None
            }
        }
    }

    fn size_in(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        min: u64,
        max: u64,
    ) -> Option<usize> {
        let bytes = self.size(d, key)?;
        let converted = usize::try_from(bytes)
            .ok()
            .filter(|_| (min..=max).contains(&bytes));
        if converted.is_none() {
            d.report(
                &self.key_path(key),
                format!(
                    "must be between {} and {}, found {}",
                    format_size(min),
                    format_size(max),
                    format_size(bytes)
                ),
            );
        }
        converted
    }

    fn socket_addr(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<SocketAddr> {
        let text = self.typed(d, key, "an address such as \"0.0.0.0:5222\"", Value::as_str)?;
        match text.parse() {
            Ok(address) => Some(address),
            Err(_) => {
                d.report(
                    &self.key_path(key),
                    format!(
                        "invalid socket address {text:?}: expected IP:port such as \
                         \"0.0.0.0:5222\" or \"[::]:5222\""
                    ),
                );
                None
            }
        }
    }

    fn file_path(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<PathBuf> {
        self.non_empty_string(d, key).map(PathBuf::from)
    }
}

#[cfg(test)]
mod tests {
    use toml::Table;

    use super::*;

    fn table(text: &str) -> Table {
        text.parse().expect("valid toml")
    }

    #[test]
    fn reads_config_values() {
        let t = table(
            "d = \"1m\"\nsize = \"2KiB\"\nbytes = 512\naddr = \"[::1]:5222\"\npath = \"a/b\"\n",
        );
        let mut d = Diagnostics::new("f.toml");
        let mut root = Section::root(&t);
        assert_eq!(root.duration(&mut d, "d"), Some(Duration::from_secs(60)));
        assert_eq!(root.size_in(&mut d, "size", 1024, 4096), Some(2048));
        assert_eq!(root.size(&mut d, "bytes"), Some(512));
        assert_eq!(
            root.socket_addr(&mut d, "addr"),
            Some("[::1]:5222".parse().expect("address"))
        );
        assert_eq!(root.file_path(&mut d, "path"), Some(PathBuf::from("a/b")));
        assert_eq!(root.duration(&mut d, "unset"), None);
        root.finish(&mut d);
        assert_eq!(d.into_result(()), Ok(()));
    }

    #[test]
    fn reports_rejected_config_values() {
        let t = table(
            "d = \"soon\"\nshort = \"500ms\"\nneg = -1\nbig = \"1MiB\"\nunit = \"1.5KiB\"\n\
             kind = true\naddr = \"localhost:5222\"\npath = \"\"\n",
        );
        let mut d = Diagnostics::new("f.toml");
        let mut root = Section::root(&t);
        assert_eq!(root.duration(&mut d, "d"), None);
        let second = Duration::from_secs(1);
        assert_eq!(root.duration_at_least(&mut d, "short", second), None);
        assert_eq!(root.size(&mut d, "neg"), None);
        assert_eq!(root.size_in(&mut d, "big", 1024, 4096), None);
        assert_eq!(root.size(&mut d, "unit"), None);
        assert_eq!(root.size(&mut d, "kind"), None);
        assert_eq!(root.socket_addr(&mut d, "addr"), None);
        assert_eq!(root.file_path(&mut d, "path"), None);
        root.finish(&mut d);
        let lines: Vec<String> = match d.into_result(()) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(
            lines,
            [
                "f.toml: d: invalid duration \"soon\"",
                "f.toml: short: must be at least 1s, found 500ms",
                "f.toml: neg: invalid size -1: must not be negative",
                "f.toml: big: must be between 1KiB and 4KiB, found 1MiB",
                "f.toml: unit: invalid size \"1.5KiB\": expected a whole number of bytes, \
                 optionally followed by B, KiB, MiB or GiB",
                "f.toml: kind: expected a size such as \"64KiB\" or a number of bytes, \
                 found a boolean",
                "f.toml: addr: invalid socket address \"localhost:5222\": expected IP:port \
                 such as \"0.0.0.0:5222\" or \"[::]:5222\"",
                "f.toml: path: must not be empty",
            ]
        );
    }
}
