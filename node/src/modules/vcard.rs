//! XEP-0054 vCard-temp, with XEP-0153 avatar hashes in presence.
//!
//! An account sets its own vCard (`<iq type='set'><vCard xmlns='vcard-temp'>…`) and anyone
//! may read it at the account's bare JID; the server answers at the account's home. The
//! stored document is limited to `[modules.vcard] max_size` (`<not-acceptable/>` over it).
//! When the vCard has a photo, the SHA-1 of its bytes is kept too, and the server adds
//! `<x xmlns='vcard-temp:x:update'><photo>HASH</photo></x>` to the account's available
//! presence when the client did not (XEP-0153 §4.1), so contacts learn of the avatar even from
//! clients that do not announce it.

use std::sync::Arc;

use base64::Engine as _;
use jid::BareJid;
use sha1::{Digest as _, Sha1};
use tern_xmpp_proto::{Element, StanzaCondition, StanzaError};

use super::result_for;
use crate::node::Node;

/// The vCard namespace.
pub const NS: &str = "vcard-temp";
/// XEP-0153's presence extension.
pub const NS_UPDATE: &str = "vcard-temp:x:update";
/// The account item kind.
pub const KIND: &str = "vcard";
/// Item keys: the document, and the photo's hash.
const DOCUMENT: &str = "";
const PHOTO_HASH: &str = "photo";

/// The SHA-1 (hex) of the vCard's photo, if it has one with decodable data.
fn photo_hash(vcard: &Element) -> Option<String> {
    let binval = vcard
        .get_child("PHOTO", NS)?
        .get_child("BINVAL", NS)?
        .text();
    let cleaned: String = binval.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned)
        .ok()?;
    Some(hex(&Sha1::digest(&bytes)))
}

/// Lowercase hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stored vCard of `owner` (an empty one when none is stored).
async fn stored(node: &Node, owner: &BareJid) -> Result<Element, ()> {
    match node.storage.get_item(owner, KIND, DOCUMENT).await {
        Ok(Some(bytes)) => {
            Ok(Element::parse(&bytes, NS).unwrap_or_else(|_| Element::new("vCard", NS)))
        }
        Ok(None) => Ok(Element::new("vCard", NS)),
        Err(e) => {
            tracing::error!(error = %e, "vCard read failed");
            Err(())
        }
    }
}

/// Answers a vCard get (by anyone, for the account `owner`) or set (by `owner` itself).
pub async fn handle_iq(
    node: &Arc<Node>,
    owner: &BareJid,
    iq: &Element,
    vcard: &Element,
    own: bool,
) -> Element {
    if !node.config.modules.vcard.enabled {
        return StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(iq);
    }
    if iq.attr("type") == Some("get") {
        return match stored(node, owner).await {
            Ok(document) => result_for(iq).with_child(document),
            Err(()) => StanzaError::new(StanzaCondition::InternalServerError).reply_to(iq),
        };
    }
    if !own {
        // Only the account itself changes its vCard.
        return StanzaError::new(StanzaCondition::Forbidden).reply_to(iq);
    }
    let hash_before = stored_hash(node, owner).await;
    match set(node, owner, vcard).await {
        Ok(()) => {
            // XEP-0398: a new photo becomes the PEP avatar too.
            if node.config.modules.pep.enabled && photo_hash(vcard) != hash_before {
                let photo = photo_of(vcard);
                super::pep::vcard_photo_changed(
                    node,
                    owner,
                    photo.as_ref().map(|(t, d)| (t.as_str(), d.as_str())),
                )
                .await;
            }
            result_for(iq)
        }
        Err(condition) => {
            let mut error = StanzaError::new(condition);
            if condition == StanzaCondition::NotAcceptable {
                error = error.with_text("the vCard is larger than this server keeps");
            }
            error.reply_to(iq)
        }
    }
}

/// The stored photo hash of `owner`.
async fn stored_hash(node: &Node, owner: &BareJid) -> Option<String> {
    let bytes = node
        .storage
        .get_item(owner, KIND, PHOTO_HASH)
        .await
        .ok()
        .flatten()?;
    String::from_utf8(bytes).ok()
}

