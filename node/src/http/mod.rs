//! The HTTP listeners for web clients: XMPP over WebSocket (RFC 7395, [`ws`]) and BOSH
//! (XEP-0124/0206, [`bosh`]), with XEP-0156 discovery.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET [http] websocket_path` (`/ws`) | WebSocket upgrade with subprotocol `xmpp`; one client stream |
//! | `POST [http] bosh_path` (`/http-bind`) | one BOSH request: `<body/>` in, `<body/>` out (`text/xml`) |
//! | `OPTIONS [http] bosh_path` | CORS preflight |
//! | `GET /.well-known/host-meta` | XRD (XML) listing the endpoints |
//! | `GET /.well-known/host-meta.json` | the same as JRD (JSON) |
//!
//! A stream over either transport is driven by the same connection task as a TCP one
//! ([`crate::c2s::Connection`] over a [`crate::c2s::Wire`]), in framed mode: the same SASL,
//! binding, stream management, modules and mesh routing. Browsers send `Origin`: a page from an
//! origin outside `[http] allowed_origins` (when set) gets 403. Each client IP may hold
//! `[http] max_sessions_per_ip` sessions at once; every session also takes a slot of
//! `limits.max_connections`, shared with TCP clients.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use tern_config::{HttpListener, HttpTls};
use tern_xmpp_proto::stream::{Framing, StreamConfig, TlsPolicy};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::node::Node;

pub mod bosh;
pub mod ws;

/// How long a TLS handshake on the HTTPS listener may take.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An HTTP listener bound to its address.
pub struct HttpServer {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    secure: bool,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("address", &self.listener.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Binds the listener; `tls` is the node's certificate, used when the listener says so.
    pub async fn bind(config: &HttpListener, tls: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let listener = crate::c2s::bind_listener(config.address)?;
        // HTTP/1.1 only: WebSocket upgrades and long polls live on HTTP/1.1 connections.
        let mut server_config = (*tls).clone();
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            listener,
            tls: (config.tls == HttpTls::Direct)
                .then(|| TlsAcceptor::from(Arc::new(server_config))),
            secure: config.secure,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until shutdown. `limit` is the node's connection limit, shared with TCP clients.
    pub async fn run(self, node: Arc<Node>, limit: Arc<Semaphore>) {
        let policy = if self.secure {
            TlsPolicy::AlreadySecure
        } else {
            TlsPolicy::Unavailable
        };
        let state = Arc::new(HttpState {
            stream_config: Arc::new(node.stream_config_framed(policy, Framing::Framed)),
            per_ip: PerIp::default(),
            limit,
            bosh: bosh::Sessions::default(),
            node: node.clone(),
        });
        let app = router(&node, state).into_make_service_with_connect_info::<PeerAddr>();
        let mut shutdown = node.shutdown.subscribe();
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let result = match self.tls {
            None => {
                let listener = PlainListener(self.listener);
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
            Some(acceptor) => {
                let listener = TlsListener::start(self.listener, acceptor);
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "http listener failed");
        }
    }
}

/// What the handlers share.
pub(crate) struct HttpState {
    pub(crate) node: Arc<Node>,
    /// The settings of every stream on this listener (framed; secure or not).
    pub(crate) stream_config: Arc<StreamConfig>,
    pub(crate) per_ip: PerIp,
    pub(crate) limit: Arc<Semaphore>,
    /// The BOSH sessions of this listener.
    pub(crate) bosh: bosh::Sessions,
}

impl HttpState {
    /// The slots a new session takes: one of the node's connections and one of its IP's
    /// sessions; `Err` naming the limit when either is used up.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<SessionSlot, Refused> {
        let Ok(permit) = self.limit.clone().try_acquire_owned() else {
            tracing::warn!(%ip, "connection limit reached");
            return Err(Refused::Connections);
        };
        let max = self.node.config.http.max_sessions_per_ip;
        let Some(ip_slot) = self.per_ip.take(ip, max) else {
            tracing::info!(%ip, max, "web sessions per IP limit reached");
            return Err(Refused::PerIp);
        };
        Ok(SessionSlot {
            _permit: permit,
            _ip: ip_slot,
        })
    }
}

/// Why a new web session was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The node holds `limits.max_connections` already.
    Connections,
    /// The client's IP holds `[http] max_sessions_per_ip` sessions already.
    PerIp,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Connections => {
                (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response()
            }
            Self::PerIp => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many sessions from this address",
            )
                .into_response(),
        }
    }
}

/// The router of one HTTP listener.
fn router(node: &Node, state: Arc<HttpState>) -> Router {
    let http = &node.config.http;
    let mut app = Router::new()
        .route("/.well-known/host-meta", get(host_meta_xml))
        .route("/.well-known/host-meta.json", get(host_meta_json));
    if let Some(path) = &http.websocket_path {
        app = app.route(path, get(ws::upgrade));
    }
    if let Some(path) = &http.bosh_path {
        app = app.route(path, post(bosh::request).options(bosh::preflight));
    }
    app.with_state(state)
}

