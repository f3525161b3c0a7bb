//! Typed views, editors and builders for Pika's `InnerMessage` replication protocol.
//!
//! Views ([`InnerRequest`], [`InnerResponse`] and the per-type messages) borrow from a frame body
//! and read only what a proxy needs; they check wire types and the proto2 *required* fields they
//! expose, and ignore unknown fields. Editors re-encode a body through the
//! [`proto`](super::proto) splicer: only the edited fields change, every other byte (unknown
//! fields included) is copied. Builders produce the few messages a proxy originates, serialized
//! the way Pika's C++ code does (fields in number order, explicit zeros written, `BinlogOffset`
//! with fields 1–4 in BinlogSync messages and 1–2 in TrySync/DBSync), so they look like real
//! frames.
//!
//! Field semantics follow protobuf: for a repeated scalar field the last value wins. A singular
//! sub-message that appears twice (which protobuf would merge, and Pika never writes) is rejected
//! rather than half-merged.
//!
//! This module holds what every message shares: the schema's field numbers, [`MessageError`],
//! the enums, positions, [`Node`] and [`Slot`], and the encoding helpers of the builders. The
//! messages themselves live in `requests` (replica → master), `responses` (master →
//! replica), `editors` and `builders`; their items are re-exported here, so
//! `messages::InnerResponse` and the like are the paths to use.

mod builders;
mod editors;
mod requests;
mod responses;

pub use builders::*;
pub use editors::*;
pub use requests::*;
pub use responses::*;

use super::item::ItemError;
use super::proto::{
    int32_as_varint, len_field_len, put_int32_field, put_len_field, put_len_prefix,
    put_varint_field, varint_field_len, Field, FieldIter, ProtoError,
};
use std::fmt;

