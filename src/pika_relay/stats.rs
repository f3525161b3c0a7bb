//! Every metric the Pika relay reports, in one place. Names and labels follow the project's
//! metric list; a process that installs no recorder pays only a no-op call per update.

use metrics::{counter, gauge, Counter};

use super::error::Side;
pub use crate::entry_tally::EntryTally;
use crate::families::Family;

/// Label value for entries whose command belongs to no family.
const NO_FAMILY: &str = "none";

fn family_label(family: Option<Family>) -> &'static str {
    family.map_or(NO_FAMILY, Family::name)
}

/// Engine decisions of one BinlogSync response, reported in one go (dialect `pika`).
pub fn entry_tally() -> EntryTally {
    EntryTally::new("pika")
}

/// An entry extends or removes a TTL that a lagging replica may already have applied.
pub fn at_risk(family: Option<Family>) {
    counter!("pika_ttl_proxy_at_risk_total", "family" => family_label(family)).increment(1);
}

/// A replica's lag in bytes and seconds.
pub fn lag(replica: &str, bytes: u64, seconds: f64) {
    gauge!("pika_ttl_proxy_replica_lag_bytes", "replica" => replica.to_string()).set(bytes as f64);
    gauge!("pika_ttl_proxy_replica_lag_seconds", "replica" => replica.to_string()).set(seconds);
}

/// One side of a replica's link went up or down.
pub fn link_up(side: Side, replica: &str, up: bool) {
    gauge!(
        "pika_ttl_proxy_link_up",
        "side" => side.name(),
        "replica" => replica.to_string()
    )
    .set(if up { 1.0 } else { 0.0 });
}

/// A full sync started; `reason` says who asked for it.
pub fn full_sync(reason: &'static str) {
    counter!("pika_ttl_proxy_full_syncs_total", "reason" => reason).increment(1);
}

/// A replica resumed incrementally (TrySync answered kOk).
pub fn partial_sync() {
    counter!("pika_ttl_proxy_partial_syncs_total").increment(1);
}

/// A peer broke the protocol (or a socket failed); `kind` names how.
pub fn protocol_error(side: Side, kind: &'static str) {
    counter!(
        "pika_ttl_proxy_protocol_errors_total",
        "side" => side.name(),
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
        "pika_ttl_proxy_bytes_total",
        "direction" => direction,
        "side" => side.name()
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

/// Size and completeness of one link's expiry table (the last link to report wins).
pub fn expiry_table(keys: usize, complete: bool) {
    gauge!("pika_ttl_proxy_expiry_table_keys").set(keys as f64);
    gauge!("pika_ttl_proxy_expiry_table_complete").set(if complete { 1.0 } else { 0.0 });
}

/// Correspondences (anchors plus outstanding responses) held for a replica.
pub fn offset_map_points(replica: &str, points: usize) {
    gauge!("pika_ttl_proxy_offset_map_points", "replica" => replica.to_string()).set(points as f64);
}

/// Zeroes the per-replica gauges of a replica whose link closed, so dashboards and alerts do
/// not keep showing the last lag of a link that no longer exists (`link_up` says it is down).
pub fn forget_replica(replica: &str) {
    link_up(Side::Replica, replica, false);
    link_up(Side::Master, replica, false);
    lag(replica, 0, 0.0);
    offset_map_points(replica, 0);
}
