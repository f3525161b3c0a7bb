//! Rewrite engine: any sequence of commands (split on '\n', arguments on ' ') never panics and
//! every command it emits has a valid arity for its name.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pika_ttl_proxy::engine::command::arity_ok;
use pika_ttl_proxy::engine::{rewrite, Dialect, Emit, Policy, StreamState};
use pika_ttl_proxy::table::{Baseline, ExpiryTable};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let dialect = if first & 1 == 0 {
        Dialect::Pika
    } else {
        Dialect::Redis
    };
    let baseline = match (first >> 1) % 3 {
        0 => Baseline::Unknown,
        1 => Baseline::NotVolatile,
        _ => Baseline::Absent,
    };
    let policy = Policy::new(dialect);
    let table = ExpiryTable::new(baseline);
    let mut state = StreamState::default();
    let mut now = 1_795_469_984_000i64;
    for line in rest.split(|b| *b == b'\n') {
        let args: Vec<Bytes> = line
            .split(|b| *b == b' ')
            .map(Bytes::copy_from_slice)
            .collect();
        now += 700;
        let decision = rewrite(&args, now, &mut state, &table, &policy);
        if let Emit::Replace(replacement) = decision.emit {
            for cmd in replacement.argvs(&args) {
                assert!(arity_ok(&cmd[0], cmd.len()), "emitted {cmd:?}");
            }
        }
    }
});
