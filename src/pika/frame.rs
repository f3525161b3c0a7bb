//! Length-prefixed framing of Pika's replication (P+2000) and rsync2 (P+10001) connections.
//!
//! Every frame is a `u32` big-endian body length followed by exactly that many bytes of one
//! serialized protobuf message. This module owns splitting a byte stream into frame bodies
//! (resumable: it consumes nothing until a whole frame is buffered) and writing frames. It does
//! not look inside the bodies.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

/// Size of the big-endian length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Pika's own limit on one protobuf message (512 MiB); the default maximum body length.
pub const DEFAULT_MAX_FRAME_LEN: usize = 512 * 1024 * 1024;

/// How much buffer space the decoder reserves ahead for a partially received frame. Reserving
/// the whole announced length at once would let a peer make us allocate 512 MiB with 4 bytes.
const MAX_EAGER_RESERVE: usize = 1024 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug)]
pub enum FrameError {
    /// The length prefix (or a body to encode) exceeds the configured maximum.
    TooLarge {
        /// Announced or given body length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A length prefix of 0. An empty body cannot hold the required `type` field, and Pika's
    /// connection code treats a zero-length read as a closed connection, so it is never valid.
    EmptyBody,
    /// The input ended inside a frame (`missing` more bytes were needed).
    Truncated {
        /// Bytes still missing to complete the frame (prefix included when it was incomplete).
        missing: usize,
    },
    /// An I/O error from the transport (only produced through the tokio-util codec traits).
    Io(std::io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame body of {len} bytes exceeds the maximum of {max}")
            }
            FrameError::EmptyBody => write!(f, "frame with an empty body"),
            FrameError::Truncated { missing } => {
                write!(f, "input ended inside a frame ({missing} bytes missing)")
            }
            FrameError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Splits a byte stream into frame bodies and writes frames, with a maximum body length.
///
/// Also usable as a `tokio_util::codec` [`Decoder`](tokio_util::codec::Decoder) /
/// [`Encoder`](tokio_util::codec::Encoder) for `Framed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new()
    }
}

impl FrameCodec {
    /// A codec with Pika's 512 MiB limit.
    pub fn new() -> Self {
        FrameCodec {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// A codec with a custom maximum body length (e.g. the replica's `max-conn-rbuf-size`).
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        FrameCodec { max_frame_len }
    }

    /// The maximum body length accepted or produced.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Takes the next complete frame body out of `buf`.
    ///
    /// Returns `Ok(None)` and leaves `buf` untouched while the frame is incomplete, so the caller
    /// can append more bytes and call again. An oversized or empty length prefix is reported as
    /// soon as the prefix has arrived.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(body_len) = self.peek_body_len(buf)? else {
            return Ok(None);
        };
        let frame_len = LENGTH_PREFIX_LEN + body_len;
        if buf.len() < frame_len {
            let missing = frame_len - buf.len();
            buf.reserve(missing.min(MAX_EAGER_RESERVE));
            return Ok(None);
        }
        buf.advance(LENGTH_PREFIX_LEN);
        Ok(Some(buf.split_to(body_len).freeze()))
    }

    /// Splits a complete capture (e.g. one direction of a recorded connection) into frame
    /// bodies. Bytes left over after the last whole frame are an error.
    pub fn decode_all(&mut self, data: &[u8]) -> Result<Vec<Bytes>, FrameError> {
        let mut buf = BytesMut::from(data);
        let mut frames = Vec::new();
        while let Some(frame) = self.decode(&mut buf)? {
            frames.push(frame);
        }
        if buf.is_empty() {
            return Ok(frames);
        }
        let missing = match self.peek_body_len(&buf)? {
            Some(body_len) => LENGTH_PREFIX_LEN + body_len - buf.len(),
            None => LENGTH_PREFIX_LEN - buf.len(),
        };
        Err(FrameError::Truncated { missing })
    }

    /// Appends one frame (prefix + body) to `dst`.
    pub fn encode(&self, body: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = self.check_body_len(body.len())?;
        dst.reserve(LENGTH_PREFIX_LEN + body.len());
        dst.put_u32(len);
        dst.put_slice(body);
        Ok(())
    }

    /// One frame (prefix + body) as a new buffer.
    pub fn encode_to_bytes(&self, body: &[u8]) -> Result<Bytes, FrameError> {
        let mut dst = BytesMut::with_capacity(LENGTH_PREFIX_LEN + body.len());
        self.encode(body, &mut dst)?;
        Ok(dst.freeze())
    }

    fn peek_body_len(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = buf.get(..LENGTH_PREFIX_LEN) else {
            return Ok(None);
        };
        let mut raw = [0u8; LENGTH_PREFIX_LEN];
        raw.copy_from_slice(prefix);
        let body_len = u32::from_be_bytes(raw) as usize;
        if body_len == 0 {
            return Err(FrameError::EmptyBody);
        }
        if body_len > self.max_frame_len {
            return Err(FrameError::TooLarge {
                len: body_len,
                max: self.max_frame_len,
            });
        }
        Ok(Some(body_len))
    }

    fn check_body_len(&self, len: usize) -> Result<u32, FrameError> {
        if len == 0 {
            return Err(FrameError::EmptyBody);
        }
        if len > self.max_frame_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        u32::try_from(len).map_err(|_| FrameError::TooLarge {
            len,
            max: u32::MAX as usize,
        })
    }
}

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        FrameCodec::decode(self, src)
    }
}

