//! In-process stores: thread-safe, each bounded by a total weight (sessions, or bytes for
//! blobs) and by a time to live counted from the write; when full, the oldest write goes first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use framecast_common::protocol::ContinuationState;
use hashlink::LinkedHashMap;
use parking_lot::Mutex;

use super::{BlobStore, SessionStore, StoreError};

/// A map kept in write order and bounded by total weight and age: the oldest write is
/// evicted first to make room, and entries expire `ttl` after their write. Writing a key again
/// makes it the newest; reads do not reorder (this is not an LRU).
///
/// Since every entry lives the same `ttl` from its write, the oldest write is also the first
/// to expire, so expiry and eviction both pop the front of one list: inserts, reads and
/// removals are O(1) amortised; only [`Self::remove_where`] walks every entry.
struct WriteOrderedCache<V> {
    entries: LinkedHashMap<String, Entry<V>>,
    /// Sum of the entries' weights, never above `capacity`.
    weight: usize,
    capacity: usize,
    ttl: Duration,
}

struct Entry<V> {
    value: V,
    weight: usize,
    written: Instant,
}

impl<V> std::fmt::Debug for WriteOrderedCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOrderedCache")
            .field("entries", &self.entries.len())
            .field("weight", &self.weight)
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl<V> WriteOrderedCache<V> {
    fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: LinkedHashMap::new(),
            weight: 0,
            capacity,
            ttl,
        }
    }

    fn pop_oldest(&mut self) -> Option<V> {
        let (_, entry) = self.entries.pop_front()?;
        self.weight -= entry.weight;
        Some(entry.value)
    }

    /// Drops the entries older than `ttl`, all at the front.
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some((_, oldest)) = self.entries.front()
            && now.duration_since(oldest.written) >= self.ttl
        {
            self.pop_oldest();
        }
    }

    /// Stores `value` as the newest entry, replacing `key`'s, evicting the oldest writes until
    /// `weight` fits. An item heavier than the whole capacity is refused and changes nothing.
    fn insert(&mut self, key: String, value: V, weight: usize) -> Result<(), StoreError> {
        if weight > self.capacity {
            return Err(StoreError::TooLarge {
                size: weight,
                capacity: self.capacity,
            });
        }
        self.expire();
        self.remove(&key);
        while self.weight + weight > self.capacity && self.pop_oldest().is_some() {}
        self.weight += weight;
        self.entries.insert(
            key,
            Entry {
                value,
                weight,
                written: Instant::now(),
            },
        );
        Ok(())
    }

    fn get(&mut self, key: &str) -> Option<&V> {
        self.expire();
        self.entries.get(key).map(|e| &e.value)
    }

    fn remove(&mut self, key: &str) -> Option<V> {
        let entry = self.entries.remove(key)?;
        self.weight -= entry.weight;
        Some(entry.value)
    }

    /// Removes every entry whose value matches, in one pass.
    fn remove_where(&mut self, mut matches: impl FnMut(&V) -> bool) {
        let weight = &mut self.weight;
        self.entries.retain(|_, entry| {
            let keep = !matches(&entry.value);
            if !keep {
                *weight -= entry.weight;
            }
            keep
        });
    }

    /// Live entries (expired ones dropped first).
    fn len(&mut self) -> usize {
        self.expire();
        self.entries.len()
    }
}

/// Continuation states in memory: at most `capacity` sessions (the oldest save is evicted
/// first), each kept for `ttl` after its last save.
#[derive(Debug)]
pub struct MemorySessionStore {
    inner: Mutex<WriteOrderedCache<ContinuationState>>,
}

impl MemorySessionStore {
    /// A store for `capacity` sessions whose states expire `ttl` after their last save.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(WriteOrderedCache::new(capacity, ttl)),
        }
    }

    /// Sessions with a stored state (expired ones excluded).
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// Whether no session has a stored state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionStore for MemorySessionStore {
    fn save(&self, session_id: &str, state: &ContinuationState) -> Result<(), StoreError> {
        self.inner
            .lock()
            .insert(session_id.to_string(), state.clone(), 1)
    }

    fn load(&self, session_id: &str) -> Result<Option<ContinuationState>, StoreError> {
        Ok(self.inner.lock().get(session_id).cloned())
    }

    fn remove(&self, session_id: &str) {
        self.inner.lock().remove(session_id);
    }
}

/// Blobs in memory: at most `capacity_bytes` in all (the oldest blob is evicted first), each
/// kept for `ttl` after it was stored.
#[derive(Debug)]
pub struct MemoryBlobStore {
    /// Blob id → (owner, payload).
    inner: Mutex<WriteOrderedCache<(String, Arc<Vec<u8>>)>>,
    next_id: AtomicU64,
}

impl MemoryBlobStore {
    /// The store `config.store` describes.
    pub fn from_config(config: &crate::config::ReplicaConfig) -> Self {
        Self::new(
            config.store.blob_capacity_bytes,
            Duration::from_secs(config.store.ttl_seconds),
        )
    }

