//! Convergence proof of the rewrite engine against the reference model
//! (`docs/rewrites.md#convergence`).
//!
//! A history is a sequence of client commands on a small, type-partitioned key space, with time
//! advancing between them, plus a delivery delay per step. The model's master executes each
//! command and yields the entries it logs (Pika 3.5.4) or propagates (Redis 7); each entry goes
//! through `engine::rewrite`; the model's replica applies the emitted commands at the step's
//! apply time, expiring keys by its own clock. After the last entry is applied, master and
//! replica are compared at many instants:
//!
//! - P1: a key is present on both or on neither, with the same absolute deadline;
//! - P2: present keys have the same value;
//! - P3: with every family off every entry is forwarded; entries the engine passes are never
//!   replaced;
//! - R6: the replica never rejects an emitted command, and Pika never receives a forbidden form.
//!
//! A key is exempt only when the engine reported it at risk (a TTL extension reaching the replica
//! after the old deadline, `docs/rewrites.md#at-risk`) and the replica did apply that entry at or
//! after the old deadline. The negative control runs the same generator with every family off and
//! must find a P1 violation.

use bytes::Bytes;
use pika_ttl_proxy::engine::{
    self, AtRisk, Dialect, Emit, Outcome, PikaRelease, Policy, RiskCause, StreamState,
};
use pika_ttl_proxy::families::FamilySwitches;
use pika_ttl_proxy::model::{show_argv, show_bytes, Argv, Master, ModelErrorKind, Replica};
use pika_ttl_proxy::table::{Baseline, ExpiryTable};
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;

/// Around the clock of the captured Pika session (2026-11-23), so seconds fit in int32.
const START_MS: i64 = 1_795_469_984_000;
/// "Far future" for the final check: ten years after the last apply.
const FAR_FUTURE_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

// ---------------------------------------------------------------------------------------------
// Histories
// ---------------------------------------------------------------------------------------------

/// One argument of a generated command; times are resolved when the step runs.
#[derive(Clone, Debug)]
enum Arg {
    Lit(&'static str),
    Int(i64),
    /// Unix seconds: the master's current second plus this offset.
    AbsSec(i64),
    /// Unix ms: the master's current ms plus this offset.
    AbsMs(i64),
}

#[derive(Clone, Debug)]
enum Action {
    Client(Vec<Arg>),
    /// The Redis active expiry cycle reaching this key.
    ActiveExpire(&'static str),
}

#[derive(Clone, Debug)]
struct Step {
    advance_ms: i64,
    delay_ms: i64,
    /// Where between exec and apply time the proxy receives a Redis entry, in quarters (used
    /// only by the receive-lag test).
    receive_quarter: i64,
    db: u32,
    lower_case: bool,
    action: Action,
}

#[derive(Clone, Debug)]
struct History {
    start_ms: i64,
    /// The first `attach_after` steps run on the master before the proxy attaches: the replica
    /// starts from a full sync of the keys alive then, and the proxy from a warm-up scan of
    /// them (as a deployment beside a master that already holds data).
    attach_after: usize,
    steps: Vec<Step>,
}

/// A step with concrete times and arguments.
#[derive(Clone, Debug)]
struct Concrete {
    t_ms: i64,
    receive_ms: i64,
    apply_ms: i64,
    db: u32,
    action: ConcreteAction,
}

#[derive(Clone, Debug)]
enum ConcreteAction {
    Client(Argv),
    ActiveExpire(Bytes),
}

fn materialize(h: &History) -> Vec<Concrete> {
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

const STRING_KEYS: &[&str] = &["s1", "s2", "s3", "s4"];
const HASH_KEYS: &[&str] = &["h1", "h2"];
const SET_KEYS: &[&str] = &["st1", "st2"];
const ALL_KEYS: &[&str] = &["s1", "s2", "s3", "s4", "h1", "h2", "l1", "z1", "st1", "st2"];
const VALUES: &[&str] = &["1", "7", "100", "-3", "abc", "x"];
const FIELDS: &[&str] = &["f1", "f2", "n"];
const MEMBERS: &[&str] = &["a", "b", "c"];

/// Raw random draws for one command. Commands are built from plain numbers rather than from
/// proptest unions: a union clones the test runner for every alternative on every draw, which
/// made generation 20× slower than running the history. Shrinking still works: every number
/// shrinks towards 0, and arm 0 is the simplest command.
#[derive(Clone, Copy, Debug)]
struct Draw {
    a: u8,
    b: u8,
    c: u8,
    x: i64,
    flag: bool,
}

impl Draw {
    fn of(&self, options: &'static [&'static str], which: u8) -> &'static str {
        options[which as usize % options.len()]
    }
    fn skey(&self) -> &'static str {
        self.of(STRING_KEYS, self.a)
    }
    fn skey2(&self) -> &'static str {
        self.of(STRING_KEYS, self.c)
    }
    fn key(&self) -> &'static str {
        self.of(ALL_KEYS, self.a)
    }
    fn key2(&self) -> &'static str {
        self.of(ALL_KEYS, self.c)
    }
    fn hkey(&self) -> &'static str {
        self.of(HASH_KEYS, self.a)
    }
    fn value(&self) -> &'static str {
        self.of(VALUES, self.b)
    }
    fn value2(&self) -> &'static str {
        self.of(VALUES, self.c)
    }
    fn field(&self) -> &'static str {
        self.of(FIELDS, self.c)
    }
    fn member(&self) -> &'static str {
        self.of(MEMBERS, self.b)
    }
    /// 1–20 s.
    fn ttl(&self) -> Arg {
        Arg::Int(1 + self.x % 20)
    }
    /// 1000–20999 ms.
    fn ttl_ms(&self) -> Arg {
        Arg::Int(1000 + self.x % 20_000)
    }
    fn cond(&self) -> &'static str {
        if self.flag {
            "XX"
        } else {
            "NX"
        }
    }
}

type Build = fn(&Draw) -> Action;

