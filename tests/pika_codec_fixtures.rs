//! The Pika codec against real Pika 3.5.4 captures (`tests/fixtures/pika-3.5.4/`; their README
//! documents every frame).
//!
//! Expected values below are transcribed from that README's tables; the tests check that the
//! decoded bytes agree with them, that unchanged frames re-encode byte for byte, that edits
//! round-trip and keep unknown fields, and that malformed or mutated input never panics.

use bytes::Bytes;
use pika_ttl_proxy::pika::binlog_file::{read_binlog_file, BinlogFileWriter, Manifest};
use pika_ttl_proxy::pika::frame::{FrameCodec, FrameError};
use pika_ttl_proxy::pika::item::{BinlogItem, ItemHeader, ITEM_HEADER_LEN};
use pika_ttl_proxy::pika::messages::{
    build_binlog_sync_request, build_binlog_sync_response, build_keepalive_ack,
    build_try_sync_purged_response, replace_ack_range, replace_ack_range_end,
    replace_try_sync_offset, BinlogOffset, BinlogPosition, BinlogSyncSplice, InnerRequest,
    InnerResponse, LogicalOffset, MessageError, MessageType, NewBinlogSyncEntry,
    NewBinlogSyncRequest, Node, Slot, StatusCode, TrySyncReplyCode,
};
use pika_ttl_proxy::pika::proto::{
    parse_message, put_len_field, Field, MessageEditor, ProtoError, WireType,
};
use proptest::prelude::*;
use std::sync::OnceLock;
use support::pika_wire_builders::build_keepalive_response;

mod support;

const REPL1_UP: &str = "session1-repl1-replica-to-master.bin";
const REPL1_DOWN: &str = "session1-repl1-master-to-replica.bin";
const REPL2_UP: &str = "session1-repl2-replica-to-master.bin";
const REPL2_DOWN: &str = "session1-repl2-master-to-replica.bin";
const SESSION2_UP: &str = "session2-repl-replica-to-master.bin";
const SESSION2_DOWN: &str = "session2-repl-master-to-replica.bin";
const RSYNC_UP: &str = "session1-rsync-replica-to-master.bin";
const RSYNC_DOWN: &str = "session1-rsync-master-to-replica.bin";
const REPL_FILES: [&str; 6] = [
    REPL1_UP,
    REPL1_DOWN,
    REPL2_UP,
    REPL2_DOWN,
    SESSION2_UP,
    SESSION2_DOWN,
];
const UP_FILES: [&str; 3] = [REPL1_UP, REPL2_UP, SESSION2_UP];
const DOWN_FILES: [&str; 3] = [REPL1_DOWN, REPL2_DOWN, SESSION2_DOWN];

fn load(name: &str) -> Vec<u8> {
    pika_ttl_proxy::fixtures::read(&format!("pika-3.5.4/{name}")).unwrap_or_else(|e| panic!("{e}"))
}

/// Frame bodies with the offset of each frame's length prefix in the file.
fn frames(name: &str) -> Vec<(usize, Bytes)> {
    let data = load(name);
    let bodies = FrameCodec::new().decode_all(&data).unwrap();
    let mut at = 0;
    bodies
        .into_iter()
        .map(|body| {
            let frame_at = at;
            at += 4 + body.len();
            (frame_at, body)
        })
        .collect()
}

fn bodies(name: &str) -> Vec<Bytes> {
    frames(name).into_iter().map(|(_, b)| b).collect()
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Parses content that must be exactly one RESP multibulk; returns its arguments joined by
/// spaces.
fn resp_command(content: &[u8]) -> String {
    fn line(buf: &[u8], pos: &mut usize) -> String {
        let end = buf[*pos..].windows(2).position(|w| w == b"\r\n").unwrap() + *pos;
        let text = String::from_utf8(buf[*pos..end].to_vec()).unwrap();
        *pos = end + 2;
        text
    }
    let mut pos = 0;
    let head = line(content, &mut pos);
    let argc: usize = head.strip_prefix('*').unwrap().parse().unwrap();
    let mut args = Vec::new();
    for _ in 0..argc {
        let len: usize = line(content, &mut pos)
            .strip_prefix('$')
            .unwrap()
            .parse()
            .unwrap();
        args.push(String::from_utf8(content[pos..pos + len].to_vec()).unwrap());
        assert_eq!(&content[pos + len..pos + len + 2], b"\r\n");
        pos += len + 2;
    }
    assert_eq!(pos, content.len(), "trailing bytes after one command");
    args.join(" ")
}

// ---------------------------------------------------------------------------------------------
// The README's tables
// ---------------------------------------------------------------------------------------------

/// One binlog item: logic id, start, end, content_len, master exec_time, command.
type ItemRow = (u64, u64, u64, u32, u32, &'static str);

/// "Master binlog session1-master-binlog-write2file0.bin" table (lids 1–49).
const SESSION1_ITEMS: [ItemRow; 49] = [
    (1, 0, 95, 53, 1795469984, "pksetexat k1 1795469994 100"),
    (2, 95, 159, 22, 1795469985, "INCR k1"),
    (3, 159, 255, 54, 1795469986, "SET s1 abc EX 30 NX"),
    (4, 255, 328, 31, 1795469987, "APPEND k1 x"),
    (5, 328, 406, 36, 1795469988, "HSET h1 f v"),
    (6, 406, 491, 43, 1795469989, "expireat h1 1795470009"),
    (7, 491, 572, 39, 1795469990, "HINCRBY h1 n 5"),
    (8, 572, 644, 30, 1795469991, "LPUSH l1 a"),
    (9, 644, 729, 43, 1795469992, "expireat l1 1795470007"),
    (10, 729, 800, 29, 1795469993, "SADD s2 m"),
    (11, 800, 878, 36, 1795469994, "ZADD z1 1 m"),
    (12, 878, 973, 53, 1795470051, "pksetexat k3 1795470054 100"),
    (13, 973, 1051, 36, 1795470051, "HSET h3 f v"),
    (14, 1051, 1136, 43, 1795470051, "expireat h3 1795470054"),
    (15, 1136, 1229, 51, 1795470051, "pksetexat k5 1795470054 7"),
    (16, 1229, 1293, 22, 1795470052, "INCR k3"),
    (17, 1293, 1374, 39, 1795470052, "HINCRBY h3 n 1"),
    (18, 1374, 1447, 31, 1795470052, "APPEND k5 x"),
    (19, 1447, 1542, 53, 1795470052, "SET s3 abc EX 4 NX"),
    (20, 1542, 1622, 38, 1795470088, "SET during_down 1"),
    (21, 1622, 1687, 23, 1795470088, "INCR ctr"),
    (22, 1687, 1780, 51, 1795470117, "pksetexat a1 1795470147 v"),
    (23, 1780, 1873, 51, 1795470117, "pksetexat a2 1795470147 v"),
    (24, 1873, 1967, 52, 1795470117, "SET a3 v XX EX 30"),
    (25, 1967, 2061, 52, 1795470117, "SET a1 w XX EX 30"),
    (26, 2061, 2139, 36, 1795470117, "SET a4 v NX"),
    (27, 2139, 2232, 51, 1795470117, "pksetexat a5 1795470132 v"),
    (28, 2232, 2304, 30, 1795470117, "setnx a6 v"),
    (29, 2304, 2376, 30, 1795470117, "setnx a6 w"),
    (30, 2376, 2461, 43, 1795470117, "EXPIREAT a6 2000000000"),
    (31, 2461, 2546, 43, 1795470117, "expireat a6 2000000000"),
    (32, 2546, 2613, 25, 1795470117, "PERSIST a6"),
    (33, 2613, 2686, 31, 1795470117, "INCRBY a7 3"),
    (34, 2686, 2767, 39, 1795470117, "INCRBYFLOAT a7 1.5"),
    (35, 2767, 2831, 22, 1795470117, "DECR a8"),
    (36, 2831, 2904, 31, 1795470117, "GETSET a8 9"),
    (37, 2904, 2987, 41, 1795470117, "SETRANGE a8 2 zz"),
    (38, 2987, 3057, 28, 1795470117, "set m1 1"),
    (39, 3057, 3127, 28, 1795470117, "set m2 2"),
    (40, 3127, 3190, 21, 1795470117, "DEL m1"),
    (41, 3190, 3253, 21, 1795470117, "DEL m2"),
    (42, 3253, 3320, 25, 1795470117, "DEL nosuch"),
    (43, 3320, 3413, 51, 1795470117, "HMSET h9 a 1 b 2"),
    (44, 3413, 3493, 38, 1795470117, "HSETNX h9 c 3"),
    (45, 3493, 3582, 47, 1795470117, "HINCRBYFLOAT h9 a 0.5"),
    (46, 3582, 3661, 37, 1795470117, "RPUSH l9 x y"),
    (47, 3661, 3732, 29, 1795470117, "SREM s2 m"),
    (48, 3732, 3813, 39, 1795470117, "ZINCRBY z1 2 m"),
    (49, 3813, 3898, 43, 1795470117, "expireat a7 1795470217"),
];

/// Session 2's two items.
const SESSION2_ITEMS: [ItemRow; 2] = [
    (1, 0, 93, 51, 1795470174, "pksetexat t1 1795470224 1"),
    (2, 93, 157, 22, 1795470174, "incr t1"),
];

fn items_of(file: &str) -> &'static [ItemRow] {
    if file.starts_with("session2") {
        &SESSION2_ITEMS
    } else {
        &SESSION1_ITEMS
    }
}

fn row(table: &[ItemRow], lid: u64) -> ItemRow {
    *table.iter().find(|r| r.0 == lid).unwrap()
}

/// What a replica→master frame is, per the README listings.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Up {
    MetaSync,
    DbSync(BinlogPosition),
    TrySync(BinlogPosition),
    FirstSend {
        at: BinlogPosition,
        session: i32,
    },
    Ping {
        session: i32,
    },
    Ack {
        start: LogicalOffset,
        end: LogicalOffset,
        session: i32,
    },
}

