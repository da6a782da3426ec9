//! Transcript tests of the server stream: a scripted client drives a [`ServerStream`] with byte
//! vectors and a virtual clock, and the owner's side (TLS, credentials, binding) is played by
//! the test.

use super::*;

struct CountingEntropy(u8);

impl Entropy for CountingEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
const CB: [u8; 32] = [7; 32];

fn config() -> StreamConfig {
    StreamConfig {
        failure_delay: Duration::from_millis(500),
        ..StreamConfig::default()
    }
}

struct Harness {
    stream: ServerStream,
    now: Instant,
    written: String,
    events: Vec<Event>,
    password: &'static str,
}

impl Harness {
    fn new(config: StreamConfig) -> Self {
        let now = Instant::now();
        Self {
            stream: ServerStream::new(Arc::new(config), Box::new(CountingEntropy(0)), now),
            now,
            written: String::new(),
            events: Vec::new(),
            password: "secret",
        }
    }

    /// Feeds `input` in pieces of `chunk` bytes, answering owner events like a node would.
    fn send(&mut self, input: &str, chunk: usize) {
        for piece in input.as_bytes().chunks(chunk.max(1)) {
            self.stream.handle_input(self.now, piece);
            self.pump();
        }
    }

    /// Feeds one message of a framed stream.
    fn frame(&mut self, input: &str) {
        self.stream.handle_frame(self.now, input.as_bytes());
        self.pump();
    }

