//! XMPP over WebSocket (RFC 7395) behind the byte-stream interface of a TCP connection, so the
//! login code and the swarm's raw-frame loops run unchanged over either.
//!
//! Reading, each text message becomes bytes of a TCP stream: `<open/>` a stream header,
//! `<close/>` the stream's end tag, anything else passes as it is. Writing, the bytes are split
//! into top-level elements by a [`Framer`] and each goes out as one text message when the writer
//! flushes; a stream header becomes `<open/>` (and starts a new stream) and the end tag `<close/>`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use anyhow::{Context as _, Result, anyhow};
use bytes::{Buf as _, Bytes};
use futures_util::{Sink, Stream};
use tern_xmpp_proto::{Frame, Framer, Limits, ns};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::client::{READ_CHUNK, attr};

/// The framing namespace of RFC 7395.
const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// The WebSocket subprotocol of RFC 7395.
const SUBPROTOCOL: &str = "xmpp";
/// The end of a stream, both ways.
const CLOSE: &str = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";
const END_TAG: &[u8] = b"</stream:stream>";
/// Bytes written but not yet sent past which a write first sends what is complete.
const WRITE_BACKLOG: usize = 256 * 1024;

/// Opens a WebSocket on `io` (TCP, or TLS over TCP for `wss`) to `path` on `server`, with the
/// `xmpp` subprotocol.
pub(crate) async fn connect<S>(
    io: S,
    secure: bool,
    server: SocketAddr,
    path: &str,
) -> Result<WsIo<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let scheme = if secure { "wss" } else { "ws" };
    let url = format!("{scheme}://{server}{path}");
    let mut request = url
        .as_str()
        .into_client_request()
        .with_context(|| format!("WebSocket URL {url}"))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    // The default 128 KiB read buffer per connection would dominate the harness's memory.
    let config = WebSocketConfig::default().read_buffer_size(READ_CHUNK);
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, io, Some(config))
        .await
        .map_err(|e| match e {
            WsError::Http(response) => anyhow!(
                "WebSocket upgrade at {url} refused: {} {}{}",
                response.status(),
                response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .trim(),
                if response.status().as_u16() == 429 {
                    " (a per-address session limit? --sources N spreads the clients over N \
                     loopback addresses)"
                } else {
                    ""
                }
            ),
            e => anyhow!("WebSocket upgrade at {url}: {e}"),
        })?;
    Ok(WsIo::new(ws))
}

/// An RFC 7395 WebSocket as a TCP-like XMPP byte stream.
#[derive(Debug)]
pub(crate) struct WsIo<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last message received, translated.
    incoming: Bytes,
    /// The WebSocket ended (reads return end of file once `incoming` is read).
    eof: bool,
    /// A read error met after some bytes had been returned, for the next read.
    failed: Option<io::Error>,
    /// Splits what is written into top-level elements.
    framer: Framer,
    /// A message taken from the framer that the WebSocket has not accepted yet.
    outgoing: Option<Message>,
}

impl<S> WsIo<S> {
    pub(crate) fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            incoming: Bytes::new(),
            eof: false,
            failed: None,
            framer: write_framer(),
            outgoing: None,
        }
    }
}

/// The framer of the written bytes: our own stanzas, so limits only guard against runaway input.
fn write_framer() -> Framer {
    Framer::new(Limits {
        max_stanza_size: 16 * 1024 * 1024,
        ..Limits::default()
    })
}

fn ws_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed")
        }
        e => io::Error::other(e),
    }
}

/// Whether `text` is the element `name` (`<name`, then a space, `/` or `>`).
fn is_element(text: &[u8], name: &[u8]) -> bool {
    text.len() > name.len() + 1
        && text[0] == b'<'
        && text[1..].starts_with(name)
        && matches!(
            text[name.len() + 1],
            b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>'
        )
}

/// Appends ` name='value'` for each of `names` that the start tag `tag` has (values as written).
fn copy_attrs(out: &mut String, tag: &[u8], names: &[&str]) {
    for name in names {
        if let Some(value) = attr(tag, name) {
            let quote = if value.contains('\'') { '"' } else { '\'' };
            out.push(' ');
            out.push_str(name);
            out.push('=');
            out.push(quote);
            out.push_str(value);
            out.push(quote);
        }
    }
}

