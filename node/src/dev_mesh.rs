//! `tern dev mesh`: a whole multi-datacenter deployment on one machine, in one command.
//!
//! `tern dev mesh --dcs N --dir DIR [--no-start] [--base-port B]` writes into `DIR`:
//!
//! - `pki/`: a mesh CA (made on the first run, kept after) and a certificate per datacenter
//!   (issued when missing or no longer valid under that CA);
//! - `topology.toml`: datacenters `dc1` … `dcN`, one node each (node id K, named `dcK-1`),
//!   every one a Raft voter except the last when N is even, which is a learner (an even number
//!   of voting datacenters is refused by the topology rules); the one domain `localhost`,
//!   served by all;
//! - `dcK/tern.toml`: datacenter K's node, data in `dcK/data`, its log in `dcK/tern.log`.
//!
//! Datacenter K listens on 127.0.0.1 only, on ports counted from `b = B + 1000·K` (B defaults
//! to 5222, so DC 1 takes 6222, DC 2 7222, …): clients with STARTTLS on `b`, direct TLS on
//! `b+1`, Raft on `b+78`, the QUIC bridge on `b+79` (UDP), the admin API on `b+329`.
//!
//! The files hold absolute paths, and are loaded back with the real readers
//! ([`Topology::load`], [`Config::load`]) before anything starts, so a generator bug fails here
//! and not in a node. Running again over the same `DIR` rewrites the topology and the
//! configurations and keeps the CA and the data.
//!
//! Without `--no-start` the command then runs `tern serve` for every datacenter (this same
//! executable), waits until each accepts clients, prints how to connect, and stops them all on
//! Ctrl-C or SIGTERM (SIGTERM to each, SIGKILL after 5 s). With `--no-start` it prints the
//! commands to run instead. Exit codes: 0 success, 1 the files or a node failed (the message
//! names the file), 2 a bad command line.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tern_config::{Config, TlsMode};
use tern_gd_mesh::pki::{self, DcIdentity, MeshCa, PkiError};
use tern_topology::{DcRole, NodeId, Topology};

/// The most datacenters a dev mesh has (each takes a block of 1000 ports).
pub const MAX_DCS: u32 = 9;
/// The default `--base-port`.
pub const DEFAULT_BASE_PORT: u16 = 5222;
/// The XMPP domain every datacenter serves.
pub const DOMAIN: &str = "localhost";
/// How long each datacenter has to accept clients after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a datacenter has to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How many lines of a datacenter's log are shown when it fails.
const TAIL_LINES: usize = 30;

/// `tern dev mesh`: a local multi-datacenter deployment.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct DevMeshArgs {
    /// How many datacenters, dc1 to dcN (1 to 9).
    #[arg(long, value_name = "N")]
    pub dcs: u32,
    /// Where the files go (made if missing; a second run keeps the CA and the data).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Only write the files, and print the `tern serve` commands that start the datacenters.
    #[arg(long)]
    pub no_start: bool,
    /// Datacenter K's ports start at B + 1000·K (clients), HTTP (WebSocket, BOSH) at +58, Raft
    /// +78, bridge +79, admin +329.
    #[arg(long, value_name = "B", default_value_t = DEFAULT_BASE_PORT)]
    pub base_port: u16,
}

/// The ports of one datacenter, all on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DcPorts {
    /// Clients, STARTTLS: `b`.
    pub c2s: u16,
    /// Clients, direct TLS: `b + 1`.
    pub tls: u16,
    /// Web clients, plain HTTP (WebSocket `/ws`, BOSH `/http-bind`): `b + 58`.
    pub http: u16,
    /// Raft RPCs (TCP): `b + 78`.
    pub raft: u16,
    /// The QUIC bridge (UDP): `b + 79`.
    pub bridge: u16,
    /// The admin API: `b + 329`.
    pub admin: u16,
}

impl DcPorts {
    /// The ports of datacenter `k` (from 1) with base port `base`: `b = base + 1000·k`, or
    /// `None` when one would pass 65535.
    pub fn new(base: u16, k: u32) -> Option<Self> {
        let b = u32::from(base) + 1000 * k;
        let port = |offset: u32| u16::try_from(b + offset).ok();
        Some(Self {
            c2s: port(0)?,
            tls: port(1)?,
            http: port(58)?,
            raft: port(78)?,
            bridge: port(79)?,
            admin: port(329)?,
        })
    }

    /// The highest port of datacenter `k`.
    fn top(base: u16, k: u32) -> u32 {
        u32::from(base) + 1000 * k + 329
    }

