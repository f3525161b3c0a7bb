//! The Prometheus recorder and the description of every metric the proxy exports.
//!
//! Relays record through the `metrics` macros under the names listed here (see
//! `docs/metrics.md`); this module installs the recorder (without its own HTTP listener: the
//! admin API serves the rendering) with explicit histogram buckets, and registers HELP texts.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Prefix of every metric name.
pub const PREFIX: &str = "pika_ttl_proxy_";

/// Every metric name, for both relays: a relay never spells a name itself.
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
    pub const HOLD_SECONDS: &str = "pika_ttl_proxy_hold_seconds";
    pub const STATE_WRITE_SECONDS: &str = "pika_ttl_proxy_state_write_seconds";
    pub const STATE_WRITE_BYTES: &str = "pika_ttl_proxy_state_write_bytes_total";
    pub const WARMUP_KEYS_SCANNED: &str = "pika_ttl_proxy_warmup_keys_scanned_total";
    pub const WARMUP_SHARED_NAMES: &str = "pika_ttl_proxy_warmup_shared_names_total";
    pub const LOOKUPS: &str = "pika_ttl_proxy_lookups_total";
    pub const TABLE_KEYS: &str = "pika_ttl_proxy_expiry_table_keys";
    pub const TABLE_COMPLETE: &str = "pika_ttl_proxy_expiry_table_complete";
    pub const MAP_POINTS: &str = "pika_ttl_proxy_offset_map_points";
    pub const DISCONNECTS: &str = "pika_ttl_proxy_replica_disconnects_total";
    pub const FAMILY_ENABLED: &str = "pika_ttl_proxy_family_enabled";
}

/// The `side` label: which link of a replica session a series is about. Both relays use
/// these values (the Pika relay's own master/replica wording stays in its log lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Proxy ↔ master.
    Upstream,
    /// Proxy ↔ replica.
    Downstream,
}

impl Side {
    /// Both sides.
    pub const ALL: [Side; 2] = [Side::Upstream, Side::Downstream];

    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            Side::Upstream => "upstream",
            Side::Downstream => "downstream",
        }
    }
}

/// Values of `direction` on `pika_ttl_proxy_bytes_total`.
pub const DIRECTIONS: [&str; 2] = ["in", "out"];

/// Values of `reason` on `pika_ttl_proxy_full_syncs_total`: the Redis relay's, then the Pika
/// relay's. Both relays start every one at 0, so one dashboard fits both.
pub const FULL_SYNC_REASONS: &[&str] = &[
    "requested",
    "unknown_id",
    "not_a_boundary",
    "master_refused_partial",
    "state_busy",
    "legacy_sync",
    "replica_request",
    "master_purged",
    "proxy_unmapped_offset",
];

/// Values of `reason` on `pika_ttl_proxy_replica_disconnects_total` (both relays).
pub const DISCONNECT_REASONS: &[&str] = &[
    "replica_closed",
    "shutdown",
    "upstream_closed",
    "upstream_io",
    "upstream_protocol",
    "upstream_unreachable",
    "upstream_timeout",
    "master_error",
    "downstream_io",
    "downstream_protocol",
    "handshake_timeout",
    "replica_timeout",
    "state_write_failed",
];

/// Values of `kind` on `pika_ttl_proxy_protocol_errors_total` (both relays; each uses those
/// that fit its protocol).
pub const PROTOCOL_ERROR_KINDS: &[&str] = &[
    "reply",
    "not_redis",
    "framing",
    "payload_header",
    "psync_reply",
    "payload_mark",
    "stream_framing",
    "rdb_scan",
    "ack",
    "frame",
    "message",
    "protocol",
    "timeout",
    "item_content",
    "unknown_version",
    "replica_layout",
];

/// Values of `result` on `pika_ttl_proxy_lookups_total` (the Pika relay's look-ups; the Redis
/// relay has none and shows them at 0).
pub const LOOKUP_RESULTS: &[&str] = &[
    "resolved",
    "written_again",
    "superseded",
    "ttl_reset",
    "failed",
    "timeout",
    "behind",
    "outlived",
];

/// Label value for entries whose command belongs to no family.
pub const NO_FAMILY: &str = "none";

