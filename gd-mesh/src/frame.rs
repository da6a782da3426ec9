//! The frames on a bridge, and their encoding.
//!
//! A bridge is one QUIC connection dialed by each datacenter to each other one; the dialer sends
//! on it, the listener answers. Every QUIC stream carries a sequence of frames, each a 4-byte
//! big-endian length followed by that many bytes: one format byte ([`FORMAT`]) and the postcard
//! encoding of a [`Frame`].
//!
//! Streams:
//! - the **control stream** (the first bidirectional stream): [`Frame::Hello`] from the dialer,
//!   [`Frame::Welcome`] or [`Frame::Refuse`] back;
//! - **envelope streams**: [`Frame::Open`] with [`StreamKind::Envelopes`] and the stream's index,
//!   then [`Frame::Envelope`]s from the dialer and cumulative [`Frame::Ack`]s back;
//! - **Raft streams**: [`Frame::Open`] with [`StreamKind::Raft`], one [`Frame::RaftRequest`],
//!   one [`Frame::RaftReply`];
//! - **call streams**: [`Frame::Open`] with [`StreamKind::Call`], one [`Frame::CallRequest`],
//!   one [`Frame::CallReply`] (the node's own requests to another datacenter, such as the
//!   credentials of a user homed there).
//!
//! New variants are only ever added at the end of an enum, so a frame of an older version of
//! this format still decodes the same.
//!
//! Decoding untrusted bytes never panics and never allocates more than the frame's declared
//! length, which is checked against a limit before anything is read ([`read_frame`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The encoding version written in front of every frame.
pub const FORMAT: u8 = 1;

/// The largest frame accepted by default: a stanza at the largest size a node accepts (1 MiB
/// by default) plus the envelope's metadata.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024 + 64 * 1024;

/// What a stream carries, said by its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    /// Envelopes for the (from, to) pairs that hash onto stream `index`.
    Envelopes {
        /// The stream's index among the bridge's envelope streams.
        index: u16,
    },
    /// One Raft RPC of the global routing table.
    Raft,
    /// One request of the node to the peer datacenter (opaque to the mesh), and its reply.
    Call,
}

/// The dialer's opening of a bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The dialing datacenter (its certificate says the same; the listener checks).
    pub dc: String,
    /// Digest of the dialer's topology file; both sides must run the same topology.
    pub topology: [u8; 32],
    /// The dialer's link epoch: new each time its process starts, so sequence numbers of an
    /// older life are never confused with this one's.
    pub epoch: u64,
    /// How many envelope streams the dialer uses.
    pub streams: u16,
}

/// The listener's acceptance of a bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The listening datacenter.
    pub dc: String,
    /// For each envelope stream of the dialer's epoch, the highest sequence number already
    /// delivered here (0: none), so the dialer resends only what is missing.
    pub delivered: Vec<u64>,
}

/// A stanza travelling between datacenters, with what the receiver needs to route it without
/// parsing it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Position on its stream in the sender's epoch, from 1, without gaps.
    pub seq: u64,
    /// The datacenter where the stanza entered the mesh (differs from the link's peer when a
    /// datacenter forwards a stanza on a stale route).
    pub origin: String,
    /// Datacenters this envelope has already crossed; a receiver refuses to forward past the
    /// limit and bounces an error instead.
    pub hops: u8,
    /// What the stanza is and where it goes.
    pub route: Route,
    /// The stanza as it was received (with `from` stamped), not re-serialised.
    pub stanza: Bytes,
}

/// Routing metadata of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The stanza's `from`.
    pub from: String,
    /// The stanza's `to`.
    pub to: String,
    /// What the envelope carries.
    pub kind: EnvelopeKind,
    /// The routing table index the sender's decision reflected (a receiver with a newer view
    /// may route again).
    pub grt_index: u64,
}

