//! Reading whole Pika frames from one connection of a link, cancel-safely, and keeping the
//! first bytes a peer sent (to name a master that is not a Pika server by what it answered).

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;

use crate::pika::frame::{FrameCodec, FrameError};

/// Reads whole frames from one connection. `next` is cancel-safe (its only await point is a
/// cancel-safe `read_buf` into the reader's own buffer), so it can sit in a `select!`.
pub(super) struct FrameReader {
    half: OwnedReadHalf,
    buf: BytesMut,
    codec: FrameCodec,
    /// The first bytes the peer sent, kept until it sent a valid message, to name a server
    /// that is not a Pika master by what it answered.
    pub(super) opening: Vec<u8>,
}

impl FrameReader {
    pub(super) fn new(half: OwnedReadHalf, codec: FrameCodec) -> Self {
        FrameReader {
            half,
            buf: BytesMut::with_capacity(64 * 1024),
            codec,
            opening: Vec::new(),
        }
    }

    /// The next frame already in the buffer, without reading.
    pub(super) fn next_buffered(&mut self) -> Option<Result<Bytes, FrameError>> {
        self.codec.decode(&mut self.buf).transpose()
    }

    /// The next frame body; `None` at a clean end of stream.
    pub(super) async fn next(&mut self) -> Option<Result<Bytes, FrameError>> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(body)) => return Some(Ok(body)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            let before = self.buf.len();
            let read = self.half.read_buf(&mut self.buf).await;
            if self.opening.len() < OPENING_KEPT {
                let new = &self.buf[before..];
                let room = OPENING_KEPT - self.opening.len();
                self.opening.extend_from_slice(&new[..new.len().min(room)]);
            }
            match read {
                Ok(0) if self.buf.is_empty() => return None,
                Ok(0) => {
                    let missing = match self.codec.decode(&mut self.buf) {
                        Ok(_) => self.buf.len(),
                        Err(e) => return Some(Err(e)),
                    };
                    return Some(Err(FrameError::Truncated { missing }));
                }
                Ok(_) => {}
                Err(e) => return Some(Err(FrameError::Io(e))),
            }
        }
    }
}

pub(super) type Frames = FrameReader;

/// Opening bytes of the master's connection kept for `Link::unless_foreign`.
const OPENING_KEPT: usize = 64;
