//! Unit tests of the link's state machine ([`LinkMachine`]), without sockets: frames are built
//! with the protocol builders, decoded as the driver decodes them, and the returned actions
//! are checked, including which offset-map state is durable when each frame would be queued
//! (a simulated map store applies [`Action::Persist`] at once and leaves
//! [`Action::HandIn`] pending, as a crash right then would find them).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::action::{Action, DbId, Event, WriteAhead};
use super::input::{Request, Response};
use super::{LinkEnv, LinkMachine, MachineConfig, Phase};
use crate::engine::PikaRelease;
use crate::families::FamilySwitches;
use crate::pika::binlog_file::BinlogFileWriter;
use crate::pika::item::BinlogItem;
use crate::pika::messages::field::{response, try_sync_response};
use crate::pika::messages::InnerResponse;
use crate::pika::messages::{
    build_binlog_sync_request, build_binlog_sync_response, build_keepalive_ack,
    build_meta_sync_request, build_try_sync_request, BinlogPosition, LogicalOffset, MessageError,
    MessageType, NewBinlogSyncEntry, NewBinlogSyncRequest, Node, Slot, StatusCode,
    TrySyncReplyCode,
};
use crate::pika::proto::{put_len_field, put_varint_field, FieldIter};
use crate::pika_relay::error::{LinkError, Side};
use crate::pika_relay::offset_map::MapState;
use crate::pika_relay::registry::ParkedTable;
use crate::pika_relay::rewrite::LinkRewriter;
use crate::pika_relay::warmup::WarmupState;
use crate::resp::{encode_command, CommandParser, ParserLimits};

const NODE: Node<'static> = Node {
    ip: b"10.0.0.2",
    port: 9221,
};
const DB0: Slot<'static> = Slot {
    db_name: b"db0",
    slot_id: 0,
};
/// Base of the items' exec times (a date in 2026).
const T0: u32 = 1_795_469_984;

fn pos(offset: u64) -> BinlogPosition {
    BinlogPosition::new(0, offset)
}

fn lo(offset: u64, index: u64) -> LogicalOffset {
    LogicalOffset {
        filenum: 0,
        offset,
        term: 0,
        index,
    }
}

// ----- frames -----

fn try_sync(at: u64) -> Bytes {
    build_try_sync_request(NODE, DB0, pos(at)).into()
}

/// A DBSync request: the TrySync's fields under `db_sync`.
fn db_sync(at: u64) -> Bytes {
    let ts = build_try_sync_request(NODE, DB0, pos(at));
    let inner = FieldIter::new(&ts)
        .map(|f| f.unwrap())
        .find(|f| f.number() == 3)
        .unwrap()
        .bytes()
        .unwrap()
        .to_vec();
    let mut out = Vec::new();
    put_varint_field(&mut out, 1, MessageType::DbSync.to_wire());
    put_len_field(&mut out, 4, &inner);
    out.into()
}

fn binlog_request(start: LogicalOffset, end: LogicalOffset, first_send: bool) -> Bytes {
    build_binlog_sync_request(&NewBinlogSyncRequest {
        node: NODE,
        db_name: b"db0",
        slot_id: 0,
        ack_range_start: start,
        ack_range_end: end,
        session_id: 7,
        first_send,
    })
    .into()
}

fn first_send(at: u64) -> Bytes {
    binlog_request(lo(at, 0), lo(at, 0), true)
}

fn ack(start: u64, end: u64) -> Bytes {
    binlog_request(lo(start, 1), lo(end, 1), false)
}

fn try_sync_reply(code: TrySyncReplyCode, producer: u64) -> Bytes {
    let mut slot = Vec::new();
    put_len_field(&mut slot, 1, b"db0");
    put_varint_field(&mut slot, 2, 0);
    let mut offset = Vec::new();
    put_varint_field(&mut offset, 1, 0);
    put_varint_field(&mut offset, 2, producer);
    let mut inner = Vec::new();
    put_varint_field(&mut inner, try_sync_response::REPLY_CODE, code.to_wire());
    put_len_field(&mut inner, try_sync_response::SLOT, &slot);
    put_len_field(&mut inner, try_sync_response::BINLOG_OFFSET, &offset);
    put_varint_field(&mut inner, try_sync_response::SESSION_ID, 7);
    let mut out = Vec::new();
    put_varint_field(&mut out, response::TYPE, MessageType::TrySync.to_wire());
    put_varint_field(&mut out, response::CODE, StatusCode::Ok.to_wire());
    put_len_field(&mut out, response::TRY_SYNC, &inner);
    out.into()
}

