//! Many logged-in connections driven by one open-loop schedule.
//!
//! Each connection has a writer task (fed by a channel: chat messages, presence broadcasts,
//! answers) and a reader task (frames what arrives, records latency and sequence numbers), each
//! its own tokio task so that a wake-up of one never polls the other.
//! Reading never waits for writing, so a server that pushes while it reads cannot deadlock
//! against the harness.
//!
//! In a room (the `muc` scenario) the readers also follow the joins (the room's presences and its
//! answer to the owner's configuration), and every groupchat message comes back to every
//! occupant, its sender included.
//!
//! Payload format, in a message `<body>` or a presence `<status>`:
//! `LT {sender} {seq} {scheduled_ns} xxxx…`, where `scheduled_ns` is when the schedule wanted
//! the stanza sent (nanoseconds since the swarm's epoch), so latency includes any delay of the
//! harness itself (no coordinated omission).

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use memchr::memmem;
use rand::Rng as _;
use rand::SeedableRng as _;
use tern_xmpp_proto::element::escape;
use tern_xmpp_proto::{Element, Frame, ns};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::client::{
    Client, Conn, Io, READ_CHUNK, ack, answer_iq, attr, is_ack_request, is_stanza, stanza_condition,
};
use crate::monitor::Counters;
use crate::room::{Joins, RoomJid};
use crate::stats::{Arrival, Hist, Ledger, PairReceipt, Recorder, new_histogram};

/// How long `finish` waits for servers to close the streams before it stops reading.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// What a writer task is asked to send.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// A chat message to user `to`, scheduled at `at_ns`.
    Chat { to: u32, at_ns: u64 },
    /// A presence broadcast to the roster, scheduled at `at_ns`.
    Presence { at_ns: u64 },
    /// A groupchat message to the swarm's room, scheduled at `at_ns`.
    Groupchat { at_ns: u64 },
    /// Raw XML.
    Raw(Vec<u8>),
    /// Close the stream.
    Close,
}

/// What the open-loop schedule sends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Load<'a> {
    /// 1:1 chat messages from a random user to a random other user.
    Chat,
    /// Presence broadcasts of random users.
    Presence,
    /// Groupchat messages into the swarm's room, each from a random one of `senders`.
    Groupchat { senders: &'a [u32] },
}

/// The outcome of logging many accounts in.
#[derive(Debug)]
pub(crate) struct LoginBatch {
    /// The connections that logged in, in account order.
    pub(crate) conns: Vec<Conn>,
    pub(crate) failures: usize,
    pub(crate) first_error: Option<String>,
    /// One value per successful login, microseconds.
    pub(crate) latency: Hist,
}

impl LoginBatch {
    /// The connections, or the first error if any login failed.
    pub(crate) fn all(self) -> Result<Vec<Conn>> {
        if let Some(error) = self.first_error {
            bail!("{} logins failed; the first: {error}", self.failures);
        }
        Ok(self.conns)
    }
}

