//! The once-a-second sampler: throughput and latency over time, CPU and memory of the server
//! and of the harness, and the live progress line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::procstat::{Proc, ProcSample, cores_used};
use crate::stats::{Latency, Recorder};

/// Counters the connection tasks bump.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) reordered: AtomicU64,
    /// Messages that came back as errors.
    pub(crate) bounced: AtomicU64,
    /// Failures of connections during the run (closed by the server, write or read errors).
    pub(crate) dropped_connections: AtomicU64,
    /// Largest delay of the send schedule behind real time, microseconds.
    pub(crate) schedule_lag_us: AtomicU64,
    /// Set when the monitor stops sampling.
    pub(crate) stop: AtomicBool,
}

impl Counters {
    pub(crate) fn lag(&self, lag: Duration) {
        let micros = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.schedule_lag_us.fetch_max(micros, Ordering::Relaxed);
    }
}

/// One second of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tick {
    /// Seconds since the run started.
    pub(crate) t_s: f64,
    /// Messages sent in this second.
    pub(crate) sent: u64,
    /// Messages received in this second.
    pub(crate) received: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// CPU of the server, in cores (1.0 = one core busy), if its pid is known.
    pub(crate) server_cores: Option<f64>,
    pub(crate) server_rss_bytes: Option<u64>,
    /// CPU of the harness, in cores.
    pub(crate) harness_cores: f64,
}

/// CPU and memory over a whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Resources {
    /// The first (or only) server process watched.
    pub(crate) server_pid: Option<u32>,
    /// Every server process watched (their CPU and memory are summed).
    #[serde(default)]
    pub(crate) server_pids: Vec<u32>,
    pub(crate) server_cpu_s: Option<f64>,
    pub(crate) server_cores_avg: Option<f64>,
    pub(crate) server_rss_max_bytes: Option<u64>,
    pub(crate) harness_cpu_s: f64,
    pub(crate) harness_cores_avg: f64,
    pub(crate) harness_threads: usize,
    /// Whether the harness was busy enough that it may have been the bottleneck.
    pub(crate) harness_saturated: bool,
    pub(crate) schedule_max_lag_ms: f64,
}

/// CPU of both processes between two moments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    server: Option<ProcSample>,
    harness: Option<ProcSample>,
}

/// Samples every second in a background task until [`Monitor::finish`].
#[derive(Debug)]
pub(crate) struct Monitor {
    pub(crate) counters: Arc<Counters>,
    pub(crate) recorder: Arc<Recorder>,
    server: Option<Proc>,
    harness: Proc,
    threads: usize,
    started: Instant,
    start_span: Span,
    progress: ProgressBar,
    task: Option<tokio::task::JoinHandle<Vec<Tick>>>,
}

