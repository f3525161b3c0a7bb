//! Pika's on-disk binlog (`log_db<N>/write2file<filenum>`) and its `manifest`.
//!
//! The file is a leveldb-style log of 64 KiB blocks. Each physical record is an 8-byte header
//! `[len: u24 LE][time: u32 LE][type: u8]` followed by `len` bytes. An item that does not fit in
//! the rest of a block is split into First/Middle/Last fragments; a block tail shorter than a
//! header is zero-filled; padding written after a full sync uses BadRecord records. Offsets in
//! the replication protocol are positions in this file, so this module reports, for every item,
//! where it starts and ends.
//!
//! It owns reading such a file (items with their start/end positions), writing one the way
//! Pika's writer does (for test peers that must produce Pika-compatible offsets), and the
//! 24-byte manifest. Reading and writing work on in-memory bytes; file I/O is the caller's.

use super::item::{build_item, ItemError, ItemHeader, ITEM_TYPE_FIRST};
use std::borrow::Cow;
use std::fmt;

/// Size of one log block.
pub const BLOCK_SIZE: usize = 64 * 1024;

/// Size of a physical record header.
pub const RECORD_HEADER_LEN: usize = 8;

/// Bytes of the manifest that carry data (the file itself is 64 KiB, the rest zeros).
pub const MANIFEST_DATA_LEN: usize = 24;

/// Size of the manifest file as Pika creates it.
pub const MANIFEST_FILE_LEN: usize = 64 * 1024;

/// Physical record types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    /// 0: never written; a zero header marks the end of the data (the file is preallocated
    /// with zeros while the server runs).
    Zero,
    /// 1: a whole item.
    Full,
    /// 2: first fragment of an item.
    First,
    /// 3: middle fragment.
    Middle,
    /// 4: last fragment.
    Last,
    /// 6: padding written when a replica resets its binlog to the master's position.
    BadRecord,
}

impl RecordType {
    /// The type for a header's type byte, if Pika writes it.
    pub fn from_byte(byte: u8) -> Option<RecordType> {
        match byte {
            0 => Some(RecordType::Zero),
            1 => Some(RecordType::Full),
            2 => Some(RecordType::First),
            3 => Some(RecordType::Middle),
            4 => Some(RecordType::Last),
            6 => Some(RecordType::BadRecord),
            _ => None,
        }
    }

    /// The header's type byte.
    pub fn byte(self) -> u8 {
        match self {
            RecordType::Zero => 0,
            RecordType::Full => 1,
            RecordType::First => 2,
            RecordType::Middle => 3,
            RecordType::Last => 4,
            RecordType::BadRecord => 6,
        }
    }
}

/// Why a binlog file could not be read or written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BinlogFileError {
    /// The data ends inside a record header or body.
    Truncated {
        /// Offset of the record header.
        at: u64,
    },
    /// A record runs past the end of its 64 KiB block (Pika never writes one).
    RecordCrossesBlock {
        /// Offset of the record header.
        at: u64,
    },
    /// A type byte Pika does not write.
    UnknownRecordType {
        /// Offset of the record header.
        at: u64,
        /// The type byte.
        record_type: u8,
    },
    /// A Middle/Last fragment without a First, or a Full/First/padding record inside a
    /// fragmented item.
    FragmentOutOfOrder {
        /// Offset of the record header.
        at: u64,
    },
    /// Padding can only start an empty file.
    PaddingNotAtStart,
    /// The item could not be built.
    Item(ItemError),
    /// The manifest is shorter than its 24 data bytes.
    ManifestTooShort {
        /// Bytes given.
        len: usize,
    },
}

impl fmt::Display for BinlogFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BinlogFileError::Truncated { at } => write!(f, "binlog ends inside the record at {at}"),
            BinlogFileError::RecordCrossesBlock { at } => {
                write!(f, "binlog record at {at} crosses a 64 KiB block boundary")
            }
            BinlogFileError::UnknownRecordType { at, record_type } => {
                write!(f, "binlog record at {at} has unknown type {record_type}")
            }
            BinlogFileError::FragmentOutOfOrder { at } => {
                write!(f, "binlog fragment at {at} is out of order")
            }
            BinlogFileError::PaddingNotAtStart => {
                write!(f, "binlog padding can only start an empty file")
            }
            BinlogFileError::Item(e) => write!(f, "binlog item: {e}"),
            BinlogFileError::ManifestTooShort { len } => {
                write!(f, "binlog manifest of {len} bytes is shorter than 24")
            }
        }
    }
}

