//! XEP-0198 stream resumption: sessions whose connection was lost, waiting for their client.
//!
//! A client that enabled stream management with resumption gets an id. When its connection
//! breaks (the socket closes or errors without `</stream:stream>`, or the idle check gets no
//! answer), the session is **detached** instead of ended: it stays registered and available, its
//! queue keeps filling, and the stanzas the client was sent but never acknowledged are kept with
//! the counters. A new stream that authenticates as the same account and sends
//! `<resume previd h/>` within the resumption time takes the session over: the unacknowledged
//! stanzas the client did not handle are written again, then the queue. If the time runs out
//! (or the session is closed meanwhile), it ends as any session does, and what the client never
//! acknowledged is routed again before what was queued: a message falls back to another
//! resource or to offline storage, an IQ is answered with an error. Nothing is dropped.
//!
//! The id names the datacenter of the node that carries the stream (`<random>.<dc>`), so a
//! client may resume in another datacenter: that node asks the old one over the bridge
//! ([`Node::resume_remote`]), which hands over what the client did not handle and keeps the
//! rest queued; the new stream then opens a session with the same full JID marked as a
//! resumption, and the account's home lets it take the old one over (same presence, no
//! `unavailable` to the contacts; [`Session::supersede`]). What the old session still held is
//! then routed to its successor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use jid::BareJid;
use tern_xmpp_proto::stream::SmSnapshot;
use tern_xmpp_proto::{StreamCondition, StreamError};
use tokio::sync::Notify;

use crate::node::Node;
use crate::sm::{Outbox, Session, lock};

/// How long a resuming stream waits for the old connection of its session to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// What a detached session keeps for its client.
#[derive(Debug)]
pub struct Detached {
    /// The session's queue (still filling).
    pub outbox: Outbox,
    /// For an edge session, the datacenter of the account's home.
    pub home: Option<Box<str>>,
    /// The stream's counters and what the client did not acknowledge.
    pub sm: SmSnapshot,
}

#[derive(Debug)]
enum State {
    /// A connection carries the session.
    Attached,
    /// The connection was lost; waiting for the client.
    Detached(Detached),
    /// Handed over to a stream in another datacenter; kept until the session there replaces
    /// this one (or the time runs out).
    HandedOver(Detached),
    /// Over.
    Gone,
}

/// A session that may be resumed.
#[derive(Debug)]
pub struct Resumable {
    /// The resumption id.
    pub id: Box<str>,
    /// The session.
    pub session: Arc<Session>,
    /// How long it waits for its client once detached.
    pub timeout: Duration,
    state: Mutex<State>,
    changed: Notify,
    /// Incremented at every detach, so a stale wait does not end a later one.
    generation: AtomicU64,
    /// Set while a resuming stream takes the session from a connection that is still open.
    takeover: AtomicBool,
}

impl Resumable {
    /// Whether a resuming stream asked the current connection to let go of the session.
    pub fn taken_over(&self) -> bool {
        self.takeover.load(Ordering::Acquire)
    }
}

/// What a successful resumption gives the new stream.
#[derive(Debug)]
pub enum Resumed {
    /// The session was detached on this node: the stream carries it on.
    Here {
        /// The session's entry.
        entry: Arc<Resumable>,
        /// What it kept.
        detached: Detached,
        /// The stanzas to write again.
        resend: Vec<Bytes>,
    },
    /// The session was detached in another datacenter, which handed it over.
    Elsewhere {
        /// The session's full JID.
        jid: String,
        /// Stanzas of the client it had handled.
        inbound: u32,
        /// The stanzas to write again.
        resend: Vec<Bytes>,
        /// The resumption time it was granted.
        timeout: Duration,
    },
}

/// Why a resumption failed: what the old session had handled, when known.
#[derive(Debug, Clone, Copy)]
pub struct ResumeFailed(pub Option<u32>);

/// The resumable sessions of this node.
#[derive(Debug, Default)]
pub struct Resumptions {
    entries: Mutex<HashMap<Box<str>, Arc<Resumable>>>,
    /// Sessions handed over to another datacenter: where they went, so a later resumption
    /// that asks here is sent on.
    moved: Mutex<HashMap<Box<str>, Box<str>>>,
}

impl Resumptions {
    /// Registers an attached session under `id` (new, or kept from a resumption).
    pub fn insert(&self, id: &str, session: Arc<Session>, timeout: Duration) -> Arc<Resumable> {
        let entry = Arc::new(Resumable {
            id: id.into(),
            session,
            timeout,
            state: Mutex::new(State::Attached),
            changed: Notify::new(),
            generation: AtomicU64::new(0),
            takeover: AtomicBool::new(false),
        });
        lock(&self.entries).insert(id.into(), entry.clone());
        lock(&self.moved).remove(id);
        entry
    }

