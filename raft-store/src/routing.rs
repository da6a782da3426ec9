//! The routing table's state machine: commands applied in log order, reads from memory.
//!
//! `apply(index, command)` is deterministic: the same log gives the same table and the same
//! answers on every node, errors included (a refused command is still consumed, so every node
//! refuses it alike). Each entry remembers the log index of its last change (its version) and
//! every read reports the index the whole table reflects (`as_of`).
//!
//! # Memory layout
//! Users and rooms are grouped by the domain of their JID, so a domain's name is stored once
//! however many entries it holds. Inside a domain (a bucket) each entry is a 24-byte record
//! (localpart, home datacenter, version) stored in a hash table keyed by its localpart. A
//! localpart of up to 12 bytes is stored in the record itself, so most lookups touch two cache
//! lines (the table's control bytes and the record); longer ones are packed end to end in one
//! string per domain (the arena) and the record holds their offset. Deleting an entry leaves its
//! bytes in the arena as garbage; the arena is compacted when garbage exceeds half of it.
//!
//! # Snapshots
//! [`RoutingTable::to_snapshot`] writes the whole table as one format byte
//! ([`SNAPSHOT_FORMAT`]) followed by postcard; [`RoutingTable::from_snapshot`] reads it back and
//! checks it. Domains and entry groups are written in name order and entries in version order,
//! so equal tables built by the same log give equal bytes on every node.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};

use hashbrown::{HashTable, hash_table};
use jid::BareJid;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::command::{Command, DcRole};

/// The snapshot encoding version written in front of every snapshot.
pub const SNAPSHOT_FORMAT: u8 = 1;

/// A datacenter's compact id inside the table (its position in the registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DcId(pub u16);

/// A datacenter of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcEntry {
    /// Topology name.
    pub name: String,
    /// Addresses its bridge listens on.
    pub bridge_endpoints: Vec<String>,
    /// Its part in the Raft group.
    pub role: DcRole,
    /// Log index of the last change.
    pub version: u64,
}

/// Whether a domain takes logins and routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainStatus {
    /// Serving.
    Enabled,
    /// Refuses logins (`<host-unknown/>`) and routing (`<service-unavailable/>`).
    Disabled,
}

/// A domain of the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainEntry {
    /// Host type (configuration profile).
    pub host_type: String,
    /// `false` for domains from the configuration file.
    pub dynamic: bool,
    /// Enabled or disabled.
    pub status: DomainStatus,
    /// Datacenters serving it (empty: all).
    pub serving: Vec<DcId>,
    /// Log index of the last change.
    pub version: u64,
}

/// The answer to a lookup: the home (if any), the version of that entry, and the log index the
/// table reflected when it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// The home datacenter, `None` when the table has no entry.
    pub home: Option<DcId>,
    /// Log index of the entry's last change (0 without an entry).
    pub version: u64,
    /// Log index of the table as a whole.
    pub as_of: u64,
}

/// What applying a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The log index it was applied at.
    pub index: u64,
    /// Whether the table changed (idempotent repeats and replays do not).
    pub changed: bool,
    /// Entries deleted along with it (users and rooms of a removed domain).
    pub removed: usize,
}

/// Why a command was refused. Deterministic: every node refuses it alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApplyError {
    /// The named datacenter is not in the registry.
    #[error("unknown datacenter {0}")]
    UnknownDc(String),
    /// The datacenter still homes users, rooms or serves domains.
    #[error("datacenter {name} is still in use by {entries} entries")]
    DcInUse {
        /// Topology name.
        name: String,
        /// Users, rooms and domains that refer to it.
        entries: usize,
    },
    /// Not a bare JID.
    #[error("not a bare JID: {0}")]
    BadJid(String),
    /// The user exists with another home (use `RehomeUser`).
    #[error("{jid} already lives in {dc}")]
    UserExists {
        /// Bare JID.
        jid: String,
        /// Its current home.
        dc: String,
    },
    /// No such user.
    #[error("no such user {0}")]
    UnknownUser(String),
    /// The domain is not in the table.
    #[error("unknown domain {0}")]
    UnknownDomain(String),
    /// The domain is disabled: no new users.
    #[error("domain {0} is disabled")]
    DomainDisabled(String),
    /// The domain exists with another host type.
    #[error("domain {domain} exists with host type {existing}")]
    HostTypeConflict {
        /// Domain name.
        domain: String,
        /// Its host type.
        existing: String,
    },
    /// Static domains come from configuration and cannot change at runtime.
    #[error("domain {0} is static (from the configuration file)")]
    StaticDomain(String),
    /// The registry is full (65,536 datacenters).
    #[error("too many datacenters")]
    TooManyDcs,
    /// The long localparts of one domain's entries would pass 4 GiB.
    #[error("no room for more entries under {0}")]
    DomainFull(String),
}

/// Why bytes are not a routing table snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Nothing to decode.
    #[error("empty snapshot")]
    Empty,
    /// Written by a version of Tern with another encoding.
    #[error("snapshot format {0} is not known to this version (it knows {SNAPSHOT_FORMAT})")]
    UnknownFormat(u8),
    /// The bytes after the format byte are not a snapshot.
    #[error("corrupt snapshot")]
    Corrupt(#[source] postcard::Error),
    /// A whole snapshot, followed by bytes that belong to none.
    #[error("{0} stray bytes after the snapshot")]
    TrailingBytes(usize),
    /// The snapshot decodes but breaks the table's rules (duplicates, unknown datacenters).
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(String),
}

/// Localparts up to this many bytes live inside their record; longer ones in the arena.
const INLINE: usize = 12;

/// One user or room of a bucket: its localpart (or where it lies in the arena), its home and its
/// version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    version: u64,
    dc: DcId,
    /// Length of the localpart in bytes.
    len: u16,
    /// The localpart when it has at most [`INLINE`] bytes (zero-padded); otherwise its offset
    /// in the arena, little-endian in the first four bytes.
    inline: [u8; INLINE],
}

impl Record {
    /// A record for `name`, which goes into `arena` when it is too long to be inline.
    fn new(arena: &mut String, name: &str, dc: DcId, version: u64) -> Result<Self, BucketFull> {
        let len = u16::try_from(name.len()).map_err(|_| BucketFull)?;
        let mut inline = [0; INLINE];
        if name.len() <= INLINE {
            inline[..name.len()].copy_from_slice(name.as_bytes());
        } else {
            let start = u32::try_from(arena.len()).map_err(|_| BucketFull)?;
            u32::try_from(arena.len() + name.len()).map_err(|_| BucketFull)?;
            inline[..4].copy_from_slice(&start.to_le_bytes());
            arena.push_str(name);
        }
        Ok(Self {
            version,
            dc,
            len,
            inline,
        })
    }

    fn is_inline(&self) -> bool {
        usize::from(self.len) <= INLINE
    }

    /// Offset of a long localpart in the arena.
    fn start(&self) -> usize {
        let [a, b, c, d, ..] = self.inline;
        u32::from_le_bytes([a, b, c, d]) as usize
    }

    /// The localpart's bytes (long ones are in `arena`).
    fn bytes<'a>(&'a self, arena: &'a str) -> &'a [u8] {
        let len = usize::from(self.len);
        if self.is_inline() {
            &self.inline[..len]
        } else {
            &arena.as_bytes()[self.start()..self.start() + len]
        }
    }

    /// The localpart (long ones are in `arena`).
    fn name<'a>(&'a self, arena: &'a str) -> &'a str {
        let len = usize::from(self.len);
        if self.is_inline() {
            // Inline bytes are a whole `&str` copied in by `Record::new`.
            std::str::from_utf8(&self.inline[..len]).expect("an inline localpart is a whole string")
        } else {
            self.long_name(arena)
        }
    }

