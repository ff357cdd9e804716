//! The replica with `pool.mode: subprocess`: generation and encoding run in worker processes
//! (`framecast-replica worker`); killing one mid-segment fails only its session, retryably,
//! and the replica restarts it. A worker whose replica dies exits at once, even mid-step.

use std::time::{Duration, Instant};

use framecast_e2e::{ChildGuard, free_port, get_json, get_text, run_to_end, wait_for_status};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn tiny_model() -> String {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/wan-tiny");
    model.to_str().unwrap().to_string()
}

/// A replica with one worker process per entry of `extra` settings on top of these.
fn start_replica(extra: &[(&str, &str)]) -> (ChildGuard, String) {
    let mut env = vec![
        ("FRAMECAST_REPLICA__POOL__MODE", "subprocess"),
        ("FRAMECAST_REPLICA__GENERATOR__DEVICE", "cpu"),
    ];
    env.extend_from_slice(extra);
    framecast_e2e::spawn_replica(&env)
}

async fn open_session(base: &str, prompt: &str, state: Option<&Value>) -> Ws {
    let url = format!("{}/v1/stream", base.replace("http", "ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let mut init = json!({"type": "session_init_v2"});
    if let Some(state) = state {
        init["continuation_state"] = state.clone();
    }
    ws.send(Message::text(init.to_string())).await.unwrap();
    ws.send(Message::text(
        json!({"type": "segment_prompt_source", "prompt": prompt}).to_string(),
    ))
    .await
    .unwrap();
    ws
}

/// Reads until a JSON message of `kind` arrives; panics with everything seen otherwise.
/// Returns it and whether binary media came before it.
async fn wait_for(ws: &mut Ws, kind: &str, limit: Duration) -> (Value, usize) {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut media_bytes = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            other => panic!("no `{kind}` within {limit:?} ({other:?}); saw {seen:?}"),
        };
        match message {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == kind {
                    return (v, media_bytes);
                }
                seen.push(v["type"].as_str().unwrap_or("?").to_string());
            }
            Message::Binary(b) => media_bytes += b.len(),
            Message::Close(c) => panic!("closed ({c:?}) before `{kind}`; saw {seen:?}"),
            _ => {}
        }
    }
}

async fn worker(base: &str, index: usize) -> Value {
    get_json(&format!("{}/status", framecast_e2e::admin_base(base))).await["gpu_status"]
        [index.to_string()]
    .clone()
}

