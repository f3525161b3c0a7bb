//! Random histories: client commands on a small key space, time between them, delivery delays,
//! and the point where the proxy attaches.

use super::*;

// ---------------------------------------------------------------------------------------------
// Histories
// ---------------------------------------------------------------------------------------------

/// One argument of a generated command; times are resolved when the step runs.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    Lit(&'static str),
    Int(i64),
    /// Unix seconds: the master's current second plus this offset.
    AbsSec(i64),
    /// Unix ms: the master's current ms plus this offset.
    AbsMs(i64),
}

#[derive(Clone, Debug)]
pub(crate) enum Action {
    Client(Vec<Arg>),
    /// The Redis active expiry cycle reaching this key.
    ActiveExpire(&'static str),
}

#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub(crate) advance_ms: i64,
    pub(crate) delay_ms: i64,
    /// Where between exec and apply time the proxy receives a Redis entry, in quarters (used
    /// only by the receive-lag test).
    pub(crate) receive_quarter: i64,
    pub(crate) db: u32,
    pub(crate) lower_case: bool,
    pub(crate) action: Action,
}

#[derive(Clone, Debug)]
pub(crate) struct History {
    pub(crate) start_ms: i64,
    /// The first `attach_after` steps run on the master before the proxy attaches: the replica
    /// starts from a full sync of the keys alive then, and the proxy from a warm-up scan of
    /// them (as a deployment beside a master that already holds data).
    pub(crate) attach_after: usize,
    pub(crate) steps: Vec<Step>,
}

/// A step with concrete times and arguments.
#[derive(Clone, Debug)]
pub(crate) struct Concrete {
    pub(crate) t_ms: i64,
    pub(crate) receive_ms: i64,
    pub(crate) apply_ms: i64,
    pub(crate) db: u32,
    pub(crate) action: ConcreteAction,
}

#[derive(Clone, Debug)]
pub(crate) enum ConcreteAction {
    Client(Argv),
    ActiveExpire(Bytes),
}

pub(crate) fn materialize(h: &History) -> Vec<Concrete> {
    let mut t = h.start_ms;
    let (mut last_apply, mut last_receive) = (h.start_ms, h.start_ms);
    h.steps
        .iter()
        .map(|s| {
            t += s.advance_ms;
            let apply_ms = (t + s.delay_ms).max(last_apply);
            last_apply = apply_ms;
            let receive_ms = (t + (apply_ms - t) * s.receive_quarter / 4).max(last_receive);
            last_receive = receive_ms;
            let action = match &s.action {
                Action::Client(args) => {
                    let mut argv: Argv = args
                        .iter()
                        .map(|a| match a {
                            Arg::Lit(s) => Bytes::from_static(s.as_bytes()),
                            Arg::Int(i) => Bytes::from(i.to_string()),
                            Arg::AbsSec(off) => Bytes::from((t.div_euclid(1000) + off).to_string()),
                            Arg::AbsMs(off) => Bytes::from((t + off).to_string()),
                        })
                        .collect();
                    if s.lower_case {
                        argv[0] = Bytes::from(argv[0].to_ascii_lowercase());
                    }
                    ConcreteAction::Client(argv)
                }
                Action::ActiveExpire(k) => {
                    ConcreteAction::ActiveExpire(Bytes::from_static(k.as_bytes()))
                }
            };
            Concrete {
                t_ms: t,
                receive_ms,
                apply_ms,
                db: s.db,
                action,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------------

pub(crate) const STRING_KEYS: &[&str] = &["s1", "s2", "s3", "s4"];
pub(crate) const HASH_KEYS: &[&str] = &["h1", "h2"];
pub(crate) const SET_KEYS: &[&str] = &["st1", "st2"];
pub(crate) const ALL_KEYS: &[&str] =
    &["s1", "s2", "s3", "s4", "h1", "h2", "l1", "z1", "st1", "st2"];
pub(crate) const VALUES: &[&str] = &["1", "7", "100", "-3", "abc", "x"];
pub(crate) const FIELDS: &[&str] = &["f1", "f2", "n"];
pub(crate) const MEMBERS: &[&str] = &["a", "b", "c"];

/// Raw random draws for one command. Commands are built from plain numbers rather than from
/// proptest unions: a union clones the test runner for every alternative on every draw, which
/// made generation 20× slower than running the history. Shrinking still works: every number
/// shrinks towards 0, and arm 0 is the simplest command.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Draw {
    pub(crate) a: u8,
    pub(crate) b: u8,
    pub(crate) c: u8,
    pub(crate) x: i64,
    pub(crate) flag: bool,
}

impl Draw {
    pub(crate) fn of(&self, options: &'static [&'static str], which: u8) -> &'static str {
        options[which as usize % options.len()]
    }
    pub(crate) fn skey(&self) -> &'static str {
        self.of(STRING_KEYS, self.a)
    }
    pub(crate) fn skey2(&self) -> &'static str {
        self.of(STRING_KEYS, self.c)
    }
    pub(crate) fn key(&self) -> &'static str {
        self.of(ALL_KEYS, self.a)
    }
    pub(crate) fn key2(&self) -> &'static str {
        self.of(ALL_KEYS, self.c)
    }
    pub(crate) fn hkey(&self) -> &'static str {
        self.of(HASH_KEYS, self.a)
    }
    pub(crate) fn value(&self) -> &'static str {
        self.of(VALUES, self.b)
    }
    pub(crate) fn value2(&self) -> &'static str {
        self.of(VALUES, self.c)
    }
    pub(crate) fn field(&self) -> &'static str {
        self.of(FIELDS, self.c)
    }
    pub(crate) fn member(&self) -> &'static str {
        self.of(MEMBERS, self.b)
    }
    /// 1–20 s.
    pub(crate) fn ttl(&self) -> Arg {
        Arg::Int(1 + self.x % 20)
    }
    /// 1000–20999 ms.
    pub(crate) fn ttl_ms(&self) -> Arg {
        Arg::Int(1000 + self.x % 20_000)
    }
    pub(crate) fn cond(&self) -> &'static str {
        if self.flag {
            "XX"
        } else {
            "NX"
        }
    }
}