fn meta_sync_reply(db_instance_num: Option<u64>) -> Bytes {
    let mut db = Vec::new();
    put_len_field(&mut db, 1, b"db0");
    put_varint_field(&mut db, 2, 1);
    if let Some(n) = db_instance_num {
        put_varint_field(&mut db, 3, n);
    }
    let mut inner = Vec::new();
    put_varint_field(&mut inner, 1, 1);
    put_len_field(&mut inner, 2, &db);
    let mut out = Vec::new();
    put_varint_field(&mut out, response::TYPE, MessageType::MetaSync.to_wire());
    put_varint_field(&mut out, response::CODE, StatusCode::Ok.to_wire());
    put_len_field(&mut out, response::META_SYNC, &inner);
    out.into()
}

use crate::pika::item::command_item as item;

/// A BinlogSync response of `(db, item, END offset, index)` entries.
fn items_of(entries: &[(&'static [u8], Vec<u8>, u64, u64)]) -> Bytes {
    let entries: Vec<NewBinlogSyncEntry<'_>> = entries
        .iter()
        .map(|(db, binlog, end, index)| NewBinlogSyncEntry {
            slot: Slot {
                db_name: db,
                slot_id: 0,
            },
            binlog_offset: lo(*end, *index),
            binlog,
            session_id: 7,
        })
        .collect();
    build_binlog_sync_response(&entries).into()
}

/// The first response of the stream: a SETEX (logged absolute, so it passes unchanged).
fn setex_response() -> Bytes {
    let setex = item(T0, 1, 0, &["pksetexat", "k", &(T0 + 100).to_string(), "1"]);
    items_of(&[(b"db0", setex, 95, 1)])
}

/// The second: an INCR on the now volatile key (rewritten: its deadline follows it).
fn incr_response() -> Bytes {
    items_of(&[(b"db0", item(T0 + 1, 2, 95, &["INCR", "k"]), 159, 2)])
}

// ----- the machine's surroundings -----

#[derive(Default)]
struct FakeEnv {
    /// A snapshot the rsync tap saw: DB and position.
    snapshot: Option<(String, BinlogPosition)>,
    parked: RefCell<HashMap<String, ParkedTable>>,
    /// Bytes waiting for the replica's socket.
    backlog: std::cell::Cell<usize>,
}

impl LinkEnv for FakeEnv {
    fn now_ms(&self) -> i64 {
        i64::from(T0) * 1000
    }
    fn snapshot_matches(&self, db: &str, position: BinlogPosition, _since: Instant) -> bool {
        self.snapshot
            .as_ref()
            .is_some_and(|(d, p)| d == db && *p == position)
    }
    fn is_parked_at(&self, store_key: &str, at: BinlogPosition) -> bool {
        self.parked
            .borrow()
            .get(store_key)
            .is_some_and(|p| p.at == at)
    }
    fn park(&self, store_key: &str, parked: ParkedTable) {
        self.parked.borrow_mut().insert(store_key.into(), parked);
    }
    fn unpark(&self, store_key: &str, at: BinlogPosition) -> Option<ParkedTable> {
        self.parked
            .borrow_mut()
            .remove(store_key)
            .filter(|p| p.at == at)
    }
    fn start_warmup(&self, _db: &str, _rewriter: &mut LinkRewriter) -> Option<WarmupState> {
        None
    }
    fn replica_backlog_bytes(&self) -> usize {
        self.backlog.get()
    }
}

/// What a frame action would have found on disk had the relay crashed right after it.
#[derive(Debug, Clone, PartialEq)]
enum Sent {
    Replica(MapState),
    Master(MapState),
}

/// A machine, its environment, and a simulated offset-map store fed by the actions.
struct Harness {
    m: LinkMachine,
    env: FakeEnv,
    now: Instant,
    /// The map state the DB's store starts with.
    loaded: MapState,
    /// What a SIGKILL would leave: the last state persisted or handed in (both are in the file
    /// before the action completes; only a persist also waits for the sync).
    durable: MapState,
    /// The last handed-in state.
    handed_in: Option<MapState>,
    /// Every frame action with the durable map state at that point.
    sent: Vec<Sent>,
}

impl Harness {
    fn new(loaded: MapState) -> Self {
        let now = Instant::now();
        let cfg = MachineConfig {
            families: FamilySwitches::all_on(),
            empty_at_origin: true,
            upstream_idle_timeout: Duration::from_secs(30),
            master_drop_after: Duration::from_secs(20),
            replica_binlog_file_size: crate::config::DEFAULT_BINLOG_FILE_SIZE,
            look_ups: false,
            read_ahead_bytes: 0,
            fresh_dump: false,
        };
        Harness {
            m: LinkMachine::new(cfg, PikaRelease::V3, now),
            env: FakeEnv::default(),
            now,
            durable: loaded.clone(),
            loaded,
            handed_in: None,
            sent: Vec::new(),
        }
    }

    fn db(&self) -> DbId {
        self.m.find(b"db0", 0).expect("db0 opened")
    }

    fn request(&mut self, frame: Bytes) -> Vec<Action> {
        let req = Request::decode(&frame).expect("a valid request");
        if let Request::TrySync(sp) | Request::DbSync(sp) = &req {
            if self.m.find(sp.slot.db_name, sp.slot.slot_id).is_none() {
                self.m
                    .add_db(&sp.slot, "10.0.0.2_9221_db0".into(), self.loaded.clone());
            }
        }
        let mut out = Vec::new();
        self.m
            .on_request(&self.env, &frame, &req, self.now, &mut out);
        self.apply(&out);
        out
    }

    fn response(&mut self, frame: Bytes) -> Vec<Action> {
        let resp = Response::decode(&frame).expect("a valid response");
        let mut out = Vec::new();
        self.m
            .on_response(&self.env, &frame, &resp, self.now, &mut out);
        self.apply(&out);
        out
    }

    fn apply(&mut self, actions: &[Action]) {
        for action in actions {
            match action {
                Action::Persist { state, .. } => self.durable = state.clone(),
                Action::HandIn { update, .. } => {
                    self.durable.apply(update.clone());
                    self.handed_in = Some(self.durable.clone());
                }
                Action::ToReplica(_) => self.sent.push(Sent::Replica(self.durable.clone())),
                Action::ToMaster(_) => self.sent.push(Sent::Master(self.durable.clone())),
                Action::Close(_) => break,
                _ => {}
            }
        }
    }

    /// TrySync at `at`, the master's kOk and the first_send: the DB streams from `at`.
    fn stream_from(&mut self, at: u64) {
        self.request(try_sync(at));
        self.response(try_sync_reply(TrySyncReplyCode::Ok, at));
        self.request(first_send(at));
        assert_eq!(self.m.db(self.db()).phase(), Phase::Streaming);
    }
}

fn frames_to_master(actions: &[Action]) -> Vec<&Bytes> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToMaster(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn frames_to_replica(actions: &[Action]) -> Vec<&Bytes> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToReplica(f) => Some(f),
            _ => None,
        })
        .collect()
}