    fn pump(&mut self) {
        loop {
            let mut buf = BytesMut::new();
            if self.stream.poll_transmit(&mut buf) {
                self.written.push_str(std::str::from_utf8(&buf).unwrap());
            }
            // A framed stream's messages, each ended with `|` to show where it ends.
            while let Some(frame) = self.stream.poll_frame() {
                self.written.push_str(std::str::from_utf8(&frame).unwrap());
                self.written.push('|');
            }
            let Some(event) = self.stream.poll_event() else {
                break;
            };
            let command = match &event {
                Event::StartTls => Some(Command::TlsEstablished {
                    channel_binding: Some(CB.to_vec()),
                }),
                // carol's credentials live in a store that cannot be reached now.
                Event::CredentialsNeeded { username, .. } if username == "carol" => {
                    Some(Command::CredentialsUnavailable)
                }
                Event::CredentialsNeeded { username, .. } => {
                    Some(Command::Credentials((username == "alice").then(|| {
                        StoredCredentials::derive(self.password, b"salt-one", b"salt-two", 16)
                    })))
                }
                Event::SmEnable { resume, max } => Some(Command::SmEnabled {
                    id: resume.then(|| "sm-1".to_owned()),
                    max: max.map(|m| m.min(300)),
                }),
                // Session "sm-1" had handled 7 of the client's stanzas and sent it 5, of which
                // the client had acknowledged 3.
                Event::SmResume { previd, h } if previd == "sm-1" && (3..=5).contains(h) => {
                    let unacked: Vec<Bytes> = [&b"<message id='u4'/>"[..], b"<message id='u5'/>"]
                        .into_iter()
                        .map(Bytes::from_static)
                        .collect();
                    Some(Command::Resumed {
                        jid: "alice@localhost/phone".into(),
                        previd: previd.clone(),
                        inbound: 7,
                        acked: *h,
                        resend: unacked[(*h as usize - 3)..].to_vec(),
                    })
                }
                Event::SmResume { .. } => Some(Command::ResumeFailed { h: None }),
                Event::BindRequested { resource } => Some(Command::Bound(format!(
                    "alice@localhost/{}",
                    resource.clone().unwrap_or_else(|| "generated".into())
                ))),
                _ => None,
            };
            self.events.push(event);
            if let Some(command) = command {
                self.stream.handle_command(self.now, command);
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.stream.poll_timeout().is_some_and(|t| t <= self.now) {
            self.stream.handle_timeout(self.now);
        }
        self.pump();
    }

    fn login(&mut self, resource: &str, chunk: usize) {
        for segment in login_script(resource) {
            self.send(&segment, chunk);
        }
    }

    fn take_written(&mut self) -> String {
        std::mem::take(&mut self.written)
    }

    fn stanzas(&self) -> Vec<&Stanza> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Stanza(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn closed_with(&self) -> Option<Option<StreamCondition>> {
        self.events.iter().find_map(|e| match e {
            Event::Closed { error } => Some(error.as_ref().map(|e| e.condition)),
            _ => None,
        })
    }
}

fn plain(user: &str, password: &str) -> String {
    BASE64.encode(format!("\0{user}\0{password}"))
}

/// The client's side of a login, one segment per stream restart (a client waits for
/// `<proceed/>` and `<success/>` before it sends the next header).
fn login_script(resource: &str) -> Vec<String> {
    vec![
        format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
        format!(
            "{HEADER}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain("alice", "secret")
        ),
        format!(
            "{HEADER}<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ),
    ]
}

#[test]
fn negotiates_tls_sasl_and_bind_then_stamps_from() {
    let mut h = Harness::new(config());
    h.login("balcony", usize::MAX);
    h.send(
        "<message from='mallory@evil/x' to='bob@localhost' id='m1'><body>hi</body></message>",
        usize::MAX,
    );
    let out = h.take_written();
    assert!(
        out.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>")
    );
    assert!(out.contains("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
    assert!(out.contains("<mechanism>SCRAM-SHA-256-PLUS</mechanism>"));
    assert!(out.contains("<mechanism>PLAIN</mechanism>"));
    assert!(out.contains("<channel-binding type='tls-exporter'/>"));
    assert!(out.contains("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'></success>"));
    assert!(out.contains("<jid>alice@localhost/balcony</jid>"));
    assert!(out.contains("<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/>"));
    assert_eq!(
        out.matches("<stream:stream").count(),
        3,
        "one header per restart"
    );
    assert!(h.events.contains(&Event::Authenticated {
        username: "alice".into(),
        mechanism: Mechanism::Plain
    }));
    let stanzas = h.stanzas();
    assert_eq!(stanzas.len(), 1);
    assert_eq!(stanzas[0].from(), Some("alice@localhost/balcony"));
    assert!(!String::from_utf8_lossy(stanzas[0].raw()).contains("mallory"));
    assert_eq!(h.stream.jid(), Some("alice@localhost/balcony"));
    assert_eq!(h.closed_with(), None);
}

#[test]
fn client_state_nonzas_become_events() {
    let mut h = Harness::new(config());
    h.login("phone", usize::MAX);
    assert!(h.take_written().contains("<csi xmlns='urn:xmpp:csi:0'/>"));
    h.send("<inactive xmlns='urn:xmpp:csi:0'/>", usize::MAX);
    h.send("<active xmlns='urn:xmpp:csi:0'/>", usize::MAX);
    let states: Vec<bool> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ClientState { active } => Some(*active),
            _ => None,
        })
        .collect();
    assert_eq!(states, [false, true]);
    assert_eq!(h.closed_with(), None);
    // Another namespace is not a client state: unsupported, as any unknown element.
    h.send("<active xmlns='urn:example:other'/>", usize::MAX);
    assert_eq!(
        h.closed_with(),
        Some(Some(StreamCondition::UnsupportedStanzaType))
    );
}

#[test]
fn same_result_at_every_split() {
    let mut script = login_script("r");
    script.push(
        "<presence/><message to='bob@localhost'><body>a&amp;b</body></message></stream:stream>"
            .into(),
    );
    let mut reference = Harness::new(config());
    for segment in &script {
        reference.send(segment, usize::MAX);
    }
    let expected_events = reference.events.clone();
    assert_eq!(reference.closed_with(), Some(None));
    for chunk in [1, 2, 3, 5, 8, 13, 64] {
        let mut h = Harness::new(config());
        for segment in &script {
            h.send(segment, chunk);
        }
        assert_eq!(h.events, expected_events, "chunk size {chunk}");
        assert_eq!(h.written, reference.written, "chunk size {chunk}");
    }
}

#[test]
fn unreachable_credentials_are_a_temporary_failure() {
    let mut h = Harness::new(config());
    let script = login_script("r");
    h.send(&script[0], usize::MAX);
    h.take_written();
    h.send(
        &format!(
            "{HEADER}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain("carol", "secret")
        ),
        usize::MAX,
    );
    h.advance(Duration::from_secs(1));
    let written = h.take_written();
    assert!(
        written.contains(
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><temporary-auth-failure/></failure>"
        ),
        "{written}"
    );
    // The stream stays open for a retry.
    h.send(
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain("alice", "secret")
        ),
        usize::MAX,
    );
    assert!(h.take_written().contains("<success"));
}

#[test]
fn wrong_password_fails_only_after_the_delay() {
    let mut h = Harness::new(config());
    h.password = "other";
    let script = login_script("r");
    h.send(&script[0], usize::MAX);
    h.send(&script[1], usize::MAX);
    h.take_written();
    assert_eq!(
        h.stream.poll_timeout(),
        Some(h.now + Duration::from_millis(500))
    );
    h.advance(Duration::from_millis(499));
    assert!(!h.written.contains("failure"));
    h.advance(Duration::from_millis(1));
    assert!(
        h.take_written().contains(
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"
        )
    );
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::AuthFailed {
            condition: "not-authorized",
            ..
        }
    )));
    // The client may retry, and a retry queued during the delay is handled after it.
    h.password = "secret";
    h.send(
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain("alice", "secret")
        ),
        usize::MAX,
    );
    assert!(h.take_written().contains("<success"));
}

