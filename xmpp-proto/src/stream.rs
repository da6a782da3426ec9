//! The server side of an RFC 6120 client stream, as a sans-IO state machine.
//!
//! [`ServerStream`] takes bytes ([`ServerStream::handle_input`]), local intent
//! ([`ServerStream::handle_command`]) and the passing of time ([`ServerStream::handle_timeout`]),
//! and yields bytes to write ([`ServerStream::poll_transmit`]), events for its owner
//! ([`ServerStream::poll_event`]) and its next deadline ([`ServerStream::poll_timeout`]). It runs
//! the negotiation phases of RFC 6120 — header, STARTTLS, SASL, resource binding — and then hands
//! every client stanza out with `from` stamped to the bound full JID (§8.1.2.1), so a spoofed
//! `from` never gets through.
//!
//! What needs the outside world is an event: the TLS handshake ([`Event::StartTls`]), the stored
//! credentials ([`Event::CredentialsNeeded`]), the session registry ([`Event::BindRequested`]).
//! Timers are deadlines: the handshake timeout, the delayed SASL failure, XEP-0199 idle pings.
//!
//! A stream is either one endless document on a byte transport (TCP, [`Framing::Stream`]) or a
//! sequence of complete elements ([`Framing::Framed`]: RFC 7395 WebSocket messages, the
//! payloads of BOSH bodies). A framed stream takes [`ServerStream::handle_frame`] and yields
//! [`ServerStream::poll_frame`]: `<open/>` and `<close/>` (framing namespace) stand for the
//! stream header and its end, and every element written carries its namespaces, since it
//! travels alone. Everything between — negotiation, SASL, binding, stream management — is the
//! same code for both.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};

use crate::element::{Element, escape};
use crate::error::{StanzaCondition, StanzaError, StreamCondition, StreamError};
use crate::framing::{Frame, Framer, FramingError, Limits};
use crate::ns;
use crate::sasl::{Mechanism, SaslFailure, SaslServer, SaslStep, StoredCredentials};
use crate::stanza::{Stanza, StanzaKind, StartTag};

mod sm;
pub use sm::SmSnapshot;
use sm::SmState;

/// How a listener treats TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// STARTTLS offered and required before authentication.
    Required,
    /// STARTTLS offered; authentication allowed without it (PLAIN is then not offered).
    Optional,
    /// The transport is already TLS (direct TLS, XEP-0368); STARTTLS is not offered.
    AlreadySecure,
    /// The transport is not encrypted and cannot be upgraded (WebSocket or BOSH on plain
    /// HTTP): STARTTLS is not offered, nor PLAIN or the `-PLUS` mechanisms.
    Unavailable,
}

/// How the stream's elements travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// One XML document on a byte stream (RFC 6120 over TCP).
    #[default]
    Stream,
    /// One element per message (RFC 7395 over WebSocket; BOSH carries the same elements).
    Framed,
}

/// The set of domains a listener serves, asked once per stream header. The node's set changes at
/// runtime (dynamic domains are added, disabled and removed), so the stream asks instead of
/// holding a list.
pub trait DomainSet: Send + Sync + std::fmt::Debug {
    /// Whether `domain` (lowercased) is served and enabled.
    fn serves(&self, domain: &str) -> bool;
    /// The domain to name in a header that did not say `to`.
    fn default_domain(&self) -> Option<String>;
}

impl DomainSet for Vec<String> {
    fn serves(&self, domain: &str) -> bool {
        self.iter().any(|d| d == domain)
    }

    fn default_domain(&self) -> Option<String> {
        self.first().cloned()
    }
}

/// The fixed settings of a stream.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The domains served; a header `to` outside them gets `<host-unknown/>`.
    pub domains: Arc<dyn DomainSet>,
    /// TLS handling of this listener.
    pub tls: TlsPolicy,
    /// Mechanisms offered, in order of preference.
    pub mechanisms: Vec<Mechanism>,
    /// Framing limits.
    pub limits: Limits,
    /// Whether XEP-0077 in-band registration is offered before authentication.
    pub registration: bool,
    /// Delay before a SASL `<failure/>` for bad credentials is sent.
    pub failure_delay: Duration,
    /// Failed authentication attempts allowed before the stream is closed.
    pub max_auth_attempts: u32,
    /// Time allowed from the start of the stream until a resource is bound.
    pub handshake_timeout: Duration,
    /// Send an XEP-0199 ping after this much silence from the client.
    pub idle_ping: Option<Duration>,
    /// Close the stream when a ping gets no answer in this time.
    pub ping_timeout: Duration,
    /// A secret the node keeps for its lifetime: SCRAM answers for unknown users derive their
    /// fake salt from it, so they look stable, like a real account's.
    pub decoy_secret: Vec<u8>,
    /// The PBKDF2 iteration count new accounts get (announced for unknown users too).
    pub scram_iterations: u32,
    /// Whether XEP-0352 client state indication is offered (`<csi/>` among the features after
    /// authentication; `<active/>` and `<inactive/>` become [`Event::ClientState`]).
    pub csi: bool,
    /// XEP-0198 stream management: whether `<sm xmlns='urn:xmpp:sm:3'/>` is offered.
    pub sm: bool,
    /// Most stanzas kept unacknowledged for a client; past it the stream is closed with
    /// `<policy-violation/>` (what was kept is still given back, nothing is lost).
    pub sm_max_unacked: usize,
    /// Whether bytes or framed elements carry the stream.
    pub framing: Framing,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            domains: Arc::new(vec!["localhost".to_owned()]),
            tls: TlsPolicy::Required,
            mechanisms: vec![
                Mechanism::ScramSha256Plus,
                Mechanism::ScramSha256,
                Mechanism::ScramSha1Plus,
                Mechanism::ScramSha1,
                Mechanism::Plain,
            ],
            limits: Limits::default(),
            registration: false,
            failure_delay: Duration::from_secs(1),
            max_auth_attempts: 3,
            handshake_timeout: Duration::from_secs(60),
            idle_ping: Some(Duration::from_secs(300)),
            ping_timeout: Duration::from_secs(30),
            decoy_secret: Vec::new(),
            scram_iterations: crate::sasl::DEFAULT_ITERATIONS,
            csi: true,
            sm: true,
            sm_max_unacked: 1000,
            framing: Framing::Stream,
        }
    }
}

