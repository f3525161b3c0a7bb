//! Runs the Pika relay as a real process (`pika-ttl-proxy pika …`), so tests can kill it with
//! SIGKILL and restart it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, proxy_binary};

/// Test shorthand `--families none|all` → the product's `--disable-family` flags.
fn product_flags(extra: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < extra.len() {
        if extra[i] == "--families" {
            if extra.get(i + 1).map(String::as_str) == Some("none") {
                for f in pika_ttl_proxy::families::Family::ALL {
                    out.push("--disable-family".to_string());
                    out.push(f.name().to_string());
                }
            }
            i += 2;
            continue;
        }
        out.push(extra[i].clone());
        i += 1;
    }
    out
}

pub struct ProxyProcess {
    child: Option<Child>,
    pub port: u16,
    pub master_port: u16,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    /// The admin API address (`/metrics`, `/families`, …).
    pub admin: String,
    extra: Vec<String>,
    /// Environment variables for the relay (e.g. the per-replica series' grace period).
    env: Vec<(String, String)>,
}

impl ProxyProcess {
    /// Starts the relay on `port` for the master at `master_port` and waits until it listens.
    pub fn start(port: u16, master_port: u16, state_dir: &Path, extra: &[&str]) -> ProxyProcess {
        Self::start_env(port, master_port, state_dir, extra, &[])
    }

    /// [`ProxyProcess::start`] with environment variables for the relay.
    pub fn start_env(
        port: u16,
        master_port: u16,
        state_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ProxyProcess {
        let mut p = ProxyProcess {
            child: None,
            port,
            master_port,
            state_dir: state_dir.to_path_buf(),
            log_path: state_dir.join(format!("relay-{port}.log")),
            admin: format!("127.0.0.1:{}", free_port()),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        // Counted before the child starts: it may log that it listens before we look.
        let started = self.log().matches("pika relay listening").count() + 1;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = wrapped(proxy_binary())
            .arg("pika")
            .arg("--admin")
            .arg(&self.admin)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--master")
            .arg(format!("127.0.0.1:{}", self.master_port))
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(product_flags(&self.extra))
            // TEST_PROXY_LOG_LEVEL: a filter for a run that needs more (e.g. the per-entry
            // `unknown_key` lines at debug).
            .env(
                "PIKA_TTL_PROXY_LOG_LEVEL",
                std::env::var("TEST_PROXY_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting the relay");
        self.child = Some(child);
        // Readiness from the log: probing a port would open a relayed connection to the master.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log().matches("pika relay listening").count() < started {
            assert!(
                Instant::now() < deadline,
                "relay did not start; log:\n{}",
                self.log()
            );
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("relay exited with {status}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, like `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait until the relay has exited on its own (a clean stop).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("the relay is not running");
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the relay") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the relay cleanly and starts it again.
    pub fn restart_cleanly(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "the relay exited with {status}; log:\n{}",
            self.log()
        );
        self.spawn();
    }

    /// Starts the same relay again (after [`ProxyProcess::kill9`]).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The relay's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// CPU seconds (user + system) the relay process has used so far (Linux `/proc`).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        let hz = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(100.0);
        Some(ticks / hz)
    }

    /// The Prometheus text the relay serves on `/metrics` (empty when it does not answer).
    pub fn metrics(&self) -> String {
        pika_ttl_proxy::cli::request(&self.admin, "GET", "/metrics", None, None)
            .map(|r| r.body)
            .unwrap_or_default()
    }

    /// The status the admin API answers a GET of `path` with (0 when it does not answer).
    pub fn http_status(&self, path: &str) -> u16 {
        pika_ttl_proxy::cli::request(&self.admin, "GET", path, None, None)
            .map(|r| r.status)
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if std::env::var_os("PIKA_TTL_PROXY_WRAPPER").is_some() {
            // A wrapping tool writes its results on a clean exit only.
            if let Some(mut c) = self.child.take() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = c.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
            return;
        }
        self.kill9();
    }
}

/// `program` under `PIKA_TTL_PROXY_WRAPPER` when it is set: a tool and its arguments, e.g.
/// "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p" or "taskset -c 1" (measurements
/// only); the hops of a latency measurement all run under it alike.
pub fn wrapped(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let wrapper: Vec<String> = std::env::var("PIKA_TTL_PROXY_WRAPPER")
        .map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    match wrapper.split_first() {
        Some((tool, args)) => {
            let mut c = Command::new(tool);
            c.args(args).arg(program);
            c
        }
        None => Command::new(program),
    }
}
