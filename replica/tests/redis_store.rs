//! The Redis-backed session and blob stores against a real `redis-server` (one per test, on a
//! free loopback port, killed by the test): round trips, expiry, key prefixes, the
//! per-session blob quota, owners dropped; and a live session (the in-process replica with
//! `store.backend: redis`) that keeps streaming while Redis is killed, counts and logs the
//! lost writes, and stores again once Redis is back.
//!
//! `redis-server` must be installed (scripts/setup installs it); without it these tests fail.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use framecast_common::protocol::ContinuationState;
use framecast_replica::config::{RedisSettings, StoreBackend};
use framecast_replica::prompt::PromptService;
use framecast_replica::store::redis::{RedisBlobStore, RedisSessionStore};
use framecast_replica::store::{BlobStore, SessionStore, StoreError};
use serde_json::json;
use support::transcript::{Transcript, connect, read_until_match, send};

const REDIS_SERVER: &str = "redis-server";

/// A `redis-server` of this test's own, killed when dropped.
struct Redis {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one on a free port, and waits until it answers.
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.restart();
        redis
    }

    /// Starts it (again) on the same port: empty, since it never persists anything.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{REDIS_SERVER}` ({e}): the Redis store tests need a real Redis \
                     server on PATH (/usr/bin/redis-server); scripts/setup installs it \
                     (apt-get install redis-server)"
                )
            });
        self.child = Some(child);
        let since = Instant::now();
        loop {
            if let Ok(mut conn) = self.try_connect()
                && ::redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return;
            }
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "redis-server did not answer on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye to the clients.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `SIG<name>` to the server (STOP: it hangs, its connections stay open).
    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid}: {status}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn settings(&self, key_prefix: &str) -> RedisSettings {
        RedisSettings {
            url: self.url(),
            key_prefix: key_prefix.into(),
            timeout_ms: 1000,
        }
    }

    fn try_connect(&self) -> Result<::redis::Connection, ::redis::RedisError> {
        ::redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(1))
    }

    /// A plain connection, to look at the keys the stores wrote.
    fn conn(&self) -> ::redis::Connection {
        self.try_connect().unwrap()
    }

    /// The keys under `pattern`, sorted.
    fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.conn())
            .unwrap();
        keys.sort();
        keys
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn state(n: u32) -> ContinuationState {
    ContinuationState::new("framecast.mock.v1", json!({ "n": n }))
}

/// Waits until `done` holds, failing with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let since = Instant::now();
    while !done() {
        assert!(since.elapsed() < limit, "{what} (after {limit:?})");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the store's queued writes reached Redis.
fn flushed(store: &RedisSessionStore) {
    wait_until(Duration::from_secs(5), "writes still queued", || {
        store.pending_writes() == 0
    });
}

/// The sum of `framecast_store_errors_total` over the series with `label` (e.g.
/// `store="session"`).
fn store_errors(label: &str) -> f64 {
    support::metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with("framecast_store_errors_total{") && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every log line this test process wrote so far (captured from its first call on).
fn logs() -> String {
    static LINES: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let lines = LINES.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        tracing_subscriber::fmt()
            .with_env_filter("framecast_replica=debug")
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init()
            .expect("the first subscriber of this test process");
        lines
    });
    String::from_utf8_lossy(&lines.lock().unwrap()).into_owned()
}

/// Appends log output to a buffer, and copies it to stderr.
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[test]
fn states_round_trip_and_are_removed() {
    let redis = Redis::start();
    let store =
        RedisSessionStore::new(&redis.settings("fc:"), Duration::from_secs(60), 16).unwrap();
    assert_eq!(store.load("a").unwrap(), None);
    store.save("a", &state(1)).unwrap();
    store.save("a", &state(2)).unwrap();
    assert_eq!(
        store.load("a").unwrap(),
        Some(state(2)),
        "a load sees the writes still queued"
    );
    flushed(&store);
    assert_eq!(store.load("a").unwrap(), Some(state(2)), "save replaces");
    assert_eq!(redis.keys("fc:*"), ["fc:session:a"]);
    let stored: String = ::redis::cmd("GET")
        .arg("fc:session:a")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(
        serde_json::from_str::<ContinuationState>(&stored).unwrap(),
        state(2)
    );
    store.save("b", &state(3)).unwrap();
    store.remove("a");
    assert_eq!(
        store.load("a").unwrap(),
        None,
        "removed, even before it landed"
    );
    flushed(&store);
    assert_eq!(store.load("a").unwrap(), None);
    assert_eq!(store.load("b").unwrap(), Some(state(3)));
    assert_eq!(redis.keys("fc:*"), ["fc:session:b"]);
}

