//! The fake Pika peers against the real Pika 3.5.4 captures: replaying the captured replica's
//! frames into the fake master must produce the captured master's frames byte for byte, and
//! feeding the captured master's frames to the fake replica must produce the captured replica's
//! frames (and binlog) byte for byte. The relay's end-to-end tests rely on these peers.

#[allow(dead_code)]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use pika_ttl_proxy::pika::binlog_file::read_binlog_file;
use pika_ttl_proxy::pika::frame::FrameCodec;
use pika_ttl_proxy::pika::item::BinlogItem;
use pika_ttl_proxy::pika::messages::{InnerRequest, InnerResponse, MessageType};
use support::pika_peer::fake_master::{FakeMaster, MasterEvent, MasterOptions};
use support::pika_peer::fake_replica::{FakeReplica, ReplicaEvent};
use support::pika_peer::net::{free_base_port, wait_until, FramedConn, PATIENCE};
use tokio::net::TcpListener;

fn fixture(name: &str) -> Vec<u8> {
    support::fixture(&format!("pika-3.5.4/{name}"))
}

fn frames(name: &str) -> Vec<Bytes> {
    FrameCodec::new().decode_all(&fixture(name)).unwrap()
}

fn is_keepalive(body: &[u8]) -> bool {
    InnerResponse::parse(body).unwrap().is_keepalive().unwrap()
}

fn is_items(body: &[u8]) -> bool {
    let r = InnerResponse::parse(body).unwrap();
    r.msg_type == MessageType::BinlogSync && !r.is_keepalive().unwrap()
}

/// Captured requests that are acks of items (not first_send, not pings).
fn is_ack(body: &[u8]) -> bool {
    let r = InnerRequest::parse(body).unwrap();
    match r.binlog_sync().unwrap() {
        Some(b) => !b.first_send && !b.is_ping(),
        None => false,
    }
}

fn is_ping(body: &[u8]) -> bool {
    let r = InnerRequest::parse(body).unwrap();
    r.binlog_sync().unwrap().is_some_and(|b| b.is_ping())
}

/// `(content, exec_time)` of each item of a captured response.
fn items_of(body: &[u8]) -> Vec<(Vec<u8>, u32)> {
    InnerResponse::parse(body)
        .unwrap()
        .binlog_sync_entries()
        .map(|e| {
            let e = e.unwrap();
            let item = BinlogItem::parse(e.binlog).unwrap();
            (item.content.to_vec(), item.header.exec_time)
        })
        .collect()
}

/// Next frame that is not a keepalive.
async fn recv_skipping_keepalives(conn: &mut FramedConn) -> Bytes {
    loop {
        let f = tokio::time::timeout(PATIENCE, conn.recv())
            .await
            .expect("a frame in time")
            .expect("connection open");
        if !is_keepalive(&f) {
            return f;
        }
    }
}

#[tokio::test]
async fn fake_master_answers_the_captured_replica_like_pika() {
    let opts = MasterOptions {
        keepalive: Duration::from_millis(300),
        ..MasterOptions::default()
    };
    let master = FakeMaster::start(opts, 1_795_469_967_000).await;
    let r1 = frames("session1-repl1-replica-to-master.bin");
    let m1 = frames("session1-repl1-master-to-replica.bin");
    let r2 = frames("session1-repl2-replica-to-master.bin");
    let m2 = frames("session1-repl2-master-to-replica.bin");
    assert_eq!((r1.len(), m1.len(), r2.len(), m2.len()), (66, 68, 34, 36));

    // A keepalive and the answer to a ping look like the captured ones.
    let groups1 = replay_connection_with_appends(&master, &r1, &m1, true).await;
    assert_eq!(groups1, 16);
    // The replica went away; two writes happened meanwhile (lids 20, 21).
    let down: Vec<Bytes> = m2.iter().filter(|f| is_items(f)).take(1).cloned().collect();
    master.append_many(&items_of(&down[0]));
    let groups2 = replay_connection_with_appends(&master, &r2, &m2, false).await;
    assert_eq!(groups2, 10);
    // The acks of both connections matched the window exactly: no disconnect for a mismatch.
    let disconnects = master.disconnects();
    assert!(
        disconnects.iter().all(|d| !d.contains("window")),
        "{disconnects:?}"
    );
    assert!(
        wait_until(PATIENCE, || master
            .count(|e| matches!(e, MasterEvent::Ack { .. }))
            == 16 + 10)
        .await,
        "{:?}",
        master.events()
    );
    // The binlog the fake master wrote is the real master's file, byte for byte.
    assert_eq!(
        master.binlog(),
        fixture("session1-master-binlog-write2file0.bin")
    );
    assert_eq!(master.items().len(), 49);
    let file = fixture("session1-master-binlog-write2file0.bin");
    let records = read_binlog_file(&file).unwrap();
    assert_eq!(records.len(), 49);
}

