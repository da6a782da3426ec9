//! The control protocol: a line-based TCP protocol that lets scripts steer running relays
//! ([`ControlServer`]), its parsed form ([`Request`], [`Command`]) and how a request is carried
//! out ([`execute`]).
//!
//! One command per line; one reply line per command: `ok`, `error: <why>`, or for `stats` a
//! JSON object. A command applies to every relay the server steers, unless prefixed with
//! `pair <index>` (0-based, in the order the relays were given).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, Result};
use crate::relay::RelayHandle;
use crate::shape::ShapeSummary;
use crate::stats::DirectionStats;
use crate::units::{parse_duration, parse_probability, parse_rate};

/// The longest command line accepted, in bytes; a longer line gets an error and the
/// connection is closed.
pub const MAX_LINE: usize = 1024;

/// The most control connections served at once; further ones get an error line and are closed.
pub const MAX_CONNECTIONS: usize = 32;

/// The help line returned by `help`.
const HELP: &str = "commands: cut | heal | delay <dur> | jitter <dur> | loss <p> | rate <rate>|off \
                    | reorder on|off | seed <n>|off | stats | help | quit; prefix with 'pair <i>' \
                    to target one relay";

/// One thing to do to the link.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `cut`: drop everything both ways.
    Cut,
    /// `heal`: undo `cut`.
    Heal,
    /// `delay 20ms`: one-way delay.
    Delay(Duration),
    /// `jitter 2ms`: uniform ± jitter.
    Jitter(Duration),
    /// `loss 0.01` or `loss 1%`: loss probability.
    Loss(f64),
    /// `rate 10MB` or `rate off`: rate limit in bytes per second.
    Rate(Option<u64>),
    /// `reorder on` or `reorder off`: whether jitter may reorder.
    Reorder(bool),
    /// `seed 42` or `seed off`: RNG seed.
    Seed(Option<u64>),
    /// `stats`: one line of JSON with every relay's shape and counters.
    Stats,
    /// `help`: one line listing the commands.
    Help,
    /// `quit`: close this connection (replies `ok` first).
    Quit,
}

/// A parsed command line: the command and the relay it targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `Some(i)` for `pair <i> <command>`: only the i-th relay (0-based); `None`: all.
    pub pair: Option<usize>,
    /// What to do.
    pub command: Command,
}

/// Reads one command line (without its line ending). Words are separated by whitespace;
/// command names are case-insensitive.
pub fn parse_request(line: &str) -> Result<Request> {
    let bad = |reason| Error::Parse {
        what: "command",
        value: line.trim().to_owned(),
        reason,
    };
    let mut words = line.split_whitespace();
    let mut first = words.next().ok_or_else(|| bad("empty line"))?;
    let mut pair = None;
    if first.eq_ignore_ascii_case("pair") {
        let index = words
            .next()
            .and_then(|w| w.parse::<usize>().ok())
            .ok_or_else(|| bad("expected 'pair <index> <command>'"))?;
        pair = Some(index);
        first = words
            .next()
            .ok_or_else(|| bad("missing command after 'pair <index>'"))?;
    }
    let argument = words.next();
    if words.next().is_some() {
        return Err(bad("too many words"));
    }
    let need = || argument.ok_or_else(|| bad("missing argument"));
    let none = || match argument {
        Some(_) => Err(bad("takes no argument")),
        None => Ok(()),
    };
    let command = match first.to_ascii_lowercase().as_str() {
        "cut" => none().map(|()| Command::Cut)?,
        "heal" => none().map(|()| Command::Heal)?,
        "stats" => none().map(|()| Command::Stats)?,
        "help" => none().map(|()| Command::Help)?,
        "quit" | "exit" => none().map(|()| Command::Quit)?,
        "delay" => Command::Delay(parse_duration(need()?)?),
        "jitter" => Command::Jitter(parse_duration(need()?)?),
        "loss" => Command::Loss(parse_probability(need()?)?),
        "rate" => match need()? {
            off if off.eq_ignore_ascii_case("off") => Command::Rate(None),
            rate => Command::Rate(Some(parse_rate(rate)?)),
        },
        "reorder" => match need()?.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" => Command::Reorder(true),
            "off" | "false" | "no" => Command::Reorder(false),
            _ => return Err(bad("expected 'reorder on' or 'reorder off'")),
        },
        "seed" => match need()? {
            off if off.eq_ignore_ascii_case("off") => Command::Seed(None),
            seed => Command::Seed(Some(
                seed.parse()
                    .map_err(|_| bad("expected a whole number or 'off'"))?,
            )),
        },
        _ => return Err(bad("unknown command (try 'help')")),
    };
    Ok(Request { pair, command })
}

