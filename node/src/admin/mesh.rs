//! The `mesh` category: this node's view of the global routing table's Raft group, and where
//! the table says a user lives.

use async_graphql::{Context, Object, Result, SimpleObject};
use jid::BareJid;
use tern_raft_store::{Command, Member};

use super::error::{AdminError, AdminResult, graphql};
use super::schema::node;
use crate::node::Node;
use crate::rehome::RehomeError;
use std::sync::Arc;

/// A member of the routing table's Raft group.
#[derive(Debug, SimpleObject)]
pub(crate) struct RaftMember {
    /// Raft node id.
    id: u64,
    /// Its datacenter.
    dc: String,
    /// Where it answers Raft RPCs (empty for a single node).
    address: String,
}

/// A bridge to another datacenter, as this node sees it.
#[derive(Debug, SimpleObject)]
pub(crate) struct BridgeStatus {
    /// The peer datacenter.
    peer: String,
    /// Whether the bridge is up.
    connected: bool,
    /// Its round-trip time in milliseconds, when up.
    rtt_ms: Option<f64>,
    /// Envelopes waiting for the peer's acknowledgement.
    queued: u64,
    /// Of those, the envelopes sent on the current connection (the rest wait to be sent).
    in_flight: u64,
    /// Connections made so far.
    connects: u64,
    /// Seconds since the peer became unreachable, if it is.
    unreachable_seconds: Option<f64>,
}

/// This node's view of the group.
#[derive(Debug, SimpleObject)]
pub(crate) struct MeshStatus {
    /// This node's Raft id.
    node_id: u64,
    /// This node's datacenter.
    dc: String,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    role: String,
    /// The leader this node knows of.
    leader: Option<u64>,
    /// The current term.
    term: u64,
    /// The last log index held here.
    last_log_index: u64,
    /// The last index applied to the table here.
    applied_index: u64,
    /// The last index the current snapshot covers.
    snapshot_index: Option<u64>,
    /// Voting members.
    voters: Vec<RaftMember>,
    /// Non-voting members.
    learners: Vec<RaftMember>,
    /// Users in the table.
    users: u64,
    /// Datacenters in the table's registry.
    datacenters: Vec<String>,
    /// This datacenter's bridges to the others (empty without a mesh).
    bridges: Vec<BridgeStatus>,
}

/// Where a user lives.
#[derive(Debug, SimpleObject)]
pub(crate) struct UserHome {
    /// The bare JID.
    jid: String,
    /// Its home datacenter.
    dc: String,
    /// The log index that last changed the entry.
    version: u64,
    /// The log index the table reflected when it answered.
    as_of: u64,
}

/// Read-only `mesh` queries.
pub(crate) struct MeshQuery;

#[Object]
impl MeshQuery {
    /// This node's view of the routing table's Raft group.
    async fn status(&self, ctx: &Context<'_>) -> Result<MeshStatus> {
        graphql(Ok(status(node(ctx)?)))
    }

    /// The home datacenter of a user, from this node's copy of the table (a local read; its
    /// `asOf` says how current it is).
    async fn user_home(&self, ctx: &Context<'_>, jid: String) -> Result<UserHome> {
        graphql(user_home(node(ctx)?, &jid))
    }
}

/// What a membership change did.
#[derive(Debug, SimpleObject)]
pub(crate) struct MeshPayload {
    /// The log index that committed it.
    index: u64,
    /// What was done, in words.
    message: String,
}

/// `mesh` commands that change the routing table's group.
pub(crate) struct MeshMutation;

#[Object]
impl MeshMutation {
    /// Adds a node as a non-voting member (it catches up from the leader, by snapshot if far
    /// behind).
    async fn add_learner(
        &self,
        ctx: &Context<'_>,
        node: u64,
        dc: String,
        address: String,
    ) -> Result<MeshPayload> {
        graphql(add_learner(super::schema::node(ctx)?, node, &dc, &address).await)
    }

    /// Makes learners voters.
    async fn promote(&self, ctx: &Context<'_>, nodes: Vec<u64>) -> Result<MeshPayload> {
        graphql(change(node(ctx)?, Change::Promote, &nodes).await)
    }

    /// Makes voters learners.
    async fn demote(&self, ctx: &Context<'_>, nodes: Vec<u64>) -> Result<MeshPayload> {
        graphql(change(node(ctx)?, Change::Demote, &nodes).await)
    }

    /// Removes members from the group (voters are demoted first).
    async fn remove_nodes(&self, ctx: &Context<'_>, nodes: Vec<u64>) -> Result<MeshPayload> {
        graphql(change(node(ctx)?, Change::Remove, &nodes).await)
    }

