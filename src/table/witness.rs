//! Collection witnesses: what the expiry table knows to be inside a hash, set, sorted set or
//! list.
//!
//! A removal (HDEL, SREM, LPOP…) may empty a collection, and an emptied key is gone with its
//! TTL. A witness that something else is still in it tells that the removal left the key as it
//! was; one of exactly what it holds tells when the removal deleted it. Without one, the key
//! may be gone.
//!
//! Witnesses are kept beside the deadlines and laid out like them (a map per fast DB keyed by
//! the key, one shared map keyed by `db ‖ key`); whatever makes one stale (the key replaced,
//! deleted, expired or moved, a flush) drops it.

use dashmap::DashMap;
use std::sync::OnceLock;

use super::stored_key::StoredKey;
use super::{split_other_key, ExpiryTable};

/// Proof that a collection is not empty, so that removing something else from it cannot have
/// emptied it (and so cannot have taken its TTL with it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Witness {
    /// These fields (hash) or members (set, sorted set) are in it: the last
    /// [`WITNESS_MEMBERS`] the stream wrote, so removing one of them still leaves the others.
    Members(Vec<Box<[u8]>>),
    /// The list holds at least this many elements.
    MinLen(u64),
    /// The list holds exactly this many elements: it was created by pushes the stream carried,
    /// and every change since was one whose count is known.
    ExactLen(u64),
    /// The collection holds exactly these fields or members (at most [`EXACT_MEMBERS`]): it was
    /// created by a write the stream carried, and every change since named what it added or
    /// removed. Removing the last of them deletes the key.
    AllMembers(Vec<Box<[u8]>>),
}

/// Members an exact witness ([`Witness::AllMembers`]) follows; a collection that grows past
/// them keeps only its last [`WITNESS_MEMBERS`] as a plain witness.
pub const EXACT_MEMBERS: usize = 8;

/// What taking elements off a list did to what is known of its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Popped {
    /// Elements are known to be left.
    Left,
    /// The list held exactly that many or fewer: it is empty, so the key is gone.
    Emptied,
    /// Nothing is known any more.
    Unknown,
}

/// Members a witness keeps per collection (its cost: their bytes plus a small vector).
pub const WITNESS_MEMBERS: usize = 4;

/// What a write adds to a [`Witness`], borrowing its member so that recording it allocates
/// only when something changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WitnessRef<'a> {
    /// This member is in the collection now (added to the members known).
    Member(&'a [u8]),
    /// The list holds at least this many elements now.
    MinLen(u64),
    /// The list holds exactly this many elements now.
    ExactLen(u64),
    /// The collection did not exist before this write: it holds exactly the members recorded
    /// from here on (an empty [`Witness::AllMembers`] that the write's members then join).
    Created,
}

impl WitnessRef<'_> {
    fn to_owned(self) -> Witness {
        match self {
            WitnessRef::Member(m) => Witness::Members(vec![m.into()]),
            WitnessRef::MinLen(n) => Witness::MinLen(n),
            WitnessRef::ExactLen(n) => Witness::ExactLen(n),
            WitnessRef::Created => Witness::AllMembers(Vec::new()),
        }
    }

    /// Updates `current` in place (a member joins the last few known, oldest out; or joins the
    /// exact set, which becomes a plain witness of its last few past [`EXACT_MEMBERS`]).
    fn apply(self, current: &mut Witness) {
        match (self, current) {
            (WitnessRef::Member(m), Witness::Members(known)) => {
                if !known.iter().any(|k| &k[..] == m) {
                    if known.len() >= WITNESS_MEMBERS {
                        known.remove(0);
                    }
                    known.push(m.into());
                }
            }
            (WitnessRef::Member(m), current @ Witness::AllMembers(_)) => {
                if let Witness::AllMembers(all) = current {
                    if all.iter().any(|k| &k[..] == m) {
                        return;
                    }
                    if all.len() < EXACT_MEMBERS {
                        all.push(m.into());
                        return;
                    }
                    let mut last: Vec<Box<[u8]>> =
                        all.drain(all.len() + 1 - WITNESS_MEMBERS..).collect();
                    last.push(m.into());
                    *current = Witness::Members(last);
                }
            }
            (WitnessRef::MinLen(n), Witness::MinLen(k)) => *k = n,
            (w, current) => *current = w.to_owned(),
        }
    }
}

