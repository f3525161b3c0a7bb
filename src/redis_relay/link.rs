//! The link between one replica and its own upstream link to the master, from the moment the
//! master accepted a sync (`+FULLRESYNC` or `+CONTINUE`) to the link's end, as a state machine
//! that does no I/O.
//!
//! [`Link`] owns the protocol logic of that span: relaying the payload, deciding the stream
//! (through [`StreamRelay`]), translating the replica's ACKs with the offset map, holding them
//! until their state write is durable, the first-ACK gate after an EOF-framed payload, the read
//! slices, lag, and how the link ends. It takes inputs (bytes the driver appended to
//! [`Link::up_buf`], frames from the replica, ticks, the results of persistence) and answers with
//! [`Action`]s that the driver (`session.rs`) executes **in order**, reading them with
//! [`Link::next_action`]. It also owns the two byte buffers the driver moves: the master's bytes
//! ([`Link::up_buf`], filled by socket reads) and the bytes for the replica ([`Link::out`],
//! drained by socket writes).
//!
//! **Write-ahead rule.** Before replication-stream bytes may leave, the machine emits
//! [`Action::PersistAhead`] (the map points and tip covering them go to the state file), and
//! until the driver reports it executed ([`Link::ahead_written`]), [`Link::may_send_down`] is
//! false: the driver drains [`Link::out`] only when it is true. The state files after a full sync
//! or a continuation are written the same way, awaited ([`Action::PersistFresh`]), before any
//! stream byte of the new session is decided.

use super::ending::{EndReason, Ending};
use super::held_acks::{HeldAcks, UpstreamAck};
use super::offset_map::{OffsetMap, Resolved};
use super::outq::OutQueue;
use super::rdb_relay::{PayloadDone, PayloadRelay, ScanResult};
use super::registry::Phase;
use super::stats::{self, EntryTally, Side};
use super::store::ReplicaState;
use super::stream::{StreamRelay, READ_CHUNK};
use crate::engine::Policy;
use crate::relay_core::record_log::Progress;
use crate::resp::Frame;
use crate::table::{Baseline, ExpiryTable};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;

mod actions;
mod catch_up;
mod checkpoint;
#[cfg(test)]
mod tests;

pub(crate) use actions::{Action, ContinueStart, Event, FullStart, Holder, Now, Written};
use catch_up::CatchUp;
pub(crate) use catch_up::CatchUpFrom;

/// Most offset-map points kept per replica; only a replica that stops acknowledging gets near
/// it (each ACK prunes the map).
pub(crate) const MAX_MAP_POINTS: usize = 1 << 16;
/// Entries decided before the first of a read's output is sent: a read of a hundred entries
/// takes tens of microseconds to decide, and its first entries need not wait for its last. Each
/// further slice of the same read is twice as large, so a read costs at most a few more writes
/// (about log2(entries / 32)).
pub(crate) const FIRST_SLICE_ENTRIES: usize = 32;

/// A payload being relayed, and what the stream needs once it is done.
struct PendingPayload {
    relay: PayloadRelay,
    table: Arc<ExpiryTable>,
    base: u64,
    own_id: String,
    master_id: String,
    stored: bool,
    started: Instant,
}

/// The boundary a `PSYNC <own-id> <offset>` continues from, when `offset - 1` is one.
pub(crate) fn continue_point(map: &OffsetMap, offset: i64) -> Option<(u64, Resolved)> {
    let d = u64::try_from(offset.checked_sub(1)?).ok()?;
    map.exact(d).map(|r| (d, r))
}

/// How a decided stretch of work ended.
enum Flow {
    /// Nothing more until the next input.
    Done,
    /// Waiting for [`Action::Resume`].
    Paused,
}

