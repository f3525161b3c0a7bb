//! The Pika codec against the per-frame listings of the real Pika 3.5.4 captures
//! (`tests/fixtures/pika-3.5.4/`; their README documents every frame): framing, what every
//! frame decodes to, item tables, acks and offsets.
//!
//! Expected values below are transcribed from that README's tables. The edits, builders and
//! malformed input are in `pika_codec_messages.rs`, the binlog files and rsync in
//! `pika_codec_files.rs`.

use pika_ttl_proxy::pika::frame::FrameCodec;
use pika_ttl_proxy::pika::item::ITEM_HEADER_LEN;
use pika_ttl_proxy::pika::messages::{
    BinlogOffset, BinlogPosition, InnerRequest, InnerResponse, LogicalOffset, MessageType, Node,
    Slot, StatusCode, TrySyncReplyCode,
};
use support::pika_captures::*;

#[allow(dead_code)]
mod support;

// ---------------------------------------------------------------------------------------------
// The README's tables
// ---------------------------------------------------------------------------------------------

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
