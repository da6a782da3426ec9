//! The node's side of the global routing table: opening it (a one-voter group for a single
//! node, the topology's voters and learners otherwise), writing what the configuration and
//! topology declare (this node's DC, the static domains), the set of domains the streams
//! consult, and the reactions to domain changes that every node runs (close the sessions of a
//! disabled or removed domain, delete a removed domain's data).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tern_config::Config;
use tern_raft_store::tcp::{TcpTransport, serve};
use tern_raft_store::{
    Command, DcRole, DomainEntry, DomainStatus, Grt, GrtError, GrtOptions, GrtReader, Member,
    RoutingTable, Transport,
};
use tern_topology::Topology;
use tern_xmpp_proto::stream::DomainSet;
use tern_xmpp_proto::{StreamCondition, StreamError};
use tokio::sync::broadcast::error::RecvError;

use crate::node::Node;

/// The routing table's file in the data directory.
pub const GRT_FILE: &str = "grt.redb";

/// How long a single node waits for its own election at start.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The domains a node serves: the static ones of its configuration, and the enabled dynamic
/// domains of the routing table — each only if its entry lets this node's datacenter serve it
/// (an empty serving list: every datacenter).
#[derive(Debug, Clone)]
pub struct Domains {
    static_domains: Arc<Vec<String>>,
    own_dc: Arc<str>,
    reader: GrtReader,
}

impl Domains {
    /// The set for `config`'s static domains and the table `reader` reads.
    pub fn new(config: &Config, reader: GrtReader) -> Self {
        Self {
            static_domains: Arc::new(config.general.domains.clone()),
            own_dc: Arc::from(config.cluster.dc.as_str()),
            reader,
        }
    }

    /// Whether `domain` is one of the configuration's static domains.
    pub fn is_static(&self, domain: &str) -> bool {
        self.static_domains.iter().any(|d| d == domain)
    }

    /// Whether `domain` is a dynamic domain that exists but is disabled.
    pub fn is_disabled(&self, domain: &str) -> bool {
        !self.is_static(domain)
            && self.reader.with(|t| {
                t.domain(domain)
                    .is_some_and(|entry| entry.status == DomainStatus::Disabled)
            })
    }

    /// For a domain of the mesh that other datacenters serve but this one does not (its
    /// serving list leaves this datacenter out): the first of them, by routing table order.
    /// Stanzas for it are routed over the bridges; clients of it connect there.
    pub fn served_elsewhere(&self, domain: &str) -> Option<String> {
        self.reader.with(|t| {
            let entry = t.domain(domain)?;
            if entry.status != DomainStatus::Enabled || self.serves_here(t, entry) {
                return None;
            }
            let first = entry.serving.iter().min()?;
            Some(t.dc(*first)?.name.clone())
        })
    }

    fn serves_here(&self, table: &RoutingTable, entry: &DomainEntry) -> bool {
        entry.serving.is_empty()
            || table
                .dc_id(&self.own_dc)
                .is_some_and(|own| entry.serving.contains(&own))
    }
}

impl DomainSet for Domains {
    /// Asked for every stanza: reads the table in place (no copy of the entry).
    fn serves(&self, domain: &str) -> bool {
        let listed = self.is_static(domain);
        self.reader.with(|t| match t.domain(domain) {
            Some(entry) => {
                (listed || entry.dynamic && entry.status == DomainStatus::Enabled)
                    && self.serves_here(t, entry)
            }
            // A static domain the table does not know yet (declared at start).
            None => listed,
        })
    }

    fn default_domain(&self) -> Option<String> {
        self.static_domains.first().cloned()
    }
}

/// An open routing table and, in a multi-node deployment, the task answering Raft RPCs.
#[derive(Debug)]
pub struct Opened {
    /// The handle.
    pub grt: Grt,
    /// The Raft listener's task (none for a single node).
    pub listener: Option<tokio::task::JoinHandle<()>>,
    /// The deployment's topology (none for a single node).
    pub topology: Option<Topology>,
    /// The transport of Raft RPCs with a topology: over the mesh bridges to other datacenters
    /// once they run, TCP otherwise.
    pub raft_transport: Option<Arc<crate::mesh::MeshTransport>>,
}

