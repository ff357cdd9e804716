//! What every session of a replica shares: the worker pool, the settings, the live-session
//! count and the stores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::Drain;
use crate::config::ReplicaConfig;
use crate::pool::WorkerPool;
use crate::prompt::PromptService;
use crate::store::signing::StateSigner;
use crate::store::{self, BlobStore, SessionStore};

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
    /// A context with the stores `config.store` asks for (in memory, or in Redis).
    ///
    /// # Panics
    ///
    /// When `config.store.redis.url` is not a Redis URL (a validated config has one).
    pub fn new(pool: Arc<dyn WorkerPool>, config: Arc<ReplicaConfig>) -> Self {
        let blobs = store::blob_store(&config.store).unwrap_or_else(|e| panic!("{e}"));
        Self::with_blobs(pool, config, blobs)
    }

    /// A context sharing `blobs` with the pool's generators (they keep stream states there),
    /// with the session store `config.store` asks for.
    ///
    /// # Panics
    ///
    /// When `config.store.redis.url` is not a Redis URL (a validated config has one).
    pub fn with_blobs(
        pool: Arc<dyn WorkerPool>,
        config: Arc<ReplicaConfig>,
        blobs: Arc<dyn BlobStore>,
    ) -> Self {
        let states = store::session_store(&config.store).unwrap_or_else(|e| panic!("{e}"));
        Self::with_stores(pool, config, states, blobs)
    }

    /// A context with these stores (`blobs` shared with the pool's generators).
    pub fn with_stores(
        pool: Arc<dyn WorkerPool>,
        config: Arc<ReplicaConfig>,
        states: Arc<dyn SessionStore>,
        blobs: Arc<dyn BlobStore>,
    ) -> Self {
        Self {
            states,
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