/// What one received message is on a TCP stream.
fn translate_in(text: Utf8Bytes) -> Bytes {
    let bytes: &[u8] = text.as_bytes();
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let trimmed = &bytes[start..];
    if is_element(trimmed, b"open") {
        let mut header = format!(
            "<stream:stream xmlns='{}' xmlns:stream='{}'",
            ns::CLIENT,
            ns::STREAMS
        );
        copy_attrs(
            &mut header,
            trimmed,
            &["id", "from", "to", "version", "xml:lang"],
        );
        header.push('>');
        Bytes::from(header)
    } else if is_element(trimmed, b"close") {
        Bytes::from_static(END_TAG)
    } else {
        Bytes::from(text)
    }
}

/// The message for one frame written.
fn translate_out(frame: Frame) -> io::Result<Message> {
    let text = match frame {
        Frame::Header(header) => {
            let mut open = format!("<open xmlns='{FRAMING}'");
            copy_attrs(&mut open, &header, &["to", "from", "version", "xml:lang"]);
            open.push_str("/>");
            Utf8Bytes::from(open)
        }
        Frame::Element(element) => Utf8Bytes::try_from(element)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "element not UTF-8"))?,
        Frame::Close => Utf8Bytes::from_static(CLOSE),
    };
    Ok(Message::Text(text))
}

