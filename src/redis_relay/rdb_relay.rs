//! Relaying a full-sync payload byte for byte while scanning it for key expiries.
//!
//! Two framings reach the proxy (`docs/redis-protocol.md#full-sync-payload`):
//!
//! * `$<len>\r\n` + exactly `len` bytes, **no trailing CRLF**: the next byte is stream.
//! * `$EOF:<40-byte mark>\r\n` + RDB + the same mark. The end is found from the payload itself:
//!   the scanner knows where the RDB ends (`0xFF` + CRC), and the mark must follow. If the
//!   scanner cannot walk the RDB, the end is found the way a replica finds it: the last 40 bytes
//!   of a read equal the mark (the master sends nothing after the mark until the first ACK).
//!
//! The header line is forwarded as received, so the replica sees the master's framing. The
//! payload goes through [`RdbScanner`] on its way; expiring keys are written into the session's
//! expiry table as they appear. A payload the scanner cannot walk is still relayed untouched; the
//! table then stays incomplete ([`Baseline::Unknown`]).

use super::outq::OutQueue;
use crate::rdb::{RdbError, RdbKeyExpiry, RdbScanner, RdbSummary};
use crate::table::{Baseline, ExpiryTable};
use bytes::BytesMut;

/// Length of the EOF mark.
pub const EOF_MARK_LEN: usize = 40;

/// How the payload is delimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `$<len>`: this many bytes.
    Length(u64),
    /// `$EOF:<mark>`.
    Eof([u8; EOF_MARK_LEN]),
}

/// Parse a payload header line (without its `\r\n`).
pub fn parse_header(line: &[u8]) -> Option<Framing> {
    let rest = line.strip_prefix(b"$")?;
    if let Some(mark) = rest.strip_prefix(b"EOF:") {
        let mark: [u8; EOF_MARK_LEN] = mark.try_into().ok()?;
        return Some(Framing::Eof(mark));
    }
    if rest.is_empty() || rest.len() > 20 || !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(rest)
        .ok()?
        .parse()
        .ok()
        .map(Framing::Length)
}

/// The framing was violated; the link cannot continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// The scanner found the RDB's end but the bytes after it are not the EOF mark.
    MarkMismatch,
}

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayloadError::MarkMismatch => {
                write!(
                    f,
                    "EOF-framed payload: the bytes after the RDB are not the mark"
                )
            }
        }
    }
}

impl std::error::Error for PayloadError {}

/// How the payload's scan went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanResult {
    /// The whole RDB was walked; the table is complete.
    Complete(RdbSummary),
    /// The RDB could not be walked; the table is incomplete.
    Failed(RdbError),
}

/// A payload that has been relayed completely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadDone {
    /// Payload bytes relayed (without the header line).
    pub bytes: u64,
    /// What the scan found.
    pub scan: ScanResult,
    /// Expiring keys written into the table.
    pub keys_with_expiry: u64,
    /// True for EOF framing: the stream must wait for the replica's first ACK.
    pub eof_framed: bool,
}

enum EofState {
    /// Still inside the RDB (or the scanner failed and the mark is searched in read tails).
    Rdb,
    /// The RDB ended; this many bytes of the mark have been matched.
    Mark(usize),
}

/// Relays one payload; see the module docs.
pub struct PayloadRelay {
    framing: Framing,
    scanner: Option<RdbScanner>,
    scan_error: Option<RdbError>,
    eof: EofState,
    /// The last bytes relayed, for the tail comparison (EOF framing without a scanner).
    tail: Vec<u8>,
    relayed: u64,
    keys: Vec<RdbKeyExpiry>,
    keys_with_expiry: u64,
}

impl PayloadRelay {
    /// Start relaying a payload with `framing`; resets `table` to an empty, incomplete table.
    pub fn new(framing: Framing, table: &ExpiryTable) -> Self {
        table.reset(Baseline::Unknown);
        PayloadRelay {
            framing,
            scanner: Some(RdbScanner::new()),
            scan_error: None,
            eof: EofState::Rdb,
            tail: Vec::with_capacity(2 * EOF_MARK_LEN),
            relayed: 0,
            keys: Vec::new(),
            keys_with_expiry: 0,
        }
    }

    fn scan(&mut self, chunk: &[u8], table: &ExpiryTable) -> Option<usize> {
        let scanner = self.scanner.as_mut()?;
        let result = scanner.feed_until_done(chunk, &mut self.keys);
        for k in self.keys.drain(..) {
            table.set_deadline(k.db, &k.key, k.expire_ms);
            self.keys_with_expiry += 1;
        }
        match result {
            Ok(used) => Some(used),
            Err(e) => {
                self.scan_error = Some(e);
                self.scanner = None;
                None
            }
        }
    }

