//! BOSH (XEP-0124, XEP-0206) against the running binary, over raw HTTP/1.1 POSTs: session
//! creation and what it negotiates, login and chat with a TCP client, long polls, `wait`,
//! `hold`, requests processed in `rid` order, answers kept for requests sent again, the binding
//! errors that end a session, inactivity, and stream management resumption after it.

use std::time::{Duration, Instant};

use base64::Engine as _;
use tern_tests::client::RawClient;
use tern_tests::server::{TestServer, free_ports, output_text};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const NS: &str = "http://jabber.org/protocol/httpbind";
const SM: &str = "urn:xmpp:sm:3";
const FIRST_RID: u64 = 1_000_000;

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header lines, lowercased.
    headers: String,
    body: String,
}

/// Sends one HTTP/1.1 request and reads the whole answer.
async fn http(port: u16, method: &str, body: &str, extra: &str) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    send_request(&mut s, port, method, body, extra).await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"));
    Answer {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

async fn send_request(s: &mut TcpStream, port: u16, method: &str, body: &str, extra: &str) {
    let request = format!(
        "{method} /http-bind HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\
         Content-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
}

/// POSTs `body`; expects HTTP 200 and returns the `<body/>` answered.
async fn post(port: u16, body: &str) -> String {
    let answer = http(port, "POST", body, "").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer
            .headers
            .contains("content-type: text/xml; charset=utf-8"),
        "{answer:?}"
    );
    answer.body
}

/// The value of attribute `name` in `xml` (first occurrence).
fn attr(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!(" {name}='"))? + name.len() + 3;
    let end = xml[start..].find('\'')? + start;
    Some(xml[start..end].to_owned())
}

/// A BOSH client: its session and the last `rid` it used.
struct Bosh {
    port: u16,
    sid: String,
    rid: u64,
}

impl Bosh {
    /// Creates a session for `localhost` with `attrs` on the creation request; returns the
    /// client and the creation answer.
    async fn create(port: u16, attrs: &str) -> (Self, String) {
        let answer = post(
            port,
            &format!(
                "<body xmlns='{NS}' rid='{FIRST_RID}' to='localhost' xml:lang='en' ver='1.11' \
                 xmlns:xmpp='urn:xmpp:xbosh' xmpp:version='1.0' {attrs}/>"
            ),
        )
        .await;
        let sid = attr(&answer, "sid").unwrap_or_else(|| panic!("no sid in {answer}"));
        (
            Self {
                port,
                sid,
                rid: FIRST_RID,
            },
            answer,
        )
    }

    /// A request body with `rid`, extra `attrs` and `payload`.
    fn body(&self, rid: u64, attrs: &str, payload: &str) -> String {
        format!(
            "<body xmlns='{NS}' sid='{}' rid='{rid}' xmlns:xmpp='urn:xmpp:xbosh' {attrs}>{payload}</body>",
            self.sid
        )
    }

    fn next(&mut self) -> u64 {
        self.rid += 1;
        self.rid
    }

    /// Sends `payload` in the next request and returns the answer.
    async fn send(&mut self, payload: &str) -> String {
        let rid = self.next();
        post(self.port, &self.body(rid, "", payload)).await
    }

    /// Sends the next request in its own task (a long poll); returns its rid and the task.
    fn spawn(&mut self, attrs: &str, payload: &str) -> (u64, tokio::task::JoinHandle<String>) {
        let rid = self.next();
        let body = self.body(rid, attrs, payload);
        let port = self.port;
        (rid, tokio::spawn(async move { post(port, &body).await }))
    }

    /// Authenticates `user` with PLAIN (secure listener), restarts and binds `resource`.
    async fn login(&mut self, user: &str, resource: &str) {
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0pw"));
        let answer = self
            .send(&format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
            ))
            .await;
        assert!(answer.contains("<success"), "{answer}");
        let rid = self.next();
        let features = post(
            self.port,
            &self.body(rid, "to='localhost' xmpp:restart='true'", ""),
        )
        .await;
        assert!(
            features.contains("urn:ietf:params:xml:ns:xmpp-bind"),
            "{features}"
        );
        let bound = self
            .send(&format!(
                "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
            ))
            .await;
        assert!(
            bound.contains(&format!("<jid>{user}@localhost/{resource}</jid>")),
            "{bound}"
        );
    }
}

