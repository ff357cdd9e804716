//! In-process stores: thread-safe, bounded by capacity and time to live, evicting the
//! oldest entries first.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use framecast_common::protocol::ContinuationState;

use super::{BlobStore, SessionStore, StoreError};

/// An LRU-by-insertion map bounded by total weight and age.
#[derive(Debug)]
struct Bounded<V> {
    entries: HashMap<String, (V, usize, Instant)>,
    order: VecDeque<String>,
    weight: usize,
    capacity: usize,
    ttl: Duration,
}

impl<V> Bounded<V> {
    fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            weight: 0,
            capacity,
            ttl,
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(key) = self.order.front() {
            let stale = match self.entries.get(key) {
                Some((_, _, at)) => now.duration_since(*at) >= self.ttl,
                None => true,
            };
            if !stale {
                break;
            }
            let key = self.order.pop_front().expect("front exists");
            self.take(&key);
        }
    }

    fn insert(&mut self, key: String, value: V, weight: usize) -> Result<(), StoreError> {
        if weight > self.capacity {
            return Err(StoreError::TooLarge {
                size: weight,
                capacity: self.capacity,
            });
        }
        self.expire();
        self.take(&key);
        while self.weight + weight > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.take(&oldest);
        }
        self.order.push_back(key.clone());
        self.weight += weight;
        self.entries.insert(key, (value, weight, Instant::now()));
        Ok(())
    }

    fn get(&mut self, key: &str) -> Option<&V> {
        self.expire();
        self.entries.get(key).map(|(v, _, _)| v)
    }

    fn take(&mut self, key: &str) -> Option<V> {
        let (value, weight, _) = self.entries.remove(key)?;
        self.weight -= weight;
        self.order.retain(|k| k != key);
        Some(value)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Continuation states in memory: at most `capacity` sessions, each kept for `ttl`.
#[derive(Debug)]
pub struct MemorySessionStore {
    inner: Mutex<Bounded<ContinuationState>>,
}

impl MemorySessionStore {
    /// A store for `capacity` sessions whose states expire after `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Bounded::new(capacity, ttl)),
        }
    }
}

impl MemorySessionStore {
    /// Sessions with a stored state (expired ones excluded).
    pub fn len(&self) -> usize {
        let mut inner = lock(&self.inner);
        inner.expire();
        inner.entries.len()
    }

    /// Whether no session has a stored state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionStore for MemorySessionStore {
    fn save(&self, session_id: &str, state: &ContinuationState) -> Result<(), StoreError> {
        lock(&self.inner).insert(session_id.to_string(), state.clone(), 1)
    }

    fn load(&self, session_id: &str) -> Result<Option<ContinuationState>, StoreError> {
        Ok(lock(&self.inner).get(session_id).cloned())
    }

    fn remove(&self, session_id: &str) {
        lock(&self.inner).take(session_id);
    }
}

/// Blobs in memory: at most `capacity_bytes` in all, each kept for `ttl`.
#[derive(Debug)]
pub struct MemoryBlobStore {
    inner: Mutex<Bounded<(String, Arc<Vec<u8>>)>>,
    next_id: AtomicU64,
}

impl MemoryBlobStore {
    /// A store of at most `capacity_bytes` whose blobs expire after `ttl`.
    /// The store `config.store` describes.
    pub fn from_config(config: &crate::config::ReplicaConfig) -> Self {
        Self::new(
            config.store.blob_capacity_bytes,
            Duration::from_secs(config.store.ttl_seconds),
        )
    }

    /// A store of `capacity_bytes` whose payloads expire after `ttl`.
    pub fn new(capacity_bytes: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Bounded::new(capacity_bytes, ttl)),
            next_id: AtomicU64::new(1),
        }
    }
}

impl BlobStore for MemoryBlobStore {
    fn put(&self, owner: &str, data: Vec<u8>) -> Result<String, StoreError> {
        let id = format!("blob-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let weight = data.len().max(1);
        lock(&self.inner).insert(id.clone(), (owner.to_string(), Arc::new(data)), weight)?;
        Ok(id)
    }

    fn get(&self, id: &str) -> Result<Option<Arc<Vec<u8>>>, StoreError> {
        Ok(lock(&self.inner).get(id).map(|(_, data)| data.clone()))
    }

    fn drop_owner(&self, owner: &str) {
        let mut inner = lock(&self.inner);
        let ids: Vec<String> = inner
            .entries
            .iter()
            .filter(|(_, ((o, _), _, _))| o == owner)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            inner.take(&id);
        }
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
    fn entries_expire_after_their_ttl() {
        let store = MemorySessionStore::new(10, Duration::from_millis(30));
        store.save("a", &state(1)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(store.load("a").unwrap(), None);
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