/// What an envelope carries: a stanza routed to a user's home (by its top-level element), or
/// the traffic of an **edge session** — a client connected to a datacenter other than its
/// account's home, whose session lives at the home and whose stanzas the two datacenters pass
/// each other. For the edge kinds, `route.from` is the session's full JID and `route.to` its
/// bare JID (so all of an account's edge traffic keeps one order), and `route.grt_index` carries
/// the session's connection id at the edge instead of an index (0: none); [`Self::ToEdge`] has
/// the session's full JID as both `from` and `to` (one order for everything the session gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvelopeKind {
    /// `<message/>`.
    Message,
    /// `<presence/>`.
    Presence,
    /// `<iq/>`.
    Iq,
    /// Edge → home: a session was bound at the edge (payload: the node's control record).
    EdgeOpen,
    /// Edge → home: the edge session's stream ended.
    EdgeClose,
    /// Edge → home: a stanza the edge session's client sent, for the home to handle as that
    /// session's.
    FromEdge,
    /// Home → edge: a stanza for the edge session's client.
    ToEdge,
    /// Edge → home: a [`Self::ToEdge`] stanza that found no session (the home routes it again).
    Undelivered,
    /// Home → edge: end the edge session's stream (payload: the node's control record).
    CloseEdge,
    /// Any → any: this datacenter's node started (payload: its epoch); sessions the peer
    /// keeps for an older life of it are gone.
    Epoch,
    /// A room's home → a datacenter where some of its occupants live: which of the room's
    /// occupant sessions that datacenter delivers to (payload: the node's record).
    RoomOccupants,
    /// A room's home → such a datacenter: one copy of a stanza for every occupant it delivers
    /// to (payload: the node's record), so a room message crosses each bridge once.
    RoomFanout,
    /// A room's home → the datacenter of a joining occupant's account: everything that answers
    /// the join (the occupants' presence, its own, history, subject), in order, in one envelope.
    RoomBatch,
}

/// One frame on a bridge stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Dialer → listener, first frame of the control stream.
    Hello(Hello),
    /// Listener → dialer: the bridge is up.
    Welcome(Welcome),
    /// Listener → dialer: the bridge is refused, and why (then the connection is closed).
    Refuse {
        /// Why, for the dialer's log.
        reason: String,
    },
    /// First frame of every other stream.
    Open(StreamKind),
    /// A stanza.
    Envelope(Envelope),
    /// Receiver → sender: every envelope up to `seq` on this stream is delivered.
    Ack {
        /// The highest sequence number delivered, cumulatively.
        seq: u64,
    },
    /// A Raft RPC request frame (opaque to the mesh).
    RaftRequest(Bytes),
    /// Its reply.
    RaftReply(Bytes),
    /// A node's request to the peer datacenter (opaque to the mesh).
    CallRequest(Bytes),
    /// Its reply.
    CallReply(Bytes),
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream ended cleanly before a frame started.
    #[error("stream finished")]
    Finished,
    /// The stream broke, or ended inside a frame.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// The declared length is over the limit: the peer is refused before anything is read.
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// The declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame of a format this version does not know.
    #[error("frame format {0} is not known to this version (it knows {FORMAT})")]
    UnknownFormat(u8),
    /// The bytes are not a frame.
    #[error("corrupt frame: {0}")]
    Corrupt(String),
}

impl Frame {
    /// The frame's bytes: format byte, then postcard (without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        // Plain data into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).expect("frames always encode"));
        out
    }

    /// Reads a frame from its bytes (without the length prefix).
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        match bytes.split_first() {
            None => Err(FrameError::Corrupt("empty frame".to_owned())),
            Some((&FORMAT, rest)) => {
                let (frame, left) = postcard::take_from_bytes(rest)
                    .map_err(|e| FrameError::Corrupt(e.to_string()))?;
                if left.is_empty() {
                    Ok(frame)
                } else {
                    Err(FrameError::Corrupt(format!(
                        "{} bytes after the frame",
                        left.len()
                    )))
                }
            }
            Some((&other, _)) => Err(FrameError::UnknownFormat(other)),
        }
    }
}

/// Writes one length-prefixed frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Frame,
) -> std::io::Result<()> {
    let body = frame.encode();
    let len =
        u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame longer than 4 GiB"))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    writer.write_all(&out).await
}