pub(super) type WitnessMap = DashMap<StoredKey, Witness, foldhash::fast::RandomState>;

impl ExpiryTable {
    /// Where the witness of `db` is (or will be) kept.
    fn witness_cell(&self, db: u32) -> &OnceLock<WitnessMap> {
        self.witness_fast
            .get(db as usize)
            .unwrap_or(&self.witness_other)
    }

    /// What is known to be in the collection `key` (if anything).
    pub fn witness(&self, db: u32, key: &[u8]) -> Option<Witness> {
        let map = self.witness_cell(db).get()?;
        map.get(Self::map_key(db, key).as_ref()).map(|w| w.clone())
    }

    /// Records what a write left in the collection `key`; allocates only when it changed.
    pub fn set_witness(&self, db: u32, key: &[u8], witness: WitnessRef<'_>) {
        let map = self.witness_cell(db).get_or_init(Default::default);
        let k = Self::map_key(db, key);
        if let Some(mut current) = map.get_mut(k.as_ref()) {
            witness.apply(&mut current);
            return;
        }
        map.insert(StoredKey::new(&k), witness.to_owned());
    }

    /// The list length known for `key` (and whether it is exact), without copying its witness.
    pub fn witness_len(&self, db: u32, key: &[u8]) -> Option<(u64, bool)> {
        let map = self.witness_cell(db).get()?;
        match *map.get(Self::map_key(db, key).as_ref())? {
            Witness::MinLen(n) => Some((n, false)),
            Witness::ExactLen(n) => Some((n, true)),
            Witness::Members(_) | Witness::AllMembers(_) => None,
        }
    }

    /// `pushed` elements were pushed onto the list `key`, which was known to be missing
    /// (`existed` false: it holds exactly that many now), known to exist (its known length
    /// grows, exact or not) or neither (it holds at least that many). One map access.
    pub fn push_witness_len(&self, db: u32, key: &[u8], pushed: u64, existed: Option<bool>) {
        let map = self.witness_cell(db).get_or_init(Default::default);
        let k = Self::map_key(db, key);
        let fresh = if existed == Some(false) {
            Witness::ExactLen(pushed)
        } else {
            Witness::MinLen(pushed)
        };
        if let Some(mut current) = map.get_mut(k.as_ref()) {
            let grown = match (existed, &*current) {
                (Some(true), Witness::MinLen(n)) => Witness::MinLen(n.saturating_add(pushed)),
                (Some(true), Witness::ExactLen(n)) => Witness::ExactLen(n.saturating_add(pushed)),
                _ => fresh,
            };
            *current = grown;
            return;
        }
        map.insert(StoredKey::new(&k), fresh);
    }

    /// An exact list length of `key` becomes a lower bound (a change of unknown size: LINSERT,
    /// LPUSHX, a move into it).
    pub fn loosen_witness_len(&self, db: u32, key: &[u8]) {
        let Some(map) = self.witness_cell(db).get() else {
            return;
        };
        if let Some(mut w) = map.get_mut(Self::map_key(db, key).as_ref()) {
            if let Witness::ExactLen(n) = *w {
                *w = Witness::MinLen(n);
            }
        }
    }

