//! The relay as its own process (`pika-ttl-proxy redis`), killed with SIGKILL:
//! restarted on the same state directory, the replica continues with a partial
//! resynchronisation from the persisted offset map; restarted with the state file deleted, the
//! replica gets exactly one full resynchronisation. Data (values and absolute TTLs) stays equal
//! to the master's throughout. Stopped with SIGTERM instead, the relay also keeps each
//! replica's expiry table: after the restart, entries on keys from before it are still decided
//! (rewritten or passed as known); after SIGKILL the table is rebuilt from its checkpoint along
//! the master's backlog, with the same effect. Killed while the master streams, it still
//! continues the replica partially every time.

#[allow(dead_code)]
mod support;

use support::redis_proxy::ProxyProcess;
use support::redis_server::{assert_same_data, snapshot, wait_acked, RedisServer};
use support::workload::{preload, run_workload};
use support::{free_port, metric_sum, wait_until};

const PARTIAL_OK: &str = "Successful partial resynchronization with master";
const FULL: &str = "Full resync from master";

fn check_data(master: &RedisServer, replica: &RedisServer, what: &str) {
    let offset = wait_acked(master, &[replica.port]);
    let replica_offset: u64 = replica.info("replication")["master_repl_offset"]
        .parse()
        .unwrap();
    println!("{what}: master_repl_offset={offset}, replica offset (D)={replica_offset}");
    assert_same_data(
        what,
        &snapshot(&mut master.conn()),
        &snapshot(&mut replica.conn()),
    );
}

#[test]
fn kill9_restart_resumes_partially_and_lost_state_costs_one_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // Disk-based full syncs: the payload arrives with `$<len>` framing (the other tests use
    // the diskless `$EOF:` framing).
    let master = RedisServer::start(
        dir.path(),
        "master",
        &["--repl-diskless-sync".into(), "no".into()],
    );
    let mut mc = master.conn();
    preload(&mut mc);
    let port = free_port();
    let p1 = ProxyProcess::start(port, master.port, &state, &dir.path().join("p1.log"), &[]);
    let r1 = RedisServer::start_replica(dir.path(), "r1", port);
    wait_until("replica synced", || r1.link_up());
    run_workload(&mut mc, 21, 1500);
    check_data(&master, &r1, "before the kill");
    assert_eq!(r1.log_count(FULL), 1);
    assert_eq!(r1.log_count(PARTIAL_OK), 0);
    assert!(
        p1.log_text().contains("eof_framed=false"),
        "expected $len framing"
    );
    let files = std::fs::read_dir(&state)
        .unwrap()
        .filter(|f| f.as_ref().unwrap().path().extension() == Some("state".as_ref()))
        .count();
    assert_eq!(files, 1, "one state file per replica");

    // kill -9, restart on the same state: partial resynchronisation.
    p1.kill9();
    wait_until("the replica noticed", || !r1.link_up());
    let p2 = ProxyProcess::start(port, master.port, &state, &dir.path().join("p2.log"), &[]);
    wait_until("replica resumed through the restarted proxy", || {
        r1.log_count(PARTIAL_OK) == 1 && r1.link_up()
    });
    assert_eq!(r1.log_count(FULL), 1, "the restart caused a full sync");
    assert!(master.log_text().contains(&format!(
        "Partial resynchronization request from 127.0.0.1:{} accepted",
        r1.port
    )));
    // The replica logs its success as soon as +CONTINUE arrives, maybe before the proxy's line.
    wait_until("the proxy logged the continuation", || {
        p2.log_text().contains("partial resync: continuing")
    });
    let log = p2.log_text();
    assert!(log.contains("restored replica state"), "{log}");
    run_workload(&mut mc, 22, 1000);
    check_data(&master, &r1, "after the restart");
    let m = p2.metrics_text();
    assert_eq!(
        metric_sum(&m, "pika_ttl_proxy_partial_syncs_total", &[]),
        1.0
    );
    assert_eq!(metric_sum(&m, "pika_ttl_proxy_full_syncs_total", &[]), 0.0);

    // kill -9 again and lose the state: exactly one full resynchronisation.
    p2.kill9();
    for f in std::fs::read_dir(&state).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    wait_until("the replica noticed", || !r1.link_up());
    let p3 = ProxyProcess::start(port, master.port, &state, &dir.path().join("p3.log"), &[]);
    wait_until("replica fully resynced", || {
        r1.log_count(FULL) == 2 && r1.link_up()
    });
    run_workload(&mut mc, 23, 1000);
    check_data(&master, &r1, "after losing the state");
    assert_eq!(r1.log_count(FULL), 2, "more than one full sync");
    assert_eq!(r1.log_count(PARTIAL_OK), 1);
    let m = p3.metrics_text();
    assert_eq!(metric_sum(&m, "pika_ttl_proxy_full_syncs_total", &[]), 1.0);
    assert_eq!(
        metric_sum(
            &m,
            "pika_ttl_proxy_full_syncs_total",
            &[("reason", "unknown_id")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "pika_ttl_proxy_partial_syncs_total", &[]),
        0.0
    );
}

