//! The session manager: every bound resource on this node, by bare JID.
//!
//! A session is registered when its resource is bound and removed when its stream ends. The map
//! is sharded ([`DashMap`]) so lookups on the routing hot path take no global lock. Each entry
//! holds the sending half of the session's outbound queue and the presence state the router and
//! the presence module need (RFC 6121 §4: available or not, priority, whether it asked for the
//! roster, where it sent directed presence).
//!
//! The outbound queue is bounded (`limits.session_queue`). Overflow policy: a session that cannot
//! keep up is closed with `<resource-constraint/>`, and the stanza that did not fit is reported
//! back to the router as undelivered (so it is bounced or stored, never silently dropped). The
//! queue is a plain deque that gives its memory back whenever it runs empty, so an idle session
//! holds no queue buffer at all.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use dashmap::DashMap;
use jid::{BareJid, FullJid};
use tern_xmpp_proto::{StreamCondition, StreamError};
use tokio::sync::Notify;

use crate::csi;
use crate::metrics::Transport;

/// What the router hands to a session's connection task.
#[derive(Debug)]
pub enum Outbound {
    /// Serialised stanza bytes to write to the client.
    Stanza(Bytes),
}

/// Presence state of one session (RFC 6121 §4).
#[derive(Debug, Default, Clone)]
pub struct PresenceState {
    /// The last available presence broadcast by the client (stamped), if it is available.
    pub available: Option<Bytes>,
    /// Its priority (-128..=127).
    pub priority: i8,
    /// Whether the session requested the roster (it then gets roster pushes and
    /// subscription requests).
    pub interested: bool,
    /// JIDs that got directed presence from this session and must get `unavailable` at the end.
    pub directed: HashSet<String>,
}

/// One bound resource.
#[derive(Debug)]
pub struct Session {
    /// The full JID.
    pub jid: FullJid,
    /// The connection id (unique per node).
    pub conn_id: u64,
    /// How the client connected.
    pub transport: Transport,
    /// The client's address.
    pub peer: SocketAddr,
    /// When the session was bound.
    pub started: SystemTime,
    /// For a session homed here whose client is connected to another datacenter (an edge
    /// session, [`crate::edge`]): that datacenter.
    pub edge: Option<Arc<str>>,
    queue: Mutex<VecDeque<Bytes>>,
    queue_capacity: usize,
    queue_signal: Notify,
    /// Set when the connection task is gone: nothing will read the queue any more.
    receiver_gone: AtomicBool,
    /// XEP-0280: whether the client enabled message carbons.
    carbons: AtomicBool,
    /// XEP-0191: whether the client asked for the blocklist (it then gets blocklist pushes).
    blocklist_requested: AtomicBool,
    /// XEP-0016: the session's active privacy list.
    privacy_list: Mutex<Option<Box<str>>>,
    /// XEP-0352: whether the client said it is inactive.
    inactive: AtomicBool,
    /// What is held back while it is inactive, in order (at most one presence per sender).
    held: Mutex<Vec<Bytes>>,
    /// Set when a resumed stream elsewhere took this session over (XEP-0198): it ends without
    /// telling the contacts, and what it still holds is routed to its successor.
    superseded: AtomicBool,
    /// Presence state, behind a short-held lock (never across an await).
    pub presence: Mutex<PresenceState>,
    close: Mutex<Option<StreamError>>,
    close_signal: Notify,
}

impl Session {
    /// A session for a just-bound resource and the receiving half of its queue.
    pub fn new(
        jid: FullJid,
        conn_id: u64,
        transport: Transport,
        peer: SocketAddr,
        queue: usize,
    ) -> (Arc<Self>, Outbox) {
        Self::build(jid, conn_id, transport, peer, queue, None)
    }

    /// A session homed here for a client connected to datacenter `edge`; its queue is carried
    /// over the bridge ([`crate::edge`]).
    pub fn new_remote(
        jid: FullJid,
        conn_id: u64,
        transport: Transport,
        peer: SocketAddr,
        queue: usize,
        edge: Arc<str>,
    ) -> (Arc<Self>, Outbox) {
        Self::build(jid, conn_id, transport, peer, queue, Some(edge))
    }

