//! Client listeners and the connection task: the async shell around
//! [`tern_xmpp_proto::stream::ServerStream`].
//!
//! The task only moves bytes, arms the stream's deadline and acts on its events: the TLS
//! upgrade, credential lookups, resource binding and handing stanzas to the session layer. One
//! task per connection; its span is `c2s{conn_id, peer_addr}` and records `jid` after bind.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use jid::{BareJid, FullJid};
use tern_config::{C2sListener, TlsMode};
use tern_xmpp_proto::stream::{
    Command, Entropy, Event, ServerStream, SmSnapshot, StreamConfig, TlsPolicy,
};
use tern_xmpp_proto::{StanzaCondition, StreamCondition, StreamError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::Instrument;

use crate::metrics::Transport;
use crate::node::Node;
use crate::resume::{Detached, Resumable, Resumed};
use crate::session;
use crate::sm::{Outbound, Outbox, Session};

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;
/// Outbound stanzas coalesced into one write.
const WRITE_BATCH: usize = 64;

/// The operating system's randomness, for stream ids and SCRAM nonces.
struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        rand::fill(buf);
    }
}

/// A client listener bound to its address.
pub struct C2sServer {
    listener: TcpListener,
    transport: Transport,
    stream_config: Arc<StreamConfig>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for C2sServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("C2sServer")
            .field("address", &self.listener.local_addr().ok())
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl C2sServer {
    /// Binds the listener.
    pub async fn bind(
        node: &Node,
        config: &C2sListener,
        tls: Arc<rustls::ServerConfig>,
    ) -> io::Result<Self> {
        let listener = bind_listener(config.address)?;
        let (transport, policy) = match config.tls {
            TlsMode::StartTls if config.starttls_required => {
                (Transport::StartTls, TlsPolicy::Required)
            }
            TlsMode::StartTls => (Transport::StartTls, TlsPolicy::Optional),
            TlsMode::Direct => (Transport::DirectTls, TlsPolicy::AlreadySecure),
        };
        Ok(Self {
            listener,
            transport,
            stream_config: Arc::new(node.stream_config(policy)),
            acceptor: TlsAcceptor::from(tls),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until shutdown. The connection limit is a semaphore; accept errors
    /// (such as running out of file descriptors) back off instead of spinning.
    pub async fn run(self, node: Arc<Node>, limit: Arc<Semaphore>) {
        let mut shutdown = node.shutdown.subscribe();
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = tokio::select! {
                r = self.listener.accept() => r,
                _ = shutdown.changed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(10);
                    a
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "connection limit reached");
                tokio::spawn(refuse(tcp, self.transport, self.acceptor.clone()));
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let conn_id = node.conn_id();
            let span =
                tracing::info_span!("c2s", conn_id, peer_addr = %peer, jid = tracing::field::Empty);
            let node = node.clone();
            let config = self.stream_config.clone();
            let acceptor = self.acceptor.clone();
            let transport = self.transport;
            tokio::spawn(
                async move {
                    node.metrics.connection_opened(transport);
                    let connection = Connection::new(node.clone(), conn_id, peer, transport);
                    if let Err(e) = connection.run(tcp, acceptor, config).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    node.metrics.connection_closed(transport);
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
}

/// Over the limit: answer with a stream error so the client knows why.
async fn refuse(tcp: TcpStream, transport: Transport, acceptor: TlsAcceptor) {
    let error =
        StreamError::new(StreamCondition::ResourceConstraint).with_text("too many connections");
    let body = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>{}</stream:stream>",
        error.to_xml()
    );
    let mut io = match transport {
        Transport::DirectTls => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Io::Tls(Box::new(tls)),
                _ => return,
            }
        }
        _ => Io::Plain(tcp),
    };
    let _ = io.write_all(body.as_bytes()).await;
    let _ = io.shutdown().await;
}

/// What carries a client stream to and from its client: bytes on a TCP connection, or
/// messages (WebSocket, BOSH). The connection task drives the stream the same way over each.
pub(crate) trait Wire: Send {
    /// Polls for input and feeds what came to `stream`; `Ready(Ok(false))` when the client is
    /// gone (end of input). Must be cancel safe: nothing read is lost when the poll is dropped.
    fn poll_input(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut ServerStream,
    ) -> Poll<io::Result<bool>>;

    /// Prepares the transport before the stream reads anything (a direct TLS handshake).
    fn start(&mut self, _stream: &mut ServerStream) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    /// Writes everything the stream has to send.
    fn flush(&mut self, stream: &mut ServerStream) -> impl Future<Output = io::Result<()>> + Send;

    /// STARTTLS: runs the TLS handshake on the transport, returning the channel binding.
    fn start_tls(&mut self) -> impl Future<Output = io::Result<Option<Vec<u8>>>> + Send;

    /// Closes the transport after the stream ended.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send;
}

/// A TCP connection (plain until STARTTLS, or TLS from the start) as a [`Wire`].
struct TcpWire {
    io: Io,
    /// TLS from the first byte (XEP-0368), run by [`Wire::start`].
    direct_tls: bool,
    acceptor: TlsAcceptor,
    out: BytesMut,
}

impl Wire for TcpWire {
    async fn start(&mut self, stream: &mut ServerStream) -> io::Result<()> {
        if self.direct_tls {
            let binding = self.start_tls().await?;
            stream.set_channel_binding(binding);
        }
        Ok(())
    }

    fn poll_input(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut ServerStream,
    ) -> Poll<io::Result<bool>> {
        poll_read_into(cx, &mut self.io, stream).map_ok(|n| n > 0)
    }

    async fn flush(&mut self, stream: &mut ServerStream) -> io::Result<()> {
        if stream.poll_transmit(&mut self.out) {
            self.io.write_all(&self.out).await?;
            self.io.flush().await?;
            self.out.clear();
        }
        if self.out.capacity() > READ_CHUNK {
            // An idle connection keeps no large write buffer.
            self.out = BytesMut::new();
        }
        Ok(())
    }

    async fn start_tls(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Upgrading) else {
            return Err(io::Error::other("starttls on a tls transport"));
        };
        let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tls handshake timeout"))??;
        let binding = crate::tls::tls_exporter(tls.get_ref().1).map(|b| b.to_vec());
        self.io = Io::Tls(Box::new(tls));
        Ok(binding)
    }

    async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }
}

/// The transport under the stream: plain TCP until STARTTLS, then TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// The socket is inside the TLS handshake (or was lost in it).
    Upgrading,
}

fn upgrading() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "transport is being upgraded to tls",
    )
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

