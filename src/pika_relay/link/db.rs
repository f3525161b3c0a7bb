//! The state of one DB (slot) of a link: its handshake [`Phase`], offset map, FIFO of forwarded
//! responses, expiry-table rewriter and warm-up, and the positions the link tracks. The
//! transitions live in the machine ([`LinkMachine`](super::LinkMachine)); this module holds the
//! state and what reads it.

use std::time::Instant;

use super::action::Action;
use super::LinkEnv;
use crate::pika::messages::{
    build_binlog_sync_request, BinlogPosition, LogicalOffset, NewBinlogSyncRequest, Node, Slot,
};
use crate::pika_relay::inflight::Inflight;
use crate::pika_relay::offset_map::MapState;
use crate::pika_relay::registry::ParkedTable;
use crate::pika_relay::replica_layout::Prediction;
use crate::pika_relay::rewrite::LinkRewriter;
use crate::pika_relay::warmup::{MergeProgress, WarmupState};

/// Handshake phase of one DB of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Nothing agreed yet (or the last TrySync failed).
    Handshake,
    /// A TrySync at replica position `replica`, sent upstream as master position `master`.
    TrySync {
        replica: BinlogPosition,
        master: BinlogPosition,
    },
    /// The master accepted; the replica's first_send is due.
    FirstSend {
        replica: BinlogPosition,
        master: BinlogPosition,
    },
    /// Items flow.
    Streaming,
    /// A DBSync was requested; the next TrySync ends it.
    FullSync,
}

impl Phase {
    /// The name in status and logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::TrySync { .. } => "try_sync",
            Phase::FirstSend { .. } => "first_send",
            Phase::Streaming => "streaming",
            Phase::FullSync => "full_sync",
        }
    }
}

/// Who said the replica's position is gone (the `reason` of the full sync that follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purged {
    /// The relay answered kSyncPointBePurged (it cannot map the position).
    ByRelay,
    /// The master answered kSyncPointBePurged.
    ByMaster,
}

/// State of one DB (slot) of a link.
pub(crate) struct DbState {
    /// `db0`, or `db0:<slot>`.
    pub(super) key: String,
    pub(super) db_name: Vec<u8>,
    pub(super) slot_id: u32,
    /// The file-name-safe key of this replica DB (offset map, parked table, checkpoint).
    pub(super) store_key: String,
    pub(super) map: MapState,
    pub(super) phase: Phase,
    pub(super) inflight: Inflight,
    /// The replica positions predicted for the responses forwarded (`replica_layout`).
    pub(super) prediction: Prediction,
    pub(super) rewriter: Option<LinkRewriter>,
    pub(super) warmup: Option<WarmupState>,
    /// The last scan was dropped; the next tick starts another.
    pub(super) warmup_again: bool,
    /// Master END of the last item forwarded (the position the engine's table reflects).
    pub(super) last_forwarded: BinlogPosition,
    /// Master END the replica last acknowledged.
    pub(super) acked_master: BinlogPosition,
    /// Newest master position seen (item ENDs, TrySync replies).
    pub(super) master_latest: BinlogPosition,
    /// Who last said the replica's position is gone, until the DBSync that follows.
    pub(super) purged: Option<Purged>,
    /// When the last DBSync went up (the snapshot must be newer).
    pub(super) dbsync_requested: Option<Instant>,
    /// The replica as its first_send named it: the relay's own acks
    /// ([`Self::pre_acked_until`]) go up in its name and session.
    pub(super) replica_node: Option<ReplicaNode>,
    /// Master END of the last item the relay acknowledged to the master itself (a read-ahead,
    /// or a look-up's hold: the master sends nothing new until what it sent is acked); the
    /// replica's own acks up to here are not sent again.
    pub(super) pre_acked_until: BinlogPosition,
    /// Since when the oldest response not acked by the replica has waited (as far as the link
    /// knows: reset at each ack that leaves some unacked); `None` when all are acked.
    pub(super) waiting_since: Option<Instant>,
    /// The replica fell behind: the relay acks what it forwards itself until it has caught up.
    pub(super) reading_ahead: bool,
    /// When the relay last acked for the replica while reading ahead.
    pub(super) pre_acked_at: Option<Instant>,
}

