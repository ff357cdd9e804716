//! In-process stores: thread-safe, each bounded by a total weight (sessions, or bytes for
//! blobs) and by a time to live counted from the write; when full, the oldest write goes first.
//! Blobs are also bounded per owner (`store.max_blob_bytes_per_session`).

use std::collections::HashMap;
use std::sync::Arc;
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
/// removals are O(1) amortised; only [`Self::remove_owner`] and [`Self::remove_oldest_of`]
/// walk the entries.
///
/// Entries may name an owner; the weight each owner holds is kept up to date through every
/// removal (eviction and expiry included).
struct WriteOrderedCache<V> {
    entries: LinkedHashMap<String, Entry<V>>,
    /// Sum of the entries' weights, never above `capacity`.
    weight: usize,
    /// Sum of the weights of each owner's entries (owners with none are absent).
    owners: HashMap<String, usize>,
    capacity: usize,
    ttl: Duration,
}

struct Entry<V> {
    value: V,
    weight: usize,
    owner: Option<String>,
    written: Instant,
}

impl<V> std::fmt::Debug for WriteOrderedCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOrderedCache")
            .field("entries", &self.entries.len())
            .field("weight", &self.weight)
            .field("owners", &self.owners.len())
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
            owners: HashMap::new(),
            capacity,
            ttl,
        }
    }

    /// Accounts for an entry that left the map.
    fn forget(&mut self, entry: Entry<V>) -> V {
        self.weight -= entry.weight;
        if let Some(owner) = entry.owner
            && let Some(held) = self.owners.get_mut(&owner)
        {
            *held -= entry.weight;
            if *held == 0 {
                self.owners.remove(&owner);
            }
        }
        entry.value
    }

    fn pop_oldest(&mut self) -> Option<V> {
        let (_, entry) = self.entries.pop_front()?;
        Some(self.forget(entry))
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

    /// Refuses an item heavier than the whole capacity.
    fn check_fits(&self, weight: usize) -> Result<(), StoreError> {
        if weight > self.capacity {
            return Err(StoreError::TooLarge {
                size: weight,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Stores `value` as the newest entry, replacing `key`'s, evicting the oldest writes until
    /// `weight` fits. An item heavier than the whole capacity is refused and changes nothing.
    fn insert(
        &mut self,
        key: String,
        value: V,
        weight: usize,
        owner: Option<&str>,
    ) -> Result<(), StoreError> {
        self.check_fits(weight)?;
        self.expire();
        self.remove(&key);
        while self.weight + weight > self.capacity && self.pop_oldest().is_some() {}
        self.weight += weight;
        if let Some(owner) = owner {
            *self.owners.entry(owner.to_string()).or_default() += weight;
        }
        self.entries.insert(
            key,
            Entry {
                value,
                weight,
                owner: owner.map(str::to_string),
                written: Instant::now(),
            },
        );
        Ok(())
    }

    /// The weight `owner`'s entries hold.
    fn owner_weight(&self, owner: &str) -> usize {
        self.owners.get(owner).copied().unwrap_or(0)
    }

    /// Removes `owner`'s oldest entry; false when it has none.
    fn remove_oldest_of(&mut self, owner: &str) -> bool {
        let oldest = self
            .entries
            .iter()
            .find(|(_, e)| e.owner.as_deref() == Some(owner))
            .map(|(key, _)| key.clone());
        oldest.is_some_and(|key| self.remove(&key).is_some())
    }

    fn get(&mut self, key: &str) -> Option<&V> {
        self.expire();
        self.entries.get(key).map(|e| &e.value)
    }

    fn remove(&mut self, key: &str) -> Option<V> {
        let entry = self.entries.remove(key)?;
        Some(self.forget(entry))
    }

    /// Removes every entry of `owner`, in one pass.
    fn remove_owner(&mut self, owner: &str) {
        if self.owners.remove(owner).is_none() {
            return;
        }
        let weight = &mut self.weight;
        self.entries.retain(|_, entry| {
            let keep = entry.owner.as_deref() != Some(owner);
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
            .insert(session_id.to_string(), state.clone(), 1, None)
    }

    fn load(&self, session_id: &str) -> Result<Option<ContinuationState>, StoreError> {
        Ok(self.inner.lock().get(session_id).cloned())
    }

    fn remove(&self, session_id: &str) {
        self.inner.lock().remove(session_id);
    }
}

/// Blobs in memory: at most `capacity_bytes` in all (the oldest blob is evicted first) and
/// `owner_quota` bytes per owner (the owner's own oldest blob is evicted first), each kept for
/// `ttl` after it was stored. Ids are `blob-` and 128 random bits.
#[derive(Debug)]
pub struct MemoryBlobStore {
    /// Blob id → payload, with its owner.
    inner: Mutex<WriteOrderedCache<Arc<Vec<u8>>>>,
    owner_quota: usize,
}

impl MemoryBlobStore {
    /// The store `config.store` describes.
    pub fn from_config(config: &crate::config::ReplicaConfig) -> Self {
        Self::from_settings(&config.store)
    }

    /// The store `store` describes.
    pub fn from_settings(store: &crate::config::StoreSettings) -> Self {
        Self::new(
            store.blob_capacity_bytes,
            Duration::from_secs(store.ttl_seconds),
        )
        .with_owner_quota(store.max_blob_bytes_per_session)
    }

    /// A store of `capacity_bytes` whose payloads expire `ttl` after they were stored; one
    /// owner may fill it (see [`Self::with_owner_quota`]).
    pub fn new(capacity_bytes: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(WriteOrderedCache::new(capacity_bytes, ttl)),
            owner_quota: capacity_bytes,
        }
    }

    /// This store with at most `bytes` held by any one owner.
    pub fn with_owner_quota(mut self, bytes: usize) -> Self {
        self.owner_quota = bytes;
        self
    }
}

impl BlobStore for MemoryBlobStore {
    /// Evicts the owner's own oldest blobs to stay within its quota, then the store's oldest
    /// to stay within its capacity; a blob larger than either is refused and evicts nothing.
    fn put(&self, owner: &str, data: Vec<u8>) -> Result<String, StoreError> {
        let id = format!("blob-{}", super::random_token());
        // An empty blob still takes an entry, so it counts as one byte.
        let weight = data.len().max(1);
        let mut inner = self.inner.lock();
        inner.check_fits(weight)?;
        if weight > self.owner_quota {
            return Err(StoreError::OverQuota {
                size: weight,
                quota: self.owner_quota,
            });
        }
        inner.expire();
        while inner.owner_weight(owner) + weight > self.owner_quota && inner.remove_oldest_of(owner)
        {
        }
        inner.insert(id.clone(), Arc::new(data), weight, Some(owner))?;
        Ok(id)
    }

    fn get(&self, id: &str) -> Result<Option<Arc<Vec<u8>>>, StoreError> {
        Ok(self.inner.lock().get(id).cloned())
    }

    fn drop_owner(&self, owner: &str) {
        self.inner.lock().remove_owner(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: u32) -> ContinuationState {
        ContinuationState::new("framecast.mock.v1", serde_json::json!({ "n": n }))
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
    fn blob_ids_are_random_not_sequential() {
        let store = MemoryBlobStore::new(1 << 20, Duration::from_secs(60));
        let ids: Vec<String> = (0..64)
            .map(|_| store.put("s1", vec![0; 4]).unwrap())
            .collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        for id in &ids {
            let hex = id.strip_prefix("blob-").unwrap_or_else(|| panic!("{id}"));
            assert_eq!(hex.len(), 32, "128 bits: {id}");
            assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
        // Nothing about one id names the next (the old ids were blob-1, blob-2, ...).
        assert!(!ids.iter().any(|id| id == "blob-1" || id == "blob-2"));
        let numbers: Vec<u128> = ids
            .iter()
            .map(|id| u128::from_str_radix(&id[5..], 16).unwrap())
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[1] != w[0].wrapping_add(1)),
            "{ids:?}"
        );
    }

    #[test]
    fn one_owner_cannot_evict_another_owners_blobs() {
        // Room for 100 bytes, 40 per owner.
        let store = MemoryBlobStore::new(100, Duration::from_secs(60)).with_owner_quota(40);
        let other = store.put("victim", vec![1; 40]).unwrap();
        let mut mine = Vec::new();
        for i in 0..10 {
            mine.push(store.put("greedy", vec![i; 20]).unwrap());
            assert!(
                store.get(&other).unwrap().is_some(),
                "put {i} of the greedy owner evicted the victim's blob"
            );
        }
        // The greedy owner's own oldest blobs made room: only its newest two remain.
        assert!(store.get(&mine[9]).unwrap().is_some());
        assert!(store.get(&mine[8]).unwrap().is_some());
        assert_eq!(store.get(&mine[7]).unwrap(), None);
        // A blob over the quota is refused outright and changes nothing.
        assert_eq!(
            store.put("greedy", vec![0; 41]).unwrap_err(),
            StoreError::OverQuota {
                size: 41,
                quota: 40
            }
        );
        assert!(store.get(&mine[9]).unwrap().is_some());
        assert!(
            store
                .put("greedy", vec![0; 41])
                .unwrap_err()
                .to_string()
                .contains("store.max_blob_bytes_per_session")
        );
        // Dropping an owner gives its quota back.
        store.drop_owner("greedy");
        let a = store.put("greedy", vec![0; 40]).unwrap();
        assert!(store.get(&a).unwrap().is_some());
        assert!(store.get(&other).unwrap().is_some());
    }

    #[test]
    fn quota_accounting_follows_eviction_and_expiry() {
        let store = MemoryBlobStore::new(100, Duration::from_millis(30)).with_owner_quota(60);
        store.put("a", vec![0; 60]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // The expired 60 bytes no longer count against a's quota, so nothing of a's is left
        // to evict, and the new blob fits.
        let b = store.put("a", vec![0; 60]).unwrap();
        assert!(store.get(&b).unwrap().is_some());
        // Capacity eviction of a's blob by other owners frees a's quota too.
        let store = MemoryBlobStore::new(100, Duration::from_secs(60)).with_owner_quota(60);
        let first = store.put("a", vec![0; 60]).unwrap();
        store.put("b", vec![0; 50]).unwrap();
        assert_eq!(store.get(&first).unwrap(), None, "evicted for capacity");
        let second = store.put("a", vec![0; 40]).unwrap();
        let third = store.put("a", vec![0; 20]).unwrap();
        assert!(store.get(&second).unwrap().is_some(), "a holds 60 of 60");
        assert!(store.get(&third).unwrap().is_some());
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
