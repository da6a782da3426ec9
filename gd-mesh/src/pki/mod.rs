//! The mesh's PKI: its own certificate authority, one certificate per datacenter, and the
//! mutual-TLS configurations of the bridges.
//!
//! The CA (`tern mesh ca init`) is an ECDSA P-256 key and a self-signed certificate valid ten
//! years, kept in a directory (`ca.pem`, `ca.key`). Each datacenter gets a leaf certificate
//! (`tern mesh cert issue --dc ID`) valid two years, usable as TLS server and client, whose only
//! subject alternative name is the DNS name `<dc>.dc.tern-mesh`: that name is how a bridge reads
//! which DC a peer is ([`peer_dc`]) and how a dialer checks it reached the DC it dialed. A DC
//! needs `ca.pem`, `<dc>.pem` and `<dc>.key`; `ca.key` stays where certificates are issued.
//!
//! A bridge listener ([`server_config`]) accepts only peers presenting a certificate chained to
//! the mesh CA that names a DC it knows (the topology's); a dialer ([`client_config`]) accepts
//! only a listener whose certificate, from the same CA, names the DC it dialed. Both speak
//! TLS 1.3 only, with the ring provider, and ALPN [`ALPN`].
//!
//! # Layout
//! - this file: DC names ([`validate_dc`], [`server_name`], [`peer_dc`]) and [`PkiError`].
//! - `ca`: [`MeshCa`] (init, load, issue), [`IssuedCert`] and [`DcIdentity`].
//! - `tls`: the QUIC configurations ([`server_config`], [`client_config`],
//!   [`TransportSettings`]) and the verifier that refuses DCs outside the topology.
//! - `files`: reading PEM files and writing files atomically (keys with mode 0600).

mod ca;
mod files;
mod tls;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use rustls_pki_types::CertificateDer;

pub use self::ca::{DcIdentity, IssuedCert, MeshCa};
pub use self::tls::{ALPN, TransportSettings, client_config, server_config};

/// The directory `tern mesh` uses when none is given, relative to the working directory.
pub const DEFAULT_DIR: &str = "mesh-pki";
/// The CA certificate's file name in a PKI directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key's file name in a PKI directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// What follows the DC id in the DNS name of a DC's certificate.
pub const DC_NAME_SUFFIX: &str = ".dc.tern-mesh";
/// The longest DC id (a DNS label).
pub const MAX_DC_LEN: usize = 63;

