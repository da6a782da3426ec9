//! The [`Transport`] over plain TCP: each frame is a 4-byte big-endian length then the frame;
//! one request, one reply, on a pooled connection. Used between the nodes of one machine or
//! one private network until the mesh carries Raft over its authenticated QUIC bridges; it has
//! no authentication of its own, so bind it to loopback or a private address only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::grt::Grt;
use crate::transport::{Transport, TransportError};
use crate::types::NodeId;

/// The largest frame accepted either way (snapshots travel in chunks far below this).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Idle connections kept per peer.
const POOL_PER_PEER: usize = 4;

/// A TCP client transport with a small pool of connections per peer address.
#[derive(Default, Clone)]
pub struct TcpTransport {
    pool: Arc<Mutex<HashMap<String, Vec<TcpStream>>>>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport").finish_non_exhaustive()
    }
}

impl TcpTransport {
    /// A transport with an empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    fn take(&self, addr: &str) -> Option<TcpStream> {
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(addr)
            .and_then(Vec::pop)
    }

    fn put_back(&self, addr: &str, stream: TcpStream) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = pool.entry(addr.to_owned()).or_default();
        if idle.len() < POOL_PER_PEER {
            idle.push(stream);
        }
    }
}

async fn write_frame(stream: &mut TcpStream, frame: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(frame.len())
        .ok()
        .filter(|&len| len as usize <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other(format!("frame of {} bytes", frame.len())))?;
    let mut out = Vec::with_capacity(4 + frame.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
    stream.write_all(&out).await
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes is over the limit of {MAX_FRAME}"
        )));
    }
    let mut frame = vec![0u8; len];
    stream.read_exact(&mut frame).await?;
    Ok(frame)
}

#[async_trait::async_trait]
impl Transport for TcpTransport {
    async fn call(
        &self,
        target: NodeId,
        addr: &str,
        frame: Vec<u8>,
        deadline: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable {
            target,
            addr: addr.to_owned(),
            reason,
        };
        let exchange = async {
            // A pooled connection may have been closed by the peer since: one fresh retry.
            if let Some(mut stream) = self.take(addr)
                && write_frame(&mut stream, &frame).await.is_ok()
                && let Ok(reply) = read_frame(&mut stream).await
            {
                return Ok((stream, reply));
            }
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            stream.set_nodelay(true).ok();
            write_frame(&mut stream, &frame)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let reply = read_frame(&mut stream)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            Ok((stream, reply))
        };
        let (stream, reply) = tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| TransportError::Timeout { target, deadline })??;
        self.put_back(addr, stream);
        Ok(reply)
    }
}

/// Answers Raft frames on `listener` for `grt` until the task is aborted.
pub fn serve(listener: TcpListener, grt: Grt) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "routing table listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            tokio::spawn(connection(stream, peer, grt.clone()));
        }
    })
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, grt: Grt) {
    stream.set_nodelay(true).ok();
    loop {
        let frame = match read_frame(&mut stream).await {
            Ok(frame) => frame,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(%peer, error = %e, "routing table connection closed");
                }
                return;
            }
        };
        let reply = grt.handle(&frame).await;
        if let Err(e) = write_frame(&mut stream, &reply).await {
            tracing::debug!(%peer, error = %e, "routing table reply not sent");
            return;
        }
    }
}