    fn build(
        jid: FullJid,
        conn_id: u64,
        transport: Transport,
        peer: SocketAddr,
        queue: usize,
        edge: Option<Arc<str>>,
    ) -> (Arc<Self>, Outbox) {
        let session = Arc::new(Self {
            jid,
            conn_id,
            transport,
            peer,
            started: SystemTime::now(),
            edge,
            queue: Mutex::new(VecDeque::new()),
            queue_capacity: queue.max(1),
            queue_signal: Notify::new(),
            receiver_gone: AtomicBool::new(false),
            carbons: AtomicBool::new(false),
            blocklist_requested: AtomicBool::new(false),
            privacy_list: Mutex::new(None),
            inactive: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
            superseded: AtomicBool::new(false),
            presence: Mutex::new(PresenceState::default()),
            close: Mutex::new(None),
            close_signal: Notify::new(),
        });
        let outbox = Outbox {
            session: session.clone(),
        };
        (session, outbox)
    }

    /// Queues stanza bytes for the client. `false` when the session is gone or its queue is
    /// full (it is then being closed); the caller treats the stanza as undelivered.
    ///
    /// While the client is inactive (XEP-0352), presence and messages without a body (chat
    /// states) are held back — only the latest presence of each sender — and go out, in order,
    /// before the next urgent stanza or when the client becomes active.
    pub fn deliver(&self, bytes: Bytes) -> bool {
        if self.receiver_gone.load(Ordering::Acquire) {
            return false;
        }
        if self.inactive.load(Ordering::Acquire) {
            match csi::classify(&bytes) {
                csi::Class::Hold(sender) => {
                    let mut held = lock(&self.held);
                    if let Some(sender) = sender {
                        held.retain(|h| {
                            csi::presence_sender(h).as_deref() != Some(sender.as_str())
                        });
                    }
                    held.push(bytes);
                    if held.len() < csi::MAX_HELD {
                        return true;
                    }
                    let all = std::mem::take(&mut *held);
                    drop(held);
                    return self.enqueue(all);
                }
                csi::Class::Urgent => {
                    let mut all = std::mem::take(&mut *lock(&self.held));
                    all.push(bytes);
                    return self.enqueue(all);
                }
            }
        }
        self.enqueue_one(bytes)
    }

    /// XEP-0352: the client is active (everything held goes out) or inactive.
    pub fn set_active(&self, active: bool) {
        self.inactive.store(!active, Ordering::Release);
        if active {
            let all = std::mem::take(&mut *lock(&self.held));
            if !all.is_empty() {
                self.enqueue(all);
            }
        }
    }

    /// Whether the client said it is inactive.
    pub fn is_inactive(&self) -> bool {
        self.inactive.load(Ordering::Acquire)
    }

    /// What is held back for the inactive client (given back when the session ends).
    pub fn take_held(&self) -> Vec<Bytes> {
        std::mem::take(&mut *lock(&self.held))
    }

    fn enqueue(&self, stanzas: Vec<Bytes>) -> bool {
        let mut queue = lock(&self.queue);
        if queue.len() + stanzas.len() > self.queue_capacity {
            drop(queue);
            self.close(
                StreamError::new(StreamCondition::ResourceConstraint)
                    .with_text("the client does not read fast enough"),
            );
            return false;
        }
        queue.extend(stanzas);
        drop(queue);
        self.queue_signal.notify_one();
        true
    }

    fn enqueue_one(&self, bytes: Bytes) -> bool {
        let mut queue = lock(&self.queue);
        if queue.len() >= self.queue_capacity {
            drop(queue);
            self.close(
                StreamError::new(StreamCondition::ResourceConstraint)
                    .with_text("the client does not read fast enough"),
            );
            return false;
        }
        queue.push_back(bytes);
        drop(queue);
        self.queue_signal.notify_one();
        true
    }

    /// Takes the next queued stanza; the queue's memory is released when it runs empty.
    fn pop(&self) -> Option<Bytes> {
        let mut queue = lock(&self.queue);
        let next = queue.pop_front();
        if queue.is_empty() && queue.capacity() > 0 {
            *queue = VecDeque::new();
        }
        next
    }

