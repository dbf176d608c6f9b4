//! The per-path lock table: serialises the operations on one path (its
//! inode record, and for a directory its entry list).
//!
//! Keys are exact paths, not stripes: a create holds the lock of the child
//! while it asks the parent's owner (possibly this server) for the lock of
//! the parent. Locks are only ever taken child before ancestor, so exact keys
//! cannot deadlock, where two paths sharing a stripe could.
//!
//! A slot lives in the table while a guard or a waiter holds it and is
//! removed by the last one to leave. The locks are async (held across the
//! network call to the parent's owner).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Slot = Arc<AsyncMutex<()>>;

/// The table.
#[derive(Default)]
pub struct LockTable {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

/// Holds the lock of one path until dropped.
pub struct PathGuard {
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

impl LockTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for and takes the lock of `path`.
    pub async fn lock(&self, path: &str) -> PathGuard {
        // Clones of a slot are only made under the table lock, so the
        // strong count seen under it is exact.
        let slot = self
            .slots
            .lock()
            .entry(path.to_string())
            .or_default()
            .clone();
        let guard = slot.lock_owned().await;
        PathGuard {
            key: path.to_string(),
            guard: Some(guard),
            slots: self.slots.clone(),
        }
    }

    /// Paths with a slot (held or awaited).
    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    /// Whether no path is locked or awaited.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for PathGuard {
    fn drop(&mut self) {
        // Release first, so a waiter can go on; then drop the slot if only
        // the table still refers to it.
        drop(self.guard.take());
        let mut slots = self.slots.lock();
        if let Some(s) = slots.get(&self.key) {
            if Arc::strong_count(s) == 1 {
                slots.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_holder_per_path_and_cleanup() {
        let table = Arc::new(LockTable::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (table, inside) = (table.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    let _g = table.lock("/a").await;
                    assert_eq!(
                        inside.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders of /a"
                    );
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(table.is_empty(), "slots left behind: {}", table.len());
    }

    #[tokio::test]
    async fn child_then_parent_and_distinct_paths() {
        let table = LockTable::new();
        let child = table.lock("/a/b").await;
        // Holding the child, the parent and an unrelated path are free.
        let parent = table.lock("/a").await;
        let other = table.lock("/x").await;
        assert_eq!(table.len(), 3);
        drop(parent);
        drop(child);
        drop(other);
        assert!(table.is_empty());
    }

    #[tokio::test]
    async fn waiter_keeps_the_slot() {
        let table = Arc::new(LockTable::new());
        let g = table.lock("/p").await;
        let t2 = table.clone();
        let waiter = tokio::spawn(async move {
            let _g = t2.lock("/p").await;
        });
        // Let the waiter queue up (not a timing assertion: it only changes
        // which branch of the cleanup runs).
        tokio::task::yield_now().await;
        drop(g);
        waiter.await.unwrap();
        assert!(table.is_empty());
    }
}
