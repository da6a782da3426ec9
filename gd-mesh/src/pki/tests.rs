//! Tests of the mesh PKI: files, checks, and real QUIC handshakes on loopback.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use super::tls::{quic_client_config, rustls_client_config};
use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "tern-pki-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A CA with certificates for dc1, dc2, dc3 and dc9 in one directory.
fn mesh(tag: &str) -> (TempDir, MeshCa) {
    let dir = TempDir::new(tag);
    let ca = MeshCa::init(&dir.0).unwrap();
    for dc in ["dc1", "dc2", "dc3", "dc9"] {
        ca.issue(dc, &dir.0).unwrap();
    }
    (dir, ca)
}

fn known() -> Vec<String> {
    ["dc1", "dc2", "dc3"].map(str::to_owned).to_vec()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn dc_ids_are_dns_labels() {
    for good in ["dc1", "eu-west-1", "a", "0", &"x".repeat(63)] {
        assert!(validate_dc(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "-dc",
        "dc-",
        "DC1",
        "dc_1",
        "dc.1",
        "dc 1",
        "dé",
        &"x".repeat(64),
    ] {
        let err = validate_dc(bad).unwrap_err();
        assert!(matches!(err, PkiError::InvalidDc { .. }), "{bad}: {err:?}");
    }
    assert_eq!(server_name("dc1"), "dc1.dc.tern-mesh");
}

#[test]
fn init_writes_the_ca_and_refuses_to_overwrite_it() {
    let dir = TempDir::new("init");
    let nested = dir.0.join("a").join("b");
    let ca = MeshCa::init(&nested).unwrap();
    assert_eq!(ca.cert_path(), nested.join("ca.pem"));
    assert_eq!(ca.key_path(), nested.join("ca.key"));
    let cert = fs::read(nested.join("ca.pem")).unwrap();
    let key = fs::read(nested.join("ca.key")).unwrap();
    assert!(String::from_utf8_lossy(&cert).contains("BEGIN CERTIFICATE"));
    assert!(String::from_utf8_lossy(&key).contains("BEGIN PRIVATE KEY"));
    #[cfg(unix)]
    {
        assert_eq!(mode(&nested.join("ca.key")), 0o600);
        assert_eq!(mode(&nested), 0o700);
    }
    // The CA is a trust anchor and names no DC.
    webpki::anchor_from_trusted_cert(ca.cert()).unwrap();
    assert_eq!(peer_dc(ca.cert()), None);

    let err = MeshCa::init(&nested).unwrap_err();
    assert!(matches!(err, PkiError::CaExists { .. }), "{err:?}");
    assert!(err.to_string().contains("ca.pem"), "{err}");
    assert_eq!(fs::read(nested.join("ca.pem")).unwrap(), cert);
    assert_eq!(fs::read(nested.join("ca.key")).unwrap(), key);

    // Half a CA is refused too, naming the half that is there.
    fs::remove_file(nested.join("ca.pem")).unwrap();
    let err = MeshCa::init(&nested).unwrap_err();
    assert!(err.to_string().contains("ca.key"), "{err}");
    assert_eq!(fs::read(nested.join("ca.key")).unwrap(), key);
}

#[test]
fn issued_certificates_name_their_dc_and_load_back() {
    let (dir, _ca) = mesh("issue");
    for dc in ["dc1", "dc2", "dc3"] {
        let identity = DcIdentity::load(&dir.0, dc).unwrap();
        assert_eq!(identity.dc(), dc);
        assert_eq!(identity.chain().len(), 2, "leaf then CA");
        assert_eq!(&identity.chain()[1], identity.ca());
        assert_eq!(peer_dc(&identity.chain()[0]).as_deref(), Some(dc));
        #[cfg(unix)]
        assert_eq!(mode(&dir.0.join(format!("{dc}.key"))), 0o600);
    }
}

#[test]
fn a_loaded_ca_issues_certificates_that_chain_to_it() {
    let (dir, ca) = mesh("reload");
    let loaded = MeshCa::load(&dir.0).unwrap();
    assert_eq!(loaded.cert(), ca.cert());
    let issued = loaded.issue("eu-west", &dir.0).unwrap();
    assert_eq!(issued.dc, "eu-west");
    assert_eq!(issued.cert_path, dir.0.join("eu-west.pem"));
    assert_eq!(issued.key_path, dir.0.join("eu-west.key"));
    let years = issued
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs()
        / (365 * 24 * 3600);
    assert_eq!(years, 2);
    DcIdentity::load(&dir.0, "eu-west").unwrap();
}

#[test]
fn reissuing_rotates_the_dc_files() {
    let (dir, ca) = mesh("rotate");
    let old_cert = fs::read(dir.0.join("dc1.pem")).unwrap();
    let old_key = fs::read(dir.0.join("dc1.key")).unwrap();
    ca.issue("dc1", &dir.0).unwrap();
    assert_ne!(fs::read(dir.0.join("dc1.pem")).unwrap(), old_cert);
    assert_ne!(fs::read(dir.0.join("dc1.key")).unwrap(), old_key);
    DcIdentity::load(&dir.0, "dc1").unwrap();
}

#[test]
fn issue_refuses_invalid_dc_ids_and_writes_nothing() {
    let (dir, ca) = mesh("bad-dc");
    let err = ca.issue("../evil", &dir.0).unwrap_err();
    assert!(matches!(err, PkiError::InvalidDc { .. }), "{err:?}");
    assert!(err.to_string().contains("../evil"), "{err}");
    assert!(!dir.0.join("../evil.pem").exists());
}

#[test]
fn wrong_files_are_reported_naming_them() {
    let (dir, _ca) = mesh("wrong");
    // dc1's files under dc2's names: the certificate names another DC.
    let other = TempDir::new("wrong-other");
    fs::create_dir_all(&other.0).unwrap();
    fs::copy(dir.0.join("ca.pem"), other.0.join("ca.pem")).unwrap();
    fs::copy(dir.0.join("dc1.pem"), other.0.join("dc2.pem")).unwrap();
    fs::copy(dir.0.join("dc1.key"), other.0.join("dc2.key")).unwrap();
    let err = DcIdentity::load(&other.0, "dc2").unwrap_err();
    assert!(
        matches!(&err, PkiError::WrongDc { found: Some(f), .. } if f == "dc1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("dc2.pem"), "{err}");

    // dc2's certificate with dc1's key.
    fs::copy(dir.0.join("dc2.pem"), other.0.join("dc2.pem")).unwrap();
    let err = DcIdentity::load(&other.0, "dc2").unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("dc2.key"), "{err}");

    // A certificate from another CA.
    let (foreign, _) = mesh("wrong-foreign");
    fs::copy(foreign.0.join("dc2.pem"), other.0.join("dc2.pem")).unwrap();
    fs::copy(foreign.0.join("dc2.key"), other.0.join("dc2.key")).unwrap();
    let err = DcIdentity::load(&other.0, "dc2").unwrap_err();
    assert!(matches!(err, PkiError::NotIssuedByCa { .. }), "{err:?}");
    assert!(err.to_string().contains("dc2.pem"), "{err}");

    // Another CA's key beside this CA's certificate.
    fs::copy(foreign.0.join("ca.key"), other.0.join("ca.key")).unwrap();
    let err = MeshCa::load(&other.0).unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err:?}");

    // Missing and garbage files.
    let err = DcIdentity::load(&other.0, "dc7").unwrap_err();
    assert!(matches!(err, PkiError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("dc7.pem"), "{err}");
    fs::write(other.0.join("ca.pem"), b"not a certificate\n").unwrap();
    let err = MeshCa::load(&other.0).unwrap_err();
    assert!(
        matches!(err, PkiError::CertificateCount { found: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("ca.pem"), "{err}");
    // A chain is not a CA certificate.
    fs::copy(dir.0.join("dc1.pem"), other.0.join("ca.pem")).unwrap();
    let err = MeshCa::load(&other.0).unwrap_err();
    assert!(
        matches!(err, PkiError::CertificateCount { found: 2, .. }),
        "{err:?}"
    );
}

// ---- QUIC handshakes ----

/// A bridge listener of `dc` on 127.0.0.1.
fn listener(dir: &Path, dc: &str, known_dcs: Vec<String>) -> quinn::Endpoint {
    let identity = DcIdentity::load(dir, dc).unwrap();
    let config = server_config(&identity, known_dcs, &TransportSettings::default()).unwrap();
    quinn::Endpoint::server(config, loopback()).unwrap()
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// How a dial ended on each side.
#[derive(Debug)]
struct Outcome {
    /// The listener's accepted connection, or why the handshake failed there.
    server: Result<quinn::Connection, String>,
    /// The dialer's connection, or why it failed (during or right after the handshake).
    client: Result<quinn::Connection, String>,
}

/// Dials `server` as DC `dial_dc` with `config`, and waits for both sides.
async fn dial(server: &quinn::Endpoint, config: quinn::ClientConfig, dial_dc: &str) -> Outcome {
    let addr = server.local_addr().unwrap();
    let accepting = {
        let server = server.clone();
        tokio::spawn(async move {
            let incoming = server.accept().await.expect("an incoming connection");
            incoming.await.map_err(|e| e.to_string())
        })
    };
    let client = quinn::Endpoint::client(loopback()).unwrap();
    let connecting = client
        .connect_with(config, addr, &server_name(dial_dc))
        .unwrap();
    let client = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .expect("the client handshake ends")
        .map_err(|e| e.to_string());
    let server = tokio::time::timeout(Duration::from_secs(10), accepting)
        .await
        .expect("the server handshake ends")
        .unwrap();
    Outcome { server, client }
}

/// Dials and expects a refusal: the listener never gets a connection, and the dialer's
/// connection fails (TLS 1.3 lets a client finish its side before the server has checked the
/// client's certificate, so the dialer may see the refusal just after the handshake). Returns
/// the errors (server, client).
async fn refused(
    server: &quinn::Endpoint,
    config: quinn::ClientConfig,
    dial_dc: &str,
) -> (String, String) {
    let outcome = dial(server, config, dial_dc).await;
    let server_err = match outcome.server {
        Ok(conn) => panic!(
            "the listener accepted a peer it must refuse: {:?}",
            conn.peer_identity()
        ),
        Err(e) => e,
    };
    let client_err = match outcome.client {
        Err(e) => e,
        Ok(conn) => tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("the refused connection closes")
            .to_string(),
    };
    (server_err, client_err)
}

/// The DC of a connection's peer, read from its certificate.
fn dc_of(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    peer_dc(chain.first()?)
}

fn client(dir: &Path, dc: &str) -> quinn::ClientConfig {
    let identity = DcIdentity::load(dir, dc).unwrap();
    client_config(&identity, &TransportSettings::default()).unwrap()
}

#[tokio::test]
async fn dcs_of_the_mesh_connect_and_see_each_other() {
    let (dir, _ca) = mesh("connect");
    let server = listener(&dir.0, "dc2", known());
    let outcome = dial(&server, client(&dir.0, "dc1"), "dc2").await;
    let accepted = outcome.server.unwrap();
    let dialed = outcome.client.unwrap();
    assert_eq!(dc_of(&accepted).as_deref(), Some("dc1"));
    assert_eq!(dc_of(&dialed).as_deref(), Some("dc2"));
    assert_eq!(
        accepted
            .handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol
            .as_deref(),
        Some(ALPN)
    );

    let echo = tokio::spawn(async move {
        let (mut send, mut recv) = accepted.accept_bi().await.unwrap();
        let got = recv.read_to_end(1024).await.unwrap();
        let mut reply = b"dc2 got: ".to_vec();
        reply.extend_from_slice(&got);
        send.write_all(&reply).await.unwrap();
        send.finish().unwrap();
        // Keep the connection until the dialer has read the reply and closed.
        accepted.closed().await;
    });
    let (mut send, mut recv) = dialed.open_bi().await.unwrap();
    send.write_all(b"hello from dc1").await.unwrap();
    send.finish().unwrap();
    let reply = recv.read_to_end(1024).await.unwrap();
    assert_eq!(reply, b"dc2 got: hello from dc1");
    dialed.close(0u32.into(), b"done");
    echo.await.unwrap();
    server.close(0u32.into(), b"");
}

#[tokio::test]
async fn a_dialer_without_a_certificate_is_refused() {
    let (dir, _ca) = mesh("no-cert");
    let server = listener(&dir.0, "dc2", known());
    let identity = DcIdentity::load(&dir.0, "dc1").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.ca().clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(ca::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let config = quic_client_config(tls, &TransportSettings::default()).unwrap();
    let (server_err, _client_err) = refused(&server, config, "dc2").await;
    assert!(
        server_err.contains("peer sent no certificates"),
        "{server_err}"
    );
}

#[tokio::test]
async fn a_dialer_with_a_certificate_from_another_ca_is_refused() {
    let (dir, _ca) = mesh("foreign");
    let (foreign, _) = mesh("foreign-ca");
    let server = listener(&dir.0, "dc2", known());
    // It trusts the right CA (so it accepts the listener), but presents a dc1 certificate
    // issued by another CA.
    let own = DcIdentity::load(&dir.0, "dc1").unwrap();
    let theirs = DcIdentity::load(&foreign.0, "dc1").unwrap();
    let identity = DcIdentity::from_parts(
        "dc1".to_owned(),
        own.ca().clone(),
        theirs.chain().to_vec(),
        theirs.key().clone_key(),
    );
    let config = client_config(&identity, &TransportSettings::default()).unwrap();
    let (server_err, _) = refused(&server, config, "dc2").await;
    // Both CAs are called "Tern mesh CA": the name leads to the mesh CA, whose signature the
    // certificate does not carry.
    assert!(
        server_err.contains("BadSignature") || server_err.contains("UnknownIssuer"),
        "{server_err}"
    );
}

#[tokio::test]
async fn a_dialer_whose_dc_is_not_in_the_topology_is_refused() {
    let (dir, _ca) = mesh("unknown-dc");
    let server = listener(&dir.0, "dc2", known());
    let (server_err, client_err) = refused(&server, client(&dir.0, "dc9"), "dc2").await;
    assert!(
        server_err.contains("datacenter dc9 is not in the topology"),
        "{server_err}"
    );
    assert!(!client_err.is_empty());
    // The same certificate is accepted by a listener that knows dc9.
    let open = listener(&dir.0, "dc3", vec!["dc9".to_owned()]);
    let outcome = dial(&open, client(&dir.0, "dc9"), "dc3").await;
    assert_eq!(dc_of(&outcome.server.unwrap()).as_deref(), Some("dc9"));
}

#[tokio::test]
async fn a_dialer_reaching_another_dc_than_it_dialed_refuses_it() {
    let (dir, _ca) = mesh("wrong-server");
    // dc3's listener, where dc1 believes dc2 is.
    let server = listener(&dir.0, "dc3", known());
    let (_server_err, client_err) = refused(&server, client(&dir.0, "dc1"), "dc2").await;
    assert!(
        client_err.contains(r#"not valid for name "dc2.dc.tern-mesh""#),
        "{client_err}"
    );
}

#[tokio::test]
async fn another_application_protocol_is_refused() {
    let (dir, _ca) = mesh("alpn");
    let server = listener(&dir.0, "dc2", known());
    let identity = DcIdentity::load(&dir.0, "dc1").unwrap();
    for alpn in [
        vec![b"tern-bridge/2".to_vec()],
        vec![b"h3".to_vec()],
        vec![],
    ] {
        let mut tls = rustls_client_config(&identity).unwrap();
        tls.alpn_protocols = alpn.clone();
        let config = quic_client_config(tls, &TransportSettings::default()).unwrap();
        let (server_err, _) = refused(&server, config, "dc2").await;
        assert!(
            server_err.contains("peer doesn't support any known protocol"),
            "{alpn:?}: {server_err}"
        );
    }
}

#[test]
fn transport_settings_reach_quinn() {
    let settings = TransportSettings::default();
    assert_eq!(settings.keep_alive_interval, Duration::from_secs(5));
    assert_eq!(settings.idle_timeout, Duration::from_secs(30));
    assert_eq!(settings.max_concurrent_bidi_streams, 256);
    settings.transport_config().unwrap();
    let err = TransportSettings {
        idle_timeout: Duration::from_secs(u64::MAX / 4),
        ..settings
    }
    .transport_config()
    .unwrap_err();
    assert!(err.to_string().contains("idle_timeout"), "{err}");
}