    /// The localpart of a record that is not inline.
    fn long_name<'a>(&self, arena: &'a str) -> &'a str {
        // Long localparts are whole strings pushed into the arena (and moved whole by
        // compaction), so the range is in bounds and on character boundaries.
        &arena[self.start()..self.start() + usize::from(self.len)]
    }
}

/// A bucket cannot take another localpart: its arena would pass `u32::MAX` bytes.
#[derive(Debug)]
struct BucketFull;

/// The users (or rooms) of one domain, keyed by localpart (`""` for a JID without one).
///
/// The records live in the hash table itself and short localparts inside them, so most lookups
/// touch only the table's control bytes and one record.
#[derive(Clone, Default)]
struct Bucket {
    /// The localparts longer than [`INLINE`] bytes, end to end, live and deleted.
    arena: String,
    /// Bytes of `arena` that no record points at any more.
    garbage: usize,
    /// The entries, hashed by localpart.
    records: HashTable<Record>,
    hasher: RandomState,
}

impl Bucket {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn get(&self, name: &str) -> Option<&Record> {
        let hash = self.hasher.hash_one(name.as_bytes());
        self.records
            .find(hash, |record| record.bytes(&self.arena) == name.as_bytes())
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Record> {
        let hash = self.hasher.hash_one(name.as_bytes());
        let arena = &self.arena;
        self.records
            .find_mut(hash, |record| record.bytes(arena) == name.as_bytes())
    }

    /// Adds `name`, which must not be in the bucket yet.
    fn insert(&mut self, name: &str, dc: DcId, version: u64) -> Result<(), BucketFull> {
        let record = match Record::new(&mut self.arena, name, dc, version) {
            Err(BucketFull) if self.garbage > 0 => {
                self.compact();
                Record::new(&mut self.arena, name, dc, version)?
            }
            other => other?,
        };
        let Self {
            arena,
            records,
            hasher,
            ..
        } = self;
        records.insert_unique(hasher.hash_one(name.as_bytes()), record, |r| {
            hasher.hash_one(r.bytes(arena))
        });
        Ok(())
    }

    /// Removes `name`; `false` when it was not there.
    fn remove(&mut self, name: &str) -> bool {
        let hash = self.hasher.hash_one(name.as_bytes());
        let arena = &self.arena;
        let Ok(found) = self
            .records
            .find_entry(hash, |record| record.bytes(arena) == name.as_bytes())
        else {
            return false;
        };
        let (gone, _) = found.remove();
        if !gone.is_inline() {
            self.garbage += usize::from(gone.len);
            if self.garbage > self.arena.len() / 2 {
                self.compact();
            }
        }
        true
    }

    /// The records in a canonical order: by version (unique per entry in a table built by
    /// `apply`), then by localpart.
    fn ordered(&self) -> Vec<Record> {
        let mut all: Vec<_> = self.records.iter().copied().collect();
        all.sort_unstable_by(|a, b| {
            a.version
                .cmp(&b.version)
                .then_with(|| a.bytes(&self.arena).cmp(b.bytes(&self.arena)))
        });
        all
    }

    /// Rewrites the arena with the live localparts only, and gives back spare room.
    fn compact(&mut self) {
        let mut arena = String::with_capacity(self.arena.len() - self.garbage);
        for record in self.records.iter_mut().filter(|r| !r.is_inline()) {
            let name = record.long_name(&self.arena);
            // The new arena is no longer than the old one, whose offsets fit in u32.
            let start = arena.len() as u32;
            record.inline[..4].copy_from_slice(&start.to_le_bytes());
            arena.push_str(name);
        }
        self.arena = arena;
        self.garbage = 0;
        if self.records.capacity() > 2 * self.records.len() {
            let Self {
                arena,
                records,
                hasher,
                ..
            } = self;
            records.shrink_to_fit(|r| hasher.hash_one(r.bytes(arena)));
        }
    }

    /// Indexes the entries read from a snapshot; names the first duplicate.
    fn from_raw(raw: RawBucket) -> Result<Self, String> {
        let RawBucket { arena, records } = raw;
        let hasher = RandomState::new();
        let mut table = HashTable::with_capacity(records.len());
        for record in records {
            let name = record.bytes(&arena);
            match table.entry(
                hasher.hash_one(name),
                |other: &Record| other.bytes(&arena) == name,
                |r| hasher.hash_one(r.bytes(&arena)),
            ) {
                hash_table::Entry::Occupied(_) => return Err(record.name(&arena).to_owned()),
                hash_table::Entry::Vacant(slot) => {
                    slot.insert(record);
                }
            }
        }
        Ok(Self {
            arena,
            garbage: 0,
            records: table,
            hasher,
        })
    }
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for r in self.ordered() {
            map.entry(&r.name(&self.arena), &(r.dc, r.version));
        }
        map.finish()
    }
}

/// A bucket in a snapshot: its entries as `(localpart, home, version)`, in canonical order.
impl Serialize for Bucket {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for record in self.ordered() {
            seq.serialize_element(&(record.name(&self.arena), record.dc, record.version))?;
        }
        seq.end()
    }
}

/// A bucket as read from a snapshot, before its entries are checked and indexed.
struct RawBucket {
    arena: String,
    records: Vec<Record>,
}

impl<'de> Deserialize<'de> for RawBucket {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;

        impl<'de> Visitor<'de> for Entries {
            type Value = RawBucket;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of (localpart, datacenter, version)")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawBucket, A::Error> {
                // The announced length comes from the input: trust it only so far.
                let announced = seq.size_hint().unwrap_or(0).min(1 << 16);
                let mut raw = RawBucket {
                    arena: String::new(),
                    records: Vec::with_capacity(announced),
                };
                while let Some((name, dc, version)) = seq.next_element::<(&str, DcId, u64)>()? {
                    let record = Record::new(&mut raw.arena, name, dc, version)
                        .map_err(|BucketFull| de::Error::custom("bucket too large"))?;
                    raw.records.push(record);
                }
                Ok(raw)
            }
        }

        deserializer.deserialize_seq(Entries)
    }
}

/// The table as a snapshot writes it.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    applied: u64,
    dcs: &'a [Option<DcEntry>],
    domains: Vec<(&'a str, &'a DomainEntry)>,
    users: Vec<(&'a str, &'a Bucket)>,
    rooms: Vec<(&'a str, &'a Bucket)>,
}

/// The table as a snapshot reads it (same fields, in the same order, as [`SnapshotOut`]).
#[derive(Deserialize)]
struct SnapshotIn<'a> {
    applied: u64,
    dcs: Vec<Option<DcEntry>>,
    domains: Vec<(String, DomainEntry)>,
    #[serde(borrow)]
    users: Vec<(&'a str, RawBucket)>,
    #[serde(borrow)]
    rooms: Vec<(&'a str, RawBucket)>,
}

/// Users or rooms, grouped by the domain of their JID.
type Buckets = HashMap<Box<str>, Bucket>;

/// The routing table.
#[derive(Debug, Default, Clone)]
pub struct RoutingTable {
    applied: u64,
    dcs: Vec<Option<DcEntry>>,
    dc_by_name: HashMap<String, DcId>,
    users: Buckets,
    rooms: Buckets,
    domains: HashMap<String, DomainEntry>,
}

fn bare(jid: &str) -> Result<BareJid, ApplyError> {
    BareJid::new(jid).map_err(|_| ApplyError::BadJid(jid.to_owned()))
}

/// A bare JID as (domain, localpart), the localpart `""` when there is none.
fn split(jid: &BareJid) -> (&str, &str) {
    (
        jid.domain().as_str(),
        jid.node().map_or("", |node| node.as_str()),
    )
}

fn find<'a>(buckets: &'a Buckets, jid: &BareJid) -> Option<&'a Record> {
    let (domain, name) = split(jid);
    buckets.get(domain)?.get(name)
}

