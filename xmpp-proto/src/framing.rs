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
    StartTag {
        /// The open quote character, or 0 outside a value.
        quote: u8,
        /// Attributes seen so far (counted by `=` outside values).
        attrs: usize,
        /// Last byte seen outside a value, to spot `/>`.
        prev: u8,
    },
    /// Inside an end tag.
    EndTag,
    /// Inside `<![CDATA[ … ]]>`; the count of `]` just seen.
    CData(u8),
    /// Inside the XML declaration `<?xml … ?>`; whether the last byte was `?`.
    Decl(bool),
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
                    let text_len = rest.iter().position(|&b| b == b'<').unwrap_or(rest.len());
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
                Scan::StartTag {
                    mut quote,
                    mut attrs,
                    mut prev,
                } => {
                    let mut closed = None;
                    while self.pos < self.buf.len() {
                        let b = self.buf[self.pos];
                        self.pos += 1;
                        if quote != 0 {
                            if b == quote {
                                quote = 0;
                                prev = b;
                            } else if b == b'<' {
                                return Err(FramingError::NotWellFormed("'<' in attribute value"));
                            }
                            continue;
                        }
                        match b {
                            b'"' | b'\'' => quote = b,
                            b'=' => {
                                attrs += 1;
                                if attrs > self.limits.max_attributes {
                                    return Err(FramingError::TooManyAttributes {
                                        limit: self.limits.max_attributes,
                                    });
                                }
                            }
                            b'<' => return Err(FramingError::NotWellFormed("'<' inside a tag")),
                            b'>' => {
                                closed = Some(prev == b'/');
                                break;
                            }
                            _ => {}
                        }
                        if !b.is_ascii_whitespace() {
                            prev = b;
                        }
                    }
                    match closed {
                        None => self.scan = Scan::StartTag { quote, attrs, prev },
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
                self.scan = Scan::StartTag {
                    quote: 0,
                    attrs: 0,
                    prev: b,
                };
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
                return Ok(Some(self.take_element()));
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
        let name = tag_name(&self.buf[self.tag_start + 2..self.pos]);
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
            return Ok(Some(self.take_element()));
        }
        Ok(None)
    }

    fn take_element(&mut self) -> Frame {
        let element = self.buf.split_to(self.pos).freeze();
        self.pos = 0;
        Frame::Element(element)
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

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':' || b >= 0x80
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
