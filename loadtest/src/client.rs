//! One XMPP client connection: TCP (from a chosen loopback source address), STARTTLS or direct
//! TLS, or a WebSocket (RFC 7395, `ws://` or `wss://`); SASL PLAIN / SCRAM, resource binding,
//! initial presence, and in-band registration.
//!
//! Logins are the rare path and parse whole elements; the chat loop in `scenario::chat` works on
//! raw frames.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::Rng as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tern_xmpp_proto::element::escape;
use tern_xmpp_proto::sasl::Mechanism;
use tern_xmpp_proto::sasl::client::{SaltParams, ScramClient, plain_initial};
use tern_xmpp_proto::{Element, Frame, Framer, Limits, ns};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::cli::{Global, SaslChoice, Servers, TlsMode};
use crate::ws::{self, WsIo};

/// How long one login or registration may take, TCP connect to the last answer.
pub(crate) const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes read from a socket at a time.
pub(crate) const READ_CHUNK: usize = 16 * 1024;
/// The resource every harness session binds.
pub(crate) const RESOURCE: &str = "lt";
/// XEP-0198.
const SM: &str = "urn:xmpp:sm:3";

/// A client stream after TLS (or on a WebSocket): the XMPP bytes of a TCP stream either way.
/// Each variant is boxed: they differ in size by hundreds of bytes.
#[derive(Debug)]
pub(crate) enum Io {
    /// TLS over TCP (STARTTLS or direct).
    Tls(Box<TlsStream<TcpStream>>),
    /// A WebSocket on plain TCP (`ws://`).
    Ws(Box<WsIo<TcpStream>>),
    /// A WebSocket on TLS (`wss://`).
    Wss(Box<WsIo<TlsStream<TcpStream>>>),
}

