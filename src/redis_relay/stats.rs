//! Every metric the Redis relay reports, in one place, through the `metrics` facade.
//!
//! The relay never calls a metrics macro anywhere else, so names and labels are defined once
//! here. Per-entry counts are aggregated per read batch ([`EntryTally`]) so the hot path does
//! array increments, not registry lookups.

use crate::engine::Outcome;
use crate::families::Family;
use metrics::{counter, gauge, histogram};

/// Metric names (prefix `pika_ttl_proxy_`).
pub mod names {
    pub const ENTRIES: &str = "pika_ttl_proxy_entries_total";
    pub const AT_RISK: &str = "pika_ttl_proxy_at_risk_total";
    pub const LAG_BYTES: &str = "pika_ttl_proxy_replica_lag_bytes";
    pub const LAG_SECONDS: &str = "pika_ttl_proxy_replica_lag_seconds";
    pub const LINK_UP: &str = "pika_ttl_proxy_link_up";
    pub const FULL_SYNCS: &str = "pika_ttl_proxy_full_syncs_total";
    pub const PARTIAL_SYNCS: &str = "pika_ttl_proxy_partial_syncs_total";
    pub const PROTOCOL_ERRORS: &str = "pika_ttl_proxy_protocol_errors_total";
    pub const BYTES: &str = "pika_ttl_proxy_bytes_total";
    pub const ENTRY_DURATION: &str = "pika_ttl_proxy_entry_duration_seconds";
    pub const TABLE_KEYS: &str = "pika_ttl_proxy_expiry_table_keys";
    pub const TABLE_COMPLETE: &str = "pika_ttl_proxy_expiry_table_complete";
    pub const MAP_POINTS: &str = "pika_ttl_proxy_offset_map_points";
    pub const DISCONNECTS: &str = "pika_ttl_proxy_replica_disconnects_total";
}

const DIALECT: &str = "redis";
const OUTCOMES: [Outcome; 6] = [
    Outcome::Passed,
    Outcome::Rewritten,
    Outcome::Disabled,
    Outcome::UnknownKey,
    Outcome::UnknownCommand,
    Outcome::Malformed,
];
const NO_FAMILY: usize = Family::ALL.len();

fn outcome_index(o: Outcome) -> usize {
    OUTCOMES.iter().position(|x| *x == o).unwrap_or(0)
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

/// Decisions of one batch, by family and outcome; flushed to the registry in one go.
#[derive(Debug, Default)]
pub struct EntryTally {
    counts: [[u64; OUTCOMES.len()]; NO_FAMILY + 1],
    at_risk: [u64; NO_FAMILY + 1],
    entries: u64,
}

impl EntryTally {
    /// Count one engine decision.
    pub fn count(&mut self, family: Option<Family>, outcome: Outcome) {
        let f = family.map_or(NO_FAMILY, Family::index);
        self.counts[f][outcome_index(outcome)] += 1;
        self.entries += 1;
    }

    /// Count one at-risk entry.
    pub fn at_risk(&mut self, family: Option<Family>) {
        self.at_risk[family.map_or(NO_FAMILY, Family::index)] += 1;
    }

    /// Entries counted since the last flush.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Report and reset. `elapsed_secs` is the time spent deciding the batch; its per-entry
    /// mean is recorded once per batch.
    pub fn flush(&mut self, elapsed_secs: f64) {
        if self.entries == 0 {
            return;
        }
        for (fi, row) in self.counts.iter().enumerate() {
            let family = Family::ALL.get(fi).map_or("none", |f| f.name());
            for (oi, n) in row.iter().enumerate() {
                if *n > 0 {
                    counter!(names::ENTRIES, "dialect" => DIALECT, "family" => family,
                        "outcome" => OUTCOMES[oi].name())
                    .increment(*n);
                }
            }
        }
        for (fi, n) in self.at_risk.iter().enumerate() {
            if *n > 0 {
                let family = Family::ALL.get(fi).map_or("none", |f| f.name());
                counter!(names::AT_RISK, "family" => family).increment(*n);
            }
        }
        histogram!(names::ENTRY_DURATION).record(elapsed_secs / self.entries as f64);
        *self = EntryTally::default();
    }
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
