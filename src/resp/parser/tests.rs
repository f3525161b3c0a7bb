//! The parsers against hand-made streams, malformed input, arbitrary chunking and the captured
//! Redis replication streams.

use super::*;
use crate::resp::{encode_command, encoded_len};
use bytes::BufMut;
use proptest::prelude::*;
use std::collections::BTreeMap;

#[test]
fn raw_frames_carry_the_same_arguments_as_frames() {
    let mut stream = BytesMut::new();
    encode_command(&["SET", "k", "v"], &mut stream);
    stream.extend_from_slice(b"\nPING x\r\n*0\r\n");
    encode_command(&["INCR", "n"], &mut stream);
    let inline = ParserLimits {
        allow_inline: true,
        ..ParserLimits::master_stream()
    };
    let mut framed = CommandParser::new(inline);
    let mut raw = CommandParser::new(inline);
    let (mut a, mut b) = (stream.clone(), stream);
    loop {
        let frame = framed.parse(&mut a).unwrap();
        let raw_frame = raw.parse_raw(&mut b).unwrap();
        let (Some(frame), Some(raw_frame)) = (frame, raw_frame) else {
            assert!(a.is_empty() && b.is_empty());
            break;
        };
        assert_eq!(frame.raw(), &raw_frame.raw);
        let args: Vec<&[u8]> = raw
            .arg_spans()
            .iter()
            .map(|&(s, e)| &raw_frame.raw[s..e])
            .collect();
        match (frame, raw_frame.kind) {
            (Frame::Command(cmd), FrameKind::Command) | (Frame::Inline(cmd), FrameKind::Inline) => {
                let expected: Vec<&[u8]> = cmd.args.iter().map(|a| a.as_ref()).collect();
                assert_eq!(args, expected);
            }
            (Frame::Newline { .. }, FrameKind::Newline)
            | (Frame::Empty { .. }, FrameKind::Empty) => {}
            (frame, kind) => panic!("{frame:?} read as {kind:?}"),
        }
    }
}

#[test]
fn a_large_argument_announces_the_buffer_it_needs() {
    let mut parser = CommandParser::new(ParserLimits::master_stream());
    let mut frame = BytesMut::new();
    encode_command(&[&b"SET"[..], b"k", &[b'x'; 100_000]], &mut frame);
    let mut buf = BytesMut::from(&frame[..4096]);
    assert_eq!(parser.buffer_len_for_current_argument(), None);
    assert_eq!(parser.parse(&mut buf), Ok(None));
    assert_eq!(parser.buffer_len_for_current_argument(), Some(frame.len()));
    buf.extend_from_slice(&frame[4096..]);
    assert!(matches!(
        parser.parse(&mut buf),
        Ok(Some(Frame::Command(_)))
    ));
    assert_eq!(parser.buffer_len_for_current_argument(), None);
}

/// Real captured bytes (see [`crate::fixtures`]).
fn fixture(relative: &str) -> Vec<u8> {
    crate::fixtures::read(relative).unwrap_or_else(|e| panic!("{e}"))
}

fn fixture_text(relative: &str) -> String {
    String::from_utf8(fixture(relative)).unwrap()
}

