//! [`Diagnostics`]: the problems found in one file so far, and how far a mistyped key may be
//! from a known one to get a suggestion.

use crate::error::{Error, Errors};

/// How many edits a mistyped key may be from a known key, at most, to get a suggestion when no
/// other limit is set with [`Diagnostics::max_typo_edits`].
const DEFAULT_MAX_TYPO_EDITS: usize = 3;

/// Collects the problems found in one file.
#[derive(Debug)]
pub struct Diagnostics {
    file: String,
    errors: Vec<Error>,
    max_typo_edits: usize,
}

impl Diagnostics {
    /// Starts an empty list for `file`, the name every message starts with.
    pub fn new(file: &str) -> Self {
        Self {
            file: file.to_owned(),
            errors: Vec::new(),
            max_typo_edits: DEFAULT_MAX_TYPO_EDITS,
        }
    }

    /// Sets how many edits an unknown key may be from a known key, at most, for
    /// [`Section::finish`](crate::Section::finish) to suggest the known one (`did you mean
    /// …?`). The limit is also never more than one edit per four characters of the unknown key.
    /// Three unless set.
    #[must_use]
    pub fn max_typo_edits(mut self, edits: usize) -> Self {
        self.max_typo_edits = edits;
        self
    }

    /// The limit set with [`max_typo_edits`](Self::max_typo_edits).
    pub(crate) fn typo_limit(&self) -> usize {
        self.max_typo_edits
    }

    /// Records that the value at `key` breaks `rule`; `key` is empty for the whole file.
    pub fn report(&mut self, key: &str, rule: impl Into<String>) {
        self.errors.push(Error {
            file: self.file.clone(),
            key: key.to_owned(),
            rule: rule.into(),
        });
    }

    /// Whether a problem was recorded at `key` or at a table or array that contains it; checks
    /// that compare values skip such keys, because their value is a stand-in.
    pub fn has_error_at(&self, key: &str) -> bool {
        self.errors.iter().any(|e| {
            key.strip_prefix(e.key.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            })
        })
    }

    /// Whether nothing was recorded.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok(value)` when nothing was recorded, otherwise every recorded problem.
    pub fn into_result<T>(self, value: T) -> Result<T, Errors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(Errors {
                errors: self.errors,
            })
        }
    }

    /// `Ok(value)` when nothing was recorded and `value` is there; otherwise every problem.
    ///
    /// For readers that give `None` only for values they reported: `None` with a clean list is
    /// a bug in the reader, and is still reported (`internal error: a value was dropped without
    /// a reason`, on the whole file) rather than turned into a panic.
    pub fn into_result_some<T>(mut self, value: Option<T>) -> Result<T, Errors> {
        if value.is_none() && self.errors.is_empty() {
            self.report("", "internal error: a value was dropped without a reason");
        }
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ => Err(Errors {
                errors: self.errors,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_at_ancestor_covers_descendants() {
        let mut d = Diagnostics::new("f.toml");
        d.report("listen.c2s[0]", "expected a table, found an integer");
        assert!(d.has_error_at("listen.c2s[0].address"));
        assert!(d.has_error_at("listen.c2s[0]"));
        assert!(!d.has_error_at("listen.c2s[1].address"));
        assert!(!d.has_error_at("listen.c2s[0"));
        assert!(!d.has_error_at("listen"));

        d.report("dc[1]", "expected a table, found an integer");
        assert!(d.has_error_at("dc[1]"));
        assert!(d.has_error_at("dc[1].node[0].id"));
        assert!(!d.has_error_at("dc[10].name"));
        assert!(!d.has_error_at("dc[0].name"));
        assert!(!d.has_error_at("dc"));
    }

    #[test]
    fn result_holds_every_problem_in_order() {
        let mut d = Diagnostics::new("f.toml");
        assert!(d.is_clean());
        d.report("b", "second rule");
        d.report("", "whole file");
        assert!(!d.is_clean());
        let errors = d.into_result(7).expect_err("problems recorded");
        assert_eq!(
            errors.to_string(),
            "f.toml: b: second rule\nf.toml: whole file"
        );
        assert_eq!(Diagnostics::new("f.toml").into_result(7), Ok(7));
    }

    #[test]
    fn empty_result_without_value_is_still_an_error() {
        let d = Diagnostics::new("f.toml");
        assert!(d.is_clean());
        let errors = d.into_result_some::<()>(None).expect_err("no value");
        assert_eq!(errors.errors.len(), 1);
        assert_eq!(
            errors.to_string(),
            "f.toml: internal error: a value was dropped without a reason"
        );
        assert_eq!(Diagnostics::new("f.toml").into_result_some(Some(3)), Ok(3));

        let mut d = Diagnostics::new("f.toml");
        d.report("a", "unknown key");
        let errors = d.into_result_some(Some(3)).expect_err("a problem recorded");
        assert_eq!(errors.to_string(), "f.toml: a: unknown key");
        let mut d = Diagnostics::new("f.toml");
        d.report("a", "unknown key");
        let errors = d
            .into_result_some::<()>(None)
            .expect_err("a problem recorded");
        assert_eq!(errors.errors.len(), 1);
    }
}
