//! Group commit of one replica DB's offset map: links hand it the newest map state without
//! waiting, a background task writes the newest state it finds (one `fsync` covers every state
//! handed in meanwhile), and a link that must not go on before its state is on disk waits for it.
//!
//! Why waiting is only sometimes needed: every pair a [`MapState::Pairs`] ever holds is a true
//! correspondence for the replica's current binlog (positions only grow between full syncs), so
//! an older `Pairs` state on disk can only make a restarted relay answer "purged" (one full
//! sync), never translate wrongly. Transitions out of that shape are write-ahead and wait:
//! `Identity` → `Pairs` before the first rewritten item reaches the replica, `Unknown` before a
//! DBSync, `Identity` after a full sync, and the resume point of a new session. Acks between two
//! `Pairs` states are handed in and not waited for, which takes the `fsync` off the path of
//! every ack.
//!
//! Only the newest link of a replica may hand in states: a replica that reconnects gets a new
//! link, and the old one must not overwrite what the new one learns.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::map_store::{Loaded, MapStore};
use super::offset_map::MapState;
use super::registry::lock;

/// The shortest time between two writes nobody waits for, so a busy link costs at most 50
/// fsyncs per second whatever its ack rate. A write-ahead wait cuts the pause short.
const MIN_WRITE_SPACING: Duration = Duration::from_millis(20);

/// A replica DB's offset map, shared by the links of that replica (one at a time owns it).
#[derive(Clone, Debug)]
pub(crate) struct CommittedMap {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    newest: Mutex<Newest>,
    wake: Notify,
    /// Links waiting in [`CommittedMap::durable`]; while any waits the writer does not pause.
    waiting: AtomicUsize,
    urgent: Notify,
    spacing: Duration,
    /// Version of the newest state on disk.
    durable: watch::Sender<u64>,
    file: Mutex<MapStore>,
}

#[derive(Debug)]
struct Newest {
    owner: u64,
    state: MapState,
    version: u64,
    /// Set once a write failed; every later hand-in or wait fails with it.
    failed: Option<String>,
}

impl CommittedMap {
    /// Opens (or creates) the map file at `path`, owned by `link`, and starts its writer task
    /// (so it must be called within a Tokio runtime).
    pub(crate) fn open(path: &Path, link: u64) -> io::Result<(CommittedMap, Loaded)> {
        Self::open_with_spacing(path, link, MIN_WRITE_SPACING)
    }

    /// [`CommittedMap::open`] with another pause between unawaited writes.
    fn open_with_spacing(
        path: &Path,
        link: u64,
        spacing: Duration,
    ) -> io::Result<(CommittedMap, Loaded)> {
        let (store, loaded) = MapStore::open(path)?;
        let state = store.state().clone();
        let (durable, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            newest: Mutex::new(Newest {
                owner: link,
                state,
                version: 0,
                failed: None,
            }),
            wake: Notify::new(),
            waiting: AtomicUsize::new(0),
            urgent: Notify::new(),
            spacing,
            durable,
            file: Mutex::new(store),
        });
        tokio::spawn(write_behind(inner.clone()));
        Ok((CommittedMap { inner }, loaded))
    }

    /// Makes `link` the owner and returns the newest state handed in (on disk or not: it is
    /// true either way).
    pub(crate) fn claim(&self, link: u64) -> MapState {
        let mut newest = lock(&self.inner.newest);
        newest.owner = link;
        newest.state.clone()
    }

    /// Hands in `state` for `link` without waiting for the disk; returns its version. Fails when
    /// a newer link owns the map or an earlier write failed.
    pub(crate) fn hand_in(&self, link: u64, state: MapState) -> io::Result<u64> {
        let version = {
            let mut newest = lock(&self.inner.newest);
            if let Some(why) = &newest.failed {
                return Err(io::Error::other(why.clone()));
            }
            if newest.owner != link {
                return Err(io::Error::other(
                    "a newer connection of this replica owns its offset map",
                ));
            }
            newest.state = state;
            newest.version += 1;
            newest.version
        };
        self.inner.wake.notify_one();
        Ok(version)
    }

    /// Waits until the state of `version` (or a newer one) is on disk.
    pub(crate) async fn durable(&self, version: u64) -> io::Result<()> {
        let _waiting = Waiting::new(&self.inner);
        let mut on_disk = self.inner.durable.subscribe();
        loop {
            if let Some(why) = &lock(&self.inner.newest).failed {
                return Err(io::Error::other(why.clone()));
            }
            if *on_disk.borrow_and_update() >= version {
                return Ok(());
            }
            // The sender lives in `inner`, which `self` keeps alive.
            if on_disk.changed().await.is_err() {
                return Err(io::Error::other("the offset map writer stopped"));
            }
        }
    }

    /// Hands in `state` and waits until it is on disk (write-ahead).
    pub(crate) async fn persist(&self, link: u64, state: MapState) -> io::Result<()> {
        let version = self.hand_in(link, state)?;
        self.durable(version).await
    }

    /// Waits until everything handed in so far is on disk.
    pub(crate) async fn flush(&self) -> io::Result<()> {
        let version = lock(&self.inner.newest).version;
        self.durable(version).await
    }
}