    /// The entry with `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Resumable>> {
        lock(&self.entries).get(id).cloned()
    }

    /// The datacenter a handed-over session went to.
    pub fn moved_to(&self, id: &str) -> Option<String> {
        lock(&self.moved).get(id).map(|dc| dc.to_string())
    }

    /// Removes the entry when its session ends for good.
    pub fn remove(&self, entry: &Resumable) {
        *lock(&entry.state) = State::Gone;
        let mut entries = lock(&self.entries);
        if entries
            .get(&entry.id)
            .is_some_and(|e| Arc::ptr_eq(&e.session, &entry.session))
        {
            entries.remove(&entry.id);
        }
        drop(entries);
        entry.changed.notify_waiters();
    }

    /// Sessions detached now.
    pub fn detached_count(&self) -> usize {
        lock(&self.entries)
            .values()
            .filter(|e| matches!(*lock(&e.state), State::Detached(_)))
            .count()
    }
}

/// A new resumption id naming this node's datacenter.
pub fn new_id(node: &Node) -> String {
    let mut bytes = [0u8; 12];
    rand::fill(&mut bytes);
    let random: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{random}.{}", node.config.cluster.dc)
}

/// The datacenter a resumption id names.
fn dc_of(id: &str) -> Option<&str> {
    id.split_once('.')
        .map(|(_, dc)| dc)
        .filter(|dc| !dc.is_empty())
}

/// The connection of `entry` was lost: the session waits for its client until the resumption
/// time runs out, it is closed, or the node shuts down; then it ends as any session does.
pub fn detach(node: &Arc<Node>, entry: Arc<Resumable>, detached: Detached) {
    node.metrics.detached_changed(1);
    wait(node, entry, State::Detached(detached));
}

fn wait(node: &Arc<Node>, entry: Arc<Resumable>, state: State) {
    let generation = entry.generation.fetch_add(1, Ordering::AcqRel) + 1;
    if entry.takeover.swap(false, Ordering::AcqRel) {
        // The close that took the session from its old connection was meant for that
        // connection only.
        entry.session.reopen();
    }
    *lock(&entry.state) = state;
    entry.changed.notify_waiters();
    tracing::debug!(jid = %entry.session.jid, timeout = ?entry.timeout, "session detached, waiting for resumption");
    let node = node.clone();
    tokio::spawn(async move {
        let mut shutdown = node.shutdown.subscribe();
        let deadline = tokio::time::sleep(entry.timeout);
        tokio::pin!(deadline);
        loop {
            let changed = entry.changed.notified();
            tokio::select! {
                () = &mut deadline => break,
                _ = entry.session.closed() => break,
                _ = shutdown.changed() => break,
                () = changed => {
                    // Resumed (or handed over): stop waiting unless still detached.
                    if entry.generation.load(Ordering::Acquire) != generation
                        || !matches!(*lock(&entry.state), State::Detached(_) | State::HandedOver(_))
                    {
                        return;
                    }
                }
            }
        }
        if entry.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let state = std::mem::replace(&mut *lock(&entry.state), State::Gone);
        let (detached, handed_over) = match state {
            State::Detached(d) => (d, false),
            State::HandedOver(d) => (d, true),
            other => {
                *lock(&entry.state) = other;
                return;
            }
        };
        if !handed_over {
            node.metrics.detached_changed(-1);
        }
        node.resumptions.remove(&entry);
        tracing::debug!(jid = %entry.session.jid, handed_over, "detached session ends");
        // Handed over: the client got what it had not handled from the new stream.
        let unacked = if handed_over {
            Vec::new()
        } else {
            detached.sm.unacked
        };
        crate::c2s::finish_session(
            &node,
            &entry.session,
            Some(detached.outbox),
            detached.home,
            unacked,
        )
        .await;
    });
}

/// Takes the detached state of `entry` for a resuming stream; a connection still attached is
/// asked to let go first.
async fn take(node: &Node, entry: &Resumable) -> Option<Detached> {
    let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
    loop {
        let changed = entry.changed.notified();
        {
            let mut state = lock(&entry.state);
            match std::mem::replace(&mut *state, State::Attached) {
                State::Detached(d) => {
                    entry.generation.fetch_add(1, Ordering::AcqRel);
                    drop(state);
                    node.metrics.detached_changed(-1);
                    entry.changed.notify_waiters();
                    entry.session.reopen();
                    return Some(d);
                }
                State::Attached => {
                    if !entry.takeover.swap(true, Ordering::AcqRel) {
                        entry.session.close(
                            StreamError::new(StreamCondition::Conflict)
                                .with_text("the session was resumed by a new connection"),
                        );
                    }
                }
                other => {
                    *state = other;
                    return None;
                }
            }
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return None;
        }
    }
}

