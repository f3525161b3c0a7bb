//! Pika relay throughput with the protocol peers (no real Pika can run here): the fake master
//! streams N items to a fake replica directly and, in the same run, through the real
//! `pika-ttl-proxy pika` process; prints items/s for both and the ratio, and, at a fixed rate, the
//! latency from the master logging an item to the replica receiving it, directly, through a plain
//! TCP forwarder (the baseline of one more userspace hop, `support::forwarder`, in a process of
//! its own) and through the proxy. `#[ignore]`: these are
//! measurements, run by `scripts/bench.sh` (`cargo test --release --test pika_throughput --
//! --ignored --nocapture --test-threads 1`), not tests with timed assertions.

#[allow(dead_code)]
mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::pika_peer::fake_master::{FakeMaster, MasterOptions};
use support::pika_peer::fake_replica::FakeReplica;
use support::pika_peer::net::wait_until;
use support::proxy::ProxyProcess;

const T0: i64 = 1_795_469_984_000;

/// Set, it makes the test `tcp_forwarder_process` the forwarder of these pairs
/// (`support::forwarder::parse_pairs`).
const FORWARD_ENV: &str = "PIKA_BENCH_FORWARD";

/// The forwarder in a process of its own (this test binary running `tcp_forwarder_process`),
/// under `PIKA_TTL_PROXY_WRAPPER` like the proxy (e.g. `taskset -c 1`); killed when dropped.
struct ForwarderProcess {
    child: Child,
    port: u16,
}