/// Feeds `input` in the given chunk sizes (cycled), collecting every frame.
fn parse_chunked(
    limits: ParserLimits,
    input: &[u8],
    chunk_sizes: &[usize],
) -> Result<Vec<Frame>, ProtocolError> {
    let mut parser = CommandParser::new(limits);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    let mut sizes = chunk_sizes.iter().cycle();
    while fed < input.len() {
        let size = (*sizes.next().unwrap()).max(1);
        let end = (fed + size).min(input.len());
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        while let Some(frame) = parser.parse(&mut buf)? {
            frames.push(frame);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    assert_eq!(parser.consumed(), input.len() as u64);
    Ok(frames)
}

fn parse_all(limits: ParserLimits, input: &[u8]) -> Result<Vec<Frame>, ProtocolError> {
    parse_chunked(limits, input, &[input.len().max(1)])
}

fn commands(frames: &[Frame]) -> Vec<&Command> {
    frames.iter().filter_map(Frame::command).collect()
}

fn words(command: &Command) -> String {
    let words: Vec<String> = command
        .args
        .iter()
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    words.join(" ")
}

/// Every argument must be a slice of the frame's own bytes, not a copy.
fn assert_zero_copy(command: &Command) {
    let raw = command.raw.as_ptr_range();
    for arg in &command.args {
        let arg = arg.as_ptr_range();
        assert!(raw.start <= arg.start && arg.end <= raw.end);
    }
}

/// A small stream mixing every frame kind a replica link can carry.
fn mixed_replica_stream() -> Vec<u8> {
    let mut stream = BytesMut::new();
    stream.extend_from_slice(b"\n");
    encode_command(&["PING"], &mut stream);
    stream.extend_from_slice(b"\r\n*0\r\n*-1\r\n");
    encode_command(&["SET", "key:1", "", "PXAT", "1795469009768"], &mut stream);
    stream.extend_from_slice(b"  REPLCONF ACK\t1309 \r\n \t \nPING\n");
    encode_command(&[&b"bin\r\n\x00\xff"[..], b"$3\r\n"], &mut stream);
    stream.extend_from_slice(b"\n");
    stream.to_vec()
}

#[test]
fn mixed_stream_frames() {
    let frames = parse_all(ParserLimits::replica_stream(), &mixed_replica_stream()).unwrap();
    let kinds: Vec<String> = frames
        .iter()
        .map(|frame| match frame {
            Frame::Command(c) => format!("cmd {}", words(c)),
            Frame::Inline(c) => format!("inline {}", words(c)),
            Frame::Newline { raw } => format!("newline {}", raw.len()),
            Frame::Empty { raw } => format!("empty {}", raw.len()),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "newline 1",
            "cmd PING",
            "newline 2",
            "empty 4",
            "empty 5",
            "cmd SET key:1  PXAT 1795469009768",
            "inline REPLCONF ACK 1309",
            "empty 4",
            "inline PING",
            "cmd bin\r\n\0\u{fffd} $3\r\n",
            "newline 1",
        ]
    );
    let inline = frames[6].command().unwrap();
    assert_eq!(&inline.raw[..], b"  REPLCONF ACK\t1309 \r\n");
    assert!(inline.name_eq_ignore_case(b"replconf"));
    assert_eq!(inline.len(), 3);
    assert_eq!(inline.arg(2).map(|a| &a[..]), Some(&b"1309"[..]));
    assert_eq!(inline.arg(3), None);
    for frame in &frames {
        if let Some(command) = frame.command() {
            assert_zero_copy(command);
        }
    }
}

#[test]
fn byte_at_a_time_equals_one_shot() {
    let limits = ParserLimits::replica_stream();
    let mut inputs = vec![mixed_replica_stream()];
    inputs.push(fixture("redis-7.0.15/propagation-stream.bin"));
    inputs.push(fixture("redis-7.0.15/expiry-stream.bin"));
    for input in inputs {
        let one_shot = parse_all(limits, &input).unwrap();
        assert_eq!(parse_chunked(limits, &input, &[1]).unwrap(), one_shot);
        assert_eq!(
            parse_chunked(limits, &input, &[3, 7, 1, 64]).unwrap(),
            one_shot
        );
    }
}

#[test]
fn every_split_point_gives_the_same_frames() {
    let input = mixed_replica_stream();
    let limits = ParserLimits::replica_stream();
    let one_shot = parse_all(limits, &input).unwrap();
    for split in 0..=input.len() {
        let mut parser = CommandParser::new(limits);
        let mut buf = BytesMut::from(&input[..split]);
        let mut frames = Vec::new();
        while let Some(frame) = parser.parse(&mut buf).unwrap() {
            frames.push(frame);
        }
        buf.extend_from_slice(&input[split..]);
        while let Some(frame) = parser.parse(&mut buf).unwrap() {
            frames.push(frame);
        }
        assert_eq!(frames, one_shot, "split at {split}");
        assert!(buf.is_empty());
    }
}

/// Command counts per case-folded name, as the fixture sidecars list them.
fn name_counts(commands: &[&Command]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for command in commands {
        let name = String::from_utf8_lossy(command.name()).to_ascii_uppercase();
        *counts.entry(name).or_default() += 1;
    }
    counts
}

/// Parses a sidecar line such as "* Command counts (case-folded): APPEND 2, COPY 1".
fn documented_counts(sidecar: &str) -> BTreeMap<String, usize> {
    let line = sidecar
        .lines()
        .find(|line| line.contains("Command counts (case-folded):"))
        .unwrap();
    let list = line.split_once("):").unwrap().1;
    list.split(',')
        .map(|entry| {
            let (name, count) = entry.trim().rsplit_once(' ').unwrap();
            (name.to_string(), count.parse().unwrap())
        })
        .collect()
}

/// Parses a sidecar line such as "* MULTI…EXEC blocks: [2130,2239), [2283,2439)".
fn documented_ranges(sidecar: &str, label: &str) -> Vec<(u64, u64)> {
    let line = sidecar.lines().find(|line| line.contains(label)).unwrap();
    line.split('[')
        .skip(1)
        .map(|range| {
            let (start, end) = range.split_once(')').unwrap().0.split_once(',').unwrap();
            (start.trim().parse().unwrap(), end.trim().parse().unwrap())
        })
        .collect()
}

/// (start, end) stream offsets of each command, from `base`.
fn command_ranges(frames: &[Frame], base: u64) -> Vec<(u64, u64, &Command)> {
    let mut offset = base;
    let mut ranges = Vec::new();
    for frame in frames {
        let start = offset;
        offset += frame.wire_len() as u64;
        if let Some(command) = frame.command() {
            ranges.push((start, offset, command));
        }
    }
    ranges
}

fn multi_exec_blocks(ranges: &[(u64, u64, &Command)]) -> Vec<(u64, u64)> {
    let mut blocks = Vec::new();
    let mut open = None;
    for &(start, end, command) in ranges {
        if command.name_eq_ignore_case(b"MULTI") {
            open = Some(start);
        } else if command.name_eq_ignore_case(b"EXEC") {
            blocks.push((open.take().unwrap(), end));
        }
    }
    blocks
}

fn reencode(command: &Command) -> BytesMut {
    let mut out = BytesMut::new();
    encode_command(&command.args, &mut out);
    assert_eq!(out.len(), encoded_len(&command.args));
    out
}

#[test]
fn propagation_stream_fixture() {
    let input = fixture("redis-7.0.15/propagation-stream.bin");
    let sidecar = fixture_text("redis-7.0.15/propagation-stream.md");
    let frames = parse_all(ParserLimits::master_stream(), &input).unwrap();
    assert!(frames.iter().all(|f| matches!(f, Frame::Command(_))));
    let commands = commands(&frames);
    assert_eq!(commands.len(), 112);
    let total: usize = commands.iter().map(|c| c.raw.len()).sum();
    assert_eq!(total, 3940);
    assert_eq!(total, input.len());
    for command in &commands {
        assert_eq!(reencode(command), command.raw);
        assert_zero_copy(command);
    }
    assert_eq!(name_counts(&commands), documented_counts(&sidecar));

    let ranges = command_ranges(&frames, 0);
    assert_eq!(words(ranges[0].2), "SELECT 0");
    assert_eq!((ranges[0].0, ranges[0].1), (0, 23));
    let last = ranges.last().unwrap();
    assert_eq!(
        (words(last.2).as_str(), last.0, last.1),
        ("FLUSHALL", 3922, 3940)
    );
    assert_eq!(
        multi_exec_blocks(&ranges),
        documented_ranges(&sidecar, "MULTI…EXEC blocks:")
    );
}

#[test]
fn expiry_stream_fixture_matches_its_listing() {
    let input = fixture("redis-7.0.15/expiry-stream.bin");
    let sidecar = fixture_text("redis-7.0.15/expiry-stream.md");
    // "Byte i of this file is replication offset 209+i."
    let base = 209;
    let frames = parse_all(ParserLimits::master_stream(), &input).unwrap();
    let ranges = command_ranges(&frames, base);
    assert_eq!(ranges.len(), 68);
    assert_eq!(input.len(), 2167);

    // The sidecar's "Full command listing" table: | start | end | command |.
    let listing: Vec<(u64, u64, String)> = sidecar
        .split("## Full command listing")
        .nth(1)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let start = cells.get(1)?.parse().ok()?;
            let end = cells.get(2)?.parse().ok()?;
            Some((start, end, cells.get(3)?.to_string()))
        })
        .collect();
    assert_eq!(listing.len(), 68);
    for ((start, end, command), (doc_start, doc_end, doc_words)) in ranges.iter().zip(&listing) {
        assert_eq!(
            (*start, *end, words(command)),
            (*doc_start, *doc_end, doc_words.clone())
        );
        assert_eq!(reencode(command), command.raw);
    }

    let commands = commands(&frames);
    assert_eq!(name_counts(&commands), documented_counts(&sidecar));
    assert_eq!(
        multi_exec_blocks(&ranges),
        documented_ranges(&sidecar, "MULTI…EXEC blocks:")
    );
}

