//! XEP-0077: In-Band Registration.
//!
//! Before authentication (on an encrypted stream) a client may create an account, when
//! `modules.register.enabled` is on. After authentication it may change its password or remove
//! its account, whatever that setting.

use std::sync::Arc;

use tern_xmpp_proto::{Element, StanzaCondition, StanzaError, ns};

use super::result_for;
use crate::accounts::{self, AccountError};
use crate::node::Node;

fn form(instructions: &str) -> Element {
    Element::new("query", ns::REGISTER)
        .with_child(Element::new("instructions", ns::REGISTER).with_text(instructions))
        .with_child(Element::new("username", ns::REGISTER))
        .with_child(Element::new("password", ns::REGISTER))
}

fn field(query: &Element, name: &str) -> Option<String> {
    query
        .get_child(name, ns::REGISTER)
        .map(|e| e.text())
        .filter(|t| !t.is_empty())
}

/// A registration IQ before authentication; returns the serialised reply.
pub async fn pre_auth(node: &Arc<Node>, domain: &str, iq: Element) -> String {
    let reply = pre_auth_reply(node, domain, &iq).await;
    let mut reply = reply;
    // Before binding the client has no address; replies carry none.
    reply.remove_attr("to");
    reply.remove_attr("from");
    reply.to_xml(ns::CLIENT)
}

async fn pre_auth_reply(node: &Arc<Node>, domain: &str, iq: &Element) -> Element {
    if !node.config.modules.register.enabled {
        return StanzaError::new(StanzaCondition::ServiceUnavailable)
            .with_text("in-band registration is disabled")
            .reply_to(iq);
    }
    let Some(query) = iq.get_child("query", ns::REGISTER) else {
        return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
    };
    match iq.attr("type") {
        Some("get") => result_for(iq).with_child(form(
            "Choose a username and password to register with this server.",
        )),
        Some("set") => {
            if query.has_child("remove", ns::REGISTER) {
                return StanzaError::new(StanzaCondition::NotAuthorized).reply_to(iq);
            }
            let (Some(username), Some(password)) =
                (field(query, "username"), field(query, "password"))
            else {
                return StanzaError::new(StanzaCondition::NotAcceptable)
                    .with_text("username and password are required")
                    .reply_to(iq);
            };
            let Ok(jid) = accounts::account_jid(node, &username, domain) else {
                return StanzaError::new(StanzaCondition::JidMalformed)
                    .with_text("invalid username")
                    .reply_to(iq);
            };
            match accounts::register(node, &jid, &password, None).await {
                Ok(()) => {
                    tracing::info!(user = %jid, "account registered in band");
                    result_for(iq)
                }
                Err(AccountError::Exists(_)) => {
                    StanzaError::new(StanzaCondition::Conflict).reply_to(iq)
                }
                Err(AccountError::EmptyPassword) => {
                    StanzaError::new(StanzaCondition::NotAcceptable).reply_to(iq)
                }
                Err(e) => {
                    tracing::error!(error = %e, "in-band registration failed");
                    StanzaError::new(StanzaCondition::InternalServerError).reply_to(iq)
                }
            }
        }
        _ => StanzaError::new(StanzaCondition::BadRequest).reply_to(iq),
    }
}

/// A registration IQ from an authenticated session (`from` is its full JID): shows the
/// registration, changes the password, or removes the account.
pub async fn post_auth(node: &Arc<Node>, iq: &Element, domain: &str) -> Element {
    let Some(from) = iq.attr("from").and_then(|f| jid::Jid::new(f).ok()) else {
        return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
    };
    let user = from.to_bare();
    if user.domain().as_str() != domain || user.node().is_none() {
        return StanzaError::new(StanzaCondition::Forbidden).reply_to(iq);
    }
    let Some(query) = iq.get_child("query", ns::REGISTER) else {
        return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
    };
    match iq.attr("type") {
        Some("get") => {
            let localpart = user.node().map(|n| n.to_string()).unwrap_or_default();
            result_for(iq).with_child(
                Element::new("query", ns::REGISTER)
                    .with_child(Element::new("registered", ns::REGISTER))
                    .with_child(Element::new("username", ns::REGISTER).with_text(localpart)),
            )
        }
        Some("set") if query.has_child("remove", ns::REGISTER) => {
            match accounts::remove(node, &user).await {
                Ok(()) => {
                    // accounts::remove ends the account's sessions.
                    tracing::info!(user = %user, "account removed in band");
                    result_for(iq)
                }
                Err(e) => {
                    tracing::error!(error = %e, "in-band removal failed");
                    StanzaError::new(StanzaCondition::InternalServerError).reply_to(iq)
                }
            }
        }
        Some("set") => {
            let username = field(query, "username");
            let localpart = user.node().map(|n| n.to_string());
            if username.is_some() && username.map(|u| u.to_lowercase()) != localpart {
                return StanzaError::new(StanzaCondition::NotAllowed)
                    .with_text("the username cannot be changed")
                    .reply_to(iq);
            }
            let Some(password) = field(query, "password") else {
                return StanzaError::new(StanzaCondition::BadRequest).reply_to(iq);
            };
            match accounts::change_password(node, &user, &password).await {
                Ok(()) => result_for(iq),
                Err(e) => {
                    tracing::error!(error = %e, "in-band password change failed");
                    StanzaError::new(StanzaCondition::InternalServerError).reply_to(iq)
                }
            }
        }
        _ => StanzaError::new(StanzaCondition::BadRequest).reply_to(iq),
    }
}
