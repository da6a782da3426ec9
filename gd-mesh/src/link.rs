//! Bridges: one QUIC connection dialed by this datacenter to each other one, carrying envelopes
//! in order per (from, to) pair, acknowledged cumulatively, re-sent after a reconnect and
//! de-duplicated by the receiver.
//!
//! **Sending.** [`Mesh::send`] never waits: it puts the envelope on one of the peer's
//! envelope streams (the (from, to) pair hashes onto a fixed stream, so a conversation stays in
//! order and conversations never block each other) and returns. It refuses at once, with a
//! reason the router turns into a stanza error, when the peer's queue is full
//! (`<resource-constraint/>`) or the peer has been unreachable for longer than
//! [`LinkConfig::down_after`] (`<remote-server-timeout/>`). Envelopes stay queued until the peer
//! acknowledges them; after a reconnect everything unacknowledged is sent again, and the peer's
//! `Welcome` says how far it had already delivered, so nothing is delivered twice.
//!
//! **Receiving.** The listener checks the dialer's certificate (done by TLS: mesh CA, known DC),
//! that the `Hello` names the same DC and that both run the same topology. Per (peer DC, peer
//! epoch, stream) it remembers the last sequence number delivered: an envelope at the next
//! number is handed to the router and acknowledged; one at or below it is a duplicate
//! (acknowledged again, dropped); a gap or a garbage frame closes the connection with an error.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use crate::frame::{
    DEFAULT_MAX_FRAME, Envelope, Frame, FrameError, Hello, Route, StreamKind, Welcome, read_frame,
    write_frame,
};
use crate::queue::{Restored, Store, StoreError};

/// QUIC application error code: the peer broke the protocol (garbage, gap, wrong handshake).
const PROTOCOL_ERROR: u32 = 1;
/// QUIC application error code: the bridge was refused (topology or identity mismatch).
const REFUSED: u32 = 2;
/// Envelopes taken from a stream's queue at a time for sending.
const SEND_BATCH: usize = 256;
/// Most envelope streams a dialer may ask for.
const MAX_STREAMS: u16 = 1024;

/// Settings of this datacenter's bridges.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// This datacenter.
    pub dc: String,
    /// Digest of the topology file; a peer with another one is refused.
    pub topology: [u8; 32],
    /// Envelope streams per bridge.
    pub streams: u16,
    /// Largest frame accepted.
    pub max_frame: usize,
    /// Envelopes waiting for one peer (sent or not, unacknowledged) before senders are refused.
    pub queue_limit: usize,
    /// A peer unreachable for this long is down: new envelopes for it are refused at once.
    pub down_after: Duration,
    /// First and longest pause between reconnection attempts.
    pub backoff: (Duration, Duration),
    /// The redb file keeping queued envelopes and delivered positions across restarts
    /// ([`crate::queue`]); `None` keeps them in memory only.
    pub store: Option<std::path::PathBuf>,
}

impl LinkConfig {
    /// Defaults for datacenter `dc` running the topology with digest `topology`.
    pub fn new(dc: impl Into<String>, topology: [u8; 32]) -> Self {
        Self {
            dc: dc.into(),
            topology,
            streams: 16,
            max_frame: DEFAULT_MAX_FRAME,
            queue_limit: 100_000,
            down_after: Duration::from_secs(30),
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            store: None,
        }
    }
}

/// Where to dial a peer datacenter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// The peer's topology name.
    pub dc: String,
    /// Its bridge endpoint.
    pub addr: SocketAddr,
    /// The TLS server name its certificate carries.
    pub server_name: String,
}

/// Why an envelope was not accepted for sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No bridge to that datacenter.
    #[error("no bridge to datacenter {0}")]
    UnknownDc(String),
    /// The peer's queue is full (`<resource-constraint/>`).
    #[error("the queue to datacenter {dc} is full ({limit} envelopes)")]
    QueueFull {
        /// The peer.
        dc: String,
        /// The limit.
        limit: usize,
    },
    /// The peer has been unreachable for too long (`<remote-server-timeout/>`).
    #[error("datacenter {dc} has been unreachable for {unreachable:?}")]
    Down {
        /// The peer.
        dc: String,
        /// For how long.
        unreachable: Duration,
    },
}

