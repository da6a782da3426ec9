//! A small XML element tree for the stanzas a module must read or build.
//!
//! The router never builds one for a plain message (it reads the [`crate::stanza`] envelope and
//! forwards the bytes). Modules parse a frame into an [`Element`] on demand with
//! [`Element::parse`], which uses quick-xml on the complete frame and resolves namespaces against
//! the stream's default namespace. Serialisation writes `xmlns` only where an element's namespace
//! differs from its parent's.

use std::fmt::Write as _;

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use crate::ns;

/// A child of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (entities resolved).
    Text(String),
}

/// An XML element with its namespace resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    name: String,
    ns: String,
    /// Attributes other than namespace declarations; names keep their prefix (`xml:lang`).
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

/// Why a frame could not be parsed into an element (maps to `<not-well-formed/>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The XML is not well-formed.
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// An entity other than the five predefined ones or a character reference.
    #[error("undefined entity &{0};")]
    UndefinedEntity(String),
    /// An element or attribute prefix that no `xmlns:` declaration binds.
    #[error("unbound namespace prefix {0:?}")]
    UnboundPrefix(String),
}

impl Element {
    /// A new element `name` in namespace `ns`.
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: sets an attribute.
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder: sets an attribute when `value` is `Some`.
    pub fn with_attr_opt(self, name: impl Into<String>, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.with_attr(name, v),
            None => self,
        }
    }

    /// Builder: appends a child element.
    pub fn with_child(mut self, child: Self) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends character data.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// The local name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Whether this element is `name` in `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All attributes, in document order.
    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Sets (or replaces) an attribute.
    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name, value)),
        }
    }

    /// Removes an attribute, returning its value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let i = self.attrs.iter().position(|(n, _)| n == name)?;
        Some(self.attrs.remove(i).1)
    }

    /// All child nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    /// Child elements.
    pub fn children(&self) -> impl Iterator<Item = &Self> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Removes and returns all child elements matching `keep == false`.
    pub fn retain_children(&mut self, mut keep: impl FnMut(&Self) -> bool) {
        self.children.retain(|n| match n {
            Node::Element(e) => keep(e),
            Node::Text(_) => true,
        });
    }

    /// The first child `name` in `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Self> {
        self.children().find(|c| c.is(name, ns))
    }

    /// Whether a child `name` in `ns` exists.
    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.get_child(name, ns).is_some()
    }

    /// Appends a child element.
    pub fn append_child(&mut self, child: Self) {
        self.children.push(Node::Element(child));
    }

    /// The concatenated character data directly inside this element.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Parses one complete element (a frame) whose default namespace, unless declared, is
    /// `default_ns`. The `stream` prefix is bound to the streams namespace, as on the stream
    /// header.
    pub fn parse(bytes: &[u8], default_ns: &str) -> Result<Self, ParseError> {
        let mut reader = Reader::from_reader(bytes);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.trim_text(false);
        config.expand_empty_elements = false;
        let mut scopes: Vec<Scope> = vec![Scope {
            default_ns: default_ns.to_owned(),
            prefixes: vec![("stream".to_owned(), ns::STREAMS.to_owned())],
        }];
        let mut stack: Vec<Self> = Vec::new();
        let mut root = None;
        loop {
            let event = reader
                .read_event()
                .map_err(|e| ParseError::NotWellFormed(e.to_string()))?;
            match event {
                Event::Start(start) => {
                    let (element, scope) = open(&start, &scopes)?;
                    scopes.push(scope);
                    stack.push(element);
                }
                Event::Empty(start) => {
                    let (element, _) = open(&start, &scopes)?;
                    close_into(element, &mut stack, &mut root);
                }
                Event::End(_) => {
                    scopes.pop();
                    let element = stack
                        .pop()
                        .ok_or_else(|| ParseError::NotWellFormed("unexpected end tag".into()))?;
                    close_into(element, &mut stack, &mut root);
                }
                Event::Text(text) => {
                    let content = text.xml10_content();
                    match stack.last_mut() {
                        Some(parent) => push_text(parent, &content),
                        None if content.trim().is_empty() => {}
                        None => {
                            return Err(ParseError::NotWellFormed(
                                "text outside the element".into(),
                            ));
                        }
                    }
                }
                Event::CData(cdata) => {
                    let content = cdata.xml10_content();
                    if let Some(parent) = stack.last_mut() {
                        push_text(parent, &content);
                    }
                }
                Event::GeneralRef(reference) => {
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        Ok(None) => match &*reference {
                            "amp" => '&',
                            "lt" => '<',
                            "gt" => '>',
                            "quot" => '"',
                            "apos" => '\'',
                            other => return Err(ParseError::UndefinedEntity(other.to_owned())),
                        },
                        Err(e) => return Err(ParseError::NotWellFormed(e.to_string())),
                    };
                    if let Some(parent) = stack.last_mut() {
                        push_text(parent, resolved.encode_utf8(&mut [0; 4]));
                    }
                }
                Event::Eof => break,
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => {
                    return Err(ParseError::NotWellFormed("restricted xml".into()));
                }
            }
        }
        if !stack.is_empty() {
            return Err(ParseError::NotWellFormed("unclosed element".into()));
        }
        root.ok_or_else(|| ParseError::NotWellFormed("no element".into()))
    }

    /// Serialises the element; `parent_ns` is the namespace in scope where it is written
    /// (`jabber:client` on a client stream), so `xmlns` is written only when it differs.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.ns != parent_ns {
            out.push_str(" xmlns='");
            escape_into(out, &self.ns);
            out.push('\'');
        }
        for (name, value) in &self.attrs {
            let _ = write!(out, " {name}='");
            escape_into(out, value);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for node in &self.children {
            match node {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape_into(out, t),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// Serialises the element for a stream whose default namespace is `stream_ns`.
    pub fn to_xml(&self, stream_ns: &str) -> String {
        let mut out = String::with_capacity(128);
        self.write_to(&mut out, stream_ns);
        out
    }
}

/// Checks that a frame is well-formed XML that can be forwarded as it is: end tags match,
/// attributes are well-formed and unique, entities are predefined or character references, and
/// every prefix is bound. Cheaper than [`Element::parse`]: nothing is built.
pub fn check_well_formed(bytes: &[u8], default_ns: &str) -> Result<(), ParseError> {
    let _ = default_ns;
    let mut reader = Reader::from_reader(bytes);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.trim_text(false);
    // Prefixes declared per open element (most stanzas declare none, so this stays empty).
    let mut declared: Vec<(usize, String)> = Vec::new();
    let mut depth = 0usize;
    let mut roots = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| ParseError::NotWellFormed(e.to_string()))?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                if depth == 0 {
                    roots += 1;
                }
                let is_start = matches!(event, Event::Start(_));
                let level = depth + 1;
                let mut prefixes_here: Vec<String> = Vec::new();
                let mut names: Vec<&str> = Vec::new();
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| ParseError::NotWellFormed(e.to_string()))?;
                    let key = attr.key.into_inner();
                    if names.contains(&key) {
                        return Err(ParseError::NotWellFormed("duplicate attribute".into()));
                    }
                    names.push(key);
                    attribute_value(&attr)?;
                    if let Some(prefix) = key.strip_prefix("xmlns:") {
                        prefixes_here.push(prefix.to_owned());
                    }
                }
                let bound = |p: &str| {
                    p == "xml"
                        || p == "stream"
                        || prefixes_here.iter().any(|x| x == p)
                        || declared.iter().any(|(_, x)| x == p)
                };
                let name = start.name();
                if let Some(prefix) = name.prefix()
                    && !bound(prefix.as_ref())
                {
                    return Err(ParseError::UnboundPrefix(prefix.as_ref().to_owned()));
                }
                for key in &names {
                    if let Some((p, _)) = key.split_once(':')
                        && p != "xmlns"
                        && !bound(p)
                    {
                        return Err(ParseError::UnboundPrefix(p.to_owned()));
                    }
                }
                if is_start {
                    depth = level;
                    declared.extend(prefixes_here.into_iter().map(|p| (level, p)));
                }
            }
            Event::End(_) => {
                declared.retain(|(level, _)| *level < depth);
                depth = depth.saturating_sub(1);
            }
            Event::Text(text) => {
                if depth == 0 && !text.xml10_content().trim().is_empty() {
                    return Err(ParseError::NotWellFormed("text outside the element".into()));
                }
            }
            Event::CData(_) => {}
            Event::GeneralRef(reference) => match reference.resolve_char_ref() {
                Ok(Some(_)) => {}
                Ok(None) => {
                    if !matches!(&*reference, "amp" | "lt" | "gt" | "quot" | "apos") {
                        return Err(ParseError::UndefinedEntity(reference.to_string()));
                    }
                }
                Err(e) => return Err(ParseError::NotWellFormed(e.to_string())),
            },
            Event::Eof => break,
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => {
                return Err(ParseError::NotWellFormed("restricted xml".into()));
            }
        }
    }
    if depth != 0 || roots != 1 {
        return Err(ParseError::NotWellFormed(
            "not exactly one complete element".into(),
        ));
    }
    Ok(())
}

