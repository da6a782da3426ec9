//! XEP-0352 client state indication: which stanzas wait while a client is inactive.
//!
//! Held back: presence (only the latest of each sender is kept) and messages without a body
//! (chat states, receipts without text). Urgent, so delivered at once after everything held:
//! messages with a body, IQs, and presence subscription requests and answers. Applied by the
//! node that carries the client's connection (for an edge session, the edge), where the
//! socket is.

use bytes::Bytes;
use tern_xmpp_proto::Stanza;

/// Most stanzas held for one session; at this many they all go out.
pub const MAX_HELD: usize = 256;

/// What to do with a stanza for an inactive client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Hold it; for presence, the sender whose earlier presence it replaces.
    Hold(Option<String>),
    /// Deliver it now, after what is held.
    Urgent,
}

/// Classifies stanza bytes (already known well-formed).
pub fn classify(bytes: &Bytes) -> Class {
    if bytes.starts_with(b"<presence") {
        let Ok(stanza) = Stanza::from_frame(bytes.clone()) else {
            return Class::Urgent;
        };
        if matches!(
            stanza.type_(),
            Some("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed" | "error")
        ) {
            return Class::Urgent;
        }
        return Class::Hold(stanza.from().map(str::to_owned));
    }
    if bytes.starts_with(b"<message") && !contains(bytes, b"<body") {
        return Class::Hold(None);
    }
    Class::Urgent
}

/// The sender of a held presence (`None` for other held stanzas).
pub fn presence_sender(bytes: &Bytes) -> Option<String> {
    if !bytes.starts_with(b"<presence") {
        return None;
    }
    Stanza::from_frame(bytes.clone())
        .ok()
        .and_then(|s| s.from().map(str::to_owned))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(xml: &'static str) -> Class {
        classify(&Bytes::from_static(xml.as_bytes()))
    }

    #[test]
    fn what_waits_for_an_inactive_client() {
        assert_eq!(
            class("<presence from='a@x/r'><show>away</show></presence>"),
            Class::Hold(Some("a@x/r".into()))
        );
        assert_eq!(
            class("<presence from='a@x' type='subscribe'/>"),
            Class::Urgent
        );
        assert_eq!(
            class(
                "<message from='a@x/r'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
            ),
            Class::Hold(None)
        );
        assert_eq!(
            class("<message from='a@x/r'><body>hi</body></message>"),
            Class::Urgent
        );
        assert_eq!(class("<iq type='get' id='1'/>"), Class::Urgent);
    }
}