/// Entries of each outcome the proxy counted.
fn outcomes(proxy: &ProxyProcess) -> (f64, f64, f64) {
    let m = proxy.metrics_text();
    let count = |outcome| metric_sum(&m, "pika_ttl_proxy_entries_total", &[("outcome", outcome)]);
    // The master's periodic PING (every 10 s) is a passed entry of no family; only entries on
    // keys are counted here.
    let keyless_passed = metric_sum(
        &m,
        "pika_ttl_proxy_entries_total",
        &[("outcome", "passed"), ("family", "none")],
    );
    (
        count("rewritten"),
        count("passed") - keyless_passed,
        count("unknown_key"),
    )
}

/// Writes a key with a TTL and one without, then, after the caller's restart, an INCR on the
/// first (rewritten when its TTL is known) and an APPEND on the second (passed when it is known
/// to have none).
fn late_writes(mc: &mut redis::Connection) {
    let _: () = redis::cmd("INCR").arg("late:counter").query(mc).unwrap();
    let _: () = redis::cmd("APPEND")
        .arg("late:plain")
        .arg("y")
        .query(mc)
        .unwrap();
}

#[test]
fn sigterm_restart_keeps_the_expiry_table_and_sigkill_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let master = RedisServer::start(dir.path(), "master", &[]);
    let mut mc = master.conn();
    let port = free_port();
    let p1 = ProxyProcess::start(port, master.port, &state, &dir.path().join("p1.log"), &[]);
    let r1 = RedisServer::start_replica(dir.path(), "r1", port);
    wait_until("replica synced", || r1.link_up());
    let _: () = redis::cmd("SETEX")
        .arg("late:counter")
        .arg(3600)
        .arg(5)
        .query(&mut mc)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("late:plain")
        .arg("x")
        .query(&mut mc)
        .unwrap();
    check_data(&master, &r1, "before the stop");

    // SIGTERM: a clean stop saves the table; the restart reads it back and deletes it.
    let status = p1.terminate();
    assert!(status.success(), "the proxy exited with {status}");
    let tables = |state: &std::path::Path| {
        std::fs::read_dir(state)
            .unwrap()
            .filter(|f| {
                f.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".table")
            })
            .count()
    };
    assert_eq!(tables(&state), 1, "one table snapshot per replica");
    wait_until("the replica noticed", || !r1.link_up());
    // The first checkpoint is taken as soon as the link streams, the next only 30 s later: the
    // writes below come after it, so the catch-up after the SIGKILL has entries to learn.
    let p2 = ProxyProcess::start(
        port,
        master.port,
        &state,
        &dir.path().join("p2.log"),
        &["--checkpoint-interval", "30"],
    );
    wait_until("replica resumed through the restarted proxy", || {
        r1.log_count(PARTIAL_OK) == 1 && r1.link_up()
    });
    wait_until("the proxy logged the restored table", || {
        p2.log_text().contains("table_complete=true")
    });
    let log = p2.log_text();
    assert!(
        log.contains("restored the expiry table saved at the last stop"),
        "{log}"
    );
    assert!(log.contains("table_complete=true"), "{log}");
    assert_eq!(tables(&state), 0, "the snapshot is consumed at the start");
    let checkpoint = std::fs::read_dir(&state)
        .unwrap()
        .map(|f| f.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".checkpoint"));
    let checkpoint = checkpoint.unwrap_or_else(|| {
        wait_until("the first checkpoint of the table is written", || {
            std::fs::read_dir(&state).unwrap().any(|f| {
                f.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".checkpoint")
            })
        });
        std::fs::read_dir(&state)
            .unwrap()
            .map(|f| f.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".checkpoint"))
            .unwrap()
    });
    let u_c = pika_ttl_proxy::redis_relay::table_snapshot::load(&checkpoint)
        .unwrap()
        .table_u;
    late_writes(&mut mc);
    check_data(&master, &r1, "after the SIGTERM restart");
    let (rewritten, passed, unknown) = outcomes(&p2);
    assert_eq!(
        (rewritten, passed, unknown),
        (1.0, 1.0, 0.0),
        "INCR rewritten, APPEND passed, nothing unknown"
    );
    // A key the checkpoint does not know: only the catch-up can teach it to the next table.
    let _: () = redis::cmd("SETEX")
        .arg("late:fresh")
        .arg(3600)
        .arg(7)
        .query(&mut mc)
        .unwrap();
    check_data(&master, &r1, "after the write past the checkpoint");
    let acked = master.replicas()[0].2;
    assert!(
        acked > u_c,
        "the replica acked {acked}, past the checkpoint at {u_c}"
    );

    // SIGKILL: no snapshot, but the checkpoint, brought to the replica's resume position along
    // the master's backlog, so entries on keys from before the kill are still decided.
    p2.kill9();
    assert_eq!(tables(&state), 0);
    wait_until("the replica noticed", || !r1.link_up());
    let p3 = ProxyProcess::start(port, master.port, &state, &dir.path().join("p3.log"), &[]);
    wait_until("replica resumed after the kill", || {
        r1.log_count(PARTIAL_OK) == 2 && r1.link_up()
    });
    late_writes(&mut mc);
    let _: () = redis::cmd("INCR").arg("late:fresh").query(&mut mc).unwrap();
    check_data(&master, &r1, "after the SIGKILL restart");
    let (rewritten, passed, unknown) = outcomes(&p3);
    assert_eq!(
        (rewritten, passed, unknown),
        (2.0, 1.0, 0.0),
        "both INCRs rewritten (one on a key written after the checkpoint), APPEND passed, nothing unknown; log:\n{}",
        p3.log_text()
    );
    assert!(
        p3.log_text()
            .contains("expiry table brought from its checkpoint to the resume position"),
        "{}",
        p3.log_text()
    );
    assert_eq!(r1.log_count(FULL), 1, "a restart caused a full sync");
}