#[test]
fn too_many_failures_close_the_stream() {
    let mut h = Harness::new(config());
    h.send(&login_script("r")[0], usize::MAX);
    h.send(HEADER, usize::MAX);
    for _ in 0..3 {
        h.send(
            &format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
                plain("alice", "wrong")
            ),
            usize::MAX,
        );
        h.advance(Duration::from_secs(1));
    }
    assert_eq!(
        h.closed_with(),
        Some(Some(StreamCondition::PolicyViolation))
    );
}

#[test]
fn auth_before_required_tls_is_refused() {
    let mut h = Harness::new(config());
    h.send(
        &format!(
            "{HEADER}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain("alice", "secret")
        ),
        usize::MAX,
    );
    let out = h.take_written();
    assert!(out.contains("<encryption-required/>"));
    assert!(
        !out.contains("<mechanisms"),
        "no mechanisms before TLS when it is required"
    );
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, Event::CredentialsNeeded { .. }))
    );
}

#[test]
fn stanza_before_auth_is_not_authorized() {
    let mut h = Harness::new(config());
    h.send(&login_script("r")[0], usize::MAX);
    h.send(
        &format!("{HEADER}<message to='bob@localhost'/>"),
        usize::MAX,
    );
    assert_eq!(h.closed_with(), Some(Some(StreamCondition::NotAuthorized)));
    assert!(h.take_written().ends_with(
        "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>"
    ));
}

#[test]
fn header_errors() {
    let cases = [
        (
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
            StreamCondition::InvalidNamespace,
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost' version='1.0'>",
            StreamCondition::InvalidNamespace,
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='elsewhere.example' version='1.0'>",
            StreamCondition::HostUnknown,
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>",
            StreamCondition::UnsupportedVersion,
        ),
    ];
    for (header, condition) in cases {
        let mut h = Harness::new(config());
        h.send(header, usize::MAX);
        assert_eq!(h.closed_with(), Some(Some(condition)), "{header}");
        let out = h.take_written();
        assert!(
            out.starts_with("<?xml version='1.0'?><stream:stream"),
            "our header first"
        );
        assert!(out.contains(condition.as_str()));
    }
}

