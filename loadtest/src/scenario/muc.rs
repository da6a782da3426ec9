//! The `muc` scenario: every user joins one XEP-0045 room, a few of them send groupchat
//! messages into it at an aggregate rate, and every occupant (the sender too: rooms echo)
//! receives each one.
//!
//! Joins: the first user joins alone. If that creates the room (status 201) it is locked until
//! its owner configures it, so the first user accepts the default configuration (an instant
//! room) before anyone else joins. Then the others join, `--concurrency` at a time, each
//! counted in when its own presence (status 110) comes back. The swarm's readers run during the
//! joins, so the room's presence flood (every join is broadcast to every occupant) is read as
//! it comes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use super::Run;
use crate::cli::MucArgs;
use crate::report::MucResult;
use crate::room::{Joins, RoomJid, refusal_hint};
use crate::stats::{Latency, buckets};
use crate::swarm::{Load, Swarm};

/// How long the first user waits for its own presence, and then for the room's answer to the
/// configuration.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// The joins fail when no user got in for this long.
const JOIN_STALL: Duration = Duration::from_secs(60);

/// What the join phase measured.
struct JoinPhase {
    created: bool,
    seconds: f64,
}

pub(super) async fn muc(run: &mut Run<'_>, args: &MucArgs) -> Result<()> {
    let users = run.global.users;
    ensure!(users >= 1, "muc needs at least 1 user");
    ensure!(
        args.senders >= 1,
        "--senders must be at least 1 (the occupants that send)"
    );
    let room = RoomJid::parse(
        &args
            .room
            .clone()
            .unwrap_or_else(|| format!("loadtest@muc.{}", run.global.domain)),
    )?;
    let senders = choose_senders(users, args.senders);
    let conns = run.login_everyone(false).await?;
    let swarm = Swarm::in_room(
        &run.client,
        conns,
        run.counters().clone(),
        run.recorder().clone(),
        args.body_size,
        room.clone(),
    );
    let joined = join_everyone(run, &swarm).await?;
    let join_latency = swarm
        .joins()
        .map_or_else(crate::stats::new_histogram, Joins::latency);
    run.before_load().await;

    run.monitor.phase(format!(
        "groupchat at {:.0}/s into {} ({users} occupants)",
        args.rate,
        room.as_str()
    ));
    let counters = run.counters().clone();
    let received_before = counters.received.load(Ordering::Relaxed);
    let span = run.monitor.span();
    let started = Instant::now();
    let scheduled = swarm
        .run_schedule(
            args.rate,
            args.duration,
            Load::Groupchat { senders: &senders },
        )
        .await;
    run.written(scheduled, args.drain).await;
    let send_seconds = started.elapsed().as_secs_f64();
    let messages = counters.sent.load(Ordering::Relaxed);
    run.monitor.phase("draining");
    swarm
        .drain(received_before + messages * users as u64, args.drain)
        .await;
    let cpu = run.monitor.server_cpu_since(&span);
    let seconds = started.elapsed().as_secs_f64();
    let window = run.recorder().take_window();
    let first_bounce = swarm.first_bounce().map(str::to_owned);
    let occupants = u32::try_from(users).context("too many users")?;
    let ledger = swarm.finish(|_| (0..occupants).collect()).await;
    let delivery = ledger.verdict(
        counters.duplicates.load(Ordering::Relaxed),
        counters.reordered.load(Ordering::Relaxed),
    );
    let bounced = counters.bounced.load(Ordering::Relaxed);
    if bounced > 0 {
        run.summary.warnings.push(format!(
            "{bounced} room messages came back as errors ({}); {:.1} messages/s per sender: Tern admits [modules.muc] max_messages_per_second per occupant, 10 by default",
            first_bounce.as_deref().unwrap_or("?"),
            args.rate / senders.len() as f64
        ));
    }
    run.summary.latency_buckets = buckets(&window);
    run.summary.muc = Some(MucResult {
        room: room.as_str().to_owned(),
        occupants: users,
        servers: run.global.server.len(),
        created: joined.created,
        join_seconds: joined.seconds,
        joins_per_s: users as f64 / joined.seconds.max(1e-9),
        join_latency: Latency::of(&join_latency),
        senders: senders.len(),
        target_rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        body_size: args.body_size,
        scheduled,
        messages,
        send_rate: messages as f64 / send_seconds.max(1e-9),
        deliveries_per_s: delivery.delivered as f64 / seconds.max(1e-9),
        bounced,
        first_bounce,
        connection_failures: counters.dropped_connections.load(Ordering::Relaxed),
        latency: Latency::of(&window),
        server_cpu_us_per_msg: cpu
            .filter(|_| delivery.delivered > 0)
            .map(|c| c * 1e6 / delivery.delivered as f64),
        delivery,
    });
    Ok(())
}