    /// Removes a datacenter from the table's registry; refused while users, rooms or domains
    /// refer to it.
    async fn remove_dc(&self, ctx: &Context<'_>, dc: String) -> Result<MeshPayload> {
        graphql(remove_dc(node(ctx)?, &dc).await)
    }

    /// Moves an account's home, with its data, to datacenter `dc` (done by its current home;
    /// its sessions end and its clients log in again).
    async fn rehome_user(
        &self,
        ctx: &Context<'_>,
        jid: String,
        dc: String,
    ) -> Result<RehomePayload> {
        graphql(rehome_user(node(ctx)?, &jid, &dc).await)
    }
}

/// What `rehomeUser` did.
#[derive(Debug, SimpleObject)]
pub(crate) struct RehomePayload {
    /// The account.
    jid: String,
    /// The datacenter it lived in.
    from: String,
    /// The datacenter it lives in now.
    dc: String,
    /// Offline messages moved with it.
    offline_messages: u64,
    /// Stanzas routed to it during the move, held and then sent to the new home.
    held_stanzas: u64,
    /// What was done, in words.
    message: String,
}

async fn rehome_user(node: &Arc<Node>, jid: &str, dc: &str) -> AdminResult<RehomePayload> {
    let user = BareJid::new(jid)
        .ok()
        .filter(|j| j.node().is_some())
        .ok_or_else(|| AdminError::BadInput(format!("invalid user JID {jid:?}")))?;
    let done = node.rehome(&user, dc).await.map_err(|e| match e {
        RehomeError::NotFound(_) => AdminError::NotFound(e.to_string()),
        RehomeError::UnknownDc(_) => AdminError::BadInput(e.to_string()),
        RehomeError::InProgress(_) | RehomeError::NoMesh => AdminError::Conflict(e.to_string()),
        RehomeError::Failed(_) => AdminError::Unavailable(e.to_string()),
    })?;
    let message = if done.from == dc {
        format!("{user} already lives in {dc}")
    } else {
        format!(
            "moved {user} from {} to {dc} with {} offline messages",
            done.from, done.offline
        )
    };
    Ok(RehomePayload {
        jid: user.to_string(),
        from: done.from,
        dc: dc.to_owned(),
        offline_messages: done.offline,
        held_stanzas: done.held,
        message,
    })
}

/// A membership change by node ids.
#[derive(Debug, Clone, Copy)]
enum Change {
    Promote,
    Demote,
    Remove,
}

fn check_ids(ids: &[u64]) -> AdminResult<()> {
    if ids.is_empty() || ids.contains(&0) {
        return Err(AdminError::BadInput(
            "name at least one node, by its Raft id (ids start at 1)".to_owned(),
        ));
    }
    Ok(())
}

fn list(ids: &[u64]) -> String {
    let names: Vec<String> = ids.iter().map(|id| format!("node {id}")).collect();
    names.join(", ")
}

async fn add_learner(node: &Node, id: u64, dc: &str, address: &str) -> AdminResult<MeshPayload> {
    check_ids(&[id])?;
    let index = node
        .grt
        .add_learner(id, Member::new(dc, address))
        .await
        .map_err(|e| AdminError::from_grt("addLearner", e))?;
    tracing::info!(
        node = id,
        dc,
        address,
        "learner added through the admin API"
    );
    Ok(MeshPayload {
        index,
        message: format!("node {id} ({dc} {address}) is a learner"),
    })
}

async fn change(node: &Node, change: Change, ids: &[u64]) -> AdminResult<MeshPayload> {
    check_ids(ids)?;
    let grt = &node.grt;
    let (result, operation, message) = match change {
        Change::Promote => (
            grt.promote(ids).await,
            "promote",
            format!("{} now vote", list(ids)),
        ),
        Change::Demote => (
            grt.demote(ids).await,
            "demote",
            format!("{} are learners now", list(ids)),
        ),
        Change::Remove => (
            grt.remove(ids).await,
            "removeNodes",
            format!("removed {} from the group", list(ids)),
        ),
    };
    let index = result.map_err(|e| AdminError::from_grt(operation, e))?;
    tracing::info!(
        ?change,
        ?ids,
        index,
        "membership changed through the admin API"
    );
    Ok(MeshPayload { index, message })
}

async fn remove_dc(node: &Node, dc: &str) -> AdminResult<MeshPayload> {
    let status = node.grt.status();
    let members: Vec<u64> = status
        .voters
        .iter()
        .chain(&status.learners)
        .filter(|(_, m)| m.dc == dc)
        .map(|(id, _)| *id)
        .collect();
    if !members.is_empty() {
        return Err(AdminError::Conflict(format!(
            "datacenter {dc} still has members in the routing table's group ({}): remove them first",
            list(&members)
        )));
    }
    let applied = node
        .grt
        .write(Command::RemoveDc {
            name: dc.to_owned(),
        })
        .await
        .map_err(|e| AdminError::from_grt("removeDc", e))?;
    let message = if applied.changed {
        format!("removed datacenter {dc}")
    } else {
        format!("datacenter {dc} was not in the registry")
    };
    Ok(MeshPayload {
        index: applied.index,
        message,
    })
}

