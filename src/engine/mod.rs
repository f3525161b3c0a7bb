//! The rewrite engine: a pure function from one replication entry to the entries to emit.
//!
//! Inputs are the entry's arguments, the master's execution time, the per-stream state (selected
//! DB, MULTI), the [`ExpiryTable`](crate::table::ExpiryTable) and the [`Policy`] (dialect and family switches). The engine
//! does no I/O; it maintains the table as a side effect so the next entry sees the master's state.
//! See `docs/rewrites.md` for the contract every rule implements.

pub(crate) mod args;
pub mod command;
mod redefine;
pub(crate) mod replacement;
mod rules;

use crate::families::{Family, FamilySwitches};
use crate::table::{ExpiryTable, KeyKnowledge};

use bytes::Bytes;

pub use redefine::{redefines, resets_ttl, whole_flush, writes_string};
pub use replacement::{Arg, Commands, NewCommand, OriginalFrame, Replacement};
pub use rules::{record_single_type, rewrite, touches_unnamed_keys, PIKA_MAX_TIMESTAMP_SECS};

/// How absolute expiries are written downstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `pksetexat k <sec> v`, `expireat k <sec>`; several commands share one binlog item.
    Pika,
    /// `SET k v PXAT <ms>`, `PEXPIREAT k <ms>`; expansions wrapped in MULTI/EXEC.
    Redis,
}

/// The Pika release at both ends of a stream (3.5 and 4.0 do not replicate with each other).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PikaRelease {
    /// 3.x: a replica applies `pksetexat k <sec> v` as written.
    #[default]
    V3,
    /// 4.0.x: a replica applies `pksetexat`'s timestamp as int32 milliseconds, so every real
    /// deadline lands already expired; `expireat` is sound. The master logs INCR, INCRBY,
    /// INCRBYFLOAT, APPEND, SETEX and SET EX/PX as `pksetexat k <sec or 0> <new value>` (APPEND
    /// on a missing key with an empty value), and PSETEX with a millisecond timestamp.
    V4,
}

impl PikaRelease {
    /// Log and metric label.
    pub const fn name(self) -> &'static str {
        match self {
            PikaRelease::V3 => "3",
            PikaRelease::V4 => "4.0",
        }
    }
}

/// What the engine may do, shared by every stream of one proxy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Output dialect.
    pub dialect: Dialect,
    /// Runtime family switches.
    pub families: FamilySwitches,
    /// Which Pika release the stream comes from and goes to (ignored for Redis).
    pub pika_release: PikaRelease,
    /// When set, a write that keeps its key's TTL on a key whose state at the entry the table
    /// does not hold is not decided: the decision says [`Decision::needs_lookup`] and the table
    /// is left as it was, so the caller can learn the key's state from the master and decide
    /// the entry again (`docs/architecture.md#look-ups`).
    pub pause_on_unknown: bool,
}

impl Policy {
    /// A policy with every family on.
    pub fn new(dialect: Dialect) -> Self {
        Policy {
            dialect,
            families: FamilySwitches::all_on(),
            pika_release: PikaRelease::V3,
            pause_on_unknown: false,
        }
    }

    /// Whether string keys' existence is tracked in the table (needed to resolve Pika's
    /// conditional writes, which Pika logs even when they did nothing).
    pub fn tracks_existence(&self) -> bool {
        self.dialect == Dialect::Pika
    }
}

/// Per-stream state the engine reads and updates: the selected DB and whether the stream is
/// inside an upstream MULTI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamState {
    /// DB the next keyed command applies to.
    pub db: u32,
    /// True between an upstream MULTI and its EXEC/DISCARD.
    pub in_multi: bool,
}

/// What to send downstream for one entry; a replacement borrows the entry's bytes.
// Held inline on purpose: an `Emit` lives on the stack for one entry and is never stored in
// bulk, and boxing the replacement would allocate once per rewritten entry on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emit<'a> {
    /// Forward the entry's original bytes unchanged.
    Forward,
    /// Send these commands instead, in order (already wrapped in MULTI/EXEC when the dialect
    /// requires it).
    Replace(Replacement<'a>),
}

