//! Translation between the two offset spaces of one replica link
//! (`docs/redis-protocol.md#offset-translation`).
//!
//! Once the proxy changes the length of entries, the master's numbering of the bytes the proxy
//! receives (**U**) and the replica's numbering of the bytes the proxy sends (**D**) differ. The
//! replica only ever speaks D (ACK, FACK, PSYNC); the master only understands U.
//!
//! The map is a monotone list of command boundaries `(d, u)` outside MULTI. The difference
//! `d − u` only changes where an entry was rewritten, and the selected DB only changes at
//! SELECT, so a point is stored only there (plus the base); between two points every D offset
//! up to the next point's `gap_start` is a boundary with the same delta. Offsets in
//! `(gap_start, d)` of a point lie inside a rewritten entry or the transaction that contained it
//! and are not boundaries.
//!
//! * ACK/FACK use [`OffsetMap::floor`]: the U offset of the greatest boundary ≤ d, so an ACK is
//!   never over-reported (the master keeps the maximum it has seen, and WAIT trusts it).
//! * PSYNC uses [`OffsetMap::exact`]: only a recorded boundary may be continued; anything else is
//!   answered with a full resync.

use std::collections::VecDeque;

/// One boundary where the delta or the selected DB changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapPoint {
    /// Downstream offset of the boundary.
    pub d: u64,
    /// Upstream offset of the same boundary.
    pub u: u64,
    /// DB selected from this boundary on (SELECT is not re-sent after `+CONTINUE`).
    pub db: u32,
    /// The last valid boundary before this point; `(gap_start, d)` is not a boundary. Equal to
    /// `d` when the point is not preceded by a gap.
    pub gap_start: u64,
}

impl MapPoint {
    fn delta(&self) -> i128 {
        i128::from(self.d) - i128::from(self.u)
    }
}

/// The boundary map of one replica session; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetMap {
    points: VecDeque<MapPoint>,
    /// The latest boundary recorded (≥ the last point's `d`), in D.
    tip_d: u64,
}

/// A boundary resolved for a partial resynchronisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Upstream offset of the boundary.
    pub u: u64,
    /// DB selected at the boundary.
    pub db: u32,
}

impl OffsetMap {
    /// A map whose only boundary is the start of a sync at `d`/`u` with `db` selected.
    pub fn new(d: u64, u: u64, db: u32) -> Self {
        OffsetMap {
            points: VecDeque::from([MapPoint {
                d,
                u,
                db,
                gap_start: d,
            }]),
            tip_d: d,
        }
    }

    /// Rebuild a map from persisted points (oldest first) and the last boundary known to have
    /// been recorded. Returns `None` when the points are not monotone or the tip precedes them.
    pub fn from_parts(points: Vec<MapPoint>, tip_d: u64) -> Option<Self> {
        let last = *points.last()?;
        let monotone = points
            .windows(2)
            .all(|w| w[0].d <= w[1].gap_start && w[1].gap_start <= w[1].d && w[0].u <= w[1].u);
        let first_sane = points[0].gap_start <= points[0].d;
        // Redis offsets are signed 64-bit: larger values can only come from a corrupt file,
        // and would overflow the arithmetic of the map.
        let in_range = tip_d <= i64::MAX as u64
            && points
                .iter()
                .all(|p| p.d <= i64::MAX as u64 && p.u <= i64::MAX as u64);
        if !monotone || !first_sane || !in_range || tip_d < last.d {
            return None;
        }
        Some(OffsetMap {
            points: points.into(),
            tip_d,
        })
    }

