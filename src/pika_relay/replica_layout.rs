//! Where a Pika replica's own binlog will end once it has applied a response the relay sends.
//!
//! A replica re-serializes every command it applies into an item of its own (a 34-byte header
//! and the command in canonical RESP), writes it in 64 KiB blocks, and rolls to a new file
//! before an item once its file has grown past its `binlog-file-size`. For the commands a
//! master logs and the forms the relay emits, that re-serialization is a pure function of the
//! arguments, so from an exact `(replica, master)` pair the replica's position after each later
//! response can be computed before the response is sent. The relay writes those predicted
//! pairs ahead of the sends, which is what lets a proxy killed at any instant translate the
//! position the replica resumes from; every ack then checks the prediction.
//!
//! Commands whose re-serialization depends on the replica's clock (`setex`, `expire`, `SET … EX`
//! and their millisecond forms) make the position unpredictable: the answer is `None`, never a
//! guess.

use std::collections::VecDeque;

use super::offset_map::Pair;
use crate::engine::PikaRelease;
use crate::pika::binlog_file::{BLOCK_SIZE, RECORD_HEADER_LEN};
use crate::pika::item::ITEM_HEADER_LEN;
use crate::pika::messages::BinlogPosition;
use crate::resp::{encoded_len, encoded_len_of, whole_command, ParserLimits};

/// How a replica lays out its binlog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaLayout {
    /// The replica's `binlog-file-size`: before an item, a file longer than this is closed and
    /// the item starts the next file at offset 0.
    pub file_size: u64,
    /// The replica's release line (3.5 and 4.0 re-serialize `pexpireat` differently).
    pub release: PikaRelease,
}

impl ReplicaLayout {
    /// A replica of `release` with Pika's default file size.
    #[cfg(test)]
    pub fn new(release: PikaRelease) -> Self {
        ReplicaLayout {
            file_size: crate::config::DEFAULT_BINLOG_FILE_SIZE,
            release,
        }
    }
}

impl ReplicaLayout {
    /// The producer position after the replica writes one item of `item_len` bytes at `at`.
    pub fn after_item(&self, at: BinlogPosition, item_len: usize) -> BinlogPosition {
        let mut position = at;
        if position.offset > self.file_size {
            position = BinlogPosition::new(position.filenum.wrapping_add(1), 0);
        }
        BinlogPosition::new(position.filenum, offset_after(position.offset, item_len))
    }

    /// The producer position after the replica applies every item in `contents` (each an
    /// item's content: one or more RESP commands), starting at `at`; `None` when some command
    /// is re-serialized in a way that depends on the replica (see the module docs) or does not
    /// parse.
    #[cfg(test)]
    pub fn after_contents<'a>(
        &self,
        at: BinlogPosition,
        contents: impl IntoIterator<Item = &'a [u8]>,
    ) -> Option<BinlogPosition> {
        let mut spans = Vec::new();
        contents.into_iter().try_fold(at, |position, content| {
            self.after_content(position, content, &mut spans)
        })
    }

    /// [`ReplicaLayout::after_content`] for an item whose commands were already split: each
    /// command as its arguments' positions in `raw` (the rewrite's own parse, read again).
    pub fn after_commands<'s>(
        &self,
        at: BinlogPosition,
        raw: &[u8],
        commands: impl IntoIterator<Item = &'s [(usize, usize)]>,
    ) -> Option<BinlogPosition> {
        let mut position = at;
        for spans in commands {
            for_each_own_item(raw, spans, self.release, |len| {
                position = self.after_item(position, len);
            })?;
        }
        Some(position)
    }

    /// [`ReplicaLayout::after_contents`] for one item's content, with `spans` as scratch space
    /// (kept by the caller so that the per-item path does not allocate).
    pub fn after_content(
        &self,
        at: BinlogPosition,
        content: &[u8],
        spans: &mut Vec<(usize, usize)>,
    ) -> Option<BinlogPosition> {
        let mut position = at;
        let limits = ParserLimits::replica_stream();
        let mut from = 0;
        while from < content.len() {
            spans.clear();
            let end = whole_command(content, from, &limits, spans)?;
            for_each_own_item(content, spans, self.release, |len| {
                position = self.after_item(position, len);
            })?;
            from = end;
        }
        Some(position)
    }
}

/// The replica positions one link predicts for the responses it forwards, checked by the acks.
///
/// The chain starts at an exact replica position (a resume pair, or an identical boundary before
/// the first rewrite) and moves with every response forwarded. A response whose position cannot
/// be predicted ends the chain, and so does an ack that disagrees with its prediction (logged by
/// the caller): from then on the link learns positions from acks only, until the next session.
#[derive(Debug, Default)]
pub struct Prediction {
    /// The replica's position after the last response forwarded, while the chain holds.
    next_start: Option<BinlogPosition>,
    /// Predicted pairs of the responses forwarded and not yet acknowledged, oldest first.
    outstanding: VecDeque<Pair>,
}

