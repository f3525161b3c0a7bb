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

use super::item::{BinlogItem, ItemError};
use super::proto::{
    int32_as_varint, len_field_len, put_bool_field, put_int32_field, put_len_field, put_len_prefix,
    put_varint_field, varint_field_len, ExpectedLayout, Field, FieldIter, MessageEditor,
    ProtoError,
};
use std::fmt;
use std::ops::Range;

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
    /// An edit names a `binlog_sync` entry the response does not have.
    NoSuchEntry {
        /// Requested index.
        index: usize,
        /// Entries in the response.
        count: usize,
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
            MessageError::NoSuchEntry { index, count } => {
                write!(
                    f,
                    "binlog_sync entry {index} requested, the response has {count}"
                )
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

// ---------------------------------------------------------------------------------------------
// Requests (replica → master)
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Responses (master → replica)
// ---------------------------------------------------------------------------------------------

/// View of an `InnerResponse` (master → replica on P+2000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerResponse<'a> {
    /// `type`.
    pub msg_type: MessageType,
    /// `code`.
    pub code: StatusCode,
    /// `reply` (error text), if present.
    pub reply: Option<&'a [u8]>,
    body: &'a [u8],
    meta_sync: Option<&'a [u8]>,
    db_sync: Option<&'a [u8]>,
    try_sync: Option<&'a [u8]>,
    binlog_sync_count: usize,
}

impl<'a> InnerResponse<'a> {
    /// Reads the top level of a response body (sub-messages are decoded on access).
    pub fn parse(body: &'a [u8]) -> Result<InnerResponse<'a>, MessageError> {
        const MSG: &str = "InnerResponse";
        let (mut msg_type, mut code, mut reply) = (None, None, None);
        let (mut meta_sync, mut db_sync, mut try_sync) = (None, None, None);
        let mut binlog_sync_count = 0;
        for f in FieldIter::new(body) {
            let f = f?;
            match f.number() {
                response::TYPE => msg_type = Some(MessageType::from_wire(f.varint()?)),
                response::CODE => code = Some(StatusCode::from_wire(f.varint()?)),
                response::REPLY => reply = Some(f.bytes()?),
                response::META_SYNC => set_once(&mut meta_sync, f.bytes()?, MSG, "meta_sync")?,
                response::DB_SYNC => set_once(&mut db_sync, f.bytes()?, MSG, "db_sync")?,
                response::TRY_SYNC => set_once(&mut try_sync, f.bytes()?, MSG, "try_sync")?,
                response::BINLOG_SYNC => {
                    f.bytes()?;
                    binlog_sync_count += 1;
                }
                response::REMOVE_SLAVE_NODE | response::CONSENSUS_META => {
                    f.bytes()?;
                }
                _ => {}
            }
        }
        Ok(InnerResponse {
            msg_type: required(msg_type, MSG, "type")?,
            code: required(code, MSG, "code")?,
            reply,
            body,
            meta_sync,
            db_sync,
            try_sync,
            binlog_sync_count,
        })
    }

    /// The `meta_sync` sub-message, if present.
    pub fn meta_sync(&self) -> Result<Option<MetaSyncResponse<'a>>, MessageError> {
        self.meta_sync.map(MetaSyncResponse::parse).transpose()
    }

    /// The `db_sync` sub-message, if present.
    pub fn db_sync(&self) -> Result<Option<DbSyncResponse<'a>>, MessageError> {
        self.db_sync.map(DbSyncResponse::parse).transpose()
    }

    /// The `try_sync` sub-message, if present.
    pub fn try_sync(&self) -> Result<Option<TrySyncResponse<'a>>, MessageError> {
        self.try_sync.map(TrySyncResponse::parse).transpose()
    }

    /// Number of `binlog_sync` entries.
    pub fn binlog_sync_count(&self) -> usize {
        self.binlog_sync_count
    }

    /// The `binlog_sync` entries, in order, each decoded when reached.
    pub fn binlog_sync_entries(&self) -> BinlogSyncEntries<'a> {
        BinlogSyncEntries {
            fields: FieldIter::new(self.body),
        }
    }

    /// True for a response whose every entry has an empty binlog (the master's keepalive).
    pub fn is_keepalive(&self) -> Result<bool, MessageError> {
        if self.msg_type != MessageType::BinlogSync || self.binlog_sync_count == 0 {
            return Ok(false);
        }
        for entry in self.binlog_sync_entries() {
            if !entry?.is_keepalive() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Iterator over the `binlog_sync` entries of a response.
#[derive(Clone, Debug)]
pub struct BinlogSyncEntries<'a> {
    fields: FieldIter<'a>,
}

impl<'a> BinlogSyncEntries<'a> {
    /// The next entry together with where its record lies in the response body and the
    /// record's payload (what [`put_binlog_sync_with_binlog`] takes), so a caller can splice
    /// while it reads.
    pub fn next_record(&mut self) -> Option<Result<BinlogSyncRecord<'a>, MessageError>> {
        loop {
            match self.fields.next()? {
                Err(e) => return Some(Err(e.into())),
                Ok(f) if f.number() == response::BINLOG_SYNC => {
                    let record = f.range();
                    return Some(f.bytes().map_err(MessageError::from).and_then(|payload| {
                        let (entry, binlog_record) =
                            BinlogSyncEntry::parse_locating_binlog(payload)?;
                        Ok(BinlogSyncRecord {
                            record,
                            payload,
                            binlog_record,
                            entry,
                        })
                    }));
                }
                Ok(_) => {}
            }
        }
    }
}

