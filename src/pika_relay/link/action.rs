//! What a link's state machine ([`LinkMachine`](super::LinkMachine)) asks its driver to
//! do, and the events it reports.
//!
//! The driver (`session.rs`) executes a step's actions **in order**. That order carries the
//! offset map's write-ahead rule: a [`Action::Persist`] is awaited before any later action
//! runs, so a frame queued after it reaches its peer only once the map state is durable, while
//! an [`Action::HandIn`] only queues the state for the writer (write-behind).

use std::fmt;

use bytes::Bytes;

use crate::engine::{AtRisk, PikaRelease};
use crate::families::Family;
use crate::pika::messages::{BinlogPosition, TrySyncReplyCode};
use crate::pika_relay::answer_journal::Answer;
use crate::pika_relay::error::LinkError;
use crate::pika_relay::offset_map::{MapState, MapUpdate};

/// One DB (slot) of a link, by its place in the link (stable for the link's life).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DbId(pub usize);

/// Which write-ahead transition a [`Action::Persist`] is (the rows of the Durability table in
/// `docs/architecture.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteAhead {
    /// → `Unknown` before the DBSync is forwarded.
    FullSync,
    /// `Unknown` → `Identity` at the rsync snapshot, before the TrySync is forwarded.
    SnapshotIdentity,
    /// The new session's resume pair, before the master's kOk reaches the replica.
    Resumed,
    /// `Identity` → `Pairs` before the first rewritten response reaches the replica.
    FirstRewrite,
    /// `Identity` → `Pairs` (or any non-`Pairs` → `Pairs` change) on an ack, before it is
    /// forwarded.
    Ack,
}

/// One thing for the driver to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Queue a frame body for the replica.
    ToReplica(Bytes),
    /// Queue a frame body for the master.
    ToMaster(Bytes),
    /// Make `state` the DB's durable offset map and **wait** until it is on disk before
    /// executing anything after this action (`CommittedMap::persist`).
    Persist {
        db: DbId,
        state: MapState,
        why: WriteAhead,
    },
    /// Hand the DB's map writer the change `update` of the state it holds (the machine's own
    /// state before the change) without waiting (`CommittedMap::hand_in_update`).
    HandIn { db: DbId, update: MapUpdate },
    /// Rebuild the DB's table at master position `master` from a checkpoint (catch-up along
    /// the master's binlog) and park it there; awaited before the next action.
    CatchUp { db: DbId, master: BinlogPosition },
    /// Write a checkpoint of the DB's table at its last forwarded position if one is due.
    Checkpoint { db: DbId },
    /// Ask the master for `key`'s TTL and the DB's binlog position after it, and feed the
    /// answer to [`LinkMachine::on_lookup`](super::LinkMachine::on_lookup) (without waiting
    /// for it here: the link goes on reading both peers meanwhile), with `id`: an answer is
    /// used only by the hold that asked it.
    LookUp { db: DbId, key: Bytes, id: u64 },
    /// Append what a look-up found to the DB's answer journal, so a catch-up after a crash
    /// knows it too; executed before the item it decided is queued for the replica.
    JournalAnswer { db: DbId, answer: Answer },
    /// Ask the master for a fresh dump and wait for it (bounded) before the next action: the
    /// DBSync that follows is then served a dump at the master's tip (`fresh_dump.rs`).
    FreshDump { db: DbId },
    /// Log and count.
    Event(Event),
    /// Close the link; nothing after this runs.
    Close(LinkError),
}

/// What happened, for logs and metrics (the driver adds the replica's name).
#[derive(Debug)]
pub(crate) enum Event {
    /// A response's replica position could not be predicted (a command the replica rewrites
    /// with its own clock): positions are learned from acks until the next session.
    PredictionEnded { db: DbId },
    /// The replica acknowledged items of a DB it has not resumed on this link (a reconnecting
    /// replica's leftover ack): dropped, as a Pika master ignores an ack of an unknown session.
    StrayAck { db: String },
    /// A held response's look-up ended and its item was decided (with the answer only when
    /// `result` is `Resolved`).
    LookedUp {
        db: DbId,
        result: super::held::LookupResult,
        key: Bytes,
        waited: std::time::Duration,
        /// The master END of the item, and what the master answered (if it did).
        item_end: BinlogPosition,
        found: Option<crate::engine::LookedUp>,
    },
    /// A look-up went unanswered: the link decides without look-ups for a while.
    LookUpsPaused { for_secs: u64 },
    /// An ack disagreed with the replica position predicted for its response.
    Mispredicted {
        db: DbId,
        predicted: BinlogPosition,
        acked: BinlogPosition,
    },
    /// The master's release, from its MetaSync answer.
    Release(PikaRelease),
    /// The master accepted a TrySync (`partial_syncs_total`).
    PartialSync,
    /// The master accepted a TrySync the link did not ask for.
    UnaskedTrySyncOk { db: DbId, phase: &'static str },
    /// The master refused a TrySync with a code other than kSyncPointBePurged.
    TrySyncRefused { db: DbId, code: TrySyncReplyCode },
    /// The full sync ended at the rsync snapshot: the map is `Identity` again (durable).
    SnapshotIdentity { db: DbId, position: BinlogPosition },
    /// A TrySync goes up translated.
    TrySyncTranslated {
        db: DbId,
        replica: BinlogPosition,
        master: BinlogPosition,
    },
    /// The relay answers a TrySync kSyncPointBePurged itself.
    AnsweredPurged {
        db: DbId,
        replica: BinlogPosition,
        map: &'static str,
    },
    /// A DBSync goes up (`full_syncs_total{reason}`).
    FullSync { db: DbId, reason: &'static str },
    /// Streaming starts on a table parked by an earlier link.
    TableReused { db: DbId, keys: usize },
    /// Items whose content is not RESP passed unchanged.
    UnparsableItems { db: DbId, items: usize },
    /// Entries at risk within the replica's lag horizon (`at_risk_total{family}` per entry).
    AtRisk {
        db: DbId,
        families: Vec<Option<Family>>,
        first: AtRisk,
    },
    /// The first rewritten response since the last full sync (its `Pairs` map is durable).
    FirstRewrite { db: DbId, at: BinlogPosition },
    /// The replica wrote unchanged items at another position than the master.
    AckDiverged {
        db: DbId,
        replica_end: BinlogPosition,
        master_end: BinlogPosition,
    },
    /// The replica acknowledged up to master END `at` (lag tracking).
    Acked { db: DbId, at: BinlogPosition },
}

impl fmt::Display for WriteAhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteAhead::FullSync => "full_sync",
            WriteAhead::SnapshotIdentity => "snapshot_identity",
            WriteAhead::Resumed => "resumed",
            WriteAhead::FirstRewrite => "first_rewrite",
            WriteAhead::Ack => "ack",
        })
    }
}
