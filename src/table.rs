//! The expiry table: what the proxy knows about each key's absolute expiry.
//!
//! Keys are `(db, key)`; values are absolute deadlines in milliseconds since the Unix epoch, or a
//! marker that the key is known to exist without a TTL, to be absent, not to be volatile, to
//! exist with a TTL not known, or to be unknown. A key with no entry means whatever the table's [`Baseline`] says: after a full
//! sync whose snapshot the proxy scanned, "not volatile"; for a data set known to start empty,
//! "absent"; otherwise "unknown", which is not the same as "no TTL".
//!
//! Storage is one sharded [`DashMap`] per DB for the first [`FAST_DBS`] DBs, keyed by the raw
//! key bytes so a lookup borrows the caller's key and allocates nothing; rarer DBs share one
//! map keyed by `db ‖ key`. A map is made when its first key arrives. Each entry is a key (inline
//! up to 22 bytes, see [`stored_key`]) and one `i64`. What is known to be inside collections is
//! kept beside the deadlines (see [`witness`]).

mod stored_key;
mod witness;

use dashmap::DashMap;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::OnceLock;
use stored_key::StoredKey;
use witness::WitnessMap;
pub use witness::{Popped, Witness, WitnessRef, EXACT_MEMBERS, WITNESS_MEMBERS};

/// DBs with a map of their own (Redis's default `databases` is 16; Pika uses db0–db7).
pub const FAST_DBS: usize = 16;

/// What an absent entry means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// Nothing is known about keys that have no entry (the proxy joined mid-stream).
    Unknown,
    /// Keys without an entry have no TTL (they may or may not exist): a snapshot or a warm-up
    /// scan listed every volatile key.
    NotVolatile,
    /// Keys without an entry do not exist (the data set started empty and every write since was
    /// seen).
    Absent,
}

impl Baseline {
    fn to_u8(self) -> u8 {
        match self {
            Baseline::Unknown => 0,
            Baseline::NotVolatile => 1,
            Baseline::Absent => 2,
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Baseline::NotVolatile,
            2 => Baseline::Absent,
            _ => Baseline::Unknown,
        }
    }
    /// Metric/API label.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Unknown => "unknown",
            Baseline::NotVolatile => "not_volatile",
            Baseline::Absent => "absent",
        }
    }
}

/// What the table knows about one key at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKnowledge {
    /// The key has a TTL and is alive until the deadline (inclusive), in ms.
    Volatile(i64),
    /// The key had a TTL whose deadline (ms) is before the instant asked about: it is gone.
    Expired(i64),
    /// The key exists and has no TTL.
    Persistent,
    /// The key is known not to exist.
    Absent,
    /// The key has no TTL, but whether it exists is not tracked.
    NotVolatile,
    /// The key either still has the TTL ending at this deadline (ms) or no longer exists: a
    /// removal (HDEL, SREM, LPOP…) may have emptied a volatile collection.
    MaybeVolatile(i64),
    /// Nothing is known.
    Unknown,
}

const PERSISTENT: i64 = i64::MIN;
const ABSENT: i64 = i64::MIN + 1;
const NOT_VOLATILE: i64 = i64::MIN + 2;
const UNKNOWN: i64 = i64::MIN + 3;
/// The name holds values of several types (Pika 3.x keeps one per type under a name, each with
/// its own TTL): read as [`KeyKnowledge::Unknown`]; see [`ExpiryTable::mark_shared`].
const SHARED: i64 = i64::MIN + 4;
/// `PERSISTENT_TYPED + t`: the key exists without a TTL and holds only values of type `t`
/// ([`ValueType::code`], 1–5; see [`ExpiryTable::set_type`]).
const PERSISTENT_TYPED: i64 = i64::MIN + 16;
/// Where a deadline's type is kept in a table that tracks types: deadlines stay below it.
const TYPE_SHIFT: u32 = 56;
const TYPE_BITS: i64 = 0b111 << TYPE_SHIFT;
/// The largest deadline a table that tracks types holds (2^56 ms, 2.28 million years).
const MAX_TYPED_DEADLINE: i64 = (1 << TYPE_SHIFT) - 1;
/// Set in a negated value: "exists, TTL unknown, until at least" this instant (ms), read as
/// [`KeyKnowledge::Unknown`] by every rule but the EXPIRE's ([`ExpiryTable::is_present_at`]).
/// Deadlines stay far below it (2^62 ms is 146 million years).
const PRESENT_UNTIL: i64 = 1 << 62;

fn is_marker(v: i64) -> bool {
    v == PERSISTENT
        || v == ABSENT
        || v == NOT_VOLATILE
        || v == UNKNOWN
        || v == SHARED
        || typed_persistent(v).is_some()
}

fn typed_persistent(v: i64) -> Option<ValueType> {
    v.checked_sub(PERSISTENT_TYPED)
        .and_then(ValueType::from_code)
}

/// The kind of value a Pika 3.x name holds: that release keeps one of each type apart under a
/// name, each with its own TTL (4.0 and Redis refuse a second type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// String (also what INCR, APPEND, SETRANGE write).
    String,
    /// Hash.
    Hash,
    /// List.
    List,
    /// Set.
    Set,
    /// Sorted set (also a geo index).
    Zset,
}

