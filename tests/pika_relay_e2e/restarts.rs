//! Restarts of the relay: a clean stop, `kill -9`, a damaged or missing offset map, checkpoints
//! caught up along the master's binlog, and a soak with kills and reconnects.

use super::*;

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

/// `kill -9` after the replica applied rewritten responses it has not acknowledged: no ack
/// taught the relay where the replica is, but the positions predicted for those responses were
/// written before they were sent, so the restarted relay resumes the replica without a full
/// sync (before predictions, this cost one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_before_the_acks_resumes_from_predicted_positions() {
    let mut rig = rig(&["--empty-at-origin"]).await;
    rig.master.exec(&["SETEX", "a", "100", "1"]);
    rig.master.exec(&["INCR", "a"]);
    rig.applied(2).await;
    rig.caught_up().await;
    rig.replica.hold_acks(true);
    for k in ["a", "b", "c", "d"] {
        rig.master.exec(&["SETEX", k, "100", "1"]);
        rig.master.exec(&["INCR", k]);
        rig.master.exec(&["APPEND", k, "x"]);
    }
    // The master sends one window and waits for its ack, which never comes.
    rig.applied(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| rig.proxy.kill9());
    assert!(wait_until(PATIENCE, || !rig.replica.is_streaming()).await);
    rig.replica.hold_acks(false);
    tokio::task::block_in_place(|| rig.proxy.restart());
    assert!(
        wait_until(PATIENCE, || rig.replica.is_streaming()).await,
        "replica did not resume; relay log:\n{}",
        rig.proxy.log()
    );
    rig.master.exec(&["INCR", "fresh"]);
    rig.applied(15).await;
    rig.caught_up().await;
    rig.assert_converged(T0);
    assert_eq!(
        rig.replica_full_syncs(),
        1,
        "resumed without a full sync; relay log:\n{}",
        rig.proxy.log()
    );
    rig.no_window_mismatch();
}

/// A clean stop saves each DB's expiry table and the next start gives it back to the replica
/// that resumes where it stopped: an INCR on a key whose TTL was set before the restart is
/// rewritten. After a kill with no checkpoint (removed here; the checkpoint path has its own
/// test) there is no table: the same kind of entry is held and its key looked up on the
/// master, which decides it (with `--look-ups off` it would pass as `unknown_key`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_keeps_the_expiry_tables_and_a_kill_does_not() {
    let mut rig = rig(&["--empty-at-origin"]).await;
    rig.master.exec(&["SETEX", "a", "100", "1"]);
    rig.master.exec(&["SETEX", "b", "100", "1"]);
    rig.applied(2).await;
    rig.caught_up().await;
    rig.map_on_disk().await;
    let series = counter_entries;

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
    for file in std::fs::read_dir(rig.dir.path()).unwrap() {
        let path = file.unwrap().path();
        if path.to_string_lossy().contains(".pika-checkpoint") {
            std::fs::remove_file(path).unwrap();
        }
    }
    assert!(wait_until(PATIENCE, || !rig.replica.is_streaming()).await);
    tokio::task::block_in_place(|| rig.proxy.restart());
    assert!(wait_until(PATIENCE, || rig.replica.is_streaming()).await);
    rig.master.exec(&["INCR", "b"]);
    rig.applied(4).await;
    rig.caught_up().await;
    let text = rig.proxy.metrics();
    assert_eq!(
        (series(&text, "rewritten"), series(&text, "unknown_key")),
        (1.0, 0.0),
        "{text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "pika_ttl_proxy_lookups_total",
            &[("result", "resolved")]
        ),
        1.0,
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

impl Rig {
    /// Waits for the replica DB's first checkpoint on disk.
    async fn checkpointed(&self) {
        let checkpoint = self
            .dir
            .path()
            .join(format!("127.0.0.1_{REPLICA_PORT}_db0.pika-checkpoint"));
        assert!(
            wait_until(PATIENCE, || checkpoint.exists()).await,
            "no checkpoint: {}",
            self.proxy.log()
        );
    }
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
    rig.checkpointed().await;
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
    let series = |outcome: &str| counter_entries(&text, outcome);
    assert_eq!(
        (series("rewritten"), series("unknown_key")),
        (2.0, 0.0),
        "{text}\n{log}"
    );
    rig.assert_converged(T0);
    assert_eq!(rig.replica_full_syncs(), 1, "resumed without a full sync");
    rig.no_window_mismatch();
}