/// Creates every counter a dashboard panel or alert reads, at 0, for all its known label
/// values: a series that first appears already at 1 is invisible to `rate()`/`increase()`,
/// so the first at-risk entry or protocol error would never fire an alert.
pub fn register_zeroes(dialect: &'static str) {
    use crate::engine::Outcome;
    use crate::families::Family;
    use metrics::{counter, gauge};
    let families = Family::ALL
        .iter()
        .map(|f| f.name())
        .chain(std::iter::once(NO_FAMILY));
    for family in families {
        for outcome in Outcome::ALL {
            counter!(names::ENTRIES, "dialect" => dialect, "family" => family,
                "outcome" => outcome.name())
            .absolute(0);
        }
        counter!(names::AT_RISK, "family" => family).absolute(0);
    }
    for reason in FULL_SYNC_REASONS {
        counter!(names::FULL_SYNCS, "reason" => *reason).absolute(0);
    }
    counter!(names::PARTIAL_SYNCS).absolute(0);
    for reason in DISCONNECT_REASONS {
        counter!(names::DISCONNECTS, "reason" => *reason).absolute(0);
    }
    for side in Side::ALL {
        for kind in PROTOCOL_ERROR_KINDS {
            counter!(names::PROTOCOL_ERRORS, "side" => side.label(), "kind" => *kind).absolute(0);
        }
        for direction in DIRECTIONS {
            counter!(names::BYTES, "direction" => direction, "side" => side.label()).absolute(0);
        }
    }
    // Histograms too (empty), so the series count does not change when the first link comes:
    // a steady count is how a scrape shows that connections leave nothing behind.
    for histogram in [names::ENTRY_DURATION, HOLD_SECONDS, STATE_WRITE_SECONDS] {
        let _ = metrics::histogram!(histogram);
    }
    counter!(names::STATE_WRITE_BYTES).absolute(0);
    counter!(names::WARMUP_KEYS_SCANNED).absolute(0);
    counter!(names::WARMUP_SHARED_NAMES).absolute(0);
    for result in LOOKUP_RESULTS {
        counter!(names::LOOKUPS, "result" => *result).absolute(0);
    }
    // No session yet: nothing is unknown.
    gauge!(names::TABLE_KEYS).set(0.0);
    gauge!(names::TABLE_COMPLETE).set(1.0);
}

/// `(name, type, labels, help)` of every metric, in the order of `docs/metrics.md`.
pub const METRICS: &[(&str, &str, &str, &str)] = &[
    ("pika_ttl_proxy_entries_total", "counter", "dialect, family, outcome",
     "Entries seen in the replication stream, by family and by what the engine did (rewritten, passed, disabled, unknown_key, unknown_command, malformed)."),
    ("pika_ttl_proxy_at_risk_total", "counter", "family",
     "Entries that extend or remove the TTL of a key a late replica may already have dropped (the known limit): counted and logged, not repaired."),
    ("pika_ttl_proxy_replica_lag_bytes", "gauge", "replica",
     "Bytes the replica has not acknowledged (in master space): Redis, the master offset the proxy received minus the replica's ack; Pika, the master's binlog tip (read every second with INFO replication) minus the replica's ack, so it keeps growing while a replica is stopped."),
    ("pika_ttl_proxy_replica_lag_seconds", "gauge", "replica",
     "How long the replica has been behind: Redis, the age of the oldest received entry it has not acknowledged; Pika, the time since the master's tip first moved past the replica's acknowledged position (kept across the master dropping the replica and its reconnects); 0 when caught up."),
    ("pika_ttl_proxy_link_up", "gauge", "side, replica",
     "1 while the upstream (to the master) or downstream (to the replica) link of a replica session is up; 0 for a grace period after the replica left, then removed."),
    ("pika_ttl_proxy_full_syncs_total", "counter", "reason",
     "Full resynchronisations the proxy gave a replica, by reason (Redis: requested, unknown_id, not_a_boundary, master_refused_partial, state_busy, legacy_sync; Pika: replica_request, master_purged, proxy_unmapped_offset)."),
    ("pika_ttl_proxy_partial_syncs_total", "counter", "",
     "Partial resynchronisations (PSYNC continue / TrySync resumed) through translated offsets."),
    ("pika_ttl_proxy_protocol_errors_total", "counter", "side, kind",
     "Malformed or unexpected input, by side (upstream, downstream) and kind; the affected link is closed."),
    ("pika_ttl_proxy_bytes_total", "counter", "direction, side",
     "Bytes received (direction=in) and sent (direction=out) per side."),
    ("pika_ttl_proxy_entry_duration_seconds", "histogram", "",
     "Time spent inside the proxy per entry (parse, engine, encode), averaged per read batch."),
    ("pika_ttl_proxy_hold_seconds", "histogram", "",
     "Time the proxy holds the master's data: from the read that received it until everything it produced is written to the replica's socket (processing, and waiting for a full replica socket). One sample per read."),
    ("pika_ttl_proxy_state_write_seconds", "histogram", "",
     "Time to sync the offset-map state written since the last sync to disk (one fdatasync, coalescing every write meanwhile; a slow disk shows here first; Redis replica ACKs and some Pika map transitions wait for these syncs)."),
    ("pika_ttl_proxy_warmup_keys_scanned_total", "counter", "",
     "Keys the Pika warm-up scans of the master have read so far (its rate is the scan's progress; the Redis relay has no warm-up and keeps it at 0). /readyz answers 503 until every warm-up has merged."),
    ("pika_ttl_proxy_warmup_shared_names_total", "counter", "",
     "Names a Pika 3.x warm-up scan found holding values of several types (a 3.x master keeps a string, a hash, a list, a set and a zset apart under one name, each with its own TTL): entries on them (and on names written with a second type while the proxy runs, not counted here) pass unrewritten as unknown_key until the name is deleted whole, since a deadline or a del added for one type would reach all of them on the replica. The Redis relay keeps it at 0."),
    ("pika_ttl_proxy_lookups_total", "counter", "result",
     "Pika: writes held while the proxy asked the master for their key's TTL (by a link, or after a restart by the standby reader of a replica still away), because the stream did not tell it (a key the warm-up had not reached, a collection a removal may have emptied, Pika 4.0's deadline second), by how the look-up ended: resolved (the entry was decided with the answer), written_again (another entry on the key came before the answer's position), superseded (written again, first by a command that redefines the key on both sides: DEL, FLUSHDB, or after a write on a string an unconditional SET-family write; the entry passes and is not unknown_key), ttl_reset (written again, first by a plain EXPIRE: the entry passes as unknown_key, and what it leaves on a late replica lasts at most until that TTL runs out), failed, timeout, behind (the link replays history far behind the master: writes up to the answer's position are decided without look-ups), outlived (the answer came after a TTL that decides it may have run out, e.g. a look-up of a backlog the master is seconds past); all but resolved and superseded pass the entry as unknown_key. The Redis relay keeps it at 0."),
    ("pika_ttl_proxy_state_write_bytes_total", "counter", "",
     "Bytes of offset-map state written to the state directory (written before the replication data they describe is sent, so they survive a crash of the proxy)."),
    ("pika_ttl_proxy_expiry_table_keys", "gauge", "",
     "Entries in the expiry tables of all streaming sessions (and, for Pika, all their DBs), summed (volatile keys and existence markers)."),
    ("pika_ttl_proxy_expiry_table_complete", "gauge", "",
     "1 when every streaming session (for Pika, every DB of each) knows every key's expiry (after a scanned full sync or warm-up); 1 with no session."),
    ("pika_ttl_proxy_offset_map_points", "gauge", "replica",
     "Points in the replica's offset-translation map."),
    ("pika_ttl_proxy_replica_disconnects_total", "counter", "reason",
     "Replica connections that ended, by reason (replica_closed, shutdown, upstream_closed, upstream_io, upstream_protocol, upstream_unreachable, upstream_timeout, master_error, downstream_io, downstream_protocol, handshake_timeout, replica_timeout, state_write_failed)."),
    ("pika_ttl_proxy_family_enabled", "gauge", "family",
     "1 when rewriting of the family is switched on."),
];