impl std::error::Error for BinlogFileError {}

impl From<ItemError> for BinlogFileError {
    fn from(e: ItemError) -> Self {
        BinlogFileError::Item(e)
    }
}

/// One item read from a binlog file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinlogRecord<'a> {
    /// The writer's position before this item: what the item header's `offset` holds.
    pub start: u64,
    /// The position after the item's last fragment: what the replication stream sends as the
    /// entry's `binlog_offset`.
    pub end: u64,
    /// The record time of the item's first fragment (unix seconds).
    pub time: u32,
    /// The item bytes (34-byte header + content); owned only when the item was fragmented.
    pub item: Cow<'a, [u8]>,
}

/// Reads the items of one binlog file, in order.
///
/// Stops at the end of the data, at an all-zero record header (the zero-filled preallocated
/// tail of a live file), or after the first error.
#[derive(Clone, Debug)]
pub struct BinlogFileReader<'a> {
    data: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> BinlogFileReader<'a> {
    /// A reader over the whole file content.
    pub fn new(data: &'a [u8]) -> Self {
        BinlogFileReader {
            data,
            pos: 0,
            done: false,
        }
    }

    /// The position after the last record read so far: once the iterator is exhausted without
    /// error, the file's producer position.
    pub fn position(&self) -> u64 {
        self.pos as u64
    }

    fn read_item(&mut self) -> Result<Option<BinlogRecord<'a>>, BinlogFileError> {
        // Padding records restart the search for an item after them.
        'item: loop {
            let start = self.pos;
            let mut pos = self.pos;
            let mut fragments: Option<(Vec<u8>, u32)> = None;
            loop {
                let block_left = BLOCK_SIZE - pos % BLOCK_SIZE;
                // The writer zero-fills a block tail shorter than a header and moves on.
                if block_left < RECORD_HEADER_LEN {
                    pos += block_left;
                }
                if pos >= self.data.len() {
                    if fragments.is_some() {
                        return Err(BinlogFileError::Truncated { at: pos as u64 });
                    }
                    return Ok(None);
                }
                let at = pos as u64;
                let Some(header) = self.data.get(pos..pos + RECORD_HEADER_LEN) else {
                    if self.data[pos..].iter().all(|&b| b == 0) && fragments.is_none() {
                        return Ok(None);
                    }
                    return Err(BinlogFileError::Truncated { at });
                };
                let len = usize::from(header[0])
                    | usize::from(header[1]) << 8
                    | usize::from(header[2]) << 16;
                let time = u32::from_le_bytes([header[3], header[4], header[5], header[6]]);
                let record_type =
                    RecordType::from_byte(header[7]).ok_or(BinlogFileError::UnknownRecordType {
                        at,
                        record_type: header[7],
                    })?;
                if record_type == RecordType::Zero {
                    if fragments.is_some() {
                        return Err(BinlogFileError::Truncated { at });
                    }
                    return Ok(None);
                }
                let body_start = pos + RECORD_HEADER_LEN;
                let body_end = body_start + len;
                if body_end - pos > BLOCK_SIZE - pos % BLOCK_SIZE {
                    return Err(BinlogFileError::RecordCrossesBlock { at });
                }
                let Some(body) = self.data.get(body_start..body_end) else {
                    return Err(BinlogFileError::Truncated { at });
                };
                pos = body_end;
                match (record_type, fragments.as_mut()) {
                    (RecordType::Full, None) => {
                        self.pos = pos;
                        return Ok(Some(BinlogRecord {
                            start: start as u64,
                            end: pos as u64,
                            time,
                            item: Cow::Borrowed(body),
                        }));
                    }
                    (RecordType::First, None) => fragments = Some((body.to_vec(), time)),
                    (RecordType::Middle, Some((item, _))) => item.extend_from_slice(body),
                    (RecordType::Last, Some((item, first_time))) => {
                        item.extend_from_slice(body);
                        let time = *first_time;
                        let item = std::mem::take(item);
                        self.pos = pos;
                        return Ok(Some(BinlogRecord {
                            start: start as u64,
                            end: pos as u64,
                            time,
                            item: Cow::Owned(item),
                        }));
                    }
                    (RecordType::BadRecord, None) => {
                        self.pos = pos;
                        continue 'item;
                    }
                    _ => return Err(BinlogFileError::FragmentOutOfOrder { at }),
                }
            }
        }
    }
}

