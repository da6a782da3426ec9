//! The `stanza` category: send a chat message or any raw stanza through the router, as if a
//! local entity had sent it, and read the newest messages of an account's archive (XEP-0313).
//!
//! Both sending commands accept only senders on a domain served here, so the admin API never
//! forges stanzas from other servers' users. Stanzas are limited to `limits.max_stanza_size`,
//! like the ones clients send. The archive is read through storage, whether or not
//! `[modules.mam]` is enabled, for accounts that live in this node's datacenter.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_graphql::{Context, Object, Result, SimpleObject};
use jid::BareJid;
use tern_xmpp_proto::stanza::Stanza;
use tern_xmpp_proto::{Element, ns};

use super::args::home_user;
use super::args::micros_of;
use super::args::{any_jid, local_sender};
use super::error::{AdminError, AdminResult, graphql};
use super::schema::node;
use crate::node::Node;
use crate::storage::{ArchiveQuery, ArchivedMessage};

/// Messages `getLastMessages` returns when the caller names no limit.
const DEFAULT_LIMIT: u64 = 50;
/// The most messages `getLastMessages` returns.
const MAX_LIMIT: u64 = 500;

/// One message of an account's archive.
#[derive(Debug, SimpleObject)]
#[graphql(name = "ArchivedMessage")]
pub(crate) struct ArchivedStanza {
    /// The archive id: the XEP-0313 result id, and the XEP-0359 stanza id an incoming message
    /// was given (`<stanza-id by='account'>`).
    id: String,
    /// When it was archived, RFC 3339 in UTC with microseconds.
    timestamp: String,
    /// The `from` of the message (the account's bare JID for a message it sent without one).
    sender: String,
    /// The `to` of the message.
    recipient: String,
    /// The text of its `<body/>`, if it has one.
    body: Option<String>,
    /// The message as archived, XML.
    stanza: String,
}

/// `query { stanza { ... } }`.
pub(crate) struct StanzaQuery;

#[Object]
impl StanzaQuery {
    /// The newest messages of the archive (XEP-0313) of the account `caller`, oldest first:
    /// only those exchanged with `with` (a JID, compared bare) when given, at most `limit`
    /// (default 50, at most 500), only those archived before `before` (RFC 3339) when given.
    async fn get_last_messages(
        &self,
        ctx: &Context<'_>,
        caller: String,
        with: Option<String>,
        limit: Option<u64>,
        before: Option<String>,
    ) -> Result<Vec<ArchivedStanza>> {
        graphql(
            get_last_messages(
                node(ctx)?,
                &caller,
                with.as_deref(),
                limit,
                before.as_deref(),
            )
            .await,
        )
    }
}

/// What a stanza mutation sent.
#[derive(Debug, SimpleObject)]
pub(crate) struct StanzaPayload {
    /// The `id` of the stanza sent, if it has one (`sendMessage` always sets one).
    id: Option<String>,
    /// A sentence saying what was done.
    message: String,
}

/// `mutation { stanza { ... } }`.
pub(crate) struct StanzaMutation;

#[Object]
impl StanzaMutation {
    /// Sends `<message type='chat'>` with `body` from `from` (a JID on a domain served here) to
    /// `to` (any JID). Delivery follows the usual rules: errors go back to `from`.
    async fn send_message(
        &self,
        ctx: &Context<'_>,
        from: String,
        to: String,
        body: String,
    ) -> Result<StanzaPayload> {
        graphql(send_message(node(ctx)?, &from, &to, &body).await)
    }

    /// Routes a raw `<message/>`, `<presence/>` or `<iq/>` (namespace `jabber:client`) that has
    /// `from` (a JID on a domain served here) and `to`.
    async fn send_stanza(&self, ctx: &Context<'_>, stanza: String) -> Result<StanzaPayload> {
        graphql(send_stanza(node(ctx)?, &stanza).await)
    }
}

async fn send_message(
    node: &Arc<Node>,
    from: &str,
    to: &str,
    body: &str,
) -> AdminResult<StanzaPayload> {
    let from = local_sender(node, from)?;
    let to = any_jid("recipient", to)?;
    let id = new_id();
    let element = Element::new("message", ns::CLIENT)
        .with_attr("type", "chat")
        .with_attr("from", from.as_str())
        .with_attr("to", to.as_str())
        .with_attr("id", id.as_str())
        .with_child(Element::new("body", ns::CLIENT).with_text(body));
    route(node, &element).await?;
    Ok(StanzaPayload {
        id: Some(id),
        message: format!("sent a message from {from} to {to}"),
    })
}

