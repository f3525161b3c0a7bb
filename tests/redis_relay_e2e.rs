//! End to end with real Redis 7.0 servers: master → relay → two replicas (plus
//! `redis-cli --replica` through the relay), a seeded workload over every family, then:
//! values and absolute TTLs equal everywhere, the master sees exact offsets, `WAIT` works,
//! rewrites happened, and a killed replica link resumes with a partial resynchronisation.

#[allow(dead_code)]
mod support;

use pika_ttl_proxy::families::FamilySwitches;
use std::process::{Command, Stdio};
use support::redis_proxy::{metrics, InProcessProxy};
use support::redis_server::{assert_same_data, snapshot, wait_acked, RedisServer};
use support::workload::{preload, run_workload};
use support::{metric_sum, wait_until, ChildGuard};

fn entries(text: &str, family: &str, outcome: &str) -> f64 {
    metric_sum(
        text,
        "pika_ttl_proxy_entries_total",
        &[("family", family), ("outcome", outcome)],
    )
}

#[test]
fn two_replicas_converge_ack_exactly_and_resume_partially() {
    let dir = tempfile::tempdir().unwrap();
    let master = RedisServer::start(
        dir.path(),
        "master",
        &["--repl-diskless-sync-delay".into(), "0".into()],
    );
    let mut mc = master.conn();
    preload(&mut mc);
    let proxy = InProcessProxy::start(
        master.port,
        &dir.path().join("state"),
        FamilySwitches::all_on(),
    );
    let r1 = RedisServer::start_replica(dir.path(), "r1", proxy.port);
    let r2 = RedisServer::start_replica(dir.path(), "r2", proxy.port);
    wait_until("both replicas synced through the proxy", || {
        r1.link_up() && r2.link_up()
    });

    // redis-cli's legacy SYNC path through the proxy shows the rewritten stream.
    let cli_out = dir.path().join("cli-replica.txt");
    let _cli = ChildGuard(
        Command::new("redis-cli")
            .args(["-p", &proxy.port.to_string(), "--replica"])
            .stdout(std::fs::File::create(&cli_out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("redis-cli --replica receives the stream", || {
        let _: () = redis::cmd("PUBLISH")
            .arg("probe")
            .arg("x")
            .query(&mut mc)
            .unwrap();
        std::fs::read_to_string(&cli_out)
            .unwrap_or_default()
            .contains("\"PUBLISH\",\"probe\"")
    });

    // A rewrite that is certain: INCR on a key with a TTL, from a client (upper-case INCR).
    let _: () = redis::cmd("SET")
        .arg("cnt")
        .arg(5)
        .arg("EX")
        .arg(1000)
        .query(&mut mc)
        .unwrap();
    let _: i64 = redis::cmd("INCR").arg("cnt").query(&mut mc).unwrap();
    let stats = run_workload(&mut mc, 7, 3000);
    println!("workload 1: {stats:?}");
    assert!(
        stats.by_kind.len() >= 18,
        "workload missed kinds: {stats:?}"
    );

    let offset = wait_acked(&master, &[r1.port, r2.port]);
    let replica_offset: u64 = r1.info("replication")["master_repl_offset"]
        .parse()
        .unwrap();
    println!(
        "after workload 1: master_repl_offset={offset}, replica r1 offset (proxy's D space)={replica_offset}, replicas={:?}",
        master.replicas()
    );
    assert!(
        replica_offset > offset,
        "rewrites must make the replica's offset run ahead of the master's"
    );
    let expected = snapshot(&mut mc);
    assert!(expected.len() > 60, "workload produced too few keys");
    assert!(expected.values().filter(|k| k.expire_at_ms > 0).count() > 30);
    assert_same_data("r1", &expected, &snapshot(&mut r1.conn()));
    assert_same_data("r2", &expected, &snapshot(&mut r2.conn()));
    let digest: String = redis::cmd("DEBUG").arg("DIGEST").query(&mut mc).unwrap();
    let d1: String = redis::cmd("DEBUG")
        .arg("DIGEST")
        .query(&mut r1.conn())
        .unwrap();
    assert_eq!(digest, d1);

    // WAIT right after a write: the GETACK goes down through the proxy, the replicas' ACKs
    // (in the proxy's offsets) come back translated, and must cover the write's offset.
    let _: i64 = redis::cmd("INCR").arg("cnt").query(&mut mc).unwrap();
    let waited: i64 = redis::cmd("WAIT").arg(2).arg(1000).query(&mut mc).unwrap();
    assert_eq!(waited, 2, "WAIT 2 1000 through the proxy");

    let m = metrics().render();
    for family in ["string-counter", "hash", "list", "set", "zset", "expire"] {
        let n = entries(&m, family, "rewritten");
        println!("rewritten {family}: {n}");
        assert!(n > 0.0, "no {family} entry was rewritten");
    }
    assert!(entries(&m, "string-append", "rewritten") > 0.0);

    let cli_text = std::fs::read_to_string(&cli_out).unwrap();
    let lines: Vec<&str> = cli_text.lines().collect();
    let rewritten_incr = lines
        .windows(2)
        .any(|w| w[0] == "\"INCR\",\"cnt\"" && w[1].starts_with("\"PEXPIREAT\",\"cnt\","));
    assert!(
        rewritten_incr,
        "redis-cli --replica through the proxy did not show INCR cnt + PEXPIREAT cnt:\n{}",
        lines
            .iter()
            .take(40)
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let cnt_ttl: i64 = redis::cmd("PEXPIRETIME").arg("cnt").query(&mut mc).unwrap();
    assert!(lines.contains(&format!("\"PEXPIREAT\",\"cnt\",\"{cnt_ttl}\"").as_str()));

    // Kill r1's master link: it must come back with a partial resynchronisation.
    let full_before = metric_sum(&metrics().render(), "pika_ttl_proxy_full_syncs_total", &[]);
    let partial_before = metric_sum(
        &metrics().render(),
        "pika_ttl_proxy_partial_syncs_total",
        &[],
    );
    let ok_before = r1.log_count("Successful partial resynchronization");
    let full_r1_before = r1.log_count("Full resync from master");
    assert_eq!(ok_before, 0);
    assert_eq!(full_r1_before, 1);
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut r1.conn())
        .unwrap();
    assert_eq!(killed, 1);
    wait_until("r1 resumed partially", || {
        r1.log_count("Successful partial resynchronization") == 1 && r1.link_up()
    });
    let m = metrics().render();
    assert_eq!(
        metric_sum(&m, "pika_ttl_proxy_full_syncs_total", &[]),
        full_before,
        "a full sync happened"
    );
    assert_eq!(
        metric_sum(&m, "pika_ttl_proxy_partial_syncs_total", &[]),
        partial_before + 1.0
    );
    assert_eq!(r1.log_count("Full resync from master"), 1);
    assert!(master.log_text().contains(&format!(
        "Partial resynchronization request from 127.0.0.1:{} accepted",
        r1.port
    )));

    // The stream continues correctly after the partial resync.
    let stats = run_workload(&mut mc, 8, 1000);
    println!("workload 2: {stats:?}");
    let offset = wait_acked(&master, &[r1.port, r2.port]);
    println!(
        "after workload 2: master_repl_offset={offset}, replicas={:?}",
        master.replicas()
    );
    let expected = snapshot(&mut mc);
    assert_same_data(
        "r1 after partial resync",
        &expected,
        &snapshot(&mut r1.conn()),
    );
    assert_same_data("r2", &expected, &snapshot(&mut r2.conn()));
    let waited: i64 = redis::cmd("WAIT").arg(2).arg(1000).query(&mut mc).unwrap();
    assert_eq!(waited, 2);
    let status = proxy.shared.sessions.snapshot();
    println!("sessions: {status:#?}");
    let streaming: Vec<_> = status
        .iter()
        .filter(|s| s.replica.ends_with(&format!(":{}", r1.port)))
        .collect();
    assert_eq!(streaming.len(), 1);
    assert_eq!(streaming[0].acked_upstream_offset, offset);
}
