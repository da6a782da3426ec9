//! Walks a parsed TOML table key by key. [`Section`] hands out typed values (strings, booleans,
//! integers in a range, choices, sub-tables, arrays), records every problem in
//! [`Diagnostics`] instead of stopping at the first, and at [`Section::finish`] reports every key
//! it was never asked for as unknown.

use toml::{Table, Value};

use crate::diagnostics::Diagnostics;

/// One TOML table being read, with its key path (`""` for the root, `listen.c2s[0]`,
/// `dc[0].node[1]`, ...).
///
/// A missing table (see [`section`](Self::section)) reads as empty, so every key falls back to
/// its default.
#[derive(Debug)]
pub struct Section<'a> {
    path: String,
    table: Option<&'a Table>,
    known: Vec<&'static str>,
}

impl<'a> Section<'a> {
    /// The top-level table of a file.
    pub fn root(table: &'a Table) -> Self {
        Self::at(String::new(), Some(table))
    }

    fn at(path: String, table: Option<&'a Table>) -> Self {
        Self {
            path,
            table,
            known: Vec::new(),
        }
    }

    /// This table's own key path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full path of `key` inside this section, as written in error messages: bare when
    /// TOML allows the key bare, quoted otherwise.
    pub fn key_path(&self, key: &str) -> String {
        let key = display_key(key);
        if self.path.is_empty() {
            key
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Whether the file sets `key` in this section.
    pub fn contains(&self, key: &str) -> bool {
        self.table.is_some_and(|t| t.contains_key(key))
    }

    /// Marks `key` as known and returns its value when set.
    fn take(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.table.and_then(|t| t.get(key))
    }

    /// Takes `key` (marks it as known) and converts its value with `convert`; when that gives
    /// `None` the value has the wrong type and `expected <expected>, found <actual>` is
    /// reported, `expected` being written with its article (`a string`). `None` as well when
    /// the key is not set.
    ///
    /// The building block of the typed getters, for readers that add their own.
    pub fn typed<T>(
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

    /// Takes `key`, reporting `missing required key` when it is not set; whether it is set.
    pub fn require(&mut self, d: &mut Diagnostics, key: &'static str) -> bool {
        let present = self.take(key).is_some();
        if !present {
            d.report(&self.key_path(key), "missing required key");
        }
        present
    }

    /// The sub-table `key`; empty when it is not set or is not a table (reported).
    pub fn section(&mut self, d: &mut Diagnostics, key: &'static str) -> Self {
        let table = self.typed(d, key, "a table", Value::as_table);
        Self::at(self.key_path(key), table)
    }

    /// The array of tables `key` (`[[listen.c2s]]`, `[[dc]]`), one entry per element; elements
    /// that are not tables are reported and given as `None`. `None` when the key is not set or
    /// is not an array (reported).
    pub fn sections(
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
    pub fn string(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<&'a str> {
        self.typed(d, key, "a string", Value::as_str)
    }

    /// A non-empty string; the empty string is reported as `must not be empty`.
    pub fn non_empty_string(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<&'a str> {
        let text = self.string(d, key)?;
        if text.is_empty() {
            d.report(&self.key_path(key), "must not be empty");
            return None;
        }
        Some(text)
    }

    /// A boolean.
    pub fn boolean(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<bool> {
        self.typed(d, key, "a boolean", Value::as_bool)
    }

    /// An integer, any value TOML allows.
    pub fn integer(&mut self, d: &mut Diagnostics, key: &'static str) -> Option<i64> {
        self.typed(d, key, "an integer", Value::as_integer)
    }

    /// An integer in `min..=max` (`max` `None`: no upper bound besides what `T` holds).
    pub fn integer_in<T: TryFrom<i64>>(
        &mut self,
        d: &mut Diagnostics,
        key: &'static str,
        min: i64,
        max: Option<i64>,
    ) -> Option<T> {
        let value = self.integer(d, key)?;
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

    /// One of a fixed set of strings, mapped to its value.
    pub fn choice<T: Copy>(
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
    pub fn string_array(
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
    /// suggestion (`unknown key (did you mean "name"?)`) when it is a likely typo of a known
    /// key; see [`Diagnostics::max_typo_edits`].
    pub fn finish(self, d: &mut Diagnostics) {
        let Some(table) = self.table else {
            return;
        };
        for key in table.keys() {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let rule = match closest(key, &self.known, d.typo_limit()) {
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

/// The known key closest to `key` by edit distance, if close enough to be a typo: one edit per
/// four characters of `key`, and at most `max_edits` (short keys such as `s2s` get no
/// suggestion).
fn closest<'k>(key: &str, known: &[&'k str], max_edits: usize) -> Option<&'k str> {
    let limit = (key.chars().count() / 4).min(max_edits);
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Edit distance over characters where insertions, deletions, substitutions and swaps of two
/// neighbouring characters each count as one (optimal string alignment): `raft_adrd` is one
/// edit from `raft_addr`.
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
        assert_eq!(s.string(&mut d, "failure_delay"), None);
        s.finish(&mut d);
        root.finish(&mut d);
        assert_eq!(
            messages(d),
            ["f.toml: s.failure_dealy: unknown key (did you mean \"failure_delay\"?)"]
        );
    }

    #[test]
    fn reports_unread_keys_with_suggestions() {
        let t = table("\"a b\" = 3\nraft_adrd = 1\nzzz = 2\n");
        let mut d = Diagnostics::new("f.toml").max_typo_edits(2);
        let mut root = Section::root(&t);
        assert_eq!(root.string(&mut d, "raft_addr"), None);
        root.finish(&mut d);
        assert_eq!(
            messages(d),
            [
                "f.toml: \"a b\": unknown key",
                "f.toml: raft_adrd: unknown key (did you mean \"raft_addr\"?)",
                "f.toml: zzz: unknown key",
            ]
        );
    }

    #[test]
    fn typo_limit_caps_suggestions() {
        // Three edits from `max_connections`, and long enough for three.
        let t = table("max_connectoinz_ = 1\n");
        let read = |d: &mut Diagnostics| {
            let mut root = Section::root(&t);
            assert_eq!(root.integer(d, "max_connections"), None);
            root.finish(d);
        };
        let mut three = Diagnostics::new("f.toml");
        read(&mut three);
        assert_eq!(
            messages(three),
            ["f.toml: max_connectoinz_: unknown key (did you mean \"max_connections\"?)"]
        );
        let mut two = Diagnostics::new("f.toml").max_typo_edits(2);
        read(&mut two);
        assert_eq!(messages(two), ["f.toml: max_connectoinz_: unknown key"]);
    }

    #[test]
    fn quotes_keys_that_are_not_bare() {
        let t = table("\"a b\" = 1\n");
        let mut d = Diagnostics::new("f.toml");
        Section::root(&t).finish(&mut d);
        assert_eq!(messages(d), ["f.toml: \"a b\": unknown key"]);
        assert_eq!(display_key("é"), "\"é\"");
        assert_eq!(display_key(""), "\"\"");
        assert_eq!(display_key("a-b_9"), "a-b_9");
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
    fn reports_wrong_types_and_choices() {
        let t = table("a = 1\nb = \"x\"\nc = [1]\nr = \"voters\"\ns = true\ne = \"\"\n");
        let mut d = Diagnostics::new("f.toml");
        let mut root = Section::root(&t);
        assert_eq!(root.string(&mut d, "a"), None);
        assert_eq!(root.integer(&mut d, "b"), None);
        assert_eq!(root.sections(&mut d, "c").map(|v| v.len()), Some(1));
        let options = [("voter", 1), ("learner", 2), ("witness", 3)];
        assert_eq!(root.choice(&mut d, "r", &options), None);
        assert_eq!(root.choice(&mut d, "s", &options[..2]), None);
        assert!(!root.require(&mut d, "missing"));
        assert_eq!(root.non_empty_string(&mut d, "e"), None);
        root.finish(&mut d);
        assert_eq!(
            messages(d),
            [
                "f.toml: a: expected a string, found an integer",
                "f.toml: b: expected an integer, found a string",
                "f.toml: c[0]: expected a table, found an integer",
                "f.toml: r: expected one of \"voter\", \"learner\", \"witness\", found \"voters\"",
                "f.toml: s: expected \"voter\" or \"learner\", found a boolean",
                "f.toml: missing: missing required key",
                "f.toml: e: must not be empty",
            ]
        );
    }

    #[test]
    fn reads_valid_values() {
        let t = table("r = \"learner\"\nb = true\nn = 7\nl = [\"x\", 2]\n");
        let mut d = Diagnostics::new("f.toml");
        let mut root = Section::root(&t);
        assert!(root.contains("r"));
        assert!(root.require(&mut d, "r"));
        let options = [("voter", 1), ("learner", 2)];
        assert_eq!(root.choice(&mut d, "r", &options), Some(2));
        assert_eq!(root.boolean(&mut d, "b"), Some(true));
        assert_eq!(root.integer(&mut d, "n"), Some(7));
        assert_eq!(
            root.string_array(&mut d, "l"),
            Some(vec![
                ("l[0]".to_owned(), Some("x")),
                ("l[1]".to_owned(), None)
            ])
        );
        root.finish(&mut d);
        assert_eq!(
            messages(d),
            ["f.toml: l[1]: expected a string, found an integer"]
        );
    }

    #[test]
    fn nested_tables_carry_their_path() {
        let t = table("[[dc]]\n[[dc.node]]\nid = 1\n[[dc.node]]\nx = 1\n");
        let mut d = Diagnostics::new("f.toml");
        let mut root = Section::root(&t);
        let mut dcs = root.sections(&mut d, "dc").expect("dc array");
        let mut dc = dcs.remove(0).expect("dc table");
        let nodes = dc.sections(&mut d, "node").expect("node array");
        let paths: Vec<String> = nodes
            .into_iter()
            .map(|n| n.expect("node table").key_path("id"))
            .collect();
        assert_eq!(paths, ["dc[0].node[0].id", "dc[0].node[1].id"]);
        assert_eq!(dc.path(), "dc[0]");
        assert_eq!(root.path(), "");
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
        assert_eq!(edit_distance("vtoer", "voter"), 1);
        assert_eq!(
            closest("colour", &["domains", "data_dir", "log_level"], 3),
            None
        );
        assert_eq!(closest("enabeld", &["enabled"], 3), Some("enabled"));
        assert_eq!(closest("nmae", &["name", "node"], 2), Some("name"));
        assert_eq!(closest("id", &["ip"], 2), None);
    }
}
