//! The Redis relay under test: in-process on its own runtime, or as the real
//! `pika-ttl-proxy redis` binary.

use super::{free_port, proxy_binary, wait_until, PATIENCE};
use pika_ttl_proxy::families::FamilySwitches;
use pika_ttl_proxy::redis_relay::{serve_on, RedisRelayConfig, RelayShared};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .try_init();
    });
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("install metrics recorder")
    })
}

/// The relay running inside the test process on its own runtime; stopped on drop.
pub struct InProcessProxy {
    pub port: u16,
    pub shared: RelayShared,
    shutdown: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl InProcessProxy {
    pub fn start(master_port: u16, state_dir: &Path, families: FamilySwitches) -> InProcessProxy {
        Self::start_with(master_port, state_dir, families, |_| {})
    }

    /// Like [`InProcessProxy::start`], with `edit` adjusting the configuration.
    pub fn start_with(
        master_port: u16,
        state_dir: &Path,
        families: FamilySwitches,
        edit: impl FnOnce(&mut RedisRelayConfig),
    ) -> InProcessProxy {
        init_tracing();
        metrics();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut cfg = RedisRelayConfig::new(
            listener.local_addr().unwrap(),
            format!("127.0.0.1:{master_port}").parse().unwrap(),
            state_dir.to_path_buf(),
        );
        edit(&mut cfg);
        let shared = RelayShared {
            families,
            ..RelayShared::default()
        };
        let shutdown = CancellationToken::new();
        let (s2, t2) = (shared.clone(), shutdown.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                serve_on(listener, cfg, s2, t2).await.unwrap();
            });
        });
        InProcessProxy {
            port,
            shared,
            shutdown,
            thread: Some(thread),
        }
    }
}

impl Drop for InProcessProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The product binary (`pika-ttl-proxy`), built by cargo for integration tests.
/// The relay as a separate process (`pika-ttl-proxy redis …`); SIGKILLed on drop.
pub struct ProxyProcess {
    pub port: u16,
    pub log: PathBuf,
    /// The proxy's admin API address (`/metrics`, `/families`, …).
    pub admin: String,
    child: Child,
}

impl ProxyProcess {
    /// Start `pika-ttl-proxy redis` on `port` in front of `master_port`; `extra` are more flags.
    pub fn start(
        port: u16,
        master_port: u16,
        state_dir: &Path,
        log: &Path,
        extra: &[&str],
    ) -> ProxyProcess {
        Self::start_env(port, master_port, state_dir, log, extra, &[])
    }

    /// [`ProxyProcess::start`] with environment variables for the relay.
    pub fn start_env(
        port: u16,
        master_port: u16,
        state_dir: &Path,
        log: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ProxyProcess {
        let admin = format!("127.0.0.1:{}", free_port());
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(proxy_binary())
            .args([
                "redis",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--master",
                &format!("127.0.0.1:{master_port}"),
                "--state-dir",
                &state_dir.display().to_string(),
                "--admin",
                &admin,
            ])
            .args(extra)
            .env("PIKA_TTL_PROXY_LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let proxy = ProxyProcess {
            port,
            log: log.to_path_buf(),
            admin,
            child,
        };
        wait_until("proxy listens", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        proxy
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the process to exit on its own; returns its exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let killed = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(killed.success(), "kill -TERM {}", self.pid());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > PATIENCE {
                panic!("the proxy did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The proxy's Prometheus text from its admin API.
    pub fn metrics_text(&self) -> String {
        pika_ttl_proxy::cli::request(&self.admin, "GET", "/metrics", None, None)
            .map(|a| a.body)
            .unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident set size (VmHWM) in bytes.
    pub fn peak_rss(&self) -> u64 {
        self.status_bytes("VmHWM:")
    }

    /// Current resident set size (VmRSS) in bytes.
    pub fn rss(&self) -> u64 {
        self.status_bytes("VmRSS:")
    }

    fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"));
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
