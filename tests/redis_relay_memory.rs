//! Large values through the relay process (`pika-ttl-proxy redis`): a 64 MiB string
//! and a 1M-element list, once inside the full-sync payload and once in the command stream.
//! They must replicate exactly, and the relay's peak resident memory (VmHWM) must stay below
//! three times the largest value: payloads are streamed, never buffered, and a large entry is
//! held once, and only until it has been written: once everything is relayed, the resident
//! memory is below half the largest value.

#[allow(dead_code)]
mod support;

use support::redis_proxy::ProxyProcess;
use support::redis_server::{wait_acked, RedisServer};
use support::{free_port, metric_sum, wait_until};

const BIG: usize = 64 * 1024 * 1024;

/// Incompressible bytes (so the RDB really carries 64 MiB), from a seeded xorshift.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn fill_list(conn: &mut redis::Connection, key: &str, total: usize, batch: usize) {
    let mut i = 0;
    while i < total {
        let mut c = redis::cmd("RPUSH");
        c.arg(key);
        for j in i..(i + batch).min(total) {
            c.arg(format!("e{j}"));
        }
        let _: i64 = c.query(conn).unwrap();
        i += batch;
    }
}

fn digest(server: &RedisServer) -> String {
    redis::cmd("DEBUG")
        .arg("DIGEST")
        .query(&mut server.conn())
        .unwrap()
}

// Slow: about 13-26 s on 2 cores (debug build; ~150 MiB of payload and ~80 MiB of stream
// through the relay, plus filling and loading two 1M-element lists).
#[test]
fn large_values_replicate_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let master = RedisServer::start(
        dir.path(),
        "master",
        &["--repl-diskless-sync-delay".into(), "0".into()],
    );
    let mut mc = master.conn();
    // In the payload: a 64 MiB string and a 1M-element list.
    let _: () = redis::cmd("SET")
        .arg("big1")
        .arg(noise(BIG, 1))
        .arg("EX")
        .arg(5000)
        .query(&mut mc)
        .unwrap();
    fill_list(&mut mc, "list1", 1_000_000, 10_000);

    let port = free_port();
    let proxy = ProxyProcess::start(
        port,
        master.port,
        &dir.path().join("state"),
        &dir.path().join("proxy.log"),
        &[],
    );
    let replica = RedisServer::start_replica(dir.path(), "r1", port);
    wait_until("replica loaded the large payload", || replica.link_up());

    // In the stream: another 64 MiB string (volatile, then appended to: a rewrite) and a
    // 1M-element list in ten 100k-element commands.
    let _: () = redis::cmd("SET")
        .arg("big2")
        .arg(noise(BIG, 2))
        .arg("EX")
        .arg(5000)
        .query(&mut mc)
        .unwrap();
    let _: i64 = redis::cmd("APPEND")
        .arg("big2")
        .arg("tail")
        .query(&mut mc)
        .unwrap();
    fill_list(&mut mc, "list2", 1_000_000, 100_000);
    let offset = wait_acked(&master, &[replica.port]);

    let mut rc = replica.conn();
    for key in ["big1", "big2", "list1", "list2"] {
        let expire_m: i64 = redis::cmd("PEXPIRETIME").arg(key).query(&mut mc).unwrap();
        let expire_r: i64 = redis::cmd("PEXPIRETIME").arg(key).query(&mut rc).unwrap();
        assert_eq!(expire_m, expire_r, "{key} expiry");
    }
    let len: i64 = redis::cmd("STRLEN").arg("big2").query(&mut rc).unwrap();
    assert_eq!(len as usize, BIG + 4);
    let llen: i64 = redis::cmd("LLEN").arg("list2").query(&mut rc).unwrap();
    assert_eq!(llen, 1_000_000);
    assert_eq!(digest(&master), digest(&replica), "data sets differ");

    let peak = proxy.peak_rss();
    let now = proxy.rss();
    println!(
        "master_repl_offset={offset}; proxy VmHWM = {:.1} MiB (bound {} MiB), VmRSS now {:.1} MiB (bound {} MiB)",
        peak as f64 / 1048576.0,
        3 * BIG / 1048576,
        now as f64 / 1048576.0,
        BIG / 2 / 1048576
    );
    let m = proxy.metrics_text();
    let rewritten = metric_sum(
        &m,
        "pika_ttl_proxy_entries_total",
        &[("family", "string-append"), ("outcome", "rewritten")],
    );
    assert_eq!(
        rewritten, 1.0,
        "APPEND on the volatile big2 was not rewritten"
    );
    assert!(
        peak < 3 * BIG as u64,
        "proxy peak memory {peak} B exceeds 3 x the largest value"
    );
    // Once a large entry has been written to the replica the link no longer holds its room.
    assert!(
        now < BIG as u64 / 2,
        "proxy still holds {now} B after the large values were relayed"
    );
}