    /// Takes `count` elements off the list length known for `key` (the witness is dropped when
    /// nothing is known to be left).
    pub fn pop_witness_len(&self, db: u32, key: &[u8], count: u64) -> Popped {
        let Some(map) = self.witness_cell(db).get() else {
            return Popped::Unknown;
        };
        let k = Self::map_key(db, key);
        let popped = match map.get_mut(k.as_ref()) {
            Some(mut w) => match &mut *w {
                Witness::MinLen(n) | Witness::ExactLen(n) if *n > count => {
                    *n -= count;
                    Popped::Left
                }
                Witness::ExactLen(_) => Popped::Emptied,
                _ => Popped::Unknown,
            },
            None => return Popped::Unknown,
        };
        if popped != Popped::Left {
            map.remove(k.as_ref());
        }
        popped
    }

    /// Drops the members `removed` says a removal took from `key`: [`Popped::Left`] when a
    /// member known to be in it is left (the key still exists), [`Popped::Emptied`] when it held
    /// exactly the members removed (the key is gone).
    pub fn remove_witness_members(
        &self,
        db: u32,
        key: &[u8],
        removed: impl Fn(&[u8]) -> bool,
    ) -> Popped {
        let Some(map) = self.witness_cell(db).get() else {
            return Popped::Unknown;
        };
        let k = Self::map_key(db, key);
        let popped = match map.get_mut(k.as_ref()) {
            Some(mut w) => match &mut *w {
                Witness::Members(known) => {
                    known.retain(|m| !removed(m));
                    if known.is_empty() {
                        Popped::Unknown
                    } else {
                        Popped::Left
                    }
                }
                Witness::AllMembers(all) => {
                    all.retain(|m| !removed(m));
                    if all.is_empty() {
                        Popped::Emptied
                    } else {
                        return Popped::Left;
                    }
                }
                Witness::MinLen(_) | Witness::ExactLen(_) => Popped::Unknown,
            },
            None => return Popped::Unknown,
        };
        if popped != Popped::Left {
            map.remove(k.as_ref());
        }
        popped
    }

    /// An exact member set of `key` becomes a plain witness of its last few members (a write
    /// whose members are not all recorded).
    pub fn loosen_witness_members(&self, db: u32, key: &[u8]) {
        let Some(map) = self.witness_cell(db).get() else {
            return;
        };
        if let Some(mut w) = map.get_mut(Self::map_key(db, key).as_ref()) {
            if let Witness::AllMembers(all) = &mut *w {
                let last = all.split_off(all.len().saturating_sub(WITNESS_MEMBERS));
                *w = Witness::Members(last);
            }
        }
    }

    /// Forgets what was known to be in `key` (it was replaced, deleted or may be empty).
    pub fn clear_witness(&self, db: u32, key: &[u8]) {
        if let Some(map) = self.witness_cell(db).get() {
            if !map.is_empty() {
                map.remove(Self::map_key(db, key).as_ref());
            }
        }
    }

    /// Number of collections with a witness.
    pub fn witness_count(&self) -> usize {
        self.witness_maps().map(|(_, m)| m.len()).sum()
    }

    fn witness_maps(&self) -> impl Iterator<Item = (Option<u32>, &WitnessMap)> {
        let fast = self.witness_fast.iter().enumerate();
        fast.filter_map(|(db, map)| Some((Some(db as u32), map.get()?)))
            .chain(self.witness_other.get().map(|map| (None, map)))
    }

    pub(super) fn clear_witnesses_where(&self, keep: impl Fn(u32) -> bool) {
        for (db, map) in self.witness_maps() {
            match db {
                Some(db) if !keep(db) => map.clear(),
                Some(_) => {}
                None => map.retain(|k, _| keep(split_other_key(k).0)),
            }
        }
    }

