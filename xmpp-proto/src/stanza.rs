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

use crate::element::{Element, ParseError};

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

/// An envelope attribute's value: absent, a span of the raw bytes (no entities in it), or
/// unescaped text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Field {
    #[default]
    Absent,
    Span(u32, u32),
    Owned(Box<str>),
}

/// A stanza: its envelope plus the raw frame it arrived as.
///
/// Reading the envelope allocates nothing: the `to`, `from`, `id` and `type` values are spans
/// of the frame (unescaped copies only when they contain entity references).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    /// Message, presence or IQ.
    pub kind: StanzaKind,
    raw: Bytes,
    to: Field,
    from: Field,
    id: Field,
    type_: Field,
    /// Where the whole `to='…'` and `from='…'` attributes lie (start, end), for rewriting.
    to_attr: Option<(u32, u32)>,
    from_attr: Option<(u32, u32)>,
    /// Byte offset just past the element name.
    name_end: u32,
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
        let bytes: &[u8] = &raw;
        if bytes.first() != Some(&b'<') {
            return Err(TagError::Malformed("no start tag").into());
        }
        let mut i = 1;
        while i < bytes.len() && !is_tag_delim(bytes[i]) {
            i += 1;
        }
        let name = &bytes[1..i];
        let kind = match name {
            b"message" => StanzaKind::Message,
            b"presence" => StanzaKind::Presence,
            b"iq" => StanzaKind::Iq,
            other => {
                return Err(StanzaError::NotAStanza(
                    String::from_utf8_lossy(other).into_owned(),
                ));
            }
        };
        let mut stanza = Self {
            kind,
            raw: Bytes::new(),
            to: Field::Absent,
            from: Field::Absent,
            id: Field::Absent,
            type_: Field::Absent,
            to_attr: None,
            from_attr: None,
            name_end: u32::try_from(i).map_err(|_| TagError::Malformed("tag too long"))?,
        };
        loop {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            match bytes.get(i) {
                None => return Err(TagError::Malformed("unterminated start tag").into()),
                Some(b'>') => break,
                Some(b'/') if bytes.get(i + 1) == Some(&b'>') => break,
                Some(_) => {}
            }
            let start = i;
            while i < bytes.len() && !is_tag_delim(bytes[i]) && bytes[i] != b'=' {
                i += 1;
            }
            let attr = &bytes[start..i];
            if attr.is_empty() {
                return Err(TagError::Malformed("attribute without a name").into());
            }
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if bytes.get(i) != Some(&b'=') {
                return Err(TagError::Malformed("attribute without a value").into());
            }
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let Some(&quote @ (b'\'' | b'"')) = bytes.get(i) else {
                return Err(TagError::Malformed("unquoted attribute value").into());
            };
            i += 1;
            let value_start = i;
            let Some(len) = memchr::memchr(quote, &bytes[i..]) else {
                return Err(TagError::Malformed("unterminated attribute value").into());
            };
            i += len + 1;
            let value = (value_start, value_start + len);
            let slot = match attr {
                b"to" => &mut stanza.to,
                b"from" => &mut stanza.from,
                b"id" => &mut stanza.id,
                b"type" => &mut stanza.type_,
                b"xmlns" => {
                    let ns = std::str::from_utf8(&bytes[value.0..value.1])
                        .map_err(|_| TagError::Malformed("invalid utf-8"))?;
                    if !is_stanza_ns(ns) {
                        return Err(StanzaError::NotAStanza(
                            String::from_utf8_lossy(name).into_owned(),
                        ));
                    }
                    continue;
                }
                _ => continue,
            };
            if *slot != Field::Absent {
                return Err(TagError::Malformed("duplicate attribute").into());
            }
            *slot = field(bytes, value)?;
            let span = Some((start as u32, i as u32));
            match attr {
                b"to" => stanza.to_attr = span,
                b"from" => stanza.from_attr = span,
                _ => {}
            }
        }
        stanza.raw = raw;
        Ok(stanza)
    }

    /// Builds a stanza from an element the server made.
    pub fn from_element(element: &Element, stream_ns: &str) -> Result<Self, StanzaError> {
        Self::from_frame(Bytes::from(element.to_xml(stream_ns)))
    }

    fn get<'a>(&'a self, f: &'a Field) -> Option<&'a str> {
        match f {
            Field::Absent => None,
            Field::Span(a, b) => std::str::from_utf8(&self.raw[*a as usize..*b as usize]).ok(),
            Field::Owned(s) => Some(s),
        }
    }

    /// The `to` attribute.
    pub fn to(&self) -> Option<&str> {
        self.get(&self.to)
    }

    /// The `from` attribute.
    pub fn from(&self) -> Option<&str> {
        self.get(&self.from)
    }

    /// The `id` attribute.
    pub fn id(&self) -> Option<&str> {
        self.get(&self.id)
    }

    /// The `type` attribute.
    pub fn type_(&self) -> Option<&str> {
        self.get(&self.type_)
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
        self.type_() == Some(t)
    }

    /// The same stanza with `from` set to `from` (the server's stamp, RFC 6120 §8.1.2.1) and,
    /// when `to` is given, `to` replaced too. The rest of the bytes are kept as they are; one
    /// allocation.
    pub fn with_addresses(&self, from: Option<&str>, to: Option<&str>) -> Self {
        let raw: &[u8] = &self.raw;
        let name_end = self.name_end as usize;
        let mut out = Vec::with_capacity(
            raw.len() + from.map_or(0, |f| f.len() + 8) + to.map_or(0, |t| t.len() + 6),
        );
        out.extend_from_slice(&raw[..name_end]);
        let mut written: [(Field, Option<(u32, u32)>); 2] = Default::default();
        for (slot, (name, value)) in [("from", from), ("to", to)].into_iter().enumerate() {
            if let Some(value) = value {
                let attr_start = out.len() + 1;
                out.push(b' ');
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"='");
                let value_start = out.len();
                escape_bytes_into(&mut out, value);
                let value_end = out.len();
                out.push(b'\'');
                let field = if value_end - value_start == value.len() {
                    Field::Span(value_start as u32, value_end as u32)
                } else {
                    Field::Owned(value.into())
                };
                written[slot] = (field, Some((attr_start as u32, out.len() as u32)));
            }
        }
        let inserted = out.len() - name_end;
        let mut removed: [Option<(u32, u32)>; 2] = [
            self.from_attr.filter(|_| from.is_some()),
            self.to_attr.filter(|_| to.is_some()),
        ];
        if let [Some(a), Some(b)] = removed
            && b.0 < a.0
        {
            removed = [Some(b), Some(a)];
        }
        let mut cuts: [(usize, usize); 2] = [(0, 0); 2];
        let mut cursor = name_end;
        for (n, (start, end)) in removed.into_iter().flatten().enumerate() {
            // Drop the attribute with the whitespace before it.
            let mut cut = start as usize;
            while cut > cursor && raw[cut - 1].is_ascii_whitespace() {
                cut -= 1;
            }
            out.extend_from_slice(&raw[cursor..cut]);
            cuts[n] = (cut, end as usize);
            cursor = end as usize;
        }
        out.extend_from_slice(&raw[cursor..]);
        // Where an offset of the old bytes lands in the new ones.
        let shift = |p: u32| -> u32 {
            let dropped: usize = cuts
                .iter()
                .filter(|(_, end)| *end != 0 && *end <= p as usize)
                .map(|(cut, end)| end - cut)
                .sum();
            (p as usize + inserted - dropped) as u32
        };
        let moved = |f: &Field| match f {
            Field::Span(a, b) => Field::Span(shift(*a), shift(*b)),
            other => other.clone(),
        };
        let [(new_from, new_from_attr), (new_to, new_to_attr)] = written;
        let (from_field, from_attr) = if from.is_some() {
            (new_from, new_from_attr)
        } else {
            (
                moved(&self.from),
                self.from_attr.map(|(a, b)| (shift(a), shift(b))),
            )
        };
        let (to_field, to_attr) = if to.is_some() {
            (new_to, new_to_attr)
        } else {
            (
                moved(&self.to),
                self.to_attr.map(|(a, b)| (shift(a), shift(b))),
            )
        };
        Self {
            kind: self.kind,
            to: to_field,
            from: from_field,
            id: moved(&self.id),
            type_: moved(&self.type_),
            to_attr,
            from_attr,
            name_end: self.name_end,
            raw: Bytes::from(out),
        }
    }

    /// The same stanza with `from` stamped.
    pub fn with_from(&self, from: &str) -> Self {
        self.with_addresses(Some(from), None)
    }
}

