//! A raw XMPP client for tests: exact bytes in, text out.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// How long a test waits for an expected reply.
pub const WAIT: Duration = Duration::from_secs(10);

/// The stream header a client sends.
pub fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    )
}

/// Accepts the test server's self-signed certificate (tests only).
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connector that trusts any server certificate.
pub fn insecure_connector() -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// RFC 7395: each `send` is one text message; received messages are appended as text.
    WebSocket(Box<WebSocketStream<TcpStream>>),
    Gone,
}

/// The framing namespace of RFC 7395.
pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// A raw client connection.
pub struct RawClient {
    transport: Transport,
    /// Received text not yet consumed by a `read_until`.
    pub pending: String,
    domain: String,
    eof: bool,
}

impl std::fmt::Debug for RawClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawClient")
            .field("pending", &self.pending)
            .finish()
    }
}

impl RawClient {
    /// A plain TCP connection (for STARTTLS).
    pub async fn connect(port: u16, domain: &str) -> Self {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        Self {
            transport: Transport::Plain(tcp),
            pending: String::new(),
            domain: domain.to_owned(),
            eof: false,
        }
    }

    /// A direct TLS connection (XEP-0368).
    pub async fn connect_tls(port: u16, domain: &str) -> Self {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let name = ServerName::try_from(domain.to_owned()).expect("server name");
        let tls = insecure_connector()
            .connect(name, tcp)
            .await
            .expect("tls handshake");
        Self {
            transport: Transport::Tls(Box::new(tls)),
            pending: String::new(),
            domain: domain.to_owned(),
            eof: false,
        }
    }