/// Why an entry left the engine the way it did; drives the `entries_total` metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// No rule applies (the command does not depend on expiry, or the key is not volatile).
    Passed,
    /// A rule applied and the entry was rewritten.
    Rewritten,
    /// A rule would apply but its family is switched off.
    Disabled,
    /// A rule might apply but the key's expiry is unknown to the proxy; passed through.
    UnknownKey,
    /// The command is not one the engine knows; passed through (table untouched).
    UnknownCommand,
    /// The entry is malformed (wrong arity, bad number); passed through and counted so the
    /// operator can see the master sent something odd.
    Malformed,
}

impl Outcome {
    /// Every outcome, in the metric's documented order.
    pub const ALL: [Outcome; 6] = [
        Outcome::Passed,
        Outcome::Rewritten,
        Outcome::Disabled,
        Outcome::UnknownKey,
        Outcome::UnknownCommand,
        Outcome::Malformed,
    ];

    /// Metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Rewritten => "rewritten",
            Outcome::Disabled => "disabled",
            Outcome::UnknownKey => "unknown_key",
            Outcome::UnknownCommand => "unknown_command",
            Outcome::Malformed => "malformed",
        }
    }
}

/// Why an entry reaching a late replica may leave it different from the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RiskCause {
    /// The entry extends or removes a TTL, or moves data out of a volatile key: a replica that
    /// applies it after the old deadline has already dropped the key, and the stream carries no
    /// value to restore it with (the class no rewrite can repair; see `docs/rewrites.md#at-risk`).
    TtlChangeAfterDeadline,
    /// Whether the key still existed cannot be told from the stream: a removal (HDEL, SREM,
    /// LPOP, ZREM, …) may have emptied it, Pika's same-second `expireat` may have deleted it, or
    /// (Pika 4.0) the write came in the second its deadline falls in, which that master logs
    /// only to the second while it expires keys to the millisecond. Only a look-up on the
    /// master would tell.
    ExistenceAmbiguous,
    /// The proxy does not track whether keys without a TTL exist (the warm-up listed only
    /// volatile keys because its key bound was hit, or never ran); a write after an EXPIRE on
    /// such a key cannot be decided.
    ExistenceUntracked,
    /// A Pika 4.0 master logged a write as `pksetexat k 0 ""`: its APPEND (or SETRANGE) on a
    /// missing key records an empty value, so every replica stores `""` where the master
    /// holds the appended bytes. The stream does not carry the value; nothing can repair it.
    ValueLostByMaster,
    /// A Pika 3.x name came to hold values of two types (a write of one while the other
    /// lives): each has its own TTL, and an `expireat` or `del` added for one would reach both,
    /// so entries on the name pass unrewritten from here on (as to a direct replica, which a
    /// late apply can leave different).
    SeveralTypes,
}

impl RiskCause {
    /// Log and metric label.
    pub const fn name(self) -> &'static str {
        match self {
            RiskCause::TtlChangeAfterDeadline => "ttl_change_after_deadline",
            RiskCause::ExistenceAmbiguous => "existence_ambiguous",
            RiskCause::ExistenceUntracked => "existence_untracked",
            RiskCause::ValueLostByMaster => "value_lost_by_master",
            RiskCause::SeveralTypes => "several_types",
        }
    }
}

/// An entry whose outcome on a replica that applies it after `old_deadline_ms` may differ from
/// the master's. The relay compares `old_deadline_ms` with the replica's lag to decide whether
/// to count and log it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AtRisk {
    /// DB of the key.
    pub db: u32,
    /// The key.
    pub key: Bytes,
    /// Deadline the key had (or may have had) before this entry (ms).
    pub old_deadline_ms: i64,
    /// Why the entry cannot be made deterministic.
    pub cause: RiskCause,
}