/// Counts a waiter for as long as it lives, and wakes a pausing writer.
struct Waiting<'a>(&'a Inner);

impl<'a> Waiting<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.waiting.fetch_add(1, Ordering::SeqCst);
        inner.urgent.notify_one();
        Waiting(inner)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Writes the newest state whenever one was handed in, until a write fails.
async fn write_behind(inner: Arc<Inner>) {
    let mut written = 0u64;
    loop {
        inner.wake.notified().await;
        loop {
            let (version, state) = {
                let newest = lock(&inner.newest);
                if newest.version <= written {
                    break;
                }
                (newest.version, newest.state.clone())
            };
            let file = inner.clone();
            let result = tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let written = lock(&file.file).persist(state);
                if written.is_ok() {
                    metrics::histogram!(crate::metrics::STATE_WRITE_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                }
                written
            })
            .await;
            let failure = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("cannot write the offset map: {e}")),
                Err(e) => Some(format!("the offset map writer failed: {e}")),
            };
            if let Some(why) = failure {
                tracing::error!("{why}");
                lock(&inner.newest).failed = Some(why);
                // Wakes the waiters so they see the failure.
                inner.durable.send_modify(|_| {});
                return;
            }
            written = version;
            inner.durable.send_replace(version);
            if inner.waiting.load(Ordering::SeqCst) == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(inner.spacing) => {}
                    _ = inner.urgent.notified() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pika::messages::BinlogPosition;
    use crate::pika_relay::map_store::parse;
    use crate::pika_relay::offset_map::Pair;

    fn pairs(r: u64, m: u64) -> MapState {
        MapState::Pairs(vec![Pair {
            replica: BinlogPosition::new(0, r),
            master: BinlogPosition::new(0, m),
        }])
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

    #[tokio::test]
    async fn handed_in_states_reach_the_disk_newest_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.map");
        let (map, _) = CommittedMap::open(&path, 1).unwrap();
        let mut last = 0;
        for i in 1..=500u64 {
            last = map.hand_in(1, pairs(i, 2 * i)).unwrap();
        }
        map.durable(last).await.unwrap();
        assert_eq!(on_disk(&path), Loaded::State(pairs(500, 1000), 0));
        // Far fewer writes than hand-ins: the file was never compacted (1024 records).
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len < 500 * 20, "{len} bytes: one record per hand-in");
    }

    /// Writes nobody waits for are spaced out; a write-ahead wait is not held up by that pause.
    #[tokio::test]
    async fn a_waiting_link_cuts_the_pause_between_writes_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.map");
        let (map, _) =
            CommittedMap::open_with_spacing(&path, 1, Duration::from_secs(3600)).unwrap();
        map.hand_in(1, pairs(1, 2)).unwrap();
        // Nobody waits: the writer writes it, then pauses for an hour.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while on_disk(&path) != Loaded::State(pairs(1, 2), 0) {
            assert!(std::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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
        lock(&map.inner.file).force_compaction_on_next_write();
        assert!(map.persist(1, MapState::Identity).await.is_err());
        assert!(map.hand_in(1, MapState::Unknown).is_err());
        assert!(map.flush().await.is_err());
    }
}
