//! Views of the `InnerRequest` messages a replica sends the master on P+2000: the top level,
//! and its MetaSync, TrySync/DBSync and BinlogSync sub-messages.

use super::field::*;
use super::{
    build_keepalive_ack, parse_sub, required, set_once, BinlogOffset, MessageError, MessageType,
    Node, Slot,
};
use crate::pika::proto::FieldIter;

/// View of an `InnerRequest` (replica → master on P+2000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerRequest<'a> {
    /// `type`.
    pub msg_type: MessageType,
    meta_sync: Option<&'a [u8]>,
    try_sync: Option<&'a [u8]>,
    db_sync: Option<&'a [u8]>,
    binlog_sync: Option<&'a [u8]>,
}

impl<'a> InnerRequest<'a> {
    /// Reads the top level of a request body (sub-messages are decoded on access).
    pub fn parse(body: &'a [u8]) -> Result<InnerRequest<'a>, MessageError> {
        const MSG: &str = "InnerRequest";
        let mut msg_type = None;
        let (mut meta_sync, mut try_sync, mut db_sync, mut binlog_sync) = (None, None, None, None);
        for f in FieldIter::new(body) {
            let f = f?;
            match f.number() {
                request::TYPE => msg_type = Some(MessageType::from_wire(f.varint()?)),
                request::META_SYNC => set_once(&mut meta_sync, f.bytes()?, MSG, "meta_sync")?,
                request::TRY_SYNC => set_once(&mut try_sync, f.bytes()?, MSG, "try_sync")?,
                request::DB_SYNC => set_once(&mut db_sync, f.bytes()?, MSG, "db_sync")?,
                request::BINLOG_SYNC => set_once(&mut binlog_sync, f.bytes()?, MSG, "binlog_sync")?,
                request::REMOVE_SLAVE_NODE | request::CONSENSUS_META => {
                    f.bytes()?;
                }
                _ => {}
            }
        }
        Ok(InnerRequest {
            msg_type: required(msg_type, MSG, "type")?,
            meta_sync,
            try_sync,
            db_sync,
            binlog_sync,
        })
    }

    /// The `meta_sync` sub-message, if present.
    pub fn meta_sync(&self) -> Result<Option<MetaSyncRequest<'a>>, MessageError> {
        self.meta_sync.map(MetaSyncRequest::parse).transpose()
    }

    /// The `try_sync` sub-message, if present.
    pub fn try_sync(&self) -> Result<Option<TrySyncRequest<'a>>, MessageError> {
        self.try_sync
            .map(|b| SyncPointRequest::parse(b, "TrySync"))
            .transpose()
    }

    /// The `db_sync` sub-message, if present.
    pub fn db_sync(&self) -> Result<Option<DbSyncRequest<'a>>, MessageError> {
        self.db_sync
            .map(|b| SyncPointRequest::parse(b, "DBSync"))
            .transpose()
    }

    /// The `binlog_sync` sub-message, if present.
    pub fn binlog_sync(&self) -> Result<Option<BinlogSyncRequest<'a>>, MessageError> {
        self.binlog_sync.map(BinlogSyncRequest::parse).transpose()
    }
}

/// `InnerRequest.MetaSync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaSyncRequest<'a> {
    /// The replica's address.
    pub node: Node<'a>,
    /// `masterauth`, absent when empty.
    pub auth: Option<&'a [u8]>,
}

impl<'a> MetaSyncRequest<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, MessageError> {
        const MSG: &str = "MetaSync";
        let (mut node, mut auth) = (None, None);
        for f in FieldIter::new(bytes) {
            let f = f?;
            match f.number() {
                meta_sync_request::NODE => parse_sub(&mut node, &f, Node::parse, MSG, "node")?,
                meta_sync_request::AUTH => auth = Some(f.bytes()?),
                _ => {}
            }
        }
        Ok(MetaSyncRequest {
            node: required(node, MSG, "node")?,
            auth,
        })
    }
}

/// `InnerRequest.TrySync` and `InnerRequest.DBSync` (same fields 1–3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncPointRequest<'a> {
    /// The replica's address.
    pub node: Node<'a>,
    /// The DB.
    pub slot: Slot<'a>,
    /// The replica's own binlog producer position.
    pub binlog_offset: BinlogOffset,
}

/// `InnerRequest.TrySync`.
pub type TrySyncRequest<'a> = SyncPointRequest<'a>;
/// `InnerRequest.DBSync`.
pub type DbSyncRequest<'a> = SyncPointRequest<'a>;

