//! Streaming through the relay: the seed scenario and the captured session converge with
//! rewriting on and keep their immortal keys with it off; acks and TrySync are translated; full
//! syncs pass byte for byte.

use super::*;

/// `SETEX key1 10 100` → `pksetexat`; `INCR key1` one second later reaches a replica that is
/// 30 s of model time late.
pub(crate) async fn seed_scenario(rig: &Rig) -> i64 {
    rig.master.exec(&["SETEX", "key1", "10", "100"]);
    rig.applied(1).await;
    rig.replica.pause();
    rig.master.set_clock_ms(T0 + 1000);
    rig.master.exec(&["INCR", "key1"]);
    rig.replica.set_clock_ms(T0 + 31_000);
    rig.replica.resume();
    rig.applied(2).await;
    rig.caught_up().await;
    T0 + 31_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_converges_with_rewriting_on() {
    // No assumption about keys written before the relay: pksetexat itself tells the deadline.
    let rig = rig(&[]).await;
    let late = seed_scenario(&rig).await;
    rig.assert_converged(late);
    assert_eq!(record(&rig, "key1", late), None);
    // The INCR item carried `INCR` + `expireat`: the replica wrote 3 items to the master's 2,
    // so its offsets differ, and every ack still matched the master's window.
    // Master: pksetexat 0→97, INCR 97→163. Replica: pksetexat 0→97, INCR 97→163,
    // expireat 163→250. The replica acked 250; the master saw 163.
    let pos = |o| BinlogPosition::new(0, o);
    assert_eq!(rig.master.producer(), pos(163));
    assert_eq!(rig.replica.position(), pos(250));
    let replica_ack = ReplicaEvent::Ack {
        start: pos(163),
        end: pos(250),
    };
    assert!(rig.replica.events().contains(&replica_ack));
    let master_ack = MasterEvent::Ack {
        start: pos(163),
        end: pos(163),
    };
    assert!(rig.master.events().contains(&master_ack));
    rig.no_window_mismatch();
    assert!(rig
        .proxy
        .log()
        .contains("first rewritten item since the last full sync"));
    // Keepalives pass through and the replica's pings reach the master.
    assert!(
        wait_until(PATIENCE, || rig.replica.count(|e| *e == ReplicaEvent::Ping)
            > 0
            && rig.master.count(|e| *e == MasterEvent::Ping) > 0)
        .await
    );
    // P3: every response but the one carrying the INCR reached the replica byte for byte,
    // keepalives included.
    let frames = rig.frames();
    let changed = frames.iter().filter(|(sent, got)| sent != got).count();
    assert_eq!(changed, 1, "{} frames", frames.len());
    assert!(frames.len() > 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_keeps_an_immortal_key_with_rewriting_off() {
    let rig = rig(&["--families", "none"]).await;
    let late = seed_scenario(&rig).await;
    // Negative control: the late INCR recreated key1 without a TTL on the replica.
    let immortal = record(&rig, "key1", late + 3_600_000).expect("key1 on the replica");
    assert_eq!(immortal.deadline_ms, None);
    assert_eq!(immortal.value, Value::Str(Bytes::from_static(b"1")));
    assert_eq!(master_record(&rig, "key1", late), None);
    // Unchanged items keep the offsets identical.
    assert_eq!(rig.replica.position(), rig.master.producer());
    rig.no_window_mismatch();
    // P3: with every family off, the replica received exactly the master's bytes.
    let frames = rig.frames();
    assert!(frames.iter().all(|(sent, got)| sent == got));
    assert!(frames.len() >= 2);
}

/// The late-replica reproduction of `docs/pika-protocol.md#late-replica-session`.
pub(crate) async fn section11(rig: &Rig) -> i64 {
    let t = T0 + 67_000;
    rig.master.set_clock_ms(t);
    rig.replica.set_clock_ms(t);
    rig.master.exec(&["SETEX", "k3", "3", "100"]);
    rig.master.exec(&["HSET", "h3", "f", "v"]);
    rig.master.exec(&["EXPIRE", "h3", "3"]);
    rig.master.exec(&["SETEX", "k5", "3", "7"]);
    rig.applied(4).await;
    rig.replica.pause();
    rig.master.set_clock_ms(t + 1000);
    rig.master.exec(&["INCR", "k3"]);
    rig.master.exec(&["HINCRBY", "h3", "n", "1"]);
    rig.master.exec(&["APPEND", "k5", "x"]);
    rig.master.exec(&["SET", "s3", "abc", "EX", "4", "NX"]);
    rig.replica.set_clock_ms(t + 8000);
    rig.replica.resume();
    rig.applied(8).await;
    t + 8000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section11_reproduction_converges_with_rewriting_on() {
    let rig = rig(&["--empty-at-origin"]).await;
    let late = section11(&rig).await;
    rig.assert_converged(late);
    for key in ["k3", "h3", "k5", "s3"] {
        assert_eq!(record(&rig, key, late), None, "{key}");
    }
    rig.no_window_mismatch();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section11_reproduction_keeps_immortal_keys_with_rewriting_off() {
    let rig = rig(&["--empty-at-origin", "--families", "none"]).await;
    let late = section11(&rig).await;
    let much_later = late + 3_600_000;
    for key in ["k3", "h3", "k5"] {
        let r = record(&rig, key, much_later).unwrap_or_else(|| panic!("{key} gone"));
        assert_eq!(r.deadline_ms, None, "{key} is immortal on the replica");
        assert_eq!(master_record(&rig, key, late), None);
    }
    // s3 was re-created with EX 4 from the replica's late clock: it outlives the master's.
    let s3 = record(&rig, "s3", late).expect("s3 on the replica");
    assert_eq!(s3.deadline_ms, Some(late + 4000));
    assert_eq!(master_record(&rig, "s3", late), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_translate_and_a_reconnect_resumes_incrementally() {
    let opts = MasterOptions {
        send_mode: SendMode::Eager,
        ..fast_keepalives()
    };
    let rig = rig_with(&["--empty-at-origin"], opts, T0).await;
    // Each item goes out in its own response; the replica is held so many are outstanding.
    rig.replica.pause();
    for i in 0..30 {
        let k = format!("k{i}");
        rig.master.exec(&["SETEX", &k, "100", "1"]);
        rig.master.exec(&["INCR", &k]);
    }
    rig.replica.resume();
    rig.applied(60).await;
    rig.caught_up().await;
    assert!(rig.master.max_outstanding() > 1);
    rig.no_window_mismatch();
    assert_ne!(rig.replica.position(), rig.master.producer());
    let resumes_before = rig
        .master
        .count(|e| matches!(e, MasterEvent::TrySync { reply: 1, .. }));

    // The replica reconnects and TrySyncs at its own position; the relay sends the master's.
    let replica_at = rig.replica.position();
    rig.replica.reconnect();
    assert!(
        wait_until(PATIENCE, || rig
            .master
            .count(|e| matches!(e, MasterEvent::TrySync { reply: 1, .. }))
            > resumes_before)
        .await
    );
    let tries: Vec<MasterEvent> = rig
        .master
        .events()
        .into_iter()
        .filter(|e| matches!(e, MasterEvent::TrySync { .. }))
        .collect();
    assert_eq!(
        tries.last(),
        Some(&MasterEvent::TrySync {
            at: rig.master.producer(),
            reply: 1
        })
    );
    let resumed = ReplicaEvent::TrySync {
        at: replica_at,
        reply: 1,
    };
    assert!(wait_until(PATIENCE, || rig.replica.events().contains(&resumed)).await);
    assert!(wait_until(PATIENCE, || rig.replica.is_streaming()).await);
    for i in 0..10 {
        rig.master.exec(&["INCR", &format!("k{i}")]);
    }
    rig.applied(70).await;
    rig.assert_converged(T0);
    assert_eq!(rig.replica_full_syncs(), 1, "only the initial full sync");
    assert_eq!(rig.master_full_syncs(), 1);
    rig.no_window_mismatch();
}

/// A position no ack confirmed: the replica applied a response whose ack never reached the
/// relay. The relay predicted that position before sending the response (and wrote it ahead),
/// so the replica resumes there without a full sync, and the master is still only ever asked
/// for exact record boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_no_ack_confirmed_is_resumed_from_its_prediction() {
    let rig = rig(&["--empty-at-origin"]).await;
    rig.master.exec(&["SETEX", "a", "100", "1"]);
    rig.master.exec(&["INCR", "a"]);
    rig.applied(2).await;
    rig.caught_up().await;
    rig.replica.hold_acks(true);
    rig.master.exec(&["INCR", "a"]);
    rig.applied(3).await;
    let unacked_at = rig.replica.position();
    rig.replica.hold_acks(false);
    rig.replica.reconnect();
    assert!(
        wait_until(PATIENCE, || rig.replica.events().contains(
            &ReplicaEvent::TrySync {
                at: unacked_at,
                reply: 1
            }
        ) && rig.replica.is_streaming())
        .await,
        "{:?}",
        rig.replica.events()
    );
    assert_eq!(rig.replica_full_syncs(), 1, "only the initial full sync");
    let refused = rig
        .master
        .count(|e| matches!(e, MasterEvent::TrySync { reply, .. } if *reply != 1));
    assert_eq!(refused, 0, "{:?}", rig.master.events());
    rig.master.exec(&["INCR", "a"]);
    rig.applied(4).await;
    rig.assert_converged(T0);
    rig.no_window_mismatch();
}

/// Reads `RsyncRequest`/`RsyncResponse` `(reader_index, filename)`; meta frames have no file.
pub(crate) fn rsync_key(body: &[u8], response: bool) -> (i32, Vec<u8>) {
    let (reader_field, file_field, name_field) = if response { (2, 8, 6) } else { (2, 5, 1) };
    let mut reader = 0;
    let mut name = Vec::new();
    for f in FieldIter::new(body).flatten() {
        if f.number() == reader_field {
            reader = f.int32().unwrap();
        } else if f.number() == file_field {
            for g in FieldIter::new(f.bytes().unwrap()).flatten() {
                if g.number() == name_field {
                    name = g.bytes().unwrap().to_vec();
                }
            }
        }
    }
    (reader, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsync_passthrough_is_byte_exact() {
    let req_bytes = support::fixture("pika-3.5.4/session1-rsync-replica-to-master.bin");
    let resp_bytes = support::fixture("pika-3.5.4/session1-rsync-master-to-replica.bin");
    let requests = FrameCodec::new().decode_all(&req_bytes).unwrap();
    let responses = FrameCodec::new().decode_all(&resp_bytes).unwrap();
    assert_eq!((requests.len(), responses.len()), (17, 17));

    // A fake rsync server that sends each captured response once the request it answers has
    // arrived (the captured order, which is not the request order), in odd-sized chunks.
    let base = free_base_port();
    let listener = TcpListener::bind(("127.0.0.1", base + 10001))
        .await
        .unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    let resp_frames = responses.clone();
    let resp_raw = resp_bytes.clone();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(i32, Vec<u8>)>();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let mut buf = bytes::BytesMut::new();
            let mut codec = FrameCodec::new();
            let mut chunk = vec![0u8; 4096];
            loop {
                let n = match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                all.extend_from_slice(&chunk[..n]);
                buf.extend_from_slice(&chunk[..n]);
                while let Ok(Some(f)) = codec.decode(&mut buf) {
                    let _ = seen_tx.send(rsync_key(&f, false));
                }
            }
            all
        });
        let mut seen: Vec<(i32, Vec<u8>)> = Vec::new();
        let mut at = 0;
        for r in &resp_frames {
            let key = rsync_key(r, true);
            while !seen.contains(&key) {
                seen.push(seen_rx.recv().await.unwrap());
            }
            let pos = seen.iter().position(|k| *k == key).unwrap();
            seen.remove(pos);
            let len = 4 + r.len();
            for chunk in resp_raw[at..at + len].chunks(777) {
                wr.write_all(chunk).await.unwrap();
            }
            at += len;
        }
        wr.shutdown().await.unwrap();
        let _ = got_tx.send(reader.await.unwrap());
    });

    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(base, dir.path(), &[]).await;
    let client = TcpStream::connect(("127.0.0.1", proxy.port + 10001))
        .await
        .unwrap();
    let (mut rd, mut wr) = client.into_split();
    let receiver = tokio::spawn(async move {
        let mut all = Vec::new();
        rd.read_to_end(&mut all).await.unwrap();
        all
    });
    let mut at = 0;
    for r in &requests {
        let len = 4 + r.len();
        wr.write_all(&req_bytes[at..at + len]).await.unwrap();
        at += len;
    }
    let received = tokio::time::timeout(PATIENCE, receiver)
        .await
        .unwrap()
        .unwrap();
    wr.shutdown().await.unwrap();
    assert_eq!(received.len(), resp_bytes.len());
    assert!(received == resp_bytes, "master → replica bytes changed");
    let server_got = tokio::time::timeout(PATIENCE, got_rx)
        .await
        .unwrap()
        .unwrap();
    assert!(server_got == req_bytes, "replica → master bytes changed");
    // The tap read the snapshot position from the `info` file on the way.
    assert!(
        wait_until(PATIENCE, || proxy
            .log()
            .contains("full-sync snapshot position seen"))
        .await
    );
    assert!(proxy.log().contains("position=0/0"));
}

/// A Pika master serves a DBSync its last dump while that dump is recent enough, and the
/// replica then replays everything logged since through the relay, too late for look-ups. The
/// relay asks the master for a fresh dump first (`BGSAVE`, then `INFO stats` until
/// `is_bgsaving:No`), so the replica starts at the master's tip; with `--fresh-dump off` it
/// gets the older dump, as without the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_is_served_a_fresh_dump_not_an_older_one() {
    for (flags, fresh) in [(&[][..], true), (&["--fresh-dump", "off"][..], false)] {
        let master = FakeMaster::start(fast_keepalives(), T0).await;
        master.exec(&["SET", "a", "1"]);
        master.dump_now();
        let old = master.producer();
        master.exec(&["SET", "b", "2"]);
        let tip = master.producer();
        let dir = tempfile::tempdir().unwrap();
        let proxy = start_proxy(master.port, dir.path(), flags).await;
        let replica =
            FakeReplica::start_release(proxy.port, REPLICA_PORT, T0, false, PikaRelease::V3);
        assert!(
            wait_until(PATIENCE, || replica.is_streaming()).await,
            "{}",
            proxy.log()
        );
        let snapshot = master.events().iter().find_map(|e| match e {
            MasterEvent::DbSync { snapshot, .. } => Some(*snapshot),
            _ => None,
        });
        assert_eq!(snapshot, Some(if fresh { tip } else { old }), "{flags:?}");
        assert_eq!(master.bgsaves(), u32::from(fresh), "{flags:?}");
        if fresh {
            assert!(proxy.log().contains("fresh dump"), "{}", proxy.log());
        }
    }
}
