//! The link's status as the rest of the relay reads it: its [`LinkStatus`] in the session
//! registry (the admin API and the readiness check read it), the replica's lag and offset-map
//! gauges, and the expiry-table gauges over every link. Refreshed when the link opens and on
//! each tick (the table gauges also when it closes), not per ack: it counts every shard of the
//! expiry table and formats the labels.

use std::time::Instant;

use super::{now_ms, Link};
use crate::pika_relay::config::WarmupMode;
use crate::pika_relay::link::lag_seconds;
use crate::pika_relay::registry::{lock, DbLinkStatus, LinkStatus, PikaRelayShared};
use crate::pika_relay::stats;

impl Link {
    pub(super) fn publish_status(&self) {
        let file_size = self.setup.cfg.binlog_file_size;
        let now = Instant::now();
        let now_ms = now_ms();
        let mut dbs: Vec<DbLinkStatus> = self
            .machine
            .dbs()
            .map(|(id, db)| {
                let (table_complete, table_keys) = db
                    .rewriter()
                    .map(|rw| (rw.table().is_complete(), rw.table().len()))
                    .unwrap_or((false, 0));
                let warmup = match (db.warming_up(), self.setup.cfg.warmup) {
                    (true, _) => "running",
                    (false, WarmupMode::Off) => "off",
                    (false, _) if table_complete => "done",
                    (false, _) => "failed",
                };
                let (lag_b, lag_s) = {
                    let mut lag = lock(&self.dbs[id.0].lag);
                    lag.set_link_view(db.master_latest(), lag_seconds(db.inflight(), now_ms));
                    lag.lag(now, file_size)
                };
                let points = db.map().points() + db.inflight().len();
                DbLinkStatus {
                    db: db.key().to_string(),
                    phase: db.phase().name(),
                    offset_map: db.map().name(),
                    offset_map_points: points,
                    table_complete,
                    table_keys,
                    warmup,
                    lag_bytes: lag_b,
                    lag_seconds: lag_s,
                    acked_master: db.acked_master().to_string(),
                    master_latest: db.master_latest().to_string(),
                }
            })
            .collect();
        dbs.sort_by(|a, b| a.db.cmp(&b.db));
        // One series per replica: its most lagging DB, and the points of all its DBs.
        let lag_b = dbs.iter().map(|d| d.lag_bytes).max().unwrap_or(0);
        let lag_s = dbs.iter().map(|d| d.lag_seconds).fold(0.0, f64::max);
        if let Some(series) = &self.series {
            // A reconnecting replica names itself before it names its DBs: until it does, its
            // gauges keep what its trackers said last (a lagging replica does not read 0).
            if !dbs.is_empty() {
                series.set_lag(lag_b, lag_s);
                series.set_map_points(dbs.iter().map(|d| d.offset_map_points).sum());
            }
        }
        self.setup.shared.sessions.update(LinkStatus {
            id: self.id,
            peer: self.peer.to_string(),
            replica: Some(self.name.clone()),
            // The upstream connection lives exactly as long as the link.
            upstream_up: true,
            dbs,
        });
        publish_tables(&self.setup.shared);
    }
}

/// The expiry-table gauges over every streaming DB of every link (each link reporting its
/// own made the gauges show whichever link ticked last).
pub(super) fn publish_tables(shared: &PikaRelayShared) {
    let (keys, complete) = shared
        .sessions
        .snapshot()
        .iter()
        .flat_map(|l| l.dbs.iter())
        .filter(|d| d.phase == "streaming")
        .fold((0, true), |(keys, complete), d| {
            (keys + d.table_keys, complete && d.table_complete)
        });
    stats::expiry_tables(keys, complete);
}