/// An envelope delivered by a peer, for the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The datacenter it came from over the bridge.
    pub peer: String,
    /// The envelope.
    pub envelope: Envelope,
}

/// One bridge as this datacenter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// The peer.
    pub dc: String,
    /// Whether the bridge is up.
    pub connected: bool,
    /// Round-trip time of the bridge, when up.
    pub rtt: Option<Duration>,
    /// Envelopes waiting for an acknowledgement (in flight or not sent yet).
    pub queued: usize,
    /// Of those, the envelopes sent on the current connection and not acknowledged yet.
    pub in_flight: usize,
    /// Connections made (the first one included).
    pub connects: u64,
    /// Since when the peer has been unreachable, if it is.
    pub unreachable_for: Option<Duration>,
}

struct StreamQueue {
    next_seq: u64,
    unacked: VecDeque<Envelope>,
    /// The last sequence number written on the current connection (0: none yet).
    sent_upto: u64,
}

impl StreamQueue {
    /// Envelopes written on the current connection and not acknowledged yet.
    fn in_flight(&self) -> usize {
        self.unacked.partition_point(|e| e.seq <= self.sent_upto)
    }
}

struct LinkState {
    connection: Option<quinn::Connection>,
    unreachable_since: Option<Instant>,
}

struct Peer {
    addr: PeerAddr,
    streams: Vec<Mutex<StreamQueue>>,
    wake: Vec<Notify>,
    queued: AtomicUsize,
    connects: AtomicU64,
    state: Mutex<LinkState>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This datacenter's side of the mesh: outgoing bridges to every peer, and the listener for
/// theirs.
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

struct Inner {
    config: LinkConfig,
    store: Option<Store>,
    epoch: u64,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    peers: HashMap<String, Arc<Peer>>,
    inbound: mpsc::UnboundedSender<Inbound>,
    /// Last sequence number delivered, per (peer DC, peer epoch) and stream.
    delivered: Mutex<HashMap<(String, u64), Vec<u64>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Answers the Raft requests peers send over the bridges.
    raft: std::sync::OnceLock<CallHandler>,
    /// Answers the node's requests peers send over the bridges.
    calls: std::sync::OnceLock<CallHandler>,
}

/// A future returned by a [`CallHandler`].
pub type CallFuture = std::pin::Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;

/// Answers one request (opaque to the mesh: a Raft RPC, or a node's call) with its reply.
pub type CallHandler = Arc<dyn Fn(Bytes) -> CallFuture + Send + Sync>;

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("dc", &self.inner.config.dc)
            .finish_non_exhaustive()
    }
}

/// The stream a (from, to) pair always uses. The pair is taken on bare JIDs, so everything
/// between two accounts (any of their resources, subscriptions and presence alike) keeps its
/// order, while conversations between different accounts never block each other.
fn stream_of(route: &Route, streams: u16) -> usize {
    let bare = |jid: &str| jid.split_once('/').map_or(jid, |(bare, _)| bare).to_owned();
    let mut hasher = DefaultHasher::new();
    bare(&route.from).hash(&mut hasher);
    bare(&route.to).hash(&mut hasher);
    (hasher.finish() % u64::from(streams.max(1))) as usize
}

