//! The errors a checked file can produce: [`Error`] (one problem, naming the file, the key path
//! and the rule) and [`Errors`] (every problem found in one load, never empty).

use std::fmt;

/// One problem in a file.
///
/// Displays as `file: key: rule`, for example
/// `tern.toml: listen.c2s[1].tls: expected "starttls" or "direct", found "tsl"`. Problems that
/// concern the whole file (it cannot be read, or it is not valid TOML) have an empty `key` and
/// display as `file: rule`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{rule}", key_prefix(.key))]
pub struct Error {
    /// The file name as given to the loader, such as the path passed to [`load_file`](crate::load_file).
    pub file: String,
    /// The key path, such as `listen.c2s[1].tls` or `dc[1].node[0].raft_addr`; empty for
    /// file-level problems.
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

/// Every problem found while loading one file, in the order the reader found them.
///
/// Displays as one [`Error`] per line, without a trailing newline. Never empty when returned by
/// this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(.errors))]
pub struct Errors {
    /// The problems, at least one.
    pub errors: Vec<Error>,
}

impl Errors {
    /// Wraps a single problem.
    pub fn single(error: Error) -> Self {
        Self {
            errors: vec![error],
        }
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, Error> {
        self.errors.iter()
    }
}

impl<'a> IntoIterator for &'a Errors {
    type Item = &'a Error;
    type IntoIter = std::slice::Iter<'a, Error>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl IntoIterator for Errors {
    type Item = Error;
    type IntoIter = std::vec::IntoIter<Error>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

/// Displays a list of errors one per line, without a trailing newline.
struct Lines<'a>(&'a [Error]);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn error(file: &str, key: &str, rule: &str) -> Error {
        Error {
            file: file.to_owned(),
            key: key.to_owned(),
            rule: rule.to_owned(),
        }
    }

    #[test]
    fn displays_file_key_and_rule() {
        let e = error(
            "tern.toml",
            "auth.failure_delay",
            "invalid duration \"abc\"",
        );
        assert_eq!(
            e.to_string(),
            "tern.toml: auth.failure_delay: invalid duration \"abc\""
        );
        let e = error("topology.toml", "dc[0].name", "invalid DC name \"EU\"");
        assert_eq!(
            e.to_string(),
            "topology.toml: dc[0].name: invalid DC name \"EU\""
        );
    }

    #[test]
    fn omits_empty_key() {
        let e = error("tern.toml", "", "cannot read file: permission denied");
        assert_eq!(
            e.to_string(),
            "tern.toml: cannot read file: permission denied"
        );
    }

    #[test]
    fn displays_one_error_per_line() {
        let errors = Errors {
            errors: vec![
                error("tern.toml", "general.colour", "unknown key"),
                error(
                    "tern.toml",
                    "limits.max_depth",
                    "must be between 2 and 256, found 1",
                ),
            ],
        };
        assert_eq!(
            errors.to_string(),
            "tern.toml: general.colour: unknown key\n\
             tern.toml: limits.max_depth: must be between 2 and 256, found 1"
        );
        assert_eq!(errors.iter().count(), 2);
        assert_eq!((&errors).into_iter().count(), 2);
        assert_eq!(errors.into_iter().count(), 2);
    }

    #[test]
    fn single_holds_one_error() {
        let e = error("f.toml", "a", "unknown key");
        let errors = Errors::single(e.clone());
        assert_eq!(errors.errors, [e]);
        assert_eq!(errors.to_string(), "f.toml: a: unknown key");
    }
}