/// Command end offsets from a replica→master sidecar table (`| 0–14 | PING |`, with `×3`
/// rows standing for three equal commands).
fn documented_replica_ends(sidecar: &str) -> Vec<u64> {
    let mut ends = Vec::new();
    for line in sidecar.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some((start, end)) = cells.get(1).and_then(|range| range.split_once('–')) else {
            continue;
        };
        let (Ok(start), Ok(end)) = (start.parse::<u64>(), end.parse::<u64>()) else {
            continue;
        };
        let repeats = cells
            .get(2)
            .and_then(|described| described.rsplit_once('×'))
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .unwrap_or(1);
        let each = (end - start) / repeats;
        ends.extend((1..=repeats).map(|i| start + each * i));
    }
    ends
}

#[test]
fn real_replica_bytes_parse_fully() {
    let limits = ParserLimits::replica_stream();
    let conn1 = fixture("redis-7.0.15/replica-conn1-replica-to-master.bin");
    let sidecar1 = fixture_text("redis-7.0.15/replica-conn1-replica-to-master.md");
    let frames = parse_all(limits, &conn1).unwrap();
    let ranges = command_ranges(&frames, 0);
    assert_eq!(ranges.len(), 15);
    let ends: Vec<u64> = ranges.iter().map(|r| r.1).collect();
    assert_eq!(ends, documented_replica_ends(&sidecar1));
    assert_eq!(words(ranges[5].2), "PSYNC ? -1");
    let acks: Vec<String> = ranges[6..].iter().map(|r| words(r.2)).collect();
    assert_eq!(acks[0], "REPLCONF ACK 1000");
    assert_eq!(acks[8], "REPLCONF ACK 1416");

    let conn2 = fixture("redis-7.0.15/replica-conn2-replica-to-master.bin");
    let frames = parse_all(limits, &conn2).unwrap();
    let ranges = command_ranges(&frames, 0);
    assert_eq!(ranges.len(), 7);
    assert_eq!(words(ranges[5].2), format!("PSYNC {} 1417", "1".repeat(40)));
    assert_eq!((ranges[5].0, ranges[5].1), (212, 284));
    assert_eq!(words(ranges[6].2), "REPLCONF ACK 1457");

    // A loading replica interleaves bare newlines once a second.
    let mut with_keepalives = Vec::new();
    for (start, end, _) in command_ranges(&parse_all(limits, &conn1).unwrap(), 0) {
        with_keepalives.extend_from_slice(&conn1[start as usize..end as usize]);
        with_keepalives.push(b'\n');
    }
    let frames = parse_chunked(limits, &with_keepalives, &[5, 1, 16]).unwrap();
    assert_eq!(frames.len(), 30);
    assert_eq!(commands(&frames).len(), 15);
    let newlines = frames
        .iter()
        .filter(|f| matches!(f, Frame::Newline { raw } if &raw[..] == b"\n"))
        .count();
    assert_eq!(newlines, 15);
}

