//! Parsing and checking the JIDs and domains that resolvers receive as arguments, with the
//! [`AdminError`] a client sees when one is wrong.

use std::time::UNIX_EPOCH;

use jid::{BareJid, FullJid, Jid};

use super::error::{AdminError, AdminResult};
use crate::node::Node;

/// A domain served by this node, normalized as in a JID.
pub(crate) fn served_domain(node: &Node, domain: &str) -> AdminResult<String> {
    let domain = parsed_domain(domain)?;
    if !node.serves(&domain) {
        return Err(AdminError::UnknownDomain(domain));
    }
    Ok(domain)
}

/// A domain served here or, in a mesh, by other datacenters only (accounts of it can be
/// created at their home from here).
pub(crate) fn mesh_domain(node: &Node, domain: &str) -> AdminResult<String> {
    let domain = parsed_domain(domain)?;
    if !node.serves(&domain) && node.domains.served_elsewhere(&domain).is_none() {
        return Err(AdminError::UnknownDomain(domain));
    }
    Ok(domain)
}

fn parsed_domain(domain: &str) -> AdminResult<String> {
    let jid = BareJid::new(domain)
        .map_err(|e| AdminError::BadInput(format!("invalid domain {domain:?}: {e}")))?;
    if jid.node().is_some() {
        return Err(AdminError::BadInput(format!(
            "expected a domain, found the JID {domain:?}"
        )));
    }
    Ok(jid.domain().as_str().to_owned())
}

/// A domain name given to the `domain` category, lowercased: not empty, no `@`, `/` or
/// whitespace, no empty label (`a..b`, a leading or trailing dot), and valid as a JID's
/// domainpart. The domain may or may not exist.
pub(crate) fn domain_name(domain: &str) -> AdminResult<String> {
    let lower = domain.to_lowercase();
    let bad = |why: &str| AdminError::BadInput(format!("invalid domain {domain:?}: {why}"));
    if lower.is_empty() {
        return Err(bad("it is empty"));
    }
    if let Some(c) = lower
        .chars()
        .find(|c| matches!(c, '@' | '/') || c.is_whitespace() || c.is_control())
    {
        return Err(bad(&format!("it contains {c:?}")));
    }
    if lower.split('.').any(str::is_empty) {
        return Err(bad("it has an empty label"));
    }
    let jid = BareJid::new(&lower).map_err(|e| bad(&e.to_string()))?;
    Ok(jid.domain().as_str().to_owned())
}

/// The bare JID of an existing account homed in this node's datacenter; NOT_FOUND naming the
/// datacenter for an account that lives elsewhere (its data is only there).
pub(crate) async fn home_user(
    node: &Node,
    user: &str,
    operation: &'static str,
) -> AdminResult<BareJid> {
    let jid = local_user(node, user)?;
    if let Some((home, _)) = node.remote_home(&jid) {
        return Err(AdminError::NotFound(format!(
            "{jid} lives in datacenter {home}: run the command against a node there"
        )));
    }
    match node.storage.get_user(&jid).await {
        Ok(Some(_)) => Ok(jid),
        Ok(None) => Err(AdminError::NotFound(format!(
            "account {jid} does not exist"
        ))),
        Err(e) => Err(AdminError::internal(operation, &e)),
    }
}

/// The bare JID (`user@domain`) of a user of a domain served here; the account may or may not
/// exist.
pub(crate) fn local_user(node: &Node, user: &str) -> AdminResult<BareJid> {
    let jid = bare_user(user)?;
    if !node.serves(jid.domain().as_str()) {
        return Err(AdminError::UnknownDomain(jid.domain().to_string()));
    }
    Ok(jid)
}

/// A bare JID with a localpart (`user@domain`), local or not.
pub(crate) fn bare_user(user: &str) -> AdminResult<BareJid> {
    let jid = BareJid::new(user)
        .map_err(|e| AdminError::BadInput(format!("invalid user JID {user:?}: {e}")))?;
    if jid.node().is_none() {
        return Err(AdminError::BadInput(format!(
            "{user:?} is not a user JID (user@domain)"
        )));
    }
    Ok(jid)
}