/// Randomness for stream ids and SCRAM nonces, injected by the owner.
pub trait Entropy: Send {
    /// Fills `buf` with unpredictable bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// What the owner of a stream must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `<proceed/>` is queued: write it, run the TLS handshake on the transport, then send
    /// [`Command::TlsEstablished`].
    StartTls,
    /// SASL needs the stored credentials of `username` on `domain`: answer with
    /// [`Command::Credentials`].
    CredentialsNeeded {
        /// The localpart the client authenticates as, as sent.
        username: String,
        /// The stream's domain.
        domain: String,
    },
    /// SASL succeeded.
    Authenticated {
        /// The authenticated localpart.
        username: String,
        /// The mechanism used.
        mechanism: Mechanism,
    },
    /// A SASL attempt failed.
    AuthFailed {
        /// The mechanism tried.
        mechanism: Mechanism,
        /// The RFC 6120 failure condition.
        condition: &'static str,
    },
    /// The client asked to bind a resource (`None`: the server picks one): answer with
    /// [`Command::Bound`] or [`Command::BindFailed`].
    BindRequested {
        /// The requested resource.
        resource: Option<String>,
    },
    /// An XEP-0077 registration IQ before authentication; answer with [`Command::Send`].
    RegistrationIq(Element),
    /// A stanza from the bound client, `from` already stamped.
    Stanza(Stanza),
    /// XEP-0352: the client said it is `active` (or inactive): hold back what is not urgent
    /// while it is inactive.
    ClientState {
        /// `true` for `<active/>`.
        active: bool,
    },
    /// XEP-0198: the bound client enabled stream management (counting has started): answer
    /// with [`Command::SmEnabled`].
    SmEnable {
        /// Whether it asked for resumption.
        resume: bool,
        /// The longest resumption time it would like, in seconds.
        max: Option<u32>,
    },
    /// XEP-0198: the authenticated client asks to resume session `previd`, having handled `h`
    /// of its stanzas: answer with [`Command::Resumed`] or [`Command::ResumeFailed`].
    SmResume {
        /// The resumption id it was given.
        previd: String,
        /// Stanzas it handled.
        h: u32,
    },
    /// The stream is over: write what is queued, then close the transport.
    Closed {
        /// The stream error sent, if the close was not clean.
        error: Option<StreamError>,
    },
}

/// Local intent for a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The TLS handshake finished; `channel_binding` is its RFC 9266 `tls-exporter` value.
    TlsEstablished {
        /// The channel binding data for SCRAM-PLUS.
        channel_binding: Option<Vec<u8>>,
    },
    /// The credentials asked for by [`Event::CredentialsNeeded`] (`None`: no such user).
    Credentials(Option<StoredCredentials>),
    /// The credentials asked for cannot be had now (the store that keeps them is unreachable):
    /// the attempt fails with `<temporary-auth-failure/>` (RFC 6120 §6.5.11), which a client
    /// may retry, instead of `<not-authorized/>`.
    CredentialsUnavailable,
    /// The resource is bound: the session's full JID.
    Bound(String),
    /// Binding failed with this condition.
    BindFailed(StanzaCondition),
    /// Stream management is on; `id` (with the resumption time `max` in seconds) when the
    /// session may be resumed.
    SmEnabled {
        /// The resumption id, if resumption is granted.
        id: Option<String>,
        /// The resumption time granted, in seconds.
        max: Option<u32>,
    },
    /// The session was resumed: the stream continues it as `jid`, with the counters it had,
    /// and first writes again what the client did not handle (`resend`, oldest first).
    Resumed {
        /// The session's full JID.
        jid: String,
        /// The resumption id (it stays valid for the resumed session).
        previd: String,
        /// Stanzas of the client the session had handled.
        inbound: u32,
        /// Outbound stanzas the client says it handled.
        acked: u32,
        /// What it did not handle, oldest first.
        resend: Vec<Bytes>,
    },
    /// The session cannot be resumed (unknown, expired, or someone else's); `h`: what the old
    /// session had handled, when known.
    ResumeFailed {
        /// Stanzas of the client the old session had handled.
        h: Option<u32>,
    },
    /// Write a stanza (already serialised) to the client.
    Send(Bytes),
    /// Close the stream, with a stream error or cleanly.
    Close(Option<StreamError>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before TLS (when offered) or authentication.
    PreAuth,
    /// Authenticated, not yet bound.
    PostAuth,
    /// Bound: stanzas flow.
    Established,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Not waiting for the owner.
    Nothing,
    /// For the TLS handshake.
    Tls,
    /// For credentials.
    Credentials,
    /// For a bind result, with the IQ id.
    Bind,
    /// For the answer to `<enable/>`.
    SmEnable,
    /// For the answer to `<resume/>`.
    SmResume,
}

/// The server side of one client stream.
pub struct ServerStream {
    config: Arc<StreamConfig>,
    entropy: Box<dyn Entropy>,
    framer: Framer,
    phase: Phase,
    header_seen: bool,
    waiting: Waiting,
    secure: bool,
    channel_binding: Option<Vec<u8>>,
    domain: Option<String>,
    username: Option<String>,
    jid: Option<String>,
    sasl: Option<(Mechanism, Box<SaslServer>)>,
    auth_failures: u32,
    bind_id: String,
    out: BytesMut,
    events: VecDeque<Event>,
    closed: bool,
    handshake_deadline: Option<Instant>,
    delayed_failure: Option<(Instant, String)>,
    last_input: Instant,
    ping: Option<(Instant, String)>,
    ping_counter: u64,
    /// XEP-0198 state once enabled (boxed: most streams never enable it, or not yet).
    sm: Option<Box<SmState>>,
    /// Framed streams only (boxed: a TCP stream should not pay for it).
    framed: Option<Box<FramedState>>,
}

