//! Tests of the RDB scanner against real Redis 7.0.15 / 7.4.1 dumps, a synthetic snapshot that
//! exercises every walkable type and encoding, and property tests over chunking and corruption.

use super::writer::opcode;
use super::*;
use proptest::prelude::*;
use std::sync::OnceLock;

fn fixture(relative: &str) -> Vec<u8> {
    crate::fixtures::read(relative).unwrap_or_else(|e| panic!("{e}"))
}

const V10: &str = "redis-7.0.15/dump-v10.rdb";
const V12: &str = "redis-7.4.1/dump-v12.rdb";
const SYNC_V10: &str = "redis-7.0.15/propagation-fullsync.rdb";
const SYNC_V12: &str = "redis-7.4.1/propagation-fullsync.rdb";

fn cached_fixtures() -> &'static [(&'static str, Vec<u8>)] {
    static CACHE: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    CACHE.get_or_init(|| {
        [V10, V12, SYNC_V10, SYNC_V12]
            .into_iter()
            .map(|name| (name, fixture(name)))
            .collect()
    })
}

type Outcome = (Result<RdbSummary, RdbError>, Vec<RdbKeyExpiry>);

/// Scans `data` cut at the given chunk lengths (cycled), then finishes.
fn scan_chunked(data: &[u8], chunk_lens: &[usize]) -> Outcome {
    let mut scanner = RdbScanner::new();
    let mut keys = Vec::new();
    let mut rest = data;
    let mut lens = chunk_lens.iter().cycle();
    while !rest.is_empty() {
        let n = (*lens.next().unwrap()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        if let Err(err) = scanner.feed(chunk, &mut keys) {
            return (Err(err), keys);
        }
        rest = tail;
    }
    (scanner.finish(), keys)
}

fn scan_whole(data: &[u8]) -> Outcome {
    scan_chunked(data, &[data.len().max(1)])
}

fn expiry(db: u32, key: &str, expire_ms: i64) -> RdbKeyExpiry {
    RdbKeyExpiry {
        db,
        key: Bytes::copy_from_slice(key.as_bytes()),
        expire_ms,
    }
}

fn aux(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn v10_dump_keys_expiries_and_crc() {
    let data = fixture(V10);
    let (summary, keys) = scan_whole(&data);
    let summary = summary.unwrap();
    assert_eq!(
        keys,
        vec![
            expiry(0, "hash:small", 1_795_476_377_145),
            expiry(0, "str:ttl", 1_795_472_777_145),
            expiry(5, "db5:key", 1_795_470_177_185),
        ]
    );
    assert_eq!(summary.version, 10);
    assert_eq!(summary.keys, 25);
    assert_eq!(summary.keys_with_expiry, 3);
    assert_eq!(summary.keys_with_field_ttl_layout, 0);
    assert!(summary.crc_checked);
    assert_eq!(summary.stored_crc, 0x4cb5_ca75_7852_2ad4);
    assert_eq!(summary.functions, 1);
    assert_eq!(summary.module_aux, 0);
    assert_eq!(summary.bytes, 52_332);
    assert_eq!(summary.repl_stream_db, Some(0));
    assert_eq!(
        summary.aux,
        aux(&[
            ("redis-ver", "7.0.15"),
            ("redis-bits", "64"),
            ("ctime", "1795469177"),
            ("used-mem", "2085904"),
            ("repl-stream-db", "0"),
            ("repl-id", "a507f8eeec018d9f9cffcad79efd27081110735e"),
            ("repl-offset", "185404"),
            ("aof-base", "0"),
        ])
    );
}

#[test]
fn v12_dump_keys_expiries_field_ttl_types_and_crc() {
    let data = fixture(V12);
    let (summary, keys) = scan_whole(&data);
    let summary = summary.unwrap();
    assert_eq!(
        keys,
        vec![
            expiry(0, "str:ttl", 1_795_472_878_678),
            expiry(0, "hash:small", 1_795_476_478_678),
            expiry(5, "db5:key", 1_795_470_278_690),
        ]
    );
    assert_eq!(summary.version, 12);
    assert_eq!(summary.keys, 27);
    assert_eq!(summary.keys_with_expiry, 3);
    assert_eq!(summary.keys_with_field_ttl_layout, 2);
    assert!(summary.crc_checked);
    assert_eq!(summary.stored_crc, 0x7c1a_3603_4283_1b3a);
    assert_eq!(summary.functions, 1);
    assert_eq!(summary.bytes, 58_693);
    assert_eq!(summary.repl_stream_db, None);
    assert_eq!(
        summary.aux,
        aux(&[
            ("redis-ver", "7.4.1"),
            ("redis-bits", "64"),
            ("ctime", "1795469278"),
            ("used-mem", "1696432"),
            ("aof-base", "0"),
        ])
    );
}

#[test]
fn fullsync_payloads_from_both_versions() {
    let (summary, keys) = scan_whole(&fixture(SYNC_V10));
    let summary = summary.unwrap();
    assert!(keys.is_empty());
    assert_eq!(
        (summary.version, summary.keys, summary.functions),
        (10, 0, 0)
    );
    assert!(summary.crc_checked);
    assert_eq!(summary.stored_crc, 0x2065_078c_4683_cf9b);
    assert_eq!(summary.bytes, 172);
    assert_eq!(summary.repl_stream_db, Some(0));
    assert_eq!(
        summary.aux,
        aux(&[
            ("redis-ver", "7.0.15"),
            ("redis-bits", "64"),
            ("ctime", "1795468506"),
            ("used-mem", "1013776"),
            ("repl-stream-db", "0"),
            ("repl-id", "96ac4d0348296a8362fb8d6594a63d5cda5ffa75"),
            ("repl-offset", "0"),
            ("aof-base", "0"),
        ])
    );

    let (summary, keys) = scan_whole(&fixture(SYNC_V12));
    let summary = summary.unwrap();
    assert!(keys.is_empty());
    assert_eq!(
        (summary.version, summary.keys, summary.functions),
        (12, 0, 1)
    );
    assert!(summary.crc_checked);
    assert_eq!(summary.stored_crc, 0x3e2a_2a92_9568_395f);
    assert_eq!(summary.bytes, 248);
    assert_eq!(summary.repl_stream_db, Some(0));
    assert_eq!(summary.aux.len(), 8);
    assert_eq!(
        summary.aux[5],
        (
            "repl-id".to_string(),
            "454ee499aee92f3566563242f75d51be13433537".to_string()
        )
    );
}

#[test]
fn one_and_seven_byte_chunks_match_whole_feed() {
    for (name, data) in cached_fixtures() {
        let whole = scan_whole(data);
        assert!(whole.0.is_ok(), "{name}: {:?}", whole.0);
        assert_eq!(scan_chunked(data, &[1]), whole, "{name} in 1-byte chunks");
        assert_eq!(scan_chunked(data, &[7]), whole, "{name} in 7-byte chunks");
        assert_eq!(
            scan_chunked(data, &[3, 1, 64, 2, 1000]),
            whole,
            "{name} mixed"
        );
    }
}

#[test]
fn corrupted_trailer_is_a_crc_mismatch() {
    for (name, data) in cached_fixtures() {
        let mut bad = data.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        let good_crc = u64::from_le_bytes(data[data.len() - 8..].try_into().unwrap());
        let bad_crc = u64::from_le_bytes(bad[bad.len() - 8..].try_into().unwrap());
        assert_eq!(
            scan_whole(&bad).0,
            Err(RdbError::CrcMismatch {
                expected: bad_crc,
                computed: good_crc
            }),
            "{name}"
        );
    }
}

#[test]
fn corrupted_value_bytes_are_a_crc_mismatch() {
    // Flip a byte inside the 'a' x 200 LZF payload of `str:lzf`: the structure still parses,
    // only the checksum can tell.
    let data = fixture(V10);
    let at = data
        .windows(4)
        .position(|w| w == [0xc3, 0x09, 0x40, 0xc8])
        .unwrap();
    let mut bad = data.clone();
    bad[at + 6] ^= 0x55;
    let (result, keys) = scan_whole(&bad);
    assert!(
        matches!(result, Err(RdbError::CrcMismatch { .. })),
        "{result:?}"
    );
    assert_eq!(keys.len(), 3, "keys before the trailer are still reported");
}

#[test]
fn zero_crc_means_not_checked() {
    let mut data = fixture(V12);
    let n = data.len();
    data[n - 8..].fill(0);
    let summary = scan_whole(&data).0.unwrap();
    assert!(!summary.crc_checked);
    assert_eq!(summary.stored_crc, 0);
    assert_eq!(summary.keys, 27);
}

/// Every prefix of every fixture: `feed` accepts it, `finish` says `Truncated`, and the keys
/// reported so far are a prefix of the full list. Uses one 1-byte-fed scanner, cloned at each
/// length, so the check is linear in the fixture size.
#[test]
fn every_prefix_is_truncated_never_an_error() {
    for (name, data) in cached_fixtures() {
        let full_keys = scan_whole(data).1;
        let mut scanner = RdbScanner::new();
        let mut keys = Vec::new();
        for (i, byte) in data.iter().enumerate() {
            assert!(!scanner.is_done(), "{name}: done before byte {i}");
            assert_eq!(
                scanner.clone().finish(),
                Err(RdbError::Truncated),
                "{name}: prefix {i}"
            );
            scanner.feed(std::slice::from_ref(byte), &mut keys).unwrap();
            assert_eq!(
                keys[..],
                full_keys[..keys.len()],
                "{name}: prefix {}",
                i + 1
            );
        }
        assert!(scanner.is_done());
        assert!(scanner.finish().is_ok());
    }
}

/// The same with a fresh scanner per prefix, fed in one chunk.
#[test]
fn fresh_scanner_on_prefixes() {
    for (name, data) in cached_fixtures() {
        let step = if data.len() > 1000 { 37 } else { 1 };
        let lens = (0..data.len())
            .step_by(step)
            .chain(data.len().saturating_sub(64)..data.len());
        for len in lens {
            let mut scanner = RdbScanner::new();
            let mut keys = Vec::new();
            scanner.feed(&data[..len], &mut keys).unwrap();
            assert_eq!(
                scanner.finish(),
                Err(RdbError::Truncated),
                "{name}[..{len}]"
            );
        }
    }
}

#[test]
fn bytes_after_the_trailer() {
    let data = fixture(SYNC_V12);
    let mark = [b'x'; 40];
    let mut framed = data.clone();
    framed.extend_from_slice(&mark);

    let (result, _) = scan_whole(&framed);
    assert_eq!(result, Err(RdbError::TrailingBytes));

    // With EOF-mark framing the caller learns where the payload ends from the scanner.
    let mut scanner = RdbScanner::new();
    let mut keys = Vec::new();
    assert_eq!(
        scanner.feed_until_done(&framed, &mut keys).unwrap(),
        data.len()
    );
    assert!(scanner.is_done());
    assert_eq!(scanner.feed_until_done(&mark, &mut keys).unwrap(), 0);
    assert!(scanner.finish().unwrap().crc_checked);

    // Byte by byte, the payload's last byte is the last one consumed.
    let mut scanner = RdbScanner::new();
    let consumed: usize = framed
        .iter()
        .map(|b| {
            scanner
                .feed_until_done(std::slice::from_ref(b), &mut keys)
                .unwrap()
        })
        .sum();
    assert_eq!(consumed, data.len());
}

#[test]
fn errors_poison_the_scanner() {
    let mut data = fixture(SYNC_V10);
    data[0] = b'X';
    let mut scanner = RdbScanner::new();
    let mut keys = Vec::new();
    assert_eq!(scanner.feed(&data, &mut keys), Err(RdbError::BadMagic));
    assert_eq!(
        scanner.feed(b"REDIS0010", &mut keys),
        Err(RdbError::BadMagic)
    );
    assert_eq!(scanner.finish(), Err(RdbError::BadMagic));
}

#[test]
fn header_versions() {
    for (header, expected) in [
        (&b"REDIS0000"[..], Err(RdbError::UnsupportedVersion(0))),
        (b"REDIS0013", Err(RdbError::UnsupportedVersion(13))),
        (b"REDIS00x1", Err(RdbError::BadMagic)),
        (b"redis0010", Err(RdbError::BadMagic)),
        (b"REDIS0001", Ok(())),
        (b"REDIS0012", Ok(())),
    ] {
        let mut scanner = RdbScanner::new();
        assert_eq!(
            scanner.feed(header, &mut Vec::new()),
            expected,
            "{header:?}"
        );
    }
}

#[test]
fn rdb_before_version_5_has_no_trailer() {
    let mut w = RdbWriter::new(4);
    w.select_db(2).string_key(b"k", b"v", Some(77));
    let data = w.finish(true);
    assert_eq!(*data.last().unwrap(), opcode::EOF);
    let (summary, keys) = scan_whole(&data);
    let summary = summary.unwrap();
    assert!(!summary.crc_checked);
    assert_eq!(keys, vec![expiry(2, "k", 77)]);
}

/// Writes a stream value of type 15, 19 or 21 with one node, one group with a 2-entry PEL and
/// one consumer owning both entries.
fn write_stream(w: &mut RdbWriter, value_type: u8) {
    let id = |ms: u64, seq: u64| {
        let mut raw = ms.to_be_bytes().to_vec();
        raw.extend_from_slice(&seq.to_be_bytes());
        raw
    };
    w.length(1).string(&id(1, 0)).string(&[0x0b; 40]); // node key, listpack
    w.length(2).length(1).length(1); // length, last id
    if value_type >= 19 {
        w.length(1).length(0).length(0).length(0).length(2); // first, max deleted, added
    }
    w.length(1).string(b"group").length(1).length(1); // one group, last delivered id
    if value_type >= 19 {
        w.length(2); // entries read
    }
    w.length(2);
    for seq in 0..2 {
        w.raw(&id(1, seq)).raw(&5i64.to_le_bytes()).length(1);
    }
    w.length(1).string(b"consumer").raw(&6i64.to_le_bytes());
    if value_type >= 21 {
        w.raw(&7i64.to_le_bytes());
    }
    w.length(2).raw(&id(1, 0)).raw(&id(1, 1));
}

/// A module value body: every module opcode once, then the terminator.
fn write_module_ops(w: &mut RdbWriter) {
    w.length(1).length(u64::MAX); // signed int
    w.length(2).length(300); // unsigned int
    w.length(3).raw(&1.5f32.to_le_bytes());
    w.length(4).raw(&2.5f64.to_le_bytes());
    w.length(5).string(b"module string");
    w.length(5).raw(&[0xc0, 0x05]); // string, int8-encoded
    w.length(0);
}

/// A synthetic v12 snapshot using every value type the scanner walks, each key/string
/// encoding, both expiry opcodes, several databases and the less common record opcodes.
/// Returns the bytes and the expiries a correct scan must report.
fn synthetic_rdb() -> (Vec<u8>, Vec<RdbKeyExpiry>, u64) {
    let mut w = RdbWriter::new(12);
    let mut expected = Vec::new();
    let mut keys = 0u64;
    w.aux("redis-ver", "7.4.1").aux("repl-stream-db", "3");
    w.raw(&[opcode::AUX])
        .string(b"big-aux")
        .string(&[b'z'; 5000]);
    w.raw(&[opcode::AUX, 0xc2])
        .raw(&7i32.to_le_bytes())
        .raw(&[0xc0, 0x09]); // int key & value
    w.raw(&[opcode::FUNCTION2])
        .string(b"#!lua name=lib\nredis.register_function('f', function() return 1 end)");
    w.raw(&[opcode::MODULE_AUX])
        .length(0x0123_4567_89ab_cdef)
        .length(2)
        .length(1);
    write_module_ops(&mut w);

    w.select_db(0).resize_db(10, 4);
    w.raw(&[opcode::SLOT_INFO])
        .length(12_000)
        .length(10)
        .length(4);

    // 64-bit length for the value of an expiring plain key.
    w.expire_ms(1_000).raw(&[0]).string(b"plain");
    w.raw(&[0x81]).raw(&5u64.to_be_bytes()).raw(b"hello");
    expected.push(expiry(0, "plain", 1_000));
    keys += 1;

    // EXPIRETIME in seconds, IDLE and FREQ in between, an LZF key and an LZF value.
    w.raw(&[opcode::EXPIRETIME]).raw(&2_000i32.to_le_bytes());
    w.raw(&[opcode::IDLE]).length(99).raw(&[opcode::FREQ, 5]);
    w.raw(&[0, 0xc3, 7, 24, 0x02, b'a', b'b', b'c', 0xe0, 12, 0x02]);
    w.raw(&[0xc3, 7, 24, 0x02, b'x', b'y', b'z', 0xe0, 12, 0x02]);
    expected.push(expiry(0, &"abc".repeat(8), 2_000_000));
    keys += 1;

    // Integer-encoded keys: int16 with a set value, int8 negative with a list value.
    w.expire_ms(3_000)
        .raw(&[2, 0xc1])
        .raw(&12_345i16.to_le_bytes());
    w.length(3).string(b"m1").raw(&[0xc0, 0x01]).string(b"m3");
    expected.push(expiry(0, "12345", 3_000));
    w.expire_ms(3_001)
        .raw(&[1, 0xc0, 0xff])
        .length(2)
        .string(b"a")
        .string(b"b");
    expected.push(expiry(0, "-1", 3_001));
    keys += 2;

    // Keys without expiry are counted, not reported.
    w.string_key(b"no-ttl", b"v", None);
    keys += 1;

    w.select_db(7);
    w.raw(&[4]).string(b"hash").length(2);
    w.string(b"f1").string(b"v1").string(b"f2").string(b"v2");
    w.expire_ms(4_000).raw(&[3]).string(b"old-zset").length(4);
    for (member, score) in [
        (&b"nan"[..], &[253u8][..]),
        (b"inf", &[254]),
        (b"-inf", &[255]),
        (b"x", &[3, b'3', b'.', b'5']),
    ] {
        w.string(member).raw(score);
    }
    expected.push(expiry(7, "old-zset", 4_000));
    w.raw(&[5]).string(b"zset2").length(2);
    w.string(b"a")
        .raw(&1.0f64.to_le_bytes())
        .string(b"b")
        .raw(&2.0f64.to_le_bytes());
    keys += 3;

    // Single-blob encodings.
    for value_type in [9u8, 10, 11, 12, 13, 16, 17, 20, 23] {
        w.expire_ms(5_000 + i64::from(value_type));
        w.raw(&[value_type])
            .string(format!("blob{value_type}").as_bytes());
        w.string(&[value_type; 33]);
        expected.push(expiry(
            7,
            &format!("blob{value_type}"),
            5_000 + i64::from(value_type),
        ));
        keys += 1;
    }

    // Quicklists: v1 (ziplist blobs), v2 (container + blob, one LZF blob).
    w.raw(&[14])
        .string(b"ql1")
        .length(2)
        .string(&[1; 20])
        .string(&[2; 20]);
    w.expire_ms(6_000).raw(&[18]).string(b"ql2").length(2);
    w.length(2)
        .string(&[3; 20])
        .length(1)
        .raw(&[0xc3, 7, 24, 0x02, b'q', b'r', b's', 0xe0, 12, 0x02]);
    expected.push(expiry(7, "ql2", 6_000));
    keys += 2;

    // Streams in all three layouts.
    for value_type in [15u8, 19, 21] {
        w.expire_ms(7_000 + i64::from(value_type));
        w.raw(&[value_type])
            .string(format!("stream{value_type}").as_bytes());
        write_stream(&mut w, value_type);
        expected.push(expiry(
            7,
            &format!("stream{value_type}"),
            7_000 + i64::from(value_type),
        ));
        keys += 1;
    }

    // Module value.
    w.expire_ms(8_000)
        .raw(&[7])
        .string(b"module")
        .length(0x0abc_def0_1234_5678);
    write_module_ops(&mut w);
    expected.push(expiry(7, "module", 8_000));
    keys += 1;

    // Hashes with field TTLs (14-bit DB number first).
    w.select_db(300);
    w.raw(&[22])
        .string(b"hfe-pre")
        .length(1)
        .length(123)
        .string(b"f")
        .string(b"v");
    w.expire_ms(9_000)
        .raw(&[24])
        .string(b"hfe-meta")
        .raw(&555i64.to_le_bytes());
    w.length(2)
        .length(0)
        .string(b"f1")
        .string(b"v1")
        .length(3)
        .string(b"f2")
        .string(b"v2");
    expected.push(expiry(300, "hfe-meta", 9_000));
    w.raw(&[25])
        .string(b"hfe-lp")
        .raw(&555i64.to_le_bytes())
        .string(&[0x19; 30]);
    keys += 3;

    // A big value with a 32-bit length, then an int32 key after it.
    w.string_key(b"big", &vec![0xa5; 200_000], Some(10_000));
    expected.push(expiry(300, "big", 10_000));
    w.expire_ms(-5)
        .raw(&[0, 0xc2])
        .raw(&(-2_000_000_000i32).to_le_bytes());
    w.raw(&[0xc0, 0x01]);
    expected.push(expiry(300, "-2000000000", -5));
    keys += 2;

    (w.finish(true), expected, keys)
}

#[test]
fn synthetic_snapshot_with_every_type() {
    let (data, expected, keys) = synthetic_rdb();
    let (summary, found) = scan_whole(&data);
    let summary = summary.unwrap();
    assert_eq!(found, expected);
    assert_eq!(summary.keys, keys);
    assert_eq!(summary.keys_with_expiry, expected.len() as u64);
    assert_eq!(summary.keys_with_field_ttl_layout, 4); // 22, 23, 24, 25
    assert_eq!(summary.repl_stream_db, Some(3));
    assert_eq!(
        summary.aux,
        aux(&[("redis-ver", "7.4.1"), ("repl-stream-db", "3"), ("7", "9")])
    );
    assert_eq!((summary.functions, summary.module_aux), (1, 1));
    assert!(summary.crc_checked);
    assert_eq!(summary.bytes, data.len() as u64);
    for lens in [&[1usize][..], &[7], &[4096], &[5, 1, 300, 2]] {
        assert_eq!(
            scan_chunked(&data, lens),
            (Ok(summary.clone()), expected.clone())
        );
    }
}

#[test]
fn key_is_reported_before_its_value_arrives() {
    let mut w = RdbWriter::new(10);
    w.expire_ms(42).raw(&[0]).string(b"early");
    let key_end = w.as_bytes().len();
    w.string(&vec![0u8; 100_000]);
    let data = w.finish(true);

    let mut scanner = RdbScanner::new();
    let mut keys = Vec::new();
    scanner.feed(&data[..key_end], &mut keys).unwrap();
    assert_eq!(keys, vec![expiry(0, "early", 42)]);
    // Halfway through the value nothing of it is held.
    scanner
        .feed(&data[key_end..key_end + 50_000], &mut keys)
        .unwrap();
    assert!(scanner.capture.capacity() < 1024);
    scanner.feed(&data[key_end + 50_000..], &mut keys).unwrap();
    assert_eq!(keys.len(), 1);
    assert!(scanner.finish().unwrap().crc_checked);
}

fn scan_records(version: u32, records: &[u8]) -> Outcome {
    let mut w = RdbWriter::new(version);
    w.raw(records);
    scan_whole(&w.finish(true))
}

#[test]
fn unwalkable_and_malformed_records() {
    let cases: &[(&[u8], RdbError)] = &[
        (&[6, 1, b'k'], RdbError::UnsupportedType(6)),
        (&[8, 1, b'k'], RdbError::UnsupportedType(8)),
        (&[26, 1, b'k'], RdbError::UnsupportedType(26)),
        (&[0xf6], RdbError::UnsupportedOpcode(0xf6)),
        (
            &[0, 0x82, 0, 0],
            RdbError::Malformed("unknown length encoding 0x82".into()),
        ),
        (
            &[0, 0xc4],
            RdbError::Malformed("unknown string encoding 4".into()),
        ),
        (
            &[7, 1, b'k', 9, 6],
            RdbError::Malformed("unknown module opcode 6".into()),
        ),
        (
            &[0xf7, 1, 1, 0, 0],
            RdbError::Malformed("MODULE_AUX when-opcode 1, expected 2 (unsigned integer)".into()),
        ),
        (
            &[0xfe, 0x81, 0, 0, 0, 1, 0, 0, 0, 0],
            RdbError::Malformed("SELECTDB 4294967296 out of range".into()),
        ),
        // LZF key of an expiring entry whose back-reference points before the start.
        (
            &[
                0xfc, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xc3, 4, 4, 0x00, b'a', 0x20, 0x05, 0,
            ],
            RdbError::Malformed(lzf::LzfError::BadBackReference.to_string()),
        ),
    ];
    for (records, expected) in cases {
        assert_eq!(
            scan_records(12, records).0,
            Err(expected.clone()),
            "{records:02x?}"
        );
    }
}

#[test]
fn key_length_limit() {
    let mut w = RdbWriter::new(10);
    w.string_key(&[b'k'; 100], b"v", None);
    let data = w.finish(true);
    let mut scanner = RdbScanner::with_max_key_len(64);
    assert_eq!(
        scanner.feed(&data, &mut Vec::new()),
        Err(RdbError::TooLarge(100))
    );
    let mut scanner = RdbScanner::with_max_key_len(100);
    scanner.feed(&data, &mut Vec::new()).unwrap();
    assert!(scanner.finish().is_ok());
}

#[test]
fn errors_display_their_cause() {
    let text = RdbError::CrcMismatch {
        expected: 1,
        computed: 2,
    }
    .to_string();
    assert!(text.contains("0x0000000000000001") && text.contains("0x0000000000000002"));
    assert_eq!(
        RdbError::UnsupportedVersion(13).to_string(),
        "unsupported RDB version 13"
    );
}

fn split_lens() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..200, 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_splits_give_identical_results(which in 0usize..4, lens in split_lens()) {
        let (_, data) = &cached_fixtures()[which];
        prop_assert_eq!(scan_chunked(data, &lens), scan_whole(data));
    }

    #[test]
    fn random_splits_of_the_synthetic_snapshot(lens in split_lens()) {
        let (data, expected, _) = synthetic_rdb();
        let (summary, keys) = scan_chunked(&data, &lens);
        prop_assert!(summary.is_ok());
        prop_assert_eq!(keys, expected);
    }

    /// Corrupted payloads never panic, and the outcome (error and keys reported) does not
    /// depend on how the bytes were chunked.
    #[test]
    fn corruption_never_panics_and_is_chunking_independent(
        which in 0usize..4,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        lens in split_lens(),
    ) {
        let (_, data) = &cached_fixtures()[which];
        let mut bad = data.clone();
        for (index, mask) in &flips {
            let at = index.index(bad.len());
            bad[at] ^= mask;
        }
        let whole = scan_whole(&bad);
        if bad != *data {
            prop_assert!(whole.0.is_err());
        }
        prop_assert_eq!(scan_chunked(&bad, &lens), whole);
    }

    /// Arbitrary bytes after a valid header never panic either.
    #[test]
    fn garbage_after_header_never_panics(
        version in 1u32..=12,
        body in proptest::collection::vec(any::<u8>(), 0..512),
        lens in split_lens(),
    ) {
        let mut data = format!("REDIS{version:04}").into_bytes();
        data.extend_from_slice(&body);
        let whole = scan_whole(&data);
        prop_assert_eq!(scan_chunked(&data, &lens), whole);
    }
}
