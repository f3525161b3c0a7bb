//! The Pika message views, editors and builders against the real Pika 3.5.4 captures
//! (`tests/fixtures/pika-3.5.4/`): unchanged frames re-encode byte for byte, edits round-trip and
//! keep unknown fields, builders reproduce Pika's bytes, and malformed or mutated input never
//! panics.

use pika_ttl_proxy::pika::binlog_file::read_binlog_file;
use pika_ttl_proxy::pika::frame::{FrameCodec, FrameError};
use pika_ttl_proxy::pika::item::{BinlogItem, ItemHeader};
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
use support::pika_captures::*;
use support::pika_wire_builders::build_keepalive_response;

#[allow(dead_code)]
mod support;

// ---------------------------------------------------------------------------------------------
// Byte identity and edits
// ---------------------------------------------------------------------------------------------

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