/// One client connection.
pub(crate) struct Connection {
    node: Arc<Node>,
    conn_id: u64,
    peer: SocketAddr,
    transport: Transport,
    session: Option<Arc<Session>>,
    session_rx: Option<Outbox>,
    /// For an edge session ([`crate::edge`]): the datacenter the account lives in.
    home: Option<Box<str>>,
    /// XEP-0198: the session's entry when its client may resume it.
    resumable: Option<Arc<Resumable>>,
    /// Whether the connection was lost (not closed by either side on purpose): a resumable
    /// session then waits for its client.
    lost: bool,
}

impl Connection {
    /// A connection accepted from `peer` on a listener of `transport`.
    pub(crate) fn new(
        node: Arc<Node>,
        conn_id: u64,
        peer: SocketAddr,
        transport: Transport,
    ) -> Self {
        Self {
            node,
            conn_id,
            peer,
            transport,
            session: None,
            session_rx: None,
            home: None,
            resumable: None,
            lost: false,
        }
    }

    async fn run(
        self,
        tcp: TcpStream,
        acceptor: TlsAcceptor,
        config: Arc<StreamConfig>,
    ) -> io::Result<()> {
        let wire = TcpWire {
            io: Io::Plain(tcp),
            direct_tls: self.transport == Transport::DirectTls,
            acceptor,
            out: BytesMut::new(),
        };
        self.serve(config, wire).await
    }

