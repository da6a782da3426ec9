//! Walks a parsed TOML table key by key. [`Section`] hands out typed values (strings, integers
//! in a range, sizes, durations, addresses, paths, choices), records every problem in
//! [`Diagnostics`] instead of stopping at the first, and at [`Section::finish`] reports every key
//! it was never asked for as unknown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

use crate::error::{ConfigError, ConfigErrors};
use crate::units::{format_duration, format_size, parse_duration, parse_size};

/// Collects the problems found in one file.
#[derive(Debug)]
pub(crate) struct Diagnostics {
    file: String,
    errors: Vec<ConfigError>,
}

impl Diagnostics {
    /// Starts an empty list for `file`.
    pub(crate) fn new(file: &str) -> Self {
        Self {
            file: file.to_owned(),
            errors: Vec::new(),
        }
    }

    /// Records that the value at `key` breaks `rule`.
    pub(crate) fn report(&mut self, key: &str, rule: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            key: key.to_owned(),
            rule: rule.into(),
        });
    }

    /// Whether a problem was recorded at `key` or at a table or array that contains it; checks
    /// that compare values skip such keys, because their value is a stand-in.
    pub(crate) fn has_error_at(&self, key: &str) -> bool {
        self.errors.iter().any(|e| {
            key == e.key
                || key
                    .strip_prefix(e.key.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }

    /// `Ok(value)` when nothing was recorded, otherwise every recorded problem.
    pub(crate) fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors {
                errors: self.errors,
            })
        }
    }
}

/// One TOML table being read, with its key path (`""` for the root, `listen.c2s[0]`, ...).
///
/// A missing table reads as empty, so every key falls back to its default.
#[derive(Debug)]
pub(crate) struct Section<'a> {
    path: String,
    table: Option<&'a Table>,
    known: Vec<&'static str>,
}

impl<'a> Section<'a> {
    /// The top-level table of a file.
    pub(crate) fn root(table: &'a Table) -> Self {
        Self::at(String::new(), Some(table))
    }

    fn at(path: String, table: Option<&'a Table>) -> Self {
        Self {
            path,
            table,
            known: Vec::new(),
        }
    }

