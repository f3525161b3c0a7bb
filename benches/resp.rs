//! Benchmarks for the replication-path RESP2 codec (`pika_ttl_proxy::resp`), each next to
//! redis-protocol 6's `resp2::decode::decode_bytes_mut` (or `extend_encode`) as the baseline.
//!
//! * `parse_small`: 100k `SET key:N value` commands already in one buffer (commands/s).
//! * `parse_big_arg`: one 64 MiB argument appended in 16 KiB reads, parsing after each read
//!   (bytes/s; the copy into the buffer is part of the measured work, as it is on a socket).
//!   redis-protocol checks a bulk payload's length without scanning it, so it is not quadratic
//!   here and runs at the same size.
//! * `parse_many_args`: one ~4 MiB `MSET` of 65,536 small arguments appended in 16 KiB reads.
//!   Here a decoder that restarts from the frame start on every read re-parses all arguments
//!   seen so far, which is where keeping one's place matters.
//! * `encode_small`: 100k `SET key:N value` commands encoded into one buffer (commands/s); the
//!   baseline builds a `BytesFrame` per command because that is what its encoder takes.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pika_ttl_proxy::resp::{encode_command, CommandParser, Frame, ParserLimits};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame;
use std::hint::black_box;

const SMALL_COMMANDS: usize = 100_000;
const READ_SIZE: usize = 16 * 1024;

fn small_command_args(index: usize) -> [Vec<u8>; 3] {
    [
        b"SET".to_vec(),
        format!("key:{index}").into_bytes(),
        b"value".to_vec(),
    ]
}

fn small_commands_stream() -> Bytes {
    let mut out = BytesMut::new();
    for index in 0..SMALL_COMMANDS {
        encode_command(&small_command_args(index), &mut out);
    }
    out.freeze()
}

/// Parses every complete frame in `buf` with our parser; returns how many.
fn drain_ours(parser: &mut CommandParser, buf: &mut BytesMut) -> usize {
    let mut frames = 0;
    while let Some(frame) = parser.parse(buf).expect("benchmark input is valid") {
        black_box(&frame);
        frames += usize::from(matches!(frame, Frame::Command(_)));
    }
    frames
}

/// Parses every complete frame in `buf` with redis-protocol; returns how many.
fn drain_baseline(buf: &mut BytesMut) -> usize {
    let mut frames = 0;
    while let Some((frame, consumed, raw)) =
        decode_bytes_mut(buf).expect("benchmark input is valid")
    {
        black_box((&frame, consumed, &raw));
        frames += 1;
    }
    frames
}

fn parse_small(c: &mut Criterion) {
    let input = small_commands_stream();
    let mut group = c.benchmark_group("parse_small");
    group.throughput(Throughput::Elements(SMALL_COMMANDS as u64));
    group.bench_function("ours", |b| {
        b.iter_batched(
            || BytesMut::from(&input[..]),
            |mut buf| {
                let mut parser = CommandParser::new(ParserLimits::master_stream());
                let frames = drain_ours(&mut parser, &mut buf);
                assert_eq!(frames, SMALL_COMMANDS);
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("redis_protocol", |b| {
        b.iter_batched(
            || BytesMut::from(&input[..]),
            |mut buf| {
                let frames = drain_baseline(&mut buf);
                assert_eq!(frames, SMALL_COMMANDS);
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Benchmarks feeding `input` in `READ_SIZE` appends, parsing after each, for both parsers.
fn bench_chunked_feed(c: &mut Criterion, group_name: &str, input: &Bytes) {
    let mut group = c.benchmark_group(group_name);
    group.sample_size(10);
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("ours", |b| {
        b.iter_batched(
            || BytesMut::with_capacity(input.len()),
            |mut buf| {
                let mut parser = CommandParser::new(ParserLimits::master_stream());
                let mut frames = 0;
                for read in input.chunks(READ_SIZE) {
                    buf.extend_from_slice(read);
                    frames += drain_ours(&mut parser, &mut buf);
                }
                assert_eq!(frames, 1);
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("redis_protocol", |b| {
        b.iter_batched(
            || BytesMut::with_capacity(input.len()),
            |mut buf| {
                let mut frames = 0;
                for read in input.chunks(READ_SIZE) {
                    buf.extend_from_slice(read);
                    frames += drain_baseline(&mut buf);
                }
                assert_eq!(frames, 1);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn parse_big_arg(c: &mut Criterion) {
    let value = vec![b'v'; 64 * 1024 * 1024];
    let args: [&[u8]; 3] = [b"SET", b"big", &value];
    let mut input = BytesMut::new();
    encode_command(&args, &mut input);
    bench_chunked_feed(c, "parse_big_arg_64MiB", &input.freeze());
}

fn parse_many_args(c: &mut Criterion) {
    let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
    for index in 0..32_768 {
        args.push(format!("key:{index:08}").into_bytes());
        args.push(vec![b'x'; 100]);
    }
    let mut input = BytesMut::new();
    encode_command(&args, &mut input);
    bench_chunked_feed(c, "parse_many_args_4MiB", &input.freeze());
}

fn encode_small(c: &mut Criterion) {
    let commands: Vec<[Bytes; 3]> = (0..SMALL_COMMANDS)
        .map(|index| small_command_args(index).map(Bytes::from))
        .collect();
    let expected = small_commands_stream();
    let mut group = c.benchmark_group("encode_small");
    group.throughput(Throughput::Elements(SMALL_COMMANDS as u64));
    let mut out = BytesMut::with_capacity(expected.len());
    group.bench_function("ours", |b| {
        b.iter(|| {
            out.clear();
            for args in &commands {
                encode_command(args, &mut out);
            }
            black_box(&out);
        })
    });
    group.bench_function("redis_protocol", |b| {
        b.iter(|| {
            out.clear();
            for args in &commands {
                let frame =
                    BytesFrame::Array(args.iter().cloned().map(BytesFrame::BulkString).collect());
                extend_encode(&mut out, &frame, false).expect("encodable");
            }
            black_box(&out);
        })
    });
    group.finish();
    // Whichever of the two ran last, it produced the same bytes.
    if !out.is_empty() {
        assert_eq!(out, expected);
    }
}

criterion_group!(
    benches,
    parse_small,
    parse_big_arg,
    parse_many_args,
    encode_small
);
criterion_main!(benches);
