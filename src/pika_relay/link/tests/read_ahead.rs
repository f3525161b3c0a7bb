//! Read-ahead: the relay acks what it forwards to the master itself, in order, while the
//! replica's backlog is small, so a Pika master (which sends nothing new until all it sent is
//! acked) keeps sending as it writes; the replica's own acks still teach the offset map.

use super::*;

fn reading_ahead() -> Harness {
    let mut h = Harness::new(MapState::Identity);
    h.m.cfg.read_ahead_bytes = 1 << 20;
    h.stream_from(0);
    h
}

fn is_ping(frame: &[u8]) -> bool {
    ack_range(frame) == (pos(0), pos(0), false)
}

#[test]
fn a_forwarded_response_is_acked_to_the_master_at_once_and_the_replicas_ack_becomes_a_ping() {
    let mut h = reading_ahead();
    let out = h.response(setex_response());
    assert_eq!(frames_to_replica(&out).len(), 1);
    let up = frames_to_master(&out);
    assert_eq!(up.len(), 1, "{out:?}");
    assert_eq!(ack_range(up[0]), (pos(95), pos(95), false));
    assert!(
        matches!(out.last(), Some(Action::ToMaster(_))),
        "acked after it is queued for the replica: {out:?}"
    );

    // The rewritten INCR: acked at once too, after its write-ahead map state.
    let out = h.response(incr_response());
    let up = frames_to_master(&out);
    assert_eq!(up.len(), 1, "{out:?}");
    assert_eq!(ack_range(up[0]), (pos(159), pos(159), false));
    let persisted = position_of(&out, |a| matches!(a, Action::Persist { .. }));
    let acked = position_of(&out, |a| matches!(a, Action::ToMaster(_)));
    assert!(persisted < acked);

    // The replica's acks: pings go up (the master has them already and would drop a link
    // that acks items no longer in its window); the map learns the replica's position.
    let out = h.request(ack(95, 95));
    let up = frames_to_master(&out);
    assert_eq!(up.len(), 1, "{out:?}");
    assert!(is_ping(up[0]));
    let out = h.request(ack(159, 230));
    assert!(closed(&out).is_none(), "{out:?}");
    let up = frames_to_master(&out);
    assert_eq!(up.len(), 1, "{out:?}");
    assert!(is_ping(up[0]));
    assert_eq!(h.durable.translate(pos(230)), Some(pos(159)));
    assert_eq!(h.m.db(h.db()).acked_master(), pos(159));
    assert!(h.m.db(h.db()).inflight().is_empty());
}

#[test]
fn past_the_backlog_bound_the_replicas_acks_go_up_and_the_relay_resumes_only_in_order() {
    let mut h = reading_ahead();
    h.env.backlog.set(1 << 20);
    let out = h.response(setex_response());
    assert!(frames_to_master(&out).is_empty(), "a full backlog: {out:?}");

    // The backlog drains, but the SETEX is not acked yet: the master keeps it at the front of
    // its window, so acking the INCR now would not move it (and the replica's ack of the SETEX
    // must then go up as it is).
    h.env.backlog.set(0);
    let out = h.response(incr_response());
    assert!(frames_to_master(&out).is_empty(), "out of order: {out:?}");
    let out = h.request(ack(95, 95));
    let up = frames_to_master(&out);
    assert_eq!(up.len(), 1, "{out:?}");
    assert_eq!(ack_range(up[0]), (pos(95), pos(95), false));
    let out = h.request(ack(159, 230));
    let up = frames_to_master(&out);
    assert_eq!(ack_range(up[0]), (pos(159), pos(159), false));

    // Everything sent is acked: the next response is acked by the relay again.
    let next = items_of(&[(b"db0", item(T0 + 2, 3, 159, &["set", "x", "1"]), 200, 3)]);
    let out = h.response(next);
    let up = frames_to_master(&out);
    assert_eq!(up.len(), 1, "{out:?}");
    assert_eq!(ack_range(up[0]), (pos(200), pos(200), false));
}

#[test]
fn off_when_the_bound_is_zero() {
    let mut h = Harness::new(MapState::Identity);
    h.stream_from(0);
    let out = h.response(setex_response());
    assert!(frames_to_master(&out).is_empty(), "{out:?}");
    let out = h.request(ack(95, 95));
    assert_eq!(
        ack_range(frames_to_master(&out)[0]),
        (pos(95), pos(95), false)
    );
}
