//! BOSH (XEP-0124, XEP-0206): one client stream carried by a series of HTTP POSTs, each a
//! `<body/>` wrapper holding zero or more elements.
//!
//! A session is created by a request without `sid`; the answer names the session (`sid`) and
//! what was negotiated: `wait` (how long a request may be held, the client's wish up to
//! `[http.bosh] max_wait`), `hold` (how many requests are held at once, up to `max_hold`),
//! `requests` (`hold + 1`, at least 2, at most `max_requests`), `inactivity`, `polling` and
//! `maxpause`, with `authid` (the stream id) and the first stream features. Every later request
//! carries `sid` and the next `rid`:
//!
//! - Requests are processed in `rid` order: one that comes early (within the window of
//!   `requests`) waits for the ones before it. The elements it carries go to the stream, one
//!   frame each, in that order; `xmpp:restart='true'` restarts the stream (XEP-0206) and
//!   `type='terminate'` ends it after its payload.
//! - A processed request is held until there is something to send (the oldest held request
//!   gets everything queued), `wait` runs out (empty `<body/>`), or a newer request would make
//!   more than `hold` wait (the oldest is answered at once, empty).
//! - The last `requests` answers are kept: a request sent again with the same `rid` (its answer
//!   was lost with its HTTP connection) gets the same answer again, so nothing the server sent
//!   is lost when a long poll's connection breaks. A request repeated while it is still held
//!   takes the place of the first.
//! - `ack` (§9): when the client asked for acknowledgements at creation, an answer to a request
//!   older than the newest one processed carries `ack` = that newest `rid`.
//! - `pause` (at most `maxpause`) answers every held request and stretches the inactivity
//!   limit once.
//!
//! Errors are terminal binding conditions (`<body type='terminate' condition='…'/>`, HTTP 200)
//! and end the session: an unknown `sid` (`item-not-found`), a `rid` out of the window
//! (`item-not-found`), a malformed `<body/>` or one not in the httpbind namespace
//! (`bad-request`), more requests open at once than `requests`, empty requests faster than
//! `polling`, or a `pause` beyond `maxpause` (`policy-violation`). A stream error ends the
//! session with `remote-stream-error` (`host-unknown` and `system-shutdown` keep their own
//! conditions) and the `<stream:error/>` in the body. A body larger than
//! `[http] max_message_size` gets HTTP 413 with `bad-request`; a disallowed `Origin` gets 403.
//! A new session needs a free slot: a full node answers `remote-connection-failed`, an IP at
//! `[http] max_sessions_per_ip` answers `policy-violation`.
//!
//! A session without any request for `inactivity` (or the pause asked for) counts as a lost
//! connection: with stream management (XEP-0198) the session waits for its client to resume,
//! over any transport, as with TCP. The stream itself is the framed stream of
//! [`crate::http::ws`], run by the same [`Connection`] task.
//!
//! A session belongs to the listener that created it (its `sid` is unknown to the others).
//!
//! The session's rules are a plain state machine ([`Core`], time passed in); the shell moves
//! requests and frames between it, axum and the connection task.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tern_xmpp_proto::element::escape;
use tern_xmpp_proto::stream::ServerStream;
use tern_xmpp_proto::{Element, StartTag, ns};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::{HttpState, Peer, Refused, SessionSlot, cors, forbidden_origin, origin_allowed};
use crate::c2s::{Connection, Wire};
use crate::metrics::Transport;

/// The namespace of `<body/>`.
const NS: &str = "http://jabber.org/protocol/httpbind";
/// The XEP-0206 namespace (`xmpp:version`, `xmpp:restart`).
const XBOSH: &str = "urn:xmpp:xbosh";
/// The protocol version spoken (XEP-0124 1.11).
const VERSION: &str = "1.11";
/// Largest `rid` allowed (XEP-0124 §14.1: 2^53 - 1).
const MAX_RID: u64 = (1 << 53) - 1;
/// Most bytes queued for a client that sends no request: beyond, the client counts as gone.
const OUT_LIMIT: usize = 4 * 1024 * 1024;
/// How long after its `wait` a request's HTTP handler gives up on the connection task.
const GRACE: Duration = Duration::from_secs(5);
const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// A terminal binding condition (XEP-0124 §17.2, XEP-0206).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    BadRequest,
    HostUnknown,
    ItemNotFound,
    PolicyViolation,
    RemoteConnectionFailed,
    RemoteStreamError,
    SystemShutdown,
    Undefined,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::HostUnknown => "host-unknown",
            Self::ItemNotFound => "item-not-found",
            Self::PolicyViolation => "policy-violation",
            Self::RemoteConnectionFailed => "remote-connection-failed",
            Self::RemoteStreamError => "remote-stream-error",
            Self::SystemShutdown => "system-shutdown",
            Self::Undefined => "undefined-condition",
        }
    }
}

