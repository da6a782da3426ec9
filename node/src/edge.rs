//! Edge sessions: a client connected to a datacenter other than its account's home.
//!
//! The client's stream, TLS and SASL run where it connected (the **edge**), with the
//! credentials fetched from the home over a call stream of the bridge. Once a resource is
//! bound, the session itself lives at the **home** as a *remote session*: an ordinary
//! [`Session`] in the home's session manager whose queue is drained onto the bridge instead of
//! a socket. So the home applies every rule it applies to its own clients (RFC 6121 delivery by
//! priority, presence broadcast, roster pushes, offline delivery, and whatever later modules
//! add), and one account may have sessions in several datacenters at once.
//!
//! Traffic between the two (envelope kinds of [`EnvelopeKind`]):
//! - edge → home: [`EnvelopeKind::EdgeOpen`] when a resource is bound, then
//!   [`EnvelopeKind::FromEdge`] for each stanza the client sends, [`EnvelopeKind::EdgeClose`]
//!   when its stream ends, all on the account's own stream of the bridge (one order);
//! - home → edge: [`EnvelopeKind::ToEdge`] for each stanza the session is given, and
//!   [`EnvelopeKind::CloseEdge`] when the home ends the session (a conflict, a kick, an account
//!   removal);
//! - edge → home: [`EnvelopeKind::Undelivered`] for a stanza that reached the edge after its
//!   session ended; the home routes it again (another resource, offline storage, or an error
//!   to its sender), so a user moving between datacenters loses nothing in flight.
//!
//! Failures: each node announces its start ([`EnvelopeKind::Epoch`]) to every peer, so a home
//! drops the remote sessions of an edge's previous life, and an edge closes the sessions whose
//! home restarted (their clients reconnect). A peer unreachable past `mesh.down_after` takes its
//! remote sessions with it (contacts see them go unavailable), and edge sessions homed there are
//! closed with `<remote-connection-failed/>`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use jid::{BareJid, FullJid, Jid};
use serde::{Deserialize, Serialize};
use tern_gd_mesh::frame::{EnvelopeKind, Route};
use tern_gd_mesh::{Inbound, SendError};
use tern_xmpp_proto::{
    Stanza, StanzaCondition, StanzaError, StanzaKind, StreamCondition, StreamError, ns,
};

use crate::metrics::Transport;
use crate::node::Node;
use crate::rehome::{RehomeError, Rehomed};
use crate::sm::{Outbound, Outbox, Session, lock};
use crate::storage::{AccountData, UserRecord};

/// How long an edge waits for its home to answer a call (credentials, registration).
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// How often the liveness of the peers holding sessions is checked.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// An edge session's opening, sent to its home.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Opening {
    /// The connection id at the edge.
    conn: u64,
    /// The edge node's epoch.
    epoch: u64,
    /// How the client connected (a [`Transport`] label).
    transport: String,
    /// The client's address.
    peer: SocketAddr,
    /// Whether the stream resumed (XEP-0198) a session of the same full JID: the new session
    /// takes the old one's place quietly.
    resumed: bool,
}

/// An edge session's end, or the home's order to end it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Closing {
    /// The connection id at the edge (0: whichever session has the JID).
    conn: u64,
    /// The stream error's condition name.
    condition: String,
    /// Its text.
    text: Option<String>,
}

/// A node's request to another datacenter.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Call {
    /// The stored credentials of an account homed there.
    Credentials { jid: String },
    /// Create an account homed there.
    Register { jid: String, password: String },
    /// Remove an account homed there.
    Remove { jid: String },
    /// Replace the password of an account homed there.
    SetPassword { jid: String, password: String },
    /// Move the home of an account that lives there to datacenter `dc`.
    Rehome { jid: String, dc: String },
    /// Store an account moving there from the caller.
    Import { jid: String, data: Box<AccountData> },
    /// Hand over session `id` (XEP-0198) of account `jid`, detached there, to a stream of the
    /// caller (datacenter `from`) whose client handled `h` of its stanzas.
    Resume {
        id: String,
        jid: String,
        h: u32,
        from: String,
    },
    /// Part `index` of `total` of an account moving there (its [`AccountData`], encoded),
    /// for accounts too large for one call; the last part stores it.
    ImportPart {
        jid: String,
        transfer: u64,
        index: u32,
        total: u32,
        bytes: Vec<u8>,
    },
}

/// The answer to a [`Call`].
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Reply {
    /// The account's credentials, if it exists.
    Credentials(Option<UserRecord>),
    /// The account was created.
    Registered,
    /// The account moved (from, offline messages moved, stanzas held).
    Rehomed {
        from: String,
        offline: u64,
        held: u64,
    },
    /// The account was stored.
    Imported,
    /// Done as asked (removal, new password).
    Done,
    /// The call was refused; the text says why.
    Refused(Refusal),
    /// The session is handed over: its full JID, what it handled of the client's stanzas, what
    /// the client did not handle, and the resumption time it was granted.
    Resumed {
        jid: String,
        inbound: u32,
        resend: Vec<Vec<u8>>,
        timeout_ms: u64,
    },
    /// A resumption refused.
    ResumeRefused(ResumeRefusal),
}

