//! In-place editors: each re-encodes a body with a few fields replaced and every other byte,
//! unknown fields included, kept where it was: the ack ranges and TrySync offset of requests,
//! and ([`BinlogSyncSplice`]) the `binlog` of response entries.

use super::field::*;
use super::{BinlogPosition, BinlogSyncRecord, InnerRequest, LogicalOffset, MessageError};
use crate::pika::proto::{len_field_len, put_len_field, put_len_prefix, FieldIter, MessageEditor};

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

/// A [`BinlogSyncSplice`] stopped part-way, without its body.
#[derive(Debug, Default)]
pub struct SplicePaused {
    copied: usize,
    out: Option<Vec<u8>>,
}

/// A BinlogSync response re-encoded while its records are read: a replaced record gets a new
/// `binlog` (its other fields keep their bytes and order), the bytes between replaced records
/// are copied in one piece, and nothing is copied before the first replacement, so a response
/// whose entries all pass through is never copied.
#[derive(Debug)]
pub struct BinlogSyncSplice<'a> {
    body: &'a [u8],
    /// End of the part of `body` already in `out`.
    copied: usize,
    out: Option<Vec<u8>>,
}

impl<'a> BinlogSyncSplice<'a> {
    /// A splice of the response `body`, nothing replaced yet.
    pub fn new(body: &'a [u8]) -> Self {
        BinlogSyncSplice {
            body,
            copied: 0,
            out: None,
        }
    }

    /// Replaces the `binlog` of `record`'s entry with `binlog`. The records must be those of
    /// this body, in order, as
    /// [`BinlogSyncEntries::next_record`](super::BinlogSyncEntries::next_record) yields them.
    pub fn replace_binlog(
        &mut self,
        record: &BinlogSyncRecord<'_>,
        binlog: &[u8],
    ) -> Result<(), MessageError> {
        let body = self.body;
        // Half again the body's size: room for typical injected commands without a regrowth.
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity(body.len() + body.len() / 2));
        out.extend_from_slice(&body[self.copied..record.record.start]);
        record.put_with_binlog(out, binlog)?;
        self.copied = record.record.end;
        Ok(())
    }

    /// Stops the splice part-way (the response waits); [`Self::resume`] goes on from here.
    pub fn pause(self) -> SplicePaused {
        SplicePaused {
            copied: self.copied,
            out: self.out,
        }
    }

    /// A splice of `body` going on from where [`Self::pause`] left it.
    pub fn resume(body: &'a [u8], paused: SplicePaused) -> Self {
        BinlogSyncSplice {
            body,
            copied: paused.copied,
            out: paused.out,
        }
    }

    /// The new body, or `None` when nothing was replaced (the original bytes stand).
    pub fn finish(self) -> Option<Vec<u8>> {
        let mut out = self.out?;
        out.extend_from_slice(&self.body[self.copied..]);
        Some(out)
    }
}

/// Appends to `out` a `binlog_sync` record made of `entry` (the payload of an original record)
/// with its `binlog` replaced by `binlog`; every other field keeps its bytes and order. Duplicate
/// `binlog` fields (the last one wins in protobuf) collapse to one at the last one's place; a
/// missing one is inserted in field-number order.
pub(super) fn put_binlog_sync_with_binlog(
    out: &mut Vec<u8>,
    entry: &[u8],
    binlog: &[u8],
) -> Result<(), MessageError> {
    // Where the new `binlog` goes: before the last original one, or else before the first
    // higher-numbered field, or else at the end. Found first so the length prefix is known.
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
    let binlog_at = last_binlog.or(first_after).unwrap_or(count);
    let payload_len = kept + len_field_len(binlog_sync_entry::BINLOG, binlog.len());
    put_len_prefix(out, response::BINLOG_SYNC, payload_len);
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

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::put_binlog_sync_with_binlog;
    use crate::pika::proto::{parse_message, put_len_field};

    /// Found by the `pika_frames` fuzz target: a response whose BinlogSync entries have another
    /// field between them was regrouped by a splice. Every entry given its own `binlog` back, it
    /// must come back byte-identical.
    #[test]
    fn splice_keeps_interleaved_fields_in_place() {
        let input: &[u8] =
            include_bytes!("../../../fuzz/corpus/pika_frames/regression-interleaved-entries");
        let mut checked = 0;
        let mut try_body = |b: &[u8]| {
            let Ok(response) = InnerResponse::parse(b) else {
                return;
            };
            let mut records = response.binlog_sync_entries();
            let mut splice = BinlogSyncSplice::new(b);
            while let Some(Ok(record)) = records.next_record() {
                splice.replace_binlog(&record, record.entry.binlog).unwrap();
            }
            if let Some(same) = splice.finish() {
                assert_eq!(same, b);
                checked += 1;
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

    fn numbers(message: &[u8]) -> Vec<u32> {
        parse_message(message)
            .unwrap()
            .iter()
            .map(|f| f.number())
            .collect()
    }

    /// The payload of the single record `put_binlog_sync_with_binlog` wrote.
    fn record_payload(record: &[u8]) -> Vec<u8> {
        let fields = parse_message(record).unwrap();
        assert_eq!(numbers(record), vec![response::BINLOG_SYNC]);
        fields[0].bytes().unwrap().to_vec()
    }

    #[test]
    fn binlog_is_inserted_in_order_when_an_entry_lacks_it() {
        // slot, binlog_offset, session_id: no binlog (Pika would reject it, the splicer copes).
        let entry = NewBinlogSyncEntry {
            slot: Slot {
                db_name: b"db0",
                slot_id: 0,
            },
            binlog_offset: LogicalOffset {
                filenum: 0,
                offset: 95,
                term: 0,
                index: 1,
            },
            binlog: b"",
            session_id: 3,
        };
        let full = build_binlog_sync_response(&[entry]);
        let mut without_binlog = Vec::new();
        for f in FieldIter::new(parse_message(&full).unwrap()[2].bytes().unwrap()) {
            let f = f.unwrap();
            if f.number() != binlog_sync_entry::BINLOG {
                without_binlog.extend_from_slice(f.record());
            }
        }
        let mut record = Vec::new();
        put_binlog_sync_with_binlog(&mut record, &without_binlog, b"item").unwrap();
        let payload = record_payload(&record);
        assert_eq!(numbers(&payload), vec![1, 2, 3, 4]);
        let after = BinlogSyncEntry::parse(&payload).unwrap();
        assert_eq!(after.binlog, b"item");
        assert_eq!(after.session_id, 3);
    }

    #[test]
    fn duplicate_binlogs_collapse_to_one_at_the_last_position() {
        let mut payload = Vec::new();
        put_len_field(&mut payload, binlog_sync_entry::BINLOG, b"old1");
        put_len_field(&mut payload, 50, b"unknown");
        put_len_field(&mut payload, binlog_sync_entry::BINLOG, b"old2");
        let mut record = Vec::new();
        put_binlog_sync_with_binlog(&mut record, &payload, b"new").unwrap();
        let mut expected = Vec::new();
        put_len_field(&mut expected, 50, b"unknown");
        put_len_field(&mut expected, binlog_sync_entry::BINLOG, b"new");
        assert_eq!(record_payload(&record), expected);
    }
}
