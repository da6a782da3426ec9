//! Stage one of loading: TOML text into a [`RawConfig`], a syntax-checked document that has no
//! meaning yet. Syntax errors name the file, line and column.

use toml::Table;

use crate::error::{ConfigError, ConfigErrors};

/// A configuration file that is valid TOML but not yet validated; turn it into a
/// [`Config`](crate::Config) with [`Config::validate`](crate::Config::validate).
#[derive(Debug, Clone, PartialEq)]
pub struct RawConfig {
    file: String,
    table: Table,
}

impl RawConfig {
    /// Parses TOML text; `file` is the name used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigErrors> {
        match text.parse::<Table>() {
            Ok(table) => Ok(Self {
                file: file.to_owned(),
                table,
            }),
            Err(error) => Err(ConfigErrors::single(ConfigError {
                file: file.to_owned(),
                key: String::new(),
                rule: syntax_rule(text, &error),
            })),
        }
    }

    /// The file name used in error messages.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The parsed top-level table.
    pub(crate) fn table(&self) -> &Table {
        &self.table
    }
}

/// Builds a one-line description of a TOML syntax error with its 1-based line and column.
fn syntax_rule(text: &str, error: &toml::de::Error) -> String {
    let message = one_line(error.message());
    match error.span().and_then(|span| location(text, span.start)) {
        Some((line, column)) => {
            format!("invalid TOML at line {line}, column {column}: {message}")
        }
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
        let raw = RawConfig::parse("[general]\nlog_level = \"debug\"\n", "a.toml");
        let raw = raw.expect("valid toml");
        assert_eq!(raw.file(), "a.toml");
        assert!(raw.table().contains_key("general"));
    }

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let text = "[general]\nlog_level = \"debug\"\ndomains = [\"a\",\n  oops]\n";
        let errors = RawConfig::parse(text, "tern.toml").expect_err("invalid toml");
        assert_eq!(errors.errors.len(), 1);
        let line = errors.to_string();
        assert!(
            line.starts_with("tern.toml: invalid TOML at line 4, column 3: "),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn duplicate_key_is_a_syntax_error() {
        let text = "[auth]\nscram_iterations = 4096\nscram_iterations = 5000\n";
        let errors = RawConfig::parse(text, "tern.toml").expect_err("duplicate key");
        let line = errors.to_string();
        assert!(
            line.starts_with("tern.toml: invalid TOML at line 3, column 1: "),
            "{line}"
        );
    }

    #[test]
    fn locates_offsets() {
        assert_eq!(location("ab\ncd", 0), Some((1, 1)));
        assert_eq!(location("ab\ncd", 4), Some((2, 2)));
        assert_eq!(location("é\nx", 3), Some((2, 1)));
        assert_eq!(location("ab", 9), None);
    }
}
