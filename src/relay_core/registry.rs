//! The live connections of a relay, for the admin API, readiness and the status gauges: one
//! entry per replica connection, by a connection id that grows from 1 and is never reused.
//! Each relay keeps its own status type in it (a Redis session's live counters, a Pika link's
//! per-DB summary); this module owns ids, registration and consistent snapshots.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Connections by id, shared by the relay's tasks and the admin API.
#[derive(Debug)]
pub struct Registry<T> {
    entries: Arc<RwLock<BTreeMap<u64, T>>>,
    next_id: Arc<AtomicU64>,
}

impl<T> Clone for Registry<T> {
    fn clone(&self) -> Self {
        Registry {
            entries: self.entries.clone(),
            next_id: self.next_id.clone(),
        }
    }
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            entries: Arc::default(),
            next_id: Arc::default(),
        }
    }
}

impl<T: Clone> Registry<T> {
    /// Registers a connection whose status `make` builds from its new id; returns the id and
    /// a copy of the status registered.
    pub fn register(&self, make: impl FnOnce(u64) -> T) -> (u64, T) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let status = make(id);
        self.write().insert(id, status.clone());
        (id, status)
    }

    /// Replaces the status of connection `id` (nothing when it is gone).
    pub fn update(&self, id: u64, status: T) {
        if let Some(slot) = self.write().get_mut(&id) {
            *slot = status;
        }
    }

    /// Forgets connection `id`.
    pub fn remove(&self, id: u64) {
        self.write().remove(&id);
    }

    /// Every live connection's status, oldest first.
    pub fn snapshot(&self) -> Vec<T> {
        self.read().values().cloned().collect()
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, T>> {
        // A poisoned lock only means a writer panicked between two whole updates.
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, T>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_grow_and_snapshots_follow_registration_order() {
        let r: Registry<String> = Registry::default();
        let (a, status) = r.register(|id| format!("a{id}"));
        assert_eq!(status, "a1");
        let (b, _) = r.register(|id| format!("b{id}"));
        assert_eq!((a, b), (1, 2));
        r.update(b, "b updated".into());
        r.update(7, "nobody".into());
        assert_eq!(r.snapshot(), ["a1", "b updated"]);
        r.remove(a);
        assert_eq!(r.len(), 1);
        let (c, _) = r.register(|id| format!("c{id}"));
        assert_eq!(c, 3, "ids are never reused");
        let shared = r.clone();
        shared.remove(b);
        shared.remove(c);
        assert!(r.is_empty());
    }
}
