//! `tern mesh`: the global mesh's certificates, made offline with no node running.
//!
//! - `tern mesh ca init [--dir DIR]`: a new mesh CA, `DIR/ca.pem` and `DIR/ca.key`.
//! - `tern mesh cert issue --dc ID [--dir DIR]`: a certificate for datacenter ID,
//!   `DIR/ID.pem` (the DC's certificate then the CA's) and `DIR/ID.key`.
//!
//! `DIR` defaults to `mesh-pki` in the working directory. The work is done by
//! [`tern_gd_mesh::pki`]; this module is the command line and what it prints. Exit codes: 0
//! success, 1 the operation failed (the message names the file), 2 bad command line (clap).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tern_gd_mesh::pki::{self, MeshCa, PkiError};

/// The global mesh's certificates: the mesh CA and one certificate per datacenter.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct MeshArgs {
    /// The group.
    #[command(subcommand)]
    pub command: MeshCommand,
}

/// `tern mesh ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum MeshCommand {
    /// The mesh certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Datacenter certificates.
    #[command(subcommand)]
    Cert(CertCommand),
}

/// `tern mesh ca ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum CaCommand {
    /// Make a new mesh CA: DIR/ca.pem and DIR/ca.key (mode 0600). Refuses to overwrite one.
    Init {
        /// The PKI directory (made if missing, mode 0700).
        #[arg(long, value_name = "DIR", default_value = pki::DEFAULT_DIR)]
        dir: PathBuf,
    },
}

/// `tern mesh cert ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum CertCommand {
    /// Issue (or re-issue, replacing it) the certificate of datacenter ID with the CA in DIR:
    /// DIR/ID.pem and DIR/ID.key (mode 0600).
    Issue {
        /// The datacenter's id, as in the topology: 1-63 characters of a-z, 0-9 and '-'.
        #[arg(long, value_name = "ID")]
        dc: String,
        /// The PKI directory holding ca.pem and ca.key.
        #[arg(long, value_name = "DIR", default_value = pki::DEFAULT_DIR)]
        dir: PathBuf,
    },
}

/// Runs a `tern mesh` command, printing what it wrote, or the error on stderr.
pub fn run(args: MeshArgs) -> ExitCode {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match execute(&args, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            let _ = writeln!(io::stderr().lock(), "tern mesh: {}", describe(&e, &args));
            ExitCode::FAILURE
        }
    }
}

/// [`run`] with its output given; output write errors are ignored (the files are written).
fn execute(args: &MeshArgs, out: &mut dyn Write) -> Result<(), PkiError> {
    match &args.command {
        MeshCommand::Ca(CaCommand::Init { dir }) => {
            let ca = MeshCa::init(dir)?;
            let _ = writeln!(
                out,
                "wrote the mesh CA certificate (valid 10 years): {}\n\
                 wrote the mesh CA private key (keep it secret; DCs do not need it): {}\n\
                 next, for each datacenter: tern mesh cert issue --dc ID --dir {}",
                ca.cert_path().display(),
                ca.key_path().display(),
                dir.display()
            );
        }
        MeshCommand::Cert(CertCommand::Issue { dc, dir }) => {
            pki::validate_dc(dc)?;
            let ca = MeshCa::load(dir)?;
            let issued = ca.issue(dc, dir)?;
            let _ = writeln!(
                out,
                "wrote the certificate of datacenter {dc} ({}, valid until {}): {}\n\
                 wrote its private key: {}\n\
                 datacenter {dc} needs {}, {} and {}",
                pki::server_name(dc),
                humantime::format_rfc3339_seconds(issued.not_after),
                issued.cert_path.display(),
                issued.key_path.display(),
                ca.cert_path().display(),
                issued.cert_path.display(),
                issued.key_path.display()
            );
        }
    }
    Ok(())
}

/// The error with its causes, and a hint when the CA is missing.
fn describe(error: &PkiError, args: &MeshArgs) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if let (MeshCommand::Cert(CertCommand::Issue { dir, .. }), PkiError::Read { path, source }) =
        (&args.command, error)
        && source.kind() == io::ErrorKind::NotFound
        && is_ca_file(dir, path)
    {
        text.push_str(&format!(
            " (no mesh CA there: run `tern mesh ca init --dir {}` first)",
            dir.display()
        ));
    }
    text
}

