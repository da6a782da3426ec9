//! The GraphQL schema root. As in `mongooseimctl`, the top-level fields are categories and their
//! sub-fields are the commands: `query { account { listUsers(domain: "localhost") } }`,
//! `mutation { account { registerUser(...) { jid } } }`. Each category lives in its own module.

use std::sync::Arc;

use async_graphql::{Context, EmptySubscription, Object, Schema};

use super::account::{AccountMutation, AccountQuery};
use super::data::{
    LastMutation, LastQuery, OfflineMutation, OfflineQuery, PrivateMutation, PrivateQuery,
    VcardMutation, VcardQuery,
};
use super::domain::{DomainMutation, DomainQuery};
use super::error::{AdminError, AdminResult};
use super::mesh::{MeshMutation, MeshQuery};
use super::muc::{MucMutation, MucQuery};
use super::roster::{RosterMutation, RosterQuery};
use super::server::{ServerMutation, ServerQuery};
use super::session::{SessionMutation, SessionQuery};
use super::stanza::{StanzaMutation, StanzaQuery};
use crate::node::Node;

/// The admin schema.
pub(crate) type AdminSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Deepest query accepted (the schema itself is four levels deep).
const MAX_DEPTH: usize = 16;

/// Builds the schema; resolvers find `node` in the context data.
pub(crate) fn build(node: Arc<Node>) -> AdminSchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .data(node)
        .limit_depth(MAX_DEPTH)
        .finish()
}

/// The schema in GraphQL SDL, for documentation and tooling.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .finish()
        .sdl()
}

/// The node a resolver works on.
pub(crate) fn node<'a>(ctx: &Context<'a>) -> AdminResult<&'a Arc<Node>> {
    ctx.data::<Arc<Node>>()
        .map_err(|_| AdminError::Internal("finding the node"))
}

/// Read-only admin queries, by category.
pub(crate) struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    /// Accounts: list, count, check passwords.
    async fn account(&self) -> AccountQuery {
        AccountQuery
    }

    /// Sessions (bound resources) on this node.
    async fn session(&self) -> SessionQuery {
        SessionQuery
    }

    /// Message archives (XEP-0313): the last messages of an account.
    async fn stanza(&self) -> StanzaQuery {
        StanzaQuery
    }

    /// Rosters: list contacts, get one.
    async fn roster(&self) -> RosterQuery {
        RosterQuery
    }

    /// The node itself.
    async fn server(&self) -> ServerQuery {
        ServerQuery
    }

    /// Domains, static and dynamic.
    async fn domain(&self) -> DomainQuery {
        DomainQuery
    }

    /// The global routing table: Raft group status, users' homes.
    async fn mesh(&self) -> MeshQuery {
        MeshQuery
    }

    /// Multi-user chat (XEP-0045): rooms homed here, their occupants and archives.
    async fn muc(&self) -> MucQuery {
        MucQuery
    }

    /// Offline messages (XEP-0160): count.
    async fn offline(&self) -> OfflineQuery {
        OfflineQuery
    }

    /// vCards (XEP-0054): get.
    async fn vcard(&self) -> VcardQuery {
        VcardQuery
    }

    /// Last activity (XEP-0012): get.
    async fn last(&self) -> LastQuery {
        LastQuery
    }

    /// Private XML storage (XEP-0049): get.
    async fn private(&self) -> PrivateQuery {
        PrivateQuery
    }
}

/// Admin commands that change state, by category.
pub(crate) struct MutationRoot;

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Accounts: register, remove, change passwords.
    async fn account(&self) -> AccountMutation {
        AccountMutation
    }

    /// Sessions: kick.
    async fn session(&self) -> SessionMutation {
        SessionMutation
    }

    /// Sending messages and raw stanzas.
    async fn stanza(&self) -> StanzaMutation {
        StanzaMutation
    }

    /// Rosters: add and delete contacts, set subscriptions.
    async fn roster(&self) -> RosterMutation {
        RosterMutation
    }

    /// The node itself: stop.
    async fn server(&self) -> ServerMutation {
        ServerMutation
    }

    /// Dynamic domains: add, remove, enable, disable.
    async fn domain(&self) -> DomainMutation {
        DomainMutation
    }

    /// The routing table's Raft group: learners, promotion, demotion, removal; the datacenter
    /// registry.
    async fn mesh(&self) -> MeshMutation {
        MeshMutation
    }

    /// Multi-user chat (XEP-0045): create, configure and delete rooms, invite, kick, set
    /// affiliations, send messages.
    async fn muc(&self) -> MucMutation {
        MucMutation
    }

    /// Offline messages (XEP-0160): delete.
    async fn offline(&self) -> OfflineMutation {
        OfflineMutation
    }

    /// vCards (XEP-0054): set.
    async fn vcard(&self) -> VcardMutation {
        VcardMutation
    }

    /// Last activity (XEP-0012): set.
    async fn last(&self) -> LastMutation {
        LastMutation
    }

    /// Private XML storage (XEP-0049): set.
    async fn private(&self) -> PrivateMutation {
        PrivateMutation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdl_has_every_category() {
        let sdl = sdl();
        for name in [
            "type Query",
            "type Mutation",
            "type AccountQuery",
            "type AccountMutation",
            "type SessionQuery",
            "type SessionMutation",
            "type StanzaQuery",
            "type StanzaMutation",
            "type ArchivedMessage ",
            "type RosterQuery",
            "type RosterMutation",
            "type ServerQuery",
            "type ServerMutation",
            "type DomainQuery",
            "type DomainMutation",
            "type Domain ",
            "type MucQuery",
            "type MucMutation",
            "type MucRoom ",
            "type MucOccupant ",
            "type MucMessage ",
            "type MucPayload ",
            "input MucConfigField ",
        ] {
            assert!(sdl.contains(name), "{name} missing from\n{sdl}");
        }
    }

    /// Every field of the schema is described in `docs/admin.md`.
    #[test]
    fn docs_describe_every_field() {
        let docs = include_str!("../../../docs/admin.md");
        let sdl = sdl();
        let mut missing = Vec::new();
        let mut in_type = false;
        let mut in_description = false;
        for line in sdl.lines() {
            let line = line.trim();
            if line.starts_with("\"\"\"") {
                // A description opens and closes on this line, or it opens or closes a block.
                if !(line.len() > 6 && line.ends_with("\"\"\"")) {
                    in_description = !in_description;
                }
                continue;
            }
            if in_description {
                continue;
            }
            if line.starts_with("type ") {
                in_type = true;
                continue;
            }
            if line.starts_with('}') {
                in_type = false;
                continue;
            }
            if !in_type || line.is_empty() || line.starts_with('"') || line.starts_with('#') {
                continue;
            }
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Documented as `name` or as `category.name`.
            let documented =
                docs.contains(&format!("`{name}")) || docs.contains(&format!(".{name}`"));
            if !name.is_empty() && !documented {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "not in docs/admin.md: {missing:?}");
    }
}
