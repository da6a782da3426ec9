//! XEP-0030: Service Discovery, for the server and for accounts.

use tern_xmpp_proto::{Element, StanzaCondition, StanzaError, ns};

use super::result_for;
use crate::node::Node;

/// The features the server itself offers.
fn server_features(node: &Node) -> Vec<&'static str> {
    let mut features = vec![
        ns::DISCO_INFO,
        ns::DISCO_ITEMS,
        ns::PING,
        ns::VERSION,
        ns::ROSTER,
        ns::ROSTER_VER,
        "urn:ietf:params:xml:ns:xmpp-sasl",
        "urn:ietf:params:xml:ns:xmpp-tls",
        ns::BIND,
        ns::SESSION,
    ];
    if node.config.modules.register.enabled {
        features.push(ns::REGISTER);
    }
    if node.config.modules.offline.enabled {
        features.push(super::offline::FEATURE);
    }
    let m = &node.config.modules;
    for (on, feature) in [
        (m.private.enabled, super::private::NS),
        (m.vcard.enabled, super::vcard::NS),
        (m.last.enabled, super::last::NS),
        (m.time.enabled, ns::TIME),
        (m.carbons.enabled, super::carbons::NS),
        (m.blocking.enabled, super::privacy::NS_BLOCKING),
        (m.blocking.enabled, super::privacy::NS_PRIVACY),
        (m.mam.enabled, super::mam::NS),
    ] {
        if on {
            features.push(feature);
        }
    }
    features
}

fn unknown_node(iq: &Element, query: &Element) -> Option<Element> {
    query
        .attr("node")
        .map(|_| StanzaError::new(StanzaCondition::ItemNotFound).reply_to(iq))
}

fn info(identity: Element, features: &[&str], query_node: Option<&str>) -> Element {
    let mut q = Element::new("query", ns::DISCO_INFO)
        .with_attr_opt("node", query_node)
        .with_child(identity);
    for f in features {
        q.append_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", (*f).to_owned()));
    }
    q
}

/// disco#info of a served domain.
pub fn server_info(node: &Node, iq: &Element, query: &Element) -> Element {
    if let Some(e) = unknown_node(iq, query) {
        return e;
    }
    let identity = Element::new("identity", ns::DISCO_INFO)
        .with_attr("category", "server")
        .with_attr("type", "im")
        .with_attr("name", "Tern");
    result_for(iq).with_child(info(identity, &server_features(node), None))
}

/// disco#items of a served domain (services such as MUC register here as they arrive).
pub fn server_items(iq: &Element, query: &Element) -> Element {
    if let Some(e) = unknown_node(iq, query) {
        return e;
    }
    result_for(iq).with_child(Element::new("query", ns::DISCO_ITEMS))
}

/// disco#info of an account (its bare JID), answered by the server.
pub fn account_info(node: &Node, iq: &Element, query: &Element) -> Element {
    if let Some(e) = unknown_node(iq, query) {
        return e;
    }
    let identity = Element::new("identity", ns::DISCO_INFO)
        .with_attr("category", "account")
        .with_attr("type", "registered");
    let mut features = vec![ns::DISCO_INFO, ns::DISCO_ITEMS];
    if node.config.modules.mam.enabled {
        features.extend([super::mam::NS, super::mam::NS_V1, super::mam::NS_SID]);
    }
    let pep = node.config.modules.pep.enabled;
    if pep {
        features.extend(super::pep::FEATURES);
        if node.config.modules.private.enabled {
            features.push(super::pep::BOOKMARKS_COMPAT);
        }
        if node.config.modules.vcard.enabled {
            features.push(super::pep::PEP_VCARD_CONVERSION);
        }
    }
    let mut query = info(identity, &features, None);
    if pep {
        // XEP-0163 §6.1: the account is a PEP service.
        query.append_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "pubsub")
                .with_attr("type", "pep"),
        );
    }
    result_for(iq).with_child(query)
}

/// disco#items of `account`: its PEP nodes that the asker may read (XEP-0163 §8).
pub async fn account_items(
    node: &Node,
    account: &jid::BareJid,
    iq: &Element,
    query: &Element,
) -> Element {
    if let Some(e) = unknown_node(iq, query) {
        return e;
    }
    let requester = iq
        .attr("from")
        .and_then(|f| jid::Jid::new(f).ok())
        .map(|j| j.to_bare());
    let mut items = Element::new("query", ns::DISCO_ITEMS);
    if let Some(requester) = requester {
        for item in super::pep::node_list(node, account, &requester).await {
            items.append_child(item);
        }
    }
    result_for(iq).with_child(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn account_info_has_registered_identity() {
        let (node, _dir) = crate::admin::tests::test_node("disco-account").await;
        let iq = Element::parse(
            b"<iq type='get' id='d1' from='a@x/r' to='b@x'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            ns::CLIENT,
        )
        .unwrap();
        let query = iq.get_child("query", ns::DISCO_INFO).unwrap();
        let reply = account_info(&node, &iq, query);
        assert_eq!(reply.attr("type"), Some("result"));
        assert_eq!(reply.attr("to"), Some("a@x/r"));
        assert_eq!(reply.attr("from"), Some("b@x"));
        let q = reply.get_child("query", ns::DISCO_INFO).unwrap();
        let identity = q.get_child("identity", ns::DISCO_INFO).unwrap();
        assert_eq!(identity.attr("category"), Some("account"));
        assert_eq!(identity.attr("type"), Some("registered"));
        let features: Vec<&str> = q.children().filter_map(|f| f.attr("var")).collect();
        assert!(features.contains(&"urn:xmpp:mam:2"), "{features:?}");
    }

    #[test]
    fn unknown_node_is_item_not_found() {
        let iq = Element::parse(
            b"<iq type='get' id='d2' from='a@x/r' to='x'><query xmlns='http://jabber.org/protocol/disco#items' node='nope'/></iq>",
            ns::CLIENT,
        )
        .unwrap();
        let query = iq.get_child("query", ns::DISCO_ITEMS).unwrap();
        let reply = server_items(&iq, query);
        assert_eq!(reply.attr("type"), Some("error"));
        assert!(
            reply
                .get_child("error", ns::CLIENT)
                .unwrap()
                .has_child("item-not-found", ns::STANZAS)
        );
    }
}
