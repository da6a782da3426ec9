//! Server features, each in the module named for its spec.
//!
//! - [`roster`]: RFC 6121 roster management and XEP-0237 versioning.
//! - [`presence`]: RFC 6121 subscriptions, presence broadcast and probes.
//! - [`disco`]: XEP-0030 service discovery for the server and for accounts.
//! - [`register`]: XEP-0077 in-band registration.
//! - [`offline`]: XEP-0160 offline message storage and delivery.
//! - [`private`]: XEP-0049 private XML storage.
//! - [`vcard`]: XEP-0054 vCard-temp and XEP-0153 avatar hashes in presence.
//! - [`last`]: XEP-0012 last activity and XEP-0202 entity time.
//! - [`carbons`]: XEP-0280 message carbons.
//! - [`mam`]: XEP-0313 message archive management (1:1) and XEP-0359 stanza ids.
//! - [`privacy`]: XEP-0016 privacy lists and XEP-0191 blocking command.
//! - [`muc`]: XEP-0045 multi-user chat, rooms homed in one datacenter each.
//! - [`pep`]: XEP-0163 personal eventing on XEP-0060, XEP-0223, XEP-0402 (with XEP-0048
//!   compatibility), XEP-0398, and the XEP-0115 capabilities behind `+notify`.
//! - IQs handled inline here: XEP-0199 ping, XEP-0092 version, RFC 3921 legacy session.
//!
//! Dispatch: an IQ the server must answer goes to the handler registered for its payload
//! namespace; anything else gets `<service-unavailable/>` (RFC 6120 §8.4), never silence.

pub mod carbons;
pub mod disco;
pub mod last;
pub mod mam;
pub mod muc;
pub mod offline;
pub mod pep;
pub mod presence;
pub mod privacy;
pub mod private;
pub mod register;
pub mod roster;
pub mod vcard;

use std::sync::Arc;

use jid::{BareJid, Jid};
use tern_xmpp_proto::stanza::Stanza;
use tern_xmpp_proto::{Element, StanzaCondition, StanzaError, StanzaKind, ns};

use crate::node::Node;
use crate::sm::Session;

/// The payload of an IQ get/set: its single child element.
fn payload(iq: &Element) -> Option<&Element> {
    let mut children = iq.children();
    let first = children.next()?;
    children.next().is_none().then_some(first)
}

/// An empty IQ result for `iq`, addressed back to its sender.
pub fn result_for(iq: &Element) -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "result")
        .with_attr_opt("id", iq.attr("id"))
        .with_attr_opt("to", iq.attr("from"))
        .with_attr_opt("from", iq.attr("to"))
}

async fn send(node: &Arc<Node>, reply: Element) {
    if let Ok(stanza) = Stanza::from_element(&reply, ns::CLIENT) {
        node.route(stanza).await;
    }
}

/// A stanza addressed to a served domain itself.
pub async fn handle_server_stanza(node: &Arc<Node>, stanza: Stanza, to: Jid) {
    if stanza.kind != StanzaKind::Iq {
        // Messages and presence to the server itself have no handler; presence is ignored
        // (RFC 6121 §4.6), messages of type error/headline too.
        if stanza.kind == StanzaKind::Message
            && !stanza.is_type("error")
            && !stanza.is_type("headline")
            && !stanza.is_type("groupchat")
        {
            node.bounce(&stanza, StanzaCondition::ServiceUnavailable)
                .await;
        }
        return;
    }
    if !(stanza.is_type("get") || stanza.is_type("set")) {
        // Results and errors for the server (pings, pushes) end here.
        return;
    }
    let Ok(iq) = stanza.element(ns::CLIENT) else {
        return node.bounce(&stanza, StanzaCondition::BadRequest).await;
    };
    let reply = server_iq(node, &iq, to.domain().as_str()).await;
    send(node, reply).await;
}

async fn server_iq(node: &Arc<Node>, iq: &Element, domain: &str) -> Element {
    let Some(query) = payload(iq) else {
        return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
    };
    let get = iq.attr("type") == Some("get");
    match (query.ns(), query.name(), get) {
        (ns::DISCO_INFO, "query", true) => disco::server_info(node, iq, query),
        (ns::DISCO_ITEMS, "query", true) => disco::server_items(iq, query),
        (ns::PING, "ping", true) => result_for(iq),
        (ns::VERSION, "query", true) => version(node, iq),
        (ns::SESSION, "session", false) => result_for(iq),
        (ns::TIME, "time", true) => last::entity_time(node, iq),
        (last::NS, "query", true) => last::server(node, iq),
        (ns::REGISTER, "query", _) => register::post_auth(node, iq, domain).await,
        _ => StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(iq),
    }
}

