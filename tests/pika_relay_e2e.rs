//! End-to-end tests of the Pika relay: a fake Pika master, the relay as a real process
//! (`pika-ttl-proxy pika`), and a fake Pika replica that applies what it receives to the
//! reference model at its own (injected) clock.

mod support;

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
use support::pika_peer::fake_master::{FakeMaster, MasterEvent, MasterOptions, SendMode};
use support::pika_peer::fake_replica::{FakeReplica, ReplicaEvent};
use support::pika_peer::net::{free_base_port, wait_until, FramedConn, PATIENCE};
use support::pika_peer::wire;
use support::proxy::ProxyProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Model time of the captured session (the fixtures' clock read 2026-11-23).
const T0: i64 = 1_795_469_984_000;
const REPLICA_PORT: u16 = 19231;

struct Rig {
    master: FakeMaster,
    proxy: ProxyProcess,
    replica: FakeReplica,
    dir: tempfile::TempDir,
}

fn fast_keepalives() -> MasterOptions {
    MasterOptions {
        keepalive: Duration::from_millis(200),
        ..MasterOptions::default()
    }
}

const SERIES_GRACE_ENV: &str = "PIKA_TTL_PROXY_SERIES_GRACE_SECS";
const SERIES_GRACE_SECS: &str = "3";

async fn start_proxy(master_port: u16, dir: &Path, args: &[&str]) -> ProxyProcess {
    start_proxy_env(master_port, dir, args, &[]).await
}

async fn start_proxy_env(
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

async fn rig_with(args: &[&str], opts: MasterOptions, clock: i64) -> Rig {
    let master = FakeMaster::start(opts, clock).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(master.port, dir.path(), args).await;
    let replica = FakeReplica::start(proxy.port, REPLICA_PORT, clock);
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

async fn rig(args: &[&str]) -> Rig {
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

fn record(rig: &Rig, key: &str, at: i64) -> Option<Record> {
    rig.replica
        .state_at(at)
        .keys
        .get(&(0, Bytes::copy_from_slice(key.as_bytes())))
        .cloned()
}

fn master_record(rig: &Rig, key: &str, at: i64) -> Option<Record> {
    rig.master
        .state_at(at)
        .keys
        .get(&(0, Bytes::copy_from_slice(key.as_bytes())))
        .cloned()
}

/// `SETEX key1 10 100` → `pksetexat`; `INCR key1` one second later reaches a replica that is
/// 30 s of model time late.
async fn seed_scenario(rig: &Rig) -> i64 {
    rig.master.exec(&["SETEX", "key1", "10", "100"]);
    rig.applied(1).await;
    rig.replica.pause();
    rig.master.set_clock_ms(T0 + 1000);
    rig.master.exec(&["INCR", "key1"]);
    rig.replica.set_clock_ms(T0 + 31_000);
    rig.replica.resume();
    rig.applied(2).await;
    rig.caught_up().await;
    T0 + 31_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_converges_with_rewriting_on() {
    // No assumption about keys written before the relay: pksetexat itself tells the deadline.
    let rig = rig(&[]).await;
    let late = seed_scenario(&rig).await;
    rig.assert_converged(late);
    assert_eq!(record(&rig, "key1", late), None);
    // The INCR item carried `INCR` + `expireat`: the replica wrote 3 items to the master's 2,
    // so its offsets differ, and every ack still matched the master's window.
    // Master: pksetexat 0→97, INCR 97→163. Replica: pksetexat 0→97, INCR 97→163,
    // expireat 163→250. The replica acked 250; the master saw 163.
    let pos = |o| BinlogPosition::new(0, o);
    assert_eq!(rig.master.producer(), pos(163));
    assert_eq!(rig.replica.position(), pos(250));
    let replica_ack = ReplicaEvent::Ack {
        start: pos(163),
        end: pos(250),
    };
    assert!(rig.replica.events().contains(&replica_ack));
    let master_ack = MasterEvent::Ack {
        start: pos(163),
        end: pos(163),
    };
    assert!(rig.master.events().contains(&master_ack));
    rig.no_window_mismatch();
    assert!(rig
        .proxy
        .log()
        .contains("first rewritten item since the last full sync"));
    // Keepalives pass through and the replica's pings reach the master.
    assert!(
        wait_until(PATIENCE, || rig.replica.count(|e| *e == ReplicaEvent::Ping)
            > 0
            && rig.master.count(|e| *e == MasterEvent::Ping) > 0)
        .await
    );
    // P3: every response but the one carrying the INCR reached the replica byte for byte,
    // keepalives included.
    let frames = rig.frames();
    let changed = frames.iter().filter(|(sent, got)| sent != got).count();
    assert_eq!(changed, 1, "{} frames", frames.len());
    assert!(frames.len() > 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_keeps_an_immortal_key_with_rewriting_off() {
    let rig = rig(&["--families", "none"]).await;
    let late = seed_scenario(&rig).await;
    // Negative control: the late INCR recreated key1 without a TTL on the replica.
    let immortal = record(&rig, "key1", late + 3_600_000).expect("key1 on the replica");
    assert_eq!(immortal.deadline_ms, None);
    assert_eq!(immortal.value, Value::Str(Bytes::from_static(b"1")));
    assert_eq!(master_record(&rig, "key1", late), None);
    // Unchanged items keep the offsets identical.
    assert_eq!(rig.replica.position(), rig.master.producer());
    rig.no_window_mismatch();
    // P3: with every family off, the replica received exactly the master's bytes.
    let frames = rig.frames();
    assert!(frames.iter().all(|(sent, got)| sent == got));
    assert!(frames.len() >= 2);
}

/// The late-replica reproduction of `docs/pika-protocol.md#late-replica-session`.
async fn section11(rig: &Rig) -> i64 {
    let t = T0 + 67_000;
    rig.master.set_clock_ms(t);
    rig.replica.set_clock_ms(t);
    rig.master.exec(&["SETEX", "k3", "3", "100"]);
    rig.master.exec(&["HSET", "h3", "f", "v"]);
    rig.master.exec(&["EXPIRE", "h3", "3"]);
    rig.master.exec(&["SETEX", "k5", "3", "7"]);
    rig.applied(4).await;
    rig.replica.pause();
    rig.master.set_clock_ms(t + 1000);
    rig.master.exec(&["INCR", "k3"]);
    rig.master.exec(&["HINCRBY", "h3", "n", "1"]);
    rig.master.exec(&["APPEND", "k5", "x"]);
    rig.master.exec(&["SET", "s3", "abc", "EX", "4", "NX"]);
    rig.replica.set_clock_ms(t + 8000);
    rig.replica.resume();
    rig.applied(8).await;
    t + 8000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section11_reproduction_converges_with_rewriting_on() {
    let rig = rig(&["--empty-at-origin"]).await;
    let late = section11(&rig).await;
    rig.assert_converged(late);
    for key in ["k3", "h3", "k5", "s3"] {
        assert_eq!(record(&rig, key, late), None, "{key}");
    }
    rig.no_window_mismatch();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section11_reproduction_keeps_immortal_keys_with_rewriting_off() {
    let rig = rig(&["--empty-at-origin", "--families", "none"]).await;
    let late = section11(&rig).await;
    let much_later = late + 3_600_000;
    for key in ["k3", "h3", "k5"] {
        let r = record(&rig, key, much_later).unwrap_or_else(|| panic!("{key} gone"));
        assert_eq!(r.deadline_ms, None, "{key} is immortal on the replica");
        assert_eq!(master_record(&rig, key, late), None);
    }
    // s3 was re-created with EX 4 from the replica's late clock: it outlives the master's.
    let s3 = record(&rig, "s3", late).expect("s3 on the replica");
    assert_eq!(s3.deadline_ms, Some(late + 4000));
    assert_eq!(master_record(&rig, "s3", late), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_translate_and_a_reconnect_resumes_incrementally() {
    let opts = MasterOptions {
        send_mode: SendMode::Eager,
        ..fast_keepalives()
    };
    let rig = rig_with(&["--empty-at-origin"], opts, T0).await;
    // Each item goes out in its own response; the replica is held so many are outstanding.
    rig.replica.pause();
    for i in 0..30 {
        let k = format!("k{i}");
        rig.master.exec(&["SETEX", &k, "100", "1"]);
        rig.master.exec(&["INCR", &k]);
    }
    rig.replica.resume();
    rig.applied(60).await;
    rig.caught_up().await;
    assert!(rig.master.max_outstanding() > 1);
    rig.no_window_mismatch();
    assert_ne!(rig.replica.position(), rig.master.producer());
    let resumes_before = rig
        .master
        .count(|e| matches!(e, MasterEvent::TrySync { reply: 1, .. }));

    // The replica reconnects and TrySyncs at its own position; the relay sends the master's.
    let replica_at = rig.replica.position();
    rig.replica.reconnect();
    assert!(
        wait_until(PATIENCE, || rig
            .master
            .count(|e| matches!(e, MasterEvent::TrySync { reply: 1, .. }))
            > resumes_before)
        .await
    );
    let tries: Vec<MasterEvent> = rig
        .master
        .events()
        .into_iter()
        .filter(|e| matches!(e, MasterEvent::TrySync { .. }))
        .collect();
    assert_eq!(
        tries.last(),
        Some(&MasterEvent::TrySync {
            at: rig.master.producer(),
            reply: 1
        })
    );
    let resumed = ReplicaEvent::TrySync {
        at: replica_at,
        reply: 1,
    };
    assert!(wait_until(PATIENCE, || rig.replica.events().contains(&resumed)).await);
    assert!(wait_until(PATIENCE, || rig.replica.is_streaming()).await);
    for i in 0..10 {
        rig.master.exec(&["INCR", &format!("k{i}")]);
    }
    rig.applied(70).await;
    rig.assert_converged(T0);
    assert_eq!(rig.replica_full_syncs(), 1, "only the initial full sync");
    assert_eq!(rig.master_full_syncs(), 1);
    rig.no_window_mismatch();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relay_resumes_from_its_persisted_map() {
    let mut rig = rig(&["--empty-at-origin"]).await;
    for k in ["a", "b", "c"] {
        rig.master.exec(&["SETEX", k, "100", "1"]);
        rig.master.exec(&["INCR", k]);
    }
    rig.applied(6).await;
    rig.caught_up().await;
    assert_ne!(rig.replica.position(), rig.master.producer());
    rig.map_on_disk().await;

    tokio::task::block_in_place(|| rig.proxy.kill9());
    assert!(wait_until(PATIENCE, || !rig.replica.is_streaming()).await);
    rig.master.exec(&["INCR", "a"]);
    tokio::task::block_in_place(|| rig.proxy.restart());
    assert!(wait_until(PATIENCE, || rig.replica.is_streaming()).await);
    rig.applied(7).await;
    rig.master.exec(&["INCR", "b"]);
    rig.applied(8).await;
    rig.assert_converged(T0);
    assert_eq!(rig.replica_full_syncs(), 1, "resumed without a full sync");
    assert_eq!(rig.master_full_syncs(), 1);
    rig.no_window_mismatch();
}

/// A clean stop saves each DB's expiry table and the next start gives it back to the replica
/// that resumes where it stopped: an INCR on a key whose TTL was set before the restart is
/// rewritten. After a kill there is no table: the same kind of entry passes as `unknown_key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_keeps_the_expiry_tables_and_a_kill_does_not() {
    let mut rig = rig(&["--empty-at-origin"]).await;
    rig.master.exec(&["SETEX", "a", "100", "1"]);
    rig.master.exec(&["SETEX", "b", "100", "1"]);
    rig.applied(2).await;
    rig.caught_up().await;
    rig.map_on_disk().await;
    let series = |text: &str, outcome: &str| -> f64 {
        let start = format!(
            r#"pika_ttl_proxy_entries_total{{dialect="pika",family="string-counter",outcome="{outcome}"}}"#
        );
        text.lines()
            .find(|l| l.starts_with(&start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };

    tokio::task::block_in_place(|| rig.proxy.restart_cleanly());
    assert!(wait_until(PATIENCE, || rig.replica.is_streaming()).await);
    let log = rig.proxy.log();
    assert!(
        log.contains("restored the expiry table saved at the last stop"),
        "{log}"
    );
    assert!(log.contains("its expiry table is reused"), "{log}");
    rig.master.exec(&["INCR", "a"]);
    rig.applied(3).await;
    rig.caught_up().await;
    let text = rig.proxy.metrics();
    assert_eq!(
        (series(&text, "rewritten"), series(&text, "unknown_key")),
        (1.0, 0.0),
        "{text}"
    );

    rig.map_on_disk().await;
    tokio::task::block_in_place(|| rig.proxy.kill9());
    assert!(wait_until(PATIENCE, || !rig.replica.is_streaming()).await);
    tokio::task::block_in_place(|| rig.proxy.restart());
    assert!(wait_until(PATIENCE, || rig.replica.is_streaming()).await);
    rig.master.exec(&["INCR", "b"]);
    rig.applied(4).await;
    rig.caught_up().await;
    let text = rig.proxy.metrics();
    assert_eq!(
        (series(&text, "rewritten"), series(&text, "unknown_key")),
        (0.0, 1.0),
        "{text}"
    );
    rig.assert_converged(T0);
    assert_eq!(rig.replica_full_syncs(), 1, "resumed without a full sync");
    rig.no_window_mismatch();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_missing_map_forces_exactly_one_full_sync() {
    let mut rig = rig(&["--empty-at-origin"]).await;
    rig.master.exec(&["SETEX", "a", "100", "1"]);
    rig.master.exec(&["INCR", "a"]);
    rig.applied(2).await;
    rig.caught_up().await;
    let purged = |rig: &Rig| {
        rig.replica
            .count(|e| matches!(e, ReplicaEvent::TrySync { reply: 2, .. }))
    };

    // Corrupt one byte of the map while the relay is down.
    tokio::task::block_in_place(|| rig.proxy.kill9());
    let path = rig.map_path();
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    tokio::task::block_in_place(|| rig.proxy.restart());
    assert!(
        wait_until(PATIENCE, || rig.replica_full_syncs() == 2
            && rig.replica.is_streaming())
        .await
    );
    assert_eq!(purged(&rig), 1);
    assert!(rig.proxy.log().contains("the offset map is corrupt"));
    rig.master.exec(&["INCR", "a"]);
    rig.applied(3).await;

    // A missing map: again exactly one full sync.
    tokio::task::block_in_place(|| rig.proxy.kill9());
    std::fs::remove_file(&path).unwrap();
    tokio::task::block_in_place(|| rig.proxy.restart());
    assert!(
        wait_until(PATIENCE, || rig.replica_full_syncs() == 3
            && rig.replica.is_streaming())
        .await
    );
    assert_eq!(purged(&rig), 2);

    // After the full sync the map is the identity again: a plain reconnect resumes.
    rig.master.exec(&["SETEX", "b", "100", "1"]);
    rig.master.exec(&["INCR", "b"]);
    rig.applied(5).await;
    rig.caught_up().await;
    rig.replica.reconnect();
    assert!(wait_until(PATIENCE, || rig.replica.is_streaming()).await);
    rig.master.exec(&["INCR", "b"]);
    rig.applied(6).await;
    assert_eq!(rig.replica_full_syncs(), 3);
    assert_eq!(rig.master_full_syncs(), 3);
    rig.assert_converged(T0);
    rig.no_window_mismatch();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_learned_from_no_ack_is_never_guessed() {
    let rig = rig(&["--empty-at-origin"]).await;
    rig.master.exec(&["SETEX", "a", "100", "1"]);
    rig.master.exec(&["INCR", "a"]);
    rig.applied(2).await;
    rig.caught_up().await;
    // The replica applies one more response but its ack never reaches the relay.
    rig.replica.hold_acks(true);
    rig.master.exec(&["INCR", "a"]);
    rig.applied(3).await;
    let unacked_at = rig.replica.position();
    rig.replica.hold_acks(false);
    rig.replica.reconnect();
    // Its position is not one the relay has seen acknowledged: one forced full sync.
    assert!(
        wait_until(PATIENCE, || rig.replica_full_syncs() == 2
            && rig.replica.is_streaming())
        .await
    );
    assert!(rig.replica.events().contains(&ReplicaEvent::TrySync {
        at: unacked_at,
        reply: 2
    }));
    // The master was only ever asked for exact record boundaries.
    let refused = rig
        .master
        .count(|e| matches!(e, MasterEvent::TrySync { reply, .. } if *reply != 1));
    assert_eq!(refused, 0, "{:?}", rig.master.events());
    rig.master.exec(&["INCR", "a"]);
    rig.applied(4).await;
    rig.assert_converged(T0);
    rig.no_window_mismatch();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_one_link_and_nothing_else() {
    // Replica side: garbage protobuf, then an oversized length prefix.
    let master = FakeMaster::start(fast_keepalives(), T0).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(master.port, dir.path(), &[]).await;
    let repl = SocketAddr::from(([127, 0, 0, 1], proxy.port + 2000));
    for garbage in [
        &[0u8, 0, 0, 3, 0xff, 0xff, 0xff][..],
        &[0xff, 0xff, 0xff, 0xff, 1][..],
    ] {
        let mut s = TcpStream::connect(repl).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "the relay closed the link");
    }
    assert!(
        wait_until(PATIENCE, || proxy
            .log()
            .contains("malformed frame from the replica"))
        .await
    );
    assert!(proxy.log().contains("malformed message from the replica"));
    // The relay still serves a well-behaved replica.
    let replica = FakeReplica::start(proxy.port, REPLICA_PORT, T0);
    assert!(wait_until(PATIENCE, || replica.is_streaming()).await);
    replica.stop();

    // Master side: a "master" that answers MetaSync with garbage.
    let bad = free_base_port();
    let listener = TcpListener::bind(("127.0.0.1", bad + 2000)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut c = FramedConn::new(s);
                if c.recv().await.is_some() {
                    let _ = c.send(&[0x08, 0xff]).await;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let dir2 = tempfile::tempdir().unwrap();
    let mut proxy2 = start_proxy(bad, dir2.path(), &[]).await;
    let mut c = FramedConn::connect(SocketAddr::from(([127, 0, 0, 1], proxy2.port + 2000)))
        .await
        .unwrap();
    c.send(&wire::meta_sync_request("127.0.0.1", REPLICA_PORT))
        .await
        .unwrap();
    assert!(tokio::time::timeout(PATIENCE, c.recv())
        .await
        .unwrap()
        .is_none());
    assert!(
        wait_until(PATIENCE, || proxy2
            .log()
            .contains("malformed message from the master"))
        .await
    );
    assert!(!proxy2.log().contains("panicked"));
    assert!(!proxy.log().contains("panicked"));
    // Still alive: another connection is accepted and relayed.
    assert!(TcpStream::connect(("127.0.0.1", proxy2.port + 2000))
        .await
        .is_ok());
    tokio::task::block_in_place(|| proxy2.kill9());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_is_no_pika_server_is_named_with_what_it_answered() {
    let bad = free_base_port();
    let listener = TcpListener::bind(("127.0.0.1", bad + 2000)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = start_proxy(bad, dir.path(), &[]).await;
    let mut c = FramedConn::connect(SocketAddr::from(([127, 0, 0, 1], proxy.port + 2000)))
        .await
        .unwrap();
    c.send(&wire::meta_sync_request("127.0.0.1", REPLICA_PORT))
        .await
        .unwrap();
    assert!(tokio::time::timeout(PATIENCE, c.recv())
        .await
        .unwrap()
        .is_none());
    let master = format!("127.0.0.1:{}", bad + 2000);
    assert!(
        wait_until(PATIENCE, || {
            let log = proxy.log();
            log.contains("is --master a Pika server?")
                && log.contains("HTTP/1.1 400 Bad Request\\r\\n")
                && log.contains(&master)
        })
        .await,
        "{}",
        proxy.log()
    );
    tokio::task::block_in_place(|| proxy.kill9());
}

/// Reads `RsyncRequest`/`RsyncResponse` `(reader_index, filename)`; meta frames have no file.
fn rsync_key(body: &[u8], response: bool) -> (i32, Vec<u8>) {
    let (reader_field, file_field, name_field) = if response { (2, 8, 6) } else { (2, 5, 1) };
    let mut reader = 0;
    let mut name = Vec::new();
    for f in FieldIter::new(body).flatten() {
        if f.number() == reader_field {
            reader = f.int32().unwrap();
        } else if f.number() == file_field {
            for g in FieldIter::new(f.bytes().unwrap()).flatten() {
                if g.number() == name_field {
                    name = g.bytes().unwrap().to_vec();
                }
            }
        }
    }
    (reader, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsync_passthrough_is_byte_exact() {
    let req_bytes = support::fixture("pika-3.5.4/session1-rsync-replica-to-master.bin");
    let resp_bytes = support::fixture("pika-3.5.4/session1-rsync-master-to-replica.bin");
    let requests = FrameCodec::new().decode_all(&req_bytes).unwrap();
    let responses = FrameCodec::new().decode_all(&resp_bytes).unwrap();
    assert_eq!((requests.len(), responses.len()), (17, 17));

    // A fake rsync server that sends each captured response once the request it answers has
    // arrived (the captured order, which is not the request order), in odd-sized chunks.
    let base = free_base_port();
    let listener = TcpListener::bind(("127.0.0.1", base + 10001))
        .await
        .unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    let resp_frames = responses.clone();
    let resp_raw = resp_bytes.clone();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(i32, Vec<u8>)>();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let mut buf = bytes::BytesMut::new();
            let mut codec = FrameCodec::new();
            let mut chunk = vec![0u8; 4096];
            loop {
                let n = match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                all.extend_from_slice(&chunk[..n]);
                buf.extend_from_slice(&chunk[..n]);
                while let Ok(Some(f)) = codec.decode(&mut buf) {
                    let _ = seen_tx.send(rsync_key(&f, false));
                }
            }
            all
        });
        let mut seen: Vec<(i32, Vec<u8>)> = Vec::new();
        let mut at = 0;
        for r in &resp_frames {
            let key = rsync_key(r, true);
            while !seen.contains(&key) {
                seen.push(seen_rx.recv().await.unwrap());
            }
            let pos = seen.iter().position(|k| *k == key).unwrap();
            seen.remove(pos);
            let len = 4 + r.len();
            for chunk in resp_raw[at..at + len].chunks(777) {
                wr.write_all(chunk).await.unwrap();
            }
            at += len;
        }
        wr.shutdown().await.unwrap();
        let _ = got_tx.send(reader.await.unwrap());
    });

    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(base, dir.path(), &[]).await;
    let client = TcpStream::connect(("127.0.0.1", proxy.port + 10001))
        .await
        .unwrap();
    let (mut rd, mut wr) = client.into_split();
    let receiver = tokio::spawn(async move {
        let mut all = Vec::new();
        rd.read_to_end(&mut all).await.unwrap();
        all
    });
    let mut at = 0;
    for r in &requests {
        let len = 4 + r.len();
        wr.write_all(&req_bytes[at..at + len]).await.unwrap();
        at += len;
    }
    let received = tokio::time::timeout(PATIENCE, receiver)
        .await
        .unwrap()
        .unwrap();
    wr.shutdown().await.unwrap();
    assert_eq!(received.len(), resp_bytes.len());
    assert!(received == resp_bytes, "master → replica bytes changed");
    let server_got = tokio::time::timeout(PATIENCE, got_rx)
        .await
        .unwrap()
        .unwrap();
    assert!(server_got == req_bytes, "replica → master bytes changed");
    // The tap read the snapshot position from the `info` file on the way.
    assert!(
        wait_until(PATIENCE, || proxy
            .log()
            .contains("full-sync snapshot position seen"))
        .await
    );
    assert!(proxy.log().contains("position=0/0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_learns_old_ttls_and_leaves_raced_keys_unknown() {
    let master = FakeMaster::start(fast_keepalives(), T0).await;
    // Keys written before the relay existed.
    master.exec(&["SETEX", "old", "100", "5"]);
    master.exec(&["SETEX", "raced", "100", "7"]);
    master.exec(&["SET", "plain", "1"]);
    master.hold_second_info();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(master.port, dir.path(), &["--warmup", "scan"]).await;
    let replica = FakeReplica::start(proxy.port, REPLICA_PORT, T0);
    assert!(wait_until(PATIENCE, || replica.is_streaming()).await);
    // The scan has looked everything up and waits for its closing INFO; meanwhile the stream
    // changes `raced`.
    assert!(
        wait_until(PATIENCE, || master.info_calls() >= 2).await,
        "{}",
        proxy.log()
    );
    master.set_clock_ms(T0 + 1000);
    master.exec(&["EXPIRE", "raced", "500"]);
    assert!(wait_until(PATIENCE, || replica.applied_items() >= 1).await);
    master.release_info();
    assert!(
        wait_until(PATIENCE, || proxy.log().contains("warm-up merged")).await,
        "{}",
        proxy.log()
    );
    let merged_line = proxy
        .log()
        .lines()
        .find(|l| l.contains("warm-up merged"))
        .unwrap()
        .to_string();
    // `old` with its deadline and `plain` as existing without one; `raced` stays unknown.
    assert!(merged_line.contains("merged=2"), "{merged_line}");
    assert!(!merged_line.contains("touched=0"), "{merged_line}");

    master.set_clock_ms(T0 + 2000);
    replica.set_clock_ms(T0 + 2000);
    master.exec(&["INCR", "old"]);
    master.exec(&["INCR", "raced"]);
    // `plain` had no TTL and the scan listed it: an EXPIRE gives it a deadline the proxy knows,
    // so the write after it carries that deadline.
    master.exec(&["EXPIRE", "plain", "50"]);
    master.exec(&["INCR", "plain"]);
    assert!(wait_until(PATIENCE, || replica.applied_items() >= 5).await);
    let at = T0 + 2000;
    let get = |state: pika_ttl_proxy::model::State, k: &str| {
        state
            .keys
            .get(&(0, Bytes::copy_from_slice(k.as_bytes())))
            .cloned()
    };
    // `old` was known from the scan: the INCR carried its deadline (the fake full sync moved no
    // data, so the replica's value differs; the deadline is what the rewrite fixes).
    let master_old = get(master.state_at(at), "old").unwrap();
    assert_eq!(master_old.deadline_ms, Some(T0 + 100_000));
    assert_eq!(
        get(replica.state_at(at), "old").unwrap().deadline_ms,
        master_old.deadline_ms
    );
    // `raced` changed while the scan ran: unknown, so its INCR went through unchanged.
    assert_eq!(
        get(replica.state_at(at), "raced").unwrap().deadline_ms,
        None
    );
    assert_eq!(
        get(master.state_at(at), "raced").unwrap().deadline_ms,
        Some(T0 + 1000 + 500_000)
    );
    assert_eq!(
        get(master.state_at(at), "plain").unwrap().deadline_ms,
        Some(T0 + 2000 + 50_000)
    );
    assert_eq!(
        get(replica.state_at(at), "plain").unwrap().deadline_ms,
        Some(T0 + 2000 + 50_000)
    );
    replica.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_and_link_status_are_reported_in_process() {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // A master clock 5 s behind the wall clock, on a whole second.
    let clock = (now_ms / 1000 - 5) * 1000;
    let master = FakeMaster::start(fast_keepalives(), clock).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_base_port();
    let mut cfg = PikaRelayConfig::new(
        SocketAddr::from(([127, 0, 0, 1], port)),
        master.addr(),
        dir.path().to_path_buf(),
    );
    cfg.empty_at_origin = true;
    let shared = PikaRelayShared::new(FamilySwitches::all_on());
    let cancel = CancellationToken::new();
    let server = tokio::spawn(serve(cfg, shared.clone(), cancel.clone()));
    assert!(
        wait_until(PATIENCE, || std::net::TcpStream::connect((
            "127.0.0.1",
            port + 10001
        ))
        .is_ok())
        .await
    );
    let replica = FakeReplica::start(port, REPLICA_PORT, clock);
    assert!(wait_until(PATIENCE, || replica.is_streaming()).await);
    let db = |shared: &PikaRelayShared| {
        shared
            .sessions
            .snapshot()
            .first()
            .and_then(|l| l.dbs.first().cloned())
    };
    assert!(
        wait_until(PATIENCE, || db(&shared)
            .is_some_and(|d| d.phase == "streaming"))
        .await
    );
    master.exec(&["SETEX", "x", "100", "1"]);
    master.exec(&["INCR", "x"]);
    assert!(wait_until(PATIENCE, || replica.applied_items() >= 2).await);
    let acked = master.items()[1].end;
    assert!(
        wait_until(PATIENCE, || db(&shared)
            .is_some_and(|d| d.acked_master == format!("0/{acked}")))
        .await
    );
    replica.pause();
    master.exec(&["INCR", "x"]);
    let producer = master.producer();
    assert!(
        wait_until(PATIENCE, || db(&shared)
            .is_some_and(|d| d.master_latest == producer.to_string()))
        .await
    );
    let lagging = db(&shared).unwrap();
    assert_eq!(lagging.lag_bytes, producer.offset - acked);
    assert!(lagging.lag_seconds >= 4.0, "{lagging:?}");
    assert!(lagging.table_complete);
    let status = shared.sessions.snapshot();
    assert_eq!(status[0].replica.as_deref(), Some("127.0.0.1:19231"));
    assert!(status[0].upstream_up);
    replica.resume();
    assert!(
        wait_until(PATIENCE, || db(&shared)
            .is_some_and(|d| d.lag_bytes == 0 && d.lag_seconds == 0.0))
        .await
    );
    assert_eq!(db(&shared).unwrap().offset_map, "pairs");
    cancel.cancel();
    tokio::time::timeout(PATIENCE, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    replica.stop();
}

/// Fault-injection soak for the Pika relay (bounded: ~12 s): a steady workload of every family
/// on keys with TTLs while the driver kill -9s and restarts the relay and makes the replica drop
/// and re-open its link. At the end the replica converges with the master, the master never saw
/// an ack outside its window, and every full sync was logged with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_relay_kills_and_replica_reconnects_converges() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let mut rig = rig(&["--empty-at-origin"]).await;
    let mut rng = StdRng::seed_from_u64(20261123);
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    let (mut kills, mut reconnects, mut commands) = (0usize, 0usize, 0usize);
    while std::time::Instant::now() < deadline {
        for _ in 0..rng.random_range(5..40) {
            let k = format!("k{}", rng.random_range(0..12));
            let h = format!("h{}", rng.random_range(0..4));
            let ttl = rng.random_range(200..400).to_string();
            let n = rng.random_range(1..100).to_string();
            let cmd: Vec<&str> = match rng.random_range(0..9) {
                0 => vec!["SETEX", &k, &ttl, "1"],
                1 => vec!["INCR", &k],
                2 => vec!["INCRBY", &k, &n],
                3 => vec!["APPEND", &k, "x"],
                4 => vec!["SET", &k, "v", "EX", &ttl, "NX"],
                5 => vec!["HSET", &h, "f", &n],
                6 => vec!["EXPIRE", &h, &ttl],
                7 => vec!["HINCRBY", &h, "n", "1"],
                _ => vec!["DEL", &k],
            };
            rig.master.exec(&cmd);
            commands += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
        if rng.random_range(0..3) == 0 {
            tokio::task::block_in_place(|| rig.proxy.restart());
            kills += 1;
        } else {
            rig.replica.reconnect();
            reconnects += 1;
        }
        assert!(
            wait_until(PATIENCE, || rig.replica.is_streaming()).await,
            "replica did not resume; relay log:\n{}",
            rig.proxy.log()
        );
    }
    rig.caught_up().await;
    rig.assert_converged(T0);
    rig.no_window_mismatch();
    let log = rig.proxy.log();
    let requested = log.matches("full sync (DBSync) requested").count();
    let explained = log
        .lines()
        .filter(|l| l.contains("full sync (DBSync) requested") && l.contains("reason"))
        .count();
    assert_eq!(requested, explained, "a full sync without a logged reason");
    println!(
        "pika soak: {commands} commands, {kills} relay kill -9s, {reconnects} replica reconnects; \
         full syncs: replica {}, master {} (logged {requested}); divergent keys 0",
        rig.replica_full_syncs(),
        rig.master_full_syncs()
    );
}

/// What an operator scrapes from a live Pika relay: entries by family and outcome, bytes, lag
/// and link state per replica; once the replica is gone its series say the link is down, and
/// after the grace period they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_rewrites_and_forget_a_closed_link() {
    let rig = rig(&["--empty-at-origin"]).await;
    rig.master.exec(&["SETEX", "a", "100", "1"]);
    rig.master.exec(&["INCR", "a"]);
    rig.master.exec(&["SET", "plain", "v"]);
    rig.applied(3).await;
    rig.caught_up().await;
    let series = |text: &str, line_start: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let replica = format!("127.0.0.1:{REPLICA_PORT}");
    let rewritten = r#"pika_ttl_proxy_entries_total{dialect="pika",family="string-counter",outcome="rewritten"}"#;
    let link = format!(r#"pika_ttl_proxy_link_up{{side="downstream",replica="{replica}"}}"#);
    assert!(
        wait_until(PATIENCE, || series(&rig.proxy.metrics(), rewritten)
            == Some(1.0))
        .await,
        "{}",
        rig.proxy.metrics()
    );
    let text = rig.proxy.metrics();
    assert_eq!(series(&text, &link), Some(1.0), "{text}");
    assert!(
        series(
            &text,
            r#"pika_ttl_proxy_entries_total{dialect="pika",family="none",outcome="passed"}"#
        ) >= Some(2.0),
        "{text}"
    );
    assert!(
        series(
            &text,
            r#"pika_ttl_proxy_bytes_total{direction="in",side="upstream"}"#
        ) > Some(0.0),
        "{text}"
    );
    assert!(
        text.contains("pika_ttl_proxy_entry_duration_seconds"),
        "{text}"
    );
    // Every BinlogSync response relayed so far was held and written once.
    assert!(
        series(&text, "pika_ttl_proxy_hold_seconds_count") > Some(0.0),
        "{text}"
    );
    // The offset map went to disk when rewriting began.
    assert!(
        series(&text, "pika_ttl_proxy_state_write_seconds_count") > Some(0.0),
        "{text}"
    );

    // The replica stops acking, lags, then goes away.
    let lag = format!(r#"pika_ttl_proxy_replica_lag_bytes{{replica="{replica}"}}"#);
    rig.replica.hold_acks(true);
    rig.master.exec(&["INCR", "a"]);
    rig.applied(4).await;
    assert!(
        wait_until(PATIENCE, || series(&rig.proxy.metrics(), &lag) > Some(0.0)).await,
        "{}",
        rig.proxy.metrics()
    );
    rig.replica.stop();
    assert!(
        wait_until(PATIENCE, || series(&rig.proxy.metrics(), &link)
            == Some(0.0))
        .await,
        "{}",
        rig.proxy.metrics()
    );
    // Removed, not zeroed, once the grace period is over.
    assert!(
        wait_until(PATIENCE, || !rig.proxy.metrics().contains(&replica)).await,
        "{}",
        rig.proxy.metrics()
    );
    let text = rig.proxy.metrics();
    // Like the Redis relay, the Pika relay counts how replica connections end.
    assert!(
        series(
            &text,
            r#"pika_ttl_proxy_replica_disconnects_total{reason="replica_closed"}"#
        ) >= Some(1.0),
        "{text}"
    );
}

/// A Pika 4.0 master and replica through the proxy (the captured 4.0.1 session's commands):
/// the proxy learns the release from MetaSync, so SETEX/INCR (logged as `pksetexat`, which a
/// 4.0.1 replica reads as int32 ms and drops) and PSETEX (a millisecond `pksetexat` that
/// stalls a 4.0.1 replica for good) reach the replica as `set` + `expireat`; APPEND on a
/// missing key, whose value the master's log lost, is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_4_0_replication_is_made_correct() {
    let opts = MasterOptions {
        release: PikaRelease::V4,
        ..fast_keepalives()
    };
    let master = FakeMaster::start(opts, T0).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(master.port, dir.path(), &["--empty-at-origin"]).await;
    let replica = FakeReplica::start_release(proxy.port, REPLICA_PORT, T0, false, PikaRelease::V4);
    assert!(
        wait_until(PATIENCE, || replica.is_streaming()).await,
        "{}",
        proxy.log()
    );
    assert!(proxy.log().contains("release=4.0"), "{}", proxy.log());
    master.exec(&["SETEX", "k", "10", "100"]);
    master.exec(&["INCR", "k"]);
    master.exec(&["INCR", "fresh"]);
    master.exec(&["APPEND", "a", "y"]);
    master.exec(&["HMSET", "h", "f", "v"]);
    master.exec(&["EXPIRE", "h", "10"]);
    master.exec(&["HINCRBY", "h", "n", "1"]);
    master.exec(&["PSETEX", "ps", "5000", "v"]);
    master.exec(&["SET", "after_ps", "1"]);
    assert!(
        wait_until(PATIENCE, || replica.applied_items() >= 9).await,
        "the replica stalled: {}",
        proxy.log()
    );
    let at = T0 + 500;
    let (m, r) = (master.state_at(at), replica.state_at(at));
    for key in ["k", "fresh", "h", "ps", "after_ps"] {
        let k = (0, Bytes::from_static(key.as_bytes()));
        assert_eq!(m.keys.get(&k), r.keys.get(&k), "{key}\n{}", proxy.log());
    }
    assert_eq!(
        m.keys
            .get(&(0, Bytes::from_static(b"k")))
            .and_then(|r| r.deadline_ms),
        Some(T0 + 10_000)
    );
    // The master logged `pksetexat a 0 ""`: the replica holds "" where the master has "y".
    let lost = r#"pika_ttl_proxy_at_risk_total{family="none"}"#;
    assert!(
        wait_until(PATIENCE, || proxy
            .metrics()
            .lines()
            .any(|l| l.starts_with(lost) && !l.ends_with(" 0")))
        .await,
        "{}",
        proxy.metrics()
    );
    assert!(
        proxy.log().contains("value_lost_by_master"),
        "{}",
        proxy.log()
    );
    replica.stop();
}

/// A master whose `INFO server` names a release the proxy does not know is refused at link
/// start with a clear error (no silent pass), unless the operator allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_master_release_is_refused_at_link_start() {
    let opts = MasterOptions {
        pika_version: Some("4.1.0".into()),
        ..fast_keepalives()
    };
    let master = FakeMaster::start(opts.clone(), T0).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(master.port, dir.path(), &["--empty-at-origin"]).await;
    let replica = FakeReplica::start(proxy.port, REPLICA_PORT, T0);
    assert!(
        wait_until(PATIENCE, || proxy.log().contains("refusing the replica")).await,
        "{}",
        proxy.log()
    );
    assert!(proxy.log().contains("Pika 4.1.0"), "{}", proxy.log());
    assert!(!replica.is_streaming());
    assert!(proxy
        .metrics()
        .lines()
        .any(|l| l.contains(r#"kind="unknown_version""#) && !l.ends_with(" 0")));
    replica.stop();

    let master = FakeMaster::start(opts, T0).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        master.port,
        dir.path(),
        &["--empty-at-origin", "--allow-unknown-pika-version"],
    )
    .await;
    let replica = FakeReplica::start(proxy.port, REPLICA_PORT, T0);
    assert!(
        wait_until(PATIENCE, || replica.is_streaming()).await,
        "{}",
        proxy.log()
    );
    assert!(proxy
        .log()
        .contains("as allowed by --allow-unknown-pika-version"));
    replica.stop();
}

/// After `kill -9` the relay brings the checkpoint of each replica DB's table to the position
/// the replica resumes from, along the master's binlog: a key written after the checkpoint and
/// before the crash is known, so its late INCR is rewritten (no `unknown_key`, no full sync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relay_catches_its_table_up_from_a_checkpoint() {
    // The first checkpoint is due at once; the next only after 60 s, so the writes below come
    // after the newest checkpoint.
    let mut rig = rig(&["--empty-at-origin", "--checkpoint-interval", "60"]).await;
    rig.master.exec(&["SETEX", "a", "100", "1"]);
    rig.applied(1).await;
    rig.caught_up().await;
    let checkpoint = rig
        .dir
        .path()
        .join(format!("127.0.0.1_{REPLICA_PORT}_db0.pika-checkpoint"));
    assert!(
        wait_until(PATIENCE, || checkpoint.exists()).await,
        "no checkpoint: {}",
        rig.proxy.log()
    );
    rig.master.exec(&["SETEX", "b", "100", "1"]);
    rig.master.exec(&["SET", "c", "1"]);
    rig.master.exec(&["EXPIRE", "c", "50"]);
    rig.applied(4).await;
    rig.caught_up().await;
    rig.map_on_disk().await;
    tokio::task::block_in_place(|| rig.proxy.kill9());
    assert!(wait_until(PATIENCE, || !rig.replica.is_streaming()).await);
    tokio::task::block_in_place(|| rig.proxy.restart());
    assert!(wait_until(PATIENCE, || rig.replica.is_streaming()).await);
    let log = rig.proxy.log();
    assert!(
        log.contains("along the master's binlog"),
        "the table was not caught up: {log}"
    );
    rig.master.exec(&["INCR", "b"]);
    rig.master.exec(&["INCR", "c"]);
    rig.applied(6).await;
    rig.caught_up().await;
    let text = rig.proxy.metrics();
    let series = |outcome: &str| -> f64 {
        let start = format!(
            r#"pika_ttl_proxy_entries_total{{dialect="pika",family="string-counter",outcome="{outcome}"}}"#
        );
        text.lines()
            .find(|l| l.starts_with(&start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        (series("rewritten"), series("unknown_key")),
        (2.0, 0.0),
        "{text}\n{log}"
    );
    rig.assert_converged(T0);
    assert_eq!(rig.replica_full_syncs(), 1, "resumed without a full sync");
    rig.no_window_mismatch();
}

/// Pika's master sends a replica one window at a time, so while a replica is stopped the relay
/// receives nothing past the window: lag is measured against the master's binlog tip (read on
/// its client port every second), keeps growing in bytes and seconds while the replica does
/// not ack, and returns to 0 once it caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_measured_against_the_masters_tip_while_a_replica_stalls() {
    // The master's clock is the real one, so item exec times give no lag of their own.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let rig = rig_with(&["--empty-at-origin"], fast_keepalives(), now).await;
    rig.master.exec(&["SET", "a", "1"]);
    rig.applied(1).await;
    rig.caught_up().await;
    let replica = format!("127.0.0.1:{REPLICA_PORT}");
    let gauge = |name: &str| -> Option<f64> {
        let prefix = format!("{name}{{replica=\"{replica}\"}} ");
        rig.proxy
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
    };
    // Stopped: the master sends one response, then waits for its ack while it keeps writing.
    rig.replica.pause();
    rig.master.exec(&["INCR", "a"]);
    let incr_end = rig.master.producer().offset;
    assert!(
        wait_until(PATIENCE, || rig.master.events().iter().any(
            |e| matches!(e, MasterEvent::Sent { last_end, .. } if *last_end == incr_end)
        ))
        .await
    );
    for i in 0..40 {
        rig.master.exec(&["SET", &format!("k{i}"), "some value"]);
    }
    let behind = rig.master.producer().offset - rig.master.acked_end();
    assert!(
        wait_until(PATIENCE, || gauge("pika_ttl_proxy_replica_lag_bytes")
            == Some(behind as f64))
        .await,
        "lag_bytes {:?}, the master is {behind} bytes ahead; tip polls {}\n{}",
        gauge("pika_ttl_proxy_replica_lag_bytes"),
        rig.master.tip_polls(),
        rig.proxy.metrics()
    );
    assert!(
        wait_until(PATIENCE, || gauge("pika_ttl_proxy_replica_lag_seconds")
            >= Some(3.0))
        .await,
        "lag_seconds {:?}",
        gauge("pika_ttl_proxy_replica_lag_seconds")
    );
    rig.replica.resume();
    rig.caught_up().await;
    assert!(
        wait_until(PATIENCE, || gauge("pika_ttl_proxy_replica_lag_bytes")
            == Some(0.0)
            && gauge("pika_ttl_proxy_replica_lag_seconds") == Some(0.0))
        .await,
        "{}",
        rig.proxy.metrics()
    );
}

/// A replica the master dropped (no ack or ping for its timeout; a real 3.5.4 master may keep
/// the connection open and silent) is reported down within seconds, with its own disconnect
/// reason, instead of looking up until the relay's 30 s idle timeout; its lag keeps growing
/// while its series remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_the_master_dropped_is_reported_down_within_seconds() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let opts = MasterOptions {
        timeout: Duration::from_secs(3),
        close_on_drop: false,
        ..fast_keepalives()
    };
    let master = FakeMaster::start(opts, now).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy_env(
        master.port,
        dir.path(),
        &["--empty-at-origin"],
        &[(pika_ttl_proxy::pika_relay::MASTER_DROP_ENV, "3")],
    )
    .await;
    let replica = FakeReplica::start(proxy.port, REPLICA_PORT, now);
    assert!(wait_until(PATIENCE, || replica.is_streaming()).await);
    master.exec(&["SET", "a", "1"]);
    assert!(wait_until(PATIENCE, || replica.applied_items() >= 1).await);
    let name = format!("replica=\"127.0.0.1:{REPLICA_PORT}\"");
    let value = |line_start: &str| -> Option<f64> {
        proxy
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
    };
    let link = format!("pika_ttl_proxy_link_up{{side=\"downstream\",{name}}}");
    let lag_seconds = format!("pika_ttl_proxy_replica_lag_seconds{{{name}}}");
    assert!(wait_until(PATIENCE, || value(&link) == Some(1.0)).await);

    replica.pause();
    let paused = std::time::Instant::now();
    for i in 0..10 {
        master.exec(&["SET", &format!("k{i}"), "v"]);
    }
    assert!(
        wait_until(Duration::from_secs(10), || value(&link) == Some(0.0)).await,
        "still up {:?} after the master dropped the replica; master {:?}\n{}",
        paused.elapsed(),
        master.disconnects(),
        proxy.log()
    );
    println!(
        "reported down {:?} after the replica stopped",
        paused.elapsed()
    );
    assert!(paused.elapsed() < Duration::from_secs(6));
    assert!(master
        .disconnects()
        .iter()
        .any(|r| r.starts_with("no BinlogSync request")));
    assert_eq!(
        value("pika_ttl_proxy_replica_disconnects_total{reason=\"replica_timeout\"}"),
        Some(1.0)
    );
    assert!(
        proxy.log().contains("so the master has dropped it"),
        "{}",
        proxy.log()
    );
    // The lag keeps counting after the link closed (until the series go).
    let first = value(&lag_seconds).unwrap_or(0.0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = value(&lag_seconds).unwrap_or(0.0);
    assert!(later >= first + 1.0, "{first} then {later}");
    assert!(value(&format!("pika_ttl_proxy_replica_lag_bytes{{{name}}}")) > Some(0.0));
}
