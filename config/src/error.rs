//! The errors a configuration file can produce: [`ConfigError`] (one problem, naming the file,
//! the key path and the rule) and [`ConfigErrors`] (every problem found in one load, never
//! empty). Both are the shared TOML checker's types, named for this crate.

/// One problem in a configuration file.
///
/// Displays as `file: key: rule`, for example
/// `tern.toml: listen.c2s[1].tls: expected "starttls" or "direct", found "tsl"`. Problems that
/// concern the whole file (it cannot be read, or it is not valid TOML) have an empty `key` and
/// display as `file: rule`. `file` is the name as given to [`Config::load`](crate::Config::load)
/// or [`Config::from_toml_str`](crate::Config::from_toml_str).
pub type ConfigError = tern_toml_check::Error;

/// Every problem found while loading one configuration file, in a stable order: per-section
/// problems in section order, then unknown top-level keys, then cross-field checks.
///
/// Displays as one [`ConfigError`] per line. Never empty when returned by this crate.
pub type ConfigErrors = tern_toml_check::Errors;

/// `Result` with [`ConfigErrors`] as the default error type.
pub type Result<T, E = ConfigErrors> = std::result::Result<T, E>;
