//! One replica DB's offset map on disk: links hand it the newest map state, which is written to
//! the map file before the call returns, and a link that must not go on before its state is
//! synced waits for the sync.
//!
//! Two levels, because a crash of the proxy and a power loss differ. A state handed in is in the
//! file (the kernel has it) when [`CommittedMap::hand_in`] returns, so it survives the proxy
//! being killed at any instant; syncs run behind, at most every 20 ms unless a link waits.
//! Every pair a [`MapState::Pairs`] ever holds is a true correspondence for the replica's
//! current binlog (positions only grow between full syncs), so an older `Pairs` state after a
//! power loss can only make a restarted relay answer "purged" (one full sync), never translate
//! wrongly. Transitions out of that shape wait for the sync ([`CommittedMap::persist`]):
//! `Identity` → `Pairs` before the first rewritten item reaches the replica, `Unknown` before a
//! DBSync, `Identity` after a full sync, and the resume point of a new session.
//!
//! Only the newest link of a replica may hand in states: a replica that reconnects gets a new
//! link, and the old one must not overwrite what the new one learns.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::map_store::{Loaded, MapStore};
use super::offset_map::{MapState, MapUpdate};
use super::registry::lock;
use crate::relay_core::record_log;

/// The shortest time between two syncs nobody waits for, so a busy link costs at most 50
/// fsyncs per second whatever its ack rate. A write-ahead wait cuts the pause short.
const MIN_SYNC_SPACING: Duration = Duration::from_millis(20);

/// A replica DB's offset map, shared by the links of that replica (one at a time owns it).
#[derive(Clone, Debug)]
pub(crate) struct CommittedMap {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    owner: u64,
    store: MapStore,
    /// Set once a write failed; every later hand-in or wait fails with it.
    failed: Option<String>,
}

impl CommittedMap {
    /// Opens (or creates) the map file at `path`, owned by `link`.
    pub(crate) fn open(path: &Path, link: u64) -> io::Result<(CommittedMap, Loaded)> {
        Self::open_with_spacing(path, link, MIN_SYNC_SPACING)
    }

    /// [`CommittedMap::open`] with another pause between unawaited syncs.
    fn open_with_spacing(
        path: &Path,
        link: u64,
        spacing: Duration,
    ) -> io::Result<(CommittedMap, Loaded)> {
        let (store, loaded) = MapStore::open(path, spacing)?;
        let inner = Arc::new(Mutex::new(Inner {
            owner: link,
            store,
            failed: None,
        }));
        Ok((CommittedMap { inner }, loaded))
    }

    /// Makes `link` the owner and returns the newest state handed in.
    pub(crate) fn claim(&self, link: u64) -> MapState {
        let mut inner = lock(&self.inner);
        inner.owner = link;
        inner.store.state().clone()
    }

    /// Writes `state` for `link` (it survives a crash of the proxy once this returns) without
    /// waiting for the sync; returns its version. Fails when a newer link owns the map or a
    /// write failed.
    pub(crate) fn hand_in(&self, link: u64, state: MapState) -> io::Result<u64> {
        self.hand_in_update(link, MapUpdate::Whole(state))
    }

    /// [`CommittedMap::hand_in`] of the state `update` makes of the newest one (which is the
    /// link's own state while it owns the map and its writes succeed).
    pub(crate) fn hand_in_update(&self, link: u64, update: MapUpdate) -> io::Result<u64> {
        let mut inner = lock(&self.inner);
        if let Some(why) = &inner.failed {
            return Err(io::Error::other(why.clone()));
        }
        if inner.owner != link {
            return Err(io::Error::other(
                "a newer connection of this replica owns its offset map",
            ));
        }
        match inner.store.persist_update(update) {
            Ok(version) => Ok(version),
            Err(e) => {
                let why = format!("cannot write the offset map: {e}");
                tracing::error!("{why}");
                inner.failed = Some(why.clone());
                Err(io::Error::other(why))
            }
        }
    }

