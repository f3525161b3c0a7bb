//! Per-replica series exist only while a replica is attached plus a grace period: a
//! connection that never completes a handshake (a port probe, a load balancer's health check)
//! creates none, so 1000 bare connects leave `/metrics` exactly as long as before, on both
//! relays; a replica that leaves shows `link_up` 0 and is removed after the grace period.

#[allow(dead_code)]
mod support;

use std::path::Path;
use std::time::Duration;

use support::pika_peer::fake_master::{FakeMaster, MasterOptions};
use support::pika_peer::fake_replica::FakeReplica;
use support::pika_peer::net::{free_base_port, wait_until, PATIENCE};

const GRACE_ENV: &str = "PIKA_TTL_PROXY_SERIES_GRACE_SECS";
const CONNECTS: usize = 1000;
const T0: i64 = 1_795_469_984_000;
const REPLICA_PORT: u16 = 19241;

/// Series lines (not HELP/TYPE, not blank) of a `/metrics` text.
fn series_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn disconnects(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("pika_ttl_proxy_replica_disconnects_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metrics(admin: &str) -> String {
    pika_ttl_proxy::cli::request(admin, "GET", "/metrics", None, None)
        .map(|r| r.body)
        .unwrap_or_default()
}

/// Opens and closes `n` connections to `port`, one at a time, sending nothing.
async fn bare_connects(port: u16, n: usize) {
    for _ in 0..n {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        drop(s);
    }
}

/// Waits until the relay has counted `at_least` ended connections.
async fn all_ended(admin: &str, at_least: f64) {
    let admin2 = admin.to_string();
    assert!(
        wait_until(Duration::from_secs(60), move || disconnects(&metrics(
            &admin2
        )) >= at_least)
        .await,
        "{}",
        metrics(admin)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_relay_series_stay_flat_under_bare_connects_and_go_after_the_grace_period() {
    let master = FakeMaster::start(
        MasterOptions {
            keepalive: Duration::from_millis(200),
            ..MasterOptions::default()
        },
        T0,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_base_port();
    let (master_port, state) = (master.port, dir.path().to_path_buf());
    let proxy = tokio::task::spawn_blocking(move || {
        support::proxy::ProxyProcess::start_env(
            port,
            master_port,
            &state,
            &["--warmup", "off"],
            &[(GRACE_ENV, "2")],
        )
    })
    .await
    .unwrap();
    let admin = proxy.admin.clone();
    let before_text = metrics(&admin);
    let before = series_lines(&before_text).len();
    assert!(before > 0, "{before_text}");

    bare_connects(port + 2000, CONNECTS).await;
    // A connection that sends nothing is no replica: the master is never dialled for it and
    // no disconnect is counted (a TCP health check must not fill the disconnects panel).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_text = metrics(&admin);
    assert_eq!(disconnects(&after_text), 0.0, "{after_text}");
    assert!(
        master.disconnects().is_empty(),
        "{:?}",
        master.disconnects()
    );
    let after = series_lines(&after_text).len();
    println!(
        "pika relay: {before} series before {CONNECTS} bare connects to P+2000, {after} after"
    );
    assert_eq!(before, after, "bare connects created series:\n{after_text}");
    assert!(!after_text.contains("replica=\""), "{after_text}");

    // A replica that completes its handshake has series while attached...
    let replica = FakeReplica::start(port, REPLICA_PORT, T0);
    assert!(wait_until(PATIENCE, || replica.is_streaming()).await);
    let name = format!("replica=\"127.0.0.1:{REPLICA_PORT}\"");
    let attached = metrics(&admin);
    assert!(
        attached.contains(&format!(
            "pika_ttl_proxy_link_up{{side=\"downstream\",{name}}} 1"
        )),
        "{attached}"
    );
    assert_eq!(series_lines(&attached).len(), before + 5, "{attached}");
    // ...shows its link down once it left, then is removed, not zeroed.
    replica.stop();
    let down = format!("pika_ttl_proxy_link_up{{side=\"downstream\",{name}}} 0");
    let admin2 = admin.clone();
    assert!(
        wait_until(PATIENCE, move || metrics(&admin2).contains(&down)).await,
        "{}",
        metrics(&admin)
    );
    let admin2 = admin.clone();
    assert!(
        wait_until(PATIENCE, move || !metrics(&admin2).contains("replica=\"")).await,
        "{}",
        metrics(&admin)
    );
    assert_eq!(series_lines(&metrics(&admin)).len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_relay_series_stay_flat_under_bare_connects() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (master, proxy) = tokio::task::spawn_blocking(move || {
        let master = support::redis_server::RedisServer::start(&root, "master", &[]);
        let port = support::free_port();
        let proxy = support::redis_proxy::ProxyProcess::start_env(
            port,
            master.port,
            &root.join("state"),
            Path::new(&root.join("proxy.log")),
            &[],
            &[(GRACE_ENV, "2")],
        );
        (master, proxy)
    })
    .await
    .unwrap();
    let admin = proxy.admin.clone();
    // The start-up probe's connection has ended.
    all_ended(&admin, 1.0).await;
    let ended = disconnects(&metrics(&admin));
    let before_text = metrics(&admin);
    let before = series_lines(&before_text).len();

    bare_connects(proxy.port, CONNECTS).await;
    all_ended(&admin, ended + CONNECTS as f64).await;
    let after_text = metrics(&admin);
    let after = series_lines(&after_text).len();
    println!("redis relay: {before} series before {CONNECTS} bare connects, {after} after");
    assert_eq!(before, after, "bare connects created series:\n{after_text}");
    assert!(!after_text.contains("replica=\""), "{after_text}");
    drop(proxy);
    drop(master);
}
