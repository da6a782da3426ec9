//! XEP-0198 stream management: the counters and the unacknowledged queue of one stream.
//!
//! Counting starts when the client enables stream management (or resumes). Every stanza the
//! client sends is counted as handled when the stream hands it to its owner; every stanza the
//! server writes is kept until the client's `<a h/>` covers it. Counters are 32-bit and wrap
//! (XEP-0198 §4). What the client never acknowledged is given back to the owner when the
//! stream ends ([`SmSnapshot`]), to be resent on resumption or routed again.

use std::collections::VecDeque;

use bytes::Bytes;

/// The stream management state of an established stream.
#[derive(Debug, Default)]
pub(super) struct SmState {
    /// Whether the session may be resumed after this stream ends.
    pub resumable: bool,
    /// Stanzas received from the client and handled (the `h` we report).
    pub inbound: u32,
    /// Outbound stanzas the client acknowledged (its last `h`).
    pub acked: u32,
    /// Stanzas written and not yet acknowledged, oldest first.
    pub unacked: VecDeque<Bytes>,
    /// Whether an `<r/>` is outstanding (one at a time).
    pub requested: bool,
}

/// Why an `<a/>` from the client is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HandledTooHigh {
    pub h: u32,
    pub sent: u32,
}

impl SmState {
    /// Outbound stanzas counted so far.
    pub(super) fn sent(&self) -> u32 {
        // The queue is bounded far below 2^32 (`max_unacked`).
        self.acked
            .wrapping_add(u32::try_from(self.unacked.len()).unwrap_or(u32::MAX))
    }

    /// The client acknowledged `h` stanzas: drop what it covers.
    pub(super) fn acknowledge(&mut self, h: u32) -> Result<(), HandledTooHigh> {
        let newly = h.wrapping_sub(self.acked) as usize;
        if newly > self.unacked.len() {
            return Err(HandledTooHigh {
                h,
                sent: self.sent(),
            });
        }
        self.unacked.drain(..newly);
        if self.unacked.is_empty() {
            self.unacked = VecDeque::new();
        }
        self.acked = h;
        self.requested = false;
        Ok(())
    }
}

/// What the owner keeps of a stream's management state when the stream ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmSnapshot {
    /// Whether the client asked for resumption.
    pub resumable: bool,
    /// Stanzas received from the client and handled.
    pub inbound: u32,
    /// Outbound stanzas the client acknowledged.
    pub acked: u32,
    /// Stanzas written to the client and never acknowledged, oldest first.
    pub unacked: Vec<Bytes>,
}

impl SmSnapshot {
    /// The stanzas a resuming client that says it handled `h` has not seen, or `None` when `h`
    /// is more than was ever sent.
    pub fn unseen_after(&self, h: u32) -> Option<&[Bytes]> {
        let seen = h.wrapping_sub(self.acked) as usize;
        self.unacked.get(seen..)
    }
}

/// Parses an `h` attribute (a 32-bit unsigned count).
pub(super) fn parse_h(value: Option<&str>) -> Option<u32> {
    value.and_then(|v| v.trim().parse::<u32>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(acked: u32, n: usize) -> SmState {
        SmState {
            acked,
            unacked: (0..n).map(|i| Bytes::from(format!("<m{i}/>"))).collect(),
            ..SmState::default()
        }
    }

    #[test]
    fn acknowledgements_drop_what_they_cover_and_wrap() {
        let mut s = state(u32::MAX - 1, 4);
        assert_eq!(s.sent(), 2);
        s.acknowledge(u32::MAX).unwrap();
        assert_eq!(s.unacked.len(), 3);
        s.acknowledge(1).unwrap();
        assert_eq!(s.unacked.front().unwrap().as_ref(), b"<m3/>");
        assert_eq!(
            s.acknowledge(5),
            Err(HandledTooHigh { h: 5, sent: 2 }),
            "more than was sent"
        );
        s.acknowledge(2).unwrap();
        assert!(s.unacked.is_empty());
        assert_eq!(s.unacked.capacity(), 0, "an empty queue holds no memory");
    }

    #[test]
    fn a_resuming_client_gets_what_it_did_not_handle() {
        let snapshot = SmSnapshot {
            acked: 10,
            unacked: (0..3).map(|i| Bytes::from(format!("<m{i}/>"))).collect(),
            ..SmSnapshot::default()
        };
        assert_eq!(snapshot.unseen_after(10).unwrap().len(), 3);
        assert_eq!(snapshot.unseen_after(12).unwrap()[0].as_ref(), b"<m2/>");
        assert!(snapshot.unseen_after(13).unwrap().is_empty());
        assert!(snapshot.unseen_after(14).is_none());
        assert!(snapshot.unseen_after(9).is_none(), "behind the last ack");
    }
}
