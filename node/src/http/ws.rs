//! XMPP over WebSocket (RFC 7395): one client stream per WebSocket, one element per text
//! message, `<open/>` and `<close/>` for the stream's start and end.
//!
//! The upgrade needs the `xmpp` subprotocol (the answer names it), an allowed `Origin`, and a
//! free session slot (per IP and per node). Messages larger than `[http] max_message_size` end
//! the WebSocket; binary messages end the stream with `<unsupported-encoding/>`. A WebSocket
//! that closes without `<close/>` is a lost connection: with stream management the session
//! waits for its client to resume, as with TCP.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, Stream as _};
use tern_xmpp_proto::stream::{Command, ServerStream};
use tern_xmpp_proto::{StreamCondition, StreamError};
use tracing::Instrument;

use super::{HttpState, Peer, SessionSlot, forbidden_origin, origin_allowed};
use crate::c2s::{Connection, Wire};
use crate::metrics::Transport;

/// The WebSocket subprotocol of RFC 7395.
const SUBPROTOCOL: &str = "xmpp";
/// Read and write buffer of one WebSocket, in bytes (as a TCP connection's read chunk).
const WS_BUFFER: usize = 4096;

/// `GET /ws`: upgrades to a WebSocket carrying one client stream.
pub(crate) async fn upgrade(
    State(state): State<Arc<HttpState>>,
    axum::extract::ConnectInfo(super::PeerAddr(peer)): Peer,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&state.node, &headers) {
        return forbidden_origin();
    }
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        return (
            StatusCode::BAD_REQUEST,
            "the WebSocket subprotocol \"xmpp\" (RFC 7395) is required",
        )
            .into_response();
    }
    let slot = match state.admit(peer.ip()) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let max = state.node.config.http.max_message_size;
    // The WebSocket layer's buffers default to 128 KiB each, allocated per connection: an idle
    // web client would cost ten times a TCP one. Stanzas are small; larger messages still fit
    // (the read buffer grows as a message needs).
    ws.protocols([SUBPROTOCOL])
        .read_buffer_size(WS_BUFFER)
        .write_buffer_size(WS_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| run(state, peer, socket, slot))
}

/// Runs the client stream of one WebSocket to its end.
async fn run(state: Arc<HttpState>, peer: SocketAddr, socket: WebSocket, slot: SessionSlot) {
    let node = state.node.clone();
    let conn_id = node.conn_id();
    let span = tracing::info_span!("ws", conn_id, peer_addr = %peer, jid = tracing::field::Empty);
    async move {
        node.metrics.connection_opened(Transport::WebSocket);
        let connection = Connection::new(node.clone(), conn_id, peer, Transport::WebSocket);
        let config = state.stream_config.clone();
        if let Err(e) = connection.serve(config, WsWire { socket }).await {
            tracing::debug!(error = %e, "websocket ended with an error");
        }
        node.metrics.connection_closed(Transport::WebSocket);
        drop(slot);
    }
    .instrument(span)
    .await;
}

/// A WebSocket as the [`Wire`] of a framed stream.
struct WsWire {
    socket: WebSocket,
}

impl Wire for WsWire {
    fn poll_input(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut ServerStream,
    ) -> Poll<io::Result<bool>> {
        loop {
            let now = || tokio::time::Instant::now().into_std();
            match ready!(Pin::new(&mut self.socket).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(false)),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Some(Ok(Message::Text(text))) => {
                    stream.handle_frame(now(), text.as_bytes());
                    return Poll::Ready(Ok(true));
                }
                Some(Ok(Message::Binary(_))) => {
                    stream.handle_command(
                        now(),
                        Command::Close(Some(
                            StreamError::new(StreamCondition::UnsupportedEncoding)
                                .with_text("RFC 7395 streams use text messages only"),
                        )),
                    );
                    return Poll::Ready(Ok(true));
                }
                // Pings are answered by the WebSocket layer itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            }
        }
    }

    async fn flush(&mut self, stream: &mut ServerStream) -> io::Result<()> {
        let mut sent = false;
        while let Some(frame) = stream.poll_frame() {
            let text = Utf8Bytes::try_from(frame)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "element not utf-8"))?;
            self.socket
                .feed(Message::Text(text))
                .await
                .map_err(io::Error::other)?;
            sent = true;
        }
        if sent {
            self.socket.flush().await.map_err(io::Error::other)?;
        }
        Ok(())
    }

    async fn start_tls(&mut self) -> io::Result<Option<Vec<u8>>> {
        // Framed streams never offer STARTTLS: TLS is the HTTP listener's.
        Err(io::Error::other("starttls on a websocket"))
    }

    async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.socket.close()).await;
    }
}