/// An ack that disagrees with the position predicted for its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Misprediction {
    /// What the chain predicted.
    pub predicted: BinlogPosition,
    /// What the replica acknowledged.
    pub acked: BinlogPosition,
}

impl Prediction {
    /// A chain that starts at the replica's exact position `replica`.
    pub fn starting_at(replica: BinlogPosition) -> Self {
        Prediction {
            next_start: Some(replica),
            outstanding: VecDeque::new(),
        }
    }

    /// Where the replica is after the last response forwarded, while the chain holds.
    pub fn next_start(&self) -> Option<BinlogPosition> {
        self.next_start
    }

    /// A response is forwarded whose items leave the replica at `items` (each item's master
    /// END with the replica's position after it; `None`: not predictable, which ends the
    /// chain). Returns the pairs to record, while the chain holds.
    pub fn forwarded(&mut self, items: Option<Vec<Pair>>) -> Option<Vec<Pair>> {
        self.next_start?;
        let Some(last) = items.as_ref().and_then(|i| i.last().copied()) else {
            self.end();
            return None;
        };
        self.next_start = Some(last.replica);
        self.outstanding.push_back(last);
        items
    }

    /// The replica acknowledged the response ending at master `master_end` at its own
    /// `replica_end`. Responses acknowledged without a prediction (forwarded before the chain
    /// or after it ended) are not checked.
    pub fn acked(
        &mut self,
        replica_end: BinlogPosition,
        master_end: BinlogPosition,
    ) -> Result<(), Misprediction> {
        while self
            .outstanding
            .front()
            .is_some_and(|p| p.master < master_end)
        {
            self.outstanding.pop_front();
        }
        match self.outstanding.front() {
            Some(p) if p.master == master_end => {
                let predicted = p.replica;
                self.outstanding.pop_front();
                if predicted == replica_end {
                    Ok(())
                } else {
                    self.end();
                    Err(Misprediction {
                        predicted,
                        acked: replica_end,
                    })
                }
            }
            _ => Ok(()),
        }
    }

    /// Stops predicting.
    pub fn end(&mut self) {
        self.next_start = None;
        self.outstanding.clear();
    }
}

/// The file offset after an item of `item_len` bytes is written at `offset`: fragments of at
/// most a block minus a record header, and a block tail shorter than a header zero-filled.
pub fn offset_after(offset: u64, item_len: usize) -> u64 {
    let block = BLOCK_SIZE as u64;
    let header = RECORD_HEADER_LEN as u64;
    let mut offset = offset;
    let mut left = item_len as u64;
    loop {
        let leftover = block - offset % block;
        if leftover < header {
            offset += leftover;
        }
        let avail = block - offset % block - header;
        let fragment = left.min(avail);
        offset += header + fragment;
        left -= fragment;
        if left == 0 {
            return offset;
        }
    }
}

