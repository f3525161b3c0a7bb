//! RESP command parser: arbitrary bytes fed in arbitrary chunks (the first byte picks the chunk
//! size) never panic, and frames come out the same whatever the chunking.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pika_ttl_proxy::resp::{CommandParser, ParserLimits};

fn frames(data: &[u8], chunk: usize, inline: bool) -> (Vec<Vec<u8>>, bool) {
    let limits = if inline {
        ParserLimits::replica_stream()
    } else {
        ParserLimits::master_stream()
    };
    let mut parser = CommandParser::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(frame)) => out.push(frame.raw().to_vec()),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let inline = first & 0x80 != 0;
    let whole = frames(rest, rest.len(), inline);
    let chunked = frames(rest, (first & 0x1f) as usize + 1, inline);
    assert_eq!(whole, chunked, "chunking changed the frames");
});
