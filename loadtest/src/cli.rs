//! Command-line options, and scenario files turned into the same options.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// `tern-loadtest`: drives real XMPP connections at a server and reports what it measured.
#[derive(Debug, Parser)]
#[command(name = "tern-loadtest", version, args_override_self = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) scenario: Scenario,
}

/// Options shared by every scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct Global {
    /// The server's client listener; several, comma-separated (`HOST:PORT,HOST:PORT,…`), spread
    /// the accounts: account i connects to the (i mod k)-th (the datacenters of a mesh, say).
    #[arg(
        long,
        visible_alias = "servers",
        global = true,
        value_name = "HOST:PORT[,HOST:PORT…]",
        value_parser = Servers::parse,
        default_value = "127.0.0.1:5222"
    )]
    pub(crate) server: Servers,
    /// The XMPP domain of the accounts (stream `to`, TLS server name).
    #[arg(long, global = true, default_value = "localhost")]
    pub(crate) domain: String,
    /// How TLS is set up: STARTTLS on a plain connection, or TLS from the first byte. With
    /// `--websocket`, `direct` is `wss://` and anything else plain `ws://`.
    #[arg(long, global = true, value_enum, default_value_t = TlsMode::Starttls)]
    pub(crate) tls: TlsMode,
    /// Connect by XMPP over WebSocket (RFC 7395) to this HTTP path (`/ws`) of each `--server`,
    /// with the `xmpp` subprotocol, instead of the XMPP client port.
    #[arg(long, global = true, value_name = "PATH", value_parser = parse_ws_path)]
    pub(crate) websocket: Option<String>,
    /// SASL mechanism.
    #[arg(long, global = true, value_enum, default_value_t = SaslChoice::ScramSha256)]
    pub(crate) sasl: SaslChoice,
    /// Number of accounts (and connections) the scenario uses.
    #[arg(long, global = true, default_value_t = 100)]
    pub(crate) users: usize,
    /// Accounts are `{prefix}0` … `{prefix}{users-1}`.
    #[arg(long, global = true, default_value = "lt")]
    pub(crate) prefix: String,
    /// The password of every account.
    #[arg(long, global = true, default_value = "loadtest-pw")]
    pub(crate) password: String,
    /// Create the accounts first.
    #[arg(long, global = true, value_enum, default_value_t = Provision::None)]
    pub(crate) provision: Provision,
    /// A Tern data directory: where `--provision admin` finds `admin.addr` and `admin.token`.
    /// With several servers, one directory per server (comma-separated, same order) registers
    /// each account in the datacenter it connects to; a single one registers them all there.
    #[arg(long, global = true, value_delimiter = ',')]
    pub(crate) tern_data: Vec<PathBuf>,
    /// Tern's admin API (`http://127.0.0.1:5551`), instead of `--tern-data`; comma-separated,
    /// one per server, as `--tern-data`.
    #[arg(long, global = true, value_delimiter = ',')]
    pub(crate) admin_url: Vec<String>,
    /// Tern's admin API bearer token, instead of `--tern-data`: one, or one per `--admin-url`.
    #[arg(long, global = true, value_delimiter = ',')]
    pub(crate) admin_token: Vec<String>,
    /// The server's process id: its RSS and CPU time are read from /proc. Several
    /// (comma-separated) are summed: the nodes of a mesh on one machine.
    #[arg(long, global = true, value_delimiter = ',')]
    pub(crate) server_pid: Vec<u32>,
    /// The name of the server under test, written into the reports.
    #[arg(long, global = true, default_value = "server")]
    pub(crate) label: String,
    /// Write the JSON summary here.
    #[arg(long, global = true)]
    pub(crate) json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long, global = true)]
    pub(crate) html: Option<PathBuf>,
    /// No live progress line.
    #[arg(long, global = true)]
    pub(crate) quiet: bool,
    /// Logins in flight at once (login, provisioning and connection set-up).
    #[arg(long, global = true, default_value_t = 100)]
    pub(crate) concurrency: usize,
    /// Spread client source addresses over 127.0.0.1 … 127.0.0.N (loopback servers only), to stay
    /// clear of ephemeral port exhaustion; 0 picks one address per 20,000 connections.
    #[arg(long, global = true, default_value_t = 0)]
    pub(crate) sources: u8,
    /// Worker threads of the harness (default: one per CPU).
    #[arg(long, global = true)]
    pub(crate) threads: Option<usize>,
    /// Enable XEP-0198 stream management at the end of each login (every `<r/>` from the
    /// server is answered with the count of stanzas handled), as mobile clients do.
    #[arg(long, global = true)]
    pub(crate) stream_management: bool,
}