    fn remember_tail(&mut self, chunk: &[u8]) {
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > EOF_MARK_LEN {
            let cut = self.tail.len() - EOF_MARK_LEN;
            self.tail.drain(..cut);
        }
    }

    /// Relay the payload bytes at the front of `input` into `out`, leaving anything after the
    /// payload in `input`. Returns `Some` once the payload is complete; `table` is then seeded
    /// and its baseline set (complete only when the scan succeeded and `data_included`, i.e. the
    /// replica did not ask for a key-less RDB).
    pub fn feed(
        &mut self,
        input: &mut BytesMut,
        out: &mut OutQueue,
        table: &ExpiryTable,
        data_included: bool,
    ) -> Result<Option<PayloadDone>, PayloadError> {
        let end_of_payload = match self.framing.clone() {
            Framing::Length(total) => {
                let remaining = total - self.relayed;
                let n = remaining.min(input.len() as u64) as usize;
                let chunk = input.split_to(n).freeze();
                if let Some(used) = self.scan(&chunk, table) {
                    if used < chunk.len() {
                        // Bytes after the RDB's trailer inside a `$len` payload: Redis would
                        // load them as garbage; the table cannot vouch for them.
                        self.scan_error = Some(RdbError::TrailingBytes);
                        self.scanner = None;
                    }
                }
                self.relayed += n as u64;
                out.push_bytes(chunk);
                self.relayed == total
            }
            Framing::Eof(mark) => self.feed_eof(input, out, table, &mark)?,
        };
        if !end_of_payload {
            return Ok(None);
        }
        let scan = match (self.scanner.take(), self.scan_error.take()) {
            (_, Some(e)) => ScanResult::Failed(e),
            (Some(s), None) => match s.finish() {
                Ok(summary) => ScanResult::Complete(summary),
                Err(e) => ScanResult::Failed(e),
            },
            (None, None) => ScanResult::Failed(RdbError::Truncated),
        };
        if matches!(scan, ScanResult::Complete(_)) && data_included {
            table.set_baseline(Baseline::NotVolatile);
        }
        Ok(Some(PayloadDone {
            bytes: self.relayed,
            scan,
            keys_with_expiry: self.keys_with_expiry,
            eof_framed: matches!(self.framing, Framing::Eof(_)),
        }))
    }

