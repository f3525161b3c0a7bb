//! Added latency of the Redis relay, master → replica, at a fixed write rate, on real servers,
//! with a plain TCP forwarder measured alongside as the baseline for "one more userspace hop".
//!
//! What it measures: for every write the master propagates, the time it reaches a replica
//! connected through `pika-ttl-proxy` minus the time it reaches a replica connected directly to
//! the master; and, in the same run, the time it reaches a replica connected through a forwarder
//! that copies bytes both ways without parsing them, minus the direct arrival. All three
//! "replicas" are raw replication readers inside this process, so every arrival time comes from
//! the same clock (`Instant`). The forwarder's added latency is what any extra userspace hop
//! costs on this machine (one more loopback connection, a wake-up, a copy through a process);
//! proxy − forwarder is what the proxy's own work (parsing, rewriting, offset bookkeeping) adds
//! on top of that. The forwarder runs on the proxy's runtime flavour (multi-thread tokio,
//! default worker count, one task per connection) with TCP_NODELAY on both sockets and the
//! proxy's read sizes, so the hop itself is alike.
//!
//! How:
//! 1. starts `redis-server` (the master), the release build of the proxy
//!    (`target/release/pika-ttl-proxy redis ...`) and this bench binary again as the forwarder
//!    (`ADDED_LATENCY_FORWARD=<listen addr>,<upstream addr>` turns `main` into the forwarder),
//!    proxy and forwarder both pointed at the master, on free loopback ports, each in a guard
//!    that kills it when dropped, and a temporary directory for their files;
//! 2. opens three replication links, one on the master, one on the proxy and one on the
//!    forwarder (`REPLCONF`, `PSYNC ? -1`, the RDB payload in either framing), in that order,
//!    then reads each command stream, timestamping every read and acknowledging the offset
//!    once a second as a replica does, and waits until a marker write has come through all
//!    three links (all streams are live);
//! 3. writes to the master at a fixed rate (default 100,000 commands/s: 100 pipelined commands
//!    per millisecond on an absolute schedule) pairs `SETEX lat:<p> 3600 <p>` followed by
//!    `INCR lat:<p>` (even `p`) or `APPEND lat:<p> x` (odd `p`). Every key carries a TTL, so the
//!    proxy rewrites the second command of each pair (about half of all commands) into a
//!    `MULTI` … `EXEC` block; the key names every command in all streams, and a command inside a
//!    `MULTI` counts as arrived when its `EXEC` arrives (a replica applies nothing earlier). The
//!    three links carry the same load at the same moments, so the host's noise hits them alike;
//! 4. after the run (default 5 s, `ADDED_LATENCY_SECONDS`), prints, over every command seen on
//!    all three links: p50 / p99 / p99.9 / max of the added latency through the proxy, the
//!    achieved write rate and, for context, the direct link's own send → arrival latency; the
//!    same percentiles through the forwarder; and proxy − forwarder at p50 / p99 / p99.9, a
//!    difference of percentiles (not a percentile of per-command differences); and, from the
//!    proxy's own `pika_ttl_proxy_hold_seconds` histogram over the case, how long the proxy held
//!    each read (arrival of the read → its output written to the replica's socket: the part of
//!    the added latency that is the proxy's, without the extra hop through the kernel and the
//!    scheduler) and the share of reads held at most 0.2 ms. Then it switches
//!    every family off through the admin API and repeats the run (pass-through), so the cost of
//!    rewriting can be told apart from the cost of the proxy's hop.
//!
//! Caveats: the master writes to its replicas one after another in each event-loop pass, in an
//! order set by when they attached (Redis 7 queues a client for writing at the head of its
//! pending list, so the last replica to attach is written first, the direct link last), so each
//! link's arrival carries a small fixed offset of a write call or so; the forwarder's link
//! attaches last, which favours the forwarder, if anything. The forwarder is one more process on
//! the same cores, so every figure includes its share of the contention. The readers are threads
//! on those cores too: when the direct reader is scheduled late, a command reaches a hop's
//! reader first, so on a small loaded machine a hop's low percentiles can come out negative.
//! The difference of percentiles is not the distribution of per-command differences;
//! `ADDED_LATENCY_DUMP` gives the raw times for that.
//!
//! Run with `cargo build --release --locked && cargo bench --bench added_latency` (or
//! `scripts/bench.sh`). Environment: `ADDED_LATENCY_SECONDS` (run length per case),
//! `ADDED_LATENCY_RATE` (commands/s, default 100000), `PIKA_TTL_PROXY_BIN` (proxy binary),
//! `ADDED_LATENCY_DUMP=<prefix>` (write every command's send time and its arrival times on the
//! direct, proxied and forwarded links to `<prefix>.<first seq>.csv`, 0 meaning "never
//! arrived"), `ADDED_LATENCY_RT=<priority>` (run the whole bench under `chrt -f <priority>`:
//! the master, the proxy, the forwarder and the readers all inherit the same real-time FIFO
//! priority, so none of them waits behind the rest of the host for a core; every hop gets the
//! same treatment, which takes most of the scheduler's noise out of the comparison; needs root
//! and `chrt` from util-linux), `ADDED_LATENCY_HOP_CPU=<n>` (start the proxy and the forwarder
//! under `taskset -c <n>`; run the bench itself under `taskset -c <other>` so the master, the
//! readers and the writer stay off that core).
//! Needs `redis-server` on the PATH. The target is an added p99 of at most 0.2 ms at 100 k/s.