/// `save_then` reports each save once: `true` only when the state is readable in Redis (a
/// session holds `media_segment_complete` on it), `false` when it never will be. Hundreds of
/// sessions' saves land together.
#[test]
fn a_save_says_when_it_landed_and_many_sessions_land_together() {
    let mut redis = Redis::start();
    let store = Arc::new(
        RedisSessionStore::new(&redis.settings("fc:"), Duration::from_secs(60), 1000).unwrap(),
    );
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let report = |id: String| -> framecast_replica::store::Landed {
        let (outcomes, mut conn) = (outcomes.clone(), redis.conn());
        Box::new(move |ok| {
            let stored: Option<String> = ::redis::cmd("GET")
                .arg(format!("fc:session:{id}"))
                .query(&mut conn)
                .unwrap();
            outcomes.lock().unwrap().push((id, ok, stored.is_some()));
        })
    };
    for n in 0..300 {
        let id = format!("s{n}");
        store.save_then(&id, &state(n), report(id.clone())).unwrap();
    }
    // Replaced while queued (or landed already): the newer save answers for both.
    store
        .save_then("s0", &state(1000), report("s0".into()))
        .unwrap();
    wait_until(Duration::from_secs(10), "every save reported", || {
        outcomes.lock().unwrap().len() == 301
    });
    for (id, ok, stored) in outcomes.lock().unwrap().drain(..) {
        assert!(ok && stored, "{id}: landed {ok}, readable {stored}");
    }
    assert_eq!(redis.keys("fc:session:*").len(), 300);
    assert_eq!(store.load("s0").unwrap(), Some(state(1000)));

    // Removed before it landed: that save is reported as not stored. (The writer is held
    // inside a callback meanwhile, so "gone" is still queued when it is removed.)
    let (entered, in_callback) = std::sync::mpsc::channel();
    let release = Arc::new(std::sync::Barrier::new(2));
    let held = release.clone();
    let hold = move |_| {
        entered.send(()).unwrap();
        held.wait();
    };
    store.save_then("slow", &state(1), Box::new(hold)).unwrap();
    in_callback.recv_timeout(Duration::from_secs(5)).unwrap();
    store
        .save_then("gone", &state(2), report("gone".into()))
        .unwrap();
    store.remove("gone");
    assert_eq!(
        outcomes.lock().unwrap().as_slice(),
        [("gone".to_string(), false, false)]
    );
    release.wait();
    flushed(&store);
    assert!(redis.keys("fc:session:gone").is_empty());

    // Nothing answers: the save is reported as failed, within the timeout.
    redis.kill();
    let (tx, rx) = std::sync::mpsc::channel();
    store
        .save_then("down", &state(3), Box::new(move |ok| tx.send(ok).unwrap()))
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(false));
}

#[test]
fn states_and_blobs_expire_after_their_ttl() {
    let redis = Redis::start();
    let ttl = Duration::from_millis(400);
    let states = RedisSessionStore::new(&redis.settings("fc:"), ttl, 16).unwrap();
    let blobs = RedisBlobStore::new(&redis.settings("fc:"), ttl).unwrap();
    states.save("a", &state(1)).unwrap();
    let blob = blobs.put("a.export", vec![7; 10]).unwrap();
    flushed(&states);
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg("fc:session:a")
        .query(&mut redis.conn())
        .unwrap();
    assert!(0 < pttl && pttl <= 400, "{pttl}");
    assert!(states.load("a").unwrap().is_some());
    assert_eq!(blobs.get(&blob).unwrap().as_deref(), Some(&vec![7; 10]));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(states.load("a").unwrap(), None);
    assert_eq!(blobs.get(&blob).unwrap(), None);
    assert_eq!(
        redis.keys("fc:*"),
        Vec::<String>::new(),
        "the owner's index expires with its newest blob"
    );
}

