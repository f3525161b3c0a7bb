//! Runs the items of one BinlogSync response through the rewrite engine.
//!
//! Each non-empty entry's `binlog` is a 34-byte header plus RESP content (normally one command;
//! a Pika replica runs every complete command it finds, so several are allowed). Every command
//! goes through [`engine::rewrite`] with the header's `exec_time` × 1000 as the execution time.
//! When every command is forwarded the item keeps its original bytes; otherwise the item's
//! content becomes the concatenation of what was forwarded and what the engine emitted, all in
//! the same item, with the header's `content_len` updated. The entry's `binlog_offset` stays the
//! master's END: the replica copies it into `ack_range_start`, which the master checks.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::answer_journal::Answers;
use super::inflight::Forwarded;
use super::link::input::decode_response;
use super::offset_map::Pair;
use super::replica_layout::ReplicaLayout;
use super::stats;
use crate::engine::args::{Args, FrameArgs};
use crate::engine::{
    self, Answered, AtRisk, Dialect, Emit, OriginalFrame, PikaRelease, Policy, StreamState,
};
use crate::families::{Family, FamilySwitches};
use crate::pika::item::{put_item, BinlogItem, ITEM_HEADER_LEN};
use crate::pika::messages::{
    BinlogPosition, BinlogSyncRecord, BinlogSyncSplice, InnerResponse, LogicalOffset, MessageError,
    SplicePaused,
};
use crate::resp::{whole_command, CommandParser, FrameKind, ParserLimits};
use crate::table::ExpiryTable;

/// The result of rewriting one response.
#[derive(Debug, Default)]
pub struct RewrittenResponse {
    /// The new body, or `None` when every item is unchanged (forward the original frame).
    pub body: Option<Vec<u8>>,
    /// What to remember until the replica acks it; `None` for a keepalive-only response.
    pub forwarded: Option<Forwarded>,
    /// Items whose content could not be parsed (forwarded unchanged).
    pub unparsable_items: usize,
    /// Entries that extend or remove the TTL of a key a lagging replica may already have dropped.
    pub at_risk: Vec<(Option<Family>, AtRisk)>,
    /// For each item, its master END and the replica's binlog position once it has applied the
    /// item as sent, when a prediction was asked for and every item's re-serialization is known
    /// (see `replica_layout`): a replica stopped part-way through the response is at one of them.
    pub predicted: Option<Vec<Pair>>,
}

/// Keys written while a warm-up scan runs, each with the master END position of the last entry
/// that wrote it: the merge needs to know whether that entry was already in the master's data
/// when the scan started (see `warmup::merge`).
pub type Touched = HashMap<(u32, Vec<u8>), BinlogPosition>;

/// The engine state of one upstream link (one replica, one DB).
#[derive(Debug)]
pub struct LinkRewriter {
    table: Arc<ExpiryTable>,
    state: StreamState,
    policy: Policy,
    /// Keys written by entries while a warm-up scan result waits to be merged.
    touched: Option<Touched>,
    /// While `touched` is recorded: the end of the last entry that may have deleted keys it
    /// does not name (FLUSHDB, FLUSHALL, SWAPDB, PKPATTERNMATCHDEL).
    wiped: Option<BinlogPosition>,
    /// Master end position of the item being rewritten (for `touched`).
    item_end: BinlogPosition,
    entries_since_prune: u32,
    /// Entries until the next prune: [`PRUNE_EVERY`], or half the table's size after the last
    /// prune when that is more.
    prune_after: u32,
    tally: stats::EntryTally,
    /// Whether decisions count in `pika_ttl_proxy_entries_total` (not for a standby reader's
    /// table: its entries are counted by the link that forwards them).
    counting: bool,
    /// Reused per item so the hot path does not allocate for them: the content parser and its
    /// buffer (for content the single-pass reader leaves to it), the item's frames with their
    /// argument ranges (the engine reads arguments in place, see [`FrameArgs`]), and a changed
    /// item's new content and encoding.
    parser: CommandParser,
    scratch: BytesMut,
    frames: ItemFrames,
    content: BytesMut,
    item: Vec<u8>,
    /// Set while entries are replayed only to bring the table forward: they are not counted.
    replaying: bool,
    /// Scratch space of the replica-position prediction (argument spans of one command).
    layout_spans: Vec<(usize, usize)>,
    /// The key of the item a rewrite paused at.
    paused_key: Vec<u8>,
    /// How the look-up's answer for that key is read.
    paused_kind: engine::LookupKind,
    /// Whether that item writes the key's string.
    paused_writes_string: bool,
    /// The item being rewritten is decided without pausing (its look-up is over).
    decide_next: bool,
    /// ...and its look-up's answer was recorded (else it is decided without one).
    answered_next: bool,
    /// ...and no removal came between the item and the answer: a Pika 3.x answer (which
    /// counted at most one type under the name) then also says the name holds the one type
    /// the item writes, which nothing since removed (see `engine::record_single_type`).
    answered_one_type_next: bool,
    /// ...or a later command redefines its key ([`engine::redefines`]): passing it undecided
    /// leaves nothing a replica keeps.
    superseded_next: bool,
    /// Items ending at or before this position are decided without look-ups (the link is
    /// replaying history the master is far past).
    look_ups_after: BinlogPosition,
    /// What look-ups found for items a catch-up replays (see `answer_journal`).
    journaled: Answers,
    /// The commands of a changed item's new content as they were written, so that predicting
    /// the replica's position after it does not parse it again: each command's arguments'
    /// positions in `content`, as ranges of `written_spans`. `written_known` is false when the
    /// item holds a frame that is not a command (the content is then parsed).
    written_spans: Vec<(usize, usize)>,
    written_commands: Vec<Range<usize>>,
    written_known: bool,
}

