//! The established server stream: the per-stanza path a client connection takes in the node.
//!
//! A [`ServerStream`] is one per connection, so each iteration gets its own: the setup (direct
//! TLS, SASL PLAIN, resource binding) runs outside the measured routine via `iter_batched`, and
//! the routine feeds the workload through `handle_input` in 4 KiB reads, draining `poll_event`
//! after each read. Every message is framed and well-formedness-checked (by the framer), envelope-parsed and
//! stamped with the bound full JID, exactly as in the node.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Throughput};
use tern_xmpp_proto::sasl::{Mechanism, StoredCredentials};
use tern_xmpp_proto::stream::{Command, Entropy, Event, ServerStream, StreamConfig, TlsPolicy};

use super::workload::{HEADER, Workload};

/// The account the benchmark client logs in as.
const USER: &str = "romeo";
const PASSWORD: &str = "wherefore";
/// The full JID the owner binds, stamped on every stanza.
const BOUND: &str = "romeo@capulet.lit/orchard";

/// Deterministic bytes for stream ids and nonces.
struct CountingEntropy(u8);

impl Entropy for CountingEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

/// What every benchmark stream shares: its config and the stored credentials of [`USER`].
struct Setup {
    config: Arc<StreamConfig>,
    credentials: StoredCredentials,
}

impl Setup {
    fn new() -> Self {
        let config = StreamConfig {
            domains: Arc::new(vec!["capulet.lit".to_owned()]),
            tls: TlsPolicy::AlreadySecure,
            mechanisms: vec![Mechanism::Plain],
            failure_delay: Duration::ZERO,
            ..StreamConfig::default()
        };
        Self {
            config: Arc::new(config),
            // A low iteration count keeps the per-iteration login (outside the measurement) cheap.
            credentials: StoredCredentials::derive(
                PASSWORD,
                b"bench-salt-sha1!",
                b"bench-salt-sha256",
                64,
            ),
        }
    }

    /// A stream that has negotiated direct TLS, SASL PLAIN and binding, with its output drained.
    fn established(&self, now: Instant) -> ServerStream {
        let mut stream =
            ServerStream::new(Arc::clone(&self.config), Box::new(CountingEntropy(0)), now);
        let auth = format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            BASE64.encode(format!("\0{USER}\0{PASSWORD}"))
        );
        let bind = "<iq type='set' id='bind-1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                    <resource>orchard</resource></bind></iq>";
        for segment in [auth.as_bytes(), bind.as_bytes()] {
            stream.handle_input(now, HEADER);
            stream.handle_input(now, segment);
            while let Some(event) = stream.poll_event() {
                let command = match event {
                    Event::CredentialsNeeded { .. } => {
                        Command::Credentials(Some(self.credentials.clone()))
                    }
                    Event::BindRequested { .. } => Command::Bound(BOUND.into()),
                    Event::Authenticated { .. } => continue,
                    other => panic!("unexpected event while logging in: {other:?}"),
                };
                stream.handle_command(now, command);
            }
        }
        let mut out = BytesMut::new();
        stream.poll_transmit(&mut out);
        assert_eq!(
            stream.jid(),
            Some(BOUND),
            "the benchmark stream did not bind"
        );
        assert!(
            !stream.is_closed(),
            "the benchmark stream closed while logging in"
        );
        stream
    }
}

/// Feeds the workload to an established stream; returns how many stanzas came out stamped.
fn feed(stream: &mut ServerStream, workload: &Workload, now: Instant) -> usize {
    let mut stanzas = 0;
    for chunk in workload.chunks() {
        stream.handle_input(now, chunk);
        while let Some(event) = stream.poll_event() {
            match event {
                Event::Stanza(stanza) => {
                    stanzas += usize::from(stanza.from() == Some(BOUND));
                    black_box(stanza);
                }
                other => panic!("unexpected event on the established stream: {other:?}"),
            }
        }
    }
    stanzas
}

/// Registers the established-stream benchmark in `group`.
pub(crate) fn bench(group: &mut BenchmarkGroup<'_, WallTime>, workload: &Workload) {
    let setup = Setup::new();
    let now = Instant::now();
    let mut check = setup.established(now);
    assert_eq!(
        feed(&mut check, workload, now),
        workload.count,
        "the established stream must stamp every stanza of the workload"
    );
    let mut out = BytesMut::new();
    assert!(
        !check.poll_transmit(&mut out),
        "the stream answered a plain message: {out:?}"
    );
    group.throughput(Throughput::Elements(workload.count as u64));
    group.bench_function("established stream", |b| {
        b.iter_batched(
            || setup.established(now),
            |mut stream| {
                let stanzas = feed(&mut stream, black_box(workload), now);
                // The stream is returned so that dropping it is not measured.
                (stream, stanzas)
            },
            BatchSize::PerIteration,
        );
    });
}