/// XEP-0092: the server's software version.
fn version(node: &Node, iq: &Element) -> Element {
    let mut query = Element::new("query", ns::VERSION)
        .with_child(Element::new("name", ns::VERSION).with_text("Tern"))
        .with_child(Element::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")));
    if node.config.modules.version.show_os {
        query.append_child(Element::new("os", ns::VERSION).with_text(std::env::consts::OS));
    }
    result_for(iq).with_child(query)
}

/// An IQ get/set to a local account's bare JID from someone else: answered by the server on
/// the account's behalf (RFC 6121 §8.5.2.1.3 / §8.5.2.2.3).
pub async fn handle_account_iq(node: &Arc<Node>, stanza: Stanza, account: BareJid) {
    if !(stanza.is_type("get") || stanza.is_type("set")) {
        // Answers to the server's capability queries come back to the account (XEP-0115).
        pep::caps_answer(node, &stanza).await;
        return;
    }
    let Ok(iq) = stanza.element(ns::CLIENT) else {
        return node.bounce(&stanza, StanzaCondition::BadRequest).await;
    };
    let reply = match payload(&iq) {
        Some(q) if q.is("query", ns::DISCO_INFO) && iq.attr("type") == Some("get") => {
            disco::account_info(node, &iq, q)
        }
        Some(q) if q.is("query", ns::DISCO_ITEMS) && iq.attr("type") == Some("get") => {
            disco::account_items(node, &account, &iq, q).await
        }
        Some(q) if q.is("ping", ns::PING) && iq.attr("type") == Some("get") => result_for(&iq),
        Some(q) if q.is("vCard", vcard::NS) => {
            vcard::handle_iq(node, &account, &iq, q, false).await
        }
        Some(q) if q.is("query", last::NS) && iq.attr("type") == Some("get") => {
            last::account(node, &account, &iq).await
        }
        Some(q) if q.is("pubsub", pep::NS) || q.is("pubsub", pep::NS_OWNER) => {
            match iq.attr("from").and_then(|f| Jid::new(f).ok()) {
                Some(requester) => pep::handle_iq(node, &account, &requester, &iq, q).await,
                None => StanzaError::new(StanzaCondition::BadRequest).reply_to(&iq),
            }
        }
        _ => StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(&iq),
    };
    send(node, reply).await;
}

/// An IQ a client sends to its own account (no `to`, or its own bare JID).
pub async fn handle_own_iq(node: &Arc<Node>, session: &Arc<Session>, stanza: Stanza) {
    if !(stanza.is_type("get") || stanza.is_type("set")) {
        // The account's own client answering a capability query of its PEP service.
        pep::caps_answer(node, &stanza).await;
        return;
    }
    let Ok(mut iq) = stanza.element(ns::CLIENT) else {
        return node.bounce(&stanza, StanzaCondition::BadRequest).await;
    };
    let own = session.jid.to_bare().to_string();
    if iq.attr("to").is_none() {
        iq.set_attr("to", own.clone());
    }
    let reply = match payload(&iq) {
        Some(q) if q.is("query", ns::ROSTER) => roster::handle_iq(node, session, &iq).await,
        Some(q) if q.is("session", ns::SESSION) => result_for(&iq),
        Some(q) if q.is("ping", ns::PING) => result_for(&iq),
        Some(q) if q.is("query", ns::DISCO_INFO) && iq.attr("type") == Some("get") => {
            disco::account_info(node, &iq, q)
        }
        Some(q) if q.is("query", ns::DISCO_ITEMS) && iq.attr("type") == Some("get") => {
            let mut asked = iq.clone();
            asked.set_attr("from", session.jid.to_string());
            disco::account_items(node, &session.jid.to_bare(), &asked, q).await
        }
        Some(q) if q.is("query", ns::REGISTER) => {
            register::post_auth(node, &iq, session.jid.domain().as_str()).await
        }
        Some(q) if q.ns() == carbons::NS => carbons::handle_iq(node, session, &iq, q),
        Some(q) if q.ns() == mam::NS || q.ns() == mam::NS_V1 => {
            mam::handle_iq(node, session, &iq, q).await
        }
        Some(q) if q.ns() == privacy::NS_BLOCKING => {
            privacy::handle_blocking(node, session, &iq, q).await
        }
        Some(q) if q.is("query", privacy::NS_PRIVACY) => {
            privacy::handle_privacy(node, session, &iq, q).await
        }
        Some(q) if q.is("query", private::NS) => {
            let owner = session.jid.to_bare();
            private::handle_iq(node, &owner, &iq, q).await
        }
        Some(q) if q.is("vCard", vcard::NS) => {
            let owner = session.jid.to_bare();
            vcard::handle_iq(node, &owner, &iq, q, true).await
        }
        Some(q) if q.is("pubsub", pep::NS) || q.is("pubsub", pep::NS_OWNER) => {
            let owner = session.jid.to_bare();
            let requester = Jid::from(session.jid.clone());
            pep::handle_iq(node, &owner, &requester, &iq, q).await
        }
        Some(q) if q.is("query", last::NS) && iq.attr("type") == Some("get") => {
            let owner = session.jid.to_bare();
            let mut asked = iq.clone();
            asked.set_attr("from", session.jid.to_string());
            last::account(node, &owner, &asked).await
        }
        Some(_) => StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(&iq),
        None => StanzaError::new(StanzaCondition::BadRequest).reply_to(&iq),
    };
    // A reply from the client's own account carries no `from` (RFC 6120 §8.1.2.1).
    let mut reply = reply;
    reply.set_attr("to", session.jid.to_string());
    reply.remove_attr("from");
    if let Ok(stanza) = Stanza::from_element(&reply, ns::CLIENT) {
        node.deliver(session, &stanza);
    }
}