/// What a master→replica frame is, per the README listings.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Down {
    MetaSync,
    DbSync {
        session: i32,
    },
    TrySyncOk {
        offset: BinlogPosition,
        session: i32,
    },
    Keepalive {
        session: i32,
    },
    Items {
        session: i32,
        lids: Vec<u64>,
    },
}

fn pos(offset: u64) -> BinlogPosition {
    BinlogPosition::new(0, offset)
}

fn ack(table: &[ItemRow], first: u64, last: u64, session: i32) -> Up {
    let logical = |lid| LogicalOffset {
        filenum: 0,
        offset: row(table, lid).2,
        term: 0,
        index: lid,
    };
    Up::Ack {
        start: logical(first),
        end: logical(last),
        session,
    }
}

/// `count` frames of `body_len` bytes starting at `at`.
fn run<T: Clone>(what: T, count: usize, at: usize, body_len: usize) -> Vec<(T, usize, usize)> {
    (0..count)
        .map(|i| (what.clone(), at + i * (body_len + 4), body_len))
        .collect()
}

fn one<T>(what: T, at: usize, body_len: usize) -> Vec<(T, usize, usize)> {
    vec![(what, at, body_len)]
}

fn expected_up(file: &str) -> Vec<(Up, usize, usize)> {
    let t = items_of(file);
    let single_acks = |lids: std::ops::RangeInclusive<u64>, ats: &[(usize, usize)]| {
        lids.zip(ats)
            .map(|(lid, &(at, len))| (ack(t, lid, lid, 0), at, len))
            .collect::<Vec<_>>()
    };
    match file {
        REPL1_UP => [
            one(Up::MetaSync, 0, 21),
            one(Up::DbSync(pos(0)), 25, 36),
            one(Up::TrySync(pos(0)), 65, 36),
            one(
                Up::FirstSend {
                    at: pos(0),
                    session: 0,
                },
                105,
                52,
            ),
            run(Up::Ping { session: 0 }, 8, 161, 52),
            single_acks(
                1..=11,
                &[
                    (609, 52),
                    (665, 54),
                    (723, 54),
                    (781, 54),
                    (839, 54),
                    (897, 54),
                    (955, 54),
                    (1013, 54),
                    (1071, 54),
                    (1129, 54),
                    (1187, 54),
                ],
            ),
            run(Up::Ping { session: 0 }, 28, 1245, 52),
            one(ack(t, 12, 12, 0), 2813, 54),
            one(ack(t, 13, 13, 0), 2871, 54),
            one(ack(t, 14, 15, 0), 2929, 54),
            one(ack(t, 16, 16, 0), 2987, 54),
            one(ack(t, 17, 19, 0), 3045, 54),
            run(Up::Ping { session: 0 }, 10, 3103, 52),
        ]
        .concat(),
        REPL2_UP => [
            one(Up::MetaSync, 0, 21),
            one(Up::TrySync(pos(1542)), 25, 37),
            one(
                Up::FirstSend {
                    at: pos(1542),
                    session: 1,
                },
                66,
                54,
            ),
            one(ack(t, 20, 21, 1), 124, 54),
            run(Up::Ping { session: 1 }, 14, 182, 52),
            one(ack(t, 22, 22, 1), 966, 54),
            one(ack(t, 23, 23, 1), 1024, 54),
            one(ack(t, 24, 26, 1), 1082, 54),
            one(ack(t, 27, 29, 1), 1140, 54),
            one(ack(t, 30, 33, 1), 1198, 54),
            one(ack(t, 34, 37, 1), 1256, 54),
            one(ack(t, 38, 43, 1), 1314, 54),
            one(ack(t, 44, 47, 1), 1372, 54),
            one(ack(t, 48, 49, 1), 1430, 54),
            run(Up::Ping { session: 1 }, 7, 1488, 52),
        ]
        .concat(),
        SESSION2_UP => [
            one(Up::MetaSync, 0, 21),
            one(Up::DbSync(pos(0)), 25, 36),
            one(Up::TrySync(pos(0)), 65, 36),
            one(
                Up::FirstSend {
                    at: pos(0),
                    session: 0,
                },
                105,
                52,
            ),
            one(Up::Ping { session: 0 }, 161, 52),
            one(ack(t, 1, 1, 0), 217, 52),
            one(ack(t, 2, 2, 0), 273, 54),
        ]
        .concat(),
        other => panic!("no table for {other}"),
    }
}

fn items(session: i32, lids: std::ops::RangeInclusive<u64>) -> Down {
    Down::Items {
        session,
        lids: lids.collect(),
    }
}

