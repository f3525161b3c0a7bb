//! The hand-written LZF expansion against the `lzf` crate, in one run so the numbers compare (see
//! `src/rdb/lzf.rs` for why ours stays). CRC-32 and CRC-64 were compared with `crc32fast` and the
//! `crc` crate the same way and replaced by them.
//!
//! Sizes follow the caller: the RDB scanner expands only keys and small AUX values, and Redis
//! compresses strings over 20 bytes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pika_ttl_proxy::rdb::lzf;
use std::hint::black_box;

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

criterion_group!(benches, lzf_expand);
criterion_main!(benches);
