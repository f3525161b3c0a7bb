//! The correspondence between a replica's binlog positions and the master's.
//!
//! A Pika replica writes its own binlog, re-serializing every command it applies, and tells the
//! master *its own* position (ack `ack_range_end`, TrySync, first_send). Once the relay has
//! changed an item's length, or put two commands into one item, the replica's positions are no
//! longer the master's, and they cannot be computed either: every position depends on where each
//! earlier item fell relative to 64 KiB block boundaries and file rollover, which differ between
//! the two logs from the first change on. So the relay only ever uses correspondences it has
//! *observed*:
//!
//! * [`MapState::Identity`]: since the last full sync every forwarded item reached the replica
//!   unchanged, so its log is a layout copy of the master's and every position is the master's.
//!   Unchanged responses need no new mapping while this holds — and only then: after a change,
//!   even an unchanged item may land at a different distance from a block boundary, so its END
//!   has to be learned from the replica's ack like any other.
//! * [`MapState::Pairs`]: exact `(replica, master)` correspondences at the response boundaries
//!   the replica may currently be at. Each ack contributes one (the replica's `ack_range_end`
//!   after applying a response, against that response's last master END); leaving identity
//!   contributes the boundaries that were still identical (the last acked END and the END of each
//!   response already forwarded unchanged).
//! * [`MapState::Unknown`]: nothing is trusted (no map, a corrupt map, a full sync under way).
//!
//! A replica's producer position never moves backwards except through a full sync (which resets
//! the map), so pairs older than the newest ack are dropped. A position that is not covered is
//! answered with kSyncPointBePurged (a full sync), never with a guess.

use crate::pika::messages::BinlogPosition;

/// One observed correspondence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    /// Replica space.
    pub replica: BinlogPosition,
    /// Master space.
    pub master: BinlogPosition,
}

/// What the relay knows about one replica's positions (for one DB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapState {
    /// No trusted correspondence: the next TrySync forces a full sync.
    Unknown,
    /// Replica positions are master positions.
    Identity,
    /// Exact correspondences, oldest (lowest master position) first.
    Pairs(Vec<Pair>),
}

impl MapState {
    /// The master position for the replica position `replica`, if it is known exactly.
    pub fn translate(&self, replica: BinlogPosition) -> Option<BinlogPosition> {
        match self {
            MapState::Unknown => None,
            MapState::Identity => Some(replica),
            MapState::Pairs(pairs) => pairs
                .iter()
                .find(|p| p.replica == replica)
                .map(|p| p.master),
        }
    }

    /// A map holding only the identical boundaries `boundaries` (leaving identity).
    pub fn from_identical(boundaries: impl IntoIterator<Item = BinlogPosition>) -> MapState {
        let mut pairs: Vec<Pair> = boundaries
            .into_iter()
            .map(|p| Pair {
                replica: p,
                master: p,
            })
            .collect();
        pairs.sort_by_key(|p| p.master);
        pairs.dedup();
        MapState::Pairs(pairs)
    }

    /// The map after the replica acknowledged up to master `master` at its own `replica`:
    /// pairs at or before `master` are superseded, later ones (responses still outstanding)
    /// stay.
    pub fn after_ack(&self, replica: BinlogPosition, master: BinlogPosition) -> MapState {
        let mut pairs = vec![Pair { replica, master }];
        if let MapState::Pairs(old) = self {
            pairs.extend(old.iter().filter(|p| p.master > master).copied());
        }
        MapState::Pairs(pairs)
    }

    /// The map with the correspondences `added` (positions predicted for a response being
    /// forwarded, see `replica_layout`) after the existing ones; master positions only grow.
    pub fn with_pairs(&self, added: &[Pair]) -> MapState {
        let first = added.first().map(|p| p.master);
        let mut pairs = match self {
            MapState::Pairs(old) => old.clone(),
            MapState::Unknown | MapState::Identity => Vec::new(),
        };
        if let Some(first) = first {
            pairs.retain(|p| p.master < first);
        }
        pairs.extend_from_slice(added);
        MapState::Pairs(pairs)
    }

    /// The map once a session resumed at the exact pair `(replica, master)`: outstanding
    /// boundaries of the old session are forgotten, because the items after `master` will be
    /// rewritten again and may land elsewhere on the replica.
    pub fn resumed_at(&self, replica: BinlogPosition, master: BinlogPosition) -> MapState {
        match self {
            MapState::Identity if replica == master => MapState::Identity,
            _ => MapState::Pairs(vec![Pair { replica, master }]),
        }
    }

    /// True when replica positions equal master positions.
    pub fn is_identity(&self) -> bool {
        matches!(self, MapState::Identity)
    }

    /// Number of stored correspondences (for the `offset_map_points` gauge).
    pub fn points(&self) -> usize {
        match self {
            MapState::Pairs(p) => p.len(),
            MapState::Unknown | MapState::Identity => 0,
        }
    }

    /// Short name for logs and the admin view.
    pub fn name(&self) -> &'static str {
        match self {
            MapState::Unknown => "unknown",
            MapState::Identity => "identity",
            MapState::Pairs(_) => "pairs",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(o: u64) -> BinlogPosition {
        BinlogPosition::new(0, o)
    }

    #[test]
    fn translation_is_exact_or_nothing() {
        assert_eq!(MapState::Unknown.translate(pos(5)), None);
        assert_eq!(MapState::Identity.translate(pos(5)), Some(pos(5)));
        let m = MapState::Identity.resumed_at(pos(5), pos(5));
        assert!(m.is_identity());
        let m = MapState::from_identical([pos(1229), pos(973), pos(1229)]);
        assert_eq!(m.points(), 2);
        assert_eq!(m.translate(pos(973)), Some(pos(973)));
        // The replica acked the first outstanding response at its own 1030 (master 973).
        let m = m.after_ack(pos(1030), pos(973));
        assert_eq!(m.translate(pos(1030)), Some(pos(973)));
        assert_eq!(m.translate(pos(1229)), Some(pos(1229)));
        assert_eq!(m.translate(pos(973)), None);
        let m = m.after_ack(pos(1300), pos(1229));
        assert_eq!(m.points(), 1);
        assert_eq!(m.translate(pos(1030)), None);
        let m = m.resumed_at(pos(1300), pos(1229));
        assert_eq!(
            m,
            MapState::Pairs(vec![Pair {
                replica: pos(1300),
                master: pos(1229)
            }])
        );
    }
}
