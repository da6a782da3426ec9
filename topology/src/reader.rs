//! Reads a topology file key by key. [`parse_table`] turns the text into a TOML table (syntax
//! errors name the line and column); [`Section`] hands out typed values, records every problem
//! in [`Diagnostics`] instead of stopping at the first, and at [`Section::finish`] reports every
//! key it was never asked for as unknown.

use toml::{Table, Value};

use crate::error::{TopologyError, TopologyErrors};

/// Parses TOML text into its top-level table; `file` names the file in the error.
pub(crate) fn parse_table(text: &str, file: &str) -> Result<Table, TopologyErrors> {
    text.parse::<Table>().map_err(|error| {
        TopologyErrors::single(TopologyError {
            file: file.to_owned(),
            key: String::new(),
            rule: syntax_rule(text, &error),
        })
    })
}

/// A one-line description of a TOML syntax error with its 1-based line and column.
fn syntax_rule(text: &str, error: &toml::de::Error) -> String {
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match error.span().and_then(|span| location(text, span.start)) {
        Some((line, column)) => format!("invalid TOML at line {line}, column {column}: {message}"),
        None => format!("invalid TOML: {message}"),
    }
}

/// The 1-based line and column (in characters) of byte offset `offset` in `text`.
fn location(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Some((line, before[line_start..].chars().count() + 1))
}

/// The problems found in one file.
#[derive(Debug)]
pub(crate) struct Diagnostics {
    file: String,
    errors: Vec<TopologyError>,
}

impl Diagnostics {
    /// An empty list for `file`.
    pub(crate) fn new(file: &str) -> Self {
        Self {
            file: file.to_owned(),
            errors: Vec::new(),
        }
    }

    /// Records that the value at `key` breaks `rule`.
    pub(crate) fn report(&mut self, key: &str, rule: impl Into<String>) {
        self.errors.push(TopologyError {
            file: self.file.clone(),
            key: key.to_owned(),
            rule: rule.into(),
        });
    }