    /// Runs a stream with `config` over `wire` until it ends, then ends (or detaches) the
    /// session.
    pub(crate) async fn serve<W: Wire>(
        mut self,
        config: Arc<StreamConfig>,
        mut wire: W,
    ) -> io::Result<()> {
        let now = tokio::time::Instant::now().into_std();
        let mut stream = ServerStream::new(config, Box::new(OsEntropy), now);
        // Boxed: the handshake is over before the stream waits, and its state should not
        // stay in every idle connection's task.
        let mut result = Box::pin(wire.start(&mut stream)).await;
        if result.is_ok() {
            result = self.drive(&mut stream, &mut wire).await;
            if result.is_err() {
                self.lost = true;
            }
        }
        let sm = stream.take_sm();
        Box::pin(self.end_session(sm)).await;
        wire.shutdown().await;
        result
    }

    async fn drive<W: Wire>(&mut self, stream: &mut ServerStream, wire: &mut W) -> io::Result<()> {
        let mut shutdown = self.node.shutdown.subscribe();
        loop {
            // Act on everything the stream has to say before waiting again.
            while let Some(event) = stream.poll_event() {
                // Boxed: handling an event (TLS upgrade, routing) needs far more state than
                // waiting does, and an idle connection should only pay for waiting.
                if Box::pin(self.handle_event(stream, wire, event)).await? {
                    wire.flush(stream).await?;
                    return Ok(());
                }
            }
            wire.flush(stream).await?;
            if stream.is_closed() {
                return Ok(());
            }
            stream.shrink();
            let deadline = stream.poll_timeout().map(tokio::time::Instant::from_std);
            let session = self.session.clone();
            tokio::select! {
                // The read buffer exists only inside one poll, so an idle connection keeps
                // none while it waits.
                read = std::future::poll_fn(|cx| wire.poll_input(cx, stream)) => {
                    if !read? {
                        // The peer went away without closing the stream.
                        self.lost = true;
                        return Ok(());
                    }
                }
                Some(first) = recv(&mut self.session_rx) => {
                    let now = tokio::time::Instant::now().into_std();
                    let Outbound::Stanza(bytes) = first;
                    stream.handle_command(now, Command::Send(bytes));
                    if let Some(rx) = self.session_rx.as_mut() {
                        for _ in 1..WRITE_BATCH {
                            match rx.try_recv() {
                                Some(Outbound::Stanza(bytes)) => stream.handle_command(now, Command::Send(bytes)),
                                None => break,
                            }
                        }
                    }
                }
                () = sleep_until(deadline) => {
                    stream.handle_timeout(tokio::time::Instant::now().into_std());
                }
                reason = closed(session.as_deref()) => {
                    if self.resumable.as_ref().is_some_and(|r| r.taken_over()) {
                        // A resuming stream takes the session: this connection lets go of it.
                        self.lost = true;
                    }
                    stream.handle_command(tokio::time::Instant::now().into_std(), Command::Close(Some(reason)));
                }
                _ = shutdown.changed() => {
                    stream.handle_command(
                        tokio::time::Instant::now().into_std(),
                        Command::Close(Some(StreamError::new(StreamCondition::SystemShutdown))),
                    );
                }
            }
        }
    }

