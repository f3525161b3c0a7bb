//! A response held for a look-up: the link stopped rewriting it before an item whose key's
//! state the stream does not tell (`docs/architecture.md#look-ups`), asked the master, and
//! holds everything the master sends after it until the answer can be used.
//!
//! An answer is the key's TTL on the master with the master's binlog position read after it.
//! The master applies a command before it logs it, so the answer describes the key at some
//! point after the paused item; it is the key's state *just after the item* only if no entry
//! between the item and that position touched the key. [`Held::verdict`] checks exactly that
//! on the items held behind the paused one, and waits for them until they reach the position.
//! The machine's side of a hold (taking an answer, acking held responses to the master itself,
//! releasing them) is here too.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::action::{Action, DbId, Event};
use super::input::Response;
use super::{LinkEnv, LinkMachine};
use crate::engine::{Answered, Between, LookedUp};
use crate::pika::messages::BinlogPosition;
use crate::pika_relay::answer_journal::Answer;
use crate::pika_relay::position;
use crate::pika_relay::rewrite::{KeyScan, LinkRewriter, PausedRewrite};

/// How long a response may wait for its look-up before its item is decided without one.
pub(crate) const LOOKUP_HOLD_LIMIT: Duration = Duration::from_secs(2);

/// How long a link decides without look-ups after one went unanswered (timeout or failure):
/// a master that cannot answer must not hold the stream 2 s per write, which starves the
/// replica (seen on real 3.5.4 while it replayed history after a full sync: 20 s without a
/// byte, and the master dropped it).
pub(crate) const LOOKUP_BACKOFF: Duration = Duration::from_secs(10);

/// Bytes of binlog between the last item held and an answer's position past which the link is
/// replaying history (after a full sync from an older dump): the relay would have to hold all
/// of it to use the answer. Below it, the relay reads ahead (acking to the master itself) and
/// holds up to this much per link: a replica paused for a few seconds under writes is some MB
/// behind, and that backlog is exactly what it applies late (with 1 MiB, such backlogs were
/// decided without look-ups and left thousands of keys wrong on real 3.5.4).
pub(crate) const LOOKUP_BEHIND_LIMIT: u64 = 32 << 20;

/// What the master said about the key a response paused at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LookupAnswer {
    /// Its TTL now, and the master's binlog position of the DB read after it.
    Found {
        found: LookedUp,
        master_at: BinlogPosition,
    },
    /// Pika 3.x: the name holds values of several types (`EXISTS` counted more than one),
    /// each with its own TTL, so the `PTTL` answer may be another type's: the name is marked
    /// shared ([`crate::table::ExpiryTable::mark_shared`]) and the write passes unchanged.
    SeveralTypes { master_at: BinlogPosition },
    /// No answer (connection, authentication, a command the master lacks…).
    Failed(String),
}

/// How a held response's look-up ended (the `result` label of
/// `pika_ttl_proxy_lookups_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LookupResult {
    /// The answer was the key's state after the item: the item is decided with it.
    Resolved,
    /// An entry between the item and the answer's position named the key.
    WrittenAgain,
    /// ...and the first such entry redefines the key on both sides (DEL, FLUSHDB, or after a
    /// write on a string an unconditional SET: [`crate::engine::redefines`]): the item passes
    /// undecided, and
    /// whatever it leaves on a late replica is replaced before anything depends on it.
    Superseded,
    /// ...or gives the key a TTL wherever it exists (a plain EXPIRE, [`crate::engine::resets_ttl`]):
    /// the item passes as `unknown_key`, and what it leaves on a late replica (another value, a
    /// key the master lacks) lasts at most until that TTL runs out.
    TtlReset,
    /// The master gave no answer.
    Failed,
    /// Neither the answer nor the items up to its position came in time.
    Timeout,
    /// The answer is from much further on than the stream (see [`LOOKUP_BEHIND_LIMIT`]);
    /// items up to that position are decided without look-ups.
    Behind,
    /// The answer came after a TTL that decides it may have run out (the entry's own, or the
    /// key's with writes in between that would have created it anew): it does not tell the
    /// key's state at the item.
    Outlived,
}

impl LookupResult {
    /// Metric label (one of [`crate::metrics::LOOKUP_RESULTS`]).
    pub(crate) const fn name(self) -> &'static str {
        match self {
            LookupResult::Resolved => "resolved",
            LookupResult::WrittenAgain => "written_again",
            LookupResult::Superseded => "superseded",
            LookupResult::TtlReset => "ttl_reset",
            LookupResult::Failed => "failed",
            LookupResult::Timeout => "timeout",
            LookupResult::Behind => "behind",
            LookupResult::Outlived => "outlived",
        }
    }
}