fn find_mut<'a>(buckets: &'a mut Buckets, jid: &BareJid) -> Option<&'a mut Record> {
    let (domain, name) = split(jid);
    buckets.get_mut(domain)?.get_mut(name)
}

/// Adds an entry that is not in `buckets` yet.
fn insert(buckets: &mut Buckets, jid: &BareJid, dc: DcId, version: u64) -> Result<(), ApplyError> {
    let (domain, name) = split(jid);
    let bucket = buckets.entry(domain.into()).or_default();
    let result = bucket.insert(name, dc, version);
    if bucket.len() == 0 {
        buckets.remove(domain);
    }
    result.map_err(|BucketFull| ApplyError::DomainFull(domain.to_owned()))
}

/// Removes an entry (and its domain's bucket once empty); `false` when it was not there.
fn remove(buckets: &mut Buckets, jid: &BareJid) -> bool {
    let (domain, name) = split(jid);
    let Some(bucket) = buckets.get_mut(domain) else {
        return false;
    };
    let removed = bucket.remove(name);
    if bucket.len() == 0 {
        buckets.remove(domain);
    }
    removed
}

/// Buckets sorted by domain, for a snapshot.
fn sorted(buckets: &Buckets) -> Vec<(&str, &Bucket)> {
    let mut all: Vec<_> = buckets.iter().map(|(d, b)| (&**d, b)).collect();
    all.sort_unstable_by_key(|(domain, _)| *domain);
    all
}

fn is_known(dcs: &[Option<DcEntry>], id: DcId) -> bool {
    dcs.get(usize::from(id.0)).is_some_and(Option::is_some)
}

/// The users or rooms of a snapshot, checked and indexed.
fn read_buckets(
    list: Vec<(&str, RawBucket)>,
    what: &str,
    dcs: &[Option<DcEntry>],
) -> Result<Buckets, SnapshotError> {
    let mut buckets = Buckets::with_capacity(list.len());
    for (domain, raw) in list {
        if let Some(record) = raw.records.iter().find(|r| !is_known(dcs, r.dc)) {
            return Err(SnapshotError::Inconsistent(format!(
                "{what} {}@{domain} homed in unknown datacenter {}",
                record.name(&raw.arena),
                record.dc.0
            )));
        }
        let bucket = Bucket::from_raw(raw)
            .map_err(|name| SnapshotError::Inconsistent(format!("{what} {name}@{domain} twice")))?;
        if bucket.len() == 0 {
            continue;
        }
        if buckets.insert(domain.into(), bucket).is_some() {
            return Err(SnapshotError::Inconsistent(format!(
                "{what} domain {domain} twice"
            )));
        }
    }
    Ok(buckets)
}

impl RoutingTable {
    /// An empty table at log index 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The log index of the last command applied.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Applies `command` at log `index`. An index at or below the last applied one is a replay
    /// and changes nothing.
    pub fn apply(&mut self, index: u64, command: &Command) -> Result<Applied, ApplyError> {
        if index <= self.applied {
            return Ok(self.replayed());
        }
        self.applied = index;
        self.apply_one(index, command)
    }

    /// Applies a batch of commands carried by one log entry, in order, all at `index` (the
    /// version of every entry they change). A replayed batch changes nothing.
    pub fn apply_batch(
        &mut self,
        index: u64,
        commands: &[Command],
    ) -> Vec<Result<Applied, ApplyError>> {
        if index <= self.applied {
            return commands.iter().map(|_| Ok(self.replayed())).collect();
        }
        self.applied = index;
        commands
            .iter()
            .map(|command| self.apply_one(index, command))
            .collect()
    }

    fn replayed(&self) -> Applied {
        Applied {
            index: self.applied,
            changed: false,
            removed: 0,
        }
    }

    fn apply_one(&mut self, index: u64, command: &Command) -> Result<Applied, ApplyError> {
        let mut removed = 0;
        let changed = match command {
            Command::UpsertDc {
                name,
                bridge_endpoints,
                role,
            } => self.upsert_dc(index, name, bridge_endpoints, *role)?,
            Command::RemoveDc { name } => self.remove_dc(name)?,
            Command::CreateUser { jid, dc } => {
                let jid_bare = bare(jid)?;
                let dc = self
                    .dc_id(dc)
                    .ok_or_else(|| ApplyError::UnknownDc(dc.clone()))?;
                self.check_domain_open(jid_bare.domain().as_str())?;
                match find(&self.users, &jid_bare) {
                    Some(home) if home.dc == dc => false,
                    Some(home) => {
                        return Err(ApplyError::UserExists {
                            jid: jid.clone(),
                            dc: self.dc_name(home.dc).to_owned(),
                        });
                    }
                    None => {
                        insert(&mut self.users, &jid_bare, dc, index)?;
                        true
                    }
                }
            }
            Command::RehomeUser { jid, dc } => {
                let jid_bare = bare(jid)?;
                let dc = self
                    .dc_id(dc)
                    .ok_or_else(|| ApplyError::UnknownDc(dc.clone()))?;
                let home = find_mut(&mut self.users, &jid_bare)
                    .ok_or_else(|| ApplyError::UnknownUser(jid.clone()))?;
                if home.dc == dc {
                    false
                } else {
                    home.dc = dc;
                    home.version = index;
                    true
                }
            }
            Command::DeleteUser { jid } => remove(&mut self.users, &bare(jid)?),
            Command::SetRoomHome { jid, dc } => {
                let jid_bare = bare(jid)?;
                let dc = self
                    .dc_id(dc)
                    .ok_or_else(|| ApplyError::UnknownDc(dc.clone()))?;
                match find_mut(&mut self.rooms, &jid_bare) {
                    Some(home) if home.dc == dc => false,
                    Some(home) => {
                        home.dc = dc;
                        home.version = index;
                        true
                    }
                    None => {
                        insert(&mut self.rooms, &jid_bare, dc, index)?;
                        true
                    }
                }
            }
            Command::DeleteRoom { jid } => remove(&mut self.rooms, &bare(jid)?),
            Command::CreateRoom { jid, dc } => {
                let jid_bare = bare(jid)?;
                let dc = self
                    .dc_id(dc)
                    .ok_or_else(|| ApplyError::UnknownDc(dc.clone()))?;
                if find_mut(&mut self.rooms, &jid_bare).is_some() {
                    false
                } else {
                    insert(&mut self.rooms, &jid_bare, dc, index)?;
                    true
                }
            }
            Command::AddDomain {
                domain,
                host_type,
                dynamic,
                serving,
            } => {
                if let Some(existing) = self.domains.get(domain) {
                    if existing.host_type != *host_type {
                        return Err(ApplyError::HostTypeConflict {
                            domain: domain.clone(),
                            existing: existing.host_type.clone(),
                        });
                    }
                    false
                } else {
                    let serving = serving
                        .iter()
                        .map(|name| {
                            self.dc_id(name)
                                .ok_or_else(|| ApplyError::UnknownDc(name.clone()))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    self.domains.insert(
                        domain.clone(),
                        DomainEntry {
                            host_type: host_type.clone(),
                            dynamic: *dynamic,
                            status: DomainStatus::Enabled,
                            serving,
                            version: index,
                        },
                    );
                    true
                }
            }
            Command::SetDomainStatus { domain, enabled } => {
                let entry = self.dynamic_domain(domain)?;
                let status = if *enabled {
                    DomainStatus::Enabled
                } else {
                    DomainStatus::Disabled
                };
                if entry.status == status {
                    false
                } else {
                    entry.status = status;
                    entry.version = index;
                    true
                }
            }
            Command::RemoveDomain { domain } => {
                self.dynamic_domain(domain)?;
                self.domains.remove(domain);
                removed = self.users.remove(domain.as_str()).map_or(0, |b| b.len());
                let suffix = format!(".{domain}");
                self.rooms.retain(|room_domain, bucket| {
                    let keep = **room_domain != **domain && !room_domain.ends_with(&suffix);
                    if !keep {
                        removed += bucket.len();
                    }
                    keep
                });
                true
            }
        };
        Ok(Applied {
            index,
            changed,
            removed,
        })
    }

    fn upsert_dc(
        &mut self,
        index: u64,
        name: &str,
        bridge_endpoints: &[String],
        role: DcRole,
    ) -> Result<bool, ApplyError> {
        let entry = DcEntry {
            name: name.to_owned(),
            bridge_endpoints: bridge_endpoints.to_vec(),
            role,
            version: index,
        };
        if let Some(id) = self.dc_id(name) {
            let slot = &mut self.dcs[usize::from(id.0)];
            if let Some(old) = slot
                && old.bridge_endpoints == entry.bridge_endpoints
                && old.role == role
            {
                return Ok(false);
            }
            *slot = Some(entry);
            return Ok(true);
        }
        // Reuse a freed slot before growing the registry.
        let position = match self.dcs.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.dcs.push(None);
                self.dcs.len() - 1
            }
        };
        let Ok(id) = u16::try_from(position) else {
            self.dcs.pop();
            return Err(ApplyError::TooManyDcs);
        };
        self.dcs[position] = Some(entry);
        self.dc_by_name.insert(name.to_owned(), DcId(id));
        Ok(true)
    }