impl Monitor {
    pub(crate) fn start(
        counters: Arc<Counters>,
        recorder: Arc<Recorder>,
        server_pids: &[u32],
        threads: usize,
        quiet: bool,
    ) -> Self {
        let progress = if quiet {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(2));
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        };
        let mut monitor = Self {
            counters,
            recorder,
            server: (!server_pids.is_empty()).then(|| Proc::pids(server_pids)),
            harness: Proc::harness(),
            threads,
            started: Instant::now(),
            start_span: Span {
                server: None,
                harness: None,
            },
            progress,
            task: None,
        };
        monitor.start_span = monitor.span();
        monitor.task = Some(tokio::spawn(sample_loop(
            monitor.counters.clone(),
            monitor.recorder.clone(),
            monitor.server.clone(),
            monitor.harness.clone(),
            monitor.started,
            monitor.progress.clone(),
        )));
        monitor
    }

    /// The phase shown on the progress line.
    pub(crate) fn phase(&self, text: impl Into<std::borrow::Cow<'static, str>>) {
        self.progress.set_prefix(text);
    }

    /// Writes a line above the progress line.
    pub(crate) fn println(&self, line: impl AsRef<str>) {
        self.progress.println(line);
    }

    /// The server process being watched, if its pid was given.
    pub(crate) fn server(&self) -> Option<Proc> {
        self.server.clone()
    }

    /// CPU readings of both processes now, to measure a part of the run.
    pub(crate) fn span(&self) -> Span {
        Span {
            server: self.server.as_ref().and_then(Proc::sample),
            harness: self.harness.sample(),
        }
    }

    /// Server CPU seconds between `from` and now.
    pub(crate) fn server_cpu_since(&self, from: &Span) -> Option<f64> {
        let now = self.server.as_ref()?.sample()?;
        Some(now.cpu_s - from.server?.cpu_s)
    }

    /// Harness CPU in cores between `from` and now.
    pub(crate) fn harness_cores_since(&self, from: &Span) -> f64 {
        match (from.harness, self.harness.sample()) {
            (Some(a), Some(b)) => cores_used(&a, &b),
            _ => 0.0,
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops sampling; the time series and the CPU and memory of the whole run.
    pub(crate) async fn finish(mut self) -> (Vec<Tick>, Resources) {
        self.counters.stop.store(true, Ordering::Relaxed);
        let ticks = match self.task.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        self.progress.finish_and_clear();
        let end = self.span();
        let harness_cpu_s = match (self.start_span.harness, end.harness) {
            (Some(a), Some(b)) => b.cpu_s - a.cpu_s,
            _ => 0.0,
        };
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let server_cpu_s = match (self.start_span.server, end.server) {
            (Some(a), Some(b)) => Some(b.cpu_s - a.cpu_s),
            _ => None,
        };
        let harness_cores_avg = harness_cpu_s / wall;
        let busiest_harness = ticks.iter().map(|t| t.harness_cores).fold(0.0, f64::max);
        let lag_ms = self.counters.schedule_lag_us.load(Ordering::Relaxed) as f64 / 1000.0;
        let resources = Resources {
            server_pid: self.server.as_ref().and_then(|p| p.ids().first().copied()),
            server_pids: self
                .server
                .as_ref()
                .map_or_else(Vec::new, |p| p.ids().to_vec()),
            server_cpu_s,
            server_cores_avg: server_cpu_s.map(|s| s / wall),
            server_rss_max_bytes: ticks.iter().filter_map(|t| t.server_rss_bytes).max(),
            harness_cpu_s,
            harness_cores_avg,
            harness_threads: self.threads,
            harness_saturated: busiest_harness >= 0.9 * self.threads as f64 || lag_ms > 100.0,
            schedule_max_lag_ms: lag_ms,
        };
        (ticks, resources)
    }
}

async fn sample_loop(
    counters: Arc<Counters>,
    recorder: Arc<Recorder>,
    server: Option<Proc>,
    harness: Proc,
    started: Instant,
    progress: ProgressBar,
) -> Vec<Tick> {
    let mut ticks = Vec::new();
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    let mut last_server = server.as_ref().and_then(Proc::sample);
    let mut last_harness = harness.sample();
    let (mut last_sent, mut last_received) = (0, 0);
    while !counters.stop.load(Ordering::Relaxed) {
        interval.tick().await;
        let sent = counters.sent.load(Ordering::Relaxed);
        let received = counters.received.load(Ordering::Relaxed);
        let latency = Latency::of(&recorder.take_tick());
        let server_now = server.as_ref().and_then(Proc::sample);
        let harness_now = harness.sample();
        let server_cores = match (&last_server, &server_now) {
            (Some(a), Some(b)) => Some(cores_used(a, b)),
            _ => None,
        };
        let harness_cores = match (&last_harness, &harness_now) {
            (Some(a), Some(b)) => cores_used(a, b),
            _ => 0.0,
        };
        let tick = Tick {
            t_s: started.elapsed().as_secs_f64(),
            sent: sent - last_sent,
            received: received - last_received,
            p50_ms: latency.p50_ms,
            p99_ms: latency.p99_ms,
            server_cores,
            server_rss_bytes: server_now.map(|s| s.rss),
            harness_cores,
        };
        progress.set_message(format!(
            "{} | sent {sent} ({}/s) received {received} ({}/s) p99 {:.1} ms | server {} | harness {:.0}% cpu",
            progress.prefix(),
            tick.sent,
            tick.received,
            tick.p99_ms,
            match (server_cores, tick.server_rss_bytes) {
                (Some(c), Some(rss)) => format!("{:.0}% cpu {} MiB", c * 100.0, rss >> 20),
                _ => "-".to_owned(),
            },
            harness_cores * 100.0,
        ));
        progress.tick();
        ticks.push(tick);
        last_sent = sent;
        last_received = received;
        last_server = server_now;
        last_harness = harness_now;
    }
    ticks
}