/// The engine's answer for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// What to send.
    pub emit: Emit<'a>,
    /// The family whose rule matched, if any.
    pub family: Option<Family>,
    /// Why.
    pub outcome: Outcome,
    /// Set when the entry extends or removes the TTL of a volatile key it cannot repair.
    pub at_risk: Option<AtRisk>,
    /// The entry was not decided (only with [`Policy::pause_on_unknown`]): its outcome hangs on
    /// whether its first key was alive (with which TTL) at this entry, which is not known.
    /// Nothing was changed; [`resolve_unknown`] records what a look-up found, read as the kind
    /// says, after which the entry is decided again.
    pub needs_lookup: Option<LookupKind>,
    /// The argument naming the key [`Decision::needs_lookup`] asks about: the first key, or the
    /// destination of a move (SMOVE, RPOPLPUSH, LMOVE).
    pub lookup_key_at: usize,
}

/// How the key's TTL just after an entry tells its state just before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupKind {
    /// A write that keeps the key's TTL and creates the key when it is missing (INCR, HSET,
    /// RPUSH, SETNX…): a TTL after is the TTL it had; none after, none or gone before.
    KeepsTtl,
    /// The destination of SMOVE/RPOPLPUSH/LMOVE: read like [`LookupKind::KeepsTtl`], except
    /// that the move does nothing when the source lacks the element, so gone after does not
    /// say the key was alive (it may have been absent all along): that answer does not tell.
    MovesInto,
    /// An entry that leaves the key only if it was there (SET XX, PERSIST), giving it the
    /// deadline `sets_ms` if any: present after exactly when alive before.
    PresentIfAlive { sets_ms: Option<i64> },
    /// EXPIRE with a deadline to come: it gives the key that TTL only if the key is there, and
    /// TTL-keeping writes after it keep it: a TTL after means alive before, none or gone means
    /// gone (a write after it may have created the key anew).
    TtlSetIfAlive { deadline_ms: i64 },
    /// SET NX: it creates the key only when missing, giving it the deadline `sets_ms` if any.
    /// Asked about a key the table holds alive into the entry's second (Pika 4.0): no TTL
    /// after, or a deadline in a later second than the entry's, means it created the key; the
    /// old deadline means the key was alive; gone is taken as alive (either way it is gone on
    /// the master by the answer). Asked about a key of unknown state: see
    /// [`resolve_unknown`].
    CreatesIfAbsent { sets_ms: Option<i64> },
}

impl Decision<'_> {
    /// Forward unchanged with the given outcome.
    pub fn forward(outcome: Outcome, family: Option<Family>) -> Self {
        Decision {
            emit: Emit::Forward,
            family,
            outcome,
            at_risk: None,
            needs_lookup: None,
            lookup_key_at: 1,
        }
    }

    /// The key [`Decision::needs_lookup`] asks about, among the entry's arguments `args`.
    pub fn lookup_key<'k>(&self, args: &'k dyn args::Args) -> &'k [u8] {
        args.get(self.lookup_key_at).unwrap_or_default()
    }
}

/// What a look-up on the master found about a key right after an entry that wrote it keeping
/// its TTL (see [`Decision::needs_lookup`]), with no other entry on the key in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookedUp {
    /// The key has a TTL ending at this deadline (ms): it was alive with that TTL at the entry.
    Volatile(i64),
    /// The key has no TTL: at the entry it had none, or had expired (the write created it).
    NoTtl,
    /// The key is gone although the entry wrote it: it was alive at the entry and its TTL ran
    /// out before the look-up; its deadline is not after this instant (ms).
    ExpiredBy(i64),
}

/// A look-up's answer as [`resolve_unknown`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered {
    /// What the master said of the key.
    pub found: LookedUp,
    /// The commands on the key between the entry and the answer the kind read past.
    pub between: Between,
}

/// The commands on a looked-up key between the entry and the answer that the kind of answer
/// reads past ([`LookupKind::tolerates`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Between {
    /// The exec time (ms) of the last TTL-keeping write, if any: one in or after the second a
    /// TTL ran out in may have created the key anew.
    pub last_write: Option<i64>,
    /// A removal (HDEL, SREM, LPOP…) came between: [`LookupKind::KeepsTtl`] reads past one,
    /// since it keeps the TTL of a key it does not empty…
    pub removal: bool,
    /// …unless a TTL-keeping write came after it, which may have created the key anew.
    pub write_after_removal: bool,
}

