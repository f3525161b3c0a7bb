//! Replica lag against the master's binlog tip.
//!
//! A Pika master sends a replica at most one window of unacknowledged items, so while a
//! replica is stopped the relay sees only that window: lag measured against what the relay
//! received stays at one batch however far the master moves on, and ends when the master drops
//! the replica (20 s). So one task per relay reads the master's tip on its client port every
//! second (`INFO replication` → `db0:binlog_offset=<filenum> <offset>`), and each replica's
//! lag is the tip minus the position the replica acknowledged:
//!
//! * bytes: newest tip (or newest position the link saw, if larger) minus the acked position;
//! * seconds: how long ago the poller first saw a tip the replica has still not acknowledged
//!   (0 when it has acknowledged every tip seen). It grows for as long as the replica stays
//!   behind, across the master dropping it and across reconnects, since the trackers are kept
//!   per replica name and DB, not per connection.
//!
//! Without a tip (INFO not answered), the link's own view is used: the newest position it saw
//! and the age of its oldest unacknowledged item.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client_port::{parse_binlog_offset, Client};
use super::position::lag_bytes;
use super::registry::lock;
use crate::pika::messages::BinlogPosition;
use crate::replica_series::ReplicaSeries;

/// How often the tip is read.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for one `INFO` answer (connect included).
const POLL_TIMEOUT: Duration = Duration::from_secs(3);
/// At most one "cannot read the tip" warning per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// Tips kept per tracker while its replica is behind (one per poll): past it every other one
/// is dropped, so a replica behind for hours costs a bounded amount and the oldest is kept.
const MAX_BEHIND: usize = 4096;

/// Lag state of one DB of one replica.
#[derive(Debug, Default)]
pub(crate) struct DbLag {
    /// Master position the replica acknowledged; `None` until its link first streamed (before
    /// that the replica's position is not known).
    acked: Option<BinlogPosition>,
    /// Newest master position the link itself saw.
    seen: BinlogPosition,
    /// Age of the link's oldest unacknowledged item (seconds, by its exec time).
    inflight_seconds: f64,
    /// Newest tip the poller read.
    tip: Option<BinlogPosition>,
    /// Tips beyond `acked`, oldest first, with when the poller read them.
    behind: VecDeque<(BinlogPosition, Instant)>,
}

impl DbLag {
    /// The replica acknowledged everything up to master position `acked`.
    pub(crate) fn set_acked(&mut self, acked: BinlogPosition) {
        self.acked = Some(acked);
        while self.behind.front().is_some_and(|(tip, _)| *tip <= acked) {
            self.behind.pop_front();
        }
    }

    /// What the link itself knows: the newest position it saw and the age of its oldest
    /// unacknowledged item.
    pub(crate) fn set_link_view(&mut self, seen: BinlogPosition, inflight_seconds: f64) {
        self.seen = self.seen.max(seen);
        self.inflight_seconds = inflight_seconds;
    }

    fn observe_tip(&mut self, tip: BinlogPosition, at: Instant) {
        self.tip = Some(self.tip.map_or(tip, |t| t.max(tip)));
        let Some(acked) = self.acked else {
            return;
        };
        if tip > acked && self.behind.back().is_none_or(|(newest, _)| tip > *newest) {
            self.behind.push_back((tip, at));
            if self.behind.len() > MAX_BEHIND {
                let oldest = self.behind.pop_front();
                let thinned: VecDeque<_> = self.behind.drain(..).step_by(2).collect();
                self.behind = thinned;
                if let Some(o) = oldest {
                    self.behind.push_front(o);
                }
            }
        }
    }

    /// Lag in bytes and seconds at `now`.
    pub(crate) fn lag(&self, now: Instant, file_size: u64) -> (u64, f64) {
        let Some(acked) = self.acked else {
            return (0, 0.0);
        };
        let newest = self.tip.map_or(self.seen, |t| t.max(self.seen));
        let bytes = lag_bytes(newest, acked, file_size);
        if bytes == 0 {
            return (0, 0.0);
        }
        let behind_since = self
            .behind
            .iter()
            .find(|(tip, _)| *tip > acked)
            .map_or(0.0, |(_, at)| {
                now.saturating_duration_since(*at).as_secs_f64()
            });
        (bytes, behind_since.max(self.inflight_seconds))
    }
}

