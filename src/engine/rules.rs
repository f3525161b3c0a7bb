//! The per-command rules of the rewrite engine (`docs/rewrites.md#rules`).
//!
//! Every entry goes through three steps: classify the command, update the expiry table to the
//! state the master has after executing it, and — when the outcome on a late replica could
//! differ — propose a deterministic replacement. The proposal is used only when the command's
//! family is switched on; the table is maintained either way.

use super::replacement::{Arg, Commands, NewCommand, Replacement};
use super::{
    AtRisk, Decision, Dialect, Emit, LookupKind, Outcome, PikaRelease, Policy, RiskCause,
    StreamState,
};
use crate::engine::args::Args;
use crate::engine::command::{spec, Cmd, Spec};
use crate::families::Family;
use crate::table::{
    Baseline, ExpiryTable, KeyKnowledge, Popped, WitnessRef, EXACT_MEMBERS, WITNESS_MEMBERS,
};
use bytes::Bytes;

mod collections;

/// Largest timestamp a Pika replica accepts in `pksetexat` (it rejects `ts >= INT32_MAX`).
pub const PIKA_MAX_TIMESTAMP_SECS: i64 = i32::MAX as i64 - 1;

/// Decide what to emit for one entry; see the module docs of [`crate::engine`].
pub fn rewrite<'a>(
    args: &'a dyn Args,
    exec_ms: i64,
    state: &mut StreamState,
    table: &ExpiryTable,
    policy: &Policy,
) -> Decision<'a> {
    let Some(name) = args.get(0) else {
        return Decision::forward(Outcome::Malformed, None);
    };
    let mut cx = Cx {
        args,
        now: exec_ms,
        db: state.db,
        in_multi: state.in_multi,
        table,
        policy,
        track: policy.tracks_existence(),
    };
    let proposal = match spec(name) {
        Some(spec) => cx.apply(spec, state),
        None => {
            // It may have changed what a collection holds; forget what was known of it.
            if let Some(key) = args.get(1) {
                table.clear_witness(state.db, key);
            }
            Proposal::unknown_command()
        }
    };
    cx.finish(proposal)
}

/// What a rule concluded for one entry, before the family switch is consulted.
struct Proposal<'a> {
    family: Option<Family>,
    outcome: Outcome,
    replacement: Option<Commands<'a>>,
    at_risk: Option<AtRisk>,
    needs_lookup: Option<LookupKind>,
}

impl<'a> Proposal<'a> {
    fn pass() -> Self {
        Proposal {
            family: None,
            outcome: Outcome::Passed,
            replacement: None,
            at_risk: None,
            needs_lookup: None,
        }
    }
    fn passed(family: Family) -> Self {
        Proposal {
            family: Some(family),
            ..Proposal::pass()
        }
    }
    fn unknown_key(family: Option<Family>) -> Self {
        Proposal {
            family,
            outcome: Outcome::UnknownKey,
            ..Proposal::pass()
        }
    }
    fn unknown_command() -> Self {
        Proposal {
            outcome: Outcome::UnknownCommand,
            ..Proposal::pass()
        }
    }
    fn malformed(family: Option<Family>) -> Self {
        Proposal {
            family,
            outcome: Outcome::Malformed,
            ..Proposal::pass()
        }
    }
    fn rewrite(family: Family, cmds: Commands<'a>) -> Self {
        Proposal {
            family: Some(family),
            outcome: Outcome::Rewritten,
            replacement: Some(cmds),
            at_risk: None,
            needs_lookup: None,
        }
    }
    fn with_risk(mut self, risk: Option<AtRisk>) -> Self {
        self.at_risk = risk;
        self
    }
}

/// Options of a SET command that matter for expiry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SetCondition {
    Always,
    IfAbsent,
    IfPresent,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SetTtl {
    /// No TTL option: the SET clears any TTL.
    Clear,
    /// KEEPTTL.
    Keep,
    /// EX/PX: relative, in ms.
    Relative(i64),
    /// EXAT/PXAT: absolute, in ms.
    Absolute(i64),
}

/// One entry being decided: its arguments live for `'a`, the shared context for `'c`.
struct Cx<'a, 'c> {
    args: &'a dyn Args,
    now: i64,
    db: u32,
    in_multi: bool,
    table: &'c ExpiryTable,
    policy: &'c Policy,
    track: bool,
}

use crate::engine::args::arg_i64;

