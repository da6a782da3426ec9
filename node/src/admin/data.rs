//! The per-account data categories: `offline` (count, delete the stored messages), `vcard`
//! (get, set), `last` (get, set the last activity) and `private` (get, set private XML). Each
//! works on an account of this node's datacenter; for an account homed elsewhere it says which
//! datacenter to ask.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_graphql::{Context, Object, Result, SimpleObject};
use tern_xmpp_proto::Element;

use super::args::home_user;
use super::error::{AdminError, AdminResult, graphql};
use super::schema::node;
use crate::modules::{last, private, vcard};
use crate::node::Node;

/// What a data mutation did.
#[derive(Debug, SimpleObject)]
pub(crate) struct DataPayload {
    /// A sentence saying what was done.
    message: String,
    /// How many items it removed, where that applies.
    count: u64,
}

/// An account's last activity.
#[derive(Debug, SimpleObject)]
pub(crate) struct LastActivity {
    /// The account.
    user: String,
    /// Whether it has an available resource now (then `seconds` is 0).
    online: bool,
    /// When its last available resource went away, RFC 3339 in UTC.
    timestamp: Option<String>,
    /// Seconds since then.
    seconds: Option<u64>,
    /// The status it left.
    status: Option<String>,
}

/// `query { offline { … } }`.
pub(crate) struct OfflineQuery;

#[Object]
impl OfflineQuery {
    /// The number of offline messages (XEP-0160) stored for `user`.
    async fn count_messages(&self, ctx: &Context<'_>, user: String) -> Result<u64> {
        graphql(count_offline(node(ctx)?, &user).await)
    }
}

/// `mutation { offline { … } }`.
pub(crate) struct OfflineMutation;

#[Object]
impl OfflineMutation {
    /// Deletes every offline message stored for `user`.
    async fn delete_messages(&self, ctx: &Context<'_>, user: String) -> Result<DataPayload> {
        graphql(delete_offline(node(ctx)?, &user).await)
    }
}

/// `query { vcard { … } }`.
pub(crate) struct VcardQuery;

#[Object]
impl VcardQuery {
    /// The vCard (XEP-0054) of `user` as XML; `null` when none is stored.
    async fn get_vcard(&self, ctx: &Context<'_>, user: String) -> Result<Option<String>> {
        graphql(get_vcard(node(ctx)?, &user).await)
    }
}

/// `mutation { vcard { … } }`.
pub(crate) struct VcardMutation;

#[Object]
impl VcardMutation {
    /// Replaces the vCard of `user` with `vcard` (a `<vCard xmlns='vcard-temp'>` document).
    async fn set_vcard(
        &self,
        ctx: &Context<'_>,
        user: String,
        vcard: String,
    ) -> Result<DataPayload> {
        graphql(set_vcard(node(ctx)?, &user, &vcard).await)
    }
}

/// `query { last { … } }`.
pub(crate) struct LastQuery;

#[Object]
impl LastQuery {
    /// The last activity (XEP-0012) of `user`.
    async fn get_last(&self, ctx: &Context<'_>, user: String) -> Result<LastActivity> {
        graphql(get_last(node(ctx)?, &user).await)
    }
}

/// `mutation { last { … } }`.
pub(crate) struct LastMutation;

#[Object]
impl LastMutation {
    /// Records the last activity of `user`: `timestamp` in seconds since the Unix epoch
    /// (default now) and `status`.
    async fn set_last(
        &self,
        ctx: &Context<'_>,
        user: String,
        timestamp: Option<u64>,
        status: Option<String>,
    ) -> Result<DataPayload> {
        graphql(set_last(node(ctx)?, &user, timestamp, status.unwrap_or_default()).await)
    }
}

/// `query { private { … } }`.
pub(crate) struct PrivateQuery;

#[Object]
impl PrivateQuery {
    /// The private XML (XEP-0049) of `user` stored under the element `element` of namespace
    /// `namespace`; `null` when none is stored.
    async fn get_private(
        &self,
        ctx: &Context<'_>,
        user: String,
        element: String,
        namespace: String,
    ) -> Result<Option<String>> {
        graphql(get_private(node(ctx)?, &user, &element, &namespace).await)
    }
}

/// `mutation { private { … } }`.
pub(crate) struct PrivateMutation;

#[Object]
impl PrivateMutation {
    /// Stores `xml` (one element, not of `jabber:iq:private`) as private XML of `user`.
    async fn set_private(
        &self,
        ctx: &Context<'_>,
        user: String,
        xml: String,
    ) -> Result<DataPayload> {
        graphql(set_private(node(ctx)?, &user, &xml).await)
    }
}

async fn count_offline(node: &Arc<Node>, user: &str) -> AdminResult<u64> {
    let jid = home_user(node, user, "countOfflineMessages").await?;
    node.storage
        .count_offline(&jid)
        .await
        .map_err(|e| AdminError::internal("countOfflineMessages", &e))
}

async fn delete_offline(node: &Arc<Node>, user: &str) -> AdminResult<DataPayload> {
    let jid = home_user(node, user, "deleteOfflineMessages").await?;
    let taken = node
        .storage
        .take_offline(&jid)
        .await
        .map_err(|e| AdminError::internal("deleteOfflineMessages", &e))?;
    let count = taken.len() as u64;
    tracing::info!(user = %jid, count, "offline messages deleted through the admin API");
    Ok(DataPayload {
        message: format!("deleted {count} offline messages of {jid}"),
        count,
    })
}

async fn get_vcard(node: &Arc<Node>, user: &str) -> AdminResult<Option<String>> {
    let jid = home_user(node, user, "getVcard").await?;
    vcard::get_xml(node, &jid)
        .await
        .map_err(|e| AdminError::internal("getVcard", &e))
}