/// Opens the routing table as the configuration says: a single node is the one voter of its
/// own group (the embedded default); with `cluster.topology`, the node joins the topology's
/// group, answering Raft RPCs on its `raft_addr`.
pub async fn open(config: &Config) -> anyhow::Result<Opened> {
    let path = config.general.data_dir.join(GRT_FILE);
    let id = config.cluster.node_id;
    let transport: Arc<dyn Transport> = Arc::new(TcpTransport::new());
    let Some(topology_path) = &config.cluster.topology else {
        let grt = Grt::open(id, &path, transport, GrtOptions::local())
            .await
            .with_context(|| format!("cannot open the routing table {}", path.display()))?;
        let voters = BTreeMap::from([(id, Member::new(&config.cluster.dc, ""))]);
        grt.initialize(voters).await?;
        grt.wait_for_leader(START_TIMEOUT)
            .await
            .context("the single-node routing table elected no leader")?;
        return Ok(Opened {
            grt,
            listener: None,
            topology: None,
            raft_transport: None,
        });
    };
    let topology = Topology::load(topology_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let me = tern_topology::NodeId::new(id)
        .and_then(|id| topology.node(id))
        .with_context(|| {
            format!(
                "cluster.node_id {id} is not a node of {}",
                topology_path.display()
            )
        })?;
    anyhow::ensure!(
        me.dc.as_str() == config.cluster.dc,
        "cluster.dc is {:?} but {} puts node {id} in {:?}",
        config.cluster.dc,
        topology_path.display(),
        me.dc.as_str()
    );
    let listener = tokio::net::TcpListener::bind(me.raft_addr)
        .await
        .with_context(|| format!("cannot listen on {} (routing table)", me.raft_addr))?;
    let raft_transport = Arc::new(crate::mesh::MeshTransport::new(
        &config.cluster.dc,
        &topology,
    ));
    let transport: Arc<dyn Transport> = raft_transport.clone();
    let grt = Grt::open(id, &path, transport, GrtOptions::wan())
        .await
        .with_context(|| format!("cannot open the routing table {}", path.display()))?;
    let task = serve(listener, grt.clone());
    if me.voter {
        let voters: BTreeMap<u64, Member> = topology
            .voters()
            .into_iter()
            .filter_map(|id| topology.node(id))
            .map(|n| {
                (
                    n.id.get(),
                    Member::new(n.dc.as_str(), n.raft_addr.to_string()),
                )
            })
            .collect();
        grt.initialize(voters).await?;
    }
    Ok(Opened {
        grt,
        listener: Some(task),
        topology: Some(topology),
        raft_transport: Some(raft_transport),
    })
}

/// With a topology: while this node leads, adds every node of the topology that is not yet a
/// member as a learner (voters come from `initialize`), checking every few seconds so nodes
/// that start late, or come back, join without anyone restarting.
pub fn reconcile_membership(grt: Grt, topology: Topology) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let status = grt.status();
            if status.role == "leader" {
                for node in topology.nodes() {
                    let id = node.id.get();
                    if status.voters.contains_key(&id) || status.learners.contains_key(&id) {
                        continue;
                    }
                    let member = Member::new(node.dc.as_str(), node.raft_addr.to_string());
                    match grt.add_learner(id, member).await {
                        Ok(index) => {
                            tracing::info!(node = id, index, "added a learner to the routing table")
                        }
                        Err(e) => tracing::debug!(node = id, error = %e, "learner not added yet"),
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}

/// The commands that make the table say what the configuration and topology say. Each is
/// idempotent: repeating them changes nothing.
fn declared(config: &Config, topology: Option<&Topology>) -> Vec<Command> {
    let mut commands = Vec::new();
    match topology {
        None => commands.push(Command::UpsertDc {
            name: config.cluster.dc.clone(),
            bridge_endpoints: Vec::new(),
            role: DcRole::Voter,
        }),
        Some(topology) => {
            for dc in topology.dcs() {
                commands.push(Command::UpsertDc {
                    name: dc.name.as_str().to_owned(),
                    bridge_endpoints: dc.bridge.iter().map(ToString::to_string).collect(),
                    role: match dc.role {
                        tern_topology::DcRole::Voter => DcRole::Voter,
                        tern_topology::DcRole::Learner => DcRole::Learner,
                        tern_topology::DcRole::Witness => DcRole::Witness,
                    },
                });
            }
        }
    }
    for domain in &config.general.domains {
        let serving = topology
            .and_then(|t| t.domain(domain))
            .map(|d| d.dcs.iter().map(|dc| dc.as_str().to_owned()).collect())
            .unwrap_or_default();
        commands.push(Command::AddDomain {
            domain: domain.clone(),
            host_type: domain.clone(),
            dynamic: false,
            serving,
        });
    }
    commands
}

/// Writes what the configuration declares, skipping what the table already says. A single
/// node must succeed before it serves (it is its own quorum); a node of a larger group declares
/// in the background, retrying until a quorum is up, so that starting the first nodes of a
/// deployment never waits for the others.
pub async fn declare(node: &Arc<Node>, topology: Option<&Topology>) -> anyhow::Result<()> {
    let commands = declared(&node.config, topology);
    if topology.is_none() {
        return write_missing(&node.grt, commands)
            .await
            .map_err(|(e, _)| e)
            .context("cannot write the configuration into the routing table");
    }
    let node = node.clone();
    tokio::spawn(async move {
        let mut rest = commands;
        while !node.is_shutting_down() {
            match write_missing(&node.grt, rest).await {
                Ok(()) => break,
                Err((e, left)) => {
                    tracing::info!(error = %e, "routing table not reachable yet; declaring again soon");
                    rest = left;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if !node.is_shutting_down() {
            tracing::info!("configuration declared in the routing table");
        }
    });
    Ok(())
}

async fn write_missing(
    grt: &Grt,
    commands: Vec<Command>,
) -> Result<(), (anyhow::Error, Vec<Command>)> {
    let mut left = commands.into_iter();
    while let Some(command) = left.next() {
        if already(grt, &command) {
            continue;
        }
        match grt.write(command.clone()).await {
            Ok(_) => {}
            Err(GrtError::Refused { reason, .. }) => {
                // A static domain that exists with another host type or as dynamic: say so,
                // and keep the table as it is.
                tracing::warn!(%reason, ?command, "the routing table refused a declared entry");
            }
            Err(e) => {
                let mut rest = vec![command];
                rest.extend(left);
                return Err((e.into(), rest));
            }
        }
    }
    Ok(())
}

fn already(grt: &Grt, command: &Command) -> bool {
    let reader = grt.reader();
    match command {
        Command::AddDomain {
            domain, host_type, ..
        } => reader
            .domain(domain)
            .is_some_and(|d| &d.host_type == host_type),
        Command::UpsertDc {
            name,
            bridge_endpoints,
            role,
        } => reader.with(|t| {
            t.dc_id(name)
                .and_then(|id| t.dc(id))
                .is_some_and(|dc| &dc.bridge_endpoints == bridge_endpoints && dc.role == *role)
        }),
        _ => false,
    }
}

/// Follows the table's changes for as long as the node runs: the sessions of a domain that is
/// disabled or removed are closed with `<host-gone/>`, and a removed domain's data is deleted
/// from this node's storage.
pub fn follow_changes(node: &Arc<Node>) -> tokio::task::JoinHandle<()> {
    let node = node.clone();
    let mut changes = node.grt.subscribe();
    let mut shutdown = node.shutdown.subscribe();
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                _ = shutdown.changed() => return,
            };
            match change {
                Ok(change) => match change.command {
                    Some(Command::SetDomainStatus {
                        domain,
                        enabled: false,
                    }) => close_sessions(&node, &domain, "disabled"),
                    Some(Command::RemoveDomain { domain }) => {
                        close_sessions(&node, &domain, "removed");
                        if claimed(&node, &domain) {
                            continue;
                        }
                        if let Err(e) = remove_domain_data(&node, &domain).await {
                            tracing::error!(%domain, error = %e, "cannot delete a removed domain's data");
                        }
                    }
                    Some(_) => {}
                    None => sweep(&node),
                },
                Err(RecvError::Lagged(_)) => sweep(&node),
                Err(RecvError::Closed) => return,
            }
        }
    })
}

/// After a snapshot or a lag: closes every session whose domain is no longer served.
fn sweep(node: &Arc<Node>) {
    let mut gone: Vec<String> = node
        .sm
        .list(None)
        .iter()
        .map(|s| s.jid.domain().to_string())
        .filter(|d| !node.domains.serves(d))
        .collect();
    gone.sort();
    gone.dedup();
    for domain in gone {
        close_sessions(node, &domain, "no longer served");
    }
}

fn close_sessions(node: &Arc<Node>, domain: &str, why: &str) {
    let sessions = node.sm.list(Some(domain));
    if sessions.is_empty() {
        return;
    }
    tracing::info!(%domain, sessions = sessions.len(), "closing the sessions of a domain that was {why}");
    for session in sessions {
        session.close(
            StreamError::new(StreamCondition::HostGone)
                .with_text(format!("the domain {domain} was {why}")),
        );
    }
}

/// Why [`remove_domain`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveDomainError {
    /// The routing table refused or could not commit the removal (nothing was deleted).
    #[error(transparent)]
    Grt(#[from] GrtError),
    /// The removal is committed but this node's storage failed to delete the data.
    #[error("the domain is removed but its data could not be deleted: {0}")]
    Storage(#[from] crate::storage::Error),
}

/// Removes a dynamic domain: one routing-table command (every node then closes its sessions
/// and deletes its data), and this node's data deleted here so the caller learns how much.
/// Runs in its own task: once started it finishes even if the caller goes away.
pub async fn remove_domain(
    node: &Arc<Node>,
    domain: &str,
) -> Result<(tern_raft_store::Applied, crate::storage::DomainRemoval), RemoveDomainError> {
    let node = node.clone();
    let domain = domain.to_owned();
    let task = tokio::spawn(async move {
        // Claimed before the write, so this node's change follower leaves the deletion to us.
        let claim = RemovalClaim::new(&node, &domain);
        let applied = node
            .grt
            .write(Command::RemoveDomain {
                domain: domain.clone(),
            })
            .await?;
        let removal = remove_domain_data(&node, &domain).await?;
        drop(claim);
        Ok((applied, removal))
    });
    task.await
        .unwrap_or_else(|e| Err(GrtError::Fatal(format!("domain removal task failed: {e}")).into()))
}

/// Marks a domain whose data an admin call on this node deletes itself.
struct RemovalClaim {
    node: Arc<Node>,
    domain: String,
}

impl RemovalClaim {
    fn new(node: &Arc<Node>, domain: &str) -> Self {
        node.removals_in_progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(domain.to_owned());
        Self {
            node: node.clone(),
            domain: domain.to_owned(),
        }
    }
}

impl Drop for RemovalClaim {
    fn drop(&mut self) {
        self.node
            .removals_in_progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.domain);
    }
}

fn claimed(node: &Node, domain: &str) -> bool {
    node.removals_in_progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(domain)
}

/// Deletes what this node stores for `domain`.
pub async fn remove_domain_data(
    node: &Arc<Node>,
    domain: &str,
) -> Result<crate::storage::DomainRemoval, crate::storage::Error> {
    let removal = node.storage.remove_domain(domain).await?;
    node.privacy.forget_domain(domain);
    node.mam_prefs.forget_domain(domain);
    let rooms = crate::modules::muc::remove_service_rooms(node, domain).await;
    if rooms > 0 {
        tracing::info!(%domain, rooms, "removed domain's rooms destroyed");
    }
    if removal != crate::storage::DomainRemoval::default() {
        tracing::info!(
            %domain,
            accounts = removal.accounts,
            rosters = removal.rosters,
            "removed domain's data deleted"
        );
    }
    Ok(removal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::test_node;

    #[tokio::test]
    async fn a_domain_served_by_other_datacenters_is_routed_not_served() {
        let (node, _dir) = test_node("domains-serving").await;
        let own = node.config.cluster.dc.clone();
        let commands = vec![
            Command::UpsertDc {
                name: "far".into(),
                bridge_endpoints: Vec::new(),
                role: DcRole::Learner,
            },
            Command::AddDomain {
                domain: "elsewhere.test".into(),
                host_type: "default".into(),
                dynamic: true,
                serving: vec!["far".into()],
            },
            Command::AddDomain {
                domain: "both.test".into(),
                host_type: "default".into(),
                dynamic: true,
                serving: vec!["far".into(), own.clone()],
            },
            Command::AddDomain {
                domain: "all.test".into(),
                host_type: "default".into(),
                dynamic: true,
                serving: Vec::new(),
            },
        ];
        for command in commands {
            node.grt.write(command).await.expect("written");
        }
        let domains = &node.domains;
        assert!(!domains.serves("elsewhere.test"));
        assert_eq!(
            domains.served_elsewhere("elsewhere.test").as_deref(),
            Some("far")
        );
        for served in ["both.test", "all.test"] {
            assert!(domains.serves(served), "{served}");
            assert_eq!(domains.served_elsewhere(served), None, "{served}");
        }
        assert_eq!(domains.served_elsewhere("unknown.test"), None);
        // Disabled: neither served here nor routed elsewhere.
        node.grt
            .write(Command::SetDomainStatus {
                domain: "elsewhere.test".into(),
                enabled: false,
            })
            .await
            .expect("written");
        assert_eq!(domains.served_elsewhere("elsewhere.test"), None);
    }
}