#[test]
fn master_stream_rejects_inline_but_accepts_empty_lines() {
    let frames = parse_all(
        ParserLimits::master_stream(),
        b"\n\r\n*1\r\n$4\r\nping\r\n\n",
    )
    .unwrap();
    assert_eq!(frames.len(), 4);
    assert!(matches!(&frames[1], Frame::Newline { raw } if &raw[..] == b"\r\n"));
    let error = parse_all(ParserLimits::master_stream(), b"\nPING\r\n").unwrap_err();
    assert_eq!(
        error,
        ProtocolError::InlineNotAllowed {
            found: b'P',
            offset: 1
        }
    );
    // A stream resumed mid-command, as after PSYNC at a wrong offset.
    let error = parse_all(ParserLimits::master_stream(), b"\r\n2\r\n").unwrap_err();
    assert_eq!(
        error,
        ProtocolError::InlineNotAllowed {
            found: b'2',
            offset: 2
        }
    );
    let error = parse_all(ParserLimits::master_stream(), b"\rX").unwrap_err();
    assert_eq!(
        error,
        ProtocolError::MissingLineFeed {
            found: b'X',
            offset: 1
        }
    );
}

#[test]
fn malformed_inputs_give_the_right_error() {
    use LengthKind::*;
    use ProtocolError::*;
    let small = ParserLimits {
        max_bulk_len: 100,
        max_args: 5,
        max_inline_len: 64,
        allow_inline: true,
    };
    let short_lines = ParserLimits {
        max_inline_len: 8,
        ..small
    };
    let table: Vec<(&[u8], ParserLimits, ProtocolError)> = vec![
        (
            b"*1\r\n$3\r\nGETxx",
            small,
            MissingBulkTerminator {
                bulk_len: 3,
                found: *b"xx",
                offset: 11,
            },
        ),
        (
            b"*1\r\n$3\r\nGET\r\r",
            small,
            MissingBulkTerminator {
                bulk_len: 3,
                found: *b"\r\r",
                offset: 11,
            },
        ),
        (
            b"*3\r\n$3\r\nSET\r\ngarbage",
            small,
            ExpectedBulk {
                found: b'g',
                offset: 13,
            },
        ),
        (b"*2\r\n$-2\r\n", small, NegativeBulkLength { offset: 4 }),
        (b"*2\r\n$-1\r\n", small, NegativeBulkLength { offset: 4 }),
        (b"*-2\r\n", small, NegativeArgCount { offset: 0 }),
        (b"*-10\r\n", small, NegativeArgCount { offset: 0 }),
        (
            b"*-0\r\n",
            small,
            LeadingZero {
                kind: ArgCount,
                offset: 0,
            },
        ),
        (
            b"*01\r\n",
            small,
            LeadingZero {
                kind: ArgCount,
                offset: 0,
            },
        ),
        (
            b"*1\r\n$00\r\n",
            small,
            LeadingZero {
                kind: BulkLen,
                offset: 4,
            },
        ),
        (
            b"*\r\n",
            small,
            EmptyLength {
                kind: ArgCount,
                offset: 0,
            },
        ),
        (
            b"*-\r\n",
            small,
            EmptyLength {
                kind: ArgCount,
                offset: 0,
            },
        ),
        (
            b"*1\r\n$\r\n",
            small,
            EmptyLength {
                kind: BulkLen,
                offset: 4,
            },
        ),
        (
            b"*1x\r\n",
            small,
            InvalidLengthByte {
                kind: ArgCount,
                byte: b'x',
                offset: 2,
            },
        ),
        (
            b"*+1\r\n",
            small,
            InvalidLengthByte {
                kind: ArgCount,
                byte: b'+',
                offset: 1,
            },
        ),
        (
            b"*1\r\n$3 \r\n",
            small,
            InvalidLengthByte {
                kind: BulkLen,
                byte: b' ',
                offset: 6,
            },
        ),
        (
            b"*1\r\n$1-\r\n",
            small,
            InvalidLengthByte {
                kind: BulkLen,
                byte: b'-',
                offset: 6,
            },
        ),
        (
            b"*1\rx",
            small,
            MissingLineFeed {
                found: b'x',
                offset: 3,
            },
        ),
        (
            b"*1\n",
            small,
            InvalidLengthByte {
                kind: ArgCount,
                byte: b'\n',
                offset: 2,
            },
        ),
        (
            b"*6\r\n",
            small,
            TooManyArgs {
                at_least: 6,
                limit: 5,
                offset: 0,
            },
        ),
        (
            b"*1\r\n$101\r\n",
            small,
            BulkTooLarge {
                at_least: 101,
                limit: 100,
                offset: 4,
            },
        ),
        // Rejected at the digit that crosses the limit, long before the line ends.
        (
            b"*1\r\n$99999999999999999999999999999999",
            ParserLimits::master_stream(),
            BulkTooLarge {
                at_least: 999_999_999,
                limit: 512 * 1024 * 1024,
                offset: 4,
            },
        ),
        (
            b"*1\r\n$18446744073709551616\r\n",
            ParserLimits {
                max_bulk_len: usize::MAX,
                ..small
            },
            BulkTooLarge {
                at_least: u64::MAX,
                limit: usize::MAX,
                offset: 4,
            },
        ),
        (
            b"*1\r\n:1\r\n",
            small,
            ExpectedBulk {
                found: b':',
                offset: 4,
            },
        ),
        (
            b"+OK\r\n",
            ParserLimits::master_stream(),
            InlineNotAllowed {
                found: b'+',
                offset: 0,
            },
        ),
        (b"SET a \"b c\"\n", small, InlineQuote { offset: 6 }),
        (b"ECHO 'x'\n", small, InlineQuote { offset: 5 }),
        (
            b"123456789\n",
            short_lines,
            InlineTooLong {
                limit: 8,
                offset: 8,
            },
        ),
        (
            b"123456789",
            short_lines,
            InlineTooLong {
                limit: 8,
                offset: 8,
            },
        ),
        (
            b"\n12345678\r\n",
            short_lines,
            InlineTooLong {
                limit: 8,
                offset: 9,
            },
        ),
    ];
    for (input, limits, expected) in table {
        for chunk in [input.len(), 1, 2] {
            let error = parse_chunked(limits, input, &[chunk]).unwrap_err();
            assert_eq!(
                error,
                expected,
                "input {:?} chunk {chunk}",
                input.escape_ascii()
            );
        }
        assert!(!expected.to_string().is_empty());
    }
    // Lines exactly at the inline limit pass.
    let frames = parse_all(short_lines, b"1234567\r\n12345678\n").unwrap();
    assert_eq!(commands(&frames).len(), 2);
}

