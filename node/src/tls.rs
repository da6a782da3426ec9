//! TLS material for client connections: the rustls server configuration built from configured
//! certificate and key files, or from a self-signed pair made on first start and kept in the data
//! directory; and the RFC 9266 `tls-exporter` channel binding used by SCRAM-PLUS.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::ServerConfig;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ConnectionCommon, InconsistentKeys, ProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Directory under the data directory holding the self-signed pair.
const TLS_DIR: &str = "tls";
/// File name of the self-signed certificate.
const CERT_FILE: &str = "cert.pem";
/// File name of the self-signed private key.
const KEY_FILE: &str = "key.pem";
/// RFC 9266 exporter label.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// The TLS setup of the c2s listeners.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// Server configuration (TLS 1.2 and 1.3, no client authentication, no ALPN).
    pub server_config: Arc<ServerConfig>,
    /// The certificate file in use.
    pub cert_path: PathBuf,
    /// Whether the certificate is the generated self-signed one.
    pub self_signed: bool,
}

/// Why TLS material could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Only one of the certificate and key files is configured.
    #[error("{given} is configured but {missing} is not: set both or neither")]
    HalfConfigured {
        /// The setting that is present.
        given: &'static str,
        /// The setting that is missing.
        missing: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The file.
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
    /// A certificate file has no `CERTIFICATE` section.
    #[error("no certificate in PEM file {}", .path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file has no private key section (PKCS#8, PKCS#1 or SEC1).
    #[error("no private key in PEM file {}", .path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a type or encoding the crypto provider cannot use.
    #[error("unusable private key in {}", .path.display())]
    BadPrivateKey {
        /// The key file.
        path: PathBuf,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
    /// The end-entity certificate cannot be parsed.
    #[error("invalid certificate in {}", .path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
    /// The private key is not the key of the certificate.
    #[error("private key {} does not match certificate {}", .key_path.display(), .cert_path.display())]
    KeyMismatch {
        /// The certificate file.
        cert_path: PathBuf,
        /// The key file.
        key_path: PathBuf,
    },
    /// The self-signed certificate could not be generated.
    #[error("cannot generate self-signed certificate")]
    Generate {
        /// What rcgen reported.
        #[source]
        source: rcgen::Error,
    },
    /// A directory or file for the self-signed pair could not be written.
    #[error("cannot write {}", .path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// rustls refused the configuration.
    #[error("cannot build TLS server configuration")]
    Config {
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
}

/// Loads the TLS material of the c2s listeners.
///
/// With `cert_file` and `key_file` (both or neither), those PEM files are used. Otherwise the
/// self-signed pair in `<data_dir>/tls/{cert.pem,key.pem}` is used; it is made on first use, with
/// every domain of `domains` as a subject alternative name plus `localhost` if absent, and reused
/// after (the key file has mode 0600). If either file of the pair is missing, both are made
/// again; a present but unusable file is an error, never silently replaced.
pub fn load_or_create(
    data_dir: &Path,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    domains: &[String],
) -> Result<TlsMaterial, TlsError> {
    let (cert_path, key_path, self_signed) = match (cert_file, key_file) {
        (Some(cert), Some(key)) => (cert.to_path_buf(), key.to_path_buf(), false),
        (Some(_), None) => {
            return Err(TlsError::HalfConfigured {
                given: "cert_file",
                missing: "key_file",
            });
        }
        (None, Some(_)) => {
            return Err(TlsError::HalfConfigured {
                given: "key_file",
                missing: "cert_file",
            });
        }
        (None, None) => {
            let dir = data_dir.join(TLS_DIR);
            let cert = dir.join(CERT_FILE);
            let key = dir.join(KEY_FILE);
            if !(cert.is_file() && key.is_file()) {
                create_self_signed(&dir, &cert, &key, domains)?;
            }
            (cert, key, true)
        }
    };
    let server_config = server_config(&cert_path, &key_path)?;
    Ok(TlsMaterial {
        server_config,
        cert_path,
        self_signed,
    })
}

/// The RFC 9266 `tls-exporter` channel binding of an established connection: 32 bytes exported
/// with the label `EXPORTER-Channel-Binding` and no context.
///
/// `None` while the handshake is still running, and for TLS 1.2: RFC 9266 allows TLS 1.2 only
/// with the extended master secret, which rustls does not report, so such connections get no
/// channel binding (SCRAM-PLUS is then not offered) rather than a weak one.
pub fn tls_exporter<Data>(conn: &ConnectionCommon<Data>) -> Option<[u8; 32]> {
    if conn.is_handshaking() || conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .ok()
}

/// The crypto provider of every Tern TLS configuration.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration from a certificate chain file and its key file.
fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let provider = provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::BadPrivateKey {
            path: key_path.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        // `Unknown`: the provider cannot derive the public key of this key type; the
        // handshake itself will then fail loudly if the pair is wrong.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert_path: cert_path.to_path_buf(),
                key_path: key_path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(TlsError::BadCertificate {
                path: cert_path.to_path_buf(),
                source,
            });
        }
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Config { source })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    // XMPP sessions are long-lived and reconnects are rare: no session tickets.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Reads a file, naming it in the error.
fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file, end-entity first; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        source => TlsError::Pem {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Makes the self-signed pair in `dir`, replacing whatever half of it exists.
fn create_self_signed(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    domains: &[String],
) -> Result<(), TlsError> {
    let mut names: Vec<String> = Vec::with_capacity(domains.len() + 1);
    for domain in domains {
        if !names.contains(domain) {
            names.push(domain.clone());
        }
    }
    if !names.iter().any(|name| name == "localhost") {
        names.push("localhost".to_owned());
    }
    let common_name = names[0].clone();
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|source| TlsError::Generate { source })?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let key_pair = rcgen::KeyPair::generate().map_err(|source| TlsError::Generate { source })?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|source| TlsError::Generate { source })?;

    fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    // Key first, certificate last: the certificate's presence marks a complete pair.
    write_atomically(key_path, key_pair.serialize_pem().as_bytes(), true)?;
    write_atomically(cert_path, cert.pem().as_bytes(), false)?;
    tracing::info!(
        cert = %cert_path.display(),
        domains = ?domains,
        "generated self-signed TLS certificate"
    );
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`, so a crash never
/// leaves a truncated file; `secret` files get mode 0600 from the start on Unix.
fn write_atomically(path: &Path, bytes: &[u8], secret: bool) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(err)?;
    // A leftover temporary file from an earlier crash keeps its old mode: enforce it.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "tern-tls-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn domains() -> Vec<String> {
        vec!["example.com".to_owned()]
    }

    #[test]
    fn first_call_creates_pair_and_second_reuses_it() {
        let dir = TempDir::new("reuse");
        let first = load_or_create(&dir.0, None, None, &domains()).unwrap();
        assert!(first.self_signed);
        assert_eq!(first.cert_path, dir.0.join("tls").join("cert.pem"));
        let cert_bytes = fs::read(&first.cert_path).unwrap();
        let key_path = dir.0.join("tls").join("key.pem");
        let key_bytes = fs::read(&key_path).unwrap();
        assert!(String::from_utf8_lossy(&cert_bytes).contains("BEGIN CERTIFICATE"));

        let second = load_or_create(&dir.0, None, None, &domains()).unwrap();
        assert_eq!(fs::read(&second.cert_path).unwrap(), cert_bytes);
        assert_eq!(fs::read(&key_path).unwrap(), key_bytes);
    }

    #[cfg(unix)]
    #[test]
    fn generated_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("mode");
        load_or_create(&dir.0, None, None, &domains()).unwrap();
        let mode = fs::metadata(dir.0.join("tls").join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn missing_half_of_pair_is_regenerated() {
        let dir = TempDir::new("half");
        let first = load_or_create(&dir.0, None, None, &domains()).unwrap();
        let old = fs::read(&first.cert_path).unwrap();
        fs::remove_file(dir.0.join("tls").join("key.pem")).unwrap();
        let again = load_or_create(&dir.0, None, None, &domains()).unwrap();
        assert_ne!(fs::read(&again.cert_path).unwrap(), old);
    }

    #[test]
    fn configured_files_load() {
        let made = TempDir::new("made");
        load_or_create(&made.0, None, None, &domains()).unwrap();
        let other = TempDir::new("configured");
        let cert = made.0.join("tls").join("cert.pem");
        let key = made.0.join("tls").join("key.pem");
        let material = load_or_create(&other.0, Some(&cert), Some(&key), &domains()).unwrap();
        assert!(!material.self_signed);
        assert_eq!(material.cert_path, cert);
        assert!(
            !other.0.join("tls").exists(),
            "no self-signed pair when files are configured"
        );
    }

    #[test]
    fn missing_file_error_names_path() {
        let dir = TempDir::new("missing");
        let cert = dir.0.join("nope-cert.pem");
        let key = dir.0.join("nope-key.pem");
        let err = load_or_create(&dir.0, Some(&cert), Some(&key), &domains()).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("nope-cert.pem"), "{err}");
    }

    #[test]
    fn garbage_files_give_errors_naming_path() {
        let made = TempDir::new("garbage-src");
        load_or_create(&made.0, None, None, &domains()).unwrap();
        let good_cert = made.0.join("tls").join("cert.pem");
        let good_key = made.0.join("tls").join("key.pem");

        let dir = TempDir::new("garbage");
        let garbage = dir.0.join("garbage.pem");
        fs::write(&garbage, b"this is not PEM at all\n").unwrap();

        let err = load_or_create(&dir.0, Some(&garbage), Some(&good_key), &domains()).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
        assert!(err.to_string().contains("garbage.pem"), "{err}");

        let err = load_or_create(&dir.0, Some(&good_cert), Some(&garbage), &domains()).unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
        assert!(err.to_string().contains("garbage.pem"), "{err}");

        // A certificate file given as the key: PEM, but no key inside.
        let err =
            load_or_create(&dir.0, Some(&good_cert), Some(&good_cert), &domains()).unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");

        let broken = dir.0.join("broken.pem");
        fs::write(
            &broken,
            b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = load_or_create(&dir.0, Some(&broken), Some(&good_key), &domains()).unwrap_err();
        assert!(
            matches!(err, TlsError::Pem { .. } | TlsError::BadCertificate { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("broken.pem"), "{err}");
    }

    #[test]
    fn key_of_another_certificate_is_rejected() {
        let one = TempDir::new("mismatch-one");
        let two = TempDir::new("mismatch-two");
        load_or_create(&one.0, None, None, &domains()).unwrap();
        load_or_create(&two.0, None, None, &domains()).unwrap();
        let cert = one.0.join("tls").join("cert.pem");
        let key = two.0.join("tls").join("key.pem");
        let err = load_or_create(&one.0, Some(&cert), Some(&key), &domains()).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&*cert.to_string_lossy()), "{text}");
        assert!(text.contains(&*key.to_string_lossy()), "{text}");
    }

    #[test]
    fn only_one_configured_file_is_an_error() {
        let dir = TempDir::new("half-config");
        let path = dir.0.join("x.pem");
        let err = load_or_create(&dir.0, Some(&path), None, &domains()).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::HalfConfigured {
                    missing: "key_file",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = load_or_create(&dir.0, None, Some(&path), &domains()).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::HalfConfigured {
                    missing: "cert_file",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// A client config trusting exactly the generated certificate.
    fn client_config(
        material: &TlsMaterial,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(&material.cert_path).unwrap() {
            roots.add(cert).unwrap();
        }
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }

    /// Handshakes a client and the server over a duplex pipe, exchanges one byte each way, and
    /// returns the exporter values (client, server) and the negotiated version.
    async fn handshake(
        material: &TlsMaterial,
        server_name: &'static str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (Option<[u8; 32]>, Option<[u8; 32]>, Option<ProtocolVersion>) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&material.server_config));
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(client_config(material, versions)));
        let server = tokio::spawn(async move {
            let mut tls = acceptor.accept(server_io).await.unwrap();
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.unwrap();
            tls.write_all(&byte).await.unwrap();
            tls.flush().await.unwrap();
            let exporter = tls_exporter(tls.get_ref().1);
            (exporter, byte[0])
        });
        let name = rustls_pki_types::ServerName::try_from(server_name).unwrap();
        let mut tls = connector.connect(name, client_io).await.unwrap();
        tls.write_all(&[42]).await.unwrap();
        tls.flush().await.unwrap();
        let mut echo = [0u8; 1];
        tls.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo[0], 42);
        let client_exporter = tls_exporter(tls.get_ref().1);
        let version = tls.get_ref().1.protocol_version();
        let (server_exporter, seen) = server.await.unwrap();
        assert_eq!(seen, 42);
        (client_exporter, server_exporter, version)
    }

    #[tokio::test]
    async fn client_handshake_agrees_on_channel_binding() {
        let dir = TempDir::new("handshake");
        let material = load_or_create(&dir.0, None, None, &domains()).unwrap();
        let (client, server, version) =
            handshake(&material, "example.com", &[&rustls::version::TLS13]).await;
        assert_eq!(version, Some(ProtocolVersion::TLSv1_3));
        let client = client.expect("client exporter");
        let server = server.expect("server exporter");
        assert_eq!(client, server);
        assert_ne!(client, [0u8; 32]);
    }

    #[tokio::test]
    async fn localhost_is_always_a_subject_name() {
        let dir = TempDir::new("localhost");
        let material = load_or_create(&dir.0, None, None, &domains()).unwrap();
        let (client, server, _) =
            handshake(&material, "localhost", &[&rustls::version::TLS13]).await;
        assert_eq!(client, server);
        assert!(client.is_some());
    }

    #[tokio::test]
    async fn tls12_handshakes_without_channel_binding() {
        let dir = TempDir::new("tls12");
        let material = load_or_create(&dir.0, None, None, &domains()).unwrap();
        let (client, server, version) =
            handshake(&material, "example.com", &[&rustls::version::TLS12]).await;
        assert_eq!(version, Some(ProtocolVersion::TLSv1_2));
        assert_eq!((client, server), (None, None));
    }
}
