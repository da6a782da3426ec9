//! [`Relay`]: the UDP relay itself, its [`RelayHandle`] (a cheap, cloneable way to steer it) and
//! its [`RelayConfig`].
//!
//! Each relay runs on a thread of its own, with its own single-threaded tokio runtime, so its
//! timing does not depend on how busy the caller's runtime is, and a caller's paused clock
//! (`tokio::time::pause`) does not touch it. Its tasks: one listener reads the listening
//! socket and keeps the client mappings; each mapping has a task reading its upstream socket;
//! each direction has one [`Scheduler`] task.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::scheduler::{Datagram, Lane, Route, Scheduler};
use crate::shape::Shape;
use crate::stats::{DirectionCounters, DropCause, Stats};

/// The largest UDP payload; the read buffers are this big.
const MAX_DATAGRAM: usize = 65_535;

/// Salt mixed into the seed of the upstream-to-client direction, so the two directions draw
/// different random numbers from one [`Shape::seed`].
const TO_CLIENT_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// Limits and knobs of a relay that are not part of the link's [`Shape`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// The most payload bytes queued per direction (waiting for their delay or for the rate
    /// limit). A datagram that would exceed it is dropped and counted in
    /// [`DirectionStats::dropped_queue_full`](crate::DirectionStats::dropped_queue_full).
    /// Default 4 MiB.
    pub queue_limit_bytes: u64,
    /// A client mapping (and its upstream socket) is removed after this long without a
    /// datagram in either direction. The next datagram from that client gets a new upstream
    /// socket, which the upstream server sees as a new peer address. Default 60 s.
    pub idle_timeout: Duration,
    /// The most client mappings at once; datagrams from further clients are dropped and
    /// counted in `dropped_other`. Default 1024.
    pub max_mappings: usize,
    /// The address the per-client upstream sockets are bound to. `None` (the default) means
    /// the upstream's own address when it is a loopback address, so that everything stays on
    /// loopback, and the unspecified address of its family otherwise.
    pub upstream_bind_ip: Option<IpAddr>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            queue_limit_bytes: 4 * 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            max_mappings: 1024,
            upstream_bind_ip: None,
        }
    }
}

/// State shared by a relay's tasks and handles.
#[derive(Debug)]
struct Shared {
    local_addr: SocketAddr,
    upstream: SocketAddr,
    shape_tx: watch::Sender<Shape>,
    cut: Arc<AtomicBool>,
    to_upstream: Arc<DirectionCounters>,
    to_client: Arc<DirectionCounters>,
    mappings: AtomicU64,
}

/// A cloneable handle that steers a running [`Relay`]: change its shape, cut or heal it, read
/// its counters. It does not keep the relay running; once the relay is stopped or dropped,
/// changes have no effect.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    shared: Arc<Shared>,
}

impl RelayHandle {
    /// The address the relay listens on (clients send here).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The address the relay forwards to.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// The shape in force.
    pub fn shape(&self) -> Shape {
        self.shared.shape_tx.borrow().clone()
    }

    /// Replaces the shape. It applies to datagrams read from now on; datagrams already queued
    /// keep the departure time they were given. With a [`Shape::seed`], the random number
    /// generators restart from that seed.
    pub fn set_shape(&self, shape: Shape) -> Result<()> {
        shape.validate()?;
        self.shared.shape_tx.send_replace(shape);
        Ok(())
    }

    /// Changes the shape in place with `edit`, then validates and applies it as
    /// [`set_shape`](Self::set_shape) does. On error the shape in force is left unchanged.
    pub fn update_shape(&self, edit: impl FnOnce(&mut Shape)) -> Result<()> {
        let mut shape = self.shape();
        edit(&mut shape);
        self.set_shape(shape)
    }

