//! XEP-0012 last activity: the server's uptime, and for an account how long ago its last
//! available resource went away (with the status it left), answered at the account's home to
//! contacts allowed to see its presence.
//!
//! Recorded as the account item `last` when the last available session of the account ends
//! or goes unavailable: seconds since the Unix epoch and the status text.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jid::BareJid;
use serde::{Deserialize, Serialize};
use tern_xmpp_proto::{Element, StanzaCondition, StanzaError, ns};

use super::result_for;
use crate::node::Node;

/// The protocol's namespace.
pub const NS: &str = "jabber:iq:last";
/// The account item kind.
pub const KIND: &str = "last";

/// When the account was last seen, and what it said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSeen {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The status text of its last unavailable presence.
    pub status: String,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The server's uptime (`to` is a served domain).
pub fn server(node: &Node, iq: &Element) -> Element {
    if !node.config.modules.last.enabled {
        return StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(iq);
    }
    let seconds = node.started.elapsed().as_secs();
    result_for(iq).with_child(Element::new("query", NS).with_attr("seconds", seconds.to_string()))
}

/// Records that `owner`'s last available resource went away with `status`.
pub async fn record(node: &Node, owner: &BareJid, status: String) {
    if !node.config.modules.last.enabled {
        return;
    }
    let seen = LastSeen { at: now(), status };
    if let Err(e) = store(node, owner, seen).await {
        tracing::debug!(error = %e, "last activity not recorded");
    }
}

/// Stores `seen` as `owner`'s last activity.
pub async fn store(node: &Node, owner: &BareJid, seen: LastSeen) -> crate::storage::Result<()> {
    // Plain data into a Vec cannot fail.
    let bytes = postcard::to_allocvec(&seen).expect("last activity always encodes");
    node.storage.put_item(owner, KIND, "", Some(bytes)).await
}

/// When `owner` was last seen, if recorded.
pub async fn last_seen(node: &Node, owner: &BareJid) -> Option<LastSeen> {
    let bytes = node.storage.get_item(owner, KIND, "").await.ok()??;
    postcard::from_bytes(&bytes).ok()
}

/// A last-activity query about the account `owner` from `asker`: allowed to the account itself
/// and to contacts it shares its presence with (XEP-0012 §4, `forbidden` otherwise); `0` while
/// it has an available resource.
pub async fn account(node: &Arc<Node>, owner: &BareJid, iq: &Element) -> Element {
    if !node.config.modules.last.enabled {
        return StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(iq);
    }
    let asker = iq
        .attr("from")
        .and_then(|f| jid::Jid::new(f).ok())
        .map(|j| j.to_bare());
    let allowed = match &asker {
        Some(asker) if asker == owner => true,
        Some(asker) => match node.storage.get_roster(owner).await {
            Ok(roster) => roster
                .items
                .get(asker.as_str())
                .is_some_and(|item| item.subscription.has_from()),
            Err(_) => false,
        },
        None => false,
    };
    if !allowed {
        return StanzaError::new(StanzaCondition::Forbidden).reply_to(iq);
    }
    if node.sm.resources(owner).iter().any(|s| s.is_available()) {
        return result_for(iq).with_child(Element::new("query", NS).with_attr("seconds", "0"));
    }
    match last_seen(node, owner).await {
        Some(seen) => {
            let seconds = now().saturating_sub(seen.at);
            let mut query = Element::new("query", NS).with_attr("seconds", seconds.to_string());
            if !seen.status.is_empty() {
                query = query.with_text(seen.status);
            }
            result_for(iq).with_child(query)
        }
        None => StanzaError::new(StanzaCondition::ItemNotFound).reply_to(iq),
    }
}

/// XEP-0202 entity time of the server: UTC, offset `+00:00`.
pub fn entity_time(node: &Node, iq: &Element) -> Element {
    if !node.config.modules.time.enabled {
        return StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(iq);
    }
    // Whole seconds, as XEP-0202 shows it (some clients parse no fractions).
    let utc = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    result_for(iq).with_child(
        Element::new("time", ns::TIME)
            .with_child(Element::new("tzo", ns::TIME).with_text("+00:00"))
            .with_child(Element::new("utc", ns::TIME).with_text(utc)),
    )
}
