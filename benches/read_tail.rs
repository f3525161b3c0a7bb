//! The tail of the Redis relay's time per read, on the added-latency load, in one process.
//!
//! `benches/added_latency.rs` measures the latency a replica sees through the proxy, but on a
//! small machine the host's noise swamps anything the proxy's own code does to the tail. This
//! bench takes the network and the other processes away: it feeds the same load through the
//! stream path a replica session runs ([`StreamRelay::process_up_to`]: RESP parse, engine, expiry
//! table, output queue, offset map, entry tally; then the session's per-read bookkeeping and a
//! vectored drain into `tokio::io::sink()`) and times every read on its own.
//!
//! Load: `SETEX lat:N 3600 N`, then `INCR lat:N` (even N) or `APPEND lat:N x` (odd N), in reads
//! of 100 commands (one read per millisecond at 100 k commands/s), `READ_TAIL_PAIRS` pairs
//! (default 400,000), no ACKs (the offset map is capped as the session caps it). Cases, each run
//! three times in a fresh link:
//! - `fresh keys`: every key new, so the table grows to `READ_TAIL_PAIRS` keys (as in a
//!   long-running proxy);
//! - `cached keys`: the same commands on 10,000 keys, a table that stays in cache: the baseline
//!   in the same process, so the difference is what the growing table costs;
//! - both with rewriting on and with every family off.
//!
//! Printed per run: p50 / p90 / p99 / p99.9 / max time per read and the share of reads over
//! 0.2 ms (the added-latency budget). With `READ_TAIL_COLD=1`, 8 MiB are touched between reads,
//! as the master and the replicas sharing the cores evict the proxy's caches.
//!
//! Run with `cargo bench --bench read_tail`.

use bytes::{Bytes, BytesMut};
use pika_ttl_proxy::engine::{Dialect, Policy};
use pika_ttl_proxy::families::FamilySwitches;
use pika_ttl_proxy::redis_relay::offset_map::OffsetMap;
use pika_ttl_proxy::redis_relay::outq::OutQueue;
use pika_ttl_proxy::redis_relay::stats::entry_tally;
use pika_ttl_proxy::redis_relay::stream::StreamRelay;
use pika_ttl_proxy::resp::encode_command;
use pika_ttl_proxy::table::{Baseline, ExpiryTable};
use std::hint::black_box;
use std::time::Instant;

const COMMANDS_PER_READ: usize = 100;
const CACHED_KEYS: usize = 10_000;
/// The session's bound on the offset map (`MAX_MAP_POINTS` in session.rs).
const MAX_MAP_POINTS: usize = 1 << 16;
const NOW_MS: i64 = 1_795_469_984_000;
const BUDGET_NS: u64 = 200_000;

/// The load, cut into reads of `COMMANDS_PER_READ` commands, keys cycling over `keys`.
fn reads(pairs: usize, keys: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut read = BytesMut::new();
    for n in 0..pairs {
        let key = format!("lat:{}", n % keys);
        let value = n.to_string();
        encode_command(
            &[
                b"SETEX".as_slice(),
                key.as_bytes(),
                b"3600",
                value.as_bytes(),
            ],
            &mut read,
        );
        if n % 2 == 0 {
            encode_command(&[b"INCR".as_slice(), key.as_bytes()], &mut read);
        } else {
            encode_command(&[b"APPEND".as_slice(), key.as_bytes(), b"x"], &mut read);
        }
        if (n + 1) % (COMMANDS_PER_READ / 2) == 0 {
            out.push(read.split().freeze());
        }
    }
    if !read.is_empty() {
        out.push(read.freeze());
    }
    out
}

/// Every read through a fresh link; returns each read's time in ns.
fn run(reads: &[Bytes], rewriting: bool, cold: bool) -> Vec<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut relay = StreamRelay::new(0, 0, 0);
    let mut map = OffsetMap::new(0, 0, 0);
    let mut out = OutQueue::new();
    let mut tally = entry_tally();
    let mut up = BytesMut::new();
    let table = ExpiryTable::new(Baseline::NotVolatile);
    let mut policy = Policy::new(Dialect::Redis);
    if !rewriting {
        policy.families = FamilySwitches::all_off();
    }
    let mut evict = vec![0u8; if cold { 8 << 20 } else { 0 }];
    let mut times = Vec::with_capacity(reads.len());
    rt.block_on(async {
        let mut sink = tokio::io::sink();
        for (i, read) in reads.iter().enumerate() {
            for byte in evict.iter_mut().step_by(64) {
                *byte = byte.wrapping_add(i as u8);
            }
            let started = Instant::now();
            up.reserve(relay.room_for_next_read(&up));
            up.extend_from_slice(read);
            let risks = relay
                .process_up_to(
                    &mut up,
                    usize::MAX,
                    NOW_MS,
                    &table,
                    &policy,
                    &mut map,
                    &mut out,
                    &mut tally,
                    0,
                )
                .expect("valid stream");
            black_box(risks);
            map.cap(MAX_MAP_POINTS);
            tally.flush(started.elapsed().as_secs_f64());
            StreamRelay::release_spent_room(&mut up);
            while !out.is_empty() {
                out.write_some(&mut sink).await.expect("sink write");
            }
            times.push(started.elapsed().as_nanos() as u64);
        }
    });
    black_box(&evict);
    times
}

fn summary(mut times: Vec<u64>) -> String {
    let over = times.iter().filter(|&&t| t > BUDGET_NS).count();
    let share = 100.0 * over as f64 / times.len() as f64;
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize] as f64 / 1e3;
    format!(
        "p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs | {share:.2} % of {} reads over 200 µs",
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0),
        times.len(),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let pairs = std::env::var("READ_TAIL_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000usize)
        .max(COMMANDS_PER_READ);
    let cold = std::env::var("READ_TAIL_COLD").as_deref() == Ok("1");
    let fresh = reads(pairs, pairs);
    let cached = reads(pairs, CACHED_KEYS);
    println!(
        "read_tail: {pairs} SETEX + INCR/APPEND pairs in reads of {COMMANDS_PER_READ} commands, time per read{}",
        if cold { ", caches evicted between reads" } else { "" }
    );
    for rewriting in [true, false] {
        let mode = if rewriting {
            "rewriting on"
        } else {
            "every family off"
        };
        for round in 1..=3 {
            for (keys, input) in [("fresh keys", &fresh), ("cached keys", &cached)] {
                println!(
                    "{mode}, {keys}, run {round}: {}",
                    summary(run(input, rewriting, cold))
                );
            }
        }
    }
}