impl Between {
    /// These commands followed by `later` ones.
    pub fn then(self, later: Between) -> Between {
        Between {
            last_write: later.last_write.or(self.last_write),
            removal: self.removal || later.removal,
            write_after_removal: self.write_after_removal
                || later.write_after_removal
                || (self.removal && later.last_write.is_some()),
        }
    }

    /// Adds a tolerated command executed at `exec_ms`, in stream order.
    pub fn add(&mut self, tolerated: Tolerated, exec_ms: i64) {
        match tolerated {
            Tolerated::Write => {
                self.last_write = Some(exec_ms);
                self.write_after_removal |= self.removal;
            }
            Tolerated::Removal => self.removal = true,
        }
    }
}

/// A command on a looked-up key between the entry and the answer that the kind of answer
/// reads past (see [`LookupKind::tolerates`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tolerated {
    /// A write that keeps the key's TTL ([`keeps_ttl_of`]).
    Write,
    /// A removal that keeps it unless it empties the key ([`removes_from`]).
    Removal,
}

impl Answered {
    /// A write between the entry and the answer in (or after) the second `deadline_ms` falls
    /// in: the key may have expired before it and been created anew by it.
    fn written_from(&self, deadline_ms: i64) -> bool {
        self.between
            .last_write
            .is_some_and(|w| w.div_euclid(1000) >= deadline_ms.div_euclid(1000))
    }
}

/// Records in `table` the state of `key` just before the entry that [`Decision::needs_lookup`]
/// named, from what a look-up found after it (`exec_ms`: the entry's exec time), and says
/// whether it could. Deciding the entry again then gives the output a replica needs.
///
/// An answer may come long after the entry (a replica far behind, a backlog after a crash).
/// Gone by then is always usable: nothing touched the key between the entry and the answer but
/// TTL-keeping writes, which cannot leave it gone unless it was alive with its TTL through
/// them, so whichever way the entry went the key is gone on the master by the answer, and the
/// output only has to leave the replica's copy no longer. No TTL is not, when one of those
/// writes came once a TTL (the key's, or the one the entry gave it) may have run out: it may
/// have created the key anew. Nothing is recorded then.
pub fn resolve_unknown(
    table: &ExpiryTable,
    db: u32,
    key: &[u8],
    exec_ms: i64,
    kind: LookupKind,
    answered: Answered,
) -> bool {
    let found = answered.found;
    // Gone by `by` with a deadline the entry set that is not yet due then: gone at the entry.
    let before_own_deadline =
        |by: i64, sets_ms: Option<i64>| sets_ms.is_none_or(|d| by < d.div_euclid(1000) * 1000);
    if matches!(
        kind,
        LookupKind::CreatesIfAbsent { .. } | LookupKind::PresentIfAlive { .. }
    ) && !matches!(table.lookup(db, key, exec_ms), KeyKnowledge::Volatile(_))
    {
        return resolve_conditional_set(table, db, key, exec_ms, kind, found);
    }
    let alive = match kind {
        LookupKind::KeepsTtl => return resolve_ttl_kept(table, db, key, exec_ms, answered),
        LookupKind::MovesInto => {
            return !matches!(found, LookedUp::ExpiredBy(_))
                && resolve_ttl_kept(table, db, key, exec_ms, answered)
        }
        LookupKind::PresentIfAlive { sets_ms } => match found {
            LookedUp::ExpiredBy(by) => !before_own_deadline(by, sets_ms),
            LookedUp::Volatile(_) | LookedUp::NoTtl => true,
        },
        LookupKind::TtlSetIfAlive { deadline_ms } => match found {
            LookedUp::Volatile(_) => true,
            LookedUp::ExpiredBy(by) => !before_own_deadline(by, Some(deadline_ms)),
            LookedUp::NoTtl if answered.written_from(deadline_ms) => return false,
            LookedUp::NoTtl => false,
        },
        LookupKind::CreatesIfAbsent { .. } => match found {
            LookedUp::NoTtl => false,
            LookedUp::Volatile(at) => at.div_euclid(1000) <= exec_ms.div_euclid(1000),
            // The old key's last second, or a new key whose deadline has passed: gone either way.
            LookedUp::ExpiredBy(_) => true,
        },
    };
    // These are asked only about a key the table holds alive into the entry's second (Pika
    // 4.0), so alive needs no change; gone is a deadline just before the entry.
    if !alive {
        table.set_deadline(db, key, exec_ms - 1);
    }
    true
}

