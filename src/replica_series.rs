//! The per-replica series (`link_up`, `replica_lag_bytes`, `replica_lag_seconds`,
//! `offset_map_points`), kept apart from the `metrics` recorder and rendered after it.
//!
//! Why not through the `metrics` facade: it has no way to remove one labelled series, and the
//! exporter's only removal (`idle_timeout`) applies to every metric of a kind and keys on "not
//! updated lately", not on "the replica left": every process-wide gauge would need re-setting
//! on a timer, and a series would outlive its replica or vanish under it depending on who last
//! touched it. Series that describe things that come and go are what Prometheus' client
//! guidelines give a collector of their own for: this module holds one entry per replica name
//! while a link of that replica is attached, keeps it for a grace period after the last one
//! left (`link_up` 0, lag still updated by whoever computes it), and then drops it, so probes
//! and reconnects cannot pile up series and the link-down alert has time to fire.
//!
//! A link attaches only once the replica has named itself (Pika: MetaSync; Redis: the sync
//! request after its handshake), so a connection that never completes a handshake creates
//! nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::metrics::{names, Side, METRICS};

/// How long a replica's series stay after its last link closed, unless configured: longer than
/// the shipped alerts' `for:` (link down 1 m, lag 5 m), so they can fire for a replica that
/// left; short enough that a replica gone for good stops being shown.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10 * 60);

/// Environment variable overriding [`DEFAULT_GRACE`] (whole seconds; tests use a few).
pub const GRACE_ENV: &str = "PIKA_TTL_PROXY_SERIES_GRACE_SECS";

#[derive(Debug, Clone, Copy, PartialEq)]
struct Values {
    /// `link_up` per [`Side`] (upstream, downstream).
    up: [f64; 2],
    lag_bytes: f64,
    lag_seconds: f64,
    map_points: f64,
}

/// Reads one gauge's value out of an entry.
type ValueOf = fn(&Values) -> f64;

#[derive(Debug)]
struct Entry {
    /// Links of this replica currently attached.
    links: usize,
    /// When the last link left (while `links == 0`).
    left: Option<Instant>,
    values: Values,
}

#[derive(Debug)]
struct State {
    grace: Duration,
    entries: BTreeMap<String, Entry>,
}

/// The per-replica series of one process.
#[derive(Debug)]
pub struct ReplicaSeries {
    state: Mutex<State>,
}

static GLOBAL: LazyLock<Arc<ReplicaSeries>> =
    LazyLock::new(|| Arc::new(ReplicaSeries::new(DEFAULT_GRACE)));

/// The process's registry (the relays record into it, the admin API renders it).
pub fn global() -> Arc<ReplicaSeries> {
    GLOBAL.clone()
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Upstream => 0,
        Side::Downstream => 1,
    }
}

