//! Real WebSocket clients against the real replica server on 127.0.0.1, with MockGenerator
//! (the test double) producing frames and the real GStreamer encoder producing fMP4.

use std::sync::Arc;
use std::time::{Duration, Instant};

use framecast_replica::config::ReplicaConfig;
use framecast_replica::generate;
use framecast_replica::pool::WorkerPool;
use framecast_replica::pool::in_process::InProcessPool;
use framecast_replica::server::{self, AppState};
use framecast_replica::session::SessionContext;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Server {
    url: String,
    pool: Arc<InProcessPool>,
    states: Arc<framecast_replica::store::memory::MemorySessionStore>,
}

impl Server {
    /// Waits until the worker is free again, failing with `what` after `limit`.
    async fn wait_for_free_worker(&self, limit: Duration, what: &str) {
        let since = Instant::now();
        while self.pool.status().available_gpus == 0 {
            assert!(since.elapsed() < limit, "{what} (after {limit:?})");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn test_config() -> ReplicaConfig {
    let mut c = ReplicaConfig::default();
    c.generator.width = 128;
    c.generator.height = 72;
    c.generator.fps = 24;
    c.generator.frames_per_segment = 12;
    c.generator.num_inference_steps = 3;
    c.generator.mock_latency_ms = 60;
    c.media.fragment_duration_ms = 250;
    c.streaming.generation_segment_cap = 2;
    c.streaming.max_sessions = 2;
    c.streaming.max_message_bytes = 64 * 1024;
    c.streaming.session_log_dir = None;
    c
}

/// [`test_config`] with the tiny Wan2.1 model (untrained, built by scripts/setup).
fn wan_config() -> ReplicaConfig {
    let mut config = test_config();
    config.generator.kind = framecast_replica::config::GeneratorKind::Wan;
    config.generator.model_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/wan-tiny");
    config
}

async fn start(config: ReplicaConfig) -> Server {
    let generators = (0..config.pool.num_workers)
        .map(|_| generate::build(&config.generator, test_blobs()).unwrap())
        .collect();
    start_with(config, generators).await
}

async fn start_with(
    config: ReplicaConfig,
    generators: Vec<Box<dyn generate::Generator>>,
) -> Server {
    start_sharing(config, generators, None).await
}

/// [`start_with`], the sessions sharing `blobs` with the generators as in main (a session's
/// end then drops its live blobs from the store the generators write), when given.
async fn start_sharing(
    config: ReplicaConfig,
    generators: Vec<Box<dyn generate::Generator>>,
    blobs: Option<Arc<dyn framecast_replica::store::BlobStore>>,
) -> Server {
    // As in main: GStreamer is initialised once at start-up, before any session.
    framecast_replica::media::elements::init().unwrap();
    framecast_common::logging::init("framecast_replica=debug");
    let config = Arc::new(config);
    let pool = Arc::new(InProcessPool::new(generators, false));
    let mut sessions = SessionContext::new(pool.clone(), config);
    if let Some(blobs) = blobs {
        sessions.blobs = blobs;
    }
    let states = Arc::new(framecast_replica::store::memory::MemorySessionStore::new(
        16,
        Duration::from_secs(60),
    ));
    sessions.states = states.clone();
    let recorder = framecast_common::metrics::standalone_recorder();
    let state = AppState::new("cpu".into(), recorder.handle(), sessions);
    state.mark_ready();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server::router(state)).await.unwrap() });
    Server {
        url: format!("ws://{addr}/v1/stream"),
        pool,
        states,
    }
}

async fn connect(server: &Server) -> Client {
    tokio_tungstenite::connect_async(&server.url)
        .await
        .unwrap()
        .0
}

