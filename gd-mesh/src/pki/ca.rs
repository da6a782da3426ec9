//! The mesh CA ([`MeshCa`]), the certificates it issues ([`IssuedCert`]), and a DC's loaded
//! identity ([`DcIdentity`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData as _,
};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, crypto::CryptoProvider};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use super::files::{self, ensure_dir, read_certs, read_key, read_single_cert, write_atomic};
use super::{CA_CERT_FILE, CA_KEY_FILE, PkiError, peer_dc, server_name, validate_dc};

/// The common name of the mesh CA.
const CA_COMMON_NAME: &str = "Tern mesh CA";
/// How long the CA is valid: ten years.
const CA_VALIDITY: Duration = Duration::from_secs(3653 * 24 * 3600);
/// How long a DC certificate is valid: two years.
const LEAF_VALIDITY: Duration = Duration::from_secs(731 * 24 * 3600);
/// How far back validity starts, so that DCs whose clocks lag a little accept a fresh
/// certificate.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The mesh's certificate authority: its certificate and signing key, loaded from (or just
/// written to) a PKI directory.
pub struct MeshCa {
    cert_path: PathBuf,
    key_path: PathBuf,
    cert: CertificateDer<'static>,
    key: KeyPair,
}

impl fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshCa")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// What [`MeshCa::issue`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The DC the certificate is for.
    pub dc: String,
    /// `<dir>/<dc>.pem`: the DC's certificate, then the CA's.
    pub cert_path: PathBuf,
    /// `<dir>/<dc>.key`: the DC's private key (mode 0600).
    pub key_path: PathBuf,
    /// When the certificate expires.
    pub not_after: SystemTime,
}

impl MeshCa {
    /// Makes a new CA in `dir` (created if missing, mode 0700): an ECDSA P-256 key written to
    /// `dir/ca.key` (mode 0600) and a self-signed CA certificate, common name "Tern mesh CA",
    /// valid ten years, written to `dir/ca.pem`.
    ///
    /// Refuses, naming the file, when either file already exists: replacing a CA would cut
    /// every DC holding a certificate from it off the mesh.
    pub fn init(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        for path in [&cert_path, &key_path] {
            // `symlink_metadata`: a dangling link counts as present too.
            if path.symlink_metadata().is_ok() {
                return Err(PkiError::CaExists { path: path.clone() });
            }
        }
        ensure_dir(dir)?;
        let key = new_key("the CA key")?;
        let mut params = ca_params();
        set_validity(&mut params, CA_VALIDITY)?;
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: "the CA certificate",
                source,
            })?;
        write_atomic(&key_path, key.serialize_pem().as_bytes(), true)?;
        write_atomic(&cert_path, cert.pem().as_bytes(), false)?;
        Ok(Self {
            cert_path,
            key_path,
            cert: cert.der().clone(),
            key,
        })
    }

    /// Loads the CA of `dir`: `dir/ca.pem` (exactly one certificate, usable as a trust anchor)
    /// and `dir/ca.key` (its private key).
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert = read_single_cert(&cert_path)?;
        webpki::anchor_from_trusted_cert(&cert).map_err(|source| PkiError::BadCertificate {
            path: cert_path.clone(),
            source,
        })?;
        let pem = files::read(&key_path)?;
        let key = KeyPair::from_pem(&String::from_utf8_lossy(&pem)).map_err(|source| {
            PkiError::CaKey {
                path: key_path.clone(),
                source,
            }
        })?;
        let parsed =
            webpki::EndEntityCert::try_from(&cert).map_err(|source| PkiError::BadCertificate {
                path: cert_path.clone(),
                source,
            })?;
        if parsed.subject_public_key_info().as_ref() != key.subject_public_key_info().as_slice() {
            return Err(PkiError::KeyMismatch {
                cert_path,
                key_path,
            });
        }
        Ok(Self {
            cert_path,
            key_path,
            cert,
            key,
        })
    }

    /// Issues a certificate for datacenter `dc` into `dir` (created if missing): a new ECDSA
    /// P-256 key in `dir/<dc>.key` (mode 0600) and `dir/<dc>.pem` holding the DC's certificate
    /// then the CA's. The certificate's only subject alternative name is the DNS name
    /// `<dc>.dc.tern-mesh`; it is valid two years, for TLS server and client authentication.
    ///
    /// Issuing again for the same DC replaces both files (rotation); the old certificate stays
    /// valid until it expires. The new certificate is checked against the CA before anything is
    /// written.
    pub fn issue(&self, dc: &str, dir: &Path) -> Result<IssuedCert, PkiError> {
        validate_dc(dc)?;
        let cert_path = dir.join(format!("{dc}.pem"));
        let key_path = dir.join(format!("{dc}.key"));
        let key = new_key("the DC key")?;
        let generate = |source| PkiError::Generate {
            what: "the DC certificate",
            source,
        };
        let mut params = CertificateParams::new(vec![server_name(dc)]).map_err(generate)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Tern mesh DC {dc}"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let not_after = set_validity(&mut params, LEAF_VALIDITY)?;
        // The issuer's name and key identifier are those `init` gave the CA certificate; the
        // check below proves the result chains to the certificate actually in `ca.pem`.
        let ca_params = ca_params();
        let issuer = Issuer::from_params(&ca_params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(generate)?;
        let chain = [cert.der().clone(), self.cert.clone()];
        verify_leaf(&self.cert, &chain, UnixTime::now()).map_err(|source| {
            PkiError::NotIssuedByCa {
                path: cert_path.clone(),
                ca_path: self.cert_path.clone(),
                source,
            }
        })?;
        ensure_dir(dir)?;
        let mut pem = cert.pem();
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&to_pem(&self.cert));
        write_atomic(&key_path, key.serialize_pem().as_bytes(), true)?;
        write_atomic(&cert_path, pem.as_bytes(), false)?;
        Ok(IssuedCert {
            dc: dc.to_owned(),
            cert_path,
            key_path,
            not_after,
        })
    }

    /// The CA certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate's file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The CA key's file.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
}

