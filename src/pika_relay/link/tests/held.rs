//! Look-ups: a write the stream cannot decide holds its response (and everything after it)
//! until the master's answer is known to describe the key just after that write.

use super::*;
use crate::engine::LookedUp;
use crate::pika_relay::link::held::{
    LookupAnswer, LookupResult, LOOKUP_BACKOFF, LOOKUP_BEHIND_LIMIT, LOOKUP_HOLD_LIMIT,
};

impl Harness {
    fn with_look_ups() -> Self {
        let mut h = Harness::new(MapState::Identity);
        h.m.cfg.look_ups = true;
        h
    }

    fn answer(&mut self, answer: LookupAnswer) -> Vec<Action> {
        let asked = self.m.held.as_ref().map_or(0, |h| h.asked);
        let mut out = Vec::new();
        self.m
            .on_lookup(&self.env, asked, answer, self.now, &mut out);
        self.apply(&out);
        out
    }
}

fn one(exec: u32, index: u64, start: u64, end: u64, args: &[&str]) -> Bytes {
    items_of(&[(b"db0", item(exec, index, start, args), end, index)])
}

fn looked_up(actions: &[Action]) -> Vec<&Bytes> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::LookUp { key, .. } => Some(key),
            _ => None,
        })
        .collect()
}

fn results(actions: &[Action]) -> Vec<LookupResult> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(Event::LookedUp { result, .. }) => Some(*result),
            _ => None,
        })
        .collect()
}

fn contains(frame: &[u8], part: &str) -> bool {
    frame.windows(part.len()).any(|w| w == part.as_bytes())
}

/// A stream joined at 1000: nothing is known of any key.
fn joined_mid_stream() -> Harness {
    let mut h = Harness::with_look_ups();
    h.stream_from(1000);
    h
}

#[test]
fn a_write_on_an_unknown_key_waits_for_its_look_up_and_is_rewritten_with_the_answer() {
    let mut h = joined_mid_stream();
    let first = one(T0, 1, 1000, 1060, &["hincrby", "h", "n", "1"]);
    let out = h.response(first.clone());
    assert_eq!(looked_up(&out), vec![&Bytes::from_static(b"h")]);
    assert!(frames_to_replica(&out).is_empty(), "held: {out:?}");
    assert!(h.m.holds(h.db()));

    // What the master sends meanwhile waits behind it, in order.
    let second = one(T0, 2, 1060, 1100, &["set", "x", "1"]);
    assert!(frames_to_replica(&h.response(second.clone())).is_empty());

    let deadline = (i64::from(T0) + 5) * 1000;
    let out = h.answer(LookupAnswer::Found {
        found: LookedUp::Volatile(deadline),
        master_at: pos(1100),
    });
    assert_eq!(results(&out), vec![LookupResult::Resolved]);
    let sent = frames_to_replica(&out);
    assert_eq!(sent.len(), 2, "{out:?}");
    assert!(
        contains(sent[0], "expireat"),
        "the deadline follows the write"
    );
    assert!(contains(sent[0], &(T0 + 5).to_string()));
    assert_eq!(sent[1], &second);
    assert!(!h.m.holds(h.db()));
    assert_eq!(h.m.db(h.db()).last_forwarded(), pos(1100));

    // The table knows the key now: the next write on it is decided at once.
    let third = one(T0 + 1, 3, 1100, 1160, &["hincrby", "h", "n", "1"]);
    let out = h.response(third);
    assert!(looked_up(&out).is_empty());
    assert!(contains(frames_to_replica(&out)[0], "expireat"));
}

#[test]
fn a_key_given_a_ttl_before_the_answer_leaves_the_entry_undecided() {
    let mut h = joined_mid_stream();
    let first = one(T0, 1, 1000, 1060, &["sadd", "s", "m"]);
    h.response(first.clone());
    let second = one(T0, 2, 1060, 1100, &["expire", "s", "100"]);
    h.response(second);
    let out = h.answer(LookupAnswer::Found {
        found: LookedUp::Volatile((i64::from(T0) + 100) * 1000),
        master_at: pos(1100),
    });
    // The EXPIRE replaces the TTL the SADD needed to know: no answer can decide it.
    assert_eq!(results(&out), vec![LookupResult::TtlReset]);
    let sent = frames_to_replica(&out);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], &first, "passed as it came (unknown_key)");
}

/// The entries the machine counts while `f` runs, as the metrics text.
fn counted(f: impl FnOnce()) -> String {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, f);
    handle.render()
}