/// An HTTP path for `--websocket`: absolute, nothing a URL would misread.
fn parse_ws_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("{text:?}: want an absolute path such as /ws"));
    }
    if text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '#')
    {
        return Err(format!("{text:?}: not a URL path"));
    }
    Ok(text.to_owned())
}

/// The client listeners to connect to, at least one; account `i` uses the `i mod k`-th.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Servers(Vec<SocketAddr>);

impl Servers {
    /// The listener account `index` connects to.
    pub(crate) fn for_account(&self, index: usize) -> SocketAddr {
        self.0[index % self.0.len()]
    }

    pub(crate) fn all(&self) -> &[SocketAddr] {
        &self.0
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// `HOST:PORT[,HOST:PORT…]`: one or more socket addresses, no empty entries.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let addresses = text
            .split(',')
            .map(|part| {
                part.trim().parse::<SocketAddr>().map_err(|e| {
                    format!("{:?}: {e} (want HOST:PORT with an IP address)", part.trim())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(addresses))
    }
}

impl std::fmt::Display for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, address) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{address}")?;
        }
        Ok(())
    }
}

/// How a connection gets TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TlsMode {
    /// Plain TCP, then `<starttls/>` (RFC 6120 §5).
    Starttls,
    /// TLS from the first byte (XEP-0368).
    Direct,
}

/// The SASL mechanism the clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SaslChoice {
    /// PLAIN (RFC 4616).
    Plain,
    /// SCRAM-SHA-1 (RFC 5802).
    #[value(name = "scram-sha-1")]
    ScramSha1,
    /// SCRAM-SHA-256 (RFC 7677).
    #[value(name = "scram-sha-256")]
    ScramSha256,
}

impl SaslChoice {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha1 => "SCRAM-SHA-1",
            Self::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

/// How accounts are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Provision {
    /// They exist already.
    None,
    /// Tern's GraphQL admin API, many accounts per request.
    Admin,
    /// XEP-0077 in-band registration over the client port (any server that allows it).
    Ibr,
}

/// The scenario to run.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum Scenario {
    /// Only create the accounts (`--provision` picks how).
    Provision,
    /// Log every account in (TLS, SASL, bind, initial presence): logins/s and login latency.
    Login(LoginArgs),
    /// Open-loop 1:1 chat at an aggregate rate between all online users.
    Chat(ChatArgs),
    /// Chat at a rising rate until p99 latency passes the bound or a message is lost.
    Ramp(RampArgs),
    /// Hold the connections idle: memory per connection (needs `--server-pid`).
    Idle(IdleArgs),
    /// Roster-heavy logins, then a presence broadcast storm.
    Presence(PresenceArgs),
    /// Every user joins one XEP-0045 room; some of them send groupchat messages into it at an
    /// aggregate rate, each delivered to every occupant.
    Muc(MucArgs),
    /// Run the scenario a TOML file describes (top-level keys are global options, the table
    /// named after the scenario holds its options); flags after the file override it.
    Run(RunArgs),
    /// Read JSON summaries of several servers and rewrite the comparison section of a
    /// benchmarks page.
    Compare(CompareArgs),
}

impl Scenario {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Provision => "provision",
            Self::Login(_) => "login",
            Self::Chat(_) => "chat",
            Self::Ramp(_) => "ramp",
            Self::Idle(_) => "idle",
            Self::Presence(_) => "presence",
            Self::Muc(_) => "muc",
            Self::Run(_) => "run",
            Self::Compare(_) => "compare",
        }
    }
}

