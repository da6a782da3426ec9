//! Framing: find complete top-level elements in an XMPP byte stream.
//!
//! XMPP is one endless XML document, so a stanza is "complete" when its top-level element closes.
//! The [`Framer`] buffers received bytes and scans them once, incrementally (a scan split at any
//! byte boundary resumes where it stopped, so a slow sender costs linear time), tracking tags,
//! quotes, CDATA and depth. Only when an element is complete does anybody parse it (mini-redis
//! `Frame::check` then `Frame::parse`). The frame is handed out as [`Bytes`] split off the receive
//! buffer, without a copy.
//!
//! Limits are enforced here, before any parsing: stanza size, nesting depth and attribute count
//! ([`Limits`]). RFC 6120 §11.1 restricted XML is refused: comments, processing instructions
//! (other than the XML declaration before the stream header), DTDs and entity declarations.

use bytes::{Buf, Bytes, BytesMut};

/// Resource limits applied to every element of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest top-level element (stanza or nonza), in bytes, including the stream header.
    pub max_stanza_size: usize,
    /// Deepest element nesting inside one top-level element (the top-level element is depth 1).
    pub max_depth: usize,
    /// Most attributes on one element.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stanza_size: 64 * 1024,
            max_depth: 32,
            max_attributes: 64,
        }
    }
}

/// A unit of the stream found by the [`Framer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The stream header: the raw start tag `<stream:stream …>`.
    Header(Bytes),
    /// One complete top-level element: a stanza or a nonza (`<starttls/>`, `<auth/>`, …).
    Element(Bytes),
    /// The closing `</stream:stream>`.
    Close,
}

/// Why the byte stream cannot be framed; each maps to an RFC 6120 stream error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The bytes are not well-formed XML (`<not-well-formed/>`).
    #[error("not well-formed: {0}")]
    NotWellFormed(&'static str),
    /// Restricted XML: a comment, processing instruction, DTD or entity declaration (`<restricted-xml/>`).
    #[error("restricted xml: {0}")]
    RestrictedXml(&'static str),
    /// A top-level element grew past the size limit (`<policy-violation/>`).
    #[error("stanza larger than {limit} bytes")]
    StanzaTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// Elements nest deeper than allowed (`<policy-violation/>`).
    #[error("elements nested deeper than {limit}")]
    TooDeep {
        /// The configured limit.
        limit: usize,
    },
    /// An element carries more attributes than allowed (`<policy-violation/>`).
    #[error("more than {limit} attributes on one element")]
    TooManyAttributes {
        /// The configured limit.
        limit: usize,
    },
}

/// Where the incremental scanner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Character data (or inter-stanza whitespace).
    Content,
    /// Just after `<`: what kind of markup follows is not known yet.
    Markup,
    /// Inside a start tag.
    StartTag(TagScan),
    /// Inside an end tag.
    EndTag,
    /// Inside `<![CDATA[ … ]]>`; the count of `]` just seen.
    CData(u8),
    /// Inside the XML declaration `<?xml … ?>`; whether the last byte was `?`.
    Decl(bool),
}

/// Where a start-tag scan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagPhase {
    /// In the element name.
    Name,
    /// After whitespace: an attribute name, `>` or `/>` may follow.
    Gap,
    /// In an attribute name.
    AttrName,
    /// After an attribute name and whitespace: `=` must follow.
    AfterName,
    /// After `=`: a quote must follow.
    AfterEq,
    /// In a value opened by this quote.
    Value(u8),
    /// Just after a closing quote: whitespace, `>` or `/>` must follow.
    AfterValue,
    /// After `/`: `>` must follow.
    Slash,
}

/// A start tag being scanned: its phase, attribute count and the current attribute's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TagScan {
    phase: TagPhase,
    attrs: usize,
    attr_start: usize,
    /// The name being scanned contains `:`.
    colon: bool,
}

