//! CRC-64/Jones as Redis uses it for the RDB trailer: polynomial 0xad93d23594c935a9, reflected
//! input and output, initial value 0, no final XOR. Check value: `crc64(b"123456789")` is
//! `0xe9c6d914c4b8d9ca`.
//!
//! Snapshots can be gigabytes, so the update runs "slicing-by-16": sixteen 256-entry tables
//! (32 KiB, built at compile time) let one step fold 16 input bytes with 16 independent
//! lookups instead of 16 dependent ones. The state is a plain `u64`, so a caller can feed any
//! split of the input and get the same result.

/// The Jones polynomial in reflected (LSB-first) form: the bit-reversal of 0xad93d23594c935a9.
const POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5;

/// `TABLES[k][b]` is the CRC contribution of byte `b` followed by `k` zero bytes.
static TABLES: [[u64; 256]; 16] = build_tables();

const fn build_tables() -> [[u64; 256]; 16] {
    let mut tables = [[0u64; 256]; 16];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][byte] = crc;
        byte += 1;
    }
    let mut slice = 1;
    while slice < 16 {
        let mut byte = 0;
        while byte < 256 {
            let previous = tables[slice - 1][byte];
            tables[slice][byte] = (previous >> 8) ^ tables[0][(previous & 0xff) as usize];
            byte += 1;
        }
        slice += 1;
    }
    tables
}

#[inline(always)]
fn lookup(table: usize, word: u64, byte_index: u32) -> u64 {
    TABLES[table][((word >> (8 * byte_index)) & 0xff) as usize]
}

/// Continues a CRC over `data`. Start from 0; `update(update(0, a), b) == update(0, a ‖ b)`.
pub fn update(mut crc: u64, data: &[u8]) -> u64 {
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let (first, second) = block.split_at(8);
        let mut low = [0u8; 8];
        let mut high = [0u8; 8];
        low.copy_from_slice(first);
        high.copy_from_slice(second);
        // The running CRC only overlaps the first 8 bytes; the second word is folded in by the
        // low-index tables, which account for its shorter distance to the end of the block.
        let low = u64::from_le_bytes(low) ^ crc;
        let high = u64::from_le_bytes(high);
        crc = lookup(15, low, 0)
            ^ lookup(14, low, 1)
            ^ lookup(13, low, 2)
            ^ lookup(12, low, 3)
            ^ lookup(11, low, 4)
            ^ lookup(10, low, 5)
            ^ lookup(9, low, 6)
            ^ lookup(8, low, 7)
            ^ lookup(7, high, 0)
            ^ lookup(6, high, 1)
            ^ lookup(5, high, 2)
            ^ lookup(4, high, 3)
            ^ lookup(3, high, 4)
            ^ lookup(2, high, 5)
            ^ lookup(1, high, 6)
            ^ lookup(0, high, 7);
    }
    for &byte in blocks.remainder() {
        crc = TABLES[0][((crc ^ u64::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC-64/Jones of one complete buffer.
pub fn crc64(data: &[u8]) -> u64 {
    update(0, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bit-at-a-time reference with the polynomial in its normal (MSB-first) form and explicit
    /// reflection, so the table construction is checked against an independent formulation.
    fn reference(data: &[u8]) -> u64 {
        const POLY: u64 = 0xad93_d235_94c9_35a9;
        let mut crc = 0u64;
        for &byte in data {
            let byte = byte.reverse_bits();
            for bit in (0..8).rev() {
                let input_bit = u64::from((byte >> bit) & 1);
                let top = crc >> 63;
                crc <<= 1;
                if top ^ input_bit == 1 {
                    crc ^= POLY;
                }
            }
        }
        crc.reverse_bits()
    }

    #[test]
    fn check_value_matches_the_catalogue() {
        assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        assert_eq!(reference(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        assert_eq!(crc64(b""), 0);
    }

    #[test]
    fn propagation_fixture_trailer_verifies() {
        let data = crate::fixtures::read("redis-7.0.15/propagation-fullsync.rdb").unwrap();
        let (body, trailer) = data.split_at(data.len() - 8);
        let stored = u64::from_le_bytes(trailer.try_into().unwrap());
        assert_eq!(stored, 0x2065_078c_4683_cf9b);
        assert_eq!(crc64(body), stored);
    }

    proptest! {
        #[test]
        fn sliced_equals_bitwise_for_any_split(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            split in any::<prop::sample::Index>(),
        ) {
            let at = split.index(data.len() + 1);
            let (a, b) = data.split_at(at);
            prop_assert_eq!(update(update(0, a), b), reference(&data));
        }
    }
}
