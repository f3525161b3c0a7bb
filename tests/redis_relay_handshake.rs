//! Handshake edge cases against real servers: a master with `requirepass` (the replica's own
//! AUTH relayed, or the proxy's configured credentials), wrong credentials, and a master that
//! cannot be reached.

#[allow(dead_code)]
mod support;

use pika_ttl_proxy::families::FamilySwitches;
use std::io::{Read, Write};
use support::redis_proxy::InProcessProxy;
use support::redis_server::{wait_acked, RedisServer};
use support::{free_port, wait_until};

fn replica_with_auth(dir: &std::path::Path, name: &str, port: u16, pass: &str) -> RedisServer {
    RedisServer::start(
        dir,
        name,
        &[
            "--replicaof".into(),
            "127.0.0.1".into(),
            port.to_string(),
            "--masterauth".into(),
            pass.into(),
        ],
    )
}

#[test]
fn authentication_is_relayed_or_done_by_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let master = RedisServer::start(
        dir.path(),
        "master",
        &[
            "--requirepass".into(),
            "secret".into(),
            "--repl-diskless-sync-delay".into(),
            "0".into(),
        ],
    );
    let mut mc = master.conn();
    let _: () = redis::cmd("SET")
        .arg("c")
        .arg(1)
        .arg("EX")
        .arg(900)
        .query(&mut mc)
        .unwrap();

    // The replica's own AUTH goes through the relay to the master.
    let relaying = InProcessProxy::start(
        master.port,
        &dir.path().join("s1"),
        FamilySwitches::all_on(),
    );
    let r1 = replica_with_auth(dir.path(), "r1", relaying.port, "secret");
    // The proxy authenticates with its configured credentials; the replica has none.
    let authenticating = InProcessProxy::start_with(
        master.port,
        &dir.path().join("s2"),
        FamilySwitches::all_on(),
        |cfg| cfg.master_password = Some("secret".into()),
    );
    let r2 = RedisServer::start_replica(dir.path(), "r2", authenticating.port);
    // Wrong credentials are refused by the master, through the relay.
    let r3 = replica_with_auth(dir.path(), "r3", relaying.port, "wrong");

    wait_until("replicas with valid credentials synced", || {
        r1.link_up() && r2.link_up()
    });
    let _: i64 = redis::cmd("INCR").arg("c").query(&mut mc).unwrap();
    wait_acked(&master, &[r1.port, r2.port]);
    for r in [&r1, &r2] {
        let mut rc = r.conn();
        let v: i64 = redis::cmd("GET").arg("c").query(&mut rc).unwrap();
        assert_eq!(v, 2);
        let t: i64 = redis::cmd("PEXPIRETIME").arg("c").query(&mut rc).unwrap();
        let tm: i64 = redis::cmd("PEXPIRETIME").arg("c").query(&mut mc).unwrap();
        assert_eq!(t, tm);
    }
    wait_until("the wrong password was reported by the replica", || {
        r3.log_text().contains("Unable to AUTH to MASTER")
    });
    assert!(!r3.link_up());
}

#[test]
fn unreachable_master_is_an_error_reply_to_ping() {
    let dir = tempfile::tempdir().unwrap();
    let closed_port = free_port();
    let proxy = InProcessProxy::start(closed_port, dir.path(), FamilySwitches::all_on());
    let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("-ERR"), "{reply}");
}