/// One DB's lag state, shared by its link and the poller.
pub(crate) type Tracker = Arc<Mutex<DbLag>>;

/// Every tracker of one relay, by (replica name, DB key).
#[derive(Clone, Debug, Default)]
pub(crate) struct LagBoard {
    trackers: Arc<Mutex<HashMap<(String, String), Tracker>>>,
}

/// The `INFO` name of a DB key (`db0:3` → `db0`).
fn info_db(db: &str) -> &str {
    db.split(':').next().unwrap_or(db)
}

impl LagBoard {
    /// The tracker of `replica`'s DB `db`: the one its previous link left, if any, so the
    /// lag of a replica the master dropped keeps counting when it comes back.
    pub(crate) fn tracker(&self, replica: &str, db: &str) -> Tracker {
        lock(&self.trackers)
            .entry((replica.to_string(), db.to_string()))
            .or_default()
            .clone()
    }

    /// The DBs whose tip is wanted (`INFO` names).
    fn dbs(&self) -> Vec<String> {
        let mut dbs: Vec<String> = lock(&self.trackers)
            .keys()
            .map(|(_, db)| info_db(db).to_string())
            .collect();
        dbs.sort();
        dbs.dedup();
        dbs
    }

    fn observe(&self, tips: &HashMap<String, BinlogPosition>, at: Instant) {
        for ((_, db), tracker) in lock(&self.trackers).iter() {
            if let Some(tip) = tips.get(info_db(db)) {
                lock(tracker).observe_tip(*tip, at);
            }
        }
    }

    /// Publishes every replica's lag (its most lagging DB) and forgets trackers whose replica
    /// has no link and no series any more.
    fn publish(&self, series: &ReplicaSeries, file_size: u64) {
        let now = Instant::now();
        let mut per_replica: HashMap<String, (u64, f64)> = HashMap::new();
        let mut trackers = lock(&self.trackers);
        trackers.retain(|(replica, _), tracker| {
            // Held only here: no link uses it.
            Arc::strong_count(tracker) > 1 || series.contains(replica)
        });
        for ((replica, _), tracker) in trackers.iter() {
            let (bytes, seconds) = lock(tracker).lag(now, file_size);
            let entry = per_replica.entry(replica.clone()).or_insert((0, 0.0));
            entry.0 = entry.0.max(bytes);
            entry.1 = entry.1.max(seconds);
        }
        drop(trackers);
        for (replica, (bytes, seconds)) in per_replica {
            series.set_lag(&replica, bytes, seconds);
        }
    }
}

/// Reads the tip of every DB in `dbs` with one `INFO replication`.
async fn read_tips(
    client: &mut Option<Client>,
    master: SocketAddr,
    password: Option<&str>,
    dbs: &[String],
) -> std::io::Result<HashMap<String, BinlogPosition>> {
    if client.is_none() {
        let mut fresh = Client::connect(master).await?;
        if let Some(pw) = password {
            fresh.call(&[b"AUTH", pw.as_bytes()]).await?;
        }
        *client = Some(fresh);
    }
    let Some(c) = client.as_mut() else {
        return Err(std::io::Error::other("no connection"));
    };
    let text = c.info_replication().await?;
    let tips: HashMap<String, BinlogPosition> = dbs
        .iter()
        .filter_map(|db| Some((db.clone(), parse_binlog_offset(&text, db)?)))
        .collect();
    if tips.is_empty() {
        return Err(std::io::Error::other(
            "INFO replication names no binlog_offset for the replicated DBs",
        ));
    }
    Ok(tips)
}