/// Calls `item` with the length of each item the replica writes for one command (`spans`: its
/// arguments in `content`): usually one item; multi-key `del` and `mset` are written one key per
/// item. `None` when the replica rewrites the command with its own clock.
fn for_each_own_item(
    content: &[u8],
    spans: &[(usize, usize)],
    release: PikaRelease,
    mut item: impl FnMut(usize),
) -> Option<()> {
    let arg = |i: usize| spans.get(i).map(|&(s, e)| &content[s..e]);
    let name = arg(0)?;
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    let len_of = |args: &[&[u8]]| ITEM_HEADER_LEN + encoded_len(args);
    // Most commands are written as they are: only names of these lengths need a look.
    if matches!(name.len(), 3..=7 | 9) {
        if is("setex") || is("psetex") || is("expire") || is("pexpire") {
            return None;
        }
        if is("pexpireat") && release == PikaRelease::V3 {
            // 3.5 writes `expireat k <ms / 1000>`.
            let ms: i64 = std::str::from_utf8(arg(2)?).ok()?.parse().ok()?;
            let seconds = (ms / 1000).to_string();
            item(len_of(&[b"expireat", arg(1)?, seconds.as_bytes()]));
            return Some(());
        }
        if is("set") && spans.len() > 3 {
            // `SET … EX/PX` becomes `pksetexat` with the replica's clock, unless NX/XX keeps it
            // verbatim (as captured from 3.5.4).
            let has = |opts: [&[u8]; 2]| {
                (3..spans.len())
                    .filter_map(arg)
                    .any(|a| opts.iter().any(|o| a.eq_ignore_ascii_case(o)))
            };
            if has([b"ex", b"px"]) && !has([b"nx", b"xx"]) {
                return None;
            }
        }
        if is("del") && spans.len() > 2 {
            for key in (1..spans.len()).filter_map(arg) {
                item(len_of(&[name, key]));
            }
            return Some(());
        }
        if is("mset") {
            if spans.len() % 2 == 0 {
                return None;
            }
            for pair in (1..spans.len()).step_by(2) {
                item(len_of(&[b"set", arg(pair)?, arg(pair + 1)?]));
            }
            return Some(());
        }
    }
    item(ITEM_HEADER_LEN + encoded_len_of(spans.iter().map(|&(s, e)| e - s)));
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pika::binlog_file::BinlogFileWriter;
    use crate::resp::encode_command;
    use bytes::BytesMut;

    fn resp(args: &[&str]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_command(args, &mut out);
        out.to_vec()
    }

    /// The calculation agrees with the writer that lays files out as Pika does, across block
    /// boundaries, tails shorter than a header and items larger than a block.
    #[test]
    fn offsets_agree_with_the_binlog_writer() {
        let mut writer = BinlogFileWriter::new(0);
        let mut rng = 12345u64;
        for i in 0..3000 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let content_len = match i % 50 {
                0 => 70_000 + (rng >> 40) as usize % 70_000,
                1 => 65_536 - ITEM_HEADER_LEN - 2 * RECORD_HEADER_LEN,
                _ => (rng >> 33) as usize % 900,
            };
            let before = writer.position();
            let content = vec![b'x'; content_len];
            writer.append_item(0, 0, i, &content).unwrap();
            assert_eq!(
                offset_after(before, ITEM_HEADER_LEN + content_len),
                writer.position(),
                "item {i} of {content_len} bytes at {before}"
            );
        }
    }

    /// Replayed item by item, the replicas' own binlogs captured from real Pika 3.5.4 and
    /// 4.0.1 end exactly where the calculation says.
    #[test]
    fn real_replica_binlogs_end_where_predicted() {
        use crate::pika::binlog_file::read_binlog_file;
        use crate::pika::item::BinlogItem;
        for (file, release) in [
            (
                "pika-3.5.4/session1-replica-binlog-write2file0.bin",
                PikaRelease::V3,
            ),
            (
                "pika-4.0.1/session1-replica-binlog-write2file0.bin",
                PikaRelease::V4,
            ),
        ] {
            let layout = ReplicaLayout::new(release);
            let data = crate::fixtures::read(file).unwrap();
            let records = read_binlog_file(&data).unwrap();
            let items: Vec<_> = records
                .iter()
                .filter_map(|r| Some((r, BinlogItem::parse(&r.item).ok()?)))
                .collect();
            assert!(items.len() > 5, "{file}: {} items", items.len());
            for pair in items.windows(2) {
                let (before, after) = (&pair[0].0, &pair[1]);
                let Some(predicted) =
                    layout.after_contents(BinlogPosition::new(0, before.end), [after.1.content])
                else {
                    panic!("{file}: {:?}", String::from_utf8_lossy(after.1.content));
                };
                assert_eq!(predicted, BinlogPosition::new(0, after.0.end), "{file}");
            }
        }
    }

    fn pair(replica: u64, master: u64) -> Pair {
        Pair {
            replica: BinlogPosition::new(0, replica),
            master: BinlogPosition::new(0, master),
        }
    }

    #[test]
    fn a_chain_records_each_response_and_the_acks_check_it() {
        let pos = |o| BinlogPosition::new(0, o);
        let mut chain = Prediction::starting_at(pos(500));
        let first = vec![pair(700, 800), pair(880, 900)];
        assert_eq!(chain.forwarded(Some(first.clone())), Some(first));
        chain.forwarded(Some(vec![pair(990, 1000)])).unwrap();
        assert_eq!(chain.next_start(), Some(pos(990)));
        assert_eq!(chain.acked(pos(880), pos(900)), Ok(()));
        assert_eq!(
            chain.acked(pos(991), pos(1000)),
            Err(Misprediction {
                predicted: pos(990),
                acked: pos(991)
            })
        );
        assert_eq!(chain.next_start(), None);
        assert_eq!(chain.forwarded(Some(vec![pair(1090, 1100)])), None);
    }

    #[test]
    fn an_unpredictable_response_ends_the_chain() {
        let pos = |o| BinlogPosition::new(0, o);
        let mut chain = Prediction::starting_at(pos(0));
        assert_eq!(chain.forwarded(None), None);
        assert_eq!(chain.next_start(), None);
        assert_eq!(chain.acked(pos(7), pos(50)), Ok(()));
        assert!(Prediction::default()
            .forwarded(Some(vec![pair(60, 50)]))
            .is_none());
    }

    #[test]
    fn a_file_past_its_size_rolls_before_the_next_item() {
        let layout = ReplicaLayout {
            file_size: 1000,
            release: PikaRelease::V3,
        };
        let at = BinlogPosition::new(3, 990);
        assert_eq!(layout.after_item(at, 50), BinlogPosition::new(3, 1048));
        let past = BinlogPosition::new(3, 1001);
        assert_eq!(layout.after_item(past, 50), BinlogPosition::new(4, 58));
    }

    #[test]
    fn commands_already_split_predict_what_their_content_does() {
        let limits = ParserLimits::replica_stream();
        for release in [PikaRelease::V3, PikaRelease::V4] {
            let layout = ReplicaLayout::new(release);
            let at = BinlogPosition::new(2, 700);
            for content in [
                resp(&["hincrby", "h", "n", "1"]),
                [
                    resp(&["set", "k", "v"]),
                    resp(&["expireat", "k", "1800000000"]),
                ]
                .concat(),
                resp(&["del", "a", "b", "c"]),
                resp(&["pexpireat", "k", "1800000000123"]),
                resp(&["setex", "k", "10", "v"]),
            ] {
                // As the rewrite splits an item: spans into the whole body around it.
                let body = [b"header".as_slice(), &content].concat();
                let (mut spans, mut commands, mut from) = (Vec::new(), Vec::new(), 6);
                while from < body.len() {
                    let first = spans.len();
                    from = whole_command(&body, from, &limits, &mut spans).unwrap();
                    commands.push(first..spans.len());
                }
                let split =
                    layout.after_commands(at, &body, commands.iter().map(|r| &spans[r.clone()]));
                let mut scratch = Vec::new();
                assert_eq!(
                    split,
                    layout.after_content(at, &content, &mut scratch),
                    "{content:?}"
                );
            }
        }
    }

    #[test]
    fn commands_become_one_item_each_and_multi_key_forms_one_per_key() {
        let layout = ReplicaLayout::new(PikaRelease::V3);
        let at = BinlogPosition::new(0, 100);
        let one = resp(&["pksetexat", "k", "1800000000", "v"]);
        let two = [
            resp(&["set", "k", "v"]),
            resp(&["expireat", "k", "1800000000"]),
        ]
        .concat();
        let expected = layout.after_item(
            layout.after_item(at, ITEM_HEADER_LEN + one.len()),
            ITEM_HEADER_LEN + resp(&["set", "k", "v"]).len(),
        );
        let expected = layout.after_item(
            expected,
            ITEM_HEADER_LEN + resp(&["expireat", "k", "1800000000"]).len(),
        );
        assert_eq!(
            layout.after_contents(at, [one.as_slice(), two.as_slice()]),
            Some(expected)
        );
        let del = resp(&["del", "a", "bb"]);
        let per_key = layout.after_item(
            layout.after_item(at, ITEM_HEADER_LEN + resp(&["del", "a"]).len()),
            ITEM_HEADER_LEN + resp(&["del", "bb"]).len(),
        );
        assert_eq!(layout.after_contents(at, [del.as_slice()]), Some(per_key));
    }

    #[test]
    fn commands_the_replica_rewrites_with_its_clock_are_not_predicted() {
        let layout = ReplicaLayout::new(PikaRelease::V3);
        let at = BinlogPosition::new(0, 0);
        for cmd in [
            resp(&["setex", "k", "10", "v"]),
            resp(&["SET", "k", "v", "EX", "10"]),
            resp(&["expire", "k", "10"]),
        ] {
            assert_eq!(layout.after_contents(at, [cmd.as_slice()]), None);
        }
        assert_eq!(layout.after_contents(at, [b"garbage".as_slice()]), None);
        // `pexpireat` is clock-free: 3.5 writes it as `expireat` in seconds, 4.0 verbatim.
        let pexpireat = resp(&["pexpireat", "k", "1800000000123"]);
        let as_expireat = resp(&["expireat", "k", "1800000000"]);
        assert_eq!(
            layout.after_contents(at, [pexpireat.as_slice()]),
            Some(layout.after_item(at, ITEM_HEADER_LEN + as_expireat.len()))
        );
        assert_eq!(
            ReplicaLayout::new(PikaRelease::V4).after_contents(at, [pexpireat.as_slice()]),
            Some(layout.after_item(at, ITEM_HEADER_LEN + pexpireat.len()))
        );
        for kept in [
            resp(&["set", "k", "v", "NX"]),
            resp(&["SET", "k", "v", "EX", "30", "NX"]),
        ] {
            assert!(layout.after_contents(at, [kept.as_slice()]).is_some());
        }
    }
}
