//! Stanza envelopes: route on the envelope, forward the bytes (DESIGN.md "Speed by design").
//!
//! [`StartTag::parse`] reads only the top-level start tag of a frame: its name, and its
//! attributes with their byte spans. [`Stanza`] keeps the raw frame plus the envelope fields the
//! router needs (`to`, `from`, `id`, `type`); [`Stanza::with_from`] rewrites the `from`
//! attribute in the bytes without building a tree. Payloads are parsed only by the module that
//! owns them ([`Stanza::element`]).

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;

use crate::element::{Element, ParseError, escape_into};

/// The three stanza kinds of RFC 6120 §8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StanzaKind {
    /// `<message/>`
    Message,
    /// `<presence/>`
    Presence,
    /// `<iq/>`
    Iq,
}

impl StanzaKind {
    /// The element name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Presence => "presence",
            Self::Iq => "iq",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "message" => Some(Self::Message),
            "presence" => Some(Self::Presence),
            "iq" => Some(Self::Iq),
            _ => None,
        }
    }
}

/// One attribute of a start tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr<'a> {
    /// The qualified attribute name.
    pub name: &'a str,
    /// The value with entities resolved.
    pub value: Cow<'a, str>,
    /// Where the whole attribute (`name='value'`) lies in the frame.
    pub span: Range<usize>,
}

/// The parsed start tag of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartTag<'a> {
    /// The qualified element name (`stream:stream`, `message`).
    pub name: &'a str,
    /// The attributes, in order.
    pub attrs: Vec<Attr<'a>>,
    /// Byte offset just past the element name.
    pub name_end: usize,
}

/// Why a start tag could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// The tag is not well-formed.
    #[error("malformed start tag: {0}")]
    Malformed(&'static str),
    /// An undefined entity in an attribute value.
    #[error("undefined entity in attribute value")]
    UndefinedEntity,
}

impl<'a> StartTag<'a> {
    /// Parses the start tag at the beginning of `frame`.
    pub fn parse(frame: &'a [u8]) -> Result<Self, TagError> {
        let text = std::str::from_utf8(frame).map_err(|_| TagError::Malformed("invalid utf-8"))?;
        let bytes = text.as_bytes();
        if bytes.first() != Some(&b'<') {
            return Err(TagError::Malformed("no start tag"));
        }
        let mut i = 1;
        while i < bytes.len() && !is_tag_delim(bytes[i]) {
            i += 1;
        }
        if i == 1 {
            return Err(TagError::Malformed("empty element name"));
        }
        let name = &text[1..i];
        let name_end = i;
        let mut attrs = Vec::new();
        loop {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            match bytes.get(i) {
                None => return Err(TagError::Malformed("unterminated start tag")),
                Some(b'>') => break,
                Some(b'/') if bytes.get(i + 1) == Some(&b'>') => break,
                Some(_) => {}
            }
            let start = i;
            while i < bytes.len() && !is_tag_delim(bytes[i]) && bytes[i] != b'=' {
                i += 1;
            }
            let attr_name = &text[start..i];
            if attr_name.is_empty() {
                return Err(TagError::Malformed("attribute without a name"));
            }
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if bytes.get(i) != Some(&b'=') {
                return Err(TagError::Malformed("attribute without a value"));
            }
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let Some(&quote @ (b'\'' | b'"')) = bytes.get(i) else {
                return Err(TagError::Malformed("unquoted attribute value"));
            };
            i += 1;
            let value_start = i;
            while i < bytes.len() && bytes[i] != quote {
                i += 1;
            }
            if i >= bytes.len() {
                return Err(TagError::Malformed("unterminated attribute value"));
            }
            let value = unescape(&text[value_start..i])?;
            i += 1;
            if attrs.iter().any(|a: &Attr<'_>| a.name == attr_name) {
                return Err(TagError::Malformed("duplicate attribute"));
            }
            attrs.push(Attr {
                name: attr_name,
                value,
                span: start..i,
            });
        }
        Ok(Self {
            name,
            attrs,
            name_end,
        })
    }

    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_ref())
    }

    /// The element's local name (after any prefix).
    pub fn local_name(&self) -> &'a str {
        self.name.rsplit(':').next().unwrap_or(self.name)
    }

    /// The namespace declared on this tag for its own name (`xmlns` or `xmlns:prefix`).
    pub fn declared_ns(&self) -> Option<&str> {
        match self.name.split_once(':') {
            Some((prefix, _)) => self
                .attrs
                .iter()
                .find(|a| a.name.strip_prefix("xmlns:") == Some(prefix))
                .map(|a| a.value.as_ref()),
            None => self.attr("xmlns"),
        }
    }
}

