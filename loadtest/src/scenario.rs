//! The scenarios: each logs users in, drives load, and fills its part of the [`Summary`].
//! `muc` lives in its own module.

mod muc;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};

use crate::cli::{
    ChatArgs, Global, IdleArgs, LoginArgs, PresenceArgs, RampArgs, SaslChoice, Scenario, TlsMode,
};
use crate::client::{Client, Conn};
use crate::monitor::{Counters, Monitor};
use crate::procstat::{Machine, Proc};
use crate::provision::provision;
use crate::report::{
    ChatResult, IdleResult, LoginResult, LoginRound, PresenceResult, RampResult, RampStep, SCHEMA,
    Summary, Target,
};
use crate::stats::{Latency, Recorder, buckets};
use crate::swarm::{Load, Swarm, close_all, login_all};

/// Latency histogram shards (a few per harness thread).
const SHARDS: usize = 16;
/// Pause after everyone logged in, so initial presence is processed before load starts.
const SETTLE: Duration = Duration::from_secs(1);
/// With `--server-pid`, load starts only once the server's CPU falls below this share of a
/// core over one second (it has finished the logins' work), or after [`SETTLE_MAX`].
const SETTLED_CORES: f64 = 0.2;
/// The longest wait for the server to settle.
const SETTLE_MAX: Duration = Duration::from_secs(60);

/// Everything a scenario works with.
struct Run<'a> {
    global: &'a Global,
    client: Arc<Client>,
    monitor: Monitor,
    summary: Summary,
}

