//! The hand-written checksum and decompression codecs against the crates that could replace them,
//! in one run so the numbers compare: the RDB trailer's CRC-64 against the `crc` crate's
//! `CRC_64_REDIS`, and LZF expansion of RDB strings against the `lzf` crate. (CRC-32 was compared
//! with `crc32fast` the same way and replaced by it.)
//!
//! Sizes follow the callers: the RDB checksum is fed in 64 KiB socket reads; LZF strings the
//! scanner expands are keys and small AUX values (Redis compresses strings over 20 bytes).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pika_ttl_proxy::rdb::{crc64, lzf};
use std::hint::black_box;

/// Deterministic bytes that do not compress (for the checksums).
fn noise(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// Key-like text that LZF compresses moderately, as Redis keys and values do.
fn keyish(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0u32;
    while out.len() < len {
        out.extend_from_slice(format!("user:{:06}:session:", i % 977).as_bytes());
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    out.truncate(len);
    out
}

static CRC64: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_REDIS);

fn crc64(c: &mut Criterion) {
    const CHUNK: usize = 64 << 10;
    let mut group = c.benchmark_group("crc64");
    for len in [64usize, 16 << 20] {
        let data = noise(len);
        let ours = |d: &[u8]| d.chunks(CHUNK).fold(0, crc64::update);
        let theirs = |d: &[u8]| {
            let mut digest = CRC64.digest();
            for chunk in d.chunks(CHUNK) {
                digest.update(chunk);
            }
            digest.finalize()
        };
        assert_eq!(ours(&data), theirs(&data));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("ours", len), &data, |b, d| {
            b.iter(|| ours(black_box(d)))
        });
        group.bench_with_input(BenchmarkId::new("crc", len), &data, |b, d| {
            b.iter(|| theirs(black_box(d)))
        });
    }
    group.finish();
}

fn lzf_expand(c: &mut Criterion) {
    let mut group = c.benchmark_group("lzf");
    for len in [40usize, 200, 16 << 10] {
        let plain = keyish(len);
        let packed = ::lzf::compress(&plain).expect("compressible");
        let mut out = Vec::new();
        lzf::decompress(&packed, len, &mut out).expect("ours expands it");
        assert_eq!(out, plain);
        assert_eq!(
            ::lzf::decompress(&packed, len).expect("lzf expands it"),
            plain
        );
        group.throughput(Throughput::Bytes(len as u64));
        // The scanner reuses one output buffer for every string.
        group.bench_with_input(BenchmarkId::new("ours", len), &packed, |b, p| {
            b.iter(|| {
                lzf::decompress(black_box(p), len, &mut out).expect("valid");
                out.len()
            })
        });
        group.bench_with_input(BenchmarkId::new("lzf", len), &packed, |b, p| {
            b.iter(|| ::lzf::decompress(black_box(p), len).expect("valid").len())
        });
    }
    group.finish();
}

criterion_group!(benches, crc64, lzf_expand);
criterion_main!(benches);