/// `login` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct LoginArgs {
    /// Login rounds; the first computes each account's SCRAM salted password, later rounds use
    /// the cached one as real clients do, so they measure the server.
    #[arg(long, default_value_t = 2)]
    pub(crate) rounds: u32,
}

/// `chat` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct ChatArgs {
    /// Aggregate target rate, messages per second.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) rate: f64,
    /// How long messages are sent.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub(crate) duration: Duration,
    /// How long to wait after the last send for messages still in flight.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub(crate) drain: Duration,
    /// Size of each message body in bytes (at least the 40 bytes of sequence data).
    #[arg(long, default_value_t = 100)]
    pub(crate) body_size: usize,
}

/// `ramp` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct RampArgs {
    /// First rate, messages per second.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) start: f64,
    /// Each step multiplies the rate by this.
    #[arg(long, default_value_t = 1.25)]
    pub(crate) factor: f64,
    /// Length of one step.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub(crate) step_duration: Duration,
    /// The p99 latency bound of a sustained step, milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub(crate) p99_ms: f64,
    /// Highest rate tried.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub(crate) max_rate: f64,
    /// Bisection steps between the last sustained and the first failed rate.
    #[arg(long, default_value_t = 2)]
    pub(crate) refine: u32,
    /// How long to wait after a step for messages still in flight.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub(crate) drain: Duration,
    /// Size of each message body in bytes.
    #[arg(long, default_value_t = 100)]
    pub(crate) body_size: usize,
}

/// `idle` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct IdleArgs {
    /// How long the connections are held once all are up; then the server's RSS is read once
    /// it has settled (two reads a second apart within 1%).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub(crate) hold: Duration,
}

/// `presence` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct PresenceArgs {
    /// Contacts per user (mutual subscriptions with the next users, wrapping around).
    #[arg(long, default_value_t = 10)]
    pub(crate) contacts: usize,
    /// Presence changes per second, all users together, during the storm.
    #[arg(long, default_value_t = 200.0)]
    pub(crate) rate: f64,
    /// Length of the storm.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub(crate) duration: Duration,
}

/// `muc` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct MucArgs {
    /// The room's bare JID (default `loadtest@muc.{domain}`); every user joins it with its
    /// local part as nick, and the first creates it if it does not exist.
    #[arg(long)]
    pub(crate) room: Option<String>,
    /// Aggregate target rate, groupchat messages per second (each delivered to every occupant).
    #[arg(long, default_value_t = 50.0)]
    pub(crate) rate: f64,
    /// Occupants that send, chosen at random; the rate is spread over them.
    #[arg(long, default_value_t = 10)]
    pub(crate) senders: usize,
    /// How long messages are sent.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub(crate) duration: Duration,
    /// How long to wait after the last send for deliveries still in flight.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub(crate) drain: Duration,
    /// Size of each message body in bytes (at least the 40 bytes of sequence data).
    #[arg(long, default_value_t = 100)]
    pub(crate) body_size: usize,
}

/// `run` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    /// The scenario file.
    pub(crate) file: PathBuf,
    /// Options that override the file's (`--users 10`, `--rate 500`, …).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) rest: Vec<String>,
}

/// `compare` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct CompareArgs {
    /// JSON summaries (any scenario, any server); the label says which server.
    #[arg(long = "result", required = true, num_args = 1..)]
    pub(crate) results: Vec<PathBuf>,
    /// The markdown page whose comparison section is rewritten (created if missing).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// The server the others are compared with.
    #[arg(long, default_value = "tern")]
    pub(crate) baseline: String,
}

