//! Shared harness of the Redis relay integration tests: real `redis-server` processes on free
//! loopback ports (killed on drop, also when a test panics), the relay either in-process or as
//! the real `pika-ttl-proxy redis` binary, a seeded workload touching every rewrite family, and
//! helpers to compare whole data sets (values and absolute expiry times).
//!

#![allow(dead_code)]

use pika_ttl_proxy::families::FamilySwitches;
use pika_ttl_proxy::redis_relay::{serve_on, RedisRelayConfig, RelayShared};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::{Commands, Connection, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// How long any "eventually" condition may take before the test fails. Generous: this is a
/// liveness bound on a loaded 2-core machine, not a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(90);

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

/// Sum of every sample of `name` whose labels include all of `labels`, in a Prometheus text
/// rendering.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            if !ok {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > PATIENCE {
            panic!("gave up waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A `redis-server` child process; killed (SIGKILL) and reaped on drop.
pub struct RedisServer {
    pub port: u16,
    /// From `--requirepass` in the start arguments; used by every helper connection.
    pub password: Option<String>,
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl RedisServer {
    /// Start a server with persistence off, its log in `dir/<name>.log`, plus `extra` args.
    pub fn start(dir: &Path, name: &str, extra: &[String]) -> RedisServer {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let data = dir.join(format!("{name}-data"));
        std::fs::create_dir_all(&data).unwrap();
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            data.display().to_string(),
            "--logfile".into(),
            log.display().to_string(),
            "--enable-debug-command".into(),
            "yes".into(),
        ];
        args.extend(extra.iter().cloned());
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let password = extra
            .windows(2)
            .find(|w| w[0] == "--requirepass")
            .map(|w| w[1].clone());
        let server = RedisServer {
            port,
            password,
            name: name.to_string(),
            log,
            child,
        };
        wait_until(&format!("{name} answers PING"), || {
            // Raw, so a server with requirepass (-NOAUTH) also counts as up.
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            let mut reply = [0u8; 6];
            s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut reply).is_ok()
                && (&reply == b"+PONG\r" || &reply == b"-NOAUT")
        });
        server
    }

    /// A replica of `master_port`.
    pub fn start_replica(dir: &Path, name: &str, master_port: u16) -> RedisServer {
        Self::start(
            dir,
            name,
            &[
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.to_string(),
            ],
        )
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    pub fn conn(&self) -> Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    pub fn info(&self, section: &str) -> BTreeMap<String, String> {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn())
            .unwrap();
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    /// `(port, state, offset)` of every replica the master lists.
    pub fn replicas(&self) -> Vec<(u16, String, u64)> {
        self.info("replication")
            .iter()
            .filter(|(k, _)| k.starts_with("slave") && k[5..].chars().all(|c| c.is_ascii_digit()))
            .map(|(_, v)| {
                let fields: BTreeMap<&str, &str> =
                    v.split(',').filter_map(|f| f.split_once('=')).collect();
                (
                    fields["port"].parse().unwrap(),
                    fields["state"].to_string(),
                    fields["offset"].parse().unwrap(),
                )
            })
            .collect()
    }

    pub fn master_offset(&self) -> u64 {
        self.info("replication")["master_repl_offset"]
            .parse()
            .unwrap()
    }

    pub fn link_up(&self) -> bool {
        self.info("replication")
            .get("master_link_status")
            .is_some_and(|s| s == "up")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
pub fn proxy_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pika-ttl-proxy"))
}

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

/// One key's full observable state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    pub kind: String,
    pub value: Vec<String>,
    pub expire_at_ms: i64,
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Double(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// Every key of every DB (0..16) with type, value and `PEXPIRETIME`.
pub fn snapshot(conn: &mut Connection) -> BTreeMap<(u32, String), KeyState> {
    let mut all = BTreeMap::new();
    for db in 0..16u32 {
        redis::cmd("SELECT").arg(db).query::<()>(conn).unwrap();
        let keys: Vec<String> = {
            let iter: redis::Iter<String> = conn.scan().unwrap();
            iter.collect::<Result<Vec<_>, _>>().unwrap()
        };
        for key in keys {
            let kind: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
            let mut value: Vec<String> = match kind.as_str() {
                "string" => vec![conn
                    .get::<_, Vec<u8>>(&key)
                    .unwrap()
                    .escape_ascii()
                    .to_string()],
                "hash" => {
                    let v: Vec<Value> = redis::cmd("HGETALL").arg(&key).query(conn).unwrap();
                    let mut pairs: Vec<String> = v
                        .chunks(2)
                        .map(|c| format!("{}={}", text(&c[0]), text(&c[1])))
                        .collect();
                    pairs.sort();
                    pairs
                }
                "list" => conn.lrange(&key, 0, -1).unwrap(),
                "set" => conn.smembers(&key).unwrap(),
                "zset" => {
                    let v: Vec<Value> = redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query(conn)
                        .unwrap();
                    v.iter().map(text).collect()
                }
                other => vec![format!("<{other}>")],
            };
            if kind == "set" {
                value.sort();
            }
            let expire_at_ms: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(conn).unwrap();
            all.insert(
                (db, key),
                KeyState {
                    kind,
                    value,
                    expire_at_ms,
                },
            );
        }
    }
    redis::cmd("SELECT").arg(0).query::<()>(conn).unwrap();
    all
}

/// Assert two data sets are equal, naming the first differences.
pub fn assert_same_data(
    what: &str,
    master: &BTreeMap<(u32, String), KeyState>,
    replica: &BTreeMap<(u32, String), KeyState>,
) {
    if master == replica {
        return;
    }
    let mut diffs = Vec::new();
    for (k, v) in master {
        match replica.get(k) {
            Some(r) if r == v => {}
            other => diffs.push(format!("{k:?}: master {v:?} replica {other:?}")),
        }
    }
    for k in replica.keys().filter(|k| !master.contains_key(*k)) {
        diffs.push(format!("{k:?}: only on the replica {:?}", replica[k]));
    }
    diffs.truncate(10);
    panic!(
        "{what}: data differs ({} keys on master):\n{}",
        master.len(),
        diffs.join("\n")
    );
}

/// Counts of what the workload sent, to check it exercised every family.
#[derive(Debug, Default)]
pub struct WorkloadStats {
    pub commands: usize,
    pub by_kind: BTreeMap<&'static str, usize>,
}

/// A seeded random workload over every rewrite family, transactions, scripts and several DBs.
/// Every TTL is at least 200 s so nothing expires on its own while the test compares.
pub fn run_workload(conn: &mut Connection, seed: u64, n: usize) -> WorkloadStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = WorkloadStats::default();
    let ttl = |rng: &mut StdRng| rng.random_range(200..2000u64);
    let mut db = 0u32;
    for i in 0..n {
        let k = rng.random_range(0..12u32);
        let choice = rng.random_range(0..20u32);
        let now_s = (now_ms() / 1000) as u64;
        let mut c;
        let kind: &'static str = match choice {
            0 => {
                c = redis::cmd("SET");
                c.arg(format!("s{k}"))
                    .arg(format!("v{i}"))
                    .arg("EX")
                    .arg(ttl(&mut rng));
                "set-ex"
            }
            1 => {
                c = redis::cmd("SET");
                c.arg(format!("s{k}")).arg(format!("v{i}"));
                if rng.random_bool(0.5) {
                    c.arg("KEEPTTL");
                }
                "set"
            }
            2 => {
                c = redis::cmd("SET");
                c.arg(format!("s{k}")).arg(format!("n{i}"));
                if rng.random_bool(0.5) {
                    c.arg("NX").arg("EX").arg(ttl(&mut rng));
                } else {
                    c.arg("XX").arg("PX").arg(ttl(&mut rng) * 1000);
                }
                "set-nx-xx"
            }
            3 => {
                if rng.random_bool(0.5) {
                    c = redis::cmd("SETEX");
                    c.arg(format!("c{k}"))
                        .arg(ttl(&mut rng))
                        .arg(rng.random_range(0..100));
                } else {
                    c = redis::cmd("PSETEX");
                    c.arg(format!("c{k}"))
                        .arg(ttl(&mut rng) * 1000)
                        .arg(rng.random_range(0..100));
                }
                "setex"
            }
            4 => {
                let which = ["INCR", "INCRBY", "DECR", "DECRBY"][rng.random_range(0..4)];
                c = redis::cmd(which);
                c.arg(format!("c{k}"));
                if which.ends_with("BY") {
                    c.arg(rng.random_range(1..10));
                }
                "counter"
            }
            5 => {
                c = redis::cmd("INCRBYFLOAT");
                c.arg(format!("f{k}")).arg("1.5");
                "incrbyfloat"
            }
            6 => {
                let key = match rng.random_range(0..7) {
                    0 => format!("s{k}"),
                    6 => format!("a{k}"),
                    1 => format!("c{k}"),
                    2 => format!("h{k}"),
                    3 => format!("l{k}"),
                    4 => format!("st{k}"),
                    _ => format!("z{k}"),
                };
                match rng.random_range(0..5) {
                    0 => {
                        c = redis::cmd("EXPIRE");
                        c.arg(key).arg(ttl(&mut rng));
                    }
                    1 => {
                        c = redis::cmd("PEXPIRE");
                        c.arg(key).arg(ttl(&mut rng) * 1000);
                    }
                    2 => {
                        c = redis::cmd("EXPIREAT");
                        c.arg(key).arg(now_s + ttl(&mut rng));
                    }
                    3 => {
                        c = redis::cmd("PEXPIREAT");
                        c.arg(key).arg((now_s + ttl(&mut rng)) * 1000 + 7);
                    }
                    _ => {
                        c = redis::cmd("EXPIRE");
                        c.arg(key).arg(ttl(&mut rng) + 3000).arg("GT");
                    }
                }
                "expire"
            }
            7 => {
                match rng.random_range(0..3) {
                    0 => {
                        c = redis::cmd("APPEND");
                        c.arg(format!("a{k}")).arg("xy");
                    }
                    1 => {
                        c = redis::cmd("SETRANGE");
                        c.arg(format!("a{k}")).arg(rng.random_range(0..4)).arg("Q");
                    }
                    _ => {
                        c = redis::cmd("SETBIT");
                        c.arg(format!("a{k}")).arg(rng.random_range(0..64)).arg(1);
                    }
                }
                "append"
            }
            8 => {
                match rng.random_range(0..4) {
                    0 => {
                        c = redis::cmd("GETSET");
                        c.arg(format!("a{k}")).arg(format!("g{i}"));
                    }
                    1 => {
                        c = redis::cmd("SETNX");
                        c.arg(format!("a{k}")).arg(format!("x{i}"));
                    }
                    2 => {
                        c = redis::cmd("GETEX");
                        c.arg(format!("s{k}")).arg("EX").arg(ttl(&mut rng));
                    }
                    _ => {
                        c = redis::cmd("GETEX");
                        c.arg(format!("s{k}")).arg("PERSIST");
                    }
                }
                "string-set"
            }
            9 => {
                match rng.random_range(0..4) {
                    0 => {
                        c = redis::cmd("HSET");
                        c.arg(format!("h{k}")).arg(format!("f{}", i % 5)).arg(i);
                    }
                    1 => {
                        c = redis::cmd("HINCRBY");
                        c.arg(format!("h{k}")).arg("n").arg(2);
                    }
                    2 => {
                        c = redis::cmd("HINCRBYFLOAT");
                        c.arg(format!("h{k}")).arg("fl").arg("0.25");
                    }
                    _ => {
                        c = redis::cmd("HSETNX");
                        c.arg(format!("h{k}")).arg(format!("u{}", i % 7)).arg("z");
                    }
                }
                "hash"
            }
            10 => {
                match rng.random_range(0..4) {
                    0 => {
                        c = redis::cmd("LPUSH");
                        c.arg(format!("l{k}")).arg(i);
                    }
                    1 => {
                        c = redis::cmd("RPUSH");
                        c.arg(format!("l{k}")).arg(i).arg(i + 1);
                    }
                    2 => {
                        c = redis::cmd("LINSERT");
                        c.arg(format!("l{k}"))
                            .arg("BEFORE")
                            .arg(i.saturating_sub(1))
                            .arg("ins");
                    }
                    _ => {
                        c = redis::cmd("RPUSHX");
                        c.arg(format!("l{k}")).arg("x");
                    }
                }
                "list"
            }
            11 => {
                if rng.random_bool(0.7) {
                    c = redis::cmd("SADD");
                    c.arg(format!("st{k}")).arg(format!("m{}", i % 9));
                } else {
                    c = redis::cmd("SMOVE");
                    c.arg(format!("st{k}"))
                        .arg(format!("st{}", (k + 1) % 12))
                        .arg(format!("m{}", i % 9));
                }
                "set-family"
            }
            12 => {
                if rng.random_bool(0.6) {
                    c = redis::cmd("ZADD");
                    c.arg(format!("z{k}"))
                        .arg(i % 50)
                        .arg(format!("m{}", i % 6));
                } else {
                    c = redis::cmd("ZINCRBY");
                    c.arg(format!("z{k}")).arg(2).arg(format!("m{}", i % 6));
                }
                "zset"
            }
            13 => {
                let mut p = redis::pipe();
                p.atomic()
                    .cmd("INCR")
                    .arg(format!("c{k}"))
                    .cmd("HINCRBY")
                    .arg(format!("h{k}"))
                    .arg("t")
                    .arg(1)
                    .cmd("SET")
                    .arg(format!("s{}", (k + 3) % 12))
                    .arg("tx")
                    .arg("EX")
                    .arg(ttl(&mut rng))
                    .cmd("RPUSH")
                    .arg(format!("l{k}"))
                    .arg("tx");
                let _: Result<Value, _> = p.query(conn);
                stats.commands += 1;
                *stats.by_kind.entry("multi").or_default() += 1;
                continue;
            }
            14 => {
                let script = "redis.call('incr', KEYS[1]); \
                    redis.call('pexpire', KEYS[1], ARGV[1]); \
                    redis.call('hincrby', KEYS[2], 'lua', 1); \
                    redis.call('set', KEYS[3], ARGV[2], 'EX', 900); return 1";
                c = redis::cmd("EVAL");
                c.arg(script)
                    .arg(3)
                    .arg(format!("c{k}"))
                    .arg(format!("h{k}"))
                    .arg(format!("s{}", (k + 5) % 12))
                    .arg(ttl(&mut rng) * 1000)
                    .arg(format!("lua{i}"));
                "eval"
            }
            15 => {
                let script = "redis.call('select', 2); redis.call('incr', KEYS[1]); \
                    redis.call('expire', KEYS[1], 1500); return 1";
                c = redis::cmd("EVAL");
                c.arg(script).arg(1).arg(format!("sc{k}"));
                "eval-select"
            }
            16 => {
                db = (db + 1 + rng.random_range(0..3)) % 4;
                c = redis::cmd("SELECT");
                c.arg(db);
                "select"
            }
            17 => {
                match rng.random_range(0..3) {
                    0 => {
                        c = redis::cmd("PERSIST");
                        c.arg(format!("c{k}"));
                    }
                    1 => {
                        c = redis::cmd("DEL");
                        c.arg(format!("a{k}"));
                    }
                    _ => {
                        c = redis::cmd("RENAME");
                        c.arg(format!("s{k}")).arg(format!("s{}", (k + 7) % 12));
                    }
                }
                "persist-del-rename"
            }
            18 => {
                c = redis::cmd("SET");
                c.arg(format!("c{k}"))
                    .arg(rng.random_range(0..1000))
                    .arg("EX")
                    .arg(ttl(&mut rng));
                "counter-seed"
            }
            _ => {
                c = redis::cmd("HSET");
                c.arg(format!("h{k}")).arg("seed").arg(i);
                let _: Result<Value, _> = c.query(conn);
                c = redis::cmd("PEXPIRE");
                c.arg(format!("h{k}")).arg(ttl(&mut rng) * 1000);
                "hash-seed"
            }
        };
        // Errors (wrong type, RENAME of a missing key, …) are part of a realistic workload:
        // the master propagates nothing for them.
        let _: Result<Value, _> = c.query(conn);
        stats.commands += 1;
        *stats.by_kind.entry(kind).or_default() += 1;
    }
    redis::cmd("SELECT").arg(0).query::<()>(conn).unwrap();
    stats
}

/// Data the workload relies on before replicas attach: volatile keys of every type, so the RDB
/// seeds the proxy's table.
pub fn preload(conn: &mut Connection) {
    for k in 0..12 {
        let _: () = redis::cmd("SET")
            .arg(format!("c{k}"))
            .arg(k * 10)
            .arg("EX")
            .arg(1000 + k)
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg(format!("h{k}"))
            .arg("f")
            .arg(k)
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("PEXPIRE")
            .arg(format!("h{k}"))
            .arg(1_200_000)
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("RPUSH")
            .arg(format!("l{k}"))
            .arg(0)
            .arg(1)
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("EXPIRE")
            .arg(format!("l{k}"))
            .arg(1300)
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("ZADD")
            .arg(format!("z{k}"))
            .arg(1)
            .arg("a")
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("EXPIRE")
            .arg(format!("z{k}"))
            .arg(1400)
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("SADD")
            .arg(format!("st{k}"))
            .arg("m0")
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("EXPIRE")
            .arg(format!("st{k}"))
            .arg(1500)
            .query(conn)
            .unwrap();
    }
}

/// Wait until the master lists a replica on every port of `ports`, online, with its offset
/// equal to `master_repl_offset`; returns that offset.
pub fn wait_acked(master: &RedisServer, ports: &[u16]) -> u64 {
    let start = Instant::now();
    loop {
        let offset = master.master_offset();
        let replicas = master.replicas();
        let all = ports.iter().all(|p| {
            replicas
                .iter()
                .any(|(port, state, off)| port == p && state == "online" && *off == offset)
        });
        if all {
            return offset;
        }
        let last = format!("master_repl_offset={offset} replicas={replicas:?}");
        if start.elapsed() > PATIENCE {
            panic!("replicas never acknowledged the master offset: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scripted replica on a raw socket: handshake, `PSYNC ? -1`, read the `$len` payload, then
/// record every stream byte and acknowledge everything received every 100 ms.
pub struct RawReplica {
    pub base_offset: u64,
    pub payload_len: u64,
    pub data: Arc<Mutex<Vec<u8>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let t = line.trim_end_matches(['\r', '\n']).to_string();
        if !t.is_empty() {
            return t;
        }
        assert!(!line.is_empty(), "connection closed during handshake");
    }
}

impl RawReplica {
    pub fn attach(port: u16, listening_port: u16) -> RawReplica {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut send = |args: &[&str]| {
            let mut out = format!("*{}\r\n", args.len());
            for a in args {
                out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            w.write_all(out.as_bytes()).unwrap();
        };
        send(&["PING"]);
        assert_eq!(read_line(&mut r), "+PONG");
        send(&["REPLCONF", "listening-port", &listening_port.to_string()]);
        assert_eq!(read_line(&mut r), "+OK");
        send(&["REPLCONF", "capa", "psync2"]);
        assert_eq!(read_line(&mut r), "+OK");
        send(&["PSYNC", "?", "-1"]);
        let reply = read_line(&mut r);
        let base_offset: u64 = reply
            .strip_prefix("+FULLRESYNC ")
            .unwrap_or_else(|| panic!("unexpected PSYNC reply {reply}"))
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let header = read_line(&mut r);
        let payload_len: u64 = header
            .strip_prefix('$')
            .unwrap_or_else(|| panic!("unexpected payload header {header}"))
            .parse()
            .unwrap_or_else(|_| panic!("not $len framing: {header}"));
        let mut payload = vec![0u8; payload_len as usize];
        r.read_exact(&mut payload).unwrap();
        assert!(payload.starts_with(b"REDIS"));
        let data = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d2, s2) = (data.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            r.get_ref()
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = vec![0u8; 65536];
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => d2.lock().unwrap().extend_from_slice(&buf[..n]),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
                let off = base_offset + d2.lock().unwrap().len() as u64;
                let off = off.to_string();
                let ack = format!(
                    "*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n${}\r\n{off}\r\n",
                    off.len()
                );
                if w.write_all(ack.as_bytes()).is_err() {
                    break;
                }
            }
        });
        RawReplica {
            base_offset,
            payload_len,
            data,
            stop,
            thread: Some(thread),
        }
    }

    /// Replication offset of the last byte received.
    pub fn offset(&self) -> u64 {
        self.base_offset + self.data.lock().unwrap().len() as u64
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.data.lock().unwrap().clone()
    }
}

impl Drop for RawReplica {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