impl<'a> SyncPointRequest<'a> {
    fn parse(bytes: &'a [u8], msg: &'static str) -> Result<Self, MessageError> {
        let (mut node, mut slot, mut offset) = (None, None, None);
        for f in FieldIter::new(bytes) {
            let f = f?;
            match f.number() {
                try_sync_request::NODE => parse_sub(&mut node, &f, Node::parse, msg, "node")?,
                try_sync_request::SLOT => parse_sub(&mut slot, &f, Slot::parse, msg, "slot")?,
                try_sync_request::BINLOG_OFFSET => {
                    parse_sub(&mut offset, &f, BinlogOffset::parse, msg, "binlog_offset")?
                }
                _ => {}
            }
        }
        Ok(SyncPointRequest {
            node: required(node, msg, "node")?,
            slot: required(slot, msg, "slot")?,
            binlog_offset: required(offset, msg, "binlog_offset")?,
        })
    }
}

/// `InnerRequest.BinlogSync`: the first_send request, acks and pings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinlogSyncRequest<'a> {
    /// The replica's address.
    pub node: Node<'a>,
    /// DB name.
    pub db_name: &'a [u8],
    /// Slot id.
    pub slot_id: u32,
    /// First acked entry (master space), or the start point for first_send.
    pub ack_range_start: BinlogOffset,
    /// The replica's own position after applying (no proxy: equals the master's).
    pub ack_range_end: BinlogOffset,
    /// Session from the TrySync response.
    pub session_id: i32,
    /// True for the request that starts streaming.
    pub first_send: bool,
}

impl<'a> BinlogSyncRequest<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, MessageError> {
        const MSG: &str = "BinlogSync";
        let (
            mut node,
            mut db_name,
            mut slot_id,
            mut start,
            mut end,
            mut session_id,
            mut first_send,
        ) = (None, None, None, None, None, None, None);
        for f in FieldIter::new(bytes) {
            let f = f?;
            match f.number() {
                binlog_sync_request::NODE => parse_sub(&mut node, &f, Node::parse, MSG, "node")?,
                binlog_sync_request::DB_NAME => db_name = Some(f.bytes()?),
                binlog_sync_request::SLOT_ID => slot_id = Some(f.uint32()?),
                binlog_sync_request::ACK_RANGE_START => {
                    parse_sub(&mut start, &f, BinlogOffset::parse, MSG, "ack_range_start")?
                }
                binlog_sync_request::ACK_RANGE_END => {
                    parse_sub(&mut end, &f, BinlogOffset::parse, MSG, "ack_range_end")?
                }
                binlog_sync_request::SESSION_ID => session_id = Some(f.int32()?),
                binlog_sync_request::FIRST_SEND => first_send = Some(f.bool()?),
                _ => {}
            }
        }
        Ok(BinlogSyncRequest {
            node: required(node, MSG, "node")?,
            db_name: required(db_name, MSG, "db_name")?,
            slot_id: required(slot_id, MSG, "slot_id")?,
            ack_range_start: required(start, MSG, "ack_range_start")?,
            ack_range_end: required(end, MSG, "ack_range_end")?,
            session_id: required(session_id, MSG, "session_id")?,
            first_send: required(first_send, MSG, "first_send")?,
        })
    }

    /// A `(0,0)-(0,0)` ack that is not first_send: the master treats it as a ping.
    pub fn is_ping(&self) -> bool {
        !self.first_send
            && self.ack_range_start.position().is_zero()
            && self.ack_range_end.position().is_zero()
    }

    /// A keepalive ack for the same replica, DB and session.
    pub fn keepalive_ack(&self) -> Vec<u8> {
        build_keepalive_ack(self.node, self.db_name, self.slot_id, self.session_id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::pika::proto::parse_message;

    #[test]
    fn duplicated_sub_messages_are_rejected() {
        let once = build_keepalive_ack(
            Node {
                ip: b"10.0.0.1",
                port: 9221,
            },
            b"db0",
            0,
            0,
        );
        let sync = parse_message(&once).unwrap()[1].record().to_vec();
        let twice = [&once[..], &sync].concat();
        assert_eq!(
            InnerRequest::parse(&twice),
            Err(MessageError::DuplicateField {
                message: "InnerRequest",
                field: "binlog_sync"
            })
        );
    }
}
