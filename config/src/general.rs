//! `[general]`: the XMPP domains this node serves, its data directory and its log level.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::reader::{ConfigValues, Diagnostics, Section};

/// Longest domain accepted, in bytes (RFC 7622 §3.2: a domainpart is at most 1023 bytes).
pub const MAX_DOMAIN_BYTES: usize = 1023;

/// The `[general]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct General {
    /// XMPP domains served by this node: at least one, lowercased, without duplicates.
    /// Default `["localhost"]`. These are static: each is its own host type, and none can be
    /// removed or changed at runtime.
    pub domains: Vec<String>,
    /// Host types that dynamic domains (added at runtime with `tern ctl domain add`) may use.
    /// Default `["default"]`. A name may not repeat or equal a static domain.
    pub host_types: Vec<String>,
    /// Where the redb database, the generated TLS material and the admin token live.
    /// Default `tern-data` (relative to the working directory).
    pub data_dir: PathBuf,
    /// A `tracing` EnvFilter directive such as `info` or `info,tern_node=debug`; `RUST_LOG`
    /// overrides it. Default `info`.
    pub log_level: String,
}

impl Default for General {
    fn default() -> Self {
        Self {
            domains: vec!["localhost".to_owned()],
            host_types: vec!["default".to_owned()],
            data_dir: PathBuf::from("tern-data"),
            log_level: "info".to_owned(),
        }
    }
}

/// Reads `[general]`, falling back to the default for every key not set or not valid.
pub(crate) fn read(mut section: Section<'_>, d: &mut Diagnostics) -> General {
    let defaults = General::default();
    let domains = read_domains(&mut section, d).unwrap_or(defaults.domains);
    let host_types = read_host_types(&mut section, d, &domains).unwrap_or(defaults.host_types);
    let general = General {
        domains,
        host_types,
        data_dir: section
            .file_path(d, "data_dir")
            .unwrap_or(defaults.data_dir),
        log_level: section
            .non_empty_string(d, "log_level")
            .map_or(defaults.log_level, str::to_owned),
    };
    section.finish(d);
    general
}

fn read_domains(section: &mut Section<'_>, d: &mut Diagnostics) -> Option<Vec<String>> {
    let entries = section.string_array(d, "domains")?;
    if entries.is_empty() {
        d.report(
            &section.key_path("domains"),
            "must list at least one domain",
        );
        return None;
    }
    let mut domains = Vec::with_capacity(entries.len());
    let mut seen: HashMap<String, String> = HashMap::new();
    for (path, text) in entries {
        let Some(text) = text else {
            continue;
        };
        let domain = text.to_lowercase();
        if let Err(reason) = check_domain(&domain) {
            d.report(&path, reason);
            continue;
        }
        if let Some(first) = seen.get(&domain) {
            d.report(&path, format!("duplicate domain {domain:?} (also {first})"));
            continue;
        }
        seen.insert(domain.clone(), path);
        domains.push(domain);
    }
    Some(domains)
}

fn read_host_types(
    section: &mut Section<'_>,
    d: &mut Diagnostics,
    domains: &[String],
) -> Option<Vec<String>> {
    let entries = section.string_array(d, "host_types")?;
    let mut host_types = Vec::with_capacity(entries.len());
    let mut seen: HashMap<String, String> = HashMap::new();
    for (path, text) in entries {
        let Some(name) = text else {
            continue;
        };
        if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
            d.report(
                &path,
                format!("invalid host type {name:?}: 1 to 255 printable characters"),
            );
            continue;
        }
        if domains.iter().any(|domain| domain == name) {
            d.report(
                &path,
                format!("host type {name:?} is also a static domain (a static domain is its own host type)"),
            );
            continue;
        }
        if let Some(first) = seen.get(name) {
            d.report(
                &path,
                format!("duplicate host type {name:?} (also {first})"),
            );
            continue;
        }
        seen.insert(name.to_owned(), path);
        host_types.push(name.to_owned());
    }
    Some(host_types)
}