/// One relay in the `stats` reply.
#[derive(Debug, Clone, Serialize)]
pub struct PairReport {
    /// Index of the relay, as used by `pair <i>`.
    pub pair: usize,
    /// The relay's listening address.
    pub listen: SocketAddr,
    /// The relay's upstream address.
    pub upstream: SocketAddr,
    /// Whether the link is cut.
    pub cut: bool,
    /// Client mappings alive now.
    pub mappings: u64,
    /// The shape in force.
    pub shape: ShapeSummary,
    /// Client to upstream counters.
    pub to_upstream: DirectionStats,
    /// Upstream to client counters.
    pub to_client: DirectionStats,
}

/// The `stats` reply: `{"pairs":[...]}`.
#[derive(Debug, Clone, Serialize)]
pub struct StatsReport {
    /// The relays asked about, in order.
    pub pairs: Vec<PairReport>,
}

/// Builds the report of the relays at the given indexes.
fn report(relays: &[RelayHandle], indexes: impl Iterator<Item = usize>) -> StatsReport {
    let pairs = indexes
        .map(|pair| {
            let relay = &relays[pair];
            let stats = relay.stats();
            PairReport {
                pair,
                listen: relay.local_addr(),
                upstream: relay.upstream_addr(),
                cut: stats.cut,
                mappings: stats.mappings,
                shape: relay.shape().summary(),
                to_upstream: stats.to_upstream,
                to_client: stats.to_client,
            }
        })
        .collect();
    StatsReport { pairs }
}

/// Carries out a request on `relays` and returns the reply line (without line ending):
/// `ok`, `error: <why>`, or the JSON `stats` report. A request that would give one relay an
/// invalid shape changes no relay.
pub fn execute(relays: &[RelayHandle], request: &Request) -> String {
    let indexes: Vec<usize> = match request.pair {
        Some(i) if i < relays.len() => vec![i],
        Some(i) => {
            return format!(
                "error: no pair {i} (there are {} pairs, numbered from 0)",
                relays.len()
            );
        }
        None => (0..relays.len()).collect(),
    };
    let edit = |edit: &dyn Fn(&mut crate::Shape)| -> String {
        // Validate every new shape before changing any relay.
        let mut shapes = Vec::with_capacity(indexes.len());
        for &i in &indexes {
            let mut shape = relays[i].shape();
            edit(&mut shape);
            if let Err(error) = shape.validate() {
                return format!("error: {error}");
            }
            shapes.push((i, shape));
        }
        for (i, shape) in shapes {
            if let Err(error) = relays[i].set_shape(shape) {
                return format!("error: {error}");
            }
        }
        "ok".to_owned()
    };
    match &request.command {
        Command::Cut => {
            indexes.iter().for_each(|&i| relays[i].cut());
            "ok".to_owned()
        }
        Command::Heal => {
            indexes.iter().for_each(|&i| relays[i].heal());
            "ok".to_owned()
        }
        Command::Delay(d) => edit(&|s| s.delay = *d),
        Command::Jitter(j) => edit(&|s| s.jitter = *j),
        Command::Loss(p) => edit(&|s| s.loss = *p),
        Command::Rate(r) => edit(&|s| s.rate_limit = *r),
        Command::Reorder(r) => edit(&|s| s.reorder = *r),
        Command::Seed(seed) => edit(&|s| s.seed = *seed),
        Command::Stats => match serde_json::to_string(&report(relays, indexes.into_iter())) {
            Ok(json) => json,
            Err(error) => format!("error: cannot encode stats: {error}"),
        },
        Command::Help => HELP.to_owned(),
        Command::Quit => "ok".to_owned(),
    }
}

