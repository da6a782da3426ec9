//! The `session` category: list and count the bound resources of this node, kick one.

use std::sync::Arc;
use std::time::SystemTime;

use async_graphql::{Context, Object, Result, SimpleObject};
use tern_xmpp_proto::{StreamCondition, StreamError};

use super::args::{full_jid, served_domain};
use super::error::{AdminError, AdminResult, graphql};
use super::schema::node;
use crate::node::Node;
use crate::sm::Session;

/// The reason a kicked client is given when the admin gives none.
const DEFAULT_KICK_REASON: &str = "kicked by the administrator";

/// One bound resource.
#[derive(Debug, SimpleObject)]
#[graphql(name = "Session")]
pub(crate) struct SessionInfo {
    /// The full JID.
    jid: String,
    /// The account's bare JID.
    user: String,
    /// The resource.
    resource: String,
    /// How the client connected: `c2s_starttls`, `c2s_tls`, `websocket` or `bosh`.
    transport: String,
    /// The client's address, `ip:port`.
    peer: String,
    /// The datacenter the client is connected to: this one, or for a session homed here whose
    /// client connected elsewhere (an edge session), that one.
    datacenter: String,
    /// When the resource was bound, RFC 3339 in UTC.
    connected_since: String,
    /// Seconds since the resource was bound.
    connected_seconds: u64,
    /// Whether the client is available (sent available presence).
    available: bool,
    /// The priority of its presence.
    priority: i32,
}

impl SessionInfo {
    fn of(session: &Session, own_dc: &str, now: SystemTime) -> Self {
        let presence = session.presence();
        Self {
            jid: session.jid.to_string(),
            user: session.jid.to_bare().to_string(),
            resource: session.jid.resource().to_string(),
            transport: session.transport.as_str().to_owned(),
            peer: session.peer.to_string(),
            datacenter: session.edge.as_deref().unwrap_or(own_dc).to_owned(),
            connected_since: humantime::format_rfc3339_seconds(session.started).to_string(),
            connected_seconds: now
                .duration_since(session.started)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            available: presence.available.is_some(),
            priority: presence.priority.into(),
        }
    }
}

/// What `kickUser` did.
#[derive(Debug, SimpleObject)]
pub(crate) struct KickPayload {
    /// The full JID of the kicked session.
    jid: String,
    /// A sentence saying what was done.
    message: String,
}

/// `query { session { ... } }`.
pub(crate) struct SessionQuery;

#[Object]
impl SessionQuery {
    /// The sessions of this node, or only those of `domain`, sorted by JID.
    async fn list_sessions(
        &self,
        ctx: &Context<'_>,
        domain: Option<String>,
    ) -> Result<Vec<SessionInfo>> {
        graphql(list_sessions(node(ctx)?, domain.as_deref()))
    }

    /// The number of sessions of this node, or only of `domain`.
    async fn count_sessions(&self, ctx: &Context<'_>, domain: Option<String>) -> Result<u64> {
        graphql(count_sessions(node(ctx)?, domain.as_deref()))
    }
}

/// `mutation { session { ... } }`.
pub(crate) struct SessionMutation;

#[Object]
impl SessionMutation {
    /// Ends the session `user` (a full JID) with a `<policy-violation/>` stream error whose text
    /// is `reason`.
    async fn kick_user(
        &self,
        ctx: &Context<'_>,
        user: String,
        reason: Option<String>,
    ) -> Result<KickPayload> {
        graphql(kick_user(node(ctx)?, &user, reason))
    }
}

fn list_sessions(node: &Arc<Node>, domain: Option<&str>) -> AdminResult<Vec<SessionInfo>> {
    let domain = domain.map(|d| served_domain(node, d)).transpose()?;
    let now = SystemTime::now();
    Ok(node
        .sm
        .list(domain.as_deref())
        .iter()
        .map(|s| SessionInfo::of(s, &node.config.cluster.dc, now))
        .collect())
}

fn count_sessions(node: &Arc<Node>, domain: Option<&str>) -> AdminResult<u64> {
    let domain = domain.map(|d| served_domain(node, d)).transpose()?;
    Ok(node.sm.count(domain.as_deref()) as u64)
}

fn kick_user(node: &Arc<Node>, user: &str, reason: Option<String>) -> AdminResult<KickPayload> {
    let jid = full_jid(user)?;
    let Some(session) = node.sm.get(&jid) else {
        return Err(AdminError::NotFound(format!("no session {jid}")));
    };
    let reason = reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_KICK_REASON.to_owned());
    session.close(StreamError::new(StreamCondition::PolicyViolation).with_text(reason));
    tracing::info!(jid = %jid, "session kicked through the admin API");
    Ok(KickPayload {
        message: format!("kicked {jid}"),
        jid: jid.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::{test_node, test_session};

    #[tokio::test]
    async fn lists_and_counts_sessions() {
        let (node, _dir) = test_node("session-list").await;
        let (_a, _ra) = test_session(&node, "alice@localhost/phone");
        let (_b, _rb) = test_session(&node, "bob@localhost/desk");
        let listed = list_sessions(&node, None).unwrap();
        let jids: Vec<&str> = listed.iter().map(|s| s.jid.as_str()).collect();
        assert_eq!(jids, ["alice@localhost/phone", "bob@localhost/desk"]);
        assert_eq!(listed[0].user, "alice@localhost");
        assert_eq!(listed[0].resource, "phone");
        assert_eq!(listed[0].transport, "c2s_starttls");
        assert_eq!(listed[0].peer, "127.0.0.1:40000");
        assert!(listed[0].connected_since.ends_with('Z'));
        assert_eq!(count_sessions(&node, Some("localhost")).unwrap(), 2);
        assert_eq!(
            count_sessions(&node, Some("example.org"))
                .unwrap_err()
                .code(),
            "UNKNOWN_DOMAIN"
        );
    }

    #[tokio::test]
    async fn kick_closes_the_session_with_the_reason() {
        let (node, _dir) = test_node("session-kick").await;
        let (session, _rx) = test_session(&node, "alice@localhost/phone");
        let done = kick_user(&node, "alice@localhost/phone", Some("bye".into())).unwrap();
        assert_eq!(done.jid, "alice@localhost/phone");
        let error = session.closed().await;
        assert_eq!(error.condition, StreamCondition::PolicyViolation);
        assert_eq!(error.text.as_deref(), Some("bye"));
    }

    #[tokio::test]
    async fn kicking_an_unknown_session_is_not_found() {
        let (node, _dir) = test_node("session-kick-missing").await;
        let e = kick_user(&node, "ghost@localhost/x", None).unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
        let e = kick_user(&node, "ghost@localhost", None).unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
    }
}