/// Reads one length-prefixed frame of at most `max` bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Frame, FrameError> {
    let mut len = [0u8; 4];
    let mut filled = 0;
    while filled < len.len() {
        match reader.read(&mut len[filled..]).await? {
            0 if filled == 0 => return Err(FrameError::Finished),
            0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            n => filled += n,
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Frame::decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                dc: "dc1".into(),
                topology: [7; 32],
                epoch: 42,
                streams: 16,
            }),
            Frame::Welcome(Welcome {
                dc: "dc2".into(),
                delivered: vec![0, 5, 9],
            }),
            Frame::Refuse {
                reason: "unknown datacenter".into(),
            },
            Frame::Open(StreamKind::Envelopes { index: 3 }),
            Frame::Open(StreamKind::Raft),
            Frame::Envelope(Envelope {
                seq: 1,
                origin: "dc1".into(),
                hops: 0,
                route: Route {
                    from: "a@localhost/phone".into(),
                    to: "b@localhost".into(),
                    kind: EnvelopeKind::Message,
                    grt_index: 17,
                },
                stanza: Bytes::from_static(b"<message to='b@localhost'><body>hi</body></message>"),
            }),
            Frame::Ack { seq: u64::MAX },
            Frame::RaftRequest(Bytes::from_static(&[1, 2, 3])),
            Frame::RaftReply(Bytes::new()),
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        for frame in samples() {
            let bytes = frame.encode();
            assert_eq!(bytes[0], FORMAT);
            assert_eq!(Frame::decode(&bytes).expect("decodes"), frame);
        }
    }

    #[test]
    fn an_envelope_is_compact() {
        let Frame::Envelope(envelope) = &samples()[5] else {
            unreachable!("sample 5 is an envelope")
        };
        let overhead = Frame::Envelope(envelope.clone()).encode().len() - envelope.stanza.len();
        // Metadata: the two JIDs, the origin and a few varints.
        assert!(overhead < 48, "{overhead} bytes of overhead");
    }

    #[test]
    fn unknown_formats_trailing_bytes_and_garbage_are_refused() {
        assert!(matches!(
            Frame::decode(&[9, 0]),
            Err(FrameError::UnknownFormat(9))
        ));
        assert!(matches!(Frame::decode(&[]), Err(FrameError::Corrupt(_))));
        let mut bytes = Frame::Ack { seq: 1 }.encode();
        bytes.push(0);
        assert!(matches!(Frame::decode(&bytes), Err(FrameError::Corrupt(_))));
    }

    /// Every prefix, every single-byte change and a large number of random inputs: the decoder
    /// returns (a frame or an error) and never panics. Declared lengths inside postcard (of
    /// strings and byte arrays) larger than the input fail without allocating them.
    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for frame in samples() {
            let bytes = frame.encode();
            for len in 0..bytes.len() {
                let _ = Frame::decode(&bytes[..len]);
            }
            for i in 0..bytes.len() {
                for flip in [1u8, 0x80, 0xff] {
                    let mut damaged = bytes.clone();
                    damaged[i] ^= flip;
                    let _ = Frame::decode(&damaged);
                }
            }
        }
        for _ in 0..200_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(first) = bytes.first_mut() {
                *first = FORMAT;
            }
            let _ = Frame::decode(&bytes);
        }
        // A string declared 4 GiB long in 6 bytes.
        let _ = Frame::decode(&[FORMAT, 2, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[tokio::test]
    async fn frames_stream_and_oversized_ones_are_refused_before_reading() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        for frame in samples() {
            write_frame(&mut a, &frame).await.expect("write");
        }
        drop(a);
        for frame in samples() {
            assert_eq!(
                read_frame(&mut b, DEFAULT_MAX_FRAME).await.expect("read"),
                frame
            );
        }
        assert!(matches!(
            read_frame(&mut b, DEFAULT_MAX_FRAME).await,
            Err(FrameError::Finished)
        ));

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        assert!(matches!(
            read_frame(&mut b, DEFAULT_MAX_FRAME).await,
            Err(FrameError::TooLarge { .. })
        ));

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 9, FORMAT, 1]).await.expect("write");
        drop(a);
        assert!(matches!(
            read_frame(&mut b, DEFAULT_MAX_FRAME).await,
            Err(FrameError::Io(_))
        ));
    }
}