    /// Asks the connection task to end the stream with `error` (first reason wins).
    pub fn close(&self, error: StreamError) {
        let mut slot = lock(&self.close);
        if slot.is_none() {
            *slot = Some(error);
        }
        drop(slot);
        self.close_signal.notify_one();
    }

    /// Waits until [`Self::close`] is called, and returns the reason.
    pub async fn closed(&self) -> StreamError {
        loop {
            if let Some(e) = lock(&self.close).clone() {
                return e;
            }
            self.close_signal.notified().await;
        }
    }

    /// Lets the session be closed again after a close that did not end it (a connection that
    /// was taken over by a resuming stream, XEP-0198).
    pub fn reopen(&self) {
        *lock(&self.close) = None;
    }

    /// A resumed stream in another datacenter continues this session as `successor` (same full
    /// JID): it takes over the presence and per-session settings, and this one will end
    /// quietly.
    pub fn supersede(&self, successor: &Self) {
        *lock(&successor.presence) = self.presence();
        successor.set_carbons(self.carbons());
        if self.blocklist_requested() {
            successor.set_blocklist_requested();
        }
        successor.set_privacy_list(self.privacy_list());
        self.superseded.store(true, Ordering::Release);
    }

    /// Whether a resumed stream took this session over.
    pub fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }

    /// Whether the client enabled message carbons (XEP-0280).
    pub fn carbons(&self) -> bool {
        self.carbons.load(Ordering::Relaxed)
    }

    /// Enables or disables message carbons for this session.
    pub fn set_carbons(&self, on: bool) {
        self.carbons.store(on, Ordering::Relaxed);
    }

    /// Whether the client asked for its blocklist (XEP-0191).
    pub fn blocklist_requested(&self) -> bool {
        self.blocklist_requested.load(Ordering::Relaxed)
    }

    /// Records that the client asked for its blocklist.
    pub fn set_blocklist_requested(&self) {
        self.blocklist_requested.store(true, Ordering::Relaxed);
    }

    /// The session's active privacy list (XEP-0016), if it chose one.
    pub fn privacy_list(&self) -> Option<String> {
        lock(&self.privacy_list).as_deref().map(str::to_owned)
    }

    /// Chooses (or, with `None`, declines) the session's active privacy list.
    pub fn set_privacy_list(&self, name: Option<String>) {
        *lock(&self.privacy_list) = name.map(String::into_boxed_str);
    }

    /// A copy of the presence state.
    pub fn presence(&self) -> PresenceState {
        lock(&self.presence).clone()
    }

    /// Whether the session is available with a non-negative priority.
    pub fn is_available(&self) -> bool {
        lock(&self.presence).available.is_some()
    }

    /// Updates the presence state.
    pub fn update_presence<R>(&self, f: impl FnOnce(&mut PresenceState) -> R) -> R {
        f(&mut lock(&self.presence))
    }
}

/// The receiving end of a session's outbound queue, owned by its connection task. Dropping it
/// marks the session gone, so later deliveries report failure instead of queueing.
#[derive(Debug)]
pub struct Outbox {
    session: Arc<Session>,
}

impl Outbox {
    /// The next stanza for the client, waiting until one is queued.
    pub async fn recv(&mut self) -> Option<Outbound> {
        loop {
            if let Some(bytes) = self.session.pop() {
                return Some(Outbound::Stanza(bytes));
            }
            self.session.queue_signal.notified().await;
        }
    }