/// A full JID (`user@domain/resource`).
pub(crate) fn full_jid(jid: &str) -> AdminResult<FullJid> {
    FullJid::new(jid).map_err(|e| {
        AdminError::BadInput(format!(
            "expected a full JID (user@domain/resource), found {jid:?}: {e}"
        ))
    })
}

/// Any JID; `what` names the argument in the message.
pub(crate) fn any_jid(what: &str, jid: &str) -> AdminResult<Jid> {
    Jid::new(jid).map_err(|e| AdminError::BadInput(format!("invalid {what} JID {jid:?}: {e}")))
}

/// A JID whose domain is served here (a local user, one of its resources, or the domain
/// itself): what the server may put in `from` of a stanza it sends for the admin.
pub(crate) fn local_sender(node: &Node, jid: &str) -> AdminResult<Jid> {
    let parsed = any_jid("sender", jid)?;
    if !node.serves(parsed.domain().as_str()) {
        return Err(AdminError::BadInput(format!(
            "the sender {jid} is not on a domain served here"
        )));
    }
    Ok(parsed)
}

/// An RFC 3339 time (UTC: `Z` or no offset) as microseconds since the Unix epoch.
pub(crate) fn micros_of(text: &str) -> AdminResult<u64> {
    let bad = || {
        AdminError::BadInput(format!(
            "invalid time {text:?}: expected RFC 3339 in UTC, like 2025-01-31T09:30:00Z"
        ))
    };
    let time =
        humantime::parse_rfc3339_weak(text.trim_end_matches(['Z', 'z'])).map_err(|_| bad())?;
    time.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_micros()).ok())
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::test_node;

    #[tokio::test]
    async fn checks_domains() {
        let (node, _dir) = test_node("args-domain").await;
        assert_eq!(served_domain(&node, "LocalHost").unwrap(), "localhost");
        assert_eq!(
            served_domain(&node, "example.org").unwrap_err().code(),
            "UNKNOWN_DOMAIN"
        );
        assert_eq!(
            served_domain(&node, "a@localhost").unwrap_err().code(),
            "BAD_INPUT"
        );
    }

    #[test]
    fn checks_domain_names() {
        assert_eq!(domain_name("Chat.Example.ORG").unwrap(), "chat.example.org");
        assert_eq!(domain_name("localhost").unwrap(), "localhost");
        for bad in [
            "",
            "a@b.org",
            "b.org/res",
            "b .org",
            "b.org\n",
            "a..b",
            ".b.org",
            "b.org.",
            "\u{7}x",
        ] {
            assert_eq!(domain_name(bad).unwrap_err().code(), "BAD_INPUT", "{bad:?}");
        }
    }

    #[tokio::test]
    async fn checks_user_jids() {
        let (node, _dir) = test_node("args-user").await;
        assert_eq!(
            local_user(&node, "alice@localhost").unwrap().as_str(),
            "alice@localhost"
        );
        for bad in ["localhost", "alice@localhost/phone", "@localhost", ""] {
            assert_eq!(
                local_user(&node, bad).unwrap_err().code(),
                "BAD_INPUT",
                "{bad}"
            );
        }
        assert_eq!(
            local_user(&node, "alice@example.org").unwrap_err().code(),
            "UNKNOWN_DOMAIN"
        );
        assert!(bare_user("alice@example.org").is_ok());
    }

    #[tokio::test]
    async fn checks_full_jids_and_senders() {
        let (node, _dir) = test_node("args-full").await;
        assert!(full_jid("alice@localhost/phone").is_ok());
        assert_eq!(full_jid("alice@localhost").unwrap_err().code(), "BAD_INPUT");
        assert!(local_sender(&node, "localhost").is_ok());
        assert!(local_sender(&node, "alice@localhost/phone").is_ok());
        assert_eq!(
            local_sender(&node, "eve@example.org").unwrap_err().code(),
            "BAD_INPUT"
        );
    }
}
