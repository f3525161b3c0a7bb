//! The rules of commands acting on whole keys or databases: DEL, RENAME, MOVE, COPY, SWAPDB,
//! FLUSH and RESTORE, which carry a key's deadline along, drop it or set it.

use super::*;

impl<'a> Cx<'a, '_> {
    pub(super) fn del_keys(&mut self, first: usize) -> Proposal<'a> {
        for key_at in first..self.args.count() {
            self.table
                .mark_absent(self.db, self.arg(key_at), self.track);
        }
        Proposal::pass()
    }

    /// RENAME / RENAMENX src dst: the destination takes the source's TTL. When the source is
    /// volatile, a late replica's RENAME fails (source gone) and would leave an old destination
    /// behind; restating the source's deadline on the destination removes it there too.
    pub(super) fn rename(&mut self, only_if_absent: bool) -> Proposal<'a> {
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

    pub(super) fn move_key(&mut self) -> Proposal<'a> {
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
    pub(super) fn copy(&mut self) -> Proposal<'a> {
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

    pub(super) fn swapdb(&mut self) -> Proposal<'a> {
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
    pub(super) fn restore(&mut self) -> Proposal<'a> {
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
