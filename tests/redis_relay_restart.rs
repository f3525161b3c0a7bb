//! The relay as its own process (`pika-ttl-proxy redis`), killed with SIGKILL:
//! restarted on the same state directory, the replica continues with a partial
//! resynchronisation from the persisted offset map; restarted with the state file deleted, the
//! replica gets exactly one full resynchronisation. Data (values and absolute TTLs) stays equal
//! to the master's throughout.

mod redis_relay_support;

use redis_relay_support::*;

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
    let files = std::fs::read_dir(&state).unwrap().count();
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
    let log = p2.log_text();
    assert!(log.contains("restored replica state"), "{log}");
    assert!(log.contains("partial resync: continuing"), "{log}");
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
