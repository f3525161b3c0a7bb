//! How the expiry table holds a key: a short key (most keys are) inside the map's own bucket,
//! a longer one boxed.
//!
//! A boxed key is a second allocation, so a lookup that finds the bucket still reads the key
//! from another cache line to compare it, and every new key costs a `malloc`. On a table much
//! larger than the cache, that read was a third of the relay's time in the table on a real Pika
//! master (`docs/performance.md`). Inline, the comparison reads bytes already loaded.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Longest key kept inline: with its length byte and the variant's tag, 24 bytes, 8 more than a
/// boxed slice; a key that fits no longer costs an allocation of its own (16–32 bytes from
/// `malloc` for a key of up to 22 bytes).
const INLINE: usize = 22;

/// A key of the expiry table's maps. Hashes and compares as its bytes, so the maps are looked
/// up with a borrowed `&[u8]`.
#[derive(Clone)]
pub(crate) enum StoredKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Boxed(Box<[u8]>),
}

impl StoredKey {
    pub(crate) fn new(key: &[u8]) -> StoredKey {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE => {
                let mut bytes = [0u8; INLINE];
                bytes[..key.len()].copy_from_slice(key);
                StoredKey::Inline { len, bytes }
            }
            _ => StoredKey::Boxed(key.into()),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            StoredKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            StoredKey::Boxed(key) => key,
        }
    }
}

impl Deref for StoredKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Borrow<[u8]> for StoredKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

// `Borrow` requires the same hash and equality as the borrowed form.
impl Hash for StoredKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for StoredKey {
    fn eq(&self, other: &StoredKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for StoredKey {}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", bytes::Bytes::copy_from_slice(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of<T: Hash + ?Sized>(t: &T) -> u64 {
        let mut h = DefaultHasher::new();
        t.hash(&mut h);
        h.finish()
    }

    #[test]
    fn a_stored_key_is_as_large_as_a_boxed_slice() {
        assert_eq!(size_of::<StoredKey>(), size_of::<Box<[u8]>>() + 8);
    }

    #[test]
    fn short_keys_are_inline_long_ones_boxed_and_both_read_back_and_hash_as_their_bytes() {
        for len in [0, 1, 16, INLINE, INLINE + 1, 300] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let stored = StoredKey::new(&key);
            assert_eq!(matches!(stored, StoredKey::Inline { .. }), len <= INLINE);
            assert_eq!(stored.as_bytes(), &key[..]);
            assert_eq!(hash_of(&stored), hash_of(&key[..]));
            assert_eq!(stored, StoredKey::new(&key));
        }
        assert_ne!(StoredKey::new(b"ab"), StoredKey::new(b"ab\0"));
    }
}