/// Calls `$call` on whichever stream `$io` holds.
macro_rules! on_io {
    ($io:expr, $s:ident => $call:expr) => {
        match $io.get_mut() {
            Io::Tls($s) => $call,
            Io::Ws($s) => $call,
            Io::Wss($s) => $call,
        }
    };
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        on_io!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        on_io!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        on_io!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        on_io!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Everything needed to open connections, shared by all of them.
pub(crate) struct Client {
    /// Account `i` connects to the `i mod k`-th listener.
    servers: Servers,
    pub(crate) domain: String,
    tls: TlsMode,
    sasl: SaslChoice,
    prefix: String,
    /// `prefix` and `domain` escaped for XML, for the hot path.
    prefix_xml: String,
    domain_xml: String,
    password: String,
    /// Source addresses to spread connections over (empty: let the kernel choose).
    sources: Vec<IpAddr>,
    connector: TlsConnector,
    /// Salted passwords by account and salt, as a real client keeps them after a first login.
    salted: Mutex<HashMap<(String, SaltParams), Vec<u8>>>,
    /// Enable XEP-0198 stream management after login.
    stream_management: bool,
    /// Connect by WebSocket (RFC 7395) to this HTTP path instead of the XMPP port.
    websocket: Option<String>,
}

impl Client {
    pub(crate) fn new(global: &Global) -> Arc<Self> {
        let loopback = global
            .server
            .all()
            .iter()
            .all(|a| matches!(a.ip(), IpAddr::V4(ip) if ip.is_loopback()));
        let sources = if loopback {
            let n = match global.sources {
                0 => u8::try_from(global.users.div_ceil(20_000).clamp(1, 250)).unwrap_or(250),
                n => n,
            };
            (1..=n)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
                .collect()
        } else {
            Vec::new()
        };
        Arc::new(Self {
            servers: global.server.clone(),
            domain: global.domain.clone(),
            tls: global.tls,
            sasl: global.sasl,
            prefix: global.prefix.clone(),
            prefix_xml: escape(&global.prefix),
            domain_xml: escape(&global.domain),
            password: global.password.clone(),
            sources,
            connector: insecure_connector(),
            salted: Mutex::new(HashMap::new()),
            stream_management: global.stream_management,
            websocket: global.websocket.clone(),
        })
    }

    /// The local part of account `index`.
    pub(crate) fn user(&self, index: usize) -> String {
        format!("{}{index}", self.prefix)
    }

    /// The password of every account.
    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    /// Appends the bare JID of account `index`, escaped for an attribute value.
    pub(crate) fn write_bare_jid(&self, out: &mut Vec<u8>, index: usize) {
        use std::io::Write as _;
        let _ = write!(out, "{}{index}@{}", self.prefix_xml, self.domain_xml);
    }

    /// The bare JID of account `index`.
    pub(crate) fn bare_jid(&self, index: usize) -> String {
        format!("{}{index}@{}", self.prefix, self.domain)
    }

    async fn tcp(&self, index: usize) -> Result<TcpStream> {
        let server = self.servers.for_account(index);
        let tcp = if self.sources.is_empty() {
            TcpStream::connect(server).await
        } else {
            let source = self.sources[index % self.sources.len()];
            let socket = TcpSocket::new_v4().context("socket")?;
            socket
                .bind(SocketAddr::new(source, 0))
                .with_context(|| format!("bind {source}"))?;
            socket.connect(server).await
        }
        .with_context(|| format!("connect to {server}"))?;
        tcp.set_nodelay(true).context("nodelay")?;
        Ok(tcp)
    }

    /// TCP, TLS (or a WebSocket) and the first stream features on the secure stream.
    async fn connect_secure(&self, index: usize) -> Result<(Wire<Io>, Element)> {
        let tcp = self.tcp(index).await?;
        let name = ServerName::try_from(self.domain.clone()).context("TLS server name")?;
        if let Some(path) = &self.websocket {
            let server = self.servers.for_account(index);
            // STARTTLS does not exist on a WebSocket: TLS is the HTTP listener's, from the start.
            let io = match self.tls {
                TlsMode::Direct => {
                    let tls = self
                        .connector
                        .connect(name, tcp)
                        .await
                        .context("TLS handshake")?;
                    Io::Wss(Box::new(ws::connect(tls, true, server, path).await?))
                }
                TlsMode::Starttls => Io::Ws(Box::new(ws::connect(tcp, false, server, path).await?)),
            };
            let mut wire = Wire::new(io);
            let features = wire.open(&self.domain).await?;
            return Ok((wire, features));
        }
        let tcp = match self.tls {
            TlsMode::Direct => tcp,
            TlsMode::Starttls => {
                let mut plain = Wire::new(tcp);
                let features = plain.open(&self.domain).await?;
                ensure!(
                    features.has_child("starttls", ns::TLS),
                    "the server does not offer STARTTLS"
                );
                plain
                    .send(&format!("<starttls xmlns='{}'/>", ns::TLS))
                    .await?;
                let answer = plain.expect("proceed", |e| e.ns() == ns::TLS).await?;
                ensure!(
                    answer.name() == "proceed",
                    "STARTTLS refused: <{}/>",
                    answer.name()
                );
                plain.io
            }
        };
        let io = self
            .connector
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let mut wire = Wire::new(Io::Tls(Box::new(io)));
        let features = wire.open(&self.domain).await?;
        Ok((wire, features))
    }

    /// Logs account `index` in: TLS, SASL, bind, then (with `roster`) a roster fetch and (with
    /// `presence`) initial presence.
    pub(crate) async fn login(&self, index: usize, roster: bool, presence: bool) -> Result<Conn> {
        tokio::time::timeout(LOGIN_TIMEOUT, self.login_inner(index, roster, presence))
            .await
            .map_err(|_| anyhow!("login timed out after {LOGIN_TIMEOUT:?}"))?
            .with_context(|| format!("login of {}", self.user(index)))
    }

    async fn login_inner(&self, index: usize, roster: bool, presence: bool) -> Result<Conn> {
        let user = self.user(index);
        let (mut wire, features) = self.connect_secure(index).await?;
        self.authenticate(&mut wire, &features, &user).await?;
        let features = wire.open(&self.domain).await?;
        ensure!(
            features.has_child("bind", ns::BIND),
            "the server does not offer resource binding"
        );
        let bound = wire
            .iq(
                "bind",
                &format!(
                    "<iq type='set' id='bind'><bind xmlns='{}'><resource>{RESOURCE}</resource></bind></iq>",
                    ns::BIND
                ),
            )
            .await?;
        let jid = bound
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("jid", ns::BIND))
            .map(Element::text)
            .ok_or_else(|| anyhow!("the bind result has no jid"))?;
        ensure!(
            jid.to_lowercase()
                .starts_with(&format!("{}/", self.bare_jid(index)).to_lowercase()),
            "bound {jid}, not a resource of {}",
            self.bare_jid(index)
        );
        // RFC 3921 sessions: some servers still advertise them as required.
        if features
            .get_child("session", ns::SESSION)
            .is_some_and(|s| !s.has_child("optional", ns::SESSION))
        {
            wire.iq(
                "sess",
                &format!(
                    "<iq type='set' id='sess'><session xmlns='{}'/></iq>",
                    ns::SESSION
                ),
            )
            .await?;
        }
        let mut mutual_contacts = 0;
        if roster {
            let result = wire
                .iq(
                    "roster",
                    &format!(
                        "<iq type='get' id='roster'><query xmlns='{}'/></iq>",
                        ns::ROSTER
                    ),
                )
                .await?;
            mutual_contacts = result.get_child("query", ns::ROSTER).map_or(0, |q| {
                q.children()
                    .filter(|item| item.attr("subscription") == Some("both"))
                    .count()
            });
        }
        if presence {
            wire.send("<presence/>").await?;
        }
        if self.stream_management {
            // Last, so that every stanza the server counts from here on reaches the reader.
            wire.send(&format!("<enable xmlns='{SM}'/>")).await?;
            wire.expect("<enabled/>", |e| e.is("enabled", SM) || e.is("failed", SM))
                .await
                .and_then(|e| {
                    ensure!(e.name() == "enabled", "stream management refused");
                    Ok(())
                })?;
        }
        Ok(Conn {
            io: wire.io,
            framer: wire.framer,
            mutual_contacts,
        })
    }

    async fn authenticate(
        &self,
        wire: &mut Wire<Io>,
        features: &Element,
        user: &str,
    ) -> Result<()> {
        let wanted = self.sasl.name();
        let offered: Vec<String> = features
            .get_child("mechanisms", ns::SASL)
            .map(|m| m.children().map(Element::text).collect())
            .unwrap_or_default();
        ensure!(
            offered.iter().any(|m| m == wanted),
            "the server does not offer {wanted} (offers: {})",
            offered.join(", ")
        );
        let auth = |payload: &[u8]| {
            format!(
                "<auth xmlns='{}' mechanism='{wanted}'>{}</auth>",
                ns::SASL,
                BASE64.encode(payload)
            )
        };
        let is_outcome = |e: &Element| {
            e.ns() == ns::SASL && matches!(e.name(), "success" | "failure" | "challenge")
        };
        let mechanism = match self.sasl {
            SaslChoice::Plain => {
                wire.send(&auth(&plain_initial(user, &self.password)))
                    .await?;
                let outcome = wire.expect("SASL outcome", is_outcome).await?;
                return sasl_outcome(&outcome, user);
            }
            SaslChoice::ScramSha1 => Mechanism::ScramSha1,
            SaslChoice::ScramSha256 => Mechanism::ScramSha256,
        };
        let nonce: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let mut scram = ScramClient::new(mechanism, user, &self.password, &nonce)?;
        wire.send(&auth(&scram.client_first())).await?;
        let challenge = wire.expect("SASL challenge", is_outcome).await?;
        if challenge.name() != "challenge" {
            return sasl_outcome(&challenge, user);
        }
        let server_first = BASE64
            .decode(challenge.text().trim())
            .context("challenge is not base64")?;
        let reply = scram.respond(&server_first, |scram, params| {
            let key = (user.to_owned(), params.clone());
            if let Some(salted) = self.salted_cache().get(&key) {
                return salted.clone();
            }
            let salted = scram.salted_password(params);
            self.salted_cache().insert(key, salted.clone());
            salted
        })?;
        wire.send(&format!(
            "<response xmlns='{}'>{}</response>",
            ns::SASL,
            BASE64.encode(reply)
        ))
        .await?;
        let mut outcome = wire.expect("SASL outcome", is_outcome).await?;
        if outcome.name() == "challenge" {
            // RFC 6120 §6.4.6 allows the server-final message as a last challenge.
            let data = BASE64.decode(outcome.text().trim()).context("base64")?;
            scram.verify_server_final(&data)?;
            wire.send(&format!("<response xmlns='{}'/>", ns::SASL))
                .await?;
            outcome = wire.expect("SASL outcome", is_outcome).await?;
        } else if outcome.name() == "success" {
            let data = BASE64.decode(outcome.text().trim()).context("base64")?;
            scram.verify_server_final(&data)?;
        }
        sasl_outcome(&outcome, user)
    }

    fn salted_cache(&self) -> std::sync::MutexGuard<'_, HashMap<(String, SaltParams), Vec<u8>>> {
        // A panic while holding the lock leaves a cache that is still valid.
        self.salted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates account `index` by XEP-0077; `false` if it existed already.
    pub(crate) async fn register(&self, index: usize) -> Result<bool> {
        let user = self.user(index);
        let attempt = async {
            // Not every server advertises the stream feature; its answer to the IQ decides.
            let (mut wire, _) = self.connect_secure(index).await?;
            wire.send(&format!(
                "<iq type='set' id='reg'><query xmlns='{}'><username>{}</username><password>{}</password></query></iq>",
                ns::REGISTER,
                escape(&user),
                escape(&self.password)
            ))
            .await?;
            let reply = wire
                .expect("registration result", |e| {
                    e.is("iq", ns::CLIENT) && e.attr("id") == Some("reg")
                })
                .await?;
            let created = match (reply.attr("type"), stanza_condition(&reply).as_str()) {
                (Some("result"), _) => true,
                (Some("error"), "conflict") => false,
                (_, condition) => bail!(
                    "registration of {user} refused: {condition} (is in-band registration enabled?)"
                ),
            };
            wire.send("</stream:stream>").await?;
            let _ = wire.io.shutdown().await;
            Ok(created)
        };
        tokio::time::timeout(LOGIN_TIMEOUT, attempt)
            .await
            .map_err(|_| anyhow!("registration of {user} timed out"))?
    }
}

