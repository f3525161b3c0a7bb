//! The shipped Grafana dashboard and alert rules, verified against a live Prometheus (slow:
//! ~30 s). Real redis-server master and replica, the real proxy between them, traffic that
//! produces every kind of event the panels show (rewrites, an unknown-key entry, an at-risk TTL
//! change, a protocol error, a partial resync, a family switch), then Prometheus scrapes the
//! proxy and every panel query and every alert expression is evaluated through its HTTP API:
//! none may fail, none may return no series. `promtool check rules` must pass on the alerts.
//!
//! Needs Debian's `prometheus` package (scripts/test.sh installs it). Set
//! `PIKA_TTL_SKIP_PROMETHEUS=1` to skip where it cannot be installed.

#[allow(dead_code)]
mod support;

use pika_ttl_proxy::cli::request;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::redis_proxy::ProxyProcess;
use support::redis_server::RedisServer;
use support::{free_port, metric_sum, wait_until, ChildGuard};

use support::prom::{percent_encode, ROOT};

/// Evaluate an instant query; returns the number of series.
fn query(prom: &str, expr: &str) -> Result<usize, String> {
    let answer = request(
        prom,
        "GET",
        &format!("/api/v1/query?query={}", percent_encode(expr)),
        None,
        None,
    )?;
    let json: serde_json::Value = serde_json::from_str(&answer.body)
        .map_err(|e| format!("{expr}: bad JSON ({e}): {}", answer.body))?;
    if json["status"] != "success" {
        return Err(format!("{expr}: {}", answer.body));
    }
    Ok(json["data"]["result"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0))
}

/// The shipped alert rules' expressions without their thresholds (see [`prom`]).
fn alert_expressions() -> Vec<(String, String)> {
    let rules =
        std::fs::read_to_string(Path::new(ROOT).join("grafana/alerts.yml")).expect("alerts");
    support::prom::alert_expressions(&rules)
}

#[test]
fn dashboard_and_metrics_reference_name_only_exported_metrics() {
    let docs = std::fs::read_to_string(Path::new(ROOT).join("docs/metrics.md")).unwrap();
    for (name, ..) in pika_ttl_proxy::metrics::METRICS {
        assert!(
            docs.contains(&format!("`{name}`")),
            "{name} missing from docs/metrics.md"
        );
    }
    let documented = docs.matches("| `pika_ttl_proxy_").count();
    assert_eq!(documented, pika_ttl_proxy::metrics::METRICS.len());
    for (title, expr) in support::prom::dashboard_queries()
        .into_iter()
        .chain(alert_expressions())
    {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("pika_ttl_proxy_") {
                // A histogram is queried through its `_bucket`, `_count` and `_sum` series.
                let known = pika_ttl_proxy::metrics::METRICS
                    .iter()
                    .any(|(n, kind, ..)| {
                        *n == word
                            || (*kind == "histogram"
                                && ["_bucket", "_count", "_sum"]
                                    .iter()
                                    .any(|suffix| word.strip_suffix(suffix) == Some(*n)))
                    });
                assert!(known, "{title}: unknown metric {word}");
            }
        }
    }
}