/// One replica link's protocol state: everything the relay loop keeps besides the sockets.
pub(crate) struct Link {
    /// Bytes from the master not yet decided; the driver appends each socket read here.
    pub up_buf: BytesMut,
    /// Bytes for the replica; the driver drains it while [`Link::may_send_down`].
    pub out: OutQueue,
    actions: VecDeque<Action>,
    policy: Policy,
    payload: Option<PendingPayload>,
    holder: Option<Holder>,
    stream: Option<StreamRelay>,
    data_included: bool,
    awaiting_first_ack: bool,
    /// Set when the first ACK arrived and buffered stream bytes may now be decided.
    first_ack_released: bool,
    upstream_open: bool,
    closed: bool,
    acked_u: u64,
    /// (upstream offset received through, when) per read, for the lag in seconds.
    received: VecDeque<(u64, Instant)>,
    tally: EntryTally,
    /// The replica's lag at the last tick, in ms: entries that extend a TTL ending within it
    /// are at risk.
    lag_ms: u64,
    /// The replica's ACKs, each held until the state write that covers it is on disk.
    held_acks: HeldAcks,
    /// The translated ACK whose [`Action::PersistBehind`] is being executed.
    ack_in_flight: Option<UpstreamAck>,
    /// The newest map point (its D) the last write-ahead covered.
    ahead_point: Option<u64>,
    /// A [`Action::PersistAhead`] was emitted and not yet reported done.
    ahead_pending: bool,
    /// When the read being decided arrived: its entries' exec time, the same for every slice.
    read_arrived: Now,
    /// Whether the read being decided has queued any output yet.
    read_produced: bool,
    /// Entries the next slice of the current read may decide; more than the first slice's
    /// while a read is being decided in slices.
    slice_entries: usize,
    /// Time spent deciding the current read's slices so far.
    read_processing: Duration,
    /// A catch-up from a checkpoint before the replica's resume point (`link/catch_up.rs`).
    catch_up: Option<CatchUp>,
    /// When checkpoints of the table are due (`link/checkpoint.rs`).
    checkpoints: checkpoint::Schedule,
}

impl Link {
    fn new(policy: Policy, data_included: bool, up_buf: BytesMut, now: Now) -> Self {
        Link {
            up_buf,
            out: OutQueue::new(),
            actions: VecDeque::new(),
            policy,
            payload: None,
            holder: None,
            stream: None,
            data_included,
            awaiting_first_ack: false,
            first_ack_released: false,
            upstream_open: true,
            closed: false,
            acked_u: 0,
            received: VecDeque::new(),
            tally: stats::entry_tally(),
            lag_ms: 0,
            held_acks: HeldAcks::default(),
            ack_in_flight: None,
            ahead_point: None,
            ahead_pending: false,
            read_arrived: now,
            read_produced: false,
            slice_entries: FIRST_SLICE_ENTRIES,
            read_processing: Duration::ZERO,
            catch_up: None,
            checkpoints: checkpoint::Schedule::default(),
        }
    }

    /// A link whose payload (in `start.framing`) follows in `up_buf`; the payload header has
    /// gone down already. Call [`Link::start`] next.
    pub(crate) fn full(
        policy: Policy,
        data_included: bool,
        up_buf: BytesMut,
        start: FullStart,
        now: Now,
    ) -> Self {
        let mut link = Link::new(policy, data_included, up_buf, now);
        link.event(Event::Phase(Phase::FullSync));
        link.payload = Some(PendingPayload {
            relay: PayloadRelay::new(start.framing, &start.table),
            table: start.table,
            base: start.base,
            own_id: start.own_id,
            master_id: start.master_id,
            stored: start.stored,
            started: now.at,
        });
        link
    }

    /// A link that continues the replica's stream at boundary `start.d`: answers `+CONTINUE`,
    /// cuts the map back to `d`, resets the table unless it describes the master at exactly
    /// the continuation point, and rewrites the state file before anything else. Call
    /// [`Link::start`] next.
    pub(crate) fn continued(
        policy: Policy,
        data_included: bool,
        up_buf: BytesMut,
        start: ContinueStart,
        now: Now,
    ) -> Self {
        let mut link = Link::new(policy, data_included, up_buf, now);
        let ContinueStart {
            mut holder,
            d,
            resolved,
            new_master,
            capa_psync2,
            catch_up,
        } = start;
        let reply = if capa_psync2 {
            format!("+CONTINUE {}\r\n", holder.own_id)
        } else {
            "+CONTINUE\r\n".to_string()
        };
        link.push(Action::SendDown(Bytes::from(reply)));
        if let Some(new_master) = new_master {
            if new_master != holder.master_id {
                let old = std::mem::replace(&mut holder.master_id, new_master.clone());
                link.event(Event::MasterIdChanged {
                    old,
                    new: new_master,
                });
            }
        }
        holder.map.truncate_to(d);
        let catch_up =
            catch_up.filter(|from| from.u < resolved.u && holder.table_u == Some(from.u));
        if catch_up.is_none() && holder.table_u != Some(resolved.u) {
            // The table reflects another position of the master's stream (or nothing, after a
            // restart): it cannot be trusted from here, so every key becomes unknown.
            if holder.table.is_complete() {
                link.event(Event::TableReset {
                    table_u: holder.table_u,
                    u: resolved.u,
                });
            }
            holder.table.reset(Baseline::Unknown);
        }
        if catch_up.is_none() {
            holder.table_u = Some(resolved.u);
        }
        link.push(Action::PersistFresh);
        link.event(Event::PartialResync {
            own_id: holder.own_id.clone(),
            d,
            u: resolved.u,
            db: resolved.db,
            table_complete: holder.table.is_complete(),
        });
        link.event(Event::Phase(Phase::Streaming));
        link.stream = Some(match catch_up {
            // Bytes from the checkpoint on are decided, not sent: D stays at `d` meanwhile.
            Some(from) => {
                link.catch_up = Some(CatchUp::new(from.u, d, resolved, now.at));
                StreamRelay::new(d, from.u, from.db)
            }
            None => StreamRelay::new(d, resolved.u, resolved.db),
        });
        link.acked_u = resolved.u;
        link.ahead_point = newest_point(&holder.map);
        link.holder = Some(holder);
        link
    }