/// What one DC needs to run its bridges: the mesh CA's certificate, its own certificate chain
/// and its private key.
pub struct DcIdentity {
    dc: String,
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for DcIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DcIdentity")
            .field("dc", &self.dc)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Clone for DcIdentity {
    fn clone(&self) -> Self {
        Self {
            dc: self.dc.clone(),
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl DcIdentity {
    /// Loads DC `dc`'s identity from `dir`: `ca.pem`, `<dc>.pem` and `<dc>.key` (`ca.key` is
    /// not needed). Checks that the key is the certificate's, that the certificate names `dc`,
    /// and that it is valid now under the CA for TLS server and client authentication, so a
    /// wrong, expired or foreign file is reported at startup rather than at the first
    /// handshake.
    pub fn load(dir: &Path, dc: &str) -> Result<Self, PkiError> {
        validate_dc(dc)?;
        let ca_path = dir.join(CA_CERT_FILE);
        let cert_path = dir.join(format!("{dc}.pem"));
        let key_path = dir.join(format!("{dc}.key"));
        let ca = read_single_cert(&ca_path)?;
        webpki::anchor_from_trusted_cert(&ca).map_err(|source| PkiError::BadCertificate {
            path: ca_path.clone(),
            source,
        })?;
        let chain = read_certs(&cert_path)?;
        let key = read_key(&key_path)?;
        check_pair(&chain, &key, &cert_path, &key_path)?;
        let found = peer_dc(&chain[0]);
        if found.as_deref() != Some(dc) {
            return Err(PkiError::WrongDc {
                path: cert_path,
                expected: dc.to_owned(),
                found,
            });
        }
        verify_leaf(&ca, &chain, UnixTime::now()).map_err(|source| PkiError::NotIssuedByCa {
            path: cert_path.clone(),
            ca_path: ca_path.clone(),
            source,
        })?;
        Ok(Self {
            dc: dc.to_owned(),
            ca,
            chain,
            key,
        })
    }

    /// Builds an identity from parts already in memory, without the checks of
    /// [`load`](Self::load) (tests use it to pair a CA with a foreign certificate).
    pub fn from_parts(
        dc: String,
        ca: CertificateDer<'static>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        Self { dc, ca, chain, key }
    }

    /// The DC this identity is for.
    pub fn dc(&self) -> &str {
        &self.dc
    }

    /// The mesh CA's certificate: the only root a bridge trusts.
    pub fn ca(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// The DC's certificate chain, its own certificate first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The DC's private key.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }
}

/// The crypto provider of every mesh TLS configuration: ring.
pub(super) fn provider() -> std::sync::Arc<CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// The parameters of the CA certificate, without validity: `init` signs them, `issue` names
/// the issuer with them.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A new ECDSA P-256 key.
fn new_key(what: &'static str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| PkiError::Generate { what, source })
}

/// Sets `params`' validity from an hour ago to `length` from now; returns its end.
fn set_validity(params: &mut CertificateParams, length: Duration) -> Result<SystemTime, PkiError> {
    // Whole seconds: certificates carry no fractions.
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| Duration::from_secs(d.as_secs()))
        .map_err(|_| PkiError::Clock)?;
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - BACKDATE;
    params.not_after = now + length;
    Ok(UNIX_EPOCH + since_epoch + length)
}

/// Checks that `chain[0]` is valid now under the CA `ca` for both TLS server and client
/// authentication, with `chain[1..]` as intermediates.
pub(super) fn verify_leaf(
    ca: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), webpki::Error> {
    let anchor = webpki::anchor_from_trusted_cert(ca)?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(webpki::Error::BadDer);
    };
    let leaf = webpki::EndEntityCert::try_from(leaf)?;
    let algorithms = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        leaf.verify_for_usage(
            algorithms,
            std::slice::from_ref(&anchor),
            intermediates,
            now,
            usage,
            None,
            None,
        )?;
    }
    Ok(())
}

/// Checks that `key` is the private key of `chain[0]`, and that the TLS provider can use it.
fn check_pair(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), PkiError> {
    let signing_key = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|source| PkiError::BadKey {
            path: key_path.to_path_buf(),
            source,
        })?;
    match CertifiedKey::new(chain.to_vec(), signing_key).keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(PkiError::KeyMismatch {
                cert_path: cert_path.to_path_buf(),
                key_path: key_path.to_path_buf(),
            })
        }
        Err(source) => Err(PkiError::UnusableCertificate {
            path: cert_path.to_path_buf(),
            source,
        }),
    }
}

/// A certificate in PEM, lines of 64 base64 characters.
fn to_pem(cert: &CertificateDer<'_>) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut pem = String::with_capacity(body.len() + body.len() / 64 + 64);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
