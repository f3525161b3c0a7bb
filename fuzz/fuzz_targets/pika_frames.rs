//! Pika replication codec: framing, request/response views, item headers and the editors the
//! relay applies never panic on arbitrary bytes; an unchanged re-splice is byte-identical.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pika_ttl_proxy::pika::frame::FrameCodec;
use pika_ttl_proxy::pika::messages::{
    replace_ack_range_end, replace_binlog_sync_binlogs, InnerRequest, InnerResponse, LogicalOffset,
};

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
        let n = resp.binlog_sync_count();
        for entry in resp.binlog_sync_entries().flatten() {
            let _ = entry.item();
        }
        let unchanged: Vec<Option<&[u8]>> = vec![None; n];
        if let Ok(same) = replace_binlog_sync_binlogs(b, &unchanged) {
            assert_eq!(same, b, "an unchanged splice must be byte-identical");
        }
        let _ = replace_binlog_sync_binlogs(b, &[Some(b"*1\r\n$4\r\nPING\r\n")]);
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
