//! The relay between a scripted master and a scripted replica, for behaviour a well-behaved
//! real master never provokes:
//!
//! * a master that sends stream bytes right after an EOF-framed payload: the relay must hold
//!   them until the replica's first `REPLCONF ACK` (a replica that gets the mark and stream
//!   bytes in one read never finds the end of the payload), and forward that ACK translated;
//! * a master whose stream breaks RESP framing: both links close, the failure is counted, and
//!   the replica's next PSYNC is answered with a full resync (continuing would replay the same
//!   broken bytes).

#[allow(dead_code)]
mod support;

use pika_ttl_proxy::families::FamilySwitches;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;
use support::metric_sum;
use support::redis_proxy::{metrics, InProcessProxy};

const MASTER_ID: &str = "a507f8eeec018d9f9cffcad79efd27081110735e";

fn fixture_payload() -> (String, Vec<u8>) {
    // The real 7.0.15 EOF-framed transfer: header line at 107..154, RDB + mark at 154..366.
    let all =
        pika_ttl_proxy::fixtures::read("redis-7.0.15/diskless-eof-master-to-replica.bin").unwrap();
    let header = String::from_utf8(all[107..152].to_vec()).unwrap();
    (header, all[154..366].to_vec())
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l.trim_end_matches(['\r', '\n']).to_string()
}

/// Read one multibulk command, returning its words.
fn command(r: &mut BufReader<TcpStream>) -> Vec<String> {
    let head = line(r);
    let n: usize = head
        .strip_prefix('*')
        .unwrap_or_else(|| panic!("not multibulk: {head:?}"))
        .parse()
        .unwrap();
    (0..n)
        .map(|_| {
            let _len = line(r);
            line(r)
        })
        .collect()
}

fn send(w: &mut TcpStream, words: &[&str]) {
    let mut out = format!("*{}\r\n", words.len());
    for a in words {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    w.write_all(out.as_bytes()).unwrap();
}

/// Answer a replica handshake up to PSYNC; returns the PSYNC arguments.
fn master_handshake(r: &mut BufReader<TcpStream>, w: &mut TcpStream) -> Vec<String> {
    loop {
        let cmd = command(r);
        match cmd[0].to_ascii_uppercase().as_str() {
            "PING" => w.write_all(b"+PONG\r\n").unwrap(),
            "REPLCONF" => w.write_all(b"+OK\r\n").unwrap(),
            "PSYNC" => return cmd,
            other => panic!("unexpected {other}"),
        }
    }
}

fn replica_handshake(port: u16) -> (BufReader<TcpStream>, TcpStream) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    send(&mut w, &["PING"]);
    assert_eq!(line(&mut r), "+PONG");
    send(&mut w, &["REPLCONF", "listening-port", "40100"]);
    assert_eq!(line(&mut r), "+OK");
    send(&mut w, &["REPLCONF", "capa", "eof", "capa", "psync2"]);
    assert_eq!(line(&mut r), "+OK");
    (r, w)
}

#[test]
fn stream_waits_for_the_first_ack_and_broken_framing_forces_a_full_sync() {
    let (header, payload) = fixture_payload();
    let master = TcpListener::bind("127.0.0.1:0").unwrap();
    let master_port = master.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let proxy = InProcessProxy::start(master_port, dir.path(), FamilySwitches::all_on());
    let (to_test, from_master) = mpsc::channel::<Vec<String>>();

    let (m_header, m_payload) = (header.clone(), payload.clone());
    let script = std::thread::spawn(move || {
        // First link: a hasty master, then a broken stream.
        let (s, _) = master.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        to_test.send(master_handshake(&mut r, &mut w)).unwrap();
        let mut out = format!("\n+FULLRESYNC {MASTER_ID} 1000\r\n\n{m_header}\r\n").into_bytes();
        out.extend_from_slice(&m_payload);
        out.extend_from_slice(b"*1\r\n$4\r\nping\r\n");
        w.write_all(&out).unwrap();
        to_test.send(command(&mut r)).unwrap();
        // A bulk whose terminator is not CRLF: the stream is unusable.
        w.write_all(b"*2\r\n$4\r\nINCR\r\n$1\r\nkXX").unwrap();
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        // Second link: whatever the replica asks, report it.
        let (s, _) = master.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        to_test.send(master_handshake(&mut r, &mut w)).unwrap();
        let mut out = format!("+FULLRESYNC {MASTER_ID} 2000\r\n{m_header}\r\n").into_bytes();
        out.extend_from_slice(&m_payload);
        w.write_all(&out).unwrap();
        let _ = r.read_to_end(&mut Vec::new());
    });

    let (mut r, mut w) = replica_handshake(proxy.port);
    send(&mut w, &["PSYNC", "?", "-1"]);
    assert_eq!(
        from_master.recv().unwrap(),
        ["PSYNC", "?", "-1"],
        "upstream PSYNC"
    );
    assert_eq!(
        line(&mut r),
        "",
        "keepalive before the reply is passed down"
    );
    let reply = line(&mut r);
    let own_id = reply
        .strip_prefix("+FULLRESYNC ")
        .and_then(|rest| rest.strip_suffix(" 1000"))
        .unwrap_or_else(|| panic!("{reply}"))
        .to_string();
    assert_eq!(own_id.len(), 40);
    assert_ne!(
        own_id, MASTER_ID,
        "the proxy must present its own replication id"
    );
    assert_eq!(
        line(&mut r),
        "",
        "keepalive before the payload is passed down"
    );
    assert_eq!(line(&mut r), header);
    let mut got = vec![0u8; payload.len()];
    r.read_exact(&mut got).unwrap();
    assert_eq!(got, payload, "payload relayed byte for byte");

    // Nothing may follow the mark before the replica's first ACK. (A negative check: it can
    // only pass wrongly if the relay is slower than the window, never fail wrongly.)
    r.get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut probe = [0u8; 1];
    match r.read(&mut probe) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("stream bytes sent before the first ACK: {other:?}"),
    }
    r.get_ref().set_read_timeout(None).unwrap();
    send(&mut w, &["REPLCONF", "ACK", "1000"]);
    assert_eq!(from_master.recv().unwrap(), ["REPLCONF", "ACK", "1000"]);
    let mut ping = [0u8; 14];
    r.read_exact(&mut ping).unwrap();
    assert_eq!(&ping, b"*1\r\n$4\r\nping\r\n");
    send(&mut w, &["REPLCONF", "ACK", "1014"]);

    // The broken frame closes the replica's link.
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "bytes of the broken entry leaked: {rest:?}"
    );
    let m = metrics().render();
    assert_eq!(
        metric_sum(
            &m,
            "pika_ttl_proxy_protocol_errors_total",
            &[("side", "upstream"), ("kind", "stream_framing")]
        ),
        1.0
    );

    // The replica asks to continue at a boundary the proxy did record: still a full sync.
    let (mut r, mut w) = replica_handshake(proxy.port);
    send(&mut w, &["PSYNC", &own_id, "1015"]);
    assert_eq!(from_master.recv().unwrap(), ["PSYNC", "?", "-1"]);
    let reply = line(&mut r);
    assert!(
        reply.starts_with("+FULLRESYNC ") && reply.ends_with(" 2000"),
        "{reply}"
    );
    assert!(!reply.contains(&own_id), "the forgotten id was reused");
    drop((r, w));
    script.join().unwrap();
    assert_eq!(
        metric_sum(
            &metrics().render(),
            "pika_ttl_proxy_full_syncs_total",
            &[("reason", "unknown_id")]
        ),
        1.0
    );
}