    /// Each TCP port with what it is for (the bridge, UDP, is apart).
    fn tcp(self) -> [(u16, &'static str); 5] {
        [
            (self.c2s, "STARTTLS client port"),
            (self.tls, "direct TLS client port"),
            (self.http, "HTTP (WebSocket, BOSH) port"),
            (self.raft, "Raft port"),
            (self.admin, "admin API port"),
        ]
    }
}

/// One datacenter of a generated mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcFiles {
    /// `dcK`.
    pub name: String,
    /// K: the node id of its one node.
    pub node_id: u64,
    /// Voter, or learner (the last one when the count is even).
    pub role: DcRole,
    /// Its ports.
    pub ports: DcPorts,
    /// `DIR/dcK`.
    pub dir: PathBuf,
    /// `DIR/dcK/tern.toml`.
    pub config: PathBuf,
    /// `DIR/dcK/data`.
    pub data_dir: PathBuf,
    /// `DIR/dcK/tern.log`, where a started node writes.
    pub log: PathBuf,
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// `DIR`, absolute.
    pub dir: PathBuf,
    /// `DIR/pki`.
    pub pki_dir: PathBuf,
    /// `DIR/topology.toml`.
    pub topology: PathBuf,
    /// Whether the CA was made by this run (false: an earlier run's was kept).
    pub ca_created: bool,
    /// The datacenters whose certificate was issued by this run (the others' were kept).
    pub issued: Vec<String>,
    /// The datacenters, in order.
    pub dcs: Vec<DcFiles>,
    /// `DIR/dcK` directories of an earlier, larger run, not part of this mesh.
    pub stale: Vec<PathBuf>,
}