fn is_tag_delim(b: u8) -> bool {
    b.is_ascii_whitespace() || b == b'>' || b == b'/'
}

/// Resolves the predefined entities and character references of an attribute value.
fn unescape(raw: &str) -> Result<Cow<'_, str>, TagError> {
    if raw.contains('<') {
        return Err(TagError::Malformed("'<' in attribute value"));
    }
    if !raw.contains('&') {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';').ok_or(TagError::UndefinedEntity)?;
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or(TagError::UndefinedEntity)?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// A stanza: its envelope plus the raw frame it arrived as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    /// Message, presence or IQ.
    pub kind: StanzaKind,
    /// The `to` attribute, as sent.
    pub to: Option<String>,
    /// The `from` attribute, as sent (or as stamped).
    pub from: Option<String>,
    /// The `id` attribute.
    pub id: Option<String>,
    /// The `type` attribute.
    pub type_: Option<String>,
    raw: Bytes,
}

/// Why a frame is not a stanza.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StanzaError {
    /// The frame is a top-level element but not message, presence or iq.
    #[error("not a stanza: <{0}>")]
    NotAStanza(String),
    /// The start tag is malformed.
    #[error(transparent)]
    Tag(#[from] TagError),
}

impl Stanza {
    /// Reads the envelope of a complete frame.
    pub fn from_frame(raw: Bytes) -> Result<Self, StanzaError> {
        let tag = StartTag::parse(&raw)?;
        let kind = match StanzaKind::from_name(tag.name) {
            Some(kind) if tag.attr("xmlns").is_none_or(is_stanza_ns) => kind,
            _ => return Err(StanzaError::NotAStanza(tag.name.to_owned())),
        };
        let owned = |name: &str| tag.attr(name).map(str::to_owned);
        Ok(Self {
            kind,
            to: owned("to"),
            from: owned("from"),
            id: owned("id"),
            type_: owned("type"),
            raw: raw.clone(),
        })
    }

    /// Builds a stanza from an element the server made.
    pub fn from_element(element: &Element, stream_ns: &str) -> Result<Self, StanzaError> {
        Self::from_frame(Bytes::from(element.to_xml(stream_ns)))
    }

    /// The raw bytes (with any `from`/`to` rewriting applied).
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Parses the whole stanza into an element tree.
    pub fn element(&self, stream_ns: &str) -> Result<Element, ParseError> {
        Element::parse(&self.raw, stream_ns)
    }

    /// Whether the `type` attribute equals `t`.
    pub fn is_type(&self, t: &str) -> bool {
        self.type_.as_deref() == Some(t)
    }

    /// The same stanza with `from` set to `from` (the server's stamp, RFC 6120 §8.1.2.1) and,
    /// when `to` is given, `to` replaced too. The rest of the bytes are kept as they are.
    pub fn with_addresses(&self, from: Option<&str>, to: Option<&str>) -> Self {
        let Ok(tag) = StartTag::parse(&self.raw) else {
            // The envelope was parsed from these bytes, so the tag parses again.
            return self.clone();
        };
        let mut out = String::with_capacity(self.raw.len() + 64);
        let text = std::str::from_utf8(&self.raw).unwrap_or_default();
        out.push_str(&text[..tag.name_end]);
        for (name, value) in [("from", from), ("to", to)] {
            if let Some(value) = value {
                out.push(' ');
                out.push_str(name);
                out.push_str("='");
                escape_into(&mut out, value);
                out.push('\'');
            }
        }
        let mut cursor = tag.name_end;
        for attr in &tag.attrs {
            let replaced =
                (attr.name == "from" && from.is_some()) || (attr.name == "to" && to.is_some());
            if replaced {
                // Drop the attribute with the whitespace before it.
                let start = text[..attr.span.start].trim_end().len().max(cursor);
                out.push_str(&text[cursor..start]);
                cursor = attr.span.end;
            }
        }
        out.push_str(&text[cursor..]);
        Self {
            kind: self.kind,
            to: to.map(str::to_owned).or_else(|| self.to.clone()),
            from: from.map(str::to_owned).or_else(|| self.from.clone()),
            id: self.id.clone(),
            type_: self.type_.clone(),
            raw: Bytes::from(out),
        }
    }

