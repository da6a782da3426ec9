//! The bridges' durable state in redb (`<data_dir>/mesh.redb`): every envelope waiting for a
//! peer's acknowledgement, and, per peer and peer epoch, the last sequence number delivered on
//! each stream.
//!
//! Writes go through one writer thread that takes everything queued since its last commit into
//! one transaction and one fsync; nobody waits for it. So a node that stops or crashes keeps
//! what it had queued except the last few milliseconds, and after a restart its queues are
//! reloaded and drain in order when the links come up. Envelopes of a previous life are
//! renumbered into the new epoch (in their order), so the receiver sees them as new: one that
//! was delivered but not yet acknowledged when the sender died is delivered again. Likewise a
//! receiver that dies between delivering and recording may deliver once more what it delivered
//! last. Both windows are one writer batch.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::frame::Envelope;

/// Waiting envelopes: (peer, stream, seq) → encoded envelope.
const OUTBOUND: TableDefinition<'_, (&str, u16, u64), &[u8]> = TableDefinition::new("outbound");
/// Delivered positions: (peer, peer epoch) → postcard `Vec<u64>` (one per stream).
const DELIVERED: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("delivered");

/// The format byte in front of stored values.
const FORMAT: u8 = 1;

/// Most operations in one transaction.
const MAX_BATCH: usize = 8_192;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb refused the file.
    #[error("cannot open the mesh queue {path}: {source}")]
    Database {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: Box<redb::Error>,
    },
    /// The writer thread could not start.
    #[error("cannot start the mesh queue writer: {0}")]
    Thread(std::io::Error),
}

enum Op {
    Put {
        peer: String,
        stream: u16,
        seq: u64,
        bytes: Vec<u8>,
    },
    Ack {
        peer: String,
        stream: u16,
        upto: u64,
    },
    Delivered {
        peer: String,
        epoch: u64,
        streams: Vec<u64>,
    },
    /// Forgets the delivered positions of a peer's other epochs.
    NewEpoch { peer: String, epoch: u64 },
    /// Answered once everything queued before it is committed.
    Flush(Sender<()>),
}

/// What the store held at start: per peer, per stream, the waiting envelopes in order; and
/// the delivered positions per (peer, epoch).
#[derive(Debug, Default)]
pub struct Restored {
    /// Waiting envelopes, in their order, per peer and stream.
    pub outbound: HashMap<String, BTreeMap<u16, Vec<Envelope>>>,
    /// Delivered positions.
    pub delivered: HashMap<(String, u64), Vec<u64>>,
}

/// The durable side of the bridges. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    ops: Sender<Op>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    // Plain data into a Vec cannot fail.
    out.extend(postcard::to_allocvec(value).expect("plain data always encodes"));
    out
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