impl LookupKind {
    /// Whether the answer still reads the same when TTL-keeping writes on the key came between
    /// the entry and the answer (they keep whatever TTL the key has and create it without one;
    /// see [`keeps_ttl_of`]).
    pub fn survives_ttl_keeping_writes(self) -> bool {
        matches!(
            self,
            LookupKind::KeepsTtl | LookupKind::MovesInto | LookupKind::TtlSetIfAlive { .. }
        )
    }

    /// How `args`, a command naming `key` between the entry and the answer, bears on an answer
    /// of this kind: `None` when the answer no longer tells the key's state at the entry.
    pub fn tolerates(self, args: &dyn args::Args, key: &[u8]) -> Option<Tolerated> {
        if self.survives_ttl_keeping_writes() && keeps_ttl_of(args, key) {
            Some(Tolerated::Write)
        } else if matches!(self, LookupKind::KeepsTtl | LookupKind::MovesInto)
            && removes_from(args, key)
        {
            Some(Tolerated::Removal)
        } else {
            None
        }
    }
}

/// Whether `args` removes members from `key`, its first argument, and nothing else (HDEL, SREM,
/// LPOP, ZREM…): it keeps the key's TTL unless it empties the key.
pub fn removes_from(args: &dyn args::Args, key: &[u8]) -> bool {
    matches!(
        args.get(0).and_then(command::spec).map(|s| s.cmd),
        Some(command::Cmd::Removal)
    ) && names_only_first(args, key)
}

/// `key` is the first argument of `args` and no other.
fn names_only_first(args: &dyn args::Args, key: &[u8]) -> bool {
    args.get(1) == Some(key) && (2..args.count()).all(|i| args.get(i) != Some(key))
}

/// Whether `args` is a write that keeps the TTL of `key`, its first argument, and creates it
/// without one when it is missing (INCR, APPEND, HSET, RPUSH, SADD, ZADD, GEOADD…).
pub fn keeps_ttl_of(args: &dyn args::Args, key: &[u8]) -> bool {
    args.get(0)
        .and_then(command::spec)
        .is_some_and(|spec| spec.cmd.keeps_ttl())
        && names_only_first(args, key)
}

/// After an entry [`Decision::needs_lookup`] named was decided without an answer (written
/// again before it, no answer, or too late to hold), as if its key were alive: what the table
/// then says of the key is a guess, and is widened to what is sure. An entry that leaves the key
/// only if it was there ([`LookupKind::PresentIfAlive`]) leaves it as the guess says or gone: a
/// deadline becomes "that deadline, or gone", no TTL stays "no TTL, existence unknown"; one that
/// creates the key leaves nothing known. The key's next TTL-keeping write is then looked up.
pub fn leave_undecided(
    table: &ExpiryTable,
    db: u32,
    key: &[u8],
    kind: LookupKind,
    entry: &dyn args::Args,
    now_ms: i64,
) {
    let guess = table.lookup(db, key, now_ms);
    match (kind, guess) {
        (
            LookupKind::PresentIfAlive { .. },
            KeyKnowledge::Volatile(deadline) | KeyKnowledge::MaybeVolatile(deadline),
        ) => table.set_maybe_volatile(db, key, deadline),
        (
            LookupKind::PresentIfAlive { .. },
            KeyKnowledge::Persistent | KeyKnowledge::NotVolatile,
        ) => table.mark_not_volatile(db, key),
        (LookupKind::PresentIfAlive { .. }, KeyKnowledge::Absent | KeyKnowledge::Expired(_)) => {}
        // A write that creates the key when missing leaves it existing, with the deadline the
        // guess names if it was alive or none if it created it: it exists at least until the
        // second that deadline falls in (a 4.0 master drops it somewhere in it), so an EXPIRE
        // up to then gives it that deadline exactly. A SET NX that created it gave it its own.
        (
            LookupKind::KeepsTtl | LookupKind::CreatesIfAbsent { .. },
            KeyKnowledge::Volatile(deadline) | KeyKnowledge::MaybeVolatile(deadline),
        ) if leaves_key(entry, key) => {
            let own = match kind {
                LookupKind::CreatesIfAbsent { sets_ms: Some(own) } => own,
                _ => i64::MAX,
            };
            let until = rules::floor_to_second(deadline.min(own)).saturating_sub(1);
            if until >= now_ms {
                table.mark_present_until(db, key, until)
            } else {
                table.mark_unknown(db, key)
            }
        }
        // Any TTL it had is unknown and may run out at any moment: nothing is known.
        _ => table.mark_unknown(db, key),
    }
}