impl<'a> Iterator for BinlogSyncEntries<'a> {
    type Item = Result<BinlogSyncEntry<'a>, MessageError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().map(|r| r.map(|r| r.entry))
    }
}

/// A `binlog_sync` entry with its place in the response body.
#[derive(Clone, Debug)]
pub struct BinlogSyncRecord<'a> {
    /// Byte range of the whole field record (tag, length, payload) in the body.
    pub record: Range<usize>,
    /// The record's payload: the encoded entry.
    pub payload: &'a [u8],
    /// Where the entry's only `binlog` field record lies in `payload` (`None` if repeated).
    binlog_record: Option<Range<usize>>,
    /// The decoded entry.
    pub entry: BinlogSyncEntry<'a>,
}

impl BinlogSyncRecord<'_> {
    /// Appends to `out` this record with its entry's `binlog` replaced by `binlog`, every other
    /// field keeping its bytes and order (what [`put_binlog_sync_with_binlog`] does, without
    /// reading the entry's fields again when it has a single `binlog`).
    pub fn put_with_binlog(&self, out: &mut Vec<u8>, binlog: &[u8]) -> Result<(), MessageError> {
        let Some(old) = self.binlog_record.clone() else {
            return put_binlog_sync_with_binlog(out, self.payload, binlog);
        };
        let payload_len =
            self.payload.len() - old.len() + len_field_len(binlog_sync_entry::BINLOG, binlog.len());
        put_len_prefix(out, response::BINLOG_SYNC, payload_len);
        out.extend_from_slice(&self.payload[..old.start]);
        put_len_field(out, binlog_sync_entry::BINLOG, binlog);
        out.extend_from_slice(&self.payload[old.end..]);
        Ok(())
    }
}

/// `InnerResponse.MetaSync` (the proxy passes it through; decoded for logging and checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaSyncResponse<'a> {
    /// `classic_mode`.
    pub classic_mode: bool,
    /// `dbs_info`.
    pub dbs_info: Vec<DbInfo<'a>>,
    /// `run_id` (3.5.0+).
    pub run_id: Option<&'a [u8]>,
    /// `replication_id` (3.5.2+).
    pub replication_id: Option<&'a [u8]>,
}

/// `InnerResponse.MetaSync.DBInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbInfo<'a> {
    /// DB name.
    pub db_name: &'a [u8],
    /// `slot_num` (1 in classic mode).
    pub slot_num: i32,
    /// `db_instance_num` (4.0.0+).
    pub db_instance_num: Option<i32>,
}

impl<'a> DbInfo<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, MessageError> {
        let (mut db_name, mut slot_num, mut db_instance_num) = (None, None, None);
        for f in FieldIter::new(bytes) {
            let f = f?;
            match f.number() {
                db_info::DB_NAME => db_name = Some(f.bytes()?),
                db_info::SLOT_NUM => slot_num = Some(f.int32()?),
                db_info::DB_INSTANCE_NUM => db_instance_num = Some(f.int32()?),
                _ => {}
            }
        }
        Ok(DbInfo {
            db_name: required(db_name, "DBInfo", "db_name")?,
            slot_num: required(slot_num, "DBInfo", "slot_num")?,
            db_instance_num,
        })
    }
}

impl<'a> MetaSyncResponse<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, MessageError> {
        let (mut classic_mode, mut run_id, mut replication_id) = (None, None, None);
        let mut dbs_info = Vec::new();
        for f in FieldIter::new(bytes) {
            let f = f?;
            match f.number() {
                meta_sync_response::CLASSIC_MODE => classic_mode = Some(f.bool()?),
                meta_sync_response::DBS_INFO => dbs_info.push(DbInfo::parse(f.bytes()?)?),
                meta_sync_response::RUN_ID => run_id = Some(f.bytes()?),
                meta_sync_response::REPLICATION_ID => replication_id = Some(f.bytes()?),
                _ => {}
            }
        }
        Ok(MetaSyncResponse {
            classic_mode: required(classic_mode, "MetaSync", "classic_mode")?,
            dbs_info,
            run_id,
            replication_id,
        })
    }
}

