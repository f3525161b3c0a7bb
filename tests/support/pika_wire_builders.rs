//! Pika messages only the tests originate, built on the relay's own builders (`src` keeps the
//! builders the relay, the benches or the fuzz targets use).

use pika_ttl_proxy::pika::messages::{
    build_binlog_sync_response, LogicalOffset, NewBinlogSyncEntry, Slot,
};

/// A master's keepalive: a BinlogSync response with one entry whose binlog is empty and whose
/// offset is `(0,0,0,0)`.
pub fn build_keepalive_response(slot: Slot<'_>, session_id: i32) -> Vec<u8> {
    build_binlog_sync_response(&[NewBinlogSyncEntry {
        slot,
        binlog_offset: LogicalOffset::default(),
        binlog: b"",
        session_id,
    }])
}