impl<'a> Iterator for BinlogFileReader<'a> {
    type Item = Result<BinlogRecord<'a>, BinlogFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = self.read_item().transpose();
        if !matches!(result, Some(Ok(_))) {
            self.done = true;
        }
        result
    }
}

/// Reads every item of a binlog file.
pub fn read_binlog_file(data: &[u8]) -> Result<Vec<BinlogRecord<'_>>, BinlogFileError> {
    BinlogFileReader::new(data).collect()
}

/// Where an appended item landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendedItem {
    /// Position before the item (the header's `offset`).
    pub start: u64,
    /// Position after it (the stream's `binlog_offset`).
    pub end: u64,
}

/// Builds a binlog file in memory exactly as Pika's writer lays it out.
#[derive(Clone, Debug, Default)]
pub struct BinlogFileWriter {
    filenum: u32,
    data: Vec<u8>,
}

impl BinlogFileWriter {
    /// An empty `write2file<filenum>`.
    pub fn new(filenum: u32) -> Self {
        BinlogFileWriter {
            filenum,
            data: Vec::new(),
        }
    }

    /// A file reset to `offset` the way a replica does after a full sync: BadRecord padding
    /// records fill whole blocks and then the rest; a remainder shorter than a record header
    /// is not written, so the returned position can be up to 7 bytes below `offset`.
    pub fn padded(filenum: u32, offset: u64, time: u32) -> Result<Self, BinlogFileError> {
        let mut writer = BinlogFileWriter::new(filenum);
        writer.append_padding(offset, time)?;
        Ok(writer)
    }

    fn append_padding(&mut self, offset: u64, time: u32) -> Result<(), BinlogFileError> {
        if !self.data.is_empty() {
            return Err(BinlogFileError::PaddingNotAtStart);
        }
        // Offsets below the first header mean "empty".
        let mut left = if offset < 4 { 0 } else { offset as usize };
        while left >= RECORD_HEADER_LEN {
            let size = left.min(BLOCK_SIZE);
            let body_len = size - RECORD_HEADER_LEN;
            self.put_header(body_len, time, RecordType::BadRecord);
            self.data.resize(self.data.len() + body_len, b'*');
            left -= size;
        }
        Ok(())
    }

    /// File number given at creation (written into item headers).
    pub fn filenum(&self) -> u32 {
        self.filenum
    }

    /// The producer position: the file's length.
    pub fn position(&self) -> u64 {
        self.data.len() as u64
    }

    /// The file content.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The file content, consuming the writer.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    /// Appends an already encoded item, fragmenting it across blocks as Pika does.
    pub fn append_record(&mut self, item: &[u8], time: u32) -> AppendedItem {
        let start = self.position();
        let mut rest = item;
        let mut first = true;
        loop {
            let block_left = BLOCK_SIZE - self.data.len() % BLOCK_SIZE;
            if block_left < RECORD_HEADER_LEN {
                self.data.resize(self.data.len() + block_left, 0);
            }
            // With exactly a header's worth left, Pika emits a header with an empty fragment.
            let avail = BLOCK_SIZE - self.data.len() % BLOCK_SIZE - RECORD_HEADER_LEN;
            let fragment_len = rest.len().min(avail);
            let last = fragment_len == rest.len();
            let record_type = match (first, last) {
                (true, true) => RecordType::Full,
                (true, false) => RecordType::First,
                (false, true) => RecordType::Last,
                (false, false) => RecordType::Middle,
            };
            self.put_header(fragment_len, time, record_type);
            self.data.extend_from_slice(&rest[..fragment_len]);
            rest = &rest[fragment_len..];
            first = false;
            if last {
                break;
            }
        }
        AppendedItem {
            start,
            end: self.position(),
        }
    }

    /// Builds an item (header with this file's number and the current position) and appends
    /// it; the record time is `exec_time`.
    pub fn append_item(
        &mut self,
        exec_time: u32,
        term_id: u32,
        logic_id: u64,
        content: &[u8],
    ) -> Result<AppendedItem, BinlogFileError> {
        let header = ItemHeader {
            item_type: ITEM_TYPE_FIRST,
            exec_time,
            term_id,
            logic_id,
            filenum: self.filenum,
            offset: self.position(),
            content_len: 0,
        };
        let item = build_item(&header, content)?;
        Ok(self.append_record(&item, exec_time))
    }

