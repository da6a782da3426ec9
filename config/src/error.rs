//! The errors a configuration file can produce: [`ConfigError`] (one problem, naming the file,
//! the key path and the rule) and [`ConfigErrors`] (every problem found in one load, never empty).

use std::fmt;

/// One problem in a configuration file.
///
/// Displays as `file: key: rule`, for example
/// `tern.toml: listen.c2s[1].tls: expected "starttls" or "direct", found "tsl"`. Problems that
/// concern the whole file (it cannot be read, or it is not valid TOML) have an empty `key` and
/// display as `file: rule`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{rule}", key_prefix(.key))]
pub struct ConfigError {
    /// The file name as given to [`Config::load`](crate::Config::load) or
    /// [`Config::from_toml_str`](crate::Config::from_toml_str).
    pub file: String,
    /// The key path, such as `listen.c2s[1].tls`; empty for file-level problems.
    pub key: String,
    /// The rule that was broken, lowercase, without a trailing period.
    pub rule: String,
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

/// Every problem found while loading one configuration file, in a stable order: per-section
/// problems in section order, then unknown top-level keys, then cross-field checks.
///
/// Displays as one [`ConfigError`] per line. Never empty when returned by this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(.errors))]
pub struct ConfigErrors {
    /// The problems, at least one.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// Wraps a single problem.
    pub fn single(error: ConfigError) -> Self {
        Self {
            errors: vec![error],
        }
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

/// Displays a list of errors one per line, without a trailing newline.
struct Lines<'a>(&'a [ConfigError]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// `Result` with [`ConfigErrors`] as the default error type.
pub type Result<T, E = ConfigErrors> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn error(key: &str, rule: &str) -> ConfigError {
        ConfigError {
            file: "tern.toml".to_owned(),
            key: key.to_owned(),
            rule: rule.to_owned(),
        }
    }

    #[test]
    fn displays_file_key_and_rule() {
        let e = error("auth.failure_delay", "invalid duration \"abc\"");
        assert_eq!(
            e.to_string(),
            "tern.toml: auth.failure_delay: invalid duration \"abc\""
        );
    }

    #[test]
    fn omits_empty_key() {
        let e = error("", "cannot read file: permission denied");
        assert_eq!(
            e.to_string(),
            "tern.toml: cannot read file: permission denied"
        );
    }

    #[test]
    fn displays_one_error_per_line() {
        let errors = ConfigErrors {
            errors: vec![
                error("general.colour", "unknown key"),
                error("limits.max_depth", "must be between 2 and 256, found 1"),
            ],
        };
        assert_eq!(
            errors.to_string(),
            "tern.toml: general.colour: unknown key\n\
             tern.toml: limits.max_depth: must be between 2 and 256, found 1"
        );
        assert_eq!(errors.iter().count(), 2);
    }
}