async fn send(client: &mut Client, value: Value) {
    client
        .send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// Reads and drops messages up to and including the first text one that mentions `needle`.
async fn skip_past(client: &mut Client, needle: &str) {
    loop {
        let msg = client.next().await.unwrap().unwrap();
        if msg.to_text().is_ok_and(|t| t.contains(needle)) {
            return;
        }
    }
}

/// Everything the server sends until it closes: JSON messages, binary sizes, the close code.
#[derive(Debug, Default)]
struct Transcript {
    events: Vec<String>,
    messages: Vec<Value>,
    binary_bytes: usize,
    close: Option<u16>,
}

async fn read_until_close(client: &mut Client, limit: Duration) -> Transcript {
    let mut t = Transcript::default();
    let deadline = Instant::now() + limit;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline.into(), client.next()).await {
        match msg {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(&text).unwrap();
                t.events.push(v["type"].as_str().unwrap().to_string());
                t.messages.push(v);
            }
            Ok(Message::Binary(b)) => {
                t.events.push("binary".into());
                t.binary_bytes += b.len();
            }
            Ok(Message::Close(frame)) => {
                t.close = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    t
}

/// Like [`read_until_close`], but stops after the first JSON message of `kind`.
async fn read_until(client: &mut Client, kind: &str, limit: Duration) -> Transcript {
    let mut t = Transcript::default();
    let deadline = Instant::now() + limit;
    loop {
        let msg = match tokio::time::timeout_at(deadline.into(), client.next()).await {
            Ok(Some(Ok(msg))) => msg,
            other => panic!("no {kind} within {limit:?} ({other:?}); saw {:?}", t.events),
        };
        match msg {
            Message::Text(text) => {
                let v: Value = serde_json::from_str(&text).unwrap();
                t.events.push(v["type"].as_str().unwrap().to_string());
                let done = v["type"] == kind;
                t.messages.push(v);
                if done {
                    return t;
                }
            }
            Message::Binary(b) => {
                t.events.push("binary".into());
                t.binary_bytes += b.len();
            }
            Message::Close(frame) => panic!("closed ({frame:?}) before {kind}; saw {:?}", t.events),
            _ => {}
        }
    }
}

/// Asks for a snapshot and returns the state it brings (what a client keeps).
async fn snapshot(client: &mut Client) -> Value {
    send(client, json!({"type": "snapshot_state"})).await;
    let t = read_until(
        client,
        "continuation_state_snapshot",
        Duration::from_secs(30),
    )
    .await;
    first(&t, "continuation_state_snapshot")["state"].clone()
}

fn first<'a>(t: &'a Transcript, kind: &str) -> &'a Value {
    t.messages
        .iter()
        .find(|m| m["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", t.events))
}

/// The JSON messages of `kind`, in order.
fn all<'a>(t: &'a Transcript, kind: &'a str) -> impl Iterator<Item = &'a Value> {
    t.messages.iter().filter(move |m| m["type"] == kind)
}

fn count(t: &Transcript, kind: &str) -> usize {
    t.events.iter().filter(|e| *e == kind).count()
}