/// `InnerResponse.DBSync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbSyncResponse<'a> {
    /// The DB.
    pub slot: Slot<'a>,
    /// Session id for the following BinlogSync requests.
    pub session_id: i32,
}

impl<'a> DbSyncResponse<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, MessageError> {
        const MSG: &str = "DBSync";
        let (mut slot, mut session_id) = (None, None);
        for f in FieldIter::new(bytes) {
            let f = f?;
            match f.number() {
                db_sync_response::SLOT => parse_sub(&mut slot, &f, Slot::parse, MSG, "slot")?,
                db_sync_response::SESSION_ID => session_id = Some(f.int32()?),
                _ => {}
            }
        }
        Ok(DbSyncResponse {
            slot: required(slot, MSG, "slot")?,
            session_id: required(session_id, MSG, "session_id")?,
        })
    }
}

/// `InnerResponse.TrySync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrySyncResponse<'a> {
    /// The verdict.
    pub reply_code: TrySyncReplyCode,
    /// The DB.
    pub slot: Slot<'a>,
    /// The master's producer position (set even on failure, except internal errors).
    pub binlog_offset: Option<BinlogOffset>,
    /// Session id (with `Ok`).
    pub session_id: Option<i32>,
}

impl<'a> TrySyncResponse<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, MessageError> {
        const MSG: &str = "TrySync";
        let (mut reply_code, mut slot, mut offset, mut session_id) = (None, None, None, None);
        for f in FieldIter::new(bytes) {
            let f = f?;
            match f.number() {
                try_sync_response::REPLY_CODE => {
                    reply_code = Some(TrySyncReplyCode::from_wire(f.varint()?))
                }
                try_sync_response::SLOT => parse_sub(&mut slot, &f, Slot::parse, MSG, "slot")?,
                try_sync_response::BINLOG_OFFSET => {
                    parse_sub(&mut offset, &f, BinlogOffset::parse, MSG, "binlog_offset")?
                }
                try_sync_response::SESSION_ID => session_id = Some(f.int32()?),
                _ => {}
            }
        }
        Ok(TrySyncResponse {
            reply_code: required(reply_code, MSG, "reply_code")?,
            slot: required(slot, MSG, "slot")?,
            binlog_offset: offset,
            session_id,
        })
    }
}

/// One `InnerResponse.BinlogSync` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinlogSyncEntry<'a> {
    /// The DB.
    pub slot: Slot<'a>,
    /// END of the item in the master's binlog, with term and index (= logic id);
    /// `(0,0,0,0)` for a keepalive.
    pub binlog_offset: BinlogOffset,
    /// The raw item (34-byte header + RESP); empty for a keepalive.
    pub binlog: &'a [u8],
    /// Session id.
    pub session_id: i32,
}