/// The ack range of a BinlogSync request to the master.
fn ack_range(frame: &[u8]) -> (BinlogPosition, BinlogPosition, bool) {
    let req = crate::pika::messages::InnerRequest::parse(frame).unwrap();
    let bs = req.binlog_sync().unwrap().unwrap();
    (
        bs.ack_range_start.position(),
        bs.ack_range_end.position(),
        bs.first_send,
    )
}

fn closed(actions: &[Action]) -> Option<&LinkError> {
    match actions.last() {
        Some(Action::Close(e)) => Some(e),
        _ => None,
    }
}

fn position_of(actions: &[Action], wanted: impl Fn(&Action) -> bool) -> usize {
    actions
        .iter()
        .position(wanted)
        .unwrap_or_else(|| panic!("no such action in {actions:?}"))
}

/// Replica position 500 is master position 600.
fn pairs_500_600() -> MapState {
    MapState::Unknown.after_ack(pos(500), pos(600))
}

// ----- tests -----

#[test]
fn meta_sync_goes_up_unchanged_and_the_reply_tells_the_release() {
    let mut h = Harness::new(MapState::Identity);
    let frame: Bytes = build_meta_sync_request(NODE, None).into();
    let out = h.request(frame.clone());
    assert_eq!(frames_to_master(&out), vec![&frame]);

    let reply = meta_sync_reply(Some(1));
    let out = h.response(reply.clone());
    assert!(matches!(
        out[0],
        Action::Event(Event::Release(PikaRelease::V4))
    ));
    assert_eq!(frames_to_replica(&out), vec![&reply]);
    assert_eq!(h.m.release(), PikaRelease::V4);

    let out = h.response(meta_sync_reply(None));
    assert!(matches!(
        out[0],
        Action::Event(Event::Release(PikaRelease::V3))
    ));
    assert_eq!(h.m.release(), PikaRelease::V3);
}