impl Mesh {
    /// Starts the mesh on `endpoint` (already bound, with the mesh's server configuration):
    /// accepts the peers' bridges, and dials each of `peers` with `client`. Delivered envelopes
    /// arrive on the returned receiver. With [`LinkConfig::store`], what was queued before a
    /// restart is queued again (in order) and the delivered positions are remembered.
    pub fn start(
        config: LinkConfig,
        endpoint: quinn::Endpoint,
        client: quinn::ClientConfig,
        peers: Vec<PeerAddr>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Inbound>), StoreError> {
        let (store, mut restored) = match &config.store {
            Some(path) => {
                let (store, restored) = Store::open(path)?;
                (Some(store), restored)
            }
            None => (None, Restored::default()),
        };
        let (inbound, rx) = mpsc::unbounded_channel();
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let streams = usize::from(config.streams.max(1));
        let peers = peers
            .into_iter()
            .map(|addr| {
                let peer = Peer {
                    streams: (0..streams)
                        .map(|_| {
                            Mutex::new(StreamQueue {
                                next_seq: 1,
                                unacked: VecDeque::new(),
                                sent_upto: 0,
                            })
                        })
                        .collect(),
                    wake: (0..streams).map(|_| Notify::new()).collect(),
                    queued: AtomicUsize::new(0),
                    connects: AtomicU64::new(0),
                    state: Mutex::new(LinkState {
                        connection: None,
                        unreachable_since: Some(Instant::now()),
                    }),
                    addr,
                };
                if let Some(streams_of) = restored.outbound.remove(&peer.addr.dc) {
                    requeue(&peer, streams_of, store.as_ref());
                }
                (peer.addr.dc.clone(), Arc::new(peer))
            })
            .collect();
        let mesh = Self {
            inner: Arc::new(Inner {
                config,
                store,
                epoch,
                endpoint,
                client,
                peers,
                inbound,
                delivered: Mutex::new(restored.delivered),
                tasks: Mutex::new(Vec::new()),
                raft: std::sync::OnceLock::new(),
                calls: std::sync::OnceLock::new(),
            }),
        };
        let mut tasks = vec![tokio::spawn(mesh.clone().accept_loop())];
        for peer in mesh.inner.peers.values() {
            tasks.push(tokio::spawn(mesh.clone().dial_loop(peer.clone())));
        }
        *lock(&mesh.inner.tasks) = tasks;
        Ok((mesh, rx))
    }

    /// This datacenter.
    pub fn dc(&self) -> &str {
        &self.inner.config.dc
    }

    /// Queues a stanza that enters the mesh here for datacenter `dc`; never waits.
    pub fn send(&self, dc: &str, route: Route, stanza: Bytes) -> Result<(), SendError> {
        let origin = self.inner.config.dc.clone();
        self.enqueue(dc, route, stanza, origin, 0)
    }

    /// Queues a stanza that came over another bridge (from `origin`, `hops` datacenters
    /// crossed so far) for datacenter `dc`: a stale route being corrected.
    pub fn forward(
        &self,
        dc: &str,
        route: Route,
        stanza: Bytes,
        origin: String,
        hops: u8,
    ) -> Result<(), SendError> {
        self.enqueue(dc, route, stanza, origin, hops)
    }

    fn enqueue(
        &self,
        dc: &str,
        route: Route,
        stanza: Bytes,
        origin: String,
        hops: u8,
    ) -> Result<(), SendError> {
        let peer = self
            .inner
            .peers
            .get(dc)
            .ok_or_else(|| SendError::UnknownDc(dc.to_owned()))?;
        let unreachable = lock(&peer.state)
            .unreachable_since
            .map(|since| since.elapsed());
        if let Some(unreachable) = unreachable
            && unreachable > self.inner.config.down_after
        {
            return Err(SendError::Down {
                dc: dc.to_owned(),
                unreachable,
            });
        }
        let limit = self.inner.config.queue_limit;
        if peer
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_err()
        {
            return Err(SendError::QueueFull {
                dc: dc.to_owned(),
                limit,
            });
        }
        let index = stream_of(&route, self.inner.config.streams);
        {
            let mut queue = lock(&peer.streams[index]);
            let seq = queue.next_seq;
            queue.next_seq += 1;
            let envelope = Envelope {
                seq,
                origin,
                hops,
                route,
                stanza,
            };
            if let Some(store) = &self.inner.store {
                store.put(dc, stream_id(index), &envelope);
            }
            queue.unacked.push_back(envelope);
        }
        peer.wake[index].notify_one();
        Ok(())
    }

    /// Sets what answers Raft requests arriving over the bridges (once).
    pub fn serve_raft(&self, handler: CallHandler) {
        let _ = self.inner.raft.set(handler);
    }

    /// Sets what answers the node's calls arriving over the bridges (once).
    pub fn serve_calls(&self, handler: CallHandler) {
        let _ = self.inner.calls.set(handler);
    }