    fn remove_dc(&mut self, name: &str) -> Result<bool, ApplyError> {
        let Some(id) = self.dc_id(name) else {
            return Ok(false);
        };
        let homed = |buckets: &Buckets| -> usize {
            buckets
                .values()
                .map(|b| b.records.iter().filter(|r| r.dc == id).count())
                .sum()
        };
        let entries = homed(&self.users)
            + homed(&self.rooms)
            + self
                .domains
                .values()
                .filter(|d| d.serving.contains(&id))
                .count();
        if entries > 0 {
            return Err(ApplyError::DcInUse {
                name: name.to_owned(),
                entries,
            });
        }
        self.dcs[usize::from(id.0)] = None;
        self.dc_by_name.remove(name);
        Ok(true)
    }

    fn check_domain_open(&self, domain: &str) -> Result<(), ApplyError> {
        match self.domains.get(domain) {
            None => Err(ApplyError::UnknownDomain(domain.to_owned())),
            Some(d) if d.status == DomainStatus::Disabled => {
                Err(ApplyError::DomainDisabled(domain.to_owned()))
            }
            Some(_) => Ok(()),
        }
    }

    fn dynamic_domain(&mut self, domain: &str) -> Result<&mut DomainEntry, ApplyError> {
        let entry = self
            .domains
            .get_mut(domain)
            .ok_or_else(|| ApplyError::UnknownDomain(domain.to_owned()))?;
        if !entry.dynamic {
            return Err(ApplyError::StaticDomain(domain.to_owned()));
        }
        Ok(entry)
    }

    /// The id of a datacenter by topology name.
    pub fn dc_id(&self, name: &str) -> Option<DcId> {
        self.dc_by_name.get(name).copied()
    }

    /// A datacenter of the registry.
    pub fn dc(&self, id: DcId) -> Option<&DcEntry> {
        self.dcs.get(usize::from(id.0)).and_then(Option::as_ref)
    }

    /// Every datacenter of the registry, in id order.
    pub fn dcs(&self) -> impl Iterator<Item = &DcEntry> {
        self.dcs.iter().flatten()
    }

    fn dc_name(&self, id: DcId) -> &str {
        self.dc(id).map_or("?", |d| d.name.as_str())
    }

    /// Where a user lives.
    pub fn user_home(&self, jid: &BareJid) -> Lookup {
        self.lookup(find(&self.users, jid))
    }

    /// Where a MUC room lives.
    pub fn room_home(&self, jid: &BareJid) -> Lookup {
        self.lookup(find(&self.rooms, jid))
    }

    fn lookup(&self, record: Option<&Record>) -> Lookup {
        Lookup {
            home: record.map(|r| r.dc),
            version: record.map_or(0, |r| r.version),
            as_of: self.applied,
        }
    }

    /// A domain's entry.
    pub fn domain(&self, domain: &str) -> Option<&DomainEntry> {
        self.domains.get(domain)
    }

    /// Every domain, sorted by name.
    pub fn domains(&self) -> Vec<(&str, &DomainEntry)> {
        let mut all: Vec<_> = self.domains.iter().map(|(k, v)| (k.as_str(), v)).collect();
        all.sort_by_key(|(name, _)| *name);
        all
    }

    /// Number of users in the table.
    pub fn user_count(&self) -> usize {
        self.users.values().map(Bucket::len).sum()
    }

    /// Number of users whose JID has this (normalised) domain.
    pub fn users_of_domain(&self, domain: &str) -> usize {
        self.users.get(domain).map_or(0, Bucket::len)
    }

    /// Number of MUC rooms in the table.
    pub fn room_count(&self) -> usize {
        self.rooms.values().map(Bucket::len).sum()
    }

