//! Throughput of the streaming RDB scanner, with the raw CRC-64 over the same bytes as a
//! same-run baseline (the scanner can never be faster than its checksum).
//!
//! Inputs are generated: "small-keys" is 1M string keys (one in ten expiring) plus a 10k-field
//! hash, the shape of a typical cache; "big-values" is four 16 MiB strings, where the scan is
//! pure skipping. Both are fed in 64 KiB chunks, like socket reads.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pika_ttl_proxy::rdb::{crc64, RdbScanner, RdbWriter};
use std::hint::black_box;

const CHUNK: usize = 64 * 1024;

fn small_keys_rdb() -> Vec<u8> {
    let mut w = RdbWriter::new(10);
    w.aux("redis-ver", "7.0.15").select_db(0);
    for i in 0..1_000_000u64 {
        let key = format!("key:{i:08}");
        let expiry = (i % 10 == 0).then_some(1_800_000_000_000 + i as i64);
        w.string_key(key.as_bytes(), b"value-0123456789", expiry);
    }
    w.raw(&[4]).string(b"hash:big").length(10_000);
    for i in 0..10_000 {
        w.string(format!("field:{i}").as_bytes())
            .string(format!("value:{i}").as_bytes());
    }
    w.finish(true)
}

fn big_values_rdb() -> Vec<u8> {
    let mut w = RdbWriter::new(10);
    w.select_db(0);
    let value: Vec<u8> = (0..16 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for i in 0..4 {
        w.string_key(
            format!("big:{i}").as_bytes(),
            &value,
            Some(1_800_000_000_000),
        );
    }
    w.finish(true)
}

fn scan(data: &[u8]) -> u64 {
    let mut scanner = RdbScanner::new();
    let mut keys = Vec::with_capacity(1024);
    for chunk in data.chunks(CHUNK) {
        scanner.feed(chunk, &mut keys).unwrap();
        keys.clear();
    }
    scanner.finish().unwrap().keys_with_expiry
}

fn bench(c: &mut Criterion) {
    for (name, data, expiring) in [
        ("small-keys", small_keys_rdb(), 100_000),
        ("big-values", big_values_rdb(), 4),
    ] {
        assert_eq!(scan(&data), expiring);
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function("scan", |b| b.iter(|| scan(black_box(&data))));
        group.bench_function("crc64-only", |b| {
            b.iter(|| {
                data.chunks(CHUNK)
                    .fold(0, |crc, chunk| crc64::update(crc, black_box(chunk)))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
