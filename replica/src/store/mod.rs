//! Where sessions keep what outlives one segment: the continuation state (`SessionStore`)
//! and large binary payloads such as tensors, referenced by id (`BlobStore`).
//!
//! Both are traits so another backend (one shared by several replicas) can stand in; today
//! [`memory`] holds the only implementations, in-process and bounded in size and age so an
//! abandoned session cannot grow the replica's memory without limit.
//!
//! When a session ends it removes its continuation state and every blob stored under its id
//! as owner. Not everything in the blob store is owned by a session, though: the Wan
//! generator does not know which session asks, and stores exported stream states under the
//! constant owner `framecast.wan.v1`. No session's end drops those blobs (so the snapshot a
//! client was sent can still start a later session through `session_init`'s
//! `continuation_state`); they stay until their time to live runs out or the store's byte
//! capacity evicts them.

pub mod memory;

use std::sync::Arc;

use framecast_common::protocol::ContinuationState;

/// A store refused or lost data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A single item is larger than the whole store may hold.
    #[error("item of {size} bytes exceeds the store's capacity of {capacity} bytes")]
    TooLarge {
        /// In bytes (in entries for the session store).
        size: usize,
        /// In the same unit as `size`.
        capacity: usize,
    },
    /// The backend failed (network, server).
    #[error("store backend failed: {0}")]
    Backend(String),
}

/// Continuation states by session id.
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// Saves (replaces) the session's state.
    fn save(&self, session_id: &str, state: &ContinuationState) -> Result<(), StoreError>;
    /// The session's state, unless it expired or was evicted.
    fn load(&self, session_id: &str) -> Result<Option<ContinuationState>, StoreError>;
    /// Forgets the session.
    fn remove(&self, session_id: &str);
}

/// Opaque byte payloads by id, each owned by a session.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores `data` for `owner`; returns its id.
    fn put(&self, owner: &str, data: Vec<u8>) -> Result<String, StoreError>;
    /// The payload, unless it expired or was evicted.
    fn get(&self, id: &str) -> Result<Option<Arc<Vec<u8>>>, StoreError>;
    /// Drops every payload `owner` stored.
    fn drop_owner(&self, owner: &str);
}