    /// Waits until the state of `version` (or a newer one) is synced.
    pub(crate) async fn durable(&self, version: u64) -> io::Result<()> {
        let mut progress = {
            let inner = lock(&self.inner);
            if let Some(why) = &inner.failed {
                return Err(io::Error::other(why.clone()));
            }
            inner.store.urge();
            inner.store.watch()
        };
        record_log::durable(&mut progress, version)
            .await
            .map_err(|why| io::Error::other(why.to_string()))
    }

    /// Writes `state` and waits until it is synced (write-ahead).
    pub(crate) async fn persist(&self, link: u64, state: MapState) -> io::Result<()> {
        let version = self.hand_in(link, state)?;
        self.durable(version).await
    }

    /// Waits until everything handed in so far is synced.
    pub(crate) async fn flush(&self) -> io::Result<()> {
        let version = lock(&self.inner).store.written();
        self.durable(version).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pika::messages::BinlogPosition;
    use crate::pika_relay::map_store::parse;
    use crate::pika_relay::offset_map::Pair;

    fn pairs(r: u64, m: u64) -> MapState {
        MapState::Pairs(
            vec![Pair {
                replica: BinlogPosition::new(0, r),
                master: BinlogPosition::new(0, m),
            }]
            .into(),
        )
    }

    fn on_disk(path: &Path) -> Loaded {
        parse(&std::fs::read(path).unwrap())
    }

    #[tokio::test]
    async fn a_persisted_state_is_on_disk_when_persist_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.map");
        let (map, loaded) = CommittedMap::open(&path, 1).unwrap();
        assert_eq!(loaded, Loaded::Missing);
        map.persist(1, MapState::Identity).await.unwrap();
        assert_eq!(on_disk(&path), Loaded::State(MapState::Identity, 0));
        map.persist(1, pairs(10, 20)).await.unwrap();
        assert_eq!(on_disk(&path), Loaded::State(pairs(10, 20), 0));
    }

    /// What a crash of the proxy right after a hand-in finds: the state, without any wait.
    #[tokio::test]
    async fn a_handed_in_state_is_in_the_file_when_hand_in_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.map");
        let (map, _) =
            CommittedMap::open_with_spacing(&path, 1, Duration::from_secs(3600)).unwrap();
        for i in 1..=500u64 {
            map.hand_in(1, pairs(i, 2 * i)).unwrap();
            assert_eq!(on_disk(&path), Loaded::State(pairs(i, 2 * i), 0));
        }
        map.flush().await.unwrap();
    }

    /// Writes nobody waits for are spaced out; a write-ahead wait is not held up by that pause.
    #[tokio::test]
    async fn a_waiting_link_cuts_the_pause_between_writes_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.map");
        let (map, _) =
            CommittedMap::open_with_spacing(&path, 1, Duration::from_secs(3600)).unwrap();
        map.hand_in(1, pairs(1, 2)).unwrap();
        // Nobody waits: the syncer syncs it, then pauses for an hour.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tokio::time::timeout(Duration::from_secs(20), map.persist(1, pairs(3, 4)))
            .await
            .expect("a write-ahead waits for the disk, not for the pause")
            .unwrap();
        assert_eq!(on_disk(&path), Loaded::State(pairs(3, 4), 0));
    }

    #[tokio::test]
    async fn only_the_newest_link_hands_in() {
        let dir = tempfile::tempdir().unwrap();
        let (map, _) = CommittedMap::open(&dir.path().join("m.map"), 1).unwrap();
        map.hand_in(1, pairs(1, 2)).unwrap();
        assert_eq!(
            map.claim(2),
            pairs(1, 2),
            "the new link sees the newest state"
        );
        assert!(map.hand_in(1, pairs(3, 4)).is_err());
        map.persist(2, pairs(5, 6)).await.unwrap();
        map.flush().await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_fails_every_later_wait_and_hand_in() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("m.map");
        let (map, _) = CommittedMap::open(&path, 1).unwrap();
        // Compaction renames over the file; make the next write a compaction into a directory
        // that no longer exists.
        std::fs::remove_dir_all(&sub).unwrap();
        lock(&map.inner).store.force_compaction_on_next_write();
        assert!(map.persist(1, MapState::Identity).await.is_err());
        assert!(map.hand_in(1, MapState::Unknown).is_err());
        assert!(map.flush().await.is_err());
    }
}