pub(crate) type Build = fn(&Draw) -> Action;

pub(crate) fn cmd(args: Vec<Arg>) -> Action {
    Action::Client(args)
}

/// Client commands (weight, builder), weighted towards expiry-dependent ones.
pub(crate) fn arms(dialect: Dialect) -> Vec<(u32, Build)> {
    let mut arms: Vec<(u32, Build)> = vec![
        // Strings.
        (3, |d| cmd(vec![l("SET"), l(d.skey()), l(d.value())])),
        (4, |d| {
            cmd(vec![l("SET"), l(d.skey()), l(d.value()), l("EX"), d.ttl()])
        }),
        (2, |d| {
            cmd(vec![
                l("SET"),
                l(d.skey()),
                l(d.value()),
                l("PX"),
                d.ttl_ms(),
            ])
        }),
        (3, |d| {
            cmd(vec![l("SET"), l(d.skey()), l(d.value()), l(d.cond())])
        }),
        (5, |d| {
            let unit = if d.c % 2 == 0 { "EX" } else { "PX" };
            let amount = if unit == "EX" { d.ttl() } else { d.ttl_ms() };
            let mut a = vec![l("SET"), l(d.skey()), l(d.value())];
            if d.c % 4 < 2 {
                a.extend([l(d.cond()), l(unit), amount]);
            } else {
                a.extend([l(unit), amount, l(d.cond())]);
            }
            cmd(a)
        }),
        (4, |d| {
            cmd(vec![l("SETEX"), l(d.skey()), d.ttl(), l(d.value())])
        }),
        (2, |d| {
            cmd(vec![l("PSETEX"), l(d.skey()), d.ttl_ms(), l(d.value())])
        }),
        (2, |d| cmd(vec![l("SETNX"), l(d.skey()), l(d.value())])),
        (2, |d| cmd(vec![l("GETSET"), l(d.skey()), l(d.value())])),
        (6, |d| cmd(vec![l("INCR"), l(d.skey())])),
        (2, |d| {
            cmd(vec![l("INCRBY"), l(d.skey()), Arg::Int(d.x % 11 - 5)])
        }),
        (1, |d| cmd(vec![l("DECR"), l(d.skey())])),
        (1, |d| {
            cmd(vec![l("DECRBY"), l(d.skey()), Arg::Int(1 + d.x % 5)])
        }),
        (2, |d| {
            let by = ["1.5", "-0.5", "2"][d.b as usize % 3];
            cmd(vec![l("INCRBYFLOAT"), l(d.skey()), l(by)])
        }),
        (3, |d| cmd(vec![l("APPEND"), l(d.skey()), l("x")])),
        (2, |d| {
            let piece = if d.flag { "zz" } else { "z" };
            cmd(vec![
                l("SETRANGE"),
                l(d.skey()),
                Arg::Int(d.x % 4),
                l(piece),
            ])
        }),
        (1, |d| {
            cmd(vec![
                l("MSET"),
                l(d.skey()),
                l(d.value()),
                l(d.skey2()),
                l(d.value2()),
            ])
        }),
        (2, |d| cmd(vec![l("GET"), l(d.skey())])),
        // Any key.
        (2, |d| cmd(vec![l("DEL"), l(d.key())])),
        (1, |d| cmd(vec![l("DEL"), l(d.key()), l(d.key2())])),
        (6, |d| {
            // Mostly 1–20 s, sometimes 0 or −1 (deletes).
            let s = if d.b % 10 == 9 {
                -(d.x % 2)
            } else {
                1 + d.x % 20
            };
            cmd(vec![l("EXPIRE"), l(d.key()), Arg::Int(s)])
        }),
        (2, |d| cmd(vec![l("PEXPIRE"), l(d.key()), d.ttl_ms()])),
        (2, |d| {
            cmd(vec![l("EXPIREAT"), l(d.key()), Arg::AbsSec(d.x % 24 - 3)])
        }),
        (1, |d| {
            cmd(vec![
                l("PEXPIREAT"),
                l(d.key()),
                Arg::AbsMs(d.x % 23_001 - 3000),
            ])
        }),
        (3, |d| cmd(vec![l("PERSIST"), l(d.key())])),
        // Hashes.
        (4, |d| {
            cmd(vec![l("HSET"), l(d.hkey()), l(d.field()), l(d.value())])
        }),
        (1, |d| {
            cmd(vec![
                l("HMSET"),
                l(d.hkey()),
                l("f1"),
                l(d.value()),
                l("f2"),
                l(d.value2()),
            ])
        }),
        (2, |d| {
            cmd(vec![l("HSETNX"), l(d.hkey()), l(d.field()), l(d.value())])
        }),
        (3, |d| {
            cmd(vec![
                l("HINCRBY"),
                l(d.hkey()),
                l("n"),
                Arg::Int(d.x % 8 - 2),
            ])
        }),
        (1, |d| {
            cmd(vec![l("HINCRBYFLOAT"), l(d.hkey()), l("n"), l("0.5")])
        }),
        (1, |d| cmd(vec![l("HDEL"), l(d.hkey()), l(d.field())])),
        // List.
        (3, |d| {
            let c = if d.flag { "RPUSH" } else { "LPUSH" };
            cmd(vec![l(c), l("l1"), l(d.member())])
        }),
        (2, |d| {
            let c = if d.flag { "RPUSHX" } else { "LPUSHX" };
            cmd(vec![l(c), l("l1"), l(d.member())])
        }),
        (1, |_| cmd(vec![l("LPOP"), l("l1")])),
        // Logged even when the list is missing (nothing inserted).
        (1, |d| {
            let side = if d.flag { "BEFORE" } else { "AFTER" };
            cmd(vec![
                l("LINSERT"),
                l("l1"),
                l(side),
                l(d.member()),
                l(d.member()),
            ])
        }),
        // Sets.
        (3, |d| {
            cmd(vec![l("SADD"), l(d.of(SET_KEYS, d.a)), l(d.member())])
        }),
        (1, |d| {
            cmd(vec![l("SREM"), l(d.of(SET_KEYS, d.a)), l(d.member())])
        }),
        (1, |d| {
            let (src, dst) = if d.flag {
                ("st2", "st1")
            } else {
                ("st1", "st2")
            };
            cmd(vec![l("SMOVE"), l(src), l(dst), l(d.member())])
        }),
        // Sorted set.
        (3, |d| {
            cmd(vec![
                l("ZADD"),
                l("z1"),
                Arg::Int(1 + d.x % 3),
                l(d.member()),
            ])
        }),
        (2, |d| {
            let by = [-2, -1, 1, 2, 3][d.x as usize % 5];
            cmd(vec![l("ZINCRBY"), l("z1"), Arg::Int(by), l(d.member())])
        }),
        (1, |d| cmd(vec![l("ZREM"), l("z1"), l(d.member())])),
        // A geo index is a sorted set, and GEOADD is logged as it is.
        (1, |d| {
            let longitude = Arg::Int(d.x % 170 - 85);
            cmd(vec![
                l("GEOADD"),
                l("z1"),
                longitude,
                l("38.1"),
                l(d.member()),
            ])
        }),
    ];
    if dialect == Dialect::Redis {
        arms.extend([
            (
                2,
                (|d| cmd(vec![l("SET"), l(d.skey()), l(d.value()), l("KEEPTTL")])) as Build,
            ),
            (3, |d| {
                let flag = ["NX", "XX", "GT", "LT"][d.c as usize % 4];
                cmd(vec![l("EXPIRE"), l(d.key()), d.ttl(), l(flag)])
            }),
            (1, |d| {
                cmd(vec![
                    l("SET"),
                    l(d.skey()),
                    l(d.value()),
                    l("PXAT"),
                    Arg::AbsMs(1000 + d.x % 19_001),
                ])
            }),
            (3, |d| Action::ActiveExpire(d.key())),
        ]);
    }
    arms
}