/// Sessions open per client IP.
#[derive(Debug, Default)]
pub(crate) struct PerIp {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    fn take(&self, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            counts: self.counts.clone(),
            ip,
        })
    }
}

/// One session's place in its IP's count, given back on drop.
#[derive(Debug)]
pub(crate) struct IpSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// What a web session holds while it lives: its connection slot and its IP's.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    _permit: OwnedSemaphorePermit,
    _ip: IpSlot,
}

/// Whether a request's `Origin` may use the endpoints: no `Origin` (not a browser), or no
/// list configured, or the origin listed.
pub(crate) fn origin_allowed(node: &Node, headers: &HeaderMap) -> bool {
    let allowed = &node.config.http.allowed_origins;
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(_) if allowed.is_empty() => true,
        Some(origin) => {
            let origin = origin.trim_end_matches('/').to_ascii_lowercase();
            allowed.contains(&origin)
        }
    }
}

/// 403 for a page from an origin that is not allowed.
pub(crate) fn forbidden_origin() -> Response {
    (StatusCode::FORBIDDEN, "origin not allowed").into_response()
}

/// CORS headers for a response to a request with `Origin` (BOSH and discovery are called from
/// pages of other origins): that origin is echoed when allowed.
pub(crate) fn cors(node: &Node, request: &HeaderMap, response: &mut HeaderMap) {
    let Some(origin) = request.get(header::ORIGIN) else {
        return;
    };
    if !origin_allowed(node, request) {
        return;
    }
    response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    response.insert(header::VARY, HeaderValue::from_static("Origin"));
    response.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    response.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    response.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
}

/// The endpoints as seen by the client that asks: the scheme it used, the host it named.
fn endpoints(node: &Node, headers: &HeaderMap, secure: bool) -> (Option<String>, Option<String>) {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '"', '<', '>']))
        .unwrap_or("localhost");
    let (ws, http) = if secure {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    let c = &node.config.http;
    (
        c.websocket_path
            .as_ref()
            .map(|p| format!("{ws}://{host}{p}")),
        c.bosh_path.as_ref().map(|p| format!("{http}://{host}{p}")),
    )
}

/// Whether the request came over TLS: this listener's own TLS or a proxy that says so.
fn came_secure(headers: &HeaderMap, state: &HttpState) -> bool {
    state.stream_config.tls == TlsPolicy::AlreadySecure
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"))
}

async fn host_meta_xml(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let (ws, bosh) = endpoints(&state.node, &headers, came_secure(&headers, &state));
    let mut xrd = String::from(
        "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n",
    );
    if let Some(bosh) = bosh {
        xrd.push_str(&format!(
            "  <Link rel='urn:xmpp:alt-connections:xbosh' href='{bosh}'/>\n"
        ));
    }
    if let Some(ws) = ws {
        xrd.push_str(&format!(
            "  <Link rel='urn:xmpp:alt-connections:websocket' href='{ws}'/>\n"
        ));
    }
    xrd.push_str("</XRD>\n");
    let mut response = ([(header::CONTENT_TYPE, "application/xrd+xml")], xrd).into_response();
    cors(&state.node, &headers, response.headers_mut());
    response
}

async fn host_meta_json(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let (ws, bosh) = endpoints(&state.node, &headers, came_secure(&headers, &state));
    let mut links = Vec::new();
    if let Some(bosh) = bosh {
        links.push(serde_json::json!({"rel": "urn:xmpp:alt-connections:xbosh", "href": bosh}));
    }
    if let Some(ws) = ws {
        links.push(serde_json::json!({"rel": "urn:xmpp:alt-connections:websocket", "href": ws}));
    }
    let body = serde_json::json!({ "links": links }).to_string();
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    cors(&state.node, &headers, response.headers_mut());
    response
}

/// The client's address, as the listener accepted it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// A plain HTTP listener whose connections get `TCP_NODELAY`: without it, small WebSocket
/// writes wait for the client's delayed ACK (tens of milliseconds).
struct PlainListener(TcpListener);

impl axum::serve::Listener for PlainListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let mut backoff = std::time::Duration::from_millis(10);
        loop {
            match self.0.accept().await {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return (tcp, peer);
                }
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, PlainListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The peer address axum recorded for a request.
pub(crate) type Peer = ConnectInfo<PeerAddr>;

/// An HTTPS listener for axum: handshakes run in their own tasks (a slow client never holds up
/// the others) and finished ones are handed to the server.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn start(listener: TcpListener, acceptor: TlsAcceptor) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            let mut backoff = std::time::Duration::from_millis(10);
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => {
                        backoff = std::time::Duration::from_millis(10);
                        accepted
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "https accept failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "https handshake failed"),
                        Err(_) => tracing::debug!(%peer, "https handshake timed out"),
                    }
                });
            }
        });
        Self {
            ready,
            local,
            accepting,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task is gone only when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