/// Checks a lowercased domain: not empty, at most [`MAX_DOMAIN_BYTES`], no `@`, `/`,
/// whitespace or control characters, no empty labels.
fn check_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if domain.len() > MAX_DOMAIN_BYTES {
        return Err(format!(
            "invalid domain: {} bytes long, at most {MAX_DOMAIN_BYTES} allowed",
            domain.len()
        ));
    }
    let problem = if domain.contains('@') {
        Some("contains '@'")
    } else if domain.contains('/') {
        Some("contains '/'")
    } else if domain.chars().any(char::is_whitespace) {
        Some("contains whitespace")
    } else if domain.chars().any(char::is_control) {
        Some("contains a control character")
    } else if domain.split('.').any(str::is_empty) {
        Some("has an empty label")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(format!("invalid domain {domain:?}: {problem}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::fixture::{config, errors};

    #[test]
    fn lowercases_domains() {
        let c = config("[general]\ndomains = [\"Example.ORG\", \"chat.example.org\"]\n");
        assert_eq!(c.general.domains, ["example.org", "chat.example.org"]);
    }

    #[test]
    fn reads_data_dir_and_log_level() {
        let c = config(
            "[general]\ndata_dir = \"/var/lib/tern\"\nlog_level = \"debug,tern_node=trace\"\n",
        );
        assert_eq!(c.general.data_dir, PathBuf::from("/var/lib/tern"));
        assert_eq!(c.general.log_level, "debug,tern_node=trace");
    }

    #[test]
    fn host_types_default_and_are_checked() {
        assert_eq!(config("").general.host_types, ["default"]);
        let c = config("[general]\nhost_types = [\"small\", \"large\"]\n");
        assert_eq!(c.general.host_types, ["small", "large"]);
        assert_eq!(
            errors(
                "[general]\ndomains = [\"a.org\"]\nhost_types = [\"x\", \"a.org\", \"x\", \"\"]\n"
            ),
            [
                "tern.toml: general.host_types[1]: host type \"a.org\" is also a static domain (a static domain is its own host type)",
                "tern.toml: general.host_types[2]: duplicate host type \"x\" (also general.host_types[0])",
                "tern.toml: general.host_types[3]: invalid host type \"\": 1 to 255 printable characters",
            ]
        );
    }

    #[test]
    fn rejects_empty_domain_list() {
        assert_eq!(
            errors("[general]\ndomains = []\n"),
            ["tern.toml: general.domains: must list at least one domain"]
        );
    }

    #[test]
    fn rejects_duplicates_after_lowercasing() {
        assert_eq!(
            errors("[general]\ndomains = [\"example.org\", \"a.org\", \"EXAMPLE.org\"]\n"),
            [
                "tern.toml: general.domains[2]: duplicate domain \"example.org\" (also general.domains[0])"
            ]
        );
    }

    #[test]
    fn rejects_invalid_domains() {
        let text = "[general]\ndomains = [\"user@example.org\", \"example.org/res\", \"a b\", \
                    \"a..b\", \".a\", \"\", \"a\\u0007b\"]\n";
        assert_eq!(
            errors(text),
            [
                "tern.toml: general.domains[0]: invalid domain \"user@example.org\": contains '@'",
                "tern.toml: general.domains[1]: invalid domain \"example.org/res\": contains '/'",
                "tern.toml: general.domains[2]: invalid domain \"a b\": contains whitespace",
                "tern.toml: general.domains[3]: invalid domain \"a..b\": has an empty label",
                "tern.toml: general.domains[4]: invalid domain \".a\": has an empty label",
                "tern.toml: general.domains[5]: must not be empty",
                "tern.toml: general.domains[6]: invalid domain \"a\\u{7}b\": contains a control character",
            ]
        );
    }

    #[test]
    fn rejects_overlong_domain_but_accepts_limit() {
        let label = "a".repeat(63);
        let long = vec![label.as_str(); 17].join(".");
        assert_eq!(long.len(), 1087);
        assert_eq!(
            errors(&format!("[general]\ndomains = [\"{long}\"]\n")),
            [
                "tern.toml: general.domains[0]: invalid domain: 1087 bytes long, at most 1023 allowed"
            ]
        );
        let exact = "a".repeat(1023);
        assert_eq!(
            config(&format!("[general]\ndomains = [\"{exact}\"]\n"))
                .general
                .domains,
            [exact]
        );
    }

    #[test]
    fn rejects_wrong_types() {
        assert_eq!(
            errors("[general]\ndomains = \"example.org\"\ndata_dir = 5\nlog_level = \"\"\n"),
            [
                "tern.toml: general.domains: expected an array of strings, found a string",
                "tern.toml: general.data_dir: expected a string, found an integer",
                "tern.toml: general.log_level: must not be empty",
            ]
        );
        assert_eq!(
            errors("[general]\ndomains = [\"a.org\", 7]\n"),
            ["tern.toml: general.domains[1]: expected a string, found an integer"]
        );
    }

    #[test]
    fn rejects_unknown_key() {
        assert_eq!(
            errors("[general]\ncolour = \"blue\"\n"),
            ["tern.toml: general.colour: unknown key"]
        );
    }
}
