//! Property P3 on a real master: with every family switched off, a replica behind the relay
//! receives exactly the stream bytes a replica attached to the master directly receives. A
//! second relay with the families on receives different bytes for the same workload (the
//! negative control: the comparison can fail).

#[allow(dead_code)]
mod support;

use pika_ttl_proxy::families::FamilySwitches;
use support::raw_replica::RawReplica;
use support::redis_proxy::InProcessProxy;
use support::redis_server::RedisServer;
use support::wait_until;
use support::workload::{preload, run_workload};

/// The stream bytes of `replica` from master offset `from` to `to`.
fn window(replica: &RawReplica, from: u64, to: u64) -> Vec<u8> {
    let bytes = replica.bytes();
    let start = (from - replica.base_offset) as usize;
    let end = (to - replica.base_offset) as usize;
    bytes[start..end].to_vec()
}

#[test]
fn families_off_relays_the_masters_bytes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let master = RedisServer::start(
        dir.path(),
        "master",
        &["--repl-diskless-sync-delay".into(), "0".into()],
    );
    let mut mc = master.conn();
    preload(&mut mc);
    let off = InProcessProxy::start(
        master.port,
        &dir.path().join("s1"),
        FamilySwitches::all_off(),
    );
    let on = InProcessProxy::start(
        master.port,
        &dir.path().join("s2"),
        FamilySwitches::all_on(),
    );

    let direct = RawReplica::attach(master.port, 40001);
    let relayed = RawReplica::attach(off.port, 40002);
    let rewritten = RawReplica::attach(on.port, 40003);
    println!(
        "payloads: direct {} B, relayed {} B, rewritten {} B; base offsets {} {} {}",
        direct.payload_len,
        relayed.payload_len,
        rewritten.payload_len,
        direct.base_offset,
        relayed.base_offset,
        rewritten.base_offset
    );

    let stats = run_workload(&mut mc, 11, 2000);
    println!("workload: {stats:?}");
    let end = master.master_offset();
    wait_until("every raw replica received the whole stream", || {
        direct.offset() >= end && relayed.offset() >= end
    });
    let start = direct
        .base_offset
        .max(relayed.base_offset)
        .max(rewritten.base_offset);
    assert!(end - start > 100_000, "the compared window is too small");
    let a = window(&direct, start, end);
    let b = window(&relayed, start, end);
    println!(
        "compared {} stream bytes, master offsets {start}..{end}",
        a.len()
    );
    assert!(a == b, "relayed bytes differ from the master's");
    assert_eq!(relayed.offset(), end, "the relay added bytes");

    // Negative control: with the families on, the same master bytes come out rewritten.
    wait_until(
        "the rewriting relay delivered more than the master sent",
        || rewritten.offset() > end,
    );
    let c = rewritten.bytes();
    let c = &c[(start - rewritten.base_offset) as usize..];
    assert_ne!(&c[..a.len()], &a[..], "rewriting changed nothing");
    let text = String::from_utf8_lossy(c);
    assert!(text.contains("PEXPIREAT"));
}
