//! What operators see: lag (against the master's tip), link status, metrics, a replica the
//! master dropped.

use super::*;

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
    let replica_acked = rig.master.acked_end();
    let replica = format!("127.0.0.1:{REPLICA_PORT}");
    let gauge = |name: &str| -> Option<f64> {
        let prefix = format!("{name}{{replica=\"{replica}\"}} ");
        rig.proxy
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
    };
    // Stopped: the relay reads ahead (acks in the replica's name) while the master keeps
    // writing; the lag is the replica's, not what the master was acked.
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
    let tip = rig.master.producer().offset;
    assert!(
        wait_until(PATIENCE, || rig.master.acked_end() == tip).await,
        "read ahead: the master acked up to {} of {tip}",
        rig.master.acked_end()
    );
    let behind = tip - replica_acked;
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
    // The master's drop after 3 s, then at most the relay's 1 s tick (with room for a loaded
    // machine).
    assert!(paused.elapsed() < Duration::from_secs(8));
    assert!(master
        .disconnects()
        .iter()
        .any(|r| r.starts_with("no BinlogSync request")));
    assert_eq!(
        value("pika_ttl_proxy_replica_disconnects_total{reason=\"replica_timeout\"}"),
        Some(1.0)
    );
    // The log writer flushes behind the relay: waited for, not read once.
    assert!(
        wait_until(PATIENCE, || proxy
            .log()
            .contains("so the master has dropped it"))
        .await,
        "{}",
        proxy.log()
    );
    // The lag keeps counting after the link closed (until the series go).
    // (Waited for rather than slept on: the tip poller runs once a second and a loaded machine
    // may delay it.)
    let first = value(&lag_seconds).unwrap_or(0.0);
    assert!(
        wait_until(Duration::from_secs(10), || value(&lag_seconds)
            .unwrap_or(0.0)
            >= first + 1.0)
        .await,
        "{first} then {:?}",
        value(&lag_seconds)
    );
    assert!(value(&format!("pika_ttl_proxy_replica_lag_bytes{{{name}}}")) > Some(0.0));
}