impl ForwarderProcess {
    fn start(master_port: u16) -> ForwarderProcess {
        let port = support::pika_peer::net::free_base_port();
        let spec = [0u16, 2000, 10001]
            .iter()
            .map(|o| format!("127.0.0.1:{},127.0.0.1:{}", port + o, master_port + o))
            .collect::<Vec<_>>()
            .join(";");
        let child = support::proxy::wrapped(std::env::current_exe().unwrap())
            .args([
                "tcp_forwarder_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(FORWARD_ENV, spec)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port + 2000)).is_err() {
            assert!(Instant::now() < deadline, "the forwarder did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        ForwarderProcess { child, port }
    }
}

impl Drop for ForwarderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Not a test: the forwarder's process (see [`ForwarderProcess`]); without `PIKA_BENCH_FORWARD`
/// it returns at once.
#[test]
#[ignore = "the forwarder process of pika_relay_latency_at_a_fixed_rate"]
fn tcp_forwarder_process() {
    if let Ok(spec) = std::env::var(FORWARD_ENV) {
        let pairs = support::forwarder::parse_pairs(&spec).unwrap();
        if let Err(e) = support::forwarder::forward(&pairs) {
            panic!("forwarder: {e}");
        }
    }
}

/// A fake master and a fake replica, directly or through a relay process, streaming.
struct Peers {
    master: FakeMaster,
    proxy: Option<ProxyProcess>,
    replica: FakeReplica,
    _dir: tempfile::TempDir,
}

async fn peers(through_proxy: bool) -> Peers {
    let master = FakeMaster::start(MasterOptions::default(), T0).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = if through_proxy {
        let port = support::pika_peer::net::free_base_port();
        let master_port = master.port;
        let path = dir.path().to_path_buf();
        // PIKA_BENCH_PROXY_ARGS: more flags for the proxy (`--read-ahead-bytes 0` measures
        // the relay without its read-ahead).
        let extra = std::env::var("PIKA_BENCH_PROXY_ARGS").unwrap_or_default();
        Some(
            tokio::task::spawn_blocking(move || {
                let mut flags = vec!["--empty-at-origin"];
                flags.extend(extra.split_whitespace());
                ProxyProcess::start(port, master_port, &path, &flags)
            })
            .await
            .unwrap(),
        )
    } else {
        None
    };
    let target = proxy.as_ref().map_or(master.port, |p| p.port);
    let replica = FakeReplica::start(target, 19231, T0);
    assert!(wait_until(Duration::from_secs(60), || replica.is_streaming()).await);
    Peers {
        master,
        proxy,
        replica,
        _dir: dir,
    }
}

/// Seconds to stream `n` items, and the relay's CPU seconds meanwhile (through the proxy).
async fn run(n: usize, through_proxy: bool) -> (f64, usize, Option<f64>) {
    let Peers {
        master,
        proxy,
        replica,
        _dir,
    } = peers(through_proxy).await;
    // Timed from the first write to the last apply (the master's own work is in both runs).
    // Half the items touch volatile keys, so through the proxy they are rewritten.
    let cpu_before = proxy.as_ref().and_then(|p| p.cpu_seconds());
    let start = Instant::now();
    for i in 0..n / 2 {
        let k = format!("k{}", i % 1000);
        master.exec(&["SETEX", &k, "3600", "1"]);
        master.exec(&["INCR", &k]);
    }
    let total = (n / 2 * 2) as u64;
    assert!(
        wait_until(Duration::from_secs(300), || replica.applied_items()
            >= total)
        .await,
        "replica applied {} of {total}",
        replica.applied_items()
    );
    let secs = start.elapsed().as_secs_f64();
    let cpu = match (cpu_before, proxy.as_ref().and_then(|p| p.cpu_seconds())) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    if let Some(p) = proxy.as_ref() {
        // The offset-map journal: what it writes per item (before the items are sent).
        let metrics = p.metrics();
        let read = |name: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        };
        if let (Some(bytes), Some(syncs)) = (
            read("pika_ttl_proxy_state_write_bytes_total"),
            read("pika_ttl_proxy_state_write_seconds_count"),
        ) {
            println!(
                "pika relay (protocol peers): offset-map journal {:.1} bytes written per item, {:.0} syncs in {secs:.1} s",
                bytes / total as f64,
                syncs
            );
        }
    }
    drop(proxy);
    (secs, total as usize, cpu)
}

/// A measurement setting from the environment, or its default.
fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by scripts/bench.sh"]
async fn pika_relay_throughput_direct_vs_proxied() {
    let n: usize = setting("PIKA_BENCH_N", 100_000);
    let (direct, items, _) = run(n, false).await;
    let (proxied, _, cpu) = run(n, true).await;
    println!(
        "pika relay (protocol peers): {items} items; direct {:.0} items/s, through the proxy {:.0} items/s, ratio {:.3}",
        items as f64 / direct,
        items as f64 / proxied,
        direct / proxied
    );
    if let Some(cpu) = cpu.filter(|c| *c > 0.0) {
        // What one core of the relay sustains, whatever the peers beside it cost.
        println!(
            "pika relay (protocol peers): relay CPU {cpu:.2} s for {items} items = {:.0} items per relay CPU-second",
            items as f64 / cpu
        );
    }
}

/// Latency from the master logging an item to the replica receiving it, at a fixed rate.
struct Latencies {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    items: usize,
    rate: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Writes SETEX/INCR pairs on volatile keys at `rate` items/s for `secs` (batches every
/// millisecond on an absolute schedule) to one master with three replicas streaming at once:
/// directly, through the forwarder and through the proxy, so the host's noise hits the three
/// alike; measures log → arrival per item on each, in that order.
async fn paced(rate: usize, secs: f64) -> [Latencies; 3] {
    let master = FakeMaster::start(MasterOptions::default(), T0).await;
    let dir = tempfile::tempdir().unwrap();
    let master_port = master.port;
    let forwarder = tokio::task::spawn_blocking(move || ForwarderProcess::start(master_port))
        .await
        .unwrap();
    let port = support::pika_peer::net::free_base_port();
    let path = dir.path().to_path_buf();
    let extra = std::env::var("PIKA_BENCH_PROXY_ARGS").unwrap_or_default();
    let proxy = tokio::task::spawn_blocking(move || {
        let mut flags = vec!["--empty-at-origin"];
        flags.extend(extra.split_whitespace());
        ProxyProcess::start(port, master_port, &path, &flags)
    })
    .await
    .unwrap();
    let replicas = [
        FakeReplica::start(master.port, 19231, T0),
        FakeReplica::start(forwarder.port, 19232, T0),
        FakeReplica::start(proxy.port, 19233, T0),
    ];
    assert!(
        wait_until(Duration::from_secs(60), || replicas
            .iter()
            .all(FakeReplica::is_streaming))
        .await
    );
    let per_ms = (rate / 1000).max(2) / 2;
    let ticks = (secs * 1000.0) as u64;
    let start = Instant::now();
    let mut seq = 0usize;
    for tick in 0..ticks {
        let due = start + Duration::from_millis(tick);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        for _ in 0..per_ms {
            let k = format!("k{}", seq % 10_000);
            master.exec(&["SETEX", &k, "3600", "1"]);
            master.exec(&["INCR", &k]);
            seq += 1;
        }
    }
    let sent_for = start.elapsed().as_secs_f64();
    let total = (seq * 2) as u64;
    for replica in &replicas {
        assert!(
            wait_until(Duration::from_secs(120), || replica.applied_items()
                >= total)
            .await,
            "replica applied {} of {total}; its last events: {:?}",
            replica.applied_items(),
            replica.events().iter().rev().take(5).collect::<Vec<_>>()
        );
    }
    let logged = master.logged_at();
    let latencies = replicas.map(|replica| {
        let mut lat: Vec<f64> = logged
            .iter()
            .zip(replica.arrived_at().iter())
            .map(|(l, a)| a.saturating_duration_since(*l).as_secs_f64() * 1e6)
            .collect();
        lat.sort_by(|a, b| a.total_cmp(b));
        Latencies {
            p50: percentile(&lat, 0.5),
            p99: percentile(&lat, 0.99),
            p999: percentile(&lat, 0.999),
            max: lat[lat.len() - 1],
            items: lat.len(),
            rate: total as f64 / sent_for,
        }
    });
    drop((proxy, forwarder));
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by scripts/bench.sh"]
async fn pika_relay_latency_at_a_fixed_rate() {
    let rate: usize = setting("PIKA_BENCH_RATE", 100_000);
    let secs: f64 = setting("PIKA_BENCH_SECONDS", 3.0);
    let [direct, forwarded, proxied] = paced(rate, secs).await;
    let show = |l: &Latencies| {
        format!(
            "p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs ({} items at {:.0}/s)",
            l.p50, l.p99, l.p999, l.max, l.items, l.rate
        )
    };
    println!(
        "pika relay latency (protocol peers), log → arrival, direct:  {}",
        show(&direct)
    );
    println!(
        "pika relay latency (protocol peers), log → arrival, forwarded: {}",
        show(&forwarded)
    );
    println!(
        "pika relay latency (protocol peers), log → arrival, proxied: {}",
        show(&proxied)
    );
    let added = |through: &Latencies, base: &Latencies| {
        format!(
            "p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs",
            through.p50 - base.p50,
            through.p99 - base.p99,
            through.p999 - base.p999
        )
    };
    println!(
        "pika relay latency (protocol peers), added by the forwarder: {}",
        added(&forwarded, &direct)
    );
    println!(
        "pika relay latency (protocol peers), added by the proxy: {}",
        added(&proxied, &direct)
    );
    println!(
        "pika relay latency (protocol peers), proxy − forwarder: {}",
        added(&proxied, &forwarded)
    );
}
