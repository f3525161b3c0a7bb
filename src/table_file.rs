//! The file an expiry table is saved in when a relay stops cleanly, so that the next start can
//! hand it to a replica that resumes exactly where the table stopped. Each relay says in the
//! file's header what position of whose stream the table describes (see
//! `redis_relay::table_snapshot` and `pika_relay::table_store`); this module owns the rest
//! (the file is written with [`crate::state_dir::replace_file`]).
//!
//! Layout, little-endian: magic `PTPTB004`, header length u32, header, baseline u8 (its high bit
//! set when the table tracks types, [`ExpiryTable::track_types`]), entry count
//! u64, then per entry db u32, key length u32, key, value i64 (the table's own encoding, see
//! [`ExpiryTable::for_each_raw`]); then the collection witnesses: count u64, per witness db u32,
//! key length u32, key, kind u8 (0: some members, 3: all of them, then their count u8 and each
//! as length u32 and bytes; 1: at least, 2: exactly that many list elements, then u64); last a
//! CRC-32 of
//! everything before it. A file that is short, long, or fails its checksum is rejected. Files
//! of the previous layouts are still read: `PTPTB003` (the same, before the "several types under
//! one name" value existed, so an older proxy never reads one it would misread) and `PTPTB002`
//! (no witnesses).

use crate::table::{Baseline, ExpiryTable, Witness};

const MAGIC: &[u8; 8] = b"PTPTB004";
/// The same layout, written before the shared-name value ([`ExpiryTable::mark_shared`]).
const MAGIC_BEFORE_SHARED: &[u8; 8] = b"PTPTB003";
/// The layout before witnesses were saved.
const MAGIC_NO_WITNESSES: &[u8; 8] = b"PTPTB002";

/// The bytes of a saved table with `header` in front.
pub fn encode(header: &[u8], table: &ExpiryTable) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + header.len() + table.len() * 48);
    out.extend_from_slice(MAGIC);
    put_bytes(&mut out, header);
    // The high bit: the table tracks types (its deadlines carry them, PTPTB004 only).
    let typed = if table.tracks_types() {
        TRACKS_TYPES
    } else {
        0
    };
    out.push(baseline_code(table.baseline()) | typed);
    let count_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut count = 0u64;
    table.for_each_raw(|db, key, value| {
        out.extend_from_slice(&db.to_le_bytes());
        put_bytes(&mut out, key);
        out.extend_from_slice(&value.to_le_bytes());
        count += 1;
    });
    out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    let count_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut count = 0u64;
    table.for_each_witness(|db, key, witness| {
        out.extend_from_slice(&db.to_le_bytes());
        put_bytes(&mut out, key);
        match witness {
            Witness::Members(members) | Witness::AllMembers(members) => {
                out.push(if matches!(witness, Witness::AllMembers(_)) {
                    3
                } else {
                    0
                });
                out.push(members.len().min(usize::from(u8::MAX)) as u8);
                for m in members.iter().take(usize::from(u8::MAX)) {
                    put_bytes(&mut out, m);
                }
            }
            Witness::MinLen(n) => {
                out.push(1);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Witness::ExactLen(n) => {
                out.push(2);
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        count += 1;
    });
    out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The header and the table of a saved table's bytes; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<(&[u8], ExpiryTable), String> {
    let (body, crc) = bytes
        .split_last_chunk::<4>()
        .ok_or("shorter than its checksum")?;
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err("checksum mismatch".into());
    }
    let mut r = Fields::new(body);
    let with_witnesses = match r.take(MAGIC.len())? {
        m if m == MAGIC || m == MAGIC_BEFORE_SHARED => true,
        m if m == MAGIC_NO_WITNESSES => false,
        _ => return Err("not a saved expiry table (magic)".into()),
    };
    let header = r.bytes()?;
    let code = r.u8()?;
    let baseline = baseline_from(code & !TRACKS_TYPES).ok_or("unknown baseline")?;
    let count = r.u64()?;
    let table = ExpiryTable::new(baseline);
    if code & TRACKS_TYPES != 0 {
        table.track_types();
    }
    for _ in 0..count {
        let db = r.u32()?;
        let key = r.bytes()?;
        let value = r.i64()?;
        table.insert_raw(db, key, value);
    }
    if with_witnesses {
        let count = r.u64()?;
        for _ in 0..count {
            let db = r.u32()?;
            let key = r.bytes()?;
            let witness = match r.u8()? {
                kind @ (0 | 3) => {
                    let n = r.u8()?;
                    let mut members = Vec::with_capacity(usize::from(n));
                    for _ in 0..n {
                        members.push(Box::<[u8]>::from(r.bytes()?));
                    }
                    if kind == 3 {
                        Witness::AllMembers(members)
                    } else {
                        Witness::Members(members)
                    }
                }
                1 => Witness::MinLen(r.u64()?),
                2 => Witness::ExactLen(r.u64()?),
                kind => return Err(format!("unknown witness kind {kind}")),
            };
            table.insert_witness(db, key, witness);
        }
    }
    r.finish()?;
    Ok((header, table))
}

/// What saving a relay's tables at a stop did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SavedTables {
    /// Tables written.
    pub saved: usize,
    /// Tables that could not be written (each logged).
    pub failed: usize,
    /// Entries in the tables written.
    pub entries: usize,
}