#[test]
fn a_key_deleted_before_the_answer_supersedes_the_entry() {
    let mut h = joined_mid_stream();
    let first = one(T0, 1, 1000, 1060, &["sadd", "s", "m"]);
    let mut out = Vec::new();
    let text = counted(|| {
        h.response(first.clone());
        // Read past (a removal keeps the TTL of a key it does not empty), then the DEL that
        // spoils the answer.
        h.response(one(T0, 2, 1060, 1080, &["srem", "s", "n"]));
        h.response(one(T0, 3, 1080, 1100, &["del", "s"]));
        out = h.answer(LookupAnswer::Found {
            found: LookedUp::ExpiredBy((i64::from(T0) + 1) * 1000),
            master_at: pos(1100),
        });
    });
    assert_eq!(results(&out), vec![LookupResult::Superseded]);
    let sent = frames_to_replica(&out);
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0], &first, "passed as it came");
    assert!(
        !text.contains(r#"family="set",outcome="unknown_key""#),
        "a superseded entry is not unknown_key: {text}"
    );
    assert!(text.contains(r#"family="set",outcome="passed""#), "{text}");
}

#[test]
fn a_string_set_does_not_supersede_another_type() {
    let mut h = joined_mid_stream();
    let mut out = Vec::new();
    let text = counted(|| {
        h.response(one(T0, 1, 1000, 1060, &["sadd", "s", "m"]));
        h.response(one(T0, 2, 1060, 1100, &["set", "s", "v"]));
        out = h.answer(LookupAnswer::Found {
            found: LookedUp::NoTtl,
            master_at: pos(1100),
        });
    });
    // Pika keeps a set and a string under one name: the SET leaves the set as it was.
    assert_eq!(results(&out), vec![LookupResult::WrittenAgain]);
    assert!(
        text.contains(r#"family="set",outcome="unknown_key""#),
        "{text}"
    );
}

#[test]
fn an_answer_from_further_on_waits_for_the_items_up_to_it() {
    let mut h = joined_mid_stream();
    h.response(one(T0, 1, 1000, 1060, &["rpush", "q", "y"]));
    let out = h.answer(LookupAnswer::Found {
        found: LookedUp::Volatile((i64::from(T0) + 2) * 1000),
        master_at: pos(1100),
    });
    assert!(
        frames_to_replica(&out).is_empty(),
        "1060..1100 not seen yet"
    );
    assert!(results(&out).is_empty());

    let out = h.response(one(T0, 2, 1060, 1100, &["set", "other", "1"]));
    assert_eq!(results(&out), vec![LookupResult::Resolved]);
    let sent = frames_to_replica(&out);
    assert_eq!(sent.len(), 2);
    assert!(contains(sent[0], "expireat"));
}

#[test]
fn the_relay_acks_held_responses_itself_so_the_master_sends_the_items_the_answer_waits_for() {
    // A real Pika master sends nothing new until all it sent is acked: the answer's position
    // would never be reached while the response waits unacked behind its look-up.
    let mut h = joined_mid_stream();
    let first = items_of(&[
        (b"db0", item(T0, 1, 1000, &["set", "a", "1"]), 1030, 1),
        (b"db0", item(T0, 2, 1030, &["rpush", "q", "y"]), 1060, 2),
    ]);
    let out = h.response(first);
    assert!(frames_to_master(&out).is_empty(), "no answer yet: {out:?}");
    let out = h.answer(LookupAnswer::Found {
        found: LookedUp::Volatile((i64::from(T0) + 2) * 1000),
        master_at: pos(1100),
    });
    let up = frames_to_master(&out);
    assert_eq!(up.len(), 1, "{out:?}");
    assert_eq!(ack_range(up[0]), (pos(1030), pos(1060), false));

    let out = h.response(one(T0, 3, 1060, 1100, &["set", "other", "1"]));
    assert_eq!(results(&out), vec![LookupResult::Resolved]);
    assert!(frames_to_master(&out).is_empty(), "acked once only");
    assert_eq!(frames_to_replica(&out).len(), 2);

    // The replica's ack of the first response stops here (a ping goes up in its place, the
    // replica's sign of life); of the second it goes up.
    let out = h.request(ack(1030, 1075));
    assert!(closed(&out).is_none(), "{out:?}");
    let up = frames_to_master(&out);
    assert_eq!(up.len(), 1, "{out:?}");
    assert_eq!(ack_range(up[0]), (pos(0), pos(0), false), "a ping");
    let out = h.request(ack(1100, 1115));
    assert!(closed(&out).is_none(), "{out:?}");
    let up = frames_to_master(&out);
    assert_eq!(up.len(), 1, "{out:?}");
    assert_eq!(ack_range(up[0]), (pos(1100), pos(1100), false));
}

#[test]
fn a_response_that_pauses_again_on_a_later_item_is_not_acked_twice() {
    // The master takes a second ack for items no longer in its window as an error.
    let mut h = joined_mid_stream();
    h.response(items_of(&[
        (b"db0", item(T0, 1, 1000, &["rpush", "q", "y"]), 1030, 1),
        (b"db0", item(T0, 2, 1030, &["sadd", "s", "m"]), 1060, 2),
    ]));
    let past = |h: &mut Harness| {
        h.answer(LookupAnswer::Found {
            found: LookedUp::NoTtl,
            master_at: pos(1100),
        })
    };
    let out = past(&mut h);
    assert_eq!(frames_to_master(&out).len(), 1, "{out:?}");
    let out = h.response(one(T0, 3, 1060, 1100, &["set", "other", "1"]));
    assert_eq!(looked_up(&out), vec![&Bytes::from_static(b"s")]);
    assert!(frames_to_master(&out).is_empty());
    let out = past(&mut h);
    assert!(
        frames_to_master(&out).is_empty(),
        "acked once only: {out:?}"
    );
    assert_eq!(results(&out), vec![LookupResult::Resolved]);
    assert_eq!(frames_to_replica(&out).len(), 2);
}

#[test]
fn an_answer_far_past_the_stream_is_not_waited_for_and_history_up_to_it_is_not_looked_up() {
    // A link replaying old history (a full sync from an older dump): the answer describes a
    // much later state and the items up to it would come only as the replica acks.
    let mut h = joined_mid_stream();
    let first = one(T0, 1, 1000, 1060, &["hset", "h", "f", "v"]);
    h.response(first.clone());
    let far = 1060 + LOOKUP_BEHIND_LIMIT + 1;
    let out = h.answer(LookupAnswer::Found {
        found: LookedUp::NoTtl,
        master_at: pos(far),
    });
    assert_eq!(results(&out), vec![LookupResult::Behind]);
    assert_eq!(frames_to_replica(&out), vec![&first]);
    let out = h.response(one(T0, 2, 1060, 1100, &["sadd", "s", "m"]));
    assert!(looked_up(&out).is_empty(), "before the answer's position");
    assert_eq!(frames_to_replica(&out).len(), 1);
    let out = h.response(one(T0, 3, far, far + 40, &["sadd", "t", "m"]));
    assert_eq!(looked_up(&out), vec![&Bytes::from_static(b"t")]);
}

#[test]
fn ttl_keeping_writes_and_removals_between_the_write_and_the_answer_do_not_spoil_it() {
    // `HINCRBY h n 1` twice in a row: the second keeps whatever TTL the first left, so the
    // master's answer after both still tells the state before the first.
    let mut h = joined_mid_stream();
    h.response(one(T0, 1, 1000, 1060, &["hincrby", "h", "n", "1"]));
    h.response(one(T0, 2, 1060, 1120, &["hincrby", "h", "n", "1"]));
    let out = h.answer(LookupAnswer::Found {
        found: LookedUp::Volatile((i64::from(T0) + 5) * 1000),
        master_at: pos(1120),
    });
    assert_eq!(results(&out), vec![LookupResult::Resolved]);
    let sent = frames_to_replica(&out);
    assert_eq!(sent.len(), 2);
    assert!(contains(sent[0], "expireat"));
    assert!(
        contains(sent[1], "expireat"),
        "the table knows the deadline now"
    );

    // A removal keeps the TTL of a key it does not empty: a TTL after it still tells.
    h.response(one(T0, 3, 1120, 1180, &["sadd", "s", "m", "n"]));
    h.response(one(T0, 4, 1180, 1230, &["srem", "s", "m"]));
    let out = h.answer(LookupAnswer::Found {
        found: LookedUp::Volatile((i64::from(T0) + 7) * 1000),
        master_at: pos(1230),
    });
    assert_eq!(results(&out), vec![LookupResult::Resolved]);
    assert!(contains(frames_to_replica(&out)[0], "expireat"));

    // A command that may change the TTL otherwise (here EXPIRE) does spoil it.
    let asked = h.response(one(T0, 5, 1230, 1290, &["sadd", "v", "m"]));
    assert_eq!(
        looked_up(&asked),
        vec![&Bytes::from_static(b"v")],
        "{asked:?}"
    );
    h.response(one(T0, 6, 1290, 1340, &["expire", "v", "9"]));
    let out = h.answer(LookupAnswer::Found {
        found: LookedUp::NoTtl,
        master_at: pos(1340),
    });
    assert_eq!(results(&out), vec![LookupResult::TtlReset]);

    // But no TTL after a removal and a write: the removal may have emptied the key and the
    // write created it anew, so the answer does not tell.
    let asked = h.response(one(T0, 7, 1340, 1400, &["sadd", "u", "m"]));
    assert_eq!(
        looked_up(&asked),
        vec![&Bytes::from_static(b"u")],
        "{asked:?}"
    );
    h.response(one(T0, 8, 1400, 1460, &["srem", "u", "m"]));
    h.response(one(T0, 9, 1460, 1510, &["sadd", "u", "x"]));
    let out = h.answer(LookupAnswer::Found {
        found: LookedUp::NoTtl,
        master_at: pos(1510),
    });
    assert_eq!(results(&out), vec![LookupResult::Outlived]);
}

#[test]
fn no_ttl_on_the_master_passes_the_write_and_remembers_the_key() {
    let mut h = joined_mid_stream();
    let first = one(T0, 1, 1000, 1060, &["hset", "h", "f", "v"]);
    h.response(first.clone());
    let out = h.answer(LookupAnswer::Found {
        found: LookedUp::NoTtl,
        master_at: pos(1060),
    });
    assert_eq!(frames_to_replica(&out), vec![&first]);
    let out = h.response(one(T0, 2, 1060, 1100, &["hset", "h", "g", "v"]));
    assert!(looked_up(&out).is_empty(), "known to exist without a TTL");
}

#[test]
fn a_look_up_without_an_answer_in_time_is_given_up() {
    let mut h = joined_mid_stream();
    let first = one(T0, 1, 1000, 1060, &["zadd", "z", "1", "m"]);
    h.response(first.clone());
    let mut out = Vec::new();
    h.m.on_tick(&h.env, h.now + Duration::from_millis(100), &mut out);
    assert!(frames_to_replica(&out).is_empty(), "still waiting");
    let mut out = Vec::new();
    h.m.on_tick(&h.env, h.now + LOOKUP_HOLD_LIMIT, &mut out);
    assert_eq!(results(&out), vec![LookupResult::Timeout]);
    assert_eq!(frames_to_replica(&out), vec![&first]);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Event(Event::LookUpsPaused { .. }))));

    // A master that cannot answer must not hold every write 2 s: for a while, none is held.
    let second = one(T0, 2, 1060, 1100, &["zadd", "y", "1", "m"]);
    let out = h.response(second.clone());
    assert!(looked_up(&out).is_empty());
    assert_eq!(frames_to_replica(&out), vec![&second]);

    // Then they come back; a failed look-up is given up at once (and pauses them again).
    let later = h.now + LOOKUP_HOLD_LIMIT + LOOKUP_BACKOFF;
    h.m.on_tick(&h.env, later, &mut Vec::new());
    h.now = later;
    let third = one(T0, 3, 1100, 1140, &["zadd", "x", "1", "m"]);
    let out = h.response(third.clone());
    assert_eq!(looked_up(&out), vec![&Bytes::from_static(b"x")]);
    let out = h.answer(LookupAnswer::Failed("connection refused".into()));
    assert_eq!(results(&out), vec![LookupResult::Failed]);
    assert_eq!(frames_to_replica(&out), vec![&third]);
}