/// SIGKILL while the master streams rewritten entries: the offset map is written before the
/// bytes it covers go out, so wherever the replica stopped, the restarted proxy resolves its
/// offset and continues it (no full resync), and the data still ends equal.
#[test]
fn kill9_under_write_load_resumes_partially_every_time() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // A backlog that outlasts three restarts under load: the test is about the proxy's
    // offsets, not about a master that dropped the history a partial resync needs.
    let master = RedisServer::start(
        dir.path(),
        "master",
        &["--repl-backlog-size".into(), "64mb".into()],
    );
    let port = free_port();
    let log = |i: usize| dir.path().join(format!("p{i}.log"));
    let mut proxy = ProxyProcess::start(port, master.port, &state, &log(0), &[]);
    let r1 = RedisServer::start_replica(dir.path(), "r1", port);
    wait_until("replica synced", || r1.link_up());

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut mc = master.conn();
        std::thread::spawn(move || {
            let mut seed = 100;
            let mut total = 0;
            while !stop.load(Ordering::Relaxed) {
                run_workload(&mut mc, seed, 100);
                seed += 1;
                total += 100;
            }
            total
        })
    };
    let kills = 3;
    for round in 1..=kills {
        std::thread::sleep(std::time::Duration::from_millis(400 + 150 * round as u64));
        proxy.kill9();
        proxy = ProxyProcess::start(port, master.port, &state, &log(round), &[]);
        wait_until("replica resumed through the restarted proxy", || {
            r1.log_count(PARTIAL_OK) == round && r1.link_up()
        });
        assert_eq!(
            r1.log_count(FULL),
            1,
            "kill {round} under load cost a full resync"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let entries = writer.join().unwrap();
    println!("{entries} workload commands across {kills} kills");
    check_data(&master, &r1, "after the kills under load");
    let m = proxy.metrics_text();
    assert_eq!(metric_sum(&m, "pika_ttl_proxy_full_syncs_total", &[]), 0.0);
    assert_eq!(
        metric_sum(&m, "pika_ttl_proxy_partial_syncs_total", &[]),
        1.0
    );
}