impl<'a> BinlogSyncEntry<'a> {
    /// Decodes one entry's bytes (the payload of a field-7 record).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MessageError> {
        Self::parse_locating_binlog(bytes).map(|(entry, _)| entry)
    }

    /// [`Self::parse`], plus the byte range of the `binlog` field record when the entry has
    /// exactly one (`None` when it repeats: the last occurrence wins, the others must go).
    fn parse_locating_binlog(
        bytes: &'a [u8],
    ) -> Result<(Self, Option<Range<usize>>), MessageError> {
        match Self::parse_pika_layout(bytes) {
            Some((entry, binlog_record)) => Ok((entry, Some(binlog_record))),
            None => Self::parse_any_layout(bytes),
        }
    }

    /// [`Self::parse_locating_binlog`] for any valid field layout.
    fn parse_any_layout(bytes: &'a [u8]) -> Result<(Self, Option<Range<usize>>), MessageError> {
        const MSG: &str = "BinlogSync";
        let (mut slot, mut offset, mut binlog, mut session_id) = (None, None, None, None);
        let mut binlog_record = None;
        let mut binlog_records = 0;
        for f in FieldIter::new(bytes) {
            let f = f?;
            match f.number() {
                binlog_sync_entry::SLOT => parse_sub(&mut slot, &f, Slot::parse, MSG, "slot")?,
                binlog_sync_entry::BINLOG_OFFSET => {
                    parse_sub(&mut offset, &f, BinlogOffset::parse, MSG, "binlog_offset")?
                }
                binlog_sync_entry::BINLOG => {
                    binlog = Some(f.bytes()?);
                    binlog_record = Some(f.range());
                    binlog_records += 1;
                }
                binlog_sync_entry::SESSION_ID => session_id = Some(f.int32()?),
                _ => {}
            }
        }
        let entry = BinlogSyncEntry {
            slot: required(slot, MSG, "slot")?,
            binlog_offset: required(offset, MSG, "binlog_offset")?,
            binlog: required(binlog, MSG, "binlog")?,
            session_id: required(session_id, MSG, "session_id")?,
        };
        Ok((entry, binlog_record.filter(|_| binlog_records == 1)))
    }

    /// The entry as Pika's master encodes it: `slot {db_name, slot_id}`, `binlog_offset
    /// {filenum, offset[, term, index]}`, `binlog`, `session_id`, in that order and nothing
    /// else; with the `binlog` record's range. `None` for any other layout (valid or not),
    /// which the general decoder then reads: both agree wherever this one answers.
    fn parse_pika_layout(bytes: &'a [u8]) -> Option<(Self, Range<usize>)> {
        let mut entry = ExpectedLayout::new(bytes);
        let mut slot = ExpectedLayout::new(entry.len_field(binlog_sync_entry::SLOT)?);
        let db_name = slot.len_field(slot::DB_NAME)?;
        let slot_id = slot.varint_field(slot::SLOT_ID)? as u32;
        if !slot.at_end() {
            return None;
        }
        let mut offset = ExpectedLayout::new(entry.len_field(binlog_sync_entry::BINLOG_OFFSET)?);
        let filenum = offset.varint_field(binlog_offset::FILENUM)? as u32;
        let position = offset.varint_field(binlog_offset::OFFSET)?;
        let (term, index) = if offset.at_end() {
            (None, None)
        } else {
            let term = offset.varint_field(binlog_offset::TERM)? as u32;
            let index = offset.varint_field(binlog_offset::INDEX)?;
            (Some(term), Some(index))
        };
        if !offset.at_end() {
            return None;
        }
        let binlog_start = entry.position();
        let binlog = entry.len_field(binlog_sync_entry::BINLOG)?;
        let binlog_record = binlog_start..entry.position();
        let session_id = entry.varint_field(binlog_sync_entry::SESSION_ID)? as u32 as i32;
        if !entry.at_end() {
            return None;
        }
        let parsed = BinlogSyncEntry {
            slot: Slot { db_name, slot_id },
            binlog_offset: BinlogOffset {
                filenum,
                offset: position,
                term,
                index,
            },
            binlog,
            session_id,
        };
        Some((parsed, binlog_record))
    }

    /// An entry with an empty binlog: the master's keepalive.
    pub fn is_keepalive(&self) -> bool {
        self.binlog.is_empty()
    }

    /// The binlog item (header checked against the content length).
    pub fn item(&self) -> Result<BinlogItem<'a>, ItemError> {
        BinlogItem::parse(self.binlog)
    }
}

// ---------------------------------------------------------------------------------------------
// Editors
// ---------------------------------------------------------------------------------------------

/// Sets fields 1–4 of the BinlogOffset being edited (other fields of it are kept).
fn set_logical(editor: &mut MessageEditor<'_>, o: &LogicalOffset) {
    editor.set_varint(binlog_offset::FILENUM, u64::from(o.filenum));
    editor.set_varint(binlog_offset::OFFSET, o.offset);
    editor.set_varint(binlog_offset::TERM, u64::from(o.term));
    editor.set_varint(binlog_offset::INDEX, o.index);
}

/// Replaces `ack_range_start` and/or `ack_range_end` of a BinlogSync request body.
///
/// The offsets are written with all four fields, as Pika writes them; any other field inside
/// the offsets, of the BinlogSync sub-message and of the request is kept byte for byte.
pub fn replace_ack_range(
    body: &[u8],
    start: Option<LogicalOffset>,
    end: Option<LogicalOffset>,
) -> Result<Vec<u8>, MessageError> {
    // Validate first: the edit must not turn a malformed or foreign message into something else.
    InnerRequest::parse(body)?
        .binlog_sync()?
        .ok_or(MessageError::MissingField {
            message: "InnerRequest",
            field: "binlog_sync",
        })?;
    let mut editor = MessageEditor::new(body)?;
    editor.edit_message::<MessageError, _>(request::BINLOG_SYNC, |sync| {
        if let Some(start) = start {
            sync.edit_message::<MessageError, _>(binlog_sync_request::ACK_RANGE_START, |o| {
                set_logical(o, &start);
                Ok(())
            })?;
        }
        if let Some(end) = end {
            sync.edit_message::<MessageError, _>(binlog_sync_request::ACK_RANGE_END, |o| {
                set_logical(o, &end);
                Ok(())
            })?;
        }
        Ok(())
    })?;
    Ok(editor.to_vec())
}

