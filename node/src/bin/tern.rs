//! `tern`: the Tern XMPP server (`tern serve`), its admin client (`tern ctl`), the mesh's
//! certificate tool (`tern mesh`), database upkeep (`tern db migrate`) and developer tools
//! (`tern dev mesh`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tern_config::Config;

#[derive(Parser)]
#[command(
    name = "tern",
    version,
    about = "Tern: an XMPP server for deployments that span continents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node. Without --config: one node, domain `localhost`, data in ./tern-data.
    Serve {
        /// The node's configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Administer a running node through its admin API.
    Ctl(tern_node::ctl::CtlArgs),
    /// The global mesh's certificates: `mesh ca init`, `mesh cert issue --dc ID` (files in
    /// ./mesh-pki unless --dir is given).
    Mesh(tern_node::mesh_pki::MeshArgs),
    /// The node's database: `db migrate --config FILE` applies the PostgreSQL schema
    /// migrations not applied yet, and exits.
    Db(tern_node::db::DbArgs),
    /// Developer tools: `dev mesh --dcs N --dir DIR`, a multi-datacenter deployment on this
    /// machine.
    #[command(subcommand)]
    Dev(DevCommand),
}

/// `tern dev ...`.
#[derive(Subcommand)]
enum DevCommand {
    /// Write (and, without --no-start, run) a mesh of N datacenters on 127.0.0.1: a mesh CA,
    /// DIR/topology.toml and DIR/dcK/tern.toml, datacenter K's client port B + 1000·K.
    Mesh(tern_node::dev_mesh::DevMeshArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Ctl(args) => tern_node::ctl::run(args),
        Command::Mesh(args) => tern_node::mesh_pki::run(args),
        Command::Db(args) => tern_node::db::run(args),
        Command::Dev(DevCommand::Mesh(args)) => tern_node::dev_mesh::run(args),
    }
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    let config = match &path {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(errors) => {
                eprintln!("tern: the configuration has errors:");
                for e in &errors.errors {
                    eprintln!("  {e}");
                }
                return ExitCode::from(2);
            }
        },
        None => Config::embedded_default(),
    };
    tern_node::telemetry::init(&config.general.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tern: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tern_node::server::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern: {e:#}");
            ExitCode::FAILURE
        }
    }
}