    fn put_header(&mut self, len: usize, time: u32, record_type: RecordType) {
        // Fragments never exceed a block, so the length always fits 24 bits.
        let len = len as u32;
        self.data.extend_from_slice(&len.to_le_bytes()[..3]);
        self.data.extend_from_slice(&time.to_le_bytes());
        self.data.push(record_type.byte());
    }
}

/// The binlog `manifest`: the producer position, all little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Current file number.
    pub filenum: u32,
    /// Producer offset in that file.
    pub offset: u64,
    /// Last logic id written.
    pub logic_id: u64,
    /// Current term.
    pub term: u32,
}

impl Manifest {
    /// Decodes the first 24 bytes of a manifest file.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, BinlogFileError> {
        let Some(raw) = bytes.first_chunk::<MANIFEST_DATA_LEN>() else {
            return Err(BinlogFileError::ManifestTooShort { len: bytes.len() });
        };
        let mut u32_at = [0u8; 4];
        let mut u64_at = [0u8; 8];
        u32_at.copy_from_slice(&raw[0..4]);
        let filenum = u32::from_le_bytes(u32_at);
        u64_at.copy_from_slice(&raw[4..12]);
        let offset = u64::from_le_bytes(u64_at);
        u64_at.copy_from_slice(&raw[12..20]);
        let logic_id = u64::from_le_bytes(u64_at);
        u32_at.copy_from_slice(&raw[20..24]);
        let term = u32::from_le_bytes(u32_at);
        Ok(Manifest {
            filenum,
            offset,
            logic_id,
            term,
        })
    }

    /// The manifest file as Pika writes it (64 KiB, data first, zeros after).
    #[cfg(test)]
    pub fn encode_file(&self) -> Vec<u8> {
        let mut out = vec![0u8; MANIFEST_FILE_LEN];
        out[0..4].copy_from_slice(&self.filenum.to_le_bytes());
        out[4..12].copy_from_slice(&self.offset.to_le_bytes());
        out[12..20].copy_from_slice(&self.logic_id.to_le_bytes());
        out[20..24].copy_from_slice(&self.term.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pika::item::BinlogItem;

    #[test]
    fn small_items_are_full_records() {
        let mut writer = BinlogFileWriter::new(0);
        let a = writer
            .append_item(1795469984, 0, 1, b"*2\r\n$4\r\nINCR\r\n$2\r\nk1\r\n")
            .unwrap();
        assert_eq!(
            a,
            AppendedItem {
                start: 0,
                end: 8 + 34 + 22
            }
        );
        let b = writer
            .append_item(1795469985, 0, 2, b"*1\r\n$4\r\nPING\r\n")
            .unwrap();
        assert_eq!(b.start, a.end);
        let records = read_binlog_file(writer.as_bytes()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!((records[1].start, records[1].end), (b.start, b.end));
        assert!(matches!(records[0].item, Cow::Borrowed(_)));
        let item = BinlogItem::parse(&records[1].item).unwrap();
        assert_eq!(item.header.offset, a.end);
        assert_eq!(item.header.logic_id, 2);
    }

    #[test]
    fn items_are_fragmented_across_blocks_and_reassembled() {
        let mut writer = BinlogFileWriter::new(3);
        let mut expected = Vec::new();
        // The first item leaves a 5-byte block tail (zero-filled, skipped); the third spans a
        // whole block (First, Middle, Last).
        for (i, len) in [65_489usize, 400, 200_000, 50].into_iter().enumerate() {
            let content = vec![b'a' + i as u8; len];
            let at = writer.append_item(1, 0, i as u64 + 1, &content).unwrap();
            expected.push((at, content));
        }
        let bytes = writer.as_bytes();
        assert_eq!(expected[0].0.end, (BLOCK_SIZE - 5) as u64);
        assert_eq!(&bytes[BLOCK_SIZE - 5..BLOCK_SIZE], &[0u8; 5]);
        assert_eq!(expected[1].0.start, (BLOCK_SIZE - 5) as u64);
        let record_types: Vec<u8> = [BLOCK_SIZE, 2 * BLOCK_SIZE]
            .iter()
            .map(|&at| bytes[at + 7])
            .collect();
        assert_eq!(
            record_types,
            vec![RecordType::Full.byte(), RecordType::Middle.byte()]
        );
        let records = read_binlog_file(bytes).unwrap();
        assert_eq!(records.len(), expected.len());
        for (record, (at, content)) in records.iter().zip(&expected) {
            assert_eq!((record.start, record.end), (at.start, at.end));
            let item = BinlogItem::parse(&record.item).unwrap();
            assert_eq!(item.content, &content[..]);
            assert_eq!(item.header.filenum, 3);
            assert_eq!(item.header.offset, at.start);
        }
    }

    #[test]
    fn exactly_eight_bytes_left_gives_an_empty_first_fragment() {
        let mut writer = BinlogFileWriter::new(0);
        // One record filling the block up to 8 bytes before its end.
        let first_len = BLOCK_SIZE - 2 * RECORD_HEADER_LEN;
        writer.append_record(&vec![7u8; first_len], 0);
        assert_eq!(writer.position() as usize, BLOCK_SIZE - RECORD_HEADER_LEN);
        let at = writer.append_record(&[1, 2, 3], 0);
        let bytes = writer.as_bytes();
        // Empty First fragment filling the block, then the Last fragment in the next block.
        assert_eq!(
            &bytes[BLOCK_SIZE - 8..BLOCK_SIZE],
            &[0, 0, 0, 0, 0, 0, 0, 2]
        );
        assert_eq!(bytes[BLOCK_SIZE + 7], 4);
        assert_eq!(at.end as usize, BLOCK_SIZE + RECORD_HEADER_LEN + 3);
        let records = read_binlog_file(bytes).unwrap();
        assert_eq!(&records[1].item[..], &[1, 2, 3]);
    }

    #[test]
    fn stops_at_zero_preallocation_and_skips_padding() {
        let mut writer = BinlogFileWriter::padded(0, 70_000, 5).unwrap();
        assert_eq!(writer.position(), 70_000);
        let at = writer
            .append_item(1, 0, 1, b"*1\r\n$4\r\nPING\r\n")
            .unwrap();
        let mut bytes = writer.into_bytes();
        bytes.resize(bytes.len() + 4096, 0);
        let mut reader = BinlogFileReader::new(&bytes);
        let record = reader.next().unwrap().unwrap();
        assert_eq!((record.start, record.end), (at.start, at.end));
        assert!(reader.next().is_none());
        assert_eq!(reader.position(), at.end);
        // A remainder shorter than a header is not padded.
        assert_eq!(
            BinlogFileWriter::padded(0, 65_541, 5).unwrap().position(),
            65_536
        );
        assert_eq!(BinlogFileWriter::padded(0, 3, 5).unwrap().position(), 0);
    }

    #[test]
    fn malformed_files_are_errors() {
        let mut writer = BinlogFileWriter::new(0);
        writer
            .append_item(1, 0, 1, b"*1\r\n$4\r\nPING\r\n")
            .unwrap();
        let good = writer.into_bytes();
        assert!(matches!(
            read_binlog_file(&good[..good.len() - 1]),
            Err(BinlogFileError::Truncated { at: 0 })
        ));
        let mut bad_type = good.clone();
        bad_type[7] = 9;
        assert!(matches!(
            read_binlog_file(&bad_type),
            Err(BinlogFileError::UnknownRecordType { record_type: 9, .. })
        ));
        let mut orphan = good.clone();
        orphan[7] = RecordType::Last.byte();
        assert!(matches!(
            read_binlog_file(&orphan),
            Err(BinlogFileError::FragmentOutOfOrder { at: 0 })
        ));
        let mut crossing = good;
        crossing[0..3].copy_from_slice(&[0xff, 0xff, 0x00]);
        assert!(matches!(
            read_binlog_file(&crossing),
            Err(BinlogFileError::RecordCrossesBlock { at: 0 })
        ));
    }

    #[test]
    fn manifest_round_trips() {
        let manifest = Manifest {
            filenum: 0,
            offset: 3898,
            logic_id: 49,
            term: 0,
        };
        let file = manifest.encode_file();
        assert_eq!(file.len(), MANIFEST_FILE_LEN);
        assert_eq!(Manifest::decode(&file).unwrap(), manifest);
        assert!(Manifest::decode(&file[..23]).is_err());
    }
}
