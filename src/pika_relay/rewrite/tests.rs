//! Unit tests of the response rewriter.

use super::*;
use crate::pika::item::{build_item, ItemHeader};
use crate::pika::messages::{build_binlog_sync_response, NewBinlogSyncEntry, Slot};
use crate::table::Baseline;

use crate::pika::item::command_item as item;

/// A BinlogSync response of db0 carrying `(item, end offset, index)`s.
pub(in crate::pika_relay) fn response(items: &[(Vec<u8>, u64, u64)]) -> Bytes {
    let entries: Vec<NewBinlogSyncEntry<'_>> = items
        .iter()
        .map(|(binlog, end, index)| NewBinlogSyncEntry {
            slot: Slot {
                db_name: b"db0",
                slot_id: 0,
            },
            binlog_offset: LogicalOffset {
                filenum: 0,
                offset: *end,
                term: 0,
                index: *index,
            },
            binlog,
            session_id: 0,
        })
        .collect();
    build_binlog_sync_response(&entries).into()
}

fn contents(body: &[u8]) -> Vec<Vec<u8>> {
    InnerResponse::parse(body)
        .unwrap()
        .binlog_sync_entries()
        .map(|e| e.unwrap().item().unwrap().content.to_vec())
        .collect()
}

#[test]
fn seed_scenario_puts_both_commands_into_the_incr_item() {
    let table = Arc::new(ExpiryTable::new(Baseline::Absent));
    let mut rw = LinkRewriter::new(table, 0, FamilySwitches::all_on());
    let t0 = 1_795_469_984u32;
    let setex = item(
        t0,
        1,
        0,
        &["pksetexat", "key1", &(t0 + 10).to_string(), "100"],
    );
    let first = response(&[(setex.clone(), 95, 1)]);
    let out = rw.rewrite_response(&first).unwrap();
    assert!(out.body.is_none(), "pksetexat is already absolute");
    let fwd = out.forwarded.unwrap();
    assert_eq!(
        (fwd.first_end.offset, fwd.last_end.offset, fwd.items),
        (95, 95, 1)
    );
    assert!(!fwd.changed);

    let incr = item(t0 + 1, 2, 95, &["INCR", "key1"]);
    let second = response(&[(incr, 159, 2)]);
    let out = rw.rewrite_response(&second).unwrap();
    let body = out.body.expect("INCR on a volatile key is rewritten");
    let expected = format!(
        "*2\r\n$4\r\nINCR\r\n$4\r\nkey1\r\n*3\r\n$8\r\nexpireat\r\n$4\r\nkey1\r\n$10\r\n{}\r\n",
        t0 + 10
    );
    assert_eq!(contents(&body), vec![expected.into_bytes()]);
    // The header kept everything but content_len, and the entry kept the master END.
    let resp = InnerResponse::parse(&body).unwrap();
    let entry = resp.binlog_sync_entries().next().unwrap().unwrap();
    assert_eq!(entry.binlog_offset.offset, 159);
    let header = entry.item().unwrap().header;
    assert_eq!(
        (header.logic_id, header.offset, header.exec_time),
        (2, 95, t0 + 1)
    );
    assert!(out.forwarded.unwrap().changed);
}

/// Content the single-pass reader leaves to the resumable parser (an inline command, an
/// empty line) is still read and rewritten, with every position mapped back into the body.
#[test]
fn inline_and_multibulk_content_in_one_item_is_rewritten() {
    let table = Arc::new(ExpiryTable::new(Baseline::Absent));
    let mut rw = LinkRewriter::new(table, 0, FamilySwitches::all_on());
    let t0 = 1_795_469_984u32;
    let setex = item(t0, 1, 0, &["pksetexat", "k", &(t0 + 10).to_string(), "v"]);
    rw.rewrite_response(&response(&[(setex, 90, 1)])).unwrap();

    let header = ItemHeader {
        item_type: 1,
        exec_time: t0 + 1,
        term_id: 0,
        logic_id: 2,
        filenum: 0,
        offset: 90,
        content_len: 0,
    };
    let content = b"APPEND k x\r\n\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n";
    let mixed = build_item(&header, content).unwrap();
    let out = rw.rewrite_response(&response(&[(mixed, 180, 2)])).unwrap();
    assert_eq!(out.unparsable_items, 0);
    let body = out.body.expect("writes to a volatile key are rewritten");
    let expire = format!("*3\r\n$8\r\nexpireat\r\n$1\r\nk\r\n$10\r\n{}\r\n", t0 + 10);
    let expected = format!(
        "*3\r\n$6\r\nAPPEND\r\n$1\r\nk\r\n$1\r\nx\r\n{expire}\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n{expire}"
    );
    assert_eq!(
        String::from_utf8_lossy(&contents(&body)[0]),
        expected,
        "the empty line is kept, each command is followed by its deadline"
    );
}