    /// Cuts the link, as if the cable were pulled: every datagram in either direction is
    /// dropped, both those arriving from now on and those already queued when they fall due.
    /// Client mappings are kept.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::Release);
    }

    /// Restores a cut link. Datagrams dropped while it was cut stay lost.
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::Release);
    }

    /// [`cut`](Self::cut) when `partitioned` is true, [`heal`](Self::heal) otherwise.
    pub fn partition(&self, partitioned: bool) {
        if partitioned {
            self.cut();
        } else {
            self.heal();
        }
    }

    /// Whether the link is cut now.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::Acquire)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        Stats {
            to_upstream: self.shared.to_upstream.snapshot(),
            to_client: self.shared.to_client.snapshot(),
            mappings: self.shared.mappings.load(Ordering::Relaxed),
            cut: self.is_cut(),
        }
    }
}

/// A running UDP relay between clients and one upstream address.
///
/// Datagrams a client sends to [`local_addr`](Self::local_addr) are forwarded to the upstream
/// from a socket of that client's own (one upstream socket per client address), so the
/// upstream server sees one distinct peer per client and its replies find their way back to
/// the right client. Both directions go through the [`Shape`]. Mappings stay stable while in
/// use and expire after [`RelayConfig::idle_timeout`] of silence, which suits QUIC: connection
/// IDs and addresses seen by both ends do not change under a live connection.
///
/// The relay runs on a thread of its own (named `wanem <listen address>`) with its own tokio
/// runtime, in real time whatever the caller's runtime does. Dropping the relay stops it;
/// [`stop`](Self::stop) also waits until its sockets are closed.
#[derive(Debug)]
pub struct Relay {
    handle: RelayHandle,
    /// Dropping it tells the relay thread to stop.
    stop_tx: oneshot::Sender<()>,
    /// Fires (as an error) once the relay thread has dropped its runtime and sockets.
    done_rx: oneshot::Receiver<()>,
}

impl Relay {
    /// Binds `listen` (port 0 picks a free port, see [`local_addr`](Self::local_addr)) and
    /// starts relaying to `upstream` with the default [`RelayConfig`].
    pub async fn start(listen: SocketAddr, upstream: SocketAddr, shape: Shape) -> Result<Self> {
        Self::start_with(listen, upstream, shape, RelayConfig::default()).await
    }

    /// [`start`](Self::start) with explicit limits.
    pub async fn start_with(
        listen: SocketAddr,
        upstream: SocketAddr,
        shape: Shape,
        config: RelayConfig,
    ) -> Result<Self> {
        shape.validate()?;
        let bind_error = |source| Error::Bind {
            addr: listen,
            source,
        };
        let std_socket = std::net::UdpSocket::bind(listen).map_err(bind_error)?;
        std_socket.set_nonblocking(true).map_err(bind_error)?;
        let local_addr = std_socket.local_addr().map_err(Error::LocalAddr)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Thread)?;
        let socket = {
            // Registers the socket with the relay's own runtime.
            let _context = runtime.enter();
            Arc::new(UdpSocket::from_std(std_socket).map_err(bind_error)?)
        };

