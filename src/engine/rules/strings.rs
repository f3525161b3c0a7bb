//! The rules of string writes: SET and its options, SETNX, SETEX/PSETEX, MSET, plain
//! overwrites such as GETSET, and Pika's `pksetexat`; each records the deadline it leaves on
//! the key and, when a late replica could end up elsewhere, writes the master's outcome.

use super::*;

/// Options of a SET command that matter for expiry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum SetCondition {
    Always,
    IfAbsent,
    IfPresent,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum SetTtl {
    /// No TTL option: the SET clears any TTL.
    Clear,
    /// KEEPTTL.
    Keep,
    /// EX/PX: relative, in ms.
    Relative(i64),
    /// EXAT/PXAT: absolute, in ms.
    Absolute(i64),
}

impl<'a> Cx<'a, '_> {
    /// The deadline (ms) a SET with `ttl` gives its key, at the earliest (KEEPTTL keeps a
    /// deadline in this very second: the only case asked).
    pub(super) fn set_deadline(&self, ttl: SetTtl) -> Option<i64> {
        match ttl {
            SetTtl::Clear => None,
            SetTtl::Keep => Some(self.now),
            SetTtl::Relative(ms) => Some(self.now.saturating_add(ms)),
            SetTtl::Absolute(ms) => Some(ms),
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

    pub(super) fn parse_set_options(&self) -> Option<(SetCondition, SetTtl)> {
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
    pub(super) fn record_set(&self, key: &[u8], deadline: Option<i64>, known: KeyKnowledge) {
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

    pub(super) fn set(&mut self) -> Proposal<'a> {
        let Some((cond, ttl)) = self.parse_set_options() else {
            return Proposal::malformed(Some(Family::StringSet));
        };
        let key = self.arg(1);
        let value = self.arg(2);
        let (known, expired) = self.know_first(key);
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
                } else if self.policy.pause_on_unknown && ttl != SetTtl::Keep {
                    // The key's state after the SET tells whether it happened (see
                    // `engine::resolve_unknown`); nothing is changed until then.
                    let sets_ms = self.set_deadline(ttl);
                    let kind = match cond {
                        SetCondition::IfAbsent => LookupKind::CreatesIfAbsent { sets_ms },
                        _ => LookupKind::PresentIfAlive { sets_ms },
                    };
                    Proposal {
                        needs_lookup: Some(kind),
                        ..Proposal::unknown_key(Some(family))
                    }
                } else {
                    self.table.mark_unknown(self.db, key);
                    Proposal::unknown_key(Some(family))
                }
            }
        }
    }

    /// SETNX k v: Pika logs it even when it failed.
    pub(super) fn setnx(&mut self) -> Proposal<'a> {
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
    pub(super) fn setex(&mut self, unit: i64) -> Proposal<'a> {
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
    pub(super) fn plain_overwrite(&mut self, key_at: usize) -> Proposal<'a> {
        let key = self.arg(key_at);
        let (known, _) = self.know_first(key);
        self.record_persistent(key, known);
        Proposal::passed(Family::StringSet)
    }

    pub(super) fn mset(&mut self) -> Proposal<'a> {
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
    pub(super) fn pksetexat(&mut self) -> Proposal<'a> {
        let key = self.arg(1);
        let value = self.arg(3);
        let Some(ts) = arg_i64(self.arg(2)) else {
            return Proposal::malformed(Some(Family::Expire));
        };
        let (known, _) = self.know_first(key);
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
}
