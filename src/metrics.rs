//! The Prometheus recorder and the description of every metric the proxy exports.
//!
//! Relays record through the `metrics` macros under the names listed here (see
//! `docs/metrics.md`); this module installs the recorder (without its own HTTP listener: the
//! admin API serves the rendering) with explicit histogram buckets, and registers HELP texts.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Prefix of every metric name.
pub const PREFIX: &str = "pika_ttl_proxy_";

/// `(name, type, labels, help)` of every metric, in the order of the README's reference.
pub const METRICS: &[(&str, &str, &str, &str)] = &[
    ("pika_ttl_proxy_entries_total", "counter", "dialect, family, outcome",
     "Entries seen in the replication stream, by family and by what the engine did (rewritten, passed, disabled, unknown_key, unknown_command, malformed)."),
    ("pika_ttl_proxy_at_risk_total", "counter", "family",
     "Entries that extend or remove the TTL of a key a late replica may already have dropped (the known limit): counted and logged, not repaired."),
    ("pika_ttl_proxy_replica_lag_bytes", "gauge", "replica",
     "Master offset received by the proxy minus the offset the replica acknowledged (translated to master space)."),
    ("pika_ttl_proxy_replica_lag_seconds", "gauge", "replica",
     "Age of the oldest upstream entry the replica has not acknowledged; 0 when caught up."),
    ("pika_ttl_proxy_link_up", "gauge", "side, replica",
     "1 while the upstream (to the master) or downstream (to the replica) link of a replica session is up."),
    ("pika_ttl_proxy_full_syncs_total", "counter", "reason",
     "Full resynchronisations the proxy gave a replica, by reason (unknown_id, not_a_boundary, upstream_full, map_corrupt, …)."),
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
     "Time to write and sync one batch of offset-map state to the state directory (a slow disk shows here first; replica ACKs wait for these writes)."),
    ("pika_ttl_proxy_expiry_table_keys", "gauge", "",
     "Entries in the expiry tables of streaming sessions (volatile keys and existence markers)."),
    ("pika_ttl_proxy_expiry_table_complete", "gauge", "",
     "1 when every streaming session knows every key's expiry (after a scanned full sync or warm-up)."),
    ("pika_ttl_proxy_offset_map_points", "gauge", "replica",
     "Points in the replica's offset-translation map."),
    ("pika_ttl_proxy_replica_disconnects_total", "counter", "reason",
     "Replica connections closed by the proxy, by reason."),
    ("pika_ttl_proxy_family_enabled", "gauge", "family",
     "1 when rewriting of the family is switched on."),
];

/// Buckets for the per-entry latency histogram (seconds): 100 ns … 10 ms.
const ENTRY_BUCKETS: &[f64] = &[
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2,
];

/// The hold-time histogram's name (recorded by both relays).
pub const HOLD_SECONDS: &str = "pika_ttl_proxy_hold_seconds";

/// Buckets for the hold-time histogram (seconds): 10 µs … 1 s, with the 0.2 ms latency budget
/// as a bound of its own.
const HOLD_BUCKETS: &[f64] = &[
    1e-5, 2.5e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 1e-1, 1.0,
];

/// The state-write histogram's name (recorded by both relays' state writers).
pub const STATE_WRITE_SECONDS: &str = "pika_ttl_proxy_state_write_seconds";

/// Buckets for the state-write histogram (seconds): 100 µs … 10 s.
const STATE_WRITE_BUCKETS: &[f64] = &[1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 10.0];

/// Install the global recorder and describe every metric. Call once per process.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("pika_ttl_proxy_entry_duration_seconds".into()),
            ENTRY_BUCKETS,
        )
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
