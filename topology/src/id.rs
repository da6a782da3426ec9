//! Identities: [`NodeId`] (a node's Raft id), [`DcId`] (a DC's name) and [`NodeName`] (a node's
//! name). Each can only hold a valid value, so code that has one never checks it again.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::Serialize;

use crate::error::NameError;

/// The longest DC or node name, in characters (the limit of one DNS label, so a name can be
/// used in a certificate name or a host name as it is).
pub const MAX_NAME_CHARS: usize = 63;

/// A node's Raft id: unique in the whole deployment, never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NodeId(NonZeroU64);

impl NodeId {
    /// The id `id`, or `None` for 0.
    pub const fn new(id: u64) -> Option<Self> {
        match NonZeroU64::new(id) {
            Some(id) => Some(Self(id)),
            None => None,
        }
    }

    /// The id as a number (what openraft calls a node id).
    pub const fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<NodeId> for u64 {
    fn from(id: NodeId) -> Self {
        id.get()
    }
}

/// Checks the rule shared by DC and node names: 1 to [`MAX_NAME_CHARS`] characters, only
/// `a`-`z`, `0`-`9` and `-`, not starting or ending with `-`.
pub(crate) fn check_name(text: &str) -> Result<(), NameError> {
    if text.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(found) = text
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::BadCharacter { found });
    }
    // Only ASCII is left, so bytes are characters.
    if text.len() > MAX_NAME_CHARS {
        return Err(NameError::TooLong { chars: text.len() });
    }
    if text.starts_with('-') || text.ends_with('-') {
        return Err(NameError::EdgeHyphen);
    }
    Ok(())
}

/// Defines a validated name type: a `String` that passed [`check_name`].
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The name `text`, when it is well formed: 1 to [`MAX_NAME_CHARS`] characters,
            /// only `a`-`z`, `0`-`9` and `-`, not starting or ending with `-`.
            pub fn new(text: &str) -> Result<Self, NameError> {
                check_name(text)?;
                Ok(Self(text.to_owned()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;

            fn from_str(text: &str) -> Result<Self, NameError> {
                Self::new(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_type! {
    /// A DC's name (`eu-west`), its identity in the deployment: unique, lowercase `a`-`z`,
    /// `0`-`9` and `-`. Bridge certificates name their DC with it.
    DcId
}

name_type! {
    /// A node's name (`eu-west-1`): unique in the deployment, same rule as [`DcId`].
    NodeName
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_never_zero() {
        assert_eq!(NodeId::new(0), None);
        let id = NodeId::new(7).expect("nonzero");
        assert_eq!(id.get(), 7);
        assert_eq!(u64::from(id), 7);
        assert_eq!(id.to_string(), "7");
    }

    #[test]
    fn accepts_well_formed_names() {
        for name in [
            "eu-west",
            "a",
            "dc1",
            "us-east-2",
            &"x".repeat(MAX_NAME_CHARS),
        ] {
            let id = DcId::new(name).expect(name);
            assert_eq!(id.as_str(), name);
            assert_eq!(id.to_string(), name);
            assert_eq!(id, name);
        }
    }

    #[test]
    fn rejects_malformed_names() {
        assert_eq!(DcId::new(""), Err(NameError::Empty));
        assert_eq!(
            DcId::new("EU-west"),
            Err(NameError::BadCharacter { found: 'E' })
        );
        assert_eq!(
            NodeName::new("eu_west"),
            Err(NameError::BadCharacter { found: '_' })
        );
        assert_eq!(
            NodeName::new("eu.west"),
            Err(NameError::BadCharacter { found: '.' })
        );
        assert_eq!(DcId::new("é"), Err(NameError::BadCharacter { found: 'é' }));
        assert_eq!(DcId::new("-eu"), Err(NameError::EdgeHyphen));
        assert_eq!(DcId::new("eu-"), Err(NameError::EdgeHyphen));
        assert_eq!(
            DcId::new(&"x".repeat(MAX_NAME_CHARS + 1)),
            Err(NameError::TooLong { chars: 64 })
        );
        assert_eq!(
            "Bad".parse::<NodeName>(),
            Err(NameError::BadCharacter { found: 'B' })
        );
    }
}
