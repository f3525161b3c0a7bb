//! Unit tests of individual rules; the convergence proof lives in tests/convergence.rs.

use super::*;
use crate::families::Family;
use crate::table::{Baseline, ExpiryTable, KeyKnowledge};

fn argv(s: &str) -> Vec<Bytes> {
    s.split(' ')
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

fn text(cmds: &[Vec<Bytes>]) -> Vec<String> {
    cmds.iter()
        .map(|c| {
            c.iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// What the engine decided for one entry, without borrowing the entry.
struct Ran {
    forwarded: bool,
    outcome: Outcome,
    at_risk: Option<AtRisk>,
}

struct Stream {
    table: ExpiryTable,
    policy: Policy,
    state: StreamState,
}

impl Stream {
    fn new(dialect: Dialect) -> Self {
        Stream {
            table: ExpiryTable::new(Baseline::Absent),
            policy: Policy::new(dialect),
            state: StreamState::default(),
        }
    }
    /// A Pika stream that knows nothing of `key` but `guess` ("that deadline or gone"), after
    /// `write` on it was decided without its look-up at `T0`.
    fn after_undecided(key: &[u8], guess: Option<i64>, write: &str, kind: LookupKind) -> Self {
        let s = Stream::new(Dialect::Pika);
        s.table.reset(Baseline::Unknown);
        if let Some(deadline) = guess {
            s.table.set_maybe_volatile(0, key, deadline);
        }
        leave_undecided(&s.table, 0, key, kind, &argv(write), T0);
        s
    }
    fn run(&mut self, cmd: &str, exec_ms: i64) -> Ran {
        let entry = argv(cmd);
        let decision = rewrite(&entry, exec_ms, &mut self.state, &self.table, &self.policy);
        Ran {
            forwarded: decision.emit == Emit::Forward,
            outcome: decision.outcome,
            at_risk: decision.at_risk,
        }
    }
    fn emitted(&mut self, cmd: &str, exec_ms: i64) -> Vec<String> {
        let entry = argv(cmd);
        let decision = rewrite(&entry, exec_ms, &mut self.state, &self.table, &self.policy);
        match decision.emit {
            Emit::Forward => vec![cmd.to_string()],
            Emit::Replace(c) => text(&c.argvs(&entry)),
        }
    }
}

const T0: i64 = 1_795_469_984_000;

#[test]
fn seed_scenario_pika() {
    let mut s = Stream::new(Dialect::Pika);
    // SETEX key1 10 100 is logged by Pika as pksetexat with the absolute second.
    assert_eq!(
        s.emitted("pksetexat key1 1795469994 100", T0),
        ["pksetexat key1 1795469994 100"]
    );
    assert_eq!(
        s.emitted("INCR key1", T0 + 1000),
        ["INCR key1", "expireat key1 1795469994"]
    );
    // Pika keeps a key alive through its deadline second (stale when `ts < now`).
    assert_eq!(
        s.emitted("INCR key1", T0 + 10_000),
        ["INCR key1", "expireat key1 1795469994"]
    );
    // After it the master sees the key as absent: a fresh INCR keeps no TTL.
    assert_eq!(
        s.emitted("INCR key1", T0 + 11_000),
        ["del key1", "INCR key1"]
    );
    assert_eq!(s.emitted("INCR key1", T0 + 12_000), ["INCR key1"]);
}

#[test]
fn seed_scenario_redis_wraps_in_multi_unless_inside_one() {
    let mut s = Stream::new(Dialect::Redis);
    s.run("SET key1 100 PXAT 1795469994000", T0);
    assert_eq!(
        s.emitted("INCR key1", T0 + 1000),
        ["MULTI", "INCR key1", "PEXPIREAT key1 1795469994000", "EXEC"]
    );
    s.run("MULTI", T0 + 1000);
    assert_eq!(
        s.emitted("incr key1", T0 + 1000),
        ["incr key1", "PEXPIREAT key1 1795469994000"]
    );
    s.run("EXEC", T0 + 1000);
    // Redis masters decide expiry and send DEL themselves: an INCR that arrives after the
    // deadline without a DEL ran on a live key (the receive time is not the master's clock).
    assert_eq!(
        s.emitted("INCR key1", T0 + 20_000),
        ["MULTI", "INCR key1", "PEXPIREAT key1 1795469994000", "EXEC"]
    );
    s.run("DEL key1", T0 + 20_000);
    assert_eq!(s.emitted("INCR key1", T0 + 20_000), ["INCR key1"]);
}

#[test]
fn switched_off_family_forwards_but_keeps_the_table() {
    let mut s = Stream::new(Dialect::Pika);
    s.policy.families.set(Family::StringCounter, false);
    s.run("pksetexat k 1795469994 1", T0);
    let d = s.run("INCR k", T0 + 1);
    assert!(d.forwarded);
    assert_eq!(d.outcome, Outcome::Disabled);
    assert_eq!(
        s.table.lookup(0, b"k", T0),
        KeyKnowledge::Volatile(1_795_469_994_000)
    );
    s.policy.families.set(Family::StringCounter, true);
    assert_eq!(
        s.emitted("INCR k", T0 + 2),
        ["INCR k", "expireat k 1795469994"]
    );
}

#[test]
fn pika_conditional_sets_are_resolved_at_exec_time() {
    let mut s = Stream::new(Dialect::Pika);
    // Fresh key: NX succeeds on the master; relative TTL becomes absolute.
    assert_eq!(
        s.emitted("SET s3 abc EX 4 NX", T0),
        ["pksetexat s3 1795469988 abc"]
    );
    // Live volatile key: NX fails on the master; a late replica must not create it.
    assert_eq!(
        s.emitted("SET s3 zzz EX 30 NX", T0 + 1000),
        ["expireat s3 1795469988"]
    );
    assert_eq!(
        s.emitted("setnx s3 q", T0 + 1000),
        ["expireat s3 1795469988"]
    );
    // XX on the live volatile key succeeds on the master: write it unconditionally.
    assert_eq!(s.emitted("SET s3 new XX", T0 + 2000), ["set s3 new"]);
    assert_eq!(
        s.table.lookup(0, b"s3", T0 + 2000),
        KeyKnowledge::Persistent
    );
    // XX on a missing key did nothing on the master and does nothing on the replica.
    assert_eq!(s.emitted("SET a3 v XX EX 30", T0), ["SET a3 v XX EX 30"]);
    assert_eq!(s.table.lookup(0, b"a3", T0), KeyKnowledge::Absent);
}

#[test]
fn relative_expiries_become_absolute() {
    let mut p = Stream::new(Dialect::Pika);
    p.run("HSET h f v", T0);
    assert_eq!(p.emitted("EXPIRE h 20", T0), ["expireat h 1795470004"]);
    assert_eq!(
        p.emitted("pexpireat h 2000000000123", T0),
        ["expireat h 2000000000"]
    );
    let mut r = Stream::new(Dialect::Redis);
    r.run("HSET h f v", T0);
    assert_eq!(
        r.emitted("PEXPIRE h 1500 GT", T0),
        ["PEXPIREAT h 1795469985500 GT"]
    );
    assert_eq!(
        r.emitted("SETEX k 10 v", T0),
        ["SET k v PXAT 1795469994000"]
    );
}

#[test]
fn pika_millisecond_pksetexat_is_repaired() {
    let mut s = Stream::new(Dialect::Pika);
    assert_eq!(
        s.emitted("pksetexat k 1795469999000 v", T0),
        ["pksetexat k 1795469999 v"]
    );
}

#[test]
fn ttl_extension_of_a_volatile_key_is_reported_at_risk() {
    let mut s = Stream::new(Dialect::Pika);
    s.run("HSET h f v", T0);
    s.run("expireat h 1795469990", T0);
    let d = s.run("expireat h 1795470990", T0 + 1000);
    let risk = d.at_risk.expect("extension reported");
    assert_eq!(risk.old_deadline_ms, 1_795_469_990_000);
    assert_eq!(&risk.key[..], b"h");
    let d = s.run("PERSIST h", T0 + 2000);
    assert!(d.at_risk.is_some());
    // Shortening is safe.
    s.run("expireat h 1795470990", T0 + 3000);
    assert!(s.run("expireat h 1795469999", T0 + 3000).at_risk.is_none());
}

#[test]
fn keepttl_set_on_a_volatile_string_writes_the_full_value() {
    let mut s = Stream::new(Dialect::Redis);
    s.run("SET k a PXAT 1795469994000", T0);
    assert_eq!(
        s.emitted("SET k 1.5 KEEPTTL", T0 + 1),
        ["SET k 1.5 PXAT 1795469994000"]
    );
}

#[test]
fn unknown_keys_pass_through_and_are_counted() {
    let mut s = Stream::new(Dialect::Pika);
    s.table.reset(Baseline::Unknown);
    let d = s.run("INCR k", T0);
    assert!(d.forwarded);
    assert_eq!(d.outcome, Outcome::UnknownKey);
    let d = s.run("FOO bar", T0);
    assert_eq!(d.outcome, Outcome::UnknownCommand);
    let d = s.run("INCR", T0);
    assert_eq!(d.outcome, Outcome::Malformed);
}

#[test]
fn an_entry_the_engine_cannot_follow_forgets_the_keys_it_names() {
    // Pika's DELVX deletes the key when its value matches; SET … VX sets it (and clears its TTL)
    // when its value matches. Kept as "volatile until T", the next INCR would be rewritten with
    // that deadline, and a replica would drop a key the master keeps.
    for entry in [
        "delvx k 1",
        "set k 2 vx 1",
        "bitop and k a b",
        "pfmerge k a",
    ] {
        let mut s = Stream::new(Dialect::Pika);
        s.run("pksetexat k 1795469994 1", T0);
        let d = s.run(entry, T0 + 1000);
        assert!(d.forwarded, "{entry}");
        assert_eq!(
            s.table.lookup(0, b"k", T0 + 1000),
            KeyKnowledge::Unknown,
            "{entry}"
        );
        let d = s.run("INCR k", T0 + 2000);
        assert_eq!(d.outcome, Outcome::UnknownKey, "{entry}");
        assert!(d.forwarded, "{entry}");
    }
    // A key the table claims absent may have been created by it (XADD creates a stream).
    let mut s = Stream::new(Dialect::Pika);
    s.run("xadd g * f v", T0);
    assert_eq!(s.table.lookup(0, b"g", T0), KeyKnowledge::Unknown);
    // Other keys stay known; values that name no key in the table add nothing.
    s.run("pksetexat other 1795469994 1", T0);
    s.run("xadd st * f v", T0);
    assert_eq!(
        s.table.lookup(0, b"other", T0),
        KeyKnowledge::Volatile(1_795_469_994_000)
    );
    assert_eq!(s.table.lookup(0, b"f", T0), KeyKnowledge::Absent);
}

#[test]
fn an_expire_after_an_undecided_write_that_creates_the_key_knows_its_deadline() {
    // Seen on real 4.0.1 after a crash: `ZADD z 97 m3` decided without its look-up, then
    // `EXPIRE z 4`: the ZADD left the key existing, with the deadline the table guessed (it
    // was alive) or none (it created it), so an EXPIRE before that deadline's second gives it
    // the new deadline (not "that deadline or absent", which made the next write's late
    // look-up undecidable).
    for (write, exact) in [
        ("zadd z 97 m3", true),
        ("sadd z m", true),
        ("incr z", true),
        ("zadd z xx 1 m", false),
        ("linsert z before p v", false),
    ] {
        let mut s = Stream::after_undecided(b"z", Some(T0 + 3000), write, LookupKind::KeepsTtl);
        assert_eq!(
            s.table.lookup(0, b"z", T0),
            KeyKnowledge::Unknown,
            "{write}"
        );
        s.run("expireat z 1795469994", T0);
        let after = s.table.lookup(0, b"z", T0);
        if exact {
            assert_eq!(after, KeyKnowledge::Volatile(1_795_469_994_000), "{write}");
        } else {
            assert_eq!(
                after,
                KeyKnowledge::MaybeVolatile(1_795_469_994_000),
                "{write}"
            );
        }
    }
}

#[test]
fn an_undecided_write_says_the_key_exists_only_while_its_guessed_ttl_surely_runs() {
    let expire_after_undecided = |guess: Option<i64>, write: &str, kind, expire_at: i64| {
        let mut s = Stream::after_undecided(b"k", guess, write, kind);
        s.run("expireat k 1795469999", expire_at);
        s.table.lookup(0, b"k", expire_at)
    };
    let exact = KeyKnowledge::Volatile(1_795_469_999_000);
    let or_gone = KeyKnowledge::MaybeVolatile(1_795_469_999_000);
    // Alive until T0 + 3 s at the latest if it was alive: up to the end of T0 + 2 s it exists.
    let guess = Some(T0 + 3000);
    assert_eq!(
        expire_after_undecided(guess, "sadd k m", LookupKind::KeepsTtl, T0 + 2999),
        exact
    );
    // A 4.0 master drops it somewhere in that deadline's second.
    assert_eq!(
        expire_after_undecided(guess, "sadd k m", LookupKind::KeepsTtl, T0 + 3000),
        or_gone
    );
    // No guess: a TTL of its own, unknown, may run out before the EXPIRE (a SET … EX 1 NX
    // decided without its answer, the EXPIRE two seconds later, in the proof).
    assert_eq!(
        expire_after_undecided(None, "sadd k m", LookupKind::KeepsTtl, T0),
        or_gone
    );
    // A SET NX that created the key gave it its own TTL.
    let own = LookupKind::CreatesIfAbsent {
        sets_ms: Some(T0 + 1000),
    };
    assert_eq!(
        expire_after_undecided(guess, "set k v nx px 1000", own, T0 + 999),
        exact
    );
    assert_eq!(
        expire_after_undecided(guess, "set k v nx px 1000", own, T0 + 1000),
        or_gone
    );
}

#[test]
fn a_removal_after_an_undecided_write_may_have_emptied_the_key() {
    // Seen on real 4.0.1 after a SIGKILL: `RPUSH l 94` decided without its look-up, `LPOP l`
    // (the list is gone), `EXPIRE l 3` (0 on the master: no key), `RPUSH l x y`. The key is not
    // known to exist after the LPOP, so the EXPIRE cannot give it that deadline, and the last
    // RPUSH must not carry it (the replica would drop the list the master keeps).
    for removal in [
        "lpop l",
        "rpop l",
        "srem l a",
        "hdel l f",
        "zrem l m",
        "ltrim l 1 0",
        "spop l",
        "zremrangebyrank l 0 -1",
    ] {
        let mut s =
            Stream::after_undecided(b"l", Some(T0 + 3000), "rpush l 94", LookupKind::KeepsTtl);
        s.run(removal, T0);
        s.run("expireat l 1795469994", T0);
        assert_eq!(
            s.table.lookup(0, b"l", T0),
            KeyKnowledge::MaybeVolatile(1_795_469_994_000),
            "{removal}"
        );
        let d = s.run("rpush l x y", T0);
        assert_eq!(d.outcome, Outcome::UnknownKey, "{removal}");
        assert!(d.forwarded, "{removal}");
    }
    // A removal from the source of a move, too.
    let mut s = Stream::after_undecided(b"l", Some(T0 + 3000), "sadd l a", LookupKind::KeepsTtl);
    s.run("smove l other a", T0);
    s.run("expireat l 1795469994", T0);
    assert_ne!(
        s.table.lookup(0, b"l", T0),
        KeyKnowledge::Volatile(1_795_469_994_000)
    );
}

#[test]
fn a_typed_flushdb_forgets_the_db_instead_of_emptying_it() {
    // Pika 3.5's FLUSHDB <type> flushes one type (3.5.4: none): the string keeps its deadline
    // on the master, so the table must not say "absent".
    let mut s = Stream::new(Dialect::Pika);
    s.run("pksetexat k 1795469994 1", T0);
    s.run("flushdb hash", T0);
    assert_eq!(s.table.lookup(0, b"k", T0), KeyKnowledge::Unknown);
    s.run("flushdb", T0);
    assert_eq!(s.table.lookup(0, b"k", T0), KeyKnowledge::Absent);
}

#[test]
fn an_unknown_option_on_a_key_without_an_entry_makes_it_unknown() {
    // A merged warm-up: keys without an entry have no TTL. SET … VX … EX may have given one.
    let mut s = Stream::new(Dialect::Pika);
    s.table.reset(Baseline::NotVolatile);
    s.run("set k 2 vx 1 ex 100", T0);
    assert_eq!(s.table.lookup(0, b"k", T0), KeyKnowledge::Unknown);
    assert_eq!(s.run("INCR k", T0 + 1000).outcome, Outcome::UnknownKey);
}

#[test]
fn a_pattern_delete_on_pika_3_forgets_the_db() {
    let mut s = Stream::new(Dialect::Pika);
    s.run("pksetexat a 1795469994 1", T0);
    s.run("set b 1", T0);
    s.run("select 1", T0);
    s.run("pksetexat c 1795469994 1", T0);
    s.run("select 0", T0);
    s.run("pkpatternmatchdel * strings", T0);
    assert_eq!(s.table.lookup(0, b"a", T0), KeyKnowledge::Unknown);
    assert_eq!(s.table.lookup(0, b"b", T0), KeyKnowledge::Unknown);
    assert_eq!(
        s.table.lookup(1, b"c", T0),
        KeyKnowledge::Volatile(1_795_469_994_000),
        "another DB's keys are not touched"
    );
    assert_eq!(s.run("INCR a", T0 + 1000).outcome, Outcome::UnknownKey);
}

#[test]
fn geoadd_is_a_zset_write_that_keeps_the_ttl() {
    // Pika and Redis store a geo index as a sorted set and log GEOADD as it is: on a late
    // replica that has dropped the volatile key it would create one without a TTL.
    let mut s = Stream::new(Dialect::Pika);
    s.run("expireat g 1795469994", T0);
    s.run("zadd g 1 a", T0);
    s.run("expireat g 1795469994", T0);
    assert_eq!(
        s.emitted(
            "geoadd g 13.36 38.11 palermo 15.08 37.50 catania",
            T0 + 1000
        ),
        [
            "geoadd g 13.36 38.11 palermo 15.08 37.50 catania",
            "expireat g 1795469994"
        ]
    );
    // Past the deadline the master created the key anew: a replica drops what it may hold.
    assert_eq!(
        s.emitted("geoadd g 13.36 38.11 palermo", T0 + 11_000),
        ["del g", "geoadd g 13.36 38.11 palermo"]
    );
    // Its members are the key's witnesses: removing another one cannot have emptied it.
    assert_eq!(
        s.run("zrem g catania", T0 + 12_000).outcome,
        Outcome::Passed
    );
    assert_eq!(
        s.table.lookup(0, b"g", T0 + 12_000),
        KeyKnowledge::Persistent
    );
    let mut r = Stream::new(Dialect::Redis);
    r.run("SET other v PXAT 1795469994000", T0);
    r.run("ZADD g 1 a", T0);
    r.run("PEXPIREAT g 1795469994000", T0);
    assert_eq!(
        r.emitted("GEOADD g NX 13.36 38.11 palermo", T0 + 1000),
        [
            "MULTI",
            "GEOADD g NX 13.36 38.11 palermo",
            "PEXPIREAT g 1795469994000",
            "EXEC"
        ]
    );
}

#[test]
fn rename_of_a_volatile_key_restates_the_deadline_on_the_destination() {
    let mut s = Stream::new(Dialect::Pika);
    s.run("pksetexat a 1795469990 v", T0);
    s.run("set b old", T0);
    assert_eq!(
        s.emitted("RENAME a b", T0 + 1000),
        ["RENAME a b", "expireat b 1795469990"]
    );
    assert_eq!(s.table.lookup(0, b"a", T0), KeyKnowledge::Absent);
}

#[test]
fn select_and_swapdb_move_knowledge_between_dbs() {
    let mut s = Stream::new(Dialect::Redis);
    s.run("SELECT 1", T0);
    s.run("SET k v PXAT 1795469994000", T0);
    assert_eq!(
        s.table.lookup(1, b"k", T0),
        KeyKnowledge::Volatile(1_795_469_994_000)
    );
    s.run("SWAPDB 0 1", T0);
    assert_eq!(
        s.table.lookup(0, b"k", T0),
        KeyKnowledge::Volatile(1_795_469_994_000)
    );
    s.run("SELECT 0", T0);
    assert_eq!(
        s.emitted("HSET k f v", T0),
        ["MULTI", "HSET k f v", "PEXPIREAT k 1795469994000", "EXEC"]
    );
}

#[test]
fn pika_never_gets_a_timestamp_it_would_reject() {
    let mut s = Stream::new(Dialect::Pika);
    // 2^31 seconds is beyond what a Pika replica accepts.
    let d = s.run("SET k v EX 999999999999", T0);
    assert!(d.forwarded);
    assert_eq!(d.outcome, Outcome::Malformed);
}

/// What a Pika 4.0.1 master logged in the captured session (fixtures `pika-4.0.1`), and what a
/// 4.0.1 replica must receive instead: it reads `pksetexat`'s timestamp as int32 ms.
#[test]
fn pika_4_0_never_receives_a_real_pksetexat() {
    let mut s = Stream::new(Dialect::Pika);
    s.policy.pika_release = PikaRelease::V4;
    let t = 1_796_605_869_000;
    // setex k 10 100, then incr k (logged with the new value and the same deadline). The
    // master keeps the deadline in ms and logs its second rounded down: the replica is told
    // the second after, so it never drops the key before the master.
    assert_eq!(
        s.emitted("pksetexat k 1796605879 100", t),
        ["set k 100", "expireat k 1796605880"]
    );
    assert_eq!(
        s.emitted("pksetexat k 1796605879 101", t + 1000),
        ["set k 101", "expireat k 1796605880"]
    );
    assert_eq!(
        s.table.lookup(0, b"k", t),
        KeyKnowledge::Volatile(1_796_605_879_000)
    );
    // incr on a key without TTL: 0 means no TTL on 4.0.1 too.
    assert_eq!(s.emitted("pksetexat fresh 0 1", t), ["pksetexat fresh 0 1"]);
    assert_eq!(s.table.lookup(0, b"fresh", t), KeyKnowledge::Persistent);
    // psetex: a millisecond timestamp, which the replica rejects for good.
    assert_eq!(
        s.emitted("pksetexat ps 1796605902760 v", t),
        ["set ps v", "expireat ps 1796605903"]
    );
    // A write after the deadline overwrites whatever a replica still holds.
    assert_eq!(
        s.emitted("pksetexat ps 1796605999 w", 1_796_605_903_000),
        ["set ps w", "expireat ps 1796606000"]
    );
    // SET … EX on an expired key: the old value goes first, then the 4.0 form.
    assert_eq!(
        s.emitted("SET ps x EX 10", 1_796_606_000_000),
        ["del ps", "set ps x", "expireat ps 1796606011"]
    );
    // append on a missing key: the master logged an empty value; counted, not guessed.
    let ran_empty = {
        let entry = vec![
            Bytes::from_static(b"pksetexat"),
            Bytes::from_static(b"a"),
            Bytes::from_static(b"0"),
            Bytes::new(),
        ];
        rewrite(&entry, t, &mut s.state, &s.table, &s.policy)
            .at_risk
            .map(|r| r.cause)
    };
    assert_eq!(ran_empty, Some(RiskCause::ValueLostByMaster));
    // expireat, which 4.0.1 applies correctly, is told the second after as well.
    assert_eq!(
        s.emitted("expireat h 1796605883", t),
        ["expireat h 1796605884"]
    );
    // Pika 3 keeps pksetexat.
    let mut v3 = Stream::new(Dialect::Pika);
    assert_eq!(
        v3.emitted("pksetexat k 1796605879 100", t),
        ["pksetexat k 1796605879 100"]
    );
}

/// A collection the stream created is followed member by member: removing every member it
/// holds deletes the key, so a later write re-creates it (known, rewritten or passed) instead
/// of passing as `unknown_key` — the real-Pika case `ZINCRBY z 1 m5; ZADD z 4 m0; ZREM z m2;
/// ZREM z m0; ZREM z m5; ZINCRBY z 1 m5`.
#[test]
fn a_collection_emptied_member_by_member_is_known_gone() {
    let mut s = Stream::new(Dialect::Pika);
    let t = 1_800_000_000_000;
    s.run("ZINCRBY z 1 m5", t);
    s.run("expireat z 1800000100", t);
    s.run("ZADD z 4 m0", t);
    s.run("ZREM z m2", t);
    s.run("ZREM z m0", t);
    assert!(matches!(
        s.table.lookup(0, b"z", t),
        KeyKnowledge::Volatile(_)
    ));
    s.run("ZREM z m5", t);
    assert_eq!(s.table.lookup(0, b"z", t), KeyKnowledge::Absent);
    let again = s.run("ZINCRBY z 1 m5", t);
    assert_ne!(again.outcome, Outcome::UnknownKey);
    // The same for hashes and sets.
    for (create, other, last) in [
        ("HSET h f v", "HDEL h g", "HDEL h f"),
        ("SADD s a b", "SREM s c", "SREM s a b"),
    ] {
        s.run(create, t);
        let key = &create.as_bytes()[5..6];
        s.run(
            &format!("expireat {} 1800000100", create.split(' ').nth(1).unwrap()),
            t,
        );
        s.run(other, t);
        assert!(matches!(
            s.table.lookup(0, key, t),
            KeyKnowledge::Volatile(_)
        ));
        s.run(last, t);
        assert_eq!(s.table.lookup(0, key, t), KeyKnowledge::Absent, "{create}");
    }
}

/// Past the members an exact witness follows, and after a move into the collection (which
/// may or may not add its member), removing the members known is no longer proof of
/// emptiness.
#[test]
fn an_exact_witness_gives_way_when_a_write_is_not_followed_member_by_member() {
    let mut s = Stream::new(Dialect::Pika);
    let t = 1_800_000_000_000;
    s.run("SADD big a b c d e f g h", t);
    s.run("SADD big i", t);
    s.run("expireat big 1800000100", t);
    s.run("SREM big f g h i", t);
    assert!(matches!(
        s.table.lookup(0, b"big", t),
        KeyKnowledge::MaybeVolatile(_)
    ));

    s.run("SADD dst x", t);
    s.run("expireat dst 1800000100", t);
    s.run("SADD src y", t);
    s.run("SMOVE src dst y", t);
    s.run("SREM dst x", t);
    assert_ne!(s.table.lookup(0, b"dst", t), KeyKnowledge::Absent);
}

// ---------------------------------------------------------------------------------------------
// Look-up answers that come late (a replica far behind, a backlog after a crash)
// ---------------------------------------------------------------------------------------------

const EXEC: i64 = 1_795_470_050_000;

fn late(found: LookedUp, last_write: Option<i64>) -> Answered {
    Answered {
        found,
        between: Between {
            last_write,
            ..Between::default()
        },
    }
}

#[test]
fn gone_long_after_a_ttl_keeping_write_gives_the_latest_deadline_gone_by_then() {
    let table = ExpiryTable::new(Baseline::Unknown);
    let answer = late(LookedUp::ExpiredBy(EXEC + 7_400), None);
    assert!(resolve_unknown(
        &table,
        0,
        b"h",
        EXEC,
        LookupKind::KeepsTtl,
        answer
    ));
    assert_eq!(
        table.lookup(0, b"h", EXEC),
        KeyKnowledge::Volatile(EXEC + 6_000)
    );

    // With a deadline the table allows, that one.
    let table = ExpiryTable::new(Baseline::Absent);
    table.set_maybe_volatile(0, b"h", EXEC + 2_000);
    assert!(resolve_unknown(
        &table,
        0,
        b"h",
        EXEC,
        LookupKind::KeepsTtl,
        answer
    ));
    assert_eq!(
        table.lookup(0, b"h", EXEC),
        KeyKnowledge::Volatile(EXEC + 2_000)
    );
}

#[test]
fn no_ttl_after_a_write_that_may_have_created_the_key_anew_does_not_tell() {
    // The key may have had a TTL that ran out before one of the HINCRBYs after the entry.
    let table = ExpiryTable::new(Baseline::Unknown);
    let answer = late(LookedUp::NoTtl, Some(EXEC + 3_000));
    assert!(!resolve_unknown(
        &table,
        0,
        b"h",
        EXEC,
        LookupKind::KeepsTtl,
        answer
    ));
    assert_eq!(table.lookup(0, b"h", EXEC), KeyKnowledge::Unknown);
    // Without writes in between it does: no TTL then.
    let answer = late(LookedUp::NoTtl, None);
    assert!(resolve_unknown(
        &table,
        0,
        b"h",
        EXEC,
        LookupKind::KeepsTtl,
        answer
    ));
    assert_eq!(table.lookup(0, b"h", EXEC), KeyKnowledge::NotVolatile);

    // The one deadline the table allows is after the last write between: the key kept it
    // through them, so none after means none before.
    let table = ExpiryTable::new(Baseline::Absent);
    table.set_maybe_volatile(0, b"h", EXEC + 2_000);
    let answer = late(LookedUp::NoTtl, Some(EXEC + 1_000));
    assert!(resolve_unknown(
        &table,
        0,
        b"h",
        EXEC,
        LookupKind::KeepsTtl,
        answer
    ));
    assert_eq!(table.lookup(0, b"h", EXEC), KeyKnowledge::Expired(EXEC - 1));
    // A write in that deadline's second or later: it may have created the key anew.
    table.set_maybe_volatile(0, b"h", EXEC + 2_000);
    let answer = late(LookedUp::NoTtl, Some(EXEC + 2_000));
    assert!(!resolve_unknown(
        &table,
        0,
        b"h",
        EXEC,
        LookupKind::KeepsTtl,
        answer
    ));
}

#[test]
fn an_expire_answered_after_its_own_deadline_is_taken_as_applied() {
    // Pika 4.0: `expire h 4` in the second the key's old deadline falls in, then HMSET, and
    // the answer after the new deadline: gone says nothing of the entry, and the key is gone
    // on the master by then either way. Taking it as gone would send HMSET bare.
    let kind = LookupKind::TtlSetIfAlive {
        deadline_ms: EXEC + 4_000,
    };
    let table = ExpiryTable::new(Baseline::Absent);
    table.set_deadline(0, b"h", EXEC + 300);
    let gone_late = late(LookedUp::ExpiredBy(EXEC + 9_000), Some(EXEC));
    assert!(resolve_unknown(&table, 0, b"h", EXEC, kind, gone_late));
    assert_eq!(
        table.lookup(0, b"h", EXEC),
        KeyKnowledge::Volatile(EXEC + 300)
    );

    // Gone before the new deadline: it was gone at the entry.
    let gone_soon = late(LookedUp::ExpiredBy(EXEC + 900), None);
    assert!(resolve_unknown(&table, 0, b"h", EXEC, kind, gone_soon));
    assert_eq!(table.lookup(0, b"h", EXEC), KeyKnowledge::Expired(EXEC - 1));

    // No TTL with a write at or after the new deadline: it may have created the key anew.
    table.set_deadline(0, b"h", EXEC + 300);
    let none_late = late(LookedUp::NoTtl, Some(EXEC + 4_000));
    assert!(!resolve_unknown(&table, 0, b"h", EXEC, kind, none_late));
    // Before it: the EXPIRE found no key (a write created it after).
    let none_soon = late(LookedUp::NoTtl, Some(EXEC + 1_000));
    assert!(resolve_unknown(&table, 0, b"h", EXEC, kind, none_soon));
    assert_eq!(table.lookup(0, b"h", EXEC), KeyKnowledge::Expired(EXEC - 1));
}

#[test]
fn a_conditional_set_with_its_own_ttl_gone_by_the_answer_is_taken_as_applied() {
    let table = ExpiryTable::new(Baseline::Absent);
    table.set_deadline(0, b"s", EXEC + 300);
    let kind = LookupKind::PresentIfAlive {
        sets_ms: Some(EXEC + 2_000),
    };
    let gone_late = late(LookedUp::ExpiredBy(EXEC + 5_000), None);
    assert!(resolve_unknown(&table, 0, b"s", EXEC, kind, gone_late));
    assert_eq!(
        table.lookup(0, b"s", EXEC),
        KeyKnowledge::Volatile(EXEC + 300)
    );
    let persist = LookupKind::PresentIfAlive { sets_ms: None };
    assert!(resolve_unknown(&table, 0, b"s", EXEC, persist, gone_late));
    assert_eq!(table.lookup(0, b"s", EXEC), KeyKnowledge::Expired(EXEC - 1));
}

/// SET NX/XX on a key the proxy knows nothing of: the entry asks for a look-up, and the key's
/// state after it decides what a late replica must be sent.
#[test]
fn a_conditional_set_on_an_unknown_key_is_decided_by_the_state_after_it() {
    let mut s = Stream::new(Dialect::Pika);
    s.table.reset(Baseline::Unknown);
    s.policy.pause_on_unknown = true;
    let set = |s: &mut Stream, cmd: &str, found: LookedUp| {
        let entry = argv(cmd);
        let d = rewrite(&entry, T0, &mut s.state, &s.table, &s.policy);
        let kind = d.needs_lookup.expect("a look-up");
        let answered = late(found, None);
        let used = resolve_unknown(&s.table, 0, &entry[1], T0, kind, answered);
        if used {
            // As the link does with a 3.x answer (one type under the name).
            record_single_type(&s.table, 0, &entry[1], &entry);
        }
        s.policy.pause_on_unknown = false;
        let out = s.emitted(cmd, T0);
        s.policy.pause_on_unknown = true;
        (used, out)
    };
    // XX found the key (no TTL after): it was alive, perhaps with a TTL a late replica has
    // already run out, so the value is written unconditionally.
    assert_eq!(
        set(&mut s, "SET x1 v XX", LookedUp::NoTtl),
        (true, vec!["set x1 v".to_string()])
    );
    // XX found nothing: it did nothing, on the replica too.
    assert_eq!(
        set(&mut s, "SET x2 v XX", LookedUp::ExpiredBy(T0 + 100)),
        (true, vec!["SET x2 v XX".to_string()])
    );
    // NX without a TTL and no TTL after: the key had none or was absent; the same on a replica.
    assert_eq!(
        set(&mut s, "SET n1 v NX", LookedUp::NoTtl),
        (true, vec!["SET n1 v NX".to_string()])
    );
    // NX and the old key's TTL after: it did nothing; a late replica must not create the key.
    assert_eq!(
        set(&mut s, "SET n2 v NX", LookedUp::Volatile(T0 + 7_000)),
        (true, vec!["expireat n2 1795469991".to_string()])
    );
    // NX without a TTL and the key gone after: it found a key whose TTL ran out since; a late
    // replica must not create it (the latest deadline gone by then is restated).
    assert_eq!(
        set(&mut s, "SET n5 v NX", LookedUp::ExpiredBy(T0 + 3_500)),
        (true, vec!["expireat n5 1795469986".to_string()])
    );
    // NX with a TTL, and a deadline in its own second after: it may have created the key or
    // found one with that deadline; not decided.
    assert_eq!(
        set(&mut s, "SET n3 v NX EX 4", LookedUp::Volatile(T0 + 4_000)),
        (false, vec!["SET n3 v NX EX 4".to_string()])
    );
    // The same on a key known to have no TTL: it created it.
    s.table.mark_not_volatile(0, b"n4");
    assert_eq!(
        set(&mut s, "SET n4 v NX EX 4", LookedUp::Volatile(T0 + 4_000)),
        (
            true,
            vec![
                "del n4".to_string(),
                "pksetexat n4 1795469988 v".to_string()
            ]
        )
    );
}

/// A stream that carries a move itself (Pika logs SMOVE as `srem` + `sadd`, so only another
/// master would): its destination of unknown state is looked up, and gone after does not tell
/// (a move out of a source without the member does nothing).
#[test]
fn a_move_into_a_destination_of_unknown_state_asks_about_the_destination() {
    let mut s = Stream::new(Dialect::Pika);
    s.table.reset(Baseline::Unknown);
    s.policy.pause_on_unknown = true;
    s.table.mark_persistent(0, b"src", true);
    let entry = argv("SMOVE src dst m");
    let d = rewrite(&entry, T0, &mut s.state, &s.table, &s.policy);
    assert_eq!(d.needs_lookup, Some(LookupKind::MovesInto));
    assert_eq!(d.lookup_key(&entry), b"dst");
    let gone = late(LookedUp::ExpiredBy(T0 + 3_500), None);
    assert!(!resolve_unknown(
        &s.table,
        0,
        b"dst",
        T0,
        LookupKind::MovesInto,
        gone
    ));
    let alive = late(LookedUp::Volatile(T0 + 7_000), None);
    assert!(resolve_unknown(
        &s.table,
        0,
        b"dst",
        T0,
        LookupKind::MovesInto,
        alive
    ));
    s.policy.pause_on_unknown = false;
    assert_eq!(
        s.emitted("SMOVE src dst m", T0),
        ["SMOVE src dst m", "expireat dst 1795469991"]
    );
}

#[test]
fn a_write_that_may_create_nothing_does_not_make_an_absent_key_exist() {
    // Seen on real 3.5.4 and 4.0.1: `LINSERT l BEFORE x 60` on a missing list (0, logged all
    // the same), `EXPIRE l 2` (0: no key), `RPUSH l 50` (a new list without a TTL). Taking the
    // LINSERT as creating the list gave it the EXPIRE's deadline, and the RPUSH carried it: the
    // replica dropped a list the master keeps.
    for write in [
        "LINSERT l BEFORE x 60",
        "zadd l xx 1 m",
        "geoadd l xx 13 38 m",
    ] {
        let mut s = Stream::new(Dialect::Pika);
        s.run(write, T0);
        assert_ne!(
            s.table.lookup(0, b"l", T0),
            KeyKnowledge::Persistent,
            "{write}"
        );
        s.run("expireat l 1795469986", T0);
        assert_ne!(
            s.table.lookup(0, b"l", T0),
            KeyKnowledge::Volatile(1_795_469_986_000),
            "{write}"
        );
        let out = s.emitted("RPUSH l 50", T0);
        assert!(
            !out.iter().any(|c| c.starts_with("expireat")),
            "{write}: {out:?}"
        );
    }
    // Writes that surely create the key still know it exists.
    let mut s = Stream::new(Dialect::Pika);
    s.run("RPUSH l 1", T0);
    assert_eq!(s.table.lookup(0, b"l", T0), KeyKnowledge::Persistent);
}

/// Pika 3.x keeps one value per type under a name, each with its own TTL: on a name the warm-up
/// found holding several, nothing may add an `expireat` or a `del` (they reach every type).
#[test]
fn a_name_holding_several_types_passes_writes_unchanged_until_deleted() {
    let mut s = Stream::new(Dialect::Pika);
    s.table.set_deadline(0, b"k", T0 + 3_000);
    s.table.mark_shared(0, b"k");
    for write in [
        "hset k g w",
        "incr k",
        "rpush k b",
        "sadd k m",
        "zadd k 1 m",
    ] {
        assert_eq!(
            s.emitted(write, T0 + 1_000),
            vec![write.to_string()],
            "{write}"
        );
        let ran = s.run(write, T0 + 5_000);
        assert!(ran.forwarded, "{write}");
        assert_eq!(ran.outcome, Outcome::UnknownKey, "{write}");
    }
    // Relative or millisecond TTLs still become absolute (the master's reach every type too).
    assert_eq!(
        s.emitted("pexpireat k 1795470000123", T0),
        vec!["expireat k 1795470000".to_string()]
    );
    assert_eq!(
        s.emitted("pksetexat k 1795470000000 v", T0),
        vec!["pksetexat k 1795470000 v".to_string()]
    );
    assert!(s.table.is_shared(0, b"k"));
    // Forgetting (an entry the engine cannot follow) keeps it shared.
    s.run("delvx k v", T0);
    assert!(s.table.is_shared(0, b"k"));
    // A DEL removes every type: the name is like any other again.
    s.run("del k", T0);
    assert!(!s.table.is_shared(0, b"k"));
    s.run("pksetexat k 1795469990 1", T0);
    assert_eq!(
        s.emitted("incr k", T0 + 1_000),
        vec!["incr k".to_string(), "expireat k 1795469990".to_string()]
    );
}

/// Names that come to hold a second type while the proxy follows them (Pika 3.x): the table
/// knows which type a name holds from the write that created it, and a write of another type
/// while that one lives marks the name shared instead of adding a deadline or a `del` that
/// would reach both (each case lost the collection on a real 3.5.4 replica).
#[test]
fn a_write_of_a_second_type_under_a_name_marks_it_shared() {
    let mut s = Stream::new(Dialect::Pika);
    // A persistent hash, then a volatile string beside it.
    s.run("hset a f v", T0);
    let marked = s.run("pksetexat a 1795469990 5", T0);
    assert!(s.table.is_shared(0, b"a"));
    // Reported once, with the key, whatever the replica's lag.
    let risk = marked.at_risk.expect("the marking entry is reported");
    assert_eq!(
        (risk.cause, risk.old_deadline_ms),
        (RiskCause::SeveralTypes, i64::MIN)
    );
    assert_eq!(s.run("hset a h x", T0).at_risk, None);
    assert_eq!(
        s.emitted("hset a g w", T0 + 1_000),
        vec!["hset a g w".to_string()]
    );
    assert_eq!(s.emitted("incr a", T0 + 1_000), vec!["incr a".to_string()]);
    // A string given a TTL, then a hash created beside it (it has none).
    s.run("set b 1", T0);
    s.run("expireat b 1795469990", T0);
    assert_eq!(
        s.emitted("hset b f v", T0 + 1_000),
        vec!["hset b f v".to_string()]
    );
    assert!(s.table.is_shared(0, b"b"));
    // One type only: rewritten as before, also after the first type is gone.
    s.run("pksetexat c 1795469990 1", T0);
    assert_eq!(
        s.emitted("incr c", T0 + 1_000),
        vec!["incr c".to_string(), "expireat c 1795469990".to_string()]
    );
    assert_eq!(
        s.emitted("rpush c x", T0 + 7_000),
        vec!["del c".to_string(), "rpush c x".to_string()]
    );
    assert!(!s.table.is_shared(0, b"c"));
    s.run("expireat c 1795470000", T0 + 7_000);
    assert_eq!(
        s.emitted("rpush c y", T0 + 8_000),
        vec!["rpush c y".to_string(), "expireat c 1795470000".to_string()]
    );
    // A removal of a type the name does not hold removes nothing and changes nothing.
    let ran = s.run("hdel c f", T0 + 8_000);
    assert!(ran.forwarded);
    assert!(!s.table.is_shared(0, b"c"));
    assert_eq!(
        s.table.lookup(0, b"c", T0 + 8_000),
        KeyKnowledge::Volatile(1_795_470_000_000)
    );
    // Strings set together by MSET beside a live hash.
    s.run("hset d f v", T0);
    s.run("mset d 1 e 2", T0);
    assert!(s.table.is_shared(0, b"d"));
    assert!(!s.table.is_shared(0, b"e"));
}

/// Pika 4.0 refuses a second type under a name, so nothing is tracked.
#[test]
fn pika_4_0_tracks_no_types() {
    let mut s = Stream::new(Dialect::Pika);
    s.policy.pika_release = PikaRelease::V4;
    s.run("hset a f v", T0);
    s.run("set a 1", T0);
    assert!(!s.table.is_shared(0, b"a"));
    assert!(!s.table.tracks_types());
}

/// Review findings on the Pika 3.x type tracking: writes that can create nothing do not mark a
/// name shared; a list whose "deadline or gone" passed is gone; a shared name's entries forget
/// only real keys; a move into a name of another type marks the destination.
#[test]
fn several_types_edge_cases_from_the_review() {
    let mut s = Stream::new(Dialect::Pika);
    s.run("hset h f v", T0);
    for write in [
        "lpushx h a",
        "linsert h before p x",
        "zadd h xx 1 m",
        "set h v xx",
    ] {
        assert!(s.run(write, T0).forwarded, "{write}");
        assert!(!s.table.is_shared(0, b"h"), "{write}");
    }
    // A list emptied maybe, its deadline passed: a string there starts the name again.
    s.run("rpush l a", T0);
    s.run("expireat l 1795469990", T0);
    s.run("lpop l", T0);
    s.run("set l v", T0 + 7_000);
    assert!(!s.table.is_shared(0, b"l"));
    // Writes on a shared name forget no field or value that is also a key.
    s.run("pksetexat v 1795470100 1", T0);
    s.table.mark_shared(0, b"k");
    s.run("hset k f v", T0);
    assert_eq!(
        s.table.lookup(0, b"v", T0),
        KeyKnowledge::Volatile(1_795_470_100_000)
    );
    // SMOVE into a name holding a string.
    s.run("pksetexat d 1795470100 x", T0);
    s.run("sadd src m", T0);
    assert_eq!(
        s.emitted("smove src d m", T0),
        vec!["smove src d m".to_string()]
    );
    assert!(s.table.is_shared(0, b"d"));
}