/// Polls `/status` until worker `index` is ready and alive with `restarts` restarts.
async fn wait_for_worker(base: &str, index: usize, restarts: u64, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let w = worker(base, index).await;
        if w["ready"] == true && w["process_alive"] == true && w["restarts"] == restarts {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "worker {index} not ready after {restarts} restarts: {w}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kill(pid: &Value) {
    let pid = pid.as_u64().expect("a worker pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_segment_fails_its_session_retryably_and_comes_back() {
    // Segments take 3 s, so the kill lands inside one.
    let (_replica, base) = start_replica(&[
        ("FRAMECAST_REPLICA__GENERATOR__KIND", "mock"),
        ("FRAMECAST_REPLICA__GENERATOR__MOCK_LATENCY_MS", "3000"),
        ("FRAMECAST_REPLICA__POOL__WARMUP", "false"),
    ]);
    wait_for_status(&format!("{base}/readyz"), 200, Duration::from_secs(60)).await;
    let before = wait_for_worker(&base, 0, 0, Duration::from_secs(5)).await;
    assert_ne!(
        before["pid"].as_u64(),
        Some(u64::from(std::process::id())),
        "the worker is its own process"
    );

    let mut ws = open_session(&base, "a lighthouse", None).await;
    wait_for(&mut ws, "ltx2_segment_start", Duration::from_secs(20)).await;
    assert_eq!(worker(&base, 0).await["client_count"], 1);
    kill(&before["pid"]);

    let (error, _) = wait_for(&mut ws, "error", Duration::from_secs(10)).await;
    assert_eq!(error["code"], "worker_failed", "{error}");
    assert_eq!(error["retryable"], true, "{error}");
    assert!(
        framecast_e2e::closes_within(&mut ws, Duration::from_secs(5)).await,
        "the session ends after worker_failed"
    );

    // The slot reports the dead process, then a new one.
    let after = wait_for_worker(&base, 0, 1, Duration::from_secs(30)).await;
    assert_ne!(after["pid"], before["pid"], "a new process: {after}");

    // The replacement serves a whole segment: media, then completion.
    let mut ws = open_session(&base, "a lighthouse", None).await;
    let (complete, media) =
        wait_for(&mut ws, "ltx2_segment_complete", Duration::from_secs(30)).await;
    assert_eq!(complete["segment_idx"], 0);
    assert!(media > 0, "fMP4 bytes arrived before the segment completed");

    // What the worker measured reaches the server's /metrics.
    let metrics = get_text(&format!("{}/metrics", framecast_e2e::admin_base(&base))).await;
    let generated = metrics
        .lines()
        .find(|l| l.starts_with("framecast_segment_generation_seconds_count"))
        .unwrap_or_else(|| panic!("no generation histogram in\n{metrics}"));
    assert!(!generated.ends_with(" 0"), "{generated}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("framecast_media_bytes_total") && !l.ends_with(" 0")),
        "media bytes counted by the worker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_continues_on_a_restarted_worker_from_the_servers_blob_store() {
    let model = tiny_model();
    let (_replica, base) = start_replica(&[
        ("FRAMECAST_REPLICA__GENERATOR__KIND", "wan"),
        ("FRAMECAST_REPLICA__GENERATOR__MODEL_PATH", &model),
        ("FRAMECAST_REPLICA__GENERATOR__WIDTH", "64"),
        ("FRAMECAST_REPLICA__GENERATOR__HEIGHT", "48"),
        ("FRAMECAST_REPLICA__GENERATOR__FRAMES_PER_SEGMENT", "4"),
        ("FRAMECAST_REPLICA__GENERATOR__FPS", "8"),
        ("FRAMECAST_REPLICA__GENERATOR__NUM_INFERENCE_STEPS", "2"),
    ]);
    wait_for_status(&format!("{base}/readyz"), 200, Duration::from_secs(120)).await;
    let first = worker(&base, 0).await;
    assert_eq!(first["warmup_success"], true, "{first}");

    let mut ws = open_session(&base, "waves", None).await;
    wait_for(&mut ws, "ltx2_segment_complete", Duration::from_secs(60)).await;
    ws.send(Message::text(r#"{"type":"snapshot_state"}"#))
        .await
        .unwrap();
    let (snapshot, _) = wait_for(
        &mut ws,
        "continuation_state_snapshot",
        Duration::from_secs(30),
    )
    .await;
    let state = snapshot["state"].clone();
    assert_eq!(state["kind"], "framecast.wan.v1", "{state}");

    // The stream's tensors live in the server, so the process that made them may die.
    kill(&first["pid"]);
    assert!(framecast_e2e::closes_within(&mut ws, Duration::from_secs(10)).await);
    wait_for_worker(&base, 0, 1, Duration::from_secs(120)).await;

    let mut ws = open_session(&base, "waves", Some(&state)).await;
    let (complete, media) =
        wait_for(&mut ws, "ltx2_segment_complete", Duration::from_secs(60)).await;
    assert!(media > 0);
    assert_eq!(complete["type"], "ltx2_segment_complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_state_resumes_on_a_new_worker_process_and_an_altered_one_is_refused() {
    // The session signs and verifies; worker processes see unsigned states and no key.
    let model = tiny_model();
    let (_replica, base) = start_replica(&[
        ("FRAMECAST_REPLICA__GENERATOR__KIND", "wan"),
        ("FRAMECAST_REPLICA__GENERATOR__MODEL_PATH", &model),
        ("FRAMECAST_REPLICA__GENERATOR__WIDTH", "64"),
        ("FRAMECAST_REPLICA__GENERATOR__HEIGHT", "48"),
        ("FRAMECAST_REPLICA__GENERATOR__FRAMES_PER_SEGMENT", "4"),
        ("FRAMECAST_REPLICA__GENERATOR__FPS", "8"),
        ("FRAMECAST_REPLICA__GENERATOR__NUM_INFERENCE_STEPS", "1"),
    ]);
    wait_for_status(&format!("{base}/readyz"), 200, Duration::from_secs(120)).await;
    let first = worker(&base, 0).await;

    let mut ws = open_session(&base, "waves", None).await;
    wait_for(&mut ws, "ltx2_segment_complete", Duration::from_secs(60)).await;
    ws.send(Message::text(r#"{"type":"snapshot_state"}"#))
        .await
        .unwrap();
    let (snapshot, _) = wait_for(
        &mut ws,
        "continuation_state_snapshot",
        Duration::from_secs(30),
    )
    .await;
    let state = snapshot["state"].clone();
    assert!(state["signature"].is_string(), "{state}");
    kill(&first["pid"]);
    assert!(framecast_e2e::closes_within(&mut ws, Duration::from_secs(10)).await);
    wait_for_worker(&base, 0, 1, Duration::from_secs(120)).await;

    // Pointed at another stream, the signature no longer matches.
    let mut forged = state.clone();
    forged["payload"]["stream"] = json!("0123456789abcdef0123456789abcdef");
    let mut ws = open_session(&base, "waves", Some(&forged)).await;
    let (error, _) = wait_for(&mut ws, "error", Duration::from_secs(30)).await;
    assert_eq!(error["code"], "invalid_message", "{error}");
    assert_eq!(error["reason"], "field:continuation_state", "{error}");
    assert_eq!(error["retryable"], true, "{error}");
    drop(ws);

    // As it was sent, it resumes on the new process from the server's blob store: a snapshot
    // before the first segment is the same state, and the segment is generated from it.
    let url = format!("{}/v1/stream", base.replace("http", "ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    for message in [
        json!({"type": "session_init_v2", "continuation_state": state}),
        json!({"type": "snapshot_state"}),
        json!({"type": "segment_prompt_source", "prompt": "waves"}),
    ] {
        ws.send(Message::text(message.to_string())).await.unwrap();
    }
    let (again, _) = wait_for(
        &mut ws,
        "continuation_state_snapshot",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(again["state"], state);
    let (_, media) = wait_for(&mut ws, "ltx2_segment_complete", Duration::from_secs(60)).await;
    assert!(media > 0);
}

#[test]
fn a_worker_that_cannot_load_stops_the_replica_with_the_reason() {
    let output = run_to_end(
        "framecast-replica",
        &[],
        &[
            ("FRAMECAST_REPLICA__SERVER__PORT", &free_port().to_string()),
            ("FRAMECAST_REPLICA__SERVER__ADMIN_PORT", "0"),
            ("FRAMECAST_REPLICA__POOL__MODE", "subprocess"),
            ("FRAMECAST_REPLICA__GENERATOR__KIND", "wan"),
            ("FRAMECAST_REPLICA__GENERATOR__DEVICE", "cpu"),
            (
                "FRAMECAST_REPLICA__GENERATOR__MODEL_PATH",
                "/nonexistent/wan",
            ),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("worker process 0 failed to load") && stderr.contains("/nonexistent/wan"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_worker_is_killed_after_the_stall_timeout_and_replaced() {
    // One step per 30 s segment: after `ltx2_segment_start` the worker says nothing for 30 s,
    // which is what a stuck CUDA call looks like from outside.
    let (_replica, base) = start_replica(&[
        ("FRAMECAST_REPLICA__GENERATOR__KIND", "mock"),
        ("FRAMECAST_REPLICA__GENERATOR__MOCK_LATENCY_MS", "30000"),
        ("FRAMECAST_REPLICA__GENERATOR__NUM_INFERENCE_STEPS", "1"),
        ("FRAMECAST_REPLICA__POOL__WARMUP", "false"),
        ("FRAMECAST_REPLICA__POOL__STALL_TIMEOUT_SECONDS", "2"),
    ]);
    wait_for_status(&format!("{base}/readyz"), 200, Duration::from_secs(60)).await;
    let before = wait_for_worker(&base, 0, 0, Duration::from_secs(5)).await;
    // An idle worker is not hung, however long it is quiet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(worker(&base, 0).await["restarts"], 0);

    let mut ws = open_session(&base, "a lighthouse", None).await;
    let started = Instant::now();
    let (error, _) = wait_for(&mut ws, "error", Duration::from_secs(15)).await;
    let after = started.elapsed();
    assert_eq!(error["code"], "worker_failed", "{error}");
    assert_eq!(error["retryable"], true, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("stalled"),
        "{error}"
    );
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_secs(10),
        "killed after {after:?}"
    );
    let replaced = wait_for_worker(&base, 0, 1, Duration::from_secs(30)).await;
    assert_ne!(replaced["pid"], before["pid"]);
}

/// Whether process `pid` still runs (a zombie waiting to be reaped does not).
fn running(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_exits_at_once_when_the_replica_is_killed() {
    // One 30 s step: the worker is inside a call that will not return soon, like a CUDA call.
    let (mut replica, base) = start_replica(&[
        ("FRAMECAST_REPLICA__GENERATOR__KIND", "mock"),
        ("FRAMECAST_REPLICA__GENERATOR__MOCK_LATENCY_MS", "30000"),
        ("FRAMECAST_REPLICA__GENERATOR__NUM_INFERENCE_STEPS", "1"),
        ("FRAMECAST_REPLICA__POOL__WARMUP", "false"),
    ]);
    wait_for_status(&format!("{base}/readyz"), 200, Duration::from_secs(60)).await;
    let pid = wait_for_worker(&base, 0, 0, Duration::from_secs(5)).await["pid"]
        .as_u64()
        .expect("a worker pid");
    let mut ws = open_session(&base, "a lighthouse", None).await;
    wait_for(&mut ws, "ltx2_segment_start", Duration::from_secs(20)).await;
    assert!(running(pid), "the worker runs before the kill");

    replica.kill();
    let killed = Instant::now();
    while running(pid) && killed.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone_after = killed.elapsed();
    assert!(
        gone_after < Duration::from_secs(2),
        "the orphaned worker lived {gone_after:?} after its replica (its step lasts 30 s)"
    );
}
