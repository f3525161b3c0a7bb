//! In-place editors: each re-encodes a body with a few fields replaced and every other byte,
//! unknown fields included, kept where it was (the ack ranges and TrySync offset of requests, the
//! `binlog` of response entries).

use super::field::*;
use super::{
    BinlogPosition, InnerRequest, InnerResponse, LogicalOffset, MessageError, NewBinlogSyncEntry,
};
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
    let fields = crate::pika::proto::parse_message(body)?;
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
    let fields = crate::pika::proto::parse_message(body)?;
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

#[cfg(test)]
mod tests {
    use super::super::test_entries::*;
    use super::super::*;
    use crate::pika::proto::{parse_message, put_len_field};

    /// Found by the `pika_frames` fuzz target: a response whose BinlogSync entries have another
    /// field between them was regrouped by an unchanged splice. It must come back byte-identical.
    #[test]
    fn unchanged_splice_keeps_interleaved_fields_in_place() {
        let input: &[u8] =
            include_bytes!("../../../fuzz/corpus/pika_frames/regression-interleaved-entries");
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
}