    /// Decide whatever the master sent before the link started.
    pub(crate) fn start(&mut self, now: Now) {
        self.read_arrived(now);
        self.drive();
    }

    /// The next action to execute, in order.
    pub(crate) fn next_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The replica state, once there is one.
    pub(crate) fn state_mut(&mut self) -> Option<&mut ReplicaState> {
        self.holder.as_deref_mut()
    }

    /// Give up the replica state (the link is over).
    pub(crate) fn take_holder(&mut self) -> Option<Holder> {
        self.holder.take()
    }

    /// For [`Action::StoreState`]: the state built from the payload.
    pub(crate) fn take_local_state(&mut self) -> Option<ReplicaState> {
        match self.holder.take() {
            Some(Holder::Local(state)) => Some(*state),
            other => {
                self.holder = other;
                None
            }
        }
    }

    /// For [`Action::StoreState`]: the store holds the state now.
    pub(crate) fn stored(&mut self, guard: OwnedMutexGuard<ReplicaState>) {
        self.holder = Some(Holder::Stored(guard));
    }

    /// Whether ACKs wait for a state write to become durable.
    pub(crate) fn holds_acks(&self) -> bool {
        !self.held_acks.is_empty()
    }

    /// The first state write an ACK is held for, if any.
    pub(crate) fn first_held_write(&self) -> Option<u64> {
        self.held_acks.first_write()
    }

    /// Whether the driver may write [`Link::out`] to the replica now: there is something to
    /// send and no write-ahead it depends on is outstanding.
    pub(crate) fn may_send_down(&self) -> bool {
        !self.ahead_pending && !self.out.is_empty()
    }

    /// True while the current read's entries are being decided slice by slice: the upstream
    /// buffer may still hold complete entries.
    pub(crate) fn slicing_read(&self) -> bool {
        self.slice_entries > FIRST_SLICE_ENTRIES
    }

    /// Whether the driver should read more of the master's stream, with `limit` bytes at most
    /// waiting for the replica.
    pub(crate) fn wants_upstream_read(&self, limit: usize) -> bool {
        self.upstream_open
            && !self.slicing_read()
            && self.out.len() < limit
            && !self.awaiting_first_ack
    }

    /// Make room in [`Link::up_buf`] for the next read of the master's stream.
    pub(crate) fn reserve_for_read(&mut self) {
        let room = match (&self.stream, &self.payload) {
            (Some(stream), None) => stream.room_for_next_read(&self.up_buf),
            _ => READ_CHUNK,
        };
        self.up_buf.reserve(room);
    }

    /// Input: the driver appended a read from the master to [`Link::up_buf`].
    pub(crate) fn on_upstream_read(&mut self, now: Now) {
        self.read_arrived(now);
        self.note_received(now.at);
        self.drive();
    }

    /// Input: the rest of a read being decided in slices may go on (its previous slice's
    /// output has been offered to the replica).
    pub(crate) fn on_slice(&mut self) {
        self.drive();
    }

    /// Input: the master closed its link. The link ends once its output is written
    /// ([`Link::poll_end`]).
    pub(crate) fn on_upstream_closed(&mut self) {
        self.upstream_open = false;
        self.event(Event::MasterClosed);
    }

