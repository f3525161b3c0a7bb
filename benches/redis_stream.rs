//! The Redis relay's whole per-entry stream path, as a replica session runs it: every socket read
//! is appended to the upstream buffer (after making the room `session.rs` makes:
//! [`StreamRelay::room_for_next_read`]; a read fills at most that room), parsed and decided
//! by [`StreamRelay::process_up_to`] (RESP parse, engine, expiry table, [`OutQueue`], offset map,
//! entry tally), followed by the session's per-read bookkeeping (map cap, tally flush), and the
//! queue is then drained with [`OutQueue::write_some`] (vectored writes) into
//! `tokio::io::sink()` on a current-thread runtime, standing in for a replica socket that always
//! has room. Input is cut into fixed-size reads regardless of entry boundaries, as a socket
//! delivers it. The link (parser, map, table, queue) lives across iterations like a long-running
//! session.
//!
//! Group `redis_stream_small` (16 KiB reads, 10,000 entries per iteration, per entry):
//! - `copy_baseline`: copying the same input bytes, read by read, into an output buffer (the
//!   floor for touching every byte once);
//! - `pass_through_set`: `SET key:N value` on keys without TTL (table baseline "not volatile",
//!   as after a scanned full sync), all forwarded unchanged;
//! - `rewrite_setex_incr`: `SETEX key:N 3600 1` / `INCR key:N` pairs, so every INCR is rewritten
//!   (MULTI-wrapped with a `PEXPIREAT`).
//!
//! Group `redis_stream_growing` (per entry): the added-latency bench's load, as a live proxy sees
//! it at 100 k commands/s: `SETEX lat:N 3600 N` then `INCR lat:N` (even N) or `APPEND lat:N x`
//! (odd N), every key new, in reads of about 100 commands; every second command is rewritten.
//! - `fresh_keys`: each iteration starts a new link and its table grows to 400,000 keys, so
//!   table lookups and inserts miss the CPU caches as they do in a long-running proxy;
//! - `hot_keys`: the same commands with the keys cycling over 10,000, a table that stays in
//!   cache (what `redis_stream_small` measures).
//!
//! Group `redis_stream_large` (bytes/s): `SET big:N <value>` on keys without TTL, 16 values of
//! 1 MiB or one of 64 MiB per iteration, in 16 KiB and 64 KiB reads; `copy_baseline` as above
//! next to each `relay`. Before measuring, each case is run once with a counting allocator
//! switched on and prints the most memory the path held: live heap bytes allocated during the run
//! (the input itself excluded), the upstream buffer's capacity and the queued output.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pika_ttl_proxy::engine::{Dialect, Policy};
use pika_ttl_proxy::redis_relay::offset_map::OffsetMap;
use pika_ttl_proxy::redis_relay::outq::OutQueue;
use pika_ttl_proxy::redis_relay::stats::{entry_tally, EntryTally};
use pika_ttl_proxy::redis_relay::stream::StreamRelay;
use pika_ttl_proxy::resp::encode_command;
use pika_ttl_proxy::table::{Baseline, ExpiryTable};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::Instant;
use tokio::io::AsyncWrite;
use tokio::runtime::Runtime;

/// Counts live heap bytes and their peak, only while `MEASURING` is set (outside the timed
/// loops, which then pay one relaxed load per allocation).
struct Counting;

static MEASURING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static PEAK_BYTES: AtomicIsize = AtomicIsize::new(0);

fn grew(delta: isize) {
    let now = LIVE_BYTES.fetch_add(delta, Ordering::Relaxed) + delta;
    PEAK_BYTES.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if MEASURING.load(Ordering::Relaxed) {
            grew(layout.size() as isize);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if MEASURING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if MEASURING.load(Ordering::Relaxed) {
            grew(new_size as isize - layout.size() as isize);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NOW_MS: i64 = 1_795_469_984_000;
const KEYS: usize = 10_000;
const SMALL_ENTRIES: usize = 10_000;
const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// The cap `session.rs` applies to the offset map after every processed read (`MAX_MAP_POINTS`).
const MAX_MAP_POINTS: usize = 1 << 16;

fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    let mut buf = BytesMut::new();
    encode_command(args, &mut buf);
    out.extend_from_slice(&buf);
}

/// `SET key:N value` on `SMALL_ENTRIES` keys cycling through `KEYS`.
fn pass_through_input() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..SMALL_ENTRIES {
        let key = format!("key:{}", i % KEYS);
        encode(&[b"SET", key.as_bytes(), b"value"], &mut out);
    }
    out
}

/// `SETEX key:N 3600 1` / `INCR key:N` pairs, `SMALL_ENTRIES` entries in all.
fn rewrite_input() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..SMALL_ENTRIES / 2 {
        let key = format!("key:{}", i % KEYS);
        encode(&[b"SETEX", key.as_bytes(), b"3600", b"1"], &mut out);
        encode(&[b"INCR", key.as_bytes()], &mut out);
    }
    out
}