#[test]
fn a_rewritten_response_keeps_unknown_fields() {
    use crate::pika::proto::{put_len_field, put_varint_field, FieldIter};
    let table = Arc::new(ExpiryTable::new(Baseline::Absent));
    let t0 = 1_795_469_984u32;
    table.set_deadline(0, b"k", (i64::from(t0) + 10) * 1000);
    let mut rw = LinkRewriter::new(table, 0, FamilySwitches::all_on());
    let binlog = item(t0 + 1, 2, 95, &["INCR", "k"]);
    // An entry as a newer master writes it: fields 1-4 plus committed_id (field 5).
    let mut slot = Vec::new();
    put_len_field(&mut slot, 1, b"db0");
    put_varint_field(&mut slot, 2, 0);
    let mut offset = Vec::new();
    for (f, v) in [(1, 0), (2, 157), (3, 0), (4, 2)] {
        put_varint_field(&mut offset, f, v);
    }
    let mut committed = Vec::new();
    put_varint_field(&mut committed, 1, 0);
    put_varint_field(&mut committed, 2, 42);
    let mut entry = Vec::new();
    put_len_field(&mut entry, 1, &slot);
    put_len_field(&mut entry, 2, &offset);
    put_len_field(&mut entry, 3, &binlog);
    put_varint_field(&mut entry, 4, 0);
    put_len_field(&mut entry, 5, &committed);
    let mut body = Vec::new();
    put_varint_field(&mut body, 1, 4);
    put_varint_field(&mut body, 2, 1);
    put_len_field(&mut body, 7, &entry);
    put_varint_field(&mut body, 99, 7);

    let out = rw.rewrite_response(&body.into()).unwrap();
    let new = out.body.expect("rewritten");
    let top: Vec<_> = FieldIter::new(&new).map(|f| f.unwrap()).collect();
    assert!(top
        .iter()
        .any(|f| f.number() == 99 && f.varint().unwrap() == 7));
    let entry = top
        .iter()
        .find(|f| f.number() == 7)
        .unwrap()
        .bytes()
        .unwrap();
    let fields: Vec<_> = FieldIter::new(entry).map(|f| f.unwrap()).collect();
    let kept = fields.iter().find(|f| f.number() == 5).unwrap();
    assert_eq!(kept.bytes().unwrap(), committed.as_slice());
    let new_binlog = fields
        .iter()
        .find(|f| f.number() == 3)
        .unwrap()
        .bytes()
        .unwrap();
    assert!(new_binlog.len() > binlog.len());
}

#[test]
fn switched_off_families_forward_the_original_bytes() {
    let table = Arc::new(ExpiryTable::new(Baseline::Absent));
    let mut rw = LinkRewriter::new(table, 0, FamilySwitches::all_off());
    let t0 = 1_795_469_984u32;
    let a = item(t0, 1, 0, &["pksetexat", "k", &(t0 + 10).to_string(), "1"]);
    let b = item(t0 + 1, 2, 93, &["INCR", "k"]);
    let body = response(&[(a, 93, 1), (b, 157, 2)]);
    let out = rw.rewrite_response(&body).unwrap();
    assert!(out.body.is_none());
    assert_eq!(out.forwarded.unwrap().items, 2);
}

#[test]
fn a_response_mixing_two_dbs_is_refused() {
    let a = item(5, 1, 0, &["SET", "a", "1"]);
    let b = item(5, 2, 40, &["SET", "b", "1"]);
    let entry = |db: &'static [u8], binlog, end, index| NewBinlogSyncEntry {
        slot: Slot {
            db_name: db,
            slot_id: 0,
        },
        binlog_offset: LogicalOffset {
            filenum: 0,
            offset: end,
            term: 0,
            index,
        },
        binlog,
        session_id: 0,
    };
    let body = build_binlog_sync_response(&[entry(b"db0", &a, 40, 1), entry(b"db1", &b, 80, 2)]);
    let mut rw = LinkRewriter::new(
        Arc::new(ExpiryTable::new(Baseline::Unknown)),
        0,
        FamilySwitches::all_on(),
    );
    let err = rw.rewrite_response(&body.into()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "one BinlogSync response carries items of db0:0 and db1:0"
    );
}

#[test]
fn keepalive_has_nothing_to_ack_and_garbage_content_passes() {
    let table = Arc::new(ExpiryTable::new(Baseline::Unknown));
    let mut rw = LinkRewriter::new(table, 0, FamilySwitches::all_on());
    let out = rw
        .rewrite_response(&response(&[(Vec::new(), 0, 0)]))
        .unwrap();
    assert!(out.body.is_none() && out.forwarded.is_none());
    let header = ItemHeader {
        item_type: 1,
        exec_time: 1,
        term_id: 0,
        logic_id: 1,
        filenum: 0,
        offset: 0,
        content_len: 0,
    };
    let junk = build_item(&header, b"*2\r\n$4\r\nINCR").unwrap();
    let out = rw.rewrite_response(&response(&[(junk, 55, 1)])).unwrap();
    assert_eq!(out.unparsable_items, 1);
    assert!(out.body.is_none());
}

