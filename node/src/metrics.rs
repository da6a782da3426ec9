//! Prometheus metrics, kept in atomics and rendered as text at `/metrics` on the admin listener.
//!
//! Names follow `tern_<subsystem>_<thing>_<unit>` (STYLE.md §6). The set is fixed and small, so
//! plain atomics are enough: no registry, no locks on the hot path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tern_gd_mesh::LinkStatus;
use tern_xmpp_proto::StanzaKind;
use tern_xmpp_proto::sasl::Mechanism;

/// Client transports, the `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP with STARTTLS (port 5222).
    StartTls,
    /// Direct TLS, XEP-0368 (port 5223).
    DirectTls,
    /// XMPP over WebSocket, RFC 7395 (`/ws` on the HTTP listeners).
    WebSocket,
    /// BOSH, XEP-0124/0206 (`/http-bind` on the HTTP listeners).
    Bosh,
}

impl Transport {
    /// The transport with label value `label`.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == label)
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartTls => "c2s_starttls",
            Self::DirectTls => "c2s_tls",
            Self::WebSocket => "websocket",
            Self::Bosh => "bosh",
        }
    }

    const ALL: [Self; 4] = [Self::StartTls, Self::DirectTls, Self::WebSocket, Self::Bosh];

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the routing latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.1,
];

const KINDS: [StanzaKind; 3] = [StanzaKind::Message, StanzaKind::Presence, StanzaKind::Iq];

fn kind_index(kind: StanzaKind) -> usize {
    match kind {
        StanzaKind::Message => 0,
        StanzaKind::Presence => 1,
        StanzaKind::Iq => 2,
    }
}

fn mechanism_index(m: Mechanism) -> usize {
    Mechanism::ALL.iter().position(|x| *x == m).unwrap_or(0)
}

/// The node's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    connections_total: [AtomicU64; 4],
    connections_open: [AtomicI64; 4],
    logins: [AtomicU64; 5],
    auth_failures: [AtomicU64; 5],
    stanzas_in: [AtomicU64; 3],
    stanzas_out: [AtomicU64; 3],
    sessions_online: AtomicI64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
    stanzas_bounced: AtomicU64,
    mesh_sent: AtomicU64,
    mesh_received: AtomicU64,
    sm_resumed: AtomicU64,
    sm_resume_failed: AtomicU64,
    sm_detached: AtomicI64,
}

