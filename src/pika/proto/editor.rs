//! Re-encoding a message with some fields replaced, removed or inserted, every other record
//! copied byte for byte.

use super::reader::{parse_message, read_tag, Field};
use super::wire::{
    len_field_len, put_len_field, put_len_prefix, put_varint_field, varint_field_len,
};
use super::ProtoError;
use bytes::BufMut;

/// Re-encodes a message from its original bytes with some fields changed.
///
/// Every record that is not replaced or removed is copied byte for byte, in its original place,
/// including fields this crate does not know. With no edits the output equals the input.
///
/// Replacements are whole records (tag included); the `set_*` helpers build them. A field that
/// is set but was absent is inserted before the first field with a higher number, which is where
/// C++ protobuf (which writes fields in number order) would have put it.
#[derive(Clone, Debug)]
pub struct MessageEditor<'a> {
    original: &'a [u8],
    fields: Vec<Field<'a>>,
    /// Parallel to `fields`: `Some(bytes)` replaces that record (`Some(empty)` removes it).
    replacements: Vec<Option<Vec<u8>>>,
    /// New records, each written just before `fields[index]` (or at the end for `fields.len()`).
    insertions: Vec<(usize, Vec<u8>)>,
}

impl<'a> MessageEditor<'a> {
    /// Parses `original` for editing.
    pub fn new(original: &'a [u8]) -> Result<Self, ProtoError> {
        let fields = parse_message(original)?;
        let replacements = vec![None; fields.len()];
        Ok(MessageEditor {
            original,
            fields,
            replacements,
            insertions: Vec::new(),
        })
    }

    /// The original fields, in wire order.
    pub fn fields(&self) -> &[Field<'a>] {
        &self.fields
    }

    /// Index of the last original occurrence of `number` (the one a parser keeps for a
    /// singular field).
    pub fn last_index(&self, number: u32) -> Option<usize> {
        self.fields.iter().rposition(|f| f.number == number)
    }

    /// Replaces the record at `index` with `record` (a complete record, tag included).
    /// Does nothing for an index out of range.
    pub fn replace_at(&mut self, index: usize, record: Vec<u8>) {
        if let Some(slot) = self.replacements.get_mut(index) {
            *slot = Some(record);
        }
    }

    /// Removes every occurrence of `number`.
    pub fn remove(&mut self, number: u32) {
        for (field, slot) in self.fields.iter().zip(self.replacements.iter_mut()) {
            if field.number == number {
                *slot = Some(Vec::new());
            }
        }
        self.insertions
            .retain(|(_, record)| record_number(record) != Some(number));
    }

    /// Sets a singular field to the given record: replaces its last occurrence and removes any
    /// earlier ones, or inserts it in field-number order when absent.
    pub fn set_record(&mut self, number: u32, record: Vec<u8>) {
        match self.last_index(number) {
            Some(last) => {
                self.remove(number);
                self.replace_at(last, record);
            }
            None => {
                self.insertions
                    .retain(|(_, existing)| record_number(existing) != Some(number));
                let before = self
                    .fields
                    .iter()
                    .position(|f| f.number > number)
                    .unwrap_or(self.fields.len());
                self.insertions.push((before, record));
                // Keep insertions at one position in field-number order.
                self.insertions
                    .sort_by_key(|(index, record)| (*index, record_number(record)));
            }
        }
    }

    /// Sets a varint field (uint32/uint64/enum/bool).
    pub fn set_varint(&mut self, number: u32, value: u64) {
        let mut record = Vec::with_capacity(varint_field_len(number, value));
        put_varint_field(&mut record, number, value);
        self.set_record(number, record);
    }

    /// Sets a `bytes`/`string`/sub-message field to `payload`.
    pub fn set_bytes(&mut self, number: u32, payload: &[u8]) {
        let mut record = Vec::with_capacity(len_field_len(number, payload.len()));
        put_len_field(&mut record, number, payload);
        self.set_record(number, record);
    }

    /// Edits the sub-message in field `number` (its last original occurrence, or an empty
    /// message when absent) and sets the field to the result.
    ///
    /// The edit starts from the original bytes: an earlier replacement of the same field in this
    /// editor is overwritten.
    pub fn edit_message<E, F>(&mut self, number: u32, edit: F) -> Result<(), E>
    where
        E: From<ProtoError>,
        F: FnOnce(&mut MessageEditor<'a>) -> Result<(), E>,
    {
        let payload: &'a [u8] = match self.last_index(number) {
            Some(index) => self.fields[index].bytes()?,
            None => &[],
        };
        let mut sub = MessageEditor::new(payload)?;
        edit(&mut sub)?;
        let sub_len = sub.encoded_len();
        let mut record = Vec::with_capacity(len_field_len(number, sub_len));
        put_len_prefix(&mut record, number, sub_len);
        sub.write_to(&mut record);
        self.set_record(number, record);
        Ok(())
    }

    /// Whether any edit was made.
    pub fn is_modified(&self) -> bool {
        !self.insertions.is_empty() || self.replacements.iter().any(Option::is_some)
    }

    /// Length of the re-encoded message.
    pub fn encoded_len(&self) -> usize {
        let kept: usize = self
            .fields
            .iter()
            .zip(&self.replacements)
            .map(|(field, replacement)| match replacement {
                Some(bytes) => bytes.len(),
                None => field.record.len(),
            })
            .sum();
        kept + self.insertions.iter().map(|(_, r)| r.len()).sum::<usize>()
    }

    /// Writes the re-encoded message.
    pub fn write_to<B: BufMut + ?Sized>(&self, out: &mut B) {
        let mut insertions = self.insertions.iter().peekable();
        for (index, (field, replacement)) in self.fields.iter().zip(&self.replacements).enumerate()
        {
            while let Some((_, record)) = insertions.next_if(|(before, _)| *before == index) {
                out.put_slice(record);
            }
            match replacement {
                Some(bytes) => out.put_slice(bytes),
                None => out.put_slice(field.record),
            }
        }
        for (_, record) in insertions {
            out.put_slice(record);
        }
    }

    /// The re-encoded message.
    pub fn to_vec(&self) -> Vec<u8> {
        if !self.is_modified() {
            return self.original.to_vec();
        }
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }
}

/// Field number of a record built by this module (for ordering insertions).
fn record_number(record: &[u8]) -> Option<u32> {
    read_tag(record, 0).ok().map(|(number, _, _)| number)
}