fn sasl_outcome(outcome: &Element, user: &str) -> Result<()> {
    match outcome.name() {
        "success" => Ok(()),
        _ => bail!(
            "authentication of {user} failed: <{}/>",
            outcome
                .children()
                .next()
                .map_or("(no condition)", Element::name)
        ),
    }
}

/// The defined condition of a stanza error reply.
pub(crate) fn stanza_condition(reply: &Element) -> String {
    reply
        .children()
        .find(|c| c.name() == "error")
        .and_then(|e| e.children().find(|c| c.ns() == ns::STANZAS))
        .map_or_else(
            || "(no error condition)".to_owned(),
            |c| c.name().to_owned(),
        )
}

/// An authenticated, bound connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) io: Io,
    /// Holds what the server sent after the bind result (presence, pushes…).
    pub(crate) framer: Framer,
    /// Roster items with subscription `both` at login (when the roster was fetched).
    pub(crate) mutual_contacts: usize,
}

impl Conn {
    /// Closes the stream and the connection, without waiting for long.
    pub(crate) async fn close(mut self) {
        let closing = async {
            let _ = self.io.write_all(b"</stream:stream>").await;
            let _ = self.io.shutdown().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}

/// The value of attribute `name` in the start tag `head` (`<name a='…' …`, either quote), as
/// written (still escaped).
pub(crate) fn attr<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(head).ok()?;
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find(name) {
        let start = from + at;
        let after = start + name.len();
        from = after;
        let separated = start > 0 && bytes[start - 1].is_ascii_whitespace();
        let quote = match bytes.get(after..after + 2) {
            Some([b'=', quote @ (b'\'' | b'"')]) => *quote as char,
            _ => continue,
        };
        if !separated {
            continue;
        }
        let value = &text[after + 2..];
        return Some(&value[..value.find(quote)?]);
    }
    None
}

/// Whether `frame` is a stanza (counted for XEP-0198).
pub(crate) fn is_stanza(frame: &[u8]) -> bool {
    frame.starts_with(b"<message") || frame.starts_with(b"<presence") || frame.starts_with(b"<iq")
}

/// Whether `frame` is a XEP-0198 ack request (`<r/>`).
pub(crate) fn is_ack_request(frame: &[u8]) -> bool {
    (frame.starts_with(b"<r ") || frame.starts_with(b"<r/"))
        && memchr::memmem::find(frame, SM.as_bytes()).is_some()
}

/// The XEP-0198 answer to an ack request after `handled` stanzas.
pub(crate) fn ack(handled: u32) -> String {
    format!("<a xmlns='{SM}' h='{handled}'/>")
}

/// The answer to a server's IQ `get`/`set` (pings answered, everything else refused), or
/// `None` when the stanza needs none.
pub(crate) fn answer_iq(stanza: &[u8]) -> Option<String> {
    if !stanza.starts_with(b"<iq") {
        return None;
    }
    let element = Element::parse(stanza, ns::CLIENT).ok()?;
    if !matches!(element.attr("type"), Some("get" | "set")) {
        return None;
    }
    let id = escape(element.attr("id").unwrap_or(""));
    let to = element
        .attr("from")
        .map(|from| format!(" to='{}'", escape(from)))
        .unwrap_or_default();
    Some(if element.has_child("ping", ns::PING) {
        format!("<iq type='result' id='{id}'{to}/>")
    } else {
        format!(
            "<iq type='error' id='{id}'{to}><error type='cancel'><service-unavailable xmlns='{}'/></error></iq>",
            ns::STANZAS
        )
    })
}

/// A stream during negotiation: whole elements in, text out.
struct Wire<S> {
    io: S,
    framer: Framer,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    fn new(io: S) -> Self {
        Self {
            io,
            framer: Framer::new(Limits::default()),
            buf: vec![0; 4096],
        }
    }