/// Buckets for the per-entry latency histogram (seconds): 100 ns … 10 ms.
const ENTRY_BUCKETS: &[f64] = &[
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2,
];

/// The hold-time histogram's name (recorded by both relays).
pub const HOLD_SECONDS: &str = names::HOLD_SECONDS;

/// Buckets for the hold-time histogram (seconds): 10 µs … 1 s, with the 0.2 ms latency budget
/// as a bound of its own.
const HOLD_BUCKETS: &[f64] = &[
    1e-5, 2.5e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 1e-1, 1.0,
];

/// The state-write histogram's name (recorded by both relays' state writers).
pub const STATE_WRITE_SECONDS: &str = names::STATE_WRITE_SECONDS;

/// Buckets for the state-write histogram (seconds): 100 µs … 10 s.
const STATE_WRITE_BUCKETS: &[f64] = &[1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 10.0];

/// Install the global recorder and describe every metric. Call once per process.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(names::ENTRY_DURATION.into()), ENTRY_BUCKETS)
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(Matcher::Full(HOLD_SECONDS.into()), HOLD_BUCKETS)
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(
            Matcher::Full(STATE_WRITE_SECONDS.into()),
            STATE_WRITE_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    for (name, kind, _, help) in METRICS {
        match *kind {
            "counter" => describe_counter!(*name, *help),
            "gauge" if name.ends_with("_bytes") => describe_gauge!(*name, Unit::Bytes, *help),
            "gauge" if name.ends_with("_seconds") => describe_gauge!(*name, Unit::Seconds, *help),
            "gauge" => describe_gauge!(*name, *help),
            _ => describe_histogram!(*name, Unit::Seconds, *help),
        }
    }
    Ok(handle)
}

