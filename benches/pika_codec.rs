//! Cost of the Pika codec on a BinlogSync response of 100 items, against a plain copy of the
//! same bytes.
//!
//! The response is built from the 49 real items of the Pika 3.5.4 fixture binlog, cycled to 100
//! and laid out with Pika's block writer so offsets and sizes are realistic (about 8 KiB).
//! Benchmarks, all reported per item (100 items per iteration):
//! - `memcpy`: copying the frame body (the floor for touching every byte once);
//! - `decode`: parse the response, every entry, every item header, and read the content;
//! - `splice_prebuilt`: re-encode the response with every item replaced by an already built
//!   item (reading the records and the relay's splicer, [`BinlogSyncSplice`], without the
//!   engine);
//! - `rewrite`: decode + build a new item with changed content for every entry + splice.
//!
//! Group `link_rewriter`: the relay's whole per-response path ([`LinkRewriter`]: decode, RESP
//! parse, engine, table, re-encode, splice) on 100 items, per item:
//! - `volatile_setex_incr`: `SETEX k 3600 1` / `INCR k` pairs, so every INCR is rewritten;
//! - `pass_through_set`: `SET k v` on keys without TTL, all forwarded unchanged;
//! - `pass_through_set_1mib`: 16 items of `SET k <1 MiB value>` on keys without TTL, all
//!   forwarded unchanged, in bytes/s of the response body; `memcpy_1mib` copies the same body
//!   (the floor for touching every byte once).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pika_ttl_proxy::families::FamilySwitches;
use pika_ttl_proxy::pika::binlog_file::{read_binlog_file, BinlogFileWriter};
use pika_ttl_proxy::pika::item::BinlogItem;
use pika_ttl_proxy::pika::item::{build_item, ItemHeader};
use pika_ttl_proxy::pika::messages::{
    build_binlog_sync_response, BinlogSyncSplice, InnerResponse, LogicalOffset, NewBinlogSyncEntry,
    Slot,
};
use pika_ttl_proxy::pika_relay::rewrite::LinkRewriter;
use pika_ttl_proxy::resp::encode_command;
use pika_ttl_proxy::table::{Baseline, ExpiryTable};
use std::hint::black_box;
use std::sync::Arc;

const ITEMS: usize = 100;
/// Items of the large-value response (1 MiB each).
const LARGE_ITEMS: usize = 16;

/// A db0 BinlogSync response of `(end offset, logic id, item bytes)` entries.
fn response_from(items: &[(u64, u64, Vec<u8>)]) -> Vec<u8> {
    let entries: Vec<NewBinlogSyncEntry<'_>> = items
        .iter()
        .map(|(end, lid, bytes)| NewBinlogSyncEntry {
            slot: Slot {
                db_name: b"db0",
                slot_id: 0,
            },
            binlog_offset: LogicalOffset {
                filenum: 0,
                offset: *end,
                term: 0,
                index: *lid,
            },
            binlog: bytes,
            session_id: 1,
        })
        .collect();
    build_binlog_sync_response(&entries)
}

/// A BinlogSync response body with `ITEMS` real items.
fn response_with_items() -> Vec<u8> {
    let file = pika_ttl_proxy::fixtures::read("pika-3.5.4/session1-master-binlog-write2file0.bin")
        .expect("fixture binlog");
    let records = read_binlog_file(&file).expect("fixture binlog parses");
    let mut writer = BinlogFileWriter::new(0);
    let mut items = Vec::with_capacity(ITEMS);
    for lid in 1..=ITEMS as u64 {
        let record = &records[(lid as usize - 1) % records.len()];
        let item = BinlogItem::parse(&record.item).expect("fixture item");
        let at = writer
            .append_item(item.header.exec_time, 0, lid, item.content)
            .expect("item fits");
        let bytes =
            writer.as_bytes()[at.end as usize - record.item.len()..at.end as usize].to_vec();
        items.push((at.end, lid, bytes));
    }
    response_from(&items)
}

/// Decodes everything a proxy reads; returns a checksum so nothing is optimized away.
fn decode(body: &[u8]) -> u64 {
    let resp = InnerResponse::parse(body).expect("valid response");
    let mut sum = 0u64;
    for entry in resp.binlog_sync_entries() {
        let entry = entry.expect("valid entry");
        let item = entry.item().expect("valid item");
        sum = sum
            .wrapping_add(entry.binlog_offset.offset)
            .wrapping_add(u64::from(item.header.exec_time))
            .wrapping_add(item.header.logic_id)
            .wrapping_add(item.content.iter().map(|&b| u64::from(b)).sum::<u64>());
    }
    sum
}

/// The changed content: the original command followed by a 33-byte `expireat` (what the proxy
/// injects after a key-creating command).
fn changed_content(content: &[u8]) -> Vec<u8> {
    const INJECTED: &[u8] = b"*3\r\n$8\r\nexpireat\r\n$2\r\nk1\r\n$10\r\n1795470054\r\n";
    let mut out = Vec::with_capacity(content.len() + INJECTED.len());
    out.extend_from_slice(content);
    out.extend_from_slice(INJECTED);
    out
}

