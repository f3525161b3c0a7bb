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
//!
//! Layout: [`history`] draws the random histories, [`run`] plays one through the model and the
//! engine and checks it, [`scenarios`] holds the fixed histories from real servers.

mod history;
mod run;
mod scenarios;

use bytes::Bytes;
use pika_ttl_proxy::engine::{
    self, Answered, AtRisk, Between, Dialect, Emit, LookedUp, Outcome, PikaRelease, Policy,
    RiskCause, StreamState,
};
use pika_ttl_proxy::families::FamilySwitches;
use pika_ttl_proxy::model::{show_argv, show_bytes, Argv, Master, ModelErrorKind, Replica};
use pika_ttl_proxy::table::{Baseline, ExpiryTable, KeyKnowledge};
use pika_ttl_proxy::table_file;
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Around the clock of the captured Pika session (2026-11-23), so seconds fit in int32.
const START_MS: i64 = 1_795_469_984_000;
/// "Far future" for the final check: ten years after the last apply.
const FAR_FUTURE_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

use history::*;
use run::*;

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
    exempted_diverged: usize,
    superseded: usize,
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
        t.exempted_diverged += run.exempt_diverged;
        t.superseded += run.superseded;
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
         at-risk reported {} times, {} keys exempted as at-risk or unknown_key ({} of them \
         ended different); {} look-ups superseded (checked, not exempt)",
        t.histories,
        t.client_commands,
        t.entries,
        t.rewritten,
        t.at_risk_reported,
        t.exempted_keys,
        t.exempted_diverged,
        t.superseded
    );
}

fn convergence(dialect: Dialect, receive_lag: bool, default_cases: u32) {
    let opts = Options {
        receive_lag,
        ..Options::new(dialect)
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
        rewriting: false,
        ..Options::new(dialect)
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
        origin: Origin::ScanVolatileOnly,
        ..Options::new(Dialect::Pika)
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

/// The Pika relay's look-ups close that gap, and the one of a relay that knows nothing of the
/// keys from before it (`--warmup off`): a write the table cannot decide is decided with what
/// the master says of its key just after it. Both Pika releases (on 4.0 look-ups also settle
/// the second a deadline falls in), with and without a crash restart.
#[test]
fn converges_pika_with_look_ups_whatever_the_warm_up_knew() {
    for (origin, release, crash) in [
        (Origin::ScanVolatileOnly, PikaRelease::V3, false),
        (Origin::Nothing, PikaRelease::V3, false),
        (Origin::Nothing, PikaRelease::V3, true),
        (Origin::ScanVolatileOnly, PikaRelease::V4, false),
        (Origin::Nothing, PikaRelease::V4, true),
    ] {
        let opts = Options {
            origin,
            release,
            crash,
            look_ups: true,
            ..Options::new(Dialect::Pika)
        };
        let label = format!("Pika {release:?} with look-ups, warm-up {origin:?}, crash {crash}");
        let (totals, failure) = check_property(opts, cases(3_000), |_| true);
        print_totals(&label, &totals);
        if let Some(report) = failure {
            panic!("{label}: convergence failed on this minimal history\n{report}");
        }
    }
}

/// Without look-ups, a relay that knows nothing of the keys from before it diverges: the proof
/// of the test above can fail.
#[test]
fn negative_control_pika_without_a_warm_up_or_look_ups() {
    let opts = Options {
        origin: Origin::Nothing,
        ..Options::new(Dialect::Pika)
    };
    let (totals, failure) = check_property(opts, cases(10_000), Violation::is_p1);
    print_totals("Pika, no warm-up, no look-ups", &totals);
    assert!(
        failure.is_some(),
        "no P1 violation in {} histories without a warm-up or look-ups",
        totals.histories
    );
}

/// The same proof against the Pika 4.0.1 dialect: its master logs INCR/APPEND as
/// `pksetexat` and PSETEX in milliseconds, its replica misreads every real `pksetexat`.
#[test]
fn converges_pika_4_0() {
    let opts = Options {
        release: PikaRelease::V4,
        ..Options::new(Dialect::Pika)
    };
    let (totals, failure) = check_property(opts, cases(10_000), |_| true);
    print_totals("Pika 4.0", &totals);
    if let Some(report) = failure {
        panic!("Pika 4.0: convergence failed on this minimal history\n{report}");
    }
}

/// The proxy killed once in every history and restarted from a checkpoint brought forward over
/// the entries in between (what both relays do after a SIGKILL): the replica still ends with
/// exactly the master's keys. A checkpoint that loses part of the table (the collection
/// witnesses were once left out) breaks this.
#[test]
fn converges_pika_across_a_crash_restart() {
    for release in [PikaRelease::V3, PikaRelease::V4] {
        let opts = Options {
            release,
            crash: true,
            ..Options::new(Dialect::Pika)
        };
        let (totals, failure) = check_property(opts, cases(5_000), |_| true);
        print_totals(&format!("Pika {release:?} across a crash restart"), &totals);
        if let Some(report) = failure {
            panic!("Pika {release:?} across a crash restart: convergence failed\n{report}");
        }
    }
}

#[test]
fn converges_redis_across_a_crash_restart() {
    let opts = Options {
        crash: true,
        ..Options::new(Dialect::Redis)
    };
    let (totals, failure) = check_property(opts, cases(5_000), |_| true);
    print_totals("Redis across a crash restart", &totals);
    if let Some(report) = failure {
        panic!("Redis across a crash restart: convergence failed\n{report}");
    }
}

/// A 4.0.1 replica fed directly by a 4.0.1 master diverges (every SETEX lands expired).
#[test]
fn negative_control_pika_4_0() {
    let opts = Options {
        release: PikaRelease::V4,
        rewriting: false,
        ..Options::new(Dialect::Pika)
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
            rewriting: false,
            ..Options::new(dialect)
        };
        let (totals, failure) = check_property(opts, cases(2_000), Violation::is_p3);
        print_totals(&format!("{dialect:?} P3 families off"), &totals);
        if let Some(report) = failure {
            panic!("{dialect:?}: P3 failed\n{report}");
        }
    }
}