/// A `<body type='terminate'/>` outside any session (or for one that is over).
fn terminate_body(condition: Option<Condition>) -> Bytes {
    let mut body = format!("<body xmlns='{NS}' type='terminate'");
    if let Some(c) = condition {
        body.push_str(&format!(" condition='{}'", c.as_str()));
    }
    body.push_str("/>");
    Bytes::from(body)
}

/// What one session negotiated.
#[derive(Debug, Clone, Copy)]
struct Limits {
    wait: Duration,
    hold: usize,
    requests: u64,
    inactivity: Duration,
    polling: Duration,
    max_pause: Duration,
}

impl Limits {
    /// The client's wishes within the configured bounds.
    fn negotiate(config: &tern_config::Bosh, wait: Option<u64>, hold: Option<u64>) -> Self {
        let wait = wait.map_or(config.max_wait, |w| {
            Duration::from_secs(w.max(1)).min(config.max_wait)
        });
        let max_hold = usize::try_from(config.max_hold).unwrap_or(1);
        let hold = hold
            .map_or(1, |h| usize::try_from(h).unwrap_or(usize::MAX))
            .min(max_hold);
        let requests = (hold as u64 + 1).max(2).min(u64::from(config.max_requests));
        Self {
            wait,
            hold,
            requests,
            inactivity: config.inactivity,
            polling: config.polling,
            max_pause: config.max_pause,
        }
    }
}

/// One request, read from its `<body/>`.
#[derive(Debug, Default)]
struct Request {
    rid: u64,
    /// The child elements, each one frame for the stream.
    payload: Vec<Bytes>,
    restart: bool,
    terminate: bool,
    pause: Option<Duration>,
}

/// What the session creation request asked for.
#[derive(Debug)]
struct Creation {
    rid: u64,
    to: Option<String>,
    /// `xmpp:version`.
    version: String,
    /// Whether the client asked for acknowledgements.
    ack: bool,
}

/// Where an answer goes: the HTTP handler waiting for it (gone when its connection broke).
type Reply = oneshot::Sender<Bytes>;

/// A processed request waiting for something to send.
#[derive(Debug)]
struct Held {
    rid: u64,
    deadline: Instant,
    reply: Option<Reply>,
    /// The session creation request: answered with the session's attributes, and only once
    /// the stream's features are there.
    creation: bool,
}

/// A request that came before the ones it follows.
#[derive(Debug)]
struct Early {
    request: Request,
    reply: Reply,
}

/// How a request is answered.
#[derive(Debug)]
enum Answer {
    /// At once.
    Now(Bytes),
    /// Once the session has something for it.
    Later(oneshot::Receiver<Bytes>),
}

/// How the session is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Running,
    /// The server ended it for a binding error: the stream is told the client is gone.
    Killed(Condition),
    /// The stream closed; `delivered` once an answer carried `type='terminate'`.
    Closed {
        condition: Option<Condition>,
        delivered: bool,
    },
}

/// One session's rules, apart from any I/O.
#[derive(Debug)]
struct Core {
    sid: String,
    limits: Limits,
    /// Whether the client asked for acknowledgements (§9).
    ack: bool,
    to: Option<String>,
    version: String,
    /// The stream id and the domain, from the stream's `<open/>`.
    authid: Option<String>,
    from: Option<String>,
    /// The `rid` of the next request to process.
    next_rid: u64,
    early: BTreeMap<u64, Early>,
    held: VecDeque<Held>,
    /// The last answers, for requests sent again.
    answered: VecDeque<(u64, Bytes)>,
    /// Frames for the client, waiting for a request.
    out: VecDeque<Bytes>,
    out_bytes: usize,
    /// Frames for the stream, in order.
    inbound: VecDeque<Bytes>,
    /// Since when no request is held.
    idle_since: Option<Instant>,
    /// A pause asked for, in place of `inactivity` until the next request.
    pause: Option<Duration>,
    last_request: Instant,
    /// The condition a stream error asked for (the `<close/>` follows it).
    stream_error: Option<Condition>,
    ending: Ending,
    /// Whether the connection task is over.
    gone: bool,
    /// The connection task, waiting for input.
    waker: Option<Waker>,
}

impl Core {
    /// A session created by `creation` at `now`; `reply` gets the creation answer.
    fn new(sid: String, limits: Limits, creation: Creation, reply: Reply, now: Instant) -> Self {
        let Creation {
            rid,
            to,
            version,
            ack,
        } = creation;
        let mut core = Self {
            sid,
            limits,
            ack,
            to,
            version,
            authid: None,
            from: None,
            next_rid: rid + 1,
            early: BTreeMap::new(),
            held: VecDeque::new(),
            answered: VecDeque::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            inbound: VecDeque::new(),
            idle_since: None,
            pause: None,
            last_request: now,
            stream_error: None,
            ending: Ending::Running,
            gone: false,
            waker: None,
        };
        core.inbound.push_back(core.open_frame());
        core.held.push_back(Held {
            rid,
            deadline: now + limits.wait,
            reply: Some(reply),
            creation: true,
        });
        core
    }