    /// The stored points, oldest first.
    pub fn points(&self) -> std::collections::vec_deque::Iter<'_, MapPoint> {
        self.points.iter()
    }

    /// Number of stored points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Never true: a map always holds its base point. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    fn last(&self) -> MapPoint {
        // The deque is never empty: constructors insert a point, pruning keeps one.
        self.points.back().copied().unwrap_or(MapPoint {
            d: self.tip_d,
            u: self.tip_d,
            db: 0,
            gap_start: self.tip_d,
        })
    }

    /// The latest recorded boundary: `(d, u, db)`.
    pub fn tip(&self) -> (u64, u64, u32) {
        let last = self.last();
        (self.tip_d, last.u + (self.tip_d - last.d), last.db)
    }

    /// Record that the stream reached a boundary outside MULTI at `d`/`u` with `db` selected.
    /// `block_start` is the D offset where the entry (or the transaction) that ends here began;
    /// `rewritten` says whether its bytes differ from the master's. Returns whether a point was
    /// stored.
    pub fn record_boundary(
        &mut self,
        d: u64,
        u: u64,
        db: u32,
        block_start: u64,
        rewritten: bool,
    ) -> bool {
        let last = self.last();
        let delta = i128::from(d) - i128::from(u);
        if !rewritten && delta == last.delta() && db == last.db && d >= self.tip_d {
            self.tip_d = d;
            return false;
        }
        // Offsets strictly between the previous boundary and this one are inside the block
        // (an expansion, a transaction, the SELECT itself): not boundaries. The block start is
        // still a boundary of the previous segment, with the previous delta and DB.
        let gap_start = block_start.max(self.tip_d).min(d);
        self.points.push_back(MapPoint {
            d,
            u,
            db,
            gap_start,
        });
        self.tip_d = d;
        true
    }

    /// Index of the last point with `p.d ≤ d`.
    fn segment_of(&self, d: u64) -> Option<usize> {
        let idx = self.points.partition_point(|p| p.d <= d);
        idx.checked_sub(1)
    }

    /// The last valid boundary of segment `i`.
    fn segment_end(&self, i: usize) -> u64 {
        match self.points.get(i + 1) {
            Some(next) => next.gap_start,
            None => self.tip_d,
        }
    }

    /// U offset of the greatest boundary ≤ `d`, or `None` when `d` precedes the map.
    pub fn floor(&self, d: u64) -> Option<u64> {
        let i = self.segment_of(d)?;
        let p = self.points[i];
        let end = self.segment_end(i);
        Some(p.u + (d.min(end) - p.d))
    }

    /// The U offset and DB of boundary `d`, if `d` is exactly a recorded boundary.
    pub fn exact(&self, d: u64) -> Option<Resolved> {
        let i = self.segment_of(d)?;
        let p = self.points[i];
        if d > self.segment_end(i) {
            return None;
        }
        Some(Resolved {
            u: p.u + (d - p.d),
            db: p.db,
        })
    }

    /// Forget boundaries before `d` (the replica acknowledged `d`; it will never ask for an
    /// earlier one). Keeps the point covering `d`. Returns how many points were dropped.
    pub fn prune_before(&mut self, d: u64) -> usize {
        let Some(i) = self.segment_of(d) else {
            return 0;
        };
        self.points.drain(..i);
        i
    }

    /// Keep at most `max` points (a replica that acknowledges rarely or never, such as
    /// `redis-cli --replica`, would otherwise grow the map without bound while rewrites flow).
    /// Points are **thinned**, not cut from the front: every second point of the oldest eighth
    /// is removed and its span becomes part of the next point's gap, as often as needed. Offsets
    /// there can no longer be continued (PSYNC gets a full resync) and an ACK there maps to the
    /// boundary just before the gap (acknowledging a little less than the replica has, never
    /// more); every offset the map could map before still maps, and the newest points, where a
    /// replica resumes, stay exact. Thinning works in place on the oldest points only, so one
    /// round costs an eighth of the map, not a copy of all of it. Returns how many points were
    /// removed.
    pub fn cap(&mut self, max: usize) -> usize {
        let max = max.max(2);
        let mut removed = 0;
        while self.points.len() > max {
            let len = self.points.len();
            // At least one pair, and the point after the region exists to take a merged gap.
            let region = (len / 8).max(2).min(len - 1);
            // Kept points are moved towards the end of the region, newest first; `next` is where
            // the kept point following the one being looked at now lies.
            let mut next = region;
            let mut write = region;
            for i in (0..region).rev() {
                let p = self.points[i];
                if i % 2 == 1 {
                    // The previous segment still ends where `p`'s gap began; from there to the
                    // next point nothing is a boundary any more.
                    let following = &mut self.points[next];
                    following.gap_start = following.gap_start.min(p.gap_start);
                    removed += 1;
                } else {
                    write -= 1;
                    self.points[write] = p;
                    next = write;
                }
            }
            self.points.drain(..write);
        }
        removed
    }

    /// Make `d` (an exact boundary) the end of the map: the stream restarts there, so whatever
    /// was recorded after it is void. Returns false when `d` is not a boundary.
    pub fn truncate_to(&mut self, d: u64) -> bool {
        if self.exact(d).is_none() {
            return false;
        }
        while self.points.back().is_some_and(|p| p.d > d) {
            self.points.pop_back();
        }
        self.tip_d = d;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prototype's numbers (`docs/redis-protocol.md#offset-translation`): base 0/0, rewrites
    /// make D run ahead of U.
    fn sample() -> OffsetMap {
        let mut m = OffsetMap::new(100, 100, 0);
        // SELECT 3 at [100,123): DB changes, no rewrite.
        assert!(m.record_boundary(123, 123, 3, 100, false));
        // Plain SET at [123,150).
        assert!(!m.record_boundary(150, 150, 3, 123, false));
        // INCR (22 bytes) rewritten into 100 bytes: D [150,250), U [150,172).
        assert!(m.record_boundary(250, 172, 3, 150, true));
        // Two plain entries.
        assert!(!m.record_boundary(280, 202, 3, 250, false));
        assert!(!m.record_boundary(300, 222, 3, 280, false));
        m
    }

    #[test]
    fn floor_never_over_reports() {
        let m = sample();
        assert_eq!(m.floor(99), None);
        assert_eq!(m.floor(100), Some(100));
        assert_eq!(m.floor(123), Some(123));
        assert_eq!(m.floor(150), Some(150));
        // Inside the expansion: floor to its start.
        assert_eq!(m.floor(200), Some(150));
        assert_eq!(m.floor(249), Some(150));
        assert_eq!(m.floor(250), Some(172));
        assert_eq!(m.floor(300), Some(222));
        // Beyond the tip: clamp to the tip.
        assert_eq!(m.floor(10_000), Some(222));
    }

    #[test]
    fn exact_only_on_boundaries() {
        let m = sample();
        assert_eq!(m.exact(100), Some(Resolved { u: 100, db: 0 }));
        assert_eq!(m.exact(123), Some(Resolved { u: 123, db: 3 }));
        assert_eq!(m.exact(150), Some(Resolved { u: 150, db: 3 }));
        assert_eq!(m.exact(151), None);
        assert_eq!(m.exact(249), None);
        assert_eq!(m.exact(250), Some(Resolved { u: 172, db: 3 }));
        assert_eq!(m.exact(300), Some(Resolved { u: 222, db: 3 }));
        assert_eq!(m.exact(301), None);
        assert_eq!(m.exact(50), None);
    }

    #[test]
    fn prune_and_truncate() {
        let mut m = sample();
        assert_eq!(m.prune_before(260), 2);
        assert_eq!(m.len(), 1);
        assert_eq!(m.floor(260), Some(182));
        assert_eq!(m.floor(249), None);
        let mut m = sample();
        assert_eq!(m.cap(2), 1);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m.floor(100),
            Some(100),
            "the oldest boundary stays mappable"
        );
        let mut m = sample();
        assert!(m.truncate_to(150));
        assert_eq!(m.tip(), (150, 150, 3));
        assert_eq!(m.exact(250), None);
        // New history after the truncation point.
        assert!(!m.record_boundary(170, 170, 3, 150, false));
        assert_eq!(m.exact(170), Some(Resolved { u: 170, db: 3 }));
        assert!(!m.truncate_to(171));
        assert!(!m.truncate_to(101));
    }

    #[test]
    fn thinning_keeps_every_ack_mappable_and_never_maps_wrong() {
        // 5000 entries, every third one rewritten (+7 bytes), SELECTs now and then.
        let mut m = OffsetMap::new(1000, 1000, 0);
        let (mut d, mut u, mut db) = (1000u64, 1000u64, 0u32);
        for i in 0..5000u64 {
            let rewritten = i % 3 == 0;
            if i % 500 == 499 {
                db = (db + 1) % 4;
            }
            let start = d;
            u += 20;
            d += if rewritten { 27 } else { 20 };
            m.record_boundary(d, u, db, start, rewritten);
        }
        let full = m.clone();
        let removed = m.cap(400);
        assert!(m.len() <= 400 && removed > 0, "{} points", m.len());
        assert_eq!(m.tip(), full.tip());
        let first = full.points().next().unwrap().d;
        let mut exact_kept = 0;
        for x in first..=full.tip().0 + 5 {
            let (thin, orig) = (m.floor(x), full.floor(x));
            assert!(
                thin.is_some() == orig.is_some(),
                "floor({x}) {thin:?} vs {orig:?}"
            );
            assert!(thin <= orig, "floor({x}) {thin:?} > {orig:?}");
            if let Some(r) = m.exact(x) {
                assert_eq!(Some(r), full.exact(x), "exact({x})");
                exact_kept += 1;
            }
        }
        // The newest half is untouched: resuming near the tip stays exact.
        assert_eq!(m.exact(full.tip().0), full.exact(full.tip().0));
        assert!(exact_kept > 100);
    }

    #[test]
    fn from_parts_validates() {
        let m = sample();
        let pts: Vec<MapPoint> = m.points().copied().collect();
        let back = OffsetMap::from_parts(pts.clone(), m.tip().0).unwrap();
        assert_eq!(back, m);
        assert!(OffsetMap::from_parts(pts.clone(), 10).is_none());
        let mut bad = pts;
        bad.swap(0, 2);
        assert!(OffsetMap::from_parts(bad, 300).is_none());
        assert!(OffsetMap::from_parts(Vec::new(), 0).is_none());
    }
}