fn is_ca_file(dir: &Path, path: &Path) -> bool {
    path == dir.join(pki::CA_CERT_FILE) || path == dir.join(pki::CA_KEY_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::TempDir;
    use clap::Parser;

    /// The shape of the `tern` binary's command line, as far as `mesh` goes.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Top {
        Mesh(MeshArgs),
    }

    fn parse(line: &str) -> Result<MeshCommand, clap::Error> {
        let words = std::iter::once("tern").chain(line.split_whitespace());
        Cli::try_parse_from(words).map(|cli| match cli.command {
            Top::Mesh(args) => args.command,
        })
    }

    #[test]
    fn parses_mesh_commands_exactly_as_documented() {
        let cases = [
            (
                "mesh ca init",
                MeshCommand::Ca(CaCommand::Init {
                    dir: PathBuf::from("mesh-pki"),
                }),
            ),
            (
                "mesh ca init --dir /etc/tern/pki",
                MeshCommand::Ca(CaCommand::Init {
                    dir: PathBuf::from("/etc/tern/pki"),
                }),
            ),
            (
                "mesh cert issue --dc eu-west",
                MeshCommand::Cert(CertCommand::Issue {
                    dc: "eu-west".into(),
                    dir: PathBuf::from("mesh-pki"),
                }),
            ),
            (
                "mesh cert issue --dir pki --dc dc1",
                MeshCommand::Cert(CertCommand::Issue {
                    dc: "dc1".into(),
                    dir: PathBuf::from("pki"),
                }),
            ),
        ];
        for (line, command) in cases {
            assert_eq!(
                parse(line).unwrap_or_else(|e| panic!("{line}: {e}")),
                command,
                "{line}"
            );
        }
        for line in [
            "mesh",
            "mesh ca",
            "mesh ca init extra",
            "mesh cert issue",
            "mesh cert issue --dir pki",
            "mesh cert revoke --dc dc1",
            "mesh ca init --dc dc1",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
    }

    fn exec(command: MeshCommand) -> Result<String, String> {
        let args = MeshArgs { command };
        let mut out = Vec::new();
        execute(&args, &mut out)
            .map(|()| String::from_utf8(out).unwrap())
            .map_err(|e| describe(&e, &args))
    }

    #[test]
    fn init_then_issue_print_the_files_written() {
        let dir = TempDir::new("run");
        let printed = exec(MeshCommand::Ca(CaCommand::Init {
            dir: dir.path().to_path_buf(),
        }))
        .unwrap();
        assert!(
            printed.contains(&*dir.path().join("ca.pem").to_string_lossy()),
            "{printed}"
        );
        assert!(
            printed.contains(&*dir.path().join("ca.key").to_string_lossy()),
            "{printed}"
        );

        let printed = exec(MeshCommand::Cert(CertCommand::Issue {
            dc: "dc1".into(),
            dir: dir.path().to_path_buf(),
        }))
        .unwrap();
        assert!(
            printed.contains(&*dir.path().join("dc1.pem").to_string_lossy()),
            "{printed}"
        );
        assert!(
            printed.contains(&*dir.path().join("dc1.key").to_string_lossy()),
            "{printed}"
        );
        assert!(printed.contains("dc1.dc.tern-mesh"), "{printed}");
        pki::DcIdentity::load(dir.path(), "dc1").unwrap();

        let err = exec(MeshCommand::Ca(CaCommand::Init {
            dir: dir.path().to_path_buf(),
        }))
        .unwrap_err();
        assert!(err.contains("already exists"), "{err}");
        assert!(err.contains("ca.pem"), "{err}");
    }

    #[test]
    fn issue_without_a_ca_says_how_to_make_one() {
        let dir = TempDir::new("no-ca");
        let err = exec(MeshCommand::Cert(CertCommand::Issue {
            dc: "dc1".into(),
            dir: dir.path().to_path_buf(),
        }))
        .unwrap_err();
        assert!(err.contains("ca.pem"), "{err}");
        assert!(err.contains("tern mesh ca init --dir"), "{err}");
        assert!(!dir.path().exists(), "nothing is written without a CA");

        let err = exec(MeshCommand::Cert(CertCommand::Issue {
            dc: "DC_1".into(),
            dir: dir.path().to_path_buf(),
        }))
        .unwrap_err();
        assert!(err.contains("invalid datacenter id \"DC_1\""), "{err}");
    }
}
