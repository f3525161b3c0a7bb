//! A minimal RDB encoder: enough to synthesise snapshots (an empty RDB for a replica, test and
//! benchmark inputs). It writes plain encodings only (no integer or LZF string forms), which
//! every Redis loader accepts, and appends the CRC-64 trailer on [`RdbWriter::finish`].

use super::crc64;

/// Record opcodes of the RDB format (see the scanner for their meaning).
pub mod opcode {
    pub const SLOT_INFO: u8 = 0xf4;
    pub const FUNCTION2: u8 = 0xf5;
    pub const FUNCTION_PRE_GA: u8 = 0xf6;
    pub const MODULE_AUX: u8 = 0xf7;
    pub const IDLE: u8 = 0xf8;
    pub const FREQ: u8 = 0xf9;
    pub const AUX: u8 = 0xfa;
    pub const RESIZEDB: u8 = 0xfb;
    pub const EXPIRETIME_MS: u8 = 0xfc;
    pub const EXPIRETIME: u8 = 0xfd;
    pub const SELECTDB: u8 = 0xfe;
    pub const EOF: u8 = 0xff;
}

/// Builds an RDB in memory, record by record.
#[derive(Clone, Debug)]
pub struct RdbWriter {
    buf: Vec<u8>,
    version: u32,
}

impl RdbWriter {
    /// Starts a snapshot with the `REDIS` magic and a 4-digit `version` (10 = Redis 7.0).
    pub fn new(version: u32) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(format!("REDIS{:04}", version % 10_000).as_bytes());
        RdbWriter { buf, version }
    }

    /// Bytes written so far (no trailer yet).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Appends raw bytes, for encodings this writer has no helper for.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Appends a length in the shortest of the 6/14/32/64-bit forms.
    pub fn length(&mut self, len: u64) -> &mut Self {
        if len < 1 << 6 {
            self.buf.push(len as u8);
        } else if len < 1 << 14 {
            self.buf.push(0x40 | (len >> 8) as u8);
            self.buf.push(len as u8);
        } else if len <= u64::from(u32::MAX) {
            self.buf.push(0x80);
            self.buf.extend_from_slice(&(len as u32).to_be_bytes());
        } else {
            self.buf.push(0x81);
            self.buf.extend_from_slice(&len.to_be_bytes());
        }
        self
    }

    /// Appends a plain (length-prefixed) string.
    pub fn string(&mut self, bytes: &[u8]) -> &mut Self {
        self.length(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Appends an AUX field.
    pub fn aux(&mut self, key: &str, value: &str) -> &mut Self {
        self.buf.push(opcode::AUX);
        self.string(key.as_bytes()).string(value.as_bytes())
    }

    /// Appends SELECTDB.
    pub fn select_db(&mut self, db: u32) -> &mut Self {
        self.buf.push(opcode::SELECTDB);
        self.length(u64::from(db))
    }

    /// Appends a RESIZEDB hint.
    #[cfg(test)]
    pub fn resize_db(&mut self, keys: u64, expires: u64) -> &mut Self {
        self.buf.push(opcode::RESIZEDB);
        self.length(keys).length(expires)
    }

    /// Appends EXPIRETIME_MS (absolute Unix ms) for the next key.
    pub fn expire_ms(&mut self, at_ms: i64) -> &mut Self {
        self.buf.push(opcode::EXPIRETIME_MS);
        self.buf.extend_from_slice(&at_ms.to_le_bytes());
        self
    }

    /// Appends a string key (type 0), preceded by EXPIRETIME_MS when `expire_ms` is given.
    pub fn string_key(&mut self, key: &[u8], value: &[u8], expire_ms: Option<i64>) -> &mut Self {
        if let Some(at) = expire_ms {
            self.expire_ms(at);
        }
        self.buf.push(0);
        self.string(key).string(value)
    }

    /// Appends EOF and, from RDB version 5 on, the CRC-64 trailer (or 8 zero bytes when
    /// `with_crc` is false, which loaders read as "checksum not computed").
    pub fn finish(mut self, with_crc: bool) -> Vec<u8> {
        self.buf.push(opcode::EOF);
        if self.version >= 5 {
            let crc = if with_crc { crc64::crc64(&self.buf) } else { 0 };
            self.buf.extend_from_slice(&crc.to_le_bytes());
        }
        self.buf
    }
}