#[test]
fn a_translated_try_sync_goes_up_at_the_master_position() {
    let mut h = Harness::new(pairs_500_600());
    let out = h.request(try_sync(500));
    let db = h.db();
    // No table anywhere: a checkpoint may rebuild one before the TrySync goes up.
    let catch_up = position_of(
        &out,
        |a| matches!(a, Action::CatchUp { master, .. } if *master == pos(600)),
    );
    let up = frames_to_master(&out);
    assert_eq!(up.len(), 1);
    let sent = position_of(&out, |a| matches!(a, Action::ToMaster(_)));
    assert!(catch_up < sent);
    match Request::decode(up[0]).unwrap() {
        Request::TrySync(ts) => assert_eq!(ts.binlog_offset.position(), pos(600)),
        other => panic!("not a TrySync: {other:?}"),
    }
    assert_eq!(
        h.m.db(db).phase(),
        Phase::TrySync {
            replica: pos(500),
            master: pos(600)
        }
    );
    assert!(frames_to_replica(&out).is_empty());
}

#[test]
fn an_untranslatable_try_sync_is_answered_purged_and_names_the_next_full_sync() {
    let mut h = Harness::new(pairs_500_600());
    let out = h.request(try_sync(400));
    assert!(frames_to_master(&out).is_empty(), "nothing goes up");
    let down = frames_to_replica(&out);
    assert_eq!(down.len(), 1);
    match Response::decode(down[0]).unwrap() {
        Response::TrySync(Some(ts)) => {
            assert_eq!(ts.reply_code, TrySyncReplyCode::SyncPointBePurged)
        }
        other => panic!("not a TrySync reply: {other:?}"),
    }
    assert_eq!(h.m.db(h.db()).phase(), Phase::Handshake);

    let out = h.request(db_sync(400));
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Event(Event::FullSync {
            reason: "proxy_unmapped_offset",
            ..
        })
    )));
    // The reason is spent: the next full sync is the replica's own.
    let out = h.request(db_sync(400));
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Event(Event::FullSync {
            reason: "replica_request",
            ..
        })
    )));
}

#[test]
fn master_ok_then_first_send_starts_streaming() {
    let mut h = Harness::new(MapState::Identity);
    h.request(try_sync(100));
    let db = h.db();
    let reply = try_sync_reply(TrySyncReplyCode::Ok, 100);
    let out = h.response(reply.clone());
    // Identity resumed at an identical pair stays Identity: nothing to write.
    assert!(!out.iter().any(|a| matches!(a, Action::Persist { .. })));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Event(Event::PartialSync))));
    assert_eq!(frames_to_replica(&out), vec![&reply]);
    assert_eq!(
        h.m.db(db).phase(),
        Phase::FirstSend {
            replica: pos(100),
            master: pos(100)
        }
    );

    let frame = first_send(100);
    let out = h.request(frame.clone());
    assert_eq!(
        frames_to_master(&out),
        vec![&frame],
        "identical positions pass as they are"
    );
    let state = h.m.db(db);
    assert_eq!(state.phase(), Phase::Streaming);
    assert_eq!(
        (state.last_forwarded(), state.acked_master()),
        (pos(100), pos(100))
    );
    assert!(state.rewriter().is_some());
}

#[test]
fn a_resume_pair_is_durable_before_the_ok_reaches_the_replica_and_first_send_is_translated() {
    // An outstanding boundary of the old session (700 → 800) is forgotten on resume.
    let mut h = Harness::new(
        MapState::Unknown
            .after_ack(pos(700), pos(800))
            .after_ack(pos(500), pos(600)),
    );
    h.request(try_sync(500));
    let out = h.response(try_sync_reply(TrySyncReplyCode::Ok, 600));
    let persist = position_of(
        &out,
        |a| matches!(a, Action::Persist { why: WriteAhead::Resumed, state, .. } if state.translate(pos(500)) == Some(pos(600)) && state.points() == 1),
    );
    let down = position_of(&out, |a| matches!(a, Action::ToReplica(_)));
    assert!(persist < down);

    let out = h.request(first_send(500));
    let up = frames_to_master(&out);
    match Request::decode(up[0]).unwrap() {
        Request::BinlogSync(bs) => {
            assert!(bs.first_send);
            assert_eq!(bs.ack_range_start.position(), pos(600));
            assert_eq!(bs.ack_range_end.position(), pos(600));
        }
        other => panic!("not a BinlogSync: {other:?}"),
    }
}

