//! The replica's requests on their way to the master: the handshake (a TrySync translated
//! through the offset map, or answered purged by the relay when it cannot be; a DBSync, which
//! starts a full sync and forgets the map first), the first_send that starts streaming (with
//! the link's own table, one parked for the replica, or a new one), and the acks, from which
//! the map learns where the replica is and which go up in the master's positions.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::action::{Action, DbId, Event, WriteAhead};
use super::db::{park_rewriter, Phase, Purged, ReplicaNode};
use super::input::Request;
use super::{db_index, db_key, protocol, LinkEnv, LinkMachine};
use crate::pika::messages::{
    build_try_sync_purged_response, replace_ack_range, replace_ack_range_end,
    replace_try_sync_offset, BinlogOffset, BinlogPosition, BinlogSyncRequest, LogicalOffset, Slot,
    SyncPointRequest,
};
use crate::pika_relay::error::{LinkError, Side};
use crate::pika_relay::inflight::Inflight;
use crate::pika_relay::offset_map::{MapState, MapUpdate, Pair};
use crate::pika_relay::replica_layout::Prediction;
use crate::pika_relay::rewrite::LinkRewriter;
use crate::table::{Baseline, ExpiryTable};

impl LinkMachine {
    /// A request from the replica; `body` is its frame.
    pub(crate) fn on_request(
        &mut self,
        env: &dyn LinkEnv,
        body: &Bytes,
        req: &Request<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let result = match req {
            Request::TrySync(ts) => self.on_try_sync(env, body, ts, out),
            Request::DbSync(ds) => self.on_db_sync(env, body, ds, now, out),
            Request::BinlogSync(bs) => {
                self.last_binlog_request = now;
                self.on_binlog_sync_request(env, body, bs, now, out)
            }
            Request::MetaSync(_) | Request::Other => {
                out.push(Action::ToMaster(body.clone()));
                Ok(())
            }
        };
        if let Err(e) = result {
            out.push(Action::Close(e));
        }
    }

    fn known(&self, slot: &Slot<'_>) -> Result<DbId, LinkError> {
        self.find(slot.db_name, slot.slot_id).ok_or_else(|| {
            protocol(
                Side::Replica,
                format!("unknown db {}", db_key(slot.db_name, slot.slot_id)),
            )
        })
    }

    fn on_try_sync(
        &mut self,
        env: &dyn LinkEnv,
        body: &Bytes,
        ts: &SyncPointRequest<'_>,
        out: &mut Vec<Action>,
    ) -> Result<(), LinkError> {
        let id = self.known(&ts.slot)?;
        let db = &mut self.dbs[id.0];
        let replica = ts.binlog_offset.position();
        let mut master = db.map.translate(replica);
        if master.is_none() && db.map == MapState::Unknown {
            if let Some(since) = db.dbsync_requested {
                if env.snapshot_matches(&db.key, replica, since) {
                    out.push(Action::Persist {
                        db: id,
                        state: MapState::Identity,
                        why: WriteAhead::SnapshotIdentity,
                    });
                    db.map = MapState::Identity;
                    master = Some(replica);
                    out.push(Action::Event(Event::SnapshotIdentity {
                        db: id,
                        position: replica,
                    }));
                }
            }
        }
        match master {
            Some(master) => {
                // After a crash nothing is parked for a replica resuming at `master`: its
                // table is rebuilt there from a checkpoint first.
                if db.rewriter.is_none() && !env.is_parked_at(&db.store_key, master) {
                    out.push(Action::CatchUp { db: id, master });
                }
                db.phase = Phase::TrySync { replica, master };
                out.push(Action::Event(Event::TrySyncTranslated {
                    db: id,
                    replica,
                    master,
                }));
                if master == replica {
                    out.push(Action::ToMaster(body.clone()));
                } else {
                    let up = replace_try_sync_offset(body, master)
                        .map_err(|e| LinkError::Message(Side::Replica, e))?;
                    out.push(Action::ToMaster(up.into()));
                }
            }
            None => {
                db.phase = Phase::Handshake;
                db.purged = Some(Purged::ByRelay);
                out.push(Action::Event(Event::AnsweredPurged {
                    db: id,
                    replica,
                    map: db.map.name(),
                }));
                let reply = build_try_sync_purged_response(ts, db.master_latest);
                out.push(Action::ToReplica(reply.into()));
            }
        }
        Ok(())
    }