impl SavedTables {
    /// The relay's one log line for the whole save.
    pub fn log(&self) {
        tracing::info!(
            saved = self.saved,
            failed = self.failed,
            entries = self.entries,
            "expiry tables saved for the next start"
        );
    }
}

/// Appends `bytes` with its length (u32) in front.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads fields in order; every short read is an error.
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Fields of `bytes`, from the start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Fields { rest: bytes }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Bytes written by [`put_bytes`].
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// Bytes written by [`put_bytes`], as UTF-8 text.
    pub fn text(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "text is not UTF-8".to_string())
    }

    /// Every field has been read.
    pub fn finish(&self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err("bytes after the last field".into())
        }
    }
}

/// Set in the baseline byte of a table whose deadlines carry types.
const TRACKS_TYPES: u8 = 0x80;

fn baseline_code(baseline: Baseline) -> u8 {
    match baseline {
        Baseline::Unknown => 0,
        Baseline::NotVolatile => 1,
        Baseline::Absent => 2,
    }
}

fn baseline_from(code: u8) -> Option<Baseline> {
    match code {
        0 => Some(Baseline::Unknown),
        1 => Some(Baseline::NotVolatile),
        2 => Some(Baseline::Absent),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{KeyKnowledge, WitnessRef};

    /// Files written by earlier builds must keep verifying: the checksum is zlib's CRC-32.
    #[test]
    fn the_checksum_is_zlib_crc32() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32fast::hash(b""), 0);
    }

    fn sample() -> ExpiryTable {
        let t = ExpiryTable::new(Baseline::NotVolatile);
        t.set_deadline(0, b"a", 8_000);
        t.set_deadline(3, b"", 7_000);
        t.set_maybe_volatile(0, b"h", 9_000);
        t.mark_persistent(1, b"p", true);
        t.mark_unknown(0, b"u");
        t.set_deadline(40, b"high-db", 11_000);
        t.set_witness(0, b"h", WitnessRef::Member(b"f1"));
        t.set_witness(0, b"h", WitnessRef::Member(b"f2"));
        t.set_witness(0, b"l", WitnessRef::ExactLen(3));
        t.set_witness(0, b"z", WitnessRef::Created);
        t.set_witness(0, b"z", WitnessRef::Member(b"m"));
        t.set_witness(40, b"m", WitnessRef::MinLen(2));
        t
    }

    fn knowledge(t: &ExpiryTable) -> Vec<KeyKnowledge> {
        [
            (0, &b"a"[..]),
            (3, b""),
            (0, b"h"),
            (1, b"p"),
            (0, b"u"),
            (40, b"high-db"),
            (0, b"never"),
        ]
        .iter()
        .map(|&(db, key)| t.lookup(db, key, 6_000))
        .collect()
    }

    #[test]
    fn a_saved_table_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let table = sample();
        let path = dir.path().join("t.table");
        crate::state_dir::replace_file(&path, &encode(b"header", &table)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (header, back) = decode(&bytes).unwrap();
        assert_eq!(header, b"header");
        assert_eq!(back.baseline(), Baseline::NotVolatile);
        assert_eq!(back.len(), table.len());
        assert_eq!(knowledge(&back), knowledge(&table));
        assert_eq!(knowledge(&back)[0], KeyKnowledge::Volatile(8_000));
        for (db, key) in [(0, &b"h"[..]), (0, b"l"), (40, b"m"), (0, b"a"), (0, b"z")] {
            assert_eq!(
                back.witness(db, key),
                table.witness(db, key),
                "witness of {key:?}"
            );
        }
        assert_eq!(
            back.witness(0, b"h"),
            Some(Witness::Members(vec![b"f1"[..].into(), b"f2"[..].into()]))
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no .tmp left"
        );
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_is_rejected() {
        let bytes = encode(b"hdr", &sample());
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len} bytes");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "bit {bit} of byte {i} flipped");
            }
        }
        assert!(decode(&bytes).is_ok());
    }

    /// A file from before witnesses were saved: the same layout up to the entries.
    #[test]
    fn a_file_without_witnesses_still_reads() {
        let table = sample();
        let bytes = encode(b"hdr", &table);
        let (body, _) = bytes.split_last_chunk::<4>().unwrap();
        let entries_end = body.len() - witnesses_len(&table);
        let mut old = MAGIC_NO_WITNESSES.to_vec();
        old.extend_from_slice(&body[MAGIC.len()..entries_end]);
        let crc = crc32fast::hash(&old);
        old.extend_from_slice(&crc.to_le_bytes());
        let (_, back) = decode(&old).unwrap();
        assert_eq!(knowledge(&back), knowledge(&table));
        assert_eq!(back.witness(0, b"h"), None);
    }

    fn witnesses_len(table: &ExpiryTable) -> usize {
        let empty = ExpiryTable::new(table.baseline());
        table.for_each_raw(|db, key, value| empty.insert_raw(db, key, value));
        encode(b"hdr", table).len() - encode(b"hdr", &empty).len() + 8
    }
}
