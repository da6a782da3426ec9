//! What a run reports: the JSON summary (stable field names, `schema` bumped on any breaking
//! change), the terminal table, and a self-contained HTML page with SVG plots.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::monitor::{Resources, Tick};
use crate::procstat::Machine;
use crate::stats::{Bucket, Delivery, Latency};

/// Version of the JSON layout.
pub(crate) const SCHEMA: u32 = 1;

/// The JSON summary of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) schema: u32,
    pub(crate) tool: String,
    pub(crate) version: String,
    /// The server under test (`--label`).
    pub(crate) label: String,
    pub(crate) scenario: String,
    /// Seconds since the Unix epoch when the run started.
    pub(crate) started_unix_s: u64,
    pub(crate) duration_s: f64,
    pub(crate) target: Target,
    pub(crate) users: usize,
    pub(crate) machine: Machine,
    pub(crate) provision: Option<ProvisionResult>,
    pub(crate) login: Option<LoginResult>,
    pub(crate) chat: Option<ChatResult>,
    pub(crate) ramp: Option<RampResult>,
    pub(crate) idle: Option<IdleResult>,
    pub(crate) presence: Option<PresenceResult>,
    pub(crate) muc: Option<MucResult>,
    pub(crate) resources: Resources,
    /// Latency distribution of the whole run (chat, presence and room deliveries, or logins).
    pub(crate) latency_buckets: Vec<Bucket>,
    pub(crate) timeline: Vec<Tick>,
    pub(crate) warnings: Vec<String>,
}

/// Where and how the harness connected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Target {
    pub(crate) address: String,
    pub(crate) domain: String,
    pub(crate) tls: String,
    pub(crate) sasl: String,
    /// The HTTP path of an XMPP-over-WebSocket run (RFC 7395); absent for TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) websocket: Option<String>,
}

