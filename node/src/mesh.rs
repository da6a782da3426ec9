//! The node's side of the global distribution mesh: starting the bridges of this datacenter
//! (when a topology names bridge endpoints for it), sending stanzas for users homed in another
//! datacenter over them, and routing what arrives.
//!
//! A stanza for a user whose home (in the routing table) is another datacenter goes over the
//! bridge to that datacenter, which applies the RFC 6121 delivery rules. A datacenter that
//! receives a stanza for a user it is not home for (the sender's view was stale) forwards it by
//! its own, newer view, at most [`MAX_HOPS`] times in all; past that the sender gets an error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tern_raft_store::tcp::TcpTransport;
use tern_raft_store::{Grt, Transport, TransportError};

use anyhow::Context as _;
use jid::{BareJid, Jid};
use sha2::{Digest as _, Sha256};
use tern_config::Config;
use tern_gd_mesh::frame::{EnvelopeKind as MeshKind, Route};
use tern_gd_mesh::pki::{self, DcIdentity, TransportSettings};
use tern_gd_mesh::{Inbound, LinkConfig, Mesh, PeerAddr, SendError};
use tern_topology::Topology;
use tern_xmpp_proto::{Stanza, StanzaCondition, StanzaKind};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::node::Node;

/// The bridges' queue and delivered positions in the data directory.
pub const MESH_FILE: &str = "mesh.redb";

/// Datacenters an envelope may cross before it is bounced (the first hop included).
pub const MAX_HOPS: u8 = 2;

/// Longest a stanza from the mesh waits for this node's routing table to reach the view the
/// sender routed it by, before this node's own view decides where it goes.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// A digest of the topology that both ends of a bridge must share.
pub fn topology_digest(topology: &Topology) -> anyhow::Result<[u8; 32]> {
    let canonical = toml::to_string(topology).context("cannot serialise the topology")?;
    Ok(Sha256::digest(canonical.as_bytes()).into())
}

/// Starts this datacenter's bridges when the topology gives it a bridge endpoint (or
/// `mesh.listen` is set); `None` for a deployment without bridges.
pub fn start(
    config: &Config,
    topology: &Topology,
) -> anyhow::Result<Option<(Mesh, UnboundedReceiver<Inbound>)>> {
    let own = &config.cluster.dc;
    let dc = topology
        .dc(own)
        .with_context(|| format!("cluster.dc {own:?} is not a datacenter of the topology"))?;
    let listen: Option<SocketAddr> = config
        .mesh
        .listen
        .or_else(|| dc.bridge.first().and_then(|e| e.socket_addr()));
    let Some(listen) = listen else {
        if dc.bridge.is_empty() {
            return Ok(None);
        }
        anyhow::bail!(
            "the bridge endpoint of {own} is a host name: set mesh.listen to the address to bind"
        );
    };
    let identity = DcIdentity::load(&config.mesh.pki_dir, own).with_context(|| {
        format!(
            "cannot load the mesh certificate of {own} from {}",
            config.mesh.pki_dir.display()
        )
    })?;
    let known: Vec<String> = topology
        .dcs()
        .iter()
        .map(|d| d.name.as_str().to_owned())
        .collect();
    let settings = TransportSettings {
        keep_alive_interval: config.mesh.keepalive,
        idle_timeout: config.mesh.idle_timeout,
        ..TransportSettings::default()
    };
    let server = pki::server_config(&identity, known, &settings)?;
    let client = pki::client_config(&identity, &settings)?;
    let endpoint = quinn::Endpoint::server(server, listen)
        .with_context(|| format!("cannot listen on {listen} (mesh bridges)"))?;
    let mut peers = Vec::new();
    for peer in topology.dcs().iter().filter(|d| d.name.as_str() != own) {
        let Some(endpoint) = peer.bridge.first() else {
            continue;
        };
        let addr = match endpoint.socket_addr() {
            Some(addr) => addr,
            None => std::net::ToSocketAddrs::to_socket_addrs(&endpoint.to_string())
                .ok()
                .and_then(|mut addrs| addrs.next())
                .with_context(|| format!("cannot resolve the bridge endpoint {endpoint}"))?,
        };
        peers.push(PeerAddr {
            dc: peer.name.as_str().to_owned(),
            addr,
            server_name: pki::server_name(peer.name.as_str()),
        });
    }
    let link = LinkConfig {
        streams: config.mesh.streams,
        queue_limit: config.mesh.queue_limit,
        down_after: config.mesh.down_after,
        store: Some(config.general.data_dir.join(MESH_FILE)),
        ..LinkConfig::new(own.clone(), topology_digest(topology)?)
    };
    tracing::info!(%listen, peers = peers.len(), "mesh bridges starting");
    Ok(Some(Mesh::start(link, endpoint, client, peers)?))
}

