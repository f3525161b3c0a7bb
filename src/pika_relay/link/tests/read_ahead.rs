//! Read-ahead: a replica that leaves a response unacked for [`READ_AHEAD_AFTER`] is behind;
//! the relay then acks what it forwarded to the master itself, in order, and again every
//! [`READ_AHEAD_EVERY`] while the replica's backlog is small, so a Pika master (which sends nothing new
//! until all it sent is acked) keeps sending as it writes. The replica's own acks still teach
//! the offset map, and once it has acked everything the master is paced by them again.

use super::*;
use crate::pika_relay::link::read_ahead::{READ_AHEAD_AFTER, READ_AHEAD_EVERY};

fn reading_ahead() -> Harness {
    let mut h = Harness::new(MapState::Identity);
    h.m.cfg.read_ahead_bytes = 1 << 20;
    h.stream_from(0);
    h
}

fn is_ping(frame: &[u8]) -> bool {
    ack_range(frame) == (pos(0), pos(0), false)
}

impl Harness {
    /// Time passes; the driver's read-ahead timer fires if due.
    fn later(&mut self, by: Duration) -> Vec<Action> {
        self.now += by;
        let mut out = Vec::new();
        if self.m.read_ahead_due().is_some_and(|due| due <= self.now) {
            self.m.on_read_ahead_due(&self.env, self.now, &mut out);
        }
        self.apply(&out);
        out
    }
}

#[test]
fn a_replica_that_keeps_up_paces_the_master_with_its_own_acks() {
    let mut h = reading_ahead();
    let out = h.response(setex_response());
    assert!(frames_to_master(&out).is_empty(), "{out:?}");
    let out = h.later(READ_AHEAD_AFTER / 2);
    assert!(out.is_empty(), "{out:?}");
    let out = h.request(ack(95, 95));
    assert_eq!(
        ack_range(frames_to_master(&out)[0]),
        (pos(95), pos(95), false)
    );
    assert_eq!(h.m.read_ahead_due(), None, "all acked");
}

#[test]
fn a_replica_that_falls_behind_is_read_ahead_of_until_it_has_caught_up() {
    let mut h = reading_ahead();
    h.response(setex_response());
    let due = h.m.read_ahead_due().expect("a response waits");
    assert_eq!(due, h.now + READ_AHEAD_AFTER);

    // The replica has not acked for the delay: the relay acks what it forwarded.
    let out = h.later(READ_AHEAD_AFTER);
    let up = frames_to_master(&out);
    assert_eq!(up.len(), 1, "{out:?}");
    assert_eq!(ack_range(up[0]), (pos(95), pos(95), false));

    // From then on what was forwarded is acked every READ_AHEAD_EVERY (not each response at
    // once: the master's batches stay large), after its write-ahead map state.
    let out = h.response(incr_response());
    assert!(frames_to_master(&out).is_empty(), "{out:?}");
    assert!(matches!(
        h.sent.last(),
        Some(Sent::Replica(MapState::Pairs(_)))
    ));
    let out = h.later(READ_AHEAD_EVERY);
    let up = frames_to_master(&out);
    assert_eq!(up.len(), 1, "{out:?}");
    assert_eq!(ack_range(up[0]), (pos(159), pos(159), false));
    assert_eq!(h.m.read_ahead_due(), None, "nothing more forwarded");

    // The replica's acks: pings go up (the master would drop a link that acks items no longer
    // in its window); the map learns the replica's position all the same.
    let out = h.request(ack(95, 95));
    assert!(is_ping(frames_to_master(&out)[0]), "{out:?}");
    let out = h.request(ack(159, 230));
    assert!(closed(&out).is_none(), "{out:?}");
    assert!(is_ping(frames_to_master(&out)[0]), "{out:?}");
    assert_eq!(h.durable.translate(pos(230)), Some(pos(159)));
    assert_eq!(h.m.db(h.db()).acked_master(), pos(159));

    // Caught up: the next response waits for the replica's own ack again.
    let next = items_of(&[(b"db0", item(T0 + 2, 3, 159, &["set", "x", "1"]), 200, 3)]);
    let out = h.response(next);
    assert!(frames_to_master(&out).is_empty(), "{out:?}");
    let out = h.request(ack(200, 271));
    assert_eq!(
        ack_range(frames_to_master(&out)[0]),
        (pos(200), pos(200), false)
    );
}

#[test]
fn past_the_backlog_bound_the_replicas_acks_go_up_and_the_relay_resumes_only_in_order() {
    let mut h = reading_ahead();
    h.env.backlog.set(1 << 20);
    h.response(setex_response());
    let out = h.later(READ_AHEAD_AFTER);
    assert!(frames_to_master(&out).is_empty(), "a full backlog: {out:?}");
    assert_eq!(
        h.m.read_ahead_due(),
        Some(h.now + READ_AHEAD_AFTER),
        "asked again later, not at once (no busy loop)"
    );

    // The backlog drains; the relay acks in order from the first unacked response.
    h.env.backlog.set(0);
    h.response(incr_response());
    let out = h.later(READ_AHEAD_AFTER);
    let ranges: Vec<_> = frames_to_master(&out)
        .iter()
        .map(|f| ack_range(f))
        .collect();
    assert_eq!(
        ranges,
        vec![(pos(95), pos(95), false), (pos(159), pos(159), false)]
    );
}

#[test]
fn off_when_the_bound_is_zero() {
    let mut h = Harness::new(MapState::Identity);
    h.stream_from(0);
    h.response(setex_response());
    assert_eq!(h.m.read_ahead_due(), None);
    let out = h.request(ack(95, 95));
    assert_eq!(
        ack_range(frames_to_master(&out)[0]),
        (pos(95), pos(95), false)
    );
}