/// A replica that reconnects behind what its old link forwarded (it had not applied the last
/// responses, as when the master drops a stalled replica) resumes with a table rebuilt exactly
/// at its position: the old link's table, parked further along, must not stand in the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_resuming_behind_its_old_link_gets_a_table_at_its_position() {
    let rig = rig(&["--empty-at-origin", "--checkpoint-interval", "60"]).await;
    rig.master.exec(&["SETEX", "a", "100", "1"]);
    rig.applied(1).await;
    rig.caught_up().await;
    rig.checkpointed().await;
    rig.replica.pause();
    rig.master.exec(&["SETEX", "b", "100", "1"]);
    rig.master.exec(&["SET", "c", "1"]);
    rig.master.exec(&["EXPIRE", "c", "50"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.replica.reconnect();
    rig.replica.resume();
    // Rebuilt from the checkpoint (exactly at it here: the paused replica applied nothing
    // after `a`), while the old link parked its table further along, at `c`'s EXPIRE.
    const REBUILT: &str = "resuming exactly at the expiry table's checkpoint";
    assert!(
        wait_until(PATIENCE, || rig.proxy.log().contains(REBUILT)).await,
        "{}",
        rig.proxy.log()
    );
    assert!(wait_until(PATIENCE, || rig.replica.is_streaming()).await);
    rig.applied(4).await;
    let log = rig.proxy.log();
    let after_reconnect = &log[log.find(REBUILT).unwrap_or(0)..];
    assert!(
        !after_reconnect.contains("warm-up scan of the master started"),
        "the rebuilt table was not used: {log}"
    );
    rig.master.exec(&["INCR", "b"]);
    rig.master.exec(&["INCR", "c"]);
    rig.applied(6).await;
    rig.caught_up().await;
    rig.assert_converged(T0);
}

/// A Pika 4.0.1 replica that reconnects after the relay was killed sends its last ack before
/// its MetaSync (seen on the real server). A Pika master ignores such an ack; the relay drops it
/// too and the replica resumes on that connection (the real one sent its MetaSync there about
/// 10 s later, its own reconnect timer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_0_replica_resumes_on_the_connection_that_starts_with_its_last_ack() {
    let opts = MasterOptions {
        release: PikaRelease::V4,
        ..fast_keepalives()
    };
    let mut rig = rig_with(&["--empty-at-origin"], opts, T0).await;
    rig.master.exec(&["SETEX", "k", "100", "1"]);
    rig.master.exec(&["HSET", "h", "f", "v"]);
    rig.applied(2).await;
    rig.caught_up().await;
    rig.map_on_disk().await;

    tokio::task::block_in_place(|| rig.proxy.kill9());
    assert!(wait_until(PATIENCE, || !rig.replica.is_streaming()).await);
    rig.master.exec(&["INCR", "k"]);
    tokio::task::block_in_place(|| rig.proxy.restart());
    assert!(wait_until(PATIENCE, || rig.replica.is_streaming()).await);
    rig.applied(3).await;
    let log = rig.proxy.log();
    assert!(!log.contains("protocol violation"), "{log}");
    assert!(log.contains("dropped an ack for a DB"), "{log}");
    let connects = rig.replica.count(|e| matches!(e, ReplicaEvent::Connected));
    assert_eq!(
        connects, 2,
        "resumed on its first connection after the restart"
    );
    assert_eq!(rig.replica_full_syncs(), 1, "resumed without a full sync");
}

/// After `kill -9` a replica may stay away for seconds (a real 4.0.1 replica returns about 10 s
/// after the restart, its own timer). A standby reader follows the master for it meanwhile and
/// asks look-ups as the master writes: `EXPIRE` on a hash whose existence the table does not
/// know (past `--warmup-max-keys`) and a write on it, followed by a `DEL` before the replica is
/// back (which leaves a look-up asked then nothing to tell), is decided with the answer the
/// reader journaled, not passed as `unknown_key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_reader_looks_up_what_the_master_writes_while_the_replica_is_away() {
    let master = FakeMaster::start(fast_keepalives(), T0).await;
    // A hash from before the relay, whose existence the warm-up does not record.
    master.exec(&["HSET", "h", "f", "v"]);
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--warmup-max-keys", "0", "--checkpoint-interval", "60"];
    let proxy = start_proxy(master.port, dir.path(), &flags).await;
    let replica = FakeReplica::start(proxy.port, REPLICA_PORT, T0);
    let mut rig = Rig {
        master,
        proxy,
        replica,
        dir,
    };
    assert!(wait_until(PATIENCE, || rig.replica.is_streaming()).await);
    rig.master.exec(&["SETEX", "a", "100", "1"]);
    rig.applied(1).await;
    rig.caught_up().await;
    rig.checkpointed().await;
    rig.map_on_disk().await;

    rig.replica.pause();
    tokio::task::block_in_place(|| rig.proxy.kill9());
    tokio::task::block_in_place(|| rig.proxy.restart());
    assert!(
        wait_until(PATIENCE, || rig
            .proxy
            .log()
            .contains("standby reader following"))
        .await,
        "{}",
        rig.proxy.log()
    );
    let resolved = |rig: &Rig| {
        metric_sum(
            &rig.proxy.metrics(),
            "pika_ttl_proxy_lookups_total",
            &[("result", "resolved")],
        )
    };
    rig.master.exec(&["EXPIRE", "h", "100"]);
    rig.master.exec(&["HINCRBY", "h", "n", "1"]);
    assert!(
        wait_until(PATIENCE, || resolved(&rig) == 1.0).await,
        "the reader's look-up: {}",
        rig.proxy.log()
    );
    rig.master.exec(&["DEL", "h"]);

    rig.replica.resume();
    assert!(wait_until(PATIENCE, || rig.replica.is_streaming()).await);
    rig.applied(4).await;
    rig.caught_up().await;
    let log = rig.proxy.log();
    assert!(log.contains("journaled=1"), "{log}");
    let text = rig.proxy.metrics();
    assert_eq!(counter_entries(&text, "unknown_key"), 0.0, "{text}\n{log}");
    assert_eq!(resolved(&rig), 1.0, "not asked again: {log}");
    rig.assert_converged(T0);
    assert_eq!(rig.replica_full_syncs(), 1, "resumed without a full sync");
    rig.no_window_mismatch();
}