    /// Acts on one stream event; `Ok(true)` when the stream is over.
    async fn handle_event<W: Wire>(
        &mut self,
        stream: &mut ServerStream,
        wire: &mut W,
        event: Event,
    ) -> io::Result<bool> {
        let now = || tokio::time::Instant::now().into_std();
        match event {
            Event::StartTls => {
                wire.flush(stream).await?;
                let binding = wire.start_tls().await?;
                stream.handle_command(
                    now(),
                    Command::TlsEstablished {
                        channel_binding: binding,
                    },
                );
            }
            Event::CredentialsNeeded { username, domain } => {
                let creds = match BareJid::new(&format!("{username}@{domain}")) {
                    Ok(jid) if jid.node().is_some() => {
                        crate::accounts::lookup_credentials(&self.node, &jid).await
                    }
                    _ => Ok(None),
                };
                let command = match creds {
                    Ok(creds) => Command::Credentials(creds),
                    Err(crate::accounts::CredentialsUnavailable) => Command::CredentialsUnavailable,
                };
                stream.handle_command(now(), command);
            }
            Event::Authenticated { mechanism, .. } => self.node.metrics.login(mechanism),
            Event::AuthFailed { mechanism, .. } => self.node.metrics.auth_failure(mechanism),
            Event::BindRequested { resource } => {
                let command = self.bind(stream, resource);
                stream.handle_command(now(), command);
            }
            Event::RegistrationIq(iq) => {
                let domain = stream.domain().unwrap_or_default().to_owned();
                let reply = crate::modules::register::pre_auth(&self.node, &domain, iq).await;
                stream.handle_command(now(), Command::Send(reply.into()));
            }
            Event::Stanza(stanza) => match (&self.session, &self.home) {
                (Some(session), Some(home)) => self.node.edge_stanza(home, session, stanza),
                (Some(session), None) => {
                    let session = session.clone();
                    session::handle_client_stanza(&self.node, &session, stanza).await;
                }
                (None, _) => {}
            },
            Event::ClientState { active } => {
                if let Some(session) = &self.session {
                    session.set_active(active);
                }
            }
            Event::SmEnable { resume, max } => {
                let command = self.enable_sm(resume, max);
                stream.handle_command(now(), command);
            }
            Event::SmResume { previd, h } => {
                let account = match (stream.domain(), self.authenticated_user(stream)) {
                    (Some(domain), Some(user)) => BareJid::new(&format!("{user}@{domain}")).ok(),
                    _ => None,
                };
                let command = self.resume(account, &previd, h).await;
                stream.handle_command(now(), command);
            }
            Event::Closed { error } => {
                if let Some(e) = error {
                    if e.condition == StreamCondition::ConnectionTimeout && self.session.is_some() {
                        // No answer to the idle check: as good as a broken connection.
                        self.lost = true;
                    }
                    tracing::debug!(error = %e, "stream closed with an error");
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// XEP-0198 `<enable/>`: resumption is granted when asked for and configured, for the
    /// shorter of the client's wish and the configured time.
    fn enable_sm(&mut self, resume: bool, max: Option<u32>) -> Command {
        let configured = self.node.config.modules.stream_management.resume_timeout;
        let (Some(session), true, Some(configured)) = (&self.session, resume, configured) else {
            return Command::SmEnabled {
                id: None,
                max: None,
            };
        };
        let timeout = match max {
            Some(max) if max > 0 => configured.min(Duration::from_secs(u64::from(max))),
            _ => configured,
        };
        let id = crate::resume::new_id(&self.node);
        self.resumable = Some(self.node.resumptions.insert(&id, session.clone(), timeout));
        Command::SmEnabled {
            id: Some(id),
            max: Some(u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX)),
        }
    }

    /// XEP-0198 `<resume/>` on an authenticated stream.
    async fn resume(&mut self, account: Option<BareJid>, previd: &str, h: u32) -> Command {
        let Some(account) = account else {
            return Command::ResumeFailed { h: None };
        };
        match self.node.resume(previd, &account, h).await {
            Ok(Resumed::Here {
                entry,
                detached,
                resend,
            }) => {
                let inbound = detached.sm.inbound;
                let jid = entry.session.jid.to_string();
                tracing::Span::current().record("jid", tracing::field::display(&jid));
                tracing::debug!(resent = resend.len(), "session resumed");
                self.session = Some(entry.session.clone());
                self.session_rx = Some(detached.outbox);
                self.home = detached.home;
                self.resumable = Some(entry);
                Command::Resumed {
                    jid,
                    previd: previd.to_owned(),
                    inbound,
                    acked: h,
                    resend,
                }
            }
            Ok(Resumed::Elsewhere {
                jid,
                inbound,
                resend,
                timeout,
            }) => {
                let Ok(full) = FullJid::new(&jid) else {
                    return Command::ResumeFailed { h: None };
                };
                if let Err(condition) = self.open_session(full, true) {
                    tracing::info!(condition = condition.as_str(), "resumed session not opened");
                    return Command::ResumeFailed { h: Some(inbound) };
                }
                if let Some(session) = &self.session {
                    self.resumable = Some(self.node.resumptions.insert(
                        previd,
                        session.clone(),
                        timeout,
                    ));
                }
                tracing::debug!(
                    resent = resend.len(),
                    "session resumed from another datacenter"
                );
                Command::Resumed {
                    jid,
                    previd: previd.to_owned(),
                    inbound,
                    acked: h,
                    resend,
                }
            }
            Err(failed) => Command::ResumeFailed { h: failed.0 },
        }
    }

    fn bind(&mut self, stream: &ServerStream, resource: Option<String>) -> Command {
        let (Some(domain), Some(jid_user)) = (stream.domain(), self.authenticated_user(stream))
        else {
            return Command::BindFailed(StanzaCondition::NotAllowed);
        };
        let Ok(bare) = BareJid::new(&format!("{jid_user}@{domain}")) else {
            return Command::BindFailed(StanzaCondition::NotAllowed);
        };
        let resource = resource.unwrap_or_else(|| {
            let mut bytes = [0u8; 8];
            rand::fill(&mut bytes);
            format!(
                "tern-{}",
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        });
        let full: FullJid = match bare.with_resource_str(&resource) {
            Ok(full) => full,
            Err(_) => return Command::BindFailed(StanzaCondition::BadRequest),
        };
        match self.open_session(full.clone(), false) {
            Ok(()) => Command::Bound(full.to_string()),
            Err(condition) => Command::BindFailed(condition),
        }
    }

    /// Opens the session `full` for this stream: registered here, and at the account's home
    /// when that is another datacenter. `resumed`: it continues a session of the same JID that
    /// a stream elsewhere carried (XEP-0198), which it takes over quietly.
    fn open_session(&mut self, full: FullJid, resumed: bool) -> Result<(), StanzaCondition> {
        let (session, rx) = Session::new(
            full.clone(),
            self.conn_id,
            self.transport,
            self.peer,
            self.node.config.limits.session_queue,
        );
        if let Some((home, _)) = self.node.remote_home(&full.to_bare()) {
            // The account lives in another datacenter: the session is kept there, this node
            // carries its stream.
            self.node.open_edge_session(&home, &session, resumed)?;
            self.home = Some(home.into());
        }
        self.node.register_session(&session, resumed);
        self.node.metrics.sessions_changed(1);
        tracing::Span::current().record("jid", tracing::field::display(&full));
        tracing::debug!(resumed, "session bound");
        self.session = Some(session);
        self.session_rx = Some(rx);
        Ok(())
    }

    fn authenticated_user(&self, stream: &ServerStream) -> Option<String> {
        stream.username().map(str::to_owned)
    }

    /// The stream ended: a resumable session whose connection was lost waits for its client
    /// (XEP-0198); any other ends now.
    async fn end_session(&mut self, sm: Option<SmSnapshot>) {
        let Some(session) = self.session.take() else {
            return;
        };
        let entry = self.resumable.take();
        if let (Some(entry), Some(sm)) = (&entry, &sm)
            && sm.resumable
            && self.lost
            && !self.node.is_shutting_down()
            && let Some(outbox) = self.session_rx.take()
        {
            let detached = Detached {
                outbox,
                home: self.home.take(),
                sm: sm.clone(),
            };
            return crate::resume::detach(&self.node, entry.clone(), detached);
        }
        if let Some(entry) = entry {
            self.node.resumptions.remove(&entry);
        }
        let unacked = sm.map(|sm| sm.unacked).unwrap_or_default();
        finish_session(
            &self.node,
            &session,
            self.session_rx.take(),
            self.home.take(),
            unacked,
        )
        .await;
    }
}

/// Ends a session whose stream is over: unregistered, what its client was never given routed
/// again, the contacts told.
///
/// `unacked` (XEP-0198: written but never acknowledged) goes first, then what was still queued,
/// then what an inactive client had waiting (XEP-0352), which is newest. Routed again now that
/// the session is gone, a message falls back to the account's other resources or to offline
/// storage, an IQ is answered with an error: nothing is lost.
pub(crate) async fn finish_session(
    node: &Arc<Node>,
    session: &Arc<Session>,
    outbox: Option<Outbox>,
    home: Option<Box<str>>,
    unacked: Vec<bytes::Bytes>,
) {
    // A session replaced by a newer one with the same JID is already out of the map, but it
    // was counted when bound, so it is uncounted here either way.
    node.sm.unregister(session);
    node.metrics.sessions_changed(-1);
    let mut left = unacked;
    left.extend(outbox.map(Outbox::close_and_drain).unwrap_or_default());
    left.extend(session.take_held());
    if let Some(home) = home {
        // The home keeps the session: it routes what is left and tells the contacts.
        return node.close_edge_session(&home, session, left);
    }
    for bytes in left {
        if let Ok(stanza) = tern_xmpp_proto::Stanza::from_frame(bytes)
            && stanza.kind != tern_xmpp_proto::StanzaKind::Presence
        {
            node.route(stanza).await;
        }
    }
    if !session.is_superseded() {
        crate::modules::presence::session_ended(node, session).await;
    }
}

/// Pending connections the kernel queues per listener (capped by `net.core.somaxconn`). Login
/// storms after a restart arrive faster than one accept loop takes them; a short queue makes
/// clients retry their SYN a second later.
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (a restart does not wait for
/// old connections in `TIME_WAIT`).
pub(crate) fn bind_listener(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Polls one read from `io` into the stream, with a buffer that lives only for this poll;
/// `Ready(Ok(0))` at end of input.
fn poll_read_into(
    cx: &mut Context<'_>,
    io: &mut Io,
    stream: &mut ServerStream,
) -> Poll<io::Result<usize>> {
    let mut chunk = [0u8; READ_CHUNK];
    let mut buf = ReadBuf::new(&mut chunk);
    match Pin::new(io).poll_read(cx, &mut buf) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Ready(Ok(())) => {
            let read = buf.filled();
            if !read.is_empty() {
                stream.handle_input(tokio::time::Instant::now().into_std(), read);
            }
            Poll::Ready(Ok(read.len()))
        }
    }
}

async fn recv(rx: &mut Option<Outbox>) -> Option<Outbound> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn closed(session: Option<&Session>) -> StreamError {
    match session {
        Some(s) => s.closed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::test_node;

    /// The connection task is what every idle client costs: keep its resting size in check.
    #[tokio::test]
    async fn connection_task_stays_small() {
        let (node, _dir) = test_node("c2s-size").await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let tls = crate::tls::load_or_create(
            &node.config.general.data_dir,
            None,
            None,
            &node.config.general.domains,
        )
        .unwrap();
        let connection = Connection::new(
            node.clone(),
            1,
            listener.local_addr().unwrap(),
            Transport::DirectTls,
        );
        let config = Arc::new(node.stream_config(TlsPolicy::AlreadySecure));
        let task = connection.run(tcp, TlsAcceptor::from(tls.server_config), config);
        let size = size_of_val(&task);
        assert!(size <= 2304, "connection task is {size} bytes");
    }
}
