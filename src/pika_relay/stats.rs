//! Every metric the Pika relay reports, in one place. Names and labels follow the project's
//! metric list; a process that installs no recorder pays only a no-op call per update.

use metrics::{counter, gauge, Counter};

// Per-replica series (link state, lag, map points) live in `crate::replica_series`.

use super::error::Side;
pub use crate::entry_tally::EntryTally;
use crate::families::Family;
use crate::metrics::{names, NO_FAMILY};

fn family_label(family: Option<Family>) -> &'static str {
    family.map_or(NO_FAMILY, Family::name)
}

/// Engine decisions of one BinlogSync response, reported in one go (dialect `pika`).
pub fn entry_tally() -> EntryTally {
    EntryTally::new("pika")
}

/// An entry extends or removes a TTL that a lagging replica may already have applied.
pub fn at_risk(family: Option<Family>) {
    counter!(names::AT_RISK, "family" => family_label(family)).increment(1);
}

/// A full sync started; `reason` says who asked for it.
pub fn full_sync(reason: &'static str) {
    counter!(names::FULL_SYNCS, "reason" => reason).increment(1);
}

/// A replica resumed incrementally (TrySync answered kOk).
pub fn partial_sync() {
    counter!(names::PARTIAL_SYNCS).increment(1);
}

/// A peer broke the protocol (or a socket failed); `kind` names how.
pub fn protocol_error(side: Side, kind: &'static str) {
    counter!(
        names::PROTOCOL_ERRORS,
        "side" => side.metric().label(),
        "kind" => kind
    )
    .increment(1);
}

/// Bytes moved; `direction` is `in` (read from `side`) or `out` (written to `side`).
pub fn bytes(direction: &'static str, side: Side, n: usize) {
    byte_counter(direction, side).increment(n as u64);
}

fn byte_counter(direction: &'static str, side: Side) -> Counter {
    counter!(
        names::BYTES,
        "direction" => direction,
        "side" => side.metric().label()
    )
}

/// The byte counters of one link, looked up once (a lookup per frame showed in profiles).
#[derive(Debug)]
pub struct ByteCounters {
    from_replica: Counter,
    from_master: Counter,
    to_replica: Counter,
    to_master: Counter,
}

impl ByteCounters {
    /// Handles from the recorder installed now.
    pub fn new() -> Self {
        ByteCounters {
            from_replica: byte_counter("in", Side::Replica),
            from_master: byte_counter("in", Side::Master),
            to_replica: byte_counter("out", Side::Replica),
            to_master: byte_counter("out", Side::Master),
        }
    }

    /// `n` bytes read from `side`.
    pub fn received(&self, side: Side, n: usize) {
        match side {
            Side::Replica => self.from_replica.increment(n as u64),
            Side::Master => self.from_master.increment(n as u64),
        }
    }

    /// `n` bytes written to `side`.
    pub fn sent(&self, side: Side, n: usize) {
        match side {
            Side::Replica => self.to_replica.increment(n as u64),
            Side::Master => self.to_master.increment(n as u64),
        }
    }
}

impl Default for ByteCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// Expiry-table entries summed over every streaming DB of every link, and whether all of
/// them are complete (true when there are none).
pub fn expiry_tables(keys: usize, complete: bool) {
    gauge!(names::TABLE_KEYS).set(keys as f64);
    gauge!(names::TABLE_COMPLETE).set(if complete { 1.0 } else { 0.0 });
}

/// A look-up ended, and how (one of [`crate::metrics::LOOKUP_RESULTS`]).
pub fn lookup(result: &'static str) {
    counter!(names::LOOKUPS, "result" => result).increment(1);
}

/// A replica connection ended, and why (one of [`crate::metrics::DISCONNECT_REASONS`]).
pub fn disconnect(reason: &'static str) {
    counter!(names::DISCONNECTS, "reason" => reason).increment(1);
}