/// Turns a scenario file into command-line arguments: `key = value` at the top level become
/// global `--key value`, `scenario = "name"` the subcommand, and the keys of the table named
/// after the scenario its options. Errors name the file and the key.
pub(crate) fn file_to_args(path: &Path, text: &str) -> Result<Vec<String>> {
    let table: toml::Table =
        toml::from_str(text).with_context(|| format!("{}: not valid TOML", path.display()))?;
    let Some(scenario) = table.get("scenario") else {
        bail!(
            "{}: scenario: missing (login, chat, ramp, …)",
            path.display()
        );
    };
    let Some(scenario) = scenario.as_str() else {
        bail!("{}: scenario: must be a string", path.display());
    };
    let mut globals = Vec::new();
    let mut options = Vec::new();
    for (key, value) in &table {
        match (key.as_str(), value) {
            ("scenario", _) => {}
            (name, toml::Value::Table(inner)) if name == scenario => {
                for (key, value) in inner {
                    push_option(&mut options, path, &format!("{name}.{key}"), key, value)?;
                }
            }
            (name, toml::Value::Table(_)) => bail!(
                "{}: {name}: a table other than [{scenario}] (the file's scenario)",
                path.display()
            ),
            (key, value) => push_option(&mut globals, path, key, key, value)?,
        }
    }
    let mut args = vec!["tern-loadtest".to_owned()];
    args.extend(globals);
    args.push(scenario.to_owned());
    args.extend(options);
    Ok(args)
}

