//! Builds a node from its configuration and runs it until shutdown (`tern serve`).
//!
//! Order: data directory → storage (the redb file, or PostgreSQL with its pending migrations
//! applied) → TLS material → admin token → [`Node`] → client listeners → admin listener.
//! Every listener is bound before the node reports that it is up, so a port already in use
//! fails the start with a clear error.

use std::sync::Arc;

use anyhow::Context as _;
use tern_config::{Config, StorageBackend};
use tokio::sync::Semaphore;

use crate::c2s::C2sServer;
use crate::node::Node;
use crate::storage::{PostgresStorage, RedbStorage, SharedStorage};

/// A started node: its shared state and the tasks serving it.
#[derive(Debug)]
pub struct Running {
    /// The node.
    pub node: Arc<Node>,
    /// The bound client listener addresses, in configuration order.
    pub c2s_addresses: Vec<std::net::SocketAddr>,
    /// The bound HTTP listener addresses (WebSocket, BOSH), in configuration order.
    pub http_addresses: Vec<std::net::SocketAddr>,
    tasks: tokio::task::JoinSet<()>,
}

impl Running {
    /// Waits until the node is told to stop (admin `server stop`, or [`Self::stop`]), then
    /// until its listeners and connections have wound down (at most a few seconds).
    pub async fn wait(mut self) {
        let mut shutdown = self.node.shutdown.subscribe();
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { break },
                () = &mut deadline => break,
            }
        }
        // Connection tasks flush their `<system-shutdown/>` errors; give them a moment.
        let mut waited = 0;
        while self.node.sm.count(None) > 0 && waited < 20 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            waited += 1;
        }
        self.node.grt.shutdown().await;
    }

    /// Asks the node to stop.
    pub fn stop(&self) {
        self.node.shutdown.send_replace(true);
    }
}

/// Opens the configured storage: the redb file, or the PostgreSQL database with the migrations
/// it has not had yet applied.
async fn open_storage(config: &Config) -> anyhow::Result<SharedStorage> {
    match (config.storage.backend, &config.storage.postgres) {
        (StorageBackend::Postgres, Some(settings)) => {
            let storage = PostgresStorage::open(settings)
                .await
                .with_context(|| format!("cannot open the database {}", settings.redacted_url()))?;
            Ok(Arc::new(storage))
        }
        (StorageBackend::Postgres, None) => {
            anyhow::bail!("storage.backend is \"postgres\" but the configuration has no url")
        }
        (StorageBackend::Redb, _) => {
            let storage = RedbStorage::open(&config.storage.path).with_context(|| {
                format!("cannot open database {}", config.storage.path.display())
            })?;
            Ok(Arc::new(storage))
        }
    }
}

/// Starts a node: binds every listener and spawns their tasks.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let data_dir = config.general.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let storage = open_storage(&config).await?;
    let tls = crate::tls::load_or_create(
        &data_dir,
        config.tls.cert_file.as_deref(),
        config.tls.key_file.as_deref(),
        &config.general.domains,
    )
    .context("cannot set up TLS")?;
    if tls.self_signed {
        tracing::info!(cert = %tls.cert_path.display(), "using a self-signed certificate");
    }
    let token = crate::admin::load_or_create_token(&data_dir, config.admin.token.as_deref())
        .context("cannot set up the admin token")?;
    let opened = crate::grt::open(&config).await?;
    let node = Arc::new(Node::new(config.clone(), storage, opened.grt, token));
    crate::grt::declare(&node, opened.topology.as_ref()).await?;
    let with_lists = crate::modules::privacy::load(&node)
        .await
        .context("cannot load the privacy lists")?;
    if with_lists > 0 {
        tracing::info!(accounts = with_lists, "privacy lists loaded");
    }
    crate::modules::mam::load(&node)
        .await
        .context("cannot load the archive preferences")?;
    crate::modules::muc::load(&node).await;
    let limit = Arc::new(Semaphore::new(config.limits.max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(pruner) = crate::modules::mam::prune_periodically(&node) {
        let mut shutdown = node.shutdown.subscribe();
        tasks.spawn(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
            pruner.abort();
        });
    }
    tasks.spawn({
        let follower = crate::grt::follow_changes(&node);
        async move {
            let _ = follower.await;
        }
    });
    if let Some(topology) = &opened.topology
        && let Some((mesh, inbound)) = crate::mesh::start(&config, topology)?
    {
        let follower = crate::mesh::follow_inbound(&node, inbound);
        if let Some(transport) = &opened.raft_transport {
            transport.attach(&mesh, node.grt.clone());
        }
        let answering = Arc::downgrade(&node);
        mesh.serve_calls(Arc::new(move |request| {
            let node = answering.upgrade();
            Box::pin(async move {
                match node {
                    Some(node) => node.answer_call(&request).await,
                    None => Vec::new(),
                }
            })
        }));
        let stopper = mesh.clone();
        let _ = node.mesh.set(mesh);
        node.announce_epoch();
        let watcher = crate::edge::watch_peers(&node);
        let mut shutdown = node.shutdown.subscribe();
        tasks.spawn(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
            stopper.stop();
            follower.abort();
            watcher.abort();
        });
    }
    if let (Some(raft_listener), Some(topology)) = (opened.listener, opened.topology) {
        let reconcile = crate::grt::reconcile_membership(node.grt.clone(), topology);
        let mut shutdown = node.shutdown.subscribe();
        tasks.spawn(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
            raft_listener.abort();
            reconcile.abort();
        });
    }
    let mut c2s_addresses = Vec::new();
    for listener in &config.listen.c2s {
        let server = C2sServer::bind(&node, listener, tls.server_config.clone())
            .await
            .with_context(|| format!("cannot listen on {}", listener.address))?;
        let address = server.local_addr()?;
        tracing::info!(%address, tls = %listener.tls, "c2s listener up");
        c2s_addresses.push(address);
        tasks.spawn(server.run(node.clone(), limit.clone()));
    }
    let mut http_addresses = Vec::new();
    for listener in &config.listen.http {
        let server = crate::http::HttpServer::bind(listener, tls.server_config.clone())
            .await
            .with_context(|| format!("cannot listen on {} (http)", listener.address))?;
        let address = server.local_addr()?;
        let tls = if listener.tls == tern_config::HttpTls::Direct {
            "direct"
        } else {
            "none"
        };
        tracing::info!(%address, tls, "http listener up");
        http_addresses.push(address);
        tasks.spawn(server.run(node.clone(), limit.clone()));
    }
    if config.admin.enabled {
        let listener = tokio::net::TcpListener::bind(config.admin.address)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", config.admin.address))?;
        tracing::info!(address = %listener.local_addr()?, "admin listener up");
        let node = node.clone();
        tasks.spawn(async move {
            if let Err(e) = crate::admin::serve(node, listener).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
    }
    tracing::info!(domains = ?config.general.domains, "tern is up");
    Ok(Running {
        node,
        c2s_addresses,
        http_addresses,
        tasks,
    })
}

/// `tern serve`: runs until SIGINT/SIGTERM or an admin `server stop`.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // The handlers are installed before any listener is up: a SIGTERM that arrives as soon as
    // the node accepts connections must stop it cleanly, not kill it with the default action.
    let signals = Signals::install();
    let running = start(config).await?;
    let node = running.node.clone();
    tokio::spawn(async move {
        signals.wait().await;
        tracing::info!("shutting down");
        node.shutdown.send_replace(true);
    });
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from the moment they are installed.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            async fn next(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = next(self.term) => {}
                () = next(self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
