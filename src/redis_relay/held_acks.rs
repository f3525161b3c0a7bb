//! Replica ACKs waiting for the state write that covers them.
//!
//! The master hears of a replica's offset only once the offset map that resolves it is on disk
//! (so a proxy restarted after a crash can continue every replica the master counts as caught
//! up). Each ACK is held with the number of the write queued after it; as writes land, the
//! newest ACK whose write is durable is the one to forward, and older ones are dropped: they say
//! less. An ACK is never replaced by a newer one that is still waiting, so a disk slower than
//! the replica's ACK rate still lets ACKs through, each as soon as its own write lands.

use std::collections::VecDeque;

use crate::relay_core::record_log::Progress;

/// Held ACKs beyond this many drop the oldest: a newer one, forwarded later, says more.
const MAX_HELD: usize = 64;

/// An ACK translated for the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAck {
    /// The encoded `REPLCONF ACK` command.
    pub bytes: Vec<u8>,
    /// The upstream offset it acknowledges.
    pub u: u64,
}

/// The ACKs held, oldest first, each with the write it waits for.
#[derive(Debug, Default)]
pub struct HeldAcks {
    held: VecDeque<(UpstreamAck, u64)>,
}

impl HeldAcks {
    /// Whether an ACK is waiting.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The write the oldest held ACK waits for.
    pub fn first_write(&self) -> Option<u64> {
        self.held.front().map(|(_, seq)| *seq)
    }

    /// Hold `ack` until write `seq` is on disk.
    pub fn hold(&mut self, ack: UpstreamAck, seq: u64) {
        if self.held.len() >= MAX_HELD {
            self.held.pop_front();
        }
        self.held.push_back((ack, seq));
    }

    /// An ACK that needs no wait supersedes every held one.
    pub fn clear(&mut self) {
        self.held.clear();
    }

    /// The newest ACK that may go to the master now, given the writer's progress; the ones
    /// before it are dropped. After a failed write nothing is durable any more and nothing will
    /// be: every held ACK is released (persistence is switched off by the next write attempt).
    pub fn release(&mut self, progress: &Progress) -> Option<UpstreamAck> {
        let mut newest = None;
        while let Some((_, seq)) = self.held.front() {
            if progress.failed.is_none() && *seq > progress.durable {
                break;
            }
            newest = self.held.pop_front().map(|(ack, _)| ack);
        }
        newest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ack(u: u64) -> UpstreamAck {
        UpstreamAck {
            bytes: format!("ACK {u}").into_bytes(),
            u,
        }
    }

    fn durable(seq: u64) -> Progress {
        Progress {
            durable: seq,
            failed: None,
        }
    }

    #[test]
    fn a_slow_disk_still_lets_each_ack_through_once_its_write_lands() {
        let mut held = HeldAcks::default();
        held.hold(ack(100), 10);
        // The next ACK arrives before write 10 lands.
        held.hold(ack(200), 11);
        assert_eq!(held.release(&durable(9)), None);
        assert_eq!(held.release(&durable(10)), Some(ack(100)));
        assert_eq!(held.first_write(), Some(11));
        held.hold(ack(300), 12);
        // Both remaining writes landed in one batch: only the newest ACK goes.
        assert_eq!(held.release(&durable(12)), Some(ack(300)));
        assert!(held.is_empty());
    }

    #[test]
    fn a_failed_write_releases_the_newest_ack_and_the_queue_is_bounded() {
        let mut held = HeldAcks::default();
        for i in 0..(MAX_HELD as u64 + 5) {
            held.hold(ack(i), 100 + i);
        }
        assert_eq!(held.first_write(), Some(105));
        let failed = Progress {
            durable: 0,
            failed: Some(Arc::from("disk full")),
        };
        assert_eq!(held.release(&failed), Some(ack(MAX_HELD as u64 + 4)));
        assert!(held.is_empty());
    }
}