#[test]
fn bad_bytes_become_stream_errors() {
    let cases = [
        (
            "<message><body></message></body>",
            StreamCondition::NotWellFormed,
        ),
        (
            "<message><body>&xxe;</body></message>",
            StreamCondition::NotWellFormed,
        ),
        (
            "<!DOCTYPE x [<!ENTITY a 'b'>]>",
            StreamCondition::RestrictedXml,
        ),
        ("<?php ?>", StreamCondition::RestrictedXml),
        (
            "<foo xmlns='urn:x'/>",
            StreamCondition::UnsupportedStanzaType,
        ),
    ];
    for (bad, condition) in cases {
        let mut h = Harness::new(config());
        h.login("r", usize::MAX);
        h.send(bad, usize::MAX);
        assert_eq!(h.closed_with(), Some(Some(condition)), "{bad}");
        assert!(h.stanzas().is_empty());
    }
    let mut h = Harness::new(StreamConfig {
        limits: Limits {
            max_stanza_size: 2048,
            ..Limits::default()
        },
        ..config()
    });
    h.login("r", usize::MAX);
    h.send(
        &format!("<message><body>{}</body></message>", "x".repeat(4096)),
        100,
    );
    assert_eq!(
        h.closed_with(),
        Some(Some(StreamCondition::PolicyViolation))
    );
}

#[test]
fn idle_client_is_pinged_and_dropped_without_answer() {
    let mut h = Harness::new(StreamConfig {
        idle_ping: Some(Duration::from_secs(60)),
        ping_timeout: Duration::from_secs(10),
        ..config()
    });
    h.login("r", usize::MAX);
    h.take_written();
    h.advance(Duration::from_secs(60));
    let ping = h.take_written();
    assert!(ping.contains("<ping xmlns='urn:xmpp:ping'/>"), "{ping}");
    // An answer keeps the session and is not routed anywhere.
    h.send(
        "<iq type='result' id='tern-ping-1' to='localhost'/>",
        usize::MAX,
    );
    assert!(h.stanzas().is_empty());
    h.advance(Duration::from_secs(30));
    assert_eq!(h.closed_with(), None);
    h.advance(Duration::from_secs(30));
    assert!(h.take_written().contains("tern-ping-2"));
    h.advance(Duration::from_secs(10));
    assert_eq!(
        h.closed_with(),
        Some(Some(StreamCondition::ConnectionTimeout))
    );
}

#[test]
fn slow_handshake_times_out() {
    let mut h = Harness::new(config());
    h.send(HEADER, usize::MAX);
    h.advance(Duration::from_secs(61));
    assert_eq!(
        h.closed_with(),
        Some(Some(StreamCondition::ConnectionTimeout))
    );
}

#[test]
fn plus_and_plain_need_tls() {
    let mut h = Harness::new(StreamConfig {
        tls: TlsPolicy::Optional,
        ..config()
    });
    h.send(HEADER, usize::MAX);
    let out = h.take_written();
    assert!(out.contains("<mechanism>SCRAM-SHA-256</mechanism>"));
    assert!(!out.contains("PLUS"));
    assert!(!out.contains("<mechanism>PLAIN</mechanism>"));
    h.send(
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain("alice", "secret")
        ),
        usize::MAX,
    );
    assert!(h.take_written().contains("<encryption-required/>"));
}

#[test]
fn close_command_sends_the_stream_error() {
    let mut h = Harness::new(config());
    h.login("r", usize::MAX);
    h.take_written();
    h.stream.handle_command(
        h.now,
        Command::Close(Some(StreamError::new(StreamCondition::Conflict))),
    );
    h.pump();
    assert_eq!(
        h.take_written(),
        "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>"
    );
    assert!(h.stream.is_closed());
}

#[test]
fn stream_state_stays_small() {
    assert!(
        size_of::<ServerStream>() <= 576,
        "{}",
        size_of::<ServerStream>()
    );
}

#[test]
fn garbage_after_login_never_panics() {
    let alphabet: &[u8] = b"<>/'\"=!?[]-x&;:\n\xff";
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let mut h = Harness::new(config());
        h.login("r", usize::MAX);
        let mut input = b"<message to='b@localhost'><body>hi</body></message><presence/>".to_vec();
        for _ in 0..1 + next() % 6 {
            let at = (next() % input.len() as u64) as usize;
            input[at] = alphabet[(next() % alphabet.len() as u64) as usize];
        }
        let text = String::from_utf8_lossy(&input).into_owned();
        h.send(&text, 1 + (next() % 7) as usize);
        // Either the stanzas came through, or the stream ended with a stream error.
        if let Some(outcome) = h.closed_with() {
            assert!(
                outcome.is_some(),
                "a broken stream closes with an error: {text:?}"
            );
        }
    }
}

