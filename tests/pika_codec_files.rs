//! The files of the real Pika 3.5.4 captures (`tests/fixtures/pika-3.5.4/`): the master's and
//! the replica's on-disk binlog and manifest against the streamed items, and the rsync2 file
//! transfer of a full sync read with the protobuf splicer.

use pika_ttl_proxy::pika::binlog_file::{read_binlog_file, BinlogFileWriter, Manifest};
use pika_ttl_proxy::pika::item::{BinlogItem, ItemHeader};
use pika_ttl_proxy::pika::messages::InnerResponse;
use pika_ttl_proxy::pika::proto::{parse_message, Field};
use support::pika_captures::*;

#[allow(dead_code)]
mod support;

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
