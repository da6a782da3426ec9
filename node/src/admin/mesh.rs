//! The `mesh` category: this node's view of the global routing table's Raft group, and where
//! the table says a user lives.

use async_graphql::{Context, Object, Result, SimpleObject};
use jid::BareJid;

use super::error::{AdminError, AdminResult, graphql};
use super::schema::node;
use crate::node::Node;

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

fn status(node: &Node) -> MeshStatus {
    let status = node.grt.status();
    let members = |map: std::collections::BTreeMap<u64, tern_raft_store::Member>| {
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
}