#[test]
fn a_first_send_without_an_accepted_try_sync_closes_the_link() {
    let mut h = Harness::new(MapState::Identity);
    h.request(try_sync(100));
    let out = h.request(first_send(100));
    assert!(
        matches!(closed(&out), Some(LinkError::Protocol(Side::Replica, m)) if m.contains("without an accepted TrySync")),
        "{out:?}"
    );
}

#[test]
fn db_sync_makes_the_map_unknown_before_it_goes_up() {
    let mut h = Harness::new(MapState::Identity);
    h.stream_from(0);
    h.response(setex_response());
    let db = h.db();
    let frame = db_sync(95);
    let out = h.request(frame.clone());
    let persist = position_of(&out, |a| {
        matches!(
            a,
            Action::Persist {
                state: MapState::Unknown,
                why: WriteAhead::FullSync,
                ..
            }
        )
    });
    let up = position_of(&out, |a| matches!(a, Action::ToMaster(f) if *f == frame));
    assert!(persist < up);
    assert_eq!(h.sent.last(), Some(&Sent::Master(MapState::Unknown)));
    let state = h.m.db(db);
    assert_eq!(state.phase(), Phase::FullSync);
    assert!(state.inflight().is_empty());
    // The table was parked where the link stood.
    assert!(state.rewriter().is_none());
    assert!(h.env.is_parked_at("10.0.0.2_9221_db0", pos(95)));
}

#[test]
fn the_try_sync_at_the_rsync_snapshot_makes_the_map_identity_before_it_goes_up() {
    let mut h = Harness::new(MapState::Identity);
    h.request(db_sync(0));
    h.env.snapshot = Some(("db0".into(), pos(300)));
    let out = h.request(try_sync(300));
    let persist = position_of(&out, |a| {
        matches!(
            a,
            Action::Persist {
                state: MapState::Identity,
                why: WriteAhead::SnapshotIdentity,
                ..
            }
        )
    });
    let up = position_of(&out, |a| matches!(a, Action::ToMaster(_)));
    assert!(persist < up);
    assert_eq!(h.sent.last(), Some(&Sent::Master(MapState::Identity)));

    // Anywhere else, the map stays Unknown and the relay answers purged.
    let mut h = Harness::new(MapState::Identity);
    h.request(db_sync(0));
    h.env.snapshot = Some(("db0".into(), pos(300)));
    let out = h.request(try_sync(301));
    assert!(!out.iter().any(|a| matches!(a, Action::Persist { .. })));
    assert!(frames_to_master(&out).is_empty());
}

#[test]
fn the_first_rewritten_response_makes_the_map_pairs_before_it_is_sent() {
    let mut h = Harness::new(MapState::Identity);
    h.stream_from(0);
    let first = setex_response();
    let out = h.response(first.clone());
    assert_eq!(
        frames_to_replica(&out),
        vec![&first],
        "unchanged: original bytes"
    );
    assert!(!out.iter().any(|a| matches!(a, Action::Persist { .. })));

    let second = incr_response();
    let out = h.response(second.clone());
    let persist = position_of(&out, |a| {
        matches!(
            a,
            Action::Persist {
                why: WriteAhead::FirstRewrite,
                state: MapState::Pairs(_),
                ..
            }
        )
    });
    let down = position_of(&out, |a| matches!(a, Action::ToReplica(_)));
    assert!(persist < down);
    assert_ne!(frames_to_replica(&out), vec![&second], "rewritten");
    let Some(Sent::Replica(durable)) = h.sent.last() else {
        panic!("nothing sent");
    };
    // Every boundary the replica can be at is known exactly.
    for at in [0, 95] {
        assert_eq!(durable.translate(pos(at)), Some(pos(at)));
    }
    let db = h.db();
    assert_eq!(h.m.db(db).last_forwarded(), pos(159));
    assert_eq!(h.m.db(db).inflight().len(), 2);
}

