//! A replica that stops reading must not grow the proxy's memory without bound, and must not
//! hold back the other replicas. The proxy stops reading that replica's own upstream link once
//! `--replica-output-buffer-limit` bytes are queued for it (each replica has its own upstream
//! link), so the back-pressure lands on the master, whose `client-output-buffer-limit replica`
//! then drops that link; the proxy logs and counts the disconnect, and the healthy replica
//! keeps streaming throughout.

#[allow(dead_code)]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use support::redis_proxy::ProxyProcess;
use support::redis_server::RedisServer;
use support::{free_port, wait_until};

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Handshake as a replica, read the payload, then never read again.
fn stalled_replica(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    for cmd in [
        "*1\r\n$4\r\nPING\r\n",
        "*3\r\n$8\r\nREPLCONF\r\n$14\r\nlistening-port\r\n$4\r\n9999\r\n",
        "*3\r\n$8\r\nREPLCONF\r\n$4\r\ncapa\r\n$6\r\npsync2\r\n",
    ] {
        w.write_all(cmd.as_bytes()).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
    }
    w.write_all(b"*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n")
        .unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("+FULLRESYNC"), "{line}");
    let len: usize = loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if let Some(n) = line.trim().strip_prefix('$') {
            break n.parse().unwrap();
        }
    };
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).unwrap();
    // Keep the socket's receive buffer small so it fills quickly.
    stream
}

#[test]
fn a_stalled_replica_is_cut_off_upstream_while_the_other_keeps_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let master = RedisServer::start(
        dir.path(),
        "master",
        &[
            "--client-output-buffer-limit".into(),
            "replica 16mb 8mb 3".into(),
        ],
    );
    let port = free_port();
    let proxy = ProxyProcess::start(
        port,
        master.port,
        &dir.path().join("state"),
        &dir.path().join("proxy.log"),
        &["--replica-output-buffer-limit", "1048576"],
    );
    let healthy = RedisServer::start_replica(dir.path(), "healthy", port);
    wait_until("healthy replica linked", || healthy.link_up());
    let _stalled = stalled_replica(port);
    let baseline_rss = rss_bytes(proxy.pid());

    // ~240 MB of writes: far more than the limit and the socket buffers.
    let mut m = master.conn();
    let value = "x".repeat(64 * 1024);
    let mut peak_rss = 0;
    for round in 0..40 {
        let mut pipe = redis::pipe();
        for i in 0..60 {
            pipe.cmd("SET")
                .arg(format!("k{round}:{i}"))
                .arg(&value)
                .ignore();
        }
        pipe.query::<()>(&mut m).unwrap();
        peak_rss = peak_rss.max(rss_bytes(proxy.pid()));
    }
    // The healthy replica acknowledges everything through the proxy.
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(20_000).query(&mut m).unwrap();
    assert_eq!(acked, 1, "the healthy replica kept streaming");
    peak_rss = peak_rss.max(rss_bytes(proxy.pid()));
    let growth = peak_rss.saturating_sub(baseline_rss);
    println!(
        "proxy RSS: baseline {} MiB, peak {} MiB (growth {} MiB) after ~240 MB of writes",
        baseline_rss >> 20,
        peak_rss >> 20,
        growth >> 20
    );
    assert!(
        growth < 64 << 20,
        "proxy memory grew by {} MiB with a stalled replica",
        growth >> 20
    );

    // The master's own replica output limit drops the stalled link; the proxy logs and counts it.
    wait_until(
        "the stalled replica's session is closed with a logged reason",
        || {
            let log = std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default();
            log.contains("replica=127.0.0.1:9999") && log.contains("replica connection closed")
        },
    );
    let metrics = proxy.metrics_text();
    assert!(
        metrics.contains("pika_ttl_proxy_replica_disconnects_total{"),
        "{metrics}"
    );
}