/// Replaces `ack_range_end` of a BinlogSync request body.
pub fn replace_ack_range_end(body: &[u8], end: LogicalOffset) -> Result<Vec<u8>, MessageError> {
    replace_ack_range(body, None, Some(end))
}

/// Replaces `ack_range_start` of a BinlogSync request body.
pub fn replace_ack_range_start(body: &[u8], start: LogicalOffset) -> Result<Vec<u8>, MessageError> {
    replace_ack_range(body, Some(start), None)
}

/// Replaces the (filenum, offset) of a TrySync request's `binlog_offset`.
///
/// Only fields 1 and 2 are written, as Pika does in TrySync; anything else inside the offset and
/// the rest of the request (e.g. a 2025+ `committed_id`) is kept byte for byte.
pub fn replace_try_sync_offset(
    body: &[u8],
    position: BinlogPosition,
) -> Result<Vec<u8>, MessageError> {
    InnerRequest::parse(body)?
        .try_sync()?
        .ok_or(MessageError::MissingField {
            message: "InnerRequest",
            field: "try_sync",
        })?;
    let mut editor = MessageEditor::new(body)?;
    editor.edit_message::<MessageError, _>(request::TRY_SYNC, |sync| {
        sync.edit_message::<MessageError, _>(try_sync_request::BINLOG_OFFSET, |o| {
            o.set_varint(binlog_offset::FILENUM, u64::from(position.filenum));
            o.set_varint(binlog_offset::OFFSET, position.offset);
            Ok(())
        })
    })?;
    Ok(editor.to_vec())
}

/// A `binlog_sync` entry built from scratch.
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

/// One entry of a rebuilt BinlogSync response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryOutput<'r> {
    /// Original entry `index`, byte for byte.
    Original(usize),
    /// Original entry `index` with its `binlog` replaced; its other fields, unknown ones
    /// included, are kept.
    WithBinlog {
        /// Index among the original entries.
        index: usize,
        /// New item bytes.
        binlog: &'r [u8],
    },
    /// A new entry.
    New(NewBinlogSyncEntry<'r>),
}

/// Rebuilds a BinlogSync response with the given entries.
///
/// The entries are written where the first original entry was (or, if there was none, in
/// field-number order); every other field of the response is kept byte for byte and in place.
pub fn rebuild_binlog_sync_response(
    body: &[u8],
    outputs: &[EntryOutput<'_>],
) -> Result<Vec<u8>, MessageError> {
    let fields = super::proto::parse_message(body)?;
    let entries: Vec<&[u8]> = fields
        .iter()
        .filter(|f| f.number() == response::BINLOG_SYNC)
        .map(|f| f.bytes())
        .collect::<Result<_, _>>()?;

    // Plan every output entry first so the result is written with one allocation.
    let mut plans = Vec::with_capacity(outputs.len());
    for output in outputs {
        let plan = match *output {
            EntryOutput::Original(index) => EntryPlan::whole(entry_at(&entries, index)?.len()),
            EntryOutput::WithBinlog { index, binlog } => {
                EntryPlan::with_binlog(entry_at(&entries, index)?, binlog)?
            }
            EntryOutput::New(entry) => EntryPlan::whole(entry.payload_len()),
        };
        plans.push(plan);
    }
    let entries_len: usize = plans
        .iter()
        .map(|plan| len_field_len(response::BINLOG_SYNC, plan.payload_len))
        .sum();
    let others_len: usize = fields
        .iter()
        .filter(|f| f.number() != response::BINLOG_SYNC)
        .map(|f| f.record().len())
        .sum();

    let insert_before = fields
        .iter()
        .position(|f| f.number() == response::BINLOG_SYNC)
        .or_else(|| {
            fields
                .iter()
                .position(|f| f.number() > response::BINLOG_SYNC)
        })
        .unwrap_or(fields.len());
    let mut out = Vec::with_capacity(entries_len + others_len);
    let mut written = false;
    for (i, f) in fields.iter().enumerate() {
        if i == insert_before {
            write_entries(&mut out, &entries, outputs, &plans)?;
            written = true;
        }
        if f.number() != response::BINLOG_SYNC {
            out.extend_from_slice(f.record());
        }
    }
    if !written {
        write_entries(&mut out, &entries, outputs, &plans)?;
    }
    Ok(out)
}

/// Replaces the `binlog` of the entries of a BinlogSync response: `replacements[i]` is the new
/// item for entry `i` (`None`, or an index past the slice, keeps the entry unchanged). Every
/// record is rewritten where it stands, so unchanged records (and their order, even when other
/// fields sit between entries) stay byte for byte as they were.
pub fn replace_binlog_sync_binlogs(
    body: &[u8],
    replacements: &[Option<&[u8]>],
) -> Result<Vec<u8>, MessageError> {
    let count = InnerResponse::parse(body)?.binlog_sync_count();
    if replacements.len() > count {
        return Err(MessageError::NoSuchEntry {
            index: replacements.len() - 1,
            count,
        });
    }
    let fields = super::proto::parse_message(body)?;
    let mut out = Vec::with_capacity(body.len() + 64 * replacements.len());
    let mut index = 0;
    for f in &fields {
        if f.number() != response::BINLOG_SYNC {
            out.extend_from_slice(f.record());
            continue;
        }
        match replacements.get(index).copied().flatten() {
            Some(binlog) => put_binlog_sync_with_binlog(&mut out, f.bytes()?, binlog)?,
            None => out.extend_from_slice(f.record()),
        }
        index += 1;
    }
    Ok(out)
}

/// Appends to `out` a `binlog_sync` record made of `entry` (the payload of an original record)
/// with its `binlog` replaced by `binlog`; every other field keeps its bytes and order.
pub fn put_binlog_sync_with_binlog(
    out: &mut Vec<u8>,
    entry: &[u8],
    binlog: &[u8],
) -> Result<(), MessageError> {
    let plan = EntryPlan::with_binlog(entry, binlog)?;
    let output = [EntryOutput::WithBinlog { index: 0, binlog }];
    write_entries(out, &[entry], &output, &[plan])
}

fn entry_at<'a>(entries: &[&'a [u8]], index: usize) -> Result<&'a [u8], MessageError> {
    entries
        .get(index)
        .copied()
        .ok_or(MessageError::NoSuchEntry {
            index,
            count: entries.len(),
        })
}

