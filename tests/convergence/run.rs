//! Playing one history: the model's master logs, the engine decides, the model's replica
//! applies late; then P1/P2/P3/R6 are checked.

use super::*;

// ---------------------------------------------------------------------------------------------
// Running a history
// ---------------------------------------------------------------------------------------------

/// What the proxy knows of the keys that existed when it attached (only matters when a history
/// has steps before the attach point).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The warm-up listed every key: volatile ones with their deadline, the others as existing.
    ScanEveryKey,
    /// The warm-up kept only volatile keys (its key bound was hit, or today's engine before
    /// existence was tracked): keys without a TTL are "not volatile, existence unknown".
    ScanVolatileOnly,
    /// No warm-up: nothing is known of any key from before the proxy.
    Nothing,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub(crate) dialect: Dialect,
    /// Pika release of master, replica and policy.
    pub(crate) release: PikaRelease,
    pub(crate) rewriting: bool,
    pub(crate) origin: Origin,
    /// Feed the engine the proxy's receive time (between exec and apply) instead of the
    /// master's exec time (Redis: the stream carries no time).
    pub(crate) receive_lag: bool,
    /// Kill the proxy once: a checkpoint of the table (through the saved-table format) a third
    /// of the way into the stream, the kill two thirds in; the restarted proxy brings the
    /// checkpoint forward over the entries in between (as both relays' catch-ups do) and goes on.
    pub(crate) crash: bool,
    /// The Pika relay's look-ups: an entry the table cannot decide is decided again after
    /// recording what the model's master says of its key a little later, with no other entry
    /// in between (what a resolved look-up gives the engine).
    pub(crate) look_ups: bool,
}