async fn set_vcard(node: &Arc<Node>, user: &str, xml: &str) -> AdminResult<DataPayload> {
    let jid = home_user(node, user, "setVcard").await?;
    let element = Element::parse(xml.as_bytes(), vcard::NS)
        .map_err(|e| AdminError::BadInput(format!("the vCard is not well-formed XML: {e}")))?;
    if !element.is("vCard", vcard::NS) {
        return Err(AdminError::BadInput(format!(
            "expected <vCard xmlns='{}'>, found <{}> in {:?}",
            vcard::NS,
            element.name(),
            element.ns()
        )));
    }
    vcard::set(node, &jid, &element)
        .await
        .map_err(|condition| {
            AdminError::BadInput(format!(
                "the vCard was not stored ({}); at most {} bytes",
                condition.as_str(),
                node.config.modules.vcard.max_size
            ))
        })?;
    Ok(DataPayload {
        message: format!("stored the vCard of {jid}"),
        count: 1,
    })
}

async fn get_last(node: &Arc<Node>, user: &str) -> AdminResult<LastActivity> {
    let jid = home_user(node, user, "getLast").await?;
    let online = node.sm.resources(&jid).iter().any(|s| s.is_available());
    let seen = last::last_seen(node, &jid).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(LastActivity {
        user: jid.to_string(),
        online,
        timestamp: seen.as_ref().map(|s| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s.at)).to_string()
        }),
        seconds: if online {
            Some(0)
        } else {
            seen.as_ref().map(|s| now.saturating_sub(s.at))
        },
        status: seen.map(|s| s.status).filter(|s| !s.is_empty()),
    })
}

async fn set_last(
    node: &Arc<Node>,
    user: &str,
    timestamp: Option<u64>,
    status: String,
) -> AdminResult<DataPayload> {
    let jid = home_user(node, user, "setLast").await?;
    let at = timestamp.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    last::store(node, &jid, last::LastSeen { at, status })
        .await
        .map_err(|e| AdminError::internal("setLast", &e))?;
    Ok(DataPayload {
        message: format!("recorded the last activity of {jid}"),
        count: 1,
    })
}

async fn get_private(
    node: &Arc<Node>,
    user: &str,
    element: &str,
    namespace: &str,
) -> AdminResult<Option<String>> {
    let jid = home_user(node, user, "getPrivate").await?;
    let probe = Element::new(element, namespace);
    private::get_xml(node, &jid, &probe)
        .await
        .map_err(|e| AdminError::internal("getPrivate", &e))
}

async fn set_private(node: &Arc<Node>, user: &str, xml: &str) -> AdminResult<DataPayload> {
    let jid = home_user(node, user, "setPrivate").await?;
    let element = Element::parse(xml.as_bytes(), "")
        .map_err(|e| AdminError::BadInput(format!("the document is not well-formed XML: {e}")))?;
    private::set(node, &jid, &element)
        .await
        .map_err(|condition| {
            AdminError::BadInput(format!(
                "the document was not stored ({}): one element, not of {}, at most {} bytes",
                condition.as_str(),
                private::NS,
                node.config.modules.private.max_size
            ))
        })?;
    Ok(DataPayload {
        message: format!("stored <{}/> of {} for {jid}", element.name(), element.ns()),
        count: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::{create_account, test_node};

    #[tokio::test]
    async fn data_round_trips_through_the_admin_functions() {
        let (node, _dir) = test_node("admin-data").await;
        create_account(&node, "alice@localhost").await;
        assert!(matches!(
            get_vcard(&node, "nobody@localhost").await,
            Err(AdminError::NotFound(_))
        ));
        assert_eq!(get_vcard(&node, "alice@localhost").await.unwrap(), None);
        let card = "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>";
        set_vcard(&node, "alice@localhost", card).await.unwrap();
        let stored = get_vcard(&node, "alice@localhost").await.unwrap().unwrap();
        assert!(stored.contains("<FN>Alice</FN>"), "{stored}");
        assert!(matches!(
            set_vcard(&node, "alice@localhost", "<card/>").await,
            Err(AdminError::BadInput(_))
        ));

        set_private(
            &node,
            "alice@localhost",
            "<prefs xmlns='urn:example:prefs'><x>1</x></prefs>",
        )
        .await
        .unwrap();
        let got = get_private(&node, "alice@localhost", "prefs", "urn:example:prefs")
            .await
            .unwrap()
            .unwrap();
        assert!(got.contains("<x>1</x>"), "{got}");
        assert!(matches!(
            set_private(
                &node,
                "alice@localhost",
                "<query xmlns='jabber:iq:private'/>"
            )
            .await,
            Err(AdminError::BadInput(_))
        ));

        set_last(&node, "alice@localhost", Some(1_000), "away".into())
            .await
            .unwrap();
        let last = get_last(&node, "alice@localhost").await.unwrap();
        assert!(!last.online);
        assert_eq!(last.timestamp.as_deref(), Some("1970-01-01T00:16:40Z"));
        assert_eq!(last.status.as_deref(), Some("away"));

        assert_eq!(count_offline(&node, "alice@localhost").await.unwrap(), 0);
        let alice = jid::BareJid::new("alice@localhost").unwrap();
        for body in ["a", "b"] {
            node.storage
                .store_offline(&alice, bytes::Bytes::from(body), 10)
                .await
                .unwrap();
        }
        assert_eq!(count_offline(&node, "alice@localhost").await.unwrap(), 2);
        let deleted = delete_offline(&node, "alice@localhost").await.unwrap();
        assert_eq!(deleted.count, 2);
        assert_eq!(count_offline(&node, "alice@localhost").await.unwrap(), 0);
    }
}
