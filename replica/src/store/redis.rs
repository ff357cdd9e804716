//! Stores in a Redis server several replicas can share (`store.backend: redis`).
//!
//! The client is `redis`'s async [`ConnectionManager`] (one multiplexed connection per store
//! that reconnects by itself), driven by a small Tokio runtime of the store's own (one
//! thread), so no Redis round trip ever runs on — or waits on — a thread of the server's
//! runtime. The trait methods stay synchronous, each in the way its callers need:
//!
//! - [`SessionStore::save`] and [`SessionStore::remove`], called by the session loops on the
//!   server's runtime, only record the write and return: one session's newer save replaces
//!   its older one still waiting (only the latest continuation state matters), so the queue
//!   holds at most one write per session. A writer task sends the queued writes together,
//!   up to [`MAX_BATCH`] in one pipelined round trip, and the next batch only once that one
//!   was answered, so one session's writes land in order and a round trip's latency is paid
//!   once for all sessions (one write at a time fell 250 ms behind with 50 live sessions on
//!   2 cores). [`SessionStore::save_then`] says when the write landed. [`SessionStore::load`]
//!   sees the writes still waiting, then asks Redis (blocking: call it from a plain thread
//!   or `spawn_blocking`).
//! - [`BlobStore::put`] and [`BlobStore::get`] block the calling thread until Redis answered
//!   (or `store.redis.timeout_ms` passed): the generators call them from their own threads,
//!   the worker-process connection through `spawn_blocking`. [`BlobStore::drop_owner`],
//!   called when a session ends, is sent without waiting.
//!
//! Writes still queued when the store is dropped (at exit) are lost; their keys expire.
//!
//! An outage costs what it would have stored, never a session: a failed write is dropped, a
//! failed read is an error, each counted in `framecast_store_errors_total{store,op}` and
//! logged as a warning at most every [`WARN_EVERY`] per store (then once more when Redis
//! answers again). The generators keep their live stream state in memory; only exported
//! copies go to the blob store.
//!
//! Keys, each starting with `store.redis.key_prefix`:
//!
//! - `<prefix>session:<session id>`: the continuation state as JSON, expiring `ttl` after its
//!   save.
//! - `<prefix>blob:<blob id>`: the blob's bytes, expiring `ttl` after its put.
//! - `<prefix>owner:<owner>`: the owner's blob ids in put order (a sorted set), expiring with
//!   its newest blob. A Lua script puts a blob atomically: it forgets the owner's expired blobs,
//!   evicts the owner's oldest until the new one fits `store.max_blob_bytes_per_session`,
//!   then stores it; a blob larger than the quota is refused beforehand.
//!
//! The total is bounded by the server (`maxmemory`; an `allkeys-*`/`volatile-*` eviction
//! policy), not by `max_sessions`/`blob_capacity_bytes` as in memory: here `max_sessions`
//! bounds the writes waiting for the server, and `blob_capacity_bytes` the size of one blob.
//! Scripts touch keys they compute themselves, so this needs a standalone server (or a
//! proxy), not Redis Cluster.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands, RedisError, Script};
use framecast_common::protocol::ContinuationState;
use hashlink::LinkedHashMap;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{BlobStore, Landed, SessionStore, StoreError};
use crate::config::{RedisSettings, StoreSettings, redact_url};
use crate::observability::STORE_ERRORS_TOTAL;

/// A store's failures are logged at most this often (counted every time).
pub const WARN_EVERY: Duration = Duration::from_secs(30);

/// The most session writes sent in one pipelined round trip.
pub const MAX_BATCH: usize = 128;

/// Puts a blob within its owner's quota (see the module docs). KEYS: the owner's index, the
/// new blob's key. ARGV: the bytes, the quota, the time to live in ms, the prefix of blob
/// keys, the new blob's id. Returns how many of the owner's blobs it evicted.
const PUT_BLOB: &str = r"
local index, key = KEYS[1], KEYS[2]
local data, quota, ttl, blob_prefix, id =
  ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local weight = math.max(string.len(data), 1)
