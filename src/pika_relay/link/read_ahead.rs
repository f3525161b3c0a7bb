//! Reading ahead of a replica that is behind: the relay acks what it forwarded to the master
//! itself, in the replica's name, so the master goes on sending as it writes
//! (`docs/architecture.md#read-ahead`). The machine's side: when it is due, and the acks.

use std::time::{Duration, Instant};

use super::action::Action;
use super::db::Phase;
use super::{LinkEnv, LinkMachine};

/// How long a forwarded response may wait for the replica's ack before the relay reads ahead
/// (acks for the replica itself): a replica keeping up acks within milliseconds, and its own
/// acks keep the master's batches large.
pub(crate) const READ_AHEAD_AFTER: Duration = Duration::from_millis(100);

/// How often the relay acks what it forwarded while reading ahead: acking each response at
/// once made a loaded master send one small response per ack.
pub(crate) const READ_AHEAD_EVERY: Duration = Duration::from_millis(20);

impl LinkMachine {
    /// When the driver should call [`Self::on_read_ahead_due`]: a DB whose replica has left a
    /// forwarded response unacked for [`READ_AHEAD_AFTER`], or, while reading ahead of one,
    /// [`READ_AHEAD_EVERY`] after the relay's last acks when more was forwarded since.
    pub(crate) fn read_ahead_due(&self) -> Option<Instant> {
        if self.cfg.read_ahead_bytes == 0 {
            return None;
        }
        self.dbs
            .iter()
            .filter(|d| d.phase == Phase::Streaming)
            .filter_map(|d| match (d.reading_ahead, d.waiting_since) {
                (false, Some(since)) => Some(since + READ_AHEAD_AFTER),
                (true, _) if d.last_forwarded > d.pre_acked_until.max(d.acked_master) => {
                    d.pre_acked_at.map(|at| at + READ_AHEAD_EVERY)
                }
                _ => None,
            })
            .min()
    }

    /// Reads ahead of a replica that is behind: a Pika master sends a replica nothing new until
    /// all it sent is acked, so behind a paused or slow replica the items written meanwhile (and
    /// the look-ups they need) would come only as it acks, seconds after the master wrote
    /// them, when a later command on the key may have spoiled the answer
    /// (`docs/architecture.md#read-ahead`). A DB whose replica has left a response unacked for
    /// [`READ_AHEAD_AFTER`] is acked by the relay, in the replica's name and in order, up to
    /// what was forwarded; then every [`READ_AHEAD_EVERY`] (the master keeps its batches large)
    /// until the replica has acked all it was sent, while less than `read_ahead_bytes` wait
    /// for the replica's socket.
    pub(crate) fn on_read_ahead_due(
        &mut self,
        env: &dyn LinkEnv,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let full = env.replica_backlog_bytes() >= self.cfg.read_ahead_bytes;
        for db in &mut self.dbs {
            if db.phase != Phase::Streaming {
                continue;
            }
            let due = if db.reading_ahead {
                db.pre_acked_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= READ_AHEAD_EVERY)
            } else {
                db.waiting_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= READ_AHEAD_AFTER)
            };
            if !due {
                continue;
            }
            // Asked again later when the replica's socket has the bound's worth waiting.
            db.pre_acked_at = Some(now);
            if full {
                db.waiting_since = db.waiting_since.map(|_| now);
                continue;
            }
            db.reading_ahead = true;
            let mut after = db.acked_master;
            for i in 0..db.inflight.len() {
                let Some(sent) = db.inflight.get(i) else {
                    break;
                };
                let (first, last) = (sent.first_end, sent.last_end);
                if !db.ack_in_replicas_name(after, first, last, out) {
                    break;
                }
                after = last.position();
            }
        }
    }
}
