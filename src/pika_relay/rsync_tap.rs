//! Watches the master → replica side of a P+10001 (rsync2) connection for the snapshot's `info`
//! file, without touching the bytes that pass.
//!
//! After a full sync, a Pika replica resets its binlog so that its producer position equals the
//! `(filenum, offset)` written in `info` (lines 4 and 5), and then TrySyncs from there. Seeing
//! that position is what lets the relay recognise the TrySync that ends a full sync and restart
//! the offset map as the identity, instead of trusting whatever position arrives next.
//!
//! Only small frames are parsed: `info` is a few dozen bytes, while file chunks are up to 4 MiB
//! and are skipped without being buffered.

use bytes::{Buf, BytesMut};

use crate::pika::messages::BinlogPosition;
use crate::pika::proto::FieldIter;

/// Frames larger than this cannot be the `info` file and are skipped unbuffered.
const MAX_PARSED_FRAME: usize = 64 * 1024;

/// `RsyncResponse` field numbers.
mod field {
    pub const TYPE: u32 = 1;
    pub const DB_NAME: u32 = 4;
    pub const SLOT_ID: u32 = 5;
    pub const CODE: u32 = 6;
    pub const FILE_RESP: u32 = 8;
    pub const FILE_EOF: u32 = 1;
    pub const FILE_OFFSET: u32 = 3;
    pub const FILE_DATA: u32 = 4;
    pub const FILE_NAME: u32 = 6;
}

const TYPE_RSYNC_FILE: u64 = 2;
const CODE_OK: u64 = 1;

/// A snapshot position announced by an `info` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// DB the snapshot belongs to (`db0`, or `db0:<slot>` for a non-zero slot).
    pub db: String,
    /// The master's binlog position at snapshot time.
    pub position: BinlogPosition,
}

/// Incremental scanner of one rsync2 response stream.
#[derive(Debug, Default)]
pub struct RsyncTap {
    buf: BytesMut,
    skip: usize,
    info: Vec<u8>,
    broken: bool,
}

impl RsyncTap {
    /// Feeds bytes that went to the replica; returns the snapshot positions completed by them.
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<SnapshotInfo> {
        let mut found = Vec::new();
        while !data.is_empty() && !self.broken {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            if self.buf.len() < 4 {
                let n = (4 - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..n]);
                data = &data[n..];
                continue;
            }
            let len =
                u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
            if len > MAX_PARSED_FRAME {
                self.buf.clear();
                self.skip = len;
                continue;
            }
            let need = 4 + len - self.buf.len();
            let n = need.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == 4 + len {
                self.buf.advance(4);
                let body = self.buf.split().freeze();
                match self.parse_response(&body) {
                    Ok(Some(info)) => found.push(info),
                    Ok(None) => {}
                    // Not the stream we expected: stop looking, the bytes still flow.
                    Err(()) => self.broken = true,
                }
            }
        }
        found
    }

    fn parse_response(&mut self, body: &[u8]) -> Result<Option<SnapshotInfo>, ()> {
        let (mut msg_type, mut code, mut db, mut slot, mut file) = (None, None, None, 0, None);
        for f in FieldIter::new(body) {
            let f = f.map_err(|_| ())?;
            match f.number() {
                field::TYPE => msg_type = Some(f.varint().map_err(|_| ())?),
                field::CODE => code = Some(f.varint().map_err(|_| ())?),
                field::DB_NAME => db = Some(f.bytes().map_err(|_| ())?),
                field::SLOT_ID => slot = f.uint32().map_err(|_| ())?,
                field::FILE_RESP => file = Some(f.bytes().map_err(|_| ())?),
                _ => {}
            }
        }
        let (Some(TYPE_RSYNC_FILE), Some(CODE_OK), Some(db), Some(file)) =
            (msg_type, code, db, file)
        else {
            return Ok(None);
        };
        let (mut name, mut data, mut offset, mut eof) = (None, None, 0, 0);
        for f in FieldIter::new(file) {
            let f = f.map_err(|_| ())?;
            match f.number() {
                field::FILE_NAME => name = Some(f.bytes().map_err(|_| ())?),
                field::FILE_DATA => data = Some(f.bytes().map_err(|_| ())?),
                field::FILE_OFFSET => offset = f.uint64().map_err(|_| ())?,
                field::FILE_EOF => eof = f.varint().map_err(|_| ())?,
                _ => {}
            }
        }
        if name != Some(b"info".as_slice()) {
            return Ok(None);
        }
        let data = data.unwrap_or_default();
        if offset == 0 {
            self.info.clear();
        }
        if offset as usize != self.info.len() {
            // A chunk out of sequence: forget the partial file rather than misread it.
            self.info.clear();
            return Ok(None);
        }
        self.info.extend_from_slice(data);
        if eof == 0 {
            return Ok(None);
        }
        let position = parse_info(&self.info);
        self.info.clear();
        let db = String::from_utf8_lossy(db).into_owned();
        let db = if slot == 0 {
            db
        } else {
            format!("{db}:{slot}")
        };
        Ok(position.map(|position| SnapshotInfo { db, position }))
    }
}

/// Reads the binlog position from an `info` file: `<duration>\n<ip>\n<port>\n<filenum>\n<offset>\n`
/// (newer versions may append more lines).
pub fn parse_info(data: &[u8]) -> Option<BinlogPosition> {
    let text = std::str::from_utf8(data).ok()?;
    let mut lines = text.lines();
    let filenum = lines.nth(3)?.trim().parse().ok()?;
    let offset = lines.next()?.trim().parse().ok()?;
    Some(BinlogPosition::new(filenum, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real captured bytes (see [`crate::fixtures`]).
    fn fixture() -> Vec<u8> {
        crate::fixtures::read("pika-3.5.4/session1-rsync-master-to-replica.bin")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn finds_the_info_position_in_the_captured_full_sync() {
        let data = fixture();
        let mut tap = RsyncTap::default();
        let found = tap.feed(&data);
        assert_eq!(
            found,
            vec![SnapshotInfo {
                db: "db0".into(),
                position: BinlogPosition::new(0, 0)
            }]
        );
        // Byte by byte gives the same answer.
        let mut tap = RsyncTap::default();
        let found: Vec<_> = data.iter().flat_map(|b| tap.feed(&[*b])).collect();
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn info_lines() {
        assert_eq!(
            parse_info(b"0s\n127.0.0.1\n19221\n3\n1542\n"),
            Some(BinlogPosition::new(3, 1542))
        );
        assert_eq!(parse_info(b"0s\n127.0.0.1\n19221\n"), None);
        assert_eq!(parse_info(b"\xff"), None);
    }

    #[test]
    fn garbage_stops_the_tap_without_panicking() {
        let mut tap = RsyncTap::default();
        assert!(tap
            .feed(&[0, 0, 0, 3, 0xff, 0xff, 0xff, 1, 2, 3])
            .is_empty());
        assert!(tap.broken);
    }
}
