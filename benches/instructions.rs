//! A fixed workload per case, for counting instructions per entry with callgrind (not a
//! criterion benchmark). `instructions <case> <n>` prepares the case, runs one warm-up round,
//! then `n` entries (engine cases) or `n` BinlogSync responses of 100 items (`pika_*` cases).
//! Instructions per entry are `(Ir(n) − Ir(0)) / n` (per item: divide by `100 n`); the
//! preparation is the same for every `n`. See docs/performance.md ("Instructions per entry").
//!
//! Engine cases call `engine::rewrite` (Pika dialect unless named `redis_*`) on 1 000 keys,
//! every other one volatile (deadline one hour after the entries' exec time), in a table whose
//! baseline is "absent":
//! `hset` (`HSET k f v`, half rewritten), `sadd` (`SADD k m`, half rewritten), `rpush`
//! (`RPUSH k x`, half rewritten), `incr` (`INCR k`, half rewritten), `set` (`SET k v`, passed),
//! `setex` (`SETEX k 3600 v`, rewritten), `ping` (`PING`, a passed command without a key),
//! `redis_incr` (`INCR k` on the Redis dialect, half rewritten and MULTI-wrapped).
//! Pika item cases run [`LinkRewriter::rewrite_response`] on a response of 100 items:
//! `pika_rewrite` (`SETEX k 3600 1` / `INCR k` pairs, every INCR rewritten) and `pika_pass`
//! (`SET k v` on keys without a TTL, all forwarded unchanged), as in `benches/pika_codec.rs`.

use bytes::Bytes;
use pika_ttl_proxy::engine::{rewrite, Dialect, Policy, StreamState};
use pika_ttl_proxy::families::FamilySwitches;
use pika_ttl_proxy::pika::item::{build_item, ItemHeader};
use pika_ttl_proxy::pika::messages::{
    build_binlog_sync_response, LogicalOffset, NewBinlogSyncEntry, Slot,
};
use pika_ttl_proxy::pika_relay::rewrite::LinkRewriter;
use pika_ttl_proxy::resp::encode_command;
use pika_ttl_proxy::table::{Baseline, ExpiryTable};
use std::hint::black_box;
use std::sync::Arc;

const KEYS: usize = 1_000;
const NOW_MS: i64 = 1_795_469_984_000;
const ITEMS: usize = 100;

fn engine_entries(case: &str) -> Option<Vec<Vec<Bytes>>> {
    let make = |args: &dyn Fn(String) -> Vec<String>| {
        (0..KEYS)
            .map(|i| {
                args(format!("key:{i}"))
                    .into_iter()
                    .map(Bytes::from)
                    .collect()
            })
            .collect()
    };
    let s = |x: &str| x.to_string();
    Some(match case {
        "hset" => make(&|k| vec![s("HSET"), k, s("f"), s("v")]),
        "sadd" => make(&|k| vec![s("SADD"), k, s("m")]),
        "rpush" => make(&|k| vec![s("RPUSH"), k, s("x")]),
        "incr" | "redis_incr" => make(&|k| vec![s("INCR"), k]),
        "set" => make(&|k| vec![s("SET"), k, s("v")]),
        "setex" => make(&|k| vec![s("SETEX"), k, s("3600"), s("v")]),
        "ping" => make(&|_| vec![s("PING")]),
        _ => return None,
    })
}

fn run_engine(case: &str, entries: &[Vec<Bytes>], n: usize) {
    let dialect = if case.starts_with("redis_") {
        Dialect::Redis
    } else {
        Dialect::Pika
    };
    let policy = Policy::new(dialect);
    let table = ExpiryTable::new(Baseline::Absent);
    for i in (0..KEYS).step_by(2) {
        table.set_deadline(0, format!("key:{i}").as_bytes(), NOW_MS + 3_600_000);
    }
    let mut state = StreamState::default();
    for entry in entries {
        black_box(&rewrite(entry, NOW_MS, &mut state, &table, &policy));
    }
    // By reference: a copy of the whole decision would be counted as the engine's.
    for entry in entries.iter().cycle().take(n) {
        black_box(&rewrite(entry, NOW_MS, &mut state, &table, &policy));
    }
}

/// A db0 BinlogSync response of `ITEMS` items, each one command made by `command(i)`.
fn response_of(command: impl Fn(usize) -> Vec<String>) -> Bytes {
    let mut offset = 0u64;
    let items: Vec<(u64, u64, Vec<u8>)> = (0..ITEMS)
        .map(|i| {
            let mut content = bytes::BytesMut::new();
            encode_command(&command(i), &mut content);
            let header = ItemHeader {
                item_type: 1,
                exec_time: (NOW_MS / 1000) as u32,
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
    build_binlog_sync_response(&entries).into()
}

fn run_pika(case: &str, n: usize) -> bool {
    let body = match case {
        "pika_rewrite" => response_of(|i| {
            let key = format!("key:{}", i / 2);
            if i % 2 == 0 {
                vec!["SETEX".into(), key, "3600".into(), "1".into()]
            } else {
                vec!["INCR".into(), key]
            }
        }),
        "pika_pass" => response_of(|i| vec!["SET".into(), format!("plain:{i}"), "value".into()]),
        _ => return false,
    };
    let table = Arc::new(ExpiryTable::new(Baseline::Absent));
    let mut rewriter = LinkRewriter::new(table, 0, FamilySwitches::all_on());
    let first = rewriter.rewrite_response(&body).expect("rewrites");
    assert_eq!(first.body.is_some(), case == "pika_rewrite", "{case}");
    for _ in 0..n {
        black_box(
            rewriter
                .rewrite_response(black_box(&body))
                .expect("rewrites"),
        );
    }
    true
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` runs every bench target with `--bench`: nothing to do then.
    let [case, n] = args.as_slice() else {
        return;
    };
    let n: usize = n.parse().expect("n: a number");
    if let Some(entries) = engine_entries(case) {
        run_engine(case, &entries, n);
    } else if !run_pika(case, n) {
        panic!("unknown case {case}");
    }
}