impl Run<'_> {
    fn counters(&self) -> &Arc<Counters> {
        &self.monitor.counters
    }

    fn recorder(&self) -> &Arc<Recorder> {
        &self.monitor.recorder
    }

    /// Logs every user in (all must succeed) and hands them to a swarm.
    async fn swarm(&self, roster: bool, body_size: usize) -> Result<Swarm> {
        Ok(self.swarm_with_contacts(roster, body_size).await?.0)
    }

    /// [`Run::swarm`], also returning each user's number of mutual contacts at login.
    async fn swarm_with_contacts(
        &self,
        roster: bool,
        body_size: usize,
    ) -> Result<(Swarm, Vec<usize>)> {
        let conns = self.login_everyone(roster).await?;
        let contacts = conns.iter().map(|c| c.mutual_contacts).collect();
        let swarm = Swarm::new(
            &self.client,
            conns,
            self.counters().clone(),
            self.recorder().clone(),
            body_size,
        );
        self.before_load().await;
        Ok((swarm, contacts))
    }

    /// Logs every user in, with initial presence (all must succeed).
    async fn login_everyone(&self, roster: bool) -> Result<Vec<Conn>> {
        self.monitor
            .phase(format!("logging {} users in", self.global.users));
        login_all(
            &self.client,
            self.global.users,
            self.global.concurrency,
            (roster, true),
            |_| {},
        )
        .await
        .all()
    }

    /// Lets the server finish what the set-up gave it, then starts a new latency window.
    async fn before_load(&self) {
        tokio::time::sleep(SETTLE).await;
        self.settle().await;
        self.recorder().take_window();
    }

    /// Waits until the server is idle again (when its pid is known): a slow server may still be
    /// working through a login storm, which is not what the next measurement is about.
    async fn settle(&self) {
        let Some(server) = self.monitor.server() else {
            return;
        };
        self.monitor.phase("waiting for the server to settle");
        let deadline = Instant::now() + SETTLE_MAX;
        let mut last = server.sample();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = server.sample();
            match (&last, &now) {
                (Some(a), Some(b)) if crate::procstat::cores_used(a, b) < SETTLED_CORES => return,
                (Some(_), Some(_)) => {}
                _ => return,
            }
            last = now;
        }
    }

    /// Waits until the writers have written `scheduled` stanzas (they may trail the schedule).
    async fn written(&self, scheduled: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.counters().sent.load(Ordering::Relaxed) < scheduled && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Runs one scenario and returns its summary.
pub(crate) async fn run(global: &Global, scenario: &Scenario, threads: usize) -> Result<Summary> {
    let client = Client::new(global);
    let monitor = Monitor::start(
        Arc::new(Counters::default()),
        Arc::new(Recorder::new(SHARDS)),
        &global.server_pid,
        threads,
        global.quiet,
    );
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut run = Run {
        global,
        client,
        monitor,
        summary: Summary {
            schema: SCHEMA,
            tool: "tern-loadtest".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            label: global.label.clone(),
            scenario: scenario.name().into(),
            started_unix_s,
            target: Target {
                address: global.server.to_string(),
                domain: global.domain.clone(),
                // A WebSocket has no STARTTLS: it is plain unless TLS is direct.
                tls: match (global.tls, &global.websocket) {
                    (TlsMode::Starttls, Some(_)) => "none".into(),
                    (tls, _) => format!("{tls:?}").to_lowercase(),
                },
                sasl: global.sasl.name().into(),
                websocket: global.websocket.clone(),
            },
            users: global.users,
            machine: Machine::read(),
            ..Summary::default()
        },
    };
    if let Some(pid) = global
        .server_pid
        .iter()
        .find(|&&pid| Proc::pids(&[pid]).sample().is_none())
    {
        bail!("--server-pid {pid}: no such process");
    }
    run.monitor.phase("provisioning");
    run.summary.provision = provision(global, &run.client, global.users).await?;
    match scenario {
        Scenario::Provision => {}
        Scenario::Login(args) => login(&mut run, args).await?,
        Scenario::Chat(args) => chat(&mut run, args).await?,
        Scenario::Ramp(args) => ramp(&mut run, args).await?,
        Scenario::Idle(args) => idle(&mut run, args).await?,
        Scenario::Presence(args) => presence(&mut run, args).await?,
        Scenario::Muc(args) => muc::muc(&mut run, args).await?,
        Scenario::Run(_) | Scenario::Compare(_) => bail!("not a load scenario"),
    }
    run.summary.duration_s = run.monitor.elapsed().as_secs_f64();
    let Run {
        monitor,
        mut summary,
        ..
    } = run;
    let (timeline, resources) = monitor.finish().await;
    if resources.harness_saturated {
        summary.warnings.push(format!(
            "the harness was saturated (up to {:.0}% of its {} threads busy, schedule lag up to {:.0} ms): its figures are a lower bound for the server",
            timeline.iter().map(|t| t.harness_cores).fold(0.0, f64::max) * 100.0 / resources.harness_threads.max(1) as f64,
            resources.harness_threads,
            resources.schedule_max_lag_ms
        ));
    }
    summary.timeline = timeline;
    summary.resources = resources;
    Ok(summary)
}

async fn login(run: &mut Run<'_>, args: &LoginArgs) -> Result<()> {
    let global = run.global;
    let mut rounds = Vec::new();
    for round in 1..=args.rounds.max(1) {
        run.monitor.phase(format!("login round {round}"));
        let span = run.monitor.span();
        let started = Instant::now();
        let counters = run.counters().clone();
        let batch = login_all(
            &run.client,
            global.users,
            global.concurrency,
            (false, true),
            move |_| {
                counters.received.fetch_add(1, Ordering::Relaxed);
            },
        )
        .await;
        let seconds = started.elapsed().as_secs_f64();
        let cpu = run.monitor.server_cpu_since(&span);
        if let Some(error) = &batch.first_error {
            run.summary.warnings.push(format!(
                "round {round}: {} logins failed: {error}",
                batch.failures
            ));
        }
        let logins = batch.conns.len();
        ensure!(
            logins > 0,
            "every login failed: {}",
            batch.first_error.unwrap_or_default()
        );
        rounds.push(LoginRound {
            round,
            logins,
            seconds,
            logins_per_s: logins as f64 / seconds.max(1e-9),
            salted_password_cached: round > 1 && global.sasl != SaslChoice::Plain,
            latency: Latency::of(&batch.latency),
            server_cpu_ms_per_login: cpu.map(|c| c * 1000.0 / logins as f64),
        });
        run.summary.latency_buckets = buckets(&batch.latency);
        run.monitor.phase("closing");
        close_all(batch.conns).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let last = rounds.last().cloned().unwrap_or_default();
    run.summary.login = Some(LoginResult {
        concurrency: global.concurrency,
        logins_per_s: last.logins_per_s,
        latency: last.latency,
        rounds,
    });
    Ok(())
}

async fn chat(run: &mut Run<'_>, args: &ChatArgs) -> Result<()> {
    ensure!(run.global.users >= 2, "chat needs at least 2 users");
    let swarm = run.swarm(false, args.body_size).await?;
    run.monitor.phase(format!("chat at {:.0}/s", args.rate));
    let span = run.monitor.span();
    let started = Instant::now();
    let scheduled = swarm
        .run_schedule(args.rate, args.duration, Load::Chat)
        .await;
    run.written(scheduled, args.drain).await;
    let send_seconds = started.elapsed().as_secs_f64();
    let sent = run.counters().sent.load(Ordering::Relaxed);
    run.monitor.phase("draining");
    swarm.drain(sent, args.drain).await;
    let cpu = run.monitor.server_cpu_since(&span);
    let window = run.recorder().take_window();
    let ledger = swarm.finish(|_| Vec::new()).await;
    let counters = run.counters().clone();
    let delivery = ledger.verdict(
        counters.duplicates.load(Ordering::Relaxed),
        counters.reordered.load(Ordering::Relaxed),
    );
    run.summary.latency_buckets = buckets(&window);
    run.summary.chat = Some(ChatResult {
        target_rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        body_size: args.body_size,
        scheduled,
        send_rate: sent as f64 / send_seconds.max(1e-9),
        bounced: counters.bounced.load(Ordering::Relaxed),
        connection_failures: counters.dropped_connections.load(Ordering::Relaxed),
        latency: Latency::of(&window),
        server_cpu_us_per_msg: cpu
            .filter(|_| delivery.delivered > 0)
            .map(|c| c * 1e6 / delivery.delivered as f64),
        delivery,
    });
    Ok(())
}

async fn ramp(run: &mut Run<'_>, args: &RampArgs) -> Result<()> {
    ensure!(run.global.users >= 2, "ramp needs at least 2 users");
    ensure!(args.factor > 1.0, "--factor must be above 1");
    let swarm = run.swarm(false, args.body_size).await?;
    let mut steps: Vec<RampStep> = Vec::new();
    let mut good: Option<f64> = None;
    let mut bad: Option<f64> = None;
    let mut rate = args.start;
    let mut refinements = 0;
    let mut overall = run.recorder().take_window();
    loop {
        let step = ramp_step(run, &swarm, rate, args).await;
        overall.add(&step.1).ok();
        let step = step.0;
        run.monitor.println(format!(
            "{:>9.0}/s  {}  sent {:.0}/s lost {} p99 {:.2} ms",
            step.rate,
            if step.sustained { "ok  " } else { "FAIL" },
            step.send_rate,
            step.lost,
            step.latency.p99_ms
        ));
        if step.sustained {
            good = Some(good.map_or(rate, |g: f64| g.max(rate)));
        } else {
            bad = Some(bad.map_or(rate, |b: f64| b.min(rate)));
        }
        steps.push(step);
        let failures = run.counters().dropped_connections.load(Ordering::Relaxed);
        if failures > 0 {
            // Connections are gone (the server closed them, or died): later steps would
            // measure fewer users, so the ramp ends here.
            run.summary.warnings.push(format!(
                "the ramp stopped after {failures} connection failures"
            ));
            break;
        }
        let next = match (good, bad) {
            (_, None) => rate * args.factor,
            (Some(g), Some(b)) if refinements < args.refine && b / g > 1.02 => {
                refinements += 1;
                (g + b) / 2.0
            }
            _ => break,
        };
        if next > args.max_rate {
            break;
        }
        rate = next;
    }
    let ledger = swarm.finish(|_| Vec::new()).await;
    let counters = run.counters().clone();
    let delivery = ledger.verdict(
        counters.duplicates.load(Ordering::Relaxed),
        counters.reordered.load(Ordering::Relaxed),
    );
    let best = steps
        .iter()
        .filter(|s| s.sustained)
        .max_by(|a, b| a.rate.total_cmp(&b.rate));
    run.summary.latency_buckets = buckets(&overall);
    run.summary.ramp = Some(RampResult {
        p99_bound_ms: args.p99_ms,
        step_duration_s: args.step_duration.as_secs_f64(),
        max_sustained_rate: best.map(|s| s.rate),
        server_cpu_us_per_msg: best.and_then(|s| s.server_cpu_us_per_msg),
        delivery,
        connection_failures: counters.dropped_connections.load(Ordering::Relaxed),
        steps,
    });
    Ok(())
}

/// One ramp step at `rate`; returns the step and its latency histogram.
async fn ramp_step(
    run: &Run<'_>,
    swarm: &Swarm,
    rate: f64,
    args: &RampArgs,
) -> (RampStep, crate::stats::Hist) {
    let counters = run.counters();
    run.monitor.phase(format!("ramp step {rate:.0}/s"));
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let sent_before = load(&counters.sent);
    let received_before = load(&counters.received);
    let duplicates_before = load(&counters.duplicates);
    let failures_before = load(&counters.dropped_connections);
    let span = run.monitor.span();
    let started = Instant::now();
    let scheduled = swarm
        .run_schedule(rate, args.step_duration, Load::Chat)
        .await;
    run.written(sent_before + scheduled, args.drain).await;
    let send_seconds = started.elapsed().as_secs_f64();
    let sent_now = load(&counters.sent);
    swarm.drain(sent_now, args.drain).await;
    let server_cpu = run.monitor.server_cpu_since(&span);
    let harness_cores = run.monitor.harness_cores_since(&span);
    let wall = started.elapsed().as_secs_f64();
    let window = run.recorder().take_window();
    let latency = Latency::of(&window);
    let sent = sent_now - sent_before;
    let delivered = load(&counters.received) - received_before;
    let lost = sent.saturating_sub(delivered);
    let duplicates = load(&counters.duplicates) - duplicates_before;
    let failures = load(&counters.dropped_connections) - failures_before;
    let send_rate = sent as f64 / send_seconds.max(1e-9);
    let failed_because = if sent < scheduled {
        Some(format!(
            "only {sent} of {scheduled} scheduled messages were written"
        ))
    } else if failures > 0 {
        Some(format!("{failures} connection failures"))
    } else if lost > 0 {
        Some(format!(
            "{lost} messages not delivered within the drain time"
        ))
    } else if duplicates > 0 {
        Some(format!("{duplicates} duplicates"))
    } else if latency.p99_ms > args.p99_ms {
        Some(format!("p99 {:.1} ms > {} ms", latency.p99_ms, args.p99_ms))
    } else if send_rate < rate * 0.95 {
        Some(format!("the harness sent only {send_rate:.0}/s"))
    } else {
        None
    };
    let step = RampStep {
        rate,
        send_rate,
        sent,
        delivered,
        lost,
        duplicates,
        latency,
        sustained: failed_because.is_none(),
        server_cpu_us_per_msg: server_cpu
            .filter(|_| delivered > 0)
            .map(|c| c * 1e6 / delivered as f64),
        server_cores: server_cpu.map(|c| c / wall.max(1e-9)),
        harness_cores,
        failed_because,
    };
    if !step.sustained {
        // Let a backlog clear before the next step.
        swarm.drain(sent_now, args.drain).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        run.recorder().take_window();
    }
    (step, window)
}

async fn idle(run: &mut Run<'_>, args: &IdleArgs) -> Result<()> {
    let server = run.monitor.server();
    let before = server.as_ref().and_then(Proc::sample).map(|s| s.rss);
    let swarm = run.swarm(true, 0).await?;
    run.monitor
        .phase(format!("holding {} connections", swarm.len()));
    tokio::time::sleep(args.hold).await;
    // Then until the server's RSS settles: two reads a second apart within 1% (30 s at most).
    let mut after = server.as_ref().and_then(Proc::sample).map(|s| s.rss);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = server.as_ref().and_then(Proc::sample).map(|s| s.rss);
        let settled = match (after, now) {
            (Some(a), Some(b)) => a.abs_diff(b) * 100 <= a,
            _ => true,
        };
        after = now;
        if settled {
            break;
        }
    }
    let connections = swarm.len();
    swarm.finish(|_| Vec::new()).await;
    run.summary.idle = Some(IdleResult {
        connections,
        hold_s: args.hold.as_secs_f64(),
        server_rss_before_bytes: before,
        server_rss_after_bytes: after,
        bytes_per_connection: before
            .zip(after)
            .map(|(b, a)| (a as f64 - b as f64) / connections.max(1) as f64),
        connection_failures: run.counters().dropped_connections.load(Ordering::Relaxed),
    });
    Ok(())
}

/// The contacts of user `i` of `users`: the `contacts / 2` users on each side, wrapping around.
fn contacts_of(i: u32, users: u32, contacts: u32) -> Vec<u32> {
    (1..=contacts / 2)
        .flat_map(|d| [(i + d) % users, (i + users - d) % users])
        .collect()
}

async fn presence(run: &mut Run<'_>, args: &PresenceArgs) -> Result<()> {
    let users = run.global.users;
    let contacts = args.contacts + args.contacts % 2;
    ensure!(
        contacts >= 2 && contacts < users,
        "--contacts must be at least 2 and below --users (odd numbers are rounded up)"
    );
    let (n, k) = (
        u32::try_from(users).unwrap_or(u32::MAX),
        u32::try_from(contacts).unwrap_or(u32::MAX),
    );
    // Set-up: every user asks for a subscription to each contact; everyone approves. Users
    // whose roster holds enough mutual contacts from an earlier run are left alone (a server
    // confirms no subscription that exists already, RFC 6121 §3.1.6).
    let (setup, existing) = run.swarm_with_contacts(true, 0).await?;
    run.monitor.phase("subscribing");
    let mut wanted = 0u64;
    for i in 0..n {
        if existing[i as usize] >= contacts {
            continue;
        }
        wanted += u64::from(k);
        for contact in contacts_of(i, n, k) {
            setup.send_raw(
                i as usize,
                format!(
                    "<presence to='{}' type='subscribe'/>",
                    run.client.bare_jid(contact as usize)
                ),
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while setup.subscribed() < wanted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let confirmed = setup.subscribed();
    setup.finish(|_| Vec::new()).await;
    let confirmed = confirmed + (u64::from(n) * u64::from(k) - wanted);
    if confirmed < u64::from(n) * u64::from(k) {
        run.summary.warnings.push(format!(
            "only {confirmed} of {} subscriptions were in place after set-up",
            u64::from(n) * u64::from(k)
        ));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Roster-heavy logins: roster fetch and initial presence (probes and broadcasts).
    run.monitor.phase("roster logins");
    let span = run.monitor.span();
    let started = Instant::now();
    let batch = login_all(
        &run.client,
        users,
        run.global.concurrency,
        (true, true),
        |_| {},
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = run.monitor.server_cpu_since(&span);
    let roster_login = LoginRound {
        round: 1,
        logins: batch.conns.len(),
        seconds,
        logins_per_s: batch.conns.len() as f64 / seconds.max(1e-9),
        salted_password_cached: run.global.sasl != SaslChoice::Plain,
        latency: Latency::of(&batch.latency),
        server_cpu_ms_per_login: cpu.map(|c| c * 1000.0 / batch.conns.len().max(1) as f64),
    };
    let conns = batch.all()?;
    let swarm = Swarm::new(
        &run.client,
        conns,
        run.counters().clone(),
        run.recorder().clone(),
        60,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.recorder().take_window();
    // The storm: presence changes at `rate`, each broadcast to `contacts` contacts.
    run.monitor
        .phase(format!("presence storm at {:.0}/s", args.rate));
    let counters = run.counters().clone();
    let received_before = counters.received.load(Ordering::Relaxed);
    let started = Instant::now();
    let scheduled = swarm
        .run_schedule(args.rate, args.duration, Load::Presence)
        .await;
    run.written(scheduled, Duration::from_secs(10)).await;
    let broadcasts = counters.sent.load(Ordering::Relaxed);
    swarm
        .drain(
            received_before + broadcasts * u64::from(k),
            Duration::from_secs(10),
        )
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let window = run.recorder().take_window();
    let ledger = swarm.finish(|i| contacts_of(i, n, k)).await;
    let delivery = ledger.verdict(
        counters.duplicates.load(Ordering::Relaxed),
        counters.reordered.load(Ordering::Relaxed),
    );
    run.summary.latency_buckets = buckets(&window);
    run.summary.presence = Some(PresenceResult {
        contacts,
        subscriptions_confirmed: confirmed,
        roster_login,
        storm_rate: args.rate,
        storm_duration_s: args.duration.as_secs_f64(),
        broadcasts,
        deliveries_per_s: delivery.delivered as f64 / seconds.max(1e-9),
        latency: Latency::of(&window),
        delivery,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_are_mutual_and_wrap() {
        for i in 0..10 {
            let mine = contacts_of(i, 10, 4);
            assert_eq!(mine.len(), 4);
            assert!(!mine.contains(&i));
            for c in mine {
                assert!(contacts_of(c, 10, 4).contains(&i), "{i} ↔ {c}");
            }
        }
        assert_eq!(contacts_of(0, 10, 2), vec![1, 9]);
    }
}