/// `wanted` distinct users of `0..users` (all of them when there are fewer), in random order.
fn choose_senders(users: usize, wanted: usize) -> Vec<u32> {
    rand::seq::index::sample(&mut rand::rng(), users, wanted.min(users))
        .into_iter()
        .filter_map(|i| u32::try_from(i).ok())
        .collect()
}

/// Polls `done` every 2 ms until it holds or `limit` passed; returns whether it held.
async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// Joins every user: the first alone (creating and configuring the room if needed), then the
/// others with `--concurrency` joins in flight.
async fn join_everyone(run: &Run<'_>, swarm: &Swarm) -> Result<JoinPhase> {
    let joins = swarm
        .joins()
        .context("the muc scenario's swarm has a room")?;
    let room = joins.room.as_str();
    let users = swarm.len();
    let nick = |index: usize| run.client.user(index);
    let failures = || run.counters().dropped_connections.load(Ordering::Relaxed);
    let check = || -> Result<()> {
        if let Some((index, condition)) = joins.refused() {
            bail!(
                "{room} refused {} (nick {}): {condition}{}",
                run.client.bare_jid(*index as usize),
                nick(*index as usize),
                refusal_hint(condition)
            );
        }
        ensure!(
            failures() == 0,
            "{} connections failed while joining {room}",
            failures()
        );
        Ok(())
    };
    run.monitor.phase(format!("joining {room}"));
    let started = Instant::now();
    swarm.join(0, &nick(0));
    wait_until(CREATE_TIMEOUT, || {
        joins.has_joined(0) || joins.refused().is_some() || failures() > 0
    })
    .await;
    check()?;
    ensure!(
        joins.has_joined(0),
        "{} got no presence of its own (status 110) from {room} within {CREATE_TIMEOUT:?}",
        run.client.bare_jid(0)
    );
    let created = joins.created();
    if created {
        // A new room stays locked until its owner configures it.
        swarm.send_raw(0, joins.room.instant_config());
        wait_until(CREATE_TIMEOUT, || joins.configured().is_some()).await;
        match joins.configured() {
            Some(Ok(())) => {}
            Some(Err(condition)) => bail!(
                "{room} refused the instant configuration from {}: {condition}",
                run.client.bare_jid(0)
            ),
            None => bail!("{room} did not answer its configuration within {CREATE_TIMEOUT:?}"),
        }
    }
    run.monitor.phase(format!("{users} users joining {room}"));
    let in_flight = run.global.concurrency.max(1) as u64;
    let mut sent = 1;
    let mut progress = (joins.joined(), Instant::now());
    while joins.joined() < users as u64 {
        check()?;
        while sent < users && sent as u64 - joins.joined() < in_flight {
            swarm.join(sent, &nick(sent));
            sent += 1;
        }
        let joined = joins.joined();
        if joined > progress.0 {
            progress = (joined, Instant::now());
        }
        ensure!(
            progress.1.elapsed() < JOIN_STALL,
            "only {joined} of {users} users joined {room}: none got in for {JOIN_STALL:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(JoinPhase {
        created,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_distinct_users() {
        let senders = choose_senders(50, 10);
        assert_eq!(senders.len(), 10);
        let mut unique = senders.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 10);
        assert!(senders.iter().all(|&s| s < 50));
        let mut all = choose_senders(3, 10);
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2]);
    }
}