/// Why another datacenter did not hand over a session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ResumeRefusal {
    /// It went on to this datacenter.
    Moved(String),
    /// Unknown, expired, someone else's, or `h` did not fit (then what it had handled).
    Failed(Option<u32>),
}

/// Why a call was refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Refusal {
    /// The account exists already.
    Exists,
    /// The account does not exist.
    NotFound,
    /// The domain is not served there.
    UnknownDomain,
    /// The request was malformed or failed; the text says why.
    Failed(String),
}

/// A session homed here whose client is connected to another datacenter.
#[derive(Debug)]
struct Remote {
    session: Arc<Session>,
    /// The datacenter the client is connected to.
    dc: String,
    /// The connection id there.
    edge_conn: u64,
    /// The edge node's epoch when it opened the session.
    epoch: u64,
    /// Set when the edge said the session is gone (nothing to tell it on close).
    edge_gone: AtomicBool,
}

/// A session of this node whose account lives in another datacenter.
#[derive(Debug)]
struct Local {
    session: Arc<Session>,
    home: String,
}

/// The edge sessions this node takes part in, on either side.
#[derive(Debug)]
pub struct Edges {
    /// This node's epoch: new at every start.
    epoch: u64,
    /// Sessions homed here, connected elsewhere, by their connection id here.
    remote: Mutex<HashMap<u64, Arc<Remote>>>,
    /// Sessions connected here, homed elsewhere, by connection id.
    local: Mutex<HashMap<u64, Local>>,
    /// The last epoch each peer announced.
    peer_epochs: Mutex<HashMap<String, u64>>,
}

impl Default for Edges {
    fn default() -> Self {
        Self {
            epoch: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            remote: Mutex::default(),
            local: Mutex::default(),
            peer_epochs: Mutex::default(),
        }
    }
}

impl Edges {
    /// Sessions homed here whose clients are connected to another datacenter.
    pub fn remote_count(&self) -> usize {
        lock(&self.remote).len()
    }

    /// Sessions connected here whose accounts live in another datacenter.
    pub fn local_count(&self) -> usize {
        lock(&self.local).len()
    }
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    // Plain data into a Vec cannot fail.
    Bytes::from(postcard::to_allocvec(value).expect("control records always encode"))
}

/// The route of an edge envelope about `full`'s session number `conn` at the edge: on the
/// account's own stream. An edge envelope carries no routing table index; the field carries the
/// edge's connection id instead (0: no session there).
fn control_route(full: &FullJid, kind: EnvelopeKind, conn: u64) -> Route {
    Route {
        from: full.to_string(),
        to: full.to_bare().to_string(),
        kind,
        grt_index: conn,
    }
}

fn condition_of(error: &SendError) -> StanzaCondition {
    match error {
        SendError::QueueFull { .. } => StanzaCondition::ResourceConstraint,
        SendError::Down { .. } => StanzaCondition::RemoteServerTimeout,
        SendError::UnknownDc(_) => StanzaCondition::ServiceUnavailable,
    }
}

impl Node {
    /// Sends `kind` with `payload` to datacenter `dc` on `full`'s own stream.
    fn send_control(
        &self,
        dc: &str,
        full: &FullJid,
        kind: EnvelopeKind,
        conn: u64,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let Some(mesh) = self.mesh.get() else {
            return Err(SendError::UnknownDc(dc.to_owned()));
        };
        mesh.send(dc, control_route(full, kind, conn), payload)
    }

    // ---- The edge's side ------------------------------------------------------------------

    /// A resource bound here for an account homed in `home`: tells the home, which registers
    /// the session. `Err` (with the condition for the client) when the home cannot be told.
    pub fn open_edge_session(
        &self,
        home: &str,
        session: &Arc<Session>,
        resumed: bool,
    ) -> Result<(), StanzaCondition> {
        let opening = Opening {
            conn: session.conn_id,
            epoch: self.edges.epoch,
            transport: session.transport.as_str().to_owned(),
            peer: session.peer,
            resumed,
        };
        self.send_control(
            home,
            &session.jid,
            EnvelopeKind::EdgeOpen,
            session.conn_id,
            encode(&opening),
        )
        .map_err(|e| {
            tracing::info!(%home, error = %e, "edge session not opened");
            condition_of(&e)
        })?;
        lock(&self.edges.local).insert(
            session.conn_id,
            Local {
                session: session.clone(),
                home: home.to_owned(),
            },
        );
        Ok(())
    }