/// Replays one captured connection's replica frames into the fake master: the handshake replies
/// and every item response must equal the captured ones byte for byte. Each response's items are
/// appended just before the ack that precedes it (or right after first_send), so the master
/// groups them as the real one did.
async fn replay_connection_with_appends(
    master: &FakeMaster,
    r2m: &[Bytes],
    m2r: &[Bytes],
    fresh: bool,
) -> usize {
    let mut conn = FramedConn::connect(SocketAddr::from(([127, 0, 0, 1], master.port + 2000)))
        .await
        .unwrap();
    let handshake = if fresh { 3 } else { 2 };
    for i in 0..handshake {
        conn.send(&r2m[i]).await.unwrap();
        let reply = recv_skipping_keepalives(&mut conn).await;
        assert_eq!(reply, m2r[i], "reply to handshake request {i}");
    }
    conn.send(&r2m[handshake]).await.unwrap();
    if fresh {
        // Idle after first_send: the master sends a keepalive, byte-identical to Pika's.
        let ka = tokio::time::timeout(PATIENCE, conn.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(is_keepalive(&ka));
        let captured_ka = m2r.iter().find(|f| is_keepalive(f)).unwrap();
        assert_eq!(ka, *captured_ka);
        let ping = r2m.iter().find(|f| is_ping(f)).unwrap();
        conn.send(ping).await.unwrap();
        assert!(wait_until(PATIENCE, || master.count(|e| *e == MasterEvent::Ping) > 0).await);
    }
    let acks: Vec<&Bytes> = r2m.iter().filter(|f| is_ack(f)).collect();
    let groups: Vec<&Bytes> = m2r.iter().filter(|f| is_items(f)).collect();
    if fresh {
        master.append_many(&items_of(groups[0]));
    }
    for (k, group) in groups.iter().enumerate() {
        let got = recv_skipping_keepalives(&mut conn).await;
        assert_eq!(got, **group, "item response {k}");
        if let Some(next) = groups.get(k + 1) {
            master.append_many(&items_of(next));
        }
        conn.send(acks[k]).await.unwrap();
    }
    groups.len()
}

async fn next(conn: &mut FramedConn) -> Bytes {
    tokio::time::timeout(PATIENCE, conn.recv())
        .await
        .expect("a frame in time")
        .expect("connection open")
}

/// The item responses of a captured master stream and the acks of the replica stream.
fn items_and_acks(m2r: &[Bytes], r2m: &[Bytes]) -> (Vec<Bytes>, Vec<Bytes>) {
    (
        m2r.iter().filter(|f| is_items(f)).cloned().collect(),
        r2m.iter().filter(|f| is_ack(f)).cloned().collect(),
    )
}

#[tokio::test]
async fn fake_replica_answers_the_captured_master_like_pika() {
    let r1 = frames("session1-repl1-replica-to-master.bin");
    let m1 = frames("session1-repl1-master-to-replica.bin");
    let r2 = frames("session1-repl2-replica-to-master.bin");
    let m2 = frames("session1-repl2-master-to-replica.bin");
    let rsync_m2r = frames("session1-rsync-master-to-replica.bin");

    // A scripted master on a free port triple: P accepts probes, P+10001 serves the captured
    // meta and info responses, P+2000 is driven below.
    let port = free_base_port();
    let probes = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = probes.accept().await {
            drop(s);
        }
    });
    let rsync = TcpListener::bind(("127.0.0.1", port + 10001))
        .await
        .unwrap();
    let (meta, info) = (rsync_m2r[0].clone(), rsync_m2r[3].clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = rsync.accept().await {
            let mut c = FramedConn::new(s);
            let (meta, info) = (meta.clone(), info.clone());
            tokio::spawn(async move {
                if c.recv().await.is_some() {
                    c.send(&meta).await.unwrap();
                }
                if c.recv().await.is_some() {
                    c.send(&info).await.unwrap();
                }
            });
        }
    });
    let repl = TcpListener::bind(("127.0.0.1", port + 2000)).await.unwrap();

    let first_exec = 1_795_469_984_000;
    let replica = FakeReplica::start(port, 19231, first_exec);
    let (s, _) = repl.accept().await.unwrap();
    let mut conn = FramedConn::new(s);
    // Handshake of connection 1: MetaSync, DBSync, TrySync, first_send, byte for byte.
    assert_eq!(next(&mut conn).await, r1[0]);
    conn.send(&m1[0]).await.unwrap();
    assert_eq!(next(&mut conn).await, r1[1]);
    conn.send(&m1[1]).await.unwrap();
    assert_eq!(next(&mut conn).await, r1[2]);
    conn.send(&m1[2]).await.unwrap();
    assert_eq!(next(&mut conn).await, r1[3]);
    // A keepalive is answered with the captured ping.
    conn.send(&m1[3]).await.unwrap();
    assert_eq!(next(&mut conn).await, r1[4]);

    let late = 1_795_470_059u32;
    let (groups, acks) = items_and_acks(&m1, &r1);
    for (g, ack) in groups.iter().zip(&acks) {
        let items = items_of(g);
        // The replica's clock: lids 16–19 were applied after a 7 s stop (exec time 1795470059).
        let lid_first = InnerResponse::parse(g)
            .unwrap()
            .binlog_sync_entries()
            .next()
            .unwrap()
            .unwrap()
            .binlog_offset
            .index
            .unwrap();
        let exec = if lid_first >= 16 { late } else { items[0].1 };
        replica.set_clock_ms(i64::from(exec) * 1000);
        conn.send(g).await.unwrap();
        assert_eq!(
            &next(&mut conn).await,
            ack,
            "ack for the response starting at lid {lid_first}"
        );
    }
    // Connection 2 after a restart: MetaSync, TrySync at the replica's own (0,1542).
    replica.reconnect();
    let (s, _) = repl.accept().await.unwrap();
    let mut conn = FramedConn::new(s);
    assert_eq!(next(&mut conn).await, r2[0]);
    conn.send(&m2[0]).await.unwrap();
    assert_eq!(
        next(&mut conn).await,
        r2[1],
        "TrySync at the replica's own position"
    );
    conn.send(&m2[1]).await.unwrap();
    assert_eq!(next(&mut conn).await, r2[2], "first_send");
    let (groups, acks) = items_and_acks(&m2, &r2);
    for (g, ack) in groups.iter().zip(&acks) {
        replica.set_clock_ms(i64::from(items_of(g)[0].1) * 1000);
        conn.send(g).await.unwrap();
        assert_eq!(&next(&mut conn).await, ack);
    }
    assert!(replica.errors().is_empty(), "{:?}", replica.errors());
    assert_eq!(
        replica.count(|e| matches!(e, ReplicaEvent::DbSync { .. })),
        1
    );
    // Its own binlog is the real replica's file, byte for byte (including the late apply time
    // of lids 16–19 in both the item header and the record header).
    assert_eq!(
        replica.binlog(),
        fixture("session1-replica-binlog-write2file0.bin")
    );
    replica.stop();
}
