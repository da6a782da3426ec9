//! One direction of the emulated link: [`Lane`] (the admission side: cut and queue-limit
//! checks, then a hand-off) and [`Scheduler`] (one task per direction that owns the queue, the
//! RNG and the link state, and sends each datagram when it is due).
//!
//! No task is spawned per datagram: the scheduler keeps a min-heap of departures and sleeps
//! until the earliest, sending every datagram that is due each time it wakes.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::shape::Shape;
use crate::stats::{DirectionCounters, DropCause};

/// Where a datagram goes when it leaves.
#[derive(Debug)]
pub(crate) enum Route {
    /// Out of this socket, which is connected to the destination (client to upstream).
    Connected(Arc<UdpSocket>),
    /// Out of the scheduler's own socket (the listening socket), to this client.
    To(SocketAddr),
}

/// A datagram read by the relay, on its way through one direction.
#[derive(Debug)]
pub(crate) struct Datagram {
    /// When the relay read it; delay is counted from here.
    pub(crate) arrival: Instant,
    pub(crate) payload: Vec<u8>,
    pub(crate) route: Route,
}

/// The entry to one direction, cloned into every task that reads datagrams for it.
#[derive(Debug, Clone)]
pub(crate) struct Lane {
    /// Unbounded on purpose: what it holds is bounded by the byte reservation in
    /// [`Lane::admit`], which drops a datagram (counted as `dropped_queue_full`) rather than
    /// wait when the direction's queue is full.
    tx: mpsc::UnboundedSender<Datagram>,
    counters: Arc<DirectionCounters>,
    cut: Arc<AtomicBool>,
    queue_limit: u64,
}

impl Lane {
    /// Whether the link is cut now; readers may check this before copying a payload.
    pub(crate) fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    pub(crate) fn counters(&self) -> &DirectionCounters {
        &self.counters
    }

    /// Queues a datagram, or drops and counts it when the link is cut or the queue is full.
    pub(crate) fn admit(&self, datagram: Datagram) {
        let len = datagram.payload.len();
        if self.is_cut() {
            self.counters.dropped(len, DropCause::Cut);
            return;
        }
        if !self.counters.try_reserve(len, self.queue_limit) {
            self.counters.dropped(len, DropCause::QueueFull);
            return;
        }
        if self.tx.send(datagram).is_err() {
            // The scheduler has stopped: the relay is shutting down.
            self.counters.release(len);
            self.counters.dropped(len, DropCause::Other);
        }
    }
}

/// A queued datagram with its departure time; ordered so that the heap's top is the earliest
/// departure, ties broken by arrival order.
#[derive(Debug)]
struct Pending {
    departure: Instant,
    seq: u64,
    datagram: Datagram,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Reversed: `BinaryHeap` is a max-heap and the earliest departure must come first.
        (other.departure, other.seq).cmp(&(self.departure, self.seq))
    }
}

/// The task that owns one direction's queue.
#[derive(Debug)]
pub(crate) struct Scheduler {
    rx: mpsc::UnboundedReceiver<Datagram>,
    shape_rx: watch::Receiver<Shape>,
    shape: Shape,
    /// Mixed into the seed so that the two directions draw different numbers.
    salt: u64,
    rng: StdRng,
    counters: Arc<DirectionCounters>,
    cut: Arc<AtomicBool>,
    /// The socket for [`Route::To`] datagrams, if this direction has any.
    out: Option<Arc<UdpSocket>>,
    heap: BinaryHeap<Pending>,
    next_seq: u64,
    /// When the rate-limited link finishes sending what it has been given.
    link_free: Instant,
    /// The latest departure scheduled so far, to keep FIFO order when reordering is off.
    last_departure: Instant,
}