/// An envelope value: a span when it has no entity references, else the unescaped text.
fn field(bytes: &[u8], (start, end): (usize, usize)) -> Result<Field, TagError> {
    let value = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| TagError::Malformed("invalid utf-8"))?;
    if value.bytes().any(|b| b == b'&' || b == b'<') {
        return Ok(Field::Owned(unescape(value)?.into_owned().into_boxed_str()));
    }
    Ok(Field::Span(start as u32, end as u32))
}

/// Appends `text` with the XML special characters escaped.
fn escape_bytes_into(out: &mut Vec<u8>, text: &str) {
    for b in text.bytes() {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'\'' => out.extend_from_slice(b"&apos;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            b => out.push(b),
        }
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
        assert_eq!(s.to(), Some("juliet@capulet.lit/balcony"));
        assert_eq!(s.id(), Some("m&1"));
        assert!(s.is_type("chat"));
        assert_eq!(s.from(), None);
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
        assert_eq!(stamped.from(), Some("alice@c/home"));
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
        // Every combination of rewrites reads back exactly as a fresh parse would.
        for raw in [
            &b"<iq type='get' to='x@y' id='a' from='p@q/r'><q/></iq>"[..],
            b"<message   to='x@y'  from='z@w'>x</message>",
            b"<presence from='a@b' type='unavailable'/>",
            b"<presence/>",
            b"<message id='&amp;1' to='a&apos;b@c' type=\"chat\">x</message>",
        ] {
            let s = Stanza::from_frame(Bytes::copy_from_slice(raw)).unwrap();
            for (from, to) in [
                (Some("me@h/r"), None),
                (None, Some("you@h")),
                (Some("m<e@h"), Some("y'u@h/r")),
            ] {
                let rewritten = s.with_addresses(from, to);
                let reparsed = Stanza::from_frame(rewritten.raw().clone()).unwrap();
                assert_eq!(
                    rewritten,
                    reparsed,
                    "{:?}",
                    String::from_utf8_lossy(rewritten.raw())
                );
            }
        }
    }

    #[test]
    fn stamping_self_closing_and_escaping() {
        let s = Stanza::from_frame(Bytes::from_static(b"<presence/>")).unwrap();
        let stamped = s.with_addresses(Some("a'b@c/d"), Some("e@f"));
        assert_eq!(
            stamped.raw().as_ref(),
            b"<presence from='a&apos;b@c/d' to='e@f'/>"
        );
        assert_eq!(stamped.from(), Some("a'b@c/d"));
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
        assert!(size_of::<Stanza>() <= 160, "{}", size_of::<Stanza>());
    }
}