fn lit(s: &'static str) -> Arg<'static> {
    Arg::Bytes(s.as_bytes())
}

/// `ms` rounded down to a whole second (Pika's precision), saturating at the extremes.
fn floor_to_second(ms: i64) -> i64 {
    ms.saturating_sub(ms.rem_euclid(1000))
}

/// Whole seconds of a ms deadline (Pika deadlines are whole seconds).
fn secs_floor(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

impl<'a> Cx<'a, '_> {
    /// Argument `i` (empty past the last; rules check arity first), borrowed for the entry's
    /// lifetime rather than from `self`.
    fn arg(&self, i: usize) -> &'a [u8] {
        let args: &'a dyn Args = self.args;
        args.get(i).unwrap_or_default()
    }

    /// A handle to `part` of an argument for a replacement command (see [`Args::share`]).
    fn share(&self, part: &[u8]) -> Bytes {
        self.args.share(part)
    }

    fn pika(&self) -> bool {
        self.policy.dialect == Dialect::Pika
    }

    fn pika_4_0(&self) -> bool {
        self.pika() && self.policy.pika_release == PikaRelease::V4
    }

    /// Knowledge of `key` at the master's exec time; an expired deadline is dropped from the
    /// table (rule 1) and reported as absent, with `was_expired` set.
    ///
    /// Redis masters delete expired keys themselves and propagate the DEL before any command that
    /// finds a key expired, and the Redis exec time is only the proxy's receive time: there a
    /// past deadline still means "alive until the master's DEL arrives".
    fn know(&self, key: &[u8]) -> (KeyKnowledge, bool) {
        match self.table.lookup(self.db, key, self.now) {
            KeyKnowledge::Expired(deadline) if !self.pika() => {
                (KeyKnowledge::Volatile(deadline), false)
            }
            KeyKnowledge::Expired(_) => {
                self.table.mark_absent(self.db, key, self.track);
                (KeyKnowledge::Absent, true)
            }
            // Past its deadline a maybe-volatile key is gone or was recreated without a TTL.
            KeyKnowledge::MaybeVolatile(deadline) if self.pika() && deadline < self.now => {
                (KeyKnowledge::NotVolatile, false)
            }
            other => (other, false),
        }
    }

    /// Whether a deadline set by this entry is already over on the master. Pika's exec time is
    /// the master's clock; a Redis master stores past deadlines and deletes with its own DEL.
    fn already_expired(&self, deadline_ms: i64) -> bool {
        if self.pika() {
            deadline_ms < self.now
        } else {
            deadline_ms <= 0
        }
    }

    fn risk(&self, key: &[u8], old_deadline_ms: i64, cause: RiskCause) -> Option<AtRisk> {
        Some(AtRisk {
            db: self.db,
            key: self.share(key),
            old_deadline_ms,
            cause,
        })
    }

    /// Why a key may or may not still carry its deadline: with existence tracked for every key
    /// (baseline "absent") only the data-dependent commands leave that open; otherwise the
    /// proxy never knew whether the key existed.
    fn existence_gap(&self) -> RiskCause {
        if self.table.baseline() == Baseline::Absent {
            RiskCause::ExistenceAmbiguous
        } else {
            RiskCause::ExistenceUntracked
        }
    }

    /// An entry whose outcome hangs on whether its first key is alive, on Pika 4.0 in the
    /// second the key's deadline falls in: that master keeps deadlines in ms and logs whole
    /// seconds, so only it knows. With look-ups the entry waits for one (`kind` reads the
    /// answer); without, it is decided as if the key were alive and reported.
    fn existence_dependent(
        &mut self,
        kind: LookupKind,
        family: Family,
        decide: impl FnOnce(&mut Self) -> Proposal<'a>,
    ) -> Proposal<'a> {
        if !self.pika_4_0() {
            // No table access on the path every other dialect takes.
            return decide(self);
        }
        let deadline = match self.table.lookup(self.db, self.arg(1), self.now) {
            KeyKnowledge::Volatile(d) if self.in_deadline_second(d) => d,
            _ => return decide(self),
        };
        if self.policy.pause_on_unknown {
            return Proposal {
                needs_lookup: Some(kind),
                ..Proposal::unknown_key(Some(family))
            };
        }
        let risk = self.risk(self.arg(1), deadline, RiskCause::ExistenceAmbiguous);
        let decided = decide(self);
        match decided.at_risk {
            Some(_) => decided,
            None => decided.with_risk(risk),
        }
    }

    /// The deadline (ms) a SET with `ttl` gives its key, at the earliest (KEEPTTL keeps a
    /// deadline in this very second: the only case asked).
    fn set_deadline(&self, ttl: SetTtl) -> Option<i64> {
        match ttl {
            SetTtl::Clear => None,
            SetTtl::Keep => Some(self.now),
            SetTtl::Relative(ms) => Some(self.now.saturating_add(ms)),
            SetTtl::Absolute(ms) => Some(ms),
        }
    }

    /// The deadline (ms) an EXPIRE-family entry gives its key, at the earliest; an unreadable
    /// one is taken as now (the entry is malformed, and no answer is read against it).
    fn expire_deadline(&self, cmd: Cmd) -> i64 {
        let Some(v) = arg_i64(self.arg(2)) else {
            return self.now;
        };
        match cmd {
            Cmd::Expire => self.now.saturating_add(v.saturating_mul(1000)),
            Cmd::PExpire => self.now.saturating_add(v),
            Cmd::ExpireAt => v.saturating_mul(1000),
            _ => v,
        }
    }

    /// Pika 4.0, at an entry in the second `deadline_ms` falls in (see
    /// [`Self::existence_dependent`]).
    fn in_deadline_second(&self, deadline_ms: i64) -> bool {
        self.pika_4_0() && deadline_ms.div_euclid(1000) == self.now.div_euclid(1000)
    }

    /// The second a Pika replica is told for a key the master drops at `deadline_ms`. A 4.0
    /// master logs whole seconds, rounded down, of deadlines it keeps in ms, and its replica
    /// drops a key at the start of the second it is given: told the next second, the replica
    /// never loses a key before the master does (it may keep it up to a second longer, which
    /// entries in that second are decided for, see [`Self::existence_dependent`]).
    fn replica_secs(&self, deadline_ms: i64) -> i64 {
        let secs = secs_floor(deadline_ms);
        if self.pika_4_0() {
            secs + 1
        } else {
            secs
        }
    }

    /// `expireat k <sec>` (Pika) or `PEXPIREAT k <ms>` (Redis) restating `deadline_ms`.
    fn restate_deadline(&self, key: &'a [u8], deadline_ms: i64) -> Option<NewCommand<'a>> {
        if self.pika() {
            let secs = self.replica_secs(deadline_ms);
            if secs <= 0 || secs > PIKA_MAX_TIMESTAMP_SECS {
                return None;
            }
            Some(NewCommand::of([
                lit("expireat"),
                Arg::Bytes(key),
                Arg::Int(secs),
            ]))
        } else {
            if deadline_ms <= 0 {
                return None;
            }
            Some(NewCommand::of([
                lit("PEXPIREAT"),
                Arg::Bytes(key),
                Arg::Int(deadline_ms),
            ]))
        }
    }

    /// The key set to `value` with `deadline_ms` (or none): `pksetexat k <sec> v` on Pika 3,
    /// `set k v` + `expireat k <sec>` on Pika 4.0 (whose replicas misread `pksetexat`'s
    /// timestamp), `set k v` without a deadline, or `SET k v [PXAT ms]` on Redis.
    fn set_with_deadline(
        &self,
        key: &'a [u8],
        value: &'a [u8],
        deadline_ms: Option<i64>,
    ) -> Option<Commands<'a>> {
        let (k, v) = (Arg::Bytes(key), Arg::Bytes(value));
        if self.pika() {
            let Some(ms) = deadline_ms else {
                return Some(Commands::of([NewCommand::of([lit("set"), k, v])]));
            };
            let secs = self.replica_secs(ms);
            if secs <= 0 || secs > PIKA_MAX_TIMESTAMP_SECS {
                return None;
            }
            Some(match self.policy.pika_release {
                PikaRelease::V3 => {
                    Commands::of([NewCommand::of([lit("pksetexat"), k, Arg::Int(secs), v])])
                }
                PikaRelease::V4 => Commands::of([
                    NewCommand::of([lit("set"), k, v]),
                    NewCommand::of([lit("expireat"), Arg::Bytes(key), Arg::Int(secs)]),
                ]),
            })
        } else {
            let cmd = match deadline_ms {
                Some(ms) if ms > 0 => NewCommand::of([lit("SET"), k, v, lit("PXAT"), Arg::Int(ms)]),
                Some(_) => return None,
                None => NewCommand::of([lit("SET"), k, v]),
            };
            Some(Commands::of([cmd]))
        }
    }

    fn del(&self, key: &'a [u8]) -> NewCommand<'a> {
        let name = if self.pika() { lit("del") } else { lit("DEL") };
        NewCommand::of([name, Arg::Bytes(key)])
    }

    fn original(&self) -> NewCommand<'a> {
        NewCommand::Original
    }

    /// Apply the family switch, the Redis MULTI wrapping and produce the decision.
    fn finish(&self, p: Proposal<'a>) -> Decision<'a> {
        let Some(cmds) = p.replacement else {
            return Decision {
                emit: Emit::Forward,
                family: p.family,
                outcome: p.outcome,
                at_risk: p.at_risk,
                needs_lookup: p.needs_lookup,
            };
        };
        let enabled = p
            .family
            .map(|f| self.policy.families.is_enabled(f))
            .unwrap_or(true);
        if !enabled {
            return Decision {
                emit: Emit::Forward,
                family: p.family,
                outcome: Outcome::Disabled,
                at_risk: p.at_risk,
                needs_lookup: None,
            };
        }
        let wrap = self.policy.dialect == Dialect::Redis && cmds.len() > 1 && !self.in_multi;
        Decision {
            emit: Emit::Replace(Replacement::new(cmds, wrap)),
            family: p.family,
            outcome: p.outcome,
            at_risk: p.at_risk,
            needs_lookup: None,
        }
    }

    fn apply(&mut self, spec: Spec, state: &mut StreamState) -> Proposal<'a> {
        let cmd = spec.cmd;
        if !spec.arity_ok(self.args.count()) {
            return Proposal::malformed(cmd.family());
        }
        match cmd {
            Cmd::Select => self.select(state),
            Cmd::Multi => {
                state.in_multi = true;
                Proposal::pass()
            }
            Cmd::Exec | Cmd::Discard => {
                state.in_multi = false;
                Proposal::pass()
            }
            Cmd::NoOp => Proposal::pass(),
            Cmd::Counter | Cmd::AppendLike => self.keep_ttl_write(cmd, 1),
            Cmd::HashWrite | Cmd::ListPush | Cmd::SetAdd | Cmd::ZsetWrite => {
                self.keep_ttl_write(cmd, 1)
            }
            Cmd::ListPushIfExists => self.push_if_exists(),
            Cmd::SetMove => self.move_element(Cmd::SetAdd),
            // Only a 4.0 master leaves a conditional SET's outcome to its ms clock.
            Cmd::Set if self.pika_4_0() => match self.parse_set_options() {
                Some((SetCondition::IfPresent, ttl)) => self.existence_dependent(
                    LookupKind::PresentIfAlive {
                        sets_ms: self.set_deadline(ttl),
                    },
                    Family::StringSet,
                    Self::set,
                ),
                Some((SetCondition::IfAbsent, _)) => self.existence_dependent(
                    LookupKind::CreatesIfAbsent,
                    Family::StringSet,
                    Self::set,
                ),
                _ => self.set(),
            },
            Cmd::Set => self.set(),
            Cmd::SetNx => self.setnx(),
            Cmd::SetEx => self.setex(1000),
            Cmd::PSetEx => self.setex(1),
            Cmd::GetSet => self.plain_overwrite(1),
            Cmd::MSet => self.mset(),
            Cmd::MSetNx => self.mset(),
            Cmd::PkSetExAt => self.pksetexat(),
            Cmd::Expire | Cmd::PExpire | Cmd::ExpireAt | Cmd::PExpireAt => self
                .existence_dependent(
                    LookupKind::TtlSetIfAlive {
                        deadline_ms: self.expire_deadline(cmd),
                    },
                    Family::Expire,
                    |cx| match cmd {
                        Cmd::Expire => cx.relative_expire(1000),
                        Cmd::PExpire => cx.relative_expire(1),
                        Cmd::ExpireAt => cx.absolute_expire(1000),
                        _ => cx.absolute_expire(1),
                    },
                ),
            Cmd::GetEx => self.getex(),
            Cmd::Persist => self.existence_dependent(
                LookupKind::PresentIfAlive { sets_ms: None },
                Family::Expire,
                Self::persist,
            ),
            Cmd::Del => self.del_keys(1),
            Cmd::Rename => self.rename(false),
            Cmd::RenameNx => self.rename(true),
            Cmd::Move => self.move_key(),
            Cmd::Copy => self.copy(),
            Cmd::SwapDb => self.swapdb(),
            Cmd::FlushDb => {
                self.table.flush_db(self.db);
                Proposal::pass()
            }
            Cmd::FlushAll => {
                self.table.flush_all();
                Proposal::pass()
            }
            Cmd::Restore => self.restore(),
            Cmd::Removal => self.removal(1),
            Cmd::StoreInto => self.store_into(),
            Cmd::PopPush => self.move_element(Cmd::ListPush),
        }
    }

    fn select(&mut self, state: &mut StreamState) -> Proposal<'a> {
        match arg_i64(self.arg(1)).and_then(|db| u32::try_from(db).ok()) {
            Some(db) => {
                state.db = db;
                self.db = db;
                Proposal::pass()
            }
            None => Proposal::malformed(None),
        }
    }

    /// A write that keeps the key's TTL and creates the key when it is missing (rule 3).
    fn keep_ttl_write(&mut self, cmd: Cmd, key_at: usize) -> Proposal<'a> {
        let family = cmd.family();
        let key = self.arg(key_at);
        let (known, expired) = self.know(key);
        if key_at == 1 && self.policy.pause_on_unknown && self.undecidable(known) {
            return Proposal {
                needs_lookup: Some(LookupKind::KeepsTtl),
                ..Proposal::unknown_key(family)
            };
        }
        // The table first (the key's marker, then its witness), so that the decision, built
        // last, is returned where it is made rather than copied past these calls.
        self.keep_ttl_record(key, known);
        if key_at == 1 {
            self.record_witness(cmd, key, known);
        }
        self.keep_ttl_decision(family, key, known, expired)
    }

    /// Whether a TTL-keeping write on a key known as `known` depends on what the stream does
    /// not tell: whether the key was alive with a TTL at this entry. Pika 4.0 adds the second
    /// its deadline falls in (it logs seconds and expires in milliseconds).
    fn undecidable(&self, known: KeyKnowledge) -> bool {
        match known {
            KeyKnowledge::Unknown | KeyKnowledge::MaybeVolatile(_) => true,
            KeyKnowledge::Volatile(deadline) => {
                self.pika_4_0() && deadline.div_euclid(1000) == self.now.div_euclid(1000)
            }
            _ => false,
        }
    }

    /// [`Self::keep_ttl_write`]'s effect on the key's entry: a key that was not volatile now
    /// exists (a volatile one keeps its deadline; an unknown one stays unknown). The entry is
    /// left alone when it already says so.
    fn keep_ttl_record(&self, key: &[u8], known: KeyKnowledge) {
        match known {
            KeyKnowledge::Volatile(_) | KeyKnowledge::Unknown | KeyKnowledge::MaybeVolatile(_) => {}
            _ => {
                let recorded = known == KeyKnowledge::Persistent
                    || (known == KeyKnowledge::NotVolatile && !self.track);
                if !recorded {
                    self.table.mark_persistent(self.db, key, self.track);
                }
            }
        }
    }

    /// [`Self::keep_ttl_write`]'s decision, from what was known of the key before the write
    /// (the table is already updated).
    fn keep_ttl_decision(
        &mut self,
        family: Option<Family>,
        key: &'a [u8],
        known: KeyKnowledge,
        expired: bool,
    ) -> Proposal<'a> {
        match known {
            KeyKnowledge::Volatile(deadline) => {
                let Some(family) = family else {
                    return Proposal::pass();
                };
                // A Pika 4.0 master keeps deadlines in ms but logs them and exec times in whole
                // seconds: in the deadline's own second it may already have dropped the key.
                // Nothing in the stream tells; the write is rewritten as if the key were alive
                // and reported.
                let risk = self
                    .in_deadline_second(deadline)
                    .then(|| self.risk(key, deadline, RiskCause::ExistenceAmbiguous))
                    .flatten();
                match self.restate_deadline(key, deadline) {
                    Some(expire) => {
                        Proposal::rewrite(family, Commands::of([self.original(), expire]))
                            .with_risk(risk)
                    }
                    None => Proposal::malformed(Some(family)),
                }
            }
            KeyKnowledge::Unknown => Proposal::unknown_key(family),
            // Kept its deadline if it still existed, or was recreated without one: passing the
            // write through is right unless a late replica lost a key the master still had.
            KeyKnowledge::MaybeVolatile(deadline) => {
                let risk = self.risk(key, deadline, self.existence_gap());
                Proposal::unknown_key(family).with_risk(risk)
            }
            _ => {
                // Not volatile: the write lands the same on any replica; the key now exists
                // (recorded by `keep_ttl_record`).
                match family {
                    Some(f) if expired && self.pika() => {
                        Proposal::rewrite(f, Commands::of([self.del(key), self.original()]))
                    }
                    Some(f) => Proposal::passed(f),
                    None => Proposal::pass(),
                }
            }
        }
    }

    fn parse_set_options(&self) -> Option<(SetCondition, SetTtl)> {
        let mut cond = SetCondition::Always;
        let mut ttl = SetTtl::Clear;
        let mut i = 3;
        while i < self.args.count() {
            let opt = self.arg(i);
            let with_value = |unit: i64, absolute: bool| -> Option<SetTtl> {
                let v = arg_i64(self.args.get(i + 1)?)?;
                let ms = v.checked_mul(unit)?;
                Some(if absolute {
                    SetTtl::Absolute(ms)
                } else {
                    SetTtl::Relative(ms)
                })
            };
            if opt.eq_ignore_ascii_case(b"NX") {
                cond = SetCondition::IfAbsent;
            } else if opt.eq_ignore_ascii_case(b"XX") {
                cond = SetCondition::IfPresent;
            } else if opt.eq_ignore_ascii_case(b"GET") {
            } else if opt.eq_ignore_ascii_case(b"KEEPTTL") {
                ttl = SetTtl::Keep;
            } else if opt.eq_ignore_ascii_case(b"EX") {
                ttl = with_value(1000, false)?;
                i += 1;
            } else if opt.eq_ignore_ascii_case(b"PX") {
                ttl = with_value(1, false)?;
                i += 1;
            } else if opt.eq_ignore_ascii_case(b"EXAT") {
                ttl = with_value(1000, true)?;
                i += 1;
            } else if opt.eq_ignore_ascii_case(b"PXAT") {
                ttl = with_value(1, true)?;
                i += 1;
            } else {
                return None;
            }
            i += 1;
        }
        Some((cond, ttl))
    }

    /// The absolute deadline a SET gives the key on the master, given the key's old deadline.
    fn set_deadline_ms(&self, ttl: SetTtl, old: Option<i64>) -> Option<i64> {
        match ttl {
            SetTtl::Clear => None,
            SetTtl::Keep => old,
            SetTtl::Relative(ms) => {
                // Pika truncates PX to whole seconds and its exec time is whole seconds.
                let ms = if self.pika() { floor_to_second(ms) } else { ms };
                Some(self.now.saturating_add(ms))
            }
            SetTtl::Absolute(ms) => Some(ms),
        }
    }

    /// Record the effect of a SET that the master performed; `known` is what the table said
    /// of the key before it.
    fn record_set(&self, key: &[u8], deadline: Option<i64>, known: KeyKnowledge) {
        match deadline {
            Some(ms) if self.already_expired(ms) => {
                self.table.mark_absent(self.db, key, self.track)
            }
            Some(ms) => self.table.set_deadline(self.db, key, ms),
            None => self.record_persistent(key, known),
        }
    }

    /// The key now exists without a TTL; `known` is what the table said of it before this
    /// entry. A key already recorded as persistent is not written again (one map access less
    /// for the common overwrite); only what was known to be inside it goes.
    fn record_persistent(&self, key: &[u8], known: KeyKnowledge) {
        let recorded = known == KeyKnowledge::Persistent
            && (self.track || self.table.baseline() == Baseline::Absent);
        if recorded {
            self.table.clear_witness(self.db, key);
        } else {
            self.table.mark_persistent(self.db, key, self.track);
        }
    }

    fn set(&mut self) -> Proposal<'a> {
        let Some((cond, ttl)) = self.parse_set_options() else {
            return Proposal::malformed(Some(Family::StringSet));
        };
        let key = self.arg(1);
        let value = self.arg(2);
        let (known, expired) = self.know(key);
        let family = match (cond, ttl) {
            (SetCondition::Always, SetTtl::Relative(_)) => Family::Expire,
            (SetCondition::Always, SetTtl::Clear | SetTtl::Absolute(_)) => {
                // Deterministic already; only the table changes.
                let deadline = self.set_deadline_ms(ttl, None);
                self.record_set(key, deadline, known);
                return match deadline {
                    Some(_) if expired && self.pika() => Proposal::rewrite(
                        Family::Expire,
                        Commands::of([self.del(key), self.original()]),
                    ),
                    _ => Proposal::pass(),
                };
            }
            _ => Family::StringSet,
        };
        // Did the master's SET happen? Redis masters only propagate SETs that happened.
        let exists = match known {
            KeyKnowledge::Volatile(_) | KeyKnowledge::Persistent => Some(true),
            KeyKnowledge::Absent => Some(false),
            KeyKnowledge::NotVolatile
            | KeyKnowledge::Unknown
            | KeyKnowledge::MaybeVolatile(_)
            | KeyKnowledge::Expired(_) => None,
        };
        let happened = if self.pika() {
            match cond {
                SetCondition::Always => Some(true),
                SetCondition::IfAbsent => exists.map(|e| !e),
                SetCondition::IfPresent => exists,
            }
        } else {
            Some(true)
        };
        let old_deadline = match known {
            KeyKnowledge::Volatile(d) => Some(d),
            _ => None,
        };
        let volatility_known = !matches!(known, KeyKnowledge::Unknown);
        match happened {
            Some(true) => {
                if ttl == SetTtl::Keep && !volatility_known {
                    self.table.mark_unknown(self.db, key);
                    return Proposal::unknown_key(Some(family));
                }
                let deadline = self.set_deadline_ms(ttl, old_deadline);
                self.record_set(key, deadline, known);
                // A late replica may have lost a volatile key (XX, KEEPTTL) or apply a relative
                // TTL from its own clock: write the master's outcome unconditionally.
                // A key gone on a 4.0 master may live on its replicas to the end of the second.
                let needs_rewrite = old_deadline.is_some()
                    || matches!(ttl, SetTtl::Relative(_))
                    || (expired && self.pika_4_0());
                if !needs_rewrite {
                    return Proposal::passed(family);
                }
                let first = (expired && self.pika()).then(|| self.del(key));
                let outcome = match deadline {
                    // Already expired on the master: the key must simply be gone.
                    Some(ms) if self.already_expired(ms) => Commands::of([self.del(key)]),
                    _ => match self.set_with_deadline(key, value, deadline) {
                        Some(c) => c,
                        None => return Proposal::malformed(Some(family)),
                    },
                };
                Proposal::rewrite(family, outcome.after(first))
            }
            Some(false) if expired && self.pika_4_0() => {
                // The master found the key gone and did nothing; a 4.0 replica may keep it to
                // the end of that second.
                Proposal::rewrite(family, Commands::of([self.del(key)]))
            }
            Some(false) => {
                // Pika logged a conditional SET that did nothing on the master.
                match old_deadline {
                    Some(deadline) => match self.restate_deadline(key, deadline) {
                        Some(c) => Proposal::rewrite(family, Commands::of([c])),
                        None => Proposal::malformed(Some(family)),
                    },
                    None => Proposal::passed(family),
                }
            }
            None => {
                if matches!(ttl, SetTtl::Clear) && known == KeyKnowledge::NotVolatile {
                    // Same outcome everywhere and no TTL either way.
                    self.table.mark_not_volatile(self.db, key);
                    Proposal::passed(family)
                } else {
                    self.table.mark_unknown(self.db, key);
                    Proposal::unknown_key(Some(family))
                }
            }
        }
    }

    /// SETNX k v: Pika logs it even when it failed.
    fn setnx(&mut self) -> Proposal<'a> {
        let key = self.arg(1);
        let (known, expired) = self.know(key);
        if !self.pika() {
            // Propagated only when it succeeded: the key was absent and is now persistent.
            self.table.mark_persistent(self.db, key, self.track);
            return Proposal::passed(Family::StringSet);
        }
        // Like a TTL-keeping write, its outcome hangs on one fact a look-up answers: the key's
        // TTL just after it is the old one if the key was alive, none if it was created.
        if self.policy.pause_on_unknown && self.undecidable(known) {
            return Proposal {
                needs_lookup: Some(LookupKind::KeepsTtl),
                ..Proposal::unknown_key(Some(Family::StringSet))
            };
        }
        match known {
            KeyKnowledge::Volatile(deadline) => {
                let risk = self
                    .in_deadline_second(deadline)
                    .then(|| self.risk(key, deadline, RiskCause::ExistenceAmbiguous))
                    .flatten();
                match self.restate_deadline(key, deadline) {
                    // The master found the key alive and did nothing; a late replica would
                    // create it.
                    Some(c) => Proposal::rewrite(Family::StringSet, Commands::of([c])),
                    None => Proposal::malformed(Some(Family::StringSet)),
                }
                .with_risk(risk)
            }
            KeyKnowledge::Unknown => Proposal::unknown_key(Some(Family::StringSet)),
            // Alive with that deadline (the master did nothing) or absent (it created the key
            // without one): the stream does not say which.
            KeyKnowledge::MaybeVolatile(deadline) => {
                let risk = self.risk(key, deadline, self.existence_gap());
                Proposal::unknown_key(Some(Family::StringSet)).with_risk(risk)
            }
            _ => {
                // Whether it existed or was just created, the key now exists without a TTL.
                self.record_persistent(key, known);
                if expired && self.pika_4_0() {
                    // Gone on the master, which created it; a 4.0 replica may keep the old
                    // key to the end of that second.
                    return Proposal::rewrite(
                        Family::StringSet,
                        Commands::of([self.del(key), self.original()]),
                    );
                }
                Proposal::passed(Family::StringSet)
            }
        }
    }

    /// SETEX k sec v / PSETEX k ms v: relative → absolute.
    fn setex(&mut self, unit: i64) -> Proposal<'a> {
        let key = self.arg(1);
        let value = self.arg(3);
        let Some(ttl_ms) = arg_i64(self.arg(2)).and_then(|v| v.checked_mul(unit)) else {
            return Proposal::malformed(Some(Family::Expire));
        };
        if ttl_ms <= 0 {
            return Proposal::malformed(Some(Family::Expire));
        }
        let deadline = self.set_deadline_ms(SetTtl::Relative(ttl_ms), None);
        let expired = match deadline {
            // The usual case, in one map access: the new deadline written where the old
            // state is read. A key found expired is gone (rule 1): nothing known of its
            // content holds.
            Some(ms) if !self.already_expired(ms) => {
                let before = self.table.replace_with_deadline(self.db, key, ms, self.now);
                let expired = matches!(before, KeyKnowledge::Expired(_)) && self.pika();
                if expired {
                    self.table.clear_witness(self.db, key);
                }
                expired
            }
            _ => {
                let (known, expired) = self.know(key);
                self.record_set(key, deadline, known);
                expired
            }
        };
        let first = (expired && self.pika()).then(|| self.del(key));
        match self.set_with_deadline(key, value, deadline) {
            Some(set) => Proposal::rewrite(Family::Expire, set.after(first)),
            None => Proposal::malformed(Some(Family::Expire)),
        }
    }

    /// GETSET and friends: overwrite with no TTL whatever the key was; deterministic.
    fn plain_overwrite(&mut self, key_at: usize) -> Proposal<'a> {
        let key = self.arg(key_at);
        let (known, _) = self.know(key);
        self.record_persistent(key, known);
        Proposal::passed(Family::StringSet)
    }

    fn mset(&mut self) -> Proposal<'a> {
        if self.args.count() % 2 != 1 {
            return Proposal::malformed(None);
        }
        for key_at in (1..self.args.count()).step_by(2) {
            let key = self.arg(key_at);
            let (known, _) = self.know(key);
            self.record_persistent(key, known);
        }
        Proposal::pass()
    }

    /// `pksetexat k <sec> v`: absolute already. A millisecond timestamp (Pika 4.0.1/4.0.2's
    /// PSETEX bug) would stall the replica, so it is converted to seconds; a Pika 4.0 replica
    /// misreads every real timestamp, so there it becomes `set` + `expireat`.
    fn pksetexat(&mut self) -> Proposal<'a> {
        let key = self.arg(1);
        let value = self.arg(3);
        let Some(ts) = arg_i64(self.arg(2)) else {
            return Proposal::malformed(Some(Family::Expire));
        };
        let (known, _) = self.know(key);
        let v4 = self.pika_4_0();
        if ts == 0 {
            self.table.mark_persistent(self.db, key, self.track);
            if v4 && value.is_empty() {
                return Proposal::pass().with_risk(self.risk(key, 0, RiskCause::ValueLostByMaster));
            }
            return Proposal::pass();
        }
        let millisecond_bug = ts > PIKA_MAX_TIMESTAMP_SECS;
        let secs = if millisecond_bug { ts / 1000 } else { ts };
        let deadline = secs.saturating_mul(1000);
        self.record_set(key, Some(deadline), known);
        if !(millisecond_bug || v4) {
            return Proposal::pass();
        }
        match self.set_with_deadline(key, value, Some(deadline)) {
            Some(c) if self.pika() => Proposal::rewrite(Family::Expire, c),
            _ => Proposal::malformed(Some(Family::Expire)),
        }
    }

    /// Apply an expiry-setting command's effect to the table, given whether the master could
    /// have found the key; `deletes` when the command removes the key (relative TTL ≤ 0, Pika
    /// `expireat` ≤ 0, a deadline already over). Returns an at-risk report when the deadline of
    /// a key that may be volatile is extended.
    fn record_expire(
        &self,
        key: &[u8],
        known: KeyKnowledge,
        new_deadline: i64,
        deletes: bool,
    ) -> Option<AtRisk> {
        let deletes = deletes || self.already_expired(new_deadline);
        let exists = match known {
            KeyKnowledge::Volatile(_) | KeyKnowledge::Persistent => Some(true),
            KeyKnowledge::Absent => Some(false),
            // Redis masters propagate expiry commands only for keys that exist.
            _ if !self.pika() => Some(true),
            KeyKnowledge::MaybeVolatile(old) => {
                if deletes {
                    self.table.mark_absent(self.db, key, self.track);
                    return None;
                }
                self.table.set_maybe_volatile(self.db, key, new_deadline);
                return (new_deadline > old)
                    .then(|| self.risk(key, old, RiskCause::TtlChangeAfterDeadline))
                    .flatten();
            }
            _ => None,
        };
        match exists {
            Some(true) if deletes => {
                self.table.mark_absent(self.db, key, self.track);
                None
            }
            Some(true) => {
                self.table.set_deadline(self.db, key, new_deadline);
                match known {
                    KeyKnowledge::Volatile(old) | KeyKnowledge::MaybeVolatile(old)
                        if new_deadline > old =>
                    {
                        self.risk(key, old, RiskCause::TtlChangeAfterDeadline)
                    }
                    _ => None,
                }
            }
            Some(false) => None,
            // No TTL, existence unknown: afterwards it has this deadline or does not exist.
            None if known == KeyKnowledge::NotVolatile => {
                if deletes {
                    self.table.mark_absent(self.db, key, self.track);
                } else {
                    self.table.set_maybe_volatile(self.db, key, new_deadline);
                }
                None
            }
            // Pika logs EXPIRE whether or not the key exists: afterwards it has this deadline
            // or does not exist, whatever it was.
            None if !deletes => {
                self.table.set_maybe_volatile(self.db, key, new_deadline);
                None
            }
            None => {
                self.table.mark_unknown(self.db, key);
                None
            }
        }
    }

    /// Redis PEXPIREAT/EXPIRE flags; the master propagates only expiries it applied, so a flag
    /// only needs to be kept, never evaluated, on the Redis side.
    fn expire_flag(&self) -> Option<Arg<'a>> {
        let args: &'a dyn Args = self.args;
        args.get(3).map(Arg::Bytes)
    }

    /// EXPIRE k sec / PEXPIRE k ms: relative → absolute.
    fn relative_expire(&mut self, unit: i64) -> Proposal<'a> {
        let key = self.arg(1);
        let Some(ttl_ms) = arg_i64(self.arg(2)).and_then(|v| v.checked_mul(unit)) else {
            return Proposal::malformed(Some(Family::Expire));
        };
        let (known, _) = self.know(key);
        let ttl_ms = if self.pika() {
            floor_to_second(ttl_ms)
        } else {
            ttl_ms
        };
        let deadline = self.now.saturating_add(ttl_ms);
        let risk = self.record_expire(key, known, deadline, ttl_ms <= 0);
        let cmd = if deadline <= self.now {
            Some(self.del(key))
        } else if self.pika() {
            self.restate_deadline(key, deadline)
        } else {
            let (name, key, deadline) = (lit("PEXPIREAT"), Arg::Bytes(key), Arg::Int(deadline));
            Some(match self.expire_flag() {
                Some(flag) => NewCommand::of([name, key, deadline, flag]),
                None => NewCommand::of([name, key, deadline]),
            })
        };
        match cmd {
            Some(c) => Proposal::rewrite(Family::Expire, Commands::of([c])).with_risk(risk),
            None => Proposal::malformed(Some(Family::Expire)).with_risk(risk),
        }
    }

    /// EXPIREAT k sec / PEXPIREAT k ms: absolute already; Pika replicas must never see
    /// `pexpireat` (several versions cast it to int32), so it becomes `expireat k ms/1000`.
    fn absolute_expire(&mut self, unit: i64) -> Proposal<'a> {
        let key = self.arg(1);
        let Some(at) = arg_i64(self.arg(2)) else {
            return Proposal::malformed(Some(Family::Expire));
        };
        let (known, expired) = self.know(key);
        if expired && self.pika_4_0() {
            // Gone on the master, which did nothing; a 4.0 replica may keep it to the end of
            // the second.
            return Proposal::rewrite(Family::Expire, Commands::of([self.del(key)]));
        }
        let deadline = at.saturating_mul(unit);
        let deadline = if self.pika() {
            floor_to_second(deadline)
        } else {
            deadline
        };
        // Pika logs EXPIRE k 0 (and PEXPIRE below 1 s) as `expireat k <exec second>` after
        // deleting the key, and EXPIREAT k <exec second> the same way while keeping the key to
        // the end of that second: the proxy cannot tell which, so the key has that deadline or
        // is gone, and anything touching it before the second ends is at risk.
        if self.pika() && at > 0 && deadline == self.now && known != KeyKnowledge::Absent {
            match known {
                KeyKnowledge::Unknown => self.table.mark_unknown(self.db, key),
                _ => self.table.set_maybe_volatile(self.db, key, deadline),
            }
            let risk = self.risk(key, deadline, RiskCause::ExistenceAmbiguous);
            return match (unit, self.restate_deadline(key, deadline)) {
                (1, Some(c)) => Proposal::rewrite(Family::Expire, Commands::of([c])),
                (1, None) => Proposal::malformed(Some(Family::Expire)),
                _ => Proposal::passed(Family::Expire),
            }
            .with_risk(risk);
        }
        let risk = self.record_expire(key, known, deadline, self.pika() && at <= 0);
        if self.pika_4_0() && at > 0 && deadline < self.now {
            // Deleted by the master at once; told the next second, a replica would keep it.
            return Proposal::rewrite(Family::Expire, Commands::of([self.del(key)]))
                .with_risk(risk);
        }
        if self.pika() && (unit == 1 || self.pika_4_0()) {
            let cmd = if at <= 0 {
                NewCommand::of([lit("expireat"), Arg::Bytes(key), Arg::Int(0)])
            } else {
                match self.restate_deadline(key, deadline) {
                    Some(c) => c,
                    None => return Proposal::malformed(Some(Family::Expire)).with_risk(risk),
                }
            };
            return Proposal::rewrite(Family::Expire, Commands::of([cmd])).with_risk(risk);
        }
        Proposal::passed(Family::Expire).with_risk(risk)
    }

    /// GETEX k [EX s|PX ms|EXAT s|PXAT ms|PERSIST].
    fn getex(&mut self) -> Proposal<'a> {
        let key = self.arg(1);
        let (known, _) = self.know(key);
        let Some(opt) = self.args.get(2) else {
            return Proposal::pass();
        };
        if opt.eq_ignore_ascii_case(b"PERSIST") {
            return self.persist();
        }
        let unit_abs = if opt.eq_ignore_ascii_case(b"EX") {
            (1000, false)
        } else if opt.eq_ignore_ascii_case(b"PX") {
            (1, false)
        } else if opt.eq_ignore_ascii_case(b"EXAT") {
            (1000, true)
        } else if opt.eq_ignore_ascii_case(b"PXAT") {
            (1, true)
        } else {
            return Proposal::malformed(Some(Family::Expire));
        };
        let Some(v) = self
            .args
            .get(3)
            .and_then(arg_i64)
            .and_then(|v| v.checked_mul(unit_abs.0))
        else {
            return Proposal::malformed(Some(Family::Expire));
        };
        let deadline = if unit_abs.1 {
            v
        } else {
            self.now.saturating_add(v)
        };
        let relative_delete = !unit_abs.1 && v <= 0;
        let risk = self.record_expire(key, known, deadline, relative_delete);
        let cmd = if deadline <= self.now {
            Some(self.del(key))
        } else {
            self.restate_deadline(key, deadline)
        };
        match cmd {
            Some(c) => Proposal::rewrite(Family::Expire, Commands::of([c])).with_risk(risk),
            None => Proposal::malformed(Some(Family::Expire)).with_risk(risk),
        }
    }

    /// PERSIST k: removes a TTL; a late replica that already dropped the key cannot be
    /// repaired without the value, so it is reported as at risk.
    fn persist(&mut self) -> Proposal<'a> {
        let key = self.arg(1);
        let (known, expired) = self.know(key);
        if expired && self.pika_4_0() {
            return Proposal::rewrite(Family::Expire, Commands::of([self.del(key)]));
        }
        match known {
            KeyKnowledge::Volatile(old) => {
                self.table.mark_persistent(self.db, key, self.track);
                let risk = self.risk(key, old, RiskCause::TtlChangeAfterDeadline);
                Proposal::passed(Family::Expire).with_risk(risk)
            }
            KeyKnowledge::MaybeVolatile(old) => {
                // Redis propagates PERSIST only for a key that had a TTL; Pika logs it anyway.
                if self.pika() {
                    self.table.mark_not_volatile(self.db, key);
                } else {
                    self.table.mark_persistent(self.db, key, self.track);
                }
                let risk = self.risk(key, old, RiskCause::TtlChangeAfterDeadline);
                Proposal::passed(Family::Expire).with_risk(risk)
            }
            KeyKnowledge::Unknown => {
                self.table.mark_not_volatile(self.db, key);
                Proposal::passed(Family::Expire)
            }
            _ => Proposal::passed(Family::Expire),
        }
    }

    fn del_keys(&mut self, first: usize) -> Proposal<'a> {
        for key_at in first..self.args.count() {
            self.table
                .mark_absent(self.db, self.arg(key_at), self.track);
        }
        Proposal::pass()
    }

    /// RENAME / RENAMENX src dst: the destination takes the source's TTL. When the source is
    /// volatile, a late replica's RENAME fails (source gone) and would leave an old destination
    /// behind; restating the source's deadline on the destination removes it there too.
    fn rename(&mut self, only_if_absent: bool) -> Proposal<'a> {
        let src = self.arg(1);
        let dst = self.arg(2);
        let (src_known, _) = self.know(src);
        let (dst_known, _) = self.know(dst);
        // A Redis master propagates a RENAME only when the source existed; a Pika master logs
        // it either way, so a source that may have been emptied is unknown there.
        let maybe = |k: KeyKnowledge| match k {
            KeyKnowledge::MaybeVolatile(d) if !self.pika() => KeyKnowledge::Volatile(d),
            KeyKnowledge::MaybeVolatile(_) => KeyKnowledge::Unknown,
            k => k,
        };
        let (src_known, dst_known) = (maybe(src_known), maybe(dst_known));
        if src == dst {
            return Proposal::pass();
        }
        if matches!(src_known, KeyKnowledge::Absent) {
            // Fails on the master; Pika still logs it. It fails on the replica too.
            return Proposal::pass();
        }
        if only_if_absent {
            let dst_exists = match dst_known {
                KeyKnowledge::Volatile(_) | KeyKnowledge::Persistent => Some(true),
                KeyKnowledge::Absent => Some(false),
                _ if !self.pika() => Some(false),
                _ => None,
            };
            match dst_exists {
                Some(true) => {
                    // The master did nothing. A late replica whose destination already expired
                    // would rename: replace the entry by a harmless restatement.
                    return match dst_known {
                        KeyKnowledge::Volatile(deadline) => {
                            match self.restate_deadline(dst, deadline) {
                                Some(c) => Proposal::rewrite(Family::Expire, Commands::of([c])),
                                None => Proposal::malformed(Some(Family::Expire)),
                            }
                        }
                        _ => Proposal::passed(Family::Expire),
                    };
                }
                Some(false) => {}
                None => {
                    self.table.mark_unknown(self.db, src);
                    self.table.mark_unknown(self.db, dst);
                    return Proposal::unknown_key(Some(Family::Expire));
                }
            }
        }
        if matches!(src_known, KeyKnowledge::Unknown) {
            self.table.mark_absent(self.db, src, self.track);
            self.table.mark_unknown(self.db, dst);
            return Proposal::unknown_key(Some(Family::Expire));
        }
        self.table.rename(self.db, src, dst, self.track);
        match src_known {
            KeyKnowledge::Volatile(deadline) => match self.restate_deadline(dst, deadline) {
                Some(c) => Proposal::rewrite(Family::Expire, Commands::of([self.original(), c])),
                None => Proposal::malformed(Some(Family::Expire)),
            },
            _ => Proposal::passed(Family::Expire),
        }
    }

    fn move_key(&mut self) -> Proposal<'a> {
        let key = self.arg(1);
        let Some(to) = arg_i64(self.arg(2)).and_then(|d| u32::try_from(d).ok()) else {
            return Proposal::malformed(None);
        };
        self.know(key);
        self.table
            .move_between(self.db, key, to, key, self.track, true);
        Proposal::pass()
    }

    /// COPY src dst [DB n] [REPLACE]: Redis propagates it only when it copied.
    fn copy(&mut self) -> Proposal<'a> {
        let src = self.arg(1);
        let dst = self.arg(2);
        let mut to = self.db;
        let mut i = 3;
        while i < self.args.count() {
            if self.arg(i).eq_ignore_ascii_case(b"DB") {
                match self
                    .args
                    .get(i + 1)
                    .and_then(arg_i64)
                    .and_then(|d| u32::try_from(d).ok())
                {
                    Some(d) => to = d,
                    None => return Proposal::malformed(None),
                }
                i += 1;
            }
            i += 1;
        }
        self.know(src);
        self.table
            .move_between(self.db, src, to, dst, self.track, false);
        Proposal::pass()
    }

    fn swapdb(&mut self) -> Proposal<'a> {
        let a = arg_i64(self.arg(1)).and_then(|d| u32::try_from(d).ok());
        let b = arg_i64(self.arg(2)).and_then(|d| u32::try_from(d).ok());
        match (a, b) {
            (Some(a), Some(b)) => {
                self.table.swap_db(a, b);
                Proposal::pass()
            }
            _ => Proposal::malformed(None),
        }
    }

    /// RESTORE k ttl payload [REPLACE] [ABSTTL] …: Redis 7 propagates it with ABSTTL.
    fn restore(&mut self) -> Proposal<'a> {
        let key = self.arg(1);
        let Some(ttl) = arg_i64(self.arg(2)) else {
            return Proposal::malformed(None);
        };
        let absolute = (4..self.args.count()).any(|i| self.arg(i).eq_ignore_ascii_case(b"ABSTTL"));
        let (known, _) = self.know(key);
        if ttl == 0 {
            self.table.mark_persistent(self.db, key, self.track);
        } else if absolute {
            self.record_set(key, Some(ttl), known);
        } else {
            self.record_set(key, Some(self.now.saturating_add(ttl)), known);
        }
        Proposal::pass()
    }
}