/// Logs `count` accounts in with at most `concurrency` logins in flight.
pub(crate) async fn login_all(
    client: &Arc<Client>,
    count: usize,
    concurrency: usize,
    (roster, presence): (bool, bool),
    on_progress: impl Fn(usize),
) -> LoginBatch {
    let mut set = for_each_account(
        client,
        count,
        concurrency,
        move |client, index| async move {
            let started = Instant::now();
            let conn = client.login(index, roster, presence).await;
            (index, conn.map(|c| (c, started.elapsed())))
        },
    );
    let mut conns: Vec<Option<Conn>> = (0..count).map(|_| None).collect();
    let mut batch = LoginBatch {
        conns: Vec::new(),
        failures: 0,
        first_error: None,
        latency: new_histogram(),
    };
    let mut done = 0;
    while let Some(joined) = set.join_next().await {
        done += 1;
        on_progress(done);
        match joined {
            Ok((index, Ok((conn, took)))) => {
                let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                batch.latency.saturating_record(micros.max(1));
                conns[index] = Some(conn);
            }
            Ok((_, Err(error))) => {
                batch.failures += 1;
                batch
                    .first_error
                    .get_or_insert_with(|| format!("{error:#}"));
            }
            Err(error) => {
                batch.failures += 1;
                batch.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    batch.conns = conns.into_iter().flatten().collect();
    batch
}

/// Runs `work` once per account `0..count`, at most `concurrency` at a time, each in its own
/// task; the caller collects the results from the set.
pub(crate) fn for_each_account<T, F, Fut>(
    client: &Arc<Client>,
    count: usize,
    concurrency: usize,
    work: F,
) -> JoinSet<T>
where
    T: Send + 'static,
    F: Fn(Arc<Client>, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for index in 0..count {
        let (gate, task) = (gate.clone(), work(client.clone(), index));
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            task.await
        });
    }
    set
}

/// Closes connections, many at a time.
pub(crate) async fn close_all(conns: Vec<Conn>) {
    let mut set = JoinSet::new();
    for conn in conns {
        set.spawn(conn.close());
    }
    while set.join_next().await.is_some() {}
}

/// What the connections of a swarm share.
#[derive(Debug)]
struct Shared {
    epoch: Instant,
    counters: Arc<Counters>,
    recorder: Arc<Recorder>,
    /// Presence stanzas of type `subscribed` received, all connections together.
    subscribed: std::sync::atomic::AtomicU64,
    /// The room every user joins, and how the joins are going (`muc` only).
    joins: Option<Joins>,
    /// The condition of the first stanza error that came back for a message.
    first_bounce: std::sync::OnceLock<String>,
    /// Print every stanza received (`TERN_LOADTEST_TRACE=1`), for debugging a server.
    trace: bool,
}

impl Shared {
    /// Nanoseconds since the swarm's epoch.
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What one connection's reader or writer task returns (each fills only its half).
#[derive(Debug, Default)]
struct Tally {
    /// receiver → messages sent to it (chat), or broadcasts sent (presence, groupchat: key
    /// `u32::MAX`).
    sent: HashMap<u32, u64>,
    /// sender → what arrived from it.
    received: HashMap<u32, PairReceipt>,
}

/// A set of logged-in users, each with a writer and a reader task.
#[derive(Debug)]
pub(crate) struct Swarm {
    writers: Vec<mpsc::UnboundedSender<Cmd>>,
    tasks: JoinSet<(u32, Tally)>,
    shared: Arc<Shared>,
    give_up: watch::Sender<bool>,
}

impl Swarm {
    /// Takes over logged-in connections (index = account number).
    pub(crate) fn new(
        client: &Arc<Client>,
        conns: Vec<Conn>,
        counters: Arc<Counters>,
        recorder: Arc<Recorder>,
        body_size: usize,
    ) -> Self {
        Self::build(client, conns, counters, recorder, body_size, None)
    }

    /// [`Swarm::new`] for users that will join `room` ([`Swarm::join`]) and send groupchat
    /// messages there.
    pub(crate) fn in_room(
        client: &Arc<Client>,
        conns: Vec<Conn>,
        counters: Arc<Counters>,
        recorder: Arc<Recorder>,
        body_size: usize,
        room: RoomJid,
    ) -> Self {
        let joins = Joins::new(room, conns.len());
        Self::build(client, conns, counters, recorder, body_size, Some(joins))
    }

    fn build(
        client: &Arc<Client>,
        conns: Vec<Conn>,
        counters: Arc<Counters>,
        recorder: Arc<Recorder>,
        body_size: usize,
        joins: Option<Joins>,
    ) -> Self {
        let room_xml = joins.as_ref().map(|j| j.room.xml().to_owned());
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            counters,
            recorder,
            subscribed: std::sync::atomic::AtomicU64::new(0),
            joins,
            first_bounce: std::sync::OnceLock::new(),
            trace: std::env::var_os("TERN_LOADTEST_TRACE").is_some(),
        });
        let mut writers = Vec::with_capacity(conns.len());
        let mut tasks = JoinSet::new();
        let give_up = watch::Sender::new(false);
        for (index, conn) in conns.into_iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let (tx, rx) = mpsc::unbounded_channel();
            let Conn { io, framer, .. } = conn;
            let (read, write) = tokio::io::split(io);
            let writer = Writer {
                index,
                write,
                rx,
                shared: shared.clone(),
                client: client.clone(),
                body_size,
                tally: Tally::default(),
                seq: HashMap::new(),
                broadcast_seq: 0,
                room_xml: room_xml.clone(),
            };
            let reader = Reader {
                index,
                read,
                framer,
                answers: tx.clone(),
                shared: shared.clone(),
                tally: Tally::default(),
                give_up: give_up.subscribe(),
                handled: 0,
            };
            // Two tasks, so that each wakes only for its own work.
            tasks.spawn(async move { (index, reader.run().await) });
            tasks.spawn(async move { (index, writer.run().await) });
            writers.push(tx);
        }
        Self {
            writers,
            tasks,
            shared,
            give_up,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.writers.len()
    }

    /// Nanoseconds since the swarm's epoch.
    fn now_ns(&self) -> u64 {
        self.shared.now_ns()
    }

    /// Presence `subscribed` stanzas received so far.
    pub(crate) fn subscribed(&self) -> u64 {
        self.shared.subscribed.load(Ordering::Relaxed)
    }

    /// Sends raw XML on connection `index`.
    pub(crate) fn send_raw(&self, index: usize, xml: String) {
        // A closed channel means the connection is gone; that is counted by its tasks.
        let _ = self.writers[index].send(Cmd::Raw(xml.into_bytes()));
    }

    /// The room and its joins (a swarm made by [`Swarm::in_room`]).
    pub(crate) fn joins(&self) -> Option<&Joins> {
        self.shared.joins.as_ref()
    }

    /// User `index` joins the room as `nick` (its own presence from the room, counted by
    /// [`Joins`], says it is in).
    pub(crate) fn join(&self, index: usize, nick: &str) {
        if let Some(joins) = &self.shared.joins {
            joins.sent(index, self.now_ns());
            self.send_raw(index, joins.room.join(nick));
        }
    }

    /// The condition of the first stanza error that came back for a message, if any did.
    pub(crate) fn first_bounce(&self) -> Option<&str> {
        self.shared.first_bounce.get().map(String::as_str)
    }

    /// Runs the open-loop schedule: `rate` stanzas per second for `duration`, each from a
    /// random user (to a random other user for chat, from a random sender for groupchat).
    /// Returns how many were scheduled.
    pub(crate) async fn run_schedule(&self, rate: f64, duration: Duration, load: Load<'_>) -> u64 {
        let users = self.writers.len();
        let enough = match load {
            Load::Chat => users >= 2,
            Load::Presence => users >= 1,
            Load::Groupchat { senders } => {
                !senders.is_empty() && senders.iter().all(|&s| (s as usize) < users)
            }
        };
        if !enough || rate <= 0.0 {
            return 0;
        }
        let total = (rate * duration.as_secs_f64()).round() as u64;
        let mut rng = rand::rngs::SmallRng::from_os_rng();
        let start = Instant::now();
        let start_ns = self.now_ns();
        let ns_per_msg = 1e9 / rate;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut scheduled = 0u64;
        while scheduled < total {
            tick.tick().await;
            let elapsed = start.elapsed().as_secs_f64();
            let due = ((elapsed * rate) as u64 + 1).min(total);
            if scheduled < due {
                let behind = elapsed - scheduled as f64 / rate;
                self.shared
                    .counters
                    .lag(Duration::from_secs_f64(behind.max(0.0)));
            }
            while scheduled < due {
                let at_ns = start_ns + (scheduled as f64 * ns_per_msg) as u64;
                let (from, cmd) = match load {
                    Load::Chat => {
                        let from = rng.random_range(0..users);
                        let mut to = rng.random_range(0..users - 1);
                        if to >= from {
                            to += 1;
                        }
                        let to = u32::try_from(to).unwrap_or(u32::MAX);
                        (from, Cmd::Chat { to, at_ns })
                    }
                    Load::Presence => (rng.random_range(0..users), Cmd::Presence { at_ns }),
                    Load::Groupchat { senders } => {
                        let from = senders[rng.random_range(0..senders.len())] as usize;
                        (from, Cmd::Groupchat { at_ns })
                    }
                };
                let _ = self.writers[from].send(cmd);
                scheduled += 1;
            }
        }
        scheduled
    }

    /// Waits until every sent stanza arrived `copies` times (chat: 1, presence: contacts),
    /// or `limit` passed. Returns whether everything arrived.
    pub(crate) async fn drain(&self, expected: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.shared.counters.received.load(Ordering::Relaxed) >= expected {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes every stream and gathers the sequence accounting. `contacts` maps a sender to
    /// the receivers of its broadcasts (presence: its contacts, groupchat: every occupant;
    /// empty for chat).
    pub(crate) async fn finish(mut self, contacts: impl Fn(u32) -> Vec<u32>) -> Ledger {
        for writer in &self.writers {
            let _ = writer.send(Cmd::Close);
        }
        drop(std::mem::take(&mut self.writers));
        let mut ledger = Ledger::default();
        let mut deadline = tokio::time::Instant::now() + CLOSE_GRACE;
        let mut given_up = false;
        loop {
            let joined = match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(joined)) => joined,
                Ok(None) => break,
                Err(_) if !given_up => {
                    // Readers still waiting for the server's `</stream:stream>` stop now and
                    // hand in their tallies.
                    self.give_up.send_replace(true);
                    given_up = true;
                    deadline = tokio::time::Instant::now() + CLOSE_GRACE;
                    continue;
                }
                Err(_) => {
                    // Writers stuck on a server that reads nothing: abandon them.
                    self.tasks.abort_all();
                    deadline = tokio::time::Instant::now() + CLOSE_GRACE;
                    continue;
                }
            };
            // A failed connection was counted by its task; an aborted task has no tally.
            let Ok((index, tally)) = joined else {
                continue;
            };
            for (to, count) in tally.sent {
                if to == u32::MAX {
                    for contact in contacts(index) {
                        ledger.sent.insert((index, contact), count);
                    }
                } else {
                    ledger.sent.insert((index, to), count);
                }
            }
            for (from, receipt) in tally.received {
                ledger.received.insert((from, index), receipt);
            }
        }
        ledger
    }
}

