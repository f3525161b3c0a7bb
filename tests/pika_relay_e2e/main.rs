//! End-to-end tests of the Pika relay: a fake Pika master, the relay as a real process
//! (`pika-ttl-proxy pika`), and a fake Pika replica that applies what it receives to the
//! reference model at its own (injected) clock.

#[path = "../support/mod.rs"]
#[allow(dead_code)]
mod support;

mod faults;
mod knowledge;
mod observability;
mod replication;
mod restarts;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use pika_ttl_proxy::engine::PikaRelease;
use pika_ttl_proxy::families::FamilySwitches;
use pika_ttl_proxy::model::{Record, Value};
use pika_ttl_proxy::pika::frame::FrameCodec;
use pika_ttl_proxy::pika::messages::BinlogPosition;
use pika_ttl_proxy::pika::proto::FieldIter;
use pika_ttl_proxy::pika_relay::map_store;
use pika_ttl_proxy::pika_relay::{serve, PikaRelayConfig, PikaRelayShared};
use support::metric_sum;
use support::pika_peer::fake_master::{FakeMaster, MasterEvent, MasterOptions, SendMode};
use support::pika_peer::fake_replica::{FakeReplica, ReplicaEvent};
use support::pika_peer::net::{free_base_port, wait_until, FramedConn, PATIENCE};
use support::pika_peer::wire;
use support::proxy::ProxyProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Model time of the captured session (the fixtures' clock read 2026-11-23).
pub(crate) const T0: i64 = 1_795_469_984_000;
pub(crate) const REPLICA_PORT: u16 = 19231;

pub(crate) struct Rig {
    master: FakeMaster,
    proxy: ProxyProcess,
    replica: FakeReplica,
    dir: tempfile::TempDir,
}

pub(crate) fn fast_keepalives() -> MasterOptions {
    MasterOptions {
        keepalive: Duration::from_millis(200),
        ..MasterOptions::default()
    }
}

pub(crate) const SERIES_GRACE_ENV: &str = "PIKA_TTL_PROXY_SERIES_GRACE_SECS";
pub(crate) const SERIES_GRACE_SECS: &str = "3";

pub(crate) async fn start_proxy(master_port: u16, dir: &Path, args: &[&str]) -> ProxyProcess {
    start_proxy_env(master_port, dir, args, &[]).await
}

pub(crate) async fn start_proxy_env(
    master_port: u16,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> ProxyProcess {
    let port = free_base_port();
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    // A short grace period, so a test sees a closed link's series go.
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push((SERIES_GRACE_ENV.into(), SERIES_GRACE_SECS.into()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ProxyProcess::start_env(port, master_port, &dir, &args, &env)
    })
    .await
    .unwrap()
}

/// A rig whose master and replica are of the Pika release in `opts`.
pub(crate) async fn rig_with(args: &[&str], opts: MasterOptions, clock: i64) -> Rig {
    let release = opts.release;
    let master = FakeMaster::start(opts, clock).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(master.port, dir.path(), args).await;
    let replica = FakeReplica::start_release(proxy.port, REPLICA_PORT, clock, false, release);
    let rig = Rig {
        master,
        proxy,
        replica,
        dir,
    };
    assert!(
        wait_until(PATIENCE, || rig.replica.is_streaming()).await,
        "replica never streamed; relay log:\n{}",
        rig.proxy.log()
    );
    rig
}

pub(crate) async fn rig(args: &[&str]) -> Rig {
    rig_with(args, fast_keepalives(), T0).await
}

impl Rig {
    async fn applied(&self, items: u64) {
        let ok = wait_until(PATIENCE, || self.replica.applied_items() >= items).await;
        assert!(
            ok,
            "replica applied {} of {items} items; events {:?}\nmaster {:?}\nrelay log:\n{}",
            self.replica.applied_items(),
            self.replica.events(),
            self.master.events(),
            self.proxy.log()
        );
    }

    /// Waits until the replica has acknowledged everything the master wrote.
    async fn caught_up(&self) {
        let ok = wait_until(PATIENCE, || {
            self.master.acked_end() == self.master.producer().offset
        })
        .await;
        assert!(
            ok,
            "acked {} of {}; relay log:\n{}",
            self.master.acked_end(),
            self.master.producer(),
            self.proxy.log()
        );
    }

    /// Waits until the offset map on disk maps the replica's position to the master's: acks
    /// between rewritten responses are written behind, so a kill right after catching up may
    /// otherwise cost one (safe) full sync.
    async fn map_on_disk(&self) {
        let path = self.map_path();
        let ok = wait_until(PATIENCE, || {
            let Ok(bytes) = std::fs::read(&path) else {
                return false;
            };
            match map_store::parse(&bytes) {
                map_store::Loaded::State(map, _) => {
                    map.translate(self.replica.position()) == Some(self.master.producer())
                }
                _ => false,
            }
        })
        .await;
        assert!(ok, "the offset map never reached the disk");
    }

    /// The master never dropped the replica for an ack outside its window.
    fn no_window_mismatch(&self) {
        let d = self.master.disconnects();
        assert!(
            d.iter()
                .all(|r| !r.contains("window") && !r.contains("first_send")),
            "{d:?}\nrelay log:\n{}",
            self.proxy.log()
        );
    }

    fn replica_full_syncs(&self) -> usize {
        self.replica
            .count(|e| matches!(e, ReplicaEvent::DbSync { .. }))
    }

    fn master_full_syncs(&self) -> usize {
        self.master
            .count(|e| matches!(e, MasterEvent::DbSync { .. }))
    }

    fn map_path(&self) -> std::path::PathBuf {
        self.dir
            .path()
            .join(format!("127.0.0.1_{REPLICA_PORT}_db0.map"))
    }

    /// The BinlogSync responses the master sent and the replica received, pairwise (the
    /// replica may still be missing the newest keepalives).
    fn frames(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let sent = self.master.sent_binlog_sync();
        let received = self.replica.received_binlog_sync();
        assert!(received.len() <= sent.len());
        sent.into_iter().zip(received).collect()
    }

    /// P1/P2: master and replica hold the same keys, values and deadlines at every second of
    /// the minute after `from`.
    fn assert_converged(&self, from: i64) {
        for s in 0..=60 {
            let t = from + s * 1000;
            assert_eq!(
                self.master.state_at(t),
                self.replica.state_at(t),
                "states differ {s} s after the last apply"
            );
        }
    }
}

pub(crate) fn record(rig: &Rig, key: &str, at: i64) -> Option<Record> {
    rig.replica
        .state_at(at)
        .keys
        .get(&(0, Bytes::copy_from_slice(key.as_bytes())))
        .cloned()
}

pub(crate) fn master_record(rig: &Rig, key: &str, at: i64) -> Option<Record> {
    rig.master
        .state_at(at)
        .keys
        .get(&(0, Bytes::copy_from_slice(key.as_bytes())))
        .cloned()
}

/// `entries_total` of the string-counter family with `outcome`, from a `/metrics` text.
fn counter_entries(text: &str, outcome: &str) -> f64 {
    let start = format!(
        r#"pika_ttl_proxy_entries_total{{dialect="pika",family="string-counter",outcome="{outcome}"}}"#
    );
    text.lines()
        .find(|l| l.starts_with(&start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