    /// The full path of `key` inside this section, as written in error messages.
    pub(crate) fn key_path(&self, key: &str) -> String {
        let key = display_key(key);
        if self.path.is_empty() {
            key
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Whether the file sets `key` in this section.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.table.is_some_and(|t| t.contains_key(key))
    }

    /// Marks `key` as known and returns its value when set.
    fn take(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.table.and_then(|t| t.get(key))
    }

    /// Takes `key` and converts it with `convert`; when that gives `None` the value has the
    /// wrong type and `expected a/an <expected>, found <actual>` is reported.
    fn typed<T>(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        expected: &str,
        convert: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let value = self.take(key)?;
        let converted = convert(value);
        if converted.is_none() {
            d.report(
                &self.key_path(key),
                format!("expected {expected}, found {}", describe(value)),
            );
        }
        converted
    }

    /// The sub-table `key`; empty when it is not set or is not a table (reported).
    pub(crate) fn section(&mut self, d: &mut Diagnostics, key: &'static str) -> Self {
        let table = self.typed(d, key, "a table", Value::as_table);
        Self::at(self.key_path(key), table)
    }

    /// The array of tables `key` (`[[listen.c2s]]`), one entry per element; elements that are
    /// not tables are reported and given as `None`. `None` when the key is not set or is not an
    /// array (reported).
    pub(crate) fn sections(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
    ) -> Option<Vec<Option<Self>>> {
        let items = self.typed(d, key, "an array of tables", Value::as_array)?;
        let path = self.key_path(key);
        let sections = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item_path = format!("{path}[{i}]");
                match item.as_table() {
                    Some(table) => Some(Self::at(item_path, Some(table))),
                    None => {
                        d.report(
                            &item_path,
                            format!("expected a table, found {}", describe(item)),
                        );
                        None
                    }
                }
            })
            .collect();
        Some(sections)
    }

    /// A string.
    pub(crate) fn string(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<&'a str> {
        self.typed(d, key, "a string", Value::as_str)
    }

    /// A non-empty string.
    pub(crate) fn non_empty_string(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
    ) -> Option<&'a str> {
        let text = self.string(d, key)?;
        if text.is_empty() {
            d.report(&self.key_path(key), "must not be empty");
            return None;
        }
        Some(text)
    }

    /// A boolean.
    pub(crate) fn boolean(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<bool> {
        self.typed(d, key, "a boolean", Value::as_bool)
    }

    /// An integer in `min..=max` (`max` `None`: no upper bound besides what `T` holds).
    pub(crate) fn integer_in<T: TryFrom<i64>>(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        min: i64,
        max: Option<i64>,
    ) -> Option<T> {
        let value = self.typed(d, key, "an integer", Value::as_integer)?;
        let in_range = value >= min && max.is_none_or(|max| value <= max);
        let converted = T::try_from(value).ok().filter(|_| in_range);
        if converted.is_none() {
            let rule = match max {
                Some(max) => format!("must be between {min} and {max}, found {value}"),
                None if in_range => format!("is too large, found {value}"),
                None => format!("must be at least {min}, found {value}"),
            };
            d.report(&self.key_path(key), rule);
        }
        converted
    }

    /// A duration string (`"30s"`).
    pub(crate) fn duration(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<Duration> {
        let text = self.typed(d, key, "a duration string such as \"30s\"", Value::as_str)?;
        match parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(_) => {
                d.report(&self.key_path(key), format!("invalid duration {text:?}"));
                None
            }
        }
    }

    /// A duration of at least `min`.
    pub(crate) fn duration_at_least(
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

    /// A size: a string with a unit (`"64KiB"`) or a plain number of bytes.
    pub(crate) fn size(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<u64> {
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

    /// A size in `min..=max` bytes, as `usize`.
    pub(crate) fn size_in(
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

    /// An IP socket address (`"0.0.0.0:5222"`, `"[::1]:5222"`); host names are not resolved.
    pub(crate) fn socket_addr(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
    ) -> Option<SocketAddr> {
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

    /// A non-empty file system path.
    pub(crate) fn file_path(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<PathBuf> {
        self.non_empty_string(d, key).map(PathBuf::from)
    }

    /// One of a fixed set of strings, mapped to its value.
    pub(crate) fn choice<T: Copy>(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let value = self.take(key)?;
        let chosen = value
            .as_str()
            .and_then(|text| options.iter().find(|(name, _)| *name == text))
            .map(|(_, v)| *v);
        if chosen.is_none() {
            let found = match value.as_str() {
                Some(text) => format!("{text:?}"),
                None => describe(value).to_owned(),
            };
            let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
            d.report(
                &self.key_path(key),
                format!("expected {}, found {found}", alternatives(&names)),
            );
        }
        chosen
    }

    /// An array of strings: one entry per element with its key path, `None` for elements that
    /// are not strings (reported). `None` when the key is not set or is not an array (reported).
    pub(crate) fn string_array(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
    ) -> Option<Vec<(String, Option<&'a str>)>> {
        let items = self.typed(d, key, "an array of strings", Value::as_array)?;
        let path = self.key_path(key);
        let entries = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item_path = format!("{path}[{i}]");
                let text = item.as_str();
                if text.is_none() {
                    d.report(
                        &item_path,
                        format!("expected a string, found {}", describe(item)),
                    );
                }
                (item_path, text)
            })
            .collect();
        Some(entries)
    }

    /// Reports every key of this table that was never taken as `unknown key`, with a
    /// suggestion when it is a likely typo of a known key.
    pub(crate) fn finish(self, d: &mut Diagnostics) {
        let Some(table) = self.table else {
            return;
        };
        for key in table.keys() {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let rule = match closest(key, &self.known) {
                Some(known) => format!("unknown key (did you mean {known:?}?)"),
                None => "unknown key".to_owned(),
            };
            d.report(&self.key_path(key), rule);
        }
    }
}

/// A TOML value's type with its article, for "found ..." in messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// `"a"`, `"a" or "b"`, `one of "a", "b", "c"`.
fn alternatives(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match quoted.as_slice() {
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        _ => format!("one of {}", quoted.join(", ")),
    }
}

/// A key as written in a path: bare when TOML allows it bare, quoted otherwise.
fn display_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// The known key closest to `key` by edit distance, if close enough to be a typo: one edit
/// per four characters, at most three (short keys such as `s2s` get no suggestion).
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (key.chars().count() / 4).min(3);
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Edit distance over characters where insertions, deletions, substitutions and swaps of two
/// neighbouring characters each count as one (optimal string alignment).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between the first i characters of `a` and the first j of `b`.
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        text.parse().expect("valid toml")
    }

    fn messages(d: Diagnostics) -> Vec<String> {
        match d.into_result(()) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn reports_unread_keys_as_unknown() {
        let t = table("a = 1\nb = 2\n");
        let mut d = Diagnostics::new("f.toml");
        let mut root = Section::root(&t);
        assert_eq!(root.integer_in::<i64>(&mut d, "a", 0, None), Some(1));
        root.finish(&mut d);
        assert_eq!(messages(d), ["f.toml: b: unknown key"]);
    }

    #[test]
    fn suggests_close_known_key() {
        let t = table("[s]\nfailure_dealy = \"1s\"\n");
        let mut d = Diagnostics::new("f.toml");
        let mut root = Section::root(&t);
        let mut s = root.section(&mut d, "s");
        assert_eq!(s.duration(&mut d, "failure_delay"), None);
        s.finish(&mut d);
        root.finish(&mut d);
        assert_eq!(
            messages(d),
            ["f.toml: s.failure_dealy: unknown key (did you mean \"failure_delay\"?)"]
        );
    }

    #[test]
    fn quotes_keys_that_are_not_bare() {
        let t = table("\"a b\" = 1\n");
        let mut d = Diagnostics::new("f.toml");
        Section::root(&t).finish(&mut d);
        assert_eq!(messages(d), ["f.toml: \"a b\": unknown key"]);
    }

    #[test]
    fn missing_section_reads_as_empty() {
        let t = table("");
        let mut d = Diagnostics::new("f.toml");
        let mut root = Section::root(&t);
        let mut s = root.section(&mut d, "s");
        assert!(!s.contains("x"));
        assert_eq!(s.string(&mut d, "x"), None);
        s.finish(&mut d);
        root.finish(&mut d);
        assert!(messages(d).is_empty());
    }

    #[test]
    fn error_at_ancestor_covers_descendants() {
        let mut d = Diagnostics::new("f.toml");
        d.report("listen.c2s[0]", "expected a table, found an integer");
        assert!(d.has_error_at("listen.c2s[0].address"));
        assert!(d.has_error_at("listen.c2s[0]"));
        assert!(!d.has_error_at("listen.c2s[1].address"));
        assert!(!d.has_error_at("listen.c2s[0"));
        assert!(!d.has_error_at("listen"));
    }

    #[test]
    fn integer_range_messages() {
        let t = table("a = 0\nb = 300\nc = -1\nd = \"x\"\n");
        let mut d = Diagnostics::new("f.toml");
        let mut root = Section::root(&t);
        assert_eq!(root.integer_in::<usize>(&mut d, "a", 1, None), None);
        assert_eq!(root.integer_in::<u8>(&mut d, "b", 0, None), None);
        assert_eq!(root.integer_in::<usize>(&mut d, "c", 0, Some(9)), None);
        assert_eq!(root.integer_in::<usize>(&mut d, "d", 0, Some(9)), None);
        root.finish(&mut d);
        assert_eq!(
            messages(d),
            [
                "f.toml: a: must be at least 1, found 0",
                "f.toml: b: is too large, found 300",
                "f.toml: c: must be between 0 and 9, found -1",
                "f.toml: d: expected an integer, found a string",
            ]
        );
    }

    #[test]
    fn choice_lists_alternatives() {
        assert_eq!(alternatives(&["redb"]), "\"redb\"");
        assert_eq!(alternatives(&["a", "b"]), "\"a\" or \"b\"");
        assert_eq!(alternatives(&["a", "b", "c"]), "one of \"a\", \"b\", \"c\"");
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(edit_distance("enabeld", "enabled"), 1);
        assert_eq!(
            closest("colour", &["domains", "data_dir", "log_level"]),
            None
        );
        assert_eq!(closest("enabeld", &["enabled"]), Some("enabled"));
    }
}