/// Whether `bytes` start (after whitespace) a new stream: an XML declaration or a header.
fn starts_stream(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    bytes.starts_with(b"<?xml") || bytes.starts_with(b"<stream:stream")
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsIo<S> {
    /// Hands every complete element written to the WebSocket (without flushing it).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(message) = self.outgoing.take() {
                match Pin::new(&mut self.ws).poll_ready(cx) {
                    Poll::Pending => {
                        self.outgoing = Some(message);
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ws_error(e))),
                    Poll::Ready(Ok(())) => {
                        Pin::new(&mut self.ws)
                            .start_send(message)
                            .map_err(ws_error)?;
                    }
                }
            }
            match self.framer.next_frame() {
                Ok(Some(frame)) => self.outgoing = Some(translate_out(frame)?),
                Ok(None) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        // Fill the buffer with as many messages as are ready, so that a busy connection wakes
        // its reader once per batch, as with TCP.
        loop {
            if !this.incoming.is_empty() {
                let n = this.incoming.len().min(buf.remaining());
                buf.put_slice(&this.incoming[..n]);
                this.incoming.advance(n);
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
            }
            let got_some = buf.filled().len() > before;
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = this.failed.take() {
                if got_some {
                    this.failed = Some(e);
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(e));
            }
            let next = match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Pending if got_some => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => next,
            };
            match next {
                None
                | Some(Ok(Message::Close(_)))
                | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => this.eof = true,
                Some(Err(e)) => this.failed = Some(ws_error(e)),
                Some(Ok(Message::Text(text))) => this.incoming = translate_in(text),
                Some(Ok(Message::Binary(_))) => {
                    this.failed = Some(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "binary WebSocket message (RFC 7395 streams are text)",
                    ));
                }
                // Pings are answered by the WebSocket layer.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.framer.buffered() >= WRITE_BACKLOG {
            ready!(this.poll_send(cx))?;
        }
        if this.framer.buffered() == 0 && starts_stream(buf) {
            // A stream restart (after SASL): the header starts a new document.
            this.framer.reset();
        }
        this.framer.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.ws).poll_flush(cx).map_err(ws_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(ws_error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    /// A client adapter and the raw server end of the same WebSocket.
    async fn pair() -> (WsIo<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        (WsIo::new(client), server)
    }

    async fn next_text(server: &mut WebSocketStream<DuplexStream>) -> String {
        use futures_util::StreamExt as _;
        match server.next().await {
            Some(Ok(Message::Text(text))) => text.as_str().to_owned(),
            other => panic!("not a text message: {other:?}"),
        }
    }

    async fn send(server: &mut WebSocketStream<DuplexStream>, text: &str) {
        use futures_util::SinkExt as _;
        server
            .send(Message::Text(text.into()))
            .await
            .expect("server send");
    }

    /// Reads from the adapter until `want` bytes arrived.
    async fn read_exactly(io: &mut WsIo<DuplexStream>, want: usize) -> String {
        let mut out = vec![0; want];
        io.read_exact(&mut out).await.expect("read");
        String::from_utf8(out).expect("utf-8")
    }

    #[tokio::test]
    async fn written_streams_become_messages() {
        let (mut io, mut server) = pair().await;
        io.write_all(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
              xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' \
              xml:lang='en'>",
        )
        .await
        .expect("write");
        io.flush().await.expect("flush");
        assert_eq!(
            next_text(&mut server).await,
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0' \
             xml:lang='en'/>"
        );

        // Several elements written at once, one split across two writes: a message each, and
        // nothing before the flush.
        io.write_all(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth> <message to='b@localhost'><body>1 &lt; 2</body></message><presence/><iq type='get' id='x'><ping xmlns='urn:xmpp:ping'")
            .await
            .expect("write");
        io.write_all(b"/></iq>").await.expect("write");
        io.flush().await.expect("flush");
        assert_eq!(
            next_text(&mut server).await,
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>"
        );
        assert_eq!(
            next_text(&mut server).await,
            "<message to='b@localhost'><body>1 &lt; 2</body></message>"
        );
        assert_eq!(next_text(&mut server).await, "<presence/>");
        assert_eq!(
            next_text(&mut server).await,
            "<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>"
        );

        // A new header (after SASL) starts a new stream rather than confusing the framer.
        io.write_all(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
              xmlns:stream='http://etherx.jabber.org/streams' to=\"it's.example\" version='1.0'>",
        )
        .await
        .expect("write");
        io.write_all(b"<iq type='set' id='bind'/>")
            .await
            .expect("write");
        io.flush().await.expect("flush");
        assert_eq!(
            next_text(&mut server).await,
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to=\"it's.example\" version='1.0'/>"
        );
        assert_eq!(next_text(&mut server).await, "<iq type='set' id='bind'/>");

        // The end tag is `<close/>`, then shutdown closes the WebSocket.
        io.write_all(b"<presence type='unavailable'/></stream:stream>")
            .await
            .expect("write");
        io.shutdown().await.expect("shutdown");
        assert_eq!(
            next_text(&mut server).await,
            "<presence type='unavailable'/>"
        );
        assert_eq!(next_text(&mut server).await, CLOSE);
        use futures_util::StreamExt as _;
        assert!(matches!(server.next().await, Some(Ok(Message::Close(_)))));
    }

    #[tokio::test]
    async fn received_messages_become_a_stream() {
        let (mut io, mut server) = pair().await;
        send(
            &mut server,
            "<open xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\" id=\"s1\" from=\"localhost\" \
             version=\"1.0\" xml:lang=\"en\"/>",
        )
        .await;
        let header = "<stream:stream xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost' \
                      version='1.0' xml:lang='en'>";
        assert_eq!(read_exactly(&mut io, header.len()).await, header);

        // Elements pass unchanged; several ready messages arrive in one read.
        let features = "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>";
        let message = "<message xmlns='jabber:client' from='a@localhost/r' to='b@localhost'><body>hi</body></message>";
        send(&mut server, features).await;
        send(&mut server, message).await;
        let mut buf = vec![0; 4096];
        let mut got = String::new();
        while got.len() < features.len() + message.len() {
            let n = io.read(&mut buf).await.expect("read");
            assert!(n > 0, "end of file after {got:?}");
            got.push_str(std::str::from_utf8(&buf[..n]).expect("utf-8"));
        }
        assert_eq!(got, format!("{features}{message}"));

        // A read smaller than the message gets the rest on the next read.
        send(&mut server, message).await;
        let mut small = [0; 10];
        io.read_exact(&mut small).await.expect("read");
        assert_eq!(&small, &message.as_bytes()[..10]);
        assert_eq!(
            read_exactly(&mut io, message.len() - 10).await,
            &message[10..]
        );

        // `<close/>` ends the stream; the WebSocket's close is the end of file.
        send(
            &mut server,
            "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
        )
        .await;
        assert_eq!(
            read_exactly(&mut io, END_TAG.len()).await,
            "</stream:stream>"
        );
        server.close(None).await.expect("close");
        assert_eq!(io.read(&mut buf).await.expect("read"), 0);
    }

    #[test]
    fn framing_elements_are_told_from_stanzas() {
        assert!(is_element(b"<open/>", b"open"));
        assert!(is_element(b"<open xmlns='x'/>", b"open"));
        assert!(is_element(b"<close\n/>", b"close"));
        assert!(!is_element(b"<opener/>", b"open"));
        assert!(!is_element(b"<open", b"open"));
        assert!(!is_element(b"<message/>", b"open"));
        assert!(starts_stream(b"\n<?xml version='1.0'?>"));
        assert!(starts_stream(b"<stream:stream to='a'>"));
        assert!(!starts_stream(b"<message/>"));
    }
}