    /// The `<open/>` that starts (or restarts) the stream.
    fn open_frame(&self) -> Bytes {
        let mut open = format!(
            "<open xmlns='{}' version='{}'",
            ns::FRAMING,
            escape(&self.version)
        );
        if let Some(to) = &self.to {
            open.push_str(&format!(" to='{}'", escape(to)));
        }
        open.push_str("/>");
        Bytes::from(open)
    }

    /// A request of this session arrived at `now`.
    fn request(&mut self, request: Request, now: Instant) -> Answer {
        let rid = request.rid;
        if let Some((_, body)) = self.answered.iter().find(|(r, _)| *r == rid) {
            return Answer::Now(body.clone());
        }
        match self.ending {
            Ending::Running => {}
            Ending::Killed(condition) => return Answer::Now(terminate_body(Some(condition))),
            Ending::Closed {
                delivered: true, ..
            } => return Answer::Now(terminate_body(None)),
            Ending::Closed {
                condition,
                delivered: false,
            } => {
                // The stream ended while no request was held: this one carries the end.
                let frames: Vec<Bytes> = self.out.drain(..).collect();
                self.out_bytes = 0;
                let body = self.body(rid, false, &frames, Some(condition));
                self.ending = Ending::Closed {
                    condition,
                    delivered: true,
                };
                self.remember(rid, body.clone());
                return Answer::Now(body);
            }
        }
        if self.gone {
            return Answer::Now(terminate_body(Some(Condition::ItemNotFound)));
        }
        // The same request again, while the first still waits: this one takes its place.
        if let Some(held) = self.held.iter_mut().find(|h| h.rid == rid) {
            let (tx, rx) = oneshot::channel();
            held.reply = Some(tx);
            return Answer::Later(rx);
        }
        if let Some(early) = self.early.get_mut(&rid) {
            let (tx, rx) = oneshot::channel();
            early.reply = tx;
            return Answer::Later(rx);
        }
        if rid < self.next_rid || rid >= self.next_rid + self.limits.requests {
            tracing::debug!(
                rid,
                expected = self.next_rid,
                "bosh request out of the window"
            );
            return Answer::Now(self.kill(Condition::ItemNotFound));
        }
        let open = self.held.len() + self.early.len() + 1;
        if open as u64 > self.limits.requests {
            tracing::debug!(open, "bosh client over its requests");
            return Answer::Now(self.kill(Condition::PolicyViolation));
        }
        if let Some(pause) = request.pause
            && pause > self.limits.max_pause
        {
            return Answer::Now(self.kill(Condition::PolicyViolation));
        }
        let empty = request.payload.is_empty()
            && !request.restart
            && !request.terminate
            && request.pause.is_none();
        if empty
            && rid == self.next_rid
            && self.held.len() >= self.limits.hold
            && now.saturating_duration_since(self.last_request) < self.limits.polling
        {
            tracing::debug!("bosh client polls too fast");
            return Answer::Now(self.kill(Condition::PolicyViolation));
        }
        self.last_request = now;
        self.idle_since = None;
        self.pause = None;
        let (tx, rx) = oneshot::channel();
        self.early.insert(rid, Early { request, reply: tx });
        self.advance(now);
        Answer::Later(rx)
    }

    /// Processes the requests whose turn has come, then answers what can be answered.
    fn advance(&mut self, now: Instant) {
        let mut pause = None;
        while let Some(Early { request, reply }) = self.early.remove(&self.next_rid) {
            self.next_rid += 1;
            if request.restart {
                let open = self.open_frame();
                self.inbound.push_back(open);
            }
            self.inbound.extend(request.payload);
            if request.terminate {
                self.inbound
                    .push_back(Bytes::from(format!("<close xmlns='{}'/>", ns::FRAMING)));
            }
            if request.pause.is_some() {
                pause = request.pause;
            }
            self.held.push_back(Held {
                rid: request.rid,
                deadline: now + self.limits.wait,
                reply: Some(reply),
                creation: false,
            });
        }
        self.deliver();
        if let Some(pause) = pause {
            // Everything held is answered; the client comes back within the pause.
            while let Some(held) = self.held.pop_front() {
                let body = self.body(held.rid, held.creation, &[], None);
                self.answer(held, body);
            }
            self.pause = Some(pause);
        }
        while self.held.len() > self.limits.hold {
            if self.held.front().is_some_and(|h| h.creation) {
                break;
            }
            if let Some(held) = self.held.pop_front() {
                let body = self.body(held.rid, false, &[], None);
                self.answer(held, body);
            }
        }
        self.note_idle(now);
        self.wake();
    }

