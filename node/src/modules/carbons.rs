//! XEP-0280 message carbons: each resource of an account that enabled carbons gets a copy of
//! the account's 1:1 messages that went to its other resources (`<received/>`) or were sent by
//! them (`<sent/>`), so every device shows the whole conversation.
//!
//! Copies are made where the account's sessions are kept — its home — so a session connected
//! to another datacenter (an edge session) gets them like a local one, and so do sessions of
//! one account in several datacenters. A message is copied when it is of type `chat`, or
//! `normal` with a body, or `error`, unless it carries `<private xmlns='urn:xmpp:carbons:2'/>`
//! or `<no-copy xmlns='urn:xmpp:hints'/>` (XEP-0334), is itself a carbon or a MUC message.

use std::sync::Arc;

use jid::BareJid;
use tern_xmpp_proto::{Element, Stanza, StanzaCondition, StanzaError, StanzaKind, ns};

use super::result_for;
use crate::node::Node;
use crate::sm::Session;

/// The protocol's namespace.
pub const NS: &str = "urn:xmpp:carbons:2";
/// XEP-0297 forwarding.
const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0334 processing hints.
const HINTS: &str = "urn:xmpp:hints";
/// MUC user extension: a message from or through a room is not carbon-copied.
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// `<enable/>` or `<disable/>` from the client of `session`.
pub fn handle_iq(node: &Node, session: &Session, iq: &Element, request: &Element) -> Element {
    if !node.config.modules.carbons.enabled {
        return StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(iq);
    }
    if iq.attr("type") != Some("set") {
        return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
    }
    match request.name() {
        "enable" => session.set_carbons(true),
        "disable" => session.set_carbons(false),
        _ => return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq),
    }
    result_for(iq)
}

/// Whether `message` is copied (XEP-0280 §6, with XEP-0334 `no-copy`).
fn eligible(message: &Element) -> bool {
    let copied_type = match message.attr("type").unwrap_or("normal") {
        "chat" | "error" => true,
        "normal" => message.has_child("body", ns::CLIENT),
        _ => false,
    };
    copied_type
        && !message.has_child("private", NS)
        && !message.has_child("no-copy", HINTS)
        && !message.has_child("received", NS)
        && !message.has_child("sent", NS)
        && !message.has_child("x", MUC_USER)
}

/// The other carbon-enabled sessions of `user`, leaving out the connections in `except`.
fn receivers(node: &Node, user: &BareJid, except: &[u64]) -> Vec<Arc<Session>> {
    // Asked for every message: nothing is copied unless some session enabled carbons.
    if !node
        .sm
        .any_resource(user, |s| s.carbons() && !except.contains(&s.conn_id))
    {
        return Vec::new();
    }
    node.sm
        .resources(user)
        .into_iter()
        .filter(|s| s.carbons() && !except.contains(&s.conn_id))
        .collect()
}

/// Delivers a `kind` (`received` or `sent`) copy of `message` to each of `sessions`.
fn copy(node: &Node, sessions: &[Arc<Session>], user: &BareJid, message: Element, kind: &str) {
    // Inside `<forwarded/>` the message is written with its `jabber:client` namespace.
    let wrapper =
        Element::new(kind, NS).with_child(Element::new("forwarded", FORWARD).with_child(message));
    for session in sessions {
        let carbon = Element::new("message", ns::CLIENT)
            .with_attr("from", user.to_string())
            .with_attr("to", session.jid.to_string())
            .with_attr("type", "chat")
            .with_child(wrapper.clone());
        if let Ok(stanza) = Stanza::from_element(&carbon, ns::CLIENT) {
            node.deliver(session, &stanza);
        }
    }
}

/// `message` was delivered to the sessions `delivered_to` of the account `user`: the other
/// carbon-enabled sessions get a `<received/>` copy.
pub fn received(node: &Node, user: &BareJid, message: &Stanza, delivered_to: &[u64]) {
    if message.kind != StanzaKind::Message || !node.config.modules.carbons.enabled {
        return;
    }
    let sessions = receivers(node, user, delivered_to);
    if sessions.is_empty() {
        return;
    }
    if let Ok(element) = message.element(ns::CLIENT)
        && eligible(&element)
    {
        copy(node, &sessions, user, element, "received");
    }
}

/// The client of `session` sent `message`: its account's other carbon-enabled sessions get a
/// `<sent/>` copy.
pub fn sent(node: &Node, session: &Session, message: &Stanza) {
    if !node.config.modules.carbons.enabled {
        return;
    }
    let user = session.jid.to_bare();
    let sessions = receivers(node, &user, &[session.conn_id]);
    if sessions.is_empty() {
        return;
    }
    if let Ok(element) = message.element(ns::CLIENT)
        && eligible(&element)
    {
        // A message to the account itself is copied as received by its resources anyway.
        if element
            .attr("to")
            .and_then(|to| jid::Jid::new(to).ok())
            .is_some_and(|to| to.to_bare() == user)
        {
            return;
        }
        copy(node, &sessions, &user, element, "sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(xml: &str) -> Element {
        Element::parse(xml.as_bytes(), ns::CLIENT).expect("xml")
    }

    #[test]
    fn which_messages_are_copied() {
        for (xml, copied) in [
            ("<message type='chat'><body>hi</body></message>", true),
            (
                "<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
                true,
            ),
            ("<message><body>hi</body></message>", true),
            ("<message type='normal'/>", false),
            (
                "<message type='headline'><body>news</body></message>",
                false,
            ),
            (
                "<message type='groupchat'><body>all</body></message>",
                false,
            ),
            ("<message type='error'/>", true),
            (
                "<message type='chat'><body>s</body><private xmlns='urn:xmpp:carbons:2'/></message>",
                false,
            ),
            (
                "<message type='chat'><body>s</body><no-copy xmlns='urn:xmpp:hints'/></message>",
                false,
            ),
            (
                "<message type='chat'><body>pm</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>",
                false,
            ),
            (
                "<message type='chat'><received xmlns='urn:xmpp:carbons:2'/></message>",
                false,
            ),
        ] {
            assert_eq!(eligible(&message(xml)), copied, "{xml}");
        }
    }
}
