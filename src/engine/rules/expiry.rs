//! The rules of commands that set or remove a TTL: EXPIRE and its relatives, GETEX and PERSIST.
//! Relative deadlines become absolute, so a replica applying them late lands on the master's.

use super::*;

impl<'a> Cx<'a, '_> {
    /// The deadline (ms) an EXPIRE-family entry gives its key, at the earliest; an unreadable
    /// one is taken as now (the entry is malformed, and no answer is read against it).
    pub(super) fn expire_deadline(&self, cmd: Cmd) -> i64 {
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
            // A write decided without knowing the key's state left it existing.
            KeyKnowledge::Unknown if self.table.is_present_at(self.db, key, self.now) => Some(true),
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
    pub(super) fn relative_expire(&mut self, unit: i64) -> Proposal<'a> {
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
    pub(super) fn absolute_expire(&mut self, unit: i64) -> Proposal<'a> {
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
    pub(super) fn getex(&mut self) -> Proposal<'a> {
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
    pub(super) fn persist(&mut self) -> Proposal<'a> {
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
}
