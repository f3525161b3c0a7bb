//! The responses forwarded to a replica and not yet acknowledged, oldest first.
//!
//! A Pika replica acknowledges every BinlogSync response that carries items with exactly one
//! request, in order: `ack_range_start` is the master END of the response's first item (copied
//! from the frame, so already master space) and `ack_range_end` is the replica's own position
//! after writing the response's items. The relay answers the second from this FIFO: the ack for
//! the front response ends at that response's last master END. Keepalive-only responses are not
//! queued: the replica answers them with a `(0,0)-(0,0)` ping, which is not an ack.

use std::collections::VecDeque;

use crate::pika::messages::{BinlogPosition, LogicalOffset};

/// One forwarded response that carried at least one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// Master END (with term/index) of the first item.
    pub first_end: LogicalOffset,
    /// Master END (with term/index) of the last item.
    pub last_end: LogicalOffset,
    /// `exec_time` (master clock, seconds) of the first item.
    pub first_exec_time: u32,
    /// `exec_time` of the last item.
    pub last_exec_time: u32,
    /// Whether any item's content was changed by the relay.
    pub changed: bool,
    /// Number of items.
    pub items: usize,
}

/// Why an ack could not be matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckMismatch {
    /// Nothing is outstanding.
    NothingOutstanding {
        /// The ack's start.
        start: BinlogPosition,
    },
    /// The ack's start is not the front response's first item.
    WrongStart {
        /// What the ack said.
        got: BinlogPosition,
        /// What the front response started with.
        expected: BinlogPosition,
    },
}

impl std::fmt::Display for AckMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AckMismatch::NothingOutstanding { start } => {
                write!(f, "ack starting at {start} but no response is outstanding")
            }
            AckMismatch::WrongStart { got, expected } => write!(
                f,
                "ack starting at {got} but the oldest outstanding response starts at {expected}"
            ),
        }
    }
}

/// FIFO of [`Forwarded`] responses.
#[derive(Debug, Default)]
pub struct Inflight {
    queue: VecDeque<Forwarded>,
}

impl Inflight {
    /// Records a forwarded response.
    pub fn push(&mut self, response: Forwarded) {
        self.queue.push_back(response);
    }

    /// Matches an ack starting at `start` with the oldest outstanding response and removes it.
    pub fn ack(&mut self, start: BinlogPosition) -> Result<Forwarded, AckMismatch> {
        let Some(front) = self.queue.front() else {
            return Err(AckMismatch::NothingOutstanding { start });
        };
        if front.first_end.position() != start {
            return Err(AckMismatch::WrongStart {
                got: start,
                expected: front.first_end.position(),
            });
        }
        self.queue
            .pop_front()
            .ok_or(AckMismatch::NothingOutstanding { start })
    }

    /// The oldest outstanding response.
    /// The `i`-th response not acknowledged yet, oldest first.
    pub fn get(&self, i: usize) -> Option<&Forwarded> {
        self.queue.get(i)
    }

    pub fn oldest(&self) -> Option<&Forwarded> {
        self.queue.front()
    }

    /// Outstanding responses.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when the replica has acknowledged everything forwarded.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Master END of each outstanding response, oldest first.
    pub fn last_ends(&self) -> impl Iterator<Item = BinlogPosition> + '_ {
        self.queue.iter().map(|f| f.last_end.position())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(offset: u64, index: u64) -> LogicalOffset {
        LogicalOffset {
            filenum: 0,
            offset,
            term: 0,
            index,
        }
    }

    fn fwd(first: u64, last: u64) -> Forwarded {
        Forwarded {
            first_end: end(first, 1),
            last_end: end(last, 2),
            first_exec_time: 5,
            last_exec_time: 6,
            changed: false,
            items: 2,
        }
    }

    #[test]
    fn acks_pop_in_order_and_check_the_start() {
        let mut q = Inflight::default();
        q.push(fwd(1136, 1229));
        q.push(fwd(1293, 1293));
        assert_eq!(
            q.ack(BinlogPosition::new(0, 1293)),
            Err(AckMismatch::WrongStart {
                got: BinlogPosition::new(0, 1293),
                expected: BinlogPosition::new(0, 1136)
            })
        );
        assert_eq!(
            q.ack(BinlogPosition::new(0, 1136)).unwrap().last_end.offset,
            1229
        );
        assert_eq!(q.ack(BinlogPosition::new(0, 1293)).unwrap().items, 2);
        assert!(q.is_empty());
        assert!(matches!(
            q.ack(BinlogPosition::new(0, 1)),
            Err(AckMismatch::NothingOutstanding { .. })
        ));
    }
}
