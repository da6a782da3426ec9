//! The `stanza` category: send a chat message or any raw stanza through the router, as if a
//! local entity had sent it.
//!
//! Both commands accept only senders on a domain served here, so the admin API never forges
//! stanzas from other servers' users. Stanzas are limited to `limits.max_stanza_size`, like the
//! ones clients send.

use std::sync::Arc;

use async_graphql::{Context, Object, Result, SimpleObject};
use tern_xmpp_proto::stanza::Stanza;
use tern_xmpp_proto::{Element, ns};

use super::args::{any_jid, local_sender};
use super::error::{AdminError, AdminResult, graphql};
use super::schema::node;
use crate::node::Node;

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

/// A fresh stanza id.
fn new_id() -> String {
    format!("admin-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::{next_stanza, test_node, test_session};

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