fn expected_down(file: &str) -> Vec<(Down, usize, usize)> {
    match file {
        REPL1_DOWN => {
            let singles: Vec<_> = (1..=11)
                .zip([
                    (429, 116),
                    (549, 86),
                    (639, 118),
                    (761, 95),
                    (860, 100),
                    (964, 107),
                    (1075, 103),
                    (1182, 94),
                    (1280, 107),
                    (1391, 93),
                    (1488, 100),
                ])
                .map(|(lid, (at, len))| (items(0, lid..=lid), at, len))
                .collect();
            [
                one(Down::MetaSync, 0, 111),
                one(Down::DbSync { session: 0 }, 115, 17),
                one(
                    Down::TrySyncOk {
                        offset: pos(0),
                        session: 0,
                    },
                    136,
                    25,
                ),
                run(Down::Keepalive { session: 0 }, 8, 165, 29),
                singles,
                run(Down::Keepalive { session: 0 }, 28, 1592, 29),
                one(items(0, 12..=12), 2516, 117),
                one(items(0, 13..=13), 2637, 100),
                one(items(0, 14..=15), 2741, 218),
                one(items(0, 16..=16), 2963, 86),
                one(items(0, 17..=19), 3053, 307),
                run(Down::Keepalive { session: 0 }, 13, 3364, 29),
            ]
            .concat()
        }
        REPL2_DOWN => [
            one(Down::MetaSync, 0, 111),
            one(
                Down::TrySyncOk {
                    offset: pos(1687),
                    session: 1,
                },
                115,
                26,
            ),
            one(items(1, 20..=21), 145, 185),
            run(Down::Keepalive { session: 1 }, 14, 334, 29),
            one(items(1, 22..=22), 796, 115),
            one(items(1, 23..=23), 915, 115),
            one(items(1, 24..=26), 1034, 324),
            one(items(1, 27..=29), 1362, 295),
            one(items(1, 30..=33), 1661, 386),
            one(items(1, 34..=37), 2051, 377),
            one(items(1, 38..=43), 2432, 538),
            one(items(1, 44..=47), 2974, 395),
            one(items(1, 48..=49), 3373, 206),
            run(Down::Keepalive { session: 1 }, 10, 3583, 29),
        ]
        .concat(),
        SESSION2_DOWN => [
            one(Down::MetaSync, 0, 111),
            one(Down::DbSync { session: 0 }, 115, 17),
            one(
                Down::TrySyncOk {
                    offset: pos(0),
                    session: 0,
                },
                136,
                25,
            ),
            one(Down::Keepalive { session: 0 }, 165, 29),
            one(items(0, 1..=1), 198, 114),
            one(items(0, 2..=2), 316, 86),
            run(Down::Keepalive { session: 0 }, 4, 406, 29),
        ]
        .concat(),
        other => panic!("no table for {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Classifying decoded frames
// ---------------------------------------------------------------------------------------------

const REPLICA_IP: &[u8] = b"127.0.0.1";
const REPLICA_PORT: i32 = 19231;

fn assert_short_offset(offset: &BinlogOffset) {
    assert_eq!((offset.term, offset.index), (None, None), "{offset:?}");
}

fn assert_full_offset(offset: &BinlogOffset) {
    assert!(
        offset.term.is_some() && offset.index.is_some(),
        "{offset:?}"
    );
}

fn classify_up(body: &[u8]) -> Up {
    let req = InnerRequest::parse(body).unwrap();
    match req.msg_type {
        MessageType::MetaSync => {
            let meta = req.meta_sync().unwrap().unwrap();
            assert_eq!(
                meta.node,
                Node {
                    ip: REPLICA_IP,
                    port: REPLICA_PORT
                }
            );
            assert_eq!(meta.auth, None);
            Up::MetaSync
        }
        MessageType::DbSync => {
            let sync = req.db_sync().unwrap().unwrap();
            assert_eq!(sync.node.ip, REPLICA_IP);
            assert_eq!(
                sync.slot,
                Slot {
                    db_name: b"db0",
                    slot_id: 0
                }
            );
            assert_short_offset(&sync.binlog_offset);
            Up::DbSync(sync.binlog_offset.position())
        }
        MessageType::TrySync => {
            let sync = req.try_sync().unwrap().unwrap();
            assert_eq!(sync.node.port, REPLICA_PORT);
            assert_eq!(
                sync.slot,
                Slot {
                    db_name: b"db0",
                    slot_id: 0
                }
            );
            assert_short_offset(&sync.binlog_offset);
            Up::TrySync(sync.binlog_offset.position())
        }
        MessageType::BinlogSync => {
            let sync = req.binlog_sync().unwrap().unwrap();
            assert_eq!(
                sync.node,
                Node {
                    ip: REPLICA_IP,
                    port: REPLICA_PORT
                }
            );
            assert_eq!((sync.db_name, sync.slot_id), (&b"db0"[..], 0));
            assert_full_offset(&sync.ack_range_start);
            assert_full_offset(&sync.ack_range_end);
            if sync.first_send {
                assert_eq!(sync.ack_range_start, sync.ack_range_end);
                assert_eq!(sync.ack_range_start.logical().index, 0);
                Up::FirstSend {
                    at: sync.ack_range_start.position(),
                    session: sync.session_id,
                }
            } else if sync.is_ping() {
                assert_eq!(sync.ack_range_start.logical(), LogicalOffset::default());
                assert_eq!(sync.ack_range_end.logical(), LogicalOffset::default());
                Up::Ping {
                    session: sync.session_id,
                }
            } else {
                Up::Ack {
                    start: sync.ack_range_start.logical(),
                    end: sync.ack_range_end.logical(),
                    session: sync.session_id,
                }
            }
        }
        other => panic!("unexpected request type {other:?}"),
    }
}

/// Classifies a response and checks every item against the README's item table and its
/// invariants.
fn classify_down(body: &[u8], table: &[ItemRow]) -> Down {
    let resp = InnerResponse::parse(body).unwrap();
    assert_eq!(resp.code, StatusCode::Ok);
    assert_eq!(resp.reply, None);
    match resp.msg_type {
        MessageType::MetaSync => {
            resp.meta_sync().unwrap().unwrap();
            Down::MetaSync
        }
        MessageType::DbSync => {
            let sync = resp.db_sync().unwrap().unwrap();
            assert_eq!(
                sync.slot,
                Slot {
                    db_name: b"db0",
                    slot_id: 0
                }
            );
            Down::DbSync {
                session: sync.session_id,
            }
        }
        MessageType::TrySync => {
            let sync = resp.try_sync().unwrap().unwrap();
            assert_eq!(sync.reply_code, TrySyncReplyCode::Ok);
            assert_eq!(
                sync.slot,
                Slot {
                    db_name: b"db0",
                    slot_id: 0
                }
            );
            let offset = sync.binlog_offset.unwrap();
            assert_short_offset(&offset);
            Down::TrySyncOk {
                offset: offset.position(),
                session: sync.session_id.unwrap(),
            }
        }
        MessageType::BinlogSync => {
            let entries: Vec<_> = resp.binlog_sync_entries().map(Result::unwrap).collect();
            assert_eq!(entries.len(), resp.binlog_sync_count());
            let session = entries[0].session_id;
            for e in &entries {
                assert_eq!(e.session_id, session);
                assert_eq!(
                    e.slot,
                    Slot {
                        db_name: b"db0",
                        slot_id: 0
                    }
                );
                assert_full_offset(&e.binlog_offset);
            }
            if resp.is_keepalive().unwrap() {
                assert_eq!(entries.len(), 1);
                assert_eq!(entries[0].binlog_offset.logical(), LogicalOffset::default());
                return Down::Keepalive { session };
            }
            let mut lids = Vec::new();
            for e in &entries {
                assert!(!e.is_keepalive());
                let item = e.item().unwrap();
                let h = item.header;
                let (lid, start, end, content_len, exec_time, command) = row(table, h.logic_id);
                assert_eq!(h.item_type, 1);
                assert_eq!(h.term_id, 0);
                assert_eq!((h.filenum, h.offset), (0, start));
                assert_eq!(h.content_len, content_len);
                assert_eq!(h.content_len as usize, e.binlog.len() - ITEM_HEADER_LEN);
                assert_eq!(h.exec_time, exec_time);
                assert_eq!(
                    e.binlog_offset.logical(),
                    LogicalOffset {
                        filenum: 0,
                        offset: end,
                        term: 0,
                        index: lid
                    }
                );
                assert_eq!(h.offset + 8 + 34 + u64::from(h.content_len), end);
                assert_eq!(resp_command(item.content), command);
                lids.push(lid);
            }
            Down::Items { session, lids }
        }
        other => panic!("unexpected response type {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Framing and the per-frame listings
// ---------------------------------------------------------------------------------------------

#[test]
fn frame_counts_match_the_readme() {
    let counts: Vec<(&str, usize)> = [
        REPL1_UP,
        REPL1_DOWN,
        REPL2_UP,
        REPL2_DOWN,
        RSYNC_UP,
        RSYNC_DOWN,
        SESSION2_UP,
        SESSION2_DOWN,
    ]
    .iter()
    .map(|f| (*f, frames(f).len()))
    .collect();
    assert_eq!(
        counts,
        vec![
            (REPL1_UP, 66),
            (REPL1_DOWN, 68),
            (REPL2_UP, 34),
            (REPL2_DOWN, 36),
            (RSYNC_UP, 17),
            (RSYNC_DOWN, 17),
            (SESSION2_UP, 7),
            (SESSION2_DOWN, 10),
        ]
    );
}

#[test]
fn streaming_decode_in_small_chunks_matches_whole_file_decode() {
    for file in REPL_FILES.iter().chain(&[RSYNC_UP, RSYNC_DOWN]) {
        let data = load(file);
        let mut codec = FrameCodec::new();
        let mut buf = bytes::BytesMut::new();
        let mut streamed = Vec::new();
        for chunk in data.chunks(7) {
            buf.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                streamed.push(frame);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(streamed, bodies(file), "{file}");
    }
}

#[test]
fn replica_to_master_frames_match_the_listings() {
    for file in UP_FILES {
        let actual: Vec<(Up, usize, usize)> = frames(file)
            .iter()
            .map(|(at, body)| (classify_up(body), *at, body.len()))
            .collect();
        assert_eq!(actual, expected_up(file), "{file}");
    }
}

#[test]
fn master_to_replica_frames_match_the_listings() {
    for file in DOWN_FILES {
        let table = items_of(file);
        let actual: Vec<(Down, usize, usize)> = frames(file)
            .iter()
            .map(|(at, body)| (classify_down(body, table), *at, body.len()))
            .collect();
        assert_eq!(actual, expected_down(file), "{file}");
    }
}

#[test]
fn stream_items_cover_lids_1_to_49_once_and_keepalive_counts_match() {
    let mut lids = Vec::new();
    let mut keepalives = Vec::new();
    for file in [REPL1_DOWN, REPL2_DOWN] {
        let mut count = 0;
        for (_, body) in frames(file) {
            match classify_down(&body, &SESSION1_ITEMS) {
                Down::Items { lids: l, .. } => lids.extend(l),
                Down::Keepalive { .. } => count += 1,
                _ => {}
            }
        }
        keepalives.push(count);
    }
    assert_eq!(lids, (1..=49).collect::<Vec<u64>>());
    assert_eq!(keepalives, vec![49, 24]);
}

#[test]
fn meta_sync_responses_carry_the_documented_ids() {
    for (file, run_id, replication_id) in [
        (
            REPL1_DOWN,
            "03aa13b8ae89cfb89b06420c6c642ab4bb45876e",
            "5edf6bdb40a52bc6e531482d1995096ed58a17eb857920301b",
        ),
        (
            REPL2_DOWN,
            "03aa13b8ae89cfb89b06420c6c642ab4bb45876e",
            "5edf6bdb40a52bc6e531482d1995096ed58a17eb857920301b",
        ),
        (
            SESSION2_DOWN,
            "c9f64eef338fc710f0f82b2d70724b2c1a545aac",
            "a4a59027c9dd0be495505da79ac6bc0b1dc2719194c298b4b0",
        ),
    ] {
        let body = &bodies(file)[0];
        let meta = InnerResponse::parse(body)
            .unwrap()
            .meta_sync()
            .unwrap()
            .unwrap();
        assert!(meta.classic_mode);
        assert_eq!(meta.dbs_info.len(), 1);
        assert_eq!(meta.dbs_info[0].db_name, b"db0");
        assert_eq!(meta.dbs_info[0].slot_num, 1);
        assert_eq!(meta.dbs_info[0].db_instance_num, None);
        assert_eq!(meta.run_id, Some(run_id.as_bytes()));
        assert_eq!(meta.replication_id, Some(replication_id.as_bytes()));
    }
}

#[test]
fn every_item_response_is_acked_by_first_and_last_offset() {
    for (up, down, expected_acks, expected_pings) in [
        (REPL1_UP, REPL1_DOWN, 16, 46),
        (REPL2_UP, REPL2_DOWN, 10, 21),
        (SESSION2_UP, SESSION2_DOWN, 2, 1),
    ] {
        let table = items_of(down);
        let acks: Vec<(LogicalOffset, LogicalOffset)> = bodies(up)
            .iter()
            .filter_map(|b| match classify_up(b) {
                Up::Ack { start, end, .. } => Some((start, end)),
                _ => None,
            })
            .collect();
        let pings = bodies(up)
            .iter()
            .filter(|b| matches!(classify_up(b), Up::Ping { .. }))
            .count();
        let responses: Vec<(LogicalOffset, LogicalOffset)> = bodies(down)
            .iter()
            .filter(|b| matches!(classify_down(b, table), Down::Items { .. }))
            .map(|b| {
                let resp = InnerResponse::parse(b).unwrap();
                let offsets: Vec<LogicalOffset> = resp
                    .binlog_sync_entries()
                    .map(|e| e.unwrap().binlog_offset.logical())
                    .collect();
                (offsets[0], offsets[offsets.len() - 1])
            })
            .collect();
        assert_eq!(acks.len(), expected_acks, "{up}");
        assert_eq!(acks, responses, "{up}");
        assert_eq!(pings, expected_pings, "{up}");
    }
}

#[test]
fn reconnect_try_sync_offset_is_the_end_of_the_last_item_received() {
    let last_on_repl1 = bodies(REPL1_DOWN)
        .iter()
        .filter_map(|b| {
            let resp = InnerResponse::parse(b).unwrap();
            resp.binlog_sync_entries()
                .map(Result::unwrap)
                .filter(|e| !e.is_keepalive())
                .last()
                .map(|e| e.binlog_offset.position())
        })
        .last()
        .unwrap();
    assert_eq!(
        classify_up(&bodies(REPL2_UP)[1]),
        Up::TrySync(last_on_repl1)
    );
    assert_eq!(last_on_repl1, pos(1542));
}

#[test]
fn readme_hex_frames_decode_as_documented() {
    let expect_prefix = |file: &str, at: usize, hex_frame: &str| {
        let data = load(file);
        let want = hex(hex_frame);
        assert_eq!(&data[at..at + want.len()], &want[..], "{file}@{at}");
    };
    expect_prefix(
        REPL1_UP,
        0,
        "00000015 080112110a0f0a093132372e302e302e31109f9601",
    );
    expect_prefix(
        REPL1_DOWN,
        115,
        "00000011 080310012a0b0a070a0364623010001000",
    );
    expect_prefix(
        REPL1_DOWN,
        549,
        "00000056 080410013a500a070a03646230100012090800109f01180020021a38
         0100 a1b2046b 00000000 0200000000000000 00000000 5f00000000000000 16000000
         2a320d0a24340d0a494e43520d0a24320d0a6b310d0a 2000",
    );
    expect_prefix(
        REPL2_DOWN,
        115,
        "0000001a 080210013214080112070a0364623010001a05080010970d2001",
    );
}

// ---------------------------------------------------------------------------------------------
// Byte identity and edits
// ---------------------------------------------------------------------------------------------

fn all_fixture_bodies() -> &'static [(&'static str, Bytes)] {
    static ALL: OnceLock<Vec<(&'static str, Bytes)>> = OnceLock::new();
    ALL.get_or_init(|| {
        REPL_FILES
            .iter()
            .chain(&[RSYNC_UP, RSYNC_DOWN])
            .flat_map(|f| bodies(f).into_iter().map(move |b| (*f, b)))
            .collect()
    })
}

/// `body` with the `binlog` of entry `i` replaced by `binlogs[i]` (`None` keeps it), through the
/// relay's splicer.
fn splice_binlogs(body: &[u8], binlogs: &[Option<&[u8]>]) -> Vec<u8> {
    let response = InnerResponse::parse(body).unwrap();
    let mut records = response.binlog_sync_entries();
    let mut splice = BinlogSyncSplice::new(body);
    for binlog in binlogs {
        let record = records.next_record().unwrap().unwrap();
        if let Some(binlog) = binlog {
            splice.replace_binlog(&record, binlog).unwrap();
        }
    }
    splice.finish().unwrap_or_else(|| body.to_vec())
}

#[test]
fn every_frame_re_encodes_byte_identically() {
    let codec = FrameCodec::new();
    for file in REPL_FILES.iter().chain(&[RSYNC_UP, RSYNC_DOWN]) {
        let mut rewritten = Vec::new();
        for body in bodies(file) {
            let fields = parse_message(&body).unwrap();
            let concatenated: Vec<u8> = fields.iter().flat_map(|f| f.record().to_vec()).collect();
            assert_eq!(concatenated, &body[..]);
            let editor = MessageEditor::new(&body).unwrap();
            let out = editor.to_vec();
            assert_eq!(out, &body[..]);
            rewritten.extend_from_slice(&codec.encode_to_bytes(&out).unwrap());
        }
        assert_eq!(rewritten, load(file), "{file}");
    }
}

#[test]
fn editing_fields_to_their_current_values_is_byte_identical() {
    for file in UP_FILES {
        for body in bodies(file) {
            let req = InnerRequest::parse(&body).unwrap();
            if let Some(sync) = req.binlog_sync().unwrap() {
                let same = replace_ack_range(
                    &body,
                    Some(sync.ack_range_start.logical()),
                    Some(sync.ack_range_end.logical()),
                )
                .unwrap();
                assert_eq!(same, &body[..]);
            }
            if let Some(sync) = req.try_sync().unwrap() {
                let same = replace_try_sync_offset(&body, sync.binlog_offset.position()).unwrap();
                assert_eq!(same, &body[..]);
            }
        }
    }
    for file in DOWN_FILES {
        for body in bodies(file) {
            let resp = InnerResponse::parse(&body).unwrap();
            let binlogs: Vec<Option<&[u8]>> = resp
                .binlog_sync_entries()
                .map(|e| Some(e.unwrap().binlog))
                .collect();
            assert_eq!(splice_binlogs(&body, &binlogs), &body[..]);
        }
    }
}

#[test]
fn ack_range_edits_round_trip() {
    let body = &bodies(REPL1_UP)[53]; // start=0/1136 i14, end=0/1229 i15
    let new_end = LogicalOffset {
        filenum: 1,
        offset: 300_000,
        term: 2,
        index: 77,
    };
    let edited = replace_ack_range_end(body, new_end).unwrap();
    let before = InnerRequest::parse(body)
        .unwrap()
        .binlog_sync()
        .unwrap()
        .unwrap();
    let after = InnerRequest::parse(&edited)
        .unwrap()
        .binlog_sync()
        .unwrap()
        .unwrap();
    assert_eq!(after.ack_range_end.logical(), new_end);
    assert_eq!(after.ack_range_start, before.ack_range_start);
    assert_eq!(
        (
            after.node,
            after.db_name,
            after.slot_id,
            after.session_id,
            after.first_send
        ),
        (
            before.node,
            before.db_name,
            before.slot_id,
            before.session_id,
            before.first_send
        )
    );
    // 300000 takes 3 varint bytes instead of 2, filenum/term/index 1 byte each as before.
    assert_eq!(edited.len(), body.len() + 1);

    let new_start = LogicalOffset {
        filenum: 0,
        offset: 5,
        term: 0,
        index: 1,
    };
    let edited2 = replace_ack_range(&edited, Some(new_start), None).unwrap();
    let after2 = InnerRequest::parse(&edited2)
        .unwrap()
        .binlog_sync()
        .unwrap()
        .unwrap();
    assert_eq!(after2.ack_range_start.logical(), new_start);
    assert_eq!(after2.ack_range_end.logical(), new_end);
    // Editing back restores the original bytes exactly.
    let restored = replace_ack_range(
        &edited2,
        Some(before.ack_range_start.logical()),
        Some(before.ack_range_end.logical()),
    )
    .unwrap();
    assert_eq!(restored, &body[..]);
}

#[test]
fn try_sync_offset_edit_round_trips() {
    let body = &bodies(REPL2_UP)[1]; // TrySync (0,1542)
    let edited = replace_try_sync_offset(body, BinlogPosition::new(2, 99)).unwrap();
    let sync = InnerRequest::parse(&edited)
        .unwrap()
        .try_sync()
        .unwrap()
        .unwrap();
    assert_eq!(
        sync.binlog_offset,
        BinlogOffset {
            filenum: 2,
            offset: 99,
            term: None,
            index: None
        }
    );
    assert_eq!(
        sync.node,
        Node {
            ip: REPLICA_IP,
            port: REPLICA_PORT
        }
    );
    assert_eq!(
        replace_try_sync_offset(&edited, pos(1542)).unwrap(),
        &body[..]
    );
}

#[test]
fn binlog_replacement_rebuilds_entries_and_round_trips() {
    let body = &bodies(REPL2_DOWN)[23]; // 6 items, lids 38–43
    let resp = InnerResponse::parse(body).unwrap();
    let entries: Vec<_> = resp.binlog_sync_entries().map(Result::unwrap).collect();
    let original_item = entries[1].item().unwrap(); // set m2 2
    let new_content = b"*4\r\n$9\r\npksetexat\r\n$2\r\nm2\r\n$10\r\n1795470999\r\n$1\r\n2\r\n";
    let new_item = original_item.with_content(new_content).unwrap();
    let shorter = entries[4].item().unwrap().with_content(b"").unwrap();
    let edited = splice_binlogs(body, &[None, Some(&new_item), None, None, Some(&shorter)]);

    let after = InnerResponse::parse(&edited).unwrap();
    assert_eq!((after.msg_type, after.code), (resp.msg_type, resp.code));
    let after_entries: Vec<_> = after.binlog_sync_entries().map(Result::unwrap).collect();
    assert_eq!(after_entries.len(), 6);
    for (i, (a, b)) in after_entries.iter().zip(&entries).enumerate() {
        assert_eq!(a.slot, b.slot);
        assert_eq!(a.binlog_offset, b.binlog_offset);
        assert_eq!(a.session_id, b.session_id);
        match i {
            1 => {
                let item = a.item().unwrap();
                assert_eq!(item.content, new_content);
                assert_eq!(
                    item.header,
                    ItemHeader {
                        content_len: new_content.len() as u32,
                        ..original_item.header
                    }
                );
                assert_eq!(resp_command(item.content), "pksetexat m2 1795470999 2");
            }
            4 => assert_eq!(a.item().unwrap().content, b""),
            _ => assert_eq!(a.binlog, b.binlog),
        }
    }
    // Putting the original items back restores the original frame.
    let originals: Vec<Option<&[u8]>> = entries.iter().map(|e| Some(e.binlog)).collect();
    assert_eq!(splice_binlogs(&edited, &originals), &body[..]);
}

// ---------------------------------------------------------------------------------------------
// Unknown fields
// ---------------------------------------------------------------------------------------------

fn find<'a>(fields: &[Field<'a>], number: u32) -> Vec<Field<'a>> {
    fields
        .iter()
        .filter(|f| f.number() == number)
        .copied()
        .collect()
}

fn sub_fields(body: &[u8], path: &[u32]) -> Vec<(u32, Vec<u8>)> {
    let mut current = body.to_vec();
    for &number in path {
        let fields = parse_message(&current).unwrap();
        let field = *find(&fields, number).last().unwrap();
        current = field.bytes().unwrap().to_vec();
    }
    parse_message(&current)
        .unwrap()
        .iter()
        .map(|f| (f.number(), f.record().to_vec()))
        .collect()
}

#[test]
fn ack_edit_keeps_unknown_fields_at_every_level() {
    let body = bodies(REPL1_UP)[53].to_vec();
    // Add field 99 at the top, inside binlog_sync, and inside ack_range_end (a future field).
    let mut editor = MessageEditor::new(&body).unwrap();
    editor.set_varint(99, 5);
    editor
        .edit_message::<ProtoError, _>(5, |sync| {
            sync.set_bytes(99, b"future");
            sync.edit_message(5, |end| {
                end.set_varint(5, 42);
                Ok(())
            })
        })
        .unwrap();
    let extended = editor.to_vec();
    assert_ne!(extended, body);
    // Pika would still parse it: the typed view ignores the unknown fields.
    let sync = InnerRequest::parse(&extended)
        .unwrap()
        .binlog_sync()
        .unwrap()
        .unwrap();
    assert_eq!(sync.ack_range_end.position(), pos(1229));

    let new_end = LogicalOffset {
        filenum: 0,
        offset: 4000,
        term: 0,
        index: 60,
    };
    let edited = replace_ack_range_end(&extended, new_end).unwrap();
    let top = sub_fields(&edited, &[]);
    assert_eq!(top.last().unwrap(), &(99, vec![0x98, 0x06, 0x05]));
    let inside = sub_fields(&edited, &[5]);
    assert!(inside.contains(&(99, [&[0x9a, 0x06, 6][..], b"future"].concat())));
    let end = sub_fields(&edited, &[5, 5]);
    assert_eq!(
        end.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(end[4].1, vec![0x28, 42]);
    let sync = InnerRequest::parse(&edited)
        .unwrap()
        .binlog_sync()
        .unwrap()
        .unwrap();
    assert_eq!(sync.ack_range_end.logical(), new_end);
}

#[test]
fn try_sync_edit_keeps_a_2025_committed_id() {
    let body = bodies(REPL2_UP)[1].to_vec();
    // committed_id (field 4 of TrySync, 2025+) = {0, 1542, 0, 19}
    let committed: Vec<u8> = hex("0800 10860c 1800 2013");
    let mut editor = MessageEditor::new(&body).unwrap();
    editor
        .edit_message::<ProtoError, _>(3, |sync| {
            sync.set_bytes(4, &committed);
            Ok(())
        })
        .unwrap();
    let extended = editor.to_vec();
    let edited = replace_try_sync_offset(&extended, BinlogPosition::new(0, 95)).unwrap();
    let inside = sub_fields(&edited, &[3]);
    assert_eq!(
        inside.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        inside[3].1,
        [&[0x22, committed.len() as u8][..], &committed].concat()
    );
    let sync = InnerRequest::parse(&edited)
        .unwrap()
        .try_sync()
        .unwrap()
        .unwrap();
    assert_eq!(sync.binlog_offset.position(), pos(95));
}

/// A `committed_id` record (field 5 of a BinlogSync entry, 2025+): {0, 1671, 0, 21}.
const COMMITTED_ID: &str = "2a 09 0800 10870d 1800 2015";

#[test]
fn binlog_edit_keeps_unknown_fields_of_entries_and_message() {
    let body = bodies(REPL2_DOWN)[2].to_vec(); // lids 20, 21
                                               // Give each entry a committed_id (field 5, 2025+) and the message a field 99.
    let fields = parse_message(&body).unwrap();
    let mut extended = Vec::new();
    for f in &fields {
        if f.number() == 7 {
            let mut entry = f.bytes().unwrap().to_vec();
            entry.extend_from_slice(&hex(COMMITTED_ID)); // {0, 1671, 0, 21}
            put_len_field(&mut extended, 7, &entry);
        } else {
            extended.extend_from_slice(f.record());
        }
    }
    extended.extend_from_slice(&hex("9806 07"));
    let resp = InnerResponse::parse(&extended).unwrap();
    let entries: Vec<_> = resp.binlog_sync_entries().map(Result::unwrap).collect();
    assert_eq!(entries.len(), 2);

    let new_item = entries[0]
        .item()
        .unwrap()
        .with_content(b"*1\r\n$4\r\nPING\r\n")
        .unwrap();
    let edited = splice_binlogs(&extended, &[Some(&new_item)]);
    let top = parse_message(&edited).unwrap();
    assert_eq!(top.last().unwrap().record(), &hex("9806 07")[..]);
    for entry in find(&top, 7) {
        let inner = parse_message(entry.bytes().unwrap()).unwrap();
        assert_eq!(
            inner.iter().map(Field::number).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(inner[4].record(), &hex(COMMITTED_ID)[..]);
    }
    let after: Vec<_> = InnerResponse::parse(&edited)
        .unwrap()
        .binlog_sync_entries()
        .map(Result::unwrap)
        .collect();
    assert_eq!(after[0].binlog, &new_item[..]);
    assert_eq!(after[1], entries[1]);
}

// ---------------------------------------------------------------------------------------------
// Builders reproduce Pika's bytes
// ---------------------------------------------------------------------------------------------

#[test]
fn keepalive_ack_and_response_builders_match_real_frames() {
    let node = Node {
        ip: REPLICA_IP,
        port: REPLICA_PORT,
    };
    for (up, down, session, ping_at, keepalive_at) in [
        (REPL1_UP, REPL1_DOWN, 0, 4, 3),
        (REPL2_UP, REPL2_DOWN, 1, 4, 3),
    ] {
        let up_bodies = bodies(up);
        assert_eq!(
            build_keepalive_ack(node, b"db0", 0, session),
            &up_bodies[ping_at][..]
        );
        let previous = InnerRequest::parse(&up_bodies[ping_at + 1])
            .unwrap()
            .binlog_sync()
            .unwrap()
            .unwrap();
        assert_eq!(previous.keepalive_ack(), &up_bodies[ping_at][..]);
        assert_eq!(
            build_keepalive_response(
                Slot {
                    db_name: b"db0",
                    slot_id: 0
                },
                session
            ),
            &bodies(down)[keepalive_at][..]
        );
    }
}

#[test]
fn binlog_sync_builders_match_real_frames() {
    // first_send after the reconnect: (0,1542) t0 i0, session 1.
    let first_send = build_binlog_sync_request(&NewBinlogSyncRequest {
        node: Node {
            ip: REPLICA_IP,
            port: REPLICA_PORT,
        },
        db_name: b"db0",
        slot_id: 0,
        ack_range_start: LogicalOffset {
            offset: 1542,
            ..LogicalOffset::default()
        },
        ack_range_end: LogicalOffset {
            offset: 1542,
            ..LogicalOffset::default()
        },
        session_id: 1,
        first_send: true,
    });
    assert_eq!(first_send, &bodies(REPL2_UP)[2][..]);

    // Every item response rebuilt from its decoded entries is byte-identical.
    for file in DOWN_FILES {
        for body in bodies(file) {
            let resp = InnerResponse::parse(&body).unwrap();
            if resp.msg_type != MessageType::BinlogSync {
                continue;
            }
            let entries: Vec<_> = resp.binlog_sync_entries().map(Result::unwrap).collect();
            let new: Vec<NewBinlogSyncEntry<'_>> = entries
                .iter()
                .map(|e| NewBinlogSyncEntry {
                    slot: e.slot,
                    binlog_offset: e.binlog_offset.logical(),
                    binlog: e.binlog,
                    session_id: e.session_id,
                })
                .collect();
            assert_eq!(build_binlog_sync_response(&new), &body[..], "{file}");
        }
    }
}

#[test]
fn purged_try_sync_response_looks_like_pikas() {
    let request = &bodies(REPL2_UP)[1];
    let try_sync = InnerRequest::parse(request)
        .unwrap()
        .try_sync()
        .unwrap()
        .unwrap();
    let built = build_try_sync_purged_response(&try_sync, pos(1687));
    // The real kOk response for this request was
    //   0802 1001 3214 {0801 1207{0a03"db0" 1000} 1a05{0800 10970d} 2001};
    // Pika's purged answer has reply_code 2 and no session id.
    assert_eq!(
        built,
        hex("0802 1001 3212 0802 12070a036462301000 1a05080010970d")
    );
    let resp = InnerResponse::parse(&built).unwrap();
    assert_eq!(
        (resp.msg_type, resp.code),
        (MessageType::TrySync, StatusCode::Ok)
    );
    let sync = resp.try_sync().unwrap().unwrap();
    assert_eq!(sync.reply_code, TrySyncReplyCode::SyncPointBePurged);
    assert_eq!(
        sync.slot,
        Slot {
            db_name: b"db0",
            slot_id: 0
        }
    );
    assert_eq!(sync.binlog_offset.unwrap().position(), pos(1687));
    assert_eq!(sync.session_id, None);
}

// ---------------------------------------------------------------------------------------------
// The binlog file
// ---------------------------------------------------------------------------------------------

fn stream_items() -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for file in [REPL1_DOWN, REPL2_DOWN] {
        for body in bodies(file) {
            let resp = InnerResponse::parse(&body).unwrap();
            for e in resp.binlog_sync_entries().map(Result::unwrap) {
                if !e.is_keepalive() {
                    out.push((e.binlog_offset.offset, e.binlog.to_vec()));
                }
            }
        }
    }
    out
}

#[test]
fn master_binlog_file_holds_the_streamed_items() {
    let data = load("session1-master-binlog-write2file0.bin");
    let records = read_binlog_file(&data).unwrap();
    assert_eq!(records.len(), 49);
    let streamed = stream_items();
    assert_eq!(streamed.len(), 49);
    for ((record, (end, item)), row) in records.iter().zip(&streamed).zip(&SESSION1_ITEMS) {
        let (lid, start, row_end, content_len, exec_time, command) = *row;
        assert_eq!(&record.item[..], &item[..], "lid {lid}");
        assert_eq!((record.start, record.end), (start, row_end));
        assert_eq!(record.end, *end);
        assert_eq!(record.end - record.start, 8 + 34 + u64::from(content_len));
        assert_eq!(record.time, exec_time);
        let parsed = BinlogItem::parse(&record.item).unwrap();
        assert_eq!(parsed.header.logic_id, lid);
        assert_eq!(resp_command(parsed.content), command);
    }
    let manifest = Manifest::decode(&load("session1-master-binlog-manifest.bin")).unwrap();
    assert_eq!(
        manifest,
        Manifest {
            filenum: 0,
            offset: 3898,
            logic_id: 49,
            term: 0
        }
    );
    assert_eq!(records.last().unwrap().end, manifest.offset);
}

#[test]
fn writer_reproduces_the_master_binlog_byte_for_byte() {
    let data = load("session1-master-binlog-write2file0.bin");
    let mut writer = BinlogFileWriter::new(0);
    for record in read_binlog_file(&data).unwrap() {
        let item = BinlogItem::parse(&record.item).unwrap();
        let at = writer
            .append_item(
                item.header.exec_time,
                item.header.term_id,
                item.header.logic_id,
                item.content,
            )
            .unwrap();
        assert_eq!((at.start, at.end), (record.start, record.end));
    }
    assert_eq!(writer.as_bytes(), &data[..]);
}

#[test]
fn replica_binlog_differs_only_in_late_apply_times() {
    let master = load("session1-master-binlog-write2file0.bin");
    let replica = load("session1-replica-binlog-write2file0.bin");
    let m = read_binlog_file(&master).unwrap();
    let r = read_binlog_file(&replica).unwrap();
    assert_eq!(m.len(), r.len());
    for (a, b) in m.iter().zip(&r) {
        let (ia, ib) = (
            BinlogItem::parse(&a.item).unwrap(),
            BinlogItem::parse(&b.item).unwrap(),
        );
        assert_eq!((a.start, a.end), (b.start, b.end));
        assert_eq!(ia.content, ib.content);
        if (16..=19).contains(&ia.header.logic_id) {
            assert_eq!((ib.header.exec_time, b.time), (1795470059, 1795470059));
            assert_eq!(
                ItemHeader {
                    exec_time: ia.header.exec_time,
                    ..ib.header
                },
                ia.header
            );
        } else {
            assert_eq!(a, b);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// rsync2 (P+10001): framing and splicing only
// ---------------------------------------------------------------------------------------------

fn rsync_field<'a>(fields: &[Field<'a>], number: u32) -> Field<'a> {
    *find(fields, number).last().unwrap()
}

#[test]
fn rsync_frames_parse_with_the_splicer() {
    let requests = bodies(RSYNC_UP);
    let expected_requests = [
        (0, ""),
        (0, "hashes/CURRENT"),
        (1, "hashes/MANIFEST-000011"),
        (2, "hashes/OPTIONS-000013"),
        (3, "info"),
        (0, "lists/CURRENT"),
        (1, "lists/MANIFEST-000011"),
        (3, "sets/CURRENT"),
        (2, "lists/OPTIONS-000013"),
        (0, "sets/MANIFEST-000011"),
        (1, "sets/OPTIONS-000013"),
        (3, "strings/MANIFEST-000005"),
        (0, "strings/OPTIONS-000007"),
        (1, "zsets/CURRENT"),
        (2, "strings/CURRENT"),
        (3, "zsets/OPTIONS-000015"),
        (2, "zsets/MANIFEST-000013"),
    ];
    for (i, (body, (reader_index, filename))) in requests.iter().zip(expected_requests).enumerate()
    {
        let fields = parse_message(body).unwrap();
        let msg_type = rsync_field(&fields, 1).varint().unwrap();
        assert_eq!(msg_type, if i == 0 { 1 } else { 2 });
        assert_eq!(rsync_field(&fields, 2).int32().unwrap(), reader_index);
        assert_eq!(rsync_field(&fields, 3).bytes().unwrap(), b"db0");
        assert_eq!(rsync_field(&fields, 4).uint32().unwrap(), 0);
        if i > 0 {
            let req: Vec<_> = rsync_field(&fields, 5)
                .message()
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(rsync_field(&req, 1).string().unwrap(), filename);
            assert_eq!(rsync_field(&req, 2).uint64().unwrap(), 4194304);
            assert_eq!(rsync_field(&req, 3).uint64().unwrap(), 0);
        }
    }

    let responses = bodies(RSYNC_DOWN);
    let meta = parse_message(&responses[0]).unwrap();
    assert_eq!(rsync_field(&meta, 1).varint().unwrap(), 1);
    assert_eq!(
        rsync_field(&meta, 3).bytes().unwrap(),
        b"0f11968f644ecbb13f4c42af64bfcfc1"
    );
    assert_eq!(rsync_field(&meta, 6).varint().unwrap(), 1);
    let names: Vec<String> = rsync_field(&meta, 7)
        .message()
        .unwrap()
        .map(|f| f.unwrap().string().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 16);
    assert_eq!(names[0], "strings/MANIFEST-000005");
    assert_eq!(names[15], "info");

    let expected_files = [
        (1, "hashes/MANIFEST-000011", 157),
        (0, "hashes/CURRENT", 16),
        (3, "info", 23),
        (2, "hashes/OPTIONS-000013", 11345),
        (0, "lists/CURRENT", 16),
        (1, "lists/MANIFEST-000011", 164),
        (3, "sets/CURRENT", 16),
        (0, "sets/MANIFEST-000011", 159),
        (1, "sets/OPTIONS-000013", 11349),
        (2, "lists/OPTIONS-000013", 11354),
        (0, "strings/OPTIONS-000007", 7021),
        (3, "strings/MANIFEST-000005", 59),
        (1, "zsets/CURRENT", 16),
        (2, "strings/CURRENT", 16),
        (3, "zsets/OPTIONS-000015", 15680),
        (2, "zsets/MANIFEST-000013", 246),
    ];
    for (body, (reader_index, filename, count)) in responses[1..].iter().zip(expected_files) {
        let fields = parse_message(body).unwrap();
        assert_eq!(rsync_field(&fields, 1).varint().unwrap(), 2);
        assert_eq!(rsync_field(&fields, 2).int32().unwrap(), reader_index);
        assert_eq!(rsync_field(&fields, 6).varint().unwrap(), 1);
        let file: Vec<_> = rsync_field(&fields, 8)
            .message()
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rsync_field(&file, 1).int32().unwrap(), 1); // eof
        assert_eq!(rsync_field(&file, 2).uint64().unwrap(), count);
        assert_eq!(rsync_field(&file, 3).uint64().unwrap(), 0);
        assert_eq!(rsync_field(&file, 4).bytes().unwrap().len() as u64, count);
        assert_eq!(rsync_field(&file, 5).bytes().unwrap(), b"");
        assert_eq!(rsync_field(&file, 6).string().unwrap(), filename);
        if filename == "info" {
            assert_eq!(
                rsync_field(&file, 4).bytes().unwrap(),
                b"0s\n127.0.0.1\n19221\n0\n0\n"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_frames_are_errors() {
    // Frame body length 0.
    let mut codec = FrameCodec::new();
    let mut buf = bytes::BytesMut::from(&[0u8, 0, 0, 0][..]);
    assert!(matches!(codec.decode(&mut buf), Err(FrameError::EmptyBody)));
    assert!(matches!(
        InnerRequest::parse(b""),
        Err(MessageError::MissingField { field: "type", .. })
    ));

    let ack = bodies(REPL1_UP)[13].to_vec();
    // Truncated varint: cut inside first_send's value.
    let cut = &ack[..ack.len() - 1];
    assert!(matches!(
        InnerRequest::parse(cut),
        Err(MessageError::Proto(ProtoError::LengthOutOfBounds { .. }))
    ));
    let sync_payload = parse_message(&ack).unwrap()[1].bytes().unwrap().to_vec();
    let cut_inner = &sync_payload[..sync_payload.len() - 1];
    let mut rewrapped = vec![0x08, 0x04, 0x2a, cut_inner.len() as u8];
    rewrapped.extend_from_slice(cut_inner);
    assert!(matches!(
        InnerRequest::parse(&rewrapped).unwrap().binlog_sync(),
        Err(MessageError::Proto(ProtoError::TruncatedVarint { .. }))
    ));
    // Length beyond the body.
    let mut long = ack.clone();
    long[3] = 0x7f;
    assert!(matches!(
        InnerRequest::parse(&long),
        Err(MessageError::Proto(ProtoError::LengthOutOfBounds { .. }))
    ));
    // Wrong wire type for a known field: `type` as a length-delimited field.
    let mut wrong = ack.clone();
    wrong[0] = 0x0a;
    wrong[1] = 0x00;
    assert!(matches!(
        InnerRequest::parse(&wrong),
        Err(MessageError::Proto(ProtoError::WrongWireType {
            number: 1,
            expected: WireType::Varint,
            found: WireType::Len
        }))
    ));
    // Wrong wire type inside a sub-message (session_id as fixed32).
    let mut editor = MessageEditor::new(&ack).unwrap();
    editor
        .edit_message::<ProtoError, _>(5, |sync| {
            sync.remove(6);
            // session_id (field 6) re-added as fixed32 (wire type 5) in front of `node`.
            let mut record = vec![0x35];
            record.extend_from_slice(&0u32.to_le_bytes());
            let node = sync.fields()[0].record().to_vec();
            sync.replace_at(0, [record, node].concat());
            Ok(())
        })
        .unwrap();
    let fixed_session = editor.to_vec();
    assert!(matches!(
        InnerRequest::parse(&fixed_session).unwrap().binlog_sync(),
        Err(MessageError::Proto(ProtoError::WrongWireType {
            number: 6,
            ..
        }))
    ));
    // A missing required field.
    let mut editor = MessageEditor::new(&ack).unwrap();
    editor
        .edit_message::<ProtoError, _>(5, |sync| {
            sync.remove(7);
            Ok(())
        })
        .unwrap();
    assert!(matches!(
        InnerRequest::parse(&editor.to_vec()).unwrap().binlog_sync(),
        Err(MessageError::MissingField {
            field: "first_send",
            ..
        })
    ));
    // Editors refuse the wrong message.
    assert!(replace_ack_range_end(&bodies(REPL1_UP)[2], LogicalOffset::default()).is_err());
    assert!(replace_try_sync_offset(&ack, pos(0)).is_err());
    // An item whose content_len disagrees with its bytes.
    let item_frame = bodies(REPL1_DOWN)[12].to_vec();
    let entry = InnerResponse::parse(&item_frame)
        .unwrap()
        .binlog_sync_entries()
        .next()
        .unwrap()
        .unwrap();
    let mut bad_item = entry.binlog.to_vec();
    bad_item[30] = 23;
    assert!(BinlogItem::parse(&bad_item).is_err());
    let rebuilt = splice_binlogs(&item_frame, &[Some(&bad_item)]);
    let bad_entry = InnerResponse::parse(&rebuilt)
        .unwrap()
        .binlog_sync_entries()
        .next()
        .unwrap()
        .unwrap();
    assert!(bad_entry.item().is_err());
}

#[test]
fn every_truncation_of_every_frame_is_handled() {
    for (file, body) in all_fixture_bodies() {
        // Every prefix of the P+2000 frames (at most 538 bytes); the large rsync frames only
        // lose their last byte, to keep the quadratic cost down.
        let first_cut = if file.contains("rsync") {
            body.len() - 1
        } else {
            0
        };
        for cut in first_cut..body.len() {
            let prefix = &body[..cut];
            exercise(prefix);
            // Cutting the last top-level field always breaks its length or varint.
            if cut == body.len() - 1 {
                assert!(parse_message(prefix).is_err(), "{file}");
            }
        }
    }
}

/// Runs every reader and editor over `body`; only checks properties that hold for any input.
fn exercise(body: &[u8]) {
    if let Ok(fields) = parse_message(body) {
        let editor = MessageEditor::new(body).unwrap();
        assert_eq!(editor.to_vec(), body);
        for f in &fields {
            let _ = (f.varint(), f.bytes(), f.fixed32(), f.fixed64(), f.string());
            if let Ok(sub) = f.message() {
                sub.for_each(drop);
            }
        }
    }
    if let Ok(req) = InnerRequest::parse(body) {
        let _ = req.meta_sync();
        let _ = req.try_sync();
        let _ = req.db_sync();
        if let Ok(Some(sync)) = req.binlog_sync() {
            let _ = sync.keepalive_ack();
        }
        let _ = replace_ack_range(
            body,
            Some(LogicalOffset::default()),
            Some(LogicalOffset::default()),
        );
        let _ = replace_try_sync_offset(body, pos(1));
    }
    if let Ok(resp) = InnerResponse::parse(body) {
        let _ = resp.meta_sync();
        let _ = resp.try_sync();
        let _ = resp.db_sync();
        let _ = resp.is_keepalive();
        for entry in resp.binlog_sync_entries().flatten() {
            if let Ok(item) = entry.item() {
                let _ = item.with_content(b"x");
            }
        }
        let mut records = resp.binlog_sync_entries();
        let mut splice = BinlogSyncSplice::new(body);
        while let Some(Ok(record)) = records.next_record() {
            let _ = splice.replace_binlog(&record, b"abc");
        }
        let _ = splice.finish();
    }
    let _ = BinlogItem::parse(body);
    let _ = read_binlog_file(body);
    let mut framed = bytes::BytesMut::from(body);
    let _ = FrameCodec::with_max_frame_len(1 << 16).decode(&mut framed);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_mutations_of_fixture_frames_never_panic(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
    ) {
        let all = all_fixture_bodies();
        let mut body = all[pick.index(all.len())].1.to_vec();
        for (at, byte, kind) in mutations {
            if body.is_empty() {
                body.push(byte);
                continue;
            }
            let i = at.index(body.len());
            match kind {
                0 => body[i] = byte,
                1 => body[i] ^= 1 << (byte % 8),
                2 => body.insert(i, byte),
                _ => { body.remove(i); }
            }
        }
        exercise(&body);
    }
}