#[test]
fn acks_after_pairs_are_handed_in_behind_and_carry_the_master_end() {
    let mut h = Harness::new(MapState::Identity);
    h.stream_from(0);
    h.response(setex_response());
    h.response(incr_response());

    // The SETEX response: the replica wrote it at the same place.
    let out = h.request(ack(95, 95));
    assert!(out.iter().any(|a| matches!(a, Action::HandIn { .. })));
    assert!(!out.iter().any(|a| matches!(a, Action::Persist { .. })));

    // The rewritten INCR is longer on the replica: its END becomes the master's.
    let out = h.request(ack(159, 230));
    let handed = position_of(&out, |a| matches!(a, Action::HandIn { .. }));
    let up = position_of(&out, |a| matches!(a, Action::ToMaster(_)));
    assert!(handed < up);
    match Request::decode(frames_to_master(&out)[0]).unwrap() {
        Request::BinlogSync(bs) => {
            assert_eq!(bs.ack_range_start.position(), pos(159));
            assert_eq!(bs.ack_range_end.position(), pos(159));
        }
        other => panic!("not an ack: {other:?}"),
    }
    // Handed in, so written before the ack goes up (the sync follows behind): a crash now
    // finds the learned state.
    let learned = h.handed_in.clone().expect("handed in");
    assert_eq!(h.sent.last(), Some(&Sent::Master(learned.clone())));
    assert_eq!(learned.translate(pos(230)), Some(pos(159)));
    assert_eq!(h.m.db(h.db()).acked_master(), pos(159));
    assert!(h.m.db(h.db()).inflight().is_empty());
}

#[test]
fn an_identity_ack_at_another_position_makes_the_map_pairs_write_ahead() {
    let mut h = Harness::new(MapState::Identity);
    h.stream_from(0);
    h.response(setex_response());
    let out = h.request(ack(95, 97));
    let diverged = position_of(&out, |a| {
        matches!(a, Action::Event(Event::AckDiverged { .. }))
    });
    let persist = position_of(&out, |a| {
        matches!(
            a,
            Action::Persist {
                why: WriteAhead::Ack,
                state: MapState::Pairs(_),
                ..
            }
        )
    });
    let up = position_of(&out, |a| matches!(a, Action::ToMaster(_)));
    assert!(diverged < persist && persist < up);
    let Some(Sent::Master(durable)) = h.sent.last() else {
        panic!("nothing sent up");
    };
    assert_eq!(durable.translate(pos(97)), Some(pos(95)));
}

#[test]
fn an_ack_outside_streaming_or_for_no_response_closes_the_link() {
    let mut h = Harness::new(MapState::Identity);
    h.request(try_sync(100));
    let out = h.request(ack(100, 100));
    assert!(
        matches!(closed(&out), Some(LinkError::Protocol(Side::Replica, m)) if m.contains("while no items were sent (try_sync)")),
        "{out:?}"
    );
    assert!(frames_to_master(&out).is_empty());

    let mut h = Harness::new(MapState::Identity);
    h.stream_from(0);
    h.response(setex_response());
    let out = h.request(ack(90, 95));
    assert!(matches!(
        closed(&out),
        Some(LinkError::Protocol(Side::Replica, _))
    ));

    // A BinlogSync request for a DB that never synced on this link (a reconnecting replica
    // sends its last ack first): dropped, as a Pika master ignores it, and the link goes on.
    let mut h = Harness::new(MapState::Identity);
    let out = h.request(ack(1, 1));
    assert!(closed(&out).is_none(), "{out:?}");
    assert!(frames_to_master(&out).is_empty());
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Event(Event::StrayAck { db }) if db == "db0")));
    h.request(try_sync(100));
    assert!(matches!(h.m.db(h.db()).phase(), Phase::TrySync { .. }));
}

#[test]
fn keepalives_pass_in_any_phase_and_pings_go_up() {
    let mut h = Harness::new(MapState::Identity);
    h.request(try_sync(100));
    let keepalive = items_of(&[(b"db0", Vec::new(), 0, 0)]);
    let out = h.response(keepalive.clone());
    assert_eq!(frames_to_replica(&out), vec![&keepalive]);
    assert!(closed(&out).is_none());

    let ping: Bytes = build_keepalive_ack(NODE, b"db0", 0, 7).into();
    let out = h.request(ping.clone());
    assert_eq!(frames_to_master(&out), vec![&ping]);
}

#[test]
fn items_before_first_send_close_the_link() {
    let mut h = Harness::new(MapState::Identity);
    h.request(try_sync(0));
    let out = h.response(setex_response());
    assert!(
        matches!(closed(&out), Some(LinkError::Protocol(Side::Master, m)) if m.contains("before the replica's first_send (try_sync)")),
        "{out:?}"
    );
    assert!(frames_to_replica(&out).is_empty());
}