#[test]
fn key_prefixes_keep_deployments_apart() {
    let redis = Redis::start();
    let ttl = Duration::from_secs(60);
    let (states_a, states_b) = (
        RedisSessionStore::new(&redis.settings("one:"), ttl, 16).unwrap(),
        RedisSessionStore::new(&redis.settings("two:"), ttl, 16).unwrap(),
    );
    let (blobs_a, blobs_b) = (
        RedisBlobStore::new(&redis.settings("one:"), ttl).unwrap(),
        RedisBlobStore::new(&redis.settings("two:"), ttl).unwrap(),
    );
    states_a.save("s", &state(1)).unwrap();
    states_b.save("s", &state(2)).unwrap();
    flushed(&states_a);
    flushed(&states_b);
    assert_eq!(states_a.load("s").unwrap(), Some(state(1)));
    assert_eq!(states_b.load("s").unwrap(), Some(state(2)));
    let blob = blobs_a.put("s", vec![1; 8]).unwrap();
    assert_eq!(blobs_b.get(&blob).unwrap(), None, "another prefix's blob");
    assert!(blobs_a.get(&blob).unwrap().is_some());
    // The same owner name under the other prefix is another owner.
    blobs_b.put("s", vec![2; 8]).unwrap();
    blobs_b.drop_owner("s");
    wait_until(Duration::from_secs(5), "two: keeps its blobs", || {
        redis.keys("two:*") == ["two:session:s"]
    });
    assert!(blobs_a.get(&blob).unwrap().is_some());
    states_b.remove("s");
    flushed(&states_b);
    assert_eq!(states_a.load("s").unwrap(), Some(state(1)));
    for key in redis.keys("*") {
        assert!(key.starts_with("one:"), "{key}");
    }
}

#[test]
fn one_owner_evicts_only_its_own_oldest_blobs_and_a_blob_over_the_quota_is_refused() {
    let redis = Redis::start();
    // Blobs of at most 100 bytes, 40 per owner.
    let store = RedisBlobStore::new(&redis.settings("fc:"), Duration::from_secs(60))
        .unwrap()
        .with_limits(100, 40);
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
    assert_eq!(store.get(&mine[9]).unwrap().as_deref(), Some(&vec![9; 20]));
    assert!(store.get(&mine[8]).unwrap().is_some());
    for id in &mine[..8] {
        assert_eq!(store.get(id).unwrap(), None, "{id}");
    }
    assert_eq!(
        redis.keys("fc:blob:*").len(),
        3,
        "evicted blobs are deleted, not just forgotten"
    );
    // A blob over the quota is refused outright (retryably: it names the setting) and
    // changes nothing.
    let refused = store.put("greedy", vec![0; 41]).unwrap_err();
    assert_eq!(
        refused,
        StoreError::OverQuota {
            size: 41,
            quota: 40
        }
    );
    assert!(
        refused
            .to_string()
            .contains("store.max_blob_bytes_per_session")
    );
    assert!(store.get(&mine[9]).unwrap().is_some());
    assert!(store.get(&mine[8]).unwrap().is_some());
    assert_eq!(
        store.put("greedy", vec![0; 101]).unwrap_err(),
        StoreError::TooLarge {
            size: 101,
            capacity: 100
        }
    );
    // One blob of the whole quota evicts both of the owner's.
    let whole = store.put("greedy", vec![5; 40]).unwrap();
    assert_eq!(store.get(&mine[9]).unwrap(), None);
    assert!(store.get(&whole).unwrap().is_some());
    assert!(store.get(&other).unwrap().is_some());
    // Ids this store never makes are simply absent.
    assert_eq!(store.get("blob-1").unwrap(), None);
    assert_eq!(store.get("../fc:session:x").unwrap(), None);
}

#[test]
fn expired_blobs_no_longer_count_against_the_quota() {
    let redis = Redis::start();
    let store = RedisBlobStore::new(&redis.settings("fc:"), Duration::from_millis(300))
        .unwrap()
        .with_limits(1000, 60);
    let first = store.put("a", vec![0; 60]).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(store.get(&first).unwrap(), None);
    let second = store.put("a", vec![1; 60]).unwrap();
    assert!(store.get(&second).unwrap().is_some());
    let members: Vec<String> = ::redis::cmd("ZRANGE")
        .arg("fc:owner:a")
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(members, [second], "the expired blob left the owner's index");
}