    /// Answers the oldest held request with everything queued, and every held one when the
    /// stream is over.
    fn deliver(&mut self) {
        let closing = match self.ending {
            Ending::Closed {
                condition,
                delivered: false,
            } => Some(condition),
            _ => None,
        };
        if self.out.is_empty() && closing.is_none() {
            return;
        }
        let Some(held) = self.held.pop_front() else {
            return;
        };
        let frames: Vec<Bytes> = self.out.drain(..).collect();
        self.out_bytes = 0;
        let body = self.body(held.rid, held.creation, &frames, closing);
        self.answer(held, body);
        if let Some(condition) = closing {
            self.ending = Ending::Closed {
                condition,
                delivered: true,
            };
            while let Some(held) = self.held.pop_front() {
                let body = self.body(held.rid, false, &[], Some(condition));
                self.answer(held, body);
            }
        }
    }

    /// Sends `body` to a held request's handler and keeps it for a repeated request.
    fn answer(&mut self, held: Held, body: Bytes) {
        self.remember(held.rid, body.clone());
        if let Some(reply) = held.reply {
            let _ = reply.send(body);
        }
    }

    fn remember(&mut self, rid: u64, body: Bytes) {
        self.answered.push_back((rid, body));
        while self.answered.len() as u64 > self.limits.requests + 1 {
            self.answered.pop_front();
        }
    }

    /// The answer to request `rid`: `frames` for the client, the session's attributes on the
    /// creation answer, `type='terminate'` when `end` is set.
    fn body(
        &self,
        rid: u64,
        creation: bool,
        frames: &[Bytes],
        end: Option<Option<Condition>>,
    ) -> Bytes {
        let mut head = format!("<body xmlns='{NS}'");
        if creation {
            let l = &self.limits;
            head.push_str(&format!(
                " xmlns:xmpp='{XBOSH}' xmlns:stream='{}' sid='{}' wait='{}' hold='{}' requests='{}' \
                 inactivity='{}' polling='{}' maxpause='{}' ver='{VERSION}' \
                 xmpp:version='1.0' xmpp:restartlogic='true'",
                ns::STREAMS,
                self.sid,
                l.wait.as_secs(),
                l.hold,
                l.requests,
                l.inactivity.as_secs(),
                l.polling.as_secs(),
                l.max_pause.as_secs(),
            ));
            if let Some(from) = &self.from {
                head.push_str(&format!(" from='{}'", escape(from)));
            }
            if let Some(authid) = &self.authid {
                head.push_str(&format!(" authid='{}'", escape(authid)));
            }
            if self.ack {
                head.push_str(&format!(" ack='{rid}'"));
            }
        } else if self.ack && rid + 1 < self.next_rid {
            // An answer to an older request: say which is the newest one processed.
            head.push_str(&format!(" ack='{}'", self.next_rid - 1));
        }
        if let Some(condition) = end {
            head.push_str(" type='terminate'");
            if let Some(c) = condition {
                head.push_str(&format!(" condition='{}'", c.as_str()));
            }
        }
        if frames.is_empty() {
            head.push_str("/>");
            return Bytes::from(head);
        }
        head.push('>');
        let mut body = head.into_bytes();
        for frame in frames {
            body.extend_from_slice(frame);
        }
        body.extend_from_slice(b"</body>");
        Bytes::from(body)
    }

    /// Ends the session for a binding error: every waiting request gets `condition`.
    fn kill(&mut self, condition: Condition) -> Bytes {
        let body = terminate_body(Some(condition));
        self.ending = Ending::Killed(condition);
        for held in std::mem::take(&mut self.held) {
            if let Some(reply) = held.reply {
                let _ = reply.send(body.clone());
            }
        }
        for (_, early) in std::mem::take(&mut self.early) {
            let _ = early.reply.send(body.clone());
        }
        self.inbound.clear();
        self.out.clear();
        self.out_bytes = 0;
        self.wake();
        body
    }

    /// A frame the stream wrote.
    fn frame_out(&mut self, frame: Bytes) {
        if frame.starts_with(b"<open") {
            if let Ok(tag) = StartTag::parse(&frame) {
                self.authid = tag.attr("id").map(str::to_owned);
                self.from = tag.attr("from").map(str::to_owned);
            }
            return;
        }
        if frame.starts_with(b"<close") {
            if self.ending == Ending::Running {
                self.ending = Ending::Closed {
                    condition: self.stream_error,
                    delivered: false,
                };
            }
            return;
        }
        if frame.starts_with(b"<stream:error") {
            self.stream_error = Some(stream_error_condition(&frame));
        }
        self.out_bytes += frame.len();
        self.out.push_back(frame);
    }