#[path = "../tests/support/forwarder.rs"]
mod forwarder;

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
/// `<listen addr>,<upstream addr>`: set, it makes this binary the baseline forwarder.
const FORWARD_ENV: &str = "ADDED_LATENCY_FORWARD";
/// Asks for the bench to run at this real-time FIFO priority.
const RT_ENV: &str = "ADDED_LATENCY_RT";
/// Set in the re-run under `chrt`, so it does not re-run itself again.
const RT_ACTIVE_ENV: &str = "ADDED_LATENCY_RT_ACTIVE";

fn main() {
    if let Some(status) = rerun_under_chrt() {
        std::process::exit(status);
    }
    let (who, result) = match std::env::var(FORWARD_ENV) {
        Ok(spec) => ("added_latency forwarder", forward(&spec)),
        Err(_) => ("added_latency", run()),
    };
    if let Err(e) = result {
        eprintln!("{who}: {e}");
        std::process::exit(1);
    }
}

/// With `ADDED_LATENCY_RT` set (and not yet applied), runs this same bench again under
/// `chrt -f <priority>` and returns its exit status; every process and thread it starts
/// inherits the policy.
fn rerun_under_chrt() -> Option<i32> {
    let priority = std::env::var(RT_ENV).ok()?;
    if std::env::var_os(RT_ACTIVE_ENV).is_some() || std::env::var_os(FORWARD_ENV).is_some() {
        return None;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("added_latency: {RT_ENV}: cannot find this binary: {e}");
            return Some(1);
        }
    };
    let status = Command::new("chrt")
        .args(["-f", priority.trim()])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(RT_ACTIVE_ENV, "1")
        .status();
    match status {
        Ok(status) => Some(status.code().unwrap_or(1)),
        Err(e) => {
            eprintln!("added_latency: {RT_ENV}: cannot run chrt: {e}");
            Some(1)
        }
    }
}

/// The baseline hop ([`forwarder`]) for one `<listen addr>,<upstream addr>` pair.
fn forward(spec: &str) -> Result<(), String> {
    let pairs = forwarder::parse_pairs(spec).map_err(|e| format!("{FORWARD_ENV}: {e}"))?;
    forwarder::forward(&pairs)
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

/// `ADDED_LATENCY_HOP_CPU=<n>`: the proxy and the forwarder run under `taskset -c <n>`, so with
/// this process pinned elsewhere (`taskset -c <m> cargo bench …`, which the master, the readers
/// and the writer inherit) the hop under test has a core of its own.
const HOP_CPU_ENV: &str = "ADDED_LATENCY_HOP_CPU";

/// A command for one of the two hops, pinned when [`HOP_CPU_ENV`] says so.
fn hop_command(program: &std::path::Path) -> Command {
    match std::env::var(HOP_CPU_ENV) {
        Ok(cpu) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", cpu.trim()]).arg(program);
            cmd
        }
        Err(_) => Command::new(program),
    }
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

/// What the proxy's metrics say so far.
struct ProxyCounts {
    rewritten: f64,
    all: f64,
    /// `pika_ttl_proxy_hold_seconds` buckets: (upper bound in seconds, cumulative count).
    hold: Vec<(f64, f64)>,
}

fn proxy_counts(admin: u16) -> Result<ProxyCounts, String> {
    let (_, text) = http(admin, "GET", "/metrics", "")?;
    let mut counts = ProxyCounts {
        rewritten: 0.0,
        all: 0.0,
        hold: Vec::new(),
    };
    let value = |rest: &str| -> f64 {
        rest.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("pika_ttl_proxy_entries_total{") {
            counts.all += value(rest);
            if rest.contains("outcome=\"rewritten\"") {
                counts.rewritten += value(rest);
            }
        } else if let Some(rest) = line.strip_prefix("pika_ttl_proxy_hold_seconds_bucket{le=\"") {
            let bound = rest.split('"').next().unwrap_or("");
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().unwrap_or(f64::INFINITY)
            };
            counts.hold.push((bound, value(rest)));
        }
    }
    Ok(counts)
}