fn rewrite(body: &[u8]) -> Vec<u8> {
    let resp = InnerResponse::parse(body).expect("valid response");
    let mut records = resp.binlog_sync_entries();
    let mut splice = BinlogSyncSplice::new(body);
    while let Some(record) = records.next_record() {
        let record = record.expect("valid entry");
        let item = record.entry.item().expect("valid item");
        let new_item = item
            .with_content(&changed_content(item.content))
            .expect("content fits");
        splice.replace_binlog(&record, &new_item).expect("splice");
    }
    splice.finish().expect("every item changed")
}

/// `body` with the item of each entry replaced by the next of `items`, as the relay splices.
fn splice(body: &[u8], items: &[Vec<u8>]) -> Vec<u8> {
    let resp = InnerResponse::parse(body).expect("valid response");
    let mut records = resp.binlog_sync_entries();
    let mut splice = BinlogSyncSplice::new(body);
    for item in items {
        let record = records
            .next_record()
            .expect("an entry per item")
            .expect("valid entry");
        splice.replace_binlog(&record, item).expect("splice");
    }
    splice.finish().expect("every item changed")
}

/// A response of `count` items, each one command made by `command(i)`.
fn response_of(count: usize, command: impl Fn(usize) -> Vec<String>) -> bytes::Bytes {
    let mut offset = 0u64;
    let items: Vec<(u64, u64, Vec<u8>)> = (0..count)
        .map(|i| {
            let mut content = bytes::BytesMut::new();
            encode_command(&command(i), &mut content);
            let header = ItemHeader {
                item_type: 1,
                exec_time: 1_795_469_984,
                term_id: 0,
                logic_id: i as u64 + 1,
                filenum: 0,
                offset,
                content_len: 0,
            };
            let item = build_item(&header, &content).expect("item");
            offset += item.len() as u64;
            (offset, i as u64 + 1, item)
        })
        .collect();
    response_from(&items).into()
}

fn link_rewriter(c: &mut Criterion) {
    let volatile = response_of(ITEMS, |i| {
        let key = format!("key:{}", i / 2);
        if i % 2 == 0 {
            vec!["SETEX".into(), key, "3600".into(), "1".into()]
        } else {
            vec!["INCR".into(), key]
        }
    });
    let plain = response_of(ITEMS, |i| {
        vec!["SET".into(), format!("plain:{i}"), "value".into()]
    });
    let large_value: String = (0..1 << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let large = response_of(LARGE_ITEMS, |i| {
        vec!["SET".into(), format!("big:{i}"), large_value.clone()]
    });
    let mut group = c.benchmark_group("link_rewriter");
    group.throughput(Throughput::Elements(ITEMS as u64));
    for (name, body, expect_changed) in [
        ("volatile_setex_incr", &volatile, true),
        ("pass_through_set", &plain, false),
    ] {
        let table = Arc::new(ExpiryTable::new(Baseline::Absent));
        let mut rewriter = LinkRewriter::new(table, 0, FamilySwitches::all_on());
        let first = rewriter.rewrite_response(body).expect("rewrites");
        assert_eq!(first.body.is_some(), expect_changed, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    rewriter
                        .rewrite_response(black_box(body))
                        .expect("rewrites"),
                )
            })
        });
    }
    group.throughput(Throughput::Bytes(large.len() as u64));
    group.bench_function("memcpy_1mib", |b| {
        b.iter(|| black_box(black_box(&large[..]).to_vec()))
    });
    let table = Arc::new(ExpiryTable::new(Baseline::Absent));
    let mut rewriter = LinkRewriter::new(table, 0, FamilySwitches::all_on());
    let first = rewriter.rewrite_response(&large).expect("rewrites");
    assert!(first.body.is_none(), "pass_through_set_1mib");
    group.bench_function("pass_through_set_1mib", |b| {
        b.iter(|| {
            black_box(
                rewriter
                    .rewrite_response(black_box(&large))
                    .expect("rewrites"),
            )
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let body = response_with_items();
    assert_eq!(
        InnerResponse::parse(&body)
            .expect("valid")
            .binlog_sync_count(),
        ITEMS
    );
    let prebuilt: Vec<Vec<u8>> = InnerResponse::parse(&body)
        .expect("valid")
        .binlog_sync_entries()
        .map(|e| {
            let item = e.expect("entry").item().expect("item");
            item.with_content(&changed_content(item.content))
                .expect("fits")
        })
        .collect();
    let rewritten = rewrite(&body);
    eprintln!(
        "response: {} items, {} bytes; rewritten: {} bytes",
        ITEMS,
        body.len(),
        rewritten.len()
    );

    let mut group = c.benchmark_group("binlog_sync_100_items");
    group.throughput(Throughput::Elements(ITEMS as u64));
    group.bench_function("memcpy", |b| {
        b.iter(|| black_box(black_box(&body[..]).to_vec()))
    });
    group.bench_function("decode", |b| b.iter(|| black_box(decode(black_box(&body)))));
    group.bench_function("splice_prebuilt", |b| {
        b.iter(|| black_box(splice(black_box(&body), black_box(&prebuilt))))
    });
    group.bench_function("rewrite", |b| {
        b.iter(|| black_box(rewrite(black_box(&body))))
    });
    group.finish();
}

criterion_group!(benches, bench, link_rewriter);
criterion_main!(benches);