/// Whether `entry`, a TTL-keeping write, can leave a missing key missing: LINSERT (nothing
/// without its pivot), `ZADD`/`GEOADD … XX`, SETRANGE of an empty value; Pika logs them all
/// the same. The other side of [`leaves_key`], which also leaves out writes that create their
/// key but are not relied on to (SETRANGE, SETBIT).
pub(crate) fn may_leave_missing(entry: &dyn args::Args) -> bool {
    let name = entry.get(0).unwrap_or_default();
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    let has_xx =
        (2..entry.count()).any(|i| entry.get(i).is_some_and(|a| a.eq_ignore_ascii_case(b"xx")));
    is(b"linsert")
        || ((is(b"zadd") || is(b"geoadd")) && has_xx)
        || (is(b"setrange") && entry.get(3).is_some_and(<[u8]>::is_empty))
}

/// Whether `entry`, a write on `key`, leaves the key existing whatever it found: INCR-likes,
/// APPEND, HSET-likes, SADD, LPUSH/RPUSH, ZADD and GEOADD without XX, ZINCRBY, SETNX, SET … NX
/// (it existed, or it creates it). Not LINSERT (nothing without its pivot), SETRANGE/SETBIT
/// (Pika may not create from an empty write), moves (nothing without the element).
fn leaves_key(entry: &dyn args::Args, key: &[u8]) -> bool {
    use command::Cmd;
    if entry.get(1) != Some(key) {
        return false;
    }
    let name = entry.get(0).unwrap_or_default();
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    let has_option = |o: &[u8]| {
        (2..entry.count()).any(|i| entry.get(i).is_some_and(|a| a.eq_ignore_ascii_case(o)))
    };
    match command::classify(name) {
        Some(Cmd::Counter | Cmd::HashWrite | Cmd::SetAdd | Cmd::SetNx) => true,
        Some(Cmd::AppendLike) => is(b"append"),
        Some(Cmd::ListPush) => is(b"lpush") || is(b"rpush"),
        Some(Cmd::ZsetWrite) => is(b"zincrby") || !has_option(b"xx"),
        Some(Cmd::Set) => has_option(b"nx") && !has_option(b"xx"),
        _ => false,
    }
}

