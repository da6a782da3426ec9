//! The commands of the global routing table, one per kind of change, and their wire encoding.
//!
//! Every command is idempotent: applying it twice leaves the table as applying it once (the
//! second application reports that nothing changed). Commands name datacenters by their
//! topology name; the table maps names to compact ids.
//!
//! Encoding: one format byte ([`FORMAT`]) then postcard. A reader refuses a format it does not
//! know instead of guessing, so a mixed-version cluster fails loudly.

use serde::{Deserialize, Serialize};

/// The encoding version written in front of every encoded command.
pub const FORMAT: u8 = 1;

/// A datacenter's part in the Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DcRole {
    /// Votes in elections and commits (one node per DC by default).
    Voter,
    /// Receives the log but does not vote.
    Learner,
    /// Votes but serves no users: the tie-breaker of a two-DC deployment.
    Witness,
}

/// One change to the routing table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Adds a datacenter, or updates its bridge endpoints and role.
    UpsertDc {
        /// Topology name (`eu-west`).
        name: String,
        /// Addresses its bridge listens on.
        bridge_endpoints: Vec<String>,
        /// Its part in the Raft group.
        role: DcRole,
    },
    /// Removes a datacenter; refused while users, rooms or domains refer to it.
    RemoveDc {
        /// Topology name.
        name: String,
    },
    /// Creates a user homed in `dc` (the same creation twice is a no-op; a creation for a user
    /// homed elsewhere is refused: that is a re-home).
    CreateUser {
        /// Bare JID.
        jid: String,
        /// Home datacenter.
        dc: String,
    },
    /// Moves an existing user to another home datacenter.
    RehomeUser {
        /// Bare JID.
        jid: String,
        /// New home datacenter.
        dc: String,
    },
    /// Forgets a user.
    DeleteUser {
        /// Bare JID.
        jid: String,
    },
    /// Homes a MUC room in `dc` (create or move).
    SetRoomHome {
        /// Room bare JID.
        jid: String,
        /// Home datacenter.
        dc: String,
    },
    /// Forgets a room.
    DeleteRoom {
        /// Room bare JID.
        jid: String,
    },
    /// Adds a domain (enabled). The same add twice is a no-op; an add with another host type is
    /// refused.
    AddDomain {
        /// Domain name.
        domain: String,
        /// Host type (configuration profile) of the domain.
        host_type: String,
        /// `false` for domains from the configuration file (they cannot be changed at runtime).
        dynamic: bool,
        /// Datacenters that serve it (empty: all).
        serving: Vec<String>,
    },
    /// Enables or disables a dynamic domain.
    SetDomainStatus {
        /// Domain name.
        domain: String,
        /// Whether it accepts logins and routing.
        enabled: bool,
    },
    /// Removes a dynamic domain and every user and room entry under it.
    RemoveDomain {
        /// Domain name.
        domain: String,
    },
    /// Homes a new MUC room in `dc`, unless the room already has a home (then nothing
    /// changes: two datacenters creating one room at once agree on the first).
    CreateRoom {
        /// Room bare JID.
        jid: String,
        /// Home datacenter.
        dc: String,
    },
}

/// Why bytes are not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Nothing to decode.
    #[error("empty command")]
    Empty,
    /// Written by a version of Tern with another encoding.
    #[error("command format {0} is not known to this version (it knows {FORMAT})")]
    UnknownFormat(u8),
    /// The bytes after the format byte are not a command.
    #[error("corrupt command: {0}")]
    Corrupt(String),
}

impl Command {
    /// The format byte followed by the postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        // Encoding a plain enum of strings, vectors and booleans into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).expect("commands always encode"));
        out
    }

    /// Reads an encoded command.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.split_first() {
            None => Err(DecodeError::Empty),
            Some((&FORMAT, rest)) => {
                postcard::from_bytes(rest).map_err(|e| DecodeError::Corrupt(e.to_string()))
            }
            Some((&other, _)) => Err(DecodeError::UnknownFormat(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_round_trips() {
        let commands = [
            Command::UpsertDc {
                name: "eu".into(),
                bridge_endpoints: vec!["127.0.0.1:7000".into()],
                role: DcRole::Witness,
            },
            Command::RemoveDc { name: "eu".into() },
            Command::CreateUser {
                jid: "a@x".into(),
                dc: "eu".into(),
            },
            Command::RehomeUser {
                jid: "a@x".into(),
                dc: "us".into(),
            },
            Command::DeleteUser { jid: "a@x".into() },
            Command::SetRoomHome {
                jid: "r@muc.x".into(),
                dc: "eu".into(),
            },
            Command::DeleteRoom {
                jid: "r@muc.x".into(),
            },
            Command::AddDomain {
                domain: "x".into(),
                host_type: "default".into(),
                dynamic: true,
                serving: vec![],
            },
            Command::SetDomainStatus {
                domain: "x".into(),
                enabled: false,
            },
            Command::RemoveDomain { domain: "x".into() },
            Command::CreateRoom {
                jid: "r@muc.x".into(),
                dc: "eu".into(),
            },
        ];
        for command in commands {
            let bytes = command.encode();
            assert_eq!(bytes[0], FORMAT);
            assert_eq!(Command::decode(&bytes), Ok(command));
        }
    }

    #[test]
    fn refuses_unknown_formats_and_garbage() {
        assert_eq!(Command::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Command::decode(&[9, 0]), Err(DecodeError::UnknownFormat(9)));
        assert!(matches!(
            Command::decode(&[FORMAT, 200, 1]),
            Err(DecodeError::Corrupt(_))
        ));
    }
}
