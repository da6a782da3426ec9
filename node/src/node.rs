//! The node: the services one `tern` process runs, built in a fixed order and shared by every
//! connection task as `Arc<Node>`.
//!
//! Build order (STYLE.md §7): configuration → data directory → storage → TLS material → admin
//! token → session manager and metrics → listeners (see [`crate::server`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use jid::BareJid;
use tern_config::Config;
use tern_raft_store::Grt;
use tern_xmpp_proto::Limits;
use tern_xmpp_proto::sasl::Mechanism;
use tern_xmpp_proto::stream::DomainSet as _;
use tern_xmpp_proto::stream::{Framing, StreamConfig, TlsPolicy};
use tokio::sync::watch;

use crate::grt::Domains;
use crate::metrics::Metrics;
use crate::sm::SessionManager;
use crate::storage::SharedStorage;

/// Everything a connection task or the admin API needs.
pub struct Node {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Accounts and rosters.
    pub storage: SharedStorage,
    /// The global routing table: homes of users and rooms, domains, datacenters.
    pub grt: Grt,
    /// The domains served: static ones and the enabled dynamic ones of the routing table.
    pub domains: Domains,
    /// The bridges to the other datacenters, when the topology gives this one a bridge.
    pub mesh: std::sync::OnceLock<tern_gd_mesh::Mesh>,
    /// Bound sessions of this node.
    pub sm: SessionManager,
    /// Edge sessions: homed here and connected elsewhere, or the reverse.
    pub edges: crate::edge::Edges,
    /// Accounts being moved to another datacenter, and the stanzas held for them.
    pub moves: crate::rehome::Moves,
    /// Sessions that may be resumed (XEP-0198), attached or waiting for their client.
    pub resumptions: crate::resume::Resumptions,
    /// The MUC rooms homed here (XEP-0045).
    pub rooms: crate::modules::muc::Rooms,
    /// What the PEP services of the accounts here know of their resources' capabilities.
    pub caps: crate::modules::pep::Caps,
    /// Privacy lists and blocklists of the accounts that have any (XEP-0016, XEP-0191).
    pub privacy: crate::modules::privacy::Privacy,
    /// Archive preferences of the accounts that changed them (XEP-0313).
    pub mam_prefs: crate::modules::mam::ArchivePrefs,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// When the node started.
    pub started: Instant,
    /// The admin API token.
    pub admin_token: String,
    /// The admin listener's bound address, once it is up.
    pub admin_address: std::sync::OnceLock<SocketAddr>,
    /// Flips to `true` when the node shuts down.
    pub shutdown: watch::Sender<bool>,
    /// Domains whose removal an admin call on this node is carrying out (it deletes their data
    /// itself, to report how much).
    pub(crate) removals_in_progress: std::sync::Mutex<std::collections::HashSet<String>>,
    decoy_secret: Vec<u8>,
    next_conn_id: AtomicU64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("domains", &self.config.general.domains)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Builds the node's shared state.
    pub fn new(config: Arc<Config>, storage: SharedStorage, grt: Grt, admin_token: String) -> Self {
        let mut decoy_secret = vec![0u8; 32];
        rand::fill(&mut decoy_secret[..]);
        let (shutdown, _) = watch::channel(false);
        let domains = Domains::new(&config, grt.reader());
        Self {
            config,
            storage,
            grt,
            domains,
            mesh: std::sync::OnceLock::new(),
            sm: SessionManager::default(),
            edges: crate::edge::Edges::default(),
            moves: crate::rehome::Moves::default(),
            resumptions: crate::resume::Resumptions::default(),
            caps: crate::modules::pep::Caps::default(),
            rooms: crate::modules::muc::Rooms::default(),
            privacy: crate::modules::privacy::Privacy::default(),
            mam_prefs: crate::modules::mam::ArchivePrefs::default(),
            metrics: Metrics::default(),
            started: Instant::now(),
            admin_token,
            admin_address: std::sync::OnceLock::new(),
            shutdown,
            removals_in_progress: std::sync::Mutex::default(),
            decoy_secret,
            next_conn_id: AtomicU64::new(1),
        }
    }

    /// A new connection id.
    pub fn conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `domain` is served here (a static domain, or an enabled dynamic one).
    pub fn serves(&self, domain: &str) -> bool {
        self.domains.serves(domain)
    }

    /// Whether `jid` is a local account (the domain is served and the account exists).
    pub async fn account_exists(&self, jid: &BareJid) -> bool {
        if jid.node().is_none() || !self.serves(jid.domain().as_str()) {
            return false;
        }
        if self.sm.is_online(jid) {
            return true;
        }
        match self.storage.get_user(jid).await {
            Ok(user) => user.is_some(),
            Err(e) => {
                tracing::error!(error = %e, "account lookup failed");
                false
            }
        }
    }

    /// The stream settings of a client listener (TCP).
    pub fn stream_config(&self, tls: TlsPolicy) -> StreamConfig {
        self.stream_config_framed(tls, Framing::Stream)
    }

    /// The stream settings of a listener whose streams travel as `framing`.
    pub fn stream_config_framed(&self, tls: TlsPolicy, framing: Framing) -> StreamConfig {
        let c = &self.config;
        StreamConfig {
            domains: Arc::new(self.domains.clone()),
            tls,
            mechanisms: c
                .auth
                .mechanisms
                .iter()
                .filter_map(|m| Mechanism::from_name(m))
                .collect(),
            limits: Limits {
                max_stanza_size: c.limits.max_stanza_size,
                max_depth: c.limits.max_depth,
                max_attributes: c.limits.max_attributes,
            },
            registration: c.modules.register.enabled,
            failure_delay: c.auth.failure_delay,
            max_auth_attempts: 3,
            handshake_timeout: c.limits.handshake_timeout,
            idle_ping: c.modules.ping.idle_interval,
            ping_timeout: c.modules.ping.timeout,
            decoy_secret: self.decoy_secret.clone(),
            scram_iterations: c.auth.scram_iterations,
            csi: c.modules.csi.enabled,
            sm: c.modules.stream_management.enabled,
            sm_max_unacked: c.modules.stream_management.max_unacked,
            framing,
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.config.general.data_dir.clone()
    }

    /// Whether the node is shutting down.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}