    /// A stanza from the client of an edge session: handled by its home. When the bridge
    /// refuses it, the client gets the error at once.
    pub fn edge_stanza(&self, home: &str, session: &Session, stanza: Stanza) {
        self.metrics.stanza_in(stanza.kind);
        let Some(mesh) = self.mesh.get() else {
            return;
        };
        let route = control_route(&session.jid, EnvelopeKind::FromEdge, session.conn_id);
        match mesh.send(home, route, stanza.raw().clone()) {
            Ok(()) => self.metrics.mesh_sent(),
            Err(e) => {
                tracing::debug!(%home, error = %e, "edge stanza not sent");
                self.reply_to_session(session, &stanza, condition_of(&e), true);
            }
        }
    }

    /// The stream of an edge session ended: tells the home, then hands it what the client was
    /// never given, for the home to route again.
    pub fn close_edge_session(&self, home: &str, session: &Session, left: Vec<Bytes>) {
        lock(&self.edges.local).remove(&session.conn_id);
        let closing = Closing {
            conn: session.conn_id,
            condition: StreamCondition::UndefinedCondition.as_str().to_owned(),
            text: None,
        };
        if let Err(e) = self.send_control(
            home,
            &session.jid,
            EnvelopeKind::EdgeClose,
            session.conn_id,
            encode(&closing),
        ) {
            tracing::info!(%home, error = %e, "edge session end not told to its home");
        }
        for bytes in left {
            if let Err(e) = self.send_control(
                home,
                &session.jid,
                EnvelopeKind::Undelivered,
                session.conn_id,
                bytes,
            ) {
                tracing::warn!(%home, error = %e, "stanza for an ended edge session lost with its home unreachable");
            }
        }
    }

    /// Answers `stanza` with an error straight to the client of `session`, from the address
    /// the stanza was sent to (`from_target`) or from the server.
    pub fn reply_to_session(
        &self,
        session: &Session,
        stanza: &Stanza,
        condition: StanzaCondition,
        from_target: bool,
    ) {
        if stanza.is_type("error") || stanza.is_type("result") {
            return;
        }
        let Ok(element) = stanza.element(ns::CLIENT) else {
            return;
        };
        let mut reply = StanzaError::new(condition).reply_to(&element);
        if !from_target {
            reply.remove_attr("from");
        }
        reply.set_attr("to", session.jid.to_string());
        if let Ok(reply) = Stanza::from_element(&reply, ns::CLIENT) {
            self.metrics.stanza_bounced();
            self.deliver(session, &reply);
        }
    }

    /// A stanza the home sends to an edge session here; given back to the home when the
    /// session is gone.
    fn to_edge(&self, peer: &str, route: &Route, bytes: Bytes) {
        let Ok(full) = FullJid::new(&route.to) else {
            tracing::warn!(%peer, to = %route.to, "edge stanza for a malformed JID dropped");
            return;
        };
        let mut conn = 0;
        if let Some(session) = self.sm.get(&full) {
            if session.deliver(bytes.clone()) {
                return;
            }
            conn = session.conn_id;
        }
        if let Err(e) = self.send_control(peer, &full, EnvelopeKind::Undelivered, conn, bytes) {
            tracing::warn!(%peer, error = %e, "stanza for an ended edge session lost with its home unreachable");
        }
    }

    /// The home ends an edge session here.
    fn close_edge(&self, route: &Route, payload: &[u8]) {
        let Ok(closing) = postcard::from_bytes::<Closing>(payload) else {
            tracing::warn!(from = %route.from, "unreadable edge close dropped");
            return;
        };
        let Ok(full) = FullJid::new(&route.from) else {
            return;
        };
        if let Some(session) = self.sm.get(&full)
            && (closing.conn == 0 || closing.conn == session.conn_id)
        {
            let condition = StreamCondition::from_name(&closing.condition)
                .unwrap_or(StreamCondition::UndefinedCondition);
            let mut error = StreamError::new(condition);
            if let Some(text) = closing.text {
                error = error.with_text(text);
            }
            session.close(error);
        }
    }

    // ---- The home's side ------------------------------------------------------------------