pub(crate) fn l(s: &'static str) -> Arg {
    Arg::Lit(s)
}

pub(crate) fn step(dialect: Dialect) -> BoxedStrategy<Step> {
    let arms = arms(dialect);
    let total: u32 = arms.iter().map(|(w, _)| w).sum();
    let draw = (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        0i64..1_000_000,
        any::<bool>(),
    )
        .prop_map(|(a, b, c, x, flag)| Draw { a, b, c, x, flag });
    // Time between commands: 0 (30%), whole seconds 0–5 (30%), any ms up to 5 s (40%).
    // Delivery delay: 0 (30%), up to 3 s (30%), up to 30 s (40%).
    // DB (Redis): 0 (80%) or 1. Command name lower-cased 10% of the time.
    let timing = (
        0u8..10,
        0i64..=5000,
        0u8..10,
        0i64..=30_000,
        0i64..=4,
        0u8..10,
        0u8..10,
    );
    (timing, 0..total, draw)
        .prop_map(
            move |((adv_kind, adv, delay_kind, delay, quarter, db, lower), kind, d)| {
                let advance_ms = match adv_kind {
                    0..=2 => 0,
                    3..=5 => (adv % 6) * 1000,
                    _ => adv,
                };
                let delay_ms = match delay_kind {
                    0..=2 => 0,
                    3..=5 => delay % 3001,
                    _ => delay,
                };
                let mut pick = kind;
                let build = arms
                    .iter()
                    .find(|(w, _)| {
                        if pick < *w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .map_or(arms[0].1, |(_, b)| *b);
                Step {
                    advance_ms,
                    delay_ms,
                    receive_quarter: quarter,
                    db: if dialect == Dialect::Redis && db >= 8 {
                        1
                    } else {
                        0
                    },
                    lower_case: lower == 0,
                    action: build(&d),
                }
            },
        )
        .boxed()
}

/// Histories for a Pika release. A 4.0 master deletes a key on a client's own PEXPIREAT (its
/// int32 cast, on the master itself) yet logs it like a PEXPIRE that kept the key: no proxy can
/// tell the two apart, so 4.0 histories use EXPIREAT instead (the README tells users to).
pub(crate) fn history_for(dialect: Dialect, release: PikaRelease) -> BoxedStrategy<History> {
    if release == PikaRelease::V3 {
        return history(dialect);
    }
    history(dialect)
        .prop_map(|mut h| {
            for step in &mut h.steps {
                if let Action::Client(args) = &mut step.action {
                    if matches!(args.first(), Some(Arg::Lit("PEXPIREAT"))) {
                        if let Some(Arg::AbsMs(off)) = args.get(2).cloned() {
                            args[0] = Arg::Lit("EXPIREAT");
                            args[2] = Arg::AbsSec(off.div_euclid(1000));
                        }
                    }
                }
            }
            h
        })
        .boxed()
}

pub(crate) fn history(dialect: Dialect) -> BoxedStrategy<History> {
    // Pika only: a Redis relay learns the keyspace exactly from the RDB of the full sync.
    let max_attach: usize = if dialect == Dialect::Pika { 10 } else { 0 };
    (
        0i64..1000,
        prop::collection::vec(step(dialect), 1..=25),
        0..=max_attach,
    )
        .prop_map(|(phase, steps, attach)| History {
            start_ms: START_MS + phase,
            attach_after: if attach < steps.len() { attach } else { 0 },
            steps,
        })
        .boxed()
}
