//! The protocol logic of one replica link, as a state machine without I/O.
//!
//! [`LinkMachine`] keeps, per DB (slot) of the link, the handshake [`Phase`], the offset map
//! ([`MapState`]), the FIFO of forwarded responses, the expiry table's rewriter and the
//! positions the link tracks. It is fed decoded inputs ([`Request`], [`Response`], ticks, each
//! with `now`) and answers with [`Action`]s that its driver (`session.rs`) executes in order:
//! frames to queue for either peer, offset-map writes (a [`Action::Persist`] is write-ahead:
//! awaited before any later action; an [`Action::HandIn`] is write-behind), catch-up and
//! checkpoint requests, events for logs and metrics, and the close of the link with its
//! reason. The machine updates its own state as if each action succeeds; when a write fails
//! the driver closes the link.
//!
//! What it reads from the rest of the relay (the rsync tap's snapshot positions, the parked
//! tables, the start of a warm-up scan, the wall clock) goes through [`LinkEnv`], so the
//! machine runs in unit tests without sockets (`link/tests.rs`).
//!
//! [`Request`]: input::Request

pub(crate) mod action;
mod db;
pub(crate) mod held;
pub(crate) mod input;
mod read_ahead;
mod requests;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use bytes::Bytes;

use db::Purged;
pub(crate) use db::{DbState, Phase};

use crate::engine::PikaRelease;
use crate::families::FamilySwitches;
use crate::pika::messages::{BinlogPosition, MetaSyncResponse, Slot, TrySyncReplyCode};
use crate::pika_relay::error::{LinkError, Side};
use crate::pika_relay::inflight::Inflight;
use crate::pika_relay::offset_map::{MapState, MapUpdate};
use crate::pika_relay::registry::ParkedTable;
use crate::pika_relay::replica_layout::{Prediction, ReplicaLayout};
use crate::pika_relay::rewrite::{LinkRewriter, RewriteStep, RewrittenResponse};
use crate::pika_relay::warmup::WarmupState;
use action::{Action, DbId, Event, WriteAhead};
use held::Held;
use input::{BinlogResponse, Response};

/// Margin added to a replica's lag when deciding whether an entry is at risk: Pika's expiry has
/// one-second precision.
const AT_RISK_MARGIN_MS: i64 = 1000;

/// What the machine reads from the relay around it.
pub(crate) trait LinkEnv {
    /// Wall clock, ms since the epoch (the at-risk horizon and the lag in seconds).
    fn now_ms(&self) -> i64;
    /// The rsync tap saw this replica fetch a snapshot of `db` at `position` since `since`.
    fn snapshot_matches(&self, db: &str, position: BinlogPosition, since: Instant) -> bool;
    /// A table is parked for `store_key` at exactly `at`.
    fn is_parked_at(&self, store_key: &str, at: BinlogPosition) -> bool;
    /// Parks a table for the next link of this replica DB.
    fn park(&self, store_key: &str, parked: ParkedTable);
    /// Takes the table parked for `store_key` if it is valid at `at` (removed either way).
    fn unpark(&self, store_key: &str, at: BinlogPosition) -> Option<ParkedTable>;
    /// Starts a warm-up scan for DB `db` if the configuration asks for one.
    fn start_warmup(&self, db: &str, rewriter: &mut LinkRewriter) -> Option<WarmupState>;
    /// Bytes queued in the relay for the replica and not yet taken by its socket.
    fn replica_backlog_bytes(&self) -> usize;
}

/// The settings the machine needs.
#[derive(Clone, Debug)]
pub(crate) struct MachineConfig {
    /// Family switches for every rewriter of the link.
    pub families: FamilySwitches,
    /// A table for master position 0/0 starts with baseline `Absent`.
    pub empty_at_origin: bool,
    /// A streaming link whose master says nothing for this long is closed.
    pub upstream_idle_timeout: Duration,
    /// A streaming link whose replica sends no BinlogSync request for this long is closed.
    pub master_drop_after: Duration,
    /// The replicas' `binlog-file-size`, for predicting their binlog positions.
    pub replica_binlog_file_size: u64,
    /// Whether a write on a key the table cannot decide is held for a look-up on the master.
    pub look_ups: bool,
    /// Behind a lagging replica the relay acks what it forwarded to the master itself while
    /// less than this many bytes wait for the replica (0: only the replica's acks go up).
    pub read_ahead_bytes: usize,
    /// Whether a replica's DBSync waits for a fresh dump of the master.
    pub fresh_dump: bool,
}

