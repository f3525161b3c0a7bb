//! Views of the `InnerResponse` messages the master sends a replica on P+2000: the top level,
//! the `binlog_sync` entries (each with where its record lies, so the relay can splice while it
//! reads) and the MetaSync, DBSync and TrySync sub-messages.

use super::editors::put_binlog_sync_with_binlog;
use super::field::*;
use super::{
    parse_sub, required, set_once, BinlogOffset, MessageError, MessageType, Slot, StatusCode,
    TrySyncReplyCode,
};
use crate::pika::item::{BinlogItem, ItemError};
use crate::pika::proto::{len_field_len, put_len_field, put_len_prefix, ExpectedLayout, FieldIter};
use std::ops::Range;

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
        Self::parse_with(body, |_, _| {})
    }

    /// [`Self::parse`], handing each `binlog_sync` record to `binlog_sync` as it is read (its
    /// byte range in the body and its payload), so a caller can decode the entries
    /// ([`BinlogSyncRecord::decode`]) without walking the body again.
    pub fn parse_with(
        body: &'a [u8],
        mut binlog_sync: impl FnMut(Range<usize>, &'a [u8]),
    ) -> Result<InnerResponse<'a>, MessageError> {
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
                    binlog_sync(f.range(), f.bytes()?);
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
    /// record's payload, so a caller can splice while it reads (see
    /// [`BinlogSyncSplice`](super::BinlogSyncSplice)).
    pub fn next_record(&mut self) -> Option<Result<BinlogSyncRecord<'a>, MessageError>> {
        loop {
            match self.fields.next()? {
                Err(e) => return Some(Err(e.into())),
                Ok(f) if f.number() == response::BINLOG_SYNC => {
                    let record = f.range();
                    return Some(
                        f.bytes()
                            .map_err(MessageError::from)
                            .and_then(|payload| BinlogSyncRecord::decode(record, payload)),
                    );
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

impl<'a> BinlogSyncRecord<'a> {
    /// Decodes the entry of the `binlog_sync` field record that lies at `record` in the
    /// response body, with payload `payload`.
    pub fn decode(record: Range<usize>, payload: &'a [u8]) -> Result<Self, MessageError> {
        let (entry, binlog_record) = BinlogSyncEntry::parse_locating_binlog(payload)?;
        Ok(BinlogSyncRecord {
            record,
            payload,
            binlog_record,
            entry,
        })
    }

    /// Appends to `out` this record with its entry's `binlog` replaced by `binlog`, every other
    /// field keeping its bytes and order (what the general entry splicer does, without reading
    /// the entry's fields again when it has a single `binlog`).
    pub(super) fn put_with_binlog(
        &self,
        out: &mut Vec<u8>,
        binlog: &[u8],
    ) -> Result<(), MessageError> {
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

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::put_binlog_sync_with_binlog;
    use crate::pika::proto::put_len_field;
    use proptest::prelude::*;

    fn entry_payloads(body: &[u8]) -> Vec<Vec<u8>> {
        let mut entries = InnerResponse::parse(body).unwrap().binlog_sync_entries();
        std::iter::from_fn(|| entries.next_record())
            .map(|r| r.unwrap().payload.to_vec())
            .collect()
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

    /// A response whose only entry is `entry_payload`, followed by field 99.
    fn response_with_entry(entry_payload: &[u8]) -> Vec<u8> {
        let mut body = vec![0x08, 0x04, 0x10, 0x01];
        put_len_field(&mut body, response::BINLOG_SYNC, entry_payload);
        body.extend_from_slice(&[0x98, 0x06, 0x01]);
        body
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
}
