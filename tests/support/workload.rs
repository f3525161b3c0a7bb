//! The load generator of the Redis tests: a seeded workload touching every rewrite family, and
//! the volatile data set it starts from.

use super::now_ms;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::{Connection, Value};
use std::collections::BTreeMap;

/// Counts of what the workload sent, to check it exercised every family.
#[derive(Debug, Default)]
pub struct WorkloadStats {
    pub commands: usize,
    pub by_kind: BTreeMap<&'static str, usize>,
}

/// A seeded random workload over every rewrite family, transactions, scripts and several DBs.
/// Every TTL is at least 200 s so nothing expires on its own while the test compares.
pub fn run_workload(conn: &mut Connection, seed: u64, n: usize) -> WorkloadStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = WorkloadStats::default();
    let ttl = |rng: &mut StdRng| rng.random_range(200..2000u64);
    let mut db = 0u32;
    for i in 0..n {
        let k = rng.random_range(0..12u32);
        let choice = rng.random_range(0..20u32);
        let now_s = (now_ms() / 1000) as u64;
        let mut c;
        let kind: &'static str = match choice {
            0 => {
                c = redis::cmd("SET");
                c.arg(format!("s{k}"))
                    .arg(format!("v{i}"))
                    .arg("EX")
                    .arg(ttl(&mut rng));
                "set-ex"
            }
            1 => {
                c = redis::cmd("SET");
                c.arg(format!("s{k}")).arg(format!("v{i}"));
                if rng.random_bool(0.5) {
                    c.arg("KEEPTTL");
                }
                "set"
            }
            2 => {
                c = redis::cmd("SET");
                c.arg(format!("s{k}")).arg(format!("n{i}"));
                if rng.random_bool(0.5) {
                    c.arg("NX").arg("EX").arg(ttl(&mut rng));
                } else {
                    c.arg("XX").arg("PX").arg(ttl(&mut rng) * 1000);
                }
                "set-nx-xx"
            }
            3 => {
                if rng.random_bool(0.5) {
                    c = redis::cmd("SETEX");
                    c.arg(format!("c{k}"))
                        .arg(ttl(&mut rng))
                        .arg(rng.random_range(0..100));
                } else {
                    c = redis::cmd("PSETEX");
                    c.arg(format!("c{k}"))
                        .arg(ttl(&mut rng) * 1000)
                        .arg(rng.random_range(0..100));
                }
                "setex"
            }
            4 => {
                let which = ["INCR", "INCRBY", "DECR", "DECRBY"][rng.random_range(0..4)];
                c = redis::cmd(which);
                c.arg(format!("c{k}"));
                if which.ends_with("BY") {
                    c.arg(rng.random_range(1..10));
                }
                "counter"
            }
            5 => {
                c = redis::cmd("INCRBYFLOAT");
                c.arg(format!("f{k}")).arg("1.5");
                "incrbyfloat"
            }
            6 => {
                let key = match rng.random_range(0..7) {
                    0 => format!("s{k}"),
                    6 => format!("a{k}"),
                    1 => format!("c{k}"),
                    2 => format!("h{k}"),
                    3 => format!("l{k}"),
                    4 => format!("st{k}"),
                    _ => format!("z{k}"),
                };
                match rng.random_range(0..5) {
                    0 => {
                        c = redis::cmd("EXPIRE");
                        c.arg(key).arg(ttl(&mut rng));
                    }
                    1 => {
                        c = redis::cmd("PEXPIRE");
                        c.arg(key).arg(ttl(&mut rng) * 1000);
                    }
                    2 => {
                        c = redis::cmd("EXPIREAT");
                        c.arg(key).arg(now_s + ttl(&mut rng));
                    }
                    3 => {
                        c = redis::cmd("PEXPIREAT");
                        c.arg(key).arg((now_s + ttl(&mut rng)) * 1000 + 7);
                    }
                    _ => {
                        c = redis::cmd("EXPIRE");
                        c.arg(key).arg(ttl(&mut rng) + 3000).arg("GT");
                    }
                }
                "expire"
            }
            7 => {
                match rng.random_range(0..3) {
                    0 => {
                        c = redis::cmd("APPEND");
                        c.arg(format!("a{k}")).arg("xy");
                    }
                    1 => {
                        c = redis::cmd("SETRANGE");
                        c.arg(format!("a{k}")).arg(rng.random_range(0..4)).arg("Q");
                    }
                    _ => {
                        c = redis::cmd("SETBIT");
                        c.arg(format!("a{k}")).arg(rng.random_range(0..64)).arg(1);
                    }
                }
                "append"
            }
            8 => {
                match rng.random_range(0..4) {
                    0 => {
                        c = redis::cmd("GETSET");
                        c.arg(format!("a{k}")).arg(format!("g{i}"));
                    }
                    1 => {
                        c = redis::cmd("SETNX");
                        c.arg(format!("a{k}")).arg(format!("x{i}"));
                    }
                    2 => {
                        c = redis::cmd("GETEX");
                        c.arg(format!("s{k}")).arg("EX").arg(ttl(&mut rng));
                    }
                    _ => {
                        c = redis::cmd("GETEX");
                        c.arg(format!("s{k}")).arg("PERSIST");
                    }
                }
                "string-set"
            }
            9 => {
                match rng.random_range(0..4) {
                    0 => {
                        c = redis::cmd("HSET");
                        c.arg(format!("h{k}")).arg(format!("f{}", i % 5)).arg(i);
                    }
                    1 => {
                        c = redis::cmd("HINCRBY");
                        c.arg(format!("h{k}")).arg("n").arg(2);
                    }
                    2 => {
                        c = redis::cmd("HINCRBYFLOAT");
                        c.arg(format!("h{k}")).arg("fl").arg("0.25");
                    }
                    _ => {
                        c = redis::cmd("HSETNX");
                        c.arg(format!("h{k}")).arg(format!("u{}", i % 7)).arg("z");
                    }
                }
                "hash"
            }
            10 => {
                match rng.random_range(0..4) {
                    0 => {
                        c = redis::cmd("LPUSH");
                        c.arg(format!("l{k}")).arg(i);
                    }
                    1 => {
                        c = redis::cmd("RPUSH");
                        c.arg(format!("l{k}")).arg(i).arg(i + 1);
                    }
                    2 => {
                        c = redis::cmd("LINSERT");
                        c.arg(format!("l{k}"))
                            .arg("BEFORE")
                            .arg(i.saturating_sub(1))
                            .arg("ins");
                    }
                    _ => {
                        c = redis::cmd("RPUSHX");
                        c.arg(format!("l{k}")).arg("x");
                    }
                }
                "list"
            }
            11 => {
                if rng.random_bool(0.7) {
                    c = redis::cmd("SADD");
                    c.arg(format!("st{k}")).arg(format!("m{}", i % 9));
                } else {
                    c = redis::cmd("SMOVE");
                    c.arg(format!("st{k}"))
                        .arg(format!("st{}", (k + 1) % 12))
                        .arg(format!("m{}", i % 9));
                }
                "set-family"
            }
            12 => {
                if rng.random_bool(0.6) {
                    c = redis::cmd("ZADD");
                    c.arg(format!("z{k}"))
                        .arg(i % 50)
                        .arg(format!("m{}", i % 6));
                } else {
                    c = redis::cmd("ZINCRBY");
                    c.arg(format!("z{k}")).arg(2).arg(format!("m{}", i % 6));
                }
                "zset"
            }
            13 => {
                let mut p = redis::pipe();
                p.atomic()
                    .cmd("INCR")
                    .arg(format!("c{k}"))
                    .cmd("HINCRBY")
                    .arg(format!("h{k}"))
                    .arg("t")
                    .arg(1)
                    .cmd("SET")
                    .arg(format!("s{}", (k + 3) % 12))
                    .arg("tx")
                    .arg("EX")
                    .arg(ttl(&mut rng))
                    .cmd("RPUSH")
                    .arg(format!("l{k}"))
                    .arg("tx");
                let _: Result<Value, _> = p.query(conn);
                stats.commands += 1;
                *stats.by_kind.entry("multi").or_default() += 1;
                continue;
            }
            14 => {
                let script = "redis.call('incr', KEYS[1]); \
                    redis.call('pexpire', KEYS[1], ARGV[1]); \
                    redis.call('hincrby', KEYS[2], 'lua', 1); \
                    redis.call('set', KEYS[3], ARGV[2], 'EX', 900); return 1";
                c = redis::cmd("EVAL");
                c.arg(script)
                    .arg(3)
                    .arg(format!("c{k}"))
                    .arg(format!("h{k}"))
                    .arg(format!("s{}", (k + 5) % 12))
                    .arg(ttl(&mut rng) * 1000)
                    .arg(format!("lua{i}"));
                "eval"
            }
            15 => {
                let script = "redis.call('select', 2); redis.call('incr', KEYS[1]); \
                    redis.call('expire', KEYS[1], 1500); return 1";
                c = redis::cmd("EVAL");
                c.arg(script).arg(1).arg(format!("sc{k}"));
                "eval-select"
            }
            16 => {
                db = (db + 1 + rng.random_range(0..3)) % 4;
                c = redis::cmd("SELECT");
                c.arg(db);
                "select"
            }
            17 => {
                match rng.random_range(0..3) {
                    0 => {
                        c = redis::cmd("PERSIST");
                        c.arg(format!("c{k}"));
                    }
                    1 => {
                        c = redis::cmd("DEL");
                        c.arg(format!("a{k}"));
                    }
                    _ => {
                        c = redis::cmd("RENAME");
                        c.arg(format!("s{k}")).arg(format!("s{}", (k + 7) % 12));
                    }
                }
                "persist-del-rename"
            }
            18 => {
                c = redis::cmd("SET");
                c.arg(format!("c{k}"))
                    .arg(rng.random_range(0..1000))
                    .arg("EX")
                    .arg(ttl(&mut rng));
                "counter-seed"
            }
            _ => {
                c = redis::cmd("HSET");
                c.arg(format!("h{k}")).arg("seed").arg(i);
                let _: Result<Value, _> = c.query(conn);
                c = redis::cmd("PEXPIRE");
                c.arg(format!("h{k}")).arg(ttl(&mut rng) * 1000);
                "hash-seed"
            }
        };
        // Errors (wrong type, RENAME of a missing key, …) are part of a realistic workload:
        // the master propagates nothing for them.
        let _: Result<Value, _> = c.query(conn);
        stats.commands += 1;
        *stats.by_kind.entry(kind).or_default() += 1;
    }
    redis::cmd("SELECT").arg(0).query::<()>(conn).unwrap();
    stats
}

/// Data the workload relies on before replicas attach: volatile keys of every type, so the RDB
/// seeds the proxy's table.
pub fn preload(conn: &mut Connection) {
    for k in 0..12 {
        let _: () = redis::cmd("SET")
            .arg(format!("c{k}"))
            .arg(k * 10)
            .arg("EX")
            .arg(1000 + k)
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg(format!("h{k}"))
            .arg("f")
            .arg(k)
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("PEXPIRE")
            .arg(format!("h{k}"))
            .arg(1_200_000)
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("RPUSH")
            .arg(format!("l{k}"))
            .arg(0)
            .arg(1)
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("EXPIRE")
            .arg(format!("l{k}"))
            .arg(1300)
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("ZADD")
            .arg(format!("z{k}"))
            .arg(1)
            .arg("a")
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("EXPIRE")
            .arg(format!("z{k}"))
            .arg(1400)
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("SADD")
            .arg(format!("st{k}"))
            .arg("m0")
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("EXPIRE")
            .arg(format!("st{k}"))
            .arg(1500)
            .query(conn)
            .unwrap();
    }
}