/// The relay's tip poller: every [`POLL_INTERVAL`] while any replica has a tracker, reads the
/// master's tips and publishes every replica's lag, until `cancel`.
pub(crate) async fn run(
    master: SocketAddr,
    password: Option<String>,
    board: LagBoard,
    series: Arc<ReplicaSeries>,
    file_size: u64,
    cancel: CancellationToken,
) {
    let mut client: Option<Client> = None;
    let mut warn = crate::logging::Throttle::new(WARN_INTERVAL);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let dbs = board.dbs();
        if dbs.is_empty() {
            // No replica: no connection held open to the master.
            client = None;
            continue;
        }
        let read = tokio::time::timeout(
            POLL_TIMEOUT,
            read_tips(&mut client, master, password.as_deref(), &dbs),
        )
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("no answer in time")));
        match read {
            Ok(tips) => board.observe(&tips, Instant::now()),
            Err(e) => {
                client = None;
                if let Some(failures) = warn.admit(1) {
                    tracing::warn!(
                        %master, failures,
                        "cannot read the master's binlog tip (INFO replication on its client port): {e}; replica lag counts only what the relay received"
                    );
                }
            }
        }
        board.publish(&series, file_size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 100 * 1024 * 1024;

    fn p(offset: u64) -> BinlogPosition {
        BinlogPosition::new(0, offset)
    }

    #[test]
    fn lag_grows_against_the_tip_while_the_replica_does_not_ack() {
        let t0 = Instant::now();
        let mut lag = DbLag::default();
        // Unknown position: no lag claimed.
        lag.observe_tip(p(500), t0);
        assert_eq!(lag.lag(t0, SIZE), (0, 0.0));
        lag.set_acked(p(500));
        lag.set_link_view(p(600), 0.0);
        assert_eq!(lag.lag(t0, SIZE).0, 100);
        // The master moves on; the replica acks nothing (the relay sees only its window).
        lag.observe_tip(p(900), t0 + Duration::from_secs(1));
        lag.observe_tip(p(1500), t0 + Duration::from_secs(2));
        let (bytes, secs) = lag.lag(t0 + Duration::from_secs(30), SIZE);
        assert_eq!(bytes, 1000);
        assert!((secs - 29.0).abs() < 1e-6, "{secs}");
        // It acks past the first tip: behind since the second one.
        lag.set_acked(p(1000));
        let (bytes, secs) = lag.lag(t0 + Duration::from_secs(30), SIZE);
        assert_eq!(bytes, 500);
        assert!((secs - 28.0).abs() < 1e-6, "{secs}");
        lag.set_acked(p(1500));
        assert_eq!(lag.lag(t0 + Duration::from_secs(30), SIZE), (0, 0.0));
    }

    #[test]
    fn the_oldest_tip_survives_thinning() {
        let t0 = Instant::now();
        let mut lag = DbLag::default();
        lag.set_acked(p(0));
        for i in 1..=(MAX_BEHIND as u64 * 3) {
            lag.observe_tip(p(i), t0 + Duration::from_secs(i));
        }
        assert!(lag.behind.len() <= MAX_BEHIND);
        let (_, secs) = lag.lag(t0 + Duration::from_secs(MAX_BEHIND as u64 * 3 + 1), SIZE);
        assert!((secs - (MAX_BEHIND as f64 * 3.0)).abs() < 1e-6, "{secs}");
    }

    #[test]
    fn trackers_outlive_their_link_only_while_the_replica_has_series() {
        let board = LagBoard::default();
        let series = Arc::new(ReplicaSeries::new(Duration::from_millis(50)));
        let handle = series.attach("r:1");
        let tracker = board.tracker("r:1", "db0");
        lock(&tracker).set_acked(p(100));
        let mut tips = HashMap::new();
        tips.insert("db0".to_string(), p(300));
        board.observe(&tips, Instant::now());
        board.publish(&series, SIZE);
        assert!(series.render().contains("lag_bytes{replica=\"r:1\"} 200"));
        // The link closed: the lag keeps being published while the series stay.
        drop(tracker);
        drop(handle);
        tips.insert("db0".to_string(), p(700));
        board.observe(&tips, Instant::now());
        board.publish(&series, SIZE);
        assert!(series.render().contains("lag_bytes{replica=\"r:1\"} 600"));
        assert_eq!(board.dbs(), vec!["db0".to_string()]);
        std::thread::sleep(Duration::from_millis(80));
        board.publish(&series, SIZE);
        assert!(board.dbs().is_empty());
    }
}