    /// An edge datacenter bound a resource for an account homed here.
    async fn open_remote(self: &Arc<Self>, peer: &str, route: &Route, payload: &[u8]) {
        let Ok(opening) = postcard::from_bytes::<Opening>(payload) else {
            tracing::warn!(%peer, "unreadable edge opening dropped");
            return;
        };
        let Ok(full) = FullJid::new(&route.from) else {
            return;
        };
        let refuse = |condition: StreamCondition, text: &str| {
            let closing = Closing {
                conn: opening.conn,
                condition: condition.as_str().to_owned(),
                text: Some(text.to_owned()),
            };
            let _ = self.send_control(
                peer,
                &full,
                EnvelopeKind::CloseEdge,
                opening.conn,
                encode(&closing),
            );
        };
        let newer = self.peer_started(peer, opening.epoch);
        if !newer {
            return refuse(
                StreamCondition::Reset,
                "the session belongs to an earlier life of its datacenter",
            );
        }
        if self.remote_home(&full.to_bare()).is_some()
            || !self.account_exists(&full.to_bare()).await
        {
            return refuse(
                StreamCondition::NotAuthorized,
                "the account does not live in this datacenter",
            );
        }
        let transport = Transport::from_label(&opening.transport).unwrap_or(Transport::StartTls);
        let (session, outbox) = Session::new_remote(
            full,
            self.conn_id(),
            transport,
            opening.peer,
            self.config.limits.session_queue,
            Arc::from(peer),
        );
        let remote = Arc::new(Remote {
            session: session.clone(),
            dc: peer.to_owned(),
            edge_conn: opening.conn,
            epoch: opening.epoch,
            edge_gone: AtomicBool::new(false),
        });
        lock(&self.edges.remote).insert(session.conn_id, remote.clone());
        self.register_session(&session, opening.resumed);
        tracing::debug!(jid = %remote.session.jid, %peer, "remote session registered");
        tokio::spawn(run_remote(self.clone(), remote, outbox));
    }

    /// Records `epoch` as `peer`'s current life; `false` when it is older than one already
    /// seen. Remote sessions of the peer's earlier lives end; edge sessions here homed at the
    /// peer end if it restarted (it lost them).
    fn peer_started(&self, peer: &str, epoch: u64) -> bool {
        let previous = {
            let mut epochs = lock(&self.edges.peer_epochs);
            let previous = epochs.get(peer).copied();
            match previous {
                Some(known) if epoch < known => return false,
                Some(known) if epoch == known => return true,
                _ => {}
            }
            epochs.insert(peer.to_owned(), epoch);
            previous
        };
        for remote in lock(&self.edges.remote).values() {
            if remote.dc == peer && remote.epoch < epoch {
                remote.edge_gone.store(true, Ordering::Release);
                remote
                    .session
                    .close(StreamError::new(StreamCondition::Reset));
            }
        }
        if previous.is_some() {
            let error = StreamError::new(StreamCondition::Reset)
                .with_text("the account's home datacenter restarted");
            for local in lock(&self.edges.local).values() {
                if local.home == peer {
                    local.session.close(error.clone());
                }
            }
        }
        true
    }

    /// The remote session `full` of edge `peer`, if it is registered here.
    fn remote_session(&self, peer: &str, full: &FullJid) -> Option<Arc<Remote>> {
        let session = self.sm.get(full)?;
        let remote = lock(&self.edges.remote).get(&session.conn_id).cloned()?;
        (remote.dc == peer).then_some(remote)
    }

    /// A stanza from the client of a remote session: handled as if its client were here.
    async fn from_edge(self: &Arc<Self>, peer: &str, route: &Route, bytes: Bytes) {
        let Ok(stanza) = Stanza::from_frame(bytes) else {
            tracing::warn!(%peer, "unreadable edge stanza dropped");
            return;
        };
        let Ok(full) = FullJid::new(&route.from) else {
            return;
        };
        if stanza.from() != Some(route.from.as_str()) {
            tracing::warn!(%peer, from = ?stanza.from(), "edge stanza with a forged sender dropped");
            return;
        }
        if let Some(remote) = self.remote_session(peer, &full)
            && remote.edge_conn == route.grt_index
        {
            return crate::session::handle_client_stanza(self, &remote.session, stanza).await;
        }
        // No such session here (this node restarted, or ended it): what the client sends is
        // still routed, and the edge is told to end the stream so the client starts afresh.
        if stanza.kind != StanzaKind::Presence {
            self.route(stanza).await;
        }
        let closing = Closing {
            conn: route.grt_index,
            condition: StreamCondition::Reset.as_str().to_owned(),
            text: Some("the session is not known at the account's home".to_owned()),
        };
        let _ = self.send_control(
            peer,
            &full,
            EnvelopeKind::CloseEdge,
            route.grt_index,
            encode(&closing),
        );
    }

    /// The edge says a remote session's stream ended.
    fn edge_closed(&self, peer: &str, route: &Route, payload: &[u8]) {
        let Ok(closing) = postcard::from_bytes::<Closing>(payload) else {
            return;
        };
        let Ok(full) = FullJid::new(&route.from) else {
            return;
        };
        if let Some(remote) = self.remote_session(peer, &full)
            && remote.edge_conn == closing.conn
        {
            end_remote(self, &remote);
        }
    }

