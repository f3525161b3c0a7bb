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

use std::collections::VecDeque;

use crate::pika::messages::BinlogPosition;

/// One observed correspondence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    /// Replica space.
    pub replica: BinlogPosition,
    /// Master space.
    pub master: BinlogPosition,
}

/// A change of a DB's map, as the link hands it to the map's store (which holds the same state
/// and applies the change to it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapUpdate {
    /// The whole new state.
    Whole(MapState),
    /// [`MapState::after_ack`] with this pair.
    Acked(Pair),
    /// [`MapState::with_pairs`] with these pairs.
    Appended(Vec<Pair>),
}

/// Which of the old pairs a state after an update keeps.
#[derive(Clone, Copy, Debug)]
enum Keep {
    All,
    /// Those with a later master position.
    After(BinlogPosition),
    /// Those with an earlier master position.
    Before(BinlogPosition),
}

/// The pairs of a state after an update, without the state ([`MapState::pairs_after`]): `head`,
/// the old pairs `keep` selects, then `tail`.
#[derive(Clone, Copy, Debug)]
pub struct PairsAfter<'a> {
    head: &'a [Pair],
    kept: (&'a [Pair], &'a [Pair]),
    keep: Keep,
    tail: &'a [Pair],
}

impl<'a> PairsAfter<'a> {
    /// Exactly `front`, then `back`.
    pub fn of(front: &'a [Pair], back: &'a [Pair]) -> Self {
        PairsAfter {
            head: &[],
            kept: (front, back),
            keep: Keep::All,
            tail: &[],
        }
    }

    /// At most this many pairs.
    pub fn max_len(&self) -> usize {
        self.head.len() + self.kept.0.len() + self.kept.1.len() + self.tail.len()
    }

    /// Calls `f` with each pair, in order.
    #[inline]
    pub fn for_each(&self, mut f: impl FnMut(&Pair)) {
        self.head.iter().for_each(&mut f);
        for kept in [self.kept.0, self.kept.1] {
            match self.keep {
                Keep::All => kept.iter().for_each(&mut f),
                Keep::After(m) => kept.iter().filter(|p| p.master > m).for_each(&mut f),
                Keep::Before(m) => kept.iter().filter(|p| p.master < m).for_each(&mut f),
            }
        }
        self.tail.iter().for_each(&mut f);
    }
}

