//! Per-batch counting of the engine's decisions, shared by both relays.
//!
//! A metrics macro with labels looks its series up in the registry on every call (hash, compare,
//! label copies); per entry that cost more than the engine itself. The relays count decisions
//! here with array increments and report each batch (a read, a BinlogSync response) in one go.

use metrics::{counter, histogram};

use crate::engine::Outcome;
use crate::families::Family;

use crate::metrics::names::{AT_RISK, ENTRIES, ENTRY_DURATION};
use crate::metrics::NO_FAMILY as NO_FAMILY_LABEL;

const OUTCOMES: [Outcome; 6] = Outcome::ALL;
const NO_FAMILY: usize = Family::ALL.len();

fn outcome_index(o: Outcome) -> usize {
    OUTCOMES.iter().position(|x| *x == o).unwrap_or(0)
}

/// Decisions of one batch, by family and outcome.
#[derive(Debug)]
pub struct EntryTally {
    dialect: &'static str,
    counts: [[u64; OUTCOMES.len()]; NO_FAMILY + 1],
    at_risk: [u64; NO_FAMILY + 1],
    entries: u64,
}

impl EntryTally {
    /// An empty tally whose entries are reported with label `dialect`.
    pub fn new(dialect: &'static str) -> Self {
        EntryTally {
            dialect,
            counts: [[0; OUTCOMES.len()]; NO_FAMILY + 1],
            at_risk: [0; NO_FAMILY + 1],
            entries: 0,
        }
    }

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
        if self.entries == 0 && self.at_risk.iter().all(|n| *n == 0) {
            return;
        }
        for (fi, row) in self.counts.iter().enumerate() {
            let family = Family::ALL.get(fi).map_or(NO_FAMILY_LABEL, |f| f.name());
            for (oi, n) in row.iter().enumerate() {
                if *n > 0 {
                    counter!(ENTRIES, "dialect" => self.dialect, "family" => family,
                        "outcome" => OUTCOMES[oi].name())
                    .increment(*n);
                }
            }
        }
        for (fi, n) in self.at_risk.iter().enumerate() {
            if *n > 0 {
                let family = Family::ALL.get(fi).map_or(NO_FAMILY_LABEL, |f| f.name());
                counter!(AT_RISK, "family" => family).increment(*n);
            }
        }
        if self.entries > 0 {
            histogram!(ENTRY_DURATION).record(elapsed_secs / self.entries as f64);
        }
        *self = EntryTally::new(self.dialect);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn a_batch_is_reported_once_per_series_and_reset() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let mut tally = EntryTally::new("pika");
            tally.count(Some(Family::StringCounter), Outcome::Rewritten);
            tally.count(Some(Family::StringCounter), Outcome::Rewritten);
            tally.count(None, Outcome::Passed);
            tally.at_risk(Some(Family::Expire));
            tally.flush(0.3);
            assert_eq!(tally.entries(), 0);
            // An empty batch reports nothing.
            tally.flush(1.0);
        });
        let text = handle.render();
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has(
                r#"pika_ttl_proxy_entries_total{dialect="pika",family="string-counter",outcome="rewritten"} 2"#
            ),
            "{text}"
        );
        assert!(has(
            r#"pika_ttl_proxy_entries_total{dialect="pika",family="none",outcome="passed"} 1"#
        ));
        assert!(has(r#"pika_ttl_proxy_at_risk_total{family="expire"} 1"#));
        // One duration sample: the per-entry mean of the one non-empty batch.
        assert!(
            has("pika_ttl_proxy_entry_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            has("pika_ttl_proxy_entry_duration_seconds_sum 0.09999999999999999")
                || has("pika_ttl_proxy_entry_duration_seconds_sum 0.1"),
            "{text}"
        );
    }
}