/// Field numbers of the `InnerMessage` schema (proto2, package `InnerMessage`).
pub mod field {
    /// `InnerRequest`.
    pub mod request {
        /// `Type type` (required).
        pub const TYPE: u32 = 1;
        /// `MetaSync meta_sync`.
        pub const META_SYNC: u32 = 2;
        /// `TrySync try_sync`.
        pub const TRY_SYNC: u32 = 3;
        /// `DBSync db_sync`.
        pub const DB_SYNC: u32 = 4;
        /// `BinlogSync binlog_sync`.
        pub const BINLOG_SYNC: u32 = 5;
        /// `repeated RemoveSlaveNode remove_slave_node`.
        pub const REMOVE_SLAVE_NODE: u32 = 6;
        /// `ConsensusMeta consensus_meta`.
        pub const CONSENSUS_META: u32 = 7;
    }
    /// `InnerResponse`.
    pub mod response {
        /// `Type type` (required).
        pub const TYPE: u32 = 1;
        /// `StatusCode code` (required).
        pub const CODE: u32 = 2;
        /// `string reply`.
        pub const REPLY: u32 = 3;
        /// `MetaSync meta_sync`.
        pub const META_SYNC: u32 = 4;
        /// `DBSync db_sync`.
        pub const DB_SYNC: u32 = 5;
        /// `TrySync try_sync`.
        pub const TRY_SYNC: u32 = 6;
        /// `repeated BinlogSync binlog_sync`.
        pub const BINLOG_SYNC: u32 = 7;
        /// `repeated RemoveSlaveNode remove_slave_node`.
        pub const REMOVE_SLAVE_NODE: u32 = 8;
        /// `ConsensusMeta consensus_meta`.
        pub const CONSENSUS_META: u32 = 9;
    }
    /// `BinlogOffset`.
    pub mod binlog_offset {
        /// `uint32 filenum` (required).
        pub const FILENUM: u32 = 1;
        /// `uint64 offset` (required).
        pub const OFFSET: u32 = 2;
        /// `uint32 term`.
        pub const TERM: u32 = 3;
        /// `uint64 index`.
        pub const INDEX: u32 = 4;
    }
    /// `Node`.
    pub mod node {
        /// `string ip` (required).
        pub const IP: u32 = 1;
        /// `int32 port` (required).
        pub const PORT: u32 = 2;
    }
    /// `Slot` (`Partition` before 3.5, same numbers).
    pub mod slot {
        /// `string db_name` (required).
        pub const DB_NAME: u32 = 1;
        /// `uint32 slot_id` (required).
        pub const SLOT_ID: u32 = 2;
    }
    /// `InnerRequest.MetaSync`.
    pub mod meta_sync_request {
        /// `Node node` (required).
        pub const NODE: u32 = 1;
        /// `string auth`.
        pub const AUTH: u32 = 2;
    }
    /// `InnerRequest.TrySync` and `InnerRequest.DBSync`.
    pub mod try_sync_request {
        /// `Node node` (required).
        pub const NODE: u32 = 1;
        /// `Slot slot` (required).
        pub const SLOT: u32 = 2;
        /// `BinlogOffset binlog_offset` (required).
        pub const BINLOG_OFFSET: u32 = 3;
    }
    /// `InnerRequest.BinlogSync`.
    pub mod binlog_sync_request {
        /// `Node node` (required).
        pub const NODE: u32 = 1;
        /// `string db_name` (required).
        pub const DB_NAME: u32 = 2;
        /// `uint32 slot_id` (required).
        pub const SLOT_ID: u32 = 3;
        /// `BinlogOffset ack_range_start` (required).
        pub const ACK_RANGE_START: u32 = 4;
        /// `BinlogOffset ack_range_end` (required).
        pub const ACK_RANGE_END: u32 = 5;
        /// `int32 session_id` (required).
        pub const SESSION_ID: u32 = 6;
        /// `bool first_send` (required).
        pub const FIRST_SEND: u32 = 7;
    }
    /// `InnerResponse.MetaSync`.
    pub mod meta_sync_response {
        /// `bool classic_mode` (required).
        pub const CLASSIC_MODE: u32 = 1;
        /// `repeated DBInfo dbs_info`.
        pub const DBS_INFO: u32 = 2;
        /// `string run_id` (3.5.0+).
        pub const RUN_ID: u32 = 3;
        /// `string replication_id` (3.5.2+).
        pub const REPLICATION_ID: u32 = 4;
    }
    /// `InnerResponse.MetaSync.DBInfo`.
    pub mod db_info {
        /// `string db_name` (required).
        pub const DB_NAME: u32 = 1;
        /// `int32 slot_num` (required).
        pub const SLOT_NUM: u32 = 2;
        /// `int32 db_instance_num` (4.0.0+).
        pub const DB_INSTANCE_NUM: u32 = 3;
    }
    /// `InnerResponse.DBSync`.
    pub mod db_sync_response {
        /// `Slot slot` (required).
        pub const SLOT: u32 = 1;
        /// `int32 session_id` (required).
        pub const SESSION_ID: u32 = 2;
    }
    /// `InnerResponse.TrySync`.
    pub mod try_sync_response {
        /// `ReplyCode reply_code` (required).
        pub const REPLY_CODE: u32 = 1;
        /// `Slot slot` (required).
        pub const SLOT: u32 = 2;
        /// `BinlogOffset binlog_offset`.
        pub const BINLOG_OFFSET: u32 = 3;
        /// `int32 session_id`.
        pub const SESSION_ID: u32 = 4;
    }
    /// `InnerResponse.BinlogSync` (one entry).
    pub mod binlog_sync_entry {
        /// `Slot slot` (required).
        pub const SLOT: u32 = 1;
        /// `BinlogOffset binlog_offset` (required).
        pub const BINLOG_OFFSET: u32 = 2;
        /// `bytes binlog` (required).
        pub const BINLOG: u32 = 3;
        /// `int32 session_id` (required).
        pub const SESSION_ID: u32 = 4;
    }
}

use field::*;

