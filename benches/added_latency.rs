//! Added latency of the Redis relay, master → replica, at a fixed write rate, on real servers.
//!
//! What it measures: for every write the master propagates, the time it reaches a replica
//! connected through `pika-ttl-proxy` minus the time it reaches a replica connected directly to
//! the master. Both "replicas" are raw replication readers inside this process, so both arrival
//! times come from the same clock (`Instant`) and the difference is the proxy's share alone: its
//! read, rewrite and write, plus one extra loopback hop.
//!
//! How:
//! 1. starts `redis-server` (the master) and the release build of the proxy
//!    (`target/release/pika-ttl-proxy redis ...`) on free loopback ports, each in a guard that
//!    kills it when dropped, and a temporary directory for their files;
//! 2. opens two replication links, one on the master and one on the proxy (`REPLCONF`,
//!    `PSYNC ? -1`, the RDB payload in either framing), then reads each command stream,
//!    timestamping every read and acknowledging the offset once a second as a replica does,
//!    and waits until a marker write has come through both links (both streams are live);
//! 3. writes to the master at a fixed rate (default 100,000 commands/s: 100 pipelined commands
//!    per millisecond on an absolute schedule) pairs `SETEX lat:<p> 3600 <p>` followed by
//!    `INCR lat:<p>` (even `p`) or `APPEND lat:<p> x` (odd `p`). Every key carries a TTL, so the
//!    proxy rewrites the second command of each pair (about half of all commands) into a
//!    `MULTI` … `EXEC` block; the key names every command in both streams, and a command inside a
//!    `MULTI` counts as arrived when its `EXEC` arrives (a replica applies nothing earlier);
//! 4. after the run (default 5 s, `ADDED_LATENCY_SECONDS`), prints p50 / p99 / p99.9 / max of
//!    the added latency over every command seen on both links, the achieved write rate and, for
//!    context, the direct link's own send → arrival latency. Then it switches every family off
//!    through the admin API and repeats the run (pass-through), so the cost of rewriting can be
//!    told apart from the cost of the extra hop.
//!
//! Run with `cargo build --release --locked && cargo bench --bench added_latency` (or
//! `scripts/bench.sh`). Environment: `ADDED_LATENCY_SECONDS` (run length per case),
//! `ADDED_LATENCY_RATE` (commands/s, default 100000), `PIKA_TTL_PROXY_BIN` (proxy binary),
//! `ADDED_LATENCY_DUMP=<prefix>` (write every command's send and arrival times to
//! `<prefix>.<first seq>.csv`, 0 meaning "never arrived").
//! Needs `redis-server` on the PATH. The target is an added p99 of at most 0.2 ms at 100 k/s.

use bytes::{Buf, BytesMut};
use pika_ttl_proxy::resp::{encode_command, CommandParser, Frame, ParserLimits};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

/// Commands per pipelined batch; the batch interval follows from the rate.
const BATCH: u64 = 100;
const KEY_PREFIX: &[u8] = b"lat:";
/// Written before a case until both links have carried it: proof that both streams are live.
const READY_KEY: &[u8] = b"added-latency:ready";
const FAMILIES: [&str; 8] = [
    "string-counter",
    "string-append",
    "string-set",
    "expire",
    "hash",
    "list",
    "set",
    "zset",
];
const TARGET_P99_US: f64 = 200.0;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    if let Err(e) = run() {
        eprintln!("added_latency: {e}");
        std::process::exit(1);
    }
}

