//! What the [`Link`](super::Link) machine exchanges with its driver: the [`Action`]s it asks
//! for, the [`Event`]s it reports, and the values its inputs carry ([`Now`], [`Written`], the
//! start of a full sync or a continuation, and the [`Holder`] of the replica state).

use super::super::checkpoint::Request;
use super::super::ending::Ending;
use super::super::offset_map::Resolved;
use super::super::rdb_relay::{Framing, PayloadDone};
use super::super::registry::Phase;
use super::super::stats::Side;
use super::super::store::ReplicaState;
use super::catch_up::CatchUpFrom;
use crate::table::ExpiryTable;
use bytes::Bytes;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::OwnedMutexGuard;

/// The replica state a link works on: stored (continuable) or local to the link (legacy SYNC,
/// or a state built from a payload until the driver hands it to the store).
pub(crate) enum Holder {
    Stored(OwnedMutexGuard<ReplicaState>),
    Local(Box<ReplicaState>),
}

impl Deref for Holder {
    type Target = ReplicaState;
    fn deref(&self) -> &ReplicaState {
        match self {
            Holder::Stored(g) => g,
            Holder::Local(s) => s,
        }
    }
}

impl DerefMut for Holder {
    fn deref_mut(&mut self) -> &mut ReplicaState {
        match self {
            Holder::Stored(g) => g,
            Holder::Local(s) => s,
        }
    }
}

/// A moment, as inputs carry it: monotonic for durations, wall-clock ms for exec times.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now {
    pub at: Instant,
    pub ms: i64,
}

impl Now {
    /// The current moment.
    pub(crate) fn wall() -> Now {
        Now {
            at: Instant::now(),
            ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        }
    }
}

/// What the driver must do, in the order the machine emits it.
#[derive(Debug)]
pub(crate) enum Action {
    /// Write these bytes to the replica now, before anything queued later (control lines such
    /// as `+CONTINUE`).
    SendDown(Bytes),
    /// Bytes were appended to [`Link::out`](super::Link::out); the driver drains it while
    /// [`Link::may_send_down`](super::Link::may_send_down). `stream_d` is the D offset they reach when they are
    /// replication-stream bytes (`None` for payload bytes).
    SendQueuedDown { stream_d: Option<u64> },
    /// Write these bytes to the master.
    SendUp(Bytes),
    /// Hand the state's unwritten map records to its file now (`ReplicaState::write_ahead`),
    /// then call [`Link::ahead_written`](super::Link::ahead_written): stream bytes they cover are waiting in [`Link::out`](super::Link::out).
    PersistAhead,
    /// Queue the state's unwritten records behind (`ReplicaState::persist`) and report the
    /// write with [`Link::on_persisted`](super::Link::on_persisted).
    PersistBehind,
    /// Rewrite the state file from scratch and wait until it is durable
    /// (`ReplicaState::persist_fresh`).
    PersistFresh,
    /// Move the state built from the payload into the store ([`Link::take_local_state`](super::Link::take_local_state),
    /// then [`Link::stored`](super::Link::stored)).
    StoreState,
    /// Call [`Link::resume`](super::Link::resume): deciding the stream waited for the actions before this one.
    Resume,
    /// Encode this checkpoint of the table now (the table is at `u` until the next input) and
    /// write it behind (`redis_relay::checkpoint`); if that cannot be done now, call
    /// [`Link::checkpoint_skipped`](super::Link::checkpoint_skipped).
    Checkpoint(Request),
    /// Something to log or count.
    Event(Event),
    /// The link is over; nothing after this.
    Close(Ending),
}

/// Something for logs, metrics or the session registry; changes nothing in the link.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// The connection's phase changed.
    Phase(Phase),
    /// Offsets for the registry: received from the master, sent to the replica, acknowledged.
    Offsets {
        upstream: u64,
        downstream: u64,
        acked: u64,
    },
    /// The replica's lag at a tick, and the map's size.
    Lag {
        bytes: u64,
        lag: Duration,
        points: usize,
    },
    /// A protocol error to count.
    ProtocolError(Side, &'static str),
    /// A whole read was decided and produced output; `queued` bytes wait for the replica.
    ReadDecided { arrived: Instant, queued: usize },
    /// Entries that extend or remove a TTL that may have expired on a lagging replica.
    AtRisk {
        db: u32,
        key: String,
        old_deadline_ms: i64,
        entries: u64,
    },
    /// The offset map reached its cap (the replica is not acknowledging).
    MapCapped,
    /// A payload was relayed and scanned.
    PayloadRelayed {
        done: PayloadDone,
        table_complete: bool,
        started: Instant,
    },
    /// The master changed its replication ID on a continuation.
    MasterIdChanged { old: String, new: String },
    /// The expiry table was not at the continuation point; keys became unknown.
    TableReset { table_u: Option<u64>, u: u64 },
    /// A partial resynchronisation continues at `d`/`u`.
    PartialResync {
        own_id: String,
        d: u64,
        u: u64,
        db: u32,
        table_complete: bool,
    },
    /// An ACK below the offset map, not forwarded.
    AckBelowMap { d: u64 },
    /// A command from a streaming replica that the relay ignores.
    IgnoredCommand { name: String },
    /// The master closed the link.
    MasterClosed,
    /// A catch-up brought the checkpoint's table from `from` to the resume point `to`.
    CatchUpDone {
        from: u64,
        to: u64,
        entries: u64,
        secs: f64,
    },
}

/// A state write queued by [`Action::PersistBehind`], as the driver reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Written {
    /// The writer's job number.
    pub seq: u64,
    /// Whether it is already on disk (or failed).
    pub done: bool,
}

/// What a full sync starts from.
pub(crate) struct FullStart {
    pub framing: Framing,
    /// The master's offset the stream starts at (D0 = U0).
    pub base: u64,
    pub own_id: String,
    pub master_id: String,
    /// False for legacy SYNC: nothing is stored, no offsets are meaningful.
    pub stored: bool,
    /// The fresh table the payload's scan fills.
    pub table: Arc<ExpiryTable>,
}

/// What a partial resynchronisation starts from.
pub(crate) struct ContinueStart {
    pub holder: Holder,
    /// The boundary the replica continues from, and what it resolves to upstream.
    pub d: u64,
    pub resolved: Resolved,
    /// The replication ID in the master's `+CONTINUE`, if any.
    pub new_master: Option<String>,
    /// The replica understands `+CONTINUE <id>`.
    pub capa_psync2: bool,
    /// The master continues at this checkpoint's offset, behind `resolved.u`: catch up first
    /// (the holder's table is the checkpoint's, at `catch_up.u`).
    pub catch_up: Option<CatchUpFrom>,
}
