//! A response held for a look-up: the link stopped rewriting it before an item whose key's
//! state the stream does not tell (`docs/architecture.md#look-ups`), asked the master, and
//! holds everything the master sends after it until the answer can be used.
//!
//! An answer is the key's TTL on the master with the master's binlog position read after it.
//! The master applies a command before it logs it, so the answer describes the key at some
//! point after the paused item; it is the key's state *just after the item* only if no entry
//! between the item and that position touched the key. [`Held::verdict`] checks exactly that
//! on the items held behind the paused one, and waits for them until they reach the position.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::action::DbId;
use super::input::Response;
use crate::engine::LookedUp;
use crate::pika::messages::BinlogPosition;
use crate::pika_relay::position;
use crate::pika_relay::rewrite::{LinkRewriter, PausedRewrite};

/// How long a response may wait for its look-up before its item is decided without one.
pub(crate) const LOOKUP_HOLD_LIMIT: Duration = Duration::from_secs(2);

/// Bytes of binlog between the last item held and an answer's position past which the link is
/// replaying history (after a full sync from an older dump, or a replica far behind): the
/// items up to the answer would come only as the replica acknowledges, and the answer would
/// describe a much later state anyway.
pub(crate) const LOOKUP_BEHIND_LIMIT: u64 = 1 << 20;

/// What the master said about the key a response paused at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LookupAnswer {
    /// Its TTL now, and the master's binlog position of the DB read after it.
    Found {
        found: LookedUp,
        master_at: BinlogPosition,
    },
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
    /// The master gave no answer.
    Failed,
    /// Neither the answer nor the items up to its position came in time.
    Timeout,
    /// The answer is from much further on than the stream (see [`LOOKUP_BEHIND_LIMIT`]);
    /// items up to that position are decided without look-ups.
    Behind,
}

impl LookupResult {
    /// Metric label (one of [`crate::metrics::LOOKUP_RESULTS`]).
    pub(crate) const fn name(self) -> &'static str {
        match self {
            LookupResult::Resolved => "resolved",
            LookupResult::WrittenAgain => "written_again",
            LookupResult::Failed => "failed",
            LookupResult::Timeout => "timeout",
            LookupResult::Behind => "behind",
        }
    }
}

/// What the items held say about the paused key up to an answer's position.
enum Scan {
    Named,
    Clear,
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
}

impl Held {
    /// What to decide the paused item with, once that is known: `Some(Some(found))` to use the
    /// answer, `Some(None)` to decide without one, `None` to keep waiting.
    pub(crate) fn verdict(
        &self,
        rewriter: &mut LinkRewriter,
        now: Instant,
        file_size: u64,
    ) -> Option<(Option<LookedUp>, LookupResult)> {
        let late = now.saturating_duration_since(self.since) >= LOOKUP_HOLD_LIMIT;
        let (found, master_at) = match &self.answer {
            None if late => return Some((None, LookupResult::Timeout)),
            None => return None,
            Some(LookupAnswer::Failed(_)) => return Some((None, LookupResult::Failed)),
            Some(LookupAnswer::Found { found, master_at }) => (*found, *master_at),
        };
        if master_at <= self.paused.end {
            // Nothing after the item was logged before the answer.
            return Some((Some(found), LookupResult::Resolved));
        }
        match self.named_before(rewriter, master_at) {
            Scan::Named => Some((None, LookupResult::WrittenAgain)),
            Scan::Clear => Some((Some(found), LookupResult::Resolved)),
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

    /// The answer's master position (the end of the history a `Behind` result skips).
    pub(crate) fn answered_at(&self) -> Option<BinlogPosition> {
        match &self.answer {
            Some(LookupAnswer::Found { master_at, .. }) => Some(*master_at),
            _ => None,
        }
    }

    /// Whether an item after the paused one and up to `until` names the paused key, or the
    /// last position held while the items do not reach `until` yet. An item that cannot be
    /// read counts as naming it.
    fn named_before(&self, rewriter: &mut LinkRewriter, until: BinlogPosition) -> Scan {
        let key = &self.paused.key;
        let first = match Response::decode(&self.body) {
            Ok(Response::BinlogSync(resp)) => resp,
            _ => return Scan::Named,
        };
        let from = self.paused.progress.next_record() + 1;
        let scan = match rewriter.items_name_key(
            &self.body,
            &first.records,
            from,
            until,
            key,
            self.paused.kind,
        ) {
            Ok(scan) => scan,
            Err(_) => return Scan::Named,
        };
        if scan.named {
            return Scan::Named;
        }
        if scan.reached {
            return Scan::Clear;
        }
        let mut last = scan.last.max(self.paused.end);
        let slot = first.slot;
        for body in &self.queued {
            let resp = match Response::decode(body) {
                Ok(Response::BinlogSync(resp)) => resp,
                Ok(_) => continue,
                Err(_) => return Scan::Named,
            };
            let same = match (slot, resp.slot) {
                (Some(a), Some(b)) => a.db_name == b.db_name && a.slot_id == b.slot_id,
                _ => false,
            };
            // Another DB's keys are others; its positions are in its own binlog.
            if !same {
                continue;
            }
            let scan =
                match rewriter.items_name_key(body, &resp.records, 0, until, key, self.paused.kind)
                {
                    Ok(scan) => scan,
                    Err(_) => return Scan::Named,
                };
            if scan.named {
                return Scan::Named;
            }
            if scan.reached {
                return Scan::Clear;
            }
            last = last.max(scan.last);
        }
        Scan::Short(last)
    }
}
