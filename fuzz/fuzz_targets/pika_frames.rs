//! Pika replication codec: framing, request/response views, item headers and the editors the
//! relay applies never panic on arbitrary bytes; splicing new items into a response changes
//! those items and nothing else.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pika_ttl_proxy::pika::frame::FrameCodec;
use pika_ttl_proxy::pika::messages::{
    replace_ack_range_end, BinlogSyncSplice, InnerRequest, InnerResponse, LogicalOffset,
};

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

fn body(b: &[u8]) {
    if let Ok(req) = InnerRequest::parse(b) {
        let _ = req.meta_sync();
        let _ = req.try_sync();
        let _ = req.db_sync();
        if let Ok(Some(sync)) = req.binlog_sync() {
            let _ = sync.is_ping();
            let _ = sync.keepalive_ack();
            let end = LogicalOffset {
                filenum: 0,
                offset: 4242,
                term: 0,
                index: 7,
            };
            let _ = replace_ack_range_end(b, end);
        }
    }
    if let Ok(resp) = InnerResponse::parse(b) {
        let _ = resp.meta_sync();
        let _ = resp.db_sync();
        let _ = resp.try_sync();
        let _ = resp.is_keepalive();
        for entry in resp.binlog_sync_entries().flatten() {
            let _ = entry.item();
        }
        let mut records = resp.binlog_sync_entries();
        let mut splice = BinlogSyncSplice::new(b);
        let mut replaced = Vec::new();
        while let Some(Ok(record)) = records.next_record() {
            splice
                .replace_binlog(&record, PING)
                .expect("a record that parses splices");
            replaced.push(record.entry);
        }
        if let Some(spliced) = splice.finish() {
            let after = InnerResponse::parse(&spliced).expect("a spliced response parses");
            for (entry, before) in after.binlog_sync_entries().zip(&replaced) {
                let entry = entry.expect("a spliced entry parses");
                assert_eq!(entry.binlog, PING);
                assert_eq!(
                    (entry.slot, entry.binlog_offset, entry.session_id),
                    (before.slot, before.binlog_offset, before.session_id)
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    body(data);
    let mut codec = FrameCodec::new();
    if let Ok(frames) = codec.decode_all(data) {
        for f in frames {
            body(&f);
        }
    }
});
