//! The command stream of one replica link: parse what the master sends after the payload, run
//! each entry through the rewrite engine, queue the result for the replica and keep the offset
//! map (U = master bytes consumed, D = replica bytes emitted).

use super::offset_map::OffsetMap;
use super::outq::OutQueue;
use super::stats::EntryTally;
use crate::engine::args::FrameArgs;
use crate::engine::{self, Emit, Policy, StreamState};
use crate::resp::{CommandParser, FrameKind, ParserLimits, ProtocolError, RawFrame};
use crate::table::ExpiryTable;
use bytes::BytesMut;

/// Room made for one read of the master's stream.
pub const READ_CHUNK: usize = 64 * 1024;
/// Read-buffer capacity worth keeping once the buffer is empty; a larger one (left by a large
/// entry) is released by [`StreamRelay::release_spent_room`].
const KEEP_READ_CAPACITY: usize = 4 * READ_CHUNK;

/// An entry the engine flagged as at risk (`docs/rewrites.md#at-risk`), for logging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AtRiskEntry {
    /// DB of the key.
    pub db: u32,
    /// The key, lossily decoded for the log.
    pub key: String,
    /// The deadline the key had before the entry (ms).
    pub old_deadline_ms: i64,
}

/// What one [`StreamRelay::process_up_to`] call did.
#[derive(Debug)]
pub struct Processed {
    /// Entries flagged at risk (see [`StreamRelay::process_up_to`]).
    pub at_risk: Vec<AtRiskEntry>,
    /// It stopped at its entry budget with bytes left in `input` (which may hold more complete
    /// entries).
    pub stopped_early: bool,
}

/// Per-link stream state; see the module docs.
#[derive(Debug)]
pub struct StreamRelay {
    parser: CommandParser,
    state: StreamState,
    /// Upstream offset of the next byte to parse.
    u: u64,
    /// Downstream offset of the next byte to emit.
    d: u64,
    /// D offset where the current block (an entry, or a whole transaction) started.
    block_start: u64,
    /// Whether the current block contains a rewritten entry.
    block_rewritten: bool,
}

impl StreamRelay {
    /// A stream starting at `d`/`u` with `db` selected, outside MULTI.
    pub fn new(d: u64, u: u64, db: u32) -> Self {
        StreamRelay {
            parser: CommandParser::new(ParserLimits::master_stream()),
            state: StreamState {
                db,
                in_multi: false,
            },
            u,
            d,
            block_start: d,
            block_rewritten: false,
        }
    }

    /// Upstream offset of everything parsed.
    pub fn upstream_offset(&self) -> u64 {
        self.u
    }

    /// How much room to make in `buf` (the unparsed stream) before the next read: a read's
    /// worth, or, while a large argument is arriving, the rest of it, so it is received in
    /// place (growing the buffer by doubling would copy what arrived each time).
    pub fn room_for_next_read(&self, buf: &BytesMut) -> usize {
        let rest_of_argument = self
            .parser
            .buffer_len_for_current_argument()
            .map_or(0, |len| len.saturating_sub(buf.len()));
        if rest_of_argument >= READ_CHUNK {
            return rest_of_argument;
        }
        let spare = buf.capacity() - buf.len();
        if rest_of_argument > 0 && spare >= rest_of_argument && buf.capacity() > KEEP_READ_CAPACITY
        {
            // The last bytes of a large argument: the room made for it suffices, and asking for
            // a full read's worth more would copy the whole argument into a bigger buffer.
            return 0;
        }
        READ_CHUNK
    }

    /// After a read was processed: drops the room a large entry made in `buf` once nothing is
    /// left in it. The entry's bytes live on in the output queue (zero-copy) only until they
    /// are written.
    pub fn release_spent_room(buf: &mut BytesMut) {
        if buf.is_empty() && buf.capacity() > KEEP_READ_CAPACITY {
            *buf = BytesMut::new();
        }
    }

    /// Downstream offset of everything emitted.
    pub fn downstream_offset(&self) -> u64 {
        self.d
    }

    /// The engine's stream state (DB, MULTI).
    pub fn state(&self) -> StreamState {
        self.state
    }

