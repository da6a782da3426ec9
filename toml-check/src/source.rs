//! Getting a file's text into a TOML table: [`load_file`] reads it, naming the file as its path
//! displays, and [`parse_table`] parses it, describing a syntax error on one line with its line
//! and column.

use std::path::Path;

use toml::Table;

use crate::error::{Error, Errors};

/// Reads the file at `path` and hands its text to `parse` together with the file's name (the
/// path as it displays), the name every message uses.
///
/// A file that cannot be read gives one error with an empty key:
/// `<path>: cannot read file: <reason>`.
pub fn load_file<T>(
    path: &Path,
    parse: impl FnOnce(&str, &str) -> Result<T, Errors>,
) -> Result<T, Errors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &file),
        Err(e) => Err(Errors::single(Error {
            file,
            key: String::new(),
            rule: format!("cannot read file: {e}"),
        })),
    }
}

/// Parses TOML text into its top-level table; `file` names the file in the error.
///
/// A syntax error (duplicate keys included) gives one error with an empty key:
/// `<file>: invalid TOML at line <l>, column <c>: <what the parser said, on one line>`.
pub fn parse_table(text: &str, file: &str) -> Result<Table, Errors> {
    text.parse::<Table>().map_err(|error| {
        Errors::single(Error {
            file: file.to_owned(),
            key: String::new(),
            rule: syntax_rule(text, &error),
        })
    })
}

/// A one-line description of a TOML syntax error with its 1-based line and column.
fn syntax_rule(text: &str, error: &toml::de::Error) -> String {
    let message = one_line(error.message());
    match error.span().and_then(|span| location(text, span.start)) {
        Some((line, column)) => format!("invalid TOML at line {line}, column {column}: {message}"),
        None => format!("invalid TOML: {message}"),
    }
}

/// Joins a possibly multi-line message into one line, so each error stays on its own line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The 1-based line and column (in characters) of byte offset `offset` in `text`.
fn location(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    Some((line, column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_toml() {
        let table = parse_table("[general]\nlog_level = \"debug\"\n", "a.toml").expect("valid");
        assert!(table.contains_key("general"));
    }

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let text = "[[dc]]\nname = \"a\"\nbridge = [\"x:1\",\n  oops]\n";
        let errors = parse_table(text, "topology.toml").expect_err("invalid toml");
        assert_eq!(errors.errors.len(), 1);
        assert_eq!(errors.errors[0].key, "");
        let line = errors.to_string();
        assert!(
            line.starts_with("topology.toml: invalid TOML at line 4, column 3: "),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn duplicate_key_is_a_syntax_error() {
        let text = "[auth]\nscram_iterations = 4096\nscram_iterations = 5000\n";
        let errors = parse_table(text, "tern.toml").expect_err("duplicate key");
        let line = errors.to_string();
        assert!(
            line.starts_with("tern.toml: invalid TOML at line 3, column 1: "),
            "{line}"
        );
    }

    #[test]
    fn joins_multi_line_messages() {
        assert_eq!(one_line("  first\n\n  second  \n"), "first; second");
        assert_eq!(one_line("only"), "only");
    }

    #[test]
    fn locates_offsets() {
        assert_eq!(location("ab\ncd", 0), Some((1, 1)));
        assert_eq!(location("ab\ncd", 4), Some((2, 2)));
        assert_eq!(location("é\nx", 3), Some((2, 1)));
        assert_eq!(location("ab", 9), None);
    }

    #[test]
    fn load_file_names_the_file_by_its_path() {
        let dir = std::env::temp_dir().join(format!("tern-toml-check-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good.toml");
        std::fs::write(&good, "a = 1\n").expect("write");
        let (text, file) = load_file(&good, |text, file| Ok((text.to_owned(), file.to_owned())))
            .expect("readable file");
        assert_eq!(text, "a = 1\n");
        assert_eq!(file, good.display().to_string());

        let missing = dir.join("missing.toml");
        let e = load_file(&missing, |_, _| Ok(())).expect_err("missing file");
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].key, "");
        assert_eq!(e.errors[0].file, missing.display().to_string());
        assert!(
            e.to_string()
                .starts_with(&format!("{}: cannot read file: ", missing.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
