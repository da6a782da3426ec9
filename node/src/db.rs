//! `tern db`: the node's database, with no node running.
//!
//! - `tern db migrate --config FILE`: applies the PostgreSQL schema migrations embedded in this
//!   binary that the database of `FILE`'s `[storage]` has not had yet, then exits. `tern serve`
//!   does the same at start; running it first lets an operator upgrade the schema once for a
//!   whole cluster (and is required on CockroachDB before starting several nodes at once,
//!   since it has no advisory lock to serialize concurrent migrators).
//!
//! Exit codes: 0 done (also when the backend is redb, which has nothing to migrate), 1 the
//! database could not be reached or migrated, 2 the configuration has errors or bad command
//! line (clap).

use std::path::PathBuf;
use std::process::ExitCode;

use tern_config::{Config, StorageBackend};

use crate::storage::PostgresStorage;

/// The node's database.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct DbArgs {
    /// The operation.
    #[command(subcommand)]
    pub command: DbCommand,
}

/// `tern db ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum DbCommand {
    /// Apply the schema migrations the PostgreSQL database of `[storage]` has not had yet, and
    /// exit. Nothing to do for redb.
    Migrate {
        /// The node's configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Runs `tern db`; what it prints goes to stdout, errors to stderr.
pub fn run(args: DbArgs) -> ExitCode {
    match args.command {
        DbCommand::Migrate { config } => migrate(&config),
    }
}

fn migrate(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("tern: the configuration has errors:");
            for e in &errors.errors {
                eprintln!("  {e}");
            }
            return ExitCode::from(2);
        }
    };
    let settings = match (config.storage.backend, &config.storage.postgres) {
        (StorageBackend::Postgres, Some(settings)) => settings.clone(),
        (backend, _) => {
            println!("storage.backend is \"{backend}\": nothing to migrate");
            return ExitCode::SUCCESS;
        }
    };
    crate::telemetry::init(&config.general.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tern: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = settings.redacted_url();
    let outcome = runtime.block_on(async {
        let storage = PostgresStorage::connect(&settings).await?;
        storage.migrate().await
    });
    match outcome {
        Ok(migrated) => {
            println!(
                "{url}: {} migration(s) applied, schema at version {}",
                migrated.applied, migrated.version
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tern: {url}: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `error` and its sources, `: `-separated; a source whose text is already there (sqlx
/// repeats its cause in its own message) is left out.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_names_each_cause_once() {
        let e = Outer(std::io::Error::other("refused"));
        assert_eq!(error_chain(&e), "outer: refused");
        let e = crate::storage::Error::Postgres {
            op: "connect",
            source: sqlx::Error::Io(std::io::Error::other("refused")),
        };
        assert_eq!(
            error_chain(&e),
            "postgres backend failed during connect: error communicating with database: refused"
        );
    }
}