/// How one output entry is written.
struct EntryPlan {
    /// Length of the entry's payload.
    payload_len: usize,
    /// For a `binlog` replacement: index of the entry field before which the new `binlog`
    /// record goes (the last original `binlog`, whose duplicates are dropped, or else the first
    /// higher-numbered field, or the field count to append).
    binlog_at: usize,
}

impl EntryPlan {
    fn whole(payload_len: usize) -> Self {
        EntryPlan {
            payload_len,
            binlog_at: 0,
        }
    }

    fn with_binlog(entry: &[u8], binlog: &[u8]) -> Result<Self, MessageError> {
        let mut kept = 0;
        let mut last_binlog = None;
        let mut first_after = None;
        let mut count = 0;
        for (i, f) in FieldIter::new(entry).enumerate() {
            let f = f?;
            if f.number() == binlog_sync_entry::BINLOG {
                last_binlog = Some(i);
            } else {
                kept += f.record().len();
                if f.number() > binlog_sync_entry::BINLOG && first_after.is_none() {
                    first_after = Some(i);
                }
            }
            count = i + 1;
        }
        Ok(EntryPlan {
            payload_len: kept + len_field_len(binlog_sync_entry::BINLOG, binlog.len()),
            binlog_at: last_binlog.or(first_after).unwrap_or(count),
        })
    }
}

fn write_entry_with_binlog(
    out: &mut Vec<u8>,
    entry: &[u8],
    binlog: &[u8],
    binlog_at: usize,
) -> Result<(), MessageError> {
    let mut written = false;
    for (i, f) in FieldIter::new(entry).enumerate() {
        let f = f?;
        if i == binlog_at {
            put_len_field(out, binlog_sync_entry::BINLOG, binlog);
            written = true;
        }
        if f.number() != binlog_sync_entry::BINLOG {
            out.extend_from_slice(f.record());
        }
    }
    if !written {
        put_len_field(out, binlog_sync_entry::BINLOG, binlog);
    }
    Ok(())
}