/// The protocol state of one replica link (every DB it carries).
pub(crate) struct LinkMachine {
    cfg: MachineConfig,
    dbs: Vec<DbState>,
    /// The master's release, from its MetaSync answer (4.0 adds `db_instance_num`).
    release: PikaRelease,
    /// When the master last sent a frame.
    last_upstream: Instant,
    /// When a BinlogSync request (first_send, ack or ping) last went to the master: the master
    /// drops a replica whose requests stop for 20 s.
    last_binlog_request: Instant,
    /// The response waiting for a look-up, with everything the master sent after it.
    held: Option<Held>,
    /// Look-ups are off until then: the last one went unanswered (see [`held::LOOKUP_BACKOFF`]).
    look_ups_resume_at: Option<Instant>,
    /// The id of the last look-up asked.
    last_lookup: u64,
}

/// The DB key of a slot: `db0`, or `db0:<slot>` when the slot is not 0.
pub(crate) fn db_key(db_name: &[u8], slot_id: u32) -> String {
    let name = String::from_utf8_lossy(db_name);
    if slot_id == 0 {
        name.into_owned()
    } else {
        format!("{name}:{slot_id}")
    }
}

/// `dbN` → N (the engine keys its table by DB number).
fn db_index(db_name: &[u8]) -> u32 {
    std::str::from_utf8(db_name)
        .ok()
        .and_then(|n| n.strip_prefix("db"))
        .and_then(|n| n.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Seconds (master clock) the oldest unacknowledged item has waited at `now_ms`; 0 when caught
/// up.
pub(crate) fn lag_seconds(inflight: &Inflight, now_ms: i64) -> f64 {
    let Some(oldest) = inflight.oldest() else {
        return 0.0;
    };
    let now_s = now_ms as f64 / 1000.0;
    (now_s - f64::from(oldest.first_exec_time)).max(0.0)
}

fn protocol(side: Side, why: String) -> LinkError {
    LinkError::Protocol(side, why)
}

impl LinkMachine {
    /// A link with no DB yet, relaying a master of release `release` (until its MetaSync
    /// answer tells).
    pub(crate) fn new(cfg: MachineConfig, release: PikaRelease, now: Instant) -> Self {
        LinkMachine {
            cfg,
            dbs: Vec::new(),
            release,
            last_upstream: now,
            last_binlog_request: now,
            held: None,
            look_ups_resume_at: None,
            last_lookup: 0,
        }
    }

    /// Whether a response of `db` waits for a look-up.
    pub(crate) fn holds(&self, db: DbId) -> bool {
        self.held.as_ref().is_some_and(|h| h.db == db)
    }

    /// Drops a look-up's hold on `db`: its table has moved past what was forwarded (the items
    /// before the paused one), so it describes no position and is dropped too.
    fn drop_held(&mut self, db: DbId) {
        if self.holds(db) {
            self.held = None;
            self.dbs[db.0].rewriter = None;
        }
    }

    /// The master's release as the link knows it.
    pub(crate) fn release(&self) -> PikaRelease {
        self.release
    }

    /// The DB for `slot`, if the link has it.
    pub(crate) fn find(&self, db_name: &[u8], slot_id: u32) -> Option<DbId> {
        self.dbs
            .iter()
            .position(|d| d.is(db_name, slot_id))
            .map(DbId)
    }

    /// Adds the DB for `slot`, whose offset map was loaded as `map` (the driver opened it).
    pub(crate) fn add_db(&mut self, slot: &Slot<'_>, store_key: String, map: MapState) -> DbId {
        if let Some(id) = self.find(slot.db_name, slot.slot_id) {
            return id;
        }
        self.dbs.push(DbState {
            key: db_key(slot.db_name, slot.slot_id),
            db_name: slot.db_name.to_vec(),
            slot_id: slot.slot_id,
            store_key,
            map,
            phase: Phase::Handshake,
            inflight: Inflight::default(),
            prediction: Prediction::default(),
            rewriter: None,
            warmup: None,
            warmup_again: false,
            last_forwarded: BinlogPosition::default(),
            acked_master: BinlogPosition::default(),
            master_latest: BinlogPosition::default(),
            purged: None,
            dbsync_requested: None,
            replica_node: None,
            pre_acked_until: BinlogPosition::default(),
            waiting_since: None,
            reading_ahead: false,
            pre_acked_at: None,
        });
        DbId(self.dbs.len() - 1)
    }

    /// One DB's state.
    pub(crate) fn db(&self, id: DbId) -> &DbState {
        &self.dbs[id.0]
    }

    /// Every DB of the link, with its id.
    pub(crate) fn dbs(&self) -> impl Iterator<Item = (DbId, &DbState)> {
        self.dbs.iter().enumerate().map(|(i, d)| (DbId(i), d))
    }

    /// A write-ahead map state did not reach the disk (the link closes). After the first
    /// rewritten response the table has moved past what the replica got, so it is dropped
    /// rather than parked for a replica resuming there.
    pub(crate) fn persist_failed(&mut self, db: DbId, why: WriteAhead) {
        if why == WriteAhead::FirstRewrite {
            self.dbs[db.0].rewriter = None;
        }
    }

    /// The link closes: every DB's table is parked (valid at its last forwarded position).
    pub(crate) fn park_all(&mut self, env: &dyn LinkEnv) {
        if let Some(held) = &self.held {
            let db = held.db;
            self.drop_held(db);
        }
        for db in &mut self.dbs {
            db.park(env);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Master → replica
    // -----------------------------------------------------------------------------------------

    /// A response from the master; `body` is its frame.
    pub(crate) fn on_response(
        &mut self,
        env: &dyn LinkEnv,
        body: &Bytes,
        resp: &Response<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.last_upstream = now;
        match resp {
            Response::MetaSync(meta) => {
                if let Some(meta) = meta {
                    self.on_meta_sync_reply(meta, out);
                }
                out.push(Action::ToReplica(body.clone()));
            }
            Response::TrySync(ts) => {
                if let Some(ts) = ts {
                    self.on_try_sync_reply(
                        &ts.slot,
                        ts.reply_code,
                        ts.binlog_offset.map(|o| o.position()),
                        out,
                    );
                }
                out.push(Action::ToReplica(body.clone()));
            }
            Response::BinlogSync(binlog) => {
                if let Err(e) = self.on_binlog_response(env, body, binlog, now, out) {
                    out.push(Action::Close(e));
                }
            }
            Response::Other => out.push(Action::ToReplica(body.clone())),
        }
    }

    /// Learns the master's release: a 4.0 master names each DB's `db_instance_num`, which no
    /// 3.x master sends (and which a 4.0 replica requires). The rewrite forms follow it.
    fn on_meta_sync_reply(&mut self, meta: &MetaSyncResponse<'_>, out: &mut Vec<Action>) {
        let release = if meta.dbs_info.iter().any(|d| d.db_instance_num.is_some()) {
            PikaRelease::V4
        } else {
            PikaRelease::V3
        };
        if release != self.release || release == PikaRelease::V4 {
            out.push(Action::Event(Event::Release(release)));
        }
        self.release = release;
    }

    fn on_try_sync_reply(
        &mut self,
        slot: &Slot<'_>,
        code: TrySyncReplyCode,
        master_position: Option<BinlogPosition>,
        out: &mut Vec<Action>,
    ) {
        let Some(id) = self.find(slot.db_name, slot.slot_id) else {
            return;
        };
        let db = &mut self.dbs[id.0];
        if let Some(p) = master_position {
            db.master_latest = db.master_latest.max(p);
        }
        match (code, db.phase) {
            (TrySyncReplyCode::Ok, Phase::TrySync { replica, master }) => {
                let next = db.map.resumed_at(replica, master);
                if next != db.map {
                    // Before the replica can write anything of the new session.
                    out.push(Action::Persist {
                        db: id,
                        state: next.clone(),
                        why: WriteAhead::Resumed,
                    });
                    db.map = next;
                }
                db.phase = Phase::FirstSend { replica, master };
                out.push(Action::Event(Event::PartialSync));
            }
            (TrySyncReplyCode::SyncPointBePurged, _) => {
                // The relay's own answer, if any, names the full sync that follows.
                db.purged.get_or_insert(Purged::ByMaster);
                db.phase = Phase::Handshake;
            }
            (TrySyncReplyCode::Ok, phase) => {
                out.push(Action::Event(Event::UnaskedTrySyncOk {
                    db: id,
                    phase: phase.name(),
                }));
                db.phase = Phase::Handshake;
            }
            (code, _) => {
                out.push(Action::Event(Event::TrySyncRefused { db: id, code }));
                db.phase = Phase::Handshake;
            }
        }
    }

    fn on_binlog_response(
        &mut self,
        env: &dyn LinkEnv,
        body: &Bytes,
        resp: &BinlogResponse<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), LinkError> {
        if let Some(held) = self.held.as_mut() {
            // Everything waits behind the paused response, keepalives too: order is kept.
            held.queued.push_back(body.clone());
            // It may carry the items an answer waits for.
            self.release_held(env, now, out);
            return Ok(());
        }
        if resp.keepalive {
            out.push(Action::ToReplica(body.clone()));
            return Ok(());
        }
        // Pika sends one DB per response: the first entry names it.
        let Some(slot) = resp.slot else {
            out.push(Action::ToReplica(body.clone()));
            return Ok(());
        };
        let Some(id) = self.find(slot.db_name, slot.slot_id) else {
            return Err(protocol(
                Side::Master,
                format!(
                    "items for {}, which the replica never synced",
                    db_key(slot.db_name, slot.slot_id)
                ),
            ));
        };
        let db = &mut self.dbs[id.0];
        if db.phase != Phase::Streaming {
            return Err(protocol(
                Side::Master,
                format!(
                    "items for {} before the replica's first_send ({})",
                    db.key,
                    db.phase.name()
                ),
            ));
        }
        if db.rewriter.is_none() {
            return Err(protocol(
                Side::Master,
                format!("items for {} before streaming started", db.key),
            ));
        }
        let predict_from = self.predict_from(id);
        let step = match resp.mixed() {
            Some(mixed) => Err(mixed),
            None => {
                let layout = self.layout();
                match self.dbs[id.0].rewriter.as_mut() {
                    Some(rw) => rw.rewrite_records_from(
                        body,
                        &resp.records,
                        predict_from.map(|from| (layout, from)),
                        None,
                    ),
                    None => return Ok(()),
                }
            }
        };
        self.after_rewrite(env, id, body, step, predict_from, now, out)
    }

    /// Where the replica will be once it has applied everything forwarded so far, when that
    /// can be predicted.
    fn predict_from(&self, id: DbId) -> Option<BinlogPosition> {
        let db = &self.dbs[id.0];
        match &db.map {
            // The boundary before this response is identical on both sides.
            MapState::Identity => Some(db.last_forwarded),
            MapState::Pairs(_) => db.prediction.next_start(),
            MapState::Unknown => None,
        }
    }

    fn layout(&self) -> ReplicaLayout {
        ReplicaLayout {
            file_size: self.cfg.replica_binlog_file_size,
            release: self.release,
        }
    }

    /// A response's rewrite finished (it is forwarded) or paused (it is held and its key
    /// looked up).
    #[allow(clippy::too_many_arguments)]
    fn after_rewrite(
        &mut self,
        env: &dyn LinkEnv,
        id: DbId,
        body: &Bytes,
        step: Result<RewriteStep, crate::pika::messages::MessageError>,
        predict_from: Option<BinlogPosition>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), LinkError> {
        let rewritten = match step {
            Ok(RewriteStep::Done(rewritten)) => rewritten,
            Ok(RewriteStep::Paused(paused)) => {
                self.last_lookup += 1;
                out.push(Action::LookUp {
                    db: id,
                    key: Bytes::copy_from_slice(&paused.key),
                    id: self.last_lookup,
                });
                self.held = Some(Held {
                    asked: self.last_lookup,
                    db: id,
                    body: body.clone(),
                    paused,
                    predict_from,
                    queued: Default::default(),
                    since: now,
                    answer: None,
                    pre_acked: 0,
                    scanned: Default::default(),
                });
                return Ok(());
            }
            // A response that fails part-way may have changed the table already, while the
            // link's position stays before it: the table then describes no position, so it is
            // dropped rather than parked for a replica resuming there.
            Err(e) => {
                self.dbs[id.0].rewriter = None;
                return Err(LinkError::Message(Side::Master, e));
            }
        };
        self.forward_rewritten(env, id, body, rewritten, now, out);
        Ok(())
    }

    /// Sends a rewritten response, its write-ahead map state first.
    fn forward_rewritten(
        &mut self,
        env: &dyn LinkEnv,
        id: DbId,
        body: &Bytes,
        rewritten: RewrittenResponse,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let db = &mut self.dbs[id.0];
        if rewritten.unparsable_items > 0 {
            out.push(Action::Event(Event::UnparsableItems {
                db: id,
                items: rewritten.unparsable_items,
            }));
        }
        if !rewritten.at_risk.is_empty() {
            let now_ms = env.now_ms();
            let lag_ms = lag_seconds(&db.inflight, now_ms) as i64 * 1000;
            let horizon = now_ms + lag_ms + AT_RISK_MARGIN_MS;
            let mut due = rewritten
                .at_risk
                .iter()
                .filter(|(_, risk)| risk.old_deadline_ms <= horizon);
            if let Some((family, first)) = due.next() {
                let mut families = vec![*family];
                families.extend(due.map(|(family, _)| *family));
                out.push(Action::Event(Event::AtRisk {
                    db: id,
                    families,
                    first: first.clone(),
                }));
            }
        }
        let Some(forwarded) = rewritten.forwarded else {
            out.push(Action::ToReplica(body.clone()));
            return;
        };
        if forwarded.changed && db.map.is_identity() {
            // Write-ahead: once the replica applies this response its layout departs from the
            // master's; the boundaries it may be at until then are still identical, and where
            // it will be after this response is predicted from the last of them.
            db.prediction = Prediction::starting_at(db.last_forwarded);
            let identical = MapState::from_identical(
                std::iter::once(db.acked_master).chain(db.inflight.last_ends()),
            );
            let next = match db.prediction.forwarded(rewritten.predicted) {
                Some(pairs) => identical.with_pairs(&pairs),
                None => {
                    out.push(Action::Event(Event::PredictionEnded { db: id }));
                    identical
                }
            };
            out.push(Action::Persist {
                db: id,
                state: next.clone(),
                why: WriteAhead::FirstRewrite,
            });
            db.map = next;
            out.push(Action::Event(Event::FirstRewrite {
                db: id,
                at: db.last_forwarded,
            }));
        } else if matches!(db.map, MapState::Pairs(_)) && db.prediction.next_start().is_some() {
            // Write-ahead without waiting for a sync: a proxy killed once this response is sent
            // still finds where the replica will be after it.
            match db.prediction.forwarded(rewritten.predicted) {
                Some(pairs) => {
                    db.map.append(&pairs);
                    out.push(Action::HandIn {
                        db: id,
                        update: MapUpdate::Appended(pairs),
                    });
                }
                None => out.push(Action::Event(Event::PredictionEnded { db: id })),
            }
        }
        if db.inflight.is_empty() {
            db.waiting_since = Some(now);
        }
        db.inflight.push(forwarded);
        db.last_forwarded = forwarded.last_end.position();
        db.master_latest = db.master_latest.max(db.last_forwarded);
        db.try_merge_warmup();
        out.push(Action::ToReplica(match rewritten.body {
            Some(changed) => changed.into(),
            None => body.clone(),
        }));
    }

    // -----------------------------------------------------------------------------------------
    // Housekeeping
    // -----------------------------------------------------------------------------------------

    /// The periodic tick: timeouts of a streaming link, finished warm-ups, due checkpoints.
    pub(crate) fn on_tick(&mut self, env: &dyn LinkEnv, now: Instant, out: &mut Vec<Action>) {
        // A look-up that takes too long is given up (its item decided without it).
        self.release_held(env, now, out);
        self.resume_look_ups(now);
        let streaming = self.dbs.iter().any(|d| d.phase == Phase::Streaming);
        let timeout = self.cfg.upstream_idle_timeout;
        if streaming && now.saturating_duration_since(self.last_upstream) > timeout {
            out.push(Action::Close(LinkError::Timeout(Side::Master, timeout)));
            return;
        }
        // A real Pika master that drops a silent replica may leave the connection open and
        // send nothing: without this, the link would look up (and its lag stale) until the
        // idle timeout above.
        let drop_after = self.cfg.master_drop_after;
        if streaming && now.saturating_duration_since(self.last_binlog_request) > drop_after {
            out.push(Action::Close(LinkError::ReplicaSilent(drop_after)));
            return;
        }
        let held = self.held.as_ref().map(|h| h.db);
        for (i, db) in self.dbs.iter_mut().enumerate() {
            // A held response's items before the paused one are in the table but not sent:
            // the table is ahead of the position a merge or a checkpoint would name.
            if held == Some(DbId(i)) {
                continue;
            }
            db.try_merge_warmup();
            db.restart_warmup(env);
            if db.phase == Phase::Streaming && !db.warming_up() && db.rewriter.is_some() {
                out.push(Action::Checkpoint { db: DbId(i) });
            }
        }
    }
}