/// A TCP server speaking the control protocol for a set of relays.
///
/// Dropping it stops it, connections included; [`stop`](Self::stop) also waits for that.
#[derive(Debug)]
pub struct ControlServer {
    local_addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `listen` (port 0 picks a free port) and serves the control protocol for `relays`.
    pub async fn start(listen: SocketAddr, relays: Vec<RelayHandle>) -> Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Bind {
                addr: listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(Error::LocalAddr)?;
        tracing::info!(control = %local_addr, pairs = relays.len(), "wanem: control server started");
        let task = tokio::spawn(accept_loop(listener, relays));
        Ok(Self {
            local_addr,
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server and its connections, and waits for them to end.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Cancellation is the expected outcome; the task is over either way.
            let _ = task.await;
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, relays: Vec<RelayHandle>) {
    // Owning the connections here means aborting this task ends them all.
    let mut connections = JoinSet::new();
    loop {
        let accepted = listener.accept().await;
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((mut stream, peer)) => {
                if connections.len() >= MAX_CONNECTIONS {
                    tracing::warn!(%peer, "wanem: too many control connections");
                    // Best effort: the client is turned away whether or not it reads this.
                    let _ = stream
                        .write_all(b"error: too many control connections\n")
                        .await;
                    continue;
                }
                connections.spawn(serve(stream, relays.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "wanem: control accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(stream: TcpStream, relays: Vec<RelayHandle>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let limit = u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX);
        match (&mut reader).take(limit).read_line(&mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "wanem: control read failed");
                return;
            }
        }
        if !line.ends_with('\n') && line.len() > MAX_LINE {
            let _ = write.write_all(b"error: line too long\n").await;
            return;
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let (reply, quit) = match parse_request(text) {
            Ok(request) => (execute(&relays, &request), request.command == Command::Quit),
            Err(error) => (format!("error: {error}"), false),
        };
        tracing::debug!(command = text, reply = %reply, "wanem: control");
        if write
            .write_all(format!("{reply}\n").as_bytes())
            .await
            .is_err()
            || quit
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        parse_request(line).unwrap().command
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(cmd("cut"), Command::Cut);
        assert_eq!(cmd("HEAL"), Command::Heal);
        assert_eq!(cmd("delay 20ms"), Command::Delay(Duration::from_millis(20)));
        assert_eq!(cmd("jitter 2ms"), Command::Jitter(Duration::from_millis(2)));
        assert_eq!(cmd("loss 0.01"), Command::Loss(0.01));
        assert_eq!(cmd("rate 10MB"), Command::Rate(Some(10_000_000)));
        assert_eq!(cmd("rate off"), Command::Rate(None));
        assert_eq!(cmd("reorder on"), Command::Reorder(true));
        assert_eq!(cmd("reorder off"), Command::Reorder(false));
        assert_eq!(cmd("seed 7"), Command::Seed(Some(7)));
        assert_eq!(cmd("seed off"), Command::Seed(None));
        assert_eq!(cmd("  stats  "), Command::Stats);
        assert_eq!(cmd("help"), Command::Help);
        assert_eq!(cmd("quit"), Command::Quit);
    }

    #[test]
    fn parses_the_pair_prefix() {
        let request = parse_request("pair 2 loss 1%").unwrap();
        assert_eq!(request.pair, Some(2));
        assert_eq!(request.command, Command::Loss(0.01));
        assert_eq!(parse_request("cut").unwrap().pair, None);
    }

    #[test]
    fn refuses_malformed_lines() {
        for bad in [
            "",
            "explode",
            "cut now",
            "delay",
            "delay 20",
            "loss 2",
            "reorder maybe",
            "seed -1",
            "pair x cut",
            "pair 1",
            "delay 20ms 30ms",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