#[test]
fn touched_keys_are_recorded_only_while_asked() {
    let table = Arc::new(ExpiryTable::new(Baseline::Unknown));
    let mut rw = LinkRewriter::new(table, 0, FamilySwitches::all_on());
    rw.rewrite_response(&response(&[(item(5, 1, 0, &["SET", "a", "1"]), 60, 1)]))
        .unwrap();
    rw.start_recording_touched();
    rw.rewrite_response(&response(&[(
        item(5, 2, 60, &["RENAME", "b", "c"]),
        130,
        2,
    )]))
    .unwrap();
    let touched = rw.take_touched();
    let at = BinlogPosition::new(0, 130);
    assert_eq!(touched.get(&(0, b"b".to_vec())), Some(&at));
    assert_eq!(touched.get(&(0, b"c".to_vec())), Some(&at));
    assert!(!touched.contains_key(&(0, b"a".to_vec())));
    assert_eq!(rw.take_wiped(), None);
}

#[test]
fn a_db_wide_delete_is_recorded_with_the_touched_keys() {
    let table = Arc::new(ExpiryTable::new(Baseline::Unknown));
    let mut rw = LinkRewriter::new(table, 0, FamilySwitches::all_on());
    rw.rewrite_response(&response(&[(item(5, 1, 0, &["FLUSHDB"]), 60, 1)]))
        .unwrap();
    rw.start_recording_touched();
    assert_eq!(rw.take_wiped(), None, "only while recording");
    rw.start_recording_touched();
    for (i, (cmd, end)) in [
        (&["SET", "a", "1"][..], 120u64),
        (&["pkpatternmatchdel", "*", "strings"], 200),
    ]
    .iter()
    .enumerate()
    {
        rw.rewrite_response(&response(&[(
            item(5, 2 + i as u64, 60, cmd),
            *end,
            2 + i as u64,
        )]))
        .unwrap();
    }
    assert_eq!(rw.take_wiped(), Some(BinlogPosition::new(0, 200)));
    assert_eq!(rw.take_wiped(), None);
}

#[test]
fn a_changed_item_is_predicted_from_what_was_written_as_its_content_would_be() {
    let t0 = 1_795_469_984u32;
    let at = |secs: u32| (t0 + secs).to_string();
    let custom = |exec: u32, logic: u64, content: &[u8]| {
        let header = ItemHeader {
            item_type: 1,
            exec_time: exec,
            term_id: 0,
            logic_id: logic,
            filenum: 0,
            offset: 0,
            content_len: 0,
        };
        build_item(&header, content).unwrap()
    };
    let big = "v".repeat(300);
    let items: Vec<Vec<u8>> = vec![
        item(t0, 1, 0, &["pksetexat", "k1", &at(10), "100"]),
        item(t0, 2, 0, &["hset", "h", "f", "v"]),
        item(t0, 3, 0, &["expireat", "h", &at(20)]),
        item(t0 + 1, 4, 0, &["incr", "k1"]),
        item(t0 + 1, 5, 0, &["hincrby", "h", "n", "1"]),
        item(t0 + 1, 6, 0, &["append", "k1", &big]),
        custom(
            t0 + 1,
            7,
            b"*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$2\r\nk1\r\n",
        ),
        custom(t0 + 1, 8, b"incr k1\r\n"),
        custom(
            t0 + 1,
            9,
            b"*2\r\n$4\r\nINCR\r\n$2\r\nk1\r\nhincrby h n 2\r\n",
        ),
        item(t0 + 1, 10, 0, &["del", "k1", "a", "h"]),
        item(t0 + 2, 11, 0, &["pksetexat", "k2", &at(30), "x"]),
    ];
    for release in [PikaRelease::V3, PikaRelease::V4] {
        let table = Arc::new(ExpiryTable::new(Baseline::Absent));
        let mut rw = LinkRewriter::new(table, 0, FamilySwitches::all_on());
        rw.set_pika_release(release);
        let mut end = 0;
        let entries: Vec<(Vec<u8>, u64, u64)> = items
            .iter()
            .enumerate()
            .map(|(i, it)| {
                end += it.len() as u64;
                (it.clone(), end, i as u64 + 1)
            })
            .collect();
        let body = response(&entries);
        let decoded = decode_response(&body).unwrap().1.unwrap();
        let layout = ReplicaLayout::new(release);
        let from = BinlogPosition::new(3, 60_000);
        let out = rw
            .rewrite_records_predicting(&body, &decoded.records, Some((layout, from)))
            .unwrap();
        let sent = out.body.as_deref().unwrap_or(&body[..]);
        let mut spans = Vec::new();
        let mut expected = Vec::new();
        let mut position = from;
        for content in contents(sent) {
            position = layout
                .after_content(position, &content, &mut spans)
                .unwrap();
            expected.push(position);
        }
        let predicted: Vec<BinlogPosition> =
            out.predicted.unwrap().iter().map(|p| p.replica).collect();
        assert_eq!(predicted, expected, "{release:?}");
        assert!(out.body.is_some(), "{release:?}: some items are rewritten");
    }
}
