//! Moving an account's home to another datacenter, with everything stored for it.
//!
//! `tern ctl mesh rehome --jid U --dc DC` may run against any node; the account's current home
//! does the move:
//!
//! 1. It **holds** every stanza routed to the account (they wait in memory, in order) and ends
//!    its sessions with `<reset/>` (their clients log in again; until the move is over a login
//!    is a temporary failure).
//! 2. It exports the account's data ([`AccountData`]: credentials, roster, offline messages,
//!    module items, archive) and has the new home import it, over call streams of the bridge:
//!    in one call, or, when larger than [`IMPORT_PART`], in parts sent in order that the new
//!    home keeps until the last and then stores in one transaction.
//! 3. It writes the new home into the routing table; from then on every datacenter routes to
//!    the new home, and a stanza that still reaches the old one is forwarded by its newer view.
//! 4. It deletes its copy and routes the held stanzas again, now to the new home.
//!
//! If the import or the routing table write fails, the move is called off: the held stanzas
//! are routed here as before and nothing is deleted. Nothing routed to the account during the
//! move is lost; stanzas held during it may be delivered after ones sent just after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jid::{BareJid, Jid};
use tern_raft_store::Command;
use tern_xmpp_proto::{Stanza, StreamCondition, StreamError};

use crate::node::Node;
use crate::sm::lock;
use crate::storage::AccountData;

/// How long the old home waits for the account's sessions to end before exporting.
const SESSIONS_END_WAIT: Duration = Duration::from_secs(5);
/// Largest piece of an encoded account sent in one call (a call frame holds about 1 MiB).
pub(crate) const IMPORT_PART: usize = 512 * 1024;
/// Largest account a datacenter accepts in parts.
const IMPORT_MAX: usize = 1024 * 1024 * 1024;
/// Parts of a transfer not completed within this are dropped (the move was called off).
const IMPORT_STALE: Duration = Duration::from_secs(120);

/// An account arriving in parts.
#[derive(Debug)]
struct Incoming {
    transfer: u64,
    next: u32,
    total: u32,
    bytes: Vec<u8>,
    started: Instant,
}

/// Accounts being moved away from this node, with the stanzas held for each.
#[derive(Debug, Default)]
pub struct Moves {
    /// How many moves run (checked first, so routing pays nothing when none does).
    active: AtomicUsize,
    held: std::sync::Mutex<HashMap<BareJid, Vec<Stanza>>>,
    /// Local deliveries in progress, so a move can wait for those that began before it held
    /// its account's stanzas (one of them may still be storing an offline message).
    gate: Gate,
    /// Accounts moving here in parts, by JID.
    incoming: std::sync::Mutex<HashMap<BareJid, Incoming>>,
}

impl Moves {
    /// Part `index` of `total` of the encoded account `jid` moving here; the whole account
    /// once the last part is in. Parts come in order; a new transfer replaces an older one.
    pub(crate) fn import_part(
        &self,
        jid: &BareJid,
        transfer: u64,
        index: u32,
        total: u32,
        part: Vec<u8>,
    ) -> Result<Option<AccountData>, String> {
        let mut incoming = lock(&self.incoming);
        incoming.retain(|_, i| i.started.elapsed() < IMPORT_STALE);
        if index == 0 {
            incoming.insert(
                jid.clone(),
                Incoming {
                    transfer,
                    next: 0,
                    total,
                    bytes: Vec::new(),
                    started: Instant::now(),
                },
            );
        }
        let Some(entry) = incoming.get_mut(jid) else {
            return Err(format!("part {index} of a transfer that did not start"));
        };
        if entry.transfer != transfer || entry.next != index || entry.total != total {
            incoming.remove(jid);
            return Err(format!("part {index} of {total} out of order"));
        }
        if entry.bytes.len() + part.len() > IMPORT_MAX {
            incoming.remove(jid);
            return Err("the account is larger than this datacenter accepts".to_owned());
        }
        entry.bytes.extend_from_slice(&part);
        entry.next += 1;
        if entry.next < total {
            return Ok(None);
        }
        let Some(done) = incoming.remove(jid) else {
            return Err("transfer vanished".to_owned());
        };
        drop(incoming);
        postcard::from_bytes(&done.bytes)
            .map(Some)
            .map_err(|e| format!("the account's parts do not decode: {e}"))
    }
}

