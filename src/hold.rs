//! The hold clock: how long the proxy keeps the master's data before the replica's socket has
//! all of it, one sample per read of the master's stream, in
//! `pika_ttl_proxy_hold_seconds`.
//!
//! A read is done once every byte queued for the replica up to the end of its output has been
//! written, so a read that lands while older output is still waiting (a slow replica) is
//! charged for that wait too: the figure is the latency the proxy adds, not only its CPU time.

use metrics::{histogram, Histogram};
use std::collections::VecDeque;
use std::time::Instant;

use crate::metrics::HOLD_SECONDS;

/// Reads whose output is not fully written yet; beyond this many, a new read joins the newest
/// one (keeping that one's older start, so no wait is under-reported).
const MAX_PENDING_READS: usize = 1024;

/// Per-link hold clock; see the module docs.
#[derive(Debug)]
pub struct HoldClock {
    /// (cumulative output bytes that complete the read, when the read arrived).
    pending: VecDeque<(u64, Instant)>,
    /// Output bytes written to the replica so far.
    written: u64,
    histogram: Histogram,
}

impl Default for HoldClock {
    fn default() -> Self {
        Self::new()
    }
}

impl HoldClock {
    /// A clock with nothing pending, recording into the global histogram.
    pub fn new() -> Self {
        HoldClock {
            pending: VecDeque::new(),
            written: 0,
            histogram: histogram!(HOLD_SECONDS),
        }
    }

    /// A read that arrived at `arrived` has been processed; `queued` output bytes are now
    /// waiting for the replica, its own last. A read that produced nothing to send is not
    /// counted.
    pub fn processed(&mut self, arrived: Instant, queued: usize) {
        if queued == 0 {
            return;
        }
        let done_at = self.written + queued as u64;
        let full = self.pending.len() >= MAX_PENDING_READS;
        match self.pending.back_mut() {
            Some((end, _)) if *end >= done_at => {}
            Some((end, _)) if full => *end = done_at,
            _ => self.pending.push_back((done_at, arrived)),
        }
    }

    /// A read that arrived at `arrived`, was decided in slices and produced output has been
    /// processed; `queued` output bytes are now waiting, its own last. Its first slices may have
    /// been written already: with nothing left waiting, the read is done now and counted now.
    pub fn processed_in_slices(&mut self, arrived: Instant, queued: usize) {
        if queued == 0 {
            self.histogram.record(arrived.elapsed().as_secs_f64());
            return;
        }
        self.processed(arrived, queued);
    }

    /// `n` bytes were written to the replica's socket.
    pub fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some(&(end, arrived)) = self.pending.front() {
            if end > self.written {
                break;
            }
            self.histogram
                .record(now.saturating_duration_since(arrived).as_secs_f64());
            self.pending.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use std::time::Duration;

    fn count(rendered: &str) -> u64 {
        rendered
            .lines()
            .find_map(|l| l.strip_prefix("pika_ttl_proxy_hold_seconds_count "))
            .map_or(0, |n| n.trim().parse().unwrap())
    }

    #[test]
    fn a_read_is_sampled_once_its_output_is_written_and_waits_count() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let mut clock = HoldClock::new();
            let first = Instant::now() - Duration::from_millis(30);
            clock.processed(first, 100);
            // A second read lands behind the first one's output: 100 + 50 bytes queued.
            clock.processed(Instant::now(), 150);
            clock.processed(Instant::now(), 0);
            clock.wrote(60);
            assert_eq!(count(&handle.render()), 0);
            clock.wrote(40);
            assert_eq!(count(&handle.render()), 1);
            let rendered = handle.render();
            let sum: f64 = rendered
                .lines()
                .find_map(|l| l.strip_prefix("pika_ttl_proxy_hold_seconds_sum "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!(sum >= 0.030, "the first read waited 30 ms: {sum}");
            clock.wrote(50);
            assert_eq!(count(&handle.render()), 2);
            assert!(clock.pending.is_empty());
        });
    }

    /// A read sent in slices whose output is all written by the time its last slice is decided
    /// is counted then, once; while output waits it is counted when that is written.
    #[test]
    fn a_read_sent_in_slices_is_sampled_once() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let mut clock = HoldClock::new();
            // First slices written as they were decided; the last one added nothing.
            clock.wrote(80);
            clock.processed_in_slices(Instant::now(), 0);
            assert_eq!(count(&handle.render()), 1);
            // The next read's last slice is still waiting.
            clock.processed_in_slices(Instant::now(), 40);
            assert_eq!(count(&handle.render()), 1);
            clock.wrote(40);
            assert_eq!(count(&handle.render()), 2);
            assert!(clock.pending.is_empty());
        });
    }

    #[test]
    fn pending_reads_are_bounded_and_keep_the_oldest_start() {
        let recorder = PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            let mut clock = HoldClock::new();
            let start = Instant::now();
            for i in 1..=(MAX_PENDING_READS + 10) {
                clock.processed(Instant::now(), i);
            }
            assert_eq!(clock.pending.len(), MAX_PENDING_READS);
            assert_eq!(
                clock.pending.back().map(|p| p.0),
                Some((MAX_PENDING_READS + 10) as u64)
            );
            assert!(clock.pending.front().is_some_and(|p| p.1 >= start));
            clock.wrote(MAX_PENDING_READS + 10);
            assert!(clock.pending.is_empty());
        });
    }
}
