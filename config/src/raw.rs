//! Stage one of loading: TOML text into a [`RawConfig`], a syntax-checked document that has no
//! meaning yet. Syntax errors name the file, line and column.

use toml::Table;

use crate::error::ConfigErrors;

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
        let table = tern_toml_check::parse_table(text, file)?;
        Ok(Self {
            file: file.to_owned(),
            table,
        })
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
}