    /// A store of `capacity_bytes` whose payloads expire `ttl` after they were stored.
    pub fn new(capacity_bytes: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(WriteOrderedCache::new(capacity_bytes, ttl)),
            next_id: AtomicU64::new(1),
        }
    }
}

impl BlobStore for MemoryBlobStore {
    fn put(&self, owner: &str, data: Vec<u8>) -> Result<String, StoreError> {
        let id = format!("blob-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        // An empty blob still takes an entry, so it counts as one byte.
        let weight = data.len().max(1);
        self.inner
            .lock()
            .insert(id.clone(), (owner.to_string(), Arc::new(data)), weight)?;
        Ok(id)
    }

    fn get(&self, id: &str) -> Result<Option<Arc<Vec<u8>>>, StoreError> {
        Ok(self.inner.lock().get(id).map(|(_, data)| data.clone()))
    }

    fn drop_owner(&self, owner: &str) {
        self.inner.lock().remove_where(|(o, _)| o == owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: u32) -> ContinuationState {
        ContinuationState {
            kind: "framecast.mock.v1".into(),
            payload: serde_json::json!({ "n": n }),
        }
    }

    #[test]
    fn sessions_round_trip_and_are_removed() {
        let store = MemorySessionStore::new(10, Duration::from_secs(60));
        store.save("a", &state(1)).unwrap();
        store.save("a", &state(2)).unwrap();
        assert_eq!(store.load("a").unwrap(), Some(state(2)), "save replaces");
        store.remove("a");
        assert_eq!(store.load("a").unwrap(), None);
    }

    #[test]
    fn capacity_evicts_the_oldest_session() {
        let store = MemorySessionStore::new(2, Duration::from_secs(60));
        for (id, n) in [("a", 1), ("b", 2), ("c", 3)] {
            store.save(id, &state(n)).unwrap();
        }
        assert_eq!(store.load("a").unwrap(), None);
        assert_eq!(store.load("c").unwrap(), Some(state(3)));
    }

    #[test]
    fn saving_again_makes_a_session_the_newest_and_reading_does_not() {
        let store = MemorySessionStore::new(2, Duration::from_secs(60));
        store.save("a", &state(1)).unwrap();
        store.save("b", &state(2)).unwrap();
        store.save("a", &state(3)).unwrap();
        assert_eq!(store.len(), 2, "a replacing save takes no extra room");
        assert!(
            store.load("b").unwrap().is_some(),
            "a read does not refresh b"
        );
        store.save("c", &state(4)).unwrap();
        assert_eq!(store.load("b").unwrap(), None, "b is now the oldest write");
        assert_eq!(store.load("a").unwrap(), Some(state(3)));
        assert_eq!(store.load("c").unwrap(), Some(state(4)));
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let store = MemorySessionStore::new(10, Duration::from_millis(30));
        store.save("a", &state(1)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(store.load("a").unwrap(), None);
        assert!(store.is_empty());
    }

    #[test]
    fn blobs_are_bounded_by_bytes_and_dropped_with_their_owner() {
        let store = MemoryBlobStore::new(100, Duration::from_secs(60));
        let a = store.put("s1", vec![1; 40]).unwrap();
        let b = store.put("s2", vec![2; 40]).unwrap();
        assert_eq!(store.get(&a).unwrap().unwrap().len(), 40);
        let c = store.put("s1", vec![3; 40]).unwrap();
        assert_eq!(store.get(&a).unwrap(), None, "oldest evicted to make room");
        assert!(store.get(&b).unwrap().is_some());
        store.drop_owner("s1");
        assert_eq!(store.get(&c).unwrap(), None);
        assert!(store.get(&b).unwrap().is_some(), "other owners keep theirs");
        assert_eq!(
            store.put("s3", vec![0; 101]).unwrap_err(),
            StoreError::TooLarge {
                size: 101,
                capacity: 100
            }
        );
    }

    #[test]
    fn dropped_and_refused_blobs_free_or_keep_their_bytes() {
        let store = MemoryBlobStore::new(100, Duration::from_secs(60));
        let a = store.put("s1", vec![1; 60]).unwrap();
        store.put("s2", vec![0; 101]).unwrap_err();
        assert!(
            store.get(&a).unwrap().is_some(),
            "a refused blob evicts nothing"
        );
        store.drop_owner("s1");
        // The 60 bytes were given back: two blobs of 50 fit side by side.
        let b = store.put("s2", vec![2; 50]).unwrap();
        let c = store.put("s2", vec![3; 50]).unwrap();
        assert!(store.get(&b).unwrap().is_some(), "nothing evicted");
        assert!(store.get(&c).unwrap().is_some());
    }

    #[test]
    fn stores_are_thread_safe() {
        let store = Arc::new(MemoryBlobStore::new(1 << 20, Duration::from_secs(60)));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..100u8 {
                        let id = store.put(&format!("owner{t}"), vec![i; 16]).unwrap();
                        assert_eq!(store.get(&id).unwrap().unwrap()[0], i);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
