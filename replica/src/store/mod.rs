//! Where sessions keep what outlives one segment: the continuation state (`SessionStore`)
//! and large binary payloads such as tensors, referenced by id (`BlobStore`); and how the
//! states handed to clients are signed ([`signing`]).
//!
//! Both stores are traits with two backends, chosen by `store.backend`: [`memory`] (the
//! default), in-process and bounded in size and age so an abandoned session cannot grow the
//! replica's memory without limit; and [`redis`], a Redis server several replicas can share,
//! where an outage loses what would have been stored (no resume), never a session.
//!
//! Who may wait on the network: `SessionStore::save`/`remove` and `BlobStore::drop_owner`
//! are called from the session loops on the async runtime, so no implementation may block in
//! them (Redis queues them). `SessionStore::load` and `BlobStore::put`/`get` may block: the
//! generators call them from their own threads; async code calls them through
//! `tokio::task::spawn_blocking`.
//!
//! Every blob has an owner, and what a session owns goes one of two ways:
//!
//! - Live blobs, stored under the session id itself, are dropped when the session ends
//!   (`drop_owner(session_id)`), as is its continuation state in the session store.
//! - Exported blobs — the bytes behind a state a client was sent in
//!   `continuation_state_snapshot` — are stored under [`export_owner`] of the session id, so
//!   the session's end does not drop them: the client may resume from the snapshot in a later
//!   session, after this socket closed. They stay until their time to live runs out (or the
//!   store's byte capacity evicts them, oldest first).
//!
//! An owner holds at most `store.max_blob_bytes_per_session` bytes: its own oldest blobs go
//! first to make room, so one session's snapshots cannot push out another's beyond that share.
//! Blob ids are random (128 bits), never sequential, and a state only comes back in through
//! its signature, so no client can name another session's blob or live stream.

pub mod memory;
pub mod redis;
pub mod signing;

use std::sync::Arc;

use framecast_common::protocol::ContinuationState;

use crate::config::StoreBackend;

/// A store refused or lost data. (Serializable: a worker process gets it over its socket.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum StoreError {
    /// A single item is larger than the whole store may hold.
    #[error("item of {size} bytes exceeds the store's capacity of {capacity} bytes")]
    TooLarge {
        /// In bytes (in entries for the session store).
        size: usize,
        /// In the same unit as `size`.
        capacity: usize,
    },
    /// A single blob is larger than what one owner may hold.
    #[error(
        "blob of {size} bytes exceeds the per-session quota of {quota} bytes \
         (store.max_blob_bytes_per_session)"
    )]
    OverQuota {
        /// In bytes.
        size: usize,
        /// In bytes.
        quota: usize,
    },
    /// The backend failed (network, server).
    #[error("store backend failed: {0}")]
    Backend(String),
}

/// Continuation states by session id.
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// Saves (replaces) the session's state. Never waits on the network: a remote backend
    /// queues the write and reports its failure itself (metric and log).
    fn save(&self, session_id: &str, state: &ContinuationState) -> Result<(), StoreError>;
    /// The session's state, unless it expired or was evicted. May block on the network.
    fn load(&self, session_id: &str) -> Result<Option<ContinuationState>, StoreError>;
    /// Forgets the session. Never waits on the network.
    fn remove(&self, session_id: &str);
    /// Saves as [`SessionStore::save`] does, and calls `landed` once the state is in the
    /// store (`true`), or once it is known it will not be (`false`: failed, dropped, or the
    /// session removed first). A store that writes behind calls it later, from its own
    /// thread; this default, for stores that write through, at once. A session holds each
    /// segment's `media_segment_complete` until the resume record covering the next segment
    /// landed, so a client never holds a segment another replica could not resume after.
    fn save_then(
        &self,
        session_id: &str,
        state: &ContinuationState,
        landed: Landed,
    ) -> Result<(), StoreError> {
        let result = self.save(session_id, state);
        landed(result.is_ok());
        result
    }
}

/// Called once with whether a save landed ([`SessionStore::save_then`]).
pub type Landed = Box<dyn FnOnce(bool) + Send>;

/// The session store `store` asks for (`store.backend`).
pub fn session_store(
    store: &crate::config::StoreSettings,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    Ok(match store.backend {
        StoreBackend::Memory => Arc::new(memory::MemorySessionStore::new(
            store.max_sessions,
            std::time::Duration::from_secs(store.ttl_seconds),
        )),
        StoreBackend::Redis => Arc::new(self::redis::RedisSessionStore::from_settings(store)?),
    })
}

/// The blob store `store` asks for (`store.backend`).
pub fn blob_store(store: &crate::config::StoreSettings) -> Result<Arc<dyn BlobStore>, StoreError> {
    Ok(match store.backend {
        StoreBackend::Memory => Arc::new(memory::MemoryBlobStore::from_settings(store)),
        StoreBackend::Redis => Arc::new(self::redis::RedisBlobStore::from_settings(store)?),
    })
}

/// The owner a session's exported blobs are stored under: not the session id, so they
/// outlive the session (see the module docs).
pub fn export_owner(session_id: &str) -> String {
    format!("{session_id}.export")
}

/// 128 random bits from the operating system as 32 hex digits: blob ids and stream tokens,
/// which must not be guessable.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    hex(&bytes)
}

/// `bytes` as lowercase hex digits, two per byte.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opaque byte payloads by id, each owned by a session.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores `data` for `owner`; returns its id (unguessable). May block on the network.
    fn put(&self, owner: &str, data: Vec<u8>) -> Result<String, StoreError>;
    /// The payload, unless it expired or was evicted. May block on the network.
    fn get(&self, id: &str) -> Result<Option<Arc<Vec<u8>>>, StoreError>;
    /// Drops every payload `owner` stored. Never waits on the network.
    fn drop_owner(&self, owner: &str);
}