    /// The same stanza with `from` stamped.
    pub fn with_from(&self, from: &str) -> Self {
        self.with_addresses(Some(from), None)
    }
}

fn is_stanza_ns(ns: &str) -> bool {
    ns == crate::ns::CLIENT || ns == crate::ns::SERVER
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns;

    #[test]
    fn reads_the_envelope() {
        let s = Stanza::from_frame(Bytes::from_static(
            b"<message to='juliet@capulet.lit/balcony' id='m&amp;1' type=\"chat\"><body>x</body></message>",
        ))
        .unwrap();
        assert_eq!(s.kind, StanzaKind::Message);
        assert_eq!(s.to.as_deref(), Some("juliet@capulet.lit/balcony"));
        assert_eq!(s.id.as_deref(), Some("m&1"));
        assert!(s.is_type("chat"));
        assert_eq!(s.from, None);
    }

    #[test]
    fn refuses_non_stanzas() {
        assert_eq!(
            Stanza::from_frame(Bytes::from_static(
                b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
            )),
            Err(StanzaError::NotAStanza("auth".into()))
        );
        assert!(matches!(
            Stanza::from_frame(Bytes::from_static(b"<message xmlns='urn:other'/>")),
            Err(StanzaError::NotAStanza(_))
        ));
        assert!(matches!(
            Stanza::from_frame(Bytes::from_static(b"<message to=x/>")),
            Err(StanzaError::Tag(_))
        ));
        assert!(matches!(
            Stanza::from_frame(Bytes::from_static(b"<message to='&bogus;'/>")),
            Err(StanzaError::Tag(TagError::UndefinedEntity))
        ));
    }

    #[test]
    fn stamping_replaces_a_spoofed_from() {
        let s = Stanza::from_frame(Bytes::from_static(
            b"<message from='evil@x/y' to='b@c' id='1'><body>hi</body></message>",
        ))
        .unwrap();
        let stamped = s.with_from("alice@c/home");
        assert_eq!(stamped.from.as_deref(), Some("alice@c/home"));
        let e = stamped.element(ns::CLIENT).unwrap();
        assert_eq!(e.attr("from"), Some("alice@c/home"));
        assert_eq!(e.attr("to"), Some("b@c"));
        assert_eq!(e.attr("id"), Some("1"));
        assert_eq!(e.attrs().count(), 3);
        assert_eq!(
            stamped.raw().as_ref(),
            b"<message from='alice@c/home' to='b@c' id='1'><body>hi</body></message>"
        );
        assert_eq!(e.get_child("body", ns::CLIENT).unwrap().text(), "hi");
        let again = Stanza::from_frame(stamped.raw().clone()).unwrap();
        assert_eq!(again, stamped);
    }

    #[test]
    fn stamping_self_closing_and_escaping() {
        let s = Stanza::from_frame(Bytes::from_static(b"<presence/>")).unwrap();
        let stamped = s.with_addresses(Some("a'b@c/d"), Some("e@f"));
        assert_eq!(
            stamped.raw().as_ref(),
            b"<presence from='a&apos;b@c/d' to='e@f'/>"
        );
        assert_eq!(stamped.from.as_deref(), Some("a'b@c/d"));
    }

    #[test]
    fn start_tag_exposes_namespace() {
        let frame = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
        let tag = StartTag::parse(frame).unwrap();
        assert_eq!(tag.local_name(), "stream");
        assert_eq!(tag.declared_ns(), Some(ns::STREAMS));
        assert_eq!(tag.attr("version"), Some("1.0"));
    }

    #[test]
    fn stanza_size_stays_small() {
        assert!(size_of::<Stanza>() <= 136);
    }
}
