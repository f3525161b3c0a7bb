//! When a streaming link asks for a checkpoint of its expiry table
//! ([`Action::Checkpoint`](super::Action::Checkpoint), see `redis_relay::checkpoint`).

use super::super::checkpoint::Request;
use super::{Action, Holder, Link, Now};
use std::time::{Duration, Instant};

/// A link's checkpoint schedule.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    /// `None`: no checkpoints (the default; the driver turns them on).
    every: Option<Duration>,
    /// When the last one was asked for, and at which upstream offset.
    last: Option<(Instant, u64)>,
    /// `last` before the last request, should the driver skip it.
    before: Option<(Instant, u64)>,
}

impl Link {
    /// Ask for a checkpoint of the table every `every` while streaming.
    pub(crate) fn set_checkpoint_interval(&mut self, every: Duration) {
        self.checkpoints.every = Some(every);
    }

    /// On a tick: a checkpoint is due when the interval has passed, the stream moved on since
    /// the last one, the replica has acknowledged the last one's offset (so the one before it,
    /// which the files keep, is at or before wherever the replica can resume), and the table
    /// describes the master at the stream's offset, outside MULTI, for a stored state.
    pub(super) fn maybe_checkpoint(&mut self, now: Now) {
        let Some(every) = self.checkpoints.every else {
            return;
        };
        if self.closed
            || self.payload.is_some()
            || self.awaiting_first_ack
            || self.catch_up.is_some()
        {
            return;
        }
        let (Some(stream), Some(Holder::Stored(state))) = (&self.stream, &self.holder) else {
            return;
        };
        let u = stream.upstream_offset();
        let due = match self.checkpoints.last {
            None => true,
            Some((at, last_u)) => {
                now.at.saturating_duration_since(at) >= every
                    && u != last_u
                    && self.acked_u >= last_u
            }
        };
        let table = &state.table;
        if !due
            || stream.state().in_multi
            || state.table_u != Some(u)
            || state.file.is_none()
            || (table.is_empty() && !table.is_complete())
        {
            return;
        }
        let request = Request {
            own_id: state.own_id.clone(),
            master_id: state.master_id.clone(),
            u,
            db: stream.state().db,
            table: table.clone(),
        };
        self.checkpoints.before = self.checkpoints.last.replace((now.at, u));
        self.push(Action::Checkpoint(request));
    }

    /// Input: the driver could not take the checkpoint it was asked for (a write still
    /// running); the next tick asks again.
    pub(crate) fn checkpoint_skipped(&mut self) {
        self.checkpoints.last = self.checkpoints.before;
    }
}