    /// A stanza the edge could not give to a session that ended there: routed again.
    async fn undelivered(self: &Arc<Self>, peer: &str, route: &Route, bytes: Bytes) {
        if let Ok(full) = FullJid::new(&route.from)
            && let Some(remote) = self.remote_session(peer, &full)
            && (route.grt_index == 0 || route.grt_index == remote.edge_conn)
        {
            // The edge has no such session any more (with 0, no session of that JID at all,
            // and the envelope is ordered before any later opening of it), so it is over here.
            end_remote(self, &remote);
        }
        match Stanza::from_frame(bytes) {
            Ok(stanza) if stanza.kind != StanzaKind::Presence => self.route(stanza).await,
            Ok(_) => {}
            Err(_) => tracing::warn!(%peer, "unreadable undelivered stanza dropped"),
        }
    }

    /// Dispatches an edge envelope from a bridge.
    pub async fn route_edge(self: &Arc<Self>, inbound: Inbound) {
        let peer = inbound.peer.as_str();
        let envelope = inbound.envelope;
        match envelope.route.kind {
            EnvelopeKind::EdgeOpen => {
                self.open_remote(peer, &envelope.route, &envelope.stanza)
                    .await;
            }
            EnvelopeKind::EdgeClose => self.edge_closed(peer, &envelope.route, &envelope.stanza),
            EnvelopeKind::FromEdge => {
                self.from_edge(peer, &envelope.route, envelope.stanza).await;
            }
            EnvelopeKind::ToEdge => self.to_edge(peer, &envelope.route, envelope.stanza),
            EnvelopeKind::Undelivered => {
                self.undelivered(peer, &envelope.route, envelope.stanza)
                    .await;
            }
            EnvelopeKind::CloseEdge => self.close_edge(&envelope.route, &envelope.stanza),
            EnvelopeKind::Epoch => match postcard::from_bytes::<u64>(&envelope.stanza) {
                Ok(epoch) => {
                    self.peer_started(peer, epoch);
                    crate::modules::muc::peer_started(self, peer).await;
                }
                Err(_) => tracing::warn!(%peer, "unreadable epoch announcement dropped"),
            },
            EnvelopeKind::RoomOccupants => {
                let inbound = Inbound {
                    peer: peer.to_owned(),
                    envelope,
                };
                crate::modules::muc::occupants_from_home(self, &inbound);
            }
            EnvelopeKind::RoomFanout => {
                let inbound = Inbound {
                    peer: peer.to_owned(),
                    envelope,
                };
                crate::modules::muc::fanout_from_home(self, inbound).await;
            }
            EnvelopeKind::RoomBatch => {
                let inbound = Inbound {
                    peer: peer.to_owned(),
                    envelope,
                };
                crate::modules::muc::batch_from_home(self, inbound).await;
            }
            EnvelopeKind::Message | EnvelopeKind::Presence | EnvelopeKind::Iq => {}
        }
    }

    /// Tells every peer that this node started, so they drop what they kept for its previous
    /// life.
    pub fn announce_epoch(&self) {
        let Some(mesh) = self.mesh.get() else {
            return;
        };
        let own = &self.config.cluster.dc;
        for link in mesh.status() {
            let route = Route {
                from: own.clone(),
                to: link.dc.clone(),
                kind: EnvelopeKind::Epoch,
                grt_index: 0,
            };
            if let Err(e) = mesh.send(&link.dc, route, encode(&self.edges.epoch)) {
                tracing::info!(peer = %link.dc, error = %e, "start not announced");
            }
        }
    }

    // ---- Calls ----------------------------------------------------------------------------