fn cmd(args: Vec<Arg>) -> Action {
    Action::Client(args)
}

/// Client commands (weight, builder), weighted towards expiry-dependent ones.
fn arms(dialect: Dialect) -> Vec<(u32, Build)> {
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

fn l(s: &'static str) -> Arg {
    Arg::Lit(s)
}

fn step(dialect: Dialect) -> BoxedStrategy<Step> {
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
fn history_for(dialect: Dialect, release: PikaRelease) -> BoxedStrategy<History> {
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

fn history(dialect: Dialect) -> BoxedStrategy<History> {
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

// ---------------------------------------------------------------------------------------------
// Running a history
// ---------------------------------------------------------------------------------------------

/// What the proxy knows of the keys that existed when it attached (only matters when a history
/// has steps before the attach point).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// The warm-up listed every key: volatile ones with their deadline, the others as existing.
    ScanEveryKey,
    /// The warm-up kept only volatile keys (its key bound was hit, or today's engine before
    /// existence was tracked): keys without a TTL are "not volatile, existence unknown".
    ScanVolatileOnly,
}

#[derive(Clone, Copy, Debug)]
struct Options {
    dialect: Dialect,
    /// Pika release of master, replica and policy.
    release: PikaRelease,
    rewriting: bool,
    origin: Origin,
    /// Feed the engine the proxy's receive time (between exec and apply) instead of the
    /// master's exec time (Redis: the stream carries no time).
    receive_lag: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Violation {
    property: &'static str,
    key: Option<(u32, Bytes)>,
    at_ms: Option<i64>,
    detail: String,
}

impl Violation {
    fn is_p1(&self) -> bool {
        self.property.starts_with("P1")
    }
    fn is_p3(&self) -> bool {
        self.property.starts_with("P3")
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.property)?;
        if let Some((db, k)) = &self.key {
            write!(f, " on db{db} {}", show_bytes(k))?;
        }
        if let Some(t) = self.at_ms {
            write!(f, " at T={t}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

struct Run {
    master: Master,
    replica: Replica,
    start_ms: i64,
    last_apply_ms: i64,
    trace: Vec<String>,
    violations: Vec<Violation>,
    client_commands: usize,
    entries: usize,
    rewritten: usize,
    at_risk: Vec<AtRisk>,
    exempt: BTreeSet<(u32, Bytes)>,
}

impl Run {
    fn first(&self, relevant: impl Fn(&Violation) -> bool) -> Option<&Violation> {
        self.violations.iter().find(|v| relevant(v))
    }

    fn report(&self, violation: &Violation) -> String {
        let mut out = format!(
            "violated: {violation}\nhistory (times relative to {} ms; apply = replica's clock):\n",
            self.start_ms
        );
        for line in &self.trace {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        let at = violation.at_ms.unwrap_or(self.last_apply_ms);
        out.push_str(&format!(
            "master at T={at}:\n{}replica at T={at}:\n{}",
            indent(&self.master.dump(at)),
            indent(&self.replica.dump(at))
        ));
        out
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

fn rel(ms: i64, start: i64) -> String {
    format!("+{:.3}s", (ms - start) as f64 / 1000.0)
}

fn policy(dialect: Dialect, rewriting: bool) -> Policy {
    Policy {
        families: if rewriting {
            FamilySwitches::all_on()
        } else {
            FamilySwitches::all_off()
        },
        ..Policy::new(dialect)
    }
}

/// Forms a proxy must never send (`docs/rewrites.md#dialects` and
/// `docs/rewrites.md#6-nothing-a-replica-would-refuse`), checked on replacements.
fn dialect_form_violation(
    dialect: Dialect,
    release: PikaRelease,
    cmds: &[Argv],
    in_multi_before: bool,
) -> Option<String> {
    match dialect {
        Dialect::Pika => {
            for c in cmds {
                let name = String::from_utf8_lossy(&c[0]).to_ascii_lowercase();
                let forbidden = [
                    "pexpireat",
                    "pexpire",
                    "psetex",
                    "setex",
                    "expire",
                    "multi",
                    "exec",
                    "select",
                ];
                if forbidden.contains(&name.as_str()) {
                    return Some(format!("`{}` must never be sent to Pika", show_argv(c)));
                }
                if name == "set"
                    && c.iter().skip(3).any(|a| {
                        let a = a.to_ascii_uppercase();
                        matches!(a.as_slice(), b"EX" | b"PX" | b"EXAT" | b"PXAT" | b"KEEPTTL")
                    })
                {
                    return Some(format!("`{}`: Pika SET must not carry a TTL", show_argv(c)));
                }
                if name == "pksetexat" {
                    let ts = c
                        .get(2)
                        .and_then(|t| std::str::from_utf8(t).ok())
                        .and_then(|t| t.parse::<i64>().ok());
                    if c.len() != 4 || !ts.is_some_and(|t| (0..i64::from(i32::MAX)).contains(&t)) {
                        return Some(format!("`{}`: pksetexat out of range", show_argv(c)));
                    }
                    if release == PikaRelease::V4 && ts != Some(0) {
                        return Some(format!(
                            "`{}`: a Pika 4.0 replica reads this timestamp as int32 ms",
                            show_argv(c)
                        ));
                    }
                }
            }
            None
        }
        Dialect::Redis => {
            let is = |c: &Argv, n: &str| c[0].eq_ignore_ascii_case(n.as_bytes());
            if in_multi_before {
                if let Some(c) = cmds.iter().find(|c| is(c, "MULTI") || is(c, "EXEC")) {
                    return Some(format!("`{}` inside an upstream MULTI", show_argv(c)));
                }
            } else if cmds.len() > 1
                && !(is(&cmds[0], "MULTI") && is(&cmds[cmds.len() - 1], "EXEC"))
            {
                return Some("several commands for one entry without MULTI/EXEC".to_string());
            }
            None
        }
    }
}

fn run_steps(steps: &[Concrete], start_ms: i64, opts: Options) -> Run {
    run_history(steps, 0, start_ms, opts)
}

/// What a warm-up scan of `master` at `at_ms` gives the table (see [`Origin`]).
fn seed_from_scan(table: &ExpiryTable, master: &Master, at_ms: i64, origin: Origin) {
    table.reset(Baseline::Unknown);
    for ((db, key), record) in master.state_at(at_ms).keys {
        match record.deadline_ms {
            Some(deadline) => table.set_deadline(db, &key, deadline),
            None if origin == Origin::ScanEveryKey => table.mark_persistent(db, &key, true),
            None => {}
        }
    }
    table.set_baseline(match origin {
        Origin::ScanEveryKey => Baseline::Absent,
        Origin::ScanVolatileOnly => Baseline::NotVolatile,
    });
}

fn run_history(steps: &[Concrete], attach_after: usize, start_ms: i64, opts: Options) -> Run {
    let dialect = opts.dialect;
    let mut policy = policy(dialect, opts.rewriting);
    policy.pika_release = opts.release;
    let table = ExpiryTable::new(Baseline::Absent);
    let mut stream = StreamState::default();
    let mut run = Run {
        master: Master::new(dialect).with_pika_release(opts.release),
        replica: Replica::new(dialect).with_pika_release(opts.release),
        start_ms,
        last_apply_ms: start_ms,
        trace: Vec::new(),
        violations: Vec::new(),
        client_commands: 0,
        entries: 0,
        rewritten: 0,
        at_risk: Vec::new(),
        exempt: BTreeSet::new(),
    };
    // Replica failures, judged at the end once every at-risk report is known.
    let mut failures: Vec<(u32, Bytes, String)> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        if i < attach_after {
            let ConcreteAction::Client(argv) = &s.action else {
                continue;
            };
            run.client_commands += 1;
            let reply = match run.master.execute(s.db, argv, s.t_ms) {
                Ok(e) => e.reply.to_string(),
                Err(e) => format!("model error: {e}"),
            };
            run.trace.push(format!(
                "{} {} -> {reply} | before the proxy attached",
                rel(s.t_ms, start_ms),
                show_argv(argv)
            ));
            if i + 1 == attach_after {
                // The Pika master's clock is whole seconds: its files, and a scan, hold every
                // key alive in that second.
                let at = s.t_ms.div_euclid(1000) * 1000;
                let snapshot = run.master.state_at(at);
                run.replica.load_full_sync(&snapshot);
                seed_from_scan(&table, &run.master, at, opts.origin);
                run.trace.push(format!(
                    "{} proxy attached: full sync of {} keys, warm-up {:?}",
                    rel(s.t_ms, start_ms),
                    snapshot.keys.len(),
                    opts.origin
                ));
            }
            continue;
        }
        let (what, reply, entries) = match &s.action {
            ConcreteAction::Client(argv) => {
                run.client_commands += 1;
                match run.master.execute(s.db, argv, s.t_ms) {
                    Ok(e) => (show_argv(argv), format!(" -> {}", e.reply), e.entries),
                    Err(e) => (show_argv(argv), format!(" -> model error: {e}"), Vec::new()),
                }
            }
            ConcreteAction::ActiveExpire(k) => (
                format!("(active expiry of {})", show_bytes(k)),
                String::new(),
                run.master.active_expire(s.db, k, s.t_ms),
            ),
        };
        let mut parts = Vec::new();
        for entry in entries {
            run.entries += 1;
            let exec_ms = if opts.receive_lag {
                s.receive_ms
            } else {
                entry.exec_ms
            };
            let in_multi_before = stream.in_multi;
            let decision = engine::rewrite(&entry.argv, exec_ms, &mut stream, &table, &policy);
            let cmds: Vec<Argv> = match &decision.emit {
                Emit::Forward => vec![entry.argv.clone()],
                Emit::Replace(v) => v.argvs(&entry.argv),
            };
            let shown = match &decision.emit {
                Emit::Forward => format!("{} => fwd", show_argv(&entry.argv)),
                Emit::Replace(v) => format!(
                    "{} => [{}]",
                    show_argv(&entry.argv),
                    v.argvs(&entry.argv)
                        .iter()
                        .map(|c| show_argv(c))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            };
            let mut notes = String::new();
            if decision.outcome != Outcome::Passed {
                notes.push_str(&format!(" ({})", decision.outcome.name()));
            }
            if matches!(decision.emit, Emit::Replace(_)) {
                run.rewritten += 1;
                if !opts.rewriting {
                    run.violations.push(Violation {
                        property: "P3 (families off must forward)",
                        key: None,
                        at_ms: None,
                        detail: shown.clone(),
                    });
                }
                if decision.outcome != Outcome::Rewritten {
                    run.violations.push(Violation {
                        property: "P3 (untouched entries pass byte for byte)",
                        key: None,
                        at_ms: None,
                        detail: format!(
                            "outcome {} but replaced: {shown}",
                            decision.outcome.name()
                        ),
                    });
                }
                if let Some(msg) =
                    dialect_form_violation(dialect, opts.release, &cmds, in_multi_before)
                {
                    run.violations.push(Violation {
                        property: "R6 (dialect form)",
                        key: None,
                        at_ms: None,
                        detail: msg,
                    });
                }
            }
            // A move out of a key that already differs on the replica through the known limit
            // (exempt) moves something else, or nothing, there: the difference travels to the
            // destination, whatever the engine knows of the source now.
            if is_move(&entry.argv) {
                if let (Some(src), Some(dst)) = (entry.argv.get(1), entry.argv.get(2)) {
                    if run.exempt.contains(&(stream.db, src.clone())) {
                        run.exempt.insert((stream.db, dst.clone()));
                    }
                }
            }
            if let Some(risk) = &decision.at_risk {
                notes.push_str(&format!(
                    " [at risk: db{} {} old deadline {}]",
                    risk.db,
                    show_bytes(&risk.key),
                    rel(risk.old_deadline_ms, start_ms)
                ));
                notes.push_str(&format!(" [cause: {}]", risk.cause.name()));
                // Only the documented limits exempt a key; a gap in what the proxy could have
                // known (existence it never tracked) must fail the proof.
                if risk.old_deadline_ms <= s.apply_ms && risk.cause != RiskCause::ExistenceUntracked
                {
                    run.exempt.insert((risk.db, risk.key.clone()));
                }
                run.at_risk.push(risk.clone());
            }
            for c in &cmds {
                let db = run.replica.selected_db();
                if let Err(e) = run.replica.apply(c, s.apply_ms) {
                    notes.push_str(&format!(" [replica: {e}]"));
                    if e.kind == ModelErrorKind::Failed {
                        let key = e.key().cloned().unwrap_or_default();
                        failures.push((db, key, e.to_string()));
                    } else {
                        run.violations.push(Violation {
                            property: "R6 (replica rejected an emitted command)",
                            key: e.key().map(|k| (db, k.clone())),
                            at_ms: Some(s.apply_ms),
                            detail: e.to_string(),
                        });
                    }
                }
            }
            parts.push(format!("{shown}{notes}"));
        }
        run.last_apply_ms = s.apply_ms;
        let db = if dialect == Dialect::Redis {
            format!("db{} ", s.db)
        } else {
            String::new()
        };
        run.trace.push(format!(
            "{} {db}{what}{reply} | {} | apply {}",
            rel(s.t_ms, start_ms),
            if parts.is_empty() {
                "no entry".to_string()
            } else {
                parts.join(" ; ")
            },
            rel(s.apply_ms, start_ms)
        ));
    }
    if run.replica.in_transaction() {
        run.violations.push(Violation {
            property: "R6 (stream ends inside MULTI)",
            key: None,
            at_ms: None,
            detail: "the replica is still queueing a transaction".to_string(),
        });
    }
    for (db, key, msg) in failures {
        if !run.exempt.contains(&(db, key.clone())) {
            run.violations.push(Violation {
                property: "P2 (replica failed an entry the master executed)",
                key: Some((db, key)),
                at_ms: None,
                detail: msg,
            });
        }
    }
    check_states(&mut run);
    run
}

/// P1 and P2 at a_n, around every deadline after a_n, and far in the future.
fn check_states(run: &mut Run) {
    let a_n = run.last_apply_ms;
    let mut keys: BTreeSet<(u32, Bytes)> = BTreeSet::new();
    let mut instants: BTreeSet<i64> = BTreeSet::from([a_n, a_n + FAR_FUTURE_MS]);
    for (k, r) in run.master.records().chain(run.replica.records()) {
        keys.insert(k.clone());
        if let Some(d) = r.deadline_ms {
            instants.extend([d - 1, d, d + 1].into_iter().filter(|t| *t >= a_n));
        }
    }
    for t in instants {
        for (db, key) in &keys {
            if run.exempt.contains(&(*db, key.clone())) {
                continue;
            }
            let m = run.master.record_at(*db, key, t);
            let r = run.replica.record_at(*db, key, t);
            let v = match (m, r) {
                (None, None) => None,
                (Some(m), None) => {
                    Some(("P1 (presence)", format!("master has {m}, replica has none")))
                }
                (None, Some(r)) => {
                    Some(("P1 (presence)", format!("replica has {r}, master has none")))
                }
                (Some(m), Some(r)) if m.deadline_ms != r.deadline_ms => {
                    Some(("P1 (absolute expiry)", format!("master {m}, replica {r}")))
                }
                (Some(m), Some(r)) if m.value != r.value => {
                    Some(("P2 (value)", format!("master {m}, replica {r}")))
                }
                _ => None,
            };
            if let Some((property, detail)) = v {
                run.violations.push(Violation {
                    property,
                    key: Some((*db, key.clone())),
                    at_ms: Some(t),
                    detail,
                });
                // One violation per key is enough to explain the failure.
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Property runners
// ---------------------------------------------------------------------------------------------

fn cases(default: u32) -> u32 {
    std::env::var("CONVERGENCE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(cases: u32) -> TestRunner {
    let rng_seed = std::env::var("CONVERGENCE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(RngSeed::Random, RngSeed::Fixed);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed,
        ..Config::default()
    })
}

#[derive(Default)]
struct Totals {
    histories: usize,
    client_commands: usize,
    entries: usize,
    rewritten: usize,
    at_risk_reported: usize,
    exempted_keys: usize,
}

/// Run `cases` generated histories; fail a case on the first violation `relevant` selects.
/// Returns the totals and, on failure, the report of the minimal history.
fn check_property(
    opts: Options,
    cases: u32,
    relevant: fn(&Violation) -> bool,
) -> (Totals, Option<String>) {
    let totals = RefCell::new(Totals::default());
    let mut runner = runner(cases);
    let result = runner.run(&history_for(opts.dialect, opts.release), |h| {
        let run = run_history(&materialize(&h), h.attach_after, h.start_ms, opts);
        let mut t = totals.borrow_mut();
        t.histories += 1;
        t.client_commands += run.client_commands;
        t.entries += run.entries;
        t.rewritten += run.rewritten;
        t.at_risk_reported += run.at_risk.len();
        t.exempted_keys += run.exempt.len();
        match run.first(relevant) {
            Some(v) => Err(TestCaseError::fail(v.to_string())),
            None => Ok(()),
        }
    });
    let failure = match result {
        Ok(()) => None,
        Err(TestError::Fail(reason, minimal)) => {
            let run = run_history(
                &materialize(&minimal),
                minimal.attach_after,
                minimal.start_ms,
                opts,
            );
            Some(match run.first(relevant) {
                Some(v) => run.report(v),
                None => format!("{reason} (not reproduced on replay)"),
            })
        }
        Err(TestError::Abort(reason)) => Some(format!("aborted: {reason}")),
    };
    (totals.into_inner(), failure)
}

fn print_totals(label: &str, t: &Totals) {
    println!(
        "{label}: {} histories, {} client commands, {} entries ({} rewritten); \
         at-risk reported {} times, {} keys exempted as at-risk",
        t.histories, t.client_commands, t.entries, t.rewritten, t.at_risk_reported, t.exempted_keys
    );
}

fn convergence(dialect: Dialect, receive_lag: bool, default_cases: u32) {
    let opts = Options {
        dialect,
        rewriting: true,
        receive_lag,
        origin: Origin::ScanEveryKey,
        release: PikaRelease::V3,
    };
    let (totals, failure) = check_property(opts, cases(default_cases), |_| true);
    let label = format!(
        "{dialect:?}{}",
        if receive_lag { " (receive lag)" } else { "" }
    );
    print_totals(&label, &totals);
    if let Some(report) = failure {
        panic!("{label}: convergence failed on this minimal history\n{report}");
    }
}

#[test]
fn converges_pika() {
    convergence(Dialect::Pika, false, 10_000);
}

#[test]
fn converges_redis() {
    convergence(Dialect::Redis, false, 10_000);
}

/// Redis streams carry no time: the proxy stamps entries when it receives them, somewhere
/// between the master's execution and the replica's apply. `docs/rewrites.md#vocabulary` says
/// that is good enough because the master sends its own DELs for expired keys.
#[test]
fn converges_redis_with_receive_time() {
    convergence(Dialect::Redis, true, 2_000);
}

fn negative_control(dialect: Dialect) {
    let opts = Options {
        dialect,
        rewriting: false,
        receive_lag: false,
        origin: Origin::ScanEveryKey,
        release: PikaRelease::V3,
    };
    let (totals, failure) = check_property(opts, cases(10_000), Violation::is_p1);
    print_totals(&format!("{dialect:?} negative control"), &totals);
    match failure {
        Some(report) => {
            println!("{dialect:?} negative control found the expected P1 violation:\n{report}")
        }
        None => panic!(
            "{dialect:?}: with every family off the checker found no P1 violation in {} histories \
             — the checker cannot fail",
            totals.histories
        ),
    }
}

#[test]
fn negative_control_pika() {
    negative_control(Dialect::Pika);
}

#[test]
fn negative_control_redis() {
    negative_control(Dialect::Redis);
}

/// A warm-up that lists only volatile keys (the engine before existence was tracked, or a scan
/// past `--warmup-max-keys`) cannot decide a write after an EXPIRE on a key that had no TTL.
/// The proof must see that as a divergence, not excuse it as a documented limit: this is the
/// failure the real Pika 3.5.4 runs showed (`q0`, `t7`, `h` left immortal).
#[test]
fn negative_control_pika_scan_of_volatile_keys_only() {
    let opts = Options {
        dialect: Dialect::Pika,
        rewriting: true,
        receive_lag: false,
        origin: Origin::ScanVolatileOnly,
        release: PikaRelease::V3,
    };
    let (totals, failure) = check_property(opts, cases(10_000), Violation::is_p1);
    print_totals("Pika, warm-up of volatile keys only", &totals);
    match failure {
        Some(report) => println!("found the expected P1 violation:\n{report}"),
        None => panic!(
            "a warm-up without existence gave no P1 violation in {} histories: the proof does \
             not cover keys that existed before the proxy",
            totals.histories
        ),
    }
}

/// The same proof against the Pika 4.0.1 dialect: its master logs INCR/APPEND as
/// `pksetexat` and PSETEX in milliseconds, its replica misreads every real `pksetexat`.
#[test]
fn converges_pika_4_0() {
    let opts = Options {
        dialect: Dialect::Pika,
        release: PikaRelease::V4,
        rewriting: true,
        receive_lag: false,
        origin: Origin::ScanEveryKey,
    };
    let (totals, failure) = check_property(opts, cases(10_000), |_| true);
    print_totals("Pika 4.0", &totals);
    if let Some(report) = failure {
        panic!("Pika 4.0: convergence failed on this minimal history\n{report}");
    }
}

/// A 4.0.1 replica fed directly by a 4.0.1 master diverges (every SETEX lands expired).
#[test]
fn negative_control_pika_4_0() {
    let opts = Options {
        dialect: Dialect::Pika,
        release: PikaRelease::V4,
        rewriting: false,
        receive_lag: false,
        origin: Origin::ScanEveryKey,
    };
    let (totals, failure) = check_property(opts, cases(10_000), Violation::is_p1);
    print_totals("Pika 4.0 negative control", &totals);
    assert!(
        failure.is_some(),
        "a direct 4.0.1 replica showed no P1 violation in {} histories",
        totals.histories
    );
}

#[test]
fn families_off_forward_every_entry() {
    for dialect in [Dialect::Pika, Dialect::Redis] {
        let opts = Options {
            dialect,
            rewriting: false,
            receive_lag: false,
            origin: Origin::ScanEveryKey,
            release: PikaRelease::V3,
        };
        let (totals, failure) = check_property(opts, cases(2_000), Violation::is_p3);
        print_totals(&format!("{dialect:?} P3 families off"), &totals);
        if let Some(report) = failure {
            panic!("{dialect:?}: P3 failed\n{report}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed scenarios
// ---------------------------------------------------------------------------------------------

fn argv(s: &str) -> Argv {
    s.split(' ')
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

/// (exec ms, command, apply ms) in DB 0.
fn scenario(steps: &[(i64, &str, i64)]) -> Vec<Concrete> {
    steps
        .iter()
        .map(|(t, cmd, a)| Concrete {
            t_ms: *t,
            receive_ms: *t,
            apply_ms: *a,
            db: 0,
            action: ConcreteAction::Client(argv(cmd)),
        })
        .collect()
}

fn run_scenario(steps: &[Concrete], dialect: Dialect, rewriting: bool) -> Run {
    run_steps(
        steps,
        steps.first().map_or(START_MS, |s| s.t_ms),
        Options {
            dialect,
            rewriting,
            receive_lag: false,
            origin: Origin::ScanEveryKey,
            release: PikaRelease::V3,
        },
    )
}

fn assert_converged(run: &Run) {
    if let Some(v) = run.violations.first() {
        panic!("expected convergence\n{}", run.report(v));
    }
}

fn string_value(rec: Option<&pika_ttl_proxy::model::Record>) -> Option<(String, Option<i64>)> {
    rec.map(|r| match &r.value {
        pika_ttl_proxy::model::Value::Str(s) => (show_bytes(s), r.deadline_ms),
        other => (other.to_string(), r.deadline_ms),
    })
}

/// (exec ms, command, apply ms) where the first `before` steps ran before the proxy attached.
fn run_attached(steps: &[(i64, &str, i64)], before: usize, origin: Origin) -> Run {
    let steps = scenario(steps);
    run_history(
        &steps,
        before,
        steps.first().map_or(START_MS, |s| s.t_ms),
        Options {
            dialect: Dialect::Pika,
            release: PikaRelease::V3,
            rewriting: true,
            receive_lag: false,
            origin,
        },
    )
}

/// The cases measured on real Pika 3.5.4 with a paused replica: a list the warm-up saw without
/// a TTL, EXPIREd and pushed to again; EXPIRE on an absent key before a set is created; a hash
/// created after the warm-up, EXPIREd, then incremented late.
#[test]
fn expire_then_write_on_keys_from_before_the_proxy() {
    let t = START_MS;
    let q0 = [
        (t, "RPUSH l1 x", t),
        (t + 1000, "EXPIRE l1 2", t + 6000),
        (t + 1500, "RPUSH l1 y", t + 6000),
    ];
    let t7 = [
        (t, "SET s1 keep", t),
        (t + 500, "EXPIRE st1 1", t + 500),
        (t + 600, "SADD st1 a", t + 600),
        (t + 1000, "EXPIRE st1 3", t + 9000),
        (t + 1200, "SADD st1 b", t + 9000),
    ];
    let h = [
        (t, "SET s1 keep", t),
        (t + 100, "HSET h1 f v", t + 100),
        (t + 600, "EXPIRE h1 3", t + 8000),
        (t + 900, "HINCRBY h1 n 1", t + 8000),
    ];
    for (name, steps) in [("q0", &q0[..]), ("t7", &t7[..]), ("h", &h[..])] {
        let run = run_attached(steps, 1, Origin::ScanEveryKey);
        if let Some(v) = run.violations.first() {
            panic!("{name}: expected convergence\n{}", run.report(v));
        }
    }
    // The list the scan saw without a TTL is the one a volatile-only warm-up cannot decide.
    let run = run_attached(&q0, 1, Origin::ScanVolatileOnly);
    assert!(
        run.violations.iter().any(Violation::is_p1),
        "a volatile-only warm-up should leave l1 immortal:\n{}",
        run.trace.join("\n")
    );
}

#[test]
fn seed_scenario_both_dialects() {
    for dialect in [Dialect::Pika, Dialect::Redis] {
        let t0 = START_MS;
        let deadline = t0 + 10_000;
        // The replica applies both entries 30 s late.
        let late = scenario(&[
            (t0, "SETEX key1 10 100", t0 + 30_000),
            (t0 + 1_000, "INCR key1", t0 + 31_000),
        ]);
        let raw = run_scenario(&late, dialect, false);
        assert_eq!(
            string_value(raw.replica.record_at(0, b"key1", t0 + 31_000)),
            Some(("1".to_string(), None)),
            "{dialect:?}: without rewriting the late INCR must leave a permanent key"
        );
        assert!(raw.first(Violation::is_p1).is_some());
        let fixed = run_scenario(&late, dialect, true);
        assert_converged(&fixed);
        assert_eq!(
            string_value(fixed.master.record_at(0, b"key1", deadline - 1)),
            Some(("101".to_string(), Some(deadline)))
        );
        assert!(fixed.replica.record_at(0, b"key1", t0 + 31_000).is_none());
        assert_eq!(fixed.replica.dump(t0 + 31_000), "(empty)\n");

        // A replica 3 s behind sees 101 until the deadline, then nothing, like the master.
        let behind = scenario(&[
            (t0, "SETEX key1 10 100", t0 + 3_000),
            (t0 + 1_000, "INCR key1", t0 + 4_000),
        ]);
        let fixed = run_scenario(&behind, dialect, true);
        assert_converged(&fixed);
        for t in [t0 + 4_000, deadline] {
            assert_eq!(
                string_value(fixed.replica.record_at(0, b"key1", t)),
                Some(("101".to_string(), Some(deadline))),
                "{dialect:?} at {t}"
            );
        }
        assert!(fixed.replica.record_at(0, b"key1", deadline + 1).is_none());
        assert!(fixed.master.record_at(0, b"key1", deadline + 1).is_none());
    }
}

/// `docs/pika-protocol.md#late-replica-session`: the late-replica session on real Pika 3.5.4.
#[test]
fn pika_session_reproduction() {
    // 21:40:00 UTC on the session's machine clock.
    let base = 1_795_470_000_000;
    let at = |s: f64| base + (s * 1000.0).round() as i64;
    let steps = scenario(&[
        (at(51.707), "SETEX k3 3 100", at(51.75)),
        (at(51.724), "HSET h3 f v", at(51.75)),
        (at(51.740), "EXPIRE h3 3", at(51.76)),
        (at(51.754), "SETEX k5 3 7", at(51.76)),
        (at(52.536), "INCR k3", at(59.596)),
        (at(52.547), "HINCRBY h3 n 1", at(59.641)),
        (at(52.564), "APPEND k5 x", at(59.641)),
        (at(52.580), "SET s3 abc EX 4 NX", at(59.641)),
    ]);
    let raw = run_scenario(&steps, Dialect::Pika, false);
    // What the real replica showed at 21:41:01.6.
    let t = at(61.6);
    assert_eq!(
        raw.replica.dump(t),
        concat!(
            "db0 h3 = hash{n: \"1\"} (no expiry)\n",
            "db0 k3 = \"1\" (no expiry)\n",
            "db0 k5 = \"x\" (no expiry)\n",
            "db0 s3 = \"abc\" (expires at 1795470063000 ms)\n",
        )
    );
    assert_eq!(raw.master.dump(t), "(empty)\n");
    let v = raw
        .first(Violation::is_p1)
        .expect("the raw stream must diverge");
    println!("raw stream diverges as observed: {v}");

    let fixed = run_scenario(&steps, Dialect::Pika, true);
    assert_converged(&fixed);
    assert!(fixed.at_risk.is_empty());
    assert_eq!(fixed.replica.dump(t), "(empty)\n");
    // s3 lives exactly as long as on the master.
    assert_eq!(
        fixed
            .replica
            .record_at(0, b"s3", at(55.0))
            .and_then(|r| r.deadline_ms),
        Some(base + 56_000)
    );
    println!("rewritten trace:\n{}", fixed.trace.join("\n"));
}

/// `docs/rewrites.md#at-risk`: TTL extension after the deadline. Strings whose new value travels in
/// the entry are repaired; a hash whose TTL is extended or removed too late is reported as at risk.
#[test]
fn ttl_extension_after_deadline() {
    let t0 = START_MS;
    for dialect in [Dialect::Pika, Dialect::Redis] {
        // (history, whether the unrewritten stream loses the key). Every history writes the
        // string's full value, so the engine can make it unconditional.
        let mut cases = vec![
            // SET XX removes the TTL of a live volatile key; late, the XX fails on the replica.
            (
                vec![
                    (t0, "SET k 1 EX 5", t0 + 10_000),
                    (t0 + 3_000, "SET k 2 XX", t0 + 10_000),
                ],
                true,
            ),
            // SET XX EX extends the TTL (Pika logs it raw; Redis already sends SET … PXAT).
            (
                vec![
                    (t0, "SETEX k 5 1", t0 + 10_000),
                    (t0 + 3_000, "SET k 2 XX EX 100", t0 + 10_000),
                ],
                dialect == Dialect::Pika,
            ),
        ];
        if dialect == Dialect::Redis {
            // INCRBYFLOAT propagates as SET … KEEPTTL, and a client's SET KEEPTTL travels as is:
            // late, both create a permanent key.
            cases.push((
                vec![
                    (t0, "SET k 1 EX 5", t0 + 10_000),
                    (t0 + 2_000, "INCRBYFLOAT k 1.5", t0 + 10_000),
                    (t0 + 3_000, "SET k 9 KEEPTTL", t0 + 10_000),
                ],
                true,
            ));
        }
        for (case, raw_diverges) in cases {
            let steps = scenario(&case);
            let raw = run_scenario(&steps, dialect, false);
            assert_eq!(
                raw.first(Violation::is_p1).is_some(),
                raw_diverges,
                "{dialect:?}: raw stream\n{}",
                raw.trace.join("\n")
            );
            let fixed = run_scenario(&steps, dialect, true);
            assert_converged(&fixed);
            assert!(
                fixed.exempt.is_empty(),
                "{dialect:?}: nothing needs exempting"
            );
        }

        // Found by the property test (2026-12-02): a TTL extension reaches the replica after
        // the old deadline, so the source is gone there, and a move from it arrives with it.
        // The engine reports both; the destination is exempt because its source was lost, and
        // so is the key a later move out of that destination fills.
        let steps = scenario(&[
            (t0, "SADD st1 a", t0),
            (t0 + 4_476, "EXPIREAT st1 1795469990", t0 + 4_476),
            (t0 + 5_069, "EXPIRE st1 5", t0 + 6_001),
            (t0 + 5_069, "SMOVE st1 st2 a", t0 + 6_001),
            (t0 + 7_000, "SMOVE st2 st3 a", t0 + 7_000),
        ]);
        let fixed = run_scenario(&steps, dialect, true);
        assert!(
            fixed.at_risk.iter().any(|r| &r.key[..] == b"st2"),
            "{dialect:?}: the move must be reported at risk\n{}",
            fixed.trace.join("\n")
        );
        assert!(fixed.replica.record_at(0, b"st3", t0 + 8_000).is_none());
        assert!(fixed.master.record_at(0, b"st3", t0 + 8_000).is_some());
        for key in [&b"st2"[..], b"st3"] {
            assert!(fixed.exempt.contains(&(0, Bytes::copy_from_slice(key))));
        }
        assert_converged(&fixed);

        for extension in ["PERSIST h", "EXPIRE h 100"] {
            let steps = scenario(&[
                (t0, "HSET h f v", t0 + 10_000),
                (t0, "EXPIRE h 5", t0 + 10_000),
                (t0 + 3_000, extension, t0 + 10_000),
            ]);
            let fixed = run_scenario(&steps, dialect, true);
            let risk = fixed.at_risk.iter().find(|r| &r.key[..] == b"h");
            assert!(
                risk.is_some_and(|r| r.db == 0 && r.old_deadline_ms == t0 + 5_000),
                "{dialect:?}: `{extension}` after the deadline must be reported at risk\n{}",
                fixed.trace.join("\n")
            );
            // The exemption is needed: the master keeps h, the replica dropped it.
            assert!(fixed.master.record_at(0, b"h", t0 + 10_000).is_some());
            assert!(fixed.replica.record_at(0, b"h", t0 + 10_000).is_none());
            assert!(fixed.exempt.contains(&(0, Bytes::from_static(b"h"))));
            assert_converged(&fixed);

            // Applied before the deadline, the same history converges without any exemption.
            let on_time = scenario(&[
                (t0, "HSET h f v", t0 + 1_000),
                (t0, "EXPIRE h 5", t0 + 1_000),
                (t0 + 3_000, extension, t0 + 4_000),
            ]);
            let fixed = run_scenario(&on_time, dialect, true);
            assert!(fixed.exempt.is_empty());
            assert_converged(&fixed);
        }
    }
}

/// SMOVE, RPOPLPUSH, LMOVE and their blocking forms: an element leaves `argv[1]`.
fn is_move(argv: &Argv) -> bool {
    argv.first().is_some_and(|name| {
        ["smove", "rpoplpush", "lmove", "blmove", "brpoplpush"]
            .iter()
            .any(|m| name.eq_ignore_ascii_case(m.as_bytes()))
    })
}

/// The checker itself: a replica that silently drops one entry must be caught.
#[test]
fn checker_catches_a_lost_entry() {
    let t0 = START_MS;
    let mut run = run_scenario(&scenario(&[(t0, "SET k 1 EX 5", t0)]), Dialect::Redis, true);
    assert_converged(&run);
    run.master
        .execute(0, &argv("SET k 2 EX 5"), t0 + 1_000)
        .unwrap();
    run.violations.clear();
    check_states(&mut run);
    let v = run
        .violations
        .first()
        .expect("a value difference must be found");
    assert!(
        v.property.starts_with("P1") || v.property.starts_with("P2"),
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------------
// Minimal histories the generator found against the engine (kept as fixed cases)
// ---------------------------------------------------------------------------------------------

fn run_with_receive(steps: &[(i64, &str, i64, i64)], dialect: Dialect) -> Run {
    let concrete: Vec<Concrete> = steps
        .iter()
        .map(|(t, cmd, receive, apply)| Concrete {
            t_ms: *t,
            receive_ms: *receive,
            apply_ms: *apply,
            db: 0,
            action: ConcreteAction::Client(argv(cmd)),
        })
        .collect();
    run_steps(
        &concrete,
        START_MS,
        Options {
            dialect,
            rewriting: true,
            receive_lag: true,
            origin: Origin::ScanEveryKey,
            release: PikaRelease::V3,
        },
    )
}

/// A removal (HDEL, SREM, ZREM, LPOP) that may empty a volatile key leaves the proxy unsure
/// whether the key still exists, but its deadline T is still known: the key is either gone or
/// dies at T. A later key-creating write or TTL extension that a replica applies after T is
/// then wrong on the replica exactly when the key still existed on the master, so the engine
/// must report it at risk (old deadline T), or resolve it; passing it as an unknown key without
/// a report leaves an immortal key (or drops a key the master keeps).
#[test]
fn removal_on_a_volatile_key_keeps_its_deadline_known() {
    let t0 = START_MS;
    let histories: [&[(i64, &str, i64)]; 3] = [
        // Found by the generator (Pika): the late ZADD makes a permanent z1.
        &[
            (t0, "ZADD z1 1 b", t0),
            (t0, "EXPIRE z1 3", t0),
            (t0, "ZREM z1 c", t0),
            (t0, "ZADD z1 1 a", t0 + 3_000),
        ],
        // Found by the generator (Pika): the late PERSIST cannot restore the dropped hash.
        &[
            (t0, "HSET h1 f1 1", t0),
            (t0, "EXPIRE h1 3", t0 + 19_000),
            (t0, "HDEL h1 f2", t0 + 19_000),
            (t0, "PERSIST h1", t0 + 19_000),
        ],
        // Found by the generator (Pika and Redis): a late TTL extension after a removal.
        &[
            (t0, "SADD st2 a", t0),
            (t0, "SADD st2 c", t0),
            (t0, "EXPIRE st2 5", t0),
            (t0, "SREM st2 c", t0),
            (t0, "EXPIRE st2 6", t0 + 5_000),
        ],
    ];
    let mut failures = Vec::new();
    for dialect in [Dialect::Pika, Dialect::Redis] {
        for h in histories {
            let run = run_scenario(&scenario(h), dialect, true);
            if let Some(v) = run.violations.first() {
                failures.push(format!("{dialect:?}:\n{}", run.report(v)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Pika logs SMOVE even when it moves nothing. The destination then does not exist, so a
/// following EXPIRE on it does nothing on the master either; a later SADD creates a permanent
/// set. Treating the no-op SMOVE as creating the destination makes the engine restate the
/// phantom deadline after the SADD, and the replica expires a key the master keeps.
#[test]
fn pika_smove_that_moves_nothing_does_not_create_the_destination() {
    let t0 = START_MS;
    let run = run_scenario(
        &scenario(&[
            (t0, "SMOVE st1 st2 a", t0),
            (t0, "PEXPIRE st2 1000", t0),
            (t0, "SADD st2 a", t0),
        ]),
        Dialect::Pika,
        true,
    );
    assert_converged(&run);
}

/// Redis streams carry no time, so the engine's exec time is the proxy's receive time. An entry
/// that carries an absolute deadline (`SET … PXAT`, `PEXPIREAT`) which has passed by the time
/// the proxy receives it was executed while the key was alive: the master sends its own DEL
/// later. Recording it as "already deleted" makes the next INCR pass without its PEXPIREAT.
#[test]
fn redis_deadline_already_past_when_received() {
    let t0 = START_MS;
    let run = run_with_receive(
        &[
            (t0, "SET s1 1 NX EX 1", t0 + 1_500, t0 + 9_000),
            (t0, "INCR s1", t0 + 1_500, t0 + 9_000),
        ],
        Dialect::Redis,
    );
    assert_converged(&run);
    let run = run_with_receive(
        &[
            (t0, "HSET h1 f 1", t0, t0),
            (t0, "PEXPIRE h1 1000", t0 + 1_500, t0 + 9_000),
            (t0, "HINCRBY h1 n 1", t0 + 1_500, t0 + 9_000),
        ],
        Dialect::Redis,
    );
    assert_converged(&run);
}
