//! The per-command rules of the rewrite engine (`docs/rewrites.md#rules`).
//!
//! Every entry goes through three steps: classify the command, update the expiry table to the
//! state the master has after executing it, and — when the outcome on a late replica could
//! differ — propose a deterministic replacement. The proposal is used only when the command's
//! family is switched on; the table is maintained either way.
//!
//! This module holds what every rule shares (the entry's context, the proposal, restating a
//! deadline) and the dispatch by command; the rules themselves live in its submodules.

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
mod expiry;
mod keep_ttl;
mod keys;
mod strings;
mod types;

pub use types::record_single_type;

use strings::SetCondition;

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
        first_entry: std::cell::Cell::new(None),
    };
    let proposal = match spec(name) {
        Some(spec) if cx.tracks_types() => cx.apply_typed(spec, state),
        Some(spec) if cx.on_shared_name(spec.cmd) => cx.shared_name(spec, state),
        Some(spec) => cx.apply(spec, state),
        None if is_pattern_delete(name) => {
            // Pika 3.5 logs the pattern, not the keys it deleted (4.0 logs a DEL per key).
            table.forget_db(state.db);
            Proposal::unknown_command()
        }
        None => Proposal::unknown_command(),
    };
    if matches!(
        proposal.outcome,
        Outcome::UnknownCommand | Outcome::Malformed
    ) {
        forget_named(args, state.db, table);
    }
    cx.finish(proposal)
}

/// An entry the engine could not follow (an unknown command, options it does not know such as
/// Pika's `SET … VX`) may have created, deleted or changed any key it names: what the table
/// holds of them is forgotten, and its first argument, where nearly every write names its key,
/// becomes unknown even without an entry (the table may claim it absent). A later write on them
/// is then looked up (Pika) or passes as `unknown_key`, never rewritten from stale knowledge.
fn forget_named(args: &dyn Args, db: u32, table: &ExpiryTable) {
    if let Some(first) = args.get(1).filter(|k| !table.is_shared(db, k)) {
        // The baseline's "no TTL" or "absent" may no longer hold (`SET k v VX old EX 10`).
        if table.baseline() == Baseline::Unknown {
            table.forget(db, first);
        } else {
            table.mark_unknown(db, first);
        }
    }
    for key in (2..args.count()).filter_map(|i| args.get(i)) {
        table.forget(db, key);
    }
}

/// What a rule concluded for one entry, before the family switch is consulted.
struct Proposal<'a> {
    family: Option<Family>,
    outcome: Outcome,
    replacement: Option<Commands<'a>>,
    at_risk: Option<AtRisk>,
    needs_lookup: Option<LookupKind>,
    lookup_key_at: usize,
}

impl<'a> Proposal<'a> {
    fn pass() -> Self {
        Proposal {
            family: None,
            outcome: Outcome::Passed,
            replacement: None,
            at_risk: None,
            needs_lookup: None,
            lookup_key_at: 1,
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
            lookup_key_at: 1,
        }
    }
    fn with_risk(mut self, risk: Option<AtRisk>) -> Self {
        self.at_risk = risk;
        self
    }
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
    /// The entry of the first key as read before the rule ran ([`Self::apply_typed`]), for the
    /// rule's own first read of it ([`Self::know_first`]): one map access, not two.
    first_entry: std::cell::Cell<Option<Option<i64>>>,
}

use crate::engine::args::arg_i64;

fn lit(s: &'static str) -> Arg<'static> {
    Arg::Bytes(s.as_bytes())
}

/// `ms` rounded down to a whole second (Pika's precision), saturating at the extremes.
pub(super) fn floor_to_second(ms: i64) -> i64 {
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
        self.known(key, self.table.lookup(self.db, key, self.now))
    }

    /// [`Self::know`] of the entry's first key, from the read made before the rule when there
    /// was one and nothing since wrote the table (the rule's first access to the key).
    fn know_first(&self, key: &[u8]) -> (KeyKnowledge, bool) {
        let first = self.args.get(1).is_some_and(|k| std::ptr::eq(k, key));
        match self.first_entry.take() {
            Some(value) if first => self.known(key, self.table.knowledge_of(value, self.now)),
            _ => self.know(key),
        }
    }

    fn known(&self, key: &[u8], knowledge: KeyKnowledge) -> (KeyKnowledge, bool) {
        match knowledge {
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
                lookup_key_at: p.lookup_key_at,
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
                lookup_key_at: 1,
            };
        }
        let wrap = self.policy.dialect == Dialect::Redis && cmds.len() > 1 && !self.in_multi;
        Decision {
            emit: Emit::Replace(Replacement::new(cmds, wrap)),
            family: p.family,
            outcome: p.outcome,
            at_risk: p.at_risk,
            needs_lookup: None,
            lookup_key_at: 1,
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
                Some((SetCondition::IfAbsent, ttl)) => self.existence_dependent(
                    LookupKind::CreatesIfAbsent {
                        sets_ms: self.set_deadline(ttl),
                    },
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
            Cmd::FlushDb if super::whole_flush(self.args) => {
                self.table.flush_db(self.db);
                Proposal::pass()
            }
            // Pika 3.5's `FLUSHDB <type>` flushes one type (3.5.4: none, yet it is logged).
            Cmd::FlushDb => {
                self.table.forget_db(self.db);
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
}

/// Pika 3.5's `PKPATTERNMATCHDEL pattern type`: deletes every key of a type matching a pattern,
/// logged as itself (4.0 logs a `DEL` per key).
fn is_pattern_delete(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"pkpatternmatchdel")
}

/// Whether the command `name` may delete or move keys it does not name (FLUSHDB, FLUSHALL,
/// SWAPDB, PKPATTERNMATCHDEL).
pub fn touches_unnamed_keys(name: &[u8]) -> bool {
    [&b"flushdb"[..], b"flushall", b"swapdb"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
        || is_pattern_delete(name)
}
