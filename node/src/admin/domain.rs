//! The `domain` category: the dynamic domains of the global routing table. Adding, removing,
//! enabling and disabling a domain is one command written to the table (committed by a quorum
//! of its voters); every node follows the table and serves, stops serving or deletes the
//! domain's data accordingly ([`crate::grt::follow_changes`]). Static domains come from the
//! configuration file: they are listed here but cannot be changed at runtime.

use std::sync::Arc;

use async_graphql::{Context, Object, Result, SimpleObject};
use tern_raft_store::{Command, DomainEntry, DomainStatus};

use super::args::domain_name;
use super::error::{AdminError, AdminResult, graphql, static_domain};
use super::schema::node;
use crate::node::Node;

/// A domain of the deployment, as this node sees it.
#[derive(Debug, SimpleObject)]
#[graphql(name = "Domain")]
pub(crate) struct DomainInfo {
    /// The domain name.
    domain: String,
    /// Its host type (a static domain is its own host type).
    host_type: String,
    /// `enabled` or `disabled`.
    status: String,
    /// `false` for a static domain (from the configuration file).
    dynamic: bool,
    /// The datacenters that serve it; empty when every datacenter does.
    serving: Vec<String>,
    /// Its accounts in this node's storage.
    accounts: u64,
    /// The routing table's log index of the domain's last change (0 for a static domain the
    /// table does not hold yet).
    version: u64,
}

/// What `addDomain`, `enableDomain` and `disableDomain` did.
#[derive(Debug, SimpleObject)]
pub(crate) struct DomainPayload {
    /// The domain, normalized.
    domain: String,
    /// Whether the routing table changed (`false`: it already said so).
    changed: bool,
    /// A sentence saying what was done.
    message: String,
}

/// What `removeDomain` deleted.
#[derive(Debug, SimpleObject)]
pub(crate) struct DomainRemovalPayload {
    /// The domain, normalized.
    domain: String,
    /// Accounts deleted from this node's storage.
    accounts: u64,
    /// Rosters deleted from this node's storage.
    rosters: u64,
    /// Offline messages (XEP-0160) deleted from this node's storage.
    offline_messages: u64,
    /// User and room entries deleted from the routing table with the domain.
    routing_entries: u64,
    /// A sentence saying what was done.
    message: String,
}

/// `query { domain { ... } }`.
pub(crate) struct DomainQuery;

#[Object]
impl DomainQuery {
    /// Every domain, static and dynamic, sorted by name.
    async fn list_domains(&self, ctx: &Context<'_>) -> Result<Vec<DomainInfo>> {
        graphql(list_domains(node(ctx)?).await)
    }

    /// One domain. `NOT_FOUND` if it does not exist.
    async fn domain_details(&self, ctx: &Context<'_>, domain: String) -> Result<DomainInfo> {
        graphql(domain_details(node(ctx)?, &domain).await)
    }
}

/// `mutation { domain { ... } }`.
pub(crate) struct DomainMutation;

#[Object]
impl DomainMutation {
    /// Adds the dynamic domain `domain` (enabled) with a host type of `general.host_types`.
    /// Adding it again with the same host type changes nothing.
    async fn add_domain(
        &self,
        ctx: &Context<'_>,
        domain: String,
        host_type: String,
    ) -> Result<DomainPayload> {
        graphql(add_domain(node(ctx)?, &domain, &host_type).await)
    }

    /// Removes a dynamic domain: its sessions are closed with `<host-gone/>` and its accounts,
    /// rosters and routing entries are deleted on every node.
    async fn remove_domain(
        &self,
        ctx: &Context<'_>,
        domain: String,
    ) -> Result<DomainRemovalPayload> {
        graphql(remove_domain(node(ctx)?, &domain).await)
    }

    /// Enables a disabled dynamic domain: it takes logins and routing again.
    async fn enable_domain(&self, ctx: &Context<'_>, domain: String) -> Result<DomainPayload> {
        graphql(set_status(node(ctx)?, &domain, true).await)
    }

