//! The rules of collection writes and removals: what a write leaves inside a hash, set, zset
//! or list (its witness, see `crate::table::Witness`), whether a removal can have emptied the
//! key, and moves between collections.

use super::*;

impl<'a> Cx<'a, '_> {
    /// Records what a collection write leaves in its key whatever the key was before (its
    /// fields or members, a number of list elements), so a later removal of something else is
    /// known not to have emptied it. Nothing is recorded when nothing is certain: LINSERT may
    /// insert nothing, `ZADD … XX` may add nothing, strings have no members. `known` is what
    /// was known of the key before the write: a list's count builds on it (the write's own
    /// table update leaves the witness of a key known to exist alone).
    pub(super) fn record_witness(&self, cmd: Cmd, key: &[u8], known: KeyKnowledge) {
        if !matches!(
            cmd,
            Cmd::HashWrite | Cmd::SetAdd | Cmd::ZsetWrite | Cmd::ListPush
        ) {
            return;
        }
        let name = self.arg(0);
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        let n = self.args.count();
        // Fields or members, as argument indexes; only the last few are kept.
        let members: Option<(usize, usize)> = match cmd {
            // HSET/HMSET k f v [f v …]; HSETNX/HINCRBY* k f x, whose arity is exactly four,
            // so that every other argument from the third names their one field too.
            Cmd::HashWrite => Some((2, 2)),
            Cmd::SetAdd => Some((2, 1)),
            Cmd::ZsetWrite if is(b"zincrby") => Some((3, usize::MAX)),
            Cmd::ZsetWrite => {
                let mut at = 2;
                while at < n {
                    let opt = self.arg(at);
                    if opt.eq_ignore_ascii_case(b"XX") {
                        return;
                    }
                    let is_opt = [&b"NX"[..], b"GT", b"LT", b"CH", b"INCR"]
                        .iter()
                        .any(|o| opt.eq_ignore_ascii_case(o));
                    if !is_opt {
                        break;
                    }
                    at += 1;
                }
                if is(b"geoadd") {
                    // longitude latitude member [longitude latitude member …]
                    Some((at + 2, 3))
                } else {
                    // score member [score member …]
                    Some((at + 1, 2))
                }
            }
            // LPUSH/RPUSH (a name of another length than LINSERT's fails at once).
            Cmd::ListPush if !is(b"linsert") => {
                let pushed = n.saturating_sub(2) as u64;
                let existed = match known {
                    KeyKnowledge::Absent => Some(false),
                    KeyKnowledge::Volatile(_) | KeyKnowledge::Persistent => Some(true),
                    _ => None,
                };
                self.table.push_witness_len(self.db, key, pushed, existed);
                return;
            }
            // LINSERT inserts nothing when its pivot is missing.
            Cmd::ListPush => {
                self.table.loosen_witness_len(self.db, key);
                return;
            }
            _ => None,
        };
        let Some((first, step)) = members else {
            return;
        };
        let count = if step == usize::MAX {
            usize::from(first < n)
        } else {
            n.saturating_sub(first).div_ceil(step)
        };
        if known == KeyKnowledge::Absent && count <= EXACT_MEMBERS {
            // A new collection: what it holds is exactly what the stream writes into it.
            self.table.set_witness(self.db, key, WitnessRef::Created);
        } else if count > WITNESS_MEMBERS {
            // Only the last few members are recorded below: an exact set would miss the rest.
            self.table.loosen_witness_members(self.db, key);
        }
        // The last `WITNESS_MEMBERS` of `first, first + step, …` below `n`, oldest first (all
        // of them when they are that few).
        let (first, step) = if step == usize::MAX {
            (first, n.max(first + 1))
        } else {
            let skip = if known == KeyKnowledge::Absent && count <= EXACT_MEMBERS {
                0
            } else {
                count.saturating_sub(WITNESS_MEMBERS)
            };
            (first + skip * step, step)
        };
        for i in (first..n).step_by(step) {
            self.table
                .set_witness(self.db, key, WitnessRef::Member(self.arg(i)));
        }
    }

    /// LPUSHX/RPUSHX: a late replica that lost the key pushes nothing, which is what the master
    /// has once the deadline passes; nothing to rewrite.
    pub(super) fn push_if_exists(&mut self) -> Proposal<'a> {
        let key = self.arg(1);
        self.table.loosen_witness_len(self.db, key);
        // It never creates the key nor changes its TTL, so a late replica ends where the master
        // does whatever the key's state: absent or without a TTL, the same on both; alive with
        // a TTL, a replica that already dropped the key pushes nothing, and the master drops
        // it at that deadline. Nothing to know, even of a key the proxy knows nothing of.
        self.know(key);
        Proposal::passed(Family::List)
    }

    /// SMOVE src dst member / RPOPLPUSH / LMOVE: an element leaves `src` (which may become
    /// empty) and lands in `dst` — if `src` had it. The destination is written like SADD/LPUSH
    /// when it is volatile; when it did not exist, it may or may not exist afterwards. A
    /// volatile source that a late replica has already dropped turns the move into a no-op
    /// there, which the proxy cannot repair without the source's members: reported at risk.
    pub(super) fn move_element(&mut self, write: Cmd) -> Proposal<'a> {
        let src = self.arg(1);
        let dst = self.arg(2);
        let (src_known, _) = self.know(src);
        if src_known == KeyKnowledge::Absent {
            // Nothing to move, on the master and on any replica.
            return Proposal::passed(write.family().unwrap_or(Family::Set));
        }
        // Read once before anything changes: a destination whose TTL ran out on the master may
        // live on a replica (a 4.0 one, to the end of that second), and only this read says so.
        let (before, dst_expired) = self.know(dst);
        // With a source of unknown state the move itself may do nothing on a late replica (a
        // volatile source it already dropped), which no answer about the destination repairs:
        // that stays `unknown_key`.
        let worth_asking = src != dst && src_known != KeyKnowledge::Unknown;
        if worth_asking && self.policy.pause_on_unknown && self.undecidable(before) {
            // Asked before anything changes: the entry is decided again with the answer. The
            // destination's TTL after the move is its TTL before if it was alive, none if the
            // move created it (or it had none).
            return Proposal {
                needs_lookup: Some(LookupKind::MovesInto),
                lookup_key_at: 2,
                ..Proposal::unknown_key(write.family())
            };
        }
        let risk = match src_known {
            KeyKnowledge::Volatile(d) | KeyKnowledge::MaybeVolatile(d) if src != dst => {
                self.risk(dst, d, RiskCause::TtlChangeAfterDeadline)
            }
            _ => None,
        };
        self.removal(1);
        // The element lands in `dst` only if `src` had it: what `dst` holds is no longer known
        // exactly.
        if write == Cmd::ListPush {
            self.table.loosen_witness_len(self.db, dst);
        } else {
            self.table.loosen_witness_members(self.db, dst);
        }
        let (dst_known, _) = self.know(dst);
        let mut decided = self.move_decision(write, dst, dst_known, dst_expired, risk);
        let passed = decided.replacement.is_none();
        if passed && self.pika() && src_known == KeyKnowledge::Unknown && src != dst {
            // A volatile source a late Pika replica already dropped turns the move into a
            // no-op there, and a destination without a TTL then lacks the element for good;
            // the proxy cannot tell whether the source was volatile. (Into a volatile
            // destination the deadline restated ends the difference.)
            decided.outcome = Outcome::UnknownKey;
        }
        decided
    }

    /// [`Self::move_element`]'s decision from what was known of the destination.
    fn move_decision(
        &mut self,
        write: Cmd,
        dst: &'a [u8],
        dst_known: KeyKnowledge,
        dst_expired: bool,
        risk: Option<AtRisk>,
    ) -> Proposal<'a> {
        let src = self.arg(1);
        match dst_known {
            KeyKnowledge::Volatile(_) | KeyKnowledge::MaybeVolatile(_) => {
                let p = self.keep_ttl_write(write, 2);
                let risk = p.at_risk.clone().or(risk);
                p.with_risk(risk)
            }
            KeyKnowledge::Unknown => Proposal::unknown_key(write.family()).with_risk(risk),
            KeyKnowledge::Persistent => {
                Proposal::passed(write.family().unwrap_or(Family::Set)).with_risk(risk)
            }
            _ => {
                self.table.mark_not_volatile(self.db, dst);
                let family = write.family().unwrap_or(Family::Set);
                if dst_expired && self.pika() && src != dst {
                    // Gone on the master, which the move may have created anew: a replica must
                    // drop what it may still hold first.
                    let cmds = Commands::of([self.del(dst), self.original()]);
                    return Proposal::rewrite(family, cmds).with_risk(risk);
                }
                Proposal::passed(family).with_risk(risk)
            }
        }
    }

    /// HDEL, SREM, LPOP, ZREM…: may empty the key. A volatile key that the master emptied is
    /// gone, so whether a later write recreates it without a TTL is no longer known.
    pub(super) fn removal(&mut self, key_at: usize) -> Proposal<'a> {
        let key = self.arg(key_at);
        let known = self.know(key).0;
        if matches!(known, KeyKnowledge::Volatile(_) | KeyKnowledge::Persistent) {
            match self.removal_leaves(key) {
                // Something known to be in the key is still there: it exists, TTL unchanged.
                Popped::Left => return Proposal::pass(),
                // A list of a known length popped empty: the master deleted the key.
                Popped::Emptied => {
                    self.table.mark_absent(self.db, key, self.track);
                    return Proposal::pass();
                }
                Popped::Unknown => {}
            }
        }
        match known {
            KeyKnowledge::Volatile(deadline) => {
                self.table.set_maybe_volatile(self.db, key, deadline)
            }
            KeyKnowledge::Persistent => self.table.mark_not_volatile(self.db, key),
            // "Exists, TTL unknown" (after a write decided without its look-up) no longer
            // holds: the removal may have emptied the key, and an EXPIRE after it must not
            // give it a deadline as if it existed.
            KeyKnowledge::Unknown if self.table.is_present_at(self.db, key, self.now) => {
                self.table.mark_unknown(self.db, key)
            }
            _ => {}
        }
        Proposal::pass()
    }

    /// Whether the removal this entry makes from `key` leaves its witness in place (updating a
    /// list's count). HDEL/SREM/ZREM name what they remove, SMOVE its member, LPOP/RPOP (with a
    /// count), RPOPLPUSH and LMOVE take that many elements; anything else may remove anything.
    pub(super) fn removal_leaves(&self, key: &[u8]) -> Popped {
        let name = self.arg(0);
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        let removed_members = if is(b"hdel") || is(b"srem") || is(b"zrem") {
            Some(2..self.args.count())
        } else if is(b"smove") {
            Some(3..4)
        } else {
            None
        };
        let popped = if is(b"lpop") || is(b"rpop") {
            match self.args.get(2) {
                Some(count) => arg_i64(count).and_then(|c| u64::try_from(c).ok()),
                None => Some(1),
            }
        } else if is(b"rpoplpush") || is(b"lmove") {
            Some(1)
        } else {
            None
        };
        match (removed_members, popped) {
            (Some(range), _) => self
                .table
                .remove_witness_members(self.db, key, |m| range.clone().any(|i| self.arg(i) == m)),
            (None, Some(count)) => self.table.pop_witness_len(self.db, key, count),
            (None, None) => {
                self.table.clear_witness(self.db, key);
                Popped::Unknown
            }
        }
    }

    /// SINTERSTORE dst …, ZUNIONSTORE dst …: dst is overwritten without a TTL (or deleted when
    /// the result is empty).
    pub(super) fn store_into(&mut self) -> Proposal<'a> {
        let dst = self.arg(1);
        self.know(dst);
        self.table.mark_not_volatile(self.db, dst);
        Proposal::pass()
    }
}