impl Scan {
    /// Named by something that neither redefines the key nor resets its TTL (or unreadable).
    const NAMED: Scan = Scan::Named {
        superseded: false,
        ttl_reset: false,
    };
}

/// What the items held say about the paused key up to an answer's position.
enum Scan {
    /// A command the answer cannot read past names the key (`superseded`: it redefines it;
    /// `ttl_reset`: it gives it a TTL wherever it exists).
    Named { superseded: bool, ttl_reset: bool },
    /// Nothing names the key but maybe commands the kind of answer reads past.
    Clear { between: Between },
    /// They end here, before the position.
    Short(BinlogPosition),
}

/// A response paused for a look-up, and what came after it.
#[derive(Debug)]
pub(crate) struct Held {
    /// The DB the response is for.
    pub db: DbId,
    /// The paused response.
    pub body: Bytes,
    /// Where its rewrite stopped, and the key asked about.
    pub paused: Box<PausedRewrite>,
    /// Where the replica-position prediction of the response started.
    pub predict_from: Option<BinlogPosition>,
    /// Every response the master sent since, in order, not yet looked at.
    pub queued: VecDeque<Bytes>,
    /// When the look-up was asked for.
    pub since: Instant,
    /// The answer, once it came.
    pub answer: Option<LookupAnswer>,
    /// How many of the held responses (the paused one first, then `queued`) the relay has
    /// acked to the master itself.
    pub pre_acked: usize,
    /// The id of its look-up: a late answer to an earlier hold is not this one's.
    pub asked: u64,
    /// What the held responses were found to say about the key so far.
    pub scanned: Option<Scanned>,
}

impl Held {
    /// What to decide the paused item with, once that is known: `Some(Some(found))` to use the
    /// answer, `Some(None)` to decide without one, `None` to keep waiting.
    pub(crate) fn verdict(
        &mut self,
        rewriter: &mut LinkRewriter,
        now: Instant,
        file_size: u64,
    ) -> Option<(Option<Answered>, LookupResult)> {
        let late = now.saturating_duration_since(self.since) >= LOOKUP_HOLD_LIMIT;
        let (found, master_at) = match &self.answer {
            None if late => return Some((None, LookupResult::Timeout)),
            None => return None,
            Some(LookupAnswer::Failed(_)) => return Some((None, LookupResult::Failed)),
            // Whatever named the key since, it holds several types now: passing every entry
            // on it unchanged from the paused one on is what a direct replica gets.
            Some(LookupAnswer::SeveralTypes { .. }) => return Some((None, LookupResult::Resolved)),
            Some(LookupAnswer::Found { found, master_at }) => (*found, *master_at),
        };
        let answered = |between| Some(Answered { found, between });
        if master_at <= self.paused.end {
            // Nothing after the item was logged before the answer.
            return Some((answered(Between::default()), LookupResult::Resolved));
        }
        match self.named_before(rewriter, master_at) {
            Scan::Named {
                superseded: true, ..
            } => Some((None, LookupResult::Superseded)),
            Scan::Named {
                ttl_reset: true, ..
            } => Some((None, LookupResult::TtlReset)),
            Scan::Named { .. } => Some((None, LookupResult::WrittenAgain)),
            Scan::Clear { between } => Some((answered(between), LookupResult::Resolved)),
            Scan::Short(last) => {
                let behind = position::lag_bytes(master_at, last, file_size);
                if behind > LOOKUP_BEHIND_LIMIT {
                    Some((None, LookupResult::Behind))
                } else if late {
                    Some((None, LookupResult::Timeout))
                } else {
                    None
                }
            }
        }
    }

    /// Decides the paused item with the verdict's answer (`None`: without one): how the
    /// look-up ended, and the answer to journal when the item was decided with it.
    pub(crate) fn decide(
        &mut self,
        rewriter: &mut LinkRewriter,
        found: Option<Answered>,
        result: LookupResult,
    ) -> (LookupResult, Option<Answer>) {
        if matches!(self.answer, Some(LookupAnswer::SeveralTypes { .. })) {
            rewriter
                .table()
                .mark_shared(self.paused.db, &self.paused.key);
        }
        let superseded = result == LookupResult::Superseded;
        let used = rewriter.resolve_paused_as(&mut self.paused, found, superseded);
        match found {
            Some(answered) if used => {
                let answer = Answer {
                    end: self.paused.end,
                    key: self.paused.key.clone(),
                    answered,
                };
                (result, Some(answer))
            }
            Some(_) => (LookupResult::Outlived, None),
            None => (result, None),
        }
    }