#[test]
fn dropping_an_owner_drops_its_blobs_and_no_one_elses() {
    let redis = Redis::start();
    let store = RedisBlobStore::new(&redis.settings("fc:"), Duration::from_secs(60)).unwrap();
    let live = [
        store.put("s1", vec![1; 10]).unwrap(),
        store.put("s1", vec![2; 10]).unwrap(),
    ];
    let exported = store.put("s1.export", vec![3; 10]).unwrap();
    let other = store.put("s2", vec![4; 10]).unwrap();
    store.drop_owner("s1");
    wait_until(Duration::from_secs(5), "s1's blobs dropped", || {
        live.iter().all(|id| store.get(id).unwrap().is_none())
    });
    assert!(
        store.get(&exported).unwrap().is_some(),
        "exports outlive it"
    );
    assert!(store.get(&other).unwrap().is_some());
    assert!(redis.keys("fc:owner:s1").is_empty());
    // Its quota is free again, and dropping an unknown owner is harmless.
    store.drop_owner("nobody");
    let again = store.put("s1", vec![5; 10]).unwrap();
    assert!(store.get(&again).unwrap().is_some());
}

#[test]
fn an_outage_fails_calls_fast_and_a_restart_heals_them() {
    let _ = logs();
    let _ = support::metrics();
    let mut redis = Redis::start();
    let blobs = RedisBlobStore::new(&redis.settings("fc:"), Duration::from_secs(60)).unwrap();
    let states =
        RedisSessionStore::new(&redis.settings("fc:"), Duration::from_secs(60), 16).unwrap();
    let id = blobs.put("s", vec![1; 4]).unwrap();
    redis.kill();
    let started = Instant::now();
    for _ in 0..3 {
        assert!(matches!(blobs.get(&id), Err(StoreError::Backend(_))));
        assert!(matches!(
            blobs.put("s", vec![1; 4]),
            Err(StoreError::Backend(_))
        ));
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(store_errors("op=\"get\"") >= 3.0);
    assert!(store_errors("op=\"put\"") >= 3.0);
    // Saves are accepted and dropped: counted, not retried, never waited for.
    let before = store_errors("store=\"session\"");
    states.save("s", &state(1)).unwrap();
    flushed(&states);
    assert!(store_errors("store=\"session\"") > before);
    // One warning for the store (then at most one per 30 s), not one per failure.
    let warnings = logs()
        .lines()
        .filter(|l| l.contains("Redis store unavailable") && l.contains("store=\"blob\""))
        .count();
    assert_eq!(warnings, 1, "{}", logs());

    redis.restart();
    wait_until(Duration::from_secs(10), "blob puts work again", || {
        blobs.put("s", vec![2; 4]).is_ok()
    });
    let id = blobs.put("s", vec![3; 4]).unwrap();
    assert_eq!(blobs.get(&id).unwrap().as_deref(), Some(&vec![3; 4]));
    wait_until(Duration::from_secs(10), "saves work again", || {
        states.save("s", &state(2)).unwrap();
        flushed(&states);
        redis.keys("fc:session:s").len() == 1
    });
    assert!(logs().contains("Redis store reachable again"), "{}", logs());
}

/// A live session on the in-process replica with `store.backend: redis`: Redis is killed
/// mid-session and restarted, and the stream never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_streams_through_a_redis_outage_and_stores_again_after_it() {
    let _ = logs();
    let _ = support::metrics();
    let mut redis = Redis::start();
    let prefix = "live-test:";
    let (_server, mut client) = stream_with_redis(&redis, prefix).await;
    let mut t = Transcript::default();
    let limit = Duration::from_secs(30);
    let mut segments = 0;
    let session_keys = |redis: &Redis| redis.keys(&format!("{prefix}session:*"));

    // Streaming with Redis up: the session's state is stored after each segment.
    for _ in 0..2 {
        next_segment(&mut client, &mut t).await;
        segments += 1;
    }
    wait_async(limit, "the session's state in Redis", || {
        session_keys(&redis).len() == 1
    })
    .await;
    let errors_before = store_errors("store=\"session\"");

    // Redis dies: the session goes on (at least a second, and four segments), the lost
    // saves are counted and logged.
    redis.kill();
    let killed = Instant::now();
    let mut during = 0;
    while during < 4 || killed.elapsed() < Duration::from_secs(1) {
        next_segment(&mut client, &mut t).await;
        (segments, during) = (segments + 1, during + 1);
    }
    assert!(
        store_errors("store=\"session\",op=\"save\"") > errors_before,
        "{}",
        support::metrics().render()
    );
    let logged = logs();
    let warnings: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("Redis store unavailable") && l.contains(prefix))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning, not one per segment: {logged}"
    );

    // Redis is back (empty): the next saves land again, while the stream goes on.
    redis.restart();
    let since = Instant::now();
    while session_keys(&redis).is_empty() {
        assert!(since.elapsed() < limit, "no save after the restart");
        next_segment(&mut client, &mut t).await;
        segments += 1;
    }
    assert!(logs().contains("Redis store reachable again"), "{}", logs());

    // Every segment arrived, in order, none lost or repeated; no error reached the client.
    let indices: Vec<u64> = t
        .all("ltx2_segment_complete")
        .iter()
        .map(|m| m["segment_idx"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, (0..segments).collect::<Vec<u64>>());
    assert!(t.all("error").is_empty(), "{:?}", t.all("error"));

    // The session's end removes its state.
    client.close(None).await.unwrap();
    wait_async(limit, "the state removed with the session", || {
        session_keys(&redis).is_empty()
    })
    .await;
}