/// Pairs of the added-latency bench: `SETEX lat:K 3600 N` then `INCR lat:K` (even N) or
/// `APPEND lat:K x` (odd N), for N below `pairs`, with K = N mod `keys`.
fn latency_bench_input(pairs: usize, keys: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for n in 0..pairs {
        let key = format!("lat:{}", n % keys);
        let value = n.to_string();
        encode(
            &[b"SETEX", key.as_bytes(), b"3600", value.as_bytes()],
            &mut out,
        );
        if n % 2 == 0 {
            encode(&[b"INCR", key.as_bytes()], &mut out);
        } else {
            encode(&[b"APPEND", key.as_bytes(), b"x"], &mut out);
        }
    }
    out
}

/// `SET big:N <value_len bytes>`, `count` times.
fn large_input(value_len: usize, count: usize) -> Vec<u8> {
    let value: Vec<u8> = (0..value_len).map(|i| b'a' + (i % 26) as u8).collect();
    let mut out = Vec::with_capacity(count * (value_len + 64));
    for i in 0..count {
        let key = format!("big:{i}");
        encode(&[b"SET", key.as_bytes(), &value], &mut out);
    }
    out
}

/// The most the link held at once: the upstream buffer's capacity after each read is appended,
/// the output queue after each `process_up_to` (before draining).
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    up_buf_capacity: usize,
    out_len: usize,
}

/// One replica link in the streaming phase: what `session.rs` keeps for it.
struct Link {
    relay: StreamRelay,
    map: OffsetMap,
    out: OutQueue,
    tally: EntryTally,
    up_buf: BytesMut,
    table: ExpiryTable,
    policy: Policy,
    held: Held,
}

impl Link {
    /// A link just past a full sync whose snapshot was scanned (absent keys have no TTL).
    fn new() -> Self {
        Link {
            relay: StreamRelay::new(0, 0, 0),
            map: OffsetMap::new(0, 0, 0),
            out: OutQueue::new(),
            tally: entry_tally(),
            up_buf: BytesMut::new(),
            table: ExpiryTable::new(Baseline::NotVolatile),
            policy: Policy::new(Dialect::Redis),
            held: Held::default(),
        }
    }

    /// One socket read of at most `read_size` bytes from the front of `input` (and at most
    /// the room the session makes, as `read_buf` fills only spare capacity), processed and
    /// drained as the session does it; returns the bytes written downstream.
    async fn read<W: AsyncWrite + Unpin>(
        &mut self,
        input: &mut &[u8],
        read_size: usize,
        sink: &mut W,
    ) -> u64 {
        self.up_buf
            .reserve(self.relay.room_for_next_read(&self.up_buf));
        let spare = self.up_buf.capacity() - self.up_buf.len();
        let (chunk, rest) = input.split_at(read_size.min(spare).min(input.len()));
        *input = rest;
        self.up_buf.extend_from_slice(chunk);
        self.held.up_buf_capacity = self.held.up_buf_capacity.max(self.up_buf.capacity());
        let started = Instant::now();
        let risks = self
            .relay
            .process_up_to(
                &mut self.up_buf,
                usize::MAX,
                NOW_MS,
                &self.table,
                &self.policy,
                &mut self.map,
                &mut self.out,
                &mut self.tally,
                0,
            )
            .expect("valid stream");
        black_box(risks);
        self.map.cap(MAX_MAP_POINTS);
        self.tally.flush(started.elapsed().as_secs_f64());
        StreamRelay::release_spent_room(&mut self.up_buf);
        self.held.out_len = self.held.out_len.max(self.out.len());
        let mut written = 0;
        while !self.out.is_empty() {
            written += self.out.write_some(sink).await.expect("sink write") as u64;
        }
        written
    }

    /// Feed `input` in reads of `read_size`; returns the bytes written downstream.
    fn run(&mut self, rt: &Runtime, input: &[u8], read_size: usize) -> u64 {
        rt.block_on(async {
            let mut sink = tokio::io::sink();
            let mut written = 0;
            let mut rest = input;
            while !rest.is_empty() {
                written += self.read(&mut rest, read_size, &mut sink).await;
            }
            written
        })
    }
}