/// Counts tasks inside a section by generation: [`Gate::drain`] starts a new generation and
/// waits until every task that entered under the previous one has left.
#[derive(Debug, Default)]
struct Gate {
    generation: AtomicUsize,
    inside: [AtomicUsize; 2],
    draining: tokio::sync::Mutex<()>,
}

/// A task inside the gated section; leaving is dropping it.
#[derive(Debug)]
pub struct Inside<'a> {
    gate: &'a Gate,
    slot: usize,
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.gate.inside[self.slot].fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    fn enter(&self) -> Inside<'_> {
        loop {
            let generation = self.generation.load(Ordering::Acquire);
            let slot = generation & 1;
            self.inside[slot].fetch_add(1, Ordering::AcqRel);
            if self.generation.load(Ordering::Acquire) == generation {
                return Inside { gate: self, slot };
            }
            // A drain began in between: count under the new generation instead.
            self.inside[slot].fetch_sub(1, Ordering::AcqRel);
        }
    }

    async fn drain(&self, timeout: Duration) -> bool {
        let _one_at_a_time = self.draining.lock().await;
        let old = self.generation.fetch_add(1, Ordering::AcqRel) & 1;
        let deadline = Instant::now() + timeout;
        while self.inside[old].load(Ordering::Acquire) > 0 {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }
}

impl Moves {
    /// Marks a local delivery in progress until the returned value is dropped.
    pub fn enter(&self) -> Inside<'_> {
        self.gate.enter()
    }

    /// Whether `jid` is being moved away.
    pub fn is_moving(&self, jid: &BareJid) -> bool {
        self.active.load(Ordering::Acquire) > 0 && lock(&self.held).contains_key(jid)
    }

    /// Holds `stanza` when the account of its recipient `to` is being moved; otherwise gives
    /// it back.
    pub fn hold(&self, to: &Jid, stanza: Stanza) -> Option<Stanza> {
        if self.active.load(Ordering::Acquire) == 0 {
            return Some(stanza);
        }
        match lock(&self.held).get_mut(&to.to_bare()) {
            Some(held) => {
                held.push(stanza);
                None
            }
            None => Some(stanza),
        }
    }

    fn begin(&self, jid: &BareJid) -> bool {
        let mut held = lock(&self.held);
        if held.contains_key(jid) {
            return false;
        }
        held.insert(jid.clone(), Vec::new());
        self.active.fetch_add(1, Ordering::AcqRel);
        true
    }

    fn end(&self, jid: &BareJid) -> Vec<Stanza> {
        let taken = lock(&self.held).remove(jid);
        if taken.is_some() {
            self.active.fetch_sub(1, Ordering::AcqRel);
        }
        taken.unwrap_or_default()
    }
}

/// Why a move did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RehomeError {
    /// The routing table has no home for the account.
    #[error("{0} has no home in the routing table")]
    NotFound(String),
    /// The datacenter named is not in the routing table.
    #[error("unknown datacenter {0}")]
    UnknownDc(String),
    /// The account is already being moved.
    #[error("{0} is already being moved")]
    InProgress(String),
    /// The move needs the mesh's bridges, and this node runs none.
    #[error("this node runs no bridges to other datacenters")]
    NoMesh,
    /// A datacenter refused or could not be reached; nothing was changed.
    #[error("{0}")]
    Failed(String),
}

/// What a move did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rehomed {
    /// The datacenter the account lived in.
    pub from: String,
    /// Offline messages moved with it.
    pub offline: u64,
    /// Stanzas held during the move and routed to the new home.
    pub held: u64,
}