        let (shape_tx, shape_rx) = watch::channel(shape);
        let shared = Arc::new(Shared {
            local_addr,
            upstream,
            shape_tx,
            cut: Arc::new(AtomicBool::new(false)),
            to_upstream: Arc::default(),
            to_client: Arc::default(),
            mappings: AtomicU64::new(0),
        });
        let (up_scheduler, up_lane) = Scheduler::new(
            shape_rx.clone(),
            0,
            shared.to_upstream.clone(),
            shared.cut.clone(),
            config.queue_limit_bytes,
            None,
        );
        let (client_scheduler, client_lane) = Scheduler::new(
            shape_rx,
            TO_CLIENT_SALT,
            shared.to_client.clone(),
            shared.cut.clone(),
            config.queue_limit_bytes,
            Some(socket.clone()),
        );
        let bind_ip = config.upstream_bind_ip.unwrap_or(match upstream.ip() {
            ip if ip.is_loopback() => ip,
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        let listener = Listener {
            shared: shared.clone(),
            socket,
            epoch: Instant::now(),
            config,
            bind_ip,
            to_upstream: up_lane,
            to_client: client_lane,
            mappings: HashMap::new(),
        };
        // Spawned now, run once the thread below drives the runtime.
        runtime.spawn(listener.run());
        runtime.spawn(up_scheduler.run());
        runtime.spawn(client_scheduler.run());

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("wanem {local_addr}"))
            .spawn(move || {
                // Both a stop request and a dropped `Relay` end the wait.
                let _ = runtime.block_on(stop_rx);
                // Cancels every task and closes every socket.
                drop(runtime);
                drop(done_tx);
            })
            .map_err(Error::Thread)?;
        tracing::info!(listen = %local_addr, %upstream, "wanem: relay started");
        Ok(Self {
            handle: RelayHandle { shared },
            stop_tx,
            done_rx,
        })
    }

    /// A cloneable handle to steer this relay from elsewhere (a control server, a test).
    pub fn handle(&self) -> RelayHandle {
        self.handle.clone()
    }

    /// See [`RelayHandle::local_addr`].
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// See [`RelayHandle::upstream_addr`].
    pub fn upstream_addr(&self) -> SocketAddr {
        self.handle.upstream_addr()
    }

    /// See [`RelayHandle::shape`].
    pub fn shape(&self) -> Shape {
        self.handle.shape()
    }

    /// See [`RelayHandle::set_shape`].
    pub fn set_shape(&self, shape: Shape) -> Result<()> {
        self.handle.set_shape(shape)
    }

    /// See [`RelayHandle::update_shape`].
    pub fn update_shape(&self, edit: impl FnOnce(&mut Shape)) -> Result<()> {
        self.handle.update_shape(edit)
    }

    /// See [`RelayHandle::cut`].
    pub fn cut(&self) {
        self.handle.cut();
    }

    /// See [`RelayHandle::heal`].
    pub fn heal(&self) {
        self.handle.heal();
    }

    /// See [`RelayHandle::partition`].
    pub fn partition(&self, partitioned: bool) {
        self.handle.partition(partitioned);
    }

    /// See [`RelayHandle::is_cut`].
    pub fn is_cut(&self) -> bool {
        self.handle.is_cut()
    }