fn status(node: &Node) -> MeshStatus {
    let status = node.grt.status();
    let members = |map: std::collections::BTreeMap<u64, Member>| {
        map.into_iter()
            .map(|(id, m)| RaftMember {
                id,
                dc: m.dc,
                address: m.addr,
            })
            .collect()
    };
    let (users, datacenters) = node.grt.reader().with(|t| {
        (
            t.user_count() as u64,
            t.dcs().map(|dc| dc.name.clone()).collect(),
        )
    });
    MeshStatus {
        node_id: status.id,
        dc: node.config.cluster.dc.clone(),
        role: status.role.to_owned(),
        leader: status.leader,
        term: status.term,
        last_log_index: status.last_log_index,
        applied_index: status.applied_index,
        snapshot_index: status.snapshot_index,
        voters: members(status.voters),
        learners: members(status.learners),
        users,
        datacenters,
        bridges: node
            .mesh
            .get()
            .map(|mesh| {
                mesh.status()
                    .into_iter()
                    .map(|link| BridgeStatus {
                        peer: link.dc,
                        connected: link.connected,
                        rtt_ms: link.rtt.map(|d| d.as_secs_f64() * 1e3),
                        queued: link.queued as u64,
                        in_flight: link.in_flight as u64,
                        connects: link.connects,
                        unreachable_seconds: link.unreachable_for.map(|d| d.as_secs_f64()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn user_home(node: &Node, jid: &str) -> AdminResult<UserHome> {
    let bare = BareJid::new(jid)
        .ok()
        .filter(|j| j.node().is_some())
        .ok_or_else(|| AdminError::BadInput(format!("invalid user JID {jid:?}")))?;
    let reader = node.grt.reader();
    let lookup = reader.user_home(&bare);
    let dc = lookup
        .home
        .and_then(|id| reader.dc_name(id))
        .ok_or_else(|| {
            AdminError::NotFound(format!(
                "{bare} has no home in the routing table (as of index {})",
                lookup.as_of
            ))
        })?;
    Ok(UserHome {
        jid: bare.to_string(),
        dc,
        version: lookup.version,
        as_of: lookup.as_of,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::{create_account, test_node};

    #[tokio::test]
    async fn status_shows_the_single_voter_and_homes_are_read_locally() {
        let (node, _dir) = test_node("mesh-status").await;
        let status = status(&node);
        assert_eq!(status.role, "leader");
        assert_eq!(status.leader, Some(1));
        assert_eq!(status.voters.len(), 1);
        assert!(status.learners.is_empty());
        assert_eq!(status.datacenters, ["local"]);

        create_account(&node, "ann@localhost").await;
        let home = user_home(&node, "ann@localhost").unwrap();
        assert_eq!(home.dc, "local");
        assert!(home.version > 0 && home.as_of >= home.version);
        assert_eq!(
            user_home(&node, "nobody@localhost").unwrap_err().code(),
            "NOT_FOUND"
        );
        assert_eq!(
            user_home(&node, "localhost").unwrap_err().code(),
            "BAD_INPUT"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn membership_changes_go_through_the_admin_api() {
        use crate::admin::tests::{TOKEN, blocking, start_admin};
        use crate::ctl::AdminClient;
        let (node, _dir) = test_node("mesh-membership").await;
        let (address, _task) = start_admin(&node).await;
        blocking(move || {
            let c = AdminClient::with_token(address, TOKEN, "test");
            // Node 7 is not a member: promoting it is refused with a clear error.
            let e = c
                .graphql(
                    "mutation { mesh { promote(nodes: [7]) { index message } } }",
                    serde_json::json!({}),
                )
                .unwrap_err();
            assert_eq!(e.code(), Some("CONFLICT"), "{e}");
            // The node's own datacenter still has a member: this node.
            let e = c
                .graphql(
                    "mutation { mesh { removeDc(dc: \"local\") { index message } } }",
                    serde_json::json!({}),
                )
                .unwrap_err();
            assert_eq!(e.code(), Some("CONFLICT"), "{e}");
            let data = c
                .graphql(
                    "mutation { mesh { removeDc(dc: \"nowhere\") { index message } } }",
                    serde_json::json!({}),
                )
                .unwrap();
            let message = data["mesh"]["removeDc"]["message"].to_string();
            assert!(message.contains("was not in the registry"), "{message}");
        })
        .await;
    }
}
