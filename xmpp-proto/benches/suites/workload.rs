//! The workload: a client stream of typical 1:1 chat messages, as one byte buffer.
//!
//! Each message is what a mobile or desktop client sends for one line of chat (XEP-0085 chat
//! state included), 200–300 bytes, with a distinct id and one of a few bodies of different
//! lengths, some with predefined entities:
//!
//! ```xml
//! <message to='juliet@capulet.lit/balcony' id='…' type='chat'><body>…</body>
//!   <active xmlns='http://jabber.org/protocol/chatstates'/></message>
//! ```

/// Messages per workload (one criterion iteration parses all of them).
pub(crate) const MESSAGES: usize = 10_000;

/// Bytes handed to the parser per call, like one socket read.
pub(crate) const CHUNK: usize = 4096;

/// The client's stream header, sent before the messages.
pub(crate) const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='capulet.lit' version='1.0' xml:lang='en'>";

/// Message bodies, cycled; between 60 and 150 bytes of text so messages span 200–300 bytes.
const BODIES: [&str; 6] = [
    "Wherefore art thou Romeo? Deny thy father and refuse thy name.",
    "It is the east, and Juliet is the sun. Arise, fair sun, and kill the envious moon.",
    "What&apos;s in a name? That which we call a rose by any other word would smell as sweet; \
     so Romeo would, were he not Romeo call&apos;d.",
    "Good night, good night! Parting is such sweet sorrow &amp; I shall say good night till it be morrow.",
    "ok, see you at the orchard wall at nine? bring the rope ladder this time",
    "My bounty is as boundless as the sea, my love as deep; the more I give to thee, the more I \
     have, for both are infinite.",
];

/// The byte stream and what it contains.
pub(crate) struct Workload {
    /// The stanzas alone, back to back (the header is [`HEADER`]).
    pub(crate) stanzas: Vec<u8>,
    /// How many stanzas `stanzas` holds.
    pub(crate) count: usize,
    /// The smallest and largest stanza, in bytes.
    pub(crate) size_range: (usize, usize),
}

impl Workload {
    /// `count` chat messages.
    pub(crate) fn chat(count: usize) -> Self {
        let mut stanzas = Vec::with_capacity(count * 300);
        let mut size_range = (usize::MAX, 0);
        for i in 0..count {
            let start = stanzas.len();
            let body = BODIES[i % BODIES.len()];
            stanzas.extend_from_slice(
                format!(
                    "<message to='juliet@capulet.lit/balcony' id='a7f3c9e2-{i:08x}' type='chat'>\
                     <body>{body}</body>\
                     <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
                )
                .as_bytes(),
            );
            let len = stanzas.len() - start;
            size_range = (size_range.0.min(len), size_range.1.max(len));
        }
        assert!(
            size_range.0 >= 200 && size_range.1 <= 300,
            "messages must be 200-300 bytes, got {size_range:?}"
        );
        Self {
            stanzas,
            count,
            size_range,
        }
    }

    /// The stanzas in reads of [`CHUNK`] bytes (splitting stanzas wherever a read ends).
    pub(crate) fn chunks(&self) -> std::slice::Chunks<'_, u8> {
        self.stanzas.chunks(CHUNK)
    }
}
