//! XEP-0049: private XML storage. A client keeps XML documents on its account, one per
//! (element name, namespace); only the account itself may read or write them. XEP-0048
//! bookmarks (`storage:bookmarks`) are the best-known use.
//!
//! Stored as account items of kind [`KIND`] keyed by `{namespace}name`, the element as XML.

use std::sync::Arc;

use jid::BareJid;
use tern_xmpp_proto::{Element, StanzaCondition, StanzaError, ns};

use super::result_for;
use crate::node::Node;

/// The namespace of the protocol.
pub const NS: &str = "jabber:iq:private";
/// The account item kind.
pub const KIND: &str = "private";

/// Namespaces that may not be stored (the protocol's own, and the stream's).
const RESERVED: [&str; 3] = [NS, ns::CLIENT, ns::SERVER];

fn key(element: &Element) -> String {
    format!("{{{}}}{}", element.ns(), element.name())
}

/// Answers a `jabber:iq:private` get or set the account `owner` sent to itself.
pub async fn handle_iq(
    node: &Arc<Node>,
    owner: &BareJid,
    iq: &Element,
    query: &Element,
) -> Element {
    if !node.config.modules.private.enabled {
        return StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(iq);
    }
    let mut children = query.children();
    let (Some(child), None) = (children.next(), children.next()) else {
        // Exactly one child per request (XEP-0049 §2).
        return StanzaError::new(StanzaCondition::NotAcceptable).reply_to(iq);
    };
    if RESERVED.contains(&child.ns()) {
        return StanzaError::new(StanzaCondition::NotAcceptable).reply_to(iq);
    }
    if iq.attr("type") == Some("get") {
        let stored = match get_xml(node, owner, child).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, "private storage read failed");
                return StanzaError::new(StanzaCondition::InternalServerError).reply_to(iq);
            }
        };
        // Nothing stored: the empty element comes back, as asked.
        let element = stored
            .and_then(|xml| Element::parse(xml.as_bytes(), child.ns()).ok())
            .unwrap_or_else(|| Element::new(child.name(), child.ns()));
        return result_for(iq).with_child(Element::new("query", NS).with_child(element));
    }
    match set(node, owner, child).await {
        Ok(()) => {
            // XEP-0402 `#compat`: bookmarks stored here show in the PEP node too.
            if child.is("storage", super::pep::NS_BOOKMARKS_LEGACY) {
                super::pep::private_bookmarks_stored(node, owner, child).await;
            }
            result_for(iq)
        }
        Err(condition) => {
            let mut error = StanzaError::new(condition);
            if condition == StanzaCondition::NotAcceptable {
                error = error.with_text("the document is larger than this server keeps");
            }
            error.reply_to(iq)
        }
    }
}

/// The document `owner` stored under `probe`'s name and namespace, as XML.
pub async fn get_xml(
    node: &Node,
    owner: &BareJid,
    probe: &Element,
) -> crate::storage::Result<Option<String>> {
    Ok(node
        .storage
        .get_item(owner, KIND, &key(probe))
        .await?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// Stores `element` as `owner`'s document for its name and namespace.
pub async fn set(node: &Node, owner: &BareJid, element: &Element) -> Result<(), StanzaCondition> {
    if RESERVED.contains(&element.ns()) {
        return Err(StanzaCondition::NotAcceptable);
    }
    let xml = element.to_xml("");
    if xml.len() > node.config.modules.private.max_size {
        return Err(StanzaCondition::NotAcceptable);
    }
    match node
        .storage
        .put_item(owner, KIND, &key(element), Some(xml.into_bytes()))
        .await
    {
        Ok(()) => Ok(()),
        Err(crate::storage::Error::UserNotFound { .. }) => Err(StanzaCondition::ItemNotFound),
        Err(e) => {
            tracing::error!(error = %e, "private storage write failed");
            Err(StanzaCondition::InternalServerError)
        }
    }
}