    /// Parses every complete entry in `input` (at most `max_entries` of them), decides it,
    /// queues the output and records boundaries. `now_ms` is the entries' receive time, used as
    /// their exec time. Reports the entries flagged at risk whose old deadline is within
    /// `risk_horizon_ms` of `now_ms` (a replica that lags that much may apply them after the
    /// deadline). Stopping after `max_entries` lets the caller send their output before
    /// deciding the rest of a large read (stopping between two entries is the same as a read
    /// that ended there).
    #[allow(clippy::too_many_arguments)]
    pub fn process_up_to(
        &mut self,
        input: &mut BytesMut,
        max_entries: usize,
        now_ms: i64,
        table: &ExpiryTable,
        policy: &Policy,
        map: &mut OffsetMap,
        out: &mut OutQueue,
        tally: &mut EntryTally,
        risk_horizon_ms: i64,
    ) -> Result<Processed, ProtocolError> {
        let mut risks = Vec::new();
        let mut entries = 0;
        while entries < max_entries {
            let Some(RawFrame { raw, kind }) = self.parser.parse_raw(input)? else {
                return Ok(Processed {
                    at_risk: risks,
                    stopped_early: false,
                });
            };
            entries += 1;
            let entry_start = self.d;
            let was_in_multi = self.state.in_multi;
            let raw_len = raw.len() as u64;
            let mut rewritten = false;
            match kind {
                FrameKind::Command | FrameKind::Inline => {
                    // The arguments stay ranges of `raw`: passing an entry through takes no
                    // reference count per argument.
                    let args = FrameArgs {
                        raw: &raw,
                        spans: self.parser.arg_spans(),
                    };
                    let decision = engine::rewrite(&args, now_ms, &mut self.state, table, policy);
                    tally.count(decision.family, decision.outcome);
                    if let Some(risk) = decision.at_risk {
                        if risk.old_deadline_ms <= now_ms.saturating_add(risk_horizon_ms) {
                            tally.at_risk(decision.family);
                            risks.push(AtRiskEntry {
                                db: risk.db,
                                key: String::from_utf8_lossy(&risk.key).into_owned(),
                                old_deadline_ms: risk.old_deadline_ms,
                            });
                        }
                    }
                    match decision.emit {
                        Emit::Forward => {
                            out.push_bytes(raw);
                            self.d += raw_len;
                        }
                        Emit::Replace(replacement) => {
                            self.d += out.push_replacement(&replacement, &args) as u64;
                            rewritten = true;
                        }
                    }
                }
                // Masters send neither inside the stream, but both are harmless to relay.
                FrameKind::Newline | FrameKind::Empty => {
                    out.push_bytes(raw);
                    self.d += raw_len;
                }
            }
            self.u += raw_len;
            if !was_in_multi {
                self.block_start = entry_start;
                self.block_rewritten = false;
            }
            self.block_rewritten |= rewritten;
            if !self.state.in_multi {
                map.record_boundary(
                    self.d,
                    self.u,
                    self.state.db,
                    self.block_start,
                    self.block_rewritten,
                );
            }
        }
        Ok(Processed {
            at_risk: risks,
            // With nothing left there is nothing more to decide: the read is done.
            stopped_early: !input.is_empty(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Baseline;

    fn feed(
        relay: &mut StreamRelay,
        bytes: &[u8],
        now: i64,
        table: &ExpiryTable,
        policy: &Policy,
        map: &mut OffsetMap,
    ) -> Vec<u8> {
        let mut input = BytesMut::from(bytes);
        feed_buf(relay, &mut input, now, table, policy, map)
    }

    fn feed_buf(
        relay: &mut StreamRelay,
        input: &mut BytesMut,
        now: i64,
        table: &ExpiryTable,
        policy: &Policy,
        map: &mut OffsetMap,
    ) -> Vec<u8> {
        let mut out = OutQueue::new();
        let mut tally = crate::redis_relay::stats::entry_tally();
        relay
            .process_up_to(
                input,
                usize::MAX,
                now,
                table,
                policy,
                map,
                &mut out,
                &mut tally,
                0,
            )
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut v = Vec::new();
        rt.block_on(out.flush_all(&mut v)).unwrap();
        v
    }

    fn fixture(name: &str) -> Vec<u8> {
        crate::redis_relay::test_fixture(&format!("redis-7.0.15/{name}"))
    }

    /// With every family off the relay emits the master's bytes exactly, and the map stays the
    /// identity (points only at SELECTs).
    #[test]
    fn families_off_is_byte_identical_on_the_real_stream() {
        let stream = fixture("propagation-stream.bin");
        let table = ExpiryTable::new(Baseline::NotVolatile);
        let policy = Policy {
            families: crate::families::FamilySwitches::all_off(),
            ..Policy::new(engine::Dialect::Redis)
        };
        let mut map = OffsetMap::new(0, 0, 0);
        let mut relay = StreamRelay::new(0, 0, 0);
        // Feed in uneven pieces to exercise resumption.
        let mut out = Vec::new();
        let mut input = BytesMut::new();
        for piece in stream.chunks(37) {
            input.extend_from_slice(piece);
            let now = 1_795_468_500_000;
            out.extend(feed_buf(
                &mut relay, &mut input, now, &table, &policy, &mut map,
            ));
        }
        assert!(input.is_empty());
        assert_eq!(out, stream);
        assert_eq!(relay.upstream_offset(), 3940);
        assert_eq!(relay.downstream_offset(), 3940);
        for p in map.points() {
            assert_eq!(p.d, p.u);
        }
        assert_eq!(map.floor(3940), Some(3940));
    }

    /// Deciding a read in slices emits the same bytes and records the same map as deciding it
    /// whole, and each slice leaves the rest of the read in the buffer, starting on an entry.
    #[test]
    fn a_read_decided_in_slices_is_decided_as_if_whole() {
        let stream = fixture("expiry-stream.bin");
        let now = 1_795_468_000_000;
        let policy = Policy::new(engine::Dialect::Redis);
        let whole_table = ExpiryTable::new(Baseline::NotVolatile);
        let mut whole_map = OffsetMap::new(209, 209, 0);
        let mut whole_relay = StreamRelay::new(209, 209, 0);
        let whole = feed(
            &mut whole_relay,
            &stream,
            now,
            &whole_table,
            &policy,
            &mut whole_map,
        );

        let table = ExpiryTable::new(Baseline::NotVolatile);
        let mut map = OffsetMap::new(209, 209, 0);
        let mut relay = StreamRelay::new(209, 209, 0);
        let mut tally = crate::redis_relay::stats::entry_tally();
        let mut input = BytesMut::from(&stream[..]);
        let mut out = OutQueue::new();
        let mut sliced = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut slices = 0;
        loop {
            let before = input.len();
            let processed = relay
                .process_up_to(
                    &mut input, 3, now, &table, &policy, &mut map, &mut out, &mut tally, 0,
                )
                .unwrap();
            rt.block_on(out.flush_all(&mut sliced)).unwrap();
            if !processed.stopped_early {
                break;
            }
            slices += 1;
            assert!(input.len() < before, "a slice decided nothing");
            assert_eq!(
                relay.upstream_offset(),
                209 + (stream.len() - input.len()) as u64
            );
        }
        assert!(
            slices > 3,
            "the fixture is too short to be sliced: {slices} slices"
        );
        assert!(input.is_empty());
        assert_eq!(sliced, whole);
        assert_eq!(relay.downstream_offset(), whole_relay.downstream_offset());
        let points = |m: &OffsetMap| m.points().map(|p| (p.d, p.u)).collect::<Vec<_>>();
        assert_eq!(points(&map), points(&whole_map));
        assert_eq!(table.volatile_entries(), whole_table.volatile_entries());
    }

    #[test]
    fn rewrite_moves_d_ahead_and_acks_floor() {
        let table = ExpiryTable::new(Baseline::NotVolatile);
        let policy = Policy::new(engine::Dialect::Redis);
        let now = 1_000_000;
        let mut map = OffsetMap::new(500, 500, 0);
        let mut relay = StreamRelay::new(500, 500, 0);
        let set = b"*5\r\n$3\r\nSET\r\n$1\r\nc\r\n$1\r\n5\r\n$4\r\nPXAT\r\n$7\r\n2000000\r\n";
        let incr = b"*2\r\n$4\r\nINCR\r\n$1\r\nc\r\n";
        let mut input = set.to_vec();
        input.extend_from_slice(incr);
        let out = feed(&mut relay, &input, now, &table, &policy, &mut map);
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.starts_with(std::str::from_utf8(set).unwrap()));
        assert!(text.contains("MULTI"), "{text}");
        assert!(
            text.contains("PEXPIREAT\r\n$1\r\nc\r\n$7\r\n2000000"),
            "{text}"
        );
        let u_end = 500 + input.len() as u64;
        let d_end = 500 + out.len() as u64;
        assert_eq!(relay.upstream_offset(), u_end);
        assert_eq!(relay.downstream_offset(), d_end);
        assert_eq!(map.floor(d_end), Some(u_end));
        // Inside the expansion: the ACK floors to the start of the INCR.
        let incr_start = 500 + set.len() as u64;
        assert_eq!(map.floor(d_end - 5), Some(incr_start));
        assert!(map.exact(d_end - 5).is_none());
        assert!(map.exact(incr_start).is_some());
    }

    #[test]
    fn expiry_stream_fixture_maps_every_ack() {
        // The real stream with expiry deletes: every D boundary outside MULTI maps back to a U
        // boundary, and the final boundary maps exactly to the stream's end.
        let stream = fixture("expiry-stream.bin");
        let table = ExpiryTable::new(Baseline::NotVolatile);
        let policy = Policy::new(engine::Dialect::Redis);
        let mut map = OffsetMap::new(209, 209, 0);
        let mut relay = StreamRelay::new(209, 209, 0);
        let out = feed(
            &mut relay,
            &stream,
            1_795_468_000_000,
            &table,
            &policy,
            &mut map,
        );
        let end_u = 209 + stream.len() as u64;
        assert_eq!(relay.upstream_offset(), end_u);
        assert_eq!(map.floor(209 + out.len() as u64), Some(end_u));
        assert_eq!(map.exact(209 + out.len() as u64).map(|r| r.u), Some(end_u));
    }
}