/// What one item's rewrite did.
enum ItemStep {
    Same,
    Changed,
    Paused,
}

/// How far the rewrite of one response has come; kept while the response waits for a look-up.
#[derive(Debug, Default)]
pub(crate) struct ResponseProgress {
    next_record: usize,
    out: RewrittenResponse,
    splice: SplicePaused,
    predicted_at: Option<BinlogPosition>,
    predicted: Vec<Pair>,
    first: Option<(LogicalOffset, u32)>,
    last: Option<(LogicalOffset, u32)>,
    items: usize,
    decide_next: bool,
    answered_next: bool,
    answered_one_type_next: bool,
    superseded_next: bool,
}

impl ResponseProgress {
    /// Index (in the response's records) of the item the rewrite stopped before.
    pub(crate) fn next_record(&self) -> usize {
        self.next_record
    }

    /// Stops predicting replica positions for the rest of the response.
    pub(crate) fn drop_prediction(&mut self) {
        self.predicted_at = None;
    }
}

/// A response's rewrite, stopped before the item whose key needs a look-up.
#[derive(Debug)]
pub(crate) struct PausedRewrite {
    /// Where to go on from.
    pub progress: ResponseProgress,
    /// The key the item writes, and its DB.
    pub key: Vec<u8>,
    pub db: u32,
    /// How the answer about the key is read.
    pub kind: crate::engine::LookupKind,
    /// The item writes the string under the key ([`engine::writes_string`]).
    pub writes_string: bool,
    /// The item's master END.
    pub end: BinlogPosition,
    /// The item's exec time, ms.
    pub exec_ms: i64,
}

/// What [`LinkRewriter::rewrite_records_from`] did.
#[derive(Debug)]
pub(crate) enum RewriteStep {
    Done(RewrittenResponse),
    // Boxed: a pause is rare, and `Done` is moved on every response.
    Paused(Box<PausedRewrite>),
}

/// What [`LinkRewriter::items_name_key`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyScan {
    /// A command names the key, or may touch it.
    pub named: bool,
    /// ...and the first that does redefines it ([`engine::redefines`]),
    pub superseded: bool,
    /// ...or gives it a TTL wherever it exists ([`engine::resets_ttl`]).
    pub ttl_reset: bool,
    /// The commands naming it that the kind of answer reads past.
    pub between: engine::Between,
    /// The items reach the position asked about.
    pub reached: bool,
    /// END of the last item looked at.
    pub last: BinlogPosition,
}

/// What [`LinkRewriter::replay_response`] did with one BinlogSync response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// END of the response's first item, and of its last (what an ack names).
    pub first: Option<LogicalOffset>,
    /// END of the response's last item.
    pub last: Option<LogicalOffset>,
    /// The item ending exactly at the target was applied.
    pub reached: bool,
    /// An item ends past the target without one ending at it.
    pub overshot: bool,
    /// Items run through the engine.
    pub applied: u64,
}

/// Fewest entries between two table prunes. A prune visits every key in the table, so the
/// spacing grows with the table (half its size after the last prune): each entry pays for at
/// most two visits, and keys that expired unseen hold at most half as much again as the table
/// did (a fixed 4096 made a 200 k-key table cost 50 visits per entry, a fifth of the relay's
/// CPU on a real Pika master; `docs/performance.md`).
const PRUNE_EVERY: u32 = 4096;