impl Store {
    /// Opens (or creates) the store and reads what it holds.
    pub fn open(path: &Path) -> Result<(Self, Restored), StoreError> {
        let error = |e: redb::Error| StoreError::Database {
            path: path.to_path_buf(),
            source: Box::new(e),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| error(e.into()))?;
        }
        let db = Database::create(path).map_err(|e| error(e.into()))?;
        let txn = db.begin_write().map_err(|e| error(e.into()))?;
        txn.open_table(OUTBOUND).map_err(|e| error(e.into()))?;
        txn.open_table(DELIVERED).map_err(|e| error(e.into()))?;
        txn.commit().map_err(|e| error(e.into()))?;
        let restored = read_all(&db).map_err(error)?;
        let (ops, rx) = channel();
        std::thread::Builder::new()
            .name("mesh-queue-writer".to_owned())
            .spawn(move || writer(&db, &rx))
            .map_err(StoreError::Thread)?;
        Ok((Self { ops }, restored))
    }

    /// Records an envelope waiting for `peer` on `stream`.
    pub fn put(&self, peer: &str, stream: u16, envelope: &Envelope) {
        let _ = self.ops.send(Op::Put {
            peer: peer.to_owned(),
            stream,
            seq: envelope.seq,
            bytes: encode(envelope),
        });
    }

    /// Forgets the envelopes of `peer`'s `stream` up to `upto` (acknowledged).
    pub fn ack(&self, peer: &str, stream: u16, upto: u64) {
        let _ = self.ops.send(Op::Ack {
            peer: peer.to_owned(),
            stream,
            upto,
        });
    }

    /// Records how far `peer`'s epoch `epoch` has been delivered on each stream.
    pub fn delivered(&self, peer: &str, epoch: u64, streams: Vec<u64>) {
        let _ = self.ops.send(Op::Delivered {
            peer: peer.to_owned(),
            epoch,
            streams,
        });
    }

    /// A peer started a new life: its older epochs' positions are of no use any more.
    pub fn new_epoch(&self, peer: &str, epoch: u64) {
        let _ = self.ops.send(Op::NewEpoch {
            peer: peer.to_owned(),
            epoch,
        });
    }

    /// Waits until everything queued so far is written (for tests and orderly shutdown).
    pub fn flush(&self) {
        let (done, wait) = channel();
        if self.ops.send(Op::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

fn read_all(db: &Database) -> Result<Restored, redb::Error> {
    let mut restored = Restored::default();
    let txn = db.begin_read()?;
    let outbound = txn.open_table(OUTBOUND)?;
    for item in outbound.iter()? {
        let (key, value) = item?;
        let (peer, stream, _seq) = key.value();
        if let Some(envelope) = decode::<Envelope>(value.value()) {
            restored
                .outbound
                .entry(peer.to_owned())
                .or_default()
                .entry(stream)
                .or_default()
                .push(envelope);
        }
    }
    let delivered = txn.open_table(DELIVERED)?;
    for item in delivered.iter()? {
        let (key, value) = item?;
        let (peer, epoch) = key.value();
        if let Some(streams) = decode::<Vec<u64>>(value.value()) {
            restored.delivered.insert((peer.to_owned(), epoch), streams);
        }
    }
    Ok(restored)
}

fn writer(db: &Database, ops: &Receiver<Op>) {
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        batch.retain_mut(|op| match op {
            Op::Flush(done) => {
                flushes.push(done.clone());
                false
            }
            _ => true,
        });
        if let Err(e) = write_batch(db, batch) {
            tracing::error!(error = %e, "mesh queue write failed");
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

fn write_batch(db: &Database, batch: Vec<Op>) -> Result<(), redb::Error> {
    // Only the last delivered position per (peer, epoch) of the batch matters.
    let mut positions: HashMap<(String, u64), Vec<u64>> = HashMap::new();
    let txn = db.begin_write()?;
    {
        let mut outbound = txn.open_table(OUTBOUND)?;
        let mut delivered = txn.open_table(DELIVERED)?;
        for op in batch {
            match op {
                Op::Put {
                    peer,
                    stream,
                    seq,
                    bytes,
                } => {
                    outbound.insert((peer.as_str(), stream, seq), bytes.as_slice())?;
                }
                Op::Ack { peer, stream, upto } => {
                    let start = (peer.as_str(), stream, 0u64);
                    let end = (peer.as_str(), stream, upto);
                    outbound.retain_in(start..=end, |_, _| false)?;
                }
                Op::Delivered {
                    peer,
                    epoch,
                    streams,
                } => {
                    positions.insert((peer, epoch), streams);
                }
                Op::Flush(_) => {}
                Op::NewEpoch { peer, epoch } => {
                    positions.retain(|(p, e), _| p != &peer || *e == epoch);
                    let start = (peer.as_str(), 0u64);
                    let end = (peer.as_str(), u64::MAX);
                    delivered.retain_in(start..=end, |(_, e), _| e == epoch)?;
                }
            }
        }
        for ((peer, epoch), streams) in &positions {
            delivered.insert((peer.as_str(), *epoch), encode(streams).as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}
