//! The bridges' QUIC configurations: mutual TLS 1.3 under the mesh CA, ALPN [`ALPN`], and the
//! transport settings of a long-lived link between datacenters.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::Resumption;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};

use super::ca::provider;
use super::{DcIdentity, PkiError, peer_dc};

/// The one application protocol of a bridge.
pub const ALPN: &[u8] = b"tern-bridge/1";

/// QUIC transport settings of a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportSettings {
    /// How often an idle bridge sends a keep-alive (default 5 s), well under the idle timeout
    /// so that a quiet but healthy link never times out.
    pub keep_alive_interval: Duration,
    /// How long without any packet from the peer before the connection is considered dead
    /// (default 30 s).
    pub idle_timeout: Duration,
    /// How many bidirectional streams the peer may have open at once (default 256).
    pub max_concurrent_bidi_streams: u32,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            keep_alive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_concurrent_bidi_streams: 256,
        }
    }
}

impl TransportSettings {
    /// The quinn transport configuration with these settings.
    pub fn transport_config(&self) -> Result<quinn::TransportConfig, PkiError> {
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout).map_err(|_| {
            PkiError::TransportSetting {
                setting: "idle_timeout",
            }
        })?;
        let mut config = quinn::TransportConfig::default();
        config
            .keep_alive_interval(Some(self.keep_alive_interval))
            .max_idle_timeout(Some(idle))
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(self.max_concurrent_bidi_streams));
        Ok(config)
    }
}

/// The QUIC configuration of a bridge listener of DC `identity`.
///
/// A peer must present a certificate chain to the mesh CA (the only root) for TLS client
/// authentication, naming a DC of `known_dcs` (the topology's); any other peer is refused
/// during the handshake, and the refusal is logged. TLS 1.3 only, ALPN [`ALPN`] only, no
/// session resumption (each bridge connection is fully authenticated).
pub fn server_config(
    identity: &DcIdentity,
    known_dcs: Vec<String>,
    transport: &TransportSettings,
) -> Result<quinn::ServerConfig, PkiError> {
    let tls = rustls_server_config(identity, known_dcs)?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|source| PkiError::Quic { source })?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport.transport_config()?));
    Ok(config)
}

/// The QUIC configuration of a bridge dialer of DC `identity`.
///
/// It presents the DC's certificate and accepts only a listener whose certificate chains to
/// the mesh CA and is valid for the server name given when connecting: dial DC `dc` with
/// [`server_name`](super::server_name)`(dc)`, so that reaching another DC's listener fails.
/// TLS 1.3 only, ALPN [`ALPN`] only, no session resumption.
pub fn client_config(
    identity: &DcIdentity,
    transport: &TransportSettings,
) -> Result<quinn::ClientConfig, PkiError> {
    quic_client_config(rustls_client_config(identity)?, transport)
}

/// The rustls side of [`server_config`].
pub(super) fn rustls_server_config(
    identity: &DcIdentity,
    known_dcs: Vec<String>,
) -> Result<rustls::ServerConfig, PkiError> {
    let provider = provider();
    let inner = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(identity)?),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|source| PkiError::Verifier { source })?;
    let verifier = KnownDcVerifier {
        inner,
        known: known_dcs.into_iter().collect(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| PkiError::Tls { source })?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(identity.chain().to_vec(), identity.key().clone_key())
        .map_err(|source| PkiError::Tls { source })?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The rustls side of [`client_config`].
pub(super) fn rustls_client_config(
    identity: &DcIdentity,
) -> Result<rustls::ClientConfig, PkiError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| PkiError::Tls { source })?
        .with_root_certificates(roots(identity)?)
        .with_client_auth_cert(identity.chain().to_vec(), identity.key().clone_key())
        .map_err(|source| PkiError::Tls { source })?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// Wraps a rustls client configuration for QUIC with the transport settings.
pub(super) fn quic_client_config(
    tls: rustls::ClientConfig,
    transport: &TransportSettings,
) -> Result<quinn::ClientConfig, PkiError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|source| PkiError::Quic { source })?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport.transport_config()?));
    Ok(config)
}

/// A root store holding only the mesh CA.
fn roots(identity: &DcIdentity) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(identity.ca().clone())
        .map_err(|source| PkiError::Tls { source })?;
    Ok(roots)
}

/// The client verifier of a bridge listener: webpki under the mesh CA, then the peer's DC must
/// be one of the topology's.
#[derive(Debug)]
struct KnownDcVerifier {
    /// Chain, validity and usage checks under the mesh CA.
    inner: Arc<dyn ClientCertVerifier>,
    /// The DCs a peer may be.
    known: HashSet<String>,
}

/// Why a peer with a valid mesh certificate was refused.
struct UnknownDc {
    /// The DC its certificate names, if any.
    dc: Option<String>,
}

impl fmt::Display for UnknownDc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dc {
            Some(dc) => write!(f, "datacenter {dc} is not in the topology"),
            None => f.write_str("the certificate names no datacenter"),
        }
    }
}

// rustls shows the error's `Debug` in the handshake failure: make it the sentence.
impl fmt::Debug for UnknownDc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for UnknownDc {}

impl ClientCertVerifier for KnownDcVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(verified) => verified,
            Err(error) => {
                tracing::warn!(
                    peer_dc = peer_dc(end_entity).as_deref().unwrap_or("-"),
                    %error,
                    "bridge peer refused: its certificate is not valid under the mesh CA"
                );
                return Err(error);
            }
        };
        let dc = peer_dc(end_entity);
        if dc.as_ref().is_some_and(|dc| self.known.contains(dc)) {
            return Ok(verified);
        }
        let refusal = UnknownDc { dc };
        tracing::warn!(
            peer_dc = refusal.dc.as_deref().unwrap_or("-"),
            "bridge peer refused: {refusal}"
        );
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(refusal)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