#[test]
fn error_messages_say_what_and_where() {
    let error = parse_all(
        ParserLimits::master_stream(),
        b"*1\r\n$4\r\nping\r\n*2\r\n$3\r\nDEL\r\n$5\r\nhelloXY",
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "expected CRLF after bulk of 5 bytes at byte 36, found \"XY\""
    );
    let error = parse_all(ParserLimits::master_stream(), b"*1\r\n$\x01").unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid byte '\\x01' in bulk length at byte 5"
    );
}

#[test]
fn an_error_poisons_the_parser() {
    let mut parser = CommandParser::new(ParserLimits::master_stream());
    let mut buf = BytesMut::from(&b"*1\r\n$1\r\nxyz"[..]);
    let first = parser.parse(&mut buf).unwrap_err();
    assert_eq!(parser.failure(), Some(&first));
    assert_eq!(buf.len(), 11, "the buffer is left for logging");
    buf.clear();
    buf.extend_from_slice(b"*1\r\n$4\r\nping\r\n");
    assert_eq!(parser.parse(&mut buf).unwrap_err(), first);
}

#[test]
fn a_truncated_buffer_is_reported_not_a_panic() {
    let mut parser = CommandParser::new(ParserLimits::master_stream());
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1"[..]);
    assert_eq!(parser.parse(&mut buf).unwrap(), None);
    buf.truncate(3);
    assert!(matches!(
        parser.parse(&mut buf),
        Err(ProtocolError::BufferShrank { .. })
    ));
}

