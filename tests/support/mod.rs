//! Test support shared by every integration test: Pika protocol peers and the Pika relay process
//! (`pika_peer`, `proxy`), the plain TCP forwarder of latency baselines (`forwarder`), real `redis-server`s and the Redis relay (`redis_server`,
//! `redis_proxy`, `raw_replica`), the Redis load generator (`workload`), a live Prometheus
//! (`prom`), Pika captures (`pika_captures`, `pika_wire_builders`), and the small helpers below.
//!
//! Each test file compiles this module on its own and uses part of it, so each declares it as
//! `#[allow(dead_code)] mod support;`.

pub mod forwarder;
pub mod pika_captures;
pub mod pika_peer;
pub mod pika_wire_builders;
pub mod prom;
pub mod proxy;
pub mod raw_replica;
pub mod redis_proxy;
pub mod redis_server;
pub mod workload;

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A captured fixture file (see `pika_ttl_proxy::fixtures` for where it is looked for).
pub fn fixture(relative: &str) -> Vec<u8> {
    pika_ttl_proxy::fixtures::read(relative).unwrap_or_else(|e| panic!("{e}"))
}

/// The product binary (`pika-ttl-proxy`), built by cargo for integration tests.
pub fn proxy_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pika-ttl-proxy"))
}

/// A TCP port free on 127.0.0.1 right now (for one listener; Pika's port triples come from
/// [`pika_peer::net::free_base_port`]).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// How long any "eventually" condition of [`wait_until`] may take before the test fails.
/// Generous: this is a liveness bound on a loaded 2-core machine, not a performance assertion.
/// (The async Pika peer tests use [`pika_peer::net::wait_until`] and its own `PATIENCE`.)
pub const PATIENCE: Duration = Duration::from_secs(90);

/// Polls `cond` every 50 ms; panics naming `what` when it does not hold within [`PATIENCE`].
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

/// A child process (a `redis-cli`, a Prometheus, …) killed and reaped on drop, also when the
/// test panics.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
