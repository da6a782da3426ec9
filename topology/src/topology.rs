//! The validated deployment: [`Topology`] with its [`Dc`]s, their [`Node`]s, and the
//! [`Domain`]s, plus the lookups the rest of Tern uses.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::Serialize;

use crate::endpoint::BridgeEndpoint;
use crate::error::Result;
use crate::id::{DcId, NodeId, NodeName};
use crate::validate;

/// A DC's part in the global routing table's Raft group (the `raft` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DcRole {
    /// One node of the DC votes; the DC serves users.
    Voter,
    /// No node of the DC votes; every node follows the log. The DC serves users.
    Learner,
    /// A tie-breaker: its one node votes, but the DC serves no users and no domains.
    Witness,
}

impl DcRole {
    /// The role as written in `topology.toml`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Voter => "voter",
            Self::Learner => "learner",
            Self::Witness => "witness",
        }
    }

    /// Whether the DC has a voting node (voter and witness DCs).
    pub const fn votes(self) -> bool {
        matches!(self, Self::Voter | Self::Witness)
    }

    /// Whether the DC serves users and domains (voter and learner DCs).
    pub const fn serves_users(self) -> bool {
        matches!(self, Self::Voter | Self::Learner)
    }
}

impl fmt::Display for DcRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node (one `tern` process) of a DC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Raft node id, unique in the deployment.
    pub id: NodeId,
    /// Name, unique in the deployment.
    pub name: NodeName,
    /// Where the node answers Raft RPCs, unique in the deployment.
    pub raft_addr: SocketAddr,
    /// Whether the node is its DC's Raft voter (at most one per DC; exactly one in voter and
    /// witness DCs, none in learner DCs). The others are learners.
    pub voter: bool,
    /// The DC the node belongs to (implied by where it is written, so not serialised).
    #[serde(skip)]
    pub dc: DcId,
}

/// One datacenter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dc {
    /// Name, unique in the deployment.
    pub name: DcId,
    /// Part in the Raft group.
    #[serde(rename = "raft")]
    pub role: DcRole,
    /// Endpoints where the DC accepts QUIC bridge connections; may be empty.
    pub bridge: Vec<BridgeEndpoint>,
    /// The DC's nodes, at least one (exactly one in a witness DC), in file order.
    #[serde(rename = "node")]
    pub nodes: Vec<Node>,
}

impl Dc {
    /// The DC's voting node; `None` for a learner DC.
    pub fn voter(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.voter)
    }
}

/// An XMPP domain and the DCs that serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Domain {
    /// The domain, lowercased (`example.com`).
    pub name: String,
    /// The DCs serving it, in file order: those listed, or every DC that serves users (voter
    /// and learner DCs) when the file lists none. Never empty, never a witness DC.
    pub dcs: Vec<DcId>,
}

impl Domain {
    /// Whether `dc` serves this domain.
    pub fn served_by(&self, dc: &str) -> bool {
        self.dcs.iter().any(|d| d == dc)
    }
}

/// The whole deployment, validated: every DC, node and domain, with every rule of
/// `docs/topology.md` checked. Every node of every DC reads the same one.
///
/// Serialises (with `toml::to_string`) to a `topology.toml` that reads back as an equal
/// topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    #[serde(rename = "dc")]
    dcs: Vec<Dc>,
    #[serde(rename = "domain")]
    domains: Vec<Domain>,
}

impl Topology {
    /// Assembles a topology whose rules were already checked.
    pub(crate) fn from_checked(dcs: Vec<Dc>, domains: Vec<Domain>) -> Self {
        Self { dcs, domains }
    }

    /// Reads and validates the file at `path`; messages name the file as `path` displays.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        tern_toml_check::load_file(path.as_ref(), Self::from_toml_str)
    }

    /// Parses and validates TOML text, reporting every problem at once; `file` is the name
    /// used in messages.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Self> {
        validate::validate(&tern_toml_check::parse_table(text, file)?, file)
    }

    /// A deployment of one voter DC with one node, the voter, and no domains listed: what a
    /// node runs with when no `topology.toml` is given.
    ///
    /// The Raft address is taken as it is (port 0 and unspecified IPs included): no other
    /// node ever dials it.
    pub fn single(dc: DcId, node_id: NodeId, node_name: NodeName, raft_addr: SocketAddr) -> Self {
        let node = Node {
            id: node_id,
            name: node_name,
            raft_addr,
            voter: true,
            dc: dc.clone(),
        };
        Self {
            dcs: vec![Dc {
                name: dc,
                role: DcRole::Voter,
                bridge: Vec::new(),
                nodes: vec![node],
            }],
            domains: Vec::new(),
        }
    }

    /// Every DC, in file order.
    pub fn dcs(&self) -> &[Dc] {
        &self.dcs
    }

    /// The DC named `name`.
    pub fn dc(&self, name: &str) -> Option<&Dc> {
        self.dcs.iter().find(|dc| dc.name == name)
    }

    /// Every node, DC by DC, in file order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.dcs.iter().flat_map(|dc| &dc.nodes)
    }

    /// The node with Raft id `id`.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes().find(|n| n.id == id)
    }

    /// The node named `name`.
    pub fn node_by_name(&self, name: &str) -> Option<&Node> {
        self.nodes().find(|n| n.name == name)
    }

    /// The Raft voters: the voting node of each voter and witness DC, in file order.
    pub fn voters(&self) -> Vec<NodeId> {
        self.nodes().filter(|n| n.voter).map(|n| n.id).collect()
    }

    /// The Raft learners: every node that does not vote, in file order.
    pub fn learners(&self) -> Vec<NodeId> {
        self.nodes().filter(|n| !n.voter).map(|n| n.id).collect()
    }

    /// Every domain listed, in file order.
    pub fn domains(&self) -> &[Domain] {
        &self.domains
    }

    /// The domain `name` (compared lowercased).
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        let name = name.to_lowercase();
        self.domains.iter().find(|d| d.name == name)
    }
}