    async fn send(&mut self, xml: &str) -> Result<()> {
        self.io.write_all(xml.as_bytes()).await.context("write")?;
        self.io.flush().await.context("flush")
    }

    /// Opens a (new) stream and returns the server's features.
    async fn open(&mut self, domain: &str) -> Result<Element> {
        self.framer = Framer::new(Limits::default());
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' to='{}' \
             version='1.0' xml:lang='en'>",
            ns::CLIENT,
            ns::STREAMS,
            escape(domain)
        ))
        .await?;
        match self.next_frame().await? {
            Frame::Header(_) => {}
            Frame::Element(_) => bail!("the server sent an element before its stream header"),
            Frame::Close => bail!("the server closed the stream before opening it"),
        }
        self.expect("stream features", |e| e.is("features", ns::STREAMS))
            .await
    }

    async fn next_frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = self.framer.next_frame().context("server stream")? {
                return Ok(frame);
            }
            let n = self.io.read(&mut self.buf).await.context("read")?;
            ensure!(n > 0, "the server closed the connection");
            self.framer.push(&self.buf[..n]);
        }
    }

    /// The next element `wanted` accepts; other elements are skipped, stream errors fail.
    async fn expect(&mut self, what: &str, wanted: impl Fn(&Element) -> bool) -> Result<Element> {
        loop {
            let bytes = match self.next_frame().await? {
                Frame::Element(bytes) => bytes,
                Frame::Header(_) => bail!("unexpected stream header while waiting for {what}"),
                Frame::Close => bail!("the server closed the stream while waiting for {what}"),
            };
            let element = Element::parse(&bytes, ns::CLIENT)
                .with_context(|| format!("parse {}", String::from_utf8_lossy(&bytes)))?;
            if element.is("error", ns::STREAMS) {
                bail!(
                    "stream error while waiting for {what}: <{}/>",
                    element
                        .children()
                        .next()
                        .map_or("(no condition)", Element::name)
                );
            }
            if wanted(&element) {
                return Ok(element);
            }
        }
    }

    async fn iq(&mut self, id: &str, xml: &str) -> Result<Element> {
        self.send(xml).await?;
        let reply = self
            .expect(id, |e| e.is("iq", ns::CLIENT) && e.attr("id") == Some(id))
            .await?;
        match reply.attr("type") {
            Some("result") => Ok(reply),
            _ => bail!("iq {id} failed: {}", stanza_condition(&reply)),
        }
    }
}

/// Accepts any server certificate: the harness measures servers on loopback with self-signed
/// certificates; it does not authenticate them.
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
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn insecure_connector() -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        // The ring provider supports the default protocol versions.
        .expect("default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_read_from_start_tags() {
        let head = b"<presence xml:lang='en' from=\"a@b/c\" type='error' id='x-type='";
        assert_eq!(attr(head, "from"), Some("a@b/c"));
        assert_eq!(attr(head, "type"), Some("error"));
        assert_eq!(attr(head, "lang"), None);
        assert_eq!(attr(head, "id"), Some("x-type="));
        assert_eq!(attr(b"<iq to='unterminated", "to"), None);
        assert_eq!(attr(b"<message totype='x'", "type"), None);
    }
}