impl tokio_util::codec::Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        FrameCodec::encode(self, &item, dst)
    }
}

impl tokio_util::codec::Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        FrameCodec::encode(self, item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_byte_by_byte_and_keeps_the_rest() {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        codec.encode(b"abc", &mut wire).unwrap();
        codec.encode(b"de", &mut wire).unwrap();
        assert_eq!(&wire[..], b"\0\0\0\x03abc\0\0\0\x02de");

        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in wire.iter() {
            buf.put_u8(b);
            if let Some(frame) = codec.decode(&mut buf).unwrap() {
                out.push(frame);
            }
        }
        assert_eq!(
            out,
            vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_oversize_as_soon_as_the_prefix_arrives() {
        let mut codec = FrameCodec::with_max_frame_len(10);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 11][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        ));
        let mut buf = BytesMut::from(&[0u8, 0, 0, 10, 1][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.encode(&[0u8; 11], &mut BytesMut::new()),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn default_limit_is_pikas_512_mib() {
        let mut codec = FrameCodec::new();
        let mut ok = BytesMut::from(&(512u32 * 1024 * 1024).to_be_bytes()[..]);
        assert!(codec.decode(&mut ok).unwrap().is_none());
        let mut too_big = BytesMut::from(&(512u32 * 1024 * 1024 + 1).to_be_bytes()[..]);
        assert!(matches!(
            codec.decode(&mut too_big),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn rejects_empty_body() {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 8, 1][..]);
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::EmptyBody)));
        assert!(matches!(
            codec.encode(b"", &mut BytesMut::new()),
            Err(FrameError::EmptyBody)
        ));
    }

    #[test]
    fn decode_all_reports_trailing_partial_frame() {
        let mut codec = FrameCodec::new();
        assert!(matches!(
            codec.decode_all(&[0, 0, 0, 3, b'a', b'b', b'c', 0, 0]),
            Err(FrameError::Truncated { missing: 2 })
        ));
        assert!(matches!(
            codec.decode_all(&[0, 0, 0, 3, b'a']),
            Err(FrameError::Truncated { missing: 2 })
        ));
        assert_eq!(codec.decode_all(&[]).unwrap().len(), 0);
    }

    #[test]
    fn works_with_tokio_util_traits() {
        use tokio_util::codec::{Decoder, Encoder};
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        Encoder::<Bytes>::encode(&mut codec, Bytes::from_static(b"xyz"), &mut buf).unwrap();
        assert_eq!(
            Decoder::decode(&mut codec, &mut buf).unwrap(),
            Some(Bytes::from_static(b"xyz"))
        );
    }
}