/// Raft RPCs of the routing table: to a node of another datacenter over that datacenter's
/// bridge (its own stream type) once the bridges run; to a node of this datacenter, or before
/// the bridges are up, over TCP to its `raft_addr`.
pub struct MeshTransport {
    own_dc: String,
    tcp: TcpTransport,
    mesh: OnceLock<Mesh>,
    /// Node id → (datacenter, Raft address).
    nodes: HashMap<u64, (String, String)>,
}

impl std::fmt::Debug for MeshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTransport")
            .field("own_dc", &self.own_dc)
            .finish_non_exhaustive()
    }
}

impl MeshTransport {
    /// A transport for a node of `own_dc` in `topology`.
    pub fn new(own_dc: &str, topology: &Topology) -> Self {
        Self {
            own_dc: own_dc.to_owned(),
            tcp: TcpTransport::new(),
            mesh: OnceLock::new(),
            nodes: topology
                .nodes()
                .map(|n| {
                    (
                        n.id.get(),
                        (n.dc.as_str().to_owned(), n.raft_addr.to_string()),
                    )
                })
                .collect(),
        }
    }

    /// From now on, RPCs to other datacenters ride `mesh`; requests arriving over it are
    /// answered by `grt` (or passed on over TCP to the node of this datacenter they are for).
    pub fn attach(self: &Arc<Self>, mesh: &Mesh, grt: Grt) {
        let _ = self.mesh.set(mesh.clone());
        let transport = self.clone();
        let own_id = grt.id();
        mesh.serve_raft(Arc::new(move |request: Bytes| {
            let grt = grt.clone();
            let transport = transport.clone();
            Box::pin(async move {
                let Some((target, frame)) = split_target(&request) else {
                    return Vec::new();
                };
                if target == own_id {
                    return grt.handle(frame).await;
                }
                let Some((_, addr)) = transport.nodes.get(&target) else {
                    return Vec::new();
                };
                transport
                    .tcp
                    .call(target, addr, frame.to_vec(), RELAY_DEADLINE)
                    .await
                    .unwrap_or_default()
            })
        }));
    }
}

/// How long a node that received a Raft request over a bridge waits for the node of its DC the
/// request is for.
const RELAY_DEADLINE: Duration = Duration::from_secs(2);

/// A Raft request over a bridge: the target node id (8 bytes, big-endian), then the frame.
fn split_target(request: &[u8]) -> Option<(u64, &[u8])> {
    let (id, frame) = request.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*id), frame))
}

#[async_trait::async_trait]
impl Transport for MeshTransport {
    async fn call(
        &self,
        target: u64,
        addr: &str,
        frame: Vec<u8>,
        deadline: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        if let Some(mesh) = self.mesh.get()
            && let Some((dc, _)) = self.nodes.get(&target)
            && *dc != self.own_dc
        {
            let mut request = Vec::with_capacity(8 + frame.len());
            request.extend_from_slice(&target.to_be_bytes());
            request.extend_from_slice(&frame);
            return mesh
                .raft_call(dc, Bytes::from(request), deadline)
                .await
                .map(|reply| reply.to_vec())
                .map_err(|reason| TransportError::Unreachable {
                    target,
                    addr: addr.to_owned(),
                    reason,
                });
        }
        self.tcp.call(target, addr, frame, deadline).await
    }
}

/// Routes what the bridges deliver, for as long as the node runs.
pub fn follow_inbound(
    node: &Arc<Node>,
    mut inbound: UnboundedReceiver<Inbound>,
) -> tokio::task::JoinHandle<()> {
    let node = node.clone();
    tokio::spawn(async move {
        while let Some(inbound) = inbound.recv().await {
            node.route_from_mesh(inbound).await;
        }
    })
}

