//! Builders for the messages a proxy originates, encoded as Pika's C++ code writes them.

use super::field::*;
use super::{
    logical_len, position_len, put_message, write_logical, write_position, BinlogPosition,
    LogicalOffset, MessageType, Node, Slot, StatusCode, TrySyncReplyCode, TrySyncRequest,
};
use crate::pika::proto::{
    int32_as_varint, len_field_len, put_bool_field, put_int32_field, put_len_field,
    put_varint_field, varint_field_len,
};
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewBinlogSyncEntry<'r> {
    /// The DB.
    pub slot: Slot<'r>,
    /// Offset to announce (all four fields are written).
    pub binlog_offset: LogicalOffset,
    /// The item bytes (empty for a keepalive).
    pub binlog: &'r [u8],
    /// Session id.
    pub session_id: i32,
}

impl NewBinlogSyncEntry<'_> {
    fn payload_len(&self) -> usize {
        len_field_len(binlog_sync_entry::SLOT, self.slot.encoded_len())
            + len_field_len(
                binlog_sync_entry::BINLOG_OFFSET,
                logical_len(&self.binlog_offset),
            )
            + len_field_len(binlog_sync_entry::BINLOG, self.binlog.len())
            + varint_field_len(
                binlog_sync_entry::SESSION_ID,
                int32_as_varint(self.session_id),
            )
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        put_message(
            out,
            binlog_sync_entry::SLOT,
            self.slot.encoded_len(),
            |out| self.slot.write(out),
        );
        put_message(
            out,
            binlog_sync_entry::BINLOG_OFFSET,
            logical_len(&self.binlog_offset),
            |out| write_logical(out, &self.binlog_offset),
        );
        put_len_field(out, binlog_sync_entry::BINLOG, self.binlog);
        put_int32_field(out, binlog_sync_entry::SESSION_ID, self.session_id);
    }
}

/// A TrySync response with `reply_code = kSyncPointBePurged` for `request`, as Pika's master
/// writes it: `type=kTrySync, code=kOk, try_sync{reply_code, slot (echoed), binlog_offset
/// {filenum, offset} = master_position}` and no session id. The replica reacts with a full sync.
pub fn build_try_sync_purged_response(
    request: &TrySyncRequest<'_>,
    master_position: BinlogPosition,
) -> Vec<u8> {
    let slot_len = request.slot.encoded_len();
    let pos_len = position_len(&master_position);
    let try_sync_len = varint_field_len(
        try_sync_response::REPLY_CODE,
        TrySyncReplyCode::SyncPointBePurged.to_wire(),
    ) + len_field_len(try_sync_response::SLOT, slot_len)
        + len_field_len(try_sync_response::BINLOG_OFFSET, pos_len);
    let mut out = Vec::with_capacity(8 + try_sync_len);
    put_varint_field(&mut out, response::TYPE, MessageType::TrySync.to_wire());
    put_varint_field(&mut out, response::CODE, StatusCode::Ok.to_wire());
    put_message(&mut out, response::TRY_SYNC, try_sync_len, |out| {
        put_varint_field(
            out,
            try_sync_response::REPLY_CODE,
            TrySyncReplyCode::SyncPointBePurged.to_wire(),
        );
        put_message(out, try_sync_response::SLOT, slot_len, |out| {
            request.slot.write(out)
        });
        put_message(out, try_sync_response::BINLOG_OFFSET, pos_len, |out| {
            write_position(out, &master_position)
        });
    });
    out
}

/// A MetaSync request for `node`, with the master's `requirepass` when it has one.
pub fn build_meta_sync_request(node: Node<'_>, auth: Option<&[u8]>) -> Vec<u8> {
    let node_len = node.encoded_len();
    let meta_len = len_field_len(meta_sync_request::NODE, node_len)
        + auth.map_or(0, |a| len_field_len(meta_sync_request::AUTH, a.len()));
    let mut out = Vec::with_capacity(4 + meta_len);
    put_varint_field(&mut out, request::TYPE, MessageType::MetaSync.to_wire());
    put_message(&mut out, request::META_SYNC, meta_len, |out| {
        put_message(out, meta_sync_request::NODE, node_len, |out| {
            node.write(out)
        });
        if let Some(auth) = auth {
            put_len_field(out, meta_sync_request::AUTH, auth);
        }
    });
    out
}

/// A TrySync request of `node` for `slot` at `position` (fields 1 and 2 of the offset only,
/// as a replica writes it).
pub fn build_try_sync_request(node: Node<'_>, slot: Slot<'_>, position: BinlogPosition) -> Vec<u8> {
    let (node_len, slot_len, pos_len) = (
        node.encoded_len(),
        slot.encoded_len(),
        position_len(&position),
    );
    let try_len = len_field_len(try_sync_request::NODE, node_len)
        + len_field_len(try_sync_request::SLOT, slot_len)
        + len_field_len(try_sync_request::BINLOG_OFFSET, pos_len);
    let mut out = Vec::with_capacity(4 + try_len);
    put_varint_field(&mut out, request::TYPE, MessageType::TrySync.to_wire());
    put_message(&mut out, request::TRY_SYNC, try_len, |out| {
        put_message(out, try_sync_request::NODE, node_len, |out| node.write(out));
        put_message(out, try_sync_request::SLOT, slot_len, |out| slot.write(out));
        put_message(out, try_sync_request::BINLOG_OFFSET, pos_len, |out| {
            write_position(out, &position)
        });
    });
    out
}