impl Node {
    /// Moves `jid`'s home to datacenter `dc`: here when this is its home, else by asking its
    /// home over the bridge.
    pub async fn rehome(self: &Arc<Self>, jid: &BareJid, dc: &str) -> Result<Rehomed, RehomeError> {
        let (home, known) = self.grt.reader().with(|t| {
            let home = t
                .user_home(jid)
                .home
                .and_then(|id| t.dc(id).map(|d| d.name.clone()));
            (home, t.dc_id(dc).is_some())
        });
        let home = home.ok_or_else(|| RehomeError::NotFound(jid.to_string()))?;
        if !known {
            return Err(RehomeError::UnknownDc(dc.to_owned()));
        }
        if home == dc {
            return Ok(Rehomed {
                from: home,
                offline: 0,
                held: 0,
            });
        }
        if self.mesh.get().is_none() {
            return Err(RehomeError::NoMesh);
        }
        if home != self.config.cluster.dc {
            return self.rehome_at(&home, jid, dc).await;
        }
        self.move_out(jid, dc).await
    }

    /// The move, at the account's current home.
    pub(crate) async fn move_out(
        self: &Arc<Self>,
        jid: &BareJid,
        dc: &str,
    ) -> Result<Rehomed, RehomeError> {
        if !self.moves.begin(jid) {
            return Err(RehomeError::InProgress(jid.to_string()));
        }
        // From here on the account's stanzas are held; wait for deliveries that began before.
        if !self.moves.gate.drain(SESSIONS_END_WAIT).await {
            tracing::warn!(%jid, "deliveries still running when a move began");
        }
        let result = self.carry(jid, dc).await;
        let held = self.moves.end(jid);
        let count = held.len() as u64;
        // Moved: the routing table sends them to the new home. Called off: delivered here.
        for stanza in held {
            self.route(stanza).await;
        }
        let offline = result?;
        tracing::info!(%jid, to = %dc, offline, held = count, "account moved to another datacenter");
        Ok(Rehomed {
            from: self.config.cluster.dc.clone(),
            offline,
            held: count,
        })
    }