    /// The next stanza if one is queued now.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.session.pop().map(Outbound::Stanza)
    }

    /// Closes the queue (later deliveries report failure) and returns what was still in it,
    /// so the caller can route it elsewhere instead of losing it.
    pub fn close_and_drain(self) -> Vec<Bytes> {
        self.session.receiver_gone.store(true, Ordering::Release);
        let mut queue = lock(&self.session.queue);
        std::mem::take(&mut *queue).into()
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.session.receiver_gone.store(true, Ordering::Release);
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the state is plain
/// data and stays consistent field by field).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// All sessions of this node.
#[derive(Debug, Default)]
pub struct SessionManager {
    by_bare: DashMap<BareJid, Vec<Arc<Session>>>,
}

impl SessionManager {
    /// Registers a bound session. A session with the same full JID is replaced and returned: the
    /// caller closes it with `<conflict/>` (RFC 6120 §7.7.2.2, the newer session wins).
    pub fn register(&self, session: Arc<Session>) -> Option<Arc<Session>> {
        let mut entry = self.by_bare.entry(session.jid.to_bare()).or_default();
        let old = entry
            .iter()
            .position(|s| s.jid == session.jid)
            .map(|i| entry.remove(i));
        entry.push(session);
        old
    }

    /// Removes a session, if it is still the registered one for its JID.
    pub fn unregister(&self, session: &Session) -> bool {
        let bare = session.jid.to_bare();
        let mut removed = false;
        if let Some(mut list) = self.by_bare.get_mut(&bare) {
            let before = list.len();
            list.retain(|s| s.conn_id != session.conn_id);
            removed = list.len() != before;
        }
        self.by_bare.remove_if(&bare, |_, list| list.is_empty());
        removed
    }

    /// The session bound to `jid`.
    pub fn get(&self, jid: &FullJid) -> Option<Arc<Session>> {
        self.by_bare
            .get(&jid.to_bare())
            .and_then(|list| list.iter().find(|s| s.jid == *jid).cloned())
    }

    /// All sessions of an account.
    pub fn resources(&self, bare: &BareJid) -> Vec<Arc<Session>> {
        self.by_bare
            .get(bare)
            .map(|list| list.clone())
            .unwrap_or_default()
    }

    /// Whether any session of the account satisfies `check` (nothing is copied).
    pub fn any_resource(&self, bare: &BareJid, check: impl Fn(&Session) -> bool) -> bool {
        self.by_bare
            .get(bare)
            .is_some_and(|list| list.iter().any(|s| check(s)))
    }

    /// Whether the account has any session.
    pub fn is_online(&self, bare: &BareJid) -> bool {
        self.by_bare.contains_key(bare)
    }

    /// Every session, optionally only those of `domain`, sorted by JID.
    pub fn list(&self, domain: Option<&str>) -> Vec<Arc<Session>> {
        let mut all: Vec<Arc<Session>> = self
            .by_bare
            .iter()
            .filter(|e| domain.is_none_or(|d| e.key().domain().as_str() == d))
            .flat_map(|e| e.value().clone())
            .collect();
        all.sort_by(|a, b| a.jid.as_str().cmp(b.jid.as_str()));
        all
    }

    /// The number of sessions, optionally only of `domain`.
    pub fn count(&self, domain: Option<&str>) -> usize {
        self.by_bare
            .iter()
            .filter(|e| domain.is_none_or(|d| e.key().domain().as_str() == d))
            .map(|e| e.value().len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(jid: &str, conn_id: u64, queue: usize) -> (Arc<Session>, Outbox) {
        Session::new(
            FullJid::new(jid).unwrap(),
            conn_id,
            Transport::StartTls,
            "127.0.0.1:1".parse().unwrap(),
            queue,
        )
    }

    #[test]
    fn same_full_jid_replaces_the_old_session() {
        let sm = SessionManager::default();
        let (a, _ra) = session("u@localhost/r", 1, 4);
        let (b, _rb) = session("u@localhost/r", 2, 4);
        let (c, _rc) = session("u@localhost/other", 3, 4);
        assert!(sm.register(a.clone()).is_none());
        assert!(sm.register(c).is_none());
        let replaced = sm.register(b).unwrap();
        assert_eq!(replaced.conn_id, 1);
        assert_eq!(sm.count(None), 2);
        // The replaced session's own cleanup must not remove its successor.
        assert!(!sm.unregister(&a));
        assert_eq!(
            sm.get(&FullJid::new("u@localhost/r").unwrap())
                .unwrap()
                .conn_id,
            2
        );
    }

    #[test]
    fn lists_and_counts_by_domain() {
        let sm = SessionManager::default();
        let keep: Vec<_> = [("a@one/x", 1), ("b@two/x", 2), ("a@one/y", 3)]
            .into_iter()
            .map(|(j, id)| {
                let (s, rx) = session(j, id, 4);
                sm.register(s);
                rx
            })
            .collect();
        assert_eq!(sm.count(Some("one")), 2);
        assert_eq!(sm.count(None), 3);
        let listed: Vec<String> = sm
            .list(Some("one"))
            .iter()
            .map(|s| s.jid.to_string())
            .collect();
        assert_eq!(listed, ["a@one/x", "a@one/y"]);
        assert_eq!(sm.resources(&BareJid::new("a@one").unwrap()).len(), 2);
        drop(keep);
    }

    #[tokio::test]
    async fn full_queue_closes_the_session() {
        let (s, mut rx) = session("u@localhost/r", 1, 2);
        assert!(s.deliver(Bytes::from_static(b"<a/>")));
        assert!(s.deliver(Bytes::from_static(b"<b/>")));
        assert!(!s.deliver(Bytes::from_static(b"<c/>")));
        let reason = s.closed().await;
        assert_eq!(reason.condition, StreamCondition::ResourceConstraint);
        assert!(matches!(rx.recv().await, Some(Outbound::Stanza(b)) if b.as_ref() == b"<a/>"));
        assert!(matches!(rx.try_recv(), Some(Outbound::Stanza(b)) if b.as_ref() == b"<b/>"));
        assert!(rx.try_recv().is_none());
        // Drained: the queue holds no memory, and takes stanzas again.
        assert_eq!(lock(&s.queue).capacity(), 0);
        assert!(s.deliver(Bytes::from_static(b"<c/>")));
        drop(rx);
        assert!(
            !s.deliver(Bytes::from_static(b"<d/>")),
            "nobody reads a dropped outbox"
        );
    }

    #[tokio::test]
    async fn recv_wakes_on_delivery() {
        let (s, mut rx) = session("u@localhost/r", 1, 8);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        assert!(s.deliver(Bytes::from_static(b"<x/>")));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
        assert!(matches!(got, Some(Outbound::Stanza(b)) if b.as_ref() == b"<x/>"));
    }

    #[tokio::test]
    async fn an_inactive_client_gets_presence_and_chat_states_with_the_next_message() {
        let (s, mut rx) = session("u@localhost/r", 1, 16);
        s.set_active(false);
        for xml in [
            "<presence from='a@x/1'><show>away</show></presence>",
            "<message from='a@x/1'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<presence from='b@x/1'/>",
            "<presence from='a@x/1'><show>xa</show></presence>",
        ] {
            assert!(s.deliver(Bytes::from_static(xml.as_bytes())));
        }
        assert!(rx.try_recv().is_none(), "all held");
        assert!(s.deliver(Bytes::from_static(
            b"<message from='a@x/1'><body>hi</body></message>"
        )));
        let mut got = Vec::new();
        while let Some(Outbound::Stanza(b)) = rx.try_recv() {
            got.push(String::from_utf8(b.to_vec()).unwrap());
        }
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].contains("composing"), "{got:?}");
        assert!(got[1].contains("b@x/1"), "{got:?}");
        assert!(
            got[2].contains("<show>xa</show>"),
            "only a's latest presence: {got:?}"
        );
        assert!(got[3].contains("<body>hi</body>"), "{got:?}");
        // Held again, then flushed by becoming active.
        assert!(s.deliver(Bytes::from_static(b"<presence from='c@x/1'/>")));
        assert!(rx.try_recv().is_none());
        s.set_active(true);
        assert!(
            matches!(rx.try_recv(), Some(Outbound::Stanza(b)) if b.starts_with(b"<presence from='c@x/1'"))
        );
        // Active: delivered at once.
        assert!(s.deliver(Bytes::from_static(b"<presence from='d@x/1'/>")));
        assert!(rx.try_recv().is_some());
    }

    #[test]
    fn session_entry_stays_small() {
        assert!(size_of::<Session>() <= 512, "{}", size_of::<Session>());
    }
}