/// Why `tern dev mesh` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevMeshError {
    /// `--dcs` out of range.
    #[error("--dcs {0}: a dev mesh has 1 to {MAX_DCS} datacenters")]
    DcCount(u32),
    /// `--base-port` so high that the last datacenter's ports pass 65535.
    #[error(
        "--base-port {base}: the ports of dc{dcs} would reach {top}, past 65535; use a base port \
         of at most {max}"
    )]
    BasePort {
        /// The base port given.
        base: u16,
        /// The datacenter count.
        dcs: u32,
        /// Its highest port.
        top: u32,
        /// The highest base port that fits.
        max: u32,
    },
    /// `DIR` cannot be written into a TOML file as text.
    #[error("{}: the directory's path must be valid UTF-8", .0.display())]
    NotUtf8(PathBuf),
    /// A file or directory could not be made, read or written.
    #[error("cannot {what} {}", .path.display())]
    Io {
        /// What was tried: "create directory", "write", …
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The mesh CA or a certificate failed (the error names the file).
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A generated file does not load: a bug in this generator.
    #[error("the generated {} is invalid (a bug in tern dev mesh):\n{problems}", .path.display())]
    Generated {
        /// The file.
        path: PathBuf,
        /// What the reader (or the cross-check) said, one problem per line.
        problems: String,
    },
    /// A port a datacenter needs is taken.
    #[error(
        "127.0.0.1:{port} ({dc}'s {what}) is in use: stop what holds it, or choose another \
         --base-port"
    )]
    PortBusy {
        /// The port.
        port: u16,
        /// What the datacenter uses it for.
        what: &'static str,
        /// The datacenter.
        dc: String,
    },
    /// Signals could not be set up.
    #[error("cannot start the signal handler")]
    Runtime(#[source] io::Error),
    /// A node could not be started.
    #[error("cannot start {dc} ({} serve --config {})", .exe.display(), .config.display())]
    Spawn {
        /// The datacenter.
        dc: String,
        /// The executable.
        exe: PathBuf,
        /// Its configuration.
        config: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A node exited before it accepted clients.
    #[error("{dc} exited before it was ready ({status}); the end of {}:\n{tail}", .log.display())]
    Exited {
        /// The datacenter.
        dc: String,
        /// How it exited.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// A node did not open its listeners in time.
    #[error(
        "{dc} did not accept connections on 127.0.0.1:{port} within {}s; the end of {}:\n{tail}",
        READY_TIMEOUT.as_secs(),
        .log.display()
    )]
    NotReady {
        /// The datacenter.
        dc: String,
        /// The first port it did not open.
        port: u16,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// Every node exited by itself.
    #[error("every datacenter has exited")]
    AllExited,
}

impl DevMeshError {
    /// A bad command line (exit status 2) rather than a failure (1).
    fn is_usage(&self) -> bool {
        matches!(self, Self::DcCount(_) | Self::BasePort { .. })
    }
}

/// Checks `dcs` and `base_port` before anything is written.
fn check_args(dcs: u32, base_port: u16) -> Result<(), DevMeshError> {
    if !(1..=MAX_DCS).contains(&dcs) {
        return Err(DevMeshError::DcCount(dcs));
    }
    let top = DcPorts::top(base_port, dcs);
    if top > u32::from(u16::MAX) {
        return Err(DevMeshError::BasePort {
            base: base_port,
            dcs,
            top,
            max: u32::from(u16::MAX) - 1000 * dcs - 329,
        });
    }
    Ok(())
}

/// Writes the mesh's files into `dir` (see the module's documentation) and loads them back.
pub fn generate(dcs: u32, dir: &Path, base_port: u16) -> Result<Generated, DevMeshError> {
    check_args(dcs, base_port)?;
    let dir = std::path::absolute(dir).map_err(|source| DevMeshError::Io {
        what: "resolve the path",
        path: dir.to_path_buf(),
        source,
    })?;
    if dir.to_str().is_none() {
        return Err(DevMeshError::NotUtf8(dir));
    }
    create_dir(&dir)?;
    let pki_dir = dir.join("pki");
    let topology = dir.join("topology.toml");

    let dc_files: Vec<DcFiles> = (1..=dcs)
        .map(|k| {
            let dc_dir = dir.join(format!("dc{k}"));
            DcFiles {
                name: format!("dc{k}"),
                node_id: u64::from(k),
                role: if k == dcs && dcs.is_multiple_of(2) {
                    DcRole::Learner
                } else {
                    DcRole::Voter
                },
                ports: DcPorts::new(base_port, k).expect("checked by check_args"),
                config: dc_dir.join("tern.toml"),
                data_dir: dc_dir.join("data"),
                log: dc_dir.join("tern.log"),
                dir: dc_dir,
            }
        })
        .collect();

    // The CA and the certificates: kept when they are there and valid.
    let ca_created = !pki_dir.join(pki::CA_CERT_FILE).exists();
    let ca = if ca_created {
        MeshCa::init(&pki_dir)?
    } else {
        MeshCa::load(&pki_dir)?
    };
    let mut issued = Vec::new();
    for dc in &dc_files {
        if DcIdentity::load(&pki_dir, &dc.name).is_err() {
            ca.issue(&dc.name, &pki_dir)?;
            issued.push(dc.name.clone());
        }
    }

    write_file(&topology, &topology_text(&dc_files))?;
    for dc in &dc_files {
        create_dir(&dc.dir)?;
        write_file(&dc.config, &config_text(dc, &topology, &pki_dir))?;
    }
    check_generated(&topology, &pki_dir, &dc_files)?;

    let stale = (dcs + 1..=MAX_DCS)
        .map(|k| dir.join(format!("dc{k}")))
        .filter(|d| d.exists())
        .collect();
    Ok(Generated {
        dir,
        pki_dir,
        topology,
        ca_created,
        issued,
        dcs: dc_files,
        stale,
    })
}

fn create_dir(path: &Path) -> Result<(), DevMeshError> {
    std::fs::create_dir_all(path).map_err(|source| DevMeshError::Io {
        what: "create directory",
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), DevMeshError> {
    std::fs::write(path, text).map_err(|source| DevMeshError::Io {
        what: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// `text` as a TOML basic string, quoted and escaped.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(quoted, "\\u{:04X}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A path as a TOML string (the path is UTF-8: [`generate`] checked its root).
fn toml_path(path: &Path) -> String {
    toml_string(&path.to_string_lossy())
}

fn topology_text(dcs: &[DcFiles]) -> String {
    let mut text = String::from(
        "# Written by `tern dev mesh`, and rewritten by each run: edit the command, not this file.\n",
    );
    for dc in dcs {
        let _ = write!(
            text,
            "\n[[dc]]\nname = \"{name}\"\nraft = \"{role}\"\nbridge = [\"127.0.0.1:{bridge}\"]\n\n  \
             [[dc.node]]\n  id = {id}\n  name = \"{name}-1\"\n  raft_addr = \"127.0.0.1:{raft}\"\n",
            name = dc.name,
            role = dc.role,
            bridge = dc.ports.bridge,
            id = dc.node_id,
            raft = dc.ports.raft,
        );
    }
    let names: Vec<String> = dcs.iter().map(|dc| format!("\"{}\"", dc.name)).collect();
    let _ = write!(
        text,
        "\n[[domain]]\nname = \"{DOMAIN}\"\ndcs = [{}]\n",
        names.join(", ")
    );
    text
}

fn config_text(dc: &DcFiles, topology: &Path, pki_dir: &Path) -> String {
    let p = dc.ports;
    format!(
        "# Datacenter {name} of a `tern dev mesh`, rewritten by each run: edit the command, not \
         this file.\n\
         [general]\n\
         domains = [\"{DOMAIN}\"]\n\
         data_dir = {data_dir}\n\
         \n\
         [[listen.c2s]]\n\
         address = \"127.0.0.1:{c2s}\"\n\
         tls = \"starttls\"\n\
         \n\
         [[listen.c2s]]\n\
         address = \"127.0.0.1:{tls}\"\n\
         tls = \"direct\"\n\
         \n\
         [[listen.http]]\n\
         address = \"127.0.0.1:{http}\"\n\
         tls = \"none\"\n\
         \n\
         [admin]\n\
         address = \"127.0.0.1:{admin}\"\n\
         \n\
         [cluster]\n\
         dc = \"{name}\"\n\
         node_id = {id}\n\
         topology = {topology}\n\
         \n\
         [mesh]\n\
         pki_dir = {pki_dir}\n",
        name = dc.name,
        data_dir = toml_path(&dc.data_dir),
        c2s = p.c2s,
        tls = p.tls,
        http = p.http,
        admin = p.admin,
        id = dc.node_id,
        topology = toml_path(topology),
        pki_dir = toml_path(pki_dir),
    )
}

/// Loads what [`generate`] wrote with the node's own readers, and checks each file says what
/// was meant.
fn check_generated(
    topology_path: &Path,
    pki_dir: &Path,
    dcs: &[DcFiles],
) -> Result<(), DevMeshError> {
    let bug = |path: &Path, problems: String| DevMeshError::Generated {
        path: path.to_path_buf(),
        problems,
    };
    let topology = Topology::load(topology_path).map_err(|e| bug(topology_path, e.to_string()))?;
    let expected_voters: Vec<u64> = dcs
        .iter()
        .filter(|dc| dc.role == DcRole::Voter)
        .map(|dc| dc.node_id)
        .collect();
    let voters: Vec<u64> = topology.voters().iter().map(|id| id.get()).collect();
    if voters != expected_voters {
        return Err(bug(
            topology_path,
            format!("voters {voters:?}, expected {expected_voters:?}"),
        ));
    }
    for dc in dcs {
        let config = Config::load(&dc.config).map_err(|e| bug(&dc.config, e.to_string()))?;
        let node = NodeId::new(dc.node_id).and_then(|id| topology.node(id));
        let mut problems = Vec::new();
        match node {
            Some(node) if node.dc.as_str() == dc.name => {
                if node.raft_addr != loopback(dc.ports.raft) {
                    problems.push(format!(
                        "node {} has raft_addr {}",
                        dc.node_id, node.raft_addr
                    ));
                }
            }
            _ => problems.push(format!(
                "node {} of {} is not in {}",
                dc.node_id,
                dc.name,
                topology_path.display()
            )),
        }
        let listeners: Vec<(SocketAddr, TlsMode)> = config
            .listen
            .c2s
            .iter()
            .map(|l| (l.address, l.tls))
            .collect();
        let checks = [
            (
                config.cluster.dc == dc.name && config.cluster.node_id == dc.node_id,
                "cluster.dc / cluster.node_id",
            ),
            (
                config.cluster.topology.as_deref() == Some(topology_path),
                "cluster.topology",
            ),
            (config.mesh.pki_dir == pki_dir, "mesh.pki_dir"),
            (config.general.data_dir == dc.data_dir, "general.data_dir"),
            (config.general.domains == [DOMAIN], "general.domains"),
            (
                listeners
                    == [
                        (loopback(dc.ports.c2s), TlsMode::StartTls),
                        (loopback(dc.ports.tls), TlsMode::Direct),
                    ],
                "listen.c2s",
            ),
            (
                config.listen.http.len() == 1
                    && config.listen.http[0].address == loopback(dc.ports.http),
                "listen.http",
            ),
            (
                config.admin.enabled && config.admin.address == loopback(dc.ports.admin),
                "admin",
            ),
        ];
        problems.extend(
            checks
                .iter()
                .filter(|(ok, _)| !ok)
                .map(|(_, key)| format!("{key} is not what was meant")),
        );
        if !problems.is_empty() {
            return Err(bug(&dc.config, problems.join("\n")));
        }
    }
    Ok(())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// Runs `tern dev mesh`, printing what it does; errors go to stderr.
pub fn run(args: DevMeshArgs) -> ExitCode {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tern"));
    let stdout = io::stdout();
    let result = generate(args.dcs, &args.dir, args.base_port).and_then(|generated| {
        let mut out = stdout.lock();
        print_mesh(&generated, &exe, !args.no_start, &mut out);
        if args.no_start {
            print_start_commands(&generated, &exe, &mut out);
            Ok(())
        } else {
            drop(out);
            start(&generated, &exe)
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = stdout.lock().flush();
            let _ = writeln!(io::stderr().lock(), "tern dev mesh: {}", describe(&e));
            if e.is_usage() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The error with its causes.
fn describe(error: &DevMeshError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What was written, and for each datacenter how to reach it. Output errors are ignored.
fn print_mesh(generated: &Generated, exe: &Path, starting: bool, out: &mut dyn Write) {
    let exe = exe.display();
    let n = generated.dcs.len();
    let mut text = format!(
        "tern dev mesh: {n} datacenter{s} in {dir}, domain {DOMAIN}\n  \
         topology  {topology}\n  \
         mesh PKI  {pki} ({ca}{issued})\n",
        s = if n == 1 { "" } else { "s" },
        dir = generated.dir.display(),
        topology = generated.topology.display(),
        pki = generated.pki_dir.display(),
        ca = if generated.ca_created {
            "new CA"
        } else {
            "CA kept"
        },
        issued = if generated.issued.is_empty() {
            String::from(", certificates kept")
        } else {
            format!(", certificates issued for {}", generated.issued.join(", "))
        },
    );
    for stale in &generated.stale {
        let _ = writeln!(
            text,
            "  note: {} is from an earlier run and not part of this mesh",
            stale.display()
        );
    }
    for dc in &generated.dcs {
        let p = dc.ports;
        let _ = write!(
            text,
            "\n{name} (Raft {role}, node {id})\n  \
             connect   host 127.0.0.1, port {c2s} (STARTTLS) or {tls} (direct TLS), domain \
             {DOMAIN}; accept the self-signed certificate\n  \
             register  {exe} ctl --config {config} account register --username U --domain \
             {DOMAIN} --password P [--home dcJ]\n  \
             admin     127.0.0.1:{admin}; Raft 127.0.0.1:{raft}; bridge 127.0.0.1:{bridge} (UDP)\n  \
             data      {data}\n",
            name = dc.name,
            role = dc.role,
            id = dc.node_id,
            c2s = p.c2s,
            tls = p.tls,
            config = dc.config.display(),
            admin = p.admin,
            raft = p.raft,
            bridge = p.bridge,
            data = dc.data_dir.display(),
        );
        if starting {
            let _ = writeln!(text, "  log       {}", dc.log.display());
        }
    }
    let _ = write!(
        text,
        "\nAn account is homed in the datacenter that registers it, or in dcJ with --home dcJ.\n\
         `{exe} ctl --config DIR/dcK/tern.toml mesh status` shows the Raft group as dcK sees it;\n\
         `... mesh home --jid U@{DOMAIN}` where a user lives.\n"
    );
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// With `--no-start`: the commands that start the datacenters.
fn print_start_commands(generated: &Generated, exe: &Path, out: &mut dyn Write) {
    let mut text = String::from("\nStart each datacenter (one terminal each, in any order):\n");
    for dc in &generated.dcs {
        let _ = writeln!(
            text,
            "  {} serve --config {}",
            exe.display(),
            dc.config.display()
        );
    }
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Checks that every port of every datacenter can be bound now, so a clash is reported by
/// port rather than by a node's log.
fn check_ports_free(generated: &Generated) -> Result<(), DevMeshError> {
    for dc in &generated.dcs {
        let busy = |port, what| DevMeshError::PortBusy {
            port,
            what,
            dc: dc.name.clone(),
        };
        for (port, what) in dc.ports.tcp() {
            TcpListener::bind(loopback(port)).map_err(|_| busy(port, what))?;
        }
        UdpSocket::bind(loopback(dc.ports.bridge))
            .map_err(|_| busy(dc.ports.bridge, "bridge port (UDP)"))?;
    }
    Ok(())
}

/// A started datacenter.
struct Running<'a> {
    dc: &'a DcFiles,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Running<'_> {
    /// Whether the process has exited (and records how).
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }
}

/// Starts every datacenter, waits until they accept clients, then until Ctrl-C or SIGTERM,
/// and stops them.
fn start(generated: &Generated, exe: &Path) -> Result<(), DevMeshError> {
    check_ports_free(generated)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DevMeshError::Runtime)?;
    runtime.block_on(supervise(generated, exe))
}

async fn supervise(generated: &Generated, exe: &Path) -> Result<(), DevMeshError> {
    // Set up before the first child exists, so an early Ctrl-C still stops them all.
    let mut signals = Signals::new().map_err(DevMeshError::Runtime)?;
    let mut running: Vec<Running<'_>> = Vec::new();
    for dc in &generated.dcs {
        match spawn(dc, exe) {
            Ok(child) => running.push(Running {
                dc,
                child,
                exited: None,
            }),
            Err(e) => {
                stop_all(&mut running);
                return Err(e);
            }
        }
    }

    // For each datacenter, the first of its listeners not accepting yet (None: all are).
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut waiting: Vec<Option<u16>> = running.iter().map(|r| Some(r.dc.ports.c2s)).collect();
    while waiting.iter().any(Option::is_some) {
        for (i, r) in running.iter_mut().enumerate() {
            if waiting[i].is_none() {
                continue;
            }
            if let Some(status) = r.poll_exit() {
                let (dc, log) = (r.dc.name.clone(), r.dc.log.clone());
                stop_all(&mut running);
                return Err(DevMeshError::Exited {
                    dc,
                    status: status.to_string(),
                    tail: log_tail(&log, TAIL_LINES),
                    log,
                });
            }
            let p = r.dc.ports;
            waiting[i] = [p.c2s, p.tls, p.admin]
                .into_iter()
                .find(|port| !accepts(*port));
        }
        if let Some((i, Some(port))) = waiting.iter().enumerate().find(|(_, w)| w.is_some())
            && Instant::now() > deadline
        {
            let dc = running[i].dc;
            stop_all(&mut running);
            return Err(DevMeshError::NotReady {
                dc: dc.name.clone(),
                port: *port,
                log: dc.log.clone(),
                tail: log_tail(&dc.log, TAIL_LINES),
            });
        }
        tokio::select! {
            () = signals.recv() => {
                print_now("\nstopping before every datacenter was ready");
                stop_all(&mut running);
                return Ok(());
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }

    let mut text = String::new();
    for r in &running {
        let _ = writeln!(
            text,
            "{} is up (pid {}), clients on 127.0.0.1:{}",
            r.dc.name,
            r.child.id(),
            r.dc.ports.c2s
        );
    }
    let _ = writeln!(
        text,
        "All {} datacenters are up; Ctrl-C (or SIGTERM) stops them.",
        running.len()
    );
    print_now(&text);

    loop {
        tokio::select! {
            () = signals.recv() => break,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let mut all_exited = true;
        for r in &mut running {
            let before = r.exited.is_some();
            if let Some(status) = r.poll_exit() {
                if !before {
                    print_now(&format!(
                        "{} exited ({status}); the end of {}:\n{}",
                        r.dc.name,
                        r.dc.log.display(),
                        log_tail(&r.dc.log, TAIL_LINES)
                    ));
                }
            } else {
                all_exited = false;
            }
        }
        if all_exited {
            return Err(DevMeshError::AllExited);
        }
    }
    print_now("stopping the datacenters");
    stop_all(&mut running);
    Ok(())
}

fn print_now(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// Starts `exe serve --config <dc's config>`, its output into the dc's log.
fn spawn(dc: &DcFiles, exe: &Path) -> Result<Child, DevMeshError> {
    let log = File::create(&dc.log).map_err(|source| DevMeshError::Io {
        what: "create",
        path: dc.log.clone(),
        source,
    })?;
    let log_out = log.try_clone().map_err(|source| DevMeshError::Io {
        what: "open",
        path: dc.log.clone(),
        source,
    })?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg("--config")
        .arg(&dc.config)
        .stdin(Stdio::null())
        .stdout(log_out)
        .stderr(log);
    // Its own process group: Ctrl-C reaches this process only, which stops the nodes in order.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.spawn().map_err(|source| DevMeshError::Spawn {
        dc: dc.name.clone(),
        exe: exe.to_path_buf(),
        config: dc.config.clone(),
        source,
    })
}

/// Whether 127.0.0.1:`port` accepts a TCP connection.
fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&loopback(port), Duration::from_millis(500)).is_ok()
}

/// SIGTERM to every running node, then SIGKILL to those still there after [`STOP_TIMEOUT`].
fn stop_all(running: &mut [Running<'_>]) {
    for r in running.iter_mut() {
        if r.poll_exit().is_none() && !terminate(&r.child) {
            let _ = r.child.kill();
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let mut left = false;
        for r in running.iter_mut() {
            left |= r.poll_exit().is_none();
        }
        if !left {
            return;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in running.iter_mut() {
        if r.poll_exit().is_none() {
            print_now(&format!(
                "{} did not stop within {}s: killing it",
                r.dc.name,
                STOP_TIMEOUT.as_secs()
            ));
            let _ = r.child.kill();
            r.exited = r.child.wait().ok();
        }
    }
}

/// Sends SIGTERM (with `kill`, as the workspace forbids `unsafe`); false if that failed.
#[cfg(unix)]
fn terminate(child: &Child) -> bool {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(not(unix))]
fn terminate(_child: &Child) -> bool {
    false
}

/// Ctrl-C (SIGINT) and SIGTERM.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The last `lines` lines of the file at `path` (at most its last 64 KiB), or a note that it
/// cannot be read.
fn log_tail(path: &Path, lines: usize) -> String {
    const MAX_READ: u64 = 64 * 1024;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_READ)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            if tail.is_empty() {
                String::from("  (the log is empty)")
            } else {
                tail.iter()
                    .map(|l| format!("  {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
        Err(e) => format!("  (cannot read the log: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::TempDir;
    use clap::Parser;

    fn roles(topology: &Topology) -> Vec<(String, DcRole)> {
        topology
            .dcs()
            .iter()
            .map(|dc| (dc.name.as_str().to_owned(), dc.role))
            .collect()
    }

    #[test]
    fn ports_follow_the_documented_layout() {
        assert_eq!(
            DcPorts::new(5222, 1),
            Some(DcPorts {
                c2s: 6222,
                tls: 6223,
                http: 6280,
                raft: 6300,
                bridge: 6301,
                admin: 6551
            })
        );
        assert_eq!(DcPorts::new(5222, 2).map(|p| p.c2s), Some(7222));
        assert_eq!(DcPorts::new(5222, 3).map(|p| p.c2s), Some(8222));
        assert_eq!(DcPorts::new(20000, 9).map(|p| p.admin), Some(29329));
        assert_eq!(DcPorts::new(65000, 1), None);
        assert_eq!(
            DcPorts::new(u16::MAX - 1329, 1).map(|p| p.admin),
            Some(65535)
        );
        assert_eq!(DcPorts::new(u16::MAX - 1328, 1), None);
    }

    #[test]
    fn writes_a_topology_configs_and_certificates_that_load() {
        let tmp = TempDir::new("three");
        let g = generate(3, tmp.path(), 5222).unwrap();
        assert!(g.dir.is_absolute());
        assert_eq!(g.dir, tmp.path());
        assert_eq!(g.topology, tmp.path().join("topology.toml"));
        assert_eq!(g.pki_dir, tmp.path().join("pki"));
        assert!(g.ca_created);
        assert_eq!(g.issued, ["dc1", "dc2", "dc3"]);
        assert!(g.stale.is_empty());

        let topology = Topology::load(&g.topology).unwrap();
        assert_eq!(
            roles(&topology),
            [
                ("dc1".to_owned(), DcRole::Voter),
                ("dc2".to_owned(), DcRole::Voter),
                ("dc3".to_owned(), DcRole::Voter)
            ]
        );
        let voters: Vec<u64> = topology.voters().iter().map(|id| id.get()).collect();
        assert_eq!(voters, [1, 2, 3]);
        assert!(topology.learners().is_empty());
        for (k, dc) in (1u16..).zip(topology.dcs()) {
            let b = 5222 + 1000 * k;
            assert_eq!(dc.nodes.len(), 1);
            let node = &dc.nodes[0];
            assert_eq!(node.id.get(), u64::from(k));
            assert_eq!(node.name.as_str(), format!("dc{k}-1"));
            assert_eq!(node.raft_addr, loopback(b + 78));
            let bridges: Vec<Option<SocketAddr>> =
                dc.bridge.iter().map(|e| e.socket_addr()).collect();
            assert_eq!(bridges, [Some(loopback(b + 79))]);
        }
        let domains = topology.domains();
        assert_eq!(domains.len(), 1);
        assert_eq!(domains[0].name, "localhost");
        for dc in ["dc1", "dc2", "dc3"] {
            assert!(domains[0].served_by(dc), "{dc}");
        }

        for (k, dc) in (1u16..).zip(&g.dcs) {
            let b = 5222 + 1000 * k;
            let dc_dir = tmp.path().join(format!("dc{k}"));
            assert_eq!(dc.config, dc_dir.join("tern.toml"));
            assert_eq!(dc.log, dc_dir.join("tern.log"));
            let config = Config::load(&dc.config).unwrap();
            assert_eq!(config.general.domains, ["localhost"]);
            assert_eq!(config.general.data_dir, dc_dir.join("data"));
            let listeners: Vec<(SocketAddr, TlsMode)> = config
                .listen
                .c2s
                .iter()
                .map(|l| (l.address, l.tls))
                .collect();
            assert_eq!(
                listeners,
                [
                    (loopback(b), TlsMode::StartTls),
                    (loopback(b + 1), TlsMode::Direct)
                ]
            );
            assert_eq!(config.admin.address, loopback(b + 329));
            assert_eq!(config.cluster.dc, format!("dc{k}"));
            assert_eq!(config.cluster.node_id, u64::from(k));
            assert_eq!(config.cluster.topology.as_deref(), Some(&*g.topology));
            assert_eq!(config.mesh.pki_dir, g.pki_dir);
            // The paths are written absolute.
            let text = std::fs::read_to_string(&dc.config).unwrap();
            assert!(
                text.contains(&format!("topology = \"{}\"", g.topology.display())),
                "{text}"
            );
            DcIdentity::load(&g.pki_dir, &format!("dc{k}")).unwrap();
        }
        assert!(g.pki_dir.join("ca.key").exists());
    }

    #[test]
    fn an_even_count_makes_the_last_datacenter_a_learner() {
        for n in 1..=MAX_DCS {
            let tmp = TempDir::new("roles");
            let g = generate(n, tmp.path(), 20000).unwrap();
            let topology = Topology::load(&g.topology).unwrap();
            let roles = roles(&topology);
            assert_eq!(roles.len(), n as usize);
            for (i, (name, role)) in roles.iter().enumerate() {
                let last = i + 1 == n as usize;
                let expected = if last && n.is_multiple_of(2) {
                    DcRole::Learner
                } else {
                    DcRole::Voter
                };
                assert_eq!(*role, expected, "{name} of {n}");
                assert_eq!(g.dcs[i].role, expected);
            }
            let voters = topology.voters().len();
            assert_eq!(voters % 2, 1, "{n} DCs: {voters} voters");
            assert_eq!(topology.learners().len(), n as usize - voters);
            // The learner DC serves the domain too.
            assert!(topology.domains()[0].served_by(&format!("dc{n}")));
        }
    }

    #[test]
    fn a_second_run_keeps_the_ca_the_certificates_and_the_data() {
        let tmp = TempDir::new("rerun");
        let first = generate(2, tmp.path(), 5222).unwrap();
        let ca_pem = std::fs::read(first.pki_dir.join("ca.pem")).unwrap();
        let ca_key = std::fs::read(first.pki_dir.join("ca.key")).unwrap();
        let dc1_pem = std::fs::read(first.pki_dir.join("dc1.pem")).unwrap();
        std::fs::create_dir_all(&first.dcs[0].data_dir).unwrap();
        let marker = first.dcs[0].data_dir.join("tern.redb");
        std::fs::write(&marker, b"accounts").unwrap();
        std::fs::write(&first.topology, "garbage").unwrap();
        std::fs::write(&first.dcs[1].config, "garbage").unwrap();
        // dc2's certificate is gone: it is issued again; dc1's is kept.
        std::fs::remove_file(first.pki_dir.join("dc2.pem")).unwrap();

        let second = generate(3, tmp.path(), 5222).unwrap();
        assert!(!second.ca_created);
        assert_eq!(second.issued, ["dc2", "dc3"]);
        assert_eq!(
            std::fs::read(second.pki_dir.join("ca.pem")).unwrap(),
            ca_pem
        );
        assert_eq!(
            std::fs::read(second.pki_dir.join("ca.key")).unwrap(),
            ca_key
        );
        assert_eq!(
            std::fs::read(second.pki_dir.join("dc1.pem")).unwrap(),
            dc1_pem
        );
        for dc in ["dc1", "dc2", "dc3"] {
            DcIdentity::load(&second.pki_dir, dc).unwrap();
        }
        assert_eq!(std::fs::read(&marker).unwrap(), b"accounts");
        // Rewritten: three voters now, and dc2's configuration is whole again.
        let topology = Topology::load(&second.topology).unwrap();
        assert_eq!(topology.voters().len(), 3);
        Config::load(&second.dcs[1].config).unwrap();

        // Back to one DC: the others' directories are pointed out, not removed.
        let third = generate(1, tmp.path(), 5222).unwrap();
        assert_eq!(
            third.stale,
            [tmp.path().join("dc2"), tmp.path().join("dc3")]
        );
        assert!(tmp.path().join("dc3/tern.toml").exists());
    }

    #[test]
    fn bad_counts_and_ports_are_refused_before_anything_is_written() {
        let tmp = TempDir::new("refused");
        for n in [0, 10, 100] {
            let e = generate(n, tmp.path(), 5222).unwrap_err();
            assert!(matches!(e, DevMeshError::DcCount(_)), "{e:?}");
            assert!(e.is_usage());
            assert_eq!(
                e.to_string(),
                format!("--dcs {n}: a dev mesh has 1 to 9 datacenters")
            );
        }
        let e = generate(9, tmp.path(), 60000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--base-port 60000: the ports of dc9 would reach 69329, past 65535; use a base \
             port of at most 56206"
        );
        generate(9, tmp.path(), 56207).unwrap_err();
        assert!(!tmp.path().exists(), "nothing written");
        generate(9, tmp.path(), 56206).unwrap();
    }

    #[test]
    fn paths_with_quotes_and_backslashes_survive_the_toml() {
        let tmp = TempDir::new("quote");
        let dir = tmp.path().join("a \"quoted\" \\ dir");
        let g = generate(1, &dir, 5222).unwrap();
        let config = Config::load(&g.dcs[0].config).unwrap();
        assert_eq!(config.mesh.pki_dir, dir.join("pki"));
        assert_eq!(config.general.data_dir, dir.join("dc1/data"));
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }

    #[test]
    fn a_broken_ca_is_reported_by_file() {
        let tmp = TempDir::new("broken");
        std::fs::create_dir_all(tmp.path().join("pki")).unwrap();
        std::fs::write(tmp.path().join("pki/ca.pem"), "not a certificate").unwrap();
        let e = describe(&generate(1, tmp.path(), 5222).unwrap_err());
        assert!(
            e.contains(&*tmp.path().join("pki/ca.pem").to_string_lossy()),
            "{e}"
        );
        assert!(!tmp.path().join("topology.toml").exists());

        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = describe(&generate(1, &file, 5222).unwrap_err());
        assert!(
            e.starts_with(&format!("cannot create directory {}", file.display())),
            "{e}"
        );
    }

    #[test]
    fn prints_how_to_connect_register_and_start() {
        let tmp = TempDir::new("print");
        let g = generate(2, tmp.path(), 5222).unwrap();
        let exe = Path::new("/opt/tern");
        let mut out = Vec::new();
        print_mesh(&g, exe, false, &mut out);
        print_start_commands(&g, exe, &mut out);
        let text = String::from_utf8(out).unwrap();
        let dir = tmp.path().display();
        for expected in [
            format!("2 datacenters in {dir}, domain localhost"),
            "dc1 (Raft voter, node 1)".to_owned(),
            "dc2 (Raft learner, node 2)".to_owned(),
            "host 127.0.0.1, port 6222 (STARTTLS) or 6223 (direct TLS), domain localhost"
                .to_owned(),
            "port 7222 (STARTTLS)".to_owned(),
            format!(
                "/opt/tern ctl --config {dir}/dc2/tern.toml account register --username U \
                 --domain localhost --password P [--home dcJ]"
            ),
            "admin     127.0.0.1:7551".to_owned(),
            format!("/opt/tern serve --config {dir}/dc1/tern.toml"),
            format!("/opt/tern serve --config {dir}/dc2/tern.toml"),
        ] {
            assert!(text.contains(&expected), "{expected:?} in\n{text}");
        }
        assert!(!text.contains("tern.log"), "{text}");

        let mut out = Vec::new();
        print_mesh(&g, exe, true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(&format!("log       {dir}/dc1/tern.log")),
            "{text}"
        );
        assert!(!text.contains("serve --config"), "{text}");
    }

    #[test]
    fn busy_ports_are_named() {
        let tmp = TempDir::new("busy");
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        // A base port that puts dc1's client port, the first one checked, on the held one.
        let Some(base) = port.checked_sub(1000) else {
            return;
        };
        let g = generate(1, tmp.path(), base).unwrap();
        let e = check_ports_free(&g).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "127.0.0.1:{port} (dc1's STARTTLS client port) is in use: stop what holds it, or choose \
                 another --base-port"
            )
        );
    }

    #[test]
    fn the_log_tail_is_the_last_lines() {
        let tmp = TempDir::new("tail");
        std::fs::create_dir_all(tmp.path()).unwrap();
        let log = tmp.path().join("tern.log");
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        assert_eq!(log_tail(&log, 2), "  line 99\n  line 100");
        std::fs::write(&log, "").unwrap();
        assert_eq!(log_tail(&log, 2), "  (the log is empty)");
        assert!(log_tail(&tmp.path().join("missing"), 2).starts_with("  (cannot read the log: "));
    }

    /// The shape of the `tern` binary's command line, as far as `dev mesh` goes.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Top {
        #[command(subcommand)]
        Dev(Dev),
    }

    #[derive(Debug, clap::Subcommand)]
    enum Dev {
        Mesh(DevMeshArgs),
    }

    fn parse(line: &str) -> Result<DevMeshArgs, clap::Error> {
        let words = std::iter::once("tern").chain(line.split_whitespace());
        Cli::try_parse_from(words).map(|cli| match cli.command {
            Top::Dev(Dev::Mesh(args)) => args,
        })
    }

    #[test]
    fn parses_the_documented_command_line() {
        assert_eq!(
            parse("dev mesh --dcs 3 --dir /tmp/mesh").unwrap(),
            DevMeshArgs {
                dcs: 3,
                dir: PathBuf::from("/tmp/mesh"),
                no_start: false,
                base_port: 5222,
            }
        );
        assert_eq!(
            parse("dev mesh --dir m --no-start --dcs 2 --base-port 20000").unwrap(),
            DevMeshArgs {
                dcs: 2,
                dir: PathBuf::from("m"),
                no_start: true,
                base_port: 20000,
            }
        );
        for line in [
            "dev mesh",
            "dev mesh --dcs 3",
            "dev mesh --dir m",
            "dev mesh --dcs -1 --dir m",
            "dev mesh --dcs 3 --dir m --base-port 70000",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
    }
}