local held, live = 0, {}
for _, member in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  local k = blob_prefix .. member
  if redis.call('EXISTS', k) == 1 then
    local w = math.max(redis.call('STRLEN', k), 1)
    held = held + w
    live[#live + 1] = {member, w}
  else
    redis.call('ZREM', index, member)
  end
end
local evicted = 0
while held + weight > quota and evicted < #live do
  evicted = evicted + 1
  redis.call('DEL', blob_prefix .. live[evicted][1])
  redis.call('ZREM', index, live[evicted][1])
  held = held - live[evicted][2]
end
local score = 0
local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
if #last == 2 then score = tonumber(last[2]) + 1 end
redis.call('SET', key, data, 'PX', ttl)
redis.call('ZADD', index, score, id)
redis.call('PEXPIRE', index, ttl)
return evicted
";

/// Drops every blob of an owner. KEYS: the owner's index. ARGV: the prefix of blob keys.
const DROP_OWNER: &str = r"
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  redis.call('DEL', ARGV[1] .. member)
end
return redis.call('DEL', KEYS[1])
";

/// The connection, runtime and error reporting one Redis store uses.
struct Backend {
    /// Runs the store's I/O; shut down (without waiting) with the store.
    runtime: Option<tokio::runtime::Runtime>,
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
    report: Arc<ErrorReport>,
}

impl Backend {
    fn new(
        settings: &RedisSettings,
        ttl: Duration,
        store: &'static str,
    ) -> Result<Self, StoreError> {
        let client = ::redis::Client::open(settings.url.as_str()).map_err(|e| {
            StoreError::Backend(format!(
                "store.redis.url `{}`: {e}",
                redact_url(&settings.url)
            ))
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("redis-{store}-store"))
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot start the store's runtime: {e}")))?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        // One connection attempt per failed command (no retry loop a caller would wait on):
        // while Redis is down, commands fail fast and the next one tries again.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        // Lazy: no connection until the first command, so the replica starts (and serves
        // sessions without resume) while Redis is down.
        let conn = {
            let _inside = runtime.enter();
            ConnectionManager::new_lazy_with_config(client, config)
                .map_err(|e| StoreError::Backend(format!("Redis client: {e}")))?
        };
        Ok(Self {
            runtime: Some(runtime),
            conn,
            prefix: settings.key_prefix.clone(),
            ttl,
            timeout,
            report: Arc::new(ErrorReport::new(store, &settings.key_prefix)),
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("until dropped").handle()
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Runs `op` on the store's runtime within the timeout, blocking the calling thread
    /// until it finished; failures are reported as `op_name`.
    fn call<T, F>(&self, op_name: &'static str, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, RedisError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.timeout;
        self.handle().spawn(async move {
            let _ = tx.send(within(timeout, op).await);
        });
        let result = rx
            .recv()
            .unwrap_or_else(|_| Err("the store's runtime stopped".to_string()));
        self.report.outcome(op_name, result)
    }

    /// Runs `op` on the store's runtime without waiting for it; failures are reported as
    /// `op_name`.
    fn send<F>(&self, op_name: &'static str, op: F)
    where
        F: Future<Output = Result<(), RedisError>> + Send + 'static,
    {
        let (timeout, report) = (self.timeout, self.report.clone());
        self.handle().spawn(async move {
            let _ = report.outcome(op_name, within(timeout, op).await);
        });
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Allowed anywhere, an async context included (a plain drop would panic there).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `op`'s result, or a timeout error after `timeout`, as text.
async fn within<T>(
    timeout: Duration,
    op: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, op).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Counts a store's failures and logs them, at most once per [`WARN_EVERY`].
#[derive(Debug)]
struct ErrorReport {
    store: &'static str,
    prefix: String,
    state: Mutex<ReportState>,
}

#[derive(Debug, Default)]
struct ReportState {
    last_warning: Option<Instant>,
    /// Failures since the last warning, not logged one by one.
    unlogged: u64,
    /// A warning went out and no success followed yet.
    failing: bool,
}

impl ErrorReport {
    fn new(store: &'static str, prefix: &str) -> Self {
        // The series exist from the start, so rate() and alerts see them before an error.
        for op in ops_of(store) {
            metrics::counter!(STORE_ERRORS_TOTAL, "store" => store, "op" => *op).increment(0);
        }
        Self {
            store,
            prefix: prefix.to_string(),
            state: Mutex::default(),
        }
    }

    /// Passes `result` on, as a [`StoreError`] counted and maybe logged when it failed.
    fn outcome<T>(&self, op: &'static str, result: Result<T, String>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                self.succeeded();
                Ok(value)
            }
            Err(e) => {
                self.failed(op, &e);
                Err(StoreError::Backend(format!("Redis {}: {e}", self.store)))
            }
        }
    }

    fn failed(&self, op: &'static str, error: &str) {
        metrics::counter!(STORE_ERRORS_TOTAL, "store" => self.store, "op" => op).increment(1);
        let mut state = self.state.lock();
        let now = Instant::now();
        if state
            .last_warning
            .is_some_and(|at| now.duration_since(at) < WARN_EVERY)
        {
            state.unlogged += 1;
            return;
        }
        let unlogged = std::mem::take(&mut state.unlogged);
        state.last_warning = Some(now);
        state.failing = true;
        drop(state);
        tracing::warn!(
            store = self.store,
            op,
            key_prefix = %self.prefix,
            error,
            failures_not_logged = unlogged,
            "Redis store unavailable: what it would have stored is lost, so sessions go on \
             without resume (logged at most every {}s; see framecast_store_errors_total)",
            WARN_EVERY.as_secs()
        );
    }

    fn succeeded(&self) {
        let mut state = self.state.lock();
        if !state.failing {
            return;
        }
        state.failing = false;
        let unlogged = std::mem::take(&mut state.unlogged);
        drop(state);
        tracing::info!(
            store = self.store,
            key_prefix = %self.prefix,
            failures_not_logged = unlogged,
            "Redis store reachable again"
        );
    }
}

/// The operations counted for `store`.
fn ops_of(store: &str) -> &'static [&'static str] {
    match store {
        SESSIONS => &["save", "load", "remove"],
        _ => &["put", "get", "drop_owner"],
    }
}

const SESSIONS: &str = "session";
const BLOBS: &str = "blob";

/// A write to a session's key waiting for the writer.
enum Write {
    /// The state as JSON (serialized by the caller, outside the queue's lock), and who waits
    /// for it (or for a save it replaced) to land.
    Save(Vec<u8>, Vec<Landed>),
    Remove,
}

impl Write {
    /// Tells everyone waiting on this write whether it landed.
    fn landed(self, ok: bool) {
        if let Write::Save(_, waiting) = self {
            for landed in waiting {
                landed(ok);
            }
        }
    }
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Write::Save(json, waiting) => f
                .debug_struct("Save")
                .field("bytes", &json.len())
                .field("waiting", &waiting.len())
                .finish(),
            Write::Remove => f.write_str("Remove"),
        }
    }
}

/// The writes not yet in Redis: queued (one per session, oldest first) and the batch under
/// way (at most one per session, too).
#[derive(Debug, Default)]
struct Pending {
    queued: LinkedHashMap<String, Write>,
    in_flight: HashMap<String, Write>,
}

/// What the session store and its writer task share.
#[derive(Debug)]
struct Writes {
    pending: Mutex<Pending>,
    /// Wakes the writer.
    added: Notify,
    /// Sessions with a write queued at most (`store.max_sessions`).
    capacity: usize,
}

/// Continuation states in Redis, written behind (see the module docs).
#[derive(Debug)]
pub struct RedisSessionStore {
    backend: Backend,
    writes: Arc<Writes>,
}

impl RedisSessionStore {
    /// The store `store.redis` describes, keeping states for `store.ttl_seconds`.
    pub fn from_settings(store: &StoreSettings) -> Result<Self, StoreError> {
        Self::new(
            &store.redis,
            Duration::from_secs(store.ttl_seconds),
            store.max_sessions,
        )
    }

    /// States expire `ttl` after their save; at most `max_queued` sessions have a write
    /// waiting for the server (more are dropped, as failed saves).
    pub fn new(
        settings: &RedisSettings,
        ttl: Duration,
        max_queued: usize,
    ) -> Result<Self, StoreError> {
        let backend = Backend::new(settings, ttl, SESSIONS)?;
        let writes = Arc::new(Writes {
            pending: Mutex::default(),
            added: Notify::new(),
            capacity: max_queued.max(1),
        });
        backend.handle().spawn(write_behind(
            writes.clone(),
            backend.conn.clone(),
            backend.prefix.clone(),
            backend.ttl_ms(),
            backend.timeout,
            backend.report.clone(),
        ));
        Ok(Self { backend, writes })
    }

    /// Writes still waiting for the server (queued or under way).
    pub fn pending_writes(&self) -> usize {
        let pending = self.writes.pending.lock();
        pending.queued.len() + pending.in_flight.len()
    }

    fn enqueue(&self, session_id: &str, write: Write, op: &'static str) -> Result<(), StoreError> {
        let mut pending = self.writes.pending.lock();
        let mut superseded = None;
        if let Some(queued) = pending.queued.get_mut(session_id) {
            let older = std::mem::replace(queued, write);
            match (queued, older) {
                // Whoever waited for the older save waits for the newer, which covers it.
                (Write::Save(_, waiting), Write::Save(_, older)) => waiting.extend(older),
                (_, older) => superseded = Some(older),
            }
        } else if pending.queued.len() >= self.writes.capacity {
            drop(pending);
            write.landed(false);
            let e = format!(
                "{} writes already wait for the server (store.max_sessions); dropped",
                self.writes.capacity
            );
            return self.backend.report.outcome(op, Err(e));
        } else {
            pending.queued.insert(session_id.to_string(), write);
        }
        drop(pending);
        if let Some(older) = superseded {
            older.landed(false);
        }
        self.writes.added.notify_one();
        Ok(())
    }
}

/// Sends the queued writes in batches (see the module docs); a failed batch is dropped,
/// each of its writes counted as failed.
async fn write_behind(
    writes: Arc<Writes>,
    mut conn: ConnectionManager,
    prefix: String,
    ttl_ms: u64,
    timeout: Duration,
    report: Arc<ErrorReport>,
) {
    loop {
        // A notification sent since the queue was found empty is kept, so none is missed.
        let Some((pipe, ops)) = writes.start_batch(&prefix, ttl_ms) else {
            writes.added.notified().await;
            continue;
        };
        let result = within(timeout, pipe.query_async::<()>(&mut conn)).await;
        for op in &ops {
            let _ = report.outcome(op, result.clone());
        }
        let done = std::mem::take(&mut writes.pending.lock().in_flight);
        for write in done.into_values() {
            write.landed(result.is_ok());
        }
    }
}

impl Writes {
    /// Moves the oldest queued writes (at most [`MAX_BATCH`]) under way: the pipeline that
    /// sends them, and each one's operation name for the error count.
    fn start_batch(
        &self,
        prefix: &str,
        ttl_ms: u64,
    ) -> Option<(::redis::Pipeline, Vec<&'static str>)> {
        let mut pending = self.pending.lock();
        if pending.queued.is_empty() {
            return None;
        }
        let mut pipe = ::redis::pipe();
        let mut ops = Vec::new();
        while ops.len() < MAX_BATCH {
            let Some((id, write)) = pending.queued.pop_front() else {
                break;
            };
            let key = session_key(prefix, &id);
            match &write {
                Write::Save(json, _) => {
                    pipe.pset_ex(key, json, ttl_ms).ignore();
                    ops.push("save");
                }
                Write::Remove => {
                    pipe.del(key).ignore();
                    ops.push("remove");
                }
            }
            pending.in_flight.insert(id, write);
        }
        Some((pipe, ops))
    }
}

fn to_json(state: &ContinuationState) -> Vec<u8> {
    serde_json::to_vec(state).expect("a state serializes")
}

fn session_key(prefix: &str, session_id: &str) -> String {
    format!("{prefix}session:{session_id}")
}

impl SessionStore for RedisSessionStore {
    /// Queued for the writer; an error only when too many sessions wait already.
    fn save(&self, session_id: &str, state: &ContinuationState) -> Result<(), StoreError> {
        self.enqueue(session_id, Write::Save(to_json(state), Vec::new()), "save")
    }

    /// Queued; `landed` is called from the writer once the batch holding it (or a newer save
    /// of the session) was answered.
    fn save_then(
        &self,
        session_id: &str,
        state: &ContinuationState,
        landed: Landed,
    ) -> Result<(), StoreError> {
        self.enqueue(
            session_id,
            Write::Save(to_json(state), vec![landed]),
            "save",
        )
    }

    /// Blocks until Redis answered (after the writes this store still holds, which it sees).
    fn load(&self, session_id: &str) -> Result<Option<ContinuationState>, StoreError> {
        // A write still waiting is newer than what Redis holds.
        let waiting = {
            let pending = self.writes.pending.lock();
            match pending
                .queued
                .get(session_id)
                .or(pending.in_flight.get(session_id))
            {
                Some(Write::Save(json, _)) => Some(json.clone()),
                Some(Write::Remove) => return Ok(None),
                None => None,
            }
        };
        let json = match waiting {
            Some(json) => json,
            None => {
                let mut conn = self.backend.conn.clone();
                let key = session_key(&self.backend.prefix, session_id);
                let stored: Option<Vec<u8>> = self
                    .backend
                    .call("load", async move { conn.get(key).await })?;
                let Some(json) = stored else { return Ok(None) };
                json
            }
        };
        let parsed = serde_json::from_slice(&json)
            .map_err(|e| format!("the stored state does not parse: {e}"));
        self.backend.report.outcome("load", parsed).map(Some)
    }

    fn remove(&self, session_id: &str) {
        let _ = self.enqueue(session_id, Write::Remove, "remove");
    }
}

/// Blobs in Redis, each owner within `store.max_blob_bytes_per_session` (see the module docs).
#[derive(Debug)]
pub struct RedisBlobStore {
    backend: Backend,
    put_script: Script,
    drop_script: Script,
    owner_quota: usize,
    /// The largest single blob (`store.blob_capacity_bytes`).
    max_blob: usize,
}

impl RedisBlobStore {
    /// The store `store.redis` describes, with the bounds and time to live of `store`.
    pub fn from_settings(store: &StoreSettings) -> Result<Self, StoreError> {
        Ok(
            Self::new(&store.redis, Duration::from_secs(store.ttl_seconds))?
                .with_limits(store.blob_capacity_bytes, store.max_blob_bytes_per_session),
        )
    }

    /// Blobs expire `ttl` after their put; no limit on their size until
    /// [`Self::with_limits`].
    pub fn new(settings: &RedisSettings, ttl: Duration) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::new(settings, ttl, BLOBS)?,
            put_script: Script::new(PUT_BLOB),
            drop_script: Script::new(DROP_OWNER),
            owner_quota: usize::MAX,
            max_blob: usize::MAX,
        })
    }

    /// This store refusing blobs over `max_blob` bytes, and keeping at most `owner_quota`
    /// bytes per owner.
    pub fn with_limits(mut self, max_blob: usize, owner_quota: usize) -> Self {
        self.max_blob = max_blob;
        self.owner_quota = owner_quota;
        self
    }

    fn blob_key(&self, id: &str) -> String {
        format!("{}blob:{id}", self.backend.prefix)
    }

    fn owner_key(&self, owner: &str) -> String {
        format!("{}owner:{owner}", self.backend.prefix)
    }
}