/// An attribute value, normalised and with entities resolved; undefined entities are errors.
fn attribute_value<'a>(
    attr: &quick_xml::events::attributes::Attribute<'a>,
) -> Result<std::borrow::Cow<'a, str>, ParseError> {
    attr.normalized_value(quick_xml::XmlVersion::Implicit1_0)
        .map_err(|e| match e {
            quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(
                _,
                name,
            )) => ParseError::UndefinedEntity(name),
            other => ParseError::NotWellFormed(other.to_string()),
        })
}

/// Namespace bindings in scope.
struct Scope {
    default_ns: String,
    prefixes: Vec<(String, String)>,
}

fn resolve<'a>(scopes: &'a [Scope], prefix: Option<&str>) -> Option<&'a str> {
    match prefix {
        None => scopes.last().map(|s| s.default_ns.as_str()),
        Some("xml") => Some(ns::XML),
        Some(p) => scopes.iter().rev().find_map(|s| {
            s.prefixes
                .iter()
                .rev()
                .find(|(name, _)| name == p)
                .map(|(_, uri)| uri.as_str())
        }),
    }
}

fn open(start: &BytesStart<'_>, scopes: &[Scope]) -> Result<(Element, Scope), ParseError> {
    let qname = start.name().as_ref().to_owned();
    let mut scope = Scope {
        default_ns: scopes
            .last()
            .map(|s| s.default_ns.clone())
            .unwrap_or_default(),
        prefixes: Vec::new(),
    };
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| ParseError::NotWellFormed(e.to_string()))?;
        let key: &str = attr.key.as_ref();
        let value = attribute_value(&attr)?;
        if key == "xmlns" {
            scope.default_ns = value.into_owned();
        } else if let Some(prefix) = key.strip_prefix("xmlns:") {
            scope.prefixes.push((prefix.to_owned(), value.into_owned()));
        } else {
            if attrs.iter().any(|(n, _): &(String, String)| n == key) {
                return Err(ParseError::NotWellFormed(format!(
                    "duplicate attribute {key}"
                )));
            }
            attrs.push((key.to_owned(), value.into_owned()));
        }
    }
    let (prefix, local) = match qname.split_once(':') {
        Some((p, l)) => (Some(p), l.to_owned()),
        None => (None, qname.clone()),
    };
    let ns = {
        let lookup: Option<String> = match prefix {
            None => Some(scope.default_ns.clone()),
            Some(p) => {
                if let Some((_, uri)) = scope.prefixes.iter().rev().find(|(n, _)| n == p) {
                    Some(uri.clone())
                } else {
                    resolve(scopes, Some(p)).map(str::to_owned)
                }
            }
        };
        lookup.ok_or_else(|| ParseError::UnboundPrefix(prefix.unwrap_or_default().to_owned()))?
    };
    for (name, _) in &attrs {
        if let Some((p, _)) = name.split_once(':')
            && p != "xml"
            && !scope.prefixes.iter().any(|(n, _)| n == p)
            && resolve(scopes, Some(p)).is_none()
        {
            return Err(ParseError::UnboundPrefix(p.to_owned()));
        }
    }
    Ok((
        Element {
            name: local,
            ns,
            attrs,
            children: Vec::new(),
        },
        scope,
    ))
}