    /// The whole table (applied index, datacenters, domains, users and rooms with their
    /// versions): [`SNAPSHOT_FORMAT`] then postcard. Equal tables give equal bytes.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let mut domains: Vec<_> = self.domains.iter().map(|(k, v)| (k.as_str(), v)).collect();
        domains.sort_unstable_by_key(|(name, _)| *name);
        let snapshot = SnapshotOut {
            applied: self.applied,
            dcs: &self.dcs,
            domains,
            users: sorted(&self.users),
            rooms: sorted(&self.rooms),
        };
        // A short localpart and about six bytes of framing per entry, long localparts besides.
        let estimate = [&self.users, &self.rooms]
            .iter()
            .flat_map(|buckets| buckets.values())
            .map(|b| b.arena.len() - b.garbage + (INLINE + 6) * b.len())
            .sum::<usize>()
            + 1024;
        let mut out = Vec::with_capacity(estimate);
        out.push(SNAPSHOT_FORMAT);
        // Postcard into a Vec fails only for sequences of unknown length, and every sequence
        // here (vectors, slices, buckets) announces its length.
        let mut out =
            postcard::to_extend(&snapshot, out).expect("the routing table always encodes");
        out.shrink_to_fit();
        out
    }

    /// Reads a snapshot written by [`to_snapshot`](Self::to_snapshot), checking that it is whole
    /// and consistent (no duplicate names or entries, every datacenter referred to exists).
    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let (&format, rest) = bytes.split_first().ok_or(SnapshotError::Empty)?;
        if format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::UnknownFormat(format));
        }
        let (snapshot, stray): (SnapshotIn<'_>, _) =
            postcard::take_from_bytes(rest).map_err(SnapshotError::Corrupt)?;
        if !stray.is_empty() {
            return Err(SnapshotError::TrailingBytes(stray.len()));
        }
        let SnapshotIn {
            applied,
            dcs,
            domains: domain_list,
            users: user_list,
            rooms: room_list,
        } = snapshot;

        if dcs.len() > usize::from(u16::MAX) + 1 {
            return Err(SnapshotError::Inconsistent(format!(
                "{} datacenter slots",
                dcs.len()
            )));
        }
        let mut dc_by_name = HashMap::with_capacity(dcs.len());
        for (position, dc) in dcs.iter().enumerate() {
            if let Some(dc) = dc {
                // At most u16::MAX + 1 slots, checked above.
                let id = DcId(position as u16);
                if dc_by_name.insert(dc.name.clone(), id).is_some() {
                    return Err(SnapshotError::Inconsistent(format!(
                        "datacenter {} twice",
                        dc.name
                    )));
                }
            }
        }
        let known = |id: DcId| is_known(&dcs, id);

        let mut domains = HashMap::with_capacity(domain_list.len());
        for (name, entry) in domain_list {
            if let Some(&unknown) = entry.serving.iter().find(|&&id| !known(id)) {
                return Err(SnapshotError::Inconsistent(format!(
                    "domain {name} served by unknown datacenter {}",
                    unknown.0
                )));
            }
            if domains.contains_key(&name) {
                return Err(SnapshotError::Inconsistent(format!("domain {name} twice")));
            }
            domains.insert(name, entry);
        }

        let users = read_buckets(user_list, "user", &dcs)?;
        let rooms = read_buckets(room_list, "room", &dcs)?;

        Ok(Self {
            applied,
            dcs,
            dc_by_name,
            users,
            rooms,
            domains,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (RoutingTable, u64) {
        let mut t = RoutingTable::new();
        let setup = [
            Command::UpsertDc {
                name: "eu".into(),
                bridge_endpoints: vec!["10.0.0.1:7000".into()],
                role: DcRole::Voter,
            },
            Command::UpsertDc {
                name: "us".into(),
                bridge_endpoints: vec!["10.1.0.1:7000".into()],
                role: DcRole::Voter,
            },
            Command::AddDomain {
                domain: "example.com".into(),
                host_type: "default".into(),
                dynamic: false,
                serving: vec![],
            },
            Command::AddDomain {
                domain: "dyn.test".into(),
                host_type: "default".into(),
                dynamic: true,
                serving: vec!["eu".into()],
            },
        ];
        for (i, c) in setup.iter().enumerate() {
            t.apply(i as u64 + 1, c).expect("setup");
        }
        (t, setup.len() as u64)
    }

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).expect("jid")
    }

    #[test]
    fn a_batch_applies_in_order_at_one_index_and_replays_change_nothing() {
        let (mut t, n) = table();
        let batch = [
            Command::CreateUser {
                jid: "a@example.com".into(),
                dc: "eu".into(),
            },
            Command::CreateUser {
                jid: "b@example.com".into(),
                dc: "mars".into(),
            },
            Command::RehomeUser {
                jid: "a@example.com".into(),
                dc: "us".into(),
            },
        ];
        let results = t.apply_batch(n + 1, &batch);
        assert!(results[0].as_ref().is_ok_and(|a| a.changed));
        assert_eq!(results[1], Err(ApplyError::UnknownDc("mars".into())));
        assert!(
            results[2]
                .as_ref()
                .is_ok_and(|a| a.changed && a.index == n + 1)
        );
        let a = t.user_home(&jid("a@example.com"));
        assert_eq!((a.home, a.version), (t.dc_id("us"), n + 1));
        assert_eq!(t.user_home(&jid("b@example.com")).home, None);
        // The same entry applied again (a replay after a restart) changes nothing.
        let again = t.apply_batch(n + 1, &batch);
        assert!(again.iter().all(|r| r.as_ref().is_ok_and(|a| !a.changed)));
        assert_eq!(t.user_home(&jid("a@example.com")).home, t.dc_id("us"));
    }

    #[test]
    fn users_are_created_rehomed_and_deleted_with_versions() {
        let (mut t, n) = table();
        let create = Command::CreateUser {
            jid: "Alice@Example.com".into(),
            dc: "eu".into(),
        };
        assert!(t.apply(n + 1, &create).expect("create").changed);
        let eu = t.dc_id("eu").expect("eu");
        let us = t.dc_id("us").expect("us");
        // The JID is normalised: the lookup finds it under its canonical form.
        let found = t.user_home(&jid("alice@example.com"));
        assert_eq!(
            (found.home, found.version, found.as_of),
            (Some(eu), n + 1, n + 1)
        );
        // The same creation again is a no-op; a creation elsewhere is refused.
        assert!(!t.apply(n + 2, &create).expect("again").changed);
        assert_eq!(
            t.apply(
                n + 3,
                &Command::CreateUser {
                    jid: "alice@example.com".into(),
                    dc: "us".into()
                }
            ),
            Err(ApplyError::UserExists {
                jid: "alice@example.com".into(),
                dc: "eu".into()
            })
        );
        let rehome = Command::RehomeUser {
            jid: "alice@example.com".into(),
            dc: "us".into(),
        };
        assert!(t.apply(n + 4, &rehome).expect("rehome").changed);
        let found = t.user_home(&jid("alice@example.com"));
        assert_eq!(
            (found.home, found.version, found.as_of),
            (Some(us), n + 4, n + 4)
        );
        assert!(!t.apply(n + 5, &rehome).expect("rehome again").changed);
        // Reads report how far the table is, even when the entry is older.
        assert_eq!(t.user_home(&jid("alice@example.com")).as_of, n + 5);
        let delete = Command::DeleteUser {
            jid: "alice@example.com".into(),
        };
        assert!(t.apply(n + 6, &delete).expect("delete").changed);
        assert!(!t.apply(n + 7, &delete).expect("delete again").changed);
        assert_eq!(t.user_home(&jid("alice@example.com")).home, None);
    }

    #[test]
    fn replays_change_nothing() {
        let (mut t, n) = table();
        let create = Command::CreateUser {
            jid: "bob@example.com".into(),
            dc: "eu".into(),
        };
        t.apply(n + 1, &create).expect("create");
        let delete = Command::DeleteUser {
            jid: "bob@example.com".into(),
        };
        // An old index is a replay: ignored, even for a command that would change the table.
        let replay = t.apply(n, &delete).expect("replay");
        assert_eq!((replay.changed, replay.index), (false, n + 1));
        assert!(t.user_home(&jid("bob@example.com")).home.is_some());
    }

    #[test]
    fn refusals_are_deterministic_and_consume_the_index() {
        let (mut t, n) = table();
        let cases = [
            (
                Command::CreateUser {
                    jid: "a@nowhere.test".into(),
                    dc: "eu".into(),
                },
                ApplyError::UnknownDomain("nowhere.test".into()),
            ),
            (
                Command::CreateUser {
                    jid: "a@example.com".into(),
                    dc: "mars".into(),
                },
                ApplyError::UnknownDc("mars".into()),
            ),
            (
                Command::CreateUser {
                    jid: "@@".into(),
                    dc: "eu".into(),
                },
                ApplyError::BadJid("@@".into()),
            ),
            (
                Command::RehomeUser {
                    jid: "ghost@example.com".into(),
                    dc: "eu".into(),
                },
                ApplyError::UnknownUser("ghost@example.com".into()),
            ),
            (
                Command::AddDomain {
                    domain: "dyn.test".into(),
                    host_type: "other".into(),
                    dynamic: true,
                    serving: vec![],
                },
                ApplyError::HostTypeConflict {
                    domain: "dyn.test".into(),
                    existing: "default".into(),
                },
            ),
            (
                Command::SetDomainStatus {
                    domain: "example.com".into(),
                    enabled: false,
                },
                ApplyError::StaticDomain("example.com".into()),
            ),
            (
                Command::RemoveDomain {
                    domain: "example.com".into(),
                },
                ApplyError::StaticDomain("example.com".into()),
            ),
            (
                Command::RemoveDc { name: "eu".into() },
                ApplyError::DcInUse {
                    name: "eu".into(),
                    entries: 1,
                },
            ),
        ];
        for (i, (command, error)) in cases.into_iter().enumerate() {
            let index = n + 1 + i as u64;
            assert_eq!(t.apply(index, &command), Err(error));
            assert_eq!(t.applied_index(), index);
        }
    }

    #[test]
    fn disabled_domains_take_no_users_and_removal_cascades() {
        let (mut t, n) = table();
        for (i, user) in ["a@dyn.test", "b@dyn.test", "c@example.com"]
            .iter()
            .enumerate()
        {
            t.apply(
                n + 1 + i as u64,
                &Command::CreateUser {
                    jid: (*user).into(),
                    dc: "eu".into(),
                },
            )
            .expect("create");
        }
        t.apply(
            n + 4,
            &Command::SetRoomHome {
                jid: "room@conference.dyn.test".into(),
                dc: "us".into(),
            },
        )
        .expect("room");
        let disable = Command::SetDomainStatus {
            domain: "dyn.test".into(),
            enabled: false,
        };
        assert!(t.apply(n + 5, &disable).expect("disable").changed);
        assert_eq!(
            t.domain("dyn.test").map(|d| d.status),
            Some(DomainStatus::Disabled)
        );
        assert_eq!(
            t.apply(
                n + 6,
                &Command::CreateUser {
                    jid: "d@dyn.test".into(),
                    dc: "eu".into()
                }
            ),
            Err(ApplyError::DomainDisabled("dyn.test".into()))
        );
        let removed = t
            .apply(
                n + 7,
                &Command::RemoveDomain {
                    domain: "dyn.test".into(),
                },
            )
            .expect("remove");
        // Two users and the room on its MUC subdomain.
        assert_eq!(removed.removed, 3);
        assert_eq!(t.user_count(), 1);
        assert!(t.domain("dyn.test").is_none());
        assert_eq!(t.room_home(&jid("room@conference.dyn.test")).home, None);
        // The DC no longer serves any domain or homes anything there: it can go.
        assert!(
            t.apply(n + 8, &Command::RemoveDc { name: "us".into() })
                .expect("remove us")
                .changed
        );
        assert_eq!(t.dc_id("us"), None);
        assert_eq!(
            t.domains().iter().map(|(d, _)| *d).collect::<Vec<_>>(),
            ["example.com"]
        );
    }

    #[test]
    fn datacenters_update_in_place_and_reuse_freed_ids() {
        let (mut t, n) = table();
        let eu = t.dc_id("eu").expect("eu");
        let same = Command::UpsertDc {
            name: "eu".into(),
            bridge_endpoints: vec!["10.0.0.1:7000".into()],
            role: DcRole::Voter,
        };
        assert!(!t.apply(n + 1, &same).expect("same").changed);
        let moved = Command::UpsertDc {
            name: "eu".into(),
            bridge_endpoints: vec!["10.0.0.9:7000".into()],
            role: DcRole::Learner,
        };
        assert!(t.apply(n + 2, &moved).expect("moved").changed);
        assert_eq!(t.dc_id("eu"), Some(eu));
        assert_eq!(t.dc(eu).map(|d| d.role), Some(DcRole::Learner));
        let us = t.dc_id("us").expect("us");
        t.apply(n + 3, &Command::RemoveDc { name: "us".into() })
            .expect("remove");
        t.apply(
            n + 4,
            &Command::UpsertDc {
                name: "ap".into(),
                bridge_endpoints: vec![],
                role: DcRole::Witness,
            },
        )
        .expect("ap");
        assert_eq!(t.dc_id("ap"), Some(us));
    }

    fn create(t: &mut RoutingTable, index: u64, jid: &str, dc: &str) {
        let command = Command::CreateUser {
            jid: jid.into(),
            dc: dc.into(),
        };
        assert!(t.apply(index, &command).expect("create").changed, "{jid}");
    }

    fn delete(t: &mut RoutingTable, index: u64, jid: &str) {
        let command = Command::DeleteUser { jid: jid.into() };
        assert!(t.apply(index, &command).expect("delete").changed, "{jid}");
    }

    fn set_room(t: &mut RoutingTable, index: u64, jid: &str, dc: &str) {
        let command = Command::SetRoomHome {
            jid: jid.into(),
            dc: dc.into(),
        };
        t.apply(index, &command).expect("room");
    }

    #[test]
    fn records_stay_small() {
        assert_eq!(size_of::<Record>(), 24);
    }

    #[test]
    fn users_are_grouped_under_their_normalised_domain() {
        let (mut t, n) = table();
        create(&mut t, n + 1, "Alice@Example.COM", "eu");
        create(&mut t, n + 2, "bob@example.com", "us");
        create(&mut t, n + 3, "carol@dyn.test", "eu");
        // A JID without a localpart is an entry of its own, not a prefix of the others.
        create(&mut t, n + 4, "example.com", "us");
        let eu = t.dc_id("eu");
        let us = t.dc_id("us");
        assert_eq!(t.user_home(&jid("ALICE@example.com")).home, eu);
        assert_eq!(t.user_home(&jid("alice@EXAMPLE.com")).version, n + 1);
        assert_eq!(t.user_home(&jid("bob@example.com")).home, us);
        assert_eq!(t.user_home(&jid("example.com")).home, us);
        assert_eq!(t.user_home(&jid("carol@example.com")).home, None);
        assert_eq!(t.user_home(&jid("alice@dyn.test")).home, None);
        assert_eq!(t.user_home(&jid("carol@dyn.test")).home, eu);
        assert_eq!(t.users_of_domain("example.com"), 3);
        assert_eq!(t.users_of_domain("dyn.test"), 1);
        assert_eq!(t.users_of_domain("nowhere.test"), 0);
        assert_eq!(t.user_count(), 4);
        // Rooms are apart from users, even under the same JID.
        assert_eq!(t.room_home(&jid("bob@example.com")).home, None);
        assert_eq!(t.room_count(), 0);
        // Deleting the last user of a domain drops its group.
        delete(&mut t, n + 5, "carol@dyn.test");
        assert_eq!(t.users_of_domain("dyn.test"), 0);
        assert!(!t.users.contains_key("dyn.test"));
    }

    #[test]
    fn deletions_compact_the_arena_and_lookups_survive() {
        let (mut t, mut index) = table();
        // Short localparts live in their records, long ones in the arena.
        let localpart = |i: usize| {
            if i.is_multiple_of(3) {
                format!("u{i}")
            } else {
                format!("a-longer-localpart-{i}")
            }
        };
        let in_arena = |i: usize| Some(localpart(i).len()).filter(|&len| len > INLINE);
        let name = |i: usize| format!("{}@example.com", localpart(i));
        let total = 1000;
        for i in 0..total {
            index += 1;
            create(
                &mut t,
                index,
                &name(i),
                if i % 2 == 0 { "eu" } else { "us" },
            );
        }
        let written: usize = (0..total).filter_map(in_arena).sum();
        assert_eq!(t.users["example.com"].arena.len(), written);
        // Delete nine users in ten, from both ends.
        let mut versions = HashMap::new();
        for i in 0..total {
            if i % 10 == 0 {
                versions.insert(i, index - (total - 1 - i) as u64);
            }
        }
        for i in (0..total / 2).chain((total / 2..total).rev()) {
            if i % 10 != 0 {
                index += 1;
                delete(&mut t, index, &name(i));
            }
        }
        let bucket = &t.users["example.com"];
        let live: usize = versions.keys().filter_map(|&i| in_arena(i)).sum();
        assert_eq!(bucket.len(), total / 10);
        assert_eq!(bucket.arena.len() - bucket.garbage, live);
        assert!(bucket.garbage <= bucket.arena.len() / 2, "{bucket:?}");
        // Compaction ran: the arena is far smaller than everything ever written.
        assert!(bucket.arena.len() <= 2 * live, "{}", bucket.arena.len());
        assert!(bucket.records.capacity() < total / 2);
        let (eu, us) = (t.dc_id("eu"), t.dc_id("us"));
        for i in 0..total {
            let found = t.user_home(&jid(&name(i)));
            match versions.get(&i) {
                Some(&version) => {
                    assert_eq!(found.home, if i % 2 == 0 { eu } else { us }, "{i}");
                    assert_eq!(found.version, version, "{i}");
                }
                None => assert_eq!(found.home, None, "{i}"),
            }
        }
        // The deleted users come back, homed elsewhere.
        for i in 0..total {
            if i % 10 != 0 {
                index += 1;
                create(&mut t, index, &name(i), "us");
            }
        }
        assert_eq!(t.user_count(), total);
        for i in 0..total {
            let expected = if i % 10 == 0 && i % 2 == 0 { eu } else { us };
            assert_eq!(t.user_home(&jid(&name(i))).home, expected, "{i}");
        }
        // Delete everything: the group goes.
        for i in 0..total {
            index += 1;
            delete(&mut t, index, &name(i));
        }
        assert_eq!(t.user_count(), 0);
        assert!(t.users.is_empty());
    }

    #[test]
    fn short_long_and_multibyte_localparts_alike() {
        let (mut t, n) = table();
        let names = [
            "a".repeat(INLINE),
            "b".repeat(INLINE + 1),
            "é".repeat(INLINE / 2),
            "é".repeat(INLINE / 2 + 1),
            "ü".repeat(200),
        ];
        for (i, name) in names.iter().enumerate() {
            create(
                &mut t,
                n + 1 + i as u64,
                &format!("{name}@example.com"),
                "us",
            );
        }
        // Prefixes and extensions of a stored name are other names.
        assert_eq!(
            t.user_home(&jid(&format!("{}@example.com", "a".repeat(INLINE - 1))))
                .home,
            None
        );
        assert_eq!(
            t.user_home(&jid(&format!("{}@example.com", "b".repeat(INLINE))))
                .home,
            None
        );
        let restored = RoutingTable::from_snapshot(&t.to_snapshot()).expect("decode");
        for (i, name) in names.iter().enumerate() {
            let j = jid(&format!("{name}@example.com"));
            assert_eq!(t.user_home(&j).version, n + 1 + i as u64, "{name}");
            assert_eq!(restored.user_home(&j), t.user_home(&j), "{name}");
        }
        // Only the three long ones are in the arena.
        let arena = &t.users["example.com"].arena;
        assert_eq!(arena.len(), INLINE + 1 + 2 * (INLINE / 2 + 1) + 400);
    }

    #[test]
    fn removing_a_domain_drops_its_users_and_rooms_only() {
        let (mut t, n) = table();
        create(&mut t, n + 1, "a@dyn.test", "eu");
        create(&mut t, n + 2, "b@dyn.test", "us");
        create(&mut t, n + 3, "a@example.com", "eu");
        set_room(&mut t, n + 4, "r@conference.dyn.test", "eu");
        set_room(&mut t, n + 5, "s@conference.dyn.test", "us");
        set_room(&mut t, n + 6, "r@dyn.test", "eu");
        set_room(&mut t, n + 7, "r@muc.notdyn.test", "eu");
        set_room(&mut t, n + 8, "r@conference.example.com", "us");
        assert_eq!(t.room_count(), 5);
        let removed = t
            .apply(
                n + 9,
                &Command::RemoveDomain {
                    domain: "dyn.test".into(),
                },
            )
            .expect("remove");
        assert_eq!(removed.removed, 5);
        assert_eq!(t.users_of_domain("dyn.test"), 0);
        assert_eq!(t.user_count(), 1);
        assert_eq!(t.room_count(), 2);
        assert_eq!(t.user_home(&jid("a@dyn.test")).home, None);
        assert!(t.user_home(&jid("a@example.com")).home.is_some());
        assert_eq!(t.room_home(&jid("r@conference.dyn.test")).home, None);
        assert_eq!(t.room_home(&jid("r@dyn.test")).home, None);
        assert!(t.room_home(&jid("r@muc.notdyn.test")).home.is_some());
        assert!(t.room_home(&jid("r@conference.example.com")).home.is_some());
    }

    #[test]
    fn a_room_created_twice_keeps_its_first_home() {
        let (mut t, n) = table();
        let create_room = |dc: &str| Command::CreateRoom {
            jid: "r@muc.example.com".into(),
            dc: dc.into(),
        };
        assert!(t.apply(n + 1, &create_room("eu")).expect("create").changed);
        assert!(!t.apply(n + 2, &create_room("us")).expect("again").changed);
        let eu = t.dc_id("eu");
        assert_eq!(t.room_home(&jid("r@muc.example.com")).home, eu);
        assert_eq!(t.room_home(&jid("r@muc.example.com")).version, n + 1);
    }

    #[test]
    fn rooms_move_in_place() {
        let (mut t, n) = table();
        set_room(&mut t, n + 1, "Room@Conference.Example.com", "eu");
        set_room(&mut t, n + 2, "room@conference.example.com", "us");
        let found = t.room_home(&jid("ROOM@conference.example.com"));
        assert_eq!((found.home, found.version), (t.dc_id("us"), n + 2));
        assert_eq!(t.room_count(), 1);
        let delete = Command::DeleteRoom {
            jid: "room@conference.example.com".into(),
        };
        assert!(t.apply(n + 3, &delete).expect("delete").changed);
        assert!(!t.apply(n + 4, &delete).expect("again").changed);
        assert_eq!(t.room_count(), 0);
    }

    /// A table with every kind of content: a freed datacenter slot, static, dynamic and
    /// disabled domains, users (created, re-homed, deleted) and rooms.
    fn busy_table() -> (RoutingTable, u64) {
        let (mut t, mut index) = table();
        let mut run = |t: &mut RoutingTable, command: Command| {
            index += 1;
            t.apply(index, &command).expect("apply");
        };
        run(
            &mut t,
            Command::UpsertDc {
                name: "ap".into(),
                bridge_endpoints: vec![],
                role: DcRole::Witness,
            },
        );
        run(
            &mut t,
            Command::UpsertDc {
                name: "sa".into(),
                bridge_endpoints: vec!["10.3.0.1:7000".into()],
                role: DcRole::Learner,
            },
        );
        run(&mut t, Command::RemoveDc { name: "ap".into() });
        run(
            &mut t,
            Command::AddDomain {
                domain: "other.test".into(),
                host_type: "small".into(),
                dynamic: true,
                serving: vec!["us".into(), "sa".into()],
            },
        );
        for i in 0..50 {
            let dc = ["eu", "us", "sa"][i % 3];
            for domain in ["example.com", "dyn.test", "other.test"] {
                run(
                    &mut t,
                    Command::CreateUser {
                        jid: format!("u{i}@{domain}"),
                        dc: dc.into(),
                    },
                );
            }
        }
        for i in (0..50).step_by(7) {
            run(
                &mut t,
                Command::DeleteUser {
                    jid: format!("u{i}@dyn.test"),
                },
            );
            run(
                &mut t,
                Command::RehomeUser {
                    jid: format!("u{i}@example.com"),
                    dc: "sa".into(),
                },
            );
        }
        run(
            &mut t,
            Command::SetDomainStatus {
                domain: "other.test".into(),
                enabled: false,
            },
        );
        for room in [
            "a@conference.example.com",
            "b@muc.dyn.test",
            "c@example.com",
        ] {
            run(
                &mut t,
                Command::SetRoomHome {
                    jid: room.into(),
                    dc: "us".into(),
                },
            );
        }
        (t, index)
    }

    /// Every JID the busy table knows of, or once knew.
    fn busy_jids() -> Vec<BareJid> {
        let mut all: Vec<_> = (0..50)
            .flat_map(|i| {
                ["example.com", "dyn.test", "other.test"].map(|d| jid(&format!("u{i}@{d}")))
            })
            .collect();
        all.extend(
            [
                "a@conference.example.com",
                "b@muc.dyn.test",
                "c@example.com",
            ]
            .iter()
            .map(|s| jid(s)),
        );
        all
    }

    #[test]
    fn snapshots_round_trip_the_whole_table() {
        let (mut t, index) = busy_table();
        let bytes = t.to_snapshot();
        assert_eq!(bytes[0], SNAPSHOT_FORMAT);
        let mut r = RoutingTable::from_snapshot(&bytes).expect("decode");
        assert_eq!(r.applied_index(), index);
        for name in ["eu", "us", "ap", "sa"] {
            assert_eq!(r.dc_id(name), t.dc_id(name), "{name}");
        }
        assert_eq!(r.dc_id("ap"), None);
        for id in 0..4 {
            assert_eq!(r.dc(DcId(id)), t.dc(DcId(id)), "{id}");
        }
        assert_eq!(r.domains(), t.domains());
        assert_eq!(
            (r.user_count(), r.room_count()),
            (t.user_count(), t.room_count())
        );
        assert_eq!(r.users_of_domain("dyn.test"), 42);
        for j in busy_jids() {
            assert_eq!(r.user_home(&j), t.user_home(&j), "{j}");
            assert_eq!(r.room_home(&j), t.room_home(&j), "{j}");
        }
        assert_eq!(r.to_snapshot(), bytes);
        // The restored table goes on exactly like the original.
        let next = [
            Command::UpsertDc {
                name: "ap".into(),
                bridge_endpoints: vec![],
                role: DcRole::Voter,
            },
            Command::CreateUser {
                jid: "u1@example.com".into(),
                dc: "eu".into(),
            },
            Command::CreateUser {
                jid: "u0@dyn.test".into(),
                dc: "eu".into(),
            },
            Command::RemoveDc { name: "sa".into() },
            Command::CreateUser {
                jid: "new@other.test".into(),
                dc: "eu".into(),
            },
        ];
        for (i, command) in next.iter().enumerate() {
            let at = index + 1 + i as u64;
            assert_eq!(r.apply(at, command), t.apply(at, command), "{command:?}");
        }
        assert_eq!(r.to_snapshot(), t.to_snapshot());
    }

    #[test]
    fn equal_logs_give_equal_snapshots() {
        let (a, _) = busy_table();
        let (b, _) = busy_table();
        assert_eq!(a.to_snapshot(), b.to_snapshot());
        let empty = RoutingTable::new().to_snapshot();
        let restored = RoutingTable::from_snapshot(&empty).expect("empty table");
        assert_eq!((restored.applied_index(), restored.user_count()), (0, 0));
    }

    #[test]
    fn corrupt_snapshots_are_refused_without_panicking() {
        let (t, _) = busy_table();
        let bytes = t.to_snapshot();
        assert_eq!(
            RoutingTable::from_snapshot(&[]).err(),
            Some(SnapshotError::Empty)
        );
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(
            RoutingTable::from_snapshot(&other).err(),
            Some(SnapshotError::UnknownFormat(9))
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            RoutingTable::from_snapshot(&longer).err(),
            Some(SnapshotError::TrailingBytes(1))
        );
        for cut in 1..bytes.len() {
            assert!(
                RoutingTable::from_snapshot(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes"
            );
        }
        // Damaged bytes: an error or some other table, never a panic.
        for at in 1..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= flip;
                if let Ok(table) = RoutingTable::from_snapshot(&damaged) {
                    let _ = table.to_snapshot();
                }
            }
        }
        // Random bytes after a valid format byte.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let len = (next() % 300) as usize;
            let mut random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            random.insert(0, SNAPSHOT_FORMAT);
            if let Ok(table) = RoutingTable::from_snapshot(&random) {
                let _ = table.to_snapshot();
            }
        }
    }

    /// A domain's entries as a snapshot holds them: (localpart, home, version).
    type PlainBucket<'a> = (&'a str, Vec<(&'a str, DcId, u64)>);

    /// Encodes a snapshot from plain parts, laid out like `SnapshotOut`.
    fn raw_snapshot(
        dcs: &[Option<DcEntry>],
        domains: &[(&str, DomainEntry)],
        users: &[PlainBucket<'_>],
    ) -> Vec<u8> {
        let rooms: &[PlainBucket<'_>] = &[];
        let mut out = vec![SNAPSHOT_FORMAT];
        out.extend(postcard::to_allocvec(&(9_u64, dcs, domains, users, rooms)).expect("encode"));
        out
    }

    #[test]
    fn inconsistent_snapshots_are_refused() {
        let dc = |name: &str| {
            Some(DcEntry {
                name: name.into(),
                bridge_endpoints: vec![],
                role: DcRole::Voter,
                version: 1,
            })
        };
        let domain = |serving: Vec<DcId>| DomainEntry {
            host_type: "default".into(),
            dynamic: false,
            status: DomainStatus::Enabled,
            serving,
            version: 2,
        };
        let dcs = [dc("eu"), None, dc("us")];
        let domains = [("example.com", domain(vec![DcId(2)]))];
        // The plain encoding is the real format: a consistent one reads back.
        let good = raw_snapshot(
            &dcs,
            &domains,
            &[("example.com", vec![("a", DcId(0), 3), ("b", DcId(2), 4)])],
        );
        let t = RoutingTable::from_snapshot(&good).expect("consistent");
        assert_eq!(t.applied_index(), 9);
        assert_eq!(t.dc_id("us"), Some(DcId(2)));
        let b = t.user_home(&jid("b@example.com"));
        assert_eq!((b.home, b.version, b.as_of), (Some(DcId(2)), 4, 9));
        assert_eq!(t.to_snapshot(), good);

        let cases = [
            raw_snapshot(
                &dcs,
                &domains,
                &[("example.com", vec![("a", DcId(0), 3), ("a", DcId(2), 4)])],
            ),
            raw_snapshot(&dcs, &domains, &[("example.com", vec![("a", DcId(1), 3)])]),
            raw_snapshot(&dcs, &domains, &[("example.com", vec![("a", DcId(7), 3)])]),
            raw_snapshot(
                &dcs,
                &domains,
                &[
                    ("example.com", vec![("a", DcId(0), 3)]),
                    ("example.com", vec![("b", DcId(0), 4)]),
                ],
            ),
            raw_snapshot(&dcs, &[("example.com", domain(vec![DcId(1)]))], &[]),
            raw_snapshot(
                &dcs,
                &[
                    ("example.com", domain(vec![])),
                    ("example.com", domain(vec![])),
                ],
                &[],
            ),
            raw_snapshot(&[dc("eu"), dc("eu")], &[], &[]),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            assert!(
                matches!(
                    RoutingTable::from_snapshot(bytes),
                    Err(SnapshotError::Inconsistent(_))
                ),
                "case {i}"
            );
        }
    }

    #[test]
    fn clones_are_independent() {
        let (mut t, n) = table();
        create(&mut t, n + 1, "a@example.com", "eu");
        let copy = t.clone();
        delete(&mut t, n + 2, "a@example.com");
        create(&mut t, n + 3, "b@example.com", "us");
        assert!(copy.user_home(&jid("a@example.com")).home.is_some());
        assert_eq!(copy.user_home(&jid("b@example.com")).home, None);
        assert_eq!(t.user_home(&jid("a@example.com")).home, None);
    }
}