/// Why a PKI operation failed. File errors name the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A DC id is not 1–63 characters of `[a-z0-9-]` with no `-` at either end.
    #[error("invalid datacenter id {dc:?}: {reason}")]
    InvalidDc {
        /// The id given.
        dc: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// `init` found a CA file already there.
    #[error("a mesh CA already exists: {} (refusing to overwrite it)", .path.display())]
    CaExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A file or directory could not be read.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}", .path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file has a malformed PEM section.
    #[error("invalid PEM in {}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser reported.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate file holds no certificate, or (for the CA) more than one.
    #[error("{} holds {found} certificates, expected {expected}", .path.display())]
    CertificateCount {
        /// The file.
        path: PathBuf,
        /// How many it holds.
        found: usize,
        /// How many were expected, in words.
        expected: &'static str,
    },
    /// A key file has no private key section.
    #[error("no private key in {}", .path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A CA private key cannot be parsed.
    #[error("unusable private key in {}", .path.display())]
    CaKey {
        /// The key file.
        path: PathBuf,
        /// What rcgen reported.
        #[source]
        source: rcgen::Error,
    },
    /// A private key cannot be used for signing by the TLS provider.
    #[error("unusable private key in {}", .path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
    /// A certificate cannot be parsed, or the CA certificate cannot be a trust anchor.
    #[error("invalid certificate in {}", .path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What webpki reported.
        #[source]
        source: webpki::Error,
    },
    /// A certificate's public key cannot be compared with its private key.
    #[error("unusable certificate in {}", .path.display())]
    UnusableCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
    /// A private key is not the key of the certificate beside it.
    #[error("private key {} does not match certificate {}", .key_path.display(), .cert_path.display())]
    KeyMismatch {
        /// The certificate file.
        cert_path: PathBuf,
        /// The key file.
        key_path: PathBuf,
    },
    /// A DC's certificate does not name that DC.
    #[error(
        "{} is not a certificate for datacenter {expected} (it names {})",
        .path.display(),
        .found.as_deref().unwrap_or("no datacenter")
    )]
    WrongDc {
        /// The certificate file.
        path: PathBuf,
        /// The DC asked for.
        expected: String,
        /// The DC the certificate names, if any.
        found: Option<String>,
    },
    /// A certificate is not valid under the mesh CA now: another CA, expired, not yet valid,
    /// or without the TLS server and client usages.
    #[error("{} is not valid under the mesh CA in {}", .path.display(), .ca_path.display())]
    NotIssuedByCa {
        /// The certificate file (or, at issue time, the one being written).
        path: PathBuf,
        /// The CA certificate file.
        ca_path: PathBuf,
        /// What webpki reported.
        #[source]
        source: webpki::Error,
    },
    /// rcgen could not make a key or certificate.
    #[error("cannot generate {what}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// What rcgen reported.
        #[source]
        source: rcgen::Error,
    },
    /// The system clock is before 1970.
    #[error("the system clock is before 1970")]
    Clock,
    /// rustls refused to build a configuration.
    #[error("cannot build the bridge TLS configuration")]
    Tls {
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused to build the client-certificate verifier.
    #[error("cannot build the bridge client-certificate verifier")]
    Verifier {
        /// What rustls reported.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The TLS configuration cannot be used for QUIC.
    #[error("the bridge TLS configuration cannot be used for QUIC")]
    Quic {
        /// What quinn reported.
        #[source]
        source: quinn::crypto::rustls::NoInitialCipherSuite,
    },
    /// A transport setting is out of QUIC's range.
    #[error("transport setting {setting} is out of range")]
    TransportSetting {
        /// The setting.
        setting: &'static str,
    },
}

/// Checks a DC id: 1–63 characters of `[a-z0-9-]`, not starting or ending with `-` (a DNS
/// label, since it becomes one in `<dc>.dc.tern-mesh`).
pub fn validate_dc(dc: &str) -> Result<(), PkiError> {
    let reason = if dc.is_empty() {
        Some("it is empty")
    } else if dc.len() > MAX_DC_LEN {
        Some("it is longer than 63 characters")
    } else if !dc
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("only a-z, 0-9 and '-' are allowed")
    } else if dc.starts_with('-') || dc.ends_with('-') {
        Some("it must not start or end with '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PkiError::InvalidDc {
            dc: dc.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The DNS name in the certificate of DC `dc`, and the server name a dialer of that DC checks:
/// `<dc>.dc.tern-mesh`.
pub fn server_name(dc: &str) -> String {
    format!("{dc}{DC_NAME_SUFFIX}")
}

/// The DC named by a peer's leaf certificate: the `<dc>` of its DNS subject alternative name
/// `<dc>.dc.tern-mesh`. `None` when the certificate cannot be parsed, names no valid DC, or names
/// more than one.
///
/// This only reads the name; whether the certificate is trusted is the TLS verifier's job (a
/// connection's peer certificate has passed it).
pub fn peer_dc(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut found: Option<&str> = None;
    for name in cert.valid_dns_names() {
        let Some(dc) = name.strip_suffix(DC_NAME_SUFFIX) else {
            continue;
        };
        if validate_dc(dc).is_err() {
            continue;
        }
        match found {
            Some(other) if other != dc => return None,
            _ => found = Some(dc),
        }
    }
    found.map(str::to_owned)
}