/// The proxy's own hold-time percentiles over a case, from the difference of its histogram's
/// buckets before and after: each figure is the bucket bound the percentile falls under.
fn hold_line(label: &str, before: &[(f64, f64)], after: &[(f64, f64)]) -> String {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(bound, n)| {
            let earlier = before
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, n)| *n);
            (bound, n - earlier)
        })
        .collect();
    let total = delta.last().map_or(0.0, |(_, n)| *n);
    if total <= 0.0 {
        return format!("proxy hold time (its own histogram), {label}: no reads recorded");
    }
    let under = |q: f64| {
        delta
            .iter()
            .find(|(_, n)| *n >= q * total)
            .map_or("?".to_string(), |(bound, _)| {
                if bound.is_finite() {
                    format!("≤ {:.0} µs", bound * 1e6)
                } else {
                    "> 1 s".to_string()
                }
            })
    };
    let within_budget = delta
        .iter()
        .find(|(bound, _)| (*bound - 2e-4).abs() < 1e-12)
        .map_or(0.0, |(_, n)| *n);
    format!(
        "proxy hold time (its own histogram: read from the master → output written to the \
         replica's socket), {label}: p50 {}, p99 {}, p99.9 {} | {:.2} % of {total:.0} reads \
         within 200 µs",
        under(0.5),
        under(0.99),
        under(0.999),
        100.0 * within_budget / total,
    )
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

/// One replication link's reader: arrival times and whether the stream is live yet.
#[derive(Clone)]
struct Link {
    arrivals: Arrivals,
    live: Arc<AtomicBool>,
}

impl Link {
    fn new(slots: usize) -> Link {
        Link {
            arrivals: Arc::new((0..slots).map(|_| AtomicU64::new(0)).collect()),
            live: Arc::default(),
        }
    }

    /// Arrival time of command `seq` (ns since base, +1), 0 if it has not arrived.
    fn at(&self, seq: u64) -> u64 {
        self.arrivals
            .get(seq as usize)
            .map_or(0, |slot| slot.load(Ordering::Relaxed))
    }

    fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }
}

/// The three readers (on the master, on the proxy, on the forwarder), each with its thread.
struct Readers {
    direct: Link,
    proxied: Link,
    forwarded: Link,
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

    fn all(&self) -> [&Link; 3] {
        [&self.direct, &self.proxied, &self.forwarded]
    }
}

struct CaseResult {
    lines: [String; 4],
    p99_us: f64,
}