/// Sum of `pika_ttl_proxy_entries_total` per (family, outcome) read back from a rendering, for
/// the admin API's `/families` view.
pub fn entry_counts(rendered: &str) -> Vec<(String, String, u64)> {
    let mut out: Vec<(String, String, u64)> = Vec::new();
    for line in rendered.lines() {
        let Some(rest) = line.strip_prefix("pika_ttl_proxy_entries_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        let (Some(family), Some(outcome)) = (label("family"), label("outcome")) else {
            continue;
        };
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        match out
            .iter_mut()
            .find(|(f, o, _)| *f == family && *o == outcome)
        {
            Some(entry) => entry.2 += n,
            None => out.push((family, outcome, n)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn every_metric_has_the_prefix_and_a_unit_suffix_when_needed() {
        for (name, kind, _, help) in METRICS {
            assert!(name.starts_with(PREFIX), "{name}");
            assert!(!help.is_empty());
            if *kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
    }

    fn names_in(rendered: &str) -> std::collections::BTreeSet<String> {
        rendered
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(|name| {
                // A histogram renders as its `_bucket`, `_sum` and `_count` series.
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|base| {
                        METRICS
                            .iter()
                            .any(|(n, kind, ..)| n == base && *kind == "histogram")
                    });
                base.unwrap_or(name).to_string()
            })
            .collect()
    }

    fn documented() -> (String, std::collections::BTreeSet<String>) {
        let docs = include_str!("../docs/metrics.md");
        let names = docs
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_string)
            .collect();
        (docs.to_string(), names)
    }

    #[test]
    fn the_catalogue_the_docs_and_both_relays_agree() {
        let (docs, documented) = documented();
        let catalogued: std::collections::BTreeSet<String> =
            METRICS.iter().map(|(n, ..)| n.to_string()).collect();
        assert_eq!(catalogued, documented, "src/metrics.rs vs docs/metrics.md");
        for value in FULL_SYNC_REASONS
            .iter()
            .chain(DISCONNECT_REASONS)
            .chain(["upstream", "downstream"].iter())
        {
            assert!(docs.contains(&format!("`{value}`")), "docs lack `{value}`");
        }
        // What each relay creates at start-up: the same names, all documented.
        let render = |dialect: &'static str| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::with_local_recorder(&recorder, || register_zeroes(dialect));
            handle.render()
        };
        let (redis, pika) = (render("redis"), render("pika"));
        assert_eq!(names_in(&redis), names_in(&pika));
        for name in names_in(&redis) {
            assert!(documented.contains(&name), "{name} is not documented");
        }
        assert!(redis.contains(r#"pika_ttl_proxy_at_risk_total{family="expire"} 0"#));
        assert!(pika
            .contains(r#"pika_ttl_proxy_protocol_errors_total{side="upstream",kind="frame"} 0"#));
    }

    /// The relays name metrics and label values only through this module: their sources hold
    /// no metric name, and every reason or kind they pass is in the catalogue.
    #[test]
    fn relay_sources_use_only_catalogued_names_and_values() {
        let sources = [
            include_str!("pika_relay/stats.rs"),
            include_str!("pika_relay/session.rs"),
            include_str!("pika_relay/link/mod.rs"),
            include_str!("pika_relay/passthrough.rs"),
            include_str!("redis_relay/stats.rs"),
            include_str!("redis_relay/session.rs"),
            include_str!("redis_relay/upstream.rs"),
            include_str!("redis_relay/mod.rs"),
        ];
        let literal_after = |text: &str, call: &str| -> Vec<String> {
            text.match_indices(call)
                .filter_map(|(at, _)| {
                    // The literal within the call's first parentheses, if any.
                    let args = text[at + call.len()..].split(')').next()?;
                    let rest = args.split_once('"')?.1;
                    Some(rest.split('"').next()?.to_string())
                })
                .collect()
        };
        for text in sources {
            let code = text.split("#[cfg(test)]").next().unwrap_or(text);
            assert!(
                !code.contains("\"pika_ttl_proxy_"),
                "a metric name outside the catalogue"
            );
            for kind in literal_after(code, "stats::protocol_error(Side::") {
                assert!(PROTOCOL_ERROR_KINDS.contains(&kind.as_str()), "kind {kind}");
            }
            // The Redis link's endings are typed (`EndReason`), whose labels its own test checks.
            for reason in literal_after(code, "stats::disconnect(") {
                assert!(
                    DISCONNECT_REASONS.contains(&reason.as_str()),
                    "reason {reason}"
                );
            }
        }
    }

    #[test]
    fn entry_counts_sum_over_dialects() {
        let text = "pika_ttl_proxy_entries_total{dialect=\"redis\",family=\"hash\",outcome=\"rewritten\"} 3\n\
                    pika_ttl_proxy_entries_total{dialect=\"pika\",family=\"hash\",outcome=\"rewritten\"} 2\n\
                    other 1\n";
        assert_eq!(
            entry_counts(text),
            vec![("hash".to_string(), "rewritten".to_string(), 5)]
        );
    }
}