struct Writer {
    index: u32,
    write: WriteHalf<Io>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    shared: Arc<Shared>,
    client: Arc<Client>,
    body_size: usize,
    tally: Tally,
    /// Next sequence number per receiver (chat).
    seq: HashMap<u32, u64>,
    /// Next sequence number of this user's broadcasts (presence, or groupchat messages).
    broadcast_seq: u64,
    /// The room's JID escaped for an attribute (a swarm in a room).
    room_xml: Option<String>,
}

impl Writer {
    /// Returns what was sent (a failure is counted in the shared counters).
    async fn run(mut self) -> Tally {
        let mut out = Vec::with_capacity(4096);
        'outer: while let Some(cmd) = self.rx.recv().await {
            let mut close = false;
            let mut written = 0;
            let mut next = Some(cmd);
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Chat { to, at_ns } => {
                        self.chat(&mut out, to, at_ns);
                        written += 1;
                    }
                    Cmd::Presence { at_ns } => {
                        self.presence(&mut out, at_ns);
                        written += 1;
                    }
                    Cmd::Groupchat { at_ns } => {
                        if self.groupchat(&mut out, at_ns) {
                            written += 1;
                        }
                    }
                    Cmd::Raw(xml) => out.extend_from_slice(&xml),
                    Cmd::Close => close = true,
                }
                if close || out.len() > 64 * 1024 {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            if close {
                out.extend_from_slice(b"</stream:stream>");
            }
            if !out.is_empty() {
                if self.write.write_all(&out).await.is_err() || self.write.flush().await.is_err() {
                    self.shared
                        .counters
                        .dropped_connections
                        .fetch_add(1, Ordering::Relaxed);
                    break 'outer;
                }
                out.clear();
                self.shared
                    .counters
                    .sent
                    .fetch_add(written, Ordering::Relaxed);
            }
            if close {
                let _ = self.write.shutdown().await;
                break;
            }
        }
        self.tally
    }

    fn payload(&self, out: &mut Vec<u8>, seq: u64, at_ns: u64) {
        let start = out.len();
        let _ = write!(out, "LT {} {seq} {at_ns} ", self.index);
        let pad = self.body_size.saturating_sub(out.len() - start);
        out.resize(out.len() + pad, b'x');
    }

    fn chat(&mut self, out: &mut Vec<u8>, to: u32, at_ns: u64) {
        let seq = self.seq.entry(to).or_insert(0);
        let this = *seq;
        *seq += 1;
        *self.tally.sent.entry(to).or_insert(0) += 1;
        out.extend_from_slice(b"<message to='");
        self.client.write_bare_jid(out, to as usize);
        let _ = write!(out, "' type='chat' id='m{}-{this}'><body>", self.index);
        self.payload(out, this, at_ns);
        out.extend_from_slice(b"</body></message>");
    }

    /// Writes a groupchat message to the room; `false` in a swarm without a room.
    fn groupchat(&mut self, out: &mut Vec<u8>, at_ns: u64) -> bool {
        let Some(room) = &self.room_xml else {
            return false;
        };
        let this = self.broadcast_seq;
        self.broadcast_seq += 1;
        *self.tally.sent.entry(u32::MAX).or_insert(0) += 1;
        let _ = write!(
            out,
            "<message to='{room}' type='groupchat' id='g{}-{this}'><body>",
            self.index
        );
        self.payload(out, this, at_ns);
        out.extend_from_slice(b"</body></message>");
        true
    }

    fn presence(&mut self, out: &mut Vec<u8>, at_ns: u64) {
        let this = self.broadcast_seq;
        self.broadcast_seq += 1;
        *self.tally.sent.entry(u32::MAX).or_insert(0) += 1;
        let show = if this.is_multiple_of(2) {
            "away"
        } else {
            "chat"
        };
        let _ = write!(out, "<presence><show>{show}</show><status>");
        self.payload(out, this, at_ns);
        out.extend_from_slice(b"</status></presence>");
    }
}

