//! RDB scanner: arbitrary payloads in arbitrary chunks never panic, and chunking never changes
//! the keys found or the verdict.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pika_ttl_proxy::rdb::RdbScanner;

fn scan(data: &[u8], chunk: usize) -> (Vec<(u32, Vec<u8>, i64)>, String) {
    let mut scanner = RdbScanner::new();
    let mut keys = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        if let Err(e) = scanner.feed(piece, &mut keys) {
            let found = keys
                .into_iter()
                .map(|k| (k.db, k.key.to_vec(), k.expire_ms))
                .collect();
            return (found, format!("feed: {e}"));
        }
    }
    let verdict = match scanner.finish() {
        Ok(summary) => format!("ok {} keys", summary.keys),
        Err(e) => format!("finish: {e}"),
    };
    let found = keys
        .into_iter()
        .map(|k| (k.db, k.key.to_vec(), k.expire_ms))
        .collect();
    (found, verdict)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    // Most mutations of a bare input fail at the magic; give them a valid header half the time.
    let mut input = Vec::new();
    if first & 1 == 1 {
        input.extend_from_slice(b"REDIS0011");
    }
    input.extend_from_slice(rest);
    let whole = scan(&input, input.len());
    let chunked = scan(&input, (first >> 1) as usize + 1);
    assert_eq!(whole, chunked, "chunking changed the scan");
});