    /// Disables a dynamic domain: its sessions are closed with `<host-gone/>`, logins and
    /// routing to it are refused; its data is kept.
    async fn disable_domain(&self, ctx: &Context<'_>, domain: String) -> Result<DomainPayload> {
        graphql(set_status(node(ctx)?, &domain, false).await)
    }
}

/// Refuses a change to a static domain: one of this node's configuration, or one the routing
/// table holds as static (another node's configuration).
fn refuse_static(node: &Node, domain: &str) -> AdminResult<()> {
    let in_table = || {
        node.grt
            .reader()
            .domain(domain)
            .is_some_and(|entry| !entry.dynamic)
    };
    if node.domains.is_static(domain) || in_table() {
        return Err(AdminError::Conflict(static_domain(domain)));
    }
    Ok(())
}

async fn add_domain(node: &Arc<Node>, domain: &str, host_type: &str) -> AdminResult<DomainPayload> {
    let domain = domain_name(domain)?;
    refuse_static(node, &domain)?;
    let known = &node.config.general.host_types;
    if !known.iter().any(|t| t == host_type) {
        let listed = if known.is_empty() {
            "none is configured (general.host_types)".to_owned()
        } else {
            format!("the known host types are {}", known.join(", "))
        };
        return Err(AdminError::BadInput(format!(
            "unknown host type {host_type:?}: {listed}"
        )));
    }
    let applied = node
        .grt
        .write(Command::AddDomain {
            domain: domain.clone(),
            host_type: host_type.to_owned(),
            dynamic: true,
            serving: Vec::new(),
        })
        .await
        .map_err(|e| AdminError::from_grt("addDomain", e))?;
    let message = if applied.changed {
        tracing::info!(%domain, host_type, "domain added through the admin API");
        format!("added domain {domain} with host type {host_type}")
    } else {
        format!("domain {domain} already existed with host type {host_type}")
    };
    Ok(DomainPayload {
        domain,
        changed: applied.changed,
        message,
    })
}

async fn remove_domain(node: &Arc<Node>, domain: &str) -> AdminResult<DomainRemovalPayload> {
    let domain = domain_name(domain)?;
    refuse_static(node, &domain)?;
    let (applied, removal) =
        crate::grt::remove_domain(node, &domain)
            .await
            .map_err(|e| match e {
                crate::grt::RemoveDomainError::Grt(e) => AdminError::from_grt("removeDomain", e),
                crate::grt::RemoveDomainError::Storage(e) => {
                    AdminError::internal("removeDomain", &e)
                }
            })?;
    let accounts = removal.accounts;
    let routing_entries = applied.removed as u64;
    tracing::info!(
        %domain,
        accounts,
        rosters = removal.rosters,
        offline_messages = removal.offline,
        routing_entries,
        "domain removed through the admin API"
    );
    // Offline messages are only named when there were some, so the usual sentence stays short.
    let offline = if removal.offline == 0 {
        String::new()
    } else {
        format!(", {}", counted(removal.offline, "offline message"))
    };
    Ok(DomainRemovalPayload {
        message: format!(
            "removed domain {domain}: deleted {}, {}{offline} and {}",
            counted(accounts, "account"),
            counted(removal.rosters, "roster"),
            counted(routing_entries, "routing table entry")
        ),
        domain,
        accounts,
        rosters: removal.rosters,
        offline_messages: removal.offline,
        routing_entries,
    })
}

/// `1 account`, `3 accounts`, `2 routing table entries`.
fn counted(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else if let Some(stem) = what.strip_suffix('y') {
        format!("{n} {stem}ies")
    } else {
        format!("{n} {what}s")
    }
}