impl Metrics {
    /// A connection was accepted.
    pub fn connection_opened(&self, t: Transport) {
        self.connections_total[t.index()].fetch_add(1, Ordering::Relaxed);
        self.connections_open[t.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection ended.
    pub fn connection_closed(&self, t: Transport) {
        self.connections_open[t.index()].fetch_sub(1, Ordering::Relaxed);
    }

    /// A successful SASL authentication.
    pub fn login(&self, m: Mechanism) {
        self.logins[mechanism_index(m)].fetch_add(1, Ordering::Relaxed);
    }

    /// A failed SASL authentication.
    pub fn auth_failure(&self, m: Mechanism) {
        self.auth_failures[mechanism_index(m)].fetch_add(1, Ordering::Relaxed);
    }

    /// A stanza received from a client.
    pub fn stanza_in(&self, kind: StanzaKind) {
        self.stanzas_in[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    /// A stanza delivered to a client.
    pub fn stanza_out(&self, kind: StanzaKind) {
        self.stanzas_out[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    /// A stanza answered with an error instead of being delivered.
    pub fn stanza_bounced(&self) {
        self.stanzas_bounced.fetch_add(1, Ordering::Relaxed);
    }

    /// A stanza handed to a bridge for another datacenter.
    pub fn mesh_sent(&self) {
        self.mesh_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A stanza delivered by a bridge from another datacenter.
    pub fn mesh_received(&self) {
        self.mesh_received.fetch_add(1, Ordering::Relaxed);
    }

    /// A session was bound (+1) or ended (-1).
    pub fn sessions_changed(&self, delta: i64) {
        self.sessions_online.fetch_add(delta, Ordering::Relaxed);
    }

    /// Sessions online now.
    pub fn sessions_online(&self) -> i64 {
        self.sessions_online.load(Ordering::Relaxed)
    }

    /// A XEP-0198 resumption succeeded (`true`) or was refused.
    pub fn resumption(&self, ok: bool) {
        let counter = if ok {
            &self.sm_resumed
        } else {
            &self.sm_resume_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A session lost its connection and waits to be resumed (+1), or stopped waiting (-1).
    pub fn detached_changed(&self, delta: i64) {
        self.sm_detached.fetch_add(delta, Ordering::Relaxed);
    }

    /// Time the router took for one stanza.
    pub fn routed(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP tern_c2s_connections_total Client connections accepted."
        );
        let _ = writeln!(out, "# TYPE tern_c2s_connections_total counter");
        for t in Transport::ALL {
            let _ = writeln!(
                out,
                "tern_c2s_connections_total{{transport=\"{}\"}} {}",
                t.as_str(),
                load(&self.connections_total[t.index()])
            );
        }
        let _ = writeln!(
            out,
            "# HELP tern_c2s_connections Client connections open now."
        );
        let _ = writeln!(out, "# TYPE tern_c2s_connections gauge");
        for t in Transport::ALL {
            let _ = writeln!(
                out,
                "tern_c2s_connections{{transport=\"{}\"}} {}",
                t.as_str(),
                self.connections_open[t.index()].load(Ordering::Relaxed)
            );
        }
        for (name, help, values) in [
            (
                "tern_sasl_logins_total",
                "Successful SASL authentications.",
                &self.logins,
            ),
            (
                "tern_sasl_auth_failures_total",
                "Failed SASL authentications.",
                &self.auth_failures,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for m in Mechanism::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{mechanism=\"{}\"}} {}",
                    m.name(),
                    load(&values[mechanism_index(m)])
                );
            }
        }
        for (name, help, values) in [
            (
                "tern_stanzas_in_total",
                "Stanzas received from clients.",
                &self.stanzas_in,
            ),
            (
                "tern_stanzas_out_total",
                "Stanzas delivered to clients.",
                &self.stanzas_out,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for k in KINDS {
                let _ = writeln!(
                    out,
                    "{name}{{kind=\"{}\"}} {}",
                    k.as_str(),
                    load(&values[kind_index(k)])
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tern_router_bounced_total Stanzas answered with an error."
        );
        let _ = writeln!(out, "# TYPE tern_router_bounced_total counter");
        let _ = writeln!(
            out,
            "tern_router_bounced_total {}",
            load(&self.stanzas_bounced)
        );
        let _ = writeln!(
            out,
            "# HELP tern_sm_sessions Sessions online (bound resources)."
        );
        let _ = writeln!(out, "# TYPE tern_sm_sessions gauge");
        let _ = writeln!(out, "tern_sm_sessions {}", self.sessions_online());
        let _ = writeln!(
            out,
            "# HELP tern_router_latency_seconds Time from receiving a stanza to handing it to its destination."
        );
        let _ = writeln!(out, "# TYPE tern_router_latency_seconds histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += load(&self.latency_buckets[i]);
            let _ = writeln!(
                out,
                "tern_router_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = load(&self.latency_count);
        let _ = writeln!(
            out,
            "tern_router_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "tern_router_latency_seconds_sum {}",
            load(&self.latency_sum_nanos) as f64 / 1e9
        );
        let _ = writeln!(out, "tern_router_latency_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP tern_mesh_stanzas_sent_total Stanzas handed to a bridge for another datacenter."
        );
        let _ = writeln!(out, "# TYPE tern_mesh_stanzas_sent_total counter");
        let _ = writeln!(
            out,
            "tern_mesh_stanzas_sent_total {}",
            load(&self.mesh_sent)
        );
        let _ = writeln!(
            out,
            "# HELP tern_mesh_stanzas_received_total Stanzas delivered by a bridge from another datacenter."
        );
        let _ = writeln!(out, "# TYPE tern_mesh_stanzas_received_total counter");
        let _ = writeln!(
            out,
            "tern_mesh_stanzas_received_total {}",
            load(&self.mesh_received)
        );
        for (name, help, value) in [
            (
                "tern_c2s_resumptions_total",
                "XEP-0198 stream resumptions that succeeded.",
                load(&self.sm_resumed),
            ),
            (
                "tern_c2s_resumption_failures_total",
                "XEP-0198 stream resumptions refused (unknown, expired or invalid).",
                load(&self.sm_resume_failed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP tern_c2s_sessions_detached Sessions whose connection was lost, waiting to be resumed."
        );
        let _ = writeln!(out, "# TYPE tern_c2s_sessions_detached gauge");
        let _ = writeln!(
            out,
            "tern_c2s_sessions_detached {}",
            self.sm_detached.load(Ordering::Relaxed)
        );
        out
    }
}

/// One per-peer series of the bridges' health: name, type, help, value.
type LinkSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&LinkStatus) -> f64,
);

/// The bridges' health, one series per peer datacenter: up, round-trip time, envelopes waiting
/// for an acknowledgement and those of them in flight, connections made.
pub fn render_links(links: &[LinkStatus]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let series: [LinkSeries; 5] = [
        (
            "tern_mesh_link_up",
            "gauge",
            "Whether the bridge to a datacenter is up (1) or not (0).",
            |l| f64::from(u8::from(l.connected)),
        ),
        (
            "tern_mesh_link_rtt_seconds",
            "gauge",
            "Round-trip time of the bridge to a datacenter (0 while down).",
            |l| l.rtt.map_or(0.0, |d| d.as_secs_f64()),
        ),
        (
            "tern_mesh_queue_envelopes",
            "gauge",
            "Envelopes waiting for a datacenter's acknowledgement.",
            |l| l.queued as f64,
        ),
        (
            "tern_mesh_in_flight_envelopes",
            "gauge",
            "Envelopes sent to a datacenter on the current connection and not acknowledged yet.",
            |l| l.in_flight as f64,
        ),
        (
            "tern_mesh_link_connects_total",
            "counter",
            "Connections made to a datacenter (reconnects included).",
            |l| l.connects as f64,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for link in links {
            let _ = writeln!(out, "{name}{{peer=\"{}\"}} {}", link.dc, value(link));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_health_has_one_series_per_peer() {
        let links = [LinkStatus {
            dc: "dc2".into(),
            connected: true,
            rtt: Some(Duration::from_millis(40)),
            queued: 3,
            in_flight: 1,
            connects: 2,
            unreachable_for: None,
        }];
        let text = render_links(&links);
        assert!(text.contains("tern_mesh_link_up{peer=\"dc2\"} 1"), "{text}");
        assert!(
            text.contains("tern_mesh_link_rtt_seconds{peer=\"dc2\"} 0.04"),
            "{text}"
        );
        assert!(
            text.contains("tern_mesh_queue_envelopes{peer=\"dc2\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("tern_mesh_link_connects_total{peer=\"dc2\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.connection_opened(Transport::DirectTls);
        m.login(Mechanism::ScramSha256);
        m.auth_failure(Mechanism::Plain);
        m.stanza_in(StanzaKind::Message);
        m.stanza_out(StanzaKind::Presence);
        m.sessions_changed(2);
        m.routed(Duration::from_micros(30));
        m.routed(Duration::from_secs(1));
        let text = m.render();
        assert!(text.contains("tern_c2s_connections_total{transport=\"c2s_tls\"} 1"));
        assert!(text.contains("tern_c2s_connections{transport=\"c2s_tls\"} 1"));
        assert!(text.contains("tern_sasl_logins_total{mechanism=\"SCRAM-SHA-256\"} 1"));
        assert!(text.contains("tern_sasl_auth_failures_total{mechanism=\"PLAIN\"} 1"));
        assert!(text.contains("tern_stanzas_in_total{kind=\"message\"} 1"));
        assert!(text.contains("tern_stanzas_out_total{kind=\"presence\"} 1"));
        assert!(text.contains("tern_sm_sessions 2"));
        assert!(text.contains("tern_router_latency_seconds_bucket{le=\"0.00005\"} 1"));
        assert!(text.contains("tern_router_latency_seconds_bucket{le=\"0.1\"} 1"));
        assert!(text.contains("tern_router_latency_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("tern_router_latency_seconds_count 2"));
    }
}
