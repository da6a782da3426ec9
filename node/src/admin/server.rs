//! The `server` category: the node's status, and stopping it.

use std::sync::Arc;
use std::time::SystemTime;

use async_graphql::{Context, Object, Result, SimpleObject};

use super::error::{AdminError, AdminResult, graphql};
use super::schema::node;
use crate::node::Node;

/// The node's status.
#[derive(Debug, SimpleObject)]
pub(crate) struct ServerStatus {
    /// `running`, or `stopping` once a shutdown has begun.
    status: String,
    /// The name of this node: `tern@<host name>`.
    node_name: String,
    /// The version of Tern.
    version: String,
    /// Seconds since the node started.
    uptime_seconds: u64,
    /// When the node started, RFC 3339 in UTC.
    started_at: String,
    /// The XMPP domains served.
    domains: Vec<String>,
    /// Sessions (bound resources) on this node now.
    sessions_online: u64,
    /// Accounts, over every domain served.
    registered_users: u64,
    /// Where this admin API listens.
    admin_address: Option<String>,
    /// The data directory.
    data_dir: String,
}

/// `query { server { ... } }`.
pub(crate) struct ServerQuery;

#[Object]
impl ServerQuery {
    /// The node's status.
    async fn status(&self, ctx: &Context<'_>) -> Result<ServerStatus> {
        graphql(status(node(ctx)?).await)
    }
}

/// `mutation { server { ... } }`.
pub(crate) struct ServerMutation;

#[Object]
impl ServerMutation {
    /// Begins a graceful shutdown: listeners stop, sessions are closed with
    /// `<system-shutdown/>`, and the process exits. Answers before the admin API goes down.
    async fn stop(&self, ctx: &Context<'_>) -> Result<String> {
        graphql(stop(node(ctx)?))
    }
}

async fn status(node: &Arc<Node>) -> AdminResult<ServerStatus> {
    let mut registered_users = 0;
    for domain in &node.config.general.domains {
        registered_users += node
            .storage
            .count_users(domain)
            .await
            .map_err(|e| AdminError::internal("status", &e))?;
    }
    let uptime = node.started.elapsed();
    let started_at = SystemTime::now()
        .checked_sub(uptime)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(ServerStatus {
        status: if node.is_shutting_down() {
            "stopping"
        } else {
            "running"
        }
        .to_owned(),
        node_name: format!("tern@{}", host_name()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: uptime.as_secs(),
        started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
        domains: node.config.general.domains.clone(),
        sessions_online: node.sm.count(None) as u64,
        registered_users,
        admin_address: node.admin_address.get().map(ToString::to_string),
        data_dir: node.data_dir().display().to_string(),
    })
}

fn stop(node: &Arc<Node>) -> AdminResult<String> {
    tracing::info!("shutdown requested through the admin API");
    node.shutdown.send_replace(true);
    Ok("the node is stopping".to_owned())
}

/// This machine's host name, or `localhost` when it cannot be read.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::{create_account, test_node, test_session};

    #[tokio::test]
    async fn status_reports_the_node() {
        let (node, _dir) = test_node("server-status").await;
        create_account(&node, "alice@localhost").await;
        let (_s, _rx) = test_session(&node, "alice@localhost/phone");
        let s = status(&node).await.unwrap();
        assert_eq!(s.status, "running");
        assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(s.domains, ["localhost"]);
        assert_eq!(s.sessions_online, 1);
        assert_eq!(s.registered_users, 1);
        assert!(s.node_name.starts_with("tern@"));
        assert!(s.started_at.ends_with('Z'));
        assert!(s.uptime_seconds < 60);
    }

    #[tokio::test]
    async fn stop_flips_the_shutdown_flag() {
        let (node, _dir) = test_node("server-stop").await;
        let watch = node.shutdown.subscribe();
        assert!(!node.is_shutting_down());
        stop(&node).unwrap();
        assert!(node.is_shutting_down());
        assert!(watch.has_changed().unwrap());
        assert_eq!(status(&node).await.unwrap().status, "stopping");
    }
}