/// A started server, killed and reaped when dropped, so an early return or a panic does not
/// leave it running.
struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, name: &'static str, log: PathBuf) -> Result<Proc, String> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Proc { child, name, log })
    }

    /// Fails with the end of the server's log if it has exited.
    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); end of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn env_number(name: &str, default: f64) -> Result<f64, String> {
    match std::env::var(name) {
        Ok(v) => v
            .parse::<f64>()
            .ok()
            .filter(|x| *x > 0.0)
            .ok_or_else(|| format!("{name}={v} is not a positive number")),
        Err(_) => Ok(default),
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

fn proxy_binary() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("PIKA_TTL_PROXY_BIN") {
        return Ok(PathBuf::from(p));
    }
    // The bench runs from <target>/release/deps/, so its grandparent is the release directory
    // even when CARGO_TARGET_DIR moved it; the manifest path covers a copied bench binary.
    let mut candidates = Vec::new();
    if let Some(release) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
    {
        candidates.push(release.join("pika-ttl-proxy"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/pika-ttl-proxy"));
    let found = candidates.iter().find(|p| p.is_file()).cloned();
    let bin = found.ok_or_else(|| {
        format!(
            "the release proxy binary is missing (looked at {}); run `cargo build --release --locked` \
             first (scripts/bench.sh does), or set PIKA_TTL_PROXY_BIN",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    // A stale binary would measure old code without saying so.
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let newest_src = newest_mtime(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    if let (Some(built), Some(src)) = (built, newest_src) {
        if src > built {
            eprintln!(
                "warning: {} is older than the sources; run `cargo build --release --locked`",
                bin.display()
            );
        }
    }
    Ok(bin)
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

fn send_command(stream: &mut TcpStream, args: &[&[u8]]) -> Result<(), String> {
    let mut out = BytesMut::new();
    encode_command(args, &mut out);
    stream
        .write_all(&out)
        .map_err(|e| format!("write to {:?}: {e}", stream.peer_addr()))
}

/// Waits until `port` answers PING with +PONG (for the proxy, the master's answer relayed).
fn wait_for_pong(port: u16, server: &mut Proc) -> Result<(), String> {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        server.check_alive()?;
        let answered = TcpStream::connect(("127.0.0.1", port))
            .ok()
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
                send_command(&mut s, &[b"PING"]).ok()?;
                let mut reply = [0u8; 7];
                s.read_exact(&mut reply).ok()?;
                Some(&reply == b"+PONG\r\n")
            });
        if answered == Some(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} on port {port} does not answer PING",
                server.name
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request to the admin API; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("admin API: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("admin API: {e}"))?;
    let mut response = String::new();
    s.read_to_string(&mut response)
        .map_err(|e| format!("admin API: {e}"))?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("admin API: bad response {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// (rewritten, all) entries the proxy has counted so far.
fn proxy_entry_counts(admin: u16) -> Result<(f64, f64), String> {
    let (_, text) = http(admin, "GET", "/metrics", "")?;
    let (mut rewritten, mut all) = (0.0, 0.0);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("pika_ttl_proxy_entries_total{") {
            let value: f64 = rest
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            all += value;
            if rest.contains("outcome=\"rewritten\"") {
                rewritten += value;
            }
        }
    }
    Ok((rewritten, all))
}

/// A replication link after the full sync: the socket, stream bytes read past the payload, and
/// the replication offset the stream starts at.
struct Synced {
    stream: TcpStream,
    rest: BytesMut,
    offset: u64,
}

/// Buffered reads for the handshake and the payload, which are line- and length-framed.
struct HandshakeReader<'a> {
    stream: &'a mut TcpStream,
    buf: BytesMut,
}

impl HandshakeReader<'_> {
    fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self
            .stream
            .read(&mut chunk)
            .map_err(|e| format!("replication handshake: {e}"))?;
        if n == 0 {
            return Err("replication handshake: connection closed".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The next non-empty line without its line end; masters send bare `\n` as a keepalive
    /// while they prepare the payload.
    fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(end + 1);
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                if !text.is_empty() {
                    return Ok(text);
                }
                continue;
            }
            self.fill()?;
        }
    }

    fn skip_payload(&mut self) -> Result<(), String> {
        let header = self.line()?;
        if let Some(mark) = header.strip_prefix("$EOF:") {
            let mark = mark.as_bytes().to_vec();
            if mark.len() != 40 {
                return Err(format!("bad EOF mark in {header:?}"));
            }
            loop {
                if let Some(at) = self.buf.windows(40).position(|w| w == mark.as_slice()) {
                    self.buf.advance(at + 40);
                    return Ok(());
                }
                // Only the last 39 bytes can still start the mark; the rest is payload.
                let keep = self.buf.len().min(39);
                self.buf.advance(self.buf.len() - keep);
                self.fill()?;
            }
        }
        let len: usize = header
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("expected the payload header, got {header:?}"))?;
        while self.buf.len() < len {
            self.fill()?;
        }
        self.buf.advance(len);
        Ok(())
    }
}

/// Performs a replica's handshake and full sync on `port`.
fn sync_as_replica(port: u16) -> Result<Synced, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect to {port}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let own_port = stream
        .local_addr()
        .map_err(|e| e.to_string())?
        .port()
        .to_string();
    let mut reader = HandshakeReader {
        stream: &mut stream.try_clone().map_err(|e| e.to_string())?,
        buf: BytesMut::new(),
    };
    for args in [
        &[&b"REPLCONF"[..], b"listening-port", own_port.as_bytes()][..],
        &[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"],
    ] {
        send_command(&mut stream, args)?;
        let reply = reader.line()?;
        if reply != "+OK" {
            return Err(format!("port {port}: {args:?} answered {reply:?}"));
        }
    }
    send_command(&mut stream, &[b"PSYNC", b"?", b"-1"])?;
    let reply = reader.line()?;
    let offset = match reply.split(' ').collect::<Vec<_>>()[..] {
        ["+FULLRESYNC", _id, off] => off.parse::<u64>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("port {port}: PSYNC answered {reply:?}"))?;
    reader.skip_payload()?;
    let rest = std::mem::take(&mut reader.buf);
    Ok(Synced {
        stream,
        rest,
        offset,
    })
}

/// Arrival times in ns since `base` (+1, so 0 means "not yet"), indexed by command sequence
/// number. Written by one reader thread, read by the main thread after the run.
type Arrivals = Arc<Vec<AtomicU64>>;

fn nanos_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// Which sequence number a propagated command stands for: `SET` (the master propagates SETEX as
/// `SET … PXAT`) is the first of pair `p`, `INCR`/`APPEND` the second.
fn sequence_of(args: &[bytes::Bytes]) -> Option<usize> {
    let name = args.first()?;
    let second = if name.eq_ignore_ascii_case(b"SET") || name.eq_ignore_ascii_case(b"SETEX") {
        0
    } else if name.eq_ignore_ascii_case(b"INCR") || name.eq_ignore_ascii_case(b"APPEND") {
        1
    } else {
        return None;
    };
    let pair: usize = std::str::from_utf8(args.get(1)?.strip_prefix(KEY_PREFIX)?)
        .ok()?
        .parse()
        .ok()?;
    Some(pair * 2 + second)
}

/// Reads a replication stream until `stop`, timestamping each command and acknowledging once a
/// second (the master drops a silent replica after `repl-timeout`; the proxy needs the acks to
/// translate offsets and track lag).
fn read_stream(
    mut link: Synced,
    base: Instant,
    arrivals: Arrivals,
    live: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<u64, String> {
    let mut parser = CommandParser::new(ParserLimits::master_stream());
    let mut buf = std::mem::take(&mut link.rest);
    let mut chunk = vec![0u8; 256 * 1024];
    let mut in_multi = false;
    let mut pending: Vec<usize> = Vec::new();
    let mut last_ack: Option<Instant> = None;
    link.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    // Bytes already buffered arrived no later than now.
    let mut now = nanos_since(base) + 1;
    while !stop.load(Ordering::Relaxed) {
        loop {
            let frame = match parser.parse(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Err(format!("malformed replication stream: {e}")),
            };
            let Frame::Command(cmd) = frame else { continue };
            if cmd.name_eq_ignore_case(b"MULTI") {
                in_multi = true;
            } else if cmd.name_eq_ignore_case(b"EXEC") || cmd.name_eq_ignore_case(b"DISCARD") {
                in_multi = false;
                for seq in pending.drain(..) {
                    record(&arrivals, seq, now);
                }
            } else if cmd.arg(1).is_some_and(|k| k.as_ref() == READY_KEY) {
                live.store(true, Ordering::Relaxed);
            } else if let Some(seq) = sequence_of(&cmd.args) {
                if in_multi {
                    pending.push(seq);
                } else {
                    record(&arrivals, seq, now);
                }
            }
        }
        // A diskless master ignores an ACK that arrives before it has noticed the end of the
        // transfer and then starts the stream only at the next one, so ACK often until the
        // stream is live.
        let every = if live.load(Ordering::Relaxed) {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(50)
        };
        if last_ack.is_none_or(|t| t.elapsed() >= every) {
            let offset = (link.offset + parser.consumed()).to_string();
            send_command(&mut link.stream, &[b"REPLCONF", b"ACK", offset.as_bytes()])?;
            last_ack = Some(Instant::now());
        }
        match link.stream.read(&mut chunk) {
            Ok(0) => return Err("the replication link was closed".into()),
            Ok(n) => {
                now = nanos_since(base) + 1;
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("replication link: {e}")),
        }
    }
    Ok(parser.consumed())
}

fn record(arrivals: &Arrivals, seq: usize, at: u64) {
    if let Some(slot) = arrivals.get(seq) {
        // The first arrival counts; a later duplicate would only be a stream bug.
        let _ = slot.compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// What the writer did during one case.
struct WriteReport {
    /// Send time of each batch (ns since base), batch `i` holding commands from
    /// `first + i * BATCH`.
    sent: Vec<u64>,
    /// Commands written.
    count: u64,
    /// Worst lateness of a batch against its schedule.
    max_behind: Duration,
    errors: u64,
    first_error: Option<String>,
}

/// Writes `count` commands starting at sequence `first` to the master at `rate` commands/s and
/// waits for all replies.
fn write_load(
    master: u16,
    base: Instant,
    first: u64,
    count: u64,
    rate: f64,
) -> Result<WriteReport, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", master)).map_err(|e| format!("writer connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut replies_in = stream.try_clone().map_err(|e| e.to_string())?;
    replies_in
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    // Replies are read concurrently so a full socket buffer never stalls the writer; all of
    // them (+OK, :n) are single lines, so counting line ends counts replies.
    let drain: JoinHandle<(u64, u64, Option<String>)> = thread::spawn(move || {
        let (mut replies, mut errors, mut first_error) = (0u64, 0u64, None);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut line_start = true;
        let mut line = Vec::new();
        while replies < count {
            let n = match replies_in.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &chunk[..n] {
                if line_start && b == b'-' {
                    errors += 1;
                    line.clear();
                }
                if errors > 0 && first_error.is_none() {
                    line.push(b);
                }
                line_start = b == b'\n';
                if line_start {
                    replies += 1;
                    if errors > 0 && first_error.is_none() {
                        first_error = Some(String::from_utf8_lossy(&line).trim_end().to_string());
                    }
                }
            }
        }
        (replies, errors, first_error)
    });

    let interval = Duration::from_secs_f64(BATCH as f64 / rate);
    let batches = count.div_ceil(BATCH);
    let mut sent = Vec::with_capacity(batches as usize);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut max_behind = Duration::ZERO;
    let start = Instant::now();
    for batch in 0..batches {
        let due = start + interval * batch as u32;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        } else {
            max_behind = max_behind.max(now - due);
        }
        out.clear();
        let from = first + batch * BATCH;
        let to = (from + BATCH).min(first + count);
        for seq in from..to {
            let pair = (seq / 2).to_string();
            let key = [KEY_PREFIX, pair.as_bytes()].concat();
            if seq % 2 == 0 {
                encode_command(&[&b"SETEX"[..], &key, b"3600", pair.as_bytes()], &mut out);
            } else if (seq / 2) % 2 == 0 {
                encode_command(&[&b"INCR"[..], &key], &mut out);
            } else {
                encode_command(&[&b"APPEND"[..], &key, b"x"], &mut out);
            }
        }
        sent.push(nanos_since(base));
        stream.write_all(&out).map_err(|e| format!("writer: {e}"))?;
    }
    let (replies, errors, first_error) = drain
        .join()
        .map_err(|_| "reply reader panicked".to_string())?;
    let _ = stream.shutdown(Shutdown::Both);
    if replies < count {
        return Err(format!("the master answered {replies} of {count} commands"));
    }
    Ok(WriteReport {
        sent,
        count,
        max_behind,
        errors,
        first_error,
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

/// The two readers, each with its thread.
struct Readers {
    direct: Arrivals,
    proxied: Arrivals,
    direct_live: Arc<AtomicBool>,
    proxied_live: Arc<AtomicBool>,
    threads: Vec<(&'static str, JoinHandle<Result<u64, String>>)>,
}

impl Readers {
    fn check(&mut self) -> Result<(), String> {
        if let Some(i) = self.threads.iter().position(|(_, t)| t.is_finished()) {
            let (name, thread) = self.threads.remove(i);
            let why = match thread.join() {
                Ok(Ok(_)) => "stopped".to_string(),
                Ok(Err(e)) => e,
                Err(_) => "panicked".to_string(),
            };
            return Err(format!("{name} reader: {why}"));
        }
        Ok(())
    }
}

struct CaseResult {
    line: String,
    p99_us: f64,
}

/// Everything a case runs against. Field order is drop order: the servers stop before the
/// temporary directory holding their files is removed.
struct Rig {
    master: Proc,
    proxy: Proc,
    master_port: u16,
    admin_port: u16,
    base: Instant,
    rate: f64,
    readers: Readers,
    stop: Arc<AtomicBool>,
    dir: tempfile::TempDir,
}

impl Rig {
    fn check(&mut self) -> Result<(), String> {
        self.readers.check()?;
        self.master.check_alive()?;
        self.proxy.check_alive()
    }

    /// Writes [`READY_KEY`] until both links have carried it, so the clock does not start
    /// while a link is still waiting to go online.
    fn wait_until_live(&mut self) -> Result<(), String> {
        let mut client = TcpStream::connect(("127.0.0.1", self.master_port))
            .map_err(|e| format!("connect to the master: {e}"))?;
        client
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + IO_TIMEOUT;
        while !(self.readers.direct_live.load(Ordering::Relaxed)
            && self.readers.proxied_live.load(Ordering::Relaxed))
        {
            self.check()?;
            if Instant::now() > deadline {
                return Err("the replication links did not go live within 10 s".into());
            }
            send_command(&mut client, &[b"SET", READY_KEY, b"1"])?;
            let mut reply = [0u8; 5];
            client
                .read_exact(&mut reply)
                .map_err(|e| format!("master: {e}"))?;
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Per-command times (ns since base) for looking at a run in detail.
    fn dump(&self, path: &str, report: &WriteReport, first: u64, count: u64) -> Result<(), String> {
        let mut out = String::from("seq,sent_ns,direct_ns,proxied_ns\n");
        for seq in first..first + count {
            let sent = report.sent[((seq - first) / BATCH) as usize];
            let d = self.readers.direct[seq as usize].load(Ordering::Relaxed);
            let p = self.readers.proxied[seq as usize].load(Ordering::Relaxed);
            out.push_str(&format!(
                "{seq},{sent},{},{}\n",
                d.saturating_sub(1),
                p.saturating_sub(1)
            ));
        }
        std::fs::write(path, out).map_err(|e| format!("{path}: {e}"))
    }

    /// One run at the fixed rate: commands `first .. first + count`.
    fn measure_case(&mut self, label: &str, first: u64, count: u64) -> Result<CaseResult, String> {
        let (rate, admin) = (self.rate, self.admin_port);
        let (rewritten0, all0) = proxy_entry_counts(admin)?;
        let report = write_load(self.master_port, self.base, first, count, rate)?;
        let last = (first + count - 1) as usize;
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.readers.direct[last].load(Ordering::Relaxed) == 0
            || self.readers.proxied[last].load(Ordering::Relaxed) == 0
        {
            self.check()?;
            if Instant::now() > deadline {
                eprintln!("warning: the last command did not arrive on both links within 10 s");
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        // The proxy folds its entry counts into the metrics once per processed read.
        thread::sleep(Duration::from_millis(200));
        let (rewritten1, all1) = proxy_entry_counts(admin)?;

        let mut added = Vec::with_capacity(count as usize);
        let mut direct_own = Vec::with_capacity(count as usize);
        let (mut missing_direct, mut missing_proxied) = (0u64, 0u64);
        for seq in first..first + count {
            let d = self.readers.direct[seq as usize].load(Ordering::Relaxed);
            let p = self.readers.proxied[seq as usize].load(Ordering::Relaxed);
            missing_direct += u64::from(d == 0);
            missing_proxied += u64::from(p == 0);
            if d == 0 || p == 0 {
                continue;
            }
            added.push(p as i64 - d as i64);
            let sent = report.sent[((seq - first) / BATCH) as usize];
            direct_own.push(d as i64 - 1 - sent as i64);
        }
        if let Ok(path) = std::env::var("ADDED_LATENCY_DUMP") {
            self.dump(&format!("{path}.{first}.csv"), &report, first, count)?;
        }
        if added.is_empty() {
            return Err(format!("{label}: no command arrived on both links"));
        }
        added.sort_unstable();
        direct_own.sort_unstable();
        let span = (report.sent[report.sent.len() - 1] - report.sent[0]) as f64 / 1e9
            + BATCH as f64 / rate;
        let achieved = report.count as f64 / span;
        let p99 = percentile(&added, 0.99);
        let line = format!(
            "added latency, {label}: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs \
         | {} of {} commands matched at {:.0} cmds/s, {:.0} of {:.0} entries rewritten \
         | direct link send→arrival p50 {:.1} µs, p99 {:.1} µs",
            percentile(&added, 0.5),
            p99,
            percentile(&added, 0.999),
            percentile(&added, 1.0),
            added.len(),
            report.count,
            achieved,
            rewritten1 - rewritten0,
            all1 - all0,
            percentile(&direct_own, 0.5),
            percentile(&direct_own, 0.99),
        );
        if missing_direct + missing_proxied > 0 {
            eprintln!(
                "warning: {label}: {missing_direct} commands never arrived on the direct link, \
             {missing_proxied} never on the proxied link"
            );
        }
        if report.errors > 0 {
            eprintln!(
                "warning: {label}: the master answered {} errors, first: {}",
                report.errors,
                report.first_error.as_deref().unwrap_or("?")
            );
        }
        if report.max_behind > Duration::from_millis(2) {
            eprintln!(
                "note: {label}: the writer fell up to {:.1} ms behind its schedule",
                report.max_behind.as_secs_f64() * 1e3
            );
        }
        Ok(CaseResult { line, p99_us: p99 })
    }
}

fn run() -> Result<(), String> {
    let seconds = env_number("ADDED_LATENCY_SECONDS", 5.0)?;
    let rate = env_number("ADDED_LATENCY_RATE", 100_000.0)?;
    let per_case = ((seconds * rate) as u64).div_ceil(BATCH) * BATCH;
    let proxy_bin = proxy_binary()?;

    let dir = tempfile::Builder::new()
        .prefix("pika-ttl-proxy-added-latency.")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let (m, p, a) = (free_port()?, free_port()?, free_port()?);

    let master_log = dir.path().join("master.log");
    let mut master = Proc::spawn(
        Command::new("redis-server")
            .args(["--port", &m.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&master_log)
            .args(["--repl-backlog-size", "256mb"])
            .args(["--client-output-buffer-limit", "replica 0 0 0"])
            // The full syncs of the two links would otherwise wait 5 s each for more replicas.
            .args(["--repl-diskless-sync-delay", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "redis-server (master)",
        master_log,
    )
    .map_err(|e| format!("{e} (apt-get install redis-server)"))?;
    wait_for_pong(m, &mut master)?;

    let proxy_log = dir.path().join("proxy.log");
    let proxy_stderr =
        std::fs::File::create(&proxy_log).map_err(|e| format!("{}: {e}", proxy_log.display()))?;
    let mut proxy = Proc::spawn(
        Command::new(&proxy_bin)
            .arg("redis")
            .args(["--listen", &format!("127.0.0.1:{p}")])
            .args(["--master", &format!("127.0.0.1:{m}")])
            .args(["--admin", &format!("127.0.0.1:{a}")])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(proxy_stderr),
        "pika-ttl-proxy",
        proxy_log,
    )?;
    wait_for_pong(p, &mut proxy)?;

    let slots = (2 * per_case) as usize;
    let new_arrivals = || -> Arrivals { Arc::new((0..slots).map(|_| AtomicU64::new(0)).collect()) };
    let mut rig = Rig {
        master,
        proxy,
        master_port: m,
        admin_port: a,
        base: Instant::now(),
        rate,
        readers: Readers {
            direct: new_arrivals(),
            proxied: new_arrivals(),
            direct_live: Arc::default(),
            proxied_live: Arc::default(),
            threads: Vec::new(),
        },
        stop: Arc::new(AtomicBool::new(false)),
        dir,
    };
    // One full sync after the other: the master serves one diskless transfer at a time.
    for (name, port, arrivals, live) in [
        (
            "direct",
            m,
            rig.readers.direct.clone(),
            rig.readers.direct_live.clone(),
        ),
        (
            "proxied",
            p,
            rig.readers.proxied.clone(),
            rig.readers.proxied_live.clone(),
        ),
    ] {
        let link = sync_as_replica(port).map_err(|e| format!("{name} link: {e}"))?;
        let (stop, base) = (rig.stop.clone(), rig.base);
        rig.readers.threads.push((
            name,
            thread::spawn(move || read_stream(link, base, arrivals, live, stop)),
        ));
    }
    rig.wait_until_live()?;

    println!(
        "pika-ttl-proxy added latency, master → replica (Redis relay; redis-server, the proxy and \
         both replication readers on loopback, {} cores): {rate:.0} cmds/s for {seconds} s per \
         case, SETEX + INCR/APPEND on volatile keys",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    let rewrite = rig.measure_case("rewriting on", 0, per_case)?;
    println!("{}", rewrite.line);

    for family in FAMILIES {
        let (status, body) = http(
            a,
            "PUT",
            &format!("/families/{family}"),
            r#"{"enabled":false}"#,
        )?;
        if status != 200 {
            return Err(format!("PUT /families/{family}: {status} {body}"));
        }
    }
    let passthrough = rig.measure_case("every family off (pass-through)", per_case, per_case)?;
    println!("{}", passthrough.line);
    println!(
        "added latency target (p99 ≤ {TARGET_P99_US:.0} µs at 100 k cmds/s, rewriting on): {}",
        if rewrite.p99_us <= TARGET_P99_US {
            "met"
        } else {
            "NOT met"
        }
    );

    rig.stop.store(true, Ordering::Relaxed);
    for (_, t) in rig.readers.threads.drain(..) {
        let _ = t.join();
    }
    let Rig {
        master, proxy, dir, ..
    } = rig;
    drop(proxy);
    drop(master);
    dir.close()
        .map_err(|e| format!("removing the temp dir: {e}"))
}