impl ReplicaSeries {
    /// An empty registry whose entries stay `grace` after their replica left.
    pub fn new(grace: Duration) -> Self {
        ReplicaSeries {
            state: Mutex::new(State {
                grace,
                entries: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the map consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the grace period (at start-up).
    pub fn set_grace(&self, grace: Duration) {
        self.lock().grace = grace;
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.lock().grace
    }

    /// A link of replica `name` is attached (both sides up) until the handle is dropped.
    pub fn attach(self: &Arc<Self>, name: &str) -> ReplicaHandle {
        let mut st = self.lock();
        let entry = st.entries.entry(name.to_string()).or_insert(Entry {
            links: 0,
            left: None,
            values: Values {
                up: [1.0, 1.0],
                lag_bytes: 0.0,
                lag_seconds: 0.0,
                map_points: 0.0,
            },
        });
        entry.links += 1;
        entry.left = None;
        entry.values.up = [1.0, 1.0];
        ReplicaHandle {
            series: self.clone(),
            name: name.to_string(),
        }
    }

    fn detach(&self, name: &str) {
        let mut st = self.lock();
        if let Some(entry) = st.entries.get_mut(name) {
            entry.links = entry.links.saturating_sub(1);
            if entry.links == 0 {
                entry.values.up = [0.0, 0.0];
                entry.left = Some(Instant::now());
            }
        }
    }

    /// Sets a replica's lag, if it has series (a replica that left keeps its entry, and its
    /// lag keeps being reported, until the grace period ends).
    pub fn set_lag(&self, name: &str, bytes: u64, seconds: f64) {
        if let Some(e) = self.lock().entries.get_mut(name) {
            e.values.lag_bytes = bytes as f64;
            e.values.lag_seconds = if seconds.is_finite() { seconds } else { 0.0 };
        }
    }

    /// Sets a replica's offset-map size, if it has series.
    pub fn set_map_points(&self, name: &str, points: usize) {
        if let Some(e) = self.lock().entries.get_mut(name) {
            e.values.map_points = points as f64;
        }
    }

    /// Whether `name` has series (attached, or within the grace period).
    pub fn contains(&self, name: &str) -> bool {
        let mut st = self.lock();
        Self::expire(&mut st, Instant::now());
        st.entries.contains_key(name)
    }

    /// Names with series, in order.
    pub fn names(&self) -> Vec<String> {
        let mut st = self.lock();
        Self::expire(&mut st, Instant::now());
        st.entries.keys().cloned().collect()
    }

    fn expire(st: &mut State, now: Instant) {
        let grace = st.grace;
        st.entries.retain(|_, e| match e.left {
            Some(left) => now.saturating_duration_since(left) < grace,
            None => true,
        });
    }

    /// The series in Prometheus' text format (HELP and TYPE from the catalogue), after
    /// dropping entries whose grace period is over.
    pub fn render(&self) -> String {
        let mut st = self.lock();
        Self::expire(&mut st, Instant::now());
        let mut out = String::new();
        if st.entries.is_empty() {
            return out;
        }
        let help = |name: &str| {
            METRICS
                .iter()
                .find(|(n, ..)| *n == name)
                .map_or("", |(_, _, _, h)| *h)
        };
        let header = |out: &mut String, name: &str| {
            let _ = writeln!(out, "# HELP {name} {}", help(name));
            let _ = writeln!(out, "# TYPE {name} gauge");
        };
        header(&mut out, names::LINK_UP);
        for (name, e) in &st.entries {
            for side in Side::ALL {
                let _ = writeln!(
                    out,
                    "{}{{side=\"{}\",replica=\"{}\"}} {}",
                    names::LINK_UP,
                    side.label(),
                    escape(name),
                    e.values.up[side_index(side)]
                );
            }
        }
        let per_replica: [(&str, ValueOf); 3] = [
            (names::LAG_BYTES, |v| v.lag_bytes),
            (names::LAG_SECONDS, |v| v.lag_seconds),
            (names::MAP_POINTS, |v| v.map_points),
        ];
        for (metric, value) in per_replica {
            out.push('\n');
            header(&mut out, metric);
            for (name, e) in &st.entries {
                let _ = writeln!(
                    out,
                    "{metric}{{replica=\"{}\"}} {}",
                    escape(name),
                    value(&e.values)
                );
            }
        }
        out.push('\n');
        out
    }
}

/// A label value in the exposition format: the replica names itself, so its name is escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One attached link of a replica; dropping it detaches the link.
#[derive(Debug)]
pub struct ReplicaHandle {
    series: Arc<ReplicaSeries>,
    name: String,
}

impl ReplicaHandle {
    /// The replica's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets `link_up` for one side of this replica.
    pub fn set_link_up(&self, side: Side, up: bool) {
        if let Some(e) = self.series.lock().entries.get_mut(&self.name) {
            e.values.up[side_index(side)] = if up { 1.0 } else { 0.0 };
        }
    }

    /// Sets this replica's lag.
    pub fn set_lag(&self, bytes: u64, seconds: f64) {
        self.series.set_lag(&self.name, bytes, seconds);
    }

    /// Sets this replica's offset-map size.
    pub fn set_map_points(&self, points: usize) {
        self.series.set_map_points(&self.name, points);
    }
}

impl Drop for ReplicaHandle {
    fn drop(&mut self) {
        self.series.detach(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn series_live_while_attached_then_for_the_grace_period_only() {
        let series = Arc::new(ReplicaSeries::new(Duration::from_millis(200)));
        assert_eq!(series.render(), "");
        let first = series.attach("10.0.0.1:9221");
        first.set_lag(912, 1.5);
        first.set_map_points(3);
        let text = series.render();
        assert_eq!(lines(&text).len(), 5, "{text}");
        assert!(text
            .contains("pika_ttl_proxy_link_up{side=\"upstream\",replica=\"10.0.0.1:9221\"} 1\n"));
        assert!(text.contains("pika_ttl_proxy_replica_lag_bytes{replica=\"10.0.0.1:9221\"} 912\n"));
        assert!(text.contains("# TYPE pika_ttl_proxy_replica_lag_seconds gauge\n"));
        // A second link of the same replica (a reconnect racing the old socket's close).
        let second = series.attach("10.0.0.1:9221");
        drop(first);
        assert!(series
            .render()
            .contains("downstream\",replica=\"10.0.0.1:9221\"} 1"));
        drop(second);
        let text = series.render();
        assert!(
            text.contains("downstream\",replica=\"10.0.0.1:9221\"} 0"),
            "{text}"
        );
        // Whoever computes the lag of a replica that left keeps updating it in the grace period.
        series.set_lag("10.0.0.1:9221", 2000, 25.0);
        assert!(series
            .render()
            .contains("lag_seconds{replica=\"10.0.0.1:9221\"} 25"));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(series.render(), "");
        assert!(!series.contains("10.0.0.1:9221"));
        // Nothing is recreated by a late update.
        series.set_lag("10.0.0.1:9221", 1, 1.0);
        assert_eq!(series.render(), "");
    }

    #[test]
    fn a_returning_replica_cancels_its_grace_period() {
        let series = Arc::new(ReplicaSeries::new(Duration::from_millis(100)));
        drop(series.attach("r:1"));
        let back = series.attach("r:1");
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(series.names(), vec!["r:1".to_string()]);
        assert!(series.render().contains("upstream\",replica=\"r:1\"} 1"));
        drop(back);
    }

    #[test]
    fn names_are_escaped() {
        let series = Arc::new(ReplicaSeries::new(DEFAULT_GRACE));
        let _h = series.attach("a\"b\\c\nd:1");
        assert!(series.render().contains("replica=\"a\\\"b\\\\c\\nd:1\"} 1"));
    }
}
