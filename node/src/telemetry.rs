//! Tracing subscriber setup for the `tern` binary (STYLE.md §6).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// openraft reports every vote and replication step at `info`; Tern reports what matters about
/// the routing table itself, so openraft is held at `warn` unless the directive names it.
const QUIET_RAFT: &str = "openraft=warn";

/// The filter directive: `RUST_LOG` when set, else the configured level, with [`QUIET_RAFT`]
/// added when the directive says nothing about openraft.
fn directive(level: &str) -> String {
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| level.to_owned());
    if base.contains("openraft") {
        base
    } else {
        format!("{base},{QUIET_RAFT}")
    }
}

/// Installs the global subscriber: human-readable lines on stderr, filtered by `RUST_LOG` when
/// set, else by the configured level. Safe to call more than once (later calls do nothing).
pub fn init(level: &str) {
    let filter = EnvFilter::try_new(directive(level)).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::directive;

    #[test]
    fn openraft_is_quiet_unless_named() {
        if std::env::var_os("RUST_LOG").is_some() {
            return; // the environment decides; nothing to check about the configured level
        }
        assert_eq!(directive("info"), "info,openraft=warn");
        assert_eq!(directive("debug,openraft=debug"), "debug,openraft=debug");
    }
}