    /// Sends one Raft request to datacenter `dc` over its bridge and waits for the reply, up to
    /// `deadline`. Fails at once when the bridge is not up.
    pub async fn raft_call(
        &self,
        dc: &str,
        request: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, String> {
        self.exchange(dc, StreamKind::Raft, Frame::RaftRequest(request), deadline)
            .await
    }

    /// Sends one node request to datacenter `dc` over its bridge (a stream of its own) and
    /// waits for the reply, up to `deadline`. Fails at once when the bridge is not up.
    pub async fn call(
        &self,
        dc: &str,
        request: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, String> {
        self.exchange(dc, StreamKind::Call, Frame::CallRequest(request), deadline)
            .await
    }

    async fn exchange(
        &self,
        dc: &str,
        kind: StreamKind,
        request: Frame,
        deadline: Duration,
    ) -> Result<Bytes, String> {
        let peer = self
            .inner
            .peers
            .get(dc)
            .ok_or_else(|| format!("no bridge to datacenter {dc}"))?;
        let connection = lock(&peer.state)
            .connection
            .clone()
            .ok_or_else(|| format!("the bridge to {dc} is down"))?;
        let max_frame = self.inner.config.max_frame;
        let exchange = async {
            let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
            write_frame(&mut send, &Frame::Open(kind))
                .await
                .map_err(|e| e.to_string())?;
            write_frame(&mut send, &request)
                .await
                .map_err(|e| e.to_string())?;
            let _ = send.finish();
            match (kind, read_frame(&mut recv, max_frame).await) {
                (StreamKind::Raft, Ok(Frame::RaftReply(reply)))
                | (StreamKind::Call, Ok(Frame::CallReply(reply))) => Ok(reply),
                (_, Ok(other)) => Err(format!("expected a reply, got {other:?}")),
                (_, Err(e)) => Err(e.to_string()),
            }
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| format!("no reply from {dc} within {deadline:?}"))?
    }

    /// Every bridge as seen from here, sorted by peer.
    pub fn status(&self) -> Vec<LinkStatus> {
        let mut all: Vec<LinkStatus> = self
            .inner
            .peers
            .values()
            .map(|peer| {
                let state = lock(&peer.state);
                LinkStatus {
                    dc: peer.addr.dc.clone(),
                    connected: state.connection.is_some(),
                    rtt: state.connection.as_ref().map(quinn::Connection::rtt),
                    queued: peer.queued.load(Ordering::Acquire),
                    in_flight: if state.connection.is_some() {
                        peer.streams.iter().map(|q| lock(q).in_flight()).sum()
                    } else {
                        0
                    },
                    connects: peer.connects.load(Ordering::Relaxed),
                    unreachable_for: state.unreachable_since.map(|s| s.elapsed()),
                }
            })
            .collect();
        all.sort_by(|a, b| a.dc.cmp(&b.dc));
        all
    }

    /// Stops every bridge and the listener.
    pub fn stop(&self) {
        for task in lock(&self.inner.tasks).drain(..) {
            task.abort();
        }
        self.inner.endpoint.close(0u32.into(), b"stopping");
    }

    async fn dial_loop(self, peer: Arc<Peer>) {
        let (first, longest) = self.inner.config.backoff;
        let mut pause = first;
        loop {
            match self.dial(&peer).await {
                Ok(connection) => {
                    pause = first;
                    peer.connects.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut state = lock(&peer.state);
                        state.connection = Some(connection.clone());
                        state.unreachable_since = None;
                    }
                    tracing::info!(peer = %peer.addr.dc, "bridge up");
                    let reason = self.run_outgoing(&peer, &connection).await;
                    {
                        let mut state = lock(&peer.state);
                        state.connection = None;
                        state.unreachable_since.get_or_insert_with(Instant::now);
                    }
                    tracing::warn!(peer = %peer.addr.dc, %reason, "bridge down");
                }
                Err(reason) => {
                    lock(&peer.state)
                        .unreachable_since
                        .get_or_insert_with(Instant::now);
                    tracing::debug!(peer = %peer.addr.dc, %reason, "bridge not up");
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(longest);
        }
    }

    /// Connects, says hello and learns how far the peer has delivered this epoch.
    async fn dial(&self, peer: &Peer) -> Result<quinn::Connection, String> {
        let connecting = self
            .inner
            .endpoint
            .connect_with(
                self.inner.client.clone(),
                peer.addr.addr,
                &peer.addr.server_name,
            )
            .map_err(|e| e.to_string())?;
        let connection = connecting.await.map_err(|e| e.to_string())?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        let hello = Hello {
            dc: self.inner.config.dc.clone(),
            topology: self.inner.config.topology,
            epoch: self.inner.epoch,
            streams: self.inner.config.streams,
        };
        write_frame(&mut send, &Frame::Hello(hello))
            .await
            .map_err(|e| e.to_string())?;
        match read_frame(&mut recv, self.inner.config.max_frame).await {
            Ok(Frame::Welcome(Welcome { dc, delivered })) if dc == peer.addr.dc => {
                for (index, &upto) in delivered.iter().enumerate() {
                    if let Some(stream) = peer.streams.get(index) {
                        let popped = pop_acked(&mut lock(stream), upto);
                        peer.queued.fetch_sub(popped, Ordering::AcqRel);
                        if let Some(store) = &self.inner.store {
                            store.ack(&peer.addr.dc, stream_id(index), upto);
                        }
                    }
                }
                Ok(connection)
            }
            Ok(Frame::Refuse { reason }) => Err(format!("refused: {reason}")),
            Ok(other) => {
                connection.close(PROTOCOL_ERROR.into(), b"unexpected handshake");
                Err(format!("unexpected handshake frame {other:?}"))
            }
            Err(e) => Err(format!("handshake: {e}")),
        }
    }

    /// Sends every stream's envelopes until the connection fails; returns why it ended.
    async fn run_outgoing(&self, peer: &Arc<Peer>, connection: &quinn::Connection) -> String {
        let mut streams = tokio::task::JoinSet::new();
        for index in 0..peer.streams.len() {
            let peer = peer.clone();
            let connection = connection.clone();
            let max_frame = self.inner.config.max_frame;
            let store = self.inner.store.clone();
            streams
                .spawn(async move { send_stream(peer, connection, index, max_frame, store).await });
        }
        let reason = tokio::select! {
            e = connection.closed() => e.to_string(),
            Some(result) = streams.join_next() => match result {
                Ok(Err(e)) => e,
                Ok(Ok(())) => "stream ended".to_owned(),
                Err(e) => e.to_string(),
            },
        };
        connection.close(0u32.into(), b"bridge restarting");
        streams.shutdown().await;
        reason
    }

    async fn accept_loop(self) {
        while let Some(incoming) = self.inner.endpoint.accept().await {
            let mesh = self.clone();
            tokio::spawn(async move {
                match incoming.await {
                    Ok(connection) => mesh.serve(connection).await,
                    Err(e) => tracing::info!(error = %e, "bridge connection refused"),
                }
            });
        }
    }

    /// Serves one dialer's bridge.
    async fn serve(&self, connection: quinn::Connection) {
        let Some(cert_dc) = peer_dc(&connection) else {
            connection.close(REFUSED.into(), b"no datacenter in the certificate");
            return;
        };
        let max_frame = self.inner.config.max_frame;
        let Ok((mut send, mut recv)) = connection.accept_bi().await else {
            return;
        };
        let Ok(Frame::Hello(hello)) = read_frame(&mut recv, max_frame).await else {
            tracing::warn!(peer = %cert_dc, "bridge without a valid hello; closed");
            connection.close(PROTOCOL_ERROR.into(), b"expected hello");
            return;
        };
        let refusal = if hello.dc != cert_dc {
            Some(format!(
                "hello names {} but the certificate names {cert_dc}",
                hello.dc
            ))
        } else if hello.topology != self.inner.config.topology {
            Some("the topology files differ".to_owned())
        } else if hello.streams == 0 || hello.streams > MAX_STREAMS {
            Some(format!(
                "{} streams asked, 1 to {MAX_STREAMS} allowed",
                hello.streams
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            tracing::warn!(peer = %cert_dc, %reason, "bridge refused");
            let _ = write_frame(&mut send, &Frame::Refuse { reason }).await;
            let _ = send.finish();
            tokio::time::sleep(Duration::from_millis(100)).await;
            connection.close(REFUSED.into(), b"refused");
            return;
        }
        let key = (hello.dc.clone(), hello.epoch);
        let delivered = {
            let mut all = lock(&self.inner.delivered);
            if !all.contains_key(&key) {
                // A new life of the peer: its older epochs will never send again.
                all.retain(|(dc, _), _| dc != &hello.dc);
                if let Some(store) = &self.inner.store {
                    store.new_epoch(&hello.dc, hello.epoch);
                }
            }
            all.entry(key.clone())
                .or_insert_with(|| vec![0; usize::from(hello.streams)])
                .clone()
        };
        let welcome = Frame::Welcome(Welcome {
            dc: self.inner.config.dc.clone(),
            delivered,
        });
        if write_frame(&mut send, &welcome).await.is_err() {
            return;
        }
        tracing::info!(peer = %hello.dc, "bridge accepted");
        loop {
            let Ok((send, recv)) = connection.accept_bi().await else {
                return;
            };
            let mesh = self.clone();
            let key = key.clone();
            let connection = connection.clone();
            tokio::spawn(async move {
                if let Err(e) = mesh.receive_stream(&key, send, recv).await {
                    tracing::warn!(peer = %key.0, error = %e, "bridge closed: protocol error");
                    connection.close(PROTOCOL_ERROR.into(), e.as_bytes());
                }
            });
        }
    }

    /// Reads one envelope stream: delivers in order, acknowledges, drops duplicates.
    async fn receive_stream(
        &self,
        key: &(String, u64),
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> Result<(), String> {
        let max_frame = self.inner.config.max_frame;
        let index = match read_frame(&mut recv, max_frame).await {
            Ok(Frame::Open(StreamKind::Envelopes { index })) => usize::from(index),
            Ok(Frame::Open(kind @ (StreamKind::Raft | StreamKind::Call))) => {
                let request = match (kind, read_frame(&mut recv, max_frame).await) {
                    (StreamKind::Raft, Ok(Frame::RaftRequest(request)))
                    | (StreamKind::Call, Ok(Frame::CallRequest(request))) => request,
                    (_, Ok(other)) => return Err(format!("expected a request, got {other:?}")),
                    (_, Err(e)) => return Err(e.to_string()),
                };
                // Without a service (not started yet) the reply is empty: a Raft caller treats
                // it as a failed RPC and retries, a node's call as a failure; the bridge itself
                // is fine.
                let handler = match kind {
                    StreamKind::Raft => self.inner.raft.get().cloned(),
                    _ => self.inner.calls.get().cloned(),
                };
                let reply = match handler {
                    Some(handler) => Bytes::from(handler(request).await),
                    None => Bytes::new(),
                };
                let reply = match kind {
                    StreamKind::Raft => Frame::RaftReply(reply),
                    _ => Frame::CallReply(reply),
                };
                write_frame(&mut send, &reply)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = send.finish();
                return Ok(());
            }
            Ok(other) => return Err(format!("expected an open frame, got {other:?}")),
            Err(FrameError::Finished) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        loop {
            let envelope = match read_frame(&mut recv, max_frame).await {
                Ok(Frame::Envelope(envelope)) => envelope,
                Ok(other) => return Err(format!("expected an envelope, got {other:?}")),
                Err(FrameError::Finished) => return Ok(()),
                Err(FrameError::Io(_)) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let ack = {
                let mut delivered = lock(&self.inner.delivered);
                let last = delivered
                    .get_mut(key)
                    .and_then(|streams| streams.get_mut(index))
                    .ok_or_else(|| format!("stream {index} was not announced"))?;
                if envelope.seq <= *last {
                    *last
                } else if envelope.seq == *last + 1 {
                    *last = envelope.seq;
                    let seq = envelope.seq;
                    if let Some(store) = &self.inner.store
                        && let Some(streams) = delivered.get(key)
                    {
                        store.delivered(&key.0, key.1, streams.clone());
                    }
                    let _ = self.inner.inbound.send(Inbound {
                        peer: key.0.clone(),
                        envelope,
                    });
                    seq
                } else {
                    return Err(format!(
                        "stream {index}: envelope {} after {}",
                        envelope.seq, *last
                    ));
                }
            };
            if write_frame(&mut send, &Frame::Ack { seq: ack })
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    }
}

/// A stream index as stored (streams are at most [`MAX_STREAMS`]).
fn stream_id(index: usize) -> u16 {
    u16::try_from(index).unwrap_or(u16::MAX)
}

/// Queues again what a previous life of this node left for `peer`, renumbered from 1 in this
/// epoch, in order; a stream index beyond today's stream count folds onto an existing stream.
fn requeue(
    peer: &Peer,
    streams_of: std::collections::BTreeMap<u16, Vec<Envelope>>,
    store: Option<&Store>,
) {
    let count = peer.streams.len();
    let mut folded: Vec<Vec<Envelope>> = vec![Vec::new(); count];
    let mut old: Vec<Vec<(u16, u64)>> = vec![Vec::new(); count];
    for (stream, envelopes) in streams_of {
        let index = usize::from(stream) % count;
        for envelope in envelopes {
            old[index].push((stream, envelope.seq));
            folded[index].push(envelope);
        }
    }
    for (index, envelopes) in folded.into_iter().enumerate() {
        if envelopes.is_empty() {
            continue;
        }
        let mut queue = lock(&peer.streams[index]);
        let mut renumbered = Vec::with_capacity(envelopes.len());
        for mut envelope in envelopes {
            envelope.seq = queue.next_seq;
            queue.next_seq += 1;
            renumbered.push(envelope.clone());
            queue.unacked.push_back(envelope);
        }
        peer.queued.fetch_add(renumbered.len(), Ordering::AcqRel);
        if let Some(store) = store {
            for &(stream, seq) in &old[index] {
                store.ack(&peer.addr.dc, stream, seq);
            }
            for envelope in &renumbered {
                store.put(&peer.addr.dc, stream_id(index), envelope);
            }
        }
        tracing::info!(peer = %peer.addr.dc, stream = index, envelopes = renumbered.len(), "queued envelopes restored");
    }
}

/// Drops the acknowledged envelopes at the front of a stream's queue; returns how many.
fn pop_acked(queue: &mut StreamQueue, upto: u64) -> usize {
    let mut popped = 0;
    while queue.unacked.front().is_some_and(|e| e.seq <= upto) {
        queue.unacked.pop_front();
        popped += 1;
    }
    popped
}

/// Sends one envelope stream of a bridge: everything unacknowledged from the start, then new
/// envelopes as they are queued; reads the acknowledgements.
async fn send_stream(
    peer: Arc<Peer>,
    connection: quinn::Connection,
    index: usize,
    max_frame: usize,
    store: Option<Store>,
) -> Result<(), String> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    let index_u16 = u16::try_from(index).map_err(|e| e.to_string())?;
    write_frame(
        &mut send,
        &Frame::Open(StreamKind::Envelopes { index: index_u16 }),
    )
    .await
    .map_err(|e| e.to_string())?;
    let acks = {
        let peer = peer.clone();
        async move {
            loop {
                match read_frame(&mut recv, max_frame).await {
                    Ok(Frame::Ack { seq }) => {
                        let popped = pop_acked(&mut lock(&peer.streams[index]), seq);
                        peer.queued.fetch_sub(popped, Ordering::AcqRel);
                        if popped > 0
                            && let Some(store) = &store
                        {
                            store.ack(&peer.addr.dc, stream_id(index), seq);
                        }
                    }
                    Ok(other) => return Err(format!("expected an ack, got {other:?}")),
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
    };
    // A new connection sends everything unacknowledged again: nothing is in flight on it yet.
    lock(&peer.streams[index]).sent_upto = 0;
    let sends = async {
        let mut sent_upto = 0u64;
        loop {
            let batch: Vec<Envelope> = {
                let queue = lock(&peer.streams[index]);
                let start = queue.unacked.partition_point(|e| e.seq <= sent_upto);
                queue
                    .unacked
                    .range(start..)
                    .take(SEND_BATCH)
                    .cloned()
                    .collect()
            };
            let full = batch.len() == SEND_BATCH;
            for envelope in batch {
                sent_upto = envelope.seq;
                write_frame(&mut send, &Frame::Envelope(envelope))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            lock(&peer.streams[index]).sent_upto = sent_upto;
            if !full {
                peer.wake[index].notified().await;
            }
        }
    };
    tokio::select! {
        r = acks => r,
        r = sends => r,
    }
}

/// The datacenter named by the peer's certificate.
fn peer_dc(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let certs = identity
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs.first().and_then(crate::pki::peer_dc)
}
