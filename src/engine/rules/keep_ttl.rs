//! The rule of writes that keep their key's TTL (rule 3: counters, APPEND, collection writes):
//! on a volatile key the deadline is restated after the write, because a late replica that has
//! already dropped the key would otherwise recreate it without one.

use super::*;

impl<'a> Cx<'a, '_> {
    /// A write that keeps the key's TTL and creates the key when it is missing (rule 3).
    pub(super) fn keep_ttl_write(&mut self, cmd: Cmd, key_at: usize) -> Proposal<'a> {
        let family = cmd.family();
        let key = self.arg(key_at);
        let (known, expired) = self.know_first(key);
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
    pub(super) fn undecidable(&self, known: KeyKnowledge) -> bool {
        match known {
            KeyKnowledge::Unknown | KeyKnowledge::MaybeVolatile(_) => true,
            KeyKnowledge::Volatile(deadline) => {
                self.pika_4_0() && deadline.div_euclid(1000) == self.now.div_euclid(1000)
            }
            _ => false,
        }
    }

    /// [`Self::keep_ttl_write`]'s effect on the key's entry: a key that was not volatile now
    /// exists (a volatile one keeps its deadline; an unknown one stays unknown), unless the
    /// write may leave a missing key missing (LINSERT, `ZADD … XX`, SETRANGE): then it has no
    /// TTL and may or may not exist. The entry is left alone when it already says so.
    fn keep_ttl_record(&self, key: &[u8], known: KeyKnowledge) {
        match known {
            KeyKnowledge::Volatile(_) | KeyKnowledge::Unknown | KeyKnowledge::MaybeVolatile(_) => {}
            KeyKnowledge::Absent | KeyKnowledge::Expired(_) | KeyKnowledge::NotVolatile
                if crate::engine::may_leave_missing(self.args) =>
            {
                if known != KeyKnowledge::NotVolatile {
                    self.table.mark_not_volatile(self.db, key);
                }
            }
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
}