    /// Answers the held requests whose `wait` ran out.
    fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].deadline <= now
                && let Some(held) = self.held.remove(i)
            {
                let body = self.body(held.rid, held.creation, &[], None);
                self.answer(held, body);
            } else {
                i += 1;
            }
        }
        self.note_idle(now);
    }

    /// A handler gave up waiting for request `rid`: it is answered empty, unless it was
    /// answered meanwhile.
    fn give_up(&mut self, rid: u64, now: Instant) -> Option<Bytes> {
        let i = self.held.iter().position(|h| h.rid == rid)?;
        let held = self.held.remove(i)?;
        let body = self.body(held.rid, held.creation, &[], None);
        self.answer(held, body.clone());
        self.note_idle(now);
        Some(body)
    }

    fn note_idle(&mut self, now: Instant) {
        if self.held.is_empty() {
            self.idle_since.get_or_insert(now);
        }
    }

    /// Whether the client has been away longer than it may.
    fn inactive(&self, now: Instant) -> bool {
        self.inactivity_deadline().is_some_and(|d| d <= now)
    }

    fn inactivity_deadline(&self) -> Option<Instant> {
        if !self.held.is_empty() {
            return None;
        }
        self.idle_since
            .map(|since| since + self.pause.unwrap_or(self.limits.inactivity))
    }

    /// When the connection task must look again.
    fn next_deadline(&self) -> Option<Instant> {
        self.held
            .iter()
            .map(|h| h.deadline)
            .chain(self.inactivity_deadline())
            .min()
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Whether the session may leave the registry: its task is over and its end was told.
    fn finished(&self) -> bool {
        self.gone
            && !matches!(
                self.ending,
                Ending::Closed {
                    delivered: false,
                    ..
                }
            )
    }
}

/// The binding condition for a `<stream:error/>` frame.
fn stream_error_condition(frame: &[u8]) -> Condition {
    let name = Element::parse(frame, ns::CLIENT).ok().and_then(|e| {
        e.children()
            .find(|c| c.ns() == ns::STREAM_ERRORS && c.name() != "text")
            .map(|c| c.name().to_owned())
    });
    match name.as_deref() {
        Some("host-unknown") => Condition::HostUnknown,
        Some("system-shutdown") => Condition::SystemShutdown,
        _ => Condition::RemoteStreamError,
    }
}

/// One session, shared by its HTTP requests and its connection task.
#[derive(Debug)]
pub(crate) struct Session {
    sid: String,
    core: Mutex<Core>,
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The BOSH sessions of one listener, by `sid`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sessions(Arc<Mutex<HashMap<String, Arc<Session>>>>);

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.map().get(sid).cloned()
    }

    fn insert(&self, session: Arc<Session>) {
        self.map().insert(session.sid.clone(), session);
    }

    fn remove(&self, sid: &str) {
        self.map().remove(sid);
    }
}

/// `OPTIONS` on the BOSH path: the CORS preflight of a page from another origin.
pub(crate) async fn preflight(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if !origin_allowed(&state.node, &headers) {
        return forbidden_origin();
    }
    let mut response = StatusCode::OK.into_response();
    cors(&state.node, &headers, response.headers_mut());
    response
}

/// `POST` on the BOSH path: one request of a session (or the one that creates it).
pub(crate) async fn request(
    State(state): State<Arc<HttpState>>,
    axum::extract::ConnectInfo(super::PeerAddr(peer)): Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !origin_allowed(&state.node, &headers) {
        return forbidden_origin();
    }
    let max = state.node.config.http.max_message_size;
    let (status, answer) = match axum::body::to_bytes(body, max).await {
        Ok(bytes) => (StatusCode::OK, handle(&state, peer, &bytes).await),
        Err(_) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            terminate_body(Some(Condition::BadRequest)),
        ),
    };
    let mut response = (status, answer).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    cors(&state.node, &headers, response.headers_mut());
    response
}

/// The answer to one request body.
async fn handle(state: &Arc<HttpState>, peer: SocketAddr, bytes: &[u8]) -> Bytes {
    let Ok(body) = parse_body(bytes) else {
        return terminate_body(Some(Condition::BadRequest));
    };
    let Some(sid) = body.attr("sid") else {
        return create(state, peer, &body).await;
    };
    let Some(session) = state.bosh.get(sid) else {
        return terminate_body(Some(Condition::ItemNotFound));
    };
    let now = tokio::time::Instant::now().into_std();
    let (answer, wait) = {
        let mut core = session.lock();
        let answer = match read_request(&body) {
            Some(request) => core.request(request, now),
            None => Answer::Now(core.kill(Condition::BadRequest)),
        };
        (answer, core.limits.wait)
    };
    let rid = body.attr("rid").and_then(|r| r.parse().ok()).unwrap_or(0);
    let answer = match answer {
        Answer::Now(body) => body,
        Answer::Later(rx) => wait_for(&session, rid, rx, wait).await,
    };
    if session.lock().finished() {
        state.bosh.remove(&session.sid);
    }
    answer
}

