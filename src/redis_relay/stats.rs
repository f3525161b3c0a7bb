//! Every metric the Redis relay reports, in one place, through the `metrics` facade.
//!
//! The relay never calls a metrics macro anywhere else, so names and labels are defined once
//! here (entry counts go through the shared [`EntryTally`]).

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

/// A link came up or went down.
pub fn link_up(side: Side, replica: &str, up: bool) {
    gauge!(names::LINK_UP, "side" => side.label(), "replica" => replica.to_string()).set(if up {
        1.0
    } else {
        0.0
    });
}

/// The replica's lag behind what the proxy received.
pub fn lag(replica: &str, bytes: u64, seconds: f64) {
    gauge!(names::LAG_BYTES, "replica" => replica.to_string()).set(bytes as f64);
    gauge!(names::LAG_SECONDS, "replica" => replica.to_string()).set(seconds);
}

/// Points currently in a replica's offset map.
pub fn map_points(replica: &str, points: usize) {
    gauge!(names::MAP_POINTS, "replica" => replica.to_string()).set(points as f64);
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

/// Remove the per-replica gauges of a replica that went away.
pub fn forget_replica(replica: &str) {
    link_up(Side::Upstream, replica, false);
    link_up(Side::Downstream, replica, false);
    lag(replica, 0, 0.0);
    map_points(replica, 0);
}