/// Puts a detached state back (the resuming stream's `h` did not fit): it waits on.
fn put_back(node: &Arc<Node>, entry: Arc<Resumable>, detached: Detached) {
    detach(node, entry, detached);
}

impl Node {
    /// Resumes session `previd` of `account` for a new stream whose client handled `h` of the
    /// session's stanzas.
    pub async fn resume(
        self: &Arc<Self>,
        previd: &str,
        account: &BareJid,
        h: u32,
    ) -> Result<Resumed, ResumeFailed> {
        let result = self.resume_inner(previd, account, h).await;
        self.metrics.resumption(result.is_ok());
        result
    }

    async fn resume_inner(
        self: &Arc<Self>,
        previd: &str,
        account: &BareJid,
        h: u32,
    ) -> Result<Resumed, ResumeFailed> {
        let moved = self.resumptions.moved_to(previd);
        if moved.is_none()
            && let Some(entry) = self.resumptions.get(previd)
        {
            if entry.session.jid.to_bare() != *account {
                return Err(ResumeFailed(None));
            }
            let Some(detached) = take(self, &entry).await else {
                return Err(ResumeFailed(None));
            };
            let Some(resend) = detached.sm.unseen_after(h).map(<[Bytes]>::to_vec) else {
                let inbound = detached.sm.inbound;
                put_back(self, entry, detached);
                return Err(ResumeFailed(Some(inbound)));
            };
            return Ok(Resumed::Here {
                entry,
                detached,
                resend,
            });
        }
        let own = self.config.cluster.dc.as_str();
        let mut dc = moved
            .or_else(|| dc_of(previd).map(str::to_owned))
            .filter(|dc| dc != own)
            .ok_or(ResumeFailed(None))?;
        // One hop more when the session moved on from there.
        for _ in 0..2 {
            match self.resume_remote(&dc, previd, account, h).await {
                Ok(resumed) => return Ok(resumed),
                Err(crate::edge::ResumeRefusal::Moved(next)) if next != own => dc = next,
                Err(crate::edge::ResumeRefusal::Moved(_)) => return Err(ResumeFailed(None)),
                Err(crate::edge::ResumeRefusal::Failed(h)) => return Err(ResumeFailed(h)),
            }
        }
        Err(ResumeFailed(None))
    }

    /// Another datacenter resumes session `id` of `account` for a stream there: hands over
    /// what the client did not handle. The session stays here until the new one replaces it.
    pub(crate) async fn hand_over(
        self: &Arc<Self>,
        id: &str,
        account: &BareJid,
        h: u32,
        to: &str,
    ) -> Result<(String, u32, Vec<Bytes>, Duration), crate::edge::ResumeRefusal> {
        use crate::edge::ResumeRefusal;
        let Some(entry) = self.resumptions.get(id) else {
            return Err(match self.resumptions.moved_to(id) {
                Some(dc) => ResumeRefusal::Moved(dc),
                None => ResumeRefusal::Failed(None),
            });
        };
        if entry.session.jid.to_bare() != *account {
            return Err(ResumeRefusal::Failed(None));
        }
        let Some(detached) = take(self, &entry).await else {
            return Err(ResumeRefusal::Failed(None));
        };
        let Some(resend) = detached.sm.unseen_after(h).map(<[Bytes]>::to_vec) else {
            let inbound = detached.sm.inbound;
            put_back(self, entry, detached);
            return Err(ResumeRefusal::Failed(Some(inbound)));
        };
        let inbound = detached.sm.inbound;
        let jid = entry.session.jid.to_string();
        lock(&self.resumptions.moved).insert(id.into(), to.into());
        // It waits on, handed over, until the session that replaces it closes it.
        let timeout = entry.timeout;
        wait(self, entry, State::HandedOver(detached));
        Ok((jid, inbound, resend, timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_datacenter() {
        assert_eq!(dc_of("0a1b.dc2"), Some("dc2"));
        assert_eq!(dc_of("0a1b.eu.west"), Some("eu.west"));
        assert_eq!(dc_of("0a1b."), None);
        assert_eq!(dc_of("plain"), None);
    }
}
