//! The Link after a crash restart: the catch-up from a checkpoint to the replica's resume
//! point, and the checkpoints a streaming link asks for.

use super::*;
use crate::table::KeyKnowledge;

/// A continuation at `d` ↔ `u` whose table is a checkpoint's, at `from` (DB 0).
fn catching_up(d: u64, u: u64, from: u64) -> Link {
    let mut state = state_at(d, u);
    state.table_u = Some(from);
    let (d, resolved) = continue_point(&state.map, d as i64 + 1).expect("boundary");
    Link::continued(
        policy(),
        true,
        BytesMut::new(),
        ContinueStart {
            holder: Holder::Local(Box::new(state)),
            d,
            resolved,
            new_master: None,
            capa_psync2: true,
            catch_up: Some(CatchUpFrom { u: from, db: 0 }),
        },
        now(),
    )
}

fn table_u(link: &mut Link) -> Option<u64> {
    link.state_mut().expect("state").table_u
}

fn lookup(link: &mut Link, key: &[u8]) -> KeyKnowledge {
    link.state_mut()
        .expect("state")
        .table
        .lookup(0, key, NOW_MS)
}

/// The bytes from the checkpoint to the resume point go through the engine (the table learns
/// the key's TTL) but not to the replica, and the map keeps the resume pair; from the resume
/// point on the link streams, and what it learnt decides the next entry.
#[test]
fn a_catch_up_teaches_the_table_without_sending_and_streams_from_the_resume_point() {
    let setex = cmd(&[b"SETEX", b"k", b"3600", b"1"]);
    let (d, u) = (1000, 9000);
    let from = u - setex.len() as u64;
    let mut link = catching_up(d, u, from);
    link.set_checkpoint_interval(Duration::from_secs(1));
    let mut driver = Driver::new();
    link.start(now());
    assert_eq!(
        driver.run(&mut link),
        vec![
            format!("down:+CONTINUE {OWN}\r\n"),
            "fresh".into(),
            format!("partial:{d}/{u}"),
            "phase:streaming".into(),
        ],
        "the checkpoint's table is kept, not reset"
    );
    assert!(link.catching_up());
    assert_eq!(lookup(&mut link, b"k"), KeyKnowledge::NotVolatile);

    // Half the entry: still catching up, nothing for the replica, no checkpoint meanwhile.
    let half = setex.len() / 2;
    feed(&mut link, &setex[..half]);
    link.on_tick(now());
    let log = driver.run(&mut link);
    assert!(link.catching_up());
    assert!(!log.iter().any(|l| l.starts_with("checkpoint")), "{log:?}");
    assert!(!log.iter().any(|l| l.starts_with("offsets")), "{log:?}");

    feed(&mut link, &setex[half..]);
    let log = driver.run(&mut link);
    assert!(!link.catching_up());
    assert_eq!(log, vec![format!("caught_up:{from}/{u}")], "nothing queued");
    assert!(link.out.is_empty(), "the replica already has these bytes");
    assert_eq!(table_u(&mut link), Some(u));
    assert!(matches!(lookup(&mut link, b"k"), KeyKnowledge::Volatile(_)));
    let map = &link.state_mut().expect("state").map;
    assert_eq!(map.exact(d).map(|r| r.u), Some(u), "the resume pair");
    assert_eq!(map.tip(), (d, u, 0), "nothing recorded by the catch-up");

    // The next entry: an INCR on a key with a TTL is rewritten (as MULTI … EXEC), which it
    // is only because the catch-up taught the table the SETEX.
    let incr = cmd(&[b"INCR", b"k"]);
    feed(&mut link, &incr);
    let log = driver.run(&mut link);
    let sent = driver.sent(&mut link);
    assert!(sent.windows(5).any(|w| w == b"MULTI"), "INCR is rewritten");
    let end = d + sent.len() as u64;
    assert_eq!(log[..2], ["ahead".to_string(), format!("queued:{end}")]);
    let map = &link.state_mut().expect("state").map;
    assert_eq!(map.exact(end).map(|r| r.u), Some(u + incr.len() as u64));
}