/// Why a body is not the message a view or editor expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// The bytes are not well-formed protobuf, or a known field has the wrong wire type.
    Proto(ProtoError),
    /// A required field is absent.
    MissingField {
        /// Message name.
        message: &'static str,
        /// Field name.
        field: &'static str,
    },
    /// A singular sub-message appears more than once.
    DuplicateField {
        /// Message name.
        message: &'static str,
        /// Field name.
        field: &'static str,
    },
    /// A binlog item inside an entry is malformed.
    Item(ItemError),
    /// One BinlogSync response carries entries of two DBs (Pika sends one DB per response).
    MixedSlots {
        /// The first entry's `db:slot`.
        first: String,
        /// A later entry's `db:slot`.
        other: String,
    },
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::Proto(e) => write!(f, "protobuf: {e}"),
            MessageError::MissingField { message, field } => {
                write!(f, "{message}: required field {field} is missing")
            }
            MessageError::DuplicateField { message, field } => {
                write!(f, "{message}: field {field} appears more than once")
            }
            MessageError::Item(e) => write!(f, "binlog item: {e}"),
            MessageError::MixedSlots { first, other } => write!(
                f,
                "one BinlogSync response carries items of {first} and {other}"
            ),
        }
    }
}

impl std::error::Error for MessageError {}

impl From<ProtoError> for MessageError {
    fn from(e: ProtoError) -> Self {
        MessageError::Proto(e)
    }
}

impl From<ItemError> for MessageError {
    fn from(e: ItemError) -> Self {
        MessageError::Item(e)
    }
}

fn required<T>(
    value: Option<T>,
    message: &'static str,
    field: &'static str,
) -> Result<T, MessageError> {
    value.ok_or(MessageError::MissingField { message, field })
}

/// Stores a singular sub-message, rejecting a second occurrence.
fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    message: &'static str,
    field: &'static str,
) -> Result<(), MessageError> {
    if slot.is_some() {
        return Err(MessageError::DuplicateField { message, field });
    }
    *slot = Some(value);
    Ok(())
}

/// `InnerMessage.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 1
    MetaSync,
    /// 2
    TrySync,
    /// 3
    DbSync,
    /// 4
    BinlogSync,
    /// 5 (defined, never sent)
    HeartBeat,
    /// 6
    RemoveSlaveNode,
    /// A value this crate does not know.
    Unknown(u64),
}

impl MessageType {
    /// From the wire value.
    pub fn from_wire(value: u64) -> MessageType {
        match value {
            1 => MessageType::MetaSync,
            2 => MessageType::TrySync,
            3 => MessageType::DbSync,
            4 => MessageType::BinlogSync,
            5 => MessageType::HeartBeat,
            6 => MessageType::RemoveSlaveNode,
            other => MessageType::Unknown(other),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> u64 {
        match self {
            MessageType::MetaSync => 1,
            MessageType::TrySync => 2,
            MessageType::DbSync => 3,
            MessageType::BinlogSync => 4,
            MessageType::HeartBeat => 5,
            MessageType::RemoveSlaveNode => 6,
            MessageType::Unknown(v) => v,
        }
    }
}

/// `InnerMessage.StatusCode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusCode {
    /// 1
    Ok,
    /// 2
    Error,
    /// 3 (3.3+; e.g. "Slave AlreadyExist")
    Other,
    /// A value this crate does not know.
    Unknown(u64),
}

impl StatusCode {
    /// From the wire value.
    pub fn from_wire(value: u64) -> StatusCode {
        match value {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            3 => StatusCode::Other,
            other => StatusCode::Unknown(other),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> u64 {
        match self {
            StatusCode::Ok => 1,
            StatusCode::Error => 2,
            StatusCode::Other => 3,
            StatusCode::Unknown(v) => v,
        }
    }
}

/// `InnerResponse.TrySync.ReplyCode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrySyncReplyCode {
    /// 1: the offset is usable; a session id follows.
    Ok,
    /// 2: the replica's binlog file is gone on the master: full sync.
    SyncPointBePurged,
    /// 3: the replica is ahead of the master.
    SyncPointLarger,
    /// 4: the offset is not the start of a record, or an internal error.
    Error,
    /// A value this crate does not know.
    Unknown(u64),
}

impl TrySyncReplyCode {
    /// From the wire value.
    pub fn from_wire(value: u64) -> TrySyncReplyCode {
        match value {
            1 => TrySyncReplyCode::Ok,
            2 => TrySyncReplyCode::SyncPointBePurged,
            3 => TrySyncReplyCode::SyncPointLarger,
            4 => TrySyncReplyCode::Error,
            other => TrySyncReplyCode::Unknown(other),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> u64 {
        match self {
            TrySyncReplyCode::Ok => 1,
            TrySyncReplyCode::SyncPointBePurged => 2,
            TrySyncReplyCode::SyncPointLarger => 3,
            TrySyncReplyCode::Error => 4,
            TrySyncReplyCode::Unknown(v) => v,
        }
    }
}

/// A binlog position: file number and offset in that file. Ordered as Pika compares them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BinlogPosition {
    /// `write2file<filenum>`.
    pub filenum: u32,
    /// Byte offset in that file.
    pub offset: u64,
}

impl BinlogPosition {
    /// A position.
    pub fn new(filenum: u32, offset: u64) -> Self {
        BinlogPosition { filenum, offset }
    }

