//! Value encoding shared by backends: one format version byte, then the postcard body.
//!
//! The version byte lets a record change shape later: a new build reads every version it knows
//! and rejects the rest with [`Error::UnknownFormat`] instead of misreading bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Error, Result};

/// The only format in use: the postcard encoding of the types in `types.rs` as they are now.
pub(crate) const FORMAT_V1: u8 = 1;

/// Encodes `value` as `[FORMAT_V1, postcard(value)...]`.
pub(crate) fn encode<T: Serialize>(table: &'static str, value: &T) -> Result<Vec<u8>> {
    postcard::to_extend(value, vec![FORMAT_V1]).map_err(|source| Error::Encode { table, source })
}

/// Decodes a value written by [`encode`]; `key` only names the value in errors.
pub(crate) fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(Error::EmptyValue {
            table,
            key: key.to_owned(),
        });
    };
    if version != FORMAT_V1 {
        return Err(Error::UnknownFormat {
            table,
            key: key.to_owned(),
            version,
        });
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|source| Error::Decode {
        table,
        key: key.to_owned(),
        source,
    })?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes {
            table,
            key: key.to_owned(),
            extra: rest.len(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::types::{Roster, RosterItem, Subscription};

    fn sample_roster() -> Roster {
        let mut roster = Roster {
            version: 7,
            ..Roster::default()
        };
        let mut item = RosterItem::new("romeo@example.net");
        item.subscription = Subscription::Both;
        item.groups.push("Friends".into());
        roster.items.insert(item.jid.clone(), item);
        roster.pending_in.insert(
            "nurse@example.com".into(),
            "<presence type='subscribe'/>".into(),
        );
        roster
    }

    #[test]
    fn round_trips_with_version_byte() {
        let roster = sample_roster();
        let bytes = encode("t", &roster).unwrap();
        assert_eq!(bytes[0], FORMAT_V1);
        let back: Roster = decode("t", "k", &bytes).unwrap();
        assert_eq!(back, roster);
    }

    #[test]
    fn rejects_empty_value() {
        let err = decode::<Roster>("t", "k", &[]).unwrap_err();
        assert!(matches!(err, Error::EmptyValue { .. }), "{err:?}");
    }

    #[test]
    fn rejects_unknown_version() {
        let mut bytes = encode("t", &sample_roster()).unwrap();
        bytes[0] = 9;
        let err = decode::<Roster>("t", "k", &bytes).unwrap_err();
        assert!(
            matches!(err, Error::UnknownFormat { version: 9, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_truncated_and_padded_bodies() {
        let bytes = encode("t", &sample_roster()).unwrap();
        let err = decode::<Roster>("t", "k", &bytes[..bytes.len() - 3]).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");

        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0, 0]);
        let err = decode::<Roster>("t", "k", &padded).unwrap_err();
        assert!(
            matches!(err, Error::TrailingBytes { extra: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn garbage_gives_error_not_panic() {
        let garbage = [
            FORMAT_V1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert!(decode::<Roster>("t", "k", &garbage).is_err());
    }
}