/// A resume point in the middle of an entry of the master's stream cannot be caught up to:
/// the link ends as a protocol error (the state is forgotten, so the replica's retry is a full
/// resync).
#[test]
fn a_resume_point_inside_an_entry_ends_the_catch_up() {
    let setex = cmd(&[b"SETEX", b"k", b"3600", b"1"]);
    let (d, u) = (1000, 9000);
    let from = u - setex.len() as u64 + 3;
    let mut link = catching_up(d, u, from);
    let mut driver = Driver::new();
    link.start(now());
    driver.run(&mut link);
    // From `from` on, the stream holds an entry that ends 3 bytes past the resume point.
    feed(&mut link, &[&setex[3..], &setex[..]].concat());
    let log = driver.run(&mut link);
    assert_eq!(
        log,
        vec![
            "protocol_error:Upstream:stream_framing".to_string(),
            "close:upstream_protocol".into(),
        ]
    );
    assert!(link.out.is_empty());
}

/// Checkpoints: the first at once, then each interval once the stream moved on and the
/// replica acknowledged the last one's offset, always at the table's own offset.
#[test]
fn a_streaming_link_asks_for_checkpoints_at_its_table_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = state_at(1000, 9000);
    state.file = Some(StateFile::create(dir.path(), OWN, MASTER, &state.map).expect("file"));
    let (d, resolved) = continue_point(&state.map, 1001).expect("boundary");
    let cell = Arc::new(tokio::sync::Mutex::new(state));
    let mut link = Link::continued(
        policy(),
        true,
        BytesMut::new(),
        ContinueStart {
            holder: Holder::Stored(cell.try_lock_owned().expect("unlocked")),
            d,
            resolved,
            new_master: None,
            capa_psync2: true,
            catch_up: None,
        },
        now(),
    );
    let every = Duration::from_secs(60);
    link.set_checkpoint_interval(every);
    let mut driver = Driver::new();
    link.start(now());
    driver.run(&mut link);
    let t0 = now();
    let at = |secs: u64| Now {
        at: t0.at + Duration::from_secs(secs),
        ms: NOW_MS,
    };
    let checkpoints = |log: Vec<String>| -> Vec<String> {
        log.into_iter()
            .filter(|l| l.starts_with("checkpoint"))
            .collect()
    };
    link.on_tick(at(0));
    assert_eq!(checkpoints(driver.run(&mut link)), ["checkpoint:9000/0"]);
    link.on_tick(at(1));
    assert!(checkpoints(driver.run(&mut link)).is_empty(), "interval");

    let select = cmd(&[b"SELECT", b"3"]);
    let set = cmd(&[b"SET", b"k", b"v"]);
    feed(&mut link, &[select.clone(), set.clone()].concat());
    driver.run(&mut link);
    let u1 = 9000 + (select.len() + set.len()) as u64;
    link.on_tick(at(61));
    assert_eq!(
        checkpoints(driver.run(&mut link)),
        [format!("checkpoint:{u1}/3")],
        "at the table's offset, with the stream's DB"
    );
    feed(&mut link, &set);
    driver.run(&mut link);
    link.on_tick(at(122));
    assert!(
        checkpoints(driver.run(&mut link)).is_empty(),
        "the replica has not acknowledged the newest checkpoint: the one before must stay"
    );
    let d_now = 1000 + driver.sent(&mut link).len() as u64;
    for f in frames(&cmd(&[b"REPLCONF", b"ACK", d_now.to_string().as_bytes()])) {
        link.on_replica_frame(f);
    }
    driver.run(&mut link);
    let u2 = u1 + set.len() as u64;
    link.on_tick(at(123));
    assert_eq!(
        checkpoints(driver.run(&mut link)),
        [format!("checkpoint:{u2}/3")]
    );
    // A checkpoint the driver could not take is asked for again at the next tick.
    link.checkpoint_skipped();
    feed(&mut link, &set);
    driver.run(&mut link);
    let u3 = u2 + set.len() as u64;
    link.on_tick(at(124));
    assert_eq!(
        checkpoints(driver.run(&mut link)),
        [format!("checkpoint:{u3}/3")],
        "due again as after the one before"
    );
}