/// A server with a second, secure HTTP listener (PLAIN offered); returns it and that port.
fn secure_server(tag: &str, extra: &str) -> (TestServer, u16) {
    let [port] = free_ports();
    let server = TestServer::start(
        tag,
        &format!("{extra}\n[[listen.http]]\naddress = \"127.0.0.1:{port}\"\nsecure = true\n"),
    );
    server.register("alice", "localhost", "pw");
    server.register("bob", "localhost", "pw");
    (server, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_created_with_what_it_negotiated() {
    let server = TestServer::start("bosh-create", "");
    let port = server.http_port;
    let (_, answer) = Bosh::create(port, "wait='30' hold='5' ack='1'").await;
    for expected in [
        format!("<body xmlns='{NS}'"),
        "xmlns:xmpp='urn:xmpp:xbosh'".to_owned(),
        "xmlns:stream='http://etherx.jabber.org/streams'".to_owned(),
        // The client's wait, within max_wait; its hold cut to max_hold.
        " wait='30' hold='1' requests='2' inactivity='60' polling='2' maxpause='120'".to_owned(),
        " ver='1.11'".to_owned(),
        " xmpp:version='1.0' xmpp:restartlogic='true'".to_owned(),
        " from='localhost'".to_owned(),
        format!(" ack='{FIRST_RID}'"),
        "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms".to_owned(),
        "<mechanism>SCRAM-SHA-256</mechanism>".to_owned(),
    ] {
        assert!(answer.contains(&expected), "{expected} in {answer}");
    }
    // Plain HTTP: no PLAIN; the stream's own <open/> is not passed on.
    assert!(!answer.contains("PLAIN"), "{answer}");
    assert!(!answer.contains("<open"), "{answer}");
    let sid = attr(&answer, "sid").unwrap();
    assert!(sid.len() >= 32, "{sid}");
    let authid = attr(&answer, "authid").unwrap_or_default();
    assert!(!authid.is_empty(), "{answer}");
    // Without wait and hold: the configured ones; every session its own sid.
    let (other, answer) = Bosh::create(port, "").await;
    assert!(answer.contains(" wait='60' hold='1'"), "{answer}");
    assert_ne!(other.sid, sid);
    assert!(!answer.contains(" ack="), "{answer}");
    // A domain not served ends the session at once.
    let answer = post(
        port,
        &format!("<body xmlns='{NS}' rid='5' to='elsewhere.test' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"),
    )
    .await;
    assert!(
        answer.contains("type='terminate' condition='host-unknown'"),
        "{answer}"
    );
    assert!(answer.contains("<host-unknown"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_level_answers_cors_and_malformed_requests() {
    let server = TestServer::start(
        "bosh-http",
        "[http]\nallowed_origins = [\"https://good.example\"]\nmax_message_size = \"1KiB\"\n",
    );
    let port = server.http_port;
    // Preflight and CORS on every answer for an allowed origin; 403 for another one.
    let preflight = http(port, "OPTIONS", "", "Origin: https://good.example\r\n").await;
    assert_eq!(preflight.status, 200, "{preflight:?}");
    assert!(
        preflight
            .headers
            .contains("access-control-allow-origin: https://good.example"),
        "{preflight:?}"
    );
    assert!(
        preflight
            .headers
            .contains("access-control-allow-methods: get, post, options"),
        "{preflight:?}"
    );
    let creation = format!("<body xmlns='{NS}' rid='1' to='localhost' wait='5' hold='1'/>");
    let allowed = http(port, "POST", &creation, "Origin: https://good.example\r\n").await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert!(
        allowed
            .headers
            .contains("access-control-allow-origin: https://good.example"),
        "{allowed:?}"
    );
    assert!(allowed.body.contains(" sid='"), "{allowed:?}");
    let refused = http(port, "POST", &creation, "Origin: https://evil.example\r\n").await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let refused = http(port, "OPTIONS", "", "Origin: https://evil.example\r\n").await;
    assert_eq!(refused.status, 403, "{refused:?}");

    // Unknown sid, not XML, not <body/>, wrong namespace, no rid: terminal errors, HTTP 200.
    let unknown = post(port, &format!("<body xmlns='{NS}' sid='nope' rid='2'/>")).await;
    assert_eq!(
        unknown,
        format!("<body xmlns='{NS}' type='terminate' condition='item-not-found'/>")
    );
    for bad in [
        "not xml".to_owned(),
        format!("<body xmlns='{NS}' rid='1'"),
        format!("<iq xmlns='{NS}' rid='1'/>"),
        "<body xmlns='jabber:client' rid='1'/>".to_owned(),
        format!("<body xmlns='{NS}' to='localhost'/>"),
        format!("<body xmlns='{NS}' rid='12345678901234567890' to='localhost'/>"),
    ] {
        let answer = post(port, &bad).await;
        assert_eq!(
            answer,
            format!("<body xmlns='{NS}' type='terminate' condition='bad-request'/>"),
            "for {bad}"
        );
    }
    // A malformed request of a session ends it.
    let (mut client, _) = Bosh::create(port, "").await;
    let answer = post(port, &client.body(client.rid + 1, "pause='soon'", "")).await;
    assert!(answer.contains("condition='bad-request'"), "{answer}");
    let answer = client.send("").await;
    assert!(answer.contains("type='terminate'"), "{answer}");
    // Larger than max_message_size: 413.
    let big = format!(
        "<body xmlns='{NS}' rid='1' to='localhost'><message><body>{}</body></message></body>",
        "x".repeat(2048)
    );
    let too_big = http(port, "POST", &big, "").await;
    assert_eq!(too_big.status, 413, "{too_big:?}");
    assert!(
        too_big.body.contains("condition='bad-request'"),
        "{too_big:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bosh_client_logs_in_and_chats_with_a_tcp_client() {
    let (server, port) = secure_server("bosh-chat", "");
    let (mut alice, answer) = Bosh::create(port, "wait='2' hold='1'").await;
    assert!(
        answer.contains("<mechanism>PLAIN</mechanism>"),
        "secure listener: {answer}"
    );
    alice.login("alice", "web").await;

    // A long poll is answered as soon as a message comes.
    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "desk").await;
    let (_, poll) = alice.spawn("", "");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "a long poll waits");
    let sent = Instant::now();
    bob.send(
        "<message to='alice@localhost/web' id='m1' type='chat'><body>over tcp</body></message>",
    )
    .await;
    let got = poll.await.unwrap();
    assert!(sent.elapsed() < Duration::from_secs(1), "answered at once");
    assert!(
        got.contains("<message xmlns='jabber:client'") && got.contains("from='bob@localhost/desk'"),
        "{got}"
    );
    assert!(got.contains("<body>over tcp</body>"), "{got}");

    // And the other way.
    alice
        .send("<message xmlns='jabber:client' to='bob@localhost/desk' id='m2' type='chat'><body>over bosh</body></message>")
        .await;
    let got = bob.read_until("</message>").await;
    assert!(got.contains("from='alice@localhost/web'"), "{got}");
    assert!(got.contains("<body>over bosh</body>"), "{got}");

    // wait: a request with nothing to answer gets an empty body when it runs out.
    let asked = Instant::now();
    let empty = alice.send("").await;
    assert_eq!(empty, format!("<body xmlns='{NS}'/>"));
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // hold: a new request while one is held answers the held one at once, empty.
    let (_, held) = alice.spawn("", "");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pong = alice
        .send("<iq xmlns='jabber:client' type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert!(
        pong.contains("id='p1'") && pong.contains("type='result'"),
        "{pong}"
    );
    let released = tokio::time::timeout(Duration::from_millis(500), held)
        .await
        .expect("the held request is answered")
        .unwrap();
    assert_eq!(released, format!("<body xmlns='{NS}'/>"));

    // The session is listed with its transport.
    let web = server.listed_session("alice@localhost/web");
    assert_eq!(web["transport"], "bosh", "{web}");

    // terminate: its payload goes first, then the session ends and its sid is forgotten.
    let rid = alice.next();
    let bye = post(
        port,
        &alice.body(
            rid,
            "type='terminate'",
            "<presence xmlns='jabber:client' type='unavailable'/>",
        ),
    )
    .await;
    assert!(bye.contains("type='terminate'"), "{bye}");
    assert!(!bye.contains("condition="), "{bye}");
    let gone = post(port, &alice.body(rid + 1, "", "")).await;
    assert!(
        gone.contains("condition='item-not-found'")
            || gone == format!("<body xmlns='{NS}' type='terminate'/>"),
        "{gone}"
    );
    bob.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    bob.read_until("id='r1'").await;
    let listed = output_text(&server.ctl(&["--json", "session", "list"]));
    assert!(!listed.contains("alice@localhost/web"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_processed_in_rid_order_and_no_answer_is_lost() {
    let (server, port) = secure_server("bosh-order", "");
    let (mut alice, _) = Bosh::create(port, "wait='5' hold='1'").await;
    alice.login("alice", "web").await;
    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "desk").await;

    // The second request comes first: it waits for the first, then both go in rid order.
    let first = alice.next();
    let second = alice.next();
    let message = |n: u32| {
        format!(
            "<message xmlns='jabber:client' to='bob@localhost/desk' type='chat'><body>m{n}</body></message>"
        )
    };
    let late = {
        let body = alice.body(second, "", &message(2));
        tokio::spawn(async move { post(port, &body).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        bob.read_for(Duration::from_millis(200)).await.is_empty(),
        "nothing before the missing request"
    );
    let early = {
        let body = alice.body(first, "", &message(1));
        tokio::spawn(async move { post(port, &body).await })
    };
    let got = bob.read_until("<body>m2</body>").await;
    let one = got.find("<body>m1</body>").expect("m1");
    let two = got.find("<body>m2</body>").expect("m2");
    assert!(one < two, "{got}");
    // The older one is released (hold is 1), the newer waits; a message answers it.
    assert_eq!(early.await.unwrap(), format!("<body xmlns='{NS}'/>"));
    bob.send("<message to='alice@localhost/web' type='chat'><body>back</body></message>")
        .await;
    assert!(late.await.unwrap().contains("<body>back</body>"));

    // A long poll whose connection breaks: its answer is kept, and the same rid gets it.
    let rid = alice.next();
    let body = alice.body(rid, "", "");
    let mut broken = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    send_request(&mut broken, port, "POST", &body, "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(broken);
    bob.send("<message to='alice@localhost/web' type='chat'><body>kept</body></message>")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = post(port, &body).await;
    assert!(again.contains("<body>kept</body>"), "{again}");
    let third = post(port, &body).await;
    assert_eq!(third, again, "the same answer each time");
    // A request sent again while the first still waits takes its place.
    let (rid, _first_try) = alice.spawn("", "");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let retry = {
        let body = alice.body(rid, "", "");
        tokio::spawn(async move { post(port, &body).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.send("<message to='alice@localhost/web' type='chat'><body>retried</body></message>")
        .await;
    assert!(retry.await.unwrap().contains("<body>retried</body>"));
    // The session goes on.
    let _going_on = alice.spawn("", &message(3));
    bob.read_until("<body>m3</body>").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_errors_end_the_session() {
    let server = TestServer::start("bosh-errors", "");
    let port = server.http_port;
    let terminate =
        |condition: &str| format!("<body xmlns='{NS}' type='terminate' condition='{condition}'/>");

    // A rid beyond the window, or one long gone.
    let (mut c, _) = Bosh::create(port, "wait='5'").await;
    let answer = post(port, &c.body(c.rid + 3, "", "")).await;
    assert_eq!(answer, terminate("item-not-found"));
    assert_eq!(c.send("").await, terminate("item-not-found"), "ended");
    let (c, _) = Bosh::create(port, "wait='5'").await;
    let answer = post(port, &c.body(c.rid - 5, "", "")).await;
    assert_eq!(answer, terminate("item-not-found"));

    // More requests open at once than `requests` (2): the held one learns it too.
    let (mut c, _) = Bosh::create(port, "wait='5' hold='1'").await;
    let (_, held) = c.spawn("", "");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let skipped = c.next();
    let (_, early) = c.spawn("", "");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = post(port, &c.body(skipped, "", "")).await;
    assert_eq!(answer, terminate("policy-violation"));
    assert_eq!(held.await.unwrap(), terminate("policy-violation"));
    assert_eq!(early.await.unwrap(), terminate("policy-violation"));

    // Empty requests faster than `polling` while one is held.
    let (mut c, _) = Bosh::create(port, "wait='5' hold='1'").await;
    let (_, held) = c.spawn("", "");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.send("").await, terminate("policy-violation"));
    assert_eq!(held.await.unwrap(), terminate("policy-violation"));

    // A pause longer than maxpause.
    let (mut c, _) = Bosh::create(port, "wait='5'").await;
    let rid = c.next();
    let answer = post(port, &c.body(rid, "pause='600'", "")).await;
    assert_eq!(answer, terminate("policy-violation"));

    // A pause within maxpause answers what is held at once.
    let (mut c, _) = Bosh::create(port, "wait='5' hold='1'").await;
    let (_, held) = c.spawn("", "");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rid = c.next();
    let paused = Instant::now();
    let answer = post(port, &c.body(rid, "pause='60'", "")).await;
    assert_eq!(answer, format!("<body xmlns='{NS}'/>"));
    assert_eq!(held.await.unwrap(), format!("<body xmlns='{NS}'/>"));
    assert!(paused.elapsed() < Duration::from_secs(1));
    // Payload before authentication ends the stream: the stream error comes in the body.
    let answer = c
        .send("<message xmlns='jabber:client' to='bob@localhost'/>")
        .await;
    assert!(
        answer.contains("type='terminate' condition='remote-stream-error'"),
        "{answer}"
    );
    assert!(
        answer.contains("<stream:error") && answer.contains("<not-authorized"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_session_waits_for_resumption() {
    let (server, port) = secure_server("bosh-inactive", "[http.bosh]\ninactivity = \"5s\"\n");
    let (mut alice, answer) = Bosh::create(port, "wait='5' hold='1'").await;
    assert!(answer.contains(" inactivity='5'"), "{answer}");
    alice.login("alice", "web").await;
    let enabled = alice
        .send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let previd = attr(&enabled, "id").unwrap_or_else(|| panic!("resumption id in {enabled}"));

    // An unauthenticated session that goes quiet is simply over.
    let (mut quiet, _) = Bosh::create(port, "wait='5'").await;

    // Alice sends no request for longer than `inactivity`: her connection counts as lost.
    let mut bob = RawClient::login(server.starttls_port, "localhost", "bob", "pw", "desk").await;
    tokio::time::sleep(Duration::from_millis(6500)).await;
    bob.send("<message to='alice@localhost/web' type='chat'><body>while away</body></message>")
        .await;
    assert!(
        quiet.send("").await.contains("condition='item-not-found'"),
        "the quiet session is gone"
    );
    assert!(
        alice.send("").await.contains("condition='item-not-found'"),
        "the inactive session is gone"
    );

    // She resumes over TCP and gets what came meanwhile.
    let mut again = RawClient::connect(server.starttls_port, "localhost").await;
    again.starttls().await;
    again.open().await;
    let answer = again.auth_plain("alice", "pw").await;
    assert!(answer.contains("<success"), "{answer}");
    again.open().await;
    again
        .send(&format!("<resume xmlns='{SM}' previd='{previd}' h='0'/>"))
        .await;
    let resumed = again.read_until("<body>while away</body>").await;
    assert!(resumed.contains("<resumed"), "{resumed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_polled_with_hold_zero() {
    let server = TestServer::start(
        "bosh-poll",
        "[http]\nmax_sessions_per_ip = 1\n\n[http.bosh]\npolling = \"1s\"\n",
    );
    let port = server.http_port;
    let (mut c, answer) = Bosh::create(port, "wait='5' hold='0'").await;
    // One session per IP here: a second is refused while the first lives.
    let refused = post(
        port,
        &format!("<body xmlns='{NS}' rid='7' to='localhost' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"),
    )
    .await;
    assert_eq!(
        refused,
        format!("<body xmlns='{NS}' type='terminate' condition='policy-violation'/>")
    );
    assert!(
        answer.contains(" hold='0' requests='2' inactivity='60' polling='1'"),
        "{answer}"
    );
    assert!(answer.contains("<stream:features"), "{answer}");
    // Every request is answered at once; what the stream says comes with the next poll.
    let asked = Instant::now();
    let answer = c
        .send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='BOGUS'/>")
        .await;
    assert_eq!(answer, format!("<body xmlns='{NS}'/>"));
    assert!(asked.elapsed() < Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = c.send("").await;
    assert!(answer.contains("<invalid-mechanism"), "{answer}");
    // Empty polls closer than `polling` end the session.
    assert_eq!(
        c.send("").await,
        format!("<body xmlns='{NS}' type='terminate' condition='policy-violation'/>")
    );
    // Its slot is free again once it is over.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = post(
            port,
            &format!("<body xmlns='{NS}' rid='9' to='localhost' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"),
        )
        .await;
        if answer.contains(" sid='") {
            break;
        }
        assert!(Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