fn index(t: &Transcript, kind: &str) -> usize {
    t.events
        .iter()
        .position(|e| e == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", t.events))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_streams_video_generated_by_the_wan_model() {
    // The real path: the tiny Wan2.1 model (untrained, built by scripts/setup) run with
    // libtorch, continued segment to segment, encoded and streamed.
    let mut config = wan_config();
    config.generator.width = 160;
    config.generator.height = 96;
    config.generator.frames_per_segment = 12;
    config.generator.num_inference_steps = 2;
    let server = start(config).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2", "curated_prompts": ["a lighthouse in a storm"], "auto_extension_enabled": true})).await;
    let t = read_until_close(&mut client, Duration::from_secs(60)).await;

    assert_eq!(t.close, Some(1000), "{:?}", t.events);
    assert_eq!(first(&t, "ltx2_stream_complete")["reason"], "segment_cap");
    let completes = count(&t, "media_segment_complete");
    assert_eq!(completes, 2);
    let steps = count(&t, "step_complete");
    assert_eq!(steps, 4, "2 steps x 2 segments");
    // Two segments of 12 frames at 24 fps: 1 s of video in fragments.
    let media_ms: u64 = all(&t, "media_segment_complete")
        .map(|m| m["duration_ms"].as_u64().unwrap())
        .sum();
    assert_eq!(media_ms, 1000);
    assert!(t.binary_bytes > 2_000, "{} media bytes", t.binary_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_too_large_for_the_blob_store_is_refused_and_the_session_goes_on() {
    let mut config = wan_config();
    config.generator.width = 64;
    config.generator.height = 48;
    config.generator.num_inference_steps = 1;
    config.streaming.generation_segment_cap = 3;
    // Far smaller than the stream's tensors (the real model's are gigabytes).
    let tiny_store: Arc<dyn framecast_replica::store::BlobStore> = Arc::new(
        framecast_replica::store::memory::MemoryBlobStore::new(1024, Duration::from_secs(60)),
    );
    let generator = generate::build(&config.generator, tiny_store).unwrap();
    let server = start_with(config, vec![generator]).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2", "curated_prompts": ["fog"], "auto_extension_enabled": true})).await;
    skip_past(&mut client, "ltx2_segment_complete").await;
    send(&mut client, json!({"type": "snapshot_state"})).await;
    let t = read_until_close(&mut client, Duration::from_secs(60)).await;
    let err = first(&t, "error");
    assert_eq!(err["code"], "internal_error", "{err}");
    assert_eq!(err["reason"], "snapshot_failed", "{err}");
    assert_eq!(err["retryable"], true);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("store.blob_capacity_bytes"),
        "{err}"
    );
    // The stream went on to the cap.
    assert_eq!(first(&t, "ltx2_stream_complete")["reason"], "segment_cap");
    assert_eq!(t.close, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_streams_segments_in_protocol_order() {
    let server = start(test_config()).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2", "curated_prompts": ["a red fox"], "auto_extension_enabled": true})).await;
    let t = read_until_close(&mut client, Duration::from_secs(20)).await;

    assert_eq!(t.close, Some(1000), "{:?}", t.events);
    assert_eq!(first(&t, "gpu_assigned")["gpu_id"], 0);
    let start = first(&t, "ltx2_stream_start");
    assert_eq!(
        (
            start["width"].as_u64(),
            start["height"].as_u64(),
            start["num_frames"].as_u64()
        ),
        (Some(128), Some(72), Some(12))
    );
    // Order: assigned, stream start, segment 0 start, its steps, media init, bytes, completions.
    assert!(index(&t, "gpu_assigned") < index(&t, "ltx2_stream_start"));
    assert!(index(&t, "ltx2_stream_start") < index(&t, "ltx2_segment_start"));
    assert!(index(&t, "ltx2_segment_start") < index(&t, "step_complete"));
    assert!(index(&t, "step_complete") < index(&t, "media_init"));
    assert_eq!(
        t.events[index(&t, "media_init") + 1],
        "binary",
        "init segment follows media_init"
    );
    assert!(index(&t, "binary") < index(&t, "media_segment_complete"));
    assert!(index(&t, "media_segment_complete") < index(&t, "ltx2_segment_complete"));
    let steps: Vec<&Value> = all(&t, "step_complete").collect();
    assert_eq!(steps.len(), 6, "3 steps x 2 segments");
    let completes: Vec<u64> = all(&t, "ltx2_segment_complete")
        .map(|m| m["segment_idx"].as_u64().unwrap())
        .collect();
    assert_eq!(completes, vec![0, 1]);
    assert_eq!(t.events.last().unwrap(), "ltx2_stream_complete");
    assert_eq!(first(&t, "ltx2_stream_complete")["reason"], "segment_cap");
    let mime = first(&t, "media_init")["mime"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(mime.starts_with("video/mp4; codecs=\"avc1."), "{mime}");
    assert!(t.binary_bytes > 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_first_frame_is_rejected_with_1003() {
    let server = start(test_config()).await;
    for first_frame in [
        json!({"type": "segment_prompt_source", "prompt": "x"}),
        json!({"hello": 1}),
    ] {
        let mut client = connect(&server).await;
        send(&mut client, first_frame).await;
        let t = read_until_close(&mut client, Duration::from_secs(5)).await;
        assert_eq!(first(&t, "error")["code"], "session_rejected");
        assert_eq!(t.close, Some(1003));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_get_errors_and_the_session_goes_on() {
    let server = start(test_config()).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2"})).await;
    client
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    send(&mut client, json!({"type": "warp_drive"})).await;
    send(
        &mut client,
        json!({"type": "segment_prompt_source", "prompt": "x", "seed": "seven"}),
    )
    .await;
    client
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    send(
        &mut client,
        json!({"type": "segment_prompt_source", "prompt": "a boat"}),
    )
    .await;
    send(
        &mut client,
        json!({"type": "segment_prompt_source", "prompt": "a boat at dusk"}),
    )
    .await;
    let t = read_until_close(&mut client, Duration::from_secs(20)).await;
    let errors: Vec<&Value> = all(&t, "error").collect();
    assert_eq!(errors.len(), 4, "{:?}", t.events);
    assert!(
        errors
            .iter()
            .all(|e| e["code"] == "invalid_message" && e["retryable"] == true)
    );
    assert_eq!(errors[2]["reason"], "field:seed", "{}", errors[2]);
    assert_eq!(
        t.close,
        Some(1000),
        "the session carried on to its cap: {:?}",
        t.events
    );
    assert_eq!(first(&t, "ltx2_stream_complete")["reason"], "segment_cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_capacity_is_refused_with_1013() {
    let mut config = test_config();
    config.streaming.max_sessions = 1;
    let server = start(config).await;
    let mut holder = connect(&server).await;
    send(&mut holder, json!({"type": "session_init_v2"})).await;
    // Wait until the first session holds its slot.
    let assigned = holder.next().await.unwrap().unwrap();
    assert!(assigned.to_text().unwrap().contains("gpu_assigned"));
    let mut extra = connect(&server).await;
    send(&mut extra, json!({"type": "session_init_v2"})).await;
    let t = read_until_close(&mut extra, Duration::from_secs(5)).await;
    assert_eq!(first(&t, "error")["code"], "session_rejected");
    assert_eq!(t.close, Some(1013));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_with_1009() {
    let server = start(test_config()).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2"})).await;
    let big = json!({"type": "segment_prompt_source", "prompt": "x".repeat(100 * 1024)});
    let _ = client.send(Message::Text(big.to_string().into())).await;
    let t = read_until_close(&mut client, Duration::from_secs(5)).await;
    assert_eq!(t.close, Some(u16::from(CloseCode::Size)), "{:?}", t.events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_segment_frees_its_worker_within_a_second() {
    let mut config = test_config();
    config.generator.mock_latency_ms = 3000;
    config.generator.num_inference_steps = 30;
    let server = start(config).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2"})).await;
    send(
        &mut client,
        json!({"type": "segment_prompt_source", "prompt": "slow"}),
    )
    .await;
    // Wait for generation to be under way.
    skip_past(&mut client, "step_complete").await;
    assert_eq!(server.pool.status().available_gpus, 0);
    drop(client);
    server
        .wait_for_free_worker(Duration::from_secs(1), "worker still busy")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_restore_continue_the_stream() {
    let server = start(test_config()).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2"})).await;
    send(
        &mut client,
        json!({"type": "segment_prompt_source", "prompt": "p"}),
    )
    .await;
    // After segment 0 completes, ask for the state.
    skip_past(&mut client, "ltx2_segment_complete").await;
    send(&mut client, json!({"type": "snapshot_state"})).await;
    let state = loop {
        let msg = client.next().await.unwrap().unwrap();
        if let Ok(text) = msg.to_text() {
            let v: Value = serde_json::from_str(text).unwrap();
            if v["type"] == "continuation_state_snapshot" {
                break v["state"].clone();
            }
        }
    };
    assert_eq!(state["kind"], "framecast.mock.v1");
    assert_eq!(
        server.states.len(),
        1,
        "the live session's resume record is stored"
    );
    // A session the client closes leaves nothing behind (one that merely loses its
    // connection keeps its resume record: see tests/resume.rs).
    client.close(None).await.unwrap();
    drop(client);
    let left = Instant::now();
    while !server.states.is_empty() {
        assert!(
            left.elapsed() < Duration::from_secs(2),
            "state outlived its session"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut restored = connect(&server).await;
    send(
        &mut restored,
        json!({"type": "session_init_v2", "continuation_state": state}),
    )
    .await;
    send(&mut restored, json!({"type": "snapshot_state"})).await;
    let t = read_until_close(&mut restored, Duration::from_millis(800)).await;
    assert_eq!(
        first(&t, "continuation_state_snapshot")["state"],
        state,
        "restored state is the session's state"
    );
    drop(restored);
    server
        .wait_for_free_worker(
            Duration::from_secs(5),
            "the previous session kept the worker",
        )
        .await;

    let mut bad = connect(&server).await;
    send(&mut bad, json!({"type": "session_init_v2", "continuation_state": {"kind": "someone.else.v9", "payload": {}}})).await;
    let t = read_until_close(&mut bad, Duration::from_millis(800)).await;
    assert_eq!(first(&t, "error")["code"], "invalid_message");
    assert_eq!(first(&t, "error")["reason"], "field:continuation_state");
}

/// A mock session's state after its first segment (12 frames), as the client got it; the
/// worker is free again when this returns.
async fn mock_snapshot(server: &Server) -> Value {
    let mut client = connect(server).await;
    send(&mut client, json!({"type": "session_init_v2"})).await;
    send(
        &mut client,
        json!({"type": "segment_prompt_source", "prompt": "p"}),
    )
    .await;
    skip_past(&mut client, "ltx2_segment_complete").await;
    let state = snapshot(&mut client).await;
    drop(client);
    server
        .wait_for_free_worker(Duration::from_secs(5), "the session kept the worker")
        .await;
    state
}

/// Opens a session with `state` as its `continuation_state`, generates one segment and
/// snapshots it: what the session sent up to that segment, and the snapshot (its
/// `frames_done` tells a continued stream from a fresh one). Frees the worker again.
async fn resume_and_snapshot(server: &Server, state: &Value) -> (Transcript, Value) {
    let mut client = connect(server).await;
    send(
        &mut client,
        json!({"type": "session_init_v2", "continuation_state": state}),
    )
    .await;
    send(
        &mut client,
        json!({"type": "segment_prompt_source", "prompt": "p"}),
    )
    .await;
    let t = read_until(
        &mut client,
        "ltx2_segment_complete",
        Duration::from_secs(10),
    )
    .await;
    let after = snapshot(&mut client).await;
    drop(client);
    server
        .wait_for_free_worker(Duration::from_secs(5), "the session kept the worker")
        .await;
    (t, after)
}

/// The refusal of a continuation state: retryable, naming the field and why.
fn assert_state_refused(t: &Transcript, why: &str) {
    let err = first(t, "error");
    assert_eq!(err["code"], "invalid_message", "{err}");
    assert_eq!(err["reason"], "field:continuation_state", "{err}");
    assert_eq!(err["retryable"], true, "{err}");
    assert!(err["message"].as_str().unwrap().contains(why), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_continuation_state_is_refused_and_the_session_starts_fresh() {
    let server = start(test_config()).await;
    let state = mock_snapshot(&server).await;
    assert_eq!(state["payload"]["frames_done"], 12, "{state}");
    assert!(state["signature"].is_string(), "{state}");

    // The client moves the stream far ahead and keeps the signature.
    let mut tampered = state.clone();
    tampered["payload"]["frames_done"] = json!(1200);
    let (t, after) = resume_and_snapshot(&server, &tampered).await;
    assert_state_refused(&t, "signature does not match");
    assert_eq!(
        after["payload"]["frames_done"], 12,
        "a fresh stream, not 1200 + 12 frames: {after}"
    );
    // Re-labelling the kind fails the same way.
    let mut relabelled = state.clone();
    relabelled["kind"] = json!("framecast.wan.v1");
    let (t, _) = resume_and_snapshot(&server, &relabelled).await;
    assert_state_refused(&t, "signature does not match");

    // The state as it was sent still continues the stream: 12 + 12 frames.
    let (t, after) = resume_and_snapshot(&server, &state).await;
    assert_eq!(count(&t, "error"), 0, "{:?}", t.messages);
    assert_eq!(after["payload"]["frames_done"], 24, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_or_foreign_continuation_state_is_refused_and_the_session_starts_fresh() {
    let server = start(test_config()).await;
    let state = mock_snapshot(&server).await;

    let mut unsigned = state.clone();
    unsigned.as_object_mut().unwrap().remove("signature");
    let (t, after) = resume_and_snapshot(&server, &unsigned).await;
    assert_state_refused(&t, "not signed");
    assert_eq!(
        after["payload"]["frames_done"], 12,
        "fresh, not 24: {after}"
    );

    // Another replica process (here without store.state_secret: a random key of its own)
    // does not take this one's states.
    let other = start(test_config()).await;
    let (t, after) = resume_and_snapshot(&other, &state).await;
    assert_state_refused(&t, "signature does not match");
    assert_eq!(
        after["payload"]["frames_done"], 12,
        "fresh, not 24: {after}"
    );
}

/// A wan session's exported state after one segment of `prompt`; the worker is free again
/// when this returns.
async fn wan_snapshot(server: &Server, prompt: &str) -> Value {
    let mut client = connect(server).await;
    send(&mut client, json!({"type": "session_init_v2"})).await;
    send(
        &mut client,
        json!({"type": "segment_prompt_source", "prompt": prompt}),
    )
    .await;
    skip_past(&mut client, "ltx2_segment_complete").await;
    let state = snapshot(&mut client).await;
    assert_eq!(state["kind"], "framecast.wan.v1", "{state}");
    drop(client);
    server
        .wait_for_free_worker(Duration::from_secs(10), "the session kept the worker")
        .await;
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wan_state_cannot_be_pointed_at_another_sessions_blob_or_stream() {
    let mut config = wan_config();
    config.generator.width = 64;
    config.generator.height = 48;
    config.generator.num_inference_steps = 1;
    // One store for the generator and the sessions, as in main: a session's end drops its
    // live blobs there, not its exports.
    let blobs: Arc<dyn framecast_replica::store::BlobStore> =
        Arc::new(framecast_replica::store::memory::MemoryBlobStore::from_config(&config));
    let generator = generate::build(&config.generator, blobs.clone()).unwrap();
    let server = start_sharing(config, vec![generator], Some(blobs)).await;
    let a = wan_snapshot(&server, "fog").await;
    let b = wan_snapshot(&server, "rain").await;
    for field in ["blob", "stream"] {
        assert_ne!(a["payload"][field], b["payload"][field], "{field}");
    }

    // A's client points its own signed state at B's blob, or at B's stream (still live in
    // the worker): refused, and nothing of B's is generated from.
    for field in ["blob", "stream"] {
        let mut forged = a.clone();
        forged["payload"][field] = b["payload"][field].clone();
        let mut client = connect(&server).await;
        send(
            &mut client,
            json!({"type": "session_init_v2", "continuation_state": forged}),
        )
        .await;
        let t = read_until(&mut client, "gpu_assigned", Duration::from_secs(10)).await;
        assert_state_refused(&t, "signature does not match");
        drop(client);
        server
            .wait_for_free_worker(Duration::from_secs(10), "the session kept the worker")
            .await;
    }

    // A's own state resumes after A's session ended (its exported blob outlived it), and a
    // snapshot taken before the first segment is A's state again, not B's live stream that
    // the worker still holds.
    let mut client = connect(&server).await;
    send(
        &mut client,
        json!({"type": "session_init_v2", "continuation_state": a}),
    )
    .await;
    send(&mut client, json!({"type": "snapshot_state"})).await;
    send(
        &mut client,
        json!({"type": "segment_prompt_source", "prompt": "fog"}),
    )
    .await;
    let t = read_until(
        &mut client,
        "ltx2_segment_complete",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(count(&t, "error"), 0, "{:?}", t.messages);
    assert_eq!(first(&t, "continuation_state_snapshot")["state"], a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_over_the_per_session_blob_quota_is_refused_and_the_session_goes_on() {
    let mut config = wan_config();
    config.generator.width = 64;
    config.generator.height = 48;
    config.generator.num_inference_steps = 1;
    config.streaming.generation_segment_cap = 3;
    // The store has room (256 MiB by default), but one session may hold only 1 KiB: far
    // less than the stream's tensors.
    config.store.max_blob_bytes_per_session = 1024;
    let blobs: Arc<dyn framecast_replica::store::BlobStore> =
        Arc::new(framecast_replica::store::memory::MemoryBlobStore::from_config(&config));
    let generator = generate::build(&config.generator, blobs.clone()).unwrap();
    let server = start_sharing(config, vec![generator], Some(blobs)).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2", "curated_prompts": ["fog"], "auto_extension_enabled": true})).await;
    skip_past(&mut client, "ltx2_segment_complete").await;
    send(&mut client, json!({"type": "snapshot_state"})).await;
    let t = read_until_close(&mut client, Duration::from_secs(60)).await;
    let err = first(&t, "error");
    assert_eq!(err["code"], "internal_error", "{err}");
    assert_eq!(err["reason"], "snapshot_failed", "{err}");
    assert_eq!(err["retryable"], true, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("store.max_blob_bytes_per_session"),
        "{err}"
    );
    assert_eq!(count(&t, "continuation_state_snapshot"), 0);
    // The stream went on to the cap.
    assert_eq!(first(&t, "ltx2_stream_complete")["reason"], "segment_cap");
    assert_eq!(t.close, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_told_and_closed() {
    let mut config = test_config();
    config.streaming.session_timeout_seconds = 1;
    let server = start(config).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2"})).await;
    let started = Instant::now();
    let t = read_until_close(&mut client, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(first(&t, "session_timeout")["timeout_seconds"], 1);
    assert_eq!(first(&t, "ltx2_stream_complete")["reason"], "idle_timeout");
    assert_eq!(t.close, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_session_hears_its_position_and_gets_the_worker_next() {
    let server = start(test_config()).await;
    let mut holder = connect(&server).await;
    send(&mut holder, json!({"type": "session_init_v2"})).await;
    let assigned = holder.next().await.unwrap().unwrap();
    assert!(assigned.to_text().unwrap().contains("gpu_assigned"));

    let mut waiting = connect(&server).await;
    send(&mut waiting, json!({"type": "session_init_v2"})).await;
    let queued: Value =
        serde_json::from_str(waiting.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(
        queued,
        json!({"type": "queue_status", "position": 1, "queue_depth": 1})
    );
    drop(holder);
    let next: Value =
        serde_json::from_str(waiting.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(next["type"], "gpu_assigned", "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_generation_cycles_the_curated_prompts_until_the_cap() {
    let mut config = test_config();
    config.streaming.generation_segment_cap = 3;
    let server = start(config).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2", "curated_prompts": ["one", "two"], "loop_generation_enabled": true})).await;
    let t = read_until_close(&mut client, Duration::from_secs(20)).await;
    let prompts: Vec<&str> = all(&t, "ltx2_segment_start")
        .map(|m| m["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, ["one", "two", "one"]);
    assert_eq!(first(&t, "ltx2_stream_complete")["reason"], "segment_cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_stops_after_the_current_segment_and_resuming_goes_on() {
    let mut config = test_config();
    config.streaming.generation_segment_cap = 3;
    let server = start(config).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2", "curated_prompts": ["p"], "auto_extension_enabled": true})).await;
    send(
        &mut client,
        json!({"type": "generation_paused_updated", "paused": true}),
    )
    .await;
    // At most the segment already under way completes; then nothing for a while.
    let t = read_until_close(&mut client, Duration::from_millis(1500)).await;
    let started = count(&t, "ltx2_segment_start");
    assert!(
        started <= 1,
        "paused session kept generating: {:?}",
        t.events
    );
    assert_eq!(t.close, None);
    send(
        &mut client,
        json!({"type": "generation_paused_updated", "paused": false}),
    )
    .await;
    let t = read_until_close(&mut client, Duration::from_secs(20)).await;
    assert_eq!(
        first(&t, "ltx2_stream_complete")["reason"],
        "segment_cap",
        "{:?}",
        t.events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_clip_mode_ends_after_one_segment() {
    let server = start(test_config()).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2", "single_clip_mode": true, "curated_prompts": ["p"], "auto_extension_enabled": true})).await;
    let t = read_until_close(&mut client, Duration::from_secs(20)).await;
    assert_eq!(count(&t, "ltx2_segment_complete"), 1);
    assert_eq!(t.close, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_images_are_checked_and_a_bad_one_does_not_end_the_session() {
    use base64::Engine;
    let server = start(test_config()).await;
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let good = base64::engine::general_purpose::STANDARD.encode(png.into_inner());

    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2", "initial_image": {"mime": "image/png", "name": "red.png", "data": good}})).await;
    let t = read_until_close(&mut client, Duration::from_millis(500)).await;
    assert!(!t.events.contains(&"error".to_string()), "{:?}", t.messages);
    assert_eq!(t.events.first().map(String::as_str), Some("gpu_assigned"));
    drop(client);
    server
        .wait_for_free_worker(
            Duration::from_secs(5),
            "the previous session kept the worker",
        )
        .await;

    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2", "initial_image": {"mime": "image/png", "data": "bm90IGFuIGltYWdl"}})).await;
    let t = read_until_close(&mut client, Duration::from_millis(500)).await;
    let err = first(&t, "error");
    assert_eq!(err["code"], "invalid_message");
    assert_eq!(err["reason"], "initial_image_undecodable");
    assert!(
        t.events.contains(&"gpu_assigned".to_string()),
        "the session went on: {:?}",
        t.events
    );
    assert_eq!(t.close, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_session_writes_a_jsonl_event_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.streaming.session_log_dir = Some(dir.path().to_path_buf());
    let server = start(config).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2", "curated_prompts": ["p"], "auto_extension_enabled": true})).await;
    let t = read_until_close(&mut client, Duration::from_secs(20)).await;
    assert_eq!(t.close, Some(1000));
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    // The writer thread flushes the file shortly after the session ends.
    let read = || -> Vec<Value> {
        std::fs::read_to_string(&files[0])
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut lines = read();
    while !lines.iter().any(|l| l["state"] == "complete") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        lines = read();
    }
    let states: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "state")
        .map(|l| l["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["queued", "gpu_binding", "active", "complete"]);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["event"] == "segment_complete")
            .count(),
        2
    );
    assert!(lines.iter().all(|l| l["ts_ms"].as_u64().is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_disconnected_and_frees_its_worker() {
    let mut config = test_config();
    config.generator.width = 640;
    config.generator.height = 360;
    config.generator.mock_latency_ms = 5;
    config.generator.num_inference_steps = 1;
    config.streaming.generation_segment_cap = 10_000;
    config.streaming.send_queue_messages = 4;
    config.streaming.client_write_timeout_seconds = 1;
    let server = start(config).await;
    // Connect with a tiny receive buffer and then never read.
    let stream = tokio::net::TcpStream::connect(
        server
            .url
            .trim_start_matches("ws://")
            .trim_end_matches("/v1/stream"),
    )
    .await
    .unwrap();
    let sock = socket2::SockRef::from(&stream);
    sock.set_recv_buffer_size(4096).unwrap();
    let (mut client, _) = tokio_tungstenite::client_async(&server.url, stream)
        .await
        .unwrap();
    let init = json!({"type": "session_init_v2", "curated_prompts": ["p"], "auto_extension_enabled": true});
    client
        .send(Message::Text(init.to_string().into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.pool.status().available_gpus,
        0,
        "streaming to the client"
    );
    // The writer blocks on the full socket, gives up after the write timeout, and the
    // session ends: the worker comes back although the cap is far away.
    server
        .wait_for_free_worker(Duration::from_secs(15), "slow client never disconnected")
        .await;
    drop(client);
}

/// A test double that fails the way a broken model or a bad frame would.
struct FaultyGenerator {
    inner: Box<dyn generate::Generator>,
    fault: Fault,
}

#[derive(Clone, Copy)]
enum Fault {
    /// Generation itself fails.
    Fails,
    /// Frames of the wrong size reach the encoder.
    WrongFrameSize,
    /// The generator panics (a bug, or a libtorch error surfacing as a panic).
    Panics,
}

impl generate::Generator for FaultyGenerator {
    fn format(&self) -> generate::StreamFormat {
        self.inner.format()
    }
    fn state_kind(&self) -> &'static str {
        self.inner.state_kind()
    }
    fn validate_state(
        &self,
        s: &framecast_common::protocol::ContinuationState,
    ) -> Result<(), generate::GenerateError> {
        self.inner.validate_state(s)
    }
    fn generate(
        &mut self,
        request: &generate::SegmentRequest,
        state: Option<&framecast_common::protocol::ContinuationState>,
        progress: &mut dyn FnMut(generate::StepProgress) -> std::ops::ControlFlow<()>,
    ) -> Result<generate::GeneratedSegment, generate::GenerateError> {
        match self.fault {
            Fault::Fails => Err(generate::GenerateError::Failed(
                "out of memory (simulated)".into(),
            )),
            Fault::WrongFrameSize => {
                let mut segment = self.inner.generate(request, state, progress)?;
                segment.frames[3].truncate(10);
                Ok(segment)
            }
            Fault::Panics => panic!("tensor shape mismatch (simulated)"),
        }
    }
}

async fn failing_session(fault: Fault) -> (Transcript, Server) {
    let config = test_config();
    let inner = generate::build(&config.generator, test_blobs()).unwrap();
    let server = start_with(config, vec![Box::new(FaultyGenerator { inner, fault })]).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2", "curated_prompts": ["p"], "auto_extension_enabled": true})).await;
    (
        read_until_close(&mut client, Duration::from_secs(10)).await,
        server,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_failure_ends_with_worker_failed_and_1011_and_frees_the_worker() {
    let (t, server) = failing_session(Fault::Fails).await;
    let err = first(&t, "error");
    assert_eq!(err["code"], "worker_failed");
    assert_eq!(err["retryable"], true);
    assert_eq!(first(&t, "ltx2_stream_complete")["reason"], "error");
    assert_eq!(t.close, Some(1011));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.pool.status().available_gpus, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generator_panic_ends_with_worker_failed_and_1011_and_frees_the_worker() {
    let (t, server) = failing_session(Fault::Panics).await;
    let err = first(&t, "error");
    assert_eq!(err["code"], "worker_failed");
    assert_eq!(err["retryable"], true);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("tensor shape mismatch (simulated)"),
        "{err}"
    );
    assert_eq!(t.close, Some(1011));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.pool.status().available_gpus, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_error_ends_with_internal_error_and_1011_and_frees_the_worker() {
    let (t, server) = failing_session(Fault::WrongFrameSize).await;
    let err = first(&t, "error");
    assert_eq!(err["code"], "internal_error");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("frame has 10 bytes"),
        "{err}"
    );
    assert_eq!(t.close, Some(1011));
    server
        .wait_for_free_worker(
            Duration::from_secs(2),
            "worker not freed after a media error",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_session_init_is_closed_after_the_init_timeout() {
    let mut config = test_config();
    config.streaming.init_timeout_seconds = 1;
    let server = start(config).await;
    let mut client = connect(&server).await;
    let t = read_until_close(&mut client, Duration::from_secs(5)).await;
    assert_eq!(first(&t, "error")["reason"], "init_timeout");
    assert_eq!(t.close, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_prompts_updated_changes_what_loop_generation_cycles() {
    let mut config = test_config();
    config.streaming.generation_segment_cap = 3;
    config.generator.mock_latency_ms = 150;
    let server = start(config).await;
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2", "curated_prompts": ["old"], "loop_generation_enabled": true})).await;
    send(
        &mut client,
        json!({"type": "seed_prompts_updated", "seed_prompts": ["new a", "new b"]}),
    )
    .await;
    let t = read_until_close(&mut client, Duration::from_secs(20)).await;
    let prompts: Vec<&str> = all(&t, "ltx2_segment_start")
        .map(|m| m["prompt"].as_str().unwrap())
        .collect();
    // The first segment may already have started with the old list.
    assert_eq!(prompts.len(), 3, "{prompts:?}");
    assert_eq!(&prompts[1..], ["new b", "new a"], "{prompts:?}");
}

/// A blob store for generators under test (the mock keeps nothing there).
fn test_blobs() -> std::sync::Arc<dyn framecast_replica::store::BlobStore> {
    std::sync::Arc::new(framecast_replica::store::memory::MemoryBlobStore::new(
        64 << 20,
        std::time::Duration::from_secs(600),
    ))
}