    fn on_db_sync(
        &mut self,
        env: &dyn LinkEnv,
        body: &Bytes,
        ds: &SyncPointRequest<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), LinkError> {
        let id = self.known(&ds.slot)?;
        self.drop_held(id);
        let db = &mut self.dbs[id.0];
        let reason = match db.purged.take() {
            Some(Purged::ByRelay) => "proxy_unmapped_offset",
            Some(Purged::ByMaster) => "master_purged",
            None => "replica_request",
        };
        // Write-ahead: the replica is about to reset its binlog; no old pair may survive it.
        out.push(Action::Persist {
            db: id,
            state: MapState::Unknown,
            why: WriteAhead::FullSync,
        });
        db.map = MapState::Unknown;
        db.park(env);
        db.phase = Phase::FullSync;
        db.inflight = Inflight::default();
        db.dbsync_requested = Some(now);
        out.push(Action::Event(Event::FullSync { db: id, reason }));
        if self.cfg.fresh_dump {
            out.push(Action::FreshDump { db: id });
        }
        out.push(Action::ToMaster(body.clone()));
        Ok(())
    }

    fn on_binlog_sync_request(
        &mut self,
        env: &dyn LinkEnv,
        body: &Bytes,
        bs: &BinlogSyncRequest<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), LinkError> {
        let Some(id) = self.find(bs.db_name, bs.slot_id) else {
            // A real 4.0.1 replica reconnecting after a proxy restart sends its last ack first
            // (its MetaSync follows on the same connection); a Pika master ignores such an ack.
            out.push(Action::Event(Event::StrayAck {
                db: db_key(bs.db_name, bs.slot_id),
            }));
            return Ok(());
        };
        let db = &mut self.dbs[id.0];
        if bs.first_send {
            let Phase::FirstSend { replica, master } = db.phase else {
                return Err(protocol(
                    Side::Replica,
                    format!("first_send for {} without an accepted TrySync", db.key),
                ));
            };
            let (start, end) = (bs.ack_range_start.position(), bs.ack_range_end.position());
            if start != replica || end != replica {
                return Err(protocol(
                    Side::Replica,
                    format!(
                        "first_send at {start}-{end}, but the replica's TrySync was at {replica}"
                    ),
                ));
            }
            self.dbs[id.0].replica_node = Some(ReplicaNode {
                ip: bs.node.ip.to_vec(),
                port: bs.node.port,
                session_id: bs.session_id,
            });
            self.start_streaming(env, id, replica, master, out);
            if master == replica {
                out.push(Action::ToMaster(body.clone()));
                return Ok(());
            }
            let at = |o: &BinlogOffset| LogicalOffset {
                filenum: master.filenum,
                offset: master.offset,
                term: o.term.unwrap_or(0),
                index: o.index.unwrap_or(0),
            };
            let up = replace_ack_range(
                body,
                Some(at(&bs.ack_range_start)),
                Some(at(&bs.ack_range_end)),
            )
            .map_err(|e| LinkError::Message(Side::Replica, e))?;
            out.push(Action::ToMaster(up.into()));
            return Ok(());
        }
        if bs.is_ping() {
            out.push(Action::ToMaster(body.clone()));
            return Ok(());
        }
        if db.phase != Phase::Streaming {
            return Err(protocol(
                Side::Replica,
                format!(
                    "ack for {} while no items were sent ({})",
                    db.key,
                    db.phase.name()
                ),
            ));
        }
        let answered = db
            .inflight
            .ack(bs.ack_range_start.position())
            .map_err(|e| protocol(Side::Replica, e.to_string()))?;
        let replica_end = bs.ack_range_end.position();
        let master_end = answered.last_end;
        let mispredicted = match db.prediction.acked(replica_end, master_end.position()) {
            Ok(()) => false,
            Err(miss) => {
                out.push(Action::Event(Event::Mispredicted {
                    db: id,
                    predicted: miss.predicted,
                    acked: miss.acked,
                }));
                true
            }
        };
        // Whether the ack starts the map over from its own pair (else it is added to it).
        let restart = match &db.map {
            MapState::Identity if !answered.changed && replica_end == master_end.position() => None,
            MapState::Identity if !answered.changed => {
                out.push(Action::Event(Event::AckDiverged {
                    db: id,
                    replica_end,
                    master_end: master_end.position(),
                }));
                Some(true)
            }
            // Not reached while streaming (a DBSync leaves that phase first); an ack says nothing
            // about a map that must be relearned.
            MapState::Unknown => None,
            // The pairs predicted after this one were chained from the wrong position.
            MapState::Pairs(_) if mispredicted => Some(true),
            _ => Some(false),
        };
        if let Some(restart) = restart {
            let pair = Pair {
                replica: replica_end,
                master: master_end.position(),
            };
            let update = if restart {
                MapUpdate::Whole(MapState::Unknown.after_ack(pair.replica, pair.master))
            } else {
                MapUpdate::Acked(pair)
            };
            if matches!(db.map, MapState::Pairs(_)) {
                // The state after an ack is `Pairs`; an older `Pairs` state on disk is still
                // true (see `map_commit`): no wait.
                out.push(Action::HandIn {
                    db: id,
                    update: update.clone(),
                });
                db.map.apply(update);
            } else {
                db.map.apply(update);
                out.push(Action::Persist {
                    db: id,
                    state: db.map.clone(),
                    why: WriteAhead::Ack,
                });
            }
        }
        db.acked_master = master_end.position();
        if db.inflight.is_empty() {
            // Caught up: the replica's own acks pace the master again (its batches stay large).
            db.waiting_since = None;
            db.reading_ahead = false;
        } else {
            db.waiting_since = Some(now);
        }
        out.push(Action::Event(Event::Acked {
            db: id,
            at: db.acked_master,
        }));
        if db.acked_master <= db.pre_acked_until {
            // The relay acked it already (a look-up's hold); the master would take a second
            // ack for items no longer in its window as an error and drop the link. A ping goes
            // instead: it is the replica's sign of life, and a replica applying a long read-ahead
            // may ack nothing new for longer than the master's 20 s (seen on real 3.5.4).
            out.push(Action::ToMaster(bs.keepalive_ack().into()));
            return Ok(());
        }
        if replica_end == master_end.position() {
            out.push(Action::ToMaster(body.clone()));
        } else {
            let up = replace_ack_range_end(body, master_end)
                .map_err(|e| LinkError::Message(Side::Replica, e))?;
            out.push(Action::ToMaster(up.into()));
        }
        Ok(())
    }