#[test]
fn every_panel_and_alert_query_returns_series_from_a_live_prometheus() {
    if std::env::var("PIKA_TTL_SKIP_PROMETHEUS").as_deref() == Ok("1") {
        eprintln!("skipped: PIKA_TTL_SKIP_PROMETHEUS=1");
        return;
    }
    let promtool = Command::new("promtool")
        .args(["check", "rules"])
        .arg(Path::new(ROOT).join("grafana/alerts.yml"))
        .output()
        .expect("promtool is not installed: run scripts/test.sh (installs Debian's prometheus) or set PIKA_TTL_SKIP_PROMETHEUS=1");
    assert!(
        promtool.status.success(),
        "promtool check rules: {}",
        String::from_utf8_lossy(&promtool.stdout)
    );

    let dir = tempfile::tempdir().unwrap();
    let master = RedisServer::start(dir.path(), "master", &[]);
    let mut m = master.conn();
    // A key that exists before the capture session below, so its INCR is unknown there.
    let _: () = redis::cmd("SET").arg("pre").arg(1).query(&mut m).unwrap();
    let port = free_port();
    let proxy = ProxyProcess::start(
        port,
        master.port,
        &dir.path().join("state"),
        &dir.path().join("proxy.log"),
        &[],
    );
    let replica = RedisServer::start_replica(dir.path(), "replica", port);
    wait_until("replica linked", || replica.link_up());
    // A `redis-cli --replica` session: its sync carries no keys, so its table is unknown.
    let _capture = ChildGuard(
        Command::new("redis-cli")
            .args(["-p", &port.to_string(), "--replica"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli"),
    );
    // Its diskless payload waits for the master's repl-diskless-sync-delay: probe until an INCR
    // is counted by both sessions.
    let passed = |p: &ProxyProcess| {
        metric_sum(
            &p.metrics_text(),
            "pika_ttl_proxy_entries_total",
            &[("family", "string-counter")],
        )
    };
    wait_until("capture session streaming", || {
        let before = passed(&proxy);
        let _: i64 = redis::cmd("INCR").arg("probe").query(&mut m).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        passed(&proxy) - before >= 2.0
    });

    // Rewrites on volatile keys of several families.
    for i in 0..20 {
        let k = format!("c{i}");
        let _: () = redis::cmd("SETEX")
            .arg(&k)
            .arg(600)
            .arg(1)
            .query(&mut m)
            .unwrap();
        let _: i64 = redis::cmd("INCR").arg(&k).query(&mut m).unwrap();
        let _: i64 = redis::cmd("HSET")
            .arg(format!("h{i}"))
            .arg("f")
            .arg(1)
            .query(&mut m)
            .unwrap();
        let _: i64 = redis::cmd("EXPIRE")
            .arg(format!("h{i}"))
            .arg(600)
            .query(&mut m)
            .unwrap();
        let _: i64 = redis::cmd("HINCRBY")
            .arg(format!("h{i}"))
            .arg("n")
            .arg(1)
            .query(&mut m)
            .unwrap();
    }
    let _: i64 = redis::cmd("INCR").arg("pre").query(&mut m).unwrap();
    // A TTL removed after the old deadline had passed by the time the proxy saw it: the script
    // freezes time, so PERSIST applies on the master after a 1 ms deadline.
    let _: () = redis::cmd("EVAL")
        .arg("redis.call('SET', KEYS[1], 'v', 'PX', 1); local i = 0; while i < 3000000 do i = i + 1 end; redis.call('PERSIST', KEYS[1])")
        .arg(1)
        .arg("risky")
        .query(&mut m)
        .unwrap();
    // A malformed replica handshake: a downstream protocol error.
    {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(b"*2\r\n$4\r\nPING\r\nGARBAGE\r\n");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A partial resync.
    let mut r = replica.conn();
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut r)
        .unwrap();
    wait_until("partial resync counted", || {
        proxy
            .metrics_text()
            .contains("pika_ttl_proxy_partial_syncs_total 1")
    });
    // A family switched off and on.
    for on in [false, true] {
        let a = request(
            &proxy.admin,
            "PUT",
            "/families/hash",
            None,
            Some(&format!("{{\"enabled\":{on}}}")),
        )
        .unwrap();
        assert_eq!(a.status, 200);
    }
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
    assert!(acked >= 1);

    // Prometheus scraping the proxy every second, with the alert rules loaded.
    let prom_port = free_port();
    let prom_addr = format!("127.0.0.1:{prom_port}");
    let config: PathBuf = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: pika-ttl-proxy\n    static_configs:\n      - targets: ['{}']\n",
            Path::new(ROOT).join("grafana/alerts.yml").display(),
            proxy.admin
        ),
    )
    .unwrap();
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address={prom_addr}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus is not installed: run scripts/test.sh (installs Debian's prometheus) or set PIKA_TTL_SKIP_PROMETHEUS=1");
    let _prometheus = ChildGuard(prometheus);
    wait_until("at least 5 scrapes of the proxy", || {
        request(
            &prom_addr,
            "GET",
            &format!(
                "/api/v1/query?query={}",
                percent_encode("count_over_time(up{job=\"pika-ttl-proxy\"}[1m]) >= 5")
            ),
            None,
            None,
        )
        .map(|a| a.body.contains("\"result\":[{"))
        .unwrap_or(false)
    });

    let mut failures = Vec::new();
    let mut evaluated = 0;
    for (what, expr) in support::prom::dashboard_queries()
        .into_iter()
        .map(|(t, e)| (format!("panel '{t}'"), e))
        .chain(
            alert_expressions()
                .into_iter()
                .map(|(n, e)| (format!("alert {n}"), e)),
        )
    {
        evaluated += 1;
        match query(&prom_addr, &expr) {
            Ok(0) => failures.push(format!("{what}: no series for {expr}")),
            Ok(n) => println!("{what}: {n} series"),
            Err(e) => failures.push(format!("{what}: error {e}")),
        }
    }
    println!("evaluated {evaluated} queries");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