/// A BinlogSync request built from scratch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewBinlogSyncRequest<'r> {
    /// The replica's address (the master keys slaves by it).
    pub node: Node<'r>,
    /// DB name.
    pub db_name: &'r [u8],
    /// Slot id.
    pub slot_id: u32,
    /// `ack_range_start`.
    pub ack_range_start: LogicalOffset,
    /// `ack_range_end`.
    pub ack_range_end: LogicalOffset,
    /// Session id.
    pub session_id: i32,
    /// `first_send`.
    pub first_send: bool,
}

/// Encodes a BinlogSync request body as Pika serializes it.
pub fn build_binlog_sync_request(req: &NewBinlogSyncRequest<'_>) -> Vec<u8> {
    let node_len = req.node.encoded_len();
    let start_len = logical_len(&req.ack_range_start);
    let end_len = logical_len(&req.ack_range_end);
    let sync_len = len_field_len(binlog_sync_request::NODE, node_len)
        + len_field_len(binlog_sync_request::DB_NAME, req.db_name.len())
        + varint_field_len(binlog_sync_request::SLOT_ID, u64::from(req.slot_id))
        + len_field_len(binlog_sync_request::ACK_RANGE_START, start_len)
        + len_field_len(binlog_sync_request::ACK_RANGE_END, end_len)
        + varint_field_len(
            binlog_sync_request::SESSION_ID,
            int32_as_varint(req.session_id),
        )
        + varint_field_len(binlog_sync_request::FIRST_SEND, u64::from(req.first_send));
    let mut out = Vec::with_capacity(2 + len_field_len(request::BINLOG_SYNC, sync_len));
    put_varint_field(&mut out, request::TYPE, MessageType::BinlogSync.to_wire());
    put_message(&mut out, request::BINLOG_SYNC, sync_len, |out| {
        put_message(out, binlog_sync_request::NODE, node_len, |out| {
            req.node.write(out)
        });
        put_len_field(out, binlog_sync_request::DB_NAME, req.db_name);
        put_varint_field(out, binlog_sync_request::SLOT_ID, u64::from(req.slot_id));
        put_message(
            out,
            binlog_sync_request::ACK_RANGE_START,
            start_len,
            |out| write_logical(out, &req.ack_range_start),
        );
        put_message(out, binlog_sync_request::ACK_RANGE_END, end_len, |out| {
            write_logical(out, &req.ack_range_end)
        });
        put_int32_field(out, binlog_sync_request::SESSION_ID, req.session_id);
        put_bool_field(out, binlog_sync_request::FIRST_SEND, req.first_send);
    });
    out
}

/// The `(0,0)-(0,0)` BinlogSync request a replica sends to answer a keepalive; the master takes
/// it as a ping that refreshes its 20 s timeout.
pub fn build_keepalive_ack(
    node: Node<'_>,
    db_name: &[u8],
    slot_id: u32,
    session_id: i32,
) -> Vec<u8> {
    build_binlog_sync_request(&NewBinlogSyncRequest {
        node,
        db_name,
        slot_id,
        ack_range_start: LogicalOffset::default(),
        ack_range_end: LogicalOffset::default(),
        session_id,
        first_send: false,
    })
}

/// A BinlogSync response (`type=kBinlogSync, code=kOk`) with the given entries.
pub fn build_binlog_sync_response(entries: &[NewBinlogSyncEntry<'_>]) -> Vec<u8> {
    let lens: Vec<usize> = entries
        .iter()
        .map(NewBinlogSyncEntry::payload_len)
        .collect();
    let total: usize = 4 + lens
        .iter()
        .map(|&len| len_field_len(response::BINLOG_SYNC, len))
        .sum::<usize>();
    let mut out = Vec::with_capacity(total);
    put_varint_field(&mut out, response::TYPE, MessageType::BinlogSync.to_wire());
    put_varint_field(&mut out, response::CODE, StatusCode::Ok.to_wire());
    for (entry, &len) in entries.iter().zip(&lens) {
        put_message(&mut out, response::BINLOG_SYNC, len, |out| {
            entry.write_payload(out)
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::*;

    #[test]
    fn negative_session_ids_use_ten_byte_varints() {
        let slot = Slot {
            db_name: b"db0",
            slot_id: 0,
        };
        let body = build_binlog_sync_response(&[NewBinlogSyncEntry {
            slot,
            binlog_offset: LogicalOffset::default(),
            binlog: b"",
            session_id: -1,
        }]);
        let e = InnerResponse::parse(&body)
            .unwrap()
            .binlog_sync_entries()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(e.session_id, -1);
        assert!(e.is_keepalive());
        // 33-byte keepalive with a 1-byte session becomes 42 bytes.
        assert_eq!(body.len(), 29 + 9);
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The bytes a real Pika 4.0.1 replica (node 127.0.0.1:16011) sent in the captured session.
    #[test]
    fn requests_are_built_as_a_real_replica_writes_them() {
        let node = Node {
            ip: b"127.0.0.1",
            port: 16011,
        };
        assert_eq!(
            build_meta_sync_request(node, None),
            unhex("080112100a0e0a093132372e302e302e31108b7d")
        );
        let slot = Slot {
            db_name: b"db0",
            slot_id: 0,
        };
        assert_eq!(
            build_try_sync_request(node, slot, BinlogPosition::new(0, 546)),
            unhex("08021a200a0e0a093132372e302e302e31108b7d12070a0364623010001a05080010a204")
        );
        let with_auth = build_meta_sync_request(node, Some(b"pw"));
        let parsed = InnerRequest::parse(&with_auth).unwrap();
        let meta = parsed.meta_sync().unwrap().unwrap();
        assert_eq!(meta.auth, Some(&b"pw"[..]));
        assert_eq!(meta.node, node);
    }
}