/// Everything a case runs against. Field order is drop order: the servers stop before the
/// temporary directory holding their files is removed.
struct Rig {
    forwarder: Proc,
    proxy: Proc,
    master: Proc,
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
        self.proxy.check_alive()?;
        self.forwarder.check_alive()
    }

    /// Writes [`READY_KEY`] until every link has carried it, so the clock does not start
    /// while a link is still waiting to go online.
    fn wait_until_live(&mut self) -> Result<(), String> {
        let mut client = TcpStream::connect(("127.0.0.1", self.master_port))
            .map_err(|e| format!("connect to the master: {e}"))?;
        client
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + IO_TIMEOUT;
        while !self.readers.all().iter().all(|link| link.is_live()) {
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
        let mut out = String::from("seq,sent_ns,direct_ns,proxied_ns,forwarded_ns\n");
        for seq in first..first + count {
            let sent = report.sent[((seq - first) / BATCH) as usize];
            let [d, p, f] = self.readers.all().map(|link| link.at(seq));
            out.push_str(&format!(
                "{seq},{sent},{},{},{}\n",
                d.saturating_sub(1),
                p.saturating_sub(1),
                f.saturating_sub(1)
            ));
        }
        std::fs::write(path, out).map_err(|e| format!("{path}: {e}"))
    }

    /// One run at the fixed rate: commands `first .. first + count`.
    fn measure_case(&mut self, label: &str, first: u64, count: u64) -> Result<CaseResult, String> {
        let (rate, admin) = (self.rate, self.admin_port);
        let counts0 = proxy_counts(admin)?;
        let report = write_load(self.master_port, self.base, first, count, rate)?;
        let last = first + count - 1;
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.readers.all().iter().any(|link| link.at(last) == 0) {
            self.check()?;
            if Instant::now() > deadline {
                eprintln!("warning: the last command did not arrive on every link within 10 s");
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        // The proxy folds its entry counts into the metrics once per processed read.
        thread::sleep(Duration::from_millis(200));
        let counts1 = proxy_counts(admin)?;

        // Only commands seen on all three links count, so both hops are measured over the same
        // commands.
        let mut proxy_added = Vec::with_capacity(count as usize);
        let mut forwarder_added = Vec::with_capacity(count as usize);
        let mut direct_own = Vec::with_capacity(count as usize);
        let mut missing = [0u64; 3];
        for seq in first..first + count {
            let times = self.readers.all().map(|link| link.at(seq));
            for (m, t) in missing.iter_mut().zip(times) {
                *m += u64::from(t == 0);
            }
            let [d, p, f] = times;
            if d == 0 || p == 0 || f == 0 {
                continue;
            }
            proxy_added.push(p as i64 - d as i64);
            forwarder_added.push(f as i64 - d as i64);
            let sent = report.sent[((seq - first) / BATCH) as usize];
            direct_own.push(d as i64 - 1 - sent as i64);
        }
        if let Ok(path) = std::env::var("ADDED_LATENCY_DUMP") {
            self.dump(&format!("{path}.{first}.csv"), &report, first, count)?;
        }
        if proxy_added.is_empty() {
            return Err(format!("{label}: no command arrived on all three links"));
        }
        proxy_added.sort_unstable();
        forwarder_added.sort_unstable();
        direct_own.sort_unstable();
        let span = (report.sent[report.sent.len() - 1] - report.sent[0]) as f64 / 1e9
            + BATCH as f64 / rate;
        let achieved = report.count as f64 / span;
        let [p50, p99, p999] = [0.5, 0.99, 0.999].map(|q| percentile(&proxy_added, q));
        let [f50, f99, f999] = [0.5, 0.99, 0.999].map(|q| percentile(&forwarder_added, q));
        let proxy_line = format!(
            "added latency, {label}: p50 {p50:.1} µs, p99 {p99:.1} µs, p99.9 {p999:.1} µs, max {:.1} µs \
         | {} of {} commands matched at {:.0} cmds/s, {:.0} of {:.0} entries rewritten \
         | direct link send→arrival p50 {:.1} µs, p99 {:.1} µs",
            percentile(&proxy_added, 1.0),
            proxy_added.len(),
            report.count,
            achieved,
            counts1.rewritten - counts0.rewritten,
            counts1.all - counts0.all,
            percentile(&direct_own, 0.5),
            percentile(&direct_own, 0.99),
        );
        let forwarder_line = format!(
            "added latency via forwarder, {label}: p50 {f50:.1} µs, p99 {f99:.1} µs, \
             p99.9 {f999:.1} µs, max {:.1} µs | same commands, same run",
            percentile(&forwarder_added, 1.0),
        );
        let difference_line = format!(
            "added latency difference proxy − forwarder, {label}: p50 {:.1} µs, p99 {:.1} µs, \
             p99.9 {:.1} µs (difference of the percentiles)",
            p50 - f50,
            p99 - f99,
            p999 - f999,
        );
        if missing.iter().any(|&m| m > 0) {
            let [d, p, f] = missing;
            eprintln!(
                "warning: {label}: commands that never arrived: {d} on the direct link, \
             {p} on the proxied link, {f} on the forwarded link"
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
        Ok(CaseResult {
            lines: [
                proxy_line,
                forwarder_line,
                difference_line,
                hold_line(label, &counts0.hold, &counts1.hold),
            ],
            p99_us: p99,
        })
    }
}

fn run() -> Result<(), String> {
    let seconds = env_number("ADDED_LATENCY_SECONDS", 5.0)?;
    let rate = env_number("ADDED_LATENCY_RATE", 100_000.0)?;
    let per_case = ((seconds * rate) as u64).div_ceil(BATCH) * BATCH;
    let proxy_bin = proxy_binary()?;
    let own_bin = std::env::current_exe().map_err(|e| format!("this bench's own path: {e}"))?;

    let dir = tempfile::Builder::new()
        .prefix("pika-ttl-proxy-added-latency.")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let (m, p, a, f) = (free_port()?, free_port()?, free_port()?, free_port()?);

    let master_log = dir.path().join("master.log");
    if let Ok(cpu) = std::env::var(HOP_CPU_ENV) {
        println!("proxy and forwarder pinned to CPU {cpu} (taskset); everything else runs where this process may");
    }
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
            // The full syncs of the links would otherwise wait 5 s each for more replicas.
            .args(["--repl-diskless-sync-delay", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "redis-server (master)",
        master_log,
    )
    .map_err(|e| format!("{e} (apt-get install redis-server)"))?;
    wait_for_pong(m, &mut master)?;

    let log_file = |name: &str| -> Result<(PathBuf, std::fs::File), String> {
        let path = dir.path().join(name);
        let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((path, file))
    };
    let (proxy_log, proxy_stderr) = log_file("proxy.log")?;
    let mut proxy = Proc::spawn(
        hop_command(&proxy_bin)
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

    let (forwarder_log, forwarder_stderr) = log_file("forwarder.log")?;
    let mut forwarder = Proc::spawn(
        hop_command(&own_bin)
            .env(FORWARD_ENV, format!("127.0.0.1:{f},127.0.0.1:{m}"))
            .stdout(Stdio::null())
            .stderr(forwarder_stderr),
        "forwarder",
        forwarder_log,
    )?;
    wait_for_pong(f, &mut forwarder)?;

    let slots = (2 * per_case) as usize;
    let mut rig = Rig {
        forwarder,
        proxy,
        master,
        master_port: m,
        admin_port: a,
        base: Instant::now(),
        rate,
        readers: Readers {
            direct: Link::new(slots),
            proxied: Link::new(slots),
            forwarded: Link::new(slots),
            threads: Vec::new(),
        },
        stop: Arc::new(AtomicBool::new(false)),
        dir,
    };
    // One full sync after the other: the master serves one diskless transfer at a time. The
    // order sets the master's write order (see the module comment).
    for (name, port, link) in [
        ("direct", m, rig.readers.direct.clone()),
        ("proxied", p, rig.readers.proxied.clone()),
        ("forwarded", f, rig.readers.forwarded.clone()),
    ] {
        let synced = sync_as_replica(port).map_err(|e| format!("{name} link: {e}"))?;
        let (stop, base) = (rig.stop.clone(), rig.base);
        rig.readers.threads.push((
            name,
            thread::spawn(move || read_stream(synced, base, link.arrivals, link.live, stop)),
        ));
    }
    rig.wait_until_live()?;

    println!(
        "pika-ttl-proxy added latency, master → replica (Redis relay; redis-server, the proxy, a \
         plain forwarder as baseline and three replication readers on loopback, {} cores): \
         {rate:.0} cmds/s for {seconds} s per case, SETEX + INCR/APPEND on volatile keys{}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        match std::env::var(RT_ENV) {
            Ok(priority) if std::env::var_os(RT_ACTIVE_ENV).is_some() => format!(
                ", every process at real-time priority {} (SCHED_FIFO)",
                priority.trim()
            ),
            _ => String::new(),
        }
    );
    let rewrite = rig.measure_case("rewriting on", 0, per_case)?;
    for line in &rewrite.lines {
        println!("{line}");
    }

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
    for line in &passthrough.lines {
        println!("{line}");
    }
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
        forwarder,
        proxy,
        master,
        dir,
        ..
    } = rig;
    drop(forwarder);
    drop(proxy);
    drop(master);
    dir.close()
        .map_err(|e| format!("removing the temp dir: {e}"))
}