impl Scheduler {
    /// A scheduler and the [`Lane`] that feeds it.
    pub(crate) fn new(
        shape_rx: watch::Receiver<Shape>,
        salt: u64,
        counters: Arc<DirectionCounters>,
        cut: Arc<AtomicBool>,
        queue_limit: u64,
        out: Option<Arc<UdpSocket>>,
    ) -> (Self, Lane) {
        let (tx, rx) = mpsc::unbounded_channel();
        let lane = Lane {
            tx,
            counters: counters.clone(),
            cut: cut.clone(),
            queue_limit,
        };
        let shape = shape_rx.borrow().clone();
        let now = Instant::now();
        let mut scheduler = Self {
            rx,
            shape_rx,
            shape,
            salt,
            rng: StdRng::from_os_rng(),
            counters,
            cut,
            out,
            heap: BinaryHeap::new(),
            next_seq: 0,
            link_free: now,
            last_departure: now,
        };
        scheduler.reseed();
        (scheduler, lane)
    }

    fn reseed(&mut self) {
        if let Some(seed) = self.shape.seed {
            self.rng = StdRng::seed_from_u64(seed ^ self.salt);
        }
    }

    /// Runs until every [`Lane`] feeding it is gone.
    pub(crate) async fn run(mut self) {
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            self.send_due().await;
            let next = self.heap.peek().map(|p| p.departure);
            if let Some(deadline) = next {
                sleep
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(deadline));
            }
            tokio::select! {
                biased;
                received = self.rx.recv() => {
                    let Some(datagram) = received else { return };
                    self.schedule(datagram);
                    while let Ok(datagram) = self.rx.try_recv() {
                        self.schedule(datagram);
                    }
                }
                () = &mut sleep, if next.is_some() => {}
            }
        }
    }

    /// Decides a datagram's fate: dropped by loss, or queued with its departure time.
    fn schedule(&mut self, datagram: Datagram) {
        if self.shape_rx.has_changed().unwrap_or(false) {
            self.shape = self.shape_rx.borrow_and_update().clone();
            self.reseed();
        }
        let len = datagram.payload.len();
        if self.shape.loss > 0.0 && self.rng.random::<f64>() < self.shape.loss {
            self.counters.release(len);
            self.counters.dropped(len, DropCause::Loss);
            return;
        }
        let mut sent = datagram.arrival;
        if let Some(rate) = self.shape.rate_limit {
            let start = sent.max(self.link_free);
            let transmit = Duration::from_secs_f64(len as f64 / rate as f64);
            self.link_free = start + transmit;
            sent = self.link_free;
        }
        let mut one_way = self.shape.delay;
        if !self.shape.jitter.is_zero() {
            // At most one hour (checked by `Shape::validate`), so it fits in an i64.
            let span = i64::try_from(self.shape.jitter.as_nanos()).unwrap_or(i64::MAX);
            let offset = self.rng.random_range(-span..=span);
            let magnitude = Duration::from_nanos(offset.unsigned_abs());
            one_way = if offset >= 0 {
                one_way + magnitude
            } else {
                one_way.saturating_sub(magnitude)
            };
        }
        let mut departure = sent + one_way;
        if !self.shape.reorder {
            departure = departure.max(self.last_departure);
        }
        self.last_departure = self.last_departure.max(departure);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Pending {
            departure,
            seq,
            datagram,
        });
    }

    /// Sends (or, when the link is cut, drops) every datagram due by now.
    async fn send_due(&mut self) {
        let now = Instant::now();
        while self.heap.peek().is_some_and(|p| p.departure <= now) {
            let Some(Pending { datagram, .. }) = self.heap.pop() else {
                break;
            };
            let len = datagram.payload.len();
            self.counters.release(len);
            if self.cut.load(Ordering::Acquire) {
                self.counters.dropped(len, DropCause::Cut);
                continue;
            }
            let result = match (&datagram.route, &self.out) {
                (Route::Connected(socket), _) => match socket.send(&datagram.payload).await {
                    // A connected UDP socket reports an ICMP "port unreachable" caused by an
                    // earlier datagram on the next send, which then sends nothing: retry once.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        socket.send(&datagram.payload).await
                    }
                    result => result,
                },
                (Route::To(addr), Some(socket)) => socket.send_to(&datagram.payload, *addr).await,
                (Route::To(_), None) => Err(std::io::Error::other("no socket for this route")),
            };
            match result {
                Ok(_) => self.counters.forwarded(len),
                Err(error) => {
                    tracing::debug!(%error, bytes = len, "wanem: send failed");
                    self.counters.dropped(len, DropCause::Other);
                }
            }
        }
    }
}
