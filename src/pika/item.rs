//! Pika binlog items: the 34-byte little-endian header plus RESP content.
//!
//! An item is what `InnerResponse.binlog_sync[].binlog` carries and what each record of a
//! `write2file<N>` file holds. This module owns decoding and encoding the header, checking that
//! `content_len` matches the bytes that follow, and building an item with new content while
//! keeping the other header fields. It does not parse the RESP content.

use std::fmt;

/// Size of the item header.
pub const ITEM_HEADER_LEN: usize = 34;

/// The item type Pika writes for every item (`TypeFirst`); the replica's decoder requires it.
pub const ITEM_TYPE_FIRST: u16 = 1;

/// Why bytes are not a binlog item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemError {
    /// Fewer than 34 bytes.
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// `content_len` does not equal the number of bytes after the header.
    ContentLenMismatch {
        /// Value in the header.
        declared: u32,
        /// Bytes actually present after the header.
        actual: usize,
    },
    /// New content longer than a `u32` length can describe.
    ContentTooLong {
        /// Content length.
        len: usize,
    },
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemError::TooShort { len } => {
                write!(
                    f,
                    "binlog item of {len} bytes is shorter than its 34-byte header"
                )
            }
            ItemError::ContentLenMismatch { declared, actual } => write!(
                f,
                "binlog item header says {declared} content bytes, {actual} follow"
            ),
            ItemError::ContentTooLong { len } => {
                write!(
                    f,
                    "binlog item content of {len} bytes does not fit a u32 length"
                )
            }
        }
    }
}

impl std::error::Error for ItemError {}

/// The 34-byte item header. All integers are little-endian on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ItemHeader {
    /// Item type; always [`ITEM_TYPE_FIRST`] in practice.
    pub item_type: u16,
    /// Unix seconds on the writer when the item was written (the master's clock in the stream).
    pub exec_time: u32,
    /// Consensus term; 0 in classic mode.
    pub term_id: u32,
    /// Per-binlog item counter (also sent as `binlog_offset.index`).
    pub logic_id: u64,
    /// Binlog file number of the writer's position at the start of this item.
    pub filenum: u32,
    /// Offset in that file at the start of this item.
    pub offset: u64,
    /// Number of content bytes after the header.
    pub content_len: u32,
}

impl ItemHeader {
    /// Decodes the header from the first 34 bytes of `bytes` (the rest is not looked at).
    pub fn decode(bytes: &[u8]) -> Result<ItemHeader, ItemError> {
        let Some(raw) = bytes.first_chunk::<ITEM_HEADER_LEN>() else {
            return Err(ItemError::TooShort { len: bytes.len() });
        };
        Ok(ItemHeader {
            item_type: u16::from_le_bytes([raw[0], raw[1]]),
            exec_time: u32::from_le_bytes([raw[2], raw[3], raw[4], raw[5]]),
            term_id: u32::from_le_bytes([raw[6], raw[7], raw[8], raw[9]]),
            logic_id: u64::from_le_bytes([
                raw[10], raw[11], raw[12], raw[13], raw[14], raw[15], raw[16], raw[17],
            ]),
            filenum: u32::from_le_bytes([raw[18], raw[19], raw[20], raw[21]]),
            offset: u64::from_le_bytes([
                raw[22], raw[23], raw[24], raw[25], raw[26], raw[27], raw[28], raw[29],
            ]),
            content_len: u32::from_le_bytes([raw[30], raw[31], raw[32], raw[33]]),
        })
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; ITEM_HEADER_LEN] {
        let mut out = [0u8; ITEM_HEADER_LEN];
        out[0..2].copy_from_slice(&self.item_type.to_le_bytes());
        out[2..6].copy_from_slice(&self.exec_time.to_le_bytes());
        out[6..10].copy_from_slice(&self.term_id.to_le_bytes());
        out[10..18].copy_from_slice(&self.logic_id.to_le_bytes());
        out[18..22].copy_from_slice(&self.filenum.to_le_bytes());
        out[22..30].copy_from_slice(&self.offset.to_le_bytes());
        out[30..34].copy_from_slice(&self.content_len.to_le_bytes());
        out
    }
}

/// A decoded item: header plus the content it describes, borrowed from the item's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinlogItem<'a> {
    /// The header.
    pub header: ItemHeader,
    /// The RESP content (exactly `header.content_len` bytes).
    pub content: &'a [u8],
}

