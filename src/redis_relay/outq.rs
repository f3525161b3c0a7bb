//! The queue of bytes waiting to be written to a replica.
//!
//! Forwarded entries are the master's own bytes ([`bytes::Bytes`] slices of the read buffer):
//! large ones are queued as they are (zero-copy) and written with vectored writes; small ones
//! are copied into a scratch buffer together with encoded replacements, which keeps the number
//! of I/O slices per write low.

use crate::engine::args::Args;
use crate::engine::Replacement;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Frames at least this large are queued by reference instead of copied.
const COPY_BELOW: usize = 4096;
/// Most slices handed to one vectored write.
const MAX_SLICES: usize = 64;

/// Pending downstream bytes.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Bytes>,
    scratch: BytesMut,
    len: usize,
}

impl OutQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queue bytes received from the master, unchanged.
    pub fn push_bytes(&mut self, raw: Bytes) {
        self.len += raw.len();
        if raw.len() < COPY_BELOW {
            self.scratch.extend_from_slice(&raw);
        } else {
            self.seal();
            self.chunks.push_back(raw);
        }
    }

    /// Queue a small literal (a reply line, a keepalive).
    #[cfg(test)]
    pub fn push_slice(&mut self, raw: &[u8]) {
        self.len += raw.len();
        self.scratch.extend_from_slice(raw);
    }

    /// Queue the commands the engine emitted for `entry`; returns their length.
    pub fn push_replacement(&mut self, replacement: &Replacement<'_>, entry: &dyn Args) -> usize {
        let n = replacement.encode(entry, &mut self.scratch);
        self.len += n;
        n
    }

    /// Move the scratch bytes into the chunk list (keeps write order).
    fn seal(&mut self) {
        if !self.scratch.is_empty() {
            self.chunks.push_back(self.scratch.split().freeze());
        }
    }

    /// Write as much as one vectored write takes; returns the bytes written. Cancel-safe: if
    /// the future is dropped before completion nothing was consumed.
    pub async fn write_some<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<usize> {
        self.seal();
        let n = {
            let slices: Vec<IoSlice<'_>> = self
                .chunks
                .iter()
                .take(MAX_SLICES)
                .map(|c| IoSlice::new(c))
                .collect();
            if slices.is_empty() {
                return Ok(0);
            }
            w.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.consume(n);
        Ok(n)
    }

    /// Write everything queued.
    pub async fn flush_all<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<()> {
        while !self.is_empty() {
            self.write_some(w).await?;
        }
        w.flush().await
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Arg, Commands, NewCommand};

    #[tokio::test]
    async fn keeps_order_across_copied_and_shared_chunks() {
        let mut q = OutQueue::new();
        q.push_slice(b"+FULLRESYNC x 0\r\n");
        let big = Bytes::from(vec![b'z'; 10_000]);
        q.push_bytes(Bytes::from_static(b"*1\r\n$4\r\nping\r\n"));
        q.push_bytes(big.clone());
        let entry = vec![Bytes::from_static(b"INCR"), Bytes::from_static(b"k")];
        let expire = NewCommand::of([Arg::Bytes(b"PEXPIREAT"), Arg::Bytes(b"k"), Arg::Int(1)]);
        let replacement = Replacement::new(Commands::of([expire]), false);
        assert_eq!(q.push_replacement(&replacement, &entry), 33);
        let total = q.len();
        let mut out = Vec::new();
        q.flush_all(&mut out).await.unwrap();
        assert_eq!(out.len(), total);
        let mut expected = b"+FULLRESYNC x 0\r\n*1\r\n$4\r\nping\r\n".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"*3\r\n$9\r\nPEXPIREAT\r\n$1\r\nk\r\n$1\r\n1\r\n");
        assert_eq!(out, expected);
        assert!(q.is_empty());
    }
}
