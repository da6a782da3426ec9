//! What a bound session does with the stanzas its client sends (DESIGN.md step 3).
//!
//! The stream has already stamped `from`. Here the `to` address is checked, stanzas meant for
//! the account itself are answered, presence goes through the presence module, and everything
//! else is handed to the router. Per-session modules of later issues (stream management,
//! carbons, CSI, privacy) hook in here.

use std::sync::Arc;

use jid::Jid;
use tern_xmpp_proto::stanza::Stanza;
use tern_xmpp_proto::{StanzaCondition, StanzaKind};

use crate::modules;
use crate::node::Node;
use crate::sm::Session;

/// Handles one stanza from the client of `session`.
pub async fn handle_client_stanza(node: &Arc<Node>, session: &Arc<Session>, stanza: Stanza) {
    node.metrics.stanza_in(stanza.kind);
    let to = match stanza.to() {
        None => None,
        Some(text) => match Jid::new(text) {
            Ok(jid) => Some(jid),
            Err(_) => return reply_error(node, session, &stanza, StanzaCondition::JidMalformed),
        },
    };
    // XEP-0016 / XEP-0191: stanzas to a contact the account's lists deny are refused here.
    if node.privacy.any()
        && let Some(to) = &to
        && !modules::privacy::outbound_allowed(node, session, to, &stanza).await
    {
        return;
    }
    match stanza.kind {
        StanzaKind::Presence => modules::presence::outbound(node, session, stanza, to).await,
        StanzaKind::Iq => {
            let valid_type = matches!(stanza.type_(), Some("get" | "set" | "result" | "error"));
            if stanza.id().is_none() || !valid_type {
                return reply_error(node, session, &stanza, StanzaCondition::BadRequest);
            }
            let own = session.jid.to_bare();
            match &to {
                None => modules::handle_own_iq(node, session, stanza).await,
                Some(jid) if jid.is_bare() && jid.to_bare() == own => {
                    modules::handle_own_iq(node, session, stanza).await
                }
                Some(_) => node.route(stanza).await,
            }
        }
        StanzaKind::Message => {
            if to.is_none() {
                // RFC 6120 §8.1.1.1: no `to` means the account itself.
                let own = session.jid.to_bare().to_string();
                let addressed = stanza.with_addresses(None, Some(&own));
                return node.route(addressed).await;
            }
            let stanza = modules::mam::archive_outgoing(node, session, stanza).await;
            modules::carbons::sent(node, session, &stanza);
            node.route(stanza).await;
        }
    }
}

/// Answers a stanza straight back to its session (used when it cannot even be routed).
fn reply_error(node: &Node, session: &Session, stanza: &Stanza, condition: StanzaCondition) {
    node.reply_to_session(session, stanza, condition, false);
}