    fn feed_eof(
        &mut self,
        input: &mut BytesMut,
        out: &mut OutQueue,
        table: &ExpiryTable,
        mark: &[u8; EOF_MARK_LEN],
    ) -> Result<bool, PayloadError> {
        loop {
            if input.is_empty() {
                return Ok(false);
            }
            match self.eof {
                EofState::Rdb if self.scanner.is_some() => {
                    match self.scan(&input[..], table) {
                        Some(used) => {
                            let done = self.scanner.as_ref().is_some_and(RdbScanner::is_done);
                            let chunk = input.split_to(used).freeze();
                            self.relayed += used as u64;
                            self.remember_tail(&chunk);
                            out.push_bytes(chunk);
                            if done {
                                self.eof = EofState::Mark(0);
                            } else {
                                return Ok(false);
                            }
                        }
                        // The scanner gave up: fall back to the tail comparison below.
                        None => continue,
                    }
                }
                EofState::Rdb => {
                    // No scanner: everything read so far is payload; the payload ended if the
                    // read ended with the mark.
                    let chunk = input.split().freeze();
                    self.relayed += chunk.len() as u64;
                    self.remember_tail(&chunk);
                    out.push_bytes(chunk);
                    return Ok(self.tail.as_slice() == mark.as_slice());
                }
                EofState::Mark(matched) => {
                    let n = (EOF_MARK_LEN - matched).min(input.len());
                    if input[..n] != mark[matched..matched + n] {
                        return Err(PayloadError::MarkMismatch);
                    }
                    let chunk = input.split_to(n).freeze();
                    self.relayed += n as u64;
                    out.push_bytes(chunk);
                    let matched = matched + n;
                    self.eof = EofState::Mark(matched);
                    return Ok(matched == EOF_MARK_LEN);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        crate::redis_relay::test_fixture(&format!("redis-7.0.15/{name}"))
    }

    fn drain(out: &mut OutQueue) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut v = Vec::new();
        rt.block_on(out.flush_all(&mut v)).unwrap();
        v
    }

    #[test]
    fn headers() {
        assert_eq!(parse_header(b"$172"), Some(Framing::Length(172)));
        let mark = b"e6863d5681b1efd9a830e98092842dbf70479b2a";
        let mut line = b"$EOF:".to_vec();
        line.extend_from_slice(mark);
        assert_eq!(parse_header(&line), Some(Framing::Eof(*mark)));
        assert_eq!(parse_header(b"$EOF:short"), None);
        assert_eq!(parse_header(b"$-1"), None);
        assert_eq!(parse_header(b"$"), None);
        assert_eq!(parse_header(b"+OK"), None);
    }

    /// The real EOF-framed transfer, fed one byte at a time and in one piece: the payload ends
    /// exactly after the mark and the relayed bytes equal the input.
    #[test]
    fn eof_fixture_in_any_split() {
        let all = fixture("diskless-eof-master-to-replica.bin");
        let header = &all[107..152];
        let Some(Framing::Eof(mark)) = parse_header(header) else {
            panic!("header");
        };
        let payload = &all[154..366];
        for piece in [1usize, 7, 40, 1000] {
            let table = ExpiryTable::new(Baseline::Unknown);
            let mut relay = PayloadRelay::new(Framing::Eof(mark), &table);
            let mut out = OutQueue::new();
            let mut done = None;
            for chunk in payload.chunks(piece) {
                let mut input = BytesMut::from(chunk);
                if let Some(d) = relay.feed(&mut input, &mut out, &table, true).unwrap() {
                    done = Some(d);
                }
                assert!(input.is_empty());
            }
            let done = done.expect("payload end found");
            assert_eq!(done.bytes, 212);
            assert!(matches!(done.scan, ScanResult::Complete(_)));
            assert!(done.eof_framed);
            assert_eq!(drain(&mut out), payload);
            assert!(table.is_complete());
        }
    }

    #[test]
    fn length_framing_leaves_the_stream_in_the_buffer() {
        let all = fixture("diskless-no-capa-eof-master-to-replica.bin");
        assert_eq!(parse_header(&all[105..109]), Some(Framing::Length(172)));
        let table = ExpiryTable::new(Baseline::Unknown);
        let mut relay = PayloadRelay::new(Framing::Length(172), &table);
        let mut out = OutQueue::new();
        let mut input = BytesMut::from(&all[111..]);
        let done = relay
            .feed(&mut input, &mut out, &table, true)
            .unwrap()
            .unwrap();
        assert_eq!(done.bytes, 172);
        assert!(!done.eof_framed);
        assert_eq!(&input[..], b"*1\r\n$4\r\nping\r\n");
        assert_eq!(drain(&mut out), &all[111..283]);
    }

    #[test]
    fn dump_seeds_the_table() {
        let rdb = fixture("dump-v10.rdb");
        let table = ExpiryTable::new(Baseline::Unknown);
        let mut relay = PayloadRelay::new(Framing::Length(rdb.len() as u64), &table);
        let mut out = OutQueue::new();
        let mut done = None;
        for chunk in rdb.chunks(4096) {
            let mut input = BytesMut::from(chunk);
            done = relay.feed(&mut input, &mut out, &table, true).unwrap();
        }
        let done = done.unwrap();
        assert_eq!(done.keys_with_expiry, 3);
        assert_eq!(table.volatile_len(), 3);
        assert_eq!(
            table.lookup(5, b"db5:key", 0),
            crate::table::KeyKnowledge::Volatile(1_795_470_177_185)
        );
        assert!(table.is_complete());
    }

    /// An RDB the scanner cannot walk is relayed untouched, the end is found from the read
    /// tail, and the table stays incomplete.
    #[test]
    fn unscannable_eof_payload_falls_back_to_the_tail() {
        let mark = [b'm'; EOF_MARK_LEN];
        let mut payload = b"REDIS9999garbage-that-no-scanner-knows".to_vec();
        payload.extend_from_slice(&mark);
        let table = ExpiryTable::new(Baseline::NotVolatile);
        let mut relay = PayloadRelay::new(Framing::Eof(mark), &table);
        let mut out = OutQueue::new();
        let (a, b) = payload.split_at(20);
        assert!(relay
            .feed(&mut BytesMut::from(a), &mut out, &table, true)
            .unwrap()
            .is_none());
        let done = relay
            .feed(&mut BytesMut::from(b), &mut out, &table, true)
            .unwrap()
            .unwrap();
        assert!(matches!(done.scan, ScanResult::Failed(_)));
        assert!(!table.is_complete());
        assert_eq!(drain(&mut out), payload);
    }

    #[test]
    fn wrong_mark_after_the_rdb_is_an_error() {
        let all = fixture("diskless-eof-master-to-replica.bin");
        let Some(Framing::Eof(mark)) = parse_header(&all[107..152]) else {
            panic!("header");
        };
        let mut payload = all[154..326].to_vec();
        payload.extend_from_slice(&[b'x'; EOF_MARK_LEN]);
        let table = ExpiryTable::new(Baseline::Unknown);
        let mut relay = PayloadRelay::new(Framing::Eof(mark), &table);
        let mut out = OutQueue::new();
        assert_eq!(
            relay.feed(&mut BytesMut::from(&payload[..]), &mut out, &table, true),
            Err(PayloadError::MarkMismatch)
        );
    }
}