    /// A WebSocket connection (RFC 7395) to `path` on a plain HTTP port, offering the
    /// subprotocols `protocols` (normally `["xmpp"]`). `Err` with the HTTP status when the
    /// upgrade is refused.
    pub async fn connect_ws_with(
        port: u16,
        path: &str,
        domain: &str,
        protocols: &[&str],
        origin: Option<&str>,
    ) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut request = format!("ws://127.0.0.1:{port}{path}")
            .into_client_request()
            .expect("request");
        if !protocols.is_empty() {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                protocols.join(", ").parse().expect("header"),
            );
        }
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().expect("header"));
        }
        match tokio_tungstenite::client_async(request, tcp).await {
            Ok((ws, response)) => {
                if !protocols.is_empty() {
                    assert_eq!(
                        response
                            .headers()
                            .get("sec-websocket-protocol")
                            .and_then(|v| v.to_str().ok()),
                        Some("xmpp"),
                        "the server names the subprotocol"
                    );
                }
                Ok(Self {
                    transport: Transport::WebSocket(Box::new(ws)),
                    pending: String::new(),
                    domain: domain.to_owned(),
                    eof: false,
                })
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("websocket handshake failed: {e}"),
        }
    }

    /// A WebSocket connection to `/ws` with the `xmpp` subprotocol.
    pub async fn connect_ws(port: u16, domain: &str) -> Self {
        Self::connect_ws_with(port, "/ws", domain, &["xmpp"], None)
            .await
            .expect("websocket upgrade")
    }

    fn io(&mut self) -> &mut dyn Io {
        match &mut self.transport {
            Transport::Plain(s) => s,
            Transport::Tls(s) => s.as_mut(),
            Transport::WebSocket(_) => panic!("a websocket has no byte stream"),
            Transport::Gone => panic!("transport lost"),
        }
    }

    /// Sends raw text (on a WebSocket: as one text message).
    pub async fn send(&mut self, text: &str) {
        assert!(self.try_send(text).await, "send failed");
    }

    /// Sends raw text, ignoring errors (the server may have closed already).
    pub async fn try_send(&mut self, text: &str) -> bool {
        use futures_util::SinkExt as _;
        if let Transport::WebSocket(ws) = &mut self.transport {
            return ws.send(Message::text(text)).await.is_ok();
        }
        let io = self.io();
        io.write_all(text.as_bytes()).await.is_ok() && io.flush().await.is_ok()
    }

    /// On a WebSocket: sends a binary message.
    pub async fn send_binary(&mut self, bytes: &[u8]) {
        use futures_util::SinkExt as _;
        let Transport::WebSocket(ws) = &mut self.transport else {
            panic!("binary messages are for websockets");
        };
        ws.send(Message::binary(bytes.to_vec()))
            .await
            .expect("send binary");
    }

    async fn fill(&mut self, wait: Duration) -> bool {
        use futures_util::StreamExt as _;
        if let Transport::WebSocket(ws) = &mut self.transport {
            return match tokio::time::timeout(wait, ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    self.pending.push_str(text.as_str());
                    true
                }
                Ok(Some(Ok(Message::Binary(bytes)))) => {
                    self.pending.push_str(&String::from_utf8_lossy(&bytes));
                    true
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => true,
                Ok(None | Some(Ok(Message::Close(_)) | Err(_))) => {
                    self.eof = true;
                    false
                }
                Err(_) => false,
            };
        }
        let mut buf = vec![0u8; 16384];
        match tokio::time::timeout(wait, self.io().read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                false
            }
            Ok(Ok(n)) => {
                self.pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                true
            }
            Err(_) => false,
        }
    }

    /// Reads until `needle` arrives; returns everything up to and including it (consumed).
    /// Panics after [`WAIT`] with what arrived.
    pub async fn read_until(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(i) = self.pending.find(needle) {
                let rest = self.pending.split_off(i + needle.len());
                return std::mem::replace(&mut self.pending, rest);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero() && !self.eof,
                "waited for {needle:?}; got {:?} (eof: {})",
                self.pending,
                self.eof
            );
            self.fill(left).await;
        }
    }

    /// Everything that arrives within `wait` (consumed).
    pub async fn read_for(&mut self, wait: Duration) -> String {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || self.eof {
                break;
            }
            self.fill(left).await;
        }
        std::mem::take(&mut self.pending)
    }

    /// Whether the server closed the connection within [`WAIT`].
    pub async fn closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.eof {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            self.fill(left).await;
        }
        true
    }

    /// Sends a stream header (on a WebSocket: `<open/>`) and returns the server's features.
    pub async fn open(&mut self) -> String {
        let header = if matches!(self.transport, Transport::WebSocket(_)) {
            format!(
                "<open xmlns='{FRAMING}' to='{}' version='1.0'/>",
                self.domain
            )
        } else {
            header(&self.domain)
        };
        self.send(&header).await;
        self.read_until("</stream:features>").await
    }

    /// Negotiates STARTTLS on a plain connection.
    pub async fn starttls(&mut self) {
        let features = self.open().await;
        assert!(
            features.contains("urn:ietf:params:xml:ns:xmpp-tls"),
            "{features}"
        );
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        self.read_until("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        let Transport::Plain(tcp) = std::mem::replace(&mut self.transport, Transport::Gone) else {
            panic!("starttls on a tls connection");
        };
        let name = ServerName::try_from(self.domain.clone()).expect("server name");
        let tls = insecure_connector()
            .connect(name, tcp)
            .await
            .expect("tls handshake");
        self.transport = Transport::Tls(Box::new(tls));
    }

    /// SASL PLAIN on an open, secure stream; returns the server's answer element.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> String {
        let payload =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
        ))
        .await;
        let reply = self.read_until("</").await;
        reply + &self.read_until(">").await
    }

    /// The RFC 9266 `tls-exporter` channel binding of this client's TLS session.
    pub fn tls_exporter(&self) -> Option<[u8; 32]> {
        let Transport::Tls(tls) = &self.transport else {
            return None;
        };
        let mut out = [0u8; 32];
        tls.get_ref()
            .1
            .export_keying_material(&mut out, b"EXPORTER-Channel-Binding", None)
            .ok()?;
        Some(out)
    }

    /// SCRAM-SHA-256 (with `plus`: SCRAM-SHA-256-PLUS bound to `channel_binding`) on an open,
    /// secure stream. Returns the server's final answer; panics if the server's signature is
    /// wrong after a `<success/>`.
    pub async fn auth_scram_sha256(
        &mut self,
        user: &str,
        password: &str,
        plus: bool,
        channel_binding: &[u8],
    ) -> String {
        use base64::engine::general_purpose::STANDARD as B64;
        use hmac::{Hmac, KeyInit, Mac};
        use sha2::{Digest, Sha256};
        let hmac = |key: &[u8], data: &[u8]| {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        };
        let (mechanism, gs2) = if plus {
            ("SCRAM-SHA-256-PLUS", "p=tls-exporter,,")
        } else {
            ("SCRAM-SHA-256", "n,,")
        };
        let client_nonce = "tern-test-client-nonce";
        let first_bare = format!("n={user},r={client_nonce}");
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{}</auth>",
            B64.encode(format!("{gs2}{first_bare}"))
        ))
        .await;
        let reply = self.read_until("</challenge>").await;
        let Some(start) = reply.find('>').map(|i| i + 1) else {
            panic!("no challenge: {reply}");
        };
        let server_first = String::from_utf8(
            B64.decode(&reply[start..reply.len() - "</challenge>".len()])
                .expect("base64 challenge"),
        )
        .expect("utf-8 challenge");
        let field = |name: &str| {
            server_first
                .split(',')
                .find_map(|f| f.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {server_first}"))
                .to_owned()
        };
        let nonce = field("r=");
        let salt = B64.decode(field("s=")).expect("salt");
        let iterations: u32 = field("i=").parse().expect("iterations");
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(&client_key);
        let mut cbind = gs2.as_bytes().to_vec();
        if plus {
            cbind.extend_from_slice(channel_binding);
        }
        let without_proof = format!("c={},r={nonce}", B64.encode(&cbind));
        let auth_message = format!("{first_bare},{server_first},{without_proof}");
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            B64.encode(format!("{without_proof},p={}", B64.encode(proof)))
        ))
        .await;
        let answer = self.read_until("</").await;
        let answer = answer + &self.read_until(">").await;
        if answer.contains("<success") {
            let start = answer.find('>').map(|i| i + 1).unwrap_or(0);
            let end = answer.rfind("</success>").unwrap_or(answer.len());
            let data =
                String::from_utf8(B64.decode(&answer[start..end]).expect("base64")).expect("utf-8");
            let server_key = hmac(&salted, b"Server Key");
            let expected = B64.encode(hmac(&server_key, auth_message.as_bytes()));
            assert_eq!(data, format!("v={expected}"), "server signature");
        }
        answer
    }

    /// Binds `resource` on an authenticated, restarted stream; returns the full JID.
    pub async fn bind(&mut self, resource: &str) -> String {
        self.open().await;
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let reply = self.read_until("</iq>").await;
        let start = reply.find("<jid>").expect("bound jid") + 5;
        let end = reply.find("</jid>").expect("bound jid end");
        reply[start..end].to_owned()
    }

    /// Connects, negotiates STARTTLS, authenticates with PLAIN and binds `resource`.
    pub async fn login(
        port: u16,
        domain: &str,
        user: &str,
        password: &str,
        resource: &str,
    ) -> Self {
        let mut client = Self::connect(port, domain).await;
        client.starttls().await;
        client.open().await;
        let answer = client.auth_plain(user, password).await;
        assert!(
            answer.contains("<success"),
            "login of {user} failed: {answer}"
        );
        client.bind(resource).await;
        client
    }
}