impl Target {
    /// How the clients connected, in words: `starttls`, `direct`, `WebSocket /ws (wss)`…
    pub(crate) fn transport(&self) -> String {
        match &self.websocket {
            None => self.tls.clone(),
            Some(path) => {
                let scheme = if self.tls == "direct" { "wss" } else { "ws" };
                format!("WebSocket {path} ({scheme})")
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProvisionResult {
    pub(crate) method: String,
    pub(crate) accounts: usize,
    pub(crate) created: usize,
    pub(crate) existed: usize,
    pub(crate) seconds: f64,
    pub(crate) accounts_per_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LoginRound {
    pub(crate) round: u32,
    pub(crate) logins: usize,
    pub(crate) seconds: f64,
    pub(crate) logins_per_s: f64,
    /// Whether the clients had the SCRAM salted passwords cached from an earlier round.
    pub(crate) salted_password_cached: bool,
    pub(crate) latency: Latency,
    pub(crate) server_cpu_ms_per_login: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LoginResult {
    pub(crate) concurrency: usize,
    pub(crate) rounds: Vec<LoginRound>,
    /// The last round's rate (salted passwords cached when there was more than one round).
    pub(crate) logins_per_s: f64,
    pub(crate) latency: Latency,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChatResult {
    pub(crate) target_rate: f64,
    pub(crate) duration_s: f64,
    pub(crate) body_size: usize,
    pub(crate) scheduled: u64,
    /// Messages written per second over the send period.
    pub(crate) send_rate: f64,
    pub(crate) delivery: Delivery,
    /// Messages that came back as errors.
    pub(crate) bounced: u64,
    pub(crate) connection_failures: u64,
    pub(crate) latency: Latency,
    pub(crate) server_cpu_us_per_msg: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RampStep {
    pub(crate) rate: f64,
    pub(crate) send_rate: f64,
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) latency: Latency,
    pub(crate) sustained: bool,
    pub(crate) server_cpu_us_per_msg: Option<f64>,
    pub(crate) server_cores: Option<f64>,
    pub(crate) harness_cores: f64,
    /// Why the step did not count as sustained.
    pub(crate) failed_because: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RampResult {
    pub(crate) p99_bound_ms: f64,
    pub(crate) step_duration_s: f64,
    /// The highest rate with p99 ≤ bound and nothing lost; `None` if even the first failed.
    pub(crate) max_sustained_rate: Option<f64>,
    /// Server CPU per delivered message at that rate.
    pub(crate) server_cpu_us_per_msg: Option<f64>,
    pub(crate) steps: Vec<RampStep>,
    /// Sequence accounting over all steps (late arrivals after a step's drain count here).
    pub(crate) delivery: Delivery,
    pub(crate) connection_failures: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct IdleResult {
    pub(crate) connections: usize,
    pub(crate) hold_s: f64,
    pub(crate) server_rss_before_bytes: Option<u64>,
    pub(crate) server_rss_after_bytes: Option<u64>,
    pub(crate) bytes_per_connection: Option<f64>,
    pub(crate) connection_failures: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct PresenceResult {
    pub(crate) contacts: usize,
    /// Subscriptions in place after set-up (confirmed then, or found in the roster), of
    /// `users × contacts` wanted.
    pub(crate) subscriptions_confirmed: u64,
    /// Logins that fetch the roster and send initial presence.
    pub(crate) roster_login: LoginRound,
    pub(crate) storm_rate: f64,
    pub(crate) storm_duration_s: f64,
    pub(crate) broadcasts: u64,
    /// Presence deliveries to contacts (broadcasts × contacts expected).
    pub(crate) delivery: Delivery,
    pub(crate) deliveries_per_s: f64,
    pub(crate) latency: Latency,
}

/// The `muc` scenario: one room, every user in it, groupchat messages from a few of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct MucResult {
    /// The room's JID.
    pub(crate) room: String,
    /// Occupants: every user, spread over `servers` client listeners.
    pub(crate) occupants: usize,
    pub(crate) servers: usize,
    /// Whether this run created the room (and made it an instant room).
    pub(crate) created: bool,
    /// From the first join sent to the last occupant's own presence back.
    pub(crate) join_seconds: f64,
    pub(crate) joins_per_s: f64,
    /// Join sent → the occupant's own presence (status 110) back.
    pub(crate) join_latency: Latency,
    /// Occupants that send (chosen at random).
    pub(crate) senders: usize,
    pub(crate) target_rate: f64,
    pub(crate) duration_s: f64,
    pub(crate) body_size: usize,
    /// Messages scheduled.
    pub(crate) scheduled: u64,
    /// Messages written to the room.
    pub(crate) messages: u64,
    /// Messages written per second over the send period.
    pub(crate) send_rate: f64,
    /// Deliveries: each message is expected at every occupant, its sender included, so
    /// `delivery.sent` = messages × occupants; pairs are (sender, occupant).
    pub(crate) delivery: Delivery,
    /// Deliveries per second, first send to the end of the drain.
    pub(crate) deliveries_per_s: f64,
    /// Messages that came back as errors, and the first one's condition.
    pub(crate) bounced: u64,
    pub(crate) first_bounce: Option<String>,
    pub(crate) connection_failures: u64,
    /// Scheduled send → receipt, one value per delivery.
    pub(crate) latency: Latency,
    /// Server CPU per delivery (one message at one occupant).
    pub(crate) server_cpu_us_per_msg: Option<f64>,
}

fn ms(latency: &Latency) -> String {
    format!(
        "p50 {:.2} | p90 {:.2} | p99 {:.2} | p99.9 {:.2} | max {:.2} ms",
        latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.p999_ms, latency.max_ms
    )
}

fn delivery_line(d: &Delivery) -> String {
    format!(
        "sent {} delivered {} lost {} duplicates {} reordered {} (pairs {} with loss {})",
        d.sent, d.delivered, d.lost, d.duplicates, d.reordered, d.pairs, d.pairs_with_loss
    )
}

/// The terminal table.
pub(crate) fn table(s: &Summary) -> String {
    let mut rows: Vec<(String, String)> = vec![
        (
            "server".into(),
            format!("{} at {}", s.label, s.target.address),
        ),
        (
            "transport".into(),
            format!(
                "{} + {} ({})",
                s.target.transport(),
                s.target.sasl,
                s.target.domain
            ),
        ),
        (
            "scenario".into(),
            format!("{} ({} users)", s.scenario, s.users),
        ),
        ("duration".into(), format!("{:.1} s", s.duration_s)),
    ];
    if let Some(p) = &s.provision {
        rows.push((
            "provisioning".into(),
            format!(
                "{}: {} accounts ({} new, {} existed) in {:.1} s = {:.0}/s",
                p.method, p.accounts, p.created, p.existed, p.seconds, p.accounts_per_s
            ),
        ));
    }
    if let Some(l) = &s.login {
        for r in &l.rounds {
            rows.push((
                format!("login round {}", r.round),
                format!(
                    "{} logins in {:.2} s = {:.0}/s{}; {}",
                    r.logins,
                    r.seconds,
                    r.logins_per_s,
                    if r.salted_password_cached {
                        " (salted passwords cached)"
                    } else {
                        ""
                    },
                    ms(&r.latency)
                ),
            ));
        }
    }
    if let Some(c) = &s.chat {
        rows.push((
            "chat rate".into(),
            format!(
                "target {:.0}/s, sent {:.0}/s, {} B bodies",
                c.target_rate, c.send_rate, c.body_size
            ),
        ));
        rows.push(("delivery".into(), delivery_line(&c.delivery)));
        rows.push(("latency".into(), ms(&c.latency)));
        if let Some(cpu) = c.server_cpu_us_per_msg {
            rows.push((
                "server cpu".into(),
                format!("{cpu:.1} µs per delivered message"),
            ));
        }
    }
    if let Some(r) = &s.ramp {
        for step in &r.steps {
            rows.push((
                format!("step {:.0}/s", step.rate),
                format!(
                    "{} | sent {:.0}/s lost {} | {}",
                    if step.sustained { "ok  " } else { "FAIL" },
                    step.send_rate,
                    step.lost,
                    ms(&step.latency)
                ) + &step
                    .failed_because
                    .as_ref()
                    .map(|why| format!(" ({why})"))
                    .unwrap_or_default(),
            ));
        }
        rows.push((
            "max sustained".into(),
            match r.max_sustained_rate {
                Some(rate) => format!(
                    "{rate:.0} msgs/s at p99 ≤ {} ms, zero loss{}",
                    r.p99_bound_ms,
                    r.server_cpu_us_per_msg
                        .map(|c| format!(" ({c:.1} µs server cpu per message)"))
                        .unwrap_or_default()
                ),
                None => format!(
                    "none (the first step failed at p99 ≤ {} ms)",
                    r.p99_bound_ms
                ),
            },
        ));
        rows.push(("all steps".into(), delivery_line(&r.delivery)));
    }
    if let Some(i) = &s.idle {
        rows.push((
            "idle".into(),
            format!(
                "{} connections held {:.0} s; server RSS {} → {} MiB; {}",
                i.connections,
                i.hold_s,
                i.server_rss_before_bytes.map_or(0, |b| b >> 20),
                i.server_rss_after_bytes.map_or(0, |b| b >> 20),
                i.bytes_per_connection.map_or_else(
                    || "no --server-pid".to_owned(),
                    |b| format!("{b:.0} B per connection")
                )
            ),
        ));
    }
    if let Some(p) = &s.presence {
        rows.push((
            "roster logins".into(),
            format!(
                "{} contacts each, {} subscriptions in place; {:.0} logins/s; {}",
                p.contacts,
                p.subscriptions_confirmed,
                p.roster_login.logins_per_s,
                ms(&p.roster_login.latency)
            ),
        ));
        rows.push((
            "presence storm".into(),
            format!(
                "{} broadcasts at {:.0}/s → {:.0} deliveries/s; {}",
                p.broadcasts,
                p.storm_rate,
                p.deliveries_per_s,
                ms(&p.latency)
            ),
        ));
        rows.push(("deliveries".into(), delivery_line(&p.delivery)));
    }
    if let Some(m) = &s.muc {
        muc_rows(&mut rows, m);
    }
    let r = &s.resources;
    if let (Some(cpu), Some(cores)) = (r.server_cpu_s, r.server_cores_avg) {
        rows.push((
            "server".into(),
            format!(
                "{cpu:.1} cpu-s ({:.0}% of a core on average), max RSS {} MiB",
                cores * 100.0,
                r.server_rss_max_bytes.unwrap_or(0) >> 20
            ),
        ));
    }
    rows.push((
        "harness".into(),
        format!(
            "{:.1} cpu-s ({:.0}% of a core on average, {} threads), schedule lag max {:.1} ms{}",
            r.harness_cpu_s,
            r.harness_cores_avg * 100.0,
            r.harness_threads,
            r.schedule_max_lag_ms,
            if r.harness_saturated {
                " — SATURATED"
            } else {
                ""
            }
        ),
    ));
    for warning in &s.warnings {
        rows.push(("warning".into(), warning.clone()));
    }
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{key:>width$}  {value}");
    }
    out
}

fn muc_rows(rows: &mut Vec<(String, String)>, m: &MucResult) {
    rows.push((
        "room".into(),
        format!(
            "{}: {} occupants over {} server{}, {} this run",
            m.room,
            m.occupants,
            m.servers,
            if m.servers == 1 { "" } else { "s" },
            if m.created {
                "created"
            } else {
                "existed before"
            }
        ),
    ));
    rows.push((
        "joins".into(),
        format!(
            "{} in {:.2} s = {:.0}/s; {}",
            m.join_latency.count,
            m.join_seconds,
            m.joins_per_s,
            ms(&m.join_latency)
        ),
    ));
    rows.push((
        "muc rate".into(),
        format!(
            "target {:.0}/s from {} senders, sent {:.0}/s, {} B bodies",
            m.target_rate, m.senders, m.send_rate, m.body_size
        ),
    ));
    rows.push((
        "deliveries".into(),
        format!(
            "{} messages × {} occupants = {} expected, {} received = {:.0}/s",
            m.messages, m.occupants, m.delivery.sent, m.delivery.delivered, m.deliveries_per_s
        ),
    ));
    rows.push(("delivery".into(), delivery_line(&m.delivery)));
    if m.bounced > 0 {
        rows.push((
            "bounced".into(),
            format!(
                "{} messages came back as errors (the first: {})",
                m.bounced,
                m.first_bounce.as_deref().unwrap_or("?")
            ),
        ));
    }
    rows.push(("latency".into(), ms(&m.latency)));
    if let Some(cpu) = m.server_cpu_us_per_msg {
        rows.push((
            "server cpu".into(),
            format!(
                "{cpu:.2} µs per delivered message ({:.1} µs per message sent to the room)",
                cpu * m.occupants as f64
            ),
        ));
    }
}

/// One line of a chart: name, colour, points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A line chart as SVG.
fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 260.0;
    const L: f64 = 60.0;
    const B: f64 = 40.0;
    let points = series.iter().flat_map(|s| s.2.iter());
    let (mut x_max, mut y_max) = (0f64, 0f64);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let (x_max, y_max) = (
        if x_max > 0.0 { x_max } else { 1.0 },
        if y_max > 0.0 { y_max * 1.1 } else { 1.0 },
    );
    let sx = |x: f64| L + x / x_max * (W - L - 10.0);
    let sy = |y: f64| H - B - y / y_max * (H - B - 20.0);
    let mut svg = format!(
        "<figure><figcaption>{title}</figcaption><svg viewBox='0 0 {W} {H}' width='{W}' height='{H}' xmlns='http://www.w3.org/2000/svg' font-size='11'>"
    );
    let _ = write!(
        svg,
        "<line x1='{L}' y1='{}' x2='{}' y2='{}' stroke='#333'/><line x1='{L}' y1='20' x2='{L}' y2='{}' stroke='#333'/>",
        H - B,
        W - 10.0,
        H - B,
        H - B
    );
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<text x='{}' y='{}' text-anchor='end'>{}</text><line x1='{L}' y1='{2}' x2='{}' y2='{2}' stroke='#ddd'/>",
            L - 4.0,
            sy(y) + 4.0,
            short(y),
            W - 10.0
        );
        let x = x_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<text x='{}' y='{}' text-anchor='middle'>{}</text>",
            sx(x),
            H - B + 14.0,
            short(x)
        );
    }
    let _ = write!(
        svg,
        "<text x='{}' y='{}' text-anchor='middle'>{x_label}</text><text x='12' y='{}' transform='rotate(-90 12 {})' text-anchor='middle'>{y_label}</text>",
        (L + W) / 2.0,
        H - 6.0,
        H / 2.0,
        H / 2.0
    );
    for (i, (name, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{}'/><text x='{}' y='14' fill='{colour}'>{name}</text>",
            path.join(" "),
            L + 10.0 + 150.0 * i as f64
        );
    }
    svg.push_str("</svg></figure>\n");
    svg
}

/// A bar chart of the latency distribution.
fn histogram_chart(buckets: &[Bucket]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 260.0;
    const B: f64 = 60.0;
    if buckets.is_empty() {
        return String::new();
    }
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64;
    let bar = (W - 20.0) / buckets.len() as f64;
    let mut svg = format!(
        "<figure><figcaption>Latency distribution (count per bucket, upper edge in ms)</figcaption><svg viewBox='0 0 {W} {H}' width='{W}' height='{H}' xmlns='http://www.w3.org/2000/svg' font-size='10'>"
    );
    for (i, b) in buckets.iter().enumerate() {
        let h = b.count as f64 / max * (H - B - 10.0);
        let x = 10.0 + i as f64 * bar;
        let _ = write!(
            svg,
            "<rect x='{x:.1}' y='{:.1}' width='{:.1}' height='{h:.1}' fill='#4a7'><title>≤ {} ms: {}</title></rect>",
            H - B - h,
            (bar - 1.0).max(1.0),
            b.le_ms,
            b.count
        );
        if buckets.len() <= 24 || i % (buckets.len() / 12).max(1) == 0 {
            let _ = write!(
                svg,
                "<text x='{:.1}' y='{}' transform='rotate(60 {0:.1} {1})'>{}</text>",
                x + bar / 2.0,
                H - B + 12.0,
                short(b.le_ms)
            );
        }
    }
    svg.push_str("</svg></figure>\n");
    svg
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The HTML report: the table, the latency histogram and the time series.
pub(crate) fn html(s: &Summary) -> String {
    let mut out = format!(
        "<!doctype html><html><head><meta charset='utf-8'><title>tern-loadtest: {label} {scenario}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f4f4f4;padding:1em}}figure{{margin:1em 0}}figcaption{{font-weight:bold}}</style>\
         </head><body><h1>tern-loadtest: {label}, {scenario}</h1><p>{cpus} CPUs ({model}), kernel {kernel}</p><pre>{table}</pre>\n",
        label = html_escape(&s.label),
        scenario = html_escape(&s.scenario),
        cpus = s.machine.cpus,
        model = html_escape(&s.machine.cpu_model),
        kernel = html_escape(&s.machine.kernel),
        table = html_escape(&table(s)),
    );
    out.push_str(&histogram_chart(&s.latency_buckets));
    let series = |f: fn(&Tick) -> Option<f64>| -> Vec<(f64, f64)> {
        s.timeline
            .iter()
            .filter_map(|t| Some((t.t_s, f(t)?)))
            .collect()
    };
    out.push_str(&line_chart(
        "Throughput over time",
        "seconds",
        "stanzas per second",
        &[
            ("sent/s", "#36c", series(|t| Some(t.sent as f64))),
            ("received/s", "#c63", series(|t| Some(t.received as f64))),
        ],
    ));
    out.push_str(&line_chart(
        "Latency over time (per second)",
        "seconds",
        "ms",
        &[
            ("p50", "#36c", series(|t| Some(t.p50_ms))),
            ("p99", "#c33", series(|t| Some(t.p99_ms))),
        ],
    ));
    out.push_str(&line_chart(
        "CPU over time (1.0 = one core)",
        "seconds",
        "cores",
        &[
            ("server", "#c33", series(|t| t.server_cores)),
            ("harness", "#36c", series(|t| Some(t.harness_cores))),
        ],
    ));
    if let Some(ramp) = &s.ramp {
        let steps =
            |f: fn(&RampStep) -> f64| ramp.steps.iter().map(|st| (st.rate, f(st))).collect();
        out.push_str(&line_chart(
            "Ramp: latency against rate",
            "target msgs/s",
            "ms",
            &[
                ("p50", "#36c", steps(|st| st.latency.p50_ms)),
                ("p99", "#c33", steps(|st| st.latency.p99_ms)),
            ],
        ));
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_with_stable_names() {
        let summary = Summary {
            schema: SCHEMA,
            tool: "tern-loadtest".into(),
            label: "tern".into(),
            scenario: "ramp".into(),
            ramp: Some(RampResult {
                p99_bound_ms: 50.0,
                max_sustained_rate: Some(1234.0),
                ..RampResult::default()
            }),
            ..Summary::default()
        };
        let text = serde_json::to_string_pretty(&summary).expect("json");
        let value: serde_json::Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(value["ramp"]["max_sustained_rate"], 1234.0);
        assert_eq!(value["schema"], SCHEMA);
        assert!(value["chat"].is_null());
        let back: Summary = serde_json::from_str(&text).expect("back");
        assert_eq!(back, summary);
        let page = html(&summary);
        assert!(page.contains("max sustained"));
        assert!(page.contains("1234 msgs/s"));
    }

    #[test]
    fn muc_table_shows_the_room_and_its_deliveries() {
        let summary = Summary {
            scenario: "muc".into(),
            muc: Some(MucResult {
                room: "bench@muc.localhost".into(),
                occupants: 20,
                servers: 3,
                created: true,
                messages: 40,
                delivery: Delivery {
                    sent: 800,
                    delivered: 799,
                    lost: 1,
                    ..Delivery::default()
                },
                bounced: 2,
                first_bounce: Some("resource-constraint".into()),
                server_cpu_us_per_msg: Some(1.5),
                ..MucResult::default()
            }),
            ..Summary::default()
        };
        let table = table(&summary);
        assert!(
            table.contains("bench@muc.localhost: 20 occupants over 3 servers, created this run"),
            "{table}"
        );
        assert!(
            table.contains("40 messages × 20 occupants = 800 expected, 799 received"),
            "{table}"
        );
        assert!(table.contains("the first: resource-constraint"), "{table}");
        assert!(table.contains("1.50 µs per delivered message (30.0 µs per message sent"));
        // Summaries written before the scenario existed still read.
        let mut old = serde_json::to_value(Summary::default()).expect("json");
        old.as_object_mut().expect("object").remove("muc");
        old["resources"]
            .as_object_mut()
            .expect("resources")
            .remove("server_pids");
        let back: Summary = serde_json::from_value(old).expect("old summary");
        assert!(back.muc.is_none());
    }
}
