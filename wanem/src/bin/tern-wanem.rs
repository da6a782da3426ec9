//! `tern-wanem`: runs one or more shaped UDP relays (see `docs/wanem.md`), optionally steered
//! over a line-based TCP control protocol.
//!
//! On start it prints one line per relay, `relay <listen> -> <upstream>`, then
//! `control <addr>` if `--control` was given, with the actual ports (useful with port 0), and
//! runs until interrupted (Ctrl-C or SIGTERM).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tern_wanem::{
    ControlServer, Relay, RelayConfig, Shape, parse_duration, parse_probability, parse_rate,
    parse_size,
};
use tracing_subscriber::EnvFilter;

/// Userspace WAN emulator: UDP relays that add delay, jitter, loss and rate limits, and can
/// cut the link on command. Meant to sit between QUIC endpoints.
#[derive(Debug, Parser)]
#[command(name = "tern-wanem", version)]
struct Args {
    /// Address to listen on for clients (with --upstream).
    #[arg(long, requires = "upstream")]
    listen: Option<SocketAddr>,

    /// Address to forward to (with --listen).
    #[arg(long, requires = "listen")]
    upstream: Option<SocketAddr>,

    /// A further relay, LISTEN=UPSTREAM (repeatable); all relays share the shape flags.
    #[arg(long = "pair", value_name = "LISTEN=UPSTREAM", value_parser = parse_pair)]
    pairs: Vec<(SocketAddr, SocketAddr)>,

    /// One-way delay, each direction (e.g. 20ms).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    delay: Duration,

    /// Uniform jitter, plus or minus (e.g. 2ms).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    jitter: Duration,

    /// Loss probability per datagram, each direction (e.g. 0.01 or 1%).
    #[arg(long, default_value = "0", value_parser = parse_probability)]
    loss: f64,

    /// Rate limit per direction in bytes per second (e.g. 10MB, 100mbit); none by default.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<u64>,

    /// Let jitter reorder datagrams (by default each direction stays in order).
    #[arg(long)]
    reorder: bool,

    /// Seed for the loss and jitter RNG, for reproducible runs.
    #[arg(long)]
    seed: Option<u64>,

    /// Most bytes queued per direction; beyond it datagrams are dropped.
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    queue_limit: u64,

    /// Remove a client mapping after this long without traffic.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,

    /// Most client mappings per relay.
    #[arg(long, default_value_t = 1024)]
    max_mappings: usize,

    /// Serve the control protocol on this TCP address (e.g. 127.0.0.1:7402).
    #[arg(long)]
    control: Option<SocketAddr>,
}

fn parse_pair(text: &str) -> Result<(SocketAddr, SocketAddr), String> {
    let (listen, upstream) = text
        .split_once('=')
        .ok_or_else(|| format!("expected LISTEN=UPSTREAM, found {text:?}"))?;
    let listen = listen
        .trim()
        .parse()
        .map_err(|e| format!("listen address {listen:?}: {e}"))?;
    let upstream = upstream
        .trim()
        .parse()
        .map_err(|e| format!("upstream address {upstream:?}: {e}"))?;
    Ok((listen, upstream))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let mut pairs = Vec::new();
    if let (Some(listen), Some(upstream)) = (args.listen, args.upstream) {
        pairs.push((listen, upstream));
    }
    pairs.extend(args.pairs.iter().copied());
    if pairs.is_empty() {
        bail!("nothing to relay: give --listen and --upstream, or --pair LISTEN=UPSTREAM");
    }

    let shape = Shape {
        delay: args.delay,
        jitter: args.jitter,
        loss: args.loss,
        rate_limit: args.rate,
        reorder: args.reorder,
        seed: args.seed,
    };
    let config = RelayConfig {
        queue_limit_bytes: args.queue_limit,
        idle_timeout: args.idle_timeout,
        max_mappings: args.max_mappings,
        upstream_bind_ip: None,
    };

    let mut out = std::io::stdout().lock();
    let mut relays = Vec::with_capacity(pairs.len());
    for (listen, upstream) in pairs {
        let relay = Relay::start_with(listen, upstream, shape.clone(), config.clone())
            .await
            .with_context(|| format!("starting the relay {listen} -> {upstream}"))?;
        writeln!(out, "relay {} -> {upstream}", relay.local_addr())?;
        relays.push(relay);
    }
    let control = match args.control {
        Some(addr) => {
            let server = ControlServer::start(addr, relays.iter().map(Relay::handle).collect())
                .await
                .context("starting the control server")?;
            writeln!(out, "control {}", server.local_addr())?;
            Some(server)
        }
        None => None,
    };
    out.flush()?;
    drop(out);

    shutdown_signal().await?;
    tracing::info!("wanem: shutting down");
    if let Some(control) = control {
        control.stop().await;
    }
    for relay in relays {
        relay.stop().await;
    }
    Ok(())
}

/// Waits for Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
    }
}
