//! Framed connections, free port triples and condition waits for the peer tests.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pika_ttl_proxy::pika::frame::FrameCodec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection that reads and writes u32-BE-length frames.
pub struct FramedConn {
    pub stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl FramedConn {
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        FramedConn {
            stream,
            buf: BytesMut::new(),
            codec: FrameCodec::new(),
        }
    }

    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self::new(TcpStream::connect(addr).await?))
    }

    pub async fn send(&mut self, body: &[u8]) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        self.codec
            .encode(body, &mut out)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.stream.write_all(&out).await
    }

    /// Writes raw bytes (for malformed-frame tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Next frame body; `None` at end of stream or on an error. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(b)) => return Some(b),
                Ok(None) => {}
                Err(_) => return None,
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// Lowest base port handed out.
const FIRST_PORT: u16 = 10_000;
/// Highest base port: P+10001 must stay below the ephemeral range (32768 and up on Linux), or
/// an outgoing connection can occupy a port a restarted relay needs again.
const LAST_PORT: u16 = 22_700;
/// Step between base ports: 13 divides none of 2000, 10001 and 8001, so the ports of two triples
/// handed out by one process never coincide.
const STEP: u16 = 13;

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port P such that P, P+2000 and P+10001 are free on 127.0.0.1 right now.
pub fn free_base_port() -> u16 {
    // Different test binaries running at once start at different places.
    let start = FIRST_PORT + (std::process::id() % 500) as u16 * STEP;
    let _ = NEXT_PORT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let mut p = NEXT_PORT.fetch_add(STEP, Ordering::SeqCst);
        if p > LAST_PORT {
            NEXT_PORT.store(FIRST_PORT, Ordering::SeqCst);
            p = FIRST_PORT;
        }
        if bindable(p) && bindable(p + 2000) && bindable(p + 10001) {
            return p;
        }
    }
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held. Used to wait for
/// asynchronous progress, never to assert on durations.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The generous limit every wait in these tests uses.
pub const PATIENCE: Duration = Duration::from_secs(20);
