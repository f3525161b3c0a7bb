//! Every metric the Redis relay reports, in one place, through the `metrics` facade.
//!
//! The relay never calls a metrics macro anywhere else, so names and labels are defined once
//! here (entry counts go through the shared [`EntryTally`]; per-replica series through
//! [`crate::replica_series`]).

pub use crate::entry_tally::EntryTally;
use metrics::{counter, gauge};

use crate::metrics::names;
pub use crate::metrics::Side;

/// Engine decisions of one read batch, reported in one go (dialect `redis`).
pub fn entry_tally() -> EntryTally {
    EntryTally::new("redis")
}

/// Bytes moved on one link in one direction (`in` = received by the proxy).
pub fn bytes(side: Side, incoming: bool, n: usize) {
    if n > 0 {
        let direction = if incoming { "in" } else { "out" };
        counter!(names::BYTES, "direction" => direction, "side" => side.label())
            .increment(n as u64);
    }
}

/// A downstream full resynchronisation, and why.
pub fn full_sync(reason: &'static str) {
    counter!(names::FULL_SYNCS, "reason" => reason).increment(1);
}

/// A downstream partial resynchronisation.
pub fn partial_sync() {
    counter!(names::PARTIAL_SYNCS).increment(1);
}

/// Malformed bytes on a link (`kind` names what was wrong).
pub fn protocol_error(side: Side, kind: &'static str) {
    counter!(names::PROTOCOL_ERRORS, "side" => side.label(), "kind" => kind).increment(1);
}

/// A replica connection ended, and why.
pub fn disconnect(reason: &'static str) {
    counter!(names::DISCONNECTS, "reason" => reason).increment(1);
}

/// Expiry-table size summed over sessions, and whether every table is complete.
pub fn tables(keys: usize, all_complete: bool) {
    gauge!(names::TABLE_KEYS).set(keys as f64);
    gauge!(names::TABLE_COMPLETE).set(if all_complete { 1.0 } else { 0.0 });
}