fn write_entries(
    out: &mut Vec<u8>,
    entries: &[&[u8]],
    outputs: &[EntryOutput<'_>],
    plans: &[EntryPlan],
) -> Result<(), MessageError> {
    for (output, plan) in outputs.iter().zip(plans) {
        put_len_prefix(out, response::BINLOG_SYNC, plan.payload_len);
        match *output {
            EntryOutput::Original(index) => out.extend_from_slice(entry_at(entries, index)?),
            EntryOutput::WithBinlog { index, binlog } => {
                write_entry_with_binlog(out, entry_at(entries, index)?, binlog, plan.binlog_at)?
            }
            EntryOutput::New(entry) => entry.write_payload(out),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

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

/// A keepalive response: one entry with an empty binlog and offset `(0,0,0,0)`.
pub fn build_keepalive_response(slot: Slot<'_>, session_id: i32) -> Vec<u8> {
    build_binlog_sync_response(&[NewBinlogSyncEntry {
        slot,
        binlog_offset: LogicalOffset::default(),
        binlog: b"",
        session_id,
    }])
}

#[cfg(test)]
mod tests {
    /// Found by the `pika_frames` fuzz target: a response whose BinlogSync entries have another
    /// field between them was regrouped by an unchanged splice. It must come back byte-identical.
    #[test]
    fn unchanged_splice_keeps_interleaved_fields_in_place() {
        let input: &[u8] =
            include_bytes!("../../fuzz/corpus/pika_frames/regression-interleaved-entries");
        let mut checked = 0;
        let mut try_body = |b: &[u8]| {
            if let Ok(resp) = InnerResponse::parse(b) {
                let unchanged = vec![None; resp.binlog_sync_count()];
                if let Ok(same) = replace_binlog_sync_binlogs(b, &unchanged) {
                    assert_eq!(same, b);
                    checked += 1;
                }
            }
        };
        try_body(input);
        if let Ok(frames) = crate::pika::frame::FrameCodec::new().decode_all(input) {
            for f in frames {
                try_body(&f);
            }
        }
        assert!(
            checked > 0,
            "the regression input no longer parses as a response"
        );
    }

    use super::*;
    use crate::pika::proto::{parse_message, put_len_field};
    use proptest::prelude::*;

    fn entry_payloads(body: &[u8]) -> Vec<Vec<u8>> {
        let mut entries = InnerResponse::parse(body).unwrap().binlog_sync_entries();
        std::iter::from_fn(|| entries.next_record())
            .map(|r| r.unwrap().payload.to_vec())
            .collect()
    }

    /// Every entry of the BinlogSync responses captured from Pika 3.5.4 takes the fast path, and
    /// it reads what the general decoder reads.
    #[test]
    fn captured_entries_have_the_pika_layout() {
        let mut checked = 0;
        for name in [
            "session1-repl1-master-to-replica.bin",
            "session1-repl2-master-to-replica.bin",
            "session2-repl-master-to-replica.bin",
        ] {
            let stream = crate::fixtures::read(&format!("pika-3.5.4/{name}")).unwrap();
            for body in crate::pika::frame::FrameCodec::new()
                .decode_all(&stream)
                .unwrap()
            {
                let Ok(response) = InnerResponse::parse(&body) else {
                    continue;
                };
                if response.msg_type != MessageType::BinlogSync {
                    continue;
                }
                for payload in entry_payloads(&body) {
                    let fast = BinlogSyncEntry::parse_pika_layout(&payload)
                        .unwrap_or_else(|| panic!("{name}: entry not in Pika's layout"));
                    let general = BinlogSyncEntry::parse_any_layout(&payload).unwrap();
                    assert_eq!((fast.0, Some(fast.1)), general, "{name}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 50, "only {checked} captured entries");
    }

    fn arbitrary_entry() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::vec(any::<u8>(), 0..6),
            any::<u32>(),
            any::<(u32, u64, u32, u64)>(),
            prop::collection::vec(any::<u8>(), 0..40),
            any::<i32>(),
        )
            .prop_map(
                |(db, slot_id, (filenum, offset, term, index), binlog, session)| {
                    let entry = NewBinlogSyncEntry {
                        slot: Slot {
                            db_name: &db,
                            slot_id,
                        },
                        binlog_offset: LogicalOffset {
                            filenum,
                            offset,
                            term,
                            index,
                        },
                        binlog: &binlog,
                        session_id: session,
                    };
                    entry_payloads(&build_binlog_sync_response(&[entry])).remove(0)
                },
            )
    }

    proptest! {
        /// Where the fast path answers, it answers what the general decoder does, however the
        /// bytes were damaged; built entries always take it.
        #[test]
        fn pika_layout_reader_agrees_with_the_general_decoder(
            payload in arbitrary_entry(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 0..3),
        ) {
            let general = BinlogSyncEntry::parse_any_layout(&payload).unwrap();
            let fast = BinlogSyncEntry::parse_pika_layout(&payload).expect("built entry");
            prop_assert_eq!((fast.0, Some(fast.1)), general);
            let mut damaged = payload.clone();
            for (at, byte, kind) in edits {
                let i = at.index(damaged.len() + 1);
                match kind {
                    0 if i < damaged.len() => damaged[i] = byte,
                    1 => damaged.insert(i, byte),
                    _ => damaged.truncate(i),
                }
            }
            if let Some((entry, range)) = BinlogSyncEntry::parse_pika_layout(&damaged) {
                prop_assert_eq!(
                    BinlogSyncEntry::parse_any_layout(&damaged),
                    Ok((entry, Some(range)))
                );
            }
        }

        /// Splicing through the remembered `binlog` range writes what the general splicer
        /// writes, for entries in Pika's layout and in any other.
        #[test]
        fn record_splice_matches_the_general_splicer(
            payload in arbitrary_entry(),
            unknown_first in any::<bool>(),
            new_binlog in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut payload = payload;
            if unknown_first {
                let mut other = Vec::new();
                put_len_field(&mut other, 50, b"unknown");
                other.extend_from_slice(&payload);
                payload = other;
            }
            let body = response_with_entry(&payload);
            let response = InnerResponse::parse(&body).unwrap();
            let mut records = response.binlog_sync_entries();
            let record = records.next_record().unwrap().unwrap();
            let mut fast = Vec::new();
            record.put_with_binlog(&mut fast, &new_binlog).unwrap();
            let mut general = Vec::new();
            put_binlog_sync_with_binlog(&mut general, record.payload, &new_binlog).unwrap();
            prop_assert_eq!(fast, general);
        }
    }

    const SLOT0: Slot<'static> = Slot {
        db_name: b"db0",
        slot_id: 0,
    };

    fn entry(binlog: &[u8], session_id: i32) -> NewBinlogSyncEntry<'_> {
        NewBinlogSyncEntry {
            slot: SLOT0,
            binlog_offset: LogicalOffset {
                filenum: 0,
                offset: 95,
                term: 0,
                index: 1,
            },
            binlog,
            session_id,
        }
    }

    fn numbers(message: &[u8]) -> Vec<u32> {
        parse_message(message)
            .unwrap()
            .iter()
            .map(|f| f.number())
            .collect()
    }

    /// A response whose only entry is `entry_payload`, followed by field 99.
    fn response_with_entry(entry_payload: &[u8]) -> Vec<u8> {
        let mut body = vec![0x08, 0x04, 0x10, 0x01];
        put_len_field(&mut body, response::BINLOG_SYNC, entry_payload);
        body.extend_from_slice(&[0x98, 0x06, 0x01]);
        body
    }

    #[test]
    fn binlog_is_inserted_in_order_when_an_entry_lacks_it() {
        // slot, binlog_offset, session_id: no binlog (Pika would reject it, the splicer copes).
        let full = build_binlog_sync_response(&[entry(b"", 3)]);
        let payload = InnerResponse::parse(&full)
            .unwrap()
            .binlog_sync_entries()
            .next()
            .unwrap()
            .unwrap();
        let mut without_binlog = Vec::new();
        for f in FieldIter::new(parse_message(&full).unwrap()[2].bytes().unwrap()) {
            let f = f.unwrap();
            if f.number() != binlog_sync_entry::BINLOG {
                without_binlog.extend_from_slice(f.record());
            }
        }
        let body = response_with_entry(&without_binlog);
        let edited = replace_binlog_sync_binlogs(&body, &[Some(b"item")]).unwrap();
        let fields = parse_message(&edited).unwrap();
        assert_eq!(numbers(&edited), vec![1, 2, 7, 99]);
        assert_eq!(numbers(fields[2].bytes().unwrap()), vec![1, 2, 3, 4]);
        let after = InnerResponse::parse(&edited)
            .unwrap()
            .binlog_sync_entries()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(after.binlog, b"item");
        assert_eq!(after.session_id, payload.session_id);
    }

    #[test]
    fn duplicate_binlogs_collapse_to_one_at_the_last_position() {
        let mut payload = Vec::new();
        put_len_field(&mut payload, binlog_sync_entry::BINLOG, b"old1");
        put_len_field(&mut payload, 50, b"unknown");
        put_len_field(&mut payload, binlog_sync_entry::BINLOG, b"old2");
        let body = response_with_entry(&payload);
        let edited = replace_binlog_sync_binlogs(&body, &[Some(b"new")]).unwrap();
        let entry = parse_message(&edited).unwrap()[2].bytes().unwrap().to_vec();
        let mut expected = Vec::new();
        put_len_field(&mut expected, 50, b"unknown");
        put_len_field(&mut expected, binlog_sync_entry::BINLOG, b"new");
        assert_eq!(entry, expected);
    }

    #[test]
    fn entries_go_in_number_order_when_the_response_had_none() {
        // type, code, consensus_meta (9): new entries go before field 9.
        let body = vec![0x08, 0x04, 0x10, 0x01, 0x4a, 0x00];
        let item = b"x";
        let rebuilt =
            rebuild_binlog_sync_response(&body, &[EntryOutput::New(entry(item, 1))]).unwrap();
        assert_eq!(numbers(&rebuilt), vec![1, 2, 7, 9]);
        let no_entries = rebuild_binlog_sync_response(&rebuilt, &[]).unwrap();
        assert_eq!(no_entries, body);
    }

    #[test]
    fn negative_session_ids_use_ten_byte_varints() {
        let body = build_keepalive_response(SLOT0, -1);
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
