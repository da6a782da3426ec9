//! XEP-0160: Best Practices for Handling Offline Messages.
//!
//! A `chat` or `normal` message (RFC 6121 §8.5.2: never `headline`, `error` or `groupchat`) to an
//! existing account with no available resource is stored at the account's home, with a XEP-0203
//! `<delay/>` saying when the server received it. The account's next available presence of
//! non-negative priority from a session that was not yet available with one (its initial
//! presence, as a rule) receives every stored message, in the order they arrived, and the store
//! is emptied. Over `[modules.offline] max_messages` nothing more is stored: the sender gets
//! `<resource-constraint/>`, so no message is ever dropped without a word.

use std::sync::Arc;
use std::time::SystemTime;

use jid::BareJid;
use tern_xmpp_proto::stanza::Stanza;
use tern_xmpp_proto::{Element, StanzaCondition, ns};

use crate::node::Node;
use crate::sm::Session;
use crate::storage::OfflineStored;

/// The disco#info feature of offline message storage (XEP-0160 §4, XEP-0013's `msgoffline`).
pub const FEATURE: &str = "msgoffline";

/// Whether RFC 6121 lets `stanza` (a message) be stored for later delivery.
pub fn storable(stanza: &Stanza) -> bool {
    !matches!(stanza.type_(), Some("headline" | "error" | "groupchat")) && !no_store(stanza)
}

/// Whether the sender asked that the message not be stored (XEP-0334 `<no-store/>`); it is
/// then answered as undeliverable instead.
fn no_store(stanza: &Stanza) -> bool {
    let raw = stanza.raw();
    let hinted = raw
        .windows(b"urn:xmpp:hints".len())
        .any(|w| w == b"urn:xmpp:hints");
    hinted
        && stanza
            .element(ns::CLIENT)
            .is_ok_and(|e| e.has_child("no-store", "urn:xmpp:hints"))
}

/// Stores `stanza` (a storable message to the existing account `user`) for later delivery.
/// Answers the sender with `<resource-constraint/>` when the user's store is full, and with
/// `<service-unavailable/>` when the message cannot be stored at all.
pub async fn store(node: &Arc<Node>, stanza: Stanza, user: &BareJid) {
    let Some(delayed) = with_delay(&stanza, user.domain().as_str(), SystemTime::now()) else {
        tracing::warn!(to = %user, "offline message not stored: it does not parse");
        return node
            .bounce(&stanza, StanzaCondition::ServiceUnavailable)
            .await;
    };
    let limit = node.config.modules.offline.max_messages;
    match node
        .storage
        .store_offline(user, delayed.raw().clone(), limit)
        .await
    {
        Ok(OfflineStored::Stored(count)) => {
            tracing::debug!(to = %user, count, "offline message stored");
        }
        Ok(OfflineStored::Full) => {
            tracing::debug!(to = %user, limit, "offline store full");
            node.bounce(&stanza, StanzaCondition::ResourceConstraint)
                .await;
        }
        Err(e) => {
            tracing::error!(error = %e, to = %user, "offline message store failed");
            node.bounce(&stanza, StanzaCondition::InternalServerError)
                .await;
        }
    }
}

/// Delivers every stored message of the session's account to `session`, in order, and deletes
/// them. Messages the session cannot queue are stored again so none is lost.
pub async fn deliver_stored(node: &Arc<Node>, session: &Session) {
    let user = session.jid.to_bare();
    let messages = match node.storage.take_offline(&user).await {
        Ok(messages) => messages,
        Err(e) => {
            tracing::error!(error = %e, user = %user, "offline messages could not be read");
            return;
        }
    };
    let mut messages = messages.into_iter();
    while let Some(raw) = messages.next() {
        let Ok(stanza) = Stanza::from_frame(raw.clone()) else {
            tracing::warn!(user = %user, "a stored offline message does not parse: skipped");
            continue;
        };
        if !node.deliver(session, &stanza) {
            // The session's queue is full or closed: keep this one and the rest for later.
            for raw in std::iter::once(raw).chain(messages) {
                if let Err(e) = node.storage.store_offline(&user, raw, usize::MAX).await {
                    tracing::error!(error = %e, user = %user, "offline message lost on redelivery");
                }
            }
            return;
        }
    }
}

/// `stanza` with a XEP-0203 `<delay from='domain' stamp='…'/>` child for the time `at`;
/// `None` if the stanza does not parse.
pub fn with_delay(stanza: &Stanza, domain: &str, at: SystemTime) -> Option<Stanza> {
    let mut element = stanza.element(ns::CLIENT).ok()?;
    let stamp = humantime::format_rfc3339_millis(at).to_string();
    element.append_child(
        Element::new("delay", ns::DELAY)
            .with_attr("from", domain.to_owned())
            .with_attr("stamp", stamp),
    );
    Stanza::from_element(&element, ns::CLIENT).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::{Duration, UNIX_EPOCH};

    fn message(xml: &str) -> Stanza {
        Stanza::from_frame(Bytes::from(xml.to_owned())).unwrap()
    }

    #[test]
    fn only_chat_and_normal_messages_are_storable() {
        for (xml, expected) in [
            ("<message to='a@b'/>", true),
            ("<message type='normal' to='a@b'/>", true),
            ("<message type='chat' to='a@b'/>", true),
            ("<message type='headline' to='a@b'/>", false),
            ("<message type='error' to='a@b'/>", false),
            ("<message type='groupchat' to='a@b'/>", false),
            (
                "<message type='chat' to='a@b'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>",
                false,
            ),
            (
                "<message type='chat' to='a@b'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>",
                true,
            ),
        ] {
            assert_eq!(storable(&message(xml)), expected, "{xml}");
        }
    }

    #[test]
    fn delay_is_added_with_domain_and_utc_stamp() {
        let stanza = message(
            "<message xmlns='jabber:client' type='chat' from='r@b.example/x' to='a@b.example' \
             id='m1'><body>hi &amp; bye</body></message>",
        );
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let delayed = with_delay(&stanza, "b.example", at).unwrap();
        assert_eq!(delayed.to(), Some("a@b.example"));
        assert_eq!(delayed.from(), Some("r@b.example/x"));
        assert_eq!(delayed.id(), Some("m1"));
        let element = delayed.element(ns::CLIENT).unwrap();
        assert_eq!(
            element.get_child("body", ns::CLIENT).unwrap().text(),
            "hi & bye"
        );
        let delay = element.get_child("delay", ns::DELAY).unwrap();
        assert_eq!(delay.attr("from"), Some("b.example"));
        assert_eq!(delay.attr("stamp"), Some("2023-11-14T22:13:20.123Z"));
    }
}
