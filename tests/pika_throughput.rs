//! Pika relay throughput with the protocol peers (no real Pika can run here): the fake master
//! streams N items to a fake replica directly and, in the same run, through the real
//! `pika-ttl-proxy pika` process; prints items/s for both and the ratio. `#[ignore]`: it is a
//! measurement, run by `scripts/bench.sh` (`cargo test --release --test pika_throughput --
//! --ignored --nocapture`), not a test with a timed assertion.

mod support;

use std::time::{Duration, Instant};
use support::pika_peer::fake_master::{FakeMaster, MasterOptions};
use support::pika_peer::fake_replica::FakeReplica;
use support::pika_peer::net::wait_until;
use support::proxy::ProxyProcess;

const T0: i64 = 1_795_469_984_000;

async fn run(n: usize, through_proxy: bool) -> (f64, usize) {
    let master = FakeMaster::start(MasterOptions::default(), T0).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = if through_proxy {
        let port = support::pika_peer::net::free_base_port();
        let master_port = master.port;
        let path = dir.path().to_path_buf();
        Some(
            tokio::task::spawn_blocking(move || {
                ProxyProcess::start(port, master_port, &path, &["--empty-at-origin"])
            })
            .await
            .unwrap(),
        )
    } else {
        None
    };
    let target = proxy.as_ref().map(|p| p.port).unwrap_or(master.port);
    let replica = FakeReplica::start(target, 19231, T0);
    assert!(wait_until(Duration::from_secs(60), || replica.is_streaming()).await);
    // Timed from the first write to the last apply (the master's own work is in both runs).
    // Half the items touch volatile keys, so through the proxy they are rewritten.
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
    drop(proxy);
    (secs, total as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by scripts/bench.sh"]
async fn pika_relay_throughput_direct_vs_proxied() {
    let n: usize = std::env::var("PIKA_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let (direct, items) = run(n, false).await;
    let (proxied, _) = run(n, true).await;
    println!(
        "pika relay (protocol peers): {items} items; direct {:.0} items/s, through the proxy {:.0} items/s, ratio {:.3}",
        items as f64 / direct,
        items as f64 / proxied,
        direct / proxied
    );
}