#[test]
fn expire_then_write_after_a_removal_that_names_nothing_is_looked_up() {
    // A stream from an empty master (every key known), where LREM leaves the list's
    // existence open: the issue's `RPUSH q x; EXPIRE q 60; … RPUSH q y` with a removal between.
    let mut h = Harness::with_look_ups();
    h.stream_from(0);
    let deadline = T0 + 60;
    for (i, args) in [
        vec!["rpush", "q", "x"],
        vec!["expireat", "q", &deadline.to_string()],
        vec!["lrem", "q", "0", "x"],
    ]
    .iter()
    .enumerate()
    {
        let i = i as u64;
        let out = h.response(one(T0, i + 1, i * 100, (i + 1) * 100, args));
        assert!(looked_up(&out).is_empty(), "{args:?}");
    }
    let write = one(T0 + 1, 4, 300, 400, &["rpush", "q", "y"]);
    let out = h.response(write);
    assert_eq!(looked_up(&out), vec![&Bytes::from_static(b"q")]);
    let out = h.answer(LookupAnswer::Found {
        found: LookedUp::Volatile(i64::from(deadline) * 1000),
        master_at: pos(400),
    });
    assert!(contains(frames_to_replica(&out)[0], &deadline.to_string()));
}

#[test]
fn a_full_sync_drops_the_hold_and_its_table() {
    let mut h = joined_mid_stream();
    h.response(one(T0, 1, 1000, 1060, &["hincrby", "h", "n", "1"]));
    h.request(db_sync(1000));
    assert!(!h.m.holds(h.db()));
    assert!(h.m.db(h.db()).rewriter().is_none());
    // The answer that comes after is for nothing.
    let out = h.answer(LookupAnswer::Found {
        found: LookedUp::NoTtl,
        master_at: pos(1060),
    });
    assert!(out.is_empty());
}

