//! Bad input and bad peers: malformed frames, a master that is no Pika server, a Pika release
//! the relay does not know.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_one_link_and_nothing_else() {
    // Replica side: garbage protobuf, then an oversized length prefix.
    let master = FakeMaster::start(fast_keepalives(), T0).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(master.port, dir.path(), &[]).await;
    let repl = SocketAddr::from(([127, 0, 0, 1], proxy.port + 2000));
    for garbage in [
        &[0u8, 0, 0, 3, 0xff, 0xff, 0xff][..],
        &[0xff, 0xff, 0xff, 0xff, 1][..],
    ] {
        let mut s = TcpStream::connect(repl).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "the relay closed the link");
    }
    assert!(
        wait_until(PATIENCE, || proxy
            .log()
            .contains("malformed frame from the replica"))
        .await
    );
    assert!(proxy.log().contains("malformed message from the replica"));
    // The relay still serves a well-behaved replica.
    let replica = FakeReplica::start(proxy.port, REPLICA_PORT, T0);
    assert!(wait_until(PATIENCE, || replica.is_streaming()).await);
    replica.stop();

    // Master side: a "master" that answers MetaSync with garbage.
    let bad = free_base_port();
    let listener = TcpListener::bind(("127.0.0.1", bad + 2000)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut c = FramedConn::new(s);
                if c.recv().await.is_some() {
                    let _ = c.send(&[0x08, 0xff]).await;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let dir2 = tempfile::tempdir().unwrap();
    let mut proxy2 = start_proxy(bad, dir2.path(), &[]).await;
    let mut c = FramedConn::connect(SocketAddr::from(([127, 0, 0, 1], proxy2.port + 2000)))
        .await
        .unwrap();
    c.send(&wire::meta_sync_request("127.0.0.1", REPLICA_PORT))
        .await
        .unwrap();
    assert!(tokio::time::timeout(PATIENCE, c.recv())
        .await
        .unwrap()
        .is_none());
    assert!(
        wait_until(PATIENCE, || proxy2
            .log()
            .contains("malformed message from the master"))
        .await
    );
    assert!(!proxy2.log().contains("panicked"));
    assert!(!proxy.log().contains("panicked"));
    // Still alive: another connection is accepted and relayed.
    assert!(TcpStream::connect(("127.0.0.1", proxy2.port + 2000))
        .await
        .is_ok());
    tokio::task::block_in_place(|| proxy2.kill9());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_is_no_pika_server_is_named_with_what_it_answered() {
    let bad = free_base_port();
    let listener = TcpListener::bind(("127.0.0.1", bad + 2000)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = start_proxy(bad, dir.path(), &[]).await;
    let mut c = FramedConn::connect(SocketAddr::from(([127, 0, 0, 1], proxy.port + 2000)))
        .await
        .unwrap();
    c.send(&wire::meta_sync_request("127.0.0.1", REPLICA_PORT))
        .await
        .unwrap();
    assert!(tokio::time::timeout(PATIENCE, c.recv())
        .await
        .unwrap()
        .is_none());
    let master = format!("127.0.0.1:{}", bad + 2000);
    assert!(
        wait_until(PATIENCE, || {
            let log = proxy.log();
            log.contains("is --master a Pika server?")
                && log.contains("HTTP/1.1 400 Bad Request\\r\\n")
                && log.contains(&master)
        })
        .await,
        "{}",
        proxy.log()
    );
    tokio::task::block_in_place(|| proxy.kill9());
}

/// A master whose `INFO server` names a release the proxy does not know is refused at link
/// start with a clear error (no silent pass), unless the operator allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_master_release_is_refused_at_link_start() {
    let opts = MasterOptions {
        pika_version: Some("4.1.0".into()),
        ..fast_keepalives()
    };
    let master = FakeMaster::start(opts.clone(), T0).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(master.port, dir.path(), &["--empty-at-origin"]).await;
    let replica = FakeReplica::start(proxy.port, REPLICA_PORT, T0);
    assert!(
        wait_until(PATIENCE, || proxy.log().contains("refusing the replica")).await,
        "{}",
        proxy.log()
    );
    assert!(proxy.log().contains("Pika 4.1.0"), "{}", proxy.log());
    assert!(!replica.is_streaming());
    assert!(proxy
        .metrics()
        .lines()
        .any(|l| l.contains(r#"kind="unknown_version""#) && !l.ends_with(" 0")));
    replica.stop();

    let master = FakeMaster::start(opts, T0).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        master.port,
        dir.path(),
        &["--empty-at-origin", "--allow-unknown-pika-version"],
    )
    .await;
    let replica = FakeReplica::start(proxy.port, REPLICA_PORT, T0);
    assert!(
        wait_until(PATIENCE, || replica.is_streaming()).await,
        "{}",
        proxy.log()
    );
    assert!(proxy
        .log()
        .contains("as allowed by --allow-unknown-pika-version"));
    replica.stop();
}