async fn send_stanza(node: &Arc<Node>, xml: &str) -> AdminResult<StanzaPayload> {
    check_size(node, xml.len())?;
    let element = Element::parse(xml.as_bytes(), ns::CLIENT)
        .map_err(|e| AdminError::BadInput(format!("the stanza is not valid XML: {e}")))?;
    if !["message", "presence", "iq"].contains(&element.name()) {
        return Err(AdminError::BadInput(format!(
            "expected <message/>, <presence/> or <iq/>, found <{}/>",
            element.name()
        )));
    }
    if element.ns() != ns::CLIENT {
        return Err(AdminError::BadInput(format!(
            "the stanza must be in the namespace {}, found {}",
            ns::CLIENT,
            element.ns()
        )));
    }
    let (Some(from), Some(to)) = (element.attr("from"), element.attr("to")) else {
        return Err(AdminError::BadInput(
            "the stanza needs both a from and a to attribute".to_owned(),
        ));
    };
    let from = local_sender(node, from)?;
    let to = any_jid("recipient", to)?;
    route(node, &element).await?;
    let kind = element.name();
    Ok(StanzaPayload {
        id: element.attr("id").map(str::to_owned),
        message: format!("sent a {kind} stanza from {from} to {to}"),
    })
}

/// Routes a stanza the admin made.
async fn route(node: &Arc<Node>, element: &Element) -> AdminResult<()> {
    let stanza = Stanza::from_element(element, ns::CLIENT)
        .map_err(|e| AdminError::BadInput(format!("not a stanza: {e}")))?;
    check_size(node, stanza.raw().len())?;
    tracing::debug!(kind = %element.name(), "admin API routes a stanza");
    node.route(stanza).await;
    Ok(())
}

fn check_size(node: &Node, bytes: usize) -> AdminResult<()> {
    let limit = node.config.limits.max_stanza_size;
    if bytes > limit {
        return Err(AdminError::BadInput(format!(
            "the stanza is {bytes} bytes, more than limits.max_stanza_size ({limit})"
        )));
    }
    Ok(())
}

async fn get_last_messages(
    node: &Arc<Node>,
    caller: &str,
    with: Option<&str>,
    limit: Option<u64>,
    before: Option<&str>,
) -> AdminResult<Vec<ArchivedStanza>> {
    let user = home_user(node, caller, "getLastMessages").await?;
    let with = with
        .map(|jid| any_jid("with", jid).map(|j| j.to_bare().to_string()))
        .transpose()?;
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AdminError::BadInput(format!(
            "the limit must be between 1 and {MAX_LIMIT}, not {limit}"
        )));
    }
    // Archive ids are microseconds since the Unix epoch: "before T" is "id < T".
    let to = match before.map(micros_of).transpose()? {
        Some(0) => return Ok(Vec::new()),
        Some(micros) => micros - 1,
        None => u64::MAX,
    };
    let query = ArchiveQuery {
        with,
        from: 0,
        to,
        ids: None,
        // At most MAX_LIMIT, so it fits.
        max: usize::try_from(limit).unwrap_or(usize::MAX),
        from_end: true,
    };
    let page = node
        .storage
        .archive_query(&user, query)
        .await
        .map_err(|e| AdminError::internal("getLastMessages", &e))?;
    Ok(page
        .messages
        .iter()
        .map(|(id, message)| archived_stanza(&user, *id, message))
        .collect())
}

/// What the admin API shows of archived message `id` of `user`.
fn archived_stanza(user: &BareJid, id: u64, message: &ArchivedMessage) -> ArchivedStanza {
    let parsed = Element::parse(&message.stanza, ns::CLIENT).ok();
    let attr = |name: &str| {
        parsed
            .as_ref()
            .and_then(|e| e.attr(name))
            .map(str::to_owned)
    };
    // A message the account sent may have no `from`, one it received no `to`: the archive
    // says which side each party is.
    let (this_side, other_side) = (user.to_string(), message.with.clone());
    let (from_default, to_default) = if message.incoming {
        (other_side, this_side)
    } else {
        (this_side, other_side)
    };
    ArchivedStanza {
        id: id.to_string(),
        timestamp: humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(id))
            .to_string(),
        sender: attr("from").unwrap_or(from_default),
        recipient: attr("to").unwrap_or(to_default),
        body: parsed
            .as_ref()
            .and_then(|e| e.get_child("body", ns::CLIENT))
            .map(Element::text),
        stanza: String::from_utf8_lossy(&message.stanza).into_owned(),
    }
}