fn push_option(
    args: &mut Vec<String>,
    path: &Path,
    key_path: &str,
    key: &str,
    value: &toml::Value,
) -> Result<()> {
    let flag = format!("--{}", key.replace('_', "-"));
    match value {
        toml::Value::Boolean(true) => args.push(flag),
        toml::Value::Boolean(false) => {}
        toml::Value::String(s) => args.extend([flag, s.clone()]),
        toml::Value::Integer(i) => args.extend([flag, i.to_string()]),
        toml::Value::Float(f) => args.extend([flag, f.to_string()]),
        toml::Value::Array(items) => {
            for item in items {
                push_option(args, path, key_path, key, item)?;
            }
        }
        _ => bail!(
            "{}: {key_path}: must be a string, number, boolean or array",
            path.display()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_file_becomes_the_same_command_line() {
        let text = r#"
            scenario = "chat"
            server = "127.0.0.1:5322"
            users = 50
            quiet = true
            [chat]
            rate = 250.5
            duration = "3s"
        "#;
        let args = file_to_args(Path::new("s.toml"), text).expect("args");
        let cli = Cli::try_parse_from(&args).expect("parse");
        assert_eq!(cli.global.users, 50);
        assert_eq!(cli.global.server.for_account(0).port(), 5322);
        assert!(cli.global.quiet);
        let Scenario::Chat(chat) = cli.scenario else {
            panic!("not chat: {args:?}");
        };
        assert_eq!(chat.rate, 250.5);
        assert_eq!(chat.duration, Duration::from_secs(3));
    }

    #[test]
    fn scenario_file_errors_name_file_and_key() {
        let err = file_to_args(Path::new("s.toml"), "users = 5").expect_err("no scenario");
        assert_eq!(
            err.to_string(),
            "s.toml: scenario: missing (login, chat, ramp, …)"
        );
        let err = file_to_args(
            Path::new("s.toml"),
            "scenario = \"chat\"\n[chat]\nrate = { a = 1 }",
        )
        .expect_err("bad value");
        assert_eq!(
            err.to_string(),
            "s.toml: chat.rate: must be a string, number, boolean or array"
        );
        let err = file_to_args(
            Path::new("s.toml"),
            "scenario = \"chat\"\n[idle]\nhold = \"1s\"",
        )
        .expect_err("other table");
        assert!(err.to_string().contains("idle: a table other than [chat]"));
    }

    #[test]
    fn later_flags_override_earlier_ones() {
        let cli = Cli::try_parse_from([
            "tern-loadtest",
            "--users",
            "5",
            "chat",
            "--rate",
            "10",
            "--users",
            "7",
            "--rate",
            "20",
        ])
        .expect("parse");
        assert_eq!(cli.global.users, 7);
        let Scenario::Chat(chat) = cli.scenario else {
            panic!("not chat");
        };
        assert_eq!(chat.rate, 20.0);
    }

    #[test]
    fn several_servers_share_the_accounts() {
        let cli = Cli::try_parse_from([
            "tern-loadtest",
            "--server",
            "127.0.0.1:6222, 127.0.0.1:7222,127.0.0.1:8222",
            "--server-pid",
            "11,12",
            "--tern-data",
            "m/dc1/data,m/dc2/data,m/dc3/data",
            "muc",
            "--room",
            "bench@muc.localhost",
            "--senders",
            "4",
        ])
        .expect("parse");
        let servers = &cli.global.server;
        assert_eq!(servers.len(), 3);
        let ports: Vec<u16> = (0..5).map(|i| servers.for_account(i).port()).collect();
        assert_eq!(ports, [6222, 7222, 8222, 6222, 7222]);
        assert_eq!(
            servers.to_string(),
            "127.0.0.1:6222,127.0.0.1:7222,127.0.0.1:8222"
        );
        assert_eq!(cli.global.server_pid, [11, 12]);
        // Lists add up when repeated; `--server`, one value, is replaced like any option.
        let repeated = Cli::try_parse_from([
            "tern-loadtest",
            "--server-pid",
            "1",
            "--server",
            "127.0.0.1:1,127.0.0.1:2",
            "--server-pid",
            "2,3",
            "--server",
            "127.0.0.1:3",
            "provision",
        ])
        .expect("parse");
        assert_eq!(repeated.global.server_pid, [1, 2, 3]);
        assert_eq!(repeated.global.server.to_string(), "127.0.0.1:3");
        assert_eq!(cli.global.tern_data.len(), 3);
        assert_eq!(cli.global.tern_data[1], Path::new("m/dc2/data"));
        let Scenario::Muc(muc) = cli.scenario else {
            panic!("not muc");
        };
        assert_eq!(muc.room.as_deref(), Some("bench@muc.localhost"));
        assert_eq!((muc.senders, muc.rate), (4, 50.0));
        // The alias, and the default.
        let cli = Cli::try_parse_from(["tern-loadtest", "--servers", "127.0.0.1:1", "provision"])
            .expect("parse");
        assert_eq!(cli.global.server.for_account(7).port(), 1);
        let cli = Cli::try_parse_from(["tern-loadtest", "provision"]).expect("parse");
        assert_eq!(cli.global.server.to_string(), "127.0.0.1:5222");
        assert!(cli.global.server_pid.is_empty());
        let err = Cli::try_parse_from(["tern-loadtest", "--server", "127.0.0.1:1,", "provision"])
            .expect_err("empty entry");
        assert!(err.to_string().contains("want HOST:PORT"), "{err}");
    }

    #[test]
    fn websocket_takes_an_http_path() {
        let cli = Cli::try_parse_from([
            "tern-loadtest",
            "--tls",
            "direct",
            "--websocket",
            "/xmpp-websocket",
            "login",
        ])
        .expect("parse");
        assert_eq!(cli.global.websocket.as_deref(), Some("/xmpp-websocket"));
        assert_eq!(cli.global.tls, TlsMode::Direct);
        let cli = Cli::try_parse_from(["tern-loadtest", "login"]).expect("parse");
        assert_eq!(cli.global.websocket, None);
        for bad in ["ws", "/a b", "/ws#x"] {
            let err =
                Cli::try_parse_from(["tern-loadtest", "--websocket", bad, "login"]).expect_err(bad);
            assert!(err.to_string().contains("--websocket"), "{err}");
        }
        // In a scenario file too.
        let args = file_to_args(
            Path::new("w.toml"),
            "scenario = \"idle\"\nwebsocket = \"/ws\"\n",
        )
        .expect("args");
        let cli = Cli::try_parse_from(&args).expect("parse");
        assert_eq!(cli.global.websocket.as_deref(), Some("/ws"));
    }

    #[test]
    fn a_muc_scenario_file_lists_servers_in_one_string() {
        let text = r#"
            scenario = "muc"
            server = "127.0.0.1:6222,127.0.0.1:7222"
            users = 300
            [muc]
            room = "big@muc.localhost"
            rate = 30
            senders = 3
            duration = "5s"
        "#;
        let args = file_to_args(Path::new("m.toml"), text).expect("args");
        let cli = Cli::try_parse_from(&args).expect("parse");
        assert_eq!(cli.global.server.len(), 2);
        let Scenario::Muc(muc) = cli.scenario else {
            panic!("not muc: {args:?}");
        };
        assert_eq!((muc.rate, muc.senders), (30.0, 3));
        assert_eq!(muc.duration, Duration::from_secs(5));
    }
}
