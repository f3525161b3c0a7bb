//! The shipped dashboard and alert rules against a live Prometheus scraping the **Pika** relay
//! (`tests/grafana_live.rs` does the same for the Redis relay): the proxy in front of the Pika
//! protocol peers (fake master and two fake replicas), Prometheus scraping `/metrics` every
//! second. Every panel query and alert expression must return data; no alert may be pending or
//! firing while all is well; then each fault is injected and its alert must go pending or
//! firing: an at-risk TTL change (at-risk), a malformed frame on P+2000 (protocol errors), a
//! replica that stops acknowledging (lag in seconds and bytes), and the master dropping it
//! (link down). The other replica must raise no alert.
//!
//! To stay within about a minute the rules are a test copy of `grafana/alerts.yml` with every
//! `for:` shortened to 2 s and the lag thresholds lowered (30 s → 2 s, 64 MB → 500 B); the
//! fake master drops a silent replica after 4 s instead of Pika's 20 s (and the relay is told
//! so). Needs Debian's `prometheus` package; `PIKA_TTL_SKIP_PROMETHEUS=1` skips.

#[allow(dead_code)]
mod support;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::free_port;
use support::pika_peer::fake_master::{FakeMaster, MasterOptions};
use support::pika_peer::fake_replica::FakeReplica;
use support::pika_peer::net::{free_base_port, wait_until, PATIENCE};
use support::prom::{alert_expressions, dashboard_queries, skipped, Prometheus, ROOT};
use support::proxy::ProxyProcess;

const HEALTHY: u16 = 19261;
const STALLED: u16 = 19262;

