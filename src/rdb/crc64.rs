//! CRC-64/Jones as Redis uses it for the RDB trailer (polynomial 0xad93d23594c935a9, reflected
//! input and output, initial value 0, no final XOR; `crc64(b"123456789")` is
//! `0xe9c6d914c4b8d9ca`), computed by the `crc` crate's `CRC_64_REDIS` with its 16-lane
//! ("slicing-by-16") tables. In one run of a same-input benchmark it was as fast as the
//! hand-written slicing-by-16 this module used to hold on 64 bytes and faster on a 16 MiB
//! snapshot fed in 64 KiB reads (1.71 against 1.26 GiB/s), so the crate replaced it.
//!
//! The state is a plain `u64`, so the scanner can feed any split of a snapshot and get the same
//! result.

use crc::{Crc, Table, CRC_64_REDIS};

static CRC: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// Continues a CRC over `data`. Start from 0; `update(update(0, a), b) == update(0, a ‖ b)`.
pub fn update(crc: u64, data: &[u8]) -> u64 {
    // With input and output reflected and no final XOR, the crate's register holds exactly the
    // finished value; but `digest_with_initial` bit-reverses its argument (as it must for a
    // reflected algorithm's initial value), so reverse it first to resume from `crc`.
    let mut digest = CRC.digest_with_initial(crc.reverse_bits());
    digest.update(data);
    digest.finalize()
}

/// CRC-64/Jones of one complete buffer.
pub fn crc64(data: &[u8]) -> u64 {
    CRC.checksum(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bit-at-a-time reference with the polynomial in its normal (MSB-first) form and explicit
    /// reflection, so the crate's tables are checked against an independent formulation.
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