#[test]
fn an_answer_is_journaled_before_its_item_and_a_catch_up_decides_the_item_with_it() {
    use crate::pika_relay::answer_journal::{Answer, Answers};
    use crate::table::{Baseline, ExpiryTable, KeyKnowledge};
    use std::sync::Arc;

    let mut h = joined_mid_stream();
    let first = one(T0, 1, 1000, 1060, &["hincrby", "h", "n", "1"]);
    h.response(first.clone());
    let deadline = (i64::from(T0) + 5) * 1000;
    let found = LookedUp::Volatile(deadline);
    let out = h.answer(LookupAnswer::Found {
        found,
        master_at: pos(1060),
    });
    let journaled = out
        .iter()
        .position(|a| matches!(a, Action::JournalAnswer { .. }))
        .expect("the answer is journaled");
    let sent = out
        .iter()
        .position(|a| matches!(a, Action::ToReplica(_)))
        .expect("the item is sent");
    assert!(
        journaled < sent,
        "journaled before the item it decided: {out:?}"
    );
    let Action::JournalAnswer { answer, .. } = &out[journaled] else {
        unreachable!()
    };
    assert_eq!(
        answer,
        &Answer {
            end: pos(1060),
            key: b"h".to_vec(),
            answered: crate::engine::Answered {
                found,
                between: crate::engine::Between::default()
            }
        }
    );

    // A catch-up from a checkpoint that knew nothing of `h`, over the same item.
    let catch_up = |answers: Answers| {
        let table = Arc::new(ExpiryTable::new(Baseline::Unknown));
        let mut rw = LinkRewriter::new(table.clone(), 0, FamilySwitches::all_on());
        rw.set_look_ups(true);
        rw.set_journaled_answers(answers);
        let done = rw.replay_response(&first, pos(1060)).unwrap();
        assert!(done.reached);
        table.lookup(0, b"h", i64::from(T0) * 1000)
    };
    let mut answers = Answers::new();
    answers.insert(answer.end, vec![(answer.key.clone(), answer.answered)]);
    assert_eq!(catch_up(answers), KeyKnowledge::Volatile(deadline));
    assert_eq!(
        catch_up(Answers::new()),
        KeyKnowledge::Unknown,
        "without the journal the key is unknown again"
    );
}

/// Pika 3.x keeps a value of each type under a name, and `PTTL` answers for the first: a look-up
/// that finds several types passes the write unchanged and marks the name, so nothing on it
/// is rewritten from a deadline that may be another type's.
#[test]
fn a_look_up_that_finds_several_types_under_the_name_passes_the_write_and_marks_it() {
    let mut h = joined_mid_stream();
    let first = one(T0, 1, 1000, 1060, &["hincrby", "h", "n", "1"]);
    h.response(first.clone());
    let out = h.answer(LookupAnswer::SeveralTypes {
        master_at: pos(1060),
    });
    assert_eq!(results(&out), vec![LookupResult::Resolved]);
    assert_eq!(frames_to_replica(&out), vec![&first]);
    let second = one(T0 + 1, 2, 1060, 1120, &["hincrby", "h", "n", "1"]);
    let out = h.response(second.clone());
    assert!(looked_up(&out).is_empty(), "a shared name is not looked up");
    assert_eq!(frames_to_replica(&out), vec![&second]);
}