impl ValueType {
    const fn code(self) -> i64 {
        match self {
            ValueType::String => 1,
            ValueType::Hash => 2,
            ValueType::List => 3,
            ValueType::Set => 4,
            ValueType::Zset => 5,
        }
    }

    fn from_code(code: i64) -> Option<ValueType> {
        Some(match code {
            1 => ValueType::String,
            2 => ValueType::Hash,
            3 => ValueType::List,
            4 => ValueType::Set,
            5 => ValueType::Zset,
            _ => return None,
        })
    }

    /// The type `TYPE` answers with this name (`string`, `hash`, `list`, `set`, `zset`).
    pub fn from_type_reply(reply: &[u8]) -> Option<ValueType> {
        Some(match reply {
            b"string" => ValueType::String,
            b"hash" => ValueType::Hash,
            b"list" => ValueType::List,
            b"set" => ValueType::Set,
            b"zset" => ValueType::Zset,
            _ => return None,
        })
    }
}

/// What the table says of the types under a name, for a table that tracks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameTypes {
    /// It holds values of this one type only, alive (`alive`) or gone by expiry.
    Only { of: ValueType, alive: bool },
    /// It holds nothing.
    Nothing,
    /// It holds several ([`ExpiryTable::mark_shared`]).
    Several,
    /// It has a deadline (passed or not) the table learned without the type it is about.
    Untyped,
    /// Not known.
    Unknown,
}

/// Values in `(UNKNOWN, 0)` hold a "maybe volatile" deadline, negated, or with
/// [`PRESENT_UNTIL`] set, the instant until which the key surely exists; positive values are
/// deadlines.
fn is_maybe_volatile(v: i64) -> bool {
    v < 0 && !is_marker(v) && (-v) & PRESENT_UNTIL == 0
}

/// The instant until which a "present" value says the key exists.
fn present_until(v: i64) -> Option<i64> {
    // Markers are near i64::MIN, which has no negation: test before negating.
    (v < 0 && !is_marker(v) && (-v) & PRESENT_UNTIL != 0).then(|| (-v) & !PRESENT_UNTIL)
}

/// foldhash rather than the default SipHash: keys come from the master's stream, not from
/// clients of the proxy, and hashing was half the lookup cost (benches/table.rs).
type KeyMap = DashMap<StoredKey, i64, foldhash::fast::RandomState>;

/// Shards per map. A shard grows by rehashing every key it holds while the inserting relay waits
/// (reading each boxed key again, mostly from memory, not cache); keys spread evenly, so all
/// shards grow at about the same table size. DashMap's default (4 per core, 8 here) made that
/// 5–10 ms stalls of the stream at a few hundred thousand keys; 64 still held single reads of 100
/// entries for 0.3–0.6 ms around each growth step. With 256 a step moves about 1,500 keys at
/// 400,000: on the added-latency load (400,000 fresh keys in reads of 100 entries, interleaved
/// runs), reads over 0.2 ms went from 0.9–1.1 % to 0.24–0.49 % and the p99.9 read from
/// 0.41–0.46 ms to 0.24–0.29 ms. A map is made only for a DB that gets a key, so the 256 shards
/// (128 bytes each) cost 32 KiB per DB in use.
const SHARDS: usize = 256;

fn key_map() -> KeyMap {
    DashMap::with_hasher_and_shard_amount(Default::default(), SHARDS)
}

/// Concurrent `(db, key) → expiry` map with a completeness baseline.
#[derive(Debug)]
pub struct ExpiryTable {
    fast: Box<[OnceLock<KeyMap>]>,
    /// DBs ≥ FAST_DBS, keyed by `db (4 bytes BE) ‖ key`.
    other: OnceLock<KeyMap>,
    baseline: AtomicU8,
    /// What is known to be inside collections (see [`Witness`]), laid out like the deadlines:
    /// a map per fast DB keyed by the key itself (a lookup borrows it), one shared map keyed by
    /// `db ‖ key` for the rest.
    witness_fast: Box<[OnceLock<WitnessMap>]>,
    witness_other: OnceLock<WitnessMap>,
    /// Set once any key was marked [`SHARED`]: until then no entry needs that test.
    has_shared: AtomicBool,
    /// Deadlines carry their type ([`Self::track_types`]).
    typed: AtomicBool,
}

impl Default for ExpiryTable {
    fn default() -> Self {
        Self::new(Baseline::Unknown)
    }
}

fn other_key(db: u32, key: &[u8]) -> Box<[u8]> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&db.to_be_bytes());
    k.extend_from_slice(key);
    k.into_boxed_slice()
}

fn split_other_key(k: &[u8]) -> (u32, &[u8]) {
    let mut db = [0u8; 4];
    db.copy_from_slice(&k[..4]);
    (u32::from_be_bytes(db), &k[4..])
}

