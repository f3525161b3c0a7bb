//! A replica on a raw socket that records the Redis replication stream byte for byte.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A scripted replica on a raw socket: handshake, `PSYNC ? -1`, read the `$len` payload, then
/// record every stream byte and acknowledge everything received every 100 ms.
pub struct RawReplica {
    pub base_offset: u64,
    pub payload_len: u64,
    pub data: Arc<Mutex<Vec<u8>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let t = line.trim_end_matches(['\r', '\n']).to_string();
        if !t.is_empty() {
            return t;
        }
        assert!(!line.is_empty(), "connection closed during handshake");
    }
}

impl RawReplica {
    pub fn attach(port: u16, listening_port: u16) -> RawReplica {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut send = |args: &[&str]| {
            let mut out = format!("*{}\r\n", args.len());
            for a in args {
                out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            w.write_all(out.as_bytes()).unwrap();
        };
        send(&["PING"]);
        assert_eq!(read_line(&mut r), "+PONG");
        send(&["REPLCONF", "listening-port", &listening_port.to_string()]);
        assert_eq!(read_line(&mut r), "+OK");
        send(&["REPLCONF", "capa", "psync2"]);
        assert_eq!(read_line(&mut r), "+OK");
        send(&["PSYNC", "?", "-1"]);
        let reply = read_line(&mut r);
        let base_offset: u64 = reply
            .strip_prefix("+FULLRESYNC ")
            .unwrap_or_else(|| panic!("unexpected PSYNC reply {reply}"))
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let header = read_line(&mut r);
        let payload_len: u64 = header
            .strip_prefix('$')
            .unwrap_or_else(|| panic!("unexpected payload header {header}"))
            .parse()
            .unwrap_or_else(|_| panic!("not $len framing: {header}"));
        let mut payload = vec![0u8; payload_len as usize];
        r.read_exact(&mut payload).unwrap();
        assert!(payload.starts_with(b"REDIS"));
        let data = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d2, s2) = (data.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            r.get_ref()
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = vec![0u8; 65536];
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => d2.lock().unwrap().extend_from_slice(&buf[..n]),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
                let off = base_offset + d2.lock().unwrap().len() as u64;
                let off = off.to_string();
                let ack = format!(
                    "*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n${}\r\n{off}\r\n",
                    off.len()
                );
                if w.write_all(ack.as_bytes()).is_err() {
                    break;
                }
            }
        });
        RawReplica {
            base_offset,
            payload_len,
            data,
            stop,
            thread: Some(thread),
        }
    }

    /// Replication offset of the last byte received.
    pub fn offset(&self) -> u64 {
        self.base_offset + self.data.lock().unwrap().len() as u64
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.data.lock().unwrap().clone()
    }
}

impl Drop for RawReplica {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