impl LinkRewriter {
    /// A rewriter over `table` for DB `db`, switched by `families`.
    pub fn new(table: Arc<ExpiryTable>, db: u32, families: FamilySwitches) -> Self {
        LinkRewriter {
            table,
            state: StreamState {
                db,
                in_multi: false,
            },
            policy: Policy {
                dialect: Dialect::Pika,
                families,
                pika_release: Default::default(),
                pause_on_unknown: false,
            },
            touched: None,
            wiped: None,
            item_end: BinlogPosition::default(),
            entries_since_prune: 0,
            prune_after: PRUNE_EVERY,
            tally: stats::entry_tally(),
            counting: true,
            parser: content_parser(),
            scratch: BytesMut::new(),
            frames: ItemFrames::default(),
            content: BytesMut::new(),
            item: Vec::new(),
            replaying: false,
            layout_spans: Vec::new(),
            paused_key: Vec::new(),
            paused_kind: engine::LookupKind::KeepsTtl,
            paused_writes_string: false,
            decide_next: false,
            answered_next: false,
            answered_one_type_next: false,
            superseded_next: false,
            look_ups_after: BinlogPosition::default(),
            journaled: Answers::new(),
            written_spans: Vec::new(),
            written_commands: Vec::new(),
            written_known: false,
        }
    }

    /// The Pika release at both ends of the link (decides the forms a replica can apply).
    pub fn set_pika_release(&mut self, release: PikaRelease) {
        self.policy.pika_release = release;
    }

    /// The link's expiry table.
    pub fn table(&self) -> &Arc<ExpiryTable> {
        &self.table
    }

    /// The engine's stream state (DB, MULTI).
    pub fn stream_state(&self) -> StreamState {
        self.state
    }

    /// Restores the engine's stream state (a parked table resumes with its state).
    pub fn set_stream_state(&mut self, state: StreamState) {
        self.state = state;
    }

    /// Starts recording the keys every entry touches (a warm-up scan is running).
    pub fn start_recording_touched(&mut self) {
        self.touched = Some(Touched::new());
        self.wiped = None;
    }

    /// Stops recording and returns the keys touched since [`Self::start_recording_touched`],
    /// each with the end position of the last entry that touched it.
    pub fn take_touched(&mut self) -> Touched {
        self.touched.take().unwrap_or_default()
    }

    /// The end of the last entry recorded with the touched keys that may have deleted keys it
    /// does not name (a scan's answers from before it may no longer hold); cleared.
    pub fn take_wiped(&mut self) -> Option<BinlogPosition> {
        self.wiped.take()
    }

    /// Rewrites the entries of the BinlogSync response `body`: decodes it
    /// (`link::input::decode_response`), refuses one that mixes DBs, then [`Self::rewrite_records`].
    pub fn rewrite_response(&mut self, body: &Bytes) -> Result<RewrittenResponse, MessageError> {
        let decoded = decode_response(body)?.1?;
        if let Some(mixed) = decoded.mixed() {
            return Err(mixed);
        }
        self.rewrite_records(body, &decoded.records)
    }