    /// Whether a problem was recorded at `key` or at a table or array that holds it.
    pub(crate) fn has_error_at(&self, key: &str) -> bool {
        self.errors.iter().any(|e| {
            key.strip_prefix(e.key.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            })
        })
    }

    /// Whether nothing was recorded.
    pub(crate) fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok(value)` when nothing was recorded and `value` is there; otherwise every problem.
    ///
    /// Readers give `None` only for values they reported, so `None` with a clean list is a
    /// bug in this crate; it is still reported rather than turned into a panic.
    pub(crate) fn into_result<T>(mut self, value: Option<T>) -> Result<T, TopologyErrors> {
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            None if self.errors.is_empty() => {
                self.report("", "internal error: a value was dropped without a reason");
                Err(TopologyErrors {
                    errors: self.errors,
                })
            }
            _ => Err(TopologyErrors {
                errors: self.errors,
            }),
        }
    }
}

/// One TOML table being read, with its key path (`""` for the root, `dc[0]`,
/// `dc[0].node[1]`).
#[derive(Debug)]
pub(crate) struct Section<'a> {
    path: String,
    table: &'a Table,
    known: Vec<&'static str>,
}

impl<'a> Section<'a> {
    /// The top-level table of a file.
    pub(crate) fn root(table: &'a Table) -> Self {
        Self {
            path: String::new(),
            table,
            known: Vec::new(),
        }
    }

    /// This table's own key path.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The full path of `key` inside this table, as written in messages.
    pub(crate) fn key_path(&self, key: &str) -> String {
        let key = display_key(key);
        if self.path.is_empty() {
            key
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Marks `key` as known and returns its value when set.
    fn take(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.table.get(key)
    }

    /// Takes `key` and converts it with `convert`; `None` from `convert` means the value has
    /// the wrong type, reported as `expected <expected>, found <actual>`.
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

    /// Takes `key`, reporting `missing required key` when it is not set.
    pub(crate) fn require(&mut self, d: &mut Diagnostics, key: &'static str) -> bool {
        let present = self.take(key).is_some();
        if !present {
            d.report(&self.key_path(key), "missing required key");
        }
        present
    }

    /// The array of tables `key` (`[[dc]]`): one entry per element, `None` for elements that
    /// are not tables (reported). `None` when the key is not set or is not an array (reported).
    pub(crate) fn tables(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
    ) -> Option<Vec<Option<Self>>> {
        let items = self.typed(d, key, "an array of tables", Value::as_array)?;
        let path = self.key_path(key);
        let entries = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item_path = format!("{path}[{i}]");
                match item.as_table() {
                    Some(table) => Some(Self {
                        path: item_path,
                        table,
                        known: Vec::new(),
                    }),
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
        Some(entries)
    }

    /// A string.
    pub(crate) fn string(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<&'a str> {
        self.typed(d, key, "a string", Value::as_str)
    }

    /// A boolean.
    pub(crate) fn boolean(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<bool> {
        self.typed(d, key, "a boolean", Value::as_bool)
    }

    /// An integer.
    pub(crate) fn integer(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<i64> {
        self.typed(d, key, "an integer", Value::as_integer)
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
            let names: Vec<String> = options
                .iter()
                .map(|(name, _)| format!("{name:?}"))
                .collect();
            let expected = match names.as_slice() {
                [one] => one.clone(),
                [a, b] => format!("{a} or {b}"),
                _ => format!("one of {}", names.join(", ")),
            };
            d.report(
                &self.key_path(key),
                format!("expected {expected}, found {found}"),
            );
        }
        chosen
    }

    /// An array of strings: one entry per element with its key path, `None` for elements that
    /// are not strings (reported). `None` when the key is not set or is not an array
    /// (reported).
    pub(crate) fn strings(
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
        for key in self.table.keys() {
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

/// A key as written in a path: bare when TOML allows it bare, quoted otherwise.
fn display_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// The known key nearest to `key`, when it is near enough to be a typo: at most one edit per
/// four characters of `key`, and at most two.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (key.chars().count() / 4).min(2);
    known
        .iter()
        .map(|k| (distance(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters, where swapping two neighbours also counts as one
/// edit (`raft_adrd` is one edit from `raft_addr`).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // table[i][j]: the distance between a[..i] and b[..j].
    let mut table = vec![vec![0_usize; b.len() + 1]; a.len() + 1];
    for (i, row) in table.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in table[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitute = table[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = substitute.min(table[i - 1][j] + 1).min(table[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[i - 2][j - 2] + 1);
            }
            table[i][j] = best;
        }
    }
    table[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        text.parse().expect("valid toml")
    }

    fn lines(d: Diagnostics) -> Vec<String> {
        d.errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let text = "[[dc]]\nname = \"a\"\nbridge = [\"x:1\",\n  oops]\n";
        let errors = parse_table(text, "topology.toml").expect_err("invalid toml");
        assert_eq!(errors.errors.len(), 1);
        let line = errors.to_string();
        assert!(
            line.starts_with("topology.toml: invalid TOML at line 4, column 3: "),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn locates_offsets() {
        assert_eq!(location("ab\ncd", 0), Some((1, 1)));
        assert_eq!(location("ab\ncd", 4), Some((2, 2)));
        assert_eq!(location("é\nx", 3), Some((2, 1)));
        assert_eq!(location("ab", 9), None);
    }

    #[test]
    fn reports_unread_keys_with_suggestions() {
        let t = table("\"a b\" = 3\nraft_adrd = 1\nzzz = 2\n");
        let mut d = Diagnostics::new("f.toml");
        let mut root = Section::root(&t);
        assert_eq!(root.string(&mut d, "raft_addr"), None);
        root.finish(&mut d);
        assert_eq!(
            lines(d),
            [
                "f.toml: \"a b\": unknown key",
                "f.toml: raft_adrd: unknown key (did you mean \"raft_addr\"?)",
                "f.toml: zzz: unknown key",
            ]
        );
    }

    #[test]
    fn reports_wrong_types_and_choices() {
        let t = table("a = 1\nb = \"x\"\nc = [1]\nr = \"voters\"\ns = true\n");
        let mut d = Diagnostics::new("f.toml");
        let mut root = Section::root(&t);
        assert_eq!(root.string(&mut d, "a"), None);
        assert_eq!(root.integer(&mut d, "b"), None);
        assert_eq!(root.tables(&mut d, "c").map(|v| v.len()), Some(1));
        let options = [("voter", 1), ("learner", 2), ("witness", 3)];
        assert_eq!(root.choice(&mut d, "r", &options), None);
        assert_eq!(root.choice(&mut d, "s", &options[..2]), None);
        assert!(!root.require(&mut d, "missing"));
        root.finish(&mut d);
        assert_eq!(
            lines(d),
            [
                "f.toml: a: expected a string, found an integer",
                "f.toml: b: expected an integer, found a string",
                "f.toml: c[0]: expected a table, found an integer",
                "f.toml: r: expected one of \"voter\", \"learner\", \"witness\", found \"voters\"",
                "f.toml: s: expected \"voter\" or \"learner\", found a boolean",
                "f.toml: missing: missing required key",
            ]
        );
    }

    #[test]
    fn nested_tables_carry_their_path() {
        let t = table("[[dc]]\n[[dc.node]]\nid = 1\n[[dc.node]]\nx = 1\n");
        let mut d = Diagnostics::new("f.toml");
        let mut root = Section::root(&t);
        let mut dcs = root.tables(&mut d, "dc").expect("dc array");
        let mut dc = dcs.remove(0).expect("dc table");
        let nodes = dc.tables(&mut d, "node").expect("node array");
        let paths: Vec<String> = nodes
            .into_iter()
            .map(|n| n.expect("node table").key_path("id"))
            .collect();
        assert_eq!(paths, ["dc[0].node[0].id", "dc[0].node[1].id"]);
        assert_eq!(dc.path(), "dc[0]");
    }

    #[test]
    fn error_at_a_table_covers_its_keys() {
        let mut d = Diagnostics::new("f.toml");
        d.report("dc[1]", "expected a table, found an integer");
        assert!(d.has_error_at("dc[1]"));
        assert!(d.has_error_at("dc[1].node[0].id"));
        assert!(!d.has_error_at("dc[10].name"));
        assert!(!d.has_error_at("dc[0].name"));
        assert!(!d.has_error_at("dc"));
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("voter", "voter"), 0);
        assert_eq!(distance("vtoer", "voter"), 1);
        assert_eq!(closest("nmae", &["name", "node"]), Some("name"));
        assert_eq!(closest("id", &["ip"]), None);
    }

    #[test]
    fn empty_result_without_value_is_still_an_error() {
        let d = Diagnostics::new("f.toml");
        assert!(d.is_clean());
        let errors = d.into_result::<()>(None).expect_err("no value");
        assert_eq!(errors.errors.len(), 1);
        assert_eq!(Diagnostics::new("f.toml").into_result(Some(3)), Ok(3));
    }
}