    /// Input: the replica closed its connection.
    pub(crate) fn on_replica_closed(&mut self) {
        self.push(Action::PersistBehind);
        self.close(Ending::normal(EndReason::ReplicaClosed));
    }

    /// Ends the link when the master is gone and everything it sent has gone down. Returns
    /// whether it ended.
    pub(crate) fn poll_end(&mut self) -> bool {
        if self.closed || self.upstream_open || !self.out.is_empty() || self.slicing_read() {
            return self.closed;
        }
        self.push(Action::PersistBehind);
        self.close(Ending::normal(EndReason::UpstreamClosed));
        true
    }

    /// Input: the driver executed [`Action::PersistAhead`].
    pub(crate) fn ahead_written(&mut self) {
        self.ahead_pending = false;
    }

    /// Input: after [`Action::StoreState`] and [`Action::PersistFresh`], [`Action::Resume`].
    pub(crate) fn resume(&mut self) {
        self.drive();
    }

    /// Input: the result of an [`Action::PersistBehind`] (`None`: nothing to wait for, as
    /// without a state file). Returns whether an ACK is now held for that write, so the driver
    /// must watch the writer's progress.
    pub(crate) fn on_persisted(&mut self, write: Option<Written>) -> bool {
        let Some(ack) = self.ack_in_flight.take() else {
            return false;
        };
        // The master hears of an offset only once the map that resolves it is on disk (see
        // `held_acks`); the stream goes on meanwhile.
        match write.filter(|w| !w.done) {
            Some(w) => {
                self.held_acks.hold(ack, w.seq);
                true
            }
            None => {
                self.held_acks.clear();
                self.forward_ack(ack);
                false
            }
        }
    }

    /// Input: the state writer's progress while ACKs are held.
    pub(crate) fn on_write_progress(&mut self, progress: &Progress) {
        if let Some(ack) = self.held_acks.release(progress) {
            self.forward_ack(ack);
        }
    }

    /// Input: once per interval: persistence, lag and the numbers the registry shows.
    pub(crate) fn on_tick(&mut self, now: Now) {
        self.push(Action::PersistBehind);
        let Some(received) = self.received_u() else {
            return;
        };
        let lag_bytes = received.saturating_sub(self.acked_u);
        let lag = if lag_bytes == 0 {
            Duration::ZERO
        } else {
            self.received.front().map_or(Duration::ZERO, |(_, at)| {
                now.at.saturating_duration_since(*at)
            })
        };
        self.lag_ms = lag.as_millis() as u64;
        let points = self.holder.as_ref().map_or(0, |h| h.map.len());
        self.event(Event::Lag {
            bytes: lag_bytes,
            lag,
            points,
        });
        if let Some(s) = self.stream.as_ref().filter(|_| self.catch_up.is_none()) {
            let downstream = s.downstream_offset();
            self.event(Event::Offsets {
                upstream: received,
                downstream,
                acked: self.acked_u,
            });
        }
        self.maybe_checkpoint(now);
    }

    /// Input: one frame from the replica after the handshake.
    pub(crate) fn on_replica_frame(&mut self, frame: Frame) {
        let cmd = match frame {
            Frame::Newline { raw } => {
                // A loading replica's liveness signal: the master expects it.
                self.push(Action::SendUp(raw));
                return;
            }
            Frame::Empty { .. } => return,
            Frame::Command(c) | Frame::Inline(c) => c,
        };
        let is_ack = cmd.name_eq_ignore_case(b"REPLCONF")
            && cmd.arg(1).is_some_and(|a| a.eq_ignore_ascii_case(b"ACK"));
        if !is_ack {
            let name = String::from_utf8_lossy(cmd.name()).into_owned();
            self.event(Event::IgnoredCommand { name });
            return;
        }
        let Some(d) = cmd.arg(2).and_then(|a| parse_u64(a)) else {
            self.event(Event::ProtocolError(Side::Downstream, "ack"));
            return;
        };
        let fack = match (cmd.arg(3), cmd.arg(4)) {
            (Some(k), Some(v)) if k.eq_ignore_ascii_case(b"FACK") => parse_u64(v),
            _ => None,
        };
        if self.holder.is_none() {
            // Still relaying the payload: there is no stream to acknowledge yet.
            return;
        }
        if self.awaiting_first_ack {
            self.awaiting_first_ack = false;
            self.first_ack_released = true;
            self.event(Event::Phase(Phase::Streaming));
        }
        let Some(holder) = self.holder.as_mut() else {
            return;
        };
        let Some(u) = holder.map.floor(d) else {
            self.event(Event::AckBelowMap { d });
            return;
        };
        let mut args: Vec<Bytes> = vec![
            Bytes::from_static(b"REPLCONF"),
            Bytes::from_static(b"ACK"),
            Bytes::from(u.to_string()),
        ];
        if let Some(fu) = fack.and_then(|f| holder.map.floor(f)) {
            args.push(Bytes::from_static(b"FACK"));
            args.push(Bytes::from(fu.to_string()));
        }
        holder.map.prune_before(d);
        let mut bytes = BytesMut::new();
        crate::resp::encode_command(&args, &mut bytes);
        self.ack_in_flight = Some(UpstreamAck {
            bytes: bytes.to_vec(),
            u,
        });
        self.push(Action::PersistBehind);
    }