fn close_into(element: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(element)),
        None => *root = Some(element),
    }
}

fn push_text(parent: &mut Element, text: &str) {
    if let Some(Node::Text(last)) = parent.children.last_mut() {
        last.push_str(text);
    } else {
        parent.children.push(Node::Text(text.to_owned()));
    }
}

/// Appends `text` with the XML special characters escaped.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// `text` with the XML special characters escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaces_attributes_and_text() {
        let xml = br#"<iq type='get' id='r1' xml:lang='en'><query xmlns='jabber:iq:roster' ver='3'><item jid='a@b' name='A &amp; B'><group>G&#x31;</group></item></query></iq>"#;
        let iq = Element::parse(xml, ns::CLIENT).unwrap();
        assert!(iq.is("iq", ns::CLIENT));
        assert_eq!(iq.attr("type"), Some("get"));
        assert_eq!(iq.attr("xml:lang"), Some("en"));
        let query = iq.get_child("query", ns::ROSTER).unwrap();
        assert_eq!(query.attr("ver"), Some("3"));
        let item = query.get_child("item", ns::ROSTER).unwrap();
        assert_eq!(item.attr("name"), Some("A & B"));
        assert_eq!(item.get_child("group", ns::ROSTER).unwrap().text(), "G1");
    }

    #[test]
    fn resolves_prefixes() {
        let xml = b"<stream:error><foo:bar xmlns:foo='urn:x'><foo:baz/></foo:bar></stream:error>";
        let e = Element::parse(xml, ns::CLIENT).unwrap();
        assert!(e.is("error", ns::STREAMS));
        let bar = e.get_child("bar", "urn:x").unwrap();
        assert!(bar.has_child("baz", "urn:x"));
        assert_eq!(
            Element::parse(b"<x:y/>", ns::CLIENT),
            Err(ParseError::UnboundPrefix("x".into()))
        );
    }

    #[test]
    fn rejects_undefined_entities_and_bad_xml() {
        assert_eq!(
            Element::parse(b"<message><body>&lol;</body></message>", ns::CLIENT),
            Err(ParseError::UndefinedEntity("lol".into()))
        );
        assert!(matches!(
            Element::parse(b"<message a='&lol;'/>", ns::CLIENT),
            Err(ParseError::UndefinedEntity(_))
        ));
        assert!(matches!(
            Element::parse(b"<message><body></message></body>", ns::CLIENT),
            Err(ParseError::NotWellFormed(_))
        ));
        assert!(matches!(
            Element::parse(b"<message a='1' a='2'/>", ns::CLIENT),
            Err(ParseError::NotWellFormed(_))
        ));
    }

    #[test]
    fn serialises_round_trip_with_minimal_xmlns() {
        let e = Element::new("message", ns::CLIENT)
            .with_attr("to", "a@b")
            .with_child(Element::new("body", ns::CLIENT).with_text("<hi> & 'bye'"))
            .with_child(Element::new("x", "urn:y").with_child(Element::new("z", "urn:y")));
        let xml = e.to_xml(ns::CLIENT);
        assert_eq!(
            xml,
            "<message to='a@b'><body>&lt;hi&gt; &amp; &apos;bye&apos;</body><x xmlns='urn:y'><z/></x></message>"
        );
        assert_eq!(Element::parse(xml.as_bytes(), ns::CLIENT).unwrap(), e);
        assert!(
            e.to_xml(ns::SERVER)
                .starts_with("<message xmlns='jabber:client'")
        );
    }

    #[test]
    fn edits_attributes_and_children() {
        let mut e = Element::new("iq", ns::CLIENT).with_attr("from", "x");
        e.set_attr("from", "y");
        assert_eq!(e.attr("from"), Some("y"));
        assert_eq!(e.remove_attr("from"), Some("y".into()));
        assert_eq!(e.attr("from"), None);
        e.append_child(Element::new("a", "n"));
        e.append_child(Element::new("b", "n"));
        e.retain_children(|c| c.name() != "a");
        assert_eq!(e.children().count(), 1);
    }

    #[test]
    fn well_formedness_check_matches_the_parser() {
        let good: [&[u8]; 4] = [
            b"<message to='a@b'><body>x &amp; &#65;</body></message>",
            b"<iq><q xmlns:p='urn:p'><p:x p:a='1'/></q></iq>",
            b"<message xml:lang='en'><body><![CDATA[<x>]]></body></message>",
            b"<presence/>",
        ];
        for g in good {
            assert_eq!(
                check_well_formed(g, ns::CLIENT),
                Ok(()),
                "{}",
                String::from_utf8_lossy(g)
            );
            assert!(Element::parse(g, ns::CLIENT).is_ok());
        }
        let bad: [&[u8]; 6] = [
            b"<message><body></message></body>",
            b"<message><body>&lol;</body></message>",
            b"<message a='1' a='2'/>",
            b"<message><p:x/></message>",
            b"<iq><q xmlns:p='urn:p'/><p:x/></iq>",
            b"<message a='&bad;'/>",
        ];
        for b in bad {
            assert!(
                check_well_formed(b, ns::CLIENT).is_err(),
                "{}",
                String::from_utf8_lossy(b)
            );
            assert!(Element::parse(b, ns::CLIENT).is_err());
        }
    }

    #[test]
    fn element_size_stays_small() {
        assert!(size_of::<Element>() <= 96);
    }
}