/// [`resolve_unknown`] for a conditional SET (`NX`: [`LookupKind::CreatesIfAbsent`], `XX`:
/// [`LookupKind::PresentIfAlive`]) on a key the table does not hold alive: unknown, no TTL but
/// existence unknown, or a deadline or gone. The answer is the key's state after the SET; what
/// is recorded is a state before it from which the SET's rule writes the master's outcome:
///
/// * `XX` leaves the key exactly when it was alive. Alive, with a TTL the stream does not know,
///   is recorded as alive through the entry (a deadline at its exec time), so the rule writes
///   the SET unconditionally (a late replica may have dropped the key); gone after a SET that
///   gave no TTL, or before its own deadline, means it was not there.
/// * `NX` without a TTL: no TTL after means no TTL before or absent, and either way the SET
///   can pass (a replica has the same key without a TTL, or none); a TTL after is the old one.
///   With a TTL: none after means it found a key without one; a deadline in another second
///   than its own is the old key's; its own second after a key that may have had a TTL, or
///   gone with a TTL before unknown, does not tell, and nothing is recorded.
///
/// A state the answer contradicts (a key known to have no TTL found with one after an `NX`
/// without a TTL…) records nothing either.
fn resolve_conditional_set(
    table: &ExpiryTable,
    db: u32,
    key: &[u8],
    exec_ms: i64,
    kind: LookupKind,
    found: LookedUp,
) -> bool {
    enum Before {
        /// Alive, with this TTL if the stream or the answer tells it.
        Alive(Option<i64>),
        /// Without a TTL, or absent: the same to a replica for an `NX` without a TTL.
        NoTtlOrAbsent,
        Absent,
    }
    let known = match table.lookup(db, key, exec_ms) {
        // As the rule reads it: past its deadline a maybe-volatile key is gone or was recreated
        // without a TTL.
        KeyKnowledge::MaybeVolatile(d) if d < exec_ms => KeyKnowledge::NotVolatile,
        other => other,
    };
    // What the stream knew: a key without a TTL (or absent), or one that had a TTL or none.
    let had_no_ttl = matches!(known, KeyKnowledge::NotVolatile | KeyKnowledge::Persistent);
    let maybe_volatile = match known {
        KeyKnowledge::MaybeVolatile(d) => Some(d),
        _ => None,
    };
    let second_start = rules::floor_to_second;
    // A deadline the SET itself may have given: its own second, or the one before (a 4.0 master
    // answers with its clock read before PTTL, and keeps the ms the entry's whole second hides).
    let maybe_own = |d: i64, own: i64| {
        d >= second_start(own).saturating_sub(1000) && d < second_start(own).saturating_add(1000)
    };
    // Gone by `by` with a TTL that ran out: the latest deadline that allows (a key lives through
    // its deadline's second on 3.x), never before the entry.
    let gone_by = |by: i64| {
        maybe_volatile
            .filter(|d| *d < by)
            .unwrap_or(second_start(by).saturating_sub(1000))
            .max(exec_ms)
    };
    let before = match (kind, found) {
        // XX: present after exactly when alive before.
        (LookupKind::PresentIfAlive { sets_ms: None }, LookedUp::NoTtl)
        | (LookupKind::PresentIfAlive { sets_ms: Some(_) }, LookedUp::Volatile(_)) => {
            Before::Alive(maybe_volatile)
        }
        (LookupKind::PresentIfAlive { sets_ms }, LookedUp::ExpiredBy(by)) => match sets_ms {
            // Gone after the second its own deadline falls in, which may be why: gone on the
            // master either way, and the rule's unconditional write leaves a replica's copy no
            // longer. Gone before (3.x keeps a key through that second), it did not happen,
            // and the key is taken as gone for the entries after it either way.
            Some(d) if by >= second_start(d).saturating_add(1000) => Before::Alive(maybe_volatile),
            _ => Before::Absent,
        },
        // NX without a TTL: a TTL after is the old one; none after, none or absent before
        // (alive with a TTL would have kept it); gone after, it found a key whose TTL ran out
        // since (what it would have created has none), which a late replica must not create.
        (LookupKind::CreatesIfAbsent { sets_ms: None }, LookedUp::Volatile(d)) if !had_no_ttl => {
            Before::Alive(Some(d))
        }
        (LookupKind::CreatesIfAbsent { sets_ms: None }, LookedUp::NoTtl) => match maybe_volatile {
            Some(_) => Before::Absent,
            None => Before::NoTtlOrAbsent,
        },
        (LookupKind::CreatesIfAbsent { sets_ms: None }, LookedUp::ExpiredBy(by)) if !had_no_ttl => {
            Before::Alive(Some(gone_by(by)))
        }
        // NX with a TTL: none after, a key without one before.
        (LookupKind::CreatesIfAbsent { sets_ms: Some(_) }, LookedUp::NoTtl)
            if maybe_volatile.is_none() =>
        {
            Before::Alive(None)
        }
        (LookupKind::CreatesIfAbsent { sets_ms: Some(own) }, LookedUp::Volatile(d)) => {
            match (maybe_own(d, own), had_no_ttl) {
                // Not its own: the old key's.
                (false, false) => Before::Alive(Some(d)),
                // Its own, on a key that had none to keep.
                (true, true) => Before::Absent,
                // Maybe its own, or an old key's that a key without a TTL cannot have.
                _ => return false,
            }
        }
        // Its own TTL ran out, since a key without one had none to run out.
        (LookupKind::CreatesIfAbsent { sets_ms: Some(_) }, LookedUp::ExpiredBy(_))
            if had_no_ttl =>
        {
            Before::Absent
        }
        _ => return false,
    };
    // Look-ups are Pika's, which tracks every key's existence.
    match before {
        Before::Alive(_) | Before::NoTtlOrAbsent if had_no_ttl => {
            table.mark_persistent(db, key, true)
        }
        Before::NoTtlOrAbsent => table.mark_persistent(db, key, true),
        Before::Alive(None) if matches!(kind, LookupKind::CreatesIfAbsent { .. }) => {
            table.mark_persistent(db, key, true)
        }
        // Alive through the entry with a TTL the stream does not know: the rule writes the
        // master's outcome unconditionally. (The next second, so that a 4.0 rule does not take
        // the entry for one in its key's deadline second.)
        Before::Alive(None) => table.set_deadline(db, key, second_start(exec_ms) + 1000),
        Before::Alive(Some(d)) => table.set_deadline(db, key, d.max(exec_ms)),
        // Gone just before the entry, as the table says of a key whose TTL ran out.
        Before::Absent => table.set_deadline(db, key, exec_ms - 1),
    }
    true
}