impl ExpiryTable {
    /// An empty table whose absent entries mean `baseline`.
    pub fn new(baseline: Baseline) -> Self {
        ExpiryTable {
            fast: (0..FAST_DBS).map(|_| OnceLock::new()).collect(),
            other: OnceLock::new(),
            baseline: AtomicU8::new(baseline.to_u8()),
            witness_fast: (0..FAST_DBS).map(|_| OnceLock::new()).collect(),
            witness_other: OnceLock::new(),
            has_shared: AtomicBool::new(false),
            typed: AtomicBool::new(false),
        }
    }

    /// The map that holds (or would hold) `db`, if it exists yet.
    fn map_of(&self, db: u32) -> Option<&KeyMap> {
        self.cell_of(db).get()
    }

    /// The map holding `db`, made now if `db` never had a key.
    fn map_of_or_make(&self, db: u32) -> &KeyMap {
        self.cell_of(db).get_or_init(key_map)
    }

    /// Where the map of `db` is (or will be) kept.
    fn cell_of(&self, db: u32) -> &OnceLock<KeyMap> {
        self.fast.get(db as usize).unwrap_or(&self.other)
    }

    /// The key to use for `key` of `db` in its map.
    fn map_key(db: u32, key: &[u8]) -> Cow<'_, [u8]> {
        if (db as usize) < FAST_DBS {
            Cow::Borrowed(key)
        } else {
            Cow::Owned(other_key(db, key).into_vec())
        }
    }

    /// Every map made so far, with its DB (`None` for the shared map of the rarer DBs).
    fn maps(&self) -> impl Iterator<Item = (Option<u32>, &KeyMap)> {
        let fast = self.fast.iter().enumerate();
        fast.filter_map(|(db, map)| Some((Some(db as u32), map.get()?)))
            .chain(self.other.get().map(|map| (None, map)))
    }

    fn get(&self, db: u32, key: &[u8]) -> Option<i64> {
        let map = self.map_of(db)?;
        map.get(Self::map_key(db, key).as_ref()).map(|v| *v)
    }

    fn insert(&self, db: u32, key: &[u8], value: i64) {
        let (map, k) = (self.map_of_or_make(db), Self::map_key(db, key));
        // A key already tracked (a TTL refreshed, a marker changed) is updated in place: no
        // key allocation to make and free again.
        if let Some(mut current) = map.get_mut(k.as_ref()) {
            *current = value;
            return;
        }
        map.insert(StoredKey::new(&k), value);
    }

    fn remove(&self, db: u32, key: &[u8]) -> Option<i64> {
        let map = self.map_of(db)?;
        map.remove(Self::map_key(db, key).as_ref()).map(|(_, v)| v)
    }

    /// Every `(db, key, value)`; used by the rare whole-table operations.
    fn for_each_db_entry(&self, mut f: impl FnMut(u32, &[u8], i64)) {
        for (db, map) in self.maps() {
            for e in map.iter() {
                match db {
                    Some(db) => f(db, e.key(), *e.value()),
                    None => {
                        let (db, key) = split_other_key(e.key());
                        f(db, key, *e.value());
                    }
                }
            }
        }
    }

    /// Keep only entries for which `keep(db, key, value)` holds (it may rewrite the value).
    fn retain(&self, mut keep: impl FnMut(u32, &[u8], &mut i64) -> bool) {
        for (db, map) in self.maps() {
            map.retain(|k, v| match db {
                Some(db) => keep(db, k, v),
                None => {
                    let (db, key) = split_other_key(k);
                    keep(db, key, v)
                }
            });
        }
    }

    /// What keys without an entry mean.
    pub fn baseline(&self) -> Baseline {
        Baseline::from_u8(self.baseline.load(Ordering::Acquire))
    }

    /// True when every key's volatility is known (the baseline is not `Unknown`).
    pub fn is_complete(&self) -> bool {
        self.baseline() != Baseline::Unknown
    }

    /// Forget everything and start over with `baseline` (a full sync begins).
    pub fn reset(&self, baseline: Baseline) {
        for (_, map) in self.maps() {
            map.clear();
        }
        self.clear_witnesses_where(|_| false);
        self.has_shared.store(false, Ordering::Release);
        self.baseline.store(baseline.to_u8(), Ordering::Release);
    }

    /// Change what absent entries mean without touching entries (a scan finished).
    pub fn set_baseline(&self, baseline: Baseline) {
        self.baseline.store(baseline.to_u8(), Ordering::Release);
    }

    /// Number of entries (volatile keys plus markers).
    pub fn len(&self) -> usize {
        self.maps().map(|(_, map)| map.len()).sum()
    }

    /// True when the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What is known about `key` in `db` at `now_ms`.
    pub fn lookup(&self, db: u32, key: &[u8], now_ms: i64) -> KeyKnowledge {
        self.knowledge(self.get(db, key), now_ms)
    }

    /// [`Self::set_deadline`], returning what [`Self::lookup`] said of the key at `now_ms`
    /// before: one map access for a key already tracked.
    pub fn replace_with_deadline(
        &self,
        db: u32,
        key: &[u8],
        deadline_ms: i64,
        now_ms: i64,
    ) -> KeyKnowledge {
        let value = self.deadline_value(deadline_ms);
        let (map, k) = (self.map_of_or_make(db), Self::map_key(db, key));
        if let Some(mut current) = map.get_mut(k.as_ref()) {
            let before = self.knowledge(Some(*current), now_ms);
            *current = self.keeping_type(*current, value);
            return before;
        }
        map.insert(StoredKey::new(&k), value);
        self.knowledge(None, now_ms)
    }

    /// What an entry's `value` (or its absence) says of a key at `now_ms`.
    fn knowledge(&self, value: Option<i64>, now_ms: i64) -> KeyKnowledge {
        match value {
            Some(PERSISTENT) => KeyKnowledge::Persistent,
            Some(ABSENT) => KeyKnowledge::Absent,
            Some(NOT_VOLATILE) => KeyKnowledge::NotVolatile,
            Some(UNKNOWN | SHARED) => KeyKnowledge::Unknown,
            Some(v) if typed_persistent(v).is_some() => KeyKnowledge::Persistent,
            Some(v) if present_until(v).is_some() => KeyKnowledge::Unknown,
            Some(v) if is_maybe_volatile(v) => KeyKnowledge::MaybeVolatile(self.deadline_of(-v)),
            Some(v) => match self.deadline_of(v) {
                deadline if deadline < now_ms => KeyKnowledge::Expired(deadline),
                deadline => KeyKnowledge::Volatile(deadline),
            },
            None => match self.baseline() {
                Baseline::Unknown => KeyKnowledge::Unknown,
                Baseline::NotVolatile => KeyKnowledge::NotVolatile,
                Baseline::Absent => KeyKnowledge::Absent,
            },
        }
    }

    /// The key has a TTL ending at `deadline_ms`.
    pub fn set_deadline(&self, db: u32, key: &[u8], deadline_ms: i64) {
        self.insert_keeping_type(db, key, self.deadline_value(deadline_ms));
    }

    /// Stores `value` (a deadline, "no TTL", "maybe volatile" or "present") with the type the
    /// current entry names, if any (see [`Self::keeping_type`]).
    fn insert_keeping_type(&self, db: u32, key: &[u8], value: i64) {
        let (map, k) = (self.map_of_or_make(db), Self::map_key(db, key));
        if let Some(mut current) = map.get_mut(k.as_ref()) {
            *current = self.keeping_type(*current, value);
            return;
        }
        map.insert(StoredKey::new(&k), value);
    }

    /// The type an entry's value says its name holds ([`Self::set_type`]).
    fn type_in(&self, v: i64) -> Option<ValueType> {
        if is_marker(v) || !self.typed.load(Ordering::Relaxed) {
            return typed_persistent(v);
        }
        // A deadline, or (negated) a "maybe volatile" deadline or a "present" instant.
        ValueType::from_code((v.abs() & TYPE_BITS) >> TYPE_SHIFT)
    }

    /// `value` (a deadline or "no TTL") replacing `current`, with the type `current` names: a
    /// new deadline or the loss of one changes no type (the rules that change it say so).
    fn keeping_type(&self, current: i64, value: i64) -> i64 {
        match self.type_in(current) {
            Some(of) if value > 0 => (value & !TYPE_BITS) | (of.code() << TYPE_SHIFT),
            Some(of) if value == PERSISTENT => PERSISTENT_TYPED + of.code(),
            Some(of) if value < 0 && !is_marker(value) => {
                -((-value & !TYPE_BITS) | (of.code() << TYPE_SHIFT))
            }
            _ => value,
        }
    }

    /// How a deadline is stored (untyped).
    fn deadline_value(&self, deadline_ms: i64) -> i64 {
        // Deadlines ≤ 0 mean "delete" on every server; keep them out of the marker range.
        if self.typed.load(Ordering::Relaxed) {
            deadline_ms.clamp(1, MAX_TYPED_DEADLINE)
        } else {
            // Negated ("maybe volatile"), the largest stay clear of the markers near i64::MIN.
            deadline_ms.clamp(1, i64::MAX - 64)
        }
    }

    /// The deadline of a positive value (its type bits off in a table that tracks types).
    fn deadline_of(&self, v: i64) -> i64 {
        if self.typed.load(Ordering::Relaxed) {
            v & !TYPE_BITS
        } else {
            v
        }
    }

    /// From now on deadlines and persistent keys carry the type of value they are about (Pika
    /// 3.x, where one name may hold a value of each type: see [`Self::set_type`]). Deadlines
    /// stored before must be below 2^56 ms (every Pika deadline is).
    pub fn track_types(&self) {
        if !self.typed.load(Ordering::Relaxed) {
            self.typed.store(true, Ordering::Relaxed);
        }
    }

    /// Whether [`Self::track_types`] was called.
    pub fn tracks_types(&self) -> bool {
        self.typed.load(Ordering::Relaxed)
    }

    /// Records that the name holds values of type `of` only: kept in a deadline or a "no TTL"
    /// entry (other entries say nothing of types and are left alone), until the entry is
    /// replaced. Only in a table that tracks types.
    pub fn set_type(&self, db: u32, key: &[u8], of: ValueType) {
        if !self.typed.load(Ordering::Relaxed) {
            return;
        }
        let Some(map) = self.map_of(db) else {
            return;
        };
        if let Some(mut v) = map.get_mut(Self::map_key(db, key).as_ref()) {
            if *v > 0 {
                *v = (*v & !TYPE_BITS) | (of.code() << TYPE_SHIFT);
            } else if *v == PERSISTENT || typed_persistent(*v).is_some() {
                *v = PERSISTENT_TYPED + of.code();
            } else if !is_marker(*v) {
                *v = -((-*v & !TYPE_BITS) | (of.code() << TYPE_SHIFT));
            }
        }
    }

    /// What the table says of the types under the name at `now_ms` (see [`Self::set_type`]):
    /// a name absent, or known to hold one type only.
    pub fn name_types(&self, db: u32, key: &[u8], now_ms: i64) -> NameTypes {
        self.name_types_of(self.get(db, key), now_ms)
    }

    /// The key's entry as stored (for [`Self::name_types_of`] and [`Self::knowledge_of`],
    /// which read one entry twice without a second map access).
    pub fn entry(&self, db: u32, key: &[u8]) -> Option<i64> {
        self.get(db, key)
    }

    /// What [`Self::lookup`] says of a key whose entry is `value` ([`Self::entry`]).
    pub fn knowledge_of(&self, value: Option<i64>, now_ms: i64) -> KeyKnowledge {
        self.knowledge(value, now_ms)
    }

    /// [`Self::name_types`] of a key whose entry is `value` ([`Self::entry`]).
    pub fn name_types_of(&self, value: Option<i64>, now_ms: i64) -> NameTypes {
        match value {
            Some(SHARED) => NameTypes::Several,
            Some(v) => match self.type_in(v) {
                Some(of) => NameTypes::Only {
                    of,
                    alive: if is_maybe_volatile(v) {
                        // "That deadline or gone": gone once it passed.
                        self.deadline_of(-v) >= now_ms
                    } else {
                        v < 0 || self.deadline_of(v) >= now_ms
                    },
                },
                None if v > 0 => NameTypes::Untyped,
                None if self.knowledge(value, now_ms) == KeyKnowledge::Absent => NameTypes::Nothing,
                None => NameTypes::Unknown,
            },
            None if self.baseline() == Baseline::Absent => NameTypes::Nothing,
            None => NameTypes::Unknown,
        }
    }

    /// The key has the TTL ending at `deadline_ms`, or no longer exists.
    pub fn set_maybe_volatile(&self, db: u32, key: &[u8], deadline_ms: i64) {
        self.clear_witness(db, key);
        self.insert_keeping_type(db, key, -self.deadline_value(deadline_ms));
    }

    /// Store a marker, or drop the entry when the baseline already implies it. Nothing is
    /// written when the entry already says the same (the common pass-through case).
    fn put_marker(&self, db: u32, key: &[u8], marker: i64, track_existence: bool) {
        // Whatever a key becomes here (gone, replaced, of unknown content), what was known to be
        // inside it no longer holds; a collection write records its witness after this.
        self.clear_witness(db, key);
        let base = self.baseline();
        let marker = if !track_existence
            && base != Baseline::Absent
            && (marker == PERSISTENT || marker == ABSENT)
        {
            NOT_VOLATILE
        } else {
            marker
        };
        let implied = match base {
            Baseline::Absent => ABSENT,
            Baseline::NotVolatile => NOT_VOLATILE,
            Baseline::Unknown => UNKNOWN,
        };
        let current = self.get(db, key);
        if implied == marker {
            if current.is_some() {
                self.remove(db, key);
            }
            return;
        }
        let marker = current.map_or(marker, |c| self.keeping_type(c, marker));
        if current != Some(marker) {
            self.insert(db, key, marker);
        }
    }

    /// The key exists and has no TTL. Whether it exists is only recorded when
    /// `track_existence` is set (or the baseline is "absent", where it must be).
    pub fn mark_persistent(&self, db: u32, key: &[u8], track_existence: bool) {
        self.put_marker(db, key, PERSISTENT, track_existence);
    }

    /// The key is gone (DEL, expiry, …).
    pub fn mark_absent(&self, db: u32, key: &[u8], track_existence: bool) {
        self.put_marker(db, key, ABSENT, track_existence);
    }

    /// Nothing is known about the key any more (a write whose effect on its TTL cannot be
    /// decided from the stream, e.g. a removal that may have emptied a volatile hash).
    pub fn mark_unknown(&self, db: u32, key: &[u8]) {
        self.put_marker(db, key, UNKNOWN, true);
    }

    /// The key exists, with a TTL that is not known, at least until `until_ms` (a write that
    /// creates a missing key was decided without knowing its state, and the TTL it may have
    /// kept does not end before then): nothing else is known of it, but an EXPIRE on it up to
    /// then sets its deadline exactly.
    pub fn mark_present_until(&self, db: u32, key: &[u8], until_ms: i64) {
        self.clear_witness(db, key);
        let until = if self.typed.load(Ordering::Relaxed) {
            until_ms.clamp(1, MAX_TYPED_DEADLINE)
        } else {
            until_ms.clamp(1, PRESENT_UNTIL - 8)
        };
        self.insert_keeping_type(db, key, -(until | PRESENT_UNTIL));
    }

    /// Whether the key is known to exist at `now_ms`, with a TTL that is not known
    /// ([`Self::mark_present_until`]).
    pub fn is_present_at(&self, db: u32, key: &[u8], now_ms: i64) -> bool {
        self.get(db, key)
            .and_then(present_until)
            .is_some_and(|until| now_ms <= self.deadline_of(until))
    }

    /// The name holds values of several types (a Pika 3.x master keeps a string, a hash, a list,
    /// a set and a zset apart under one name, each with its own TTL, and answers `PTTL`/`TYPE`
    /// for the first it finds): no rule can tell which of them a deadline is about, and the
    /// `expireat`/`del` a rewrite adds would reach them all. Read as unknown; the engine passes
    /// writes on it unchanged ([`Self::is_shared`]) until a `DEL` or a flush removes the name.
    pub fn mark_shared(&self, db: u32, key: &[u8]) {
        self.has_shared.store(true, Ordering::Release);
        self.clear_witness(db, key);
        self.insert(db, key, SHARED);
    }

    /// Whether [`Self::mark_shared`] holds for the key (one relaxed load while no key was ever
    /// marked).
    pub fn is_shared(&self, db: u32, key: &[u8]) -> bool {
        self.has_shared.load(Ordering::Acquire) && self.get(db, key) == Some(SHARED)
    }

    /// What the table holds of the key, if anything, is no longer known (an entry the engine
    /// cannot follow named it); a key without an entry keeps what the baseline says of it.
    pub fn forget(&self, db: u32, key: &[u8]) {
        let current = self.get(db, key);
        if current == Some(SHARED) {
            // Still several types under one name: whatever changed, no deadline describes it.
            return;
        }
        if current.is_some() {
            self.mark_unknown(db, key);
        } else {
            self.clear_witness(db, key);
        }
    }

    /// Everything the table holds of the DB's keys is no longer known (a command that deletes
    /// keys the stream does not name); keys without an entry keep what the baseline says.
    pub fn forget_db(&self, db: u32) {
        self.clear_witnesses_where(|d| d != db);
        // Under an unknown baseline a key without an entry is unknown already.
        let drop = self.baseline() == Baseline::Unknown;
        // A name holding several types stays so: a typed flush (Pika 3.5) may leave some.
        let keep_shared = self.has_shared.load(Ordering::Acquire);
        let forgotten = |v: i64| {
            if keep_shared && v == SHARED {
                SHARED
            } else {
                UNKNOWN
            }
        };
        match (self.map_of(db), (db as usize) < FAST_DBS) {
            (Some(map), true) if drop && !keep_shared => map.clear(),
            (Some(map), true) if drop => map.retain(|_, value| *value == SHARED),
            (Some(map), true) => map.alter_all(|_, v| forgotten(v)),
            (Some(map), false) => map.retain(|k, value| {
                if split_other_key(k).0 != db {
                    return true;
                }
                *value = forgotten(*value);
                !drop || *value == SHARED
            }),
            (None, _) => {}
        }
    }

    /// The key has no TTL; whether it exists is not known.
    pub fn mark_not_volatile(&self, db: u32, key: &[u8]) {
        self.put_marker(db, key, NOT_VOLATILE, false);
    }

    /// RENAME src dst: dst takes src's TTL state; src is gone.
    pub fn rename(&self, db: u32, src: &[u8], dst: &[u8], track_existence: bool) {
        self.move_between(db, src, db, dst, track_existence, true);
    }

    /// MOVE key to another db (or COPY when `remove_source` is false).
    pub fn move_between(
        &self,
        src_db: u32,
        src: &[u8],
        dst_db: u32,
        dst: &[u8],
        track_existence: bool,
        remove_source: bool,
    ) {
        let state = if remove_source {
            self.remove(src_db, src)
        } else {
            self.get(src_db, src)
        };
        self.clear_witness(src_db, src);
        self.clear_witness(dst_db, dst);
        if remove_source {
            self.mark_absent(src_db, src, track_existence);
        }
        match state {
            Some(v) => self.insert(dst_db, dst, v),
            // No entry: dst becomes whatever the baseline says the source was.
            None => {
                self.remove(dst_db, dst);
            }
        }
    }

    /// SWAPDB a b.
    pub fn swap_db(&self, a: u32, b: u32) {
        if a == b {
            return;
        }
        let mut moved: Vec<(u32, Vec<u8>, i64)> = Vec::new();
        self.for_each_db_entry(|db, key, v| {
            if db == a {
                moved.push((b, key.to_vec(), v));
            } else if db == b {
                moved.push((a, key.to_vec(), v));
            }
        });
        self.flush_db(a);
        self.flush_db(b);
        self.clear_witnesses_where(|db| db != a && db != b);
        for (db, key, v) in moved {
            self.insert(db, &key, v);
        }
    }

    /// FLUSHDB on `db`.
    pub fn flush_db(&self, db: u32) {
        self.clear_witnesses_where(|d| d != db);
        match (self.map_of(db), (db as usize) < FAST_DBS) {
            (Some(map), true) => map.clear(),
            (Some(map), false) => map.retain(|k, _| split_other_key(k).0 != db),
            (None, _) => {}
        }
    }

    /// FLUSHALL: every key is gone, so existence is known again.
    pub fn flush_all(&self) {
        let complete = self.is_complete();
        self.reset(if complete {
            Baseline::Absent
        } else {
            self.baseline()
        });
    }

    /// Drop deadlines before `now_ms` (those keys are gone on the master; a key is still alive
    /// *at* its deadline on both Redis and Pika). Returns how many entries were removed.
    pub fn prune(&self, now_ms: i64) -> usize {
        let base = self.baseline();
        let keep_absent_marker = base == Baseline::Unknown;
        let mut pruned = 0;
        self.retain(|db, key, v| {
            if let Some(until) = present_until(*v).map(|u| self.deadline_of(u)) {
                if until >= now_ms {
                    return true;
                }
                // Past it the key may be gone: nothing is known of it any more.
                pruned += 1;
                if base == Baseline::Unknown {
                    return false;
                }
                *v = UNKNOWN;
                return true;
            }
            if is_maybe_volatile(*v) {
                if self.deadline_of(-*v) >= now_ms {
                    return true;
                }
                // Past its deadline the key is gone or was recreated without a TTL.
                pruned += 1;
                if base == Baseline::NotVolatile {
                    return false;
                }
                *v = NOT_VOLATILE;
                return true;
            }
            if is_marker(*v) || self.deadline_of(*v) >= now_ms {
                return true;
            }
            pruned += 1;
            // The key is gone: what it held no longer tells anything about a later one.
            self.clear_witness(db, key);
            if keep_absent_marker {
                *v = ABSENT;
                true
            } else {
                false
            }
        });
        pruned
    }

    /// Every entry as `(db, key, value)` in the table's own encoding of values, for snapshots
    /// ([`Self::insert_raw`] reads it back). The encoding is private to this module: a snapshot
    /// format that stores it must be versioned with it.
    pub fn for_each_raw(&self, f: impl FnMut(u32, &[u8], i64)) {
        self.for_each_db_entry(f);
    }

    /// Restores one entry written by [`Self::for_each_raw`].
    pub fn insert_raw(&self, db: u32, key: &[u8], value: i64) {
        if value == SHARED {
            self.has_shared.store(true, Ordering::Release);
        }
        self.insert(db, key, value);
    }

    /// Number of entries holding a deadline.
    #[cfg(test)]
    pub fn volatile_len(&self) -> usize {
        let mut n = 0;
        self.for_each_db_entry(|_, _, v| {
            if v > 0 {
                n += 1;
            }
        });
        n
    }

    /// Every `(db, key, deadline)` with a deadline (tests compare tables with it).
    #[cfg(test)]
    pub fn volatile_entries(&self) -> Vec<(u32, Vec<u8>, i64)> {
        let mut out = Vec::new();
        self.for_each_db_entry(|db, key, v| {
            if v > 0 {
                out.push((db, key.to_vec(), self.deadline_of(v)));
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_claim_reads_as_unknown_and_ends_at_its_instant() {
        let t = ExpiryTable::new(Baseline::Unknown);
        t.mark_absent(0, b"gone", true);
        t.mark_unknown(0, b"unknown");
        t.mark_persistent(0, b"kept", true);
        t.set_maybe_volatile(0, b"maybe", 5_000);
        for key in [&b"gone"[..], b"unknown", b"kept", b"maybe", b"none"] {
            assert!(!t.is_present_at(0, key, 0), "{key:?}");
        }
        t.mark_present_until(0, b"k", 2_000);
        assert_eq!(t.lookup(0, b"k", 1_000), KeyKnowledge::Unknown);
        assert!(t.is_present_at(0, b"k", 2_000));
        assert!(!t.is_present_at(0, b"k", 2_001));
        // The extremes stay clear of the markers and of "maybe volatile".
        for until in [i64::MIN, -1, 0, i64::MAX] {
            t.mark_present_until(0, b"x", until);
            assert_eq!(t.lookup(0, b"x", 0), KeyKnowledge::Unknown, "{until}");
        }
        assert_eq!(t.prune(2_001), 1);
        assert!(!t.is_present_at(0, b"k", 0));
        assert_eq!(t.lookup(0, b"k", 0), KeyKnowledge::Unknown);
        assert_eq!(t.lookup(0, b"maybe", 0), KeyKnowledge::MaybeVolatile(5_000));
    }

    #[test]
    fn a_type_rides_through_every_deadline_form_until_a_marker_replaces_it() {
        let t = ExpiryTable::new(Baseline::Absent);
        t.track_types();
        t.mark_persistent(0, b"l", true);
        t.set_type(0, b"l", ValueType::List);
        let list = NameTypes::Only {
            of: ValueType::List,
            alive: true,
        };
        t.set_deadline(0, b"l", 5_000);
        assert_eq!(t.name_types(0, b"l", 1_000), list);
        assert_eq!(t.lookup(0, b"l", 1_000), KeyKnowledge::Volatile(5_000));
        // A removal may have emptied it: the deadline or nothing, still of that type.
        t.set_maybe_volatile(0, b"l", 6_000);
        assert_eq!(t.lookup(0, b"l", 1_000), KeyKnowledge::MaybeVolatile(6_000));
        assert_eq!(t.name_types(0, b"l", 1_000), list);
        t.mark_present_until(0, b"l", 4_000);
        assert!(t.is_present_at(0, b"l", 4_000) && !t.is_present_at(0, b"l", 4_001));
        assert_eq!(t.name_types(0, b"l", 1_000), list);
        t.set_deadline(0, b"l", 7_000);
        assert_eq!(t.lookup(0, b"l", 1_000), KeyKnowledge::Volatile(7_000));
        assert_eq!(
            t.name_types(0, b"l", 8_000),
            NameTypes::Only {
                of: ValueType::List,
                alive: false
            }
        );
        assert_eq!(t.prune(8_000), 1);
        t.mark_unknown(0, b"l");
        assert_eq!(t.name_types(0, b"l", 1_000), NameTypes::Unknown);
    }

    #[test]
    fn deadlines_expire_at_the_boundary() {
        let t = ExpiryTable::new(Baseline::NotVolatile);
        t.set_deadline(0, b"k", 1000);
        assert_eq!(t.lookup(0, b"k", 1000), KeyKnowledge::Volatile(1000));
        assert_eq!(t.lookup(0, b"k", 1001), KeyKnowledge::Expired(1000));
        assert_eq!(t.lookup(1, b"k", 0), KeyKnowledge::NotVolatile);
        assert_eq!(t.prune(1000), 0);
        assert_eq!(t.prune(1001), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn baseline_decides_missing_keys() {
        let t = ExpiryTable::new(Baseline::Unknown);
        assert_eq!(t.lookup(0, b"x", 0), KeyKnowledge::Unknown);
        assert!(!t.is_complete());
        t.reset(Baseline::Absent);
        assert_eq!(t.lookup(0, b"x", 0), KeyKnowledge::Absent);
        t.mark_persistent(0, b"x", true);
        assert_eq!(t.lookup(0, b"x", 0), KeyKnowledge::Persistent);
        t.mark_absent(0, b"x", true);
        assert_eq!(t.lookup(0, b"x", 0), KeyKnowledge::Absent);
        assert!(t.is_empty());
    }

    #[test]
    fn persistence_keeps_existence_under_absent_baseline() {
        let t = ExpiryTable::new(Baseline::Absent);
        t.set_deadline(0, b"k", 50);
        t.mark_persistent(0, b"k", false);
        assert_eq!(t.lookup(0, b"k", 100), KeyKnowledge::Persistent);
        let u = ExpiryTable::new(Baseline::NotVolatile);
        u.set_deadline(0, b"k", 50);
        u.mark_persistent(0, b"k", false);
        assert_eq!(u.lookup(0, b"k", 0), KeyKnowledge::NotVolatile);
    }

    #[test]
    fn maybe_volatile_keys_become_not_volatile_after_their_deadline() {
        let t = ExpiryTable::new(Baseline::Absent);
        t.set_maybe_volatile(0, b"h", 5000);
        assert_eq!(t.lookup(0, b"h", 9000), KeyKnowledge::MaybeVolatile(5000));
        assert_eq!(t.volatile_len(), 0);
        assert_eq!(t.prune(5000), 0);
        assert_eq!(t.prune(5001), 1);
        assert_eq!(t.lookup(0, b"h", 9000), KeyKnowledge::NotVolatile);
    }

    #[test]
    fn high_dbs_use_the_shared_map() {
        let t = ExpiryTable::new(Baseline::NotVolatile);
        t.set_deadline(40, b"k", 500);
        t.set_deadline(0, b"k", 600);
        assert_eq!(t.lookup(40, b"k", 0), KeyKnowledge::Volatile(500));
        t.swap_db(40, 1);
        assert_eq!(t.lookup(1, b"k", 0), KeyKnowledge::Volatile(500));
        assert_eq!(t.lookup(40, b"k", 0), KeyKnowledge::NotVolatile);
        t.swap_db(1, 41);
        t.flush_db(41);
        assert_eq!(t.volatile_entries(), vec![(0, b"k".to_vec(), 600)]);
    }

    #[test]
    fn rename_move_swap_flush() {
        let t = ExpiryTable::new(Baseline::NotVolatile);
        t.set_deadline(0, b"a", 500);
        t.rename(0, b"a", b"b", false);
        assert_eq!(t.lookup(0, b"a", 0), KeyKnowledge::NotVolatile);
        assert_eq!(t.lookup(0, b"b", 0), KeyKnowledge::Volatile(500));
        t.move_between(0, b"b", 3, b"b", false, true);
        assert_eq!(t.lookup(3, b"b", 0), KeyKnowledge::Volatile(500));
        t.swap_db(3, 4);
        assert_eq!(t.lookup(4, b"b", 0), KeyKnowledge::Volatile(500));
        assert_eq!(t.lookup(3, b"b", 0), KeyKnowledge::NotVolatile);
        t.set_deadline(5, b"c", 9);
        t.flush_db(4);
        assert_eq!(t.lookup(4, b"b", 0), KeyKnowledge::NotVolatile);
        assert_eq!(t.len(), 1);
        t.flush_all();
        assert_eq!(t.baseline(), Baseline::Absent);
        assert!(t.is_empty());
    }
}
