//! A real Prometheus for the live dashboard and alert tests: started on a scrape config, queried
//! through its HTTP API; and the queries of the shipped dashboard and alert rules.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pika_ttl_proxy::cli::request;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// True (after saying so) when `PIKA_TTL_SKIP_PROMETHEUS=1`.
pub fn skipped() -> bool {
    let skip = std::env::var("PIKA_TTL_SKIP_PROMETHEUS").as_deref() == Ok("1");
    if skip {
        eprintln!("skipped: PIKA_TTL_SKIP_PROMETHEUS=1");
    }
    skip
}

/// `s` percent-encoded for a URL query (RFC 3986 unreserved characters kept).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus process, killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` (job `pika-ttl-proxy`) every second and evaluates `rules` every second.
    pub fn start(dir: &Path, target: &str, rules: &Path, port: u16) -> Prometheus {
        let addr = format!("127.0.0.1:{port}");
        let config: PathBuf = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: pika-ttl-proxy\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus is not installed: run scripts/test.sh (installs Debian's prometheus) or set PIKA_TTL_SKIP_PROMETHEUS=1");
        Prometheus { child, addr }
    }

    /// The `result` array of an instant query.
    pub fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let answer = request(
            &self.addr,
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
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until `expr` returns at least one series.
    pub fn wait_for(&self, what: &str, expr: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.query(expr).is_ok_and(|r| !r.is_empty()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("{what}: {expr} returned nothing within {limit:?}");
    }

    /// `(alertname, state, replica or "")` of every pending or firing alert.
    pub fn alerts(&self) -> Vec<(String, String, String)> {
        self.query("ALERTS")
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let label = |n: &str| s["metric"][n].as_str().unwrap_or("").to_string();
                (label("alertname"), label("alertstate"), label("replica"))
            })
            .collect()
    }
}

/// Every panel query of the shipped dashboard, with its variables set to match everything.
pub fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("grafana/pika-ttl-proxy.json"))
        .expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let expr = expr
                .replace("$instance", ".*")
                .replace("$replica", ".*")
                .replace("$__rate_interval", "30s")
                .replace("$__interval", "5s");
            out.push((title.clone(), expr));
        }
    }
    out
}

/// Alert expressions of `rules` with their threshold comparison removed, so each must have
/// series even when the alert does not fire.
pub fn alert_expressions(rules: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name = String::new();
    for line in rules.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("- alert:") {
            name = n.trim().to_string();
        }
        if let Some(expr) = line.strip_prefix("expr:") {
            let expr = expr.trim();
            let bare = ["==", "!=", ">=", "<=", ">", "<"]
                .iter()
                .filter_map(|op| expr.rfind(&format!(" {op} ")))
                .max()
                .map(|i| expr[..i].to_string())
                .unwrap_or_else(|| expr.to_string());
            out.push((name.clone(), bare));
        }
    }
    out
}