struct Reader {
    index: u32,
    read: ReadHalf<Io>,
    framer: tern_xmpp_proto::Framer,
    answers: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    tally: Tally,
    /// Becomes `true` when the swarm stops waiting for the server to close streams.
    give_up: watch::Receiver<bool>,
    /// Stanzas handled (XEP-0198's `h`, when stream management is on).
    handled: u32,
}

impl Reader {
    /// Reads until the stream ends; returns what arrived (a failure is counted in the shared
    /// counters).
    async fn run(mut self) -> Tally {
        let mut buf = vec![0u8; READ_CHUNK];
        let healthy = loop {
            match self.frames() {
                Ok(true) => {}
                Ok(false) => break true,
                Err(_) => break false,
            }
            tokio::select! {
                read = self.read.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break self.answers.is_closed(),
                    Ok(n) => self.framer.push(&buf[..n]),
                },
                // The swarm is finishing and the server did not close this stream in time:
                // what arrived so far is the tally.
                _ = self.give_up.wait_for(|&stop| stop) => break true,
            }
        };
        if !healthy {
            self.shared
                .counters
                .dropped_connections
                .fetch_add(1, Ordering::Relaxed);
        }
        // Let the writer finish: it ends on `Close` or on a failed write.
        drop(self.answers);
        self.tally
    }

    /// Handles every complete frame; `Ok(false)` when the server closed the stream.
    fn frames(&mut self) -> Result<bool> {
        while let Some(frame) = self.framer.next_frame()? {
            match frame {
                Frame::Element(stanza) => self.stanza(&stanza),
                Frame::Close => return Ok(false),
                Frame::Header(_) => bail!("unexpected stream header"),
            }
        }
        Ok(true)
    }

    fn stanza(&mut self, stanza: &[u8]) {
        if self.shared.trace {
            eprintln!("<< {}: {}", self.index, String::from_utf8_lossy(stanza));
        }
        if is_stanza(stanza) {
            self.handled = self.handled.wrapping_add(1);
        } else if is_ack_request(stanza) {
            let _ = self.answers.send(Cmd::Raw(ack(self.handled).into_bytes()));
            return;
        }
        let head_end = memchr::memchr(b'>', stanza).unwrap_or(stanza.len());
        let head = &stanza[..head_end];
        let is_error = memmem::find(head, b"type='error'").is_some()
            || memmem::find(head, b"type=\"error\"").is_some();
        if stanza.starts_with(b"<message") {
            if is_error {
                self.shared.counters.bounced.fetch_add(1, Ordering::Relaxed);
                if self.shared.first_bounce.get().is_none() {
                    let condition = Element::parse(stanza, ns::CLIENT).map_or_else(
                        |_| "(unparsable error)".to_owned(),
                        |e| stanza_condition(&e),
                    );
                    let _ = self.shared.first_bounce.set(condition);
                }
            } else {
                // Every groupchat message comes back to its sender too: a delivery like any.
                self.payload(stanza, b"<body>LT ", true);
            }
        } else if stanza.starts_with(b"<presence") {
            if let Some(joins) = &self.shared.joins
                && joins.presence(self.index, stanza, self.shared.now_ns())
            {
                // The room's presences: joins, refusals, other occupants.
            } else if is_error {
                self.shared.counters.bounced.fetch_add(1, Ordering::Relaxed);
            } else if let Some(from) = presence_type(head, b"subscribe") {
                // Approve every subscription request (the presence scenario's setup).
                let _ = self.answers.send(Cmd::Raw(
                    format!("<presence to='{}' type='subscribed'/>", escape(&from)).into_bytes(),
                ));
            } else if presence_type(head, b"subscribed").is_some() {
                self.shared.subscribed.fetch_add(1, Ordering::Relaxed);
            } else {
                // A server may echo a user's presence to the user: not a delivery to a contact.
                self.payload(stanza, b"<status>LT ", false);
            }
        } else if let Some(joins) = &self.shared.joins
            && joins.iq(stanza)
        {
            // The room's answer to the owner's configuration.
        } else if let Some(answer) = answer_iq(stanza) {
            let _ = self.answers.send(Cmd::Raw(answer.into_bytes()));
        }
    }

    /// Accounts for a harness payload after `marker`, if there is one; one of this user's own
    /// payloads counts only with `own`.
    fn payload(&mut self, stanza: &[u8], marker: &[u8], own: bool) {
        let Some(at) = memmem::find(stanza, marker) else {
            return;
        };
        let mut fields = stanza[at + marker.len()..].split(|&b| b == b' ').map(|f| {
            std::str::from_utf8(f)
                .ok()
                .and_then(|f| f.parse::<u64>().ok())
        });
        let (Some(Some(sender)), Some(Some(seq)), Some(Some(at_ns))) =
            (fields.next(), fields.next(), fields.next())
        else {
            return;
        };
        let now_ns = self.shared.now_ns();
        let sender = u32::try_from(sender).unwrap_or(u32::MAX);
        if sender == self.index && !own {
            return;
        }
        let counters = &self.shared.counters;
        match self.tally.received.entry(sender).or_default().arrive(seq) {
            Arrival::Duplicate => {
                counters.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Arrival::Late => {
                counters.reordered.fetch_add(1, Ordering::Relaxed);
            }
            Arrival::InOrder | Arrival::Ahead => {}
        }
        counters.received.fetch_add(1, Ordering::Relaxed);
        self.shared
            .recorder
            .record(self.index as usize, now_ns.saturating_sub(at_ns) / 1000);
    }
}

/// The `from` of a presence start tag whose `type` is `kind`.
fn presence_type(head: &[u8], kind: &[u8]) -> Option<String> {
    if attr(head, "type")?.as_bytes() != kind {
        return None;
    }
    attr(head, "from").map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_type_reads_either_quote() {
        assert_eq!(
            presence_type(b"<presence from='a@b/c' type='subscribe'", b"subscribe"),
            Some("a@b/c".to_owned())
        );
        assert_eq!(
            presence_type(b"<presence type=\"subscribed\" from=\"x@y\"", b"subscribed"),
            Some("x@y".to_owned())
        );
        assert_eq!(
            presence_type(b"<presence from='a@b' type='subscribed'", b"subscribe"),
            None
        );
        assert_eq!(presence_type(b"<presence from='a@b'", b"subscribe"), None);
    }
}