    /// See [`RelayHandle::stats`].
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// Stops relaying and waits until the relay's thread has ended its tasks and closed its
    /// sockets; queued datagrams are discarded. The listening port is free when this returns.
    pub async fn stop(self) {
        let Self {
            handle,
            stop_tx,
            done_rx,
        } = self;
        // An error means the thread has already stopped, which is what is asked for.
        let _ = stop_tx.send(());
        // Resolves (as an error, the sender being dropped) once the thread is done.
        let _ = done_rx.await;
        tracing::info!(listen = %handle.local_addr(), "wanem: relay stopped");
    }
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One client's upstream socket and the task reading it.
#[derive(Debug)]
struct Mapping {
    socket: Arc<UdpSocket>,
    /// Milliseconds since the listener's epoch at the last datagram either way.
    last_seen: Arc<AtomicU64>,
    _reader: AbortOnDrop,
}

/// The task reading the listening socket; owns the client mappings.
#[derive(Debug)]
struct Listener {
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    epoch: Instant,
    config: RelayConfig,
    bind_ip: IpAddr,
    to_upstream: Lane,
    to_client: Lane,
    mappings: HashMap<SocketAddr, Mapping>,
}

impl Listener {
    async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let sweep_every =
            (self.config.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, client)) => {
                        let arrival = Instant::now();
                        self.handle_datagram(&buf[..len], client, arrival).await;
                    }
                    Err(error) if is_transient(&error) => {}
                    Err(error) => {
                        tracing::warn!(%error, listen = %self.shared.local_addr, "wanem: receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = sweep.tick() => self.expire_idle(),
            }
        }
    }

    async fn handle_datagram(&mut self, payload: &[u8], client: SocketAddr, arrival: Instant) {
        if self.to_upstream.is_cut() {
            self.to_upstream
                .counters()
                .dropped(payload.len(), DropCause::Cut);
            return;
        }
        let epoch = self.epoch;
        let Some(mapping) = self.mapping_for(client).await else {
            self.to_upstream
                .counters()
                .dropped(payload.len(), DropCause::Other);
            return;
        };
        mapping
            .last_seen
            .store(millis_since(epoch, arrival), Ordering::Relaxed);
        let route = Route::Connected(mapping.socket.clone());
        self.to_upstream.admit(Datagram {
            arrival,
            payload: payload.to_vec(),
            route,
        });
    }

    /// The mapping of `client`, made if needed; `None` if the table is full or no upstream
    /// socket could be made.
    async fn mapping_for(&mut self, client: SocketAddr) -> Option<&Mapping> {
        if !self.mappings.contains_key(&client) {
            if self.mappings.len() >= self.config.max_mappings {
                tracing::debug!(%client, "wanem: mapping table full");
                return None;
            }
            let mapping = match self.new_mapping(client).await {
                Ok(mapping) => mapping,
                Err(error) => {
                    tracing::warn!(%error, %client, "wanem: cannot make an upstream socket");
                    return None;
                }
            };
            self.mappings.insert(client, mapping);
            self.shared
                .mappings
                .store(self.mappings.len() as u64, Ordering::Relaxed);
        }
        self.mappings.get(&client)
    }

    async fn new_mapping(&self, client: SocketAddr) -> std::io::Result<Mapping> {
        let socket = UdpSocket::bind(SocketAddr::new(self.bind_ip, 0)).await?;
        socket.connect(self.shared.upstream).await?;
        let socket = Arc::new(socket);
        let last_seen = Arc::new(AtomicU64::new(millis_since(self.epoch, Instant::now())));
        tracing::debug!(%client, upstream_socket = ?socket.local_addr().ok(), "wanem: new mapping");
        let reader = tokio::spawn(read_upstream(
            socket.clone(),
            client,
            self.to_client.clone(),
            last_seen.clone(),
            self.epoch,
        ));
        Ok(Mapping {
            socket,
            last_seen,
            _reader: AbortOnDrop(reader),
        })
    }

    fn expire_idle(&mut self) {
        let now = millis_since(self.epoch, Instant::now());
        let idle = u64::try_from(self.config.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let before = self.mappings.len();
        self.mappings
            .retain(|_, m| now.saturating_sub(m.last_seen.load(Ordering::Relaxed)) < idle);
        if self.mappings.len() != before {
            tracing::debug!(
                expired = before - self.mappings.len(),
                "wanem: idle mappings removed"
            );
            self.shared
                .mappings
                .store(self.mappings.len() as u64, Ordering::Relaxed);
        }
    }
}

/// Reads one client's upstream socket and queues the replies towards that client.
async fn read_upstream(
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    to_client: Lane,
    last_seen: Arc<AtomicU64>,
    epoch: Instant,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv(&mut buf).await {
            Ok(len) => {
                let arrival = Instant::now();
                last_seen.store(millis_since(epoch, arrival), Ordering::Relaxed);
                if to_client.is_cut() {
                    to_client.counters().dropped(len, DropCause::Cut);
                    continue;
                }
                to_client.admit(Datagram {
                    arrival,
                    payload: buf[..len].to_vec(),
                    route: Route::To(client),
                });
            }
            Err(error) if is_transient(&error) => {}
            Err(error) => {
                tracing::debug!(%error, %client, "wanem: upstream receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Errors a UDP socket reports for an earlier datagram (an ICMP "port unreachable" from a
/// peer that is not listening yet); the socket itself is fine.
fn is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    )
}

fn millis_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}
