//! Expiry-table costs: bytes per tracked key (counted by a wrapping global allocator, so the
//! figure is exact for this process), insert/lookup throughput from one and two threads, and
//! the time to encode and decode the snapshot a clean stop writes (`table_snapshot`) for a
//! million keys, which is what a stop and a start add per replica.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pika_ttl_proxy::redis_relay::table_snapshot;
use pika_ttl_proxy::table::{Baseline, ExpiryTable, KeyKnowledge};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NOW_MS: i64 = 1_795_469_984_000;

fn key(i: usize) -> Vec<u8> {
    format!("user:session:{i:010}").into_bytes()
}

/// Prints requested bytes per key beyond the key itself (malloc's own headers come on top:
/// glibc adds 8–16 bytes per allocation, i.e. per key).
/// Keys of 16 bytes (redis-benchmark's `key:__rand_int__`) are held inline in the table,
/// keys of 23 bytes (`key`) are boxed.
fn report_memory() {
    let short = |i: usize| format!("key:{i:012}").into_bytes();
    for (n, make) in [
        (100_000usize, &short as &dyn Fn(usize) -> Vec<u8>),
        (1_000_000, &short),
        (100_000, &key),
        (1_000_000, &key),
    ] {
        let keys: Vec<Vec<u8>> = (0..n).map(make).collect();
        let key_len = keys[0].len();
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        let table = ExpiryTable::new(Baseline::NotVolatile);
        for k in &keys {
            table.set_deadline(0, k, NOW_MS + 60_000);
        }
        let after = LIVE_BYTES.load(Ordering::Relaxed);
        let per_key = (after - before) as f64 / n as f64;
        println!(
            "table memory: {n} keys of {key_len} B: {per_key:.1} B/key requested = key + {:.1} B",
            per_key - key_len as f64
        );
        drop(table);
    }
}

/// Prints how long the stop-time snapshot of a million-key table takes to encode and to decode
/// (the disk's write and `fsync` come on top).
fn report_snapshot() {
    let n = 1_000_000;
    let table = ExpiryTable::new(Baseline::NotVolatile);
    for i in 0..n {
        table.set_deadline(0, &key(i), NOW_MS + 60_000);
    }
    let id = "0".repeat(40);
    let started = std::time::Instant::now();
    let bytes = table_snapshot::encode(&id, &id, 1, &table);
    let encoded = started.elapsed();
    let started = std::time::Instant::now();
    let back = table_snapshot::decode(&bytes).map(|s| s.table.len());
    let decoded = started.elapsed();
    assert_eq!(back.ok(), Some(n));
    println!(
        "table snapshot: {n} keys of {} B: {:.1} MB, encode {:.0} ms, decode {:.0} ms",
        key(0).len(),
        bytes.len() as f64 / 1e6,
        encoded.as_secs_f64() * 1e3,
        decoded.as_secs_f64() * 1e3
    );
}

fn bench_table(c: &mut Criterion) {
    report_memory();
    report_snapshot();
    let n = 100_000;
    let keys: Vec<Vec<u8>> = (0..n).map(key).collect();
    let table = ExpiryTable::new(Baseline::NotVolatile);
    for k in &keys {
        table.set_deadline(0, k, NOW_MS + 60_000);
    }
    let mut group = c.benchmark_group("table");
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("lookup_hit", |b| {
        b.iter(|| {
            for k in &keys {
                black_box(table.lookup(0, k, NOW_MS));
            }
        })
    });
    group.bench_function("insert_overwrite", |b| {
        b.iter(|| {
            for k in &keys {
                table.set_deadline(0, k, NOW_MS + 1);
            }
        })
    });
    group.bench_function("lookup_two_threads", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for half in keys.chunks(n / 2) {
                    let table = &table;
                    s.spawn(move || {
                        for k in half {
                            assert!(matches!(
                                table.lookup(0, k, NOW_MS),
                                KeyKnowledge::Volatile(_)
                            ));
                        }
                    });
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_table);
criterion_main!(benches);