/// Incremental XMPP stream framer. Sans-IO: feed bytes with [`Framer::push`], take frames with
/// [`Framer::next_frame`].
#[derive(Debug)]
pub struct Framer {
    limits: Limits,
    buf: BytesMut,
    /// Scan position in `buf`; everything before it has been scanned.
    pos: usize,
    /// Start of the markup being scanned (the `<`).
    tag_start: usize,
    scan: Scan,
    /// Element depth inside the stream (0 = between stanzas).
    depth: usize,
    /// Where the names of the open elements lie in `buf`, innermost last, so an end tag is
    /// checked against its start tag the moment it arrives.
    open_names: Vec<(usize, usize)>,
    /// Names of the attributes of the tag being scanned, to refuse duplicates.
    tag_attrs: Vec<(usize, usize)>,
    /// The current element uses a namespace prefix or CDATA: it gets the full check.
    needs_full_check: bool,
    /// Whether the stream header has been seen.
    open: bool,
    /// Whether anything but whitespace came before (an XML declaration is only allowed first).
    started: bool,
    /// The qualified name of the stream element, to check `</stream:stream>`.
    stream_name: Vec<u8>,
    /// Set after `</stream:stream>` or an error: nothing more is framed.
    done: bool,
}

impl Framer {
    /// A framer for a new stream under `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buf: BytesMut::new(),
            pos: 0,
            tag_start: 0,
            scan: Scan::Content,
            depth: 0,
            open_names: Vec::new(),
            tag_attrs: Vec::new(),
            needs_full_check: false,
            open: false,
            started: false,
            stream_name: Vec::new(),
            done: false,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.done {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Forgets the stream (a stream restart after STARTTLS or SASL): the next frame must be a new
    /// stream header. Bytes not yet framed are dropped, as RFC 6120 requires the peer to wait.
    pub fn reset(&mut self) {
        *self = Self::new(self.limits);
    }

    /// Bytes received but not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Releases the receive buffer's memory when nothing is buffered (idle connections).
    pub fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
            self.open_names = Vec::new();
            self.tag_attrs = Vec::new();
            self.pos = 0;
            self.tag_start = 0;
        }
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if self.done {
            return Ok(None);
        }
        match self.scan_frame() {
            Err(e) => {
                self.done = true;
                self.buf = BytesMut::new();
                Err(e)
            }
            ok => ok,
        }
    }

    fn scan_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        while self.pos < self.buf.len() {
            if (self.depth > 0 || self.scan != Scan::Content)
                && self.pos >= self.limits.max_stanza_size
            {
                return Err(FramingError::StanzaTooLarge {
                    limit: self.limits.max_stanza_size,
                });
            }
            match self.scan {
                Scan::Content => {
                    let rest = &self.buf[self.pos..];
                    let text_len = memchr::memchr(b'<', rest).unwrap_or(rest.len());
                    if self.depth == 0 {
                        if !rest[..text_len].iter().all(u8::is_ascii_whitespace) {
                            return Err(FramingError::NotWellFormed(
                                "character data outside a stanza",
                            ));
                        }
                        // Whitespace keepalives between stanzas are consumed here.
                        self.buf.advance(text_len);
                        self.pos = 0;
                    } else {
                        self.pos += text_len;
                    }
                    if self.pos < self.buf.len() {
                        self.tag_start = self.pos;
                        self.pos += 1;
                        self.scan = Scan::Markup;
                    }
                }
                Scan::Markup => {
                    if !self.classify_markup()? {
                        return Ok(None);
                    }
                }
                Scan::StartTag(mut tag) => {
                    let closed = self.scan_start_tag(&mut tag)?;
                    match closed {
                        None => self.scan = Scan::StartTag(tag),
                        Some(self_closing) => {
                            self.scan = Scan::Content;
                            if let Some(frame) = self.start_tag_done(self_closing)? {
                                return Ok(Some(frame));
                            }
                        }
                    }
                }
                Scan::EndTag => {
                    let rest = &self.buf[self.pos..];
                    match rest.iter().position(|&b| b == b'>') {
                        None => self.pos = self.buf.len(),
                        Some(i) => {
                            self.pos += i + 1;
                            self.scan = Scan::Content;
                            if let Some(frame) = self.end_tag_done()? {
                                return Ok(Some(frame));
                            }
                        }
                    }
                }
                Scan::CData(mut brackets) => {
                    while self.pos < self.buf.len() {
                        let b = self.buf[self.pos];
                        self.pos += 1;
                        match b {
                            b']' => brackets = brackets.saturating_add(1),
                            b'>' if brackets >= 2 => {
                                self.scan = Scan::Content;
                                break;
                            }
                            _ => brackets = 0,
                        }
                    }
                    if let Scan::CData(_) = self.scan {
                        self.scan = Scan::CData(brackets);
                    }
                }
                Scan::Decl(mut question) => {
                    while self.pos < self.buf.len() {
                        let b = self.buf[self.pos];
                        self.pos += 1;
                        if question && b == b'>' {
                            self.scan = Scan::Content;
                            break;
                        }
                        question = b == b'?';
                    }
                    if self.scan == Scan::Content {
                        self.buf.advance(self.pos);
                        self.pos = 0;
                    } else {
                        self.scan = Scan::Decl(question);
                    }
                }
            }
        }
        if self.depth > 0 || self.scan != Scan::Content {
            if self.pos >= self.limits.max_stanza_size {
                return Err(FramingError::StanzaTooLarge {
                    limit: self.limits.max_stanza_size,
                });
            }
        } else if self.buf.is_empty() {
            self.shrink();
        }
        Ok(None)
    }

    /// Decides what follows a `<`; `Ok(false)` when more bytes are needed to know.
    fn classify_markup(&mut self) -> Result<bool, FramingError> {
        let rest = &self.buf[self.tag_start..];
        let need = |pattern: &[u8]| -> Option<bool> {
            let n = rest.len().min(pattern.len());
            if rest[..n] != pattern[..n] {
                Some(false)
            } else if n < pattern.len() {
                None
            } else {
                Some(true)
            }
        };
        let Some(&second) = rest.get(1) else {
            return Ok(false);
        };
        match second {
            b'/' => {
                if self.depth == 0 && !self.open {
                    return Err(FramingError::NotWellFormed(
                        "end tag before the stream header",
                    ));
                }
                self.pos = self.tag_start + 2;
                self.scan = Scan::EndTag;
            }
            b'!' => {
                if self.depth > 0 {
                    match need(b"<![CDATA[") {
                        None => return Ok(false),
                        Some(true) => {
                            self.pos = self.tag_start + 9;
                            self.scan = Scan::CData(0);
                            self.needs_full_check = true;
                            return Ok(true);
                        }
                        Some(false) => {}
                    }
                }
                match need(b"<!--") {
                    None => return Ok(false),
                    Some(true) => return Err(FramingError::RestrictedXml("comment")),
                    Some(false) => {}
                }
                return Err(FramingError::RestrictedXml(
                    "document type or entity declaration",
                ));
            }
            b'?' => match need(b"<?xml") {
                None => return Ok(false),
                Some(true) => {
                    let Some(&after) = rest.get(5) else {
                        return Ok(false);
                    };
                    if self.open || self.started || !after.is_ascii_whitespace() {
                        return Err(FramingError::RestrictedXml("processing instruction"));
                    }
                    self.started = true;
                    self.pos = self.tag_start + 6;
                    self.scan = Scan::Decl(false);
                }
                Some(false) => return Err(FramingError::RestrictedXml("processing instruction")),
            },
            b if is_name_start(b) => {
                self.started = true;
                self.pos = self.tag_start + 2;
                self.scan = Scan::StartTag(TagScan {
                    phase: TagPhase::Name,
                    attrs: 0,
                    attr_start: 0,
                    colon: b == b':',
                });
                self.tag_attrs.clear();
                if self.depth == 0 {
                    self.needs_full_check = false;
                }
                let _ = b;
            }
            _ => return Err(FramingError::NotWellFormed("'<' not followed by a name")),
        }
        Ok(true)
    }

    fn start_tag_done(&mut self, self_closing: bool) -> Result<Option<Frame>, FramingError> {
        if !self.open {
            if self_closing {
                return Err(FramingError::NotWellFormed("empty stream element"));
            }
            let header = self.buf.split_to(self.pos).freeze();
            self.pos = 0;
            self.open = true;
            self.stream_name = tag_name(&header[1..]).to_vec();
            return Ok(Some(Frame::Header(header)));
        }
        if self_closing {
            if self.depth == 0 {
                return self.take_element().map(Some);
            }
        } else {
            self.depth += 1;
            if self.depth > self.limits.max_depth {
                return Err(FramingError::TooDeep {
                    limit: self.limits.max_depth,
                });
            }
            let start = self.tag_start + 1;
            let len = tag_name(&self.buf[start..self.pos]).len();
            self.open_names.push((start, start + len));
        }
        Ok(None)
    }

    fn end_tag_done(&mut self) -> Result<Option<Frame>, FramingError> {
        if self.depth == 0 {
            let name = tag_name(&self.buf[self.tag_start + 2..self.pos]);
            if name != self.stream_name.as_slice() {
                return Err(FramingError::NotWellFormed(
                    "end tag does not match the stream",
                ));
            }
            self.done = true;
            self.buf = BytesMut::new();
            self.pos = 0;
            return Ok(Some(Frame::Close));
        }
        let inner = &self.buf[self.tag_start + 2..self.pos - 1];
        let name = tag_name(inner);
        if !inner[name.len()..].iter().all(u8::is_ascii_whitespace) {
            return Err(FramingError::NotWellFormed("malformed end tag"));
        }
        let matches = self
            .open_names
            .pop()
            .is_some_and(|(start, end)| self.buf[start..end] == *name);
        if !matches {
            return Err(FramingError::NotWellFormed(
                "end tag does not match the start tag",
            ));
        }
        self.depth -= 1;
        if self.depth == 0 {
            return self.take_element().map(Some);
        }
        Ok(None)
    }

    fn take_element(&mut self) -> Result<Frame, FramingError> {
        let element = self.buf.split_to(self.pos).freeze();
        self.pos = 0;
        if self.needs_full_check {
            std::str::from_utf8(&element)
                .map_err(|_| FramingError::NotWellFormed("invalid utf-8"))?;
            crate::element::check_well_formed(&element, crate::ns::CLIENT)
                .map_err(|_| FramingError::NotWellFormed("namespace or cdata error"))?;
        } else {
            check_text(&element)?;
        }
        Ok(Frame::Element(element))
    }

    /// Scans a start tag from `self.pos`; `Some(self_closing)` when its `>` was reached.
    fn scan_start_tag(&mut self, tag: &mut TagScan) -> Result<Option<bool>, FramingError> {
        let len = self.buf.len();
        while self.pos < len {
            match tag.phase {
                TagPhase::Name | TagPhase::AttrName => {
                    // Names run until a delimiter; one table lookup per byte.
                    let start = self.pos;
                    let mut colon = false;
                    let run = self.buf[start..]
                        .iter()
                        .position(|&b| {
                            colon |= b == b':';
                            !is_name_char(b)
                        })
                        .unwrap_or(len - start);
                    self.pos += run;
                    tag.colon |= colon;
                    if self.pos == len {
                        return Ok(None);
                    }
                    let b = self.buf[self.pos];
                    let at = self.pos;
                    self.pos += 1;
                    if tag.phase == TagPhase::Name {
                        if tag.colon {
                            self.needs_full_check = true;
                            tag.colon = false;
                        }
                        match b {
                            b'>' => return Ok(Some(false)),
                            b'/' => tag.phase = TagPhase::Slash,
                            b if b.is_ascii_whitespace() => tag.phase = TagPhase::Gap,
                            _ => return Err(FramingError::NotWellFormed("invalid element name")),
                        }
                    } else {
                        match b {
                            b'=' => tag.phase = TagPhase::AfterEq,
                            b if b.is_ascii_whitespace() => tag.phase = TagPhase::AfterName,
                            _ => {
                                return Err(FramingError::NotWellFormed("invalid attribute name"));
                            }
                        }
                        let prefixed = tag.colon;
                        tag.colon = false;
                        self.attribute_name_done(tag.attr_start, at, prefixed)?;
                    }
                }
                TagPhase::Value(quote) => {
                    let rest = &self.buf[self.pos..];
                    match memchr::memchr2(quote, b'<', rest) {
                        None => self.pos = len,
                        Some(i) if rest[i] == b'<' => {
                            return Err(FramingError::NotWellFormed("'<' in attribute value"));
                        }
                        Some(i) => {
                            self.pos += i + 1;
                            tag.phase = TagPhase::AfterValue;
                        }
                    }
                }
                phase => {
                    let b = self.buf[self.pos];
                    let at = self.pos;
                    self.pos += 1;
                    match (phase, b) {
                        (TagPhase::Gap | TagPhase::AfterValue, b'>') => return Ok(Some(false)),
                        (TagPhase::Gap | TagPhase::AfterValue, b'/') => tag.phase = TagPhase::Slash,
                        (TagPhase::AfterValue, b) if b.is_ascii_whitespace() => {
                            tag.phase = TagPhase::Gap;
                        }
                        (TagPhase::AfterValue, _) => {
                            return Err(FramingError::NotWellFormed(
                                "attributes must be separated by whitespace",
                            ));
                        }
                        (TagPhase::Gap | TagPhase::AfterName | TagPhase::AfterEq, b)
                            if b.is_ascii_whitespace() => {}
                        (TagPhase::Gap, b) if is_name_start(b) => {
                            tag.attrs += 1;
                            if tag.attrs > self.limits.max_attributes {
                                return Err(FramingError::TooManyAttributes {
                                    limit: self.limits.max_attributes,
                                });
                            }
                            tag.attr_start = at;
                            tag.colon = b == b':';
                            tag.phase = TagPhase::AttrName;
                        }
                        (TagPhase::Gap, _) => {
                            return Err(FramingError::NotWellFormed("malformed attribute"));
                        }
                        (TagPhase::AfterName, b'=') => tag.phase = TagPhase::AfterEq,
                        (TagPhase::AfterName, _) => {
                            return Err(FramingError::NotWellFormed("attribute without a value"));
                        }
                        (TagPhase::AfterEq, b'"' | b'\'') => tag.phase = TagPhase::Value(b),
                        (TagPhase::AfterEq, _) => {
                            return Err(FramingError::NotWellFormed("unquoted attribute value"));
                        }
                        (TagPhase::Slash, b'>') => return Ok(Some(true)),
                        (TagPhase::Slash, _) => {
                            return Err(FramingError::NotWellFormed("'/' not followed by '>'"));
                        }
                        (TagPhase::Name | TagPhase::AttrName | TagPhase::Value(_), _) => {
                            // Handled by the arms above; a phase never reaches here.
                            return Err(FramingError::NotWellFormed("scanner state"));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// Records an attribute name, refusing duplicates and noting prefixes.
    fn attribute_name_done(
        &mut self,
        start: usize,
        end: usize,
        prefixed: bool,
    ) -> Result<(), FramingError> {
        let name = &self.buf[start..end];
        if prefixed && !name.starts_with(b"xml:") {
            self.needs_full_check = true;
        }
        if self.tag_attrs.iter().any(|&(s, e)| self.buf[s..e] == *name) {
            return Err(FramingError::NotWellFormed("duplicate attribute"));
        }
        self.tag_attrs.push((start, end));
        Ok(())
    }
}

/// The qualified name at the start of `tag` (which starts just after `<` or `</`).
fn tag_name(tag: &[u8]) -> &[u8] {
    let end = tag
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/')
        .unwrap_or(tag.len());
    &tag[..end]
}

/// Byte classes for names: bit 0 = may start a name, bit 1 = may continue one. Bytes of
/// multi-byte UTF-8 sequences count as name characters (checked as UTF-8 later).
const NAME_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let start = c.is_ascii_alphabetic() || c == b'_' || c == b':' || c >= 0x80;
        let more = start || c.is_ascii_digit() || c == b'-' || c == b'.';
        table[b] = (start as u8) | ((more as u8) << 1);
        b += 1;
    }
    table
};

fn is_name_start(b: u8) -> bool {
    NAME_CLASS[b as usize] & 1 != 0
}

fn is_name_char(b: u8) -> bool {
    NAME_CLASS[b as usize] & 2 != 0
}

/// The checks on a complete element that need no parse: valid UTF-8, and every `&` starts a
/// predefined entity or a character reference of a legal character (CDATA, where `&` is
/// literal, gets the full check instead).
fn check_text(element: &[u8]) -> Result<(), FramingError> {
    let text =
        std::str::from_utf8(element).map_err(|_| FramingError::NotWellFormed("invalid utf-8"))?;
    let bytes = text.as_bytes();
    for amp in memchr::memchr_iter(b'&', bytes) {
        let rest = &text[amp + 1..];
        let end = rest
            .bytes()
            .take(12)
            .position(|b| b == b';')
            .ok_or(FramingError::NotWellFormed("unterminated entity reference"))?;
        let entity = &rest[..end];
        let valid = match entity {
            "amp" | "lt" | "gt" | "quot" | "apos" => true,
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32).is_some_and(is_xml_char)
            }
        };
        if !valid {
            return Err(FramingError::NotWellFormed("undefined entity reference"));
        }
    }
    Ok(())
}

/// XML 1.0 `Char`.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    fn frames_of(input: &[u8], chunk: usize) -> Result<Vec<Frame>, FramingError> {
        let mut framer = Framer::new(Limits::default());
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            framer.push(piece);
            while let Some(frame) = framer.next_frame()? {
                out.push(frame);
            }
        }
        Ok(out)
    }

    fn element(s: &str) -> Frame {
        Frame::Element(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn frames_a_stream_split_at_every_byte_boundary() {
        let stanzas = [
            "<message to='a@b' id='1'><body>hi &amp; bye</body></message>",
            "<presence/>",
            "<iq type='get' id='x'><query xmlns='jabber:iq:roster'/></iq>",
            "<message><body><![CDATA[ <not> ]] a tag ]]></body></message>",
            "<message a=\"x>y\" b='q\"/>'><body>2 > 1</body></message>",
        ];
        let mut input = String::from(HEADER);
        for s in stanzas {
            input.push_str(s);
            input.push_str(" \n ");
        }
        input.push_str("</stream:stream>");
        let mut expected = vec![Frame::Header(Bytes::from_static(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
        ))];
        expected.extend(stanzas.iter().map(|s| element(s)));
        expected.push(Frame::Close);
        let whole = frames_of(input.as_bytes(), input.len()).unwrap();
        assert_eq!(whole, expected);
        for split in 1..input.len() {
            let mut framer = Framer::new(Limits::default());
            let mut got = Vec::new();
            for piece in [&input.as_bytes()[..split], &input.as_bytes()[split..]] {
                framer.push(piece);
                while let Some(frame) = framer.next_frame().unwrap() {
                    got.push(frame);
                }
            }
            assert_eq!(got, expected, "split at byte {split}");
        }
        assert_eq!(frames_of(input.as_bytes(), 1).unwrap(), expected);
        assert_eq!(frames_of(input.as_bytes(), 7).unwrap(), expected);
    }

    #[test]
    fn whitespace_keepalives_are_consumed() {
        let mut framer = Framer::new(Limits::default());
        framer.push(HEADER.as_bytes());
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Header(_)))));
        for _ in 0..100 {
            framer.push(b" \n\t ");
            assert_eq!(framer.next_frame(), Ok(None));
        }
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn rejects_text_between_stanzas() {
        let input = format!("{HEADER}hello<presence/>");
        assert_eq!(
            frames_of(input.as_bytes(), 3),
            Err(FramingError::NotWellFormed(
                "character data outside a stanza"
            ))
        );
    }

    #[test]
    fn rejects_stanza_over_limit_even_before_it_ends() {
        let limits = Limits {
            max_stanza_size: 1024,
            ..Limits::default()
        };
        let mut framer = Framer::new(limits);
        framer.push(HEADER.as_bytes());
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Header(_)))));
        framer.push(b"<message><body>");
        assert_eq!(framer.next_frame(), Ok(None));
        framer.push(&[b'a'; 2000]);
        assert_eq!(
            framer.next_frame(),
            Err(FramingError::StanzaTooLarge { limit: 1024 })
        );
        // after an error the framer stays closed
        framer.push(b"</body></message>");
        assert_eq!(framer.next_frame(), Ok(None));
    }

    #[test]
    fn accepts_stanza_just_under_limit() {
        let body = "a".repeat(900);
        let stanza = format!("<message><body>{body}</body></message>");
        let limits = Limits {
            max_stanza_size: stanza.len(),
            ..Limits::default()
        };
        let mut framer = Framer::new(limits);
        framer.push(HEADER.as_bytes());
        framer.push(stanza.as_bytes());
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Header(_)))));
        assert_eq!(framer.next_frame(), Ok(Some(element(&stanza))));
    }

    #[test]
    fn rejects_deep_nesting() {
        let limits = Limits {
            max_depth: 4,
            ..Limits::default()
        };
        let mut framer = Framer::new(limits);
        framer.push(HEADER.as_bytes());
        framer.push(b"<a><b><c><d><e>");
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Header(_)))));
        assert_eq!(framer.next_frame(), Err(FramingError::TooDeep { limit: 4 }));
    }

    #[test]
    fn rejects_too_many_attributes() {
        let limits = Limits {
            max_attributes: 4,
            ..Limits::default()
        };
        let mut framer = Framer::new(limits);
        framer.push(HEADER.as_bytes());
        framer.push(b"<message a='1' b='2' c='3' d='4' e='5'/>");
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Header(_)))));
        assert_eq!(
            framer.next_frame(),
            Err(FramingError::TooManyAttributes { limit: 4 })
        );
    }

    #[test]
    fn refuses_restricted_xml() {
        for (bad, expected) in [
            (
                "<!DOCTYPE foo [<!ENTITY x 'y'>]>",
                "document type or entity declaration",
            ),
            ("<!ENTITY lol 'lol'>", "document type or entity declaration"),
            ("<!-- comment -->", "comment"),
            ("<?pi data?>", "processing instruction"),
            ("<?xml version='1.0'?>", "processing instruction"),
        ] {
            let input = format!("{HEADER}{bad}");
            for chunk in [1, 5, input.len()] {
                assert_eq!(
                    frames_of(input.as_bytes(), chunk).map(|_| ()),
                    Err(FramingError::RestrictedXml(expected)),
                    "{bad} in chunks of {chunk}"
                );
            }
        }
        let inside = format!("{HEADER}<message><!-- x --></message>");
        assert_eq!(
            frames_of(inside.as_bytes(), 1).map(|_| ()),
            Err(FramingError::RestrictedXml("comment"))
        );
        let doctype_first = "<!DOCTYPE stream><stream:stream>";
        assert!(matches!(
            frames_of(doctype_first.as_bytes(), 2),
            Err(FramingError::RestrictedXml(_))
        ));
    }

    #[test]
    fn rejects_malformed_markup() {
        for bad in ["<message a='<'/>", "< message/>", "<message <x/>"] {
            let input = format!("{HEADER}{bad}");
            assert!(
                matches!(
                    frames_of(input.as_bytes(), 1),
                    Err(FramingError::NotWellFormed(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            frames_of(format!("{HEADER}</stream:other>").as_bytes(), 4),
            Err(FramingError::NotWellFormed(_))
        ));
    }

    #[test]
    fn hands_out_only_well_formed_elements() {
        let bad: [&[u8]; 11] = [
            b"<message a='1' a='2'/>",
            b"<message a=1/>",
            b"<message a='1'b='2'/>",
            b"<message a/>",
            b"<mess@ge/>",
            b"<message><body>&lol;</body></message>",
            b"<message><body>&#0;</body></message>",
            b"<message><body>a & b</body></message>",
            b"<message><body>\xff\xfe</body></message>",
            b"<message><p:x/></message>",
            b"<message></message/>",
        ];
        for element in bad {
            let mut input = HEADER.as_bytes().to_vec();
            input.extend_from_slice(element);
            for chunk in [1, input.len()] {
                let result = frames_of(&input, chunk);
                assert!(
                    matches!(result, Err(FramingError::NotWellFormed(_))),
                    "{:?} gave {result:?}",
                    String::from_utf8_lossy(element)
                );
            }
        }
        let good = [
            "<message xml:lang='en' to=\"a@b\" ><body>&amp;&#65;&#x42; caf\u{e9}</body></message>",
            "<iq><q xmlns:p='urn:p'><p:x p:a='1'/></q></iq>",
            "<message><body><![CDATA[ a & b <c> ]]></body></message>",
            "<presence\n  type = 'unavailable'\t/>",
        ];
        for element in good {
            let input = format!("{HEADER}{element}");
            assert_eq!(
                frames_of(input.as_bytes(), 1).unwrap(),
                vec![
                    frames_of(HEADER.as_bytes(), 1).unwrap()[0].clone(),
                    element_frame(element)
                ],
                "{element}"
            );
        }
    }

    fn element_frame(s: &str) -> Frame {
        Frame::Element(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn mismatched_end_tag_fails_at_once() {
        // The stanza never closes at depth 0, so only an immediate check can catch it.
        let input = format!("{HEADER}<message to='x@localhost'><body>oops</mesage>");
        for chunk in [1, 3, input.len()] {
            assert_eq!(
                frames_of(input.as_bytes(), chunk).map(|_| ()),
                Err(FramingError::NotWellFormed(
                    "end tag does not match the start tag"
                )),
                "chunk {chunk}"
            );
        }
        let ok = format!("{HEADER}<a><b></b ><c/></a >");
        assert_eq!(frames_of(ok.as_bytes(), 2).unwrap().len(), 2);
    }

    /// A tiny deterministic generator, so the mutation test needs no dependency and every
    /// failure reproduces.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Frames `input` fed in pieces cut at `cuts`; the outcome as comparable data.
    fn outcome(input: &[u8], cuts: &[usize]) -> (Vec<Frame>, Option<FramingError>) {
        let limits = Limits {
            max_stanza_size: 512,
            max_depth: 6,
            max_attributes: 8,
        };
        let mut framer = Framer::new(limits);
        let mut frames = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            framer.push(&input[start..cut]);
            start = cut;
            loop {
                match framer.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => return (frames, Some(e)),
                }
            }
        }
        (frames, None)
    }

    #[test]
    fn mutated_streams_never_panic_and_frame_the_same_at_any_split() {
        let base = format!(
            "{HEADER}<message to='a@b' id='1'><body>x &amp; y</body></message><presence/>\
             <iq type='get' id='2'><query xmlns='jabber:iq:roster'/></iq>\
             <message><body><![CDATA[ <> ]]></body></message></stream:stream>"
        );
        let alphabet = b"<>/'\"=!?[]- x&;";
        let mut rng = XorShift(0x5eed_1234_abcd_0001);
        for round in 0..3000 {
            let mut input = base.as_bytes().to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(input.len());
                match rng.below(3) {
                    0 => input[at] = alphabet[rng.below(alphabet.len())],
                    1 => input.insert(at, alphabet[rng.below(alphabet.len())]),
                    _ => {
                        input.remove(at);
                    }
                }
            }
            let whole = outcome(&input, &[]);
            let mut cuts: Vec<usize> = (0..1 + rng.below(6))
                .map(|_| rng.below(input.len()))
                .collect();
            cuts.sort_unstable();
            let split = outcome(&input, &cuts);
            assert_eq!(
                whole,
                split,
                "round {round}: {:?} cut at {cuts:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    #[test]
    fn reset_expects_a_new_header() {
        let mut framer = Framer::new(Limits::default());
        framer.push(HEADER.as_bytes());
        framer.push(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Header(_)))));
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Element(_)))));
        framer.reset();
        framer.push(HEADER.as_bytes());
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Header(_)))));
    }

    #[test]
    fn releases_buffer_when_idle() {
        let mut framer = Framer::new(Limits::default());
        framer.push(HEADER.as_bytes());
        framer.push(b"<presence/>");
        assert!(framer.next_frame().unwrap().is_some());
        assert!(framer.next_frame().unwrap().is_some());
        assert_eq!(framer.next_frame(), Ok(None));
        assert_eq!(framer.buf.capacity(), 0);
    }
}