/// A Redis that stops answering (SIGSTOP: connections hang rather than fail) costs the
/// stream nothing: saves never wait, and a completion waits for its resume record once
/// (`store.resume.record_wait_ms`), then no more, so segments keep their pace; the timeouts
/// are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_never_waits_on_a_hung_redis() {
    let _ = logs();
    let _ = support::metrics();
    let redis = Redis::start();
    let prefix = "hung-test:";
    let (_server, mut client) = stream_with_redis(&redis, prefix).await;
    let mut t = Transcript::default();
    next_segment(&mut client, &mut t).await;
    let before = store_errors("store=\"session\",op=\"save\"");
    redis.signal("STOP");
    let hung = Instant::now();
    let mut during = 0;
    while hung.elapsed() < Duration::from_secs(2) {
        next_segment(&mut client, &mut t).await;
        during += 1;
    }
    redis.signal("CONT");
    // Each save would wait out the 500 ms timeout: a stream that waited would make at most
    // four segments in these two seconds.
    assert!(during >= 8, "{during} segments in 2 s with Redis hung");
    // The socket writer held one completion for its record, then gave up waiting.
    assert!(
        logs().contains("resume record not stored; segments are reported complete"),
        "{}",
        logs()
    );
    assert!(
        store_errors("store=\"session\",op=\"save\"") > before,
        "the timed-out saves are counted"
    );
    assert!(t.all("error").is_empty(), "{:?}", t.all("error"));
    let indices: Vec<u64> = t
        .all("ltx2_segment_complete")
        .iter()
        .map(|m| m["segment_idx"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, (0..=during).collect::<Vec<u64>>());
}

/// A replica in this process storing into `redis` under `prefix`, and a client streaming
/// from it (segments about every 50 ms, up to 1000).
async fn stream_with_redis(
    redis: &Redis,
    prefix: &str,
) -> (support::Server, support::transcript::Client) {
    let mut config = support::small_config();
    config.store.backend = StoreBackend::Redis;
    config.store.redis = redis.settings(prefix);
    config.store.redis.timeout_ms = 500;
    config.streaming.generation_segment_cap = 1000;
    config.generator.mock_latency_ms = 20;
    let server = support::start(config, PromptService::disabled()).await;
    let mut client = connect(&server.ws_url("/v1/stream")).await;
    send(
        &mut client,
        json!({"type": "session_init_v2", "curated_prompts": ["a harbour at dawn"],
               "auto_extension_enabled": true}),
    )
    .await;
    (server, client)
}

/// Reads until the next `ltx2_segment_complete`.
async fn next_segment(client: &mut support::transcript::Client, t: &mut Transcript) {
    read_until_match(
        client,
        t,
        Duration::from_secs(30),
        "ltx2_segment_complete",
        |m| m["type"] == "ltx2_segment_complete",
    )
    .await;
}

/// Waits (without blocking the runtime) until `done` holds, failing with `what` after `limit`.
async fn wait_async(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let since = Instant::now();
    while !done() {
        assert!(since.elapsed() < limit, "{what} (after {limit:?})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