/// A fresh stanza id.
fn new_id() -> String {
    format!("admin-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::{
        TempDir, create_account, next_stanza, node_with, test_node, test_session,
    };

    /// 2025-01-01T00:00:00Z in microseconds since the Unix epoch.
    const NEW_YEAR: u64 = 1_735_689_600_000_000;

    /// Archives, for alice, `count` messages a second apart from NEW_YEAR: even ones from
    /// bob (incoming, as delivered), odd ones to carol (outgoing, as her client sent them,
    /// without `from`).
    async fn fill_archive(node: &Node, count: u64) {
        let alice = BareJid::new("alice@localhost").unwrap();
        for n in 0..count {
            let id = NEW_YEAR + n * 1_000_000;
            let message = if n % 2 == 0 {
                ArchivedMessage {
                    with: "bob@localhost".into(),
                    incoming: true,
                    stanza: format!(
                        "<message xmlns='jabber:client' from='bob@localhost/phone' \
                         to='alice@localhost' type='chat'><body>m{n}</body>\
                         <stanza-id xmlns='urn:xmpp:sid:0' id='{id}' by='alice@localhost'/>\
                         </message>"
                    )
                    .into_bytes(),
                }
            } else {
                ArchivedMessage {
                    with: "carol@localhost".into(),
                    incoming: false,
                    stanza: format!(
                        "<message xmlns='jabber:client' to='carol@localhost' type='chat'>\
                         <body>m{n}</body></message>"
                    )
                    .into_bytes(),
                }
            };
            node.storage
                .archive_append(&alice, id, message)
                .await
                .unwrap();
        }
    }

    fn bodies(messages: &[ArchivedStanza]) -> Vec<&str> {
        messages.iter().filter_map(|m| m.body.as_deref()).collect()
    }

    #[tokio::test]
    async fn last_messages_are_the_newest_oldest_first() {
        let (node, _dir) = test_node("stanza-last").await;
        create_account(&node, "alice@localhost").await;
        assert!(
            get_last_messages(&node, "alice@localhost", None, None, None)
                .await
                .unwrap()
                .is_empty()
        );
        fill_archive(&node, 6).await;
        let all = get_last_messages(&node, "alice@localhost", None, None, None)
            .await
            .unwrap();
        assert_eq!(bodies(&all), ["m0", "m1", "m2", "m3", "m4", "m5"]);
        let first = &all[0];
        assert_eq!(first.id, NEW_YEAR.to_string());
        assert_eq!(first.timestamp, "2025-01-01T00:00:00.000000Z");
        assert_eq!(first.sender, "bob@localhost/phone");
        assert_eq!(first.recipient, "alice@localhost");
        assert!(first.stanza.contains("<stanza-id"), "{}", first.stanza);
        // Sent by her client without `from`: the sender is the account.
        assert_eq!(all[1].sender, "alice@localhost");
        assert_eq!(all[1].recipient, "carol@localhost");

        let last = get_last_messages(&node, "alice@localhost", None, Some(2), None)
            .await
            .unwrap();
        assert_eq!(bodies(&last), ["m4", "m5"]);
        let with_bob = get_last_messages(
            &node,
            "alice@localhost",
            Some("bob@localhost/other"),
            Some(2),
            None,
        )
        .await
        .unwrap();
        assert_eq!(bodies(&with_bob), ["m2", "m4"]);
        // Strictly before 00:00:03: m0..m2; paging back from the oldest shown works.
        let page = get_last_messages(
            &node,
            "alice@localhost",
            None,
            Some(2),
            Some("2025-01-01T00:00:03Z"),
        )
        .await
        .unwrap();
        assert_eq!(bodies(&page), ["m1", "m2"]);
        let previous = get_last_messages(
            &node,
            "alice@localhost",
            None,
            Some(2),
            Some(&page[0].timestamp),
        )
        .await
        .unwrap();
        assert_eq!(bodies(&previous), ["m0"]);
    }

    #[tokio::test]
    async fn last_messages_are_read_with_mam_disabled() {
        let dir = TempDir::new("stanza-last-off");
        let mut config = tern_config::Config::embedded_default();
        config.modules.mam.enabled = false;
        let node = node_with(config, &dir).await;
        create_account(&node, "alice@localhost").await;
        fill_archive(&node, 3).await;
        let all = get_last_messages(&node, "alice@localhost", None, None, None)
            .await
            .unwrap();
        assert_eq!(bodies(&all), ["m0", "m1", "m2"]);
    }

    #[tokio::test]
    async fn last_messages_reject_bad_arguments() {
        let (node, _dir) = test_node("stanza-last-bad").await;
        create_account(&node, "alice@localhost").await;
        let e = get_last_messages(&node, "ghost@localhost", None, None, None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "NOT_FOUND");
        let e = get_last_messages(&node, "alice@example.org", None, None, None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "UNKNOWN_DOMAIN");
        for limit in [0, MAX_LIMIT + 1] {
            let e = get_last_messages(&node, "alice@localhost", None, Some(limit), None)
                .await
                .unwrap_err();
            assert_eq!(e.code(), "BAD_INPUT", "{limit}");
        }
        assert!(
            get_last_messages(&node, "alice@localhost", None, Some(MAX_LIMIT), None)
                .await
                .is_ok()
        );
        for before in [
            "yesterday",
            "2025-13-01T00:00:00Z",
            "2025-01-01T00:00:00+02:00",
        ] {
            let e = get_last_messages(&node, "alice@localhost", None, None, Some(before))
                .await
                .unwrap_err();
            assert_eq!(e.code(), "BAD_INPUT", "{before}");
        }
        fill_archive(&node, 1).await;
        let none = get_last_messages(
            &node,
            "alice@localhost",
            None,
            None,
            Some("1970-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
        assert!(none.is_empty());
        let e = get_last_messages(&node, "alice@localhost", Some("bob@@x"), None, None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
    }

    #[tokio::test]
    async fn send_message_reaches_an_available_session() {
        let (node, _dir) = test_node("stanza-message").await;
        let (session, mut rx) = test_session(&node, "bob@localhost/desk");
        session.update_presence(|p| p.available = Some("<presence/>".into()));
        let sent = send_message(&node, "localhost", "bob@localhost", "hi & bye")
            .await
            .unwrap();
        let id = sent.id.unwrap();
        let xml = next_stanza(&mut rx).await;
        assert!(xml.starts_with("<message"), "{xml}");
        assert!(xml.contains("type='chat'"), "{xml}");
        assert!(xml.contains(&format!("id='{id}'")), "{xml}");
        assert!(xml.contains("<body>hi &amp; bye</body>"), "{xml}");
    }

    #[tokio::test]
    async fn send_stanza_routes_to_a_full_jid() {
        let (node, _dir) = test_node("stanza-raw").await;
        let (_session, mut rx) = test_session(&node, "bob@localhost/desk");
        let xml = "<message xmlns='jabber:client' from='alice@localhost' \
                   to='bob@localhost/desk' id='m1'><body>yo</body></message>";
        let sent = send_stanza(&node, xml).await.unwrap();
        assert_eq!(sent.id.as_deref(), Some("m1"));
        let got = next_stanza(&mut rx).await;
        assert!(got.contains("<body>yo</body>"), "{got}");
        assert!(got.contains("from='alice@localhost'"), "{got}");
    }

    #[tokio::test]
    async fn send_stanza_rejects_what_is_not_a_routable_stanza() {
        let (node, _dir) = test_node("stanza-bad").await;
        let cases = [
            "<message to='bob@localhost'",
            "<foo from='alice@localhost' to='bob@localhost'/>",
            "<message xmlns='jabber:server' from='alice@localhost' to='bob@localhost'/>",
            "<message to='bob@localhost'/>",
            "<message from='alice@localhost'/>",
            "<message from='eve@example.org' to='bob@localhost'/>",
            "<iq from='alice@localhost' to='bob@@localhost' type='get' id='1'/>",
        ];
        for xml in cases {
            let e = send_stanza(&node, xml).await.unwrap_err();
            assert_eq!(e.code(), "BAD_INPUT", "{xml}: {e}");
        }
    }

    #[tokio::test]
    async fn oversized_stanzas_are_rejected() {
        let (node, _dir) = test_node("stanza-size").await;
        let body = "x".repeat(node.config.limits.max_stanza_size);
        let e = send_message(&node, "localhost", "bob@localhost", &body)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "BAD_INPUT");
        assert!(e.to_string().contains("max_stanza_size"), "{e}");
    }
}
