//! The reference model's Pika masters against what real Pika masters logged.
//!
//! The captured binlogs (`tests/fixtures/pika-4.0.1/`) hold every command a real master wrote
//! for a scripted session; the model's master of the same release runs the same client commands
//! at the captured exec times and must log the same commands. Only one difference is allowed:
//! a real 4.0 master keeps its own deadlines in milliseconds, the model in whole seconds, so a
//! millisecond timestamp (PEXPIRE's `pexpireat`, PSETEX's `pksetexat`) is compared to the
//! second.

#[allow(dead_code)]
mod support;

use bytes::{Bytes, BytesMut};
use pika_ttl_proxy::engine::{Dialect, PikaRelease};
use pika_ttl_proxy::model::{show_argv, Master};
use pika_ttl_proxy::pika::binlog_file::read_binlog_file;
use pika_ttl_proxy::pika::item::BinlogItem;
use pika_ttl_proxy::resp::{CommandParser, Frame, ParserLimits};

/// Each record of a captured binlog as `(exec second, command)`.
fn captured(relative: &str) -> Vec<(u32, Vec<Bytes>)> {
    let data = support::fixture(relative);
    read_binlog_file(&data)
        .expect("binlog")
        .iter()
        .map(|record| {
            let item = BinlogItem::parse(&record.item).expect("item");
            let mut buf = BytesMut::from(item.content);
            let mut parser = CommandParser::new(ParserLimits::replica_stream());
            let Ok(Some(Frame::Command(cmd))) = parser.parse(&mut buf) else {
                panic!("item content is not one command");
            };
            let argv = (0..cmd.len()).filter_map(|i| cmd.arg(i).cloned()).collect();
            (item.header.exec_time, argv)
        })
        .collect()
}

/// The command with every millisecond timestamp cut to its second.
fn to_the_second(argv: &[Bytes]) -> String {
    let args: Vec<Bytes> = argv
        .iter()
        .map(|a| {
            match std::str::from_utf8(a)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                Some(ms) if ms > 100_000_000_000 => Bytes::from((ms / 1000).to_string()),
                _ => a.clone(),
            }
        })
        .collect();
    show_argv(&args)
}

fn words(cmd: &str) -> Vec<Bytes> {
    cmd.split(' ')
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

/// The client commands of the 4.0.1 session, in binlog order (the fixture's README timeline;
/// the MULTI/EXEC block is logged command by command, so it is sent that way).
const SESSION_4_0_1: &[&str] = &[
    "set pre_s hello",
    "setex pre_ttl 3600 v",
    "hmset pre_h f1 v1 f2 v2",
    "rpush pre_l a b c",
    "sadd pre_set m1 m2",
    "zadd pre_z 1 m1 2 m2",
    "setex k 10 100",
    "incr k",
    "incr fresh",
    "append a y",
    "setex a2 10 x",
    "append a2 y",
    "hmset h f v",
    "expire h 10",
    "hincrby h n 1",
    "rpush l a",
    "expire l 10",
    "sadd s m",
    "zadd z 1 m",
    "expire nosuchkey 10",
    "pexpire h 20000",
    "pexpireat h 1796605907901",
    "persist h",
    "del k",
    "set x 1 nx ex 10",
    "set x 2 xx",
    "set tx1 a",
    "incr tx2",
    "hset txh f v",
    "set down1 1",
    "incr down2",
    "rpush down_l z",
    "set after1 v",
    "expire after1 100",
    "hset after_h f v",
    "lpush after_l x",
    "psetex ps 5000 v",
    "set after_ps 1",
];

#[test]
fn the_4_0_model_logs_what_real_pika_4_0_1_logged() {
    let real = captured("pika-4.0.1/session1-master-binlog-write2file0.bin");
    assert_eq!(real.len(), SESSION_4_0_1.len());
    let mut master = Master::new(Dialect::Pika).with_pika_release(PikaRelease::V4);
    for ((exec_sec, logged), cmd) in real.iter().zip(SESSION_4_0_1) {
        let t_ms = i64::from(*exec_sec) * 1000 + 500;
        let executed = master.execute(0, &words(cmd), t_ms).expect(cmd);
        let modelled: Vec<String> = executed
            .entries
            .iter()
            .map(|e| to_the_second(&e.argv))
            .collect();
        assert_eq!(modelled, [to_the_second(logged)], "client command `{cmd}`");
    }
    // The master's own int32 cast: its PEXPIREAT deleted `h` there too.
    assert!(master.record_at(0, b"h", 1_796_605_878_000).is_none());
}

/// Pika 3.5.4 logs EXPIRE on an absent key (reply 0) like any other.
#[test]
fn the_3_5_model_logs_a_noop_expire_like_pika_3_5_4() {
    let real = captured("pika-4.0.1/v354-noop-expire-master-binlog.bin");
    let cmds = ["expire nosuchkey 10", "rpush q x", "expire q 10"];
    assert_eq!(real.len(), cmds.len());
    let mut master = Master::new(Dialect::Pika);
    for ((exec_sec, logged), cmd) in real.iter().zip(cmds) {
        let t_ms = i64::from(*exec_sec) * 1000 + 500;
        let executed = master.execute(0, &words(cmd), t_ms).expect(cmd);
        let modelled: Vec<String> = executed
            .entries
            .iter()
            .map(|e| show_argv(&e.argv))
            .collect();
        assert_eq!(modelled, [show_argv(logged)], "client command `{cmd}`");
    }
}
