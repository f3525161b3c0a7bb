//! What the relay knows of keys from before it: the warm-up scan, and Pika 4.0's own forms.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_learns_old_ttls_and_raced_keys_are_looked_up() {
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
    // The scan's progress is a metric: every key it read.
    let scanned = merged_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("scanned=")?.parse::<f64>().ok())
        .expect("the merge line gives the keys scanned");
    let counted = proxy.metrics().lines().find_map(|l| {
        l.strip_prefix("pika_ttl_proxy_warmup_keys_scanned_total ")?
            .parse::<f64>()
            .ok()
    });
    assert_eq!(counted, Some(scanned));

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
    // `raced` changed while the scan ran, so the merge left it unknown: its INCR was held, the
    // key looked up on the master, and the INCR carried the deadline the master holds (with
    // `--look-ups off` it went through unchanged and the replica kept `raced` forever).
    assert_eq!(
        get(master.state_at(at), "raced").unwrap().deadline_ms,
        Some(T0 + 1000 + 500_000)
    );
    assert_eq!(
        get(replica.state_at(at), "raced").unwrap().deadline_ms,
        Some(T0 + 1000 + 500_000)
    );
    assert!(master.look_ups() >= 1);
    let text = proxy.metrics();
    assert_eq!(
        metric_sum(
            &text,
            "pika_ttl_proxy_lookups_total",
            &[("result", "resolved")]
        ),
        1.0,
        "{text}"
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
    let Rig {
        master,
        proxy,
        replica,
        dir: _dir,
    } = rig_with(&["--empty-at-origin"], opts, T0).await;
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
    // The replica holds each key with the master's value; it is told the second after the
    // master's deadline (which the 4.0 master keeps in ms and logs rounded down), so it never
    // drops a key first.
    for key in ["k", "fresh", "h", "ps", "after_ps"] {
        let k = (0, Bytes::from_static(key.as_bytes()));
        let (on_master, on_replica) = (m.keys.get(&k), r.keys.get(&k));
        assert_eq!(
            on_master.map(|m| &m.value),
            on_replica.map(|r| &r.value),
            "{key}\n{}",
            proxy.log()
        );
        let deadlines = on_master
            .map(|m| m.deadline_ms)
            .zip(on_replica.map(|r| r.deadline_ms));
        match deadlines {
            Some((Some(d), Some(told))) => assert!(
                told >= d && told <= d.div_euclid(1000) * 1000 + 1000,
                "{key}: master {d} replica {told}"
            ),
            Some((d, told)) => assert_eq!(d, told, "{key}"),
            None => {}
        }
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

/// A look-up answered after the master logged more: the answer's position is past the held
/// write, and a Pika master sends nothing new until all it sent is acked. The relay acks the
/// held response itself, so the items up to the answer come and the write is decided with
/// the answer, without waiting for the look-up's time limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_up_answered_past_the_held_write_gets_the_items_it_waits_for() {
    let master = FakeMaster::start(fast_keepalives(), T0).await;
    // A hash from before the relay, which runs without a warm-up: it knows nothing of `h`.
    master.exec(&["HSET", "h", "f", "v"]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(master.port, dir.path(), &["--warmup", "off"]).await;
    let replica = FakeReplica::start(proxy.port, REPLICA_PORT, T0);
    assert!(wait_until(PATIENCE, || replica.is_streaming()).await);

    master.hold_look_ups();
    master.exec(&["EXPIRE", "h", "30"]);
    assert!(wait_until(PATIENCE, || replica.applied_items() >= 1).await);
    master.exec(&["HINCRBY", "h", "n", "1"]);
    assert!(
        wait_until(PATIENCE, || master.look_ups() >= 1).await,
        "{}",
        proxy.log()
    );
    // Logged while the HINCRBY waits unacked behind its look-up.
    master.exec(&["SET", "x", "1"]);
    let asked = std::time::Instant::now();
    master.release_info();
    assert!(
        wait_until(PATIENCE, || replica.applied_items() >= 3).await,
        "{}",
        proxy.log()
    );
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "decided by the answer, not by the time limit: {:?}",
        asked.elapsed()
    );
    let text = proxy.metrics();
    let resolved = metric_sum(
        &text,
        "pika_ttl_proxy_lookups_total",
        &[("result", "resolved")],
    );
    let timeout = metric_sum(
        &text,
        "pika_ttl_proxy_lookups_total",
        &[("result", "timeout")],
    );
    assert_eq!((resolved, timeout), (1.0, 0.0), "{}", proxy.log());

    // The replica applied the HINCRBY late: the hash still ends with the master's deadline,
    // and the relay's acks kept the master's window in step (no disconnect).
    let at = T0 + 60_000;
    let has_h = |state: pika_ttl_proxy::model::State| {
        state.keys.contains_key(&(0, Bytes::from_static(b"h")))
    };
    assert!(has_h(master.state_at(T0)));
    assert!(!has_h(replica.state_at(at)), "immortal on the replica");
    assert!(!has_h(master.state_at(at)));
    master.exec(&["SET", "y", "2"]);
    assert!(wait_until(PATIENCE, || replica.applied_items() >= 4).await);
    assert!(
        master.disconnects().is_empty(),
        "{:?}",
        master.disconnects()
    );
    replica.stop();
}

/// A FLUSHDB while the warm-up scans: the scan's answers from before it may name keys it
/// deleted, so that scan is dropped and the master scanned again, and the second one merges
/// (before, the table stayed incomplete until the replica's next link).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_up_overtaken_by_a_flushdb_scans_again() {
    let master = FakeMaster::start(fast_keepalives(), T0).await;
    master.exec(&["SETEX", "old", "100", "5"]);
    master.hold_second_info();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(master.port, dir.path(), &["--warmup", "scan"]).await;
    let replica = FakeReplica::start(proxy.port, REPLICA_PORT, T0);
    assert!(wait_until(PATIENCE, || replica.is_streaming()).await);
    assert!(
        wait_until(PATIENCE, || master.info_calls() >= 2).await,
        "{}",
        proxy.log()
    );
    // The scan has read `old`; the FLUSHDB deletes it, and `old` comes back without a TTL.
    master.exec(&["FLUSHDB"]);
    master.exec(&["SET", "old", "1"]);
    assert!(wait_until(PATIENCE, || replica.applied_items() >= 2).await);
    // The scan waits for its closing INFO: the proxy says it is warming up once the link's
    // status is published (it answers 200 until it knows of the replica).
    assert!(
        wait_until(PATIENCE, || proxy.http_status("/readyz") == 503).await,
        "not reported as warming up: {}",
        proxy.log()
    );
    master.release_info();
    assert!(
        wait_until(PATIENCE, || proxy.log().contains("warm-up merged")).await,
        "{}",
        proxy.log()
    );
    let log = proxy.log();
    assert!(log.contains("warm-up scan dropped"), "{log}");
    assert_eq!(
        log.matches("warm-up scan of the master started").count(),
        2,
        "{log}"
    );
    assert!(
        wait_until(PATIENCE, || proxy.http_status("/readyz") == 200).await,
        "{log}"
    );
    // The second scan saw `old` without a TTL: its next write passes as it is, not as
    // `unknown_key` and not with the deadline the first scan read.
    master.set_clock_ms(T0 + 1000);
    replica.set_clock_ms(T0 + 1000);
    master.exec(&["INCR", "old"]);
    assert!(wait_until(PATIENCE, || replica.applied_items() >= 3).await);
    let text = proxy.metrics();
    assert_eq!(
        metric_sum(
            &text,
            "pika_ttl_proxy_entries_total",
            &[("outcome", "unknown_key")]
        ),
        0.0,
        "{text}"
    );
    let key = (0, Bytes::from_static(b"old"));
    let on_replica = replica.state_at(T0 + 1000).keys.get(&key).cloned();
    assert_eq!(on_replica.and_then(|r| r.deadline_ms), None);
    replica.stop();
}
