//! Test fixtures shared by the unit tests: parse a snippet as `tern.toml` and return either the
//! validated config or the error lines.

use crate::Config;

/// Parses `text`, failing the test with the error lines when it is not valid.
pub(crate) fn config(text: &str) -> Config {
    match Config::from_toml_str(text, "tern.toml") {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid configuration, got:\n{errors}"),
    }
}

/// Parses `text`, failing the test when it is valid; returns one displayed error per entry.
pub(crate) fn errors(text: &str) -> Vec<String> {
    match Config::from_toml_str(text, "tern.toml") {
        Ok(config) => panic!("expected errors, got a valid configuration: {config:?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}