/// The vCard's photo: MIME type and base64 data.
fn photo_of(vcard: &Element) -> Option<(String, String)> {
    let photo = vcard.get_child("PHOTO", NS)?;
    let data = photo.get_child("BINVAL", NS)?.text();
    let mime = photo
        .get_child("TYPE", NS)
        .map_or_else(|| "image/png".to_owned(), Element::text);
    Some((mime, data))
}

/// XEP-0398: the account published a new PEP avatar (`Some((mime, base64))`) or removed it:
/// its vCard photo follows.
pub async fn set_photo(node: &Node, owner: &BareJid, photo: Option<(&str, &str)>) {
    let Ok(mut vcard) = stored(node, owner).await else {
        return;
    };
    let current = photo_of(&vcard);
    if current.as_ref().map(|(t, d)| (t.as_str(), d.as_str())) == photo {
        return;
    }
    vcard.retain_children(|c| !c.is("PHOTO", NS));
    if let Some((mime, data)) = photo {
        vcard.append_child(
            Element::new("PHOTO", NS)
                .with_child(Element::new("TYPE", NS).with_text(mime))
                .with_child(Element::new("BINVAL", NS).with_text(data)),
        );
    }
    if let Err(condition) = set(node, owner, &vcard).await {
        tracing::warn!(%owner, condition = condition.as_str(), "avatar not copied to the vCard");
    }
}

/// Stores `vcard` as `owner`'s, and its photo hash.
pub async fn set(node: &Node, owner: &BareJid, vcard: &Element) -> Result<(), StanzaCondition> {
    let xml = vcard.to_xml("");
    if xml.len() > node.config.modules.vcard.max_size {
        return Err(StanzaCondition::NotAcceptable);
    }
    let hash = photo_hash(vcard);
    let stored = node
        .storage
        .put_item(owner, KIND, DOCUMENT, Some(xml.into_bytes()))
        .await;
    let hashed = node
        .storage
        .put_item(owner, KIND, PHOTO_HASH, hash.map(String::into_bytes))
        .await;
    match stored.and(hashed) {
        Ok(()) => Ok(()),
        Err(crate::storage::Error::UserNotFound { .. }) => Err(StanzaCondition::ItemNotFound),
        Err(e) => {
            tracing::error!(error = %e, "vCard write failed");
            Err(StanzaCondition::InternalServerError)
        }
    }
}

/// The vCard of `owner` as XML, for the admin API (`None`: none stored).
pub async fn get_xml(node: &Node, owner: &BareJid) -> crate::storage::Result<Option<String>> {
    Ok(node
        .storage
        .get_item(owner, KIND, DOCUMENT)
        .await?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// `presence` with the account's avatar hash added when it has a photo and the client put no
/// `vcard-temp:x:update` in it; `None` when nothing is to be added.
pub async fn with_avatar_hash(node: &Node, owner: &BareJid, presence: &Element) -> Option<Element> {
    if !node.config.modules.vcard.enabled || presence.has_child("x", NS_UPDATE) {
        return None;
    }
    let hash = node
        .storage
        .get_item(owner, KIND, PHOTO_HASH)
        .await
        .ok()
        .flatten()?;
    let hash = String::from_utf8(hash).ok()?;
    let mut presence = presence.clone();
    presence.append_child(
        Element::new("x", NS_UPDATE).with_child(Element::new("photo", NS_UPDATE).with_text(hash)),
    );
    Some(presence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_photo_hash_is_the_sha1_of_the_decoded_bytes() {
        // "hello" in base64, with the line breaks vCards carry.
        let vcard = Element::new("vCard", NS).with_child(
            Element::new("PHOTO", NS)
                .with_child(Element::new("TYPE", NS).with_text("image/png"))
                .with_child(Element::new("BINVAL", NS).with_text("aGVs\n bG8=")),
        );
        assert_eq!(
            photo_hash(&vcard).as_deref(),
            Some("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d")
        );
        assert_eq!(photo_hash(&Element::new("vCard", NS)), None);
    }
}