/// Whether `id` has the form of the ids this store makes (`blob-` and 32 hex digits).
fn is_blob_id(id: &str) -> bool {
    id.strip_prefix("blob-")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl BlobStore for RedisBlobStore {
    /// Blocks until Redis answered. Evicts the owner's own oldest blobs to stay within its
    /// quota; a blob larger than the quota (or `blob_capacity_bytes`) is refused and evicts
    /// nothing.
    fn put(&self, owner: &str, data: Vec<u8>) -> Result<String, StoreError> {
        let weight = data.len().max(1);
        if weight > self.max_blob {
            return Err(StoreError::TooLarge {
                size: weight,
                capacity: self.max_blob,
            });
        }
        if weight > self.owner_quota {
            return Err(StoreError::OverQuota {
                size: weight,
                quota: self.owner_quota,
            });
        }
        let id = format!("blob-{}", super::random_token());
        let (script, mut conn) = (self.put_script.clone(), self.backend.conn.clone());
        let keys = (self.owner_key(owner), self.blob_key(&id));
        let args = (
            self.owner_quota,
            self.backend.ttl_ms(),
            format!("{}blob:", self.backend.prefix),
            id.clone(),
        );
        let _evicted: u64 = self.backend.call("put", async move {
            script
                .key(keys.0)
                .key(keys.1)
                .arg(data)
                .arg(args.0)
                .arg(args.1)
                .arg(args.2)
                .arg(args.3)
                .invoke_async(&mut conn)
                .await
        })?;
        Ok(id)
    }

    /// Blocks until Redis answered.
    fn get(&self, id: &str) -> Result<Option<Arc<Vec<u8>>>, StoreError> {
        if !is_blob_id(id) {
            return Ok(None);
        }
        let mut conn = self.backend.conn.clone();
        let key = self.blob_key(id);
        let data: Option<Vec<u8>> = self
            .backend
            .call("get", async move { conn.get(key).await })?;
        Ok(data.map(Arc::new))
    }

    /// Sent without waiting; a failure is counted and logged, and the blobs expire anyway.
    fn drop_owner(&self, owner: &str) {
        let (script, mut conn) = (self.drop_script.clone(), self.backend.conn.clone());
        let (index, blob_prefix) = (
            self.owner_key(owner),
            format!("{}blob:", self.backend.prefix),
        );
        self.backend.send("drop_owner", async move {
            script
                .key(index)
                .arg(blob_prefix)
                .invoke_async::<()>(&mut conn)
                .await
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ids_are_checked_before_they_reach_a_key() {
        assert!(is_blob_id("blob-0123456789abcdef0123456789abcdef"));
        assert!(!is_blob_id("blob-1"));
        assert!(!is_blob_id("blob-0123456789abcdef0123456789abcdeg"));
        assert!(!is_blob_id("x:0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn a_store_starts_without_a_server_and_fails_fast_without_one() {
        // Port 1 on loopback: nothing listens, connections are refused at once.
        let settings = RedisSettings {
            url: "redis://127.0.0.1:1/0".into(),
            key_prefix: "t:".into(),
            timeout_ms: 500,
        };
        let blobs = RedisBlobStore::new(&settings, Duration::from_secs(60)).unwrap();
        let started = Instant::now();
        assert!(matches!(
            blobs.put("o", vec![1]),
            Err(StoreError::Backend(_))
        ));
        assert!(matches!(
            blobs.get("blob-0123456789abcdef0123456789abcdef"),
            Err(StoreError::Backend(_))
        ));
        blobs.drop_owner("o");
        assert!(started.elapsed() < Duration::from_secs(2));
        let states = RedisSessionStore::new(&settings, Duration::from_secs(60), 4).unwrap();
        let state = ContinuationState::new("k", serde_json::json!({}));
        states.save("a", &state).unwrap();
        // Read back from the queue while the write waits or fails.
        let loaded = states.load("a");
        assert!(
            matches!(loaded, Ok(Some(_)) | Err(StoreError::Backend(_))),
            "{loaded:?}"
        );
        // Dropped from an async context without a panic.
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move { drop((blobs, states)) });
    }
}