/// Waits for the answer to request `rid`.
async fn wait_for(
    session: &Session,
    rid: u64,
    mut rx: oneshot::Receiver<Bytes>,
    wait: Duration,
) -> Bytes {
    match tokio::time::timeout(wait + GRACE, &mut rx).await {
        Ok(Ok(body)) => body,
        // Sent again meanwhile: the newer request gets the answer.
        Ok(Err(_)) => empty_body(),
        Err(_) => {
            // The connection task did not answer in time (it is busy or gone).
            let now = tokio::time::Instant::now().into_std();
            let given_up = session.lock().give_up(rid, now);
            match given_up {
                Some(body) => body,
                None => rx.try_recv().unwrap_or_else(|_| empty_body()),
            }
        }
    }
}

/// An empty answer.
fn empty_body() -> Bytes {
    Bytes::from(format!("<body xmlns='{NS}'/>"))
}

/// Parses a request body: one `<body/>` in the httpbind namespace.
fn parse_body(bytes: &[u8]) -> Result<Element, ()> {
    let mut bytes = bytes.trim_ascii();
    // An XML declaration may come first.
    if bytes.starts_with(b"<?xml") {
        let end = memchr_end(bytes).ok_or(())?;
        bytes = bytes[end..].trim_ascii_start();
    }
    let body = Element::parse(bytes, NS).map_err(|_| ())?;
    if body.is("body", NS) {
        Ok(body)
    } else {
        Err(())
    }
}

/// The end of an XML declaration.
fn memchr_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"?>").map(|i| i + 2)
}

/// Reads a session's request; `None` when it is malformed.
fn read_request(body: &Element) -> Option<Request> {
    let rid = read_rid(body)?;
    let pause = match body.attr("pause") {
        None => None,
        Some(p) => Some(Duration::from_secs(p.trim().parse().ok()?)),
    };
    Some(Request {
        rid,
        payload: payload(body),
        restart: body.attr("xmpp:restart") == Some("true"),
        terminate: body.attr("type") == Some("terminate"),
        pause,
    })
}

fn read_rid(body: &Element) -> Option<u64> {
    body.attr("rid")
        .and_then(|r| r.trim().parse::<u64>().ok())
        .filter(|r| *r <= MAX_RID)
}

/// The child elements of a `<body/>`, each serialised as one frame. Children that declare no
/// namespace are written without one, so the stream reads them as `jabber:client`.
fn payload(body: &Element) -> Vec<Bytes> {
    body.children()
        .map(|child| {
            let mut frame = String::new();
            child.write_to(&mut frame, NS);
            Bytes::from(frame)
        })
        .collect()
}

/// Creates a session: starts its stream and answers once the first features are there.
async fn create(state: &Arc<HttpState>, peer: SocketAddr, body: &Element) -> Bytes {
    let Some(rid) = read_rid(body) else {
        return terminate_body(Some(Condition::BadRequest));
    };
    let secs = |name: &str| -> Result<Option<u64>, ()> {
        body.attr(name)
            .map(|v| v.trim().parse::<u64>().map_err(|_| ()))
            .transpose()
    };
    let (Ok(wait), Ok(hold)) = (secs("wait"), secs("hold")) else {
        return terminate_body(Some(Condition::BadRequest));
    };
    let slot = match state.admit(peer.ip()) {
        Ok(slot) => slot,
        Err(Refused::Connections) => {
            return terminate_body(Some(Condition::RemoteConnectionFailed));
        }
        Err(Refused::PerIp) => return terminate_body(Some(Condition::PolicyViolation)),
    };
    let limits = Limits::negotiate(&state.node.config.http.bosh, wait, hold);
    let mut id = [0u8; 16];
    rand::fill(&mut id);
    let sid: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let now = tokio::time::Instant::now().into_std();
    let (tx, rx) = oneshot::channel();
    let creation = Creation {
        rid,
        to: body.attr("to").map(str::to_owned),
        version: body.attr("xmpp:version").unwrap_or("1.0").to_owned(),
        ack: body.attr("ack").is_some(),
    };
    let core = Core::new(sid.clone(), limits, creation, tx, now);
    let session = Arc::new(Session {
        sid: sid.clone(),
        core: Mutex::new(core),
    });
    state.bosh.insert(session.clone());
    tracing::debug!(%peer, sid, "bosh session created");
    tokio::spawn(run(state.clone(), peer, session.clone(), slot));
    wait_for(&session, rid, rx, limits.wait).await
}