/// What the relay knows about one replica's positions (for one DB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapState {
    /// No trusted correspondence: the next TrySync forces a full sync.
    Unknown,
    /// Replica positions are master positions.
    Identity,
    /// Exact correspondences, oldest (lowest master position) first.
    Pairs(VecDeque<Pair>),
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
        MapState::Pairs(pairs.into())
    }

    /// The map after the replica acknowledged up to master `master` at its own `replica`:
    /// pairs at or before `master` are superseded, later ones (responses still outstanding)
    /// stay.
    pub fn after_ack(&self, replica: BinlogPosition, master: BinlogPosition) -> MapState {
        let mut pairs = VecDeque::from([Pair { replica, master }]);
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
            MapState::Unknown | MapState::Identity => VecDeque::new(),
        };
        if let Some(first) = first {
            pairs.retain(|p| p.master < first);
        }
        pairs.extend(added.iter().copied());
        MapState::Pairs(pairs)
    }

    /// [`MapState::after_ack`] in place. Pairs are kept in master order (every state is built
    /// that way, and a map read from disk is put in that order), so the superseded pairs are
    /// the front ones: the cost is the pairs dropped, not the pairs outstanding, which a
    /// replica far behind the relay's read-ahead counts in hundreds of thousands.
    pub fn ack(&mut self, replica: BinlogPosition, master: BinlogPosition) {
        let pair = Pair { replica, master };
        match self {
            MapState::Pairs(pairs) => {
                while pairs.front().is_some_and(|p| p.master <= master) {
                    pairs.pop_front();
                }
                pairs.push_front(pair);
            }
            MapState::Unknown | MapState::Identity => {
                *self = MapState::Pairs(VecDeque::from([pair]))
            }
        }
    }

    /// [`MapState::with_pairs`] in place; `added` is in master order, and the superseded
    /// pairs are the back ones (see [`MapState::ack`]).
    pub fn append(&mut self, added: &[Pair]) {
        debug_assert!(added.windows(2).all(|w| w[0].master <= w[1].master));
        if !matches!(self, MapState::Pairs(_)) {
            *self = MapState::Pairs(VecDeque::new());
        }
        if let MapState::Pairs(pairs) = self {
            if let Some(first) = added.first().map(|p| p.master) {
                while pairs.back().is_some_and(|p| p.master >= first) {
                    pairs.pop_back();
                }
            }
            pairs.extend(added.iter().copied());
        }
    }

    /// The map after `update`, in place.
    pub fn apply(&mut self, update: MapUpdate) {
        match update {
            MapUpdate::Whole(state) => *self = state,
            MapUpdate::Acked(pair) => self.ack(pair.replica, pair.master),
            MapUpdate::Appended(added) => self.append(&added),
        }
    }

    /// The pairs of the state after `update` when it is a `Pairs` state (`None` otherwise),
    /// read from this state and the update without building the new state.
    pub fn pairs_after<'a>(&'a self, update: &'a MapUpdate) -> Option<PairsAfter<'a>> {
        let old = match self {
            MapState::Pairs(p) => p.as_slices(),
            MapState::Unknown | MapState::Identity => (&[][..], &[][..]),
        };
        Some(match update {
            MapUpdate::Whole(MapState::Pairs(p)) => {
                let (front, back) = p.as_slices();
                PairsAfter::of(front, back)
            }
            MapUpdate::Whole(_) => return None,
            MapUpdate::Acked(pair) => PairsAfter {
                head: std::slice::from_ref(pair),
                kept: old,
                keep: Keep::After(pair.master),
                tail: &[],
            },
            MapUpdate::Appended(added) => PairsAfter {
                head: &[],
                kept: old,
                keep: added.first().map_or(Keep::All, |p| Keep::Before(p.master)),
                tail: added,
            },
        })
    }

    /// The map once a session resumed at the exact pair `(replica, master)`: outstanding
    /// boundaries of the old session are forgotten, because the items after `master` will be
    /// rewritten again and may land elsewhere on the replica.
    pub fn resumed_at(&self, replica: BinlogPosition, master: BinlogPosition) -> MapState {
        match self {
            MapState::Identity if replica == master => MapState::Identity,
            _ => MapState::Pairs(vec![Pair { replica, master }].into()),
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

    /// The in-place forms and the store's view of an update agree with the building forms.
    #[test]
    fn updates_in_place_agree_with_the_new_states() {
        let pair = |r, m| Pair {
            replica: pos(r),
            master: pos(m),
        };
        let states = [
            MapState::Unknown,
            MapState::Identity,
            MapState::Pairs(vec![].into()),
            MapState::Pairs(vec![pair(10, 5), pair(30, 20), pair(50, 40)].into()),
            MapState::Pairs(
                vec![
                    pair(10, 5),
                    pair(30, 20),
                    pair(50, 40),
                    pair(65, 60),
                    pair(95, 90),
                ]
                .into(),
            ),
        ];
        let updates = [
            MapUpdate::Acked(pair(31, 20)),
            MapUpdate::Acked(pair(1, 1)),
            MapUpdate::Acked(pair(99, 90)),
            MapUpdate::Appended(vec![]),
            MapUpdate::Appended(vec![pair(60, 40), pair(70, 60)]),
            MapUpdate::Appended(vec![pair(80, 70)]),
            MapUpdate::Whole(MapState::Identity),
            MapUpdate::Whole(MapState::Pairs(vec![pair(3, 2)].into())),
        ];
        for state in &states {
            for update in &updates {
                let expected = match update {
                    MapUpdate::Whole(s) => s.clone(),
                    MapUpdate::Acked(p) => state.after_ack(p.replica, p.master),
                    MapUpdate::Appended(added) => state.with_pairs(added),
                };
                let seen = state.pairs_after(update).map(|after| {
                    let mut seen = Vec::new();
                    after.for_each(|p| seen.push(*p));
                    assert!(seen.len() <= after.max_len());
                    seen
                });
                match &expected {
                    MapState::Pairs(p) => {
                        assert_eq!(
                            seen,
                            Some(p.iter().copied().collect()),
                            "{state:?} {update:?}"
                        )
                    }
                    _ => assert_eq!(seen, None, "{state:?} {update:?}"),
                }
                let mut applied = state.clone();
                applied.apply(update.clone());
                assert_eq!(applied, expected, "{state:?} {update:?}");
            }
        }
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
            MapState::Pairs(
                vec![Pair {
                    replica: pos(1300),
                    master: pos(1229)
                }]
                .into()
            )
        );
    }
}