/// Who the relay's own acks speak for.
#[derive(Clone, Debug)]
pub(super) struct ReplicaNode {
    pub ip: Vec<u8>,
    pub port: i32,
    pub session_id: i32,
}

impl DbState {
    /// Acks the master's items `first..=last`, which follow the item ending at `after`, in the
    /// replica's name; the replica's own ack for them is then stopped at the relay (see
    /// `on_binlog_sync_request`). True when they are acked (now or before). False when an item
    /// up to `after` is not acked yet: the master takes acks only in order (it keeps the
    /// unacked item at the front of its window and sends nothing new), so those go up with the
    /// replica's own acks.
    pub(super) fn ack_in_replicas_name(
        &mut self,
        after: BinlogPosition,
        first: LogicalOffset,
        last: LogicalOffset,
        out: &mut Vec<Action>,
    ) -> bool {
        if last.position() <= self.pre_acked_until {
            return true;
        }
        let Some(node) = self.replica_node.as_ref() else {
            return false;
        };
        if self.pre_acked_until.max(self.acked_master) < after {
            return false;
        }
        out.push(Action::ToMaster(
            build_binlog_sync_request(&NewBinlogSyncRequest {
                node: Node {
                    ip: &node.ip,
                    port: node.port,
                },
                db_name: &self.db_name,
                slot_id: self.slot_id,
                ack_range_start: first,
                ack_range_end: last,
                session_id: node.session_id,
                first_send: false,
            })
            .into(),
        ));
        self.pre_acked_until = last.position();
        true
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }
    pub(crate) fn store_key(&self) -> &str {
        &self.store_key
    }
    pub(crate) fn slot(&self) -> Slot<'_> {
        Slot {
            db_name: &self.db_name,
            slot_id: self.slot_id,
        }
    }
    pub(crate) fn map(&self) -> &MapState {
        &self.map
    }
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }
    pub(crate) fn inflight(&self) -> &Inflight {
        &self.inflight
    }
    pub(crate) fn rewriter(&self) -> Option<&LinkRewriter> {
        self.rewriter.as_ref()
    }
    pub(crate) fn warming_up(&self) -> bool {
        self.warmup.is_some() || self.warmup_again
    }
    pub(crate) fn last_forwarded(&self) -> BinlogPosition {
        self.last_forwarded
    }
    pub(crate) fn acked_master(&self) -> BinlogPosition {
        self.acked_master
    }
    pub(crate) fn master_latest(&self) -> BinlogPosition {
        self.master_latest
    }

    pub(super) fn is(&self, db_name: &[u8], slot_id: u32) -> bool {
        self.slot_id == slot_id && self.db_name == db_name
    }

    /// Parks the DB's table so the next link can reuse it if it resumes at the same position.
    pub(super) fn park(&mut self, env: &dyn LinkEnv) {
        self.warmup = None;
        self.warmup_again = false;
        if let Some(rw) = self.rewriter.take() {
            park_rewriter(env, &self.store_key, rw, self.last_forwarded);
        }
    }

    pub(super) fn try_merge_warmup(&mut self) {
        if let Some(warm) = self.warmup.as_mut() {
            match warm.try_merge(self.rewriter.as_mut(), self.last_forwarded) {
                MergeProgress::Pending => {}
                MergeProgress::Over => self.warmup = None,
                MergeProgress::ScanAgain => {
                    self.warmup = None;
                    self.warmup_again = true;
                }
            }
        }
    }

    /// Starts the scan a dropped warm-up asked for (the table is still incomplete).
    pub(super) fn restart_warmup(&mut self, env: &dyn LinkEnv) {
        if !std::mem::take(&mut self.warmup_again) {
            return;
        }
        if let Some(rewriter) = self.rewriter.as_mut() {
            if !rewriter.table().is_complete() {
                self.warmup = env.start_warmup(&self.key, rewriter);
            }
        }
    }
}

pub(super) fn park_rewriter(env: &dyn LinkEnv, key: &str, rw: LinkRewriter, at: BinlogPosition) {
    env.park(
        key,
        ParkedTable {
            table: rw.table().clone(),
            state: rw.stream_state(),
            at,
            journaled: Default::default(),
        },
    );
}