    /// Rewrites the entries `records`, decoded from the BinlogSync response `body` (the link
    /// checked that they name one DB).
    ///
    /// One pass: each entry is decided as it is read, and the new body is started only at the
    /// first changed entry (everything before it is copied in one piece), so a response whose
    /// entries all pass through is never copied.
    pub(crate) fn rewrite_records(
        &mut self,
        body: &Bytes,
        records: &[BinlogSyncRecord<'_>],
    ) -> Result<RewrittenResponse, MessageError> {
        self.rewrite_records_predicting(body, records, None)
    }

    /// [`LinkRewriter::rewrite_records`], also predicting where a replica laid out as `layout`
    /// whose binlog is at `from` will be once it has applied the response as sent.
    pub(crate) fn rewrite_records_predicting(
        &mut self,
        body: &Bytes,
        records: &[BinlogSyncRecord<'_>],
        predict: Option<(ReplicaLayout, BinlogPosition)>,
    ) -> Result<RewrittenResponse, MessageError> {
        let mut step = self.rewrite_records_from(body, records, predict, None)?;
        loop {
            match step {
                RewriteStep::Done(done) => return Ok(done),
                // Decided without a look-up.
                RewriteStep::Paused(mut paused) => {
                    self.resolve_paused(&mut paused, None);
                    step =
                        self.rewrite_records_from(body, records, predict, Some(paused.progress))?;
                }
            }
        }
    }

    /// Whether a write on a key whose state the table lacks pauses the rewrite of its response
    /// ([`RewriteStep::Paused`]) so the link can look the key up on the master.
    pub fn set_look_ups(&mut self, on: bool) {
        self.policy.pause_on_unknown = on;
    }

    /// Items ending at or before `at` are decided without look-ups.
    pub(crate) fn skip_look_ups_until(&mut self, at: BinlogPosition) {
        self.look_ups_after = self.look_ups_after.max(at);
    }

    /// Rewrites `records` (see [`Self::rewrite_records_predicting`]) from the start, or from
    /// where `resume` paused. With look-ups on, it pauses before an item whose first command
    /// writes a key the table cannot decide ([`engine::Decision::needs_lookup`]), having
    /// changed nothing for that item; after [`Self::resolve_paused`] the same call with the
    /// paused state goes on from that item.
    pub(crate) fn rewrite_records_from(
        &mut self,
        body: &Bytes,
        records: &[BinlogSyncRecord<'_>],
        predict: Option<(ReplicaLayout, BinlogPosition)>,
        resume: Option<ResponseProgress>,
    ) -> Result<RewriteStep, MessageError> {
        let started = Instant::now();
        let mut p = resume.unwrap_or_else(|| ResponseProgress {
            predicted_at: predict.map(|(_, from)| from),
            predicted: Vec::with_capacity(if predict.is_some() { records.len() } else { 0 }),
            ..ResponseProgress::default()
        });
        let mut splice = BinlogSyncSplice::resume(body, std::mem::take(&mut p.splice));
        let mut index = p.next_record;
        while let Some(record) = records.get(index) {
            let entry = &record.entry;
            if entry.is_keepalive() {
                index += 1;
                continue;
            }
            let item = entry.item().map_err(MessageError::Item)?;
            let end = entry.binlog_offset.logical();
            self.item_end = end.position();
            self.decide_next = std::mem::take(&mut p.decide_next);
            self.answered_next = std::mem::take(&mut p.answered_next);
            self.answered_one_type_next = std::mem::take(&mut p.answered_one_type_next);
            self.superseded_next = std::mem::take(&mut p.superseded_next);
            let step = self.rewrite_item(body, &item, &mut p.out);
            self.decide_next = false;
            self.answered_next = false;
            self.answered_one_type_next = false;
            self.superseded_next = false;
            let replaced = match step? {
                ItemStep::Paused => {
                    p.next_record = index;
                    p.splice = splice.pause();
                    self.tally.flush(started.elapsed().as_secs_f64());
                    return Ok(RewriteStep::Paused(Box::new(PausedRewrite {
                        progress: p,
                        key: std::mem::take(&mut self.paused_key),
                        kind: self.paused_kind,
                        writes_string: self.paused_writes_string,
                        db: self.state.db,
                        end: end.position(),
                        exec_ms: i64::from(item.header.exec_time) * 1000,
                    })));
                }
                ItemStep::Same => false,
                ItemStep::Changed => true,
            };
            p.first.get_or_insert((end, item.header.exec_time));
            p.last = Some((end, item.header.exec_time));
            p.items += 1;
            if replaced {
                splice.replace_binlog(record, &self.item)?;
            }
            if let (Some(at), Some((layout, _))) = (p.predicted_at, predict) {
                let content = if replaced {
                    self.item.get(ITEM_HEADER_LEN..).unwrap_or_default()
                } else {
                    item.content
                };
                let frames = &self.frames;
                let split = !frames.frames.is_empty()
                    && frames
                        .frames
                        .iter()
                        .all(|f| matches!(f.kind, FrameKind::Command));
                p.predicted_at = if !replaced && split {
                    // The item goes as it came: its commands are the ones the rewrite split.
                    layout.after_commands(
                        at,
                        body,
                        frames.frames.iter().map(|f| &frames.spans[f.spans.clone()]),
                    )
                } else if replaced && self.written_known {
                    // Its new commands, as the rewrite wrote them.
                    let spans = &self.written_spans;
                    layout.after_commands(
                        at,
                        &self.content,
                        self.written_commands.iter().map(|r| &spans[r.clone()]),
                    )
                } else {
                    layout.after_content(at, content, &mut self.layout_spans)
                };
                if let Some(replica) = p.predicted_at {
                    p.predicted.push(Pair {
                        replica,
                        master: end.position(),
                    });
                }
            }
            index += 1;
        }
        let mut out = p.out;
        out.predicted = p.predicted_at.filter(|_| p.items > 0).map(|_| p.predicted);
        out.body = splice.finish();
        self.tally.flush(started.elapsed().as_secs_f64());
        if let (Some((first_end, first_exec)), Some((last_end, last_exec))) = (p.first, p.last) {
            out.forwarded = Some(Forwarded {
                first_end,
                last_end,
                first_exec_time: first_exec,
                last_exec_time: last_exec,
                changed: out.body.is_some(),
                items: p.items,
            });
        }
        Ok(RewriteStep::Done(out))
    }

    /// Journaled answers for items after the table's position (a catch-up's, then the
    /// resuming link's): an item that needs a look-up and has one is decided with it.
    pub(crate) fn set_journaled_answers(&mut self, answers: Answers) {
        self.journaled = answers;
    }

    /// Stops counting decisions in the entry metrics (a standby reader's table).
    pub(crate) fn stop_counting(&mut self) {
        self.counting = false;
    }

    /// The journaled answers not used yet.
    pub(crate) fn take_journaled_answers(&mut self) -> Answers {
        std::mem::take(&mut self.journaled)
    }

    /// Records what a look-up found for the key a rewrite paused at, if it tells the key's
    /// state at the item (see [`engine::resolve_unknown`]); without that (`None`, or an answer
    /// that does not tell) the item is decided without it, as `unknown_key`. Says whether the
    /// answer was used.
    pub(crate) fn resolve_paused(
        &mut self,
        paused: &mut PausedRewrite,
        answered: Option<Answered>,
    ) -> bool {
        self.resolve_paused_as(paused, answered, false)
    }

    /// [`Self::resolve_paused`]; `superseded`: a later command redefines the key
    /// ([`engine::redefines`]), so the item passing undecided is not counted as `unknown_key`.
    pub(crate) fn resolve_paused_as(
        &mut self,
        paused: &mut PausedRewrite,
        answered: Option<Answered>,
        superseded: bool,
    ) -> bool {
        let used = answered.is_some_and(|answered| {
            engine::resolve_unknown(
                &self.table,
                paused.db,
                &paused.key,
                paused.exec_ms,
                paused.kind,
                answered,
            )
        });
        paused.progress.answered_next = used;
        paused.progress.answered_one_type_next =
            used && answered.is_some_and(|a| !a.between.removal);
        paused.progress.superseded_next = superseded && !used;
        // Decided now, with the answer or without: an answer that leaves it as undecidable as
        // before (Pika 4.0's deadline second) must not pause it again.
        paused.progress.decide_next = true;
        used
    }

    /// Whether any command of the items of `records` from `from_record` on that end at or
    /// before `until` names `key` (as any argument, or a command that may touch every key; not
    /// one the answer of `kind` reads past, [`engine::LookupKind::tolerates`], which is
    /// collected in [`KeyScan::between`] instead; the first that does ends the scan, and
    /// whether it redefines the key is [`KeyScan::superseded`]), and whether an item ending at
    /// or past `until` was seen (everything up to it is here).
    pub(crate) fn items_name_key(
        &mut self,
        body: &Bytes,
        records: &[BinlogSyncRecord<'_>],
        from_record: usize,
        until: BinlogPosition,
        paused: &PausedRewrite,
    ) -> Result<KeyScan, MessageError> {
        let (key, kind) = (&paused.key[..], paused.kind);
        let mut scan = KeyScan::default();
        for record in records.iter().skip(from_record) {
            let entry = &record.entry;
            if entry.is_keepalive() {
                continue;
            }
            let end = entry.binlog_offset.logical().position();
            if end > until {
                scan.reached = true;
                break;
            }
            scan.reached |= end == until;
            scan.last = end;
            let item = entry.item().map_err(MessageError::Item)?;
            self.frames.clear();
            if !split_content(
                body,
                item.content,
                &mut self.parser,
                &mut self.scratch,
                &mut self.frames,
            ) {
                scan.named = true;
                break;
            }
            for frame in &self.frames.frames {
                if !matches!(frame.kind, FrameKind::Command | FrameKind::Inline) {
                    continue;
                }
                let args = FrameArgs {
                    raw: body,
                    spans: &self.frames.spans[frame.spans.clone()],
                };
                let name = args.get(0).unwrap_or_default();
                let everything =
                    engine::touches_unnamed_keys(name) || name.eq_ignore_ascii_case(b"select");
                let names = (1..args.count()).any(|i| args.get(i) == Some(key));
                let spoils = if everything {
                    true
                } else if names {
                    match kind.tolerates(&args, key) {
                        Some(t) => {
                            scan.between.add(t, i64::from(item.header.exec_time) * 1000);
                            false
                        }
                        None => true,
                    }
                } else {
                    false
                };
                if spoils {
                    // The first such command decides; nothing after it is read.
                    scan.named = true;
                    scan.superseded = engine::redefines(&args, key, paused.writes_string);
                    scan.ttl_reset = !scan.superseded && engine::resets_ttl(&args, key);
                    tracing::debug!(
                        key = %String::from_utf8_lossy(key),
                        item_end = %paused.end,
                        by = %String::from_utf8_lossy(name),
                        superseded = scan.superseded,
                        "look-up spoiled: a command named the key before the answer's position"
                    );
                    break;
                }
            }
            if scan.reached || scan.named {
                break;
            }
        }
        self.frames.clear();
        Ok(scan)
    }

    /// Runs the items of the BinlogSync response `body` that end at or before `until` through
    /// the engine for their effect on the table only (nothing is emitted, counted or reported):
    /// the table is brought from an older position to `until` along the master's binlog.
    pub fn replay_response(
        &mut self,
        body: &Bytes,
        until: BinlogPosition,
    ) -> Result<Replayed, MessageError> {
        let response = InnerResponse::parse(body)?;
        let mut done = Replayed::default();
        let mut scratch = RewrittenResponse {
            body: None,
            forwarded: None,
            unparsable_items: 0,
            at_risk: Vec::new(),
            predicted: None,
        };
        self.replaying = true;
        let mut records = response.binlog_sync_entries();
        let result = loop {
            let Some(record) = records.next_record() else {
                break Ok(done);
            };
            let entry = match record {
                Ok(r) => r.entry,
                Err(e) => break Err(e),
            };
            if entry.is_keepalive() {
                continue;
            }
            let end = entry.binlog_offset.logical();
            done.first.get_or_insert(end);
            done.last = Some(end);
            if done.reached || end.position() > until {
                done.overshot |= !done.reached;
                continue;
            }
            let item = match entry.item() {
                Ok(item) => item,
                Err(e) => break Err(MessageError::Item(e)),
            };
            self.item_end = end.position();
            if let Err(e) = self.rewrite_item(body, &item, &mut scratch) {
                break Err(e);
            }
            done.applied += 1;
            done.reached = end.position() == until;
        };
        self.replaying = false;
        result
    }

    /// Runs one item's commands through the engine; `Changed` with the new item's bytes in
    /// `self.item`, or `Paused` (nothing changed, the key in `self.paused_key`) when its first
    /// command needs a look-up.
    fn rewrite_item(
        &mut self,
        body: &Bytes,
        item: &BinlogItem<'_>,
        out: &mut RewrittenResponse,
    ) -> Result<ItemStep, MessageError> {
        let exec_ms = i64::from(item.header.exec_time) * 1000;
        self.frames.clear();
        if !split_content(
            body,
            item.content,
            &mut self.parser,
            &mut self.scratch,
            &mut self.frames,
        ) {
            self.frames.clear();
            out.unparsable_items += 1;
            return Ok(ItemStep::Same);
        }
        // The item's new content is started at its first replaced frame, with the frames
        // before it copied in one piece; an item that passes through is never copied.
        let mut changed = false;
        self.content.clear();
        let content_start = self.frames.frames.first().map_or(0, |f| f.raw.start);
        let pausing = self.policy.pause_on_unknown
            && !self.replaying
            && !self.decide_next
            && self.item_end > self.look_ups_after;
        let mut first_command = true;
        self.written_known = true;
        for (index, frame) in self.frames.frames.iter().enumerate() {
            let untouched = &body[frame.raw.clone()];
            if !matches!(frame.kind, FrameKind::Command | FrameKind::Inline) {
                self.written_known = false;
                if changed {
                    self.content.extend_from_slice(untouched);
                }
                continue;
            }
            let args = FrameArgs {
                raw: body,
                spans: &self.frames.spans[frame.spans.clone()],
            };
            if let Some(touched) = self.touched.as_mut() {
                // Every argument may be a key (RENAME, SMOVE, DEL k1 k2…); marking a value as
                // touched only makes the warm-up more conservative.
                let end = self.item_end;
                for arg in (1..args.count()).filter_map(|i| args.get(i)) {
                    let at = touched.entry((self.state.db, arg.to_vec())).or_insert(end);
                    *at = (*at).max(end);
                }
                if engine::touches_unnamed_keys(args.get(0).unwrap_or_default()) {
                    self.wiped = Some(self.wiped.map_or(end, |w| w.max(end)));
                }
            }
            if first_command && self.answered_next && self.answered_one_type_next {
                // Before the rule: what the answer recorded is of the type written, so the
                // rule may add an `expireat` or a `del` for it.
                self.record_single_type(&args);
            }
            let mut decision =
                engine::rewrite(&args, exec_ms, &mut self.state, &self.table, &self.policy);
            let mut answered = self.answered_next;
            if let (Some(kind), true) = (
                decision.needs_lookup,
                first_command && !self.journaled.is_empty(),
            ) {
                // A link (or a standby reader) asked the master here: this takes what it found.
                let key = decision.lookup_key(&args);
                if let Some(found) = take_journaled(&mut self.journaled, self.item_end, key) {
                    answered = engine::resolve_unknown(
                        &self.table,
                        self.state.db,
                        key,
                        exec_ms,
                        kind,
                        found,
                    );
                    if answered && !found.between.removal {
                        self.record_single_type(&args);
                    }
                    decision =
                        engine::rewrite(&args, exec_ms, &mut self.state, &self.table, &self.policy);
                }
            }
            if let Some(kind) = decision.needs_lookup {
                let key = decision.lookup_key(&args);
                if pausing && first_command {
                    self.paused_kind = kind;
                    self.paused_writes_string = engine::writes_string(&args);
                    self.paused_key.clear();
                    self.paused_key.extend_from_slice(key);
                    return Ok(ItemStep::Paused);
                }
                // Too late to pause (a command before it in the item is decided), or the
                // look-up found nothing usable: decided without it.
                self.policy.pause_on_unknown = false;
                decision =
                    engine::rewrite(&args, exec_ms, &mut self.state, &self.table, &self.policy);
                self.policy.pause_on_unknown = true;
                if !answered {
                    // Decided as the stream suggests, which may be wrong: the next write on the
                    // key is looked up rather than decided from this guess.
                    engine::leave_undecided(&self.table, self.state.db, key, kind, &args, exec_ms);
                }
                if self.replaying && !answered {
                    // A catch-up after a crash without the answer the live link had (none was
                    // found, or it was lost): the key is unknown again (looked up at its next
                    // write).
                    self.table.mark_unknown(self.state.db, key);
                }
            }
            if first_command
                && self.superseded_next
                && decision.outcome == engine::Outcome::UnknownKey
            {
                // Whatever it leaves on a late replica, a later command redefines the key on
                // both sides before anything could depend on it.
                decision.outcome = engine::Outcome::Passed;
            }
            first_command = false;
            if !self.replaying && self.counting {
                self.tally.count(decision.family, decision.outcome);
                if decision.outcome == engine::Outcome::UnknownKey {
                    tracing::debug!(
                        command = %String::from_utf8_lossy(args.get(0).unwrap_or_default()),
                        key = %String::from_utf8_lossy(decision.lookup_key(&args)),
                        "entry passed unrewritten: the key's expiry or existence is unknown"
                    );
                }
            }
            if let Some(risk) = decision.at_risk {
                out.at_risk.push((decision.family, risk));
            }
            match decision.emit {
                Emit::Replace(replacement) if !replacement.is_empty() => {
                    if !changed {
                        changed = true;
                        self.content
                            .extend_from_slice(&body[content_start..frame.raw.start]);
                        self.written_spans.clear();
                        self.written_commands.clear();
                        for before in &self.frames.frames[..index] {
                            record_copied(
                                &self.frames.spans[before.spans.clone()],
                                content_start,
                                0,
                                &mut self.written_spans,
                                &mut self.written_commands,
                            );
                        }
                    }
                    // A multibulk frame is copied where the replacement keeps the entry;
                    // an inline one is written as multibulk.
                    let original = (frame.kind == FrameKind::Command).then_some(OriginalFrame {
                        raw: untouched,
                        spans: args.spans,
                        at: frame.raw.start,
                    });
                    replacement.encode_recording(
                        &args,
                        original,
                        &mut self.content,
                        &mut self.written_spans,
                        &mut self.written_commands,
                    );
                }
                // An empty replacement would make the item vanish on the replica; keep it.
                _ if changed => {
                    let at = self.content.len();
                    self.content.extend_from_slice(untouched);
                    record_copied(
                        args.spans,
                        frame.raw.start,
                        at,
                        &mut self.written_spans,
                        &mut self.written_commands,
                    );
                }
                _ => {}
            }
        }
        self.entries_since_prune += 1;
        if self.entries_since_prune >= self.prune_after {
            self.entries_since_prune = 0;
            self.table.prune(exec_ms);
            let half = u32::try_from(self.table.len() / 2).unwrap_or(u32::MAX);
            self.prune_after = half.max(PRUNE_EVERY);
        }
        if !changed {
            return Ok(ItemStep::Same);
        }
        self.item.clear();
        put_item(&item.header, &self.content, &mut self.item).map_err(MessageError::Item)?;
        Ok(ItemStep::Changed)
    }
}

impl LinkRewriter {
    /// A Pika 3.x look-up found at most one type under the entry's first key, which nothing
    /// removed since: the name holds the type the entry writes (`engine::record_single_type`).
    fn record_single_type(&self, args: &FrameArgs<'_>) {
        if let Some(key) = args.get(1) {
            engine::record_single_type(&self.table, self.state.db, key, args);
        }
    }
}

/// Records a frame copied into a new item's content: its arguments' positions `spans` in the
/// response, where the bytes from `from` on were copied to `to`.
fn record_copied(
    spans: &[(usize, usize)],
    from: usize,
    to: usize,
    written_spans: &mut Vec<(usize, usize)>,
    written_commands: &mut Vec<Range<usize>>,
) {
    let first = written_spans.len();
    written_spans.extend(spans.iter().map(|&(s, e)| (s - from + to, e - from + to)));
    written_commands.push(first..written_spans.len());
}

/// The journaled answer about `key` for the item ending at `end`.
fn take_journaled(journaled: &mut Answers, end: BinlogPosition, key: &[u8]) -> Option<Answered> {
    let answers = journaled.get_mut(&end)?;
    let at = answers.iter().position(|(k, _)| k == key)?;
    Some(answers.swap_remove(at).1)
}

/// The frames of one item's content. Every position is in the response body, so the engine
/// reads arguments where they arrived and a replacement borrows them from there.
#[derive(Debug, Default)]
struct ItemFrames {
    frames: Vec<ItemFrame>,
    spans: Vec<(usize, usize)>,
}

#[derive(Debug)]
struct ItemFrame {
    kind: FrameKind,
    /// The frame's bytes.
    raw: Range<usize>,
    /// Its arguments' positions, as a range of [`ItemFrames::spans`].
    spans: Range<usize>,
}

impl ItemFrames {
    fn clear(&mut self) {
        self.frames.clear();
        self.spans.clear();
    }

    fn push(&mut self, kind: FrameKind, raw: Range<usize>, first_span: usize) {
        self.frames.push(ItemFrame {
            kind,
            raw,
            spans: first_span..self.spans.len(),
        });
    }
}

/// Splits an item's `content`, a part of `body`, into RESP frames; false when it does not parse
/// completely.
///
/// Whole multibulk commands, which is what Pika writes, are read in place with
/// [`whole_command`]. Anything else (inline commands, empty lines, damage) goes through the
/// resumable parser on a copy in `scratch`, whose verdict is exact; its positions are those of
/// `content`, so they map straight back into `body`. `parser` is reused from item to item:
/// after a complete parse it stands at a frame start; after a failure it is replaced.
fn split_content(
    body: &[u8],
    content: &[u8],
    parser: &mut CommandParser,
    scratch: &mut BytesMut,
    frames: &mut ItemFrames,
) -> bool {
    let Some(base) = offset_in(body, content) else {
        return false;
    };
    let end = base + content.len();
    let limits = *parser.limits();
    let mut position = base;
    while position < end {
        let first_span = frames.spans.len();
        match whole_command(&body[..end], position, &limits, &mut frames.spans) {
            Some(frame_end) => {
                frames.push(FrameKind::Command, position..frame_end, first_span);
                position = frame_end;
            }
            None => {
                frames.clear();
                return split_with_parser(content, base, parser, scratch, frames);
            }
        }
    }
    true
}

/// [`split_content`] for content [`whole_command`] leaves alone, with the resumable parser.
fn split_with_parser(
    content: &[u8],
    base: usize,
    parser: &mut CommandParser,
    scratch: &mut BytesMut,
    frames: &mut ItemFrames,
) -> bool {
    scratch.clear();
    scratch.extend_from_slice(content);
    let mut position = base;
    loop {
        match parser.parse_raw(scratch) {
            Ok(Some(frame)) => {
                let first_span = frames.spans.len();
                if matches!(frame.kind, FrameKind::Command | FrameKind::Inline) {
                    let shifted = parser
                        .arg_spans()
                        .iter()
                        .map(|&(start, end)| (position + start, position + end));
                    frames.spans.extend(shifted);
                }
                let frame_end = position + frame.raw.len();
                frames.push(frame.kind, position..frame_end, first_span);
                position = frame_end;
            }
            Ok(None) if scratch.is_empty() => return true,
            Ok(None) | Err(_) => {
                *parser = content_parser();
                return false;
            }
        }
    }
}

/// Where `part` starts inside `whole`, if it lies there.
fn offset_in(whole: &[u8], part: &[u8]) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start.checked_add(part.len())? <= whole.len()).then_some(start)
}

/// A parser for item content: inline commands are accepted because the Pika replica's parser
/// accepts them.
fn content_parser() -> CommandParser {
    CommandParser::new(ParserLimits::replica_stream())
}

#[cfg(test)]
pub(super) mod tests;