    /// The stored credentials of `jid`, homed in datacenter `home` (`Ok(None)`: no such
    /// account there); `Err` when the home cannot be asked.
    pub async fn remote_credentials(
        &self,
        home: &str,
        jid: &BareJid,
    ) -> Result<Option<UserRecord>, String> {
        let call = Call::Credentials {
            jid: jid.to_string(),
        };
        match self.call(home, &call).await? {
            Reply::Credentials(record) => Ok(record),
            Reply::Refused(refusal) => Err(format!("refused: {refusal:?}")),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Creates the account `jid` at its home datacenter `home`.
    pub async fn register_remote(
        &self,
        home: &str,
        jid: &BareJid,
        password: &str,
    ) -> Result<(), Refusal> {
        let call = Call::Register {
            jid: jid.to_string(),
            password: password.to_owned(),
        };
        match self.call(home, &call).await {
            Ok(Reply::Registered) => Ok(()),
            Ok(Reply::Refused(refusal)) => Err(refusal),
            Ok(other) => Err(Refusal::Failed(format!("unexpected answer {other:?}"))),
            Err(e) => Err(Refusal::Failed(e)),
        }
    }

    /// Has `home`, the account's home, move it to `dc`.
    pub(crate) async fn rehome_at(
        &self,
        home: &str,
        jid: &BareJid,
        dc: &str,
    ) -> Result<Rehomed, RehomeError> {
        let call = Call::Rehome {
            jid: jid.to_string(),
            dc: dc.to_owned(),
        };
        match self.call(home, &call).await {
            Ok(Reply::Rehomed {
                from,
                offline,
                held,
            }) => Ok(Rehomed {
                from,
                offline,
                held,
            }),
            Ok(Reply::Refused(Refusal::Failed(reason))) => Err(RehomeError::Failed(reason)),
            Ok(other) => Err(RehomeError::Failed(format!(
                "unexpected answer from {home}: {other:?}"
            ))),
            Err(e) => Err(RehomeError::Failed(format!("{home} cannot be asked: {e}"))),
        }
    }

    /// Has `dc` store the account `jid` moving there.
    pub(crate) async fn import_at(
        &self,
        dc: &str,
        jid: &BareJid,
        data: AccountData,
    ) -> Result<(), RehomeError> {
        let encoded = postcard::to_allocvec(&data)
            .map_err(|e| RehomeError::Failed(format!("the account cannot be encoded: {e}")))?;
        if encoded.len() <= crate::rehome::IMPORT_PART {
            let call = Call::Import {
                jid: jid.to_string(),
                data: Box::new(data),
            };
            return self.import_call(dc, &call, true).await;
        }
        // Too large for one call (a call frame holds about 1 MiB): sent in parts, in order;
        // the new home keeps them until the last and stores the account in one transaction.
        let mut transfer = [0u8; 8];
        rand::fill(&mut transfer);
        let transfer = u64::from_le_bytes(transfer);
        let parts: Vec<&[u8]> = encoded.chunks(crate::rehome::IMPORT_PART).collect();
        let total = u32::try_from(parts.len())
            .map_err(|_| RehomeError::Failed("the account is too large to move".to_owned()))?;
        for (index, bytes) in (0u32..).zip(parts) {
            let call = Call::ImportPart {
                jid: jid.to_string(),
                transfer,
                index,
                total,
                bytes: bytes.to_vec(),
            };
            self.import_call(dc, &call, index + 1 == total).await?;
        }
        tracing::info!(%jid, to = %dc, bytes = encoded.len(), parts = total, "account sent in parts");
        Ok(())
    }

    async fn import_call(&self, dc: &str, call: &Call, last: bool) -> Result<(), RehomeError> {
        match self.call(dc, call).await {
            Ok(Reply::Imported) if last => Ok(()),
            Ok(Reply::Done) if !last => Ok(()),
            Ok(Reply::Refused(Refusal::Failed(reason))) => Err(RehomeError::Failed(format!(
                "{dc} did not store the account: {reason}"
            ))),
            Ok(other) => Err(RehomeError::Failed(format!(
                "unexpected answer from {dc}: {other:?}"
            ))),
            Err(e) => Err(RehomeError::Failed(format!("{dc} cannot be asked: {e}"))),
        }
    }

    async fn call(&self, dc: &str, call: &Call) -> Result<Reply, String> {
        let mesh = self
            .mesh
            .get()
            .ok_or_else(|| "this node runs no bridges".to_owned())?;
        let reply = mesh.call(dc, encode(call), CALL_DEADLINE).await?;
        postcard::from_bytes(&reply).map_err(|e| format!("unreadable reply from {dc}: {e}"))
    }

    /// Has datacenter `dc` hand over the detached session `id` of `account` (XEP-0198) to a
    /// stream here whose client handled `h` of its stanzas.
    pub async fn resume_remote(
        &self,
        dc: &str,
        id: &str,
        account: &BareJid,
        h: u32,
    ) -> Result<crate::resume::Resumed, ResumeRefusal> {
        let call = Call::Resume {
            id: id.to_owned(),
            jid: account.to_string(),
            h,
            from: self.config.cluster.dc.clone(),
        };
        match self.call(dc, &call).await {
            Ok(Reply::Resumed {
                jid,
                inbound,
                resend,
                timeout_ms,
            }) => Ok(crate::resume::Resumed::Elsewhere {
                jid,
                inbound,
                resend: resend.into_iter().map(Bytes::from).collect(),
                timeout: Duration::from_millis(timeout_ms),
            }),
            Ok(Reply::ResumeRefused(refusal)) => Err(refusal),
            Ok(other) => {
                tracing::info!(%dc, answer = ?other, "unexpected answer to a resumption");
                Err(ResumeRefusal::Failed(None))
            }
            Err(e) => {
                tracing::info!(%dc, error = %e, "resumption not asked");
                Err(ResumeRefusal::Failed(None))
            }
        }
    }

    /// Registers a bound session. One with the same full JID is replaced: closed with
    /// `<conflict/>`, or, when `resumed` (a XEP-0198 resumption of it from another
    /// datacenter), taken over quietly with its presence and settings.
    pub fn register_session(&self, session: &Arc<Session>, resumed: bool) {
        if let Some(old) = self.sm.register(session.clone()) {
            if resumed {
                old.supersede(session);
                old.close(
                    StreamError::new(StreamCondition::Conflict)
                        .with_text("the session was resumed by a new connection"),
                );
            } else {
                old.close(
                    StreamError::new(StreamCondition::Conflict)
                        .with_text("replaced by a new connection"),
                );
            }
        }
    }

    /// Answers a call from another datacenter.
    pub async fn answer_call(self: &Arc<Self>, request: &[u8]) -> Vec<u8> {
        let reply = match postcard::from_bytes::<Call>(request) {
            Err(e) => Reply::Refused(Refusal::Failed(format!("unreadable call: {e}"))),
            Ok(Call::Credentials { jid }) => match BareJid::new(&jid) {
                Ok(jid) => match self.storage.get_user(&jid).await {
                    Ok(record) => Reply::Credentials(record),
                    Err(e) => Reply::Refused(Refusal::Failed(e.to_string())),
                },
                Err(_) => Reply::Credentials(None),
            },
            Ok(Call::Register { jid, password }) => self.answer_register(&jid, &password).await,
            Ok(Call::Remove { jid }) => self.answer_change(&jid, None).await,
            Ok(Call::SetPassword { jid, password }) => {
                self.answer_change(&jid, Some(&password)).await
            }
            Ok(Call::Rehome { jid, dc }) => match BareJid::new(&jid) {
                Ok(jid) => match self.move_out(&jid, &dc).await {
                    Ok(done) => Reply::Rehomed {
                        from: done.from,
                        offline: done.offline,
                        held: done.held,
                    },
                    Err(e) => Reply::Refused(Refusal::Failed(e.to_string())),
                },
                Err(_) => Reply::Refused(Refusal::Failed(format!("invalid JID {jid:?}"))),
            },
            Ok(Call::Import { jid, data }) => match BareJid::new(&jid) {
                Ok(jid) => match self.import_account(&jid, *data).await {
                    Ok(()) => Reply::Imported,
                    Err(reason) => Reply::Refused(Refusal::Failed(reason)),
                },
                Err(_) => Reply::Refused(Refusal::Failed(format!("invalid JID {jid:?}"))),
            },
            Ok(Call::ImportPart {
                jid,
                transfer,
                index,
                total,
                bytes,
            }) => match BareJid::new(&jid) {
                Ok(jid) => match self.moves.import_part(&jid, transfer, index, total, bytes) {
                    Ok(None) => Reply::Done,
                    Ok(Some(data)) => match self.import_account(&jid, data).await {
                        Ok(()) => Reply::Imported,
                        Err(reason) => Reply::Refused(Refusal::Failed(reason)),
                    },
                    Err(reason) => Reply::Refused(Refusal::Failed(reason)),
                },
                Err(_) => Reply::Refused(Refusal::Failed(format!("invalid JID {jid:?}"))),
            },
            Ok(Call::Resume { id, jid, h, from }) => match BareJid::new(&jid) {
                Ok(jid) => match self.hand_over(&id, &jid, h, &from).await {
                    Ok((jid, inbound, resend, timeout)) => Reply::Resumed {
                        jid,
                        inbound,
                        resend: resend.into_iter().map(|b| b.to_vec()).collect(),
                        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    },
                    Err(refusal) => Reply::ResumeRefused(refusal),
                },
                Err(_) => Reply::ResumeRefused(ResumeRefusal::Failed(None)),
            },
        };
        encode(&reply).to_vec()
    }

    /// Removes, or changes the password of, the account `jid` homed in `home`.
    pub async fn change_remote_account(
        &self,
        home: &str,
        jid: &BareJid,
        new_password: Option<&str>,
    ) -> Result<(), Refusal> {
        let call = match new_password {
            None => Call::Remove {
                jid: jid.to_string(),
            },
            Some(password) => Call::SetPassword {
                jid: jid.to_string(),
                password: password.to_owned(),
            },
        };
        match self.call(home, &call).await {
            Ok(Reply::Done) => Ok(()),
            Ok(Reply::Refused(refusal)) => Err(refusal),
            Ok(other) => Err(Refusal::Failed(format!("unexpected answer {other:?}"))),
            Err(e) => Err(Refusal::Failed(e)),
        }
    }

    async fn answer_change(self: &Arc<Self>, jid: &str, new_password: Option<&str>) -> Reply {
        use crate::accounts::{self, AccountError};
        let Ok(jid) = BareJid::new(jid) else {
            return Reply::Refused(Refusal::Failed(format!("invalid JID {jid:?}")));
        };
        let done = match new_password {
            None => accounts::remove(self, &jid).await,
            Some(password) => accounts::change_password(self, &jid, password).await,
        };
        match done {
            Ok(()) => Reply::Done,
            Err(AccountError::NotFound(_)) => Reply::Refused(Refusal::NotFound),
            Err(e) => Reply::Refused(Refusal::Failed(e.to_string())),
        }
    }

    async fn answer_register(self: &Arc<Self>, jid: &str, password: &str) -> Reply {
        use crate::accounts::{self, AccountError};
        let Ok(jid) = Jid::new(jid).map(|j| j.to_bare()) else {
            return Reply::Refused(Refusal::Failed(format!("invalid JID {jid:?}")));
        };
        let (Some(user), domain) = (jid.node(), jid.domain().as_str()) else {
            return Reply::Refused(Refusal::Failed(format!("invalid JID {jid}")));
        };
        let jid = match accounts::account_jid(self, user.as_str(), domain) {
            Ok(jid) => jid,
            Err(AccountError::UnknownDomain(_)) => return Reply::Refused(Refusal::UnknownDomain),
            Err(e) => return Reply::Refused(Refusal::Failed(e.to_string())),
        };
        match accounts::register(self, &jid, password, None).await {
            Ok(()) => Reply::Registered,
            Err(AccountError::Exists(_)) => Reply::Refused(Refusal::Exists),
            Err(e) => Reply::Refused(Refusal::Failed(e.to_string())),
        }
    }
}

/// Ends a remote session: the edge is not told (it told us).
fn end_remote(node: &Node, remote: &Remote) {
    remote.edge_gone.store(true, Ordering::Release);
    node.sm.unregister(&remote.session);
    remote
        .session
        .close(StreamError::new(StreamCondition::UndefinedCondition));
}

/// Carries a remote session's queue over the bridge until the session ends, then cleans up as
/// a connection task does: unregistered, what was left routed again, contacts told.
async fn run_remote(node: Arc<Node>, remote: Arc<Remote>, mut outbox: Outbox) {
    let session = remote.session.clone();
    let mut left = Vec::new();
    loop {
        tokio::select! {
            biased;
            Some(Outbound::Stanza(bytes)) = outbox.recv() => {
                let route = Route {
                    from: session.jid.to_string(),
                    to: session.jid.to_string(),
                    kind: EnvelopeKind::ToEdge,
                    grt_index: 0,
                };
                let sent = node.mesh.get().map(|mesh| mesh.send(&remote.dc, route, bytes.clone()));
                match sent {
                    Some(Ok(())) => node.metrics.mesh_sent(),
                    _ => {
                        // The edge cannot be reached: the session goes with it.
                        left.push(bytes);
                        remote.edge_gone.store(true, Ordering::Release);
                        break;
                    }
                }
            }
            reason = session.closed() => {
                if !remote.edge_gone.load(Ordering::Acquire) {
                    let closing = Closing {
                        conn: remote.edge_conn,
                        condition: reason.condition.as_str().to_owned(),
                        text: reason.text.clone(),
                    };
                    let _ = node.send_control(
                        &remote.dc,
                        &session.jid,
                        EnvelopeKind::CloseEdge,
                        remote.edge_conn,
                        encode(&closing),
                    );
                }
                break;
            }
        }
    }
    node.sm.unregister(&session);
    lock(&node.edges.remote).remove(&session.conn_id);
    left.extend(outbox.close_and_drain());
    for bytes in left {
        if let Ok(stanza) = Stanza::from_frame(bytes)
            && stanza.kind != StanzaKind::Presence
        {
            node.route(stanza).await;
        }
    }
    if !session.is_superseded() {
        crate::modules::presence::session_ended(&node, &session).await;
    }
    tracing::debug!(jid = %session.jid, "remote session ended");
}

/// Ends the edge sessions of peers that stay unreachable past `mesh.down_after`, on both
/// sides, for as long as the node runs.
pub fn watch_peers(node: &Arc<Node>) -> tokio::task::JoinHandle<()> {
    let node = node.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        loop {
            tick.tick().await;
            let Some(mesh) = node.mesh.get() else {
                continue;
            };
            let down_after = node.config.mesh.down_after;
            for link in mesh.status() {
                if link.unreachable_for.is_none_or(|t| t <= down_after) {
                    continue;
                }
                let gone: Vec<Arc<Remote>> = lock(&node.edges.remote)
                    .values()
                    .filter(|r| r.dc == link.dc)
                    .cloned()
                    .collect();
                for remote in gone {
                    tracing::info!(jid = %remote.session.jid, peer = %link.dc, "remote session ends with its datacenter unreachable");
                    end_remote(&node, &remote);
                }
                let error = StreamError::new(StreamCondition::RemoteConnectionFailed)
                    .with_text("the account's home datacenter is unreachable");
                for local in lock(&node.edges.local).values() {
                    if local.home == link.dc {
                        local.session.close(error.clone());
                    }
                }
            }
        }
    })
}