    /// `(0, 0)`: the value of keepalive entries and ping acks.
    pub fn is_zero(&self) -> bool {
        self.filenum == 0 && self.offset == 0
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.filenum, self.offset)
    }
}

/// A position with the logical part (term, index = logic id), as BinlogSync messages carry it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LogicalOffset {
    /// File number.
    pub filenum: u32,
    /// Offset in the file.
    pub offset: u64,
    /// Consensus term (0 in classic mode).
    pub term: u32,
    /// Logic id of the item.
    pub index: u64,
}

impl LogicalOffset {
    /// The (filenum, offset) part, the only part Pika compares.
    pub fn position(&self) -> BinlogPosition {
        BinlogPosition::new(self.filenum, self.offset)
    }
}

/// A decoded `BinlogOffset`, recording which optional fields were present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BinlogOffset {
    /// Field 1.
    pub filenum: u32,
    /// Field 2.
    pub offset: u64,
    /// Field 3, when present.
    pub term: Option<u32>,
    /// Field 4, when present.
    pub index: Option<u64>,
}

impl BinlogOffset {
    /// The (filenum, offset) part.
    pub fn position(&self) -> BinlogPosition {
        BinlogPosition::new(self.filenum, self.offset)
    }

    /// All four values, absent term/index read as 0 (their proto default).
    pub fn logical(&self) -> LogicalOffset {
        LogicalOffset {
            filenum: self.filenum,
            offset: self.offset,
            term: self.term.unwrap_or(0),
            index: self.index.unwrap_or(0),
        }
    }

    /// Decodes a `BinlogOffset` message.
    pub fn parse(bytes: &[u8]) -> Result<BinlogOffset, MessageError> {
        const MSG: &str = "BinlogOffset";
        let (mut filenum, mut offset, mut term, mut index) = (None, None, None, None);
        for f in FieldIter::new(bytes) {
            let f = f?;
            match f.number() {
                binlog_offset::FILENUM => filenum = Some(f.uint32()?),
                binlog_offset::OFFSET => offset = Some(f.uint64()?),
                binlog_offset::TERM => term = Some(f.uint32()?),
                binlog_offset::INDEX => index = Some(f.uint64()?),
                _ => {}
            }
        }
        Ok(BinlogOffset {
            filenum: required(filenum, MSG, "filenum")?,
            offset: required(offset, MSG, "offset")?,
            term,
            index,
        })
    }
}

/// `InnerMessage.Node`: the replica's address as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Node<'a> {
    /// IP as text.
    pub ip: &'a [u8],
    /// The replica's own (RESP) port.
    pub port: i32,
}

impl<'a> Node<'a> {
    /// Decodes a `Node` message.
    pub fn parse(bytes: &'a [u8]) -> Result<Node<'a>, MessageError> {
        let (mut ip, mut port) = (None, None);
        for f in FieldIter::new(bytes) {
            let f = f?;
            match f.number() {
                node::IP => ip = Some(f.bytes()?),
                node::PORT => port = Some(f.int32()?),
                _ => {}
            }
        }
        Ok(Node {
            ip: required(ip, "Node", "ip")?,
            port: required(port, "Node", "port")?,
        })
    }

    fn encoded_len(&self) -> usize {
        len_field_len(node::IP, self.ip.len())
            + varint_field_len(node::PORT, int32_as_varint(self.port))
    }

    fn write(&self, out: &mut Vec<u8>) {
        put_len_field(out, node::IP, self.ip);
        put_int32_field(out, node::PORT, self.port);
    }
}

/// `InnerMessage.Slot`: a DB (named `Partition{table_name, partition_id}` before 3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot<'a> {
    /// DB name, e.g. `db0`.
    pub db_name: &'a [u8],
    /// Slot id (0 in classic mode).
    pub slot_id: u32,
}