/// Runs the client stream of one session to its end.
async fn run(state: Arc<HttpState>, peer: SocketAddr, session: Arc<Session>, slot: SessionSlot) {
    let node = state.node.clone();
    let conn_id = node.conn_id();
    let span = tracing::info_span!("bosh", conn_id, peer_addr = %peer, jid = tracing::field::Empty);
    async move {
        node.metrics.connection_opened(Transport::Bosh);
        let connection = Connection::new(node.clone(), conn_id, peer, Transport::Bosh);
        let wire = BoshWire {
            session,
            sessions: state.bosh.clone(),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        };
        let config = state.stream_config.clone();
        if let Err(e) = connection.serve(config, wire).await {
            tracing::debug!(error = %e, "bosh session ended with an error");
        }
        node.metrics.connection_closed(Transport::Bosh);
        drop(slot);
    }
    .instrument(span)
    .await;
}

/// A BOSH session as the [`Wire`] of a framed stream.
struct BoshWire {
    session: Arc<Session>,
    sessions: Sessions,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Wire for BoshWire {
    fn poll_input(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut ServerStream,
    ) -> Poll<io::Result<bool>> {
        loop {
            let now = tokio::time::Instant::now().into_std();
            let mut core = self.session.lock();
            if matches!(core.ending, Ending::Killed(_)) {
                return Poll::Ready(Ok(false));
            }
            if let Some(frame) = core.inbound.pop_front() {
                drop(core);
                // One element at a time: the connection acts on what it caused first.
                stream.handle_frame(now, &frame);
                return Poll::Ready(Ok(true));
            }
            core.expire(now);
            if core.inactive(now) {
                tracing::debug!("bosh client inactive");
                return Poll::Ready(Ok(false));
            }
            core.waker = Some(cx.waker().clone());
            let deadline = core.next_deadline();
            drop(core);
            let Some(deadline) = deadline else {
                return Poll::Pending;
            };
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    async fn flush(&mut self, stream: &mut ServerStream) -> io::Result<()> {
        let mut core = self.session.lock();
        while let Some(frame) = stream.poll_frame() {
            core.frame_out(frame);
        }
        core.deliver();
        core.note_idle(tokio::time::Instant::now().into_std());
        if core.out_bytes > OUT_LIMIT {
            return Err(io::Error::other("bosh client fetches nothing"));
        }
        Ok(())
    }

    async fn start_tls(&mut self) -> io::Result<Option<Vec<u8>>> {
        // Framed streams never offer STARTTLS: TLS is the HTTP listener's.
        Err(io::Error::other("starttls on bosh"))
    }

    async fn shutdown(&mut self) {
        let (finished, wait) = {
            let mut core = self.session.lock();
            core.gone = true;
            let condition = match core.ending {
                Ending::Running => Some(Condition::Undefined),
                Ending::Killed(c) => Some(c),
                Ending::Closed { .. } => None,
            };
            if let Some(condition) = condition {
                // Lost or killed: whoever still waits learns the session is over.
                for held in std::mem::take(&mut core.held) {
                    if let Some(reply) = held.reply {
                        let _ = reply.send(terminate_body(Some(condition)));
                    }
                }
                for (_, early) in std::mem::take(&mut core.early) {
                    let _ = early.reply.send(terminate_body(Some(condition)));
                }
            }
            (core.finished(), core.limits.wait)
        };
        tracing::debug!(sid = self.session.sid, "bosh session over");
        if finished {
            self.sessions.remove(&self.session.sid);
        } else {
            // The end is still to be told: the client's next request gets it.
            let sessions = self.sessions.clone();
            let sid = self.session.sid.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait + GRACE).await;
                sessions.remove(&sid);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            wait: Duration::from_secs(10),
            hold: 1,
            requests: 2,
            inactivity: Duration::from_secs(30),
            polling: Duration::from_secs(2),
            max_pause: Duration::from_secs(60),
        }
    }

    /// A session created by rid 10 whose stream has opened; the creation answer is taken.
    fn session(now: Instant, ack: bool) -> Core {
        let (tx, mut rx) = oneshot::channel();
        let creation = Creation {
            rid: 10,
            to: Some("localhost".into()),
            version: "1.0".into(),
            ack,
        };
        let mut core = Core::new("s1".into(), limits(), creation, tx, now);
        assert!(core.inbound.pop_front().unwrap().starts_with(b"<open"));
        core.frame_out(Bytes::from_static(
            b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='S' from='localhost' version='1.0'/>",
        ));
        core.frame_out(Bytes::from_static(b"<stream:features/>"));
        core.deliver();
        let created = String::from_utf8(rx.try_recv().unwrap().to_vec()).unwrap();
        assert!(created.contains(" sid='s1'") && created.contains(" authid='S'"));
        assert!(created.ends_with("><stream:features/></body>"), "{created}");
        core
    }

    fn request(rid: u64, payload: &[&'static str]) -> Request {
        Request {
            rid,
            payload: payload
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
            ..Request::default()
        }
    }

    fn later(answer: Answer) -> oneshot::Receiver<Bytes> {
        match answer {
            Answer::Later(rx) => rx,
            Answer::Now(body) => panic!("answered at once: {body:?}"),
        }
    }

    fn text(body: Bytes) -> String {
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[test]
    fn early_requests_wait_for_their_turn() {
        let now = Instant::now();
        let mut core = session(now, false);
        let _b = later(core.request(request(12, &["<b/>"]), now));
        assert!(core.inbound.is_empty(), "12 waits for 11");
        let mut a = later(core.request(request(11, &["<a/>"]), now));
        let fed: Vec<_> = core.inbound.drain(..).collect();
        assert_eq!(
            fed,
            [Bytes::from_static(b"<a/>"), Bytes::from_static(b"<b/>")]
        );
        // hold 1: the older one is answered, empty.
        assert_eq!(text(a.try_recv().unwrap()), format!("<body xmlns='{NS}'/>"));
        assert_eq!(core.next_rid, 13);
    }

    #[test]
    fn answers_are_kept_for_repeated_requests() {
        let now = Instant::now();
        let mut core = session(now, false);
        let mut first = later(core.request(request(11, &[]), now));
        core.frame_out(Bytes::from_static(b"<message/>"));
        core.deliver();
        let answer = first.try_recv().unwrap();
        assert_eq!(
            text(answer.clone()),
            format!("<body xmlns='{NS}'><message/></body>")
        );
        match core.request(request(11, &[]), now) {
            Answer::Now(again) => assert_eq!(again, answer),
            Answer::Later(_) => panic!("kept"),
        }
        // Out of the window either way: the session ends.
        match core.request(request(5, &[]), now) {
            Answer::Now(body) => assert!(text(body).contains("item-not-found")),
            Answer::Later(_) => panic!("refused"),
        }
        assert_eq!(core.ending, Ending::Killed(Condition::ItemNotFound));
    }

    #[test]
    fn ack_names_the_newest_request_processed() {
        let now = Instant::now();
        let mut core = session(now, true);
        let mut a = later(core.request(request(11, &["<x/>"]), now));
        let mut b = later(core.request(request(12, &["<y/>"]), now));
        // 11 is released by 12: its answer acknowledges 12.
        assert_eq!(
            text(a.try_recv().unwrap()),
            format!("<body xmlns='{NS}' ack='12'/>")
        );
        core.frame_out(Bytes::from_static(b"<z/>"));
        core.deliver();
        assert_eq!(
            text(b.try_recv().unwrap()),
            format!("<body xmlns='{NS}'><z/></body>")
        );
    }

    #[test]
    fn wait_inactivity_and_pause() {
        let now = Instant::now();
        let mut core = session(now, false);
        let mut held = later(core.request(request(11, &[]), now));
        assert_eq!(core.next_deadline(), Some(now + Duration::from_secs(10)));
        assert!(
            !core.inactive(now + Duration::from_secs(60)),
            "a request is held"
        );
        let later_on = now + Duration::from_secs(10);
        core.expire(later_on);
        assert_eq!(
            text(held.try_recv().unwrap()),
            format!("<body xmlns='{NS}'/>")
        );
        assert!(!core.inactive(later_on + Duration::from_secs(29)));
        assert!(core.inactive(later_on + Duration::from_secs(30)));
        // A pause answers at once and stretches the limit once.
        let t = later_on + Duration::from_secs(5);
        let mut paused = later(core.request(
            Request {
                pause: Some(Duration::from_secs(50)),
                ..request(12, &[])
            },
            t,
        ));
        assert!(paused.try_recv().is_ok());
        assert!(!core.inactive(t + Duration::from_secs(49)));
        assert!(core.inactive(t + Duration::from_secs(50)));
    }

    #[test]
    fn the_stream_end_is_told_once() {
        let now = Instant::now();
        let mut core = session(now, false);
        core.frame_out(Bytes::from_static(
            b"<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
        ));
        core.frame_out(Bytes::from_static(
            b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
        ));
        core.deliver();
        match core.request(request(11, &[]), now) {
            Answer::Now(body) => {
                let body = text(body);
                assert!(
                    body.contains("type='terminate' condition='system-shutdown'>")
                        && body.contains("<system-shutdown"),
                    "{body}"
                );
            }
            Answer::Later(_) => panic!("the end is waiting"),
        }
        core.gone = true;
        assert!(core.finished());
    }
}