    /// Every collection witness as `(db, key, witness)`, for snapshots
    /// ([`Self::insert_witness`] reads it back).
    pub fn for_each_witness(&self, mut f: impl FnMut(u32, &[u8], &Witness)) {
        let fast = self.witness_fast.iter().enumerate();
        let cells = fast
            .map(|(db, cell)| (Some(db as u32), cell))
            .chain(std::iter::once((None, &self.witness_other)));
        for (db, cell) in cells {
            let Some(map) = cell.get() else { continue };
            for e in map.iter() {
                match db {
                    Some(db) => f(db, e.key(), e.value()),
                    None => {
                        let (db, key) = split_other_key(e.key());
                        f(db, key, e.value());
                    }
                }
            }
        }
    }

    /// Restores one witness written by [`Self::for_each_witness`].
    pub fn insert_witness(&self, db: u32, key: &[u8], witness: Witness) {
        let map = self.witness_cell(db).get_or_init(Default::default);
        map.insert(StoredKey::new(&Self::map_key(db, key)), witness);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Baseline;

    #[test]
    fn witnesses_go_with_what_invalidates_them() {
        let t = ExpiryTable::new(Baseline::Absent);
        let member = |m: &[u8]| Some(Witness::Members(vec![m.into()]));
        t.mark_persistent(0, b"h", true);
        t.set_witness(0, b"h", WitnessRef::Member(b"f"));
        t.set_deadline(0, b"h", 5_000);
        assert_eq!(
            t.witness(0, b"h"),
            member(b"f"),
            "an EXPIRE keeps the content"
        );
        t.set_witness(0, b"h", WitnessRef::Member(b"g"));
        assert_eq!(
            t.remove_witness_members(0, b"h", |m| m == b"f"),
            Popped::Left,
            "g is left"
        );
        assert_eq!(t.witness(0, b"h"), member(b"g"));
        assert_eq!(
            t.remove_witness_members(0, b"h", |m| m == b"g"),
            Popped::Unknown,
            "nothing known left"
        );
        assert_eq!(t.witness(0, b"h"), None);
        for m in [&b"a"[..], b"b", b"c", b"d", b"e"] {
            t.set_witness(0, b"h", WitnessRef::Member(m));
        }
        assert_eq!(
            t.witness(0, b"h"),
            Some(Witness::Members(vec![
                b"b"[..].into(),
                b"c"[..].into(),
                b"d"[..].into(),
                b"e"[..].into()
            ])),
            "the last four"
        );
        t.mark_absent(0, b"h", true);
        assert_eq!(t.witness(0, b"h"), None, "DEL");
        t.set_witness(0, b"l", WitnessRef::MinLen(2));
        t.set_deadline(0, b"l", 5_000);
        t.prune(6_000);
        assert_eq!(t.witness(0, b"l"), None, "expired");
        t.set_witness(40, b"s", WitnessRef::Member(b"m"));
        t.set_witness(0, b"s", WitnessRef::Member(b"m"));
        t.rename(0, b"s", b"d", true);
        assert_eq!((t.witness(0, b"s"), t.witness(0, b"d")), (None, None));
        assert_eq!(t.witness(40, b"s"), member(b"m"));
        t.flush_db(40);
        assert_eq!(t.witness(40, b"s"), None);
        t.set_witness(1, b"z", WitnessRef::Member(b"m"));
        t.set_maybe_volatile(1, b"z", 9_000);
        assert_eq!(t.witness(1, b"z"), None, "maybe emptied");
        t.set_witness(3, b"l", WitnessRef::ExactLen(2));
        assert_eq!(t.pop_witness_len(3, b"l", 1), Popped::Left);
        assert_eq!(t.witness_len(3, b"l"), Some((1, true)));
        assert_eq!(t.pop_witness_len(3, b"l", 1), Popped::Emptied);
        t.set_witness(3, b"l", WitnessRef::ExactLen(2));
        t.loosen_witness_len(3, b"l");
        assert_eq!(
            t.pop_witness_len(3, b"l", 2),
            Popped::Unknown,
            "at least 2: maybe more"
        );
        t.set_witness(2, b"z", WitnessRef::Member(b"m"));
        t.flush_all();
        assert_eq!(t.witness_count(), 0);
    }
}
