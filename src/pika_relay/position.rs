//! Binlog positions as byte counts, for lag: `(filenum, offset)` becomes
//! `filenum × binlog-file-size + offset`.
//!
//! This is an estimate on purpose. A Pika binlog file rolls over once it *exceeds* the
//! configured size, so real files are slightly longer than `binlog-file-size`; the error is at
//! most one item per file boundary crossed, which is fine for a lag gauge. Nothing that decides
//! an offset sent to a peer uses this.

use crate::pika::messages::BinlogPosition;

/// Bytes from the start of `write2file0` to `pos`, assuming files of `file_size` bytes.
pub fn linear(pos: BinlogPosition, file_size: u64) -> u64 {
    u64::from(pos.filenum)
        .saturating_mul(file_size)
        .saturating_add(pos.offset)
}

/// How many bytes `acked` is behind `master` (0 when it is not behind).
pub fn lag_bytes(master: BinlogPosition, acked: BinlogPosition, file_size: u64) -> u64 {
    linear(master, file_size).saturating_sub(linear(acked, file_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_crosses_files() {
        let size = 100 * 1024 * 1024;
        let master = BinlogPosition::new(2, 10);
        let acked = BinlogPosition::new(1, size - 5);
        assert_eq!(lag_bytes(master, acked, size), 15);
        assert_eq!(lag_bytes(acked, master, size), 0);
        assert_eq!(linear(BinlogPosition::new(0, 3898), size), 3898);
        assert_eq!(
            linear(BinlogPosition::new(u32::MAX, u64::MAX), size),
            u64::MAX
        );
    }
}