/// [`resolve_unknown`] for [`LookupKind::KeepsTtl`].
fn resolve_ttl_kept(
    table: &ExpiryTable,
    db: u32,
    key: &[u8],
    exec_ms: i64,
    answered: Answered,
) -> bool {
    let known = table.lookup(db, key, exec_ms);
    let candidate = match known {
        KeyKnowledge::Volatile(d) | KeyKnowledge::MaybeVolatile(d) => Some(d),
        _ => None,
    };
    match answered.found {
        // The key kept its TTL through the entry and every write after it.
        LookedUp::Volatile(deadline) => table.set_deadline(db, key, deadline.max(exec_ms)),
        // Alive at the entry with a TTL that ran out before `by`: the one deadline the table
        // allows, else the latest one gone by `by` allows (Pika keeps a key alive through its
        // deadline's second): nothing touches the key before `by`.
        LookedUp::ExpiredBy(by) => match candidate {
            Some(d) if d < by => table.set_deadline(db, key, d.max(exec_ms)),
            _ => {
                let second_before = by.div_euclid(1000) * 1000 - 1000;
                table.set_deadline(db, key, second_before.max(exec_ms));
            }
        },
        // No TTL after: none at the entry, or gone then (the write created it); unless a write
        // after the entry may have created it anew once a TTL it had ran out.
        LookedUp::NoTtl if answered.between.write_after_removal => return false,
        LookedUp::NoTtl => match candidate {
            Some(d) if answered.written_from(d) => return false,
            // A key with a TTL keeps it through such a write: none after means the master had
            // already dropped it (Pika 4.0 logs deadlines in seconds and expires in ms, so the
            // table's deadline is this very second), or a removal had emptied it. The write
            // created it; a replica must drop what it may still hold first.
            Some(_) => table.set_deadline(db, key, exec_ms - 1),
            None if answered.between.last_write.is_some() && known == KeyKnowledge::Unknown => {
                return false
            }
            None => table.mark_not_volatile(db, key),
        },
    }
    true
}

#[cfg(test)]
mod tests;