impl Options {
    /// Rewriting on, the master's exec time, every key scanned at attach, Pika 3.
    pub(crate) fn new(dialect: Dialect) -> Self {
        Options {
            dialect,
            release: PikaRelease::V3,
            rewriting: true,
            origin: Origin::ScanEveryKey,
            receive_lag: false,
            crash: false,
            look_ups: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) property: &'static str,
    pub(crate) key: Option<(u32, Bytes)>,
    pub(crate) at_ms: Option<i64>,
    pub(crate) detail: String,
}

impl Violation {
    pub(crate) fn is_p1(&self) -> bool {
        self.property.starts_with("P1")
    }
    pub(crate) fn is_p3(&self) -> bool {
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

pub(crate) struct Run {
    pub(crate) master: Master,
    pub(crate) replica: Replica,
    pub(crate) start_ms: i64,
    pub(crate) last_apply_ms: i64,
    pub(crate) trace: Vec<String>,
    pub(crate) violations: Vec<Violation>,
    pub(crate) client_commands: usize,
    pub(crate) entries: usize,
    pub(crate) rewritten: usize,
    pub(crate) at_risk: Vec<AtRisk>,
    pub(crate) exempt: BTreeSet<(u32, Bytes)>,
    /// Keys of `superseded` entries (passed undecided, a later command redefines the key) whose
    /// redefinition the replica has not applied yet, and whether the entry wrote the string: an
    /// entry on one of them may fail on the replica until then, and nothing after.
    pub(crate) superseding: BTreeMap<(u32, Bytes), bool>,
    /// Look-ups found `superseded`.
    pub(crate) superseded: usize,
    /// Exempt keys whose master and replica records differ once every TTL has run out.
    pub(crate) exempt_diverged: usize,
    /// Pika 4.0: the replica holds whole seconds of deadlines its master keeps in ms.
    pub(crate) pika_4_0: bool,
}

impl Run {
    pub(crate) fn first(&self, relevant: impl Fn(&Violation) -> bool) -> Option<&Violation> {
        self.violations.iter().find(|v| relevant(v))
    }

    pub(crate) fn report(&self, violation: &Violation) -> String {
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

pub(crate) fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

pub(crate) fn rel(ms: i64, start: i64) -> String {
    format!("+{:.3}s", (ms - start) as f64 / 1000.0)
}

pub(crate) fn policy(dialect: Dialect, rewriting: bool) -> Policy {
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
pub(crate) fn dialect_form_violation(
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

/// The keys of an entry that look-ups leave to `unknown_key` by design, or `None` for any
/// other command. `first_known` is what the table knew of its first key before it.
fn not_looked_up(argv: &Argv, first_known: Option<KeyKnowledge>) -> Option<&[Bytes]> {
    let name = argv.first()?.to_ascii_lowercase();
    match name.as_slice() {
        b"set" if argv.iter().any(|a| a.eq_ignore_ascii_case(b"KEEPTTL")) => argv.get(1..2),
        // A move out of a source of unknown state may do nothing on a late replica whatever
        // the destination was: its destination is not looked up.
        b"smove" | b"rpoplpush" | b"lmove" if first_known == Some(KeyKnowledge::Unknown) => {
            argv.get(1..3)
        }
        _ => None,
    }
}

/// Pika 4.0 logs `SET k v PX ms` with its TTL truncated to whole seconds while the master
/// keeps the ms (docs/rewrites.md, 4.0 limits): a replica may drop such a key up to a second
/// before the master, which the proxy cannot see. Its key is exempt.
fn exempt_ms_ttl_on_4_0(run: &mut Run, opts: Options, db: u32, argv: &Argv) {
    if !run.pika_4_0 || !argv[0].eq_ignore_ascii_case(b"set") {
        return;
    }
    let px = argv
        .iter()
        .position(|a| a.eq_ignore_ascii_case(b"PX"))
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok());
    if px.is_some_and(|ms| ms % 1000 != 0) && opts.dialect == Dialect::Pika {
        run.exempt.insert((db, argv[1].clone()));
    }
}

/// A command that extends, sets or removes a key's TTL (the known limit's commands).
fn is_ttl_change(argv: &Argv) -> bool {
    let name = argv
        .first()
        .map(|n| n.to_ascii_lowercase())
        .unwrap_or_default();
    matches!(
        name.as_slice(),
        b"expire" | b"expireat" | b"pexpire" | b"pexpireat" | b"persist"
    )
}

pub(crate) fn run_steps(steps: &[Concrete], start_ms: i64, opts: Options) -> Run {
    run_history(steps, 0, start_ms, opts)
}

/// What a warm-up scan of `master` at `at_ms` gives the table (see [`Origin`]).
pub(crate) fn seed_from_scan(table: &ExpiryTable, master: &Master, at_ms: i64, origin: Origin) {
    table.reset(Baseline::Unknown);
    if origin == Origin::Nothing {
        return;
    }
    for ((db, key), record) in master.state_at(at_ms).keys {
        match record.deadline_ms {
            Some(deadline) => table.set_deadline(db, &key, deadline),
            None if origin == Origin::ScanEveryKey => table.mark_persistent(db, &key, true),
            None => {}
        }
    }
    table.set_baseline(match origin {
        Origin::ScanEveryKey => Baseline::Absent,
        Origin::ScanVolatileOnly | Origin::Nothing => Baseline::NotVolatile,
    });
}

pub(crate) fn run_history(
    steps: &[Concrete],
    attach_after: usize,
    start_ms: i64,
    opts: Options,
) -> Run {
    let dialect = opts.dialect;
    let mut policy = policy(dialect, opts.rewriting);
    policy.pika_release = opts.release;
    let decide = policy.clone();
    policy.pause_on_unknown = opts.look_ups;
    let mut table = ExpiryTable::new(Baseline::Absent);
    let mut stream = StreamState::default();
    let streamed = steps.len().saturating_sub(attach_after);
    let checkpoint_at = attach_after + streamed / 3;
    let kill_at = attach_after + 2 * streamed / 3;
    // The checkpoint (saved table and stream state) and the entries decided since.
    let mut checkpoint: Option<(Vec<u8>, StreamState)> = None;
    // Entries since the checkpoint, each with what a look-up found for it (journaled).
    let mut since_checkpoint: Vec<(Argv, i64, Option<Answered>)> = Vec::new();
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
        superseding: BTreeMap::new(),
        superseded: 0,
        exempt_diverged: 0,
        pika_4_0: dialect == Dialect::Pika && opts.release == PikaRelease::V4,
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
            exempt_ms_ttl_on_4_0(&mut run, opts, s.db, argv);
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
        if opts.crash && i == checkpoint_at {
            checkpoint = Some((table_file::encode(b"", &table), stream));
            since_checkpoint.clear();
        }
        if opts.crash && i == kill_at && checkpoint_at < kill_at {
            if let Some((saved, saved_stream)) = &checkpoint {
                let (_, restored) = match table_file::decode(saved) {
                    Ok(t) => t,
                    Err(e) => panic!("a checkpoint does not read back: {e}"),
                };
                table = restored;
                stream = *saved_stream;
                for (argv, exec_ms, journaled) in &since_checkpoint {
                    let replayed = engine::rewrite(argv, *exec_ms, &mut stream, &table, &policy);
                    let (Some(kind), Some(key)) =
                        (replayed.needs_lookup, argv.get(replayed.lookup_key_at))
                    else {
                        continue;
                    };
                    match journaled {
                        // As the relay's catch-up does with its answer journal.
                        Some(answered) => {
                            engine::resolve_unknown(
                                &table, stream.db, key, *exec_ms, kind, *answered,
                            );
                            engine::rewrite(argv, *exec_ms, &mut stream, &table, &decide);
                        }
                        // No answer then: the key is unknown again.
                        None => table.mark_unknown(stream.db, key),
                    }
                }
                run.trace.push(format!(
                    "{} proxy killed: table from the checkpoint, {} entries caught up",
                    rel(s.t_ms, start_ms),
                    since_checkpoint.len()
                ));
            }
        }
        // The key's deadline on the master before this step (the at-risk limit below).
        let old_deadline = match &s.action {
            // Whatever the master's clock makes of it at this instant (records, not alive ones).
            ConcreteAction::Client(argv) => argv.get(1).and_then(|k| {
                run.master
                    .records()
                    .find(|((db, key), _)| *db == s.db && key == k)
                    .and_then(|(_, r)| r.deadline_ms)
            }),
            ConcreteAction::ActiveExpire(_) => None,
        };
        let (what, reply, entries) = match &s.action {
            ConcreteAction::Client(argv) => {
                run.client_commands += 1;
                exempt_ms_ttl_on_4_0(&mut run, opts, s.db, argv);
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
            let knew = entry
                .argv
                .get(1)
                .map(|k| table.lookup(stream.db, k, exec_ms));
            let mut decision = engine::rewrite(&entry.argv, exec_ms, &mut stream, &table, &policy);
            let mut looked_up = String::new();
            let mut journaled = None;
            // When the look-up is asked: a little after the entry (a link keeping up), or, on
            // every other step, as late as the replica applies it (a link whose replica lags
            // reads the master's items only as the replica acks, or after a crash replays a
            // backlog the master is far past).
            let asked_ms = if i % 2 == 0 {
                exec_ms + (s.apply_ms - s.t_ms).clamp(0, 1500) / 2
            } else {
                exec_ms + (s.apply_ms - s.t_ms).max(0)
            };
            // The answer comes after the next step at the earliest.
            let asked_ms = steps.get(i + 1).map_or(asked_ms, |n| asked_ms.max(n.t_ms));
            if let Some(kind) = decision.needs_lookup {
                let key = entry
                    .argv
                    .get(decision.lookup_key_at)
                    .cloned()
                    .unwrap_or_default();
                // The master as it answers: it has run every step up to the answer. What it
                // logged for them on the key decides, as the relay reads its binlog: an entry the
                // kind of answer cannot read past spoils it (`written_again`).
                let mut answering = run.master.clone();
                // `Some(redefines)` once a command spoils it: whether the first to do so
                // redefines the key on both sides (`superseded`, `engine::redefines`).
                let (mut spoiled, mut between) = (None, Between::default());
                let string_entry = engine::writes_string(&entry.argv);
                for later in steps[i + 1..].iter().take_while(|l| l.t_ms <= asked_ms) {
                    let logged = match &later.action {
                        ConcreteAction::Client(argv) => answering
                            .execute(later.db, argv, later.t_ms)
                            .map(|e| e.entries)
                            .unwrap_or_default(),
                        ConcreteAction::ActiveExpire(k) => {
                            answering.active_expire(later.db, k, later.t_ms)
                        }
                    };
                    for e in &logged {
                        if spoiled.is_some() {
                            break;
                        }
                        let name = |n: &str| e.argv[0].eq_ignore_ascii_case(n.as_bytes());
                        if name("flushall") || (name("flushdb") && later.db == s.db) {
                            spoiled = Some(true);
                        } else if name("flushdb") || name("swapdb") {
                            spoiled = Some(false);
                        } else if later.db == s.db && e.argv[1..].contains(&key) {
                            match kind.tolerates(&e.argv, &key) {
                                Some(t) => between.add(t, e.exec_ms),
                                None => {
                                    spoiled = Some(engine::redefines(&e.argv, &key, string_entry))
                                }
                            }
                        }
                    }
                }
                if let Some(superseded) = spoiled {
                    decision = engine::rewrite(&entry.argv, exec_ms, &mut stream, &table, &decide);
                    engine::leave_undecided(&table, stream.db, &key, kind, &entry.argv, exec_ms);
                    if superseded {
                        // Passed undecided, and not exempt: the key must converge all the same.
                        looked_up = " [looked up: superseded]".to_string();
                        // A window opened by a write on another type stays open until a
                        // redefinition of every type (DEL), whatever string write comes later.
                        run.superseding
                            .entry((stream.db, key.clone()))
                            .and_modify(|s| *s &= string_entry)
                            .or_insert(string_entry);
                        run.superseded += 1;
                    } else {
                        looked_up = " [looked up: written again]".to_string();
                        // Passed as unknown_key, documented and counted: the key is exempt.
                        if decision.outcome == Outcome::UnknownKey {
                            run.exempt.insert((stream.db, key.clone()));
                        }
                    }
                } else {
                    // A 3.5 master's clock is its second (a key is alive through its deadline's).
                    let clock_ms = match opts.release {
                        PikaRelease::V3 if dialect == Dialect::Pika => {
                            asked_ms.div_euclid(1000) * 1000
                        }
                        _ => asked_ms,
                    };
                    let found = match answering.record_at(stream.db, &key, clock_ms) {
                        Some(r) => match r.deadline_ms {
                            Some(deadline) => LookedUp::Volatile(deadline),
                            None => LookedUp::NoTtl,
                        },
                        None => LookedUp::ExpiredBy(asked_ms),
                    };
                    let answered = Answered { found, between };
                    let used =
                        engine::resolve_unknown(&table, stream.db, &key, exec_ms, kind, answered);
                    looked_up = format!(" [looked up at {}: {found:?}]", rel(asked_ms, start_ms));
                    // As the relay does: decided with the answer, never paused again.
                    decision = engine::rewrite(&entry.argv, exec_ms, &mut stream, &table, &decide);
                    if used {
                        journaled = Some(answered);
                    } else {
                        // An answer that does not tell (`outlived`): decided without it.
                        engine::leave_undecided(
                            &table,
                            stream.db,
                            &key,
                            kind,
                            &entry.argv,
                            exec_ms,
                        );
                        looked_up.push_str(" [outlived]");
                        if decision.outcome == Outcome::UnknownKey {
                            run.exempt.insert((stream.db, key.clone()));
                        }
                    }
                }
            }
            if checkpoint.is_some() {
                since_checkpoint.push((entry.argv.clone(), exec_ms, journaled));
            }
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
            if opts.look_ups && decision.outcome == Outcome::UnknownKey && looked_up.is_empty() {
                match not_looked_up(&entry.argv, knew) {
                    // Documented (`docs/rewrites.md#where-unknown_key-still-comes-from`): their
                    // outcome depends on more than the key's TTL, so they are not looked up.
                    Some(keys) => {
                        for k in keys {
                            run.exempt.insert((stream.db, k.clone()));
                        }
                    }
                    None => run.violations.push(Violation {
                        property: "look-up (an undecided write was not looked up)",
                        key: entry.argv.get(1).map(|k| (stream.db, k.clone())),
                        at_ms: Some(exec_ms),
                        detail: show_argv(&entry.argv),
                    }),
                }
            }
            let mut notes = looked_up;
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
            // The known limit (a TTL changed after the replica's deadline) on a key the table
            // had not learned: the engine cannot see the old deadline, so it is not reported
            // (docs/rewrites.md#where-unknown_key-still-comes-from); the key is exempt as if it
            // were.
            if decision.at_risk.is_none()
                && is_ttl_change(&entry.argv)
                && matches!(
                    knew,
                    Some(KeyKnowledge::Unknown | KeyKnowledge::NotVolatile)
                )
                && old_deadline.is_some_and(|d| d <= s.apply_ms)
            {
                if let Some(k) = entry.argv.get(1) {
                    run.exempt.insert((stream.db, k.clone()));
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
                        if run.superseding.contains_key(&(db, key.clone())) {
                            notes.push_str(" [before the redefinition]");
                        } else {
                            failures.push((db, key, e.to_string()));
                        }
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
            end_superseding(&mut run.superseding, stream.db, &entry.argv);
            parts.push(format!("{shown}{notes}"));
        }
        run.last_apply_ms = s.apply_ms;
        check_presence_claim(&mut run, &table, opts, s);
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

/// K1: what the table claims of a key the step wrote is true of the master. "Exists, TTL
/// unknown" (left by a write decided without its look-up) is the one claim no other property
/// reads directly: an EXPIRE after it gives the key that deadline, so a claim that outlives the
/// key (a removal that emptied it) rewrites a later write with a TTL the master's new key does
/// not have, and the key is usually exempt by then (its look-up did not settle).
fn check_presence_claim(run: &mut Run, table: &ExpiryTable, opts: Options, s: &Concrete) {
    let ConcreteAction::Client(argv) = &s.action else {
        return;
    };
    let Some(key) = argv.get(1) else {
        return;
    };
    if !table.is_present_at(s.db, key, s.t_ms) {
        return;
    }
    // A 3.5 master's clock is its second (a key is alive through its deadline's).
    let clock_ms = match opts.release {
        PikaRelease::V3 => s.t_ms.div_euclid(1000) * 1000,
        PikaRelease::V4 => s.t_ms,
    };
    if run.master.record_at(s.db, key, clock_ms).is_none() {
        run.violations.push(Violation {
            property: "K1 (the table holds a key present that the master does not have)",
            key: Some((s.db, key.clone())),
            at_ms: Some(s.t_ms),
            detail: "a later EXPIRE would give it a deadline as if it existed".to_string(),
        });
    }
}

/// Closes the `superseded` windows of the keys `argv` (an entry the replica has just applied
/// in `db`) redefines.
fn end_superseding(superseding: &mut BTreeMap<(u32, Bytes), bool>, db: u32, argv: &Argv) {
    let flush = |name: &str| argv[0].eq_ignore_ascii_case(name.as_bytes());
    if flush("flushall") {
        superseding.clear();
    } else if flush("flushdb") {
        superseding.retain(|(d, _), _| *d != db);
    } else {
        superseding.retain(|(d, key), string_entry| {
            *d != db || !engine::redefines(argv, key, *string_entry)
        });
    }
}

/// P1 and P2 at a_n, around every deadline after a_n, and far in the future.
pub(crate) fn check_states(run: &mut Run) {
    let a_n = run.last_apply_ms;
    let mut keys: BTreeSet<(u32, Bytes)> = BTreeSet::new();
    let mut instants: BTreeSet<i64> = BTreeSet::from([a_n, a_n + FAR_FUTURE_MS]);
    for (k, r) in run.master.records().chain(run.replica.records()) {
        keys.insert(k.clone());
        if let Some(d) = r.deadline_ms {
            instants.extend([d - 1, d, d + 1].into_iter().filter(|t| *t >= a_n));
        }
    }
    let far = a_n + FAR_FUTURE_MS;
    run.exempt_diverged = keys
        .iter()
        .filter(|(db, key)| run.exempt.contains(&(*db, key.clone())))
        .filter(|(db, key)| {
            let m = run.master.record_at(*db, key, far).map(|r| &r.value);
            let r = run.replica.record_at(*db, key, far).map(|r| &r.value);
            m != r
        })
        .count();
    for t in instants {
        for (db, key) in &keys {
            if run.exempt.contains(&(*db, key.clone())) {
                continue;
            }
            let m = run.master.record_at(*db, key, t);
            let r = run.replica.record_at(*db, key, t);
            // Pika 4.0: a replica can only be told whole seconds, and the master logs its ms
            // deadlines rounded down (a ms TTL truncated): the proxy tells the replica the second
            // after, so it keeps a key at most a second longer than the master, never less (a
            // full sync copies the ms deadline itself).
            let kept_as = |master: Option<i64>, replica: Option<i64>| match (master, replica) {
                (Some(d), Some(r)) if run.pika_4_0 => {
                    r >= d && r <= d.div_euclid(1000) * 1000 + 1000
                }
                _ => master == replica,
            };
            let v = match (m, r) {
                (None, None) => None,
                (Some(m), None) => {
                    Some(("P1 (presence)", format!("master has {m}, replica has none")))
                }
                // Whatever it holds then, it drops it within the second.
                (None, Some(r))
                    if run.pika_4_0 && r.deadline_ms.is_some_and(|rd| rd - t <= 1000) =>
                {
                    None
                }
                (None, Some(r)) => {
                    Some(("P1 (presence)", format!("replica has {r}, master has none")))
                }
                (Some(m), Some(r)) if !kept_as(m.deadline_ms, r.deadline_ms) => {
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

/// SMOVE, RPOPLPUSH, LMOVE and their blocking forms: an element leaves `argv[1]`.
pub(crate) fn is_move(argv: &Argv) -> bool {
    argv.first().is_some_and(|name| {
        ["smove", "rpoplpush", "lmove", "blmove", "brpoplpush"]
            .iter()
            .any(|m| name.eq_ignore_ascii_case(m.as_bytes()))
    })
}
