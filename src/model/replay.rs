//! Replaying a recorded replication stream into a model replica, for the demo.
//!
//! The input is what `redis-cli --replica` prints (one command per line as CSV, arguments
//! quoted and escaped like `sdscatrepr`: `\"`, `\\`, `\n`, `\r`, `\t`, `\a`, `\b`, `\xHH`),
//! each line prefixed by the Unix time in ms at which it was received and a space. The replica
//! applies every command `delay_ms` after it was received, expiring keys by its own clock.

use super::{Argv, Replica};
use crate::engine::Dialect;
use bytes::Bytes;
use std::fmt;

/// A line that is not `<ms> <csv command>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ReplayParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ReplayParseError {}

/// One recorded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Receive time, ms since the epoch.
    pub at_ms: i64,
    /// The command.
    pub argv: Argv,
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Parse one CSV command as redis-cli prints it.
pub fn parse_csv_command(line: &str) -> Result<Argv, String> {
    let bytes = line.as_bytes();
    let mut args = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            return Err(format!("expected '\"' at column {}", i + 1));
        }
        i += 1;
        let mut arg = Vec::new();
        loop {
            let Some(&c) = bytes.get(i) else {
                return Err("unterminated quoted argument".into());
            };
            i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = bytes.get(i) else {
                        return Err("dangling escape".into());
                    };
                    i += 1;
                    match e {
                        b'n' => arg.push(b'\n'),
                        b'r' => arg.push(b'\r'),
                        b't' => arg.push(b'\t'),
                        b'a' => arg.push(7),
                        b'b' => arg.push(8),
                        b'x' => {
                            let (Some(h), Some(l)) = (
                                bytes.get(i).copied().and_then(hex),
                                bytes.get(i + 1).copied().and_then(hex),
                            ) else {
                                return Err("bad \\x escape".into());
                            };
                            arg.push(h * 16 + l);
                            i += 2;
                        }
                        other => arg.push(other),
                    }
                }
                other => arg.push(other),
            }
        }
        args.push(Bytes::from(arg));
        match bytes.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err(format!("expected ',' at column {}", i + 1)),
        }
    }
    if args.is_empty() {
        return Err("empty command".into());
    }
    Ok(args)
}

/// Parse a whole timestamped recording; blank lines and lines starting with `#` are skipped.
pub fn parse_recording(text: &str) -> Result<Vec<Recorded>, ReplayParseError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| ReplayParseError {
            line: n + 1,
            reason,
        };
        let (ts, csv) = line
            .split_once(' ')
            .ok_or_else(|| err("expected '<ms> <command>'".into()))?;
        let at_ms = ts
            .parse::<i64>()
            .map_err(|_| err(format!("bad timestamp '{ts}'")))?;
        let argv = parse_csv_command(csv).map_err(err)?;
        out.push(Recorded { at_ms, argv });
    }
    Ok(out)
}

/// Apply a recording to a fresh own-clock replica of `dialect`, each command `delay_ms` after
/// it was received. Commands the replica rejects are counted, not fatal.
pub fn replay(dialect: Dialect, recording: &[Recorded], delay_ms: i64) -> (Replica, usize) {
    let mut replica = Replica::new(dialect);
    let mut rejected = 0;
    for r in recording {
        if replica.apply(&r.argv, r.at_ms + delay_ms).is_err() {
            rejected += 1;
        }
    }
    (replica, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_escapes_round_trip() {
        let argv =
            parse_csv_command(r#""SET","k\"1","a\\b\n\x00\xff","PXAT","1795469448886""#).unwrap();
        assert_eq!(argv.len(), 5);
        assert_eq!(&argv[1][..], b"k\"1");
        assert_eq!(&argv[2][..], b"a\\b\n\x00\xff");
        assert!(parse_csv_command(r#""SET","k"#).is_err());
        assert!(parse_csv_command(r#""SET" "k""#).is_err());
    }

    #[test]
    fn late_replay_of_an_unrewritten_stream_keeps_an_immortal_key() {
        let rec = parse_recording(
            "1000 \"SET\",\"key1\",\"100\",\"PXAT\",\"11000\"\n2000 \"INCR\",\"key1\"\n",
        )
        .unwrap();
        let (late, rejected) = replay(Dialect::Redis, &rec, 30_000);
        assert_eq!(rejected, 0);
        let rec = late.record_at(0, b"key1", i64::MAX / 2).unwrap();
        assert_eq!(rec.deadline_ms, None);
        let fixed = parse_recording(
            "1000 \"SET\",\"key1\",\"100\",\"PXAT\",\"11000\"\n2000 \"MULTI\"\n2000 \"INCR\",\"key1\"\n2000 \"PEXPIREAT\",\"key1\",\"11000\"\n2000 \"EXEC\"\n",
        )
        .unwrap();
        let (late, _) = replay(Dialect::Redis, &fixed, 30_000);
        assert!(late.record_at(0, b"key1", 40_000).is_none());
        let (on_time, _) = replay(Dialect::Redis, &fixed, 0);
        assert!(on_time.record_at(0, b"key1", 5_000).is_some());
    }
}