#[test]
fn a_response_mixing_dbs_closes_the_link_and_drops_the_table() {
    let mut h = Harness::new(MapState::Identity);
    h.stream_from(0);
    let body = items_of(&[
        (b"db0", item(T0, 1, 0, &["SET", "a", "1"]), 40, 1),
        (b"db1", item(T0, 2, 40, &["SET", "b", "1"]), 80, 2),
    ]);
    let out = h.response(body);
    assert!(
        matches!(
            closed(&out),
            Some(LinkError::Message(
                Side::Master,
                MessageError::MixedSlots { .. }
            ))
        ),
        "{out:?}"
    );
    assert!(h.m.db(h.db()).rewriter().is_none());
}

#[test]
fn ticks_ask_for_checkpoints_and_close_a_silent_link() {
    let mut h = Harness::new(MapState::Identity);
    let mut out = Vec::new();
    h.m.on_tick(&h.env, h.now + Duration::from_secs(60), &mut out);
    assert!(out.is_empty(), "not streaming: no timeout");

    h.stream_from(0);
    let db = h.db();
    let mut out = Vec::new();
    h.m.on_tick(&h.env, h.now + Duration::from_secs(1), &mut out);
    assert!(matches!(out[..], [Action::Checkpoint { db: d }] if d == db));

    let mut out = Vec::new();
    h.m.on_tick(&h.env, h.now + Duration::from_secs(21), &mut out);
    assert!(matches!(closed(&out), Some(LinkError::ReplicaSilent(_))));

    let mut out = Vec::new();
    h.m.on_tick(&h.env, h.now + Duration::from_secs(31), &mut out);
    assert!(matches!(
        closed(&out),
        Some(LinkError::Timeout(Side::Master, _))
    ));
}