#[test]
fn empty_multibulk_counts_its_bytes() {
    let mut parser = CommandParser::new(ParserLimits::master_stream());
    let mut buf = BytesMut::from(&b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n"[..]);
    let empty = parser.parse(&mut buf).unwrap().unwrap();
    assert_eq!(
        empty,
        Frame::Empty {
            raw: Bytes::from_static(b"*0\r\n")
        }
    );
    let null = parser.parse(&mut buf).unwrap().unwrap();
    assert_eq!(null.wire_len(), 5);
    assert!(null.command().is_none());
    assert_eq!(parser.consumed(), 9);
    let ping = parser.parse(&mut buf).unwrap().unwrap();
    assert!(ping.command().unwrap().name_eq_ignore_case(b"ping"));
    assert_eq!(parser.parse(&mut buf).unwrap(), None);
}

/// A large argument arriving in socket-sized reads must be examined once, not re-scanned
/// from the frame start on every read.
#[test]
fn large_argument_in_small_reads_is_scanned_once() {
    let value = vec![b'v'; 4 * 1024 * 1024];
    let args: [&[u8]; 3] = [b"SET", b"big", &value];
    let mut input = BytesMut::new();
    encode_command(&args, &mut input);

    let mut parser = CommandParser::new(ParserLimits::master_stream());
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut polls = 0;
    for chunk in input.chunks(16 * 1024) {
        buf.extend_from_slice(chunk);
        polls += 1;
        while let Some(frame) = parser.parse(&mut buf).unwrap() {
            frames.push(frame);
        }
    }
    assert!(polls >= 256);
    assert_eq!(frames.len(), 1);
    let command = frames[0].command().unwrap();
    assert_eq!(command.arg(2).unwrap().len(), value.len());
    assert_eq!(command.raw.len(), input.len());
    assert!(
        parser.bytes_examined() < 2 * input.len() as u64,
        "examined {} bytes of {}",
        parser.bytes_examined(),
        input.len()
    );
    assert!(parser.bytes_examined() >= input.len() as u64);
}

proptest! {
    #[test]
    fn random_argv_round_trips_with_random_chunking(
        commands in prop::collection::vec(
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..8),
            1..12,
        ),
        chunk_sizes in prop::collection::vec(1usize..50, 1..10),
        keepalive_every in 0usize..4,
    ) {
        let mut input = BytesMut::new();
        let mut expected = Vec::new();
        for (index, args) in commands.iter().enumerate() {
            encode_command(args, &mut input);
            expected.push(Some(args.clone()));
            if keepalive_every > 0 && index % keepalive_every == 0 {
                input.extend_from_slice(b"\n");
                expected.push(None);
            }
        }
        let frames = parse_chunked(ParserLimits::master_stream(), &input, &chunk_sizes)
            .unwrap();
        let parsed: Vec<Option<Vec<Vec<u8>>>> = frames
            .iter()
            .map(|frame| match frame {
                Frame::Command(command) => {
                    Some(command.args.iter().map(|arg| arg.to_vec()).collect())
                }
                _ => None,
            })
            .collect();
        prop_assert_eq!(parsed, expected);
        for frame in &frames {
            if let Frame::Command(command) = frame {
                prop_assert_eq!(&reencode(command)[..], &command.raw[..]);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_chunking_never_matters(
        input in prop::collection::vec(
            prop_oneof![
                Just(b'*'), Just(b'$'), Just(b'\r'), Just(b'\n'), Just(b'-'),
                Just(b'0'), Just(b'1'), Just(b'3'), Just(b' '), Just(b'"'), any::<u8>(),
            ],
            0..80,
        ),
        chunk in 1usize..9,
        allow_inline in any::<bool>(),
    ) {
        let limits = ParserLimits {
            max_bulk_len: 40,
            max_args: 6,
            max_inline_len: 20,
            allow_inline,
        };
        // Compare outcomes up to the point where input runs out.
        let outcome = |chunk: usize| {
            let mut parser = CommandParser::new(limits);
            let mut buf = BytesMut::new();
            let mut frames = Vec::new();
            for piece in input.chunks(chunk) {
                buf.extend_from_slice(piece);
                loop {
                    match parser.parse(&mut buf) {
                        Ok(Some(frame)) => frames.push(frame),
                        Ok(None) => break,
                        Err(error) => return (frames, Some(error)),
                    }
                }
            }
            (frames, None)
        };
        let whole = outcome(input.len().max(1));
        prop_assert_eq!(outcome(chunk), whole.clone());
        let consumed: usize = whole.0.iter().map(Frame::wire_len).sum();
        prop_assert!(consumed <= input.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Wherever the single-pass reader answers, even on damaged bytes, it agrees with the
    /// resumable parser fed one byte at a time (which never takes the single pass), and it
    /// answers for every whole command.
    #[test]
    fn single_pass_reader_agrees_with_the_resumable_parser(
        args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 1..5),
        damage in prop::collection::vec((any::<bool>(), any::<prop::sample::Index>(), prop_oneof![
            Just(b'*'), Just(b'$'), Just(b'\r'), Just(b'\n'), Just(b'-'), Just(b'0'),
            Just(b'1'), Just(b'9'), any::<u8>(),
        ]), 0..3),
        cut in any::<prop::sample::Index>(),
        trailing in prop::collection::vec(any::<u8>(), 0..6),
    ) {
        let limits = ParserLimits {
            max_bulk_len: 10,
            max_args: 3,
            max_inline_len: 20,
            allow_inline: false,
        };
        let mut input = BytesMut::new();
        encode_command(&args, &mut input);
        let whole = input.len();
        let within_limits = args.len() <= 3 && args.iter().all(|arg| arg.len() <= 10);
        let mut spans = Vec::new();
        if within_limits {
            prop_assert_eq!(whole_command(&input, 0, &limits, &mut spans), Some(whole));
        }
        let mut input = input.to_vec();
        // Mostly hit the framing bytes, where a missed check would hide.
        let framing: Vec<usize> = (0..input.len())
            .filter(|&i| matches!(input[i], b'*' | b'$' | b'\r' | b'\n'))
            .collect();
        for (on_framing, at, byte) in &damage {
            let at = if *on_framing {
                framing[at.index(framing.len())]
            } else {
                at.index(input.len())
            };
            input[at] = *byte;
        }
        input.truncate(cut.index(input.len() + 1));
        input.extend_from_slice(&trailing);

        spans.clear();
        let Some(end) = whole_command(&input, 0, &limits, &mut spans) else {
            return Ok(());
        };
        let mut parser = CommandParser::new(limits);
        let mut buf = BytesMut::new();
        let mut frame = None;
        for &byte in &input {
            buf.put_u8(byte);
            if let Ok(Some(found)) = parser.parse_raw(&mut buf) {
                frame = Some(found);
                break;
            }
        }
        let frame = frame.expect("the resumable parser finds the frame");
        prop_assert_eq!(frame.kind, FrameKind::Command);
        prop_assert_eq!(frame.raw.len(), end);
        prop_assert_eq!(parser.arg_spans(), &spans[..]);
    }
}
