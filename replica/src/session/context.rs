//! What every session of a replica shares: the worker pool, the settings, the live-session
//! count and the stores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::Drain;
use crate::config::ReplicaConfig;
use crate::pool::WorkerPool;
use crate::prompt::PromptService;
use crate::store::memory::{MemoryBlobStore, MemorySessionStore};
use crate::store::signing::StateSigner;
use crate::store::{BlobStore, SessionStore};

/// What every session shares; cheap to clone.
#[derive(Clone)]
pub struct SessionContext {
    pub pool: Arc<dyn WorkerPool>,
    pub config: Arc<ReplicaConfig>,
    /// Sessions past their opening frame; `streaming.max_sessions` bounds it.
    pub active: Arc<AtomicU32>,
    /// Latest continuation state of each live session.
    pub states: Arc<dyn SessionStore>,
    /// Large payloads of continuation states (tensors), owned by sessions.
    pub blobs: Arc<dyn BlobStore>,
    /// Signs the continuation states sessions hand out and checks those they get back
    /// (`store.state_secret`, or a key made once per process).
    pub signer: Arc<StateSigner>,
    /// Started on SIGTERM; sessions then wind down.
    pub drain: Drain,
    /// The LLM steps and the safety filter (none until set, e.g. from
    /// [`PromptService::from_config`]).
    pub prompts: PromptService,
}

impl SessionContext {
    /// A context with in-memory stores bounded as `config.store` says.
    pub fn new(pool: Arc<dyn WorkerPool>, config: Arc<ReplicaConfig>) -> Self {
        let blobs = Arc::new(MemoryBlobStore::from_config(&config));
        Self::with_blobs(pool, config, blobs)
    }

    /// A context sharing `blobs` with the pool's generators (they keep stream states there).
    pub fn with_blobs(
        pool: Arc<dyn WorkerPool>,
        config: Arc<ReplicaConfig>,
        blobs: Arc<dyn BlobStore>,
    ) -> Self {
        let ttl = Duration::from_secs(config.store.ttl_seconds);
        Self {
            states: Arc::new(MemorySessionStore::new(config.store.max_sessions, ttl)),
            blobs,
            signer: Arc::new(StateSigner::from_settings(&config.store)),
            pool,
            drain: Drain::new(Duration::from_secs(config.server.shutdown_grace_seconds)),
            config,
            active: Arc::default(),
            prompts: PromptService::disabled(),
        }
    }
}

impl std::fmt::Debug for SessionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionContext")
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