    /// Input: every frame of one read from the replica was handed in.
    pub(crate) fn on_replica_read_done(&mut self, now: Now) {
        if self.first_ack_released {
            self.first_ack_released = false;
            self.read_arrived(now);
            self.drive();
        }
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn event(&mut self, event: Event) {
        self.actions.push_back(Action::Event(event));
    }

    fn close(&mut self, ending: Ending) {
        self.closed = true;
        self.push(Action::Close(ending));
    }

    /// A read of the master's stream arrived (or buffered bytes became decidable).
    fn read_arrived(&mut self, now: Now) {
        self.read_arrived = now;
        self.read_produced = false;
    }

    /// Upstream offset of everything received (decided or still buffered).
    fn received_u(&self) -> Option<u64> {
        self.stream
            .as_ref()
            .map(|s| s.upstream_offset() + self.up_buf.len() as u64)
    }

    fn note_received(&mut self, now: Instant) {
        let Some(u) = self.received_u() else {
            return;
        };
        match self.received.back_mut() {
            // Reads closer together than 10 ms share one mark; bounds the queue.
            Some((last_u, at))
                if now.saturating_duration_since(*at) < Duration::from_millis(10) =>
            {
                *last_u = u
            }
            _ => self.received.push_back((u, now)),
        }
    }

    /// Decide whatever the upstream buffer holds in the current phase; once the whole read is
    /// decided, its hold is timed, its entries are counted (one tally flush per read) and its
    /// room is released. A malformed master stream closes the link (which forgets the state:
    /// [`EndReason::forgets_state`]).
    fn drive(&mut self) {
        if self.closed {
            return;
        }
        let queued_before = self.out.len();
        let result = self.drive_phase();
        self.read_produced |= self.out.len() > queued_before;
        match result {
            Err(end) => self.close(end),
            Ok(Flow::Paused) => {}
            Ok(Flow::Done) => self.read_done_unless_sliced(),
        }
    }

    fn read_done_unless_sliced(&mut self) {
        if self.slicing_read() {
            return;
        }
        if self.read_produced {
            self.event(Event::ReadDecided {
                arrived: self.read_arrived.at,
                queued: self.out.len(),
            });
        }
        self.tally
            .flush(std::mem::take(&mut self.read_processing).as_secs_f64());
        StreamRelay::release_spent_room(&mut self.up_buf);
    }

    fn drive_phase(&mut self) -> Result<Flow, Ending> {
        if let Some(p) = self.payload.as_mut() {
            let before = self.out.len();
            let fed = p.relay.feed(
                &mut self.up_buf,
                &mut self.out,
                &p.table,
                self.data_included,
            );
            if self.out.len() > before {
                self.push(Action::SendQueuedDown { stream_d: None });
            }
            match fed {
                Err(e) => {
                    self.event(Event::ProtocolError(Side::Upstream, "payload_mark"));
                    return Err(Ending::fail(EndReason::UpstreamProtocol, e.to_string()));
                }
                Ok(None) => return Ok(Flow::Done),
                Ok(Some(done)) => {
                    if let Some(p) = self.payload.take() {
                        self.payload_finished(p, done);
                    }
                    return Ok(Flow::Paused);
                }
            }
        }
        let budget = std::mem::replace(&mut self.slice_entries, FIRST_SLICE_ENTRIES);
        if self.awaiting_first_ack || self.up_buf.is_empty() {
            return Ok(Flow::Done);
        }
        if self.catch_up.is_some() && !self.drive_catch_up()? {
            return Ok(Flow::Done);
        }
        let (Some(stream), Some(holder)) = (self.stream.as_mut(), self.holder.as_mut()) else {
            return Ok(Flow::Done);
        };
        let started = Instant::now();
        let risk_horizon_ms = i64::try_from(self.lag_ms).unwrap_or(i64::MAX);
        let state: &mut ReplicaState = holder;
        let queued_before = self.out.len();
        let processed = stream.process_up_to(
            &mut self.up_buf,
            budget,
            self.read_arrived.ms,
            &state.table,
            &self.policy,
            &mut state.map,
            &mut self.out,
            &mut self.tally,
            risk_horizon_ms,
        );
        let processed = match processed {
            Ok(p) => p,
            Err(e) => {
                self.event(Event::ProtocolError(Side::Upstream, "stream_framing"));
                return Err(Ending::fail(
                    EndReason::UpstreamProtocol,
                    format!("malformed replication stream from the master: {e}"),
                ));
            }
        };
        state.table_u = Some(stream.upstream_offset());
        let capped = state.map.cap(MAX_MAP_POINTS) > 0;
        let newest = newest_point(&state.map);
        let stream_d = stream.downstream_offset();
        self.read_processing += started.elapsed();
        if processed.stopped_early {
            self.slice_entries = budget.saturating_mul(2);
        }
        if capped {
            self.event(Event::MapCapped);
        }
        if let Some(first) = processed.at_risk.first() {
            self.event(Event::AtRisk {
                db: first.db,
                key: first.key.clone(),
                old_deadline_ms: first.old_deadline_ms,
                entries: processed.at_risk.len() as u64,
            });
        }
        if self.out.len() > queued_before {
            // The write-ahead rule: the map points and the tip covering these bytes go to the
            // state file before they may leave, so wherever a crash leaves the replica, a
            // restarted relay resolves its offset (a tip short of the replica would cost a
            // full sync). The write is a `write(2)`, synced behind.
            self.ahead_point = newest;
            self.ahead_pending = true;
            self.push(Action::PersistAhead);
            self.push(Action::SendQueuedDown {
                stream_d: Some(stream_d),
            });
        }
        Ok(Flow::Done)
    }

    fn payload_finished(&mut self, p: PendingPayload, done: PayloadDone) {
        let db = match &done.scan {
            ScanResult::Complete(summary) => summary.repl_stream_db.unwrap_or(0),
            ScanResult::Failed(_) => {
                self.event(Event::ProtocolError(Side::Upstream, "rdb_scan"));
                0
            }
        };
        let eof_framed = done.eof_framed;
        self.event(Event::PayloadRelayed {
            done,
            table_complete: p.table.is_complete(),
            started: p.started,
        });
        let map = OffsetMap::new(p.base, p.base, db);
        self.ahead_point = newest_point(&map);
        let state = ReplicaState {
            own_id: p.own_id,
            master_id: p.master_id,
            map,
            table: p.table,
            table_u: Some(p.base),
            file: None,
        };
        self.holder = Some(Holder::Local(Box::new(state)));
        if p.stored {
            self.push(Action::PersistFresh);
            self.push(Action::StoreState);
        }
        self.stream = Some(StreamRelay::new(p.base, p.base, db));
        self.acked_u = p.base;
        self.awaiting_first_ack = eof_framed;
        self.event(Event::Phase(if eof_framed {
            Phase::AwaitingFirstAck
        } else {
            Phase::Streaming
        }));
        self.push(Action::Resume);
    }

    /// Send an ACK to the master and note how far the replica has caught up.
    fn forward_ack(&mut self, ack: UpstreamAck) {
        self.push(Action::SendUp(Bytes::from(ack.bytes)));
        self.acked_u = self.acked_u.max(ack.u);
        if let Some(s) = self.stream.as_ref().filter(|_| self.catch_up.is_none()) {
            let (upstream, downstream) = (s.upstream_offset(), s.downstream_offset());
            self.event(Event::Offsets {
                upstream,
                downstream,
                acked: self.acked_u,
            });
        }
        while self
            .received
            .front()
            .is_some_and(|(ru, _)| *ru <= self.acked_u)
        {
            self.received.pop_front();
        }
    }
}

/// The D offset of the map's newest point.
fn newest_point(map: &OffsetMap) -> Option<u64> {
    map.points().last().map(|p| p.d)
}

fn parse_u64(a: &[u8]) -> Option<u64> {
    std::str::from_utf8(a).ok()?.parse().ok()
}
