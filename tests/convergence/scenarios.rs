//! Fixed histories: the seed scenario, sessions reproduced on real Pika, and the cases that
//! once broke the proof.

use super::*;
use crate::history::*;
use crate::run::*;

// ---------------------------------------------------------------------------------------------
// Fixed scenarios
// ---------------------------------------------------------------------------------------------

pub(crate) fn argv(s: &str) -> Argv {
    s.split(' ')
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

/// (exec ms, command, apply ms) in DB 0.
pub(crate) fn scenario(steps: &[(i64, &str, i64)]) -> Vec<Concrete> {
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

pub(crate) fn run_scenario(steps: &[Concrete], dialect: Dialect, rewriting: bool) -> Run {
    run_steps(
        steps,
        steps.first().map_or(START_MS, |s| s.t_ms),
        Options {
            rewriting,
            ..Options::new(dialect)
        },
    )
}

pub(crate) fn assert_converged(run: &Run) {
    if let Some(v) = run.violations.first() {
        panic!("expected convergence\n{}", run.report(v));
    }
}

pub(crate) fn string_value(
    rec: Option<&pika_ttl_proxy::model::Record>,
) -> Option<(String, Option<i64>)> {
    rec.map(|r| match &r.value {
        pika_ttl_proxy::model::Value::Str(s) => (show_bytes(s), r.deadline_ms),
        other => (other.to_string(), r.deadline_ms),
    })
}

/// (exec ms, command, apply ms) where the first `before` steps ran before the proxy attached.
pub(crate) fn run_attached(steps: &[(i64, &str, i64)], before: usize, origin: Origin) -> Run {
    let steps = scenario(steps);
    run_history(
        &steps,
        before,
        steps.first().map_or(START_MS, |s| s.t_ms),
        Options {
            origin,
            ..Options::new(Dialect::Pika)
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
        // On Redis the engine reports both; the destination is exempt because its source was
        // lost, and so is the key a later move out of that destination fills. A Pika master
        // logs each move as the removal and the add it made (`srem`, `sadd`), so its replica
        // adds the member whatever it lost: nothing to report, and the keys converge.
        let steps = scenario(&[
            (t0, "SADD st1 a", t0),
            (t0 + 4_476, "EXPIREAT st1 1795469990", t0 + 4_476),
            (t0 + 5_069, "EXPIRE st1 5", t0 + 6_001),
            (t0 + 5_069, "SMOVE st1 st2 a", t0 + 6_001),
            (t0 + 7_000, "SMOVE st2 st3 a", t0 + 7_000),
        ]);
        let fixed = run_scenario(&steps, dialect, true);
        if dialect == Dialect::Pika {
            assert_converged(&fixed);
            assert!(fixed.replica.record_at(0, b"st3", t0 + 8_000).is_some());
            assert!(!fixed.at_risk.iter().any(|r| &r.key[..] == b"st2"));
        } else {
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
        }

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

pub(crate) fn run_with_receive(steps: &[(i64, &str, i64, i64)], dialect: Dialect) -> Run {
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
            receive_lag: true,
            ..Options::new(dialect)
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

/// The histories that left keys immortal through the proxy on real Pika 3.5.4
/// (`tests/real_pika.rs`, seeds 2 and 3): a removal of something *else* from a volatile
/// collection (often of a member that was not even there) made the proxy unsure whether the
/// key still existed, and a later write passed as `unknown_key`. What a write left in the key
/// (a field, a member, a count of list elements) proves it was not emptied.
#[test]
fn removing_something_else_keeps_a_volatile_collection_known() {
    let t = START_MS;
    type Steps<'s> = &'s [(i64, &'s str, i64)];
    let cases: [(&str, Steps); 5] = [
        (
            "set: SREM of an absent member",
            &[
                (t, "SADD st1 a", t),
                (t + 100, "EXPIRE st1 3", t + 9000),
                (t + 200, "SREM st1 b", t + 9000),
                (t + 300, "SADD st1 c", t + 9000),
            ],
        ),
        (
            "hash: HDEL of another field",
            &[
                (t, "HSET h1 f1 v", t),
                (t + 10, "HSET h1 f2 v", t),
                (t + 100, "EXPIRE h1 3", t + 9000),
                (t + 200, "HDEL h1 f1", t + 9000),
                (t + 300, "HINCRBY h1 n 1", t + 9000),
            ],
        ),
        (
            "zset: ZREM of an absent member",
            &[
                (t, "ZADD z1 1 a", t),
                (t + 100, "EXPIRE z1 3", t + 9000),
                (t + 200, "ZREM z1 b", t + 9000),
                (t + 300, "ZINCRBY z1 1 a", t + 9000),
            ],
        ),
        (
            "hash: HDEL of one of the fields HMSET wrote",
            &[
                (t, "HMSET h2 f1 v f2 v", t),
                (t + 100, "EXPIRE h2 3", t + 9000),
                (t + 200, "HDEL h2 f1", t + 9000),
                (t + 300, "HINCRBY h2 n 1", t + 9000),
            ],
        ),
        (
            "list: LPOP of one of two elements",
            &[
                (t, "RPUSH l1 a", t),
                (t + 10, "RPUSH l1 b", t),
                (t + 100, "EXPIRE l1 3", t + 9000),
                (t + 200, "LPOP l1", t + 9000),
                (t + 300, "RPUSH l1 c", t + 9000),
            ],
        ),
    ];
    for (name, steps) in cases {
        let run = run_scenario(&scenario(steps), Dialect::Pika, true);
        if let Some(v) = run.violations.first() {
            panic!("{name}: expected convergence\n{}", run.report(v));
        }
        assert!(
            run.at_risk.is_empty(),
            "{name}: nothing is at risk once the witness proves the key exists: {:?}",
            run.at_risk
        );
    }
    // A list of a known length popped empty is gone on the master: the EXPIRE after it did
    // nothing, the push recreated it without a TTL (real Pika 3.5.4, seed 1: `w1:l0`).
    let run = run_scenario(
        &scenario(&[
            (t, "DEL l1", t),
            (t + 100, "RPUSH l1 a", t),
            (t + 200, "LPOP l1", t + 9000),
            (t + 300, "EXPIRE l1 4", t + 9000),
            (t + 400, "RPUSH l1 x y", t + 9000),
            (t + 500, "EXPIRE l1 3", t + 9000),
            (t + 600, "RPUSH l1 z", t + 9000),
        ]),
        Dialect::Pika,
        true,
    );
    if let Some(v) = run.violations.first() {
        panic!("list popped empty: expected convergence\n{}", run.report(v));
    }
    assert!(run.at_risk.is_empty(), "{:?}", run.at_risk);
    // Removing the witness itself leaves the key possibly empty: reported, not guessed.
    let run = run_scenario(
        &scenario(&[
            (t, "SADD st1 a", t),
            (t + 100, "EXPIRE st1 3", t + 9000),
            (t + 200, "SREM st1 a", t + 9000),
            (t + 300, "SADD st1 c", t + 9000),
        ]),
        Dialect::Pika,
        true,
    );
    assert!(run.violations.is_empty(), "{}", run.trace.join("\n"));
}

/// SMOVE out of a known source into a destination the proxy knows nothing of (a volatile key
/// from before the proxy, no warm-up): the master keeps the destination's TTL; a replica that
/// adds the member after that deadline recreates the destination without one unless the
/// deadline is restated, which only a look-up of the destination can give. A Pika master logs
/// the move as `srem` + `sadd`, and the `sadd` is what is looked up (a stream carrying the
/// move itself is looked up the same way: `engine::tests`).
#[test]
fn a_move_into_a_destination_of_unknown_state_is_looked_up() {
    let t = START_MS;
    // The harness answers an entry at an even index soon after it (here before the
    // destination's deadline) and one at an odd index once the replica applied it.
    let steps = scenario(&[
        (t, "SADD st2 x", t),
        (t + 10, "EXPIRE st2 2", t + 10),
        (t + 100, "DEL st1", t + 100),
        (t + 150, "SADD st1 a", t + 150),
        (t + 200, "SMOVE st1 st2 a", t + 9000),
    ]);
    let with = |look_ups| {
        run_history(
            &steps,
            2,
            t,
            Options {
                origin: Origin::Nothing,
                look_ups,
                ..Options::new(Dialect::Pika)
            },
        )
    };
    let run = with(true);
    if let Some(v) = run.violations.first() {
        panic!("with look-ups: expected convergence\n{}", run.report(v));
    }
    assert!(
        run.trace
            .iter()
            .any(|l| l.contains("SMOVE ") && l.contains("[looked up at") && l.contains("expireat")),
        "the move restates the destination's deadline\n{}",
        run.trace.join("\n")
    );
    // Without the look-up the move passes as unknown_key (exempt from the proof, but counted):
    // the destination's deadline is what the look-up brought.
    let without = with(false);
    assert!(
        without.trace.iter().any(|l| l.contains("(unknown_key)")),
        "{}",
        without.trace.join("\n")
    );
}