impl<'a> BinlogItem<'a> {
    /// Decodes an item and checks that `content_len` equals the bytes after the header, as the
    /// replica's decoder does.
    pub fn parse(bytes: &'a [u8]) -> Result<BinlogItem<'a>, ItemError> {
        let header = ItemHeader::decode(bytes)?;
        let content = &bytes[ITEM_HEADER_LEN..];
        if content.len() != header.content_len as usize {
            return Err(ItemError::ContentLenMismatch {
                declared: header.content_len,
                actual: content.len(),
            });
        }
        Ok(BinlogItem { header, content })
    }

    /// Total encoded length.
    pub fn encoded_len(&self) -> usize {
        ITEM_HEADER_LEN + self.content.len()
    }

    /// Encodes header and content as they are (the header's `content_len` is written as given).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.header.encode());
        out.extend_from_slice(self.content);
        out
    }

    /// A new item with `content` and this item's header, `content_len` updated.
    pub fn with_content(&self, content: &[u8]) -> Result<Vec<u8>, ItemError> {
        build_item(&self.header, content)
    }
}

/// Builds an item from `header` (whose `content_len` is ignored) and `content`.
pub fn build_item(header: &ItemHeader, content: &[u8]) -> Result<Vec<u8>, ItemError> {
    let mut out = Vec::with_capacity(ITEM_HEADER_LEN + content.len());
    put_item(header, content, &mut out)?;
    Ok(out)
}

/// [`build_item`] appending to `out`, so a caller can reuse one buffer for many items.
pub fn put_item(header: &ItemHeader, content: &[u8], out: &mut Vec<u8>) -> Result<(), ItemError> {
    let content_len = u32::try_from(content.len())
        .map_err(|_| ItemError::ContentTooLong { len: content.len() })?;
    let header = ItemHeader {
        content_len,
        ..*header
    };
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(content);
    Ok(())
}

/// A file-0 item of `args` as a master logs it, starting at `start` (for unit tests that build
/// BinlogSync responses).
#[cfg(test)]
pub(crate) fn command_item(exec_time: u32, logic_id: u64, start: u64, args: &[&str]) -> Vec<u8> {
    let mut content = bytes::BytesMut::new();
    crate::resp::encode_command(args, &mut content);
    let header = ItemHeader {
        item_type: ITEM_TYPE_FIRST,
        exec_time,
        term_id: 0,
        logic_id,
        filenum: 0,
        offset: start,
        content_len: 0,
    };
    build_item(&header, &content).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `INCR k1` item of the fixtures (session1 repl1 master→replica @549).
    const INCR_K1: &[u8] =
        b"\x01\x00\xa1\xb2\x04\x6b\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\
\x00\x00\x00\x00\x5f\x00\x00\x00\x00\x00\x00\x00\x16\x00\x00\x00*2\r\n$4\r\nINCR\r\n$2\r\nk1\r\n";

    #[test]
    fn decodes_the_fixture_item() {
        let item = BinlogItem::parse(INCR_K1).unwrap();
        assert_eq!(
            item.header,
            ItemHeader {
                item_type: 1,
                exec_time: 1795469985,
                term_id: 0,
                logic_id: 2,
                filenum: 0,
                offset: 95,
                content_len: 22,
            }
        );
        assert_eq!(item.content, b"*2\r\n$4\r\nINCR\r\n$2\r\nk1\r\n");
        assert_eq!(item.encode(), INCR_K1);
    }

    #[test]
    fn rejects_short_and_mismatched_items() {
        assert_eq!(
            BinlogItem::parse(&INCR_K1[..33]),
            Err(ItemError::TooShort { len: 33 })
        );
        assert_eq!(
            BinlogItem::parse(&INCR_K1[..INCR_K1.len() - 1]),
            Err(ItemError::ContentLenMismatch {
                declared: 22,
                actual: 21
            })
        );
        let mut longer = INCR_K1.to_vec();
        longer.push(b'x');
        assert!(matches!(
            BinlogItem::parse(&longer),
            Err(ItemError::ContentLenMismatch { .. })
        ));
        assert_eq!(ItemHeader::decode(&[]), Err(ItemError::TooShort { len: 0 }));
    }

    #[test]
    fn new_content_updates_only_content_len() {
        let content = b"*3\r\n$8\r\nexpireat\r\n$2\r\nk1\r\n$10\r\n1795469994\r\n";
        let original = BinlogItem::parse(INCR_K1).unwrap();
        let rebuilt = original.with_content(content).unwrap();
        let item = BinlogItem::parse(&rebuilt).unwrap();
        let old = ItemHeader::decode(INCR_K1).unwrap();
        assert_eq!(
            item.header,
            ItemHeader {
                content_len: content.len() as u32,
                ..old
            }
        );
        assert_eq!(item.content, content);
        // Empty content is a valid item too.
        let empty = original.with_content(b"").unwrap();
        assert_eq!(empty.len(), ITEM_HEADER_LEN);
        assert_eq!(BinlogItem::parse(&empty).unwrap().header.content_len, 0);
    }
}