/// What a framed stream keeps besides the common state.
#[derive(Debug, Default)]
struct FramedState {
    /// The elements to send, one per message.
    frames: VecDeque<Bytes>,
    /// Whether the client's `<open/>` for the current stream came.
    open: bool,
}

impl std::fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStream")
            .field("phase", &self.phase)
            .field("waiting", &self.waiting)
            .field("secure", &self.secure)
            .field("jid", &self.jid)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl ServerStream {
    /// A stream that has just been accepted at `now`.
    pub fn new(config: Arc<StreamConfig>, entropy: Box<dyn Entropy>, now: Instant) -> Self {
        let secure = config.tls == TlsPolicy::AlreadySecure;
        Self {
            framer: Framer::new(config.limits),
            handshake_deadline: Some(now + config.handshake_timeout),
            entropy,
            phase: Phase::PreAuth,
            header_seen: false,
            waiting: Waiting::Nothing,
            secure,
            channel_binding: None,
            domain: None,
            username: None,
            jid: None,
            sasl: None,
            auth_failures: 0,
            bind_id: String::new(),
            out: BytesMut::new(),
            events: VecDeque::new(),
            closed: false,
            delayed_failure: None,
            last_input: now,
            ping: None,
            ping_counter: 0,
            sm: None,
            framed: (config.framing == Framing::Framed).then(Box::default),
            config,
        }
    }

    fn framed(&self) -> bool {
        self.framed.is_some()
    }

    /// For a direct-TLS stream: the channel binding of the TLS session, set before any input.
    pub fn set_channel_binding(&mut self, channel_binding: Option<Vec<u8>>) {
        self.channel_binding = channel_binding;
    }

    /// The bound full JID, once established.
    pub fn jid(&self) -> Option<&str> {
        self.jid.as_deref()
    }

    /// The authenticated username (localpart as sent), once SASL succeeded.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The stream's domain (from the client's header).
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// Whether the stream is closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the transport is encrypted.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Whether stream management is on and the client asked for resumption.
    pub fn is_resumable(&self) -> bool {
        self.sm.as_ref().is_some_and(|sm| sm.resumable)
    }

    /// Takes the stream management state (when enabled): what the client handled, and what it
    /// was sent and never acknowledged. Called by the owner once the stream is over.
    pub fn take_sm(&mut self) -> Option<SmSnapshot> {
        self.sm.take().map(|sm| SmSnapshot {
            resumable: sm.resumable,
            inbound: sm.inbound,
            acked: sm.acked,
            unacked: sm.unacked.into(),
        })
    }

    /// Feeds bytes read from the transport.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if self.closed {
            return;
        }
        self.last_input = now;
        self.ping = None;
        self.framer.push(bytes);
        self.process_frames(now);
    }

    /// Feeds one received message of a framed stream: a single complete element. `<open/>`
    /// starts (or restarts) the stream, `<close/>` ends it; a message that is not one whole
    /// element, or anything before `<open/>`, closes the stream with an error.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) {
        if self.closed {
            return;
        }
        let trimmed = frame.trim_ascii();
        if trimmed.is_empty() {
            return;
        }
        self.last_input = now;
        self.ping = None;
        if trimmed.starts_with(b"<open") || trimmed.starts_with(b"<close") {
            let tag = match StartTag::parse(trimmed) {
                Ok(tag)
                    if tag.declared_ns() == Some(ns::FRAMING)
                        && matches!(tag.local_name(), "open" | "close") =>
                {
                    tag
                }
                Ok(_) => {
                    return self.close(Some(
                        StreamError::new(StreamCondition::InvalidNamespace).with_text(
                            "<open/> and <close/> belong to urn:ietf:params:xml:ns:xmpp-framing",
                        ),
                    ));
                }
                Err(_) => {
                    return self.close(Some(StreamError::new(StreamCondition::NotWellFormed)));
                }
            };
            if tag.local_name() == "close" {
                return self.close(None);
            }
            if self.framer.buffered() > 0 {
                return self.close(Some(
                    StreamError::new(StreamCondition::NotWellFormed)
                        .with_text("a message must hold one complete element"),
                ));
            }
            // The same header a TCP client would send, so one code path checks it.
            let mut header = format!(
                "<stream:stream xmlns='{}' xmlns:stream='{}' version='{}'",
                ns::CLIENT,
                ns::STREAMS,
                escape(tag.attr("version").unwrap_or_default())
            );
            if let Some(to) = tag.attr("to") {
                header.push_str(&format!(" to='{}'", escape(to)));
            }
            header.push('>');
            self.framer.reset();
            if let Some(framed) = &mut self.framed {
                framed.open = true;
            }
            self.framer.push(header.as_bytes());
        } else if !self.framed.as_ref().is_some_and(|f| f.open) {
            return self.close(Some(
                StreamError::new(StreamCondition::NotAuthorized)
                    .with_text("the stream starts with <open/>"),
            ));
        } else {
            self.framer.push(trimmed);
        }
        self.process_frames(now);
        self.check_whole_frames();
    }

    /// A framed stream that has read everything it may read now must have no part of an
    /// element left over: each message holds whole elements.
    fn check_whole_frames(&mut self) {
        if self.framed()
            && !self.closed
            && self.waiting == Waiting::Nothing
            && self.delayed_failure.is_none()
            && self.framer.buffered() > 0
        {
            self.close(Some(
                StreamError::new(StreamCondition::NotWellFormed)
                    .with_text("a message must hold one complete element"),
            ));
        }
    }

    /// Local intent.
    pub fn handle_command(&mut self, now: Instant, command: Command) {
        if self.closed {
            return;
        }
        match command {
            Command::TlsEstablished { channel_binding } if self.waiting == Waiting::Tls => {
                self.waiting = Waiting::Nothing;
                self.secure = true;
                self.channel_binding = channel_binding;
                self.framer.reset();
                self.header_seen = false;
            }
            Command::Credentials(creds) if self.waiting == Waiting::Credentials => {
                self.waiting = Waiting::Nothing;
                if let Some((mechanism, sasl)) = &mut self.sasl {
                    let mechanism = *mechanism;
                    let step = sasl.provide_credentials(creds.as_ref());
                    self.sasl_step(now, mechanism, step);
                }
            }
            Command::CredentialsUnavailable if self.waiting == Waiting::Credentials => {
                self.waiting = Waiting::Nothing;
                if let Some((mechanism, _)) = &self.sasl {
                    let mechanism = *mechanism;
                    let step = SaslStep::Failure(SaslFailure::TemporaryAuthFailure);
                    self.sasl_step(now, mechanism, step);
                }
            }
            Command::Bound(jid) if self.waiting == Waiting::Bind => {
                self.waiting = Waiting::Nothing;
                let reply = format!(
                    "<iq type='result' id='{}'><bind xmlns='{}'><jid>{}</jid></bind></iq>",
                    escape(&self.bind_id),
                    ns::BIND,
                    escape(&jid)
                );
                self.write(reply.as_bytes());
                self.jid = Some(jid);
                self.phase = Phase::Established;
                self.handshake_deadline = None;
                self.last_input = now;
            }
            Command::BindFailed(condition) if self.waiting == Waiting::Bind => {
                self.waiting = Waiting::Nothing;
                let error = StanzaError::new(condition).to_element(ns::CLIENT);
                let reply = Element::new("iq", ns::CLIENT)
                    .with_attr("type", "error")
                    .with_attr("id", self.bind_id.clone())
                    .with_child(error);
                self.write(reply.to_xml(ns::CLIENT).as_bytes());
            }
            Command::SmEnabled { id, max } if self.waiting == Waiting::SmEnable => {
                self.waiting = Waiting::Nothing;
                let mut xml = format!("<enabled xmlns='{}'", ns::SM);
                if let Some(id) = &id {
                    xml.push_str(&format!(" id='{}' resume='true'", escape(id)));
                    if let Some(max) = max {
                        xml.push_str(&format!(" max='{max}'"));
                    }
                }
                xml.push_str("/>");
                self.write(xml.as_bytes());
                self.sm = Some(Box::new(SmState {
                    resumable: id.is_some(),
                    ..SmState::default()
                }));
            }
            Command::Resumed {
                jid,
                previd,
                inbound,
                acked,
                resend,
            } if self.waiting == Waiting::SmResume => {
                self.waiting = Waiting::Nothing;
                let xml = format!(
                    "<resumed xmlns='{}' previd='{}' h='{inbound}'/>",
                    ns::SM,
                    escape(&previd)
                );
                self.write(xml.as_bytes());
                self.jid = Some(jid);
                self.phase = Phase::Established;
                self.handshake_deadline = None;
                self.last_input = now;
                self.sm = Some(Box::new(SmState {
                    resumable: true,
                    inbound,
                    acked,
                    ..SmState::default()
                }));
                for bytes in resend {
                    self.send_stanza(bytes);
                }
            }
            Command::ResumeFailed { h } if self.waiting == Waiting::SmResume => {
                self.waiting = Waiting::Nothing;
                let h = h.map(|h| format!(" h='{h}'")).unwrap_or_default();
                let xml = format!(
                    "<failed xmlns='{}'{h}><item-not-found xmlns='{}'/></failed>",
                    ns::SM,
                    ns::STANZAS
                );
                self.write(xml.as_bytes());
            }
            Command::Send(bytes) => self.send_stanza(bytes),
            Command::Close(error) => self.close(error),
            other => {
                // A command that does not fit the state is a bug in the owner; close safely.
                self.close(Some(
                    StreamError::new(StreamCondition::InternalServerError)
                        .with_text(format!("unexpected {}", command_name(&other))),
                ));
            }
        }
        if self.waiting == Waiting::Nothing && self.delayed_failure.is_none() {
            self.process_frames(now);
            self.check_whole_frames();
        }
    }

    /// The deadline returned by [`Self::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if let Some((at, xml)) = &self.delayed_failure
            && *at <= now
        {
            let xml = xml.clone();
            self.delayed_failure = None;
            self.write(xml.as_bytes());
            if self.auth_failures >= self.config.max_auth_attempts {
                self.close(Some(
                    StreamError::new(StreamCondition::PolicyViolation)
                        .with_text("too many failed authentication attempts"),
                ));
                return;
            }
            self.process_frames(now);
            self.check_whole_frames();
        }
        if let Some(deadline) = self.handshake_deadline
            && deadline <= now
        {
            self.close(Some(
                StreamError::new(StreamCondition::ConnectionTimeout)
                    .with_text("stream negotiation took too long"),
            ));
            return;
        }
        if self.phase != Phase::Established {
            return;
        }
        if let Some((deadline, _)) = &self.ping {
            if *deadline <= now {
                self.close(Some(
                    StreamError::new(StreamCondition::ConnectionTimeout)
                        .with_text("no answer to ping"),
                ));
            }
        } else if let Some(idle) = self.config.idle_ping
            && self.last_input + idle <= now
        {
            if let Some(sm) = &mut self.sm {
                // With stream management, an ack request is the ping (any answer will do), and
                // no stanza has to be counted for it.
                sm.requested = true;
                self.write(format!("<r xmlns='{}'/>", ns::SM).as_bytes());
                self.ping = Some((now + self.config.ping_timeout, String::new()));
                return;
            }
            self.ping_counter += 1;
            let id = format!("tern-ping-{}", self.ping_counter);
            let ping = format!(
                "<iq type='get' id='{id}' from='{}' to='{}'><ping xmlns='{}'/></iq>",
                escape(self.domain.as_deref().unwrap_or_default()),
                escape(self.jid.as_deref().unwrap_or_default()),
                ns::PING
            );
            self.write(ping.as_bytes());
            self.ping = Some((now + self.config.ping_timeout, id));
        }
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let ping = if self.phase == Phase::Established {
            match &self.ping {
                Some((deadline, _)) => Some(*deadline),
                None => self.config.idle_ping.map(|idle| self.last_input + idle),
            }
        } else {
            None
        };
        [
            self.handshake_deadline,
            self.delayed_failure.as_ref().map(|(at, _)| *at),
            ping,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// XEP-0198: asks for an acknowledgement after a batch of stanzas, one request outstanding
    /// at a time.
    fn request_ack(&mut self) {
        if let Some(sm) = &mut self.sm
            && !sm.requested
            && !sm.unacked.is_empty()
            && !self.closed
        {
            sm.requested = true;
            self.write(format!("<r xmlns='{}'/>", ns::SM).as_bytes());
        }
    }

    /// A framed stream's next element to send, as one message.
    pub fn poll_frame(&mut self) -> Option<Bytes> {
        if !self.has_frames() {
            self.request_ack();
        }
        self.framed.as_mut()?.frames.pop_front()
    }

    /// Whether a framed stream has elements to send.
    pub fn has_frames(&self) -> bool {
        self.framed.as_ref().is_some_and(|f| !f.frames.is_empty())
    }

    /// Moves the bytes to write into `buf`; `false` when there were none.
    pub fn poll_transmit(&mut self, buf: &mut BytesMut) -> bool {
        self.request_ack();
        if self.out.is_empty() {
            return false;
        }
        if buf.is_empty() {
            std::mem::swap(buf, &mut self.out);
        } else {
            buf.extend_from_slice(&self.out);
            self.out.clear();
        }
        true
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Releases buffers an idle stream does not need.
    pub fn shrink(&mut self) {
        self.framer.shrink();
        if self.out.is_empty() {
            self.out = BytesMut::new();
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(framed) = &mut self.framed {
            framed.frames.push_back(with_namespaces(bytes));
        } else {
            self.out.extend_from_slice(bytes);
        }
    }

    /// Writes a stanza for the client; with stream management on, it is kept until the client
    /// acknowledges it.
    fn send_stanza(&mut self, bytes: Bytes) {
        self.write(&bytes);
        if let Some(sm) = &mut self.sm {
            sm.unacked.push_back(bytes);
            if sm.unacked.len() > self.config.sm_max_unacked {
                self.close(Some(
                    StreamError::new(StreamCondition::PolicyViolation)
                        .with_text("too many unacknowledged stanzas"),
                ));
            }
        }
    }

    fn close(&mut self, error: Option<StreamError>) {
        if self.closed {
            return;
        }
        if !self.header_seen {
            // A stream error must be inside a stream: open ours first.
            self.write_header(None);
        }
        if let Some(e) = &error {
            self.write(e.to_xml().as_bytes());
        }
        if self.framed() {
            self.write(format!("<close xmlns='{}'/>", ns::FRAMING).as_bytes());
        } else {
            self.write(b"</stream:stream>");
        }
        self.closed = true;
        self.delayed_failure = None;
        self.events.push_back(Event::Closed { error });
    }

    fn process_frames(&mut self, now: Instant) {
        while !self.closed && self.waiting == Waiting::Nothing && self.delayed_failure.is_none() {
            match self.framer.next_frame() {
                Ok(None) => break,
                Ok(Some(Frame::Header(header))) => self.handle_header(&header),
                Ok(Some(Frame::Element(element))) => self.handle_element(now, element),
                Ok(Some(Frame::Close)) => self.close(None),
                Err(e) => self.close(Some(framing_error(&e))),
            }
        }
    }

    fn write_header(&mut self, domain: Option<&str>) {
        let mut id = [0u8; 12];
        self.entropy.fill(&mut id);
        let from = domain
            .or(self.domain.as_deref())
            .map(str::to_owned)
            .or_else(|| self.config.domains.default_domain())
            .unwrap_or_default();
        let id = BASE64.encode(id).replace(['+', '/'], "x");
        let header = if self.framed() {
            format!(
                "<open xmlns='{}' id='{id}' from='{}' version='1.0' xml:lang='en'/>",
                ns::FRAMING,
                escape(&from),
            )
        } else {
            format!(
                "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{id}' from='{}' version='1.0' xml:lang='en'>",
                ns::CLIENT,
                ns::STREAMS,
                escape(&from),
            )
        };
        self.write(header.as_bytes());
        self.header_seen = true;
    }

    fn handle_header(&mut self, header: &[u8]) {
        let Ok(tag) = StartTag::parse(header) else {
            return self.close(Some(StreamError::new(StreamCondition::NotWellFormed)));
        };
        let to = tag.attr("to").map(str::to_lowercase);
        let domain = match &to {
            Some(d) if self.config.domains.serves(d) => Some(d.clone()),
            Some(_) => None,
            None => self
                .domain
                .clone()
                .or_else(|| self.config.domains.default_domain()),
        };
        self.write_header(domain.as_deref());
        if tag.local_name() != "stream" || tag.declared_ns() != Some(ns::STREAMS) {
            return self.close(Some(StreamError::new(StreamCondition::InvalidNamespace)));
        }
        if tag.attr("xmlns") != Some(ns::CLIENT) {
            return self.close(Some(
                StreamError::new(StreamCondition::InvalidNamespace)
                    .with_text("the default namespace must be jabber:client"),
            ));
        }
        let Some(domain) = domain else {
            return self.close(Some(StreamError::new(StreamCondition::HostUnknown)));
        };
        if self.domain.as_ref().is_some_and(|d| *d != domain) {
            return self.close(Some(
                StreamError::new(StreamCondition::HostUnknown)
                    .with_text("the domain changed on stream restart"),
            ));
        }
        let major = tag
            .attr("version")
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.trim().parse::<u32>().ok());
        if major != Some(1) {
            return self.close(Some(StreamError::new(StreamCondition::UnsupportedVersion)));
        }
        self.domain = Some(domain);
        let features = self.features();
        self.write(features.as_bytes());
    }

    fn offered_mechanisms(&self) -> Vec<Mechanism> {
        self.config
            .mechanisms
            .iter()
            .copied()
            .filter(|m| {
                if m.is_plus() {
                    self.secure && self.channel_binding.is_some()
                } else if *m == Mechanism::Plain {
                    self.secure
                } else {
                    true
                }
            })
            .collect()
    }

    fn features(&self) -> String {
        let mut f = String::from("<stream:features>");
        match self.phase {
            Phase::PreAuth => {
                if !self.secure && self.config.tls != TlsPolicy::Unavailable {
                    f.push_str(&format!("<starttls xmlns='{}'>", ns::TLS));
                    if self.config.tls == TlsPolicy::Required {
                        f.push_str("<required/>");
                    }
                    f.push_str("</starttls>");
                }
                if self.secure || self.config.tls != TlsPolicy::Required {
                    f.push_str(&format!("<mechanisms xmlns='{}'>", ns::SASL));
                    for m in self.offered_mechanisms() {
                        f.push_str(&format!("<mechanism>{}</mechanism>", m.name()));
                    }
                    f.push_str("</mechanisms>");
                    if self.channel_binding.is_some() {
                        f.push_str(&format!(
                            "<sasl-channel-binding xmlns='{}'><channel-binding type='tls-exporter'/></sasl-channel-binding>",
                            ns::SASL_CB
                        ));
                    }
                    if self.config.registration {
                        f.push_str(&format!("<register xmlns='{}'/>", ns::REGISTER_FEATURE));
                    }
                }
            }
            Phase::PostAuth | Phase::Established => {
                f.push_str(&format!(
                    "<bind xmlns='{}'/><session xmlns='{}'><optional/></session><ver xmlns='{}'/>",
                    ns::BIND,
                    ns::SESSION,
                    ns::ROSTER_VER
                ));
                if self.config.csi {
                    f.push_str(&format!("<csi xmlns='{}'/>", ns::CSI));
                }
                if self.config.sm {
                    f.push_str(&format!("<sm xmlns='{}'/>", ns::SM));
                }
            }
        }
        f.push_str("</stream:features>");
        f
    }

    fn handle_element(&mut self, now: Instant, frame: Bytes) {
        if self.phase == Phase::Established {
            return self.handle_stanza(frame);
        }
        let Ok(element) = Element::parse(&frame, ns::CLIENT) else {
            return self.close(Some(StreamError::new(StreamCondition::NotWellFormed)));
        };
        match (element.ns(), element.name()) {
            (ns::TLS, "starttls")
                if self.phase == Phase::PreAuth
                    && !self.secure
                    && self.config.tls != TlsPolicy::Unavailable =>
            {
                self.write(format!("<proceed xmlns='{}'/>", ns::TLS).as_bytes());
                self.waiting = Waiting::Tls;
                self.events.push_back(Event::StartTls);
            }
            (ns::SASL, "auth") if self.phase == Phase::PreAuth => self.handle_auth(now, &element),
            (ns::SASL, "response") if self.sasl.is_some() => {
                let Some(data) = decode_sasl_payload(&element.text()) else {
                    return self.sasl_failure(now, SaslFailure::IncorrectEncoding);
                };
                if let Some((mechanism, sasl)) = &mut self.sasl {
                    let mechanism = *mechanism;
                    let step = sasl.respond(&data);
                    self.sasl_step(now, mechanism, step);
                }
            }
            (ns::SASL, "abort") if self.sasl.is_some() => {
                self.sasl_failure(now, SaslFailure::Aborted);
            }
            (ns::CLIENT, "iq") if self.phase == Phase::PostAuth => self.handle_bind_iq(&element),
            (ns::SM, "resume") if self.phase == Phase::PostAuth && self.config.sm => {
                match (element.attr("previd"), sm::parse_h(element.attr("h"))) {
                    (Some(previd), Some(h)) => {
                        self.waiting = Waiting::SmResume;
                        self.events.push_back(Event::SmResume {
                            previd: previd.to_owned(),
                            h,
                        });
                    }
                    _ => self.sm_failed(StanzaCondition::BadRequest),
                }
            }
            (ns::SM, "enable") if self.phase == Phase::PostAuth && self.config.sm => {
                // Stream management comes after binding (XEP-0198 §3).
                self.sm_failed(StanzaCondition::UnexpectedRequest);
            }
            (ns::CLIENT, "iq")
                if self.phase == Phase::PreAuth
                    && self.secure
                    && element.children().any(|c| c.ns() == ns::REGISTER) =>
            {
                self.events.push_back(Event::RegistrationIq(element));
            }
            (ns::CLIENT, "message" | "presence" | "iq") => {
                self.close(Some(StreamError::new(StreamCondition::NotAuthorized)));
            }
            _ => self.close(Some(StreamError::new(
                StreamCondition::UnsupportedStanzaType,
            ))),
        }
    }

    fn handle_auth(&mut self, now: Instant, element: &Element) {
        let mechanism = element.attr("mechanism").and_then(Mechanism::from_name);
        let Some(mechanism) = mechanism else {
            return self.sasl_failure_for(now, None, SaslFailure::InvalidMechanism);
        };
        if !self.secure && self.config.tls == TlsPolicy::Required {
            return self.sasl_failure_for(now, Some(mechanism), SaslFailure::EncryptionRequired);
        }
        let offered = self.offered_mechanisms();
        if !offered.contains(&mechanism) {
            let failure = if mechanism == Mechanism::Plain && !self.secure {
                SaslFailure::EncryptionRequired
            } else {
                SaslFailure::InvalidMechanism
            };
            return self.sasl_failure_for(now, Some(mechanism), failure);
        }
        let Some(initial) = decode_sasl_payload(&element.text()) else {
            return self.sasl_failure_for(now, Some(mechanism), SaslFailure::IncorrectEncoding);
        };
        let mut nonce = [0u8; 18];
        self.entropy.fill(&mut nonce);
        let plus_offered = offered.iter().any(|m| m.is_plus());
        let mut sasl = SaslServer::new(
            mechanism,
            self.channel_binding.clone(),
            plus_offered,
            BASE64.encode(nonce),
        );
        if !self.config.decoy_secret.is_empty() {
            sasl = sasl.with_decoy(&self.config.decoy_secret, self.config.scram_iterations);
        }
        let step = sasl.start(&initial);
        self.sasl = Some((mechanism, Box::new(sasl)));
        self.sasl_step(now, mechanism, step);
    }

    fn sasl_step(&mut self, now: Instant, mechanism: Mechanism, step: SaslStep) {
        match step {
            SaslStep::NeedCredentials { username } => {
                self.waiting = Waiting::Credentials;
                self.events.push_back(Event::CredentialsNeeded {
                    username,
                    domain: self.domain.clone().unwrap_or_default(),
                });
            }
            SaslStep::Challenge(data) => {
                let xml = format!(
                    "<challenge xmlns='{}'>{}</challenge>",
                    ns::SASL,
                    BASE64.encode(data)
                );
                self.write(xml.as_bytes());
            }
            SaslStep::Success(data) => {
                let username = self
                    .sasl
                    .as_ref()
                    .and_then(|(_, s)| s.username())
                    .unwrap_or_default()
                    .to_owned();
                let body = if data.is_empty() {
                    String::new()
                } else {
                    BASE64.encode(data)
                };
                self.write(format!("<success xmlns='{}'>{body}</success>", ns::SASL).as_bytes());
                self.sasl = None;
                self.phase = Phase::PostAuth;
                self.username = Some(username.clone());
                self.framer.reset();
                self.header_seen = false;
                self.events.push_back(Event::Authenticated {
                    username,
                    mechanism,
                });
            }
            SaslStep::Failure(failure) => self.sasl_failure_for(now, Some(mechanism), failure),
        }
    }

    fn sasl_failure(&mut self, now: Instant, failure: SaslFailure) {
        let mechanism = self.sasl.as_ref().map(|(m, _)| *m);
        self.sasl_failure_for(now, mechanism, failure);
    }

    fn sasl_failure_for(
        &mut self,
        now: Instant,
        mechanism: Option<Mechanism>,
        failure: SaslFailure,
    ) {
        self.sasl = None;
        self.waiting = Waiting::Nothing;
        let xml = format!(
            "<failure xmlns='{}'><{}/></failure>",
            ns::SASL,
            failure.condition()
        );
        if let Some(mechanism) = mechanism {
            self.events.push_back(Event::AuthFailed {
                mechanism,
                condition: failure.condition(),
            });
        }
        self.auth_failures += 1;
        if failure == SaslFailure::NotAuthorized {
            // Wrong credentials: answer only after the configured delay, to slow guessing.
            self.delayed_failure = Some((now + self.config.failure_delay, xml));
            return;
        }
        self.write(xml.as_bytes());
        if self.auth_failures >= self.config.max_auth_attempts {
            self.close(Some(
                StreamError::new(StreamCondition::PolicyViolation)
                    .with_text("too many failed authentication attempts"),
            ));
        }
    }

    fn handle_bind_iq(&mut self, iq: &Element) {
        let id = iq.attr("id").unwrap_or_default().to_owned();
        let bind = iq.get_child("bind", ns::BIND);
        match (iq.attr("type"), bind) {
            (Some("set"), Some(bind)) => {
                let resource = bind
                    .get_child("resource", ns::BIND)
                    .map(|r| r.text().trim().to_owned())
                    .filter(|r| !r.is_empty());
                self.bind_id = id;
                self.waiting = Waiting::Bind;
                self.events.push_back(Event::BindRequested { resource });
            }
            (Some("get" | "set"), _) => {
                // Anything but binding before a resource is bound.
                let error = StanzaError::new(StanzaCondition::NotAuthorized).reply_to(iq);
                self.write(error.to_xml(ns::CLIENT).as_bytes());
            }
            _ => {}
        }
    }

    /// An XEP-0352 `<active/>` or `<inactive/>` (anything else that starts so is refused).
    fn handle_client_state(&mut self, frame: &[u8]) {
        match Element::parse(frame, ns::CLIENT) {
            Ok(element) if element.ns() == ns::CSI => {
                self.events.push_back(Event::ClientState {
                    active: element.name() == "active",
                });
            }
            _ => self.close(Some(StreamError::new(
                StreamCondition::UnsupportedStanzaType,
            ))),
        }
    }

    /// A XEP-0198 nonza on an established stream; `false` when the frame is not one (it is
    /// then handled as a stanza, and refused if it is none).
    fn handle_sm_nonza(&mut self, frame: &[u8]) -> bool {
        let Ok(element) = Element::parse(frame, ns::CLIENT) else {
            return false;
        };
        if element.ns() != ns::SM {
            return false;
        }
        match (element.name(), &mut self.sm) {
            ("r", Some(sm)) => {
                let xml = format!("<a xmlns='{}' h='{}'/>", ns::SM, sm.inbound);
                self.write(xml.as_bytes());
            }
            ("a", Some(sm)) => {
                let Some(h) = sm::parse_h(element.attr("h")) else {
                    self.close(Some(
                        StreamError::new(StreamCondition::InvalidXml)
                            .with_text("<a/> needs a numeric h"),
                    ));
                    return true;
                };
                if let Err(e) = sm.acknowledge(h) {
                    self.close(Some(
                        StreamError::new(StreamCondition::UndefinedCondition).with_text(format!(
                            "handled-count-too-high: h={} but only {} stanzas were sent",
                            e.h, e.sent
                        )),
                    ));
                }
            }
            ("enable", None) => {
                let resume = matches!(element.attr("resume"), Some("true" | "1"));
                let max = element.attr("max").and_then(|m| m.trim().parse().ok());
                self.waiting = Waiting::SmEnable;
                self.events.push_back(Event::SmEnable { resume, max });
            }
            ("enable" | "resume", _) => self.sm_failed(StanzaCondition::UnexpectedRequest),
            // `<r/>` or `<a/>` before stream management was enabled.
            _ => self.sm_failed(StanzaCondition::UnexpectedRequest),
        }
        true
    }

    /// A XEP-0198 `<failed/>` with a stanza error condition.
    fn sm_failed(&mut self, condition: StanzaCondition) {
        let xml = format!(
            "<failed xmlns='{}'><{} xmlns='{}'/></failed>",
            ns::SM,
            condition.as_str(),
            ns::STANZAS
        );
        self.write(xml.as_bytes());
    }

    fn handle_stanza(&mut self, frame: Bytes) {
        // The framer hands out only well-formed elements (see `framing`), so the bytes can be
        // forwarded as they are.
        if self.config.csi && (frame.starts_with(b"<active") || frame.starts_with(b"<inactive")) {
            return self.handle_client_state(&frame);
        }
        if self.config.sm
            && [&b"<r"[..], b"<a", b"<enable", b"<resume"]
                .iter()
                .any(|p| frame.starts_with(p))
            && self.handle_sm_nonza(&frame)
        {
            return;
        }
        let stanza = match Stanza::from_frame(frame) {
            Ok(s) => s,
            Err(crate::stanza::StanzaError::NotAStanza(_)) => {
                return self.close(Some(StreamError::new(
                    StreamCondition::UnsupportedStanzaType,
                )));
            }
            Err(crate::stanza::StanzaError::Tag(_)) => {
                return self.close(Some(StreamError::new(StreamCondition::NotWellFormed)));
            }
        };
        if stanza.kind == StanzaKind::Iq
            && matches!(stanza.type_(), Some("result" | "error"))
            && stanza.id().is_some_and(|id| id.starts_with("tern-ping-"))
            && stanza
                .to()
                .is_none_or(|to| Some(to) == self.domain.as_deref())
        {
            // The answer to our ping (or to one superseded by other traffic): the client is
            // alive, and the answer goes nowhere.
            self.ping = None;
            return;
        }
        let Some(jid) = self.jid.as_deref() else {
            return;
        };
        if let Some(sm) = &mut self.sm {
            sm.inbound = sm.inbound.wrapping_add(1);
        }
        let stamped = stanza.with_from(jid);
        self.events.push_back(Event::Stanza(stamped));
    }
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::TlsEstablished { .. } => "tls established",
        Command::Credentials(_) => "credentials",
        Command::CredentialsUnavailable => "credentials unavailable",
        Command::Bound(_) => "bound",
        Command::BindFailed(_) => "bind failed",
        Command::SmEnabled { .. } => "sm enabled",
        Command::Resumed { .. } => "resumed",
        Command::ResumeFailed { .. } => "resume failed",
        Command::Send(_) => "send",
        Command::Close(_) => "close",
    }
}

