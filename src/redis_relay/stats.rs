//! Every metric the Redis relay reports, in one place, through the `metrics` facade.
//!
//! The relay never calls a metrics macro anywhere else, so names and labels are defined once
//! here (entry counts go through the shared [`EntryTally`]).

pub use crate::entry_tally::EntryTally;
use metrics::{counter, gauge};

/// Metric names (prefix `pika_ttl_proxy_`; entry counts, at-risk counts and entry durations are named in
/// [`crate::entry_tally`], shared with the Pika relay).
pub mod names {
    pub const LAG_BYTES: &str = "pika_ttl_proxy_replica_lag_bytes";
    pub const LAG_SECONDS: &str = "pika_ttl_proxy_replica_lag_seconds";
    pub const LINK_UP: &str = "pika_ttl_proxy_link_up";
    pub const FULL_SYNCS: &str = "pika_ttl_proxy_full_syncs_total";
    pub const PARTIAL_SYNCS: &str = "pika_ttl_proxy_partial_syncs_total";
    pub const PROTOCOL_ERRORS: &str = "pika_ttl_proxy_protocol_errors_total";
    pub const BYTES: &str = "pika_ttl_proxy_bytes_total";
    pub const TABLE_KEYS: &str = "pika_ttl_proxy_expiry_table_keys";
    pub const TABLE_COMPLETE: &str = "pika_ttl_proxy_expiry_table_complete";
    pub const MAP_POINTS: &str = "pika_ttl_proxy_offset_map_points";
    pub const DISCONNECTS: &str = "pika_ttl_proxy_replica_disconnects_total";
}

/// Which link a byte or error count belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Proxy ↔ master.
    Upstream,
    /// Proxy ↔ replica.
    Downstream,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Upstream => "upstream",
            Side::Downstream => "downstream",
        }
    }
}

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