impl<'a> Slot<'a> {
    /// Decodes a `Slot` message.
    pub fn parse(bytes: &'a [u8]) -> Result<Slot<'a>, MessageError> {
        let (mut db_name, mut slot_id) = (None, None);
        for f in FieldIter::new(bytes) {
            let f = f?;
            match f.number() {
                slot::DB_NAME => db_name = Some(f.bytes()?),
                slot::SLOT_ID => slot_id = Some(f.uint32()?),
                _ => {}
            }
        }
        Ok(Slot {
            db_name: required(db_name, "Slot", "db_name")?,
            slot_id: required(slot_id, "Slot", "slot_id")?,
        })
    }

    fn encoded_len(&self) -> usize {
        len_field_len(slot::DB_NAME, self.db_name.len())
            + varint_field_len(slot::SLOT_ID, u64::from(self.slot_id))
    }

    fn write(&self, out: &mut Vec<u8>) {
        put_len_field(out, slot::DB_NAME, self.db_name);
        put_varint_field(out, slot::SLOT_ID, u64::from(self.slot_id));
    }
}

fn position_len(p: &BinlogPosition) -> usize {
    varint_field_len(binlog_offset::FILENUM, u64::from(p.filenum))
        + varint_field_len(binlog_offset::OFFSET, p.offset)
}

/// Writes a `BinlogOffset` with fields 1 and 2, as Pika does in TrySync/DBSync messages.
fn write_position(out: &mut Vec<u8>, p: &BinlogPosition) {
    put_varint_field(out, binlog_offset::FILENUM, u64::from(p.filenum));
    put_varint_field(out, binlog_offset::OFFSET, p.offset);
}

fn logical_len(o: &LogicalOffset) -> usize {
    position_len(&o.position())
        + varint_field_len(binlog_offset::TERM, u64::from(o.term))
        + varint_field_len(binlog_offset::INDEX, o.index)
}

/// Writes a `BinlogOffset` with fields 1–4, as Pika does in BinlogSync messages.
fn write_logical(out: &mut Vec<u8>, o: &LogicalOffset) {
    write_position(out, &o.position());
    put_varint_field(out, binlog_offset::TERM, u64::from(o.term));
    put_varint_field(out, binlog_offset::INDEX, o.index);
}

/// Writes a length-delimited sub-message whose payload length is known in advance.
fn put_message(
    out: &mut Vec<u8>,
    number: u32,
    payload_len: usize,
    write: impl FnOnce(&mut Vec<u8>),
) {
    put_len_prefix(out, number, payload_len);
    let before = out.len();
    write(out);
    debug_assert_eq!(
        out.len() - before,
        payload_len,
        "field {number}: length mismatch"
    );
}

/// Reads a singular sub-message field into `slot` with `parse`.
fn parse_sub<'a, T>(
    slot: &mut Option<T>,
    f: &Field<'a>,
    parse: impl FnOnce(&'a [u8]) -> Result<T, MessageError>,
    message: &'static str,
    field: &'static str,
) -> Result<(), MessageError> {
    let value = parse(f.bytes()?)?;
    set_once(slot, value, message, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_round_trip() {
        for v in 0..8 {
            assert_eq!(MessageType::from_wire(v).to_wire(), v);
            assert_eq!(StatusCode::from_wire(v).to_wire(), v);
            assert_eq!(TrySyncReplyCode::from_wire(v).to_wire(), v);
        }
        assert_eq!(
            TrySyncReplyCode::from_wire(2),
            TrySyncReplyCode::SyncPointBePurged
        );
    }

    #[test]
    fn positions_order_by_file_then_offset() {
        assert!(BinlogPosition::new(0, 5000) < BinlogPosition::new(1, 0));
        assert!(BinlogPosition::new(1, 4) < BinlogPosition::new(1, 5));
        assert_eq!(BinlogPosition::new(0, 1687).to_string(), "0/1687");
    }
}