fn kind_of(kind: StanzaKind) -> MeshKind {
    match kind {
        StanzaKind::Message => MeshKind::Message,
        StanzaKind::Presence => MeshKind::Presence,
        StanzaKind::Iq => MeshKind::Iq,
    }
}

impl Node {
    /// The datacenter a user lives in when it is not this one (and bridges run), with the
    /// routing table index the answer reflects.
    pub fn remote_home(&self, user: &BareJid) -> Option<(String, u64)> {
        self.mesh.get()?;
        // Asked for every stanza to a user of ours: one read of the table, and a copy of the
        // DC's name only when the stanza leaves.
        self.grt.reader().with(|t| {
            let lookup = t.user_home(user);
            let home = lookup.home?;
            if t.dc_id(&self.config.cluster.dc) == Some(home) {
                return None;
            }
            Some((t.dc(home)?.name.clone(), lookup.as_of))
        })
    }

    /// Sends `stanza` to datacenter `dc` over its bridge; bounces it when the bridge refuses.
    pub async fn route_to_dc(
        self: &Arc<Self>,
        stanza: Stanza,
        to: &Jid,
        dc: &str,
        grt_index: u64,
        relayed: Option<(String, u8)>,
    ) {
        let Some(mesh) = self.mesh.get() else {
            return self
                .bounce(&stanza, StanzaCondition::ServiceUnavailable)
                .await;
        };
        let route = Route {
            from: stanza.from().unwrap_or_default().to_owned(),
            to: to.to_string(),
            kind: kind_of(stanza.kind),
            grt_index,
        };
        let result = match relayed {
            None => mesh.send(dc, route, stanza.raw().clone()),
            Some((origin, hops)) => mesh.forward(dc, route, stanza.raw().clone(), origin, hops),
        };
        match result {
            Ok(()) => self.metrics.mesh_sent(),
            Err(e) => {
                tracing::debug!(%dc, error = %e, "stanza not sent over the mesh");
                let condition = match e {
                    SendError::QueueFull { .. } => StanzaCondition::ResourceConstraint,
                    SendError::Down { .. } => StanzaCondition::RemoteServerTimeout,
                    SendError::UnknownDc(_) => StanzaCondition::ServiceUnavailable,
                };
                self.bounce(&stanza, condition).await;
            }
        }
    }

    /// A stanza that came over a bridge: delivered here when its user lives here (or has no
    /// home), forwarded by this node's view when it lives elsewhere, bounced past the hop limit.
    pub async fn route_from_mesh(self: &Arc<Self>, inbound: Inbound) {
        self.metrics.mesh_received();
        if !matches!(
            inbound.envelope.route.kind,
            MeshKind::Message | MeshKind::Presence | MeshKind::Iq
        ) {
            return self.route_edge(inbound).await;
        }
        let envelope = inbound.envelope;
        let stanza = match Stanza::from_frame(envelope.stanza.clone()) {
            Ok(stanza) => stanza,
            Err(e) => {
                tracing::warn!(peer = %inbound.peer, error = ?e, "unreadable stanza from the mesh dropped");
                return;
            }
        };
        let to = stanza.to().and_then(|t| Jid::new(t).ok());
        if let Some(to) = &to
            && to.node().is_some()
            && self.remote_home(&to.to_bare()).is_some()
            && self.grt.reader().with(|t| t.applied_index()) < envelope.route.grt_index
        {
            // This node would send it on, but the sender decided with a newer table (a move
            // it already saw, say): catch up first, so an older view does not undo a newer one.
            if let Err(e) = self
                .grt
                .wait_applied(envelope.route.grt_index, CATCH_UP_WAIT)
                .await
            {
                tracing::debug!(error = %e, "routing table behind the sender's view");
            }
        }
        if let Some(to) = &to
            && to.node().is_some()
            && let Some((dc, index)) = self.remote_home(&to.to_bare())
        {
            let hops = envelope.hops.saturating_add(1);
            if hops >= MAX_HOPS || dc == inbound.peer && index <= envelope.route.grt_index {
                tracing::info!(to = %to, %dc, hops, "stale route past the hop limit; bounced");
                return self
                    .bounce(&stanza, StanzaCondition::RemoteServerNotFound)
                    .await;
            }
            return self
                .route_to_dc(stanza, to, &dc, index, Some((envelope.origin, hops)))
                .await;
        }
        self.route_here(stanza).await;
    }
}