    /// Streaming starts at master position `master` for DB `id`: the table is the link's own
    /// (if still at `master`), one parked there, or a new one (then a warm-up may start).
    fn start_streaming(
        &mut self,
        env: &dyn LinkEnv,
        id: DbId,
        replica: BinlogPosition,
        master: BinlogPosition,
        out: &mut Vec<Action>,
    ) {
        self.drop_held(id);
        let release = self.release;
        let families = self.cfg.families.clone();
        let empty_at_origin = self.cfg.empty_at_origin;
        let look_ups = self.cfg.look_ups;
        let db = &mut self.dbs[id.0];
        let previous_end = db.last_forwarded;
        db.phase = Phase::Streaming;
        db.inflight = Inflight::default();
        db.prediction = Prediction::starting_at(replica);
        db.acked_master = master;
        db.pre_acked_until = BinlogPosition::default();
        db.waiting_since = None;
        db.reading_ahead = false;
        db.pre_acked_at = None;
        out.push(Action::Event(Event::Acked { db: id, at: master }));
        db.last_forwarded = master;
        db.master_latest = db.master_latest.max(master);
        db.warmup = None;
        let reuse = match db.rewriter.take() {
            Some(rw) if previous_end == master => Some(rw),
            Some(rw) => {
                park_rewriter(env, &db.store_key, rw, previous_end);
                None
            }
            None => None,
        };
        let mut rewriter = match reuse {
            Some(rw) => rw,
            None => match env.unpark(&db.store_key, master) {
                Some(parked) => {
                    out.push(Action::Event(Event::TableReused {
                        db: id,
                        keys: parked.table.len(),
                    }));
                    let mut rw = LinkRewriter::new(parked.table, parked.state.db, families);
                    rw.set_stream_state(parked.state);
                    rw.set_journaled_answers(parked.journaled);
                    rw
                }
                None => {
                    let baseline = if empty_at_origin && master == BinlogPosition::default() {
                        Baseline::Absent
                    } else {
                        Baseline::Unknown
                    };
                    LinkRewriter::new(
                        Arc::new(ExpiryTable::new(baseline)),
                        db_index(&db.db_name),
                        families,
                    )
                }
            },
        };
        rewriter.set_pika_release(release);
        rewriter.set_look_ups(look_ups && self.look_ups_resume_at.is_none());
        if !rewriter.table().is_complete() {
            db.warmup = env.start_warmup(&db.key, &mut rewriter);
        }
        db.rewriter = Some(rewriter);
    }
}