    /// Ends the sessions, copies the data to `dc`, changes the home, deletes the copy here.
    async fn carry(self: &Arc<Self>, jid: &BareJid, dc: &str) -> Result<u64, RehomeError> {
        let error = StreamError::new(StreamCondition::Reset).with_text(format!(
            "the account moved to datacenter {dc}; log in again"
        ));
        for session in self.sm.resources(jid) {
            session.close(error.clone());
        }
        let deadline = Instant::now() + SESSIONS_END_WAIT;
        while self.sm.is_online(jid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let data = self
            .storage
            .export_user(jid)
            .await
            .map_err(|e| RehomeError::Failed(format!("cannot read the account here: {e}")))?
            .ok_or_else(|| RehomeError::NotFound(jid.to_string()))?;
        let offline = data.offline.len() as u64;
        self.import_at(dc, jid, data).await?;
        let applied = self
            .grt
            .write(Command::RehomeUser {
                jid: jid.to_string(),
                dc: dc.to_owned(),
            })
            .await
            .map_err(|e| {
                RehomeError::Failed(format!("the routing table did not record the move: {e}"))
            })?;
        // The held stanzas are routed by this node's copy of the table: it must show the move.
        if let Err(e) = self
            .grt
            .wait_applied(applied.index, SESSIONS_END_WAIT)
            .await
        {
            tracing::warn!(%jid, error = %e, "this node's routing table is slow to show a move");
        }
        self.privacy.forget(jid);
        self.mam_prefs.forget(jid);
        if let Err(e) = self.storage.remove_user(jid).await {
            // The new home has the account; a stale copy here is never read again.
            tracing::warn!(%jid, error = %e, "moved account's old copy not deleted");
        }
        Ok(offline)
    }

    /// Stores an account moved here from another datacenter.
    pub(crate) async fn import_account(
        &self,
        jid: &BareJid,
        data: AccountData,
    ) -> Result<(), String> {
        if !self.serves(jid.domain().as_str()) {
            return Err(format!("domain {} is not served here", jid.domain()));
        }
        self.storage
            .import_user(jid, data)
            .await
            .map_err(|e| e.to_string())?;
        crate::modules::privacy::reload(self, jid).await;
        crate::modules::mam::reload(self, jid).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_waits_only_for_those_inside_before_it() {
        let moves = Arc::new(Moves::default());
        let before = moves.enter();
        let drain = {
            let moves = moves.clone();
            tokio::spawn(async move { moves.gate.drain(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!drain.is_finished(), "one task from before is still inside");
        // Entering after the drain began does not keep it waiting.
        let after = moves.enter();
        drop(before);
        assert!(
            drain.await.expect("drain"),
            "drained once the earlier task left"
        );
        drop(after);
        // A drain that nobody leaves gives up at its timeout.
        let stuck = moves.enter();
        assert!(!moves.gate.drain(Duration::from_millis(20)).await);
        drop(stuck);
    }

    fn scram() -> crate::storage::ScramRecord {
        crate::storage::ScramRecord {
            salt: vec![1; 16],
            iterations: 4096,
            stored_key: vec![2; 32],
            server_key: vec![3; 32],
        }
    }

    #[test]
    fn an_account_arrives_in_parts_in_order() {
        let moves = Moves::default();
        let alice = BareJid::new("alice@localhost").expect("jid");
        let data = AccountData {
            record: crate::storage::UserRecord {
                sha1: scram(),
                sha256: scram(),
                created_unix: 1,
            },
            roster: crate::storage::Roster::default(),
            offline: Vec::new(),
            items: vec![crate::storage::AccountItem {
                kind: "private".into(),
                key: "k".into(),
                value: vec![7; 3000],
            }],
            archive: Vec::new(),
        };
        let encoded = postcard::to_allocvec(&data).expect("encode");
        let parts: Vec<&[u8]> = encoded.chunks(1000).collect();
        let total = parts.len() as u32;
        // Out of order: refused, and the transfer is dropped.
        assert!(
            moves
                .import_part(&alice, 1, 1, total, parts[1].to_vec())
                .is_err()
        );
        for (i, part) in parts.iter().enumerate() {
            let got = moves
                .import_part(&alice, 2, i as u32, total, part.to_vec())
                .expect("in order");
            assert_eq!(got.is_some(), i + 1 == parts.len());
            if let Some(got) = got {
                assert_eq!(got, data);
            }
        }
        // A part of another transfer in the middle ends it.
        moves
            .import_part(&alice, 3, 0, total, parts[0].to_vec())
            .expect("start");
        assert!(
            moves
                .import_part(&alice, 4, 1, total, parts[1].to_vec())
                .is_err()
        );
        assert!(
            moves
                .import_part(&alice, 3, 1, total, parts[1].to_vec())
                .is_err()
        );
    }

    #[test]
    fn stanzas_are_held_only_for_accounts_being_moved() {
        let moves = Moves::default();
        let alice = BareJid::new("alice@localhost").expect("jid");
        let stanza = |to: &str| {
            Stanza::from_frame(bytes::Bytes::from(format!(
                "<message xmlns='jabber:client' to='{to}'><body>x</body></message>"
            )))
            .expect("stanza")
        };
        let to_alice = Jid::new("alice@localhost/phone").expect("jid");
        assert!(
            moves
                .hold(&to_alice, stanza("alice@localhost/phone"))
                .is_some()
        );
        assert!(moves.begin(&alice));
        assert!(!moves.begin(&alice), "one move at a time");
        assert!(moves.is_moving(&alice));
        assert!(
            moves
                .hold(&to_alice, stanza("alice@localhost/phone"))
                .is_none()
        );
        let to_bob = Jid::new("bob@localhost").expect("jid");
        assert!(moves.hold(&to_bob, stanza("bob@localhost")).is_some());
        assert_eq!(moves.end(&alice).len(), 1);
        assert!(!moves.is_moving(&alice));
        assert!(
            moves
                .hold(&to_alice, stanza("alice@localhost/phone"))
                .is_some()
        );
    }
}