/// The floor: the same bytes copied read by read into one output buffer.
fn copy_reads(input: &[u8], read_size: usize, dst: &mut Vec<u8>) {
    dst.clear();
    for chunk in input.chunks(read_size) {
        dst.extend_from_slice(chunk);
    }
    black_box(dst.as_slice());
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / MIB as f64
}

/// Runs `input` once through a fresh link with the allocator counting; prints what it held
/// and returns the bytes written.
fn report_held(rt: &Runtime, name: &str, input: &[u8], read_size: usize) -> u64 {
    let mut link = Link::new();
    LIVE_BYTES.store(0, Ordering::Relaxed);
    PEAK_BYTES.store(0, Ordering::Relaxed);
    MEASURING.store(true, Ordering::Relaxed);
    let written = link.run(rt, input, read_size);
    MEASURING.store(false, Ordering::Relaxed);
    eprintln!(
        "{name}: input {:.2} MiB, output {:.2} MiB; held at most: heap {:.2} MiB, \
         upstream buffer capacity {:.2} MiB, output queue {:.2} MiB",
        mib(input.len()),
        mib(written as usize),
        mib(PEAK_BYTES.load(Ordering::Relaxed).max(0) as usize),
        mib(link.held.up_buf_capacity),
        mib(link.held.out_len),
    );
    written
}

fn small(c: &mut Criterion) {
    let rt = runtime();
    let read_size = 16 * KIB;
    let plain = pass_through_input();
    let volatile = rewrite_input();
    // Untimed checks: pass-through is byte-identical, the rewrite path grows every INCR.
    let plain_out = report_held(&rt, "pass_through_set", &plain, read_size);
    assert_eq!(plain_out, plain.len() as u64);
    let volatile_out = report_held(&rt, "rewrite_setex_incr", &volatile, read_size);
    assert!(volatile_out > volatile.len() as u64);

    let mut group = c.benchmark_group("redis_stream_small");
    group.throughput(Throughput::Elements(SMALL_ENTRIES as u64));
    let mut dst = Vec::with_capacity(plain.len());
    group.bench_function("copy_baseline/read16k", |b| {
        b.iter(|| copy_reads(black_box(&plain), read_size, &mut dst));
    });
    for (name, input) in [
        ("pass_through_set", &plain),
        ("rewrite_setex_incr", &volatile),
    ] {
        let mut link = Link::new();
        group.bench_function(format!("{name}/read16k"), |b| {
            b.iter(|| black_box(link.run(&rt, black_box(input), read_size)));
        });
    }
    group.finish();
}

fn growing(c: &mut Criterion) {
    const PAIRS: usize = 400_000;
    let rt = runtime();
    let fresh = latency_bench_input(PAIRS, PAIRS);
    let hot = latency_bench_input(PAIRS, KEYS);
    // 100 commands of this mix are about 5.4 KB: one read per millisecond at 100 k cmds/s.
    let read_size = fresh.len() / (2 * PAIRS / 100);
    let mut group = c.benchmark_group("redis_stream_growing");
    group.sample_size(10);
    group.throughput(Throughput::Elements(2 * PAIRS as u64));
    group.bench_function("fresh_keys", |b| {
        b.iter_batched(
            Link::new,
            |mut link| {
                let written = link.run(&rt, black_box(&fresh), read_size);
                assert_eq!(link.table.len(), PAIRS);
                (written, link)
            },
            BatchSize::PerIteration,
        );
    });
    let mut link = Link::new();
    group.bench_function("hot_keys", |b| {
        b.iter(|| black_box(link.run(&rt, black_box(&hot), read_size)));
    });
    group.finish();
}

fn large(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("redis_stream_large");
    group.sample_size(10);
    for (label, value_len, count) in [("1mib_x16", MIB, 16), ("64mib_x1", 64 * MIB, 1)] {
        let input = large_input(value_len, count);
        group.throughput(Throughput::Bytes(input.len() as u64));
        let mut dst = Vec::with_capacity(input.len());
        for read_size in [16 * KIB, 64 * KIB] {
            let reads = format!("read{}k", read_size / KIB);
            let name = format!("{label}/{reads}");
            let out = report_held(&rt, &format!("relay/{name}"), &input, read_size);
            assert_eq!(out, input.len() as u64);
            group.bench_function(format!("copy_baseline/{name}"), |b| {
                b.iter(|| copy_reads(black_box(&input), read_size, &mut dst));
            });
            let mut link = Link::new();
            group.bench_function(format!("relay/{name}"), |b| {
                b.iter(|| black_box(link.run(&rt, black_box(&input), read_size)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, small, growing, large);
criterion_main!(benches);