/// The test copy of the rules: same expressions, shorter `for:`, lower lag thresholds.
fn test_rules() -> String {
    let shipped = std::fs::read_to_string(Path::new(ROOT).join("grafana/alerts.yml")).unwrap();
    let mut rules = shipped.clone();
    for (from, to) in [
        (
            // 4 s: well under what the stalled replica reaches, above what the healthy one
            // shows while the rest of the suite loads the machine.
            "(pika_ttl_proxy_replica_lag_seconds) > 30",
            "(pika_ttl_proxy_replica_lag_seconds) > 4",
        ),
        (
            "(pika_ttl_proxy_replica_lag_bytes) > 64e6",
            "(pika_ttl_proxy_replica_lag_bytes) > 500",
        ),
    ] {
        assert!(rules.contains(from), "alerts.yml no longer has `{from}`");
        rules = rules.replace(from, to);
    }
    rules = rules
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for:") {
            Some(_) => format!("{}for: 2s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    rules.push('\n');
    rules
}

/// Waits until an alert named `name` is pending or firing; returns its replica label.
async fn alert_raised(prom: &Prometheus, name: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found: Vec<String> = prom
            .alerts()
            .into_iter()
            .filter(|(n, ..)| n == name)
            .map(|(_, _, replica)| replica)
            .collect();
        if !found.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never went pending or firing; alerts {:?}",
            prom.alerts()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_relay_panels_and_alerts_against_a_live_prometheus() {
    if skipped() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let rules_path = dir.path().join("alerts-test.yml");
    let rules = test_rules();
    std::fs::write(&rules_path, &rules).unwrap();
    let promtool = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules_path)
        .output()
        .expect(
            "promtool is not installed (Debian's prometheus) or set PIKA_TTL_SKIP_PROMETHEUS=1",
        );
    assert!(
        promtool.status.success(),
        "promtool check rules: {}",
        String::from_utf8_lossy(&promtool.stdout)
    );

    // The master's clock is the real one, so TTLs and at-risk judgements use real time.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let master = FakeMaster::start(
        MasterOptions {
            keepalive: Duration::from_millis(200),
            timeout: Duration::from_secs(4),
            close_on_drop: false,
            ..MasterOptions::default()
        },
        now,
    )
    .await;
    let port = free_base_port();
    let (master_port, state) = (master.port, dir.path().to_path_buf());
    let proxy = tokio::task::spawn_blocking(move || {
        ProxyProcess::start_env(
            port,
            master_port,
            &state,
            &["--empty-at-origin", "--warmup", "off"],
            &[
                ("PIKA_TTL_PROXY_SERIES_GRACE_SECS", "600"),
                (pika_ttl_proxy::pika_relay::MASTER_DROP_ENV, "4"),
            ],
        )
    })
    .await
    .unwrap();
    let healthy = FakeReplica::start(port, HEALTHY, now);
    let stalled = FakeReplica::start(port, STALLED, now);
    assert!(
        wait_until(PATIENCE, || healthy.is_streaming()
            && stalled.is_streaming())
        .await
    );
    // Traffic: rewrites and plain writes.
    for i in 0..20 {
        master.exec(&["SETEX", &format!("c{i}"), "600", "1"]);
        master.exec(&["INCR", &format!("c{i}")]);
        master.exec(&["SET", &format!("p{i}"), "v"]);
    }
    assert!(
        wait_until(PATIENCE, || healthy.applied_items() >= 60
            && stalled.applied_items() >= 60)
        .await
    );

    let prom = tokio::task::spawn_blocking({
        let (path, admin, root) = (
            rules_path.clone(),
            proxy.admin.clone(),
            dir.path().to_path_buf(),
        );
        move || Prometheus::start(&root, &admin, &path, free_port())
    })
    .await
    .unwrap();
    prom.wait_for(
        "5 scrapes of the proxy",
        "count_over_time(up{job=\"pika-ttl-proxy\"}[1m]) >= 5",
        Duration::from_secs(30),
    );
    // Rules have been evaluated a few times by now: all is well, so no alert at all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(prom.alerts(), vec![], "alerts while all is well");

    // Every panel and every alert expression returns data.
    let mut failures = Vec::new();
    let queries: Vec<(String, String)> = dashboard_queries()
        .into_iter()
        .map(|(t, e)| (format!("panel '{t}'"), e))
        .chain(
            alert_expressions(&rules)
                .into_iter()
                .map(|(n, e)| (format!("alert {n}"), e)),
        )
        .collect();
    for (what, expr) in &queries {
        match prom.query(expr) {
            Ok(r) if r.is_empty() => failures.push(format!("{what}: no series for {expr}")),
            Ok(r) => println!("{what}: {} series", r.len()),
            Err(e) => failures.push(format!("{what}: error {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // At risk: a TTL extended when the old deadline (1 s) is already within the replicas' reach.
    master.exec(&["SETEX", "risky", "1", "v"]);
    master.exec(&["EXPIRE", "risky", "600"]);
    assert_eq!(
        alert_raised(&prom, "PikaTtlProxyAtRiskKeys").await,
        vec![String::new()]
    );

    // A malformed frame on the replication port: a downstream protocol error.
    {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port + 2000)).unwrap();
        s.write_all(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    alert_raised(&prom, "PikaTtlProxyProtocolErrors").await;

    // One replica stops (acks nothing, reads nothing) while the master keeps writing.
    stalled.pause();
    for i in 0..40 {
        master.exec(&["SET", &format!("late{i}"), "some value"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stalled_name = format!("127.0.0.1:{STALLED}");
    for alert in [
        "PikaTtlProxyReplicaLagBytes",
        "PikaTtlProxyReplicaLagSeconds",
    ] {
        let replicas = alert_raised(&prom, alert).await;
        assert_eq!(replicas, vec![stalled_name.clone()], "{alert}");
    }
    // The master drops it after 4 s of silence; the relay reports the link down.
    let replicas = alert_raised(&prom, "PikaTtlProxyLinkDown").await;
    assert!(replicas.iter().all(|r| *r == stalled_name), "{replicas:?}");
    // The healthy replica raised nothing.
    let healthy_name = format!("127.0.0.1:{HEALTHY}");
    assert!(
        prom.alerts().iter().all(|(_, _, r)| *r != healthy_name),
        "{:?}",
        prom.alerts()
    );
    println!(
        "alerts at the end: {:?}; took {:?}",
        prom.alerts(),
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(120));
    drop(prom);
    drop(proxy);
}
