//! Rule 6 of the rewrite contract: whatever the master sends, the engine never panics and never
//! emits a command a replica would reject (unknown name, wrong arity, a Pika timestamp outside
//! `0 < ts < 2^31 − 1`, a millisecond command towards Pika).

use bytes::Bytes;
use pika_ttl_proxy::engine::command::arity_ok;
use pika_ttl_proxy::engine::{
    rewrite, Dialect, Emit, Policy, StreamState, PIKA_MAX_TIMESTAMP_SECS,
};
use pika_ttl_proxy::table::{Baseline, ExpiryTable};
use proptest::prelude::*;

const NAMES: &[&str] = &[
    "SET",
    "set",
    "SETEX",
    "PSETEX",
    "SETNX",
    "GETSET",
    "GETEX",
    "GETDEL",
    "INCR",
    "INCRBY",
    "DECR",
    "DECRBY",
    "INCRBYFLOAT",
    "APPEND",
    "SETRANGE",
    "SETBIT",
    "PFADD",
    "HSET",
    "HMSET",
    "HSETNX",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HDEL",
    "LPUSH",
    "RPUSH",
    "LPUSHX",
    "RPUSHX",
    "LINSERT",
    "LPOP",
    "RPOPLPUSH",
    "LMOVE",
    "SADD",
    "SREM",
    "SMOVE",
    "ZADD",
    "ZINCRBY",
    "GEOADD",
    "ZREM",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "pexpireat",
    "pksetexat",
    "PERSIST",
    "DEL",
    "UNLINK",
    "RENAME",
    "RENAMENX",
    "MOVE",
    "COPY",
    "SWAPDB",
    "FLUSHDB",
    "FLUSHALL",
    "SELECT",
    "MULTI",
    "EXEC",
    "DISCARD",
    "RESTORE",
    "MSET",
    "MSETNX",
    "SINTERSTORE",
    "PING",
    "NOSUCH",
];

fn word() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        prop::sample::select(vec![
            "k", "k2", "NX", "XX", "EX", "PX", "EXAT", "PXAT", "KEEPTTL", "GET", "GT", "LT", "DB",
            "ABSTTL", "REPLACE", "PERSIST"
        ])
        .prop_map(|s| Bytes::from_static(s.as_bytes())),
        any::<i64>().prop_map(|v| Bytes::from(v.to_string())),
        (-5i64..40).prop_map(|v| Bytes::from(v.to_string())),
        (1_795_469_000i64..1_795_470_000).prop_map(|v| Bytes::from(v.to_string())),
        (1_795_469_000_000i64..1_795_470_000_000).prop_map(|v| Bytes::from(v.to_string())),
        prop::collection::vec(any::<u8>(), 0..6).prop_map(Bytes::from),
    ]
}

fn entry() -> impl Strategy<Value = Vec<Bytes>> {
    (
        prop::sample::select(NAMES),
        prop::collection::vec(word(), 0..6),
    )
        .prop_map(|(name, mut rest)| {
            rest.insert(0, Bytes::from_static(name.as_bytes()));
            rest
        })
}

fn check_emitted(dialect: Dialect, cmd: &[Bytes]) -> Result<(), TestCaseError> {
    let name = String::from_utf8_lossy(&cmd[0]).to_ascii_lowercase();
    prop_assert!(arity_ok(&cmd[0], cmd.len()), "bad arity: {cmd:?}");
    if dialect == Dialect::Pika {
        prop_assert!(
            !["pexpireat", "pexpire", "psetex", "setex", "expire"].contains(&name.as_str()),
            "forbidden towards Pika: {cmd:?}"
        );
        if name == "pksetexat" || name == "expireat" {
            let ts: i64 = String::from_utf8_lossy(&cmd[2])
                .parse()
                .map_err(|_| TestCaseError::fail(format!("non-numeric timestamp: {cmd:?}")))?;
            prop_assert!(
                ts <= PIKA_MAX_TIMESTAMP_SECS,
                "timestamp too large: {cmd:?}"
            );
            if name == "pksetexat" {
                prop_assert!(ts >= 0, "negative pksetexat: {cmd:?}");
            }
        }
        if name == "set" {
            prop_assert_eq!(cmd.len(), 3, "Pika SET must be plain: {:?}", cmd);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn engine_emits_only_valid_commands(
        entries in prop::collection::vec((entry(), 0i64..60_000), 1..30),
        pika in any::<bool>(),
        baseline in prop::sample::select(vec![Baseline::Unknown, Baseline::NotVolatile, Baseline::Absent]),
    ) {
        let dialect = if pika { Dialect::Pika } else { Dialect::Redis };
        let policy = Policy::new(dialect);
        let table = ExpiryTable::new(baseline);
        let mut state = StreamState::default();
        let mut now = 1_795_469_984_000i64;
        for (args, step) in entries {
            now += step;
            let decision = rewrite(&args, now, &mut state, &table, &policy);
            if let Emit::Replace(replacement) = decision.emit {
                prop_assert!(!replacement.is_empty());
                for cmd in &replacement.argvs(&args) {
                    check_emitted(dialect, cmd)?;
                }
            }
        }
    }
}