    /// The answer's master position (the end of the history a `Behind` result skips).
    pub(crate) fn answered_at(&self) -> Option<BinlogPosition> {
        match &self.answer {
            Some(
                LookupAnswer::Found { master_at, .. } | LookupAnswer::SeveralTypes { master_at },
            ) => Some(*master_at),
            _ => None,
        }
    }

    /// Whether an item after the paused one and up to `until` names the paused key, or the
    /// last position held while the items do not reach `until` yet. An item that cannot be
    /// read counts as naming it. Responses already found clear up to `until` are not read again
    /// (a read-ahead queues thousands, each arrival asking again).
    fn named_before(&mut self, rewriter: &mut LinkRewriter, until: BinlogPosition) -> Scan {
        let first = match Response::decode(&self.body) {
            Ok(Response::BinlogSync(resp)) => resp,
            _ => return Scan::NAMED,
        };
        let (mut clear, mut last, mut between) = match self.scanned {
            Some(s) if s.until == until => (s.clear, s.last, s.between),
            _ => (0, self.paused.end, Between::default()),
        };
        if clear == 0 {
            let from = self.paused.progress.next_record() + 1;
            let scan = match rewriter.items_name_key(
                &self.body,
                &first.records,
                from,
                until,
                &self.paused,
            ) {
                Ok(scan) => scan,
                Err(_) => return Scan::NAMED,
            };
            if let Some(decided) = fold_scan(scan, &mut between, &mut last) {
                return decided;
            }
            clear = 1;
        }
        let slot = first.slot;
        for body in self.queued.iter().skip(clear - 1) {
            let resp = match Response::decode(body) {
                Ok(Response::BinlogSync(resp)) => Some(resp),
                Ok(_) => None,
                Err(_) => return Scan::NAMED,
            };
            let same = |resp: &super::input::BinlogResponse<'_>| match (slot, resp.slot) {
                (Some(a), Some(b)) => a.db_name == b.db_name && a.slot_id == b.slot_id,
                _ => false,
            };
            // Another DB's keys are others; its positions are in its own binlog.
            if let Some(resp) = resp.filter(|r| same(r)) {
                let scan =
                    match rewriter.items_name_key(body, &resp.records, 0, until, &self.paused) {
                        Ok(scan) => scan,
                        Err(_) => return Scan::NAMED,
                    };
                if let Some(decided) = fold_scan(scan, &mut between, &mut last) {
                    return decided;
                }
            }
            clear += 1;
        }
        self.scanned = Some(Scanned {
            until,
            clear,
            last,
            between,
        });
        Scan::Short(last)
    }
}

/// Adds one response's scan to what the held responses before it said of the key; `Some` once
/// that decides the answer (a command names the key, or the answer's position is reached).
fn fold_scan(scan: KeyScan, between: &mut Between, last: &mut BinlogPosition) -> Option<Scan> {
    if scan.named {
        return Some(Scan::Named {
            superseded: scan.superseded,
            ttl_reset: scan.ttl_reset,
        });
    }
    *between = between.then(scan.between);
    if scan.reached {
        return Some(Scan::Clear { between: *between });
    }
    *last = (*last).max(scan.last);
    None
}

/// How far [`Held::named_before`] found the held responses clear of the key, for one answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scanned {
    until: BinlogPosition,
    /// Responses read and clear: the paused one, then this many minus one of `queued`.
    clear: usize,
    /// END of the last item read.
    last: BinlogPosition,
    /// The commands on the key in them that the kind of answer reads past.
    between: Between,
}

// ---------------------------------------------------------------------------------------------
// The machine's side of a hold
// ---------------------------------------------------------------------------------------------

impl LinkMachine {
    /// The master's answer to the look-up of the held response.
    pub(crate) fn on_lookup(
        &mut self,
        env: &dyn LinkEnv,
        id: u64,
        answer: LookupAnswer,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        // An answer for a hold that was given up (timed out) or dropped (a full sync, a new
        // session) is stale: it may be about another key, or from before this hold's item.
        if let Some(held) = self
            .held
            .as_mut()
            .filter(|h| h.asked == id && h.answer.is_none())
        {
            held.answer = Some(answer);
        }
        self.release_held(env, now, out);
    }

