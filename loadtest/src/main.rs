//! `tern-loadtest`: the bundled XMPP load harness.
//!
//! It speaks standard XMPP over the network like any client (STARTTLS, direct TLS or a WebSocket, SASL
//! PLAIN / SCRAM-SHA-1 / SCRAM-SHA-256, resource binding), so it measures Tern, ejabberd and
//! Prosody with the same yardstick. See `docs/benchmarks.md` for how it is used.
//!
//! # Layout
//! - `cli`: options, and scenario files turned into the same options.
//! - `client`: one connection's login, and in-band registration.
//! - `ws`: XMPP over WebSocket (RFC 7395) as the byte stream of a TCP connection.
//! - `provision`: creating accounts (Tern's admin API, or in-band registration).
//! - `swarm`: many logged-in connections under an open-loop send schedule, reader and writer
//!   task per connection, payloads with sender, sequence number and scheduled send time.
//! - `stats`: HDR latency histograms and per-pair loss / duplicate / reordering accounting.
//! - `monitor`: per-second time series, CPU and memory of server and harness, progress line.
//! - `procstat`: `/proc` readings.
//! - `room`: XEP-0045 for the `muc` scenario: the room's JID, join and configuration stanzas,
//!   and what the room answers.
//! - `scenario`: login, chat, ramp, idle, presence; `scenario/muc`: one room, many occupants.
//! - `report`: JSON summary, terminal table, HTML page.
//! - `compare`: several servers' summaries side by side in `docs/benchmarks.md`.

mod cli;
mod client;
mod compare;
mod monitor;
mod procstat;
mod provision;
mod report;
mod room;
mod scenario;
mod stats;
mod swarm;
mod ws;

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser as _;

use cli::{Cli, Scenario};

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tern-loadtest: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let mut cli = Cli::parse();
    if let Scenario::Run(run) = cli.scenario.clone() {
        let text = std::fs::read_to_string(&run.file)
            .with_context(|| format!("read {}", run.file.display()))?;
        let mut args = cli::file_to_args(&run.file, &text)?;
        args.extend(run.rest.iter().cloned());
        cli = match Cli::try_parse_from(&args) {
            Ok(cli) => cli,
            Err(error) => {
                eprintln!("{}: {error}", run.file.display());
                return Ok(ExitCode::from(2));
            }
        };
        if matches!(cli.scenario, Scenario::Run(_) | Scenario::Compare(_)) {
            anyhow::bail!("{}: scenario: must be a load scenario", run.file.display());
        }
    }
    if let Scenario::Compare(args) = &cli.scenario {
        compare::run(args)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Each connection needs a descriptor: lift the soft limit to the hard one.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    if (limit as usize) < cli.global.users + 64 {
        eprintln!(
            "tern-loadtest: warning: the open-file limit is {limit}, below {} users + spare",
            cli.global.users
        );
    }
    let threads = cli
        .global
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("start the runtime")?;
    let summary = runtime.block_on(scenario::run(&cli.global, &cli.scenario, threads))?;
    print!("{}", report::table(&summary));
    if let Some(path) = &cli.global.json {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &cli.global.html {
        std::fs::write(path, report::html(&summary))
            .with_context(|| format!("write {}", path.display()))?;
    }
    // Leave connections' tasks behind without waiting for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}
