//! `[auth]`: which SASL mechanisms are offered and in what order, the delay before a SASL
//! failure, and the PBKDF2 iteration count for new SCRAM credentials.

use std::collections::HashMap;
use std::time::Duration;

use crate::reader::{ConfigValues, Diagnostics, Section};

/// Every SASL mechanism Tern implements, in the default advertisement order.
pub const SUPPORTED_MECHANISMS: [&str; 5] = [
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-1",
    "PLAIN",
];

/// Fewest PBKDF2 iterations accepted for new SCRAM credentials.
pub const MIN_SCRAM_ITERATIONS: u32 = 1000;
/// Most PBKDF2 iterations accepted for new SCRAM credentials.
pub const MAX_SCRAM_ITERATIONS: u32 = 1_000_000;

/// The `[auth]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// SASL mechanisms to advertise, in this order: non-empty, each one of
    /// [`SUPPORTED_MECHANISMS`], no duplicates. Default: all of them.
    pub mechanisms: Vec<String>,
    /// Delay before a SASL `<failure/>` is sent after a wrong password. Default 1s.
    pub failure_delay: Duration,
    /// PBKDF2 iterations for newly stored SCRAM credentials, 1000..=1000000. Default 4096.
    pub scram_iterations: u32,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            mechanisms: SUPPORTED_MECHANISMS
                .iter()
                .map(|m| (*m).to_owned())
                .collect(),
            failure_delay: Duration::from_secs(1),
            scram_iterations: 4096,
        }
    }
}

/// Reads `[auth]`, falling back to the default for every key not set or not valid.
pub(crate) fn read(mut section: Section<'_>, d: &mut Diagnostics) -> Auth {
    let defaults = Auth::default();
    let auth = Auth {
        mechanisms: read_mechanisms(&mut section, d).unwrap_or(defaults.mechanisms),
        failure_delay: section
            .duration(d, "failure_delay")
            .unwrap_or(defaults.failure_delay),
        scram_iterations: section
            .integer_in(
                d,
                "scram_iterations",
                MIN_SCRAM_ITERATIONS.into(),
                Some(MAX_SCRAM_ITERATIONS.into()),
            )
            .unwrap_or(defaults.scram_iterations),
    };
    section.finish(d);
    auth
}

fn read_mechanisms(section: &mut Section<'_>, d: &mut Diagnostics) -> Option<Vec<String>> {
    let entries = section.string_array(d, "mechanisms")?;
    if entries.is_empty() {
        d.report(
            &section.key_path("mechanisms"),
            "must list at least one mechanism",
        );
        return None;
    }
    let mut mechanisms = Vec::with_capacity(entries.len());
    let mut seen: HashMap<&str, String> = HashMap::new();
    for (path, name) in entries {
        let Some(name) = name else {
            continue;
        };
        if !SUPPORTED_MECHANISMS.contains(&name) {
            d.report(
                &path,
                format!(
                    "unknown mechanism {name:?}, expected one of {}",
                    SUPPORTED_MECHANISMS.join(", ")
                ),
            );
            continue;
        }
        if let Some(first) = seen.get(name) {
            d.report(
                &path,
                format!("duplicate mechanism {name:?} (also {first})"),
            );
            continue;
        }
        seen.insert(name, path);
        mechanisms.push(name.to_owned());
    }
    Some(mechanisms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{config, errors};

    #[test]
    fn keeps_configured_order() {
        let c = config(
            "[auth]\nmechanisms = [\"PLAIN\", \"SCRAM-SHA-1\"]\nfailure_delay = \"250ms\"\n\
             scram_iterations = 10000\n",
        );
        assert_eq!(
            c.auth,
            Auth {
                mechanisms: vec!["PLAIN".to_owned(), "SCRAM-SHA-1".to_owned()],
                failure_delay: Duration::from_millis(250),
                scram_iterations: 10000,
            }
        );
    }

    #[test]
    fn accepts_zero_failure_delay_and_iteration_bounds() {
        let c = config("[auth]\nfailure_delay = \"0s\"\nscram_iterations = 1000\n");
        assert_eq!(c.auth.failure_delay, Duration::ZERO);
        assert_eq!(c.auth.scram_iterations, 1000);
        let c = config("[auth]\nscram_iterations = 1_000_000\n");
        assert_eq!(c.auth.scram_iterations, 1_000_000);
    }

    #[test]
    fn rejects_unknown_and_duplicate_mechanisms() {
        assert_eq!(
            errors("[auth]\nmechanisms = [\"PLAIN\", \"scram-sha-1\", \"PLAIN\"]\n"),
            [
                "tern.toml: auth.mechanisms[1]: unknown mechanism \"scram-sha-1\", expected one of \
                 SCRAM-SHA-256-PLUS, SCRAM-SHA-256, SCRAM-SHA-1-PLUS, SCRAM-SHA-1, PLAIN",
                "tern.toml: auth.mechanisms[2]: duplicate mechanism \"PLAIN\" (also auth.mechanisms[0])",
            ]
        );
    }

    #[test]
    fn rejects_empty_mechanisms() {
        assert_eq!(
            errors("[auth]\nmechanisms = []\n"),
            ["tern.toml: auth.mechanisms: must list at least one mechanism"]
        );
    }

    #[test]
    fn rejects_invalid_failure_delay() {
        assert_eq!(
            errors("[auth]\nfailure_delay = \"abc\"\n"),
            ["tern.toml: auth.failure_delay: invalid duration \"abc\""]
        );
        assert_eq!(
            errors("[auth]\nfailure_delay = 1\n"),
            [
                "tern.toml: auth.failure_delay: expected a duration string such as \"30s\", found an integer"
            ]
        );
    }

    #[test]
    fn rejects_iterations_out_of_range() {
        assert_eq!(
            errors("[auth]\nscram_iterations = 999\n"),
            ["tern.toml: auth.scram_iterations: must be between 1000 and 1000000, found 999"]
        );
        assert_eq!(
            errors("[auth]\nscram_iterations = 1000001\n"),
            ["tern.toml: auth.scram_iterations: must be between 1000 and 1000000, found 1000001"]
        );
    }
}
