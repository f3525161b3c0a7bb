//! Engine throughput: pass-through entries (keys without TTL, or commands no rule touches)
//! against rewritten entries (every entry touches a volatile key), per dialect.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pika_ttl_proxy::engine::{rewrite, Dialect, Policy, StreamState};
use pika_ttl_proxy::table::{Baseline, ExpiryTable};
use std::hint::black_box;

const KEYS: usize = 10_000;
const BATCH: usize = 10_000;
const NOW_MS: i64 = 1_795_469_984_000;

fn entries(cmd: &str) -> Vec<Vec<Bytes>> {
    (0..BATCH)
        .map(|i| {
            vec![
                Bytes::copy_from_slice(cmd.as_bytes()),
                Bytes::from(format!("key:{}", i % KEYS)),
            ]
        })
        .collect()
}

fn table_with_volatile_keys() -> ExpiryTable {
    let table = ExpiryTable::new(Baseline::NotVolatile);
    for i in 0..KEYS {
        table.set_deadline(0, format!("key:{i}").as_bytes(), NOW_MS + 3_600_000);
    }
    table
}

fn bench_engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(BATCH as u64));
    for dialect in [Dialect::Pika, Dialect::Redis] {
        let name = format!("{dialect:?}").to_lowercase();
        let policy = Policy::new(dialect);
        let incr = entries("INCR");
        let ping: Vec<Vec<Bytes>> = (0..BATCH)
            .map(|_| vec![Bytes::from_static(b"PING")])
            .collect();

        let empty = ExpiryTable::new(Baseline::NotVolatile);
        group.bench_function(format!("{name}/passthrough_ping"), |b| {
            let mut state = StreamState::default();
            b.iter(|| {
                for e in &ping {
                    black_box(rewrite(e, NOW_MS, &mut state, &empty, &policy));
                }
            })
        });
        group.bench_function(format!("{name}/passthrough_incr_no_ttl"), |b| {
            let mut state = StreamState::default();
            b.iter(|| {
                for e in &incr {
                    black_box(rewrite(e, NOW_MS, &mut state, &empty, &policy));
                }
            })
        });
        let volatile = table_with_volatile_keys();
        group.bench_function(format!("{name}/rewrite_incr_volatile"), |b| {
            let mut state = StreamState::default();
            b.iter(|| {
                for e in &incr {
                    black_box(rewrite(e, NOW_MS, &mut state, &volatile, &policy));
                }
            })
        });
        let switched_off = Policy {
            families: pika_ttl_proxy::families::FamilySwitches::all_off(),
            ..Policy::new(dialect)
        };
        group.bench_function(format!("{name}/families_off_incr_volatile"), |b| {
            let mut state = StreamState::default();
            b.iter_batched(
                || (),
                |_| {
                    for e in &incr {
                        black_box(rewrite(e, NOW_MS, &mut state, &volatile, &switched_off));
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