    /// Decides the held response's paused item once its look-up is usable (or given up), then
    /// goes on with that response and everything queued behind it, until all is sent or a
    /// response pauses again.
    pub(super) fn release_held(&mut self, env: &dyn LinkEnv, now: Instant, out: &mut Vec<Action>) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        let id = held.db;
        let Some(rewriter) = self.dbs[id.0].rewriter.as_mut() else {
            self.held = None;
            return;
        };
        let Some((found, result)) = held.verdict(rewriter, now, self.cfg.replica_binlog_file_size)
        else {
            if held.answer.is_some() {
                self.pre_ack_held(out);
            }
            return;
        };
        if result == LookupResult::Behind {
            if let Some(at) = held.answered_at() {
                rewriter.skip_look_ups_until(at);
            }
        }
        let unanswered = matches!(result, LookupResult::Timeout | LookupResult::Failed);
        let Some(mut held) = self.held.take() else {
            return;
        };
        let (result, journal) = held.decide(rewriter, found, result);
        if let Some(answer) = journal {
            out.push(Action::JournalAnswer { db: id, answer });
        }
        out.push(Action::Event(Event::LookedUp {
            db: id,
            result,
            key: Bytes::copy_from_slice(&held.paused.key),
            waited: now.saturating_duration_since(held.since),
            item_end: held.paused.end,
            found: found.map(|a| a.found),
        }));
        if unanswered {
            self.pause_look_ups(now, out);
        }
        let resumed = match Response::decode(&held.body) {
            Ok(Response::BinlogSync(resp)) => {
                // The pairs predicted so far were chained from where the response started; an
                // ack that ended the prediction meanwhile ends it for this response too.
                let predict = self
                    .predict_from(id)
                    .filter(|p| Some(*p) == held.predict_from);
                if predict.is_none() {
                    held.paused.progress.drop_prediction();
                }
                let layout = self.layout();
                let step = match self.dbs[id.0].rewriter.as_mut() {
                    Some(rw) => rw.rewrite_records_from(
                        &held.body,
                        &resp.records,
                        predict.map(|from| (layout, from)),
                        Some(held.paused.progress),
                    ),
                    None => return,
                };
                self.after_rewrite(env, id, &held.body, step, predict, now, out)
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = resumed {
            out.push(Action::Close(e));
            return;
        }
        for body in held.queued {
            if let Some(again) = self.held.as_mut() {
                again.queued.push_back(body);
                continue;
            }
            match Response::decode(&body) {
                Ok(resp) => self.on_response(env, &body, &resp, now, out),
                Err(e) => {
                    out.push(Action::Close(e));
                    return;
                }
            }
        }
    }

    /// Acks to the master, in the replica's name, the responses held since the last call: the
    /// answer waits for items the master sends only once everything it sent is acked. The
    /// replica's later acks for them stop at the relay (see `on_binlog_sync_request`). Stops
    /// at a response whose DB has forwarded items the replica has not acked yet (the master's
    /// window drains in order); a later call starts there again.
    fn pre_ack_held(&mut self, out: &mut Vec<Action>) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        let bodies = std::iter::once(&held.body).chain(held.queued.iter());
        for body in bodies.skip(held.pre_acked) {
            if let Ok(Response::BinlogSync(resp)) = Response::decode(body) {
                let mut items = resp.records.iter().filter(|r| !r.entry.is_keepalive());
                let db = resp.slot.and_then(|slot| {
                    self.dbs
                        .iter_mut()
                        .find(|d| d.db_name == slot.db_name && d.slot_id == slot.slot_id)
                });
                if let (Some(first), Some(db)) = (items.next(), db) {
                    let last = items.next_back().unwrap_or(first);
                    let after = db.last_forwarded;
                    let acked = db.ack_in_replicas_name(
                        after,
                        first.entry.binlog_offset.logical(),
                        last.entry.binlog_offset.logical(),
                        out,
                    );
                    if !acked {
                        return;
                    }
                }
            }
            held.pre_acked += 1;
        }
    }

    /// Every DB of the link decides without look-ups for [`LOOKUP_BACKOFF`].
    fn pause_look_ups(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.look_ups_resume_at.is_some() {
            return;
        }
        for db in &mut self.dbs {
            if let Some(rw) = db.rewriter.as_mut() {
                rw.set_look_ups(false);
            }
        }
        self.look_ups_resume_at = Some(now + LOOKUP_BACKOFF);
        out.push(Action::Event(Event::LookUpsPaused {
            for_secs: LOOKUP_BACKOFF.as_secs(),
        }));
    }

    /// Look-ups come back once [`LOOKUP_BACKOFF`] has passed.
    pub(super) fn resume_look_ups(&mut self, now: Instant) {
        if self.look_ups_resume_at.is_none_or(|at| now < at) {
            return;
        }
        self.look_ups_resume_at = None;
        for db in &mut self.dbs {
            if let Some(rw) = db.rewriter.as_mut() {
                rw.set_look_ups(self.cfg.look_ups);
            }
        }
    }
}
