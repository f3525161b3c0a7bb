//! The Link's catch-up mode (see `redis_relay::catch_up`): a continuation whose upstream
//! PSYNC started at a checkpoint's offset `from`, behind the replica's resume point `target`.
//! The master's bytes from `from` to `target` are decided against the checkpoint's table, so
//! the table learns them, but nothing goes to the replica (it has them) and no map point is
//! recorded. At exactly `target` (a command boundary outside MULTI, with the DB the map
//! records there) the link streams as after any continuation, with the table valid at
//! `target`. Bytes that do not end at `target` end the link with a protocol error.

use super::super::ending::{EndReason, Ending};
use super::super::offset_map::{OffsetMap, Resolved};
use super::super::outq::OutQueue;
use super::super::stats::{self, EntryTally, Side};
use super::super::stream::StreamRelay;
use super::{Event, Link};
use std::time::Instant;

/// Where a catch-up starts: the checkpoint's offset and the stream's DB there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CatchUpFrom {
    pub u: u64,
    pub db: u32,
}

/// A catch-up in progress.
pub(super) struct CatchUp {
    from: u64,
    /// The replica's resume pair: D, and what it resolves to upstream.
    d: u64,
    target: Resolved,
    started: Instant,
    /// Counts the caught-up entries without reporting them: the replica got them long ago.
    tally: EntryTally,
}

impl CatchUp {
    pub(super) fn new(from: u64, d: u64, target: Resolved, started: Instant) -> Self {
        CatchUp {
            from,
            d,
            target,
            started,
            tally: stats::entry_tally(),
        }
    }
}

impl Link {
    /// Whether the link is still catching up (nothing goes to the replica yet).
    #[cfg(test)]
    pub(crate) fn catching_up(&self) -> bool {
        self.catch_up.is_some()
    }

    /// Decides buffered master bytes up to the catch-up's target. `Ok(true)` once the target
    /// is reached and the link streams normally (there may be more bytes buffered),
    /// `Ok(false)` while bytes up to the target are still missing.
    pub(super) fn drive_catch_up(&mut self) -> Result<bool, Ending> {
        let (Some(cu), Some(stream), Some(holder)) = (
            self.catch_up.as_mut(),
            self.stream.as_mut(),
            self.holder.as_mut(),
        ) else {
            return Ok(true);
        };
        let target = cu.target.u;
        let missing = target.saturating_sub(stream.upstream_offset());
        let head = usize::try_from(missing).map_or(self.up_buf.len(), |m| m.min(self.up_buf.len()));
        // Only bytes before the target: a frame crossing it stays incomplete here.
        let rest = self.up_buf.split_off(head);
        let mut scratch_map = OffsetMap::new(
            stream.downstream_offset(),
            stream.upstream_offset(),
            stream.state().db,
        );
        let mut discarded = OutQueue::new();
        let processed = stream.process_up_to(
            &mut self.up_buf,
            usize::MAX,
            self.read_arrived.ms,
            &holder.table,
            &self.policy,
            &mut scratch_map,
            &mut discarded,
            &mut cu.tally,
            0,
        );
        self.up_buf.unsplit(rest);
        holder.table_u = Some(stream.upstream_offset());
        if let Err(e) = processed {
            self.event(Event::ProtocolError(Side::Upstream, "stream_framing"));
            return Err(Ending::fail(
                EndReason::UpstreamProtocol,
                format!("malformed replication stream from the master during the catch-up: {e}"),
            ));
        }
        let u = stream.upstream_offset();
        if u < target {
            if self.up_buf.len() as u64 >= target - u {
                return Err(self.not_a_boundary(u, "an entry crosses it"));
            }
            return Ok(false);
        }
        let state = stream.state();
        if state.in_multi || state.db != cu.target.db {
            let why = if state.in_multi {
                "it is inside MULTI".to_string()
            } else {
                format!("DB {} there, the map says {}", state.db, cu.target.db)
            };
            return Err(self.not_a_boundary(u, &why));
        }
        let Some(cu) = self.catch_up.take() else {
            return Ok(true);
        };
        self.stream = Some(StreamRelay::new(cu.d, target, cu.target.db));
        self.event(Event::CatchUpDone {
            from: cu.from,
            to: target,
            entries: cu.tally.entries(),
            secs: cu.started.elapsed().as_secs_f64(),
        });
        Ok(true)
    }

    fn not_a_boundary(&mut self, u: u64, why: &str) -> Ending {
        let (from, target) = self
            .catch_up
            .as_ref()
            .map_or((0, 0), |cu| (cu.from, cu.target.u));
        self.event(Event::ProtocolError(Side::Upstream, "stream_framing"));
        Ending::fail(
            EndReason::UpstreamProtocol,
            format!(
                "catch-up from the checkpoint at {from}: the replica's resume offset {target} is not an entry boundary of the master's stream ({why}; reached {u})"
            ),
        )
    }
}
