//! The routing table's state machine: commands applied in log order, reads from memory.
//!
//! `apply(index, command)` is deterministic: the same log gives the same table and the same
//! answers on every node, errors included (a refused command is still consumed, so every node
//! refuses it alike). Each entry remembers the log index of its last change (its version) and
//! every read reports the index the whole table reflects (`as_of`).

use std::collections::HashMap;

use jid::BareJid;

use crate::command::{Command, DcRole};

/// A datacenter's compact id inside the table (its position in the registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DcId(pub u16);

/// A datacenter of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Where a user or room lives, and since which log index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Home {
    dc: DcId,
    version: u64,
}

/// Whether a domain takes logins and routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainStatus {
    /// Serving.
    Enabled,
    /// Refuses logins (`<host-unknown/>`) and routing (`<service-unavailable/>`).
    Disabled,
}

/// A domain of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The log index it was applied at.
    pub index: u64,
    /// Whether the table changed (idempotent repeats and replays do not).
    pub changed: bool,
    /// Entries deleted along with it (users and rooms of a removed domain).
    pub removed: usize,
}

/// Why a command was refused. Deterministic: every node refuses it alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
}

/// The routing table.
#[derive(Debug, Default, Clone)]
pub struct RoutingTable {
    applied: u64,
    dcs: Vec<Option<DcEntry>>,
    dc_by_name: HashMap<String, DcId>,
    users: HashMap<BareJid, Home>,
    rooms: HashMap<BareJid, Home>,
    domains: HashMap<String, DomainEntry>,
}

fn bare(jid: &str) -> Result<BareJid, ApplyError> {
    BareJid::new(jid).map_err(|_| ApplyError::BadJid(jid.to_owned()))
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
            return Ok(Applied {
                index: self.applied,
                changed: false,
                removed: 0,
            });
        }
        self.applied = index;
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
                match self.users.get(&jid_bare) {
                    Some(home) if home.dc == dc => false,
                    Some(home) => {
                        return Err(ApplyError::UserExists {
                            jid: jid.clone(),
                            dc: self.dc_name(home.dc).to_owned(),
                        });
                    }
                    None => {
                        self.users.insert(jid_bare, Home { dc, version: index });
                        true
                    }
                }
            }
            Command::RehomeUser { jid, dc } => {
                let jid_bare = bare(jid)?;
                let dc = self
                    .dc_id(dc)
                    .ok_or_else(|| ApplyError::UnknownDc(dc.clone()))?;
                let home = self
                    .users
                    .get_mut(&jid_bare)
                    .ok_or_else(|| ApplyError::UnknownUser(jid.clone()))?;
                if home.dc == dc {
                    false
                } else {
                    *home = Home { dc, version: index };
                    true
                }
            }
            Command::DeleteUser { jid } => self.users.remove(&bare(jid)?).is_some(),
            Command::SetRoomHome { jid, dc } => {
                let jid_bare = bare(jid)?;
                let dc = self
                    .dc_id(dc)
                    .ok_or_else(|| ApplyError::UnknownDc(dc.clone()))?;
                match self.rooms.get(&jid_bare) {
                    Some(home) if home.dc == dc => false,
                    _ => {
                        self.rooms.insert(jid_bare, Home { dc, version: index });
                        true
                    }
                }
            }
            Command::DeleteRoom { jid } => self.rooms.remove(&bare(jid)?).is_some(),
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
                let before = self.users.len() + self.rooms.len();
                let suffix = format!(".{domain}");
                self.users.retain(|jid, _| jid.domain().as_str() != domain);
                self.rooms.retain(|jid, _| {
                    let d = jid.domain().as_str();
                    d != domain && !d.ends_with(&suffix)
                });
                removed = before - self.users.len() - self.rooms.len();
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
        let entries = self.users.values().filter(|h| h.dc == id).count()
            + self.rooms.values().filter(|h| h.dc == id).count()
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

    fn dc_name(&self, id: DcId) -> &str {
        self.dc(id).map_or("?", |d| d.name.as_str())
    }

    /// Where a user lives.
    pub fn user_home(&self, jid: &BareJid) -> Lookup {
        self.lookup(self.users.get(jid))
    }

    /// Where a MUC room lives.
    pub fn room_home(&self, jid: &BareJid) -> Lookup {
        self.lookup(self.rooms.get(jid))
    }

    fn lookup(&self, home: Option<&Home>) -> Lookup {
        Lookup {
            home: home.map(|h| h.dc),
            version: home.map_or(0, |h| h.version),
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
        self.users.len()
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
}