#[test]
fn stream_management_counts_both_ways_and_keeps_what_is_unacknowledged() {
    let mut h = Harness::new(config());
    h.login("phone", usize::MAX);
    assert!(h.take_written().contains("<sm xmlns='urn:xmpp:sm:3'/>"));
    h.send("<iq type='get' id='early' to='localhost'/>", usize::MAX);
    h.send(
        "<enable xmlns='urn:xmpp:sm:3' resume='true' max='600'/>",
        usize::MAX,
    );
    assert!(
        h.take_written()
            .contains("<enabled xmlns='urn:xmpp:sm:3' id='sm-1' resume='true' max='300'/>")
    );
    assert!(h.stream.is_resumable());
    // Only stanzas after <enable/> count.
    h.send(
        "<message to='bob@localhost' id='1'/><presence/><r xmlns='urn:xmpp:sm:3'/>",
        7,
    );
    assert_eq!(h.take_written(), "<a xmlns='urn:xmpp:sm:3' h='2'/>");
    for id in 1..=3 {
        h.stream.handle_command(
            h.now,
            Command::Send(Bytes::from(format!("<message id='s{id}'/>"))),
        );
    }
    h.pump();
    let out = h.take_written();
    assert!(
        out.ends_with("<message id='s3'/><r xmlns='urn:xmpp:sm:3'/>"),
        "one ack request after the batch: {out}"
    );
    // An ack that leaves stanzas uncovered is followed by a new request, and only one.
    h.send("<a xmlns='urn:xmpp:sm:3' h='2'/>", usize::MAX);
    assert_eq!(h.take_written(), "<r xmlns='urn:xmpp:sm:3'/>");
    h.stream.handle_command(
        h.now,
        Command::Send(Bytes::from_static(b"<message id='s4'/>")),
    );
    h.pump();
    assert_eq!(h.take_written(), "<message id='s4'/>");
    let snapshot = h.stream.take_sm().unwrap();
    assert!(snapshot.resumable);
    assert_eq!((snapshot.inbound, snapshot.acked), (2, 2));
    assert_eq!(
        snapshot.unacked,
        [
            Bytes::from_static(b"<message id='s3'/>"),
            Bytes::from_static(b"<message id='s4'/>")
        ]
    );
    assert_eq!(h.closed_with(), None);
}