/// Where a crash can happen: after each frame action, what a restarted relay would find on
/// disk must translate every position the peers may have seen.
#[test]
fn crash_points_find_a_durable_map_for_every_frame_sent() {
    let mut h = Harness::new(MapState::Identity);
    h.stream_from(0);
    h.response(setex_response());
    h.response(incr_response());
    h.request(ack(95, 95));
    h.request(ack(159, 230));
    h.request(db_sync(230));
    let kinds: Vec<&str> = h
        .sent
        .iter()
        .map(|s| match s {
            Sent::Replica(m) | Sent::Master(m) => m.name(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "identity", // TrySync up
            "identity", // kOk down
            "identity", // first_send up
            "identity", // SETEX response down (unchanged)
            "pairs",    // INCR response down (rewritten): Pairs first
            "pairs",    // ack up
            "pairs",    // ack up (its Pairs handed in behind)
            "unknown",  // DBSync up: Unknown first
        ]
    );
}

/// Where a real replica's binlog is after it writes its own item for every command of every
/// item in `response` (as Pika does), starting from `writer`.
fn replica_writes(writer: &mut BinlogFileWriter, response: &Bytes) -> BinlogPosition {
    let parsed = InnerResponse::parse(response).unwrap();
    for entry in parsed.binlog_sync_entries() {
        let entry = entry.unwrap();
        let item = BinlogItem::parse(entry.binlog).unwrap();
        let mut parser = CommandParser::new(ParserLimits::replica_stream());
        let mut buf = BytesMut::from(item.content);
        while let Some(frame) = parser.parse(&mut buf).unwrap() {
            let cmd = frame.command().unwrap();
            let mut own = BytesMut::new();
            encode_command(&cmd.args, &mut own);
            writer.append_item(T0, 0, 1, &own).unwrap();
        }
    }
    pos(writer.position())
}

#[test]
fn a_killed_proxy_knows_where_the_replica_is_after_each_rewritten_response() {
    let mut h = Harness::new(MapState::Identity);
    // Both binlogs laid out as Pika lays them out: the master's items and the replica's own.
    let mut master = BinlogFileWriter::new(0);
    let mut replica = BinlogFileWriter::new(0);
    let mut logged = |args: &[&str], lid: u64| {
        let start = master.position();
        let it = item(T0, lid, start, args);
        let end = master.append_record(&it, T0).end;
        items_of(&[(b"db0", it, end, lid)])
    };
    let deadline = (T0 + 100).to_string();
    let setex = logged(&["pksetexat", "k", &deadline, "1"], 1);
    let incr = logged(&["INCR", "k"], 2);
    let incr2 = logged(&["INCR", "k"], 3);
    let incr3 = logged(&["INCR", "k"], 4);
    let end_of = |frame: &Bytes| {
        let parsed = InnerResponse::parse(frame).unwrap();
        let last = parsed.binlog_sync_entries().last().unwrap().unwrap();
        last.binlog_offset.position()
    };
    h.stream_from(0);
    h.response(setex.clone());
    assert_eq!(replica_writes(&mut replica, &setex), end_of(&setex));

    // The first rewritten response: its predicted pair is in the write-ahead state.
    let out = h.response(incr.clone());
    let after_incr = replica_writes(&mut replica, frames_to_replica(&out)[0]);
    assert_ne!(
        after_incr,
        end_of(&incr),
        "the rewrite moved the replica's layout"
    );
    let Some(Sent::Replica(on_disk)) = h.sent.last() else {
        panic!("nothing sent")
    };
    assert_eq!(on_disk.translate(after_incr), Some(end_of(&incr)));

    // The next one while the first is unacknowledged: handed in (written) before the send.
    let out = h.response(incr2.clone());
    let handed = position_of(&out, |a| matches!(a, Action::HandIn { .. }));
    let down = position_of(&out, |a| matches!(a, Action::ToReplica(_)));
    assert!(handed < down, "{out:?}");
    let after_incr2 = replica_writes(&mut replica, frames_to_replica(&out)[0]);
    assert_eq!(h.durable.translate(after_incr2), Some(end_of(&incr2)));
    assert_eq!(h.durable.translate(after_incr), Some(end_of(&incr)));

    // Acks at the predicted positions confirm them; one elsewhere ends the prediction and
    // forgets the pairs chained from it.
    let mispredicted = |out: &[Action]| {
        out.iter()
            .any(|a| matches!(a, Action::Event(Event::Mispredicted { .. })))
    };
    let out = h.request(ack(end_of(&setex).offset, end_of(&setex).offset));
    assert!(closed(&out).is_none() && !mispredicted(&out), "{out:?}");
    let out = h.request(ack(end_of(&incr).offset, after_incr.offset));
    assert!(closed(&out).is_none() && !mispredicted(&out), "{out:?}");
    let elsewhere = pos(after_incr2.offset + 8);
    let out = h.request(ack(end_of(&incr2).offset, elsewhere.offset));
    assert!(mispredicted(&out));
    assert_eq!(h.durable.translate(after_incr2), None);
    assert_eq!(h.durable.translate(elsewhere), Some(end_of(&incr2)));
    let out = h.response(incr3);
    assert!(!out.iter().any(|a| matches!(a, Action::HandIn { .. })));
}

#[test]
fn a_replica_stopped_inside_a_response_is_found_at_its_item() {
    let mut h = Harness::new(MapState::Identity);
    let mut master = BinlogFileWriter::new(0);
    let mut logged = |args: &[&[&str]], lid: u64| {
        let mut entries = Vec::new();
        for (i, a) in args.iter().enumerate() {
            let start = master.position();
            let it = item(T0, lid + i as u64, start, a);
            let end = master.append_record(&it, T0).end;
            entries.push((&b"db0"[..], it, end, lid + i as u64));
        }
        items_of(&entries)
    };
    let deadline = (T0 + 100).to_string();
    let setex = logged(&[&["pksetexat", "k", &deadline, "1"]], 1);
    let two = logged(&[&["INCR", "k"], &["APPEND", "k", "x"]], 2);
    h.stream_from(0);
    h.response(setex);
    let out = h.response(two.clone());
    let sent = frames_to_replica(&out)[0].clone();
    // The replica's own binlog after the first item of the response only.
    let parsed = InnerResponse::parse(&sent).unwrap();
    let first = parsed.binlog_sync_entries().next().unwrap().unwrap();
    let master_first_end = first.binlog_offset.position();
    let mut replica = BinlogFileWriter::new(0);
    let setex_item = item(T0, 1, 0, &["pksetexat", "k", &deadline, "1"]);
    replica.append_record(&setex_item, T0);
    let content = BinlogItem::parse(first.binlog).unwrap().content;
    let mut parser = CommandParser::new(ParserLimits::replica_stream());
    let mut buf = BytesMut::from(content);
    while let Some(frame) = parser.parse(&mut buf).unwrap() {
        let mut own = BytesMut::new();
        encode_command(&frame.command().unwrap().args, &mut own);
        replica.append_item(T0, 0, 1, &own).unwrap();
    }
    let inside = pos(replica.position());
    assert_eq!(h.durable.translate(inside), Some(master_first_end));
}

mod held;
mod read_ahead;