/// A SASL payload: `=` is an empty response (RFC 6120 §6.4.2), otherwise base64.
fn decode_sasl_payload(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Some(Vec::new());
    }
    BASE64.decode(text).ok()
}

/// An element to send alone (a framed stream's message), with the namespaces a TCP stream's
/// header would have declared: `jabber:client` as the default on a stanza without its own, the
/// `stream` prefix on `<stream:features/>` and `<stream:error/>`.
fn with_namespaces(bytes: &[u8]) -> Bytes {
    let name_end = bytes
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'/' || *b == b'>')
        .unwrap_or(bytes.len());
    let tag_end = memchr::memchr(b'>', bytes).unwrap_or(bytes.len());
    let tag = &bytes[..tag_end];
    let declaration = if bytes.starts_with(b"<stream:") {
        (!contains(tag, b"xmlns:stream=")).then(|| format!(" xmlns:stream='{}'", ns::STREAMS))
    } else {
        (!contains(tag, b" xmlns=")).then(|| format!(" xmlns='{}'", ns::CLIENT))
    };
    match declaration {
        Some(declaration) if bytes.first() == Some(&b'<') => {
            let mut out = Vec::with_capacity(bytes.len() + declaration.len());
            out.extend_from_slice(&bytes[..name_end]);
            out.extend_from_slice(declaration.as_bytes());
            out.extend_from_slice(&bytes[name_end..]);
            Bytes::from(out)
        }
        _ => Bytes::copy_from_slice(bytes),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// The stream error for a framing failure.
pub fn framing_error(e: &FramingError) -> StreamError {
    let condition = match e {
        FramingError::NotWellFormed(_) => StreamCondition::NotWellFormed,
        FramingError::RestrictedXml(_) => StreamCondition::RestrictedXml,
        FramingError::StanzaTooLarge { .. }
        | FramingError::TooDeep { .. }
        | FramingError::TooManyAttributes { .. } => StreamCondition::PolicyViolation,
    };
    StreamError::new(condition).with_text(e.to_string())
}

#[cfg(test)]
mod tests;