async fn set_status(node: &Arc<Node>, domain: &str, enabled: bool) -> AdminResult<DomainPayload> {
    let operation = if enabled {
        "enableDomain"
    } else {
        "disableDomain"
    };
    let domain = domain_name(domain)?;
    refuse_static(node, &domain)?;
    let applied = node
        .grt
        .write(Command::SetDomainStatus {
            domain: domain.clone(),
            enabled,
        })
        .await
        .map_err(|e| AdminError::from_grt(operation, e))?;
    let state = if enabled { "enabled" } else { "disabled" };
    let message = if applied.changed {
        tracing::info!(%domain, state, "domain status changed through the admin API");
        format!("{state} domain {domain}")
    } else {
        format!("domain {domain} was already {state}")
    };
    Ok(DomainPayload {
        domain,
        changed: applied.changed,
        message,
    })
}

async fn list_domains(node: &Arc<Node>) -> AdminResult<Vec<DomainInfo>> {
    let mut entries: Vec<(String, Option<DomainEntry>)> = node.grt.reader().with(|table| {
        table
            .domains()
            .into_iter()
            .map(|(name, entry)| (name.to_owned(), Some(entry.clone())))
            .collect()
    });
    // A static domain the table does not hold yet (a node whose quorum is not up) is still
    // served here.
    for domain in &node.config.general.domains {
        if !entries.iter().any(|(name, _)| name == domain) {
            entries.push((domain.clone(), None));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(entries.len());
    for (name, entry) in entries {
        out.push(describe(node, name, entry, "listDomains").await?);
    }
    Ok(out)
}

async fn domain_details(node: &Arc<Node>, domain: &str) -> AdminResult<DomainInfo> {
    let domain = domain_name(domain)?;
    let entry = node.grt.reader().domain(&domain);
    if entry.is_none() && !node.domains.is_static(&domain) {
        return Err(AdminError::NotFound(format!(
            "domain {domain} does not exist"
        )));
    }
    describe(node, domain, entry, "domainDetails").await
}

/// The answer for one domain; `entry` is the routing table's, if it holds the domain.
async fn describe(
    node: &Arc<Node>,
    domain: String,
    entry: Option<DomainEntry>,
    operation: &'static str,
) -> AdminResult<DomainInfo> {
    let accounts = node
        .storage
        .count_users(&domain)
        .await
        .map_err(|e| AdminError::internal(operation, &e))?;
    let is_static = node.domains.is_static(&domain);
    let Some(entry) = entry else {
        return Ok(DomainInfo {
            host_type: domain.clone(),
            domain,
            status: "enabled".to_owned(),
            dynamic: false,
            serving: Vec::new(),
            accounts,
            version: 0,
        });
    };
    let reader = node.grt.reader();
    let serving = entry
        .serving
        .iter()
        .map(|&id| reader.dc_name(id).unwrap_or_else(|| format!("#{}", id.0)))
        .collect();
    let status = match entry.status {
        // A static domain of this node's configuration is always served here.
        _ if is_static => "enabled",
        DomainStatus::Enabled => "enabled",
        DomainStatus::Disabled => "disabled",
    };
    Ok(DomainInfo {
        domain,
        host_type: entry.host_type,
        status: status.to_owned(),
        dynamic: entry.dynamic && !is_static,
        serving,
        accounts,
        version: entry.version,
    })
}

#[cfg(test)]
mod tests {
    use jid::BareJid;

    use super::*;
    use crate::admin::tests::{TempDir, create_account, node_with, test_node};
    use crate::storage::Roster;

    #[tokio::test]
    async fn add_list_disable_enable_remove() {
        let (node, _dir) = test_node("domain-ops").await;
        let added = add_domain(&node, "Chat.Example.org", "default")
            .await
            .unwrap();
        assert_eq!(added.domain, "chat.example.org");
        assert!(added.changed);
        assert_eq!(
            added.message,
            "added domain chat.example.org with host type default"
        );
        assert!(node.serves("chat.example.org"));

        let all = list_domains(&node).await.unwrap();
        let names: Vec<&str> = all.iter().map(|d| d.domain.as_str()).collect();
        assert_eq!(names, ["chat.example.org", "localhost"]);
        let chat = &all[0];
        assert_eq!(chat.host_type, "default");
        assert_eq!(chat.status, "enabled");
        assert!(chat.dynamic);
        assert!(chat.serving.is_empty());
        assert!(chat.version > 0);
        let local = &all[1];
        assert_eq!(local.host_type, "localhost");
        assert!(!local.dynamic);
        assert_eq!(local.status, "enabled");

        create_account(&node, "alice@chat.example.org").await;
        let details = domain_details(&node, "chat.example.org").await.unwrap();
        assert_eq!(details.accounts, 1);
        assert_eq!(details.version, chat.version);

        let disabled = disable_domain(&node, "chat.example.org").await;
        assert!(disabled.changed);
        assert_eq!(disabled.message, "disabled domain chat.example.org");
        assert!(!node.serves("chat.example.org"));
        assert!(node.domains.is_disabled("chat.example.org"));
        let details = domain_details(&node, "chat.example.org").await.unwrap();
        assert_eq!(details.status, "disabled");
        assert!(details.version > chat.version);
        let again = disable_domain(&node, "chat.example.org").await;
        assert!(!again.changed);
        assert_eq!(
            again.message,
            "domain chat.example.org was already disabled"
        );

        let enabled = set_status(&node, "chat.example.org", true).await.unwrap();
        assert!(enabled.changed);
        assert!(node.serves("chat.example.org"));
        assert_eq!(
            domain_details(&node, "chat.example.org")
                .await
                .unwrap()
                .status,
            "enabled"
        );
    }

    async fn disable_domain(node: &Arc<Node>, domain: &str) -> DomainPayload {
        set_status(node, domain, false).await.unwrap()
    }

    #[tokio::test]
    async fn adding_twice_is_fine_but_not_with_another_host_type() {
        let dir = TempDir::new("domain-twice");
        let mut config = tern_config::Config::embedded_default();
        config.general.host_types = vec!["default".into(), "big".into()];
        let node = node_with(config, &dir).await;
        add_domain(&node, "a.example", "default").await.unwrap();
        let again = add_domain(&node, "A.example", "default").await.unwrap();
        assert!(!again.changed);
        assert_eq!(
            again.message,
            "domain a.example already existed with host type default"
        );
        let e = add_domain(&node, "a.example", "big").await.unwrap_err();
        assert_eq!(e.code(), "CONFLICT");
        assert_eq!(
            e.to_string(),
            "domain a.example already exists with host type default; \
             remove it first to give it another host type"
        );
        assert_eq!(
            domain_details(&node, "a.example").await.unwrap().host_type,
            "default"
        );
        let e = add_domain(&node, "b.example", "huge").await.unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
        assert_eq!(
            e.to_string(),
            "unknown host type \"huge\": the known host types are default, big"
        );
        assert!(node.grt.reader().domain("b.example").is_none());
    }

    #[tokio::test]
    async fn static_domains_cannot_change() {
        let (node, _dir) = test_node("domain-static").await;
        let message = "domain localhost is static (from the configuration file) and cannot be \
                       changed at runtime";
        let e = add_domain(&node, "LOCALHOST", "default").await.unwrap_err();
        assert_eq!((e.code(), e.to_string().as_str()), ("CONFLICT", message));
        let e = remove_domain(&node, "localhost").await.unwrap_err();
        assert_eq!((e.code(), e.to_string().as_str()), ("CONFLICT", message));
        for enabled in [true, false] {
            let e = set_status(&node, "localhost", enabled).await.unwrap_err();
            assert_eq!((e.code(), e.to_string().as_str()), ("CONFLICT", message));
        }
        assert!(node.serves("localhost"));
        assert!(node.grt.reader().domain("localhost").is_some());
    }

    #[tokio::test]
    async fn unknown_domains_are_not_found() {
        let (node, _dir) = test_node("domain-unknown").await;
        for e in [
            remove_domain(&node, "ghost.example")
                .await
                .map(|_| ())
                .unwrap_err(),
            set_status(&node, "ghost.example", true)
                .await
                .map(|_| ())
                .unwrap_err(),
            set_status(&node, "ghost.example", false)
                .await
                .map(|_| ())
                .unwrap_err(),
            domain_details(&node, "ghost.example")
                .await
                .map(|_| ())
                .unwrap_err(),
        ] {
            assert_eq!(e.code(), "NOT_FOUND", "{e}");
            assert_eq!(e.to_string(), "domain ghost.example does not exist");
        }
        for bad in ["a@b.example", "b..example", "b example", ""] {
            let e = add_domain(&node, bad, "default").await.unwrap_err();
            assert_eq!(e.code(), "BAD_INPUT", "{bad:?}");
        }
    }

    #[tokio::test]
    async fn remove_deletes_the_domain_and_its_data() {
        let (node, _dir) = test_node("domain-remove").await;
        add_domain(&node, "gone.example", "default").await.unwrap();
        create_account(&node, "alice@gone.example").await;
        create_account(&node, "bob@gone.example").await;
        create_account(&node, "carol@localhost").await;
        let alice = BareJid::new("alice@gone.example").unwrap();
        node.storage
            .modify_roster(&alice, &mut |r: &mut Roster| r.version += 1)
            .await
            .unwrap();
        for body in ["one", "two"] {
            let stanza = format!("<message to='alice@gone.example'><body>{body}</body></message>");
            node.storage
                .store_offline(&alice, stanza.into(), 10)
                .await
                .unwrap();
        }
        assert!(node.grt.reader().user_home(&alice).home.is_some());

        let removed = remove_domain(&node, "gone.example").await.unwrap();
        assert_eq!(removed.domain, "gone.example");
        assert_eq!(removed.accounts, 2);
        assert_eq!(removed.rosters, 1);
        assert_eq!(removed.offline_messages, 2);
        assert_eq!(removed.routing_entries, 2);
        assert_eq!(
            removed.message,
            "removed domain gone.example: deleted 2 accounts, 1 roster, 2 offline messages and 2 \
             routing table entries"
        );
        assert_eq!(node.storage.count_offline(&alice).await.unwrap(), 0);
        assert!(!node.serves("gone.example"));
        assert!(node.grt.reader().domain("gone.example").is_none());
        assert!(node.grt.reader().user_home(&alice).home.is_none());
        assert_eq!(node.storage.count_users("gone.example").await.unwrap(), 0);
        assert_eq!(node.storage.count_users("localhost").await.unwrap(), 1);
        let names: Vec<String> = list_domains(&node)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.domain)
            .collect();
        assert_eq!(names, ["localhost"]);
        assert_eq!(
            remove_domain(&node, "gone.example")
                .await
                .unwrap_err()
                .code(),
            "NOT_FOUND"
        );
    }

    /// With the node's change follower running (as in `tern serve`), which deletes the same
    /// data as soon as the removal applies, the account count is still right.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remove_counts_accounts_while_the_follower_deletes_them() {
        let (node, _dir) = test_node("domain-remove-follower").await;
        let follower = crate::grt::follow_changes(&node);
        add_domain(&node, "busy.example", "default").await.unwrap();
        for who in ["a", "b", "c"] {
            create_account(&node, &format!("{who}@busy.example")).await;
        }
        let removed = remove_domain(&node, "busy.example").await.unwrap();
        assert_eq!(removed.accounts, 3);
        assert_eq!(removed.routing_entries, 3);
        assert_eq!(node.storage.count_users("busy.example").await.unwrap(), 0);
        node.shutdown.send_replace(true);
        follower.await.unwrap();
    }

    #[test]
    fn counts_read_as_english() {
        assert_eq!(counted(1, "account"), "1 account");
        assert_eq!(counted(0, "roster"), "0 rosters");
        assert_eq!(counted(2, "routing table entry"), "2 routing table entries");
    }
}