#[test]
fn enable_before_bind_and_twice_fails_and_a_too_high_ack_closes() {
    let mut h = Harness::new(config());
    let script = login_script("phone");
    h.send(&script[0], usize::MAX);
    h.send(&script[1], usize::MAX);
    h.take_written();
    h.send(
        &format!("{HEADER}<enable xmlns='urn:xmpp:sm:3'/>"),
        usize::MAX,
    );
    assert!(h.take_written().contains(
        "<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    ));
    h.send(&script[2].replace(HEADER, ""), usize::MAX);
    assert_eq!(h.stream.jid(), Some("alice@localhost/phone"));
    h.send("<a xmlns='urn:xmpp:sm:3' h='1'/>", usize::MAX);
    assert!(
        h.take_written().contains("<unexpected-request"),
        "not enabled yet"
    );
    h.send("<enable xmlns='urn:xmpp:sm:3'/>", usize::MAX);
    assert!(
        h.take_written()
            .contains("<enabled xmlns='urn:xmpp:sm:3'/>"),
        "no resumption asked"
    );
    assert!(!h.stream.is_resumable());
    h.send("<enable xmlns='urn:xmpp:sm:3'/>", usize::MAX);
    assert!(h.take_written().contains("<unexpected-request"));
    h.stream.handle_command(
        h.now,
        Command::Send(Bytes::from_static(b"<message id='s1'/>")),
    );
    h.send("<a xmlns='urn:xmpp:sm:3' h='2'/>", usize::MAX);
    assert_eq!(
        h.closed_with(),
        Some(Some(StreamCondition::UndefinedCondition))
    );
    assert!(h.take_written().contains("handled-count-too-high"));
}

#[test]
fn resumption_resends_what_the_client_did_not_handle() {
    let mut h = Harness::new(config());
    let script = login_script("ignored");
    h.send(&script[0], usize::MAX);
    h.send(&script[1], usize::MAX);
    h.take_written();
    h.send(
        &format!("{HEADER}<resume xmlns='urn:xmpp:sm:3' previd='sm-1' h='4'/>"),
        usize::MAX,
    );
    let out = h.take_written();
    assert!(
        out.ends_with(
            "<resumed xmlns='urn:xmpp:sm:3' previd='sm-1' h='7'/><message id='u5'/><r xmlns='urn:xmpp:sm:3'/>"
        ),
        "{out}"
    );
    assert_eq!(h.stream.jid(), Some("alice@localhost/phone"));
    h.send(
        "<message to='bob@localhost'/><r xmlns='urn:xmpp:sm:3'/>",
        usize::MAX,
    );
    assert!(
        h.take_written()
            .contains("<a xmlns='urn:xmpp:sm:3' h='8'/>")
    );
    assert_eq!(h.stanzas()[0].from(), Some("alice@localhost/phone"));
    h.send("<a xmlns='urn:xmpp:sm:3' h='5'/>", usize::MAX);
    assert!(h.stream.take_sm().unwrap().unacked.is_empty());
}

#[test]
fn failed_resumption_leaves_binding_open() {
    let mut h = Harness::new(config());
    let script = login_script("desk");
    h.send(&script[0], usize::MAX);
    h.send(&script[1], usize::MAX);
    h.take_written();
    h.send(
        &format!("{HEADER}<resume xmlns='urn:xmpp:sm:3' previd='gone' h='0'/>"),
        usize::MAX,
    );
    assert!(h.take_written().contains(
        "<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    ));
    h.send(
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>desk</resource></bind></iq>",
        usize::MAX,
    );
    assert_eq!(h.stream.jid(), Some("alice@localhost/desk"));
    assert_eq!(h.closed_with(), None);
}

#[test]
fn with_stream_management_the_idle_ping_is_an_ack_request() {
    let mut h = Harness::new(StreamConfig {
        idle_ping: Some(Duration::from_secs(10)),
        ping_timeout: Duration::from_secs(5),
        ..config()
    });
    h.login("phone", usize::MAX);
    h.send("<enable xmlns='urn:xmpp:sm:3'/>", usize::MAX);
    h.take_written();
    h.advance(Duration::from_secs(11));
    assert_eq!(h.take_written(), "<r xmlns='urn:xmpp:sm:3'/>");
    h.send("<a xmlns='urn:xmpp:sm:3' h='0'/>", usize::MAX);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.closed_with(), None, "the answer counts as life");
    h.advance(Duration::from_secs(6));
    assert_eq!(h.take_written(), "<r xmlns='urn:xmpp:sm:3'/>");
    h.advance(Duration::from_secs(6));
    assert_eq!(
        h.closed_with(),
        Some(Some(StreamCondition::ConnectionTimeout))
    );
}

#[test]
fn too_many_unacknowledged_stanzas_close_the_stream() {
    let mut h = Harness::new(StreamConfig {
        sm_max_unacked: 3,
        ..config()
    });
    h.login("phone", usize::MAX);
    h.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>", usize::MAX);
    for _ in 0..4 {
        h.stream
            .handle_command(h.now, Command::Send(Bytes::from_static(b"<message/>")));
    }
    h.pump();
    assert_eq!(
        h.closed_with(),
        Some(Some(StreamCondition::PolicyViolation))
    );
    assert_eq!(
        h.stream.take_sm().unwrap().unacked.len(),
        4,
        "all given back"
    );
}

fn framed() -> StreamConfig {
    StreamConfig {
        framing: Framing::Framed,
        tls: TlsPolicy::AlreadySecure,
        ..config()
    }
}

const OPEN: &str =
    "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>";

#[test]
fn a_framed_stream_negotiates_with_open_and_one_element_per_message() {
    let mut h = Harness::new(framed());
    h.frame(OPEN);
    let out = h.take_written();
    let frames: Vec<&str> = out.split_terminator('|').collect();
    assert_eq!(frames.len(), 2, "{out}");
    assert!(
        frames[0].starts_with("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='")
            && frames[0].contains("from='localhost' version='1.0'")
            && frames[0].ends_with("/>"),
        "{out}"
    );
    assert!(
        frames[1].starts_with(
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms"
        ),
        "{out}"
    );
    assert!(frames[1].contains("<mechanism>PLAIN</mechanism>"), "{out}");
    assert!(!out.contains("starttls"), "{out}");

    h.frame(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        plain("alice", "secret")
    ));
    assert_eq!(
        h.take_written(),
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'></success>|"
    );
    // After SASL the client opens again; anything else first is refused below.
    h.frame(OPEN);
    let out = h.take_written();
    assert!(
        out.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
        "{out}"
    );
    h.frame(
        "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq>",
    );
    assert_eq!(
        h.take_written(),
        "<iq xmlns='jabber:client' type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@localhost/web</jid></bind></iq>|"
    );
    h.frame("<message xmlns='jabber:client' to='bob@localhost' id='m1'><body>hi</body></message>");
    let stanzas = h.stanzas();
    assert_eq!(stanzas.len(), 1);
    assert_eq!(stanzas[0].from(), Some("alice@localhost/web"));
    // A stanza routed to the client (as other sessions write it) gets its namespace.
    h.stream.handle_command(
        h.now,
        Command::Send(Bytes::from_static(
            b"<message from='bob@localhost/x' to='alice@localhost/web'><body>yo</body></message>",
        )),
    );
    h.pump();
    assert_eq!(
        h.take_written(),
        "<message xmlns='jabber:client' from='bob@localhost/x' to='alice@localhost/web'><body>yo</body></message>|"
    );
    h.frame("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");
    assert_eq!(
        h.take_written(),
        "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>|"
    );
    assert_eq!(h.closed_with(), Some(None));
}

#[test]
fn framed_stream_errors() {
    // A stanza before <open/>.
    let mut h = Harness::new(framed());
    h.frame("<message xmlns='jabber:client'/>");
    let out = h.take_written();
    assert!(
        out.contains(
            "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><not-authorized"
        ),
        "{out}"
    );
    assert!(
        out.ends_with("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>|"),
        "{out}"
    );
    assert_eq!(h.closed_with(), Some(Some(StreamCondition::NotAuthorized)));

    // <open/> in the wrong namespace.
    let mut h = Harness::new(framed());
    h.frame("<open xmlns='jabber:client' to='localhost' version='1.0'/>");
    assert_eq!(
        h.closed_with(),
        Some(Some(StreamCondition::InvalidNamespace))
    );

    // Half an element in a message.
    let mut h = Harness::new(framed());
    h.frame(OPEN);
    h.frame("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>");
    assert_eq!(h.closed_with(), Some(Some(StreamCondition::NotWellFormed)));

    // Not XML at all.
    let mut h = Harness::new(framed());
    h.frame(OPEN);
    h.frame("<<<");
    assert_eq!(h.closed_with(), Some(Some(StreamCondition::NotWellFormed)));

    // An unknown domain.
    let mut h = Harness::new(framed());
    h.frame("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='elsewhere' version='1.0'/>");
    assert_eq!(h.closed_with(), Some(Some(StreamCondition::HostUnknown)));
}

#[test]
fn framed_stream_management_asks_for_acks_in_its_own_message() {
    let mut h = Harness::new(framed());
    h.frame(OPEN);
    h.frame(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        plain("alice", "secret")
    ));
    h.frame(OPEN);
    h.frame("<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    h.frame("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    h.take_written();
    for n in 0..2 {
        h.stream.handle_command(
            h.now,
            Command::Send(Bytes::from(format!("<message id='n{n}'/>"))),
        );
    }
    h.pump();
    assert_eq!(
        h.take_written(),
        "<message xmlns='jabber:client' id='n0'/>|<message xmlns='jabber:client' id='n1'/>|<r xmlns='urn:xmpp:sm:3'/>|"
    );
}
