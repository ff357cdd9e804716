//! The real replica binary against clients that ask for too much: every client number is
//! bounded (the session goes on), sessions end by their own clock, and every error frame
//! the replica sends is counted in `framecast_errors_total{code}`.

use std::time::{Duration, Instant};

use framecast_e2e::{
    ClientWs as Ws, get_json, get_text, open_stream as open, start_mock_replica as start_replica,
    until_close,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

fn of_type<'a>(messages: &'a [Value], kind: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m["type"] == kind).collect()
}

/// `framecast_errors_total{code="<code>"}` as `/metrics` shows it.
async fn errors_counted(base: &str, code: &str) -> f64 {
    let text = get_text(&format!("{}/metrics", framecast_e2e::admin_base(base))).await;
    let series = format!("framecast_errors_total{{code=\"{code}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_numbers_are_refused_by_field_and_the_worker_stays_free() {
    let (_replica, base) = start_replica(&[
        ("FRAMECAST_REPLICA__STREAMING__GENERATION_SEGMENT_CAP", "2"),
        (
            "FRAMECAST_REPLICA__STREAMING__LIMITS__MAX_PROMPT_CHARS",
            "50",
        ),
    ])
    .await;
    let mut ws = open(&base, json!({"type": "session_init_v2"})).await;
    let hostile = [
        (
            json!({"prompt": "x", "num_inference_steps": 4_294_967_295u64}),
            "field:num_inference_steps",
        ),
        (
            json!({"prompt": "x", "guidance_scale": 1e9}),
            "field:guidance_scale",
        ),
        (
            json!({"prompt": "x", "guidance_scale": -3}),
            "field:guidance_scale",
        ),
        (json!({"prompt": "x", "seed": 1u64 << 60}), "field:seed"),
        (json!({"prompt": "y".repeat(51)}), "field:prompt"),
    ];
    for (fields, _) in &hostile {
        let mut message = fields.clone();
        message["type"] = json!("segment_prompt_source");
        send(&mut ws, message).await;
    }
    let many: Vec<String> = (0..65).map(|i| format!("p{i}")).collect();
    send(
        &mut ws,
        json!({"type": "seed_prompts_updated", "seed_prompts": many}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "segment_prompt_source", "prompt": "a calm sea"}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "segment_prompt_source", "prompt": "a calm sea at dusk"}),
    )
    .await;

    let (messages, close) = until_close(&mut ws, Duration::from_secs(30)).await;
    let errors = of_type(&messages, "error");
    let reasons: Vec<&str> = errors
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = hostile.iter().map(|(_, r)| *r).collect();
    expected.push("field:seed_prompts");
    assert_eq!(reasons, expected, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e["code"] == "invalid_message" && e["retryable"] == true)
    );
    assert!(
        errors[0]["message"].as_str().unwrap().contains("(1..=100)"),
        "the range is named: {}",
        errors[0]
    );
    // The session went on: the two good prompts made the two segments of its cap.
    let prompts: Vec<&str> = of_type(&messages, "ltx2_segment_start")
        .iter()
        .map(|m| m["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, ["a calm sea", "a calm sea at dusk"]);
    assert_eq!(close, Some(1000));
    // And nothing was left running on the worker.
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_json(&format!("{}/status", framecast_e2e::admin_base(&base))).await["available_gpus"]
        != 1
    {
        assert!(Instant::now() < deadline, "the worker never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_prompts_are_bounded_per_session() {
    let (_replica, base) = start_replica(&[
        (
            "FRAMECAST_REPLICA__STREAMING__LIMITS__MAX_QUEUED_PROMPTS",
            "2",
        ),
        ("FRAMECAST_REPLICA__STREAMING__GENERATION_SEGMENT_CAP", "3"),
    ])
    .await;
    let mut ws = open(&base, json!({"type": "session_init_v2"})).await;
    // Paused: nothing leaves the queue, so the third prompt finds it full.
    send(
        &mut ws,
        json!({"type": "generation_paused_updated", "paused": true}),
    )
    .await;
    for prompt in ["one", "two", "three"] {
        send(
            &mut ws,
            json!({"type": "segment_prompt_source", "prompt": prompt}),
        )
        .await;
    }
    send(
        &mut ws,
        json!({"type": "generation_paused_updated", "paused": false}),
    )
    .await;
    // Both queued prompts are generated; the refused one can be sent again once room is made.
    send(
        &mut ws,
        json!({"type": "segment_prompt_source", "prompt": "three again"}),
    )
    .await;
    let (messages, close) = until_close(&mut ws, Duration::from_secs(30)).await;
    let errors = of_type(&messages, "error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["reason"], "prompt_queue_full");
    let prompts: Vec<&str> = of_type(&messages, "ltx2_segment_start")
        .iter()
        .map(|m| m["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, ["one", "two", "three again"]);
    assert_eq!(close, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_session_is_never_idle_but_every_session_has_a_lifetime() {
    // Segments take 0.4 s each: five of them stream for about 2 s, twice the idle timeout.
    let (_replica, base) = start_replica(&[
        ("FRAMECAST_REPLICA__STREAMING__SESSION_TIMEOUT_SECONDS", "1"),
        ("FRAMECAST_REPLICA__STREAMING__MAX_SESSION_SECONDS", "5"),
        ("FRAMECAST_REPLICA__STREAMING__GENERATION_SEGMENT_CAP", "5"),
        ("FRAMECAST_REPLICA__GENERATOR__MOCK_LATENCY_MS", "400"),
    ])
    .await;
    let mut streaming = open(
        &base,
        json!({"type": "session_init_v2", "curated_prompts": ["waves"], "auto_extension_enabled": true}),
    )
    .await;
    let started = Instant::now();
    let (messages, close) = until_close(&mut streaming, Duration::from_secs(20)).await;
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "too short to prove anything"
    );
    assert!(
        of_type(&messages, "session_timeout").is_empty(),
        "{messages:?}"
    );
    assert_eq!(
        of_type(&messages, "ltx2_stream_complete")[0]["reason"],
        "segment_cap"
    );
    assert_eq!(close, Some(1000));

    // A paused session that keeps pinging is not idle either, but its lifetime ends it.
    let mut paused = open(&base, json!({"type": "session_init_v2"})).await;
    send(
        &mut paused,
        json!({"type": "generation_paused_updated", "paused": true}),
    )
    .await;
    let started = Instant::now();
    let pinger = async {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if paused
                .send(Message::text(json!({"type": "ping"}).to_string()))
                .await
                .is_err()
            {
                break;
            }
            // Read whatever came, so the close frame is seen.
            if let Ok(Some(Ok(Message::Text(t)))) =
                tokio::time::timeout(Duration::from_millis(10), paused.next()).await
            {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "ltx2_stream_complete" {
                    return v;
                }
            }
        }
        Value::Null
    };
    let complete = tokio::time::timeout(Duration::from_secs(10), pinger)
        .await
        .expect("the session ended within its lifetime");
    assert_eq!(complete["reason"], "max_duration", "{complete}");
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_millis(4500) && lived < Duration::from_secs(7),
        "lived {lived:?} with max_session_seconds 5"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_frame_is_counted_by_its_code() {
    let (_replica, base) = start_replica(&[
        ("FRAMECAST_REPLICA__POOL__ACQUIRE_TIMEOUT_SECONDS", "1"),
        ("FRAMECAST_REPLICA__STREAMING__MAX_SESSIONS", "2"),
    ])
    .await;
    for code in ["invalid_message", "session_rejected", "gpu_unavailable"] {
        assert_eq!(
            errors_counted(&base, code).await,
            0.0,
            "{code} starts at zero"
        );
    }

    // session_rejected: a bad first frame.
    let mut bad = open(&base, json!({"type": "ping"})).await;
    let (messages, close) = until_close(&mut bad, Duration::from_secs(5)).await;
    assert_eq!(of_type(&messages, "error")[0]["code"], "session_rejected");
    assert_eq!(close, Some(1003));

    // invalid_message, twice, from a session that holds the only worker (paused).
    let mut holder = open(&base, json!({"type": "session_init_v2"})).await;
    // It holds the worker before the next session asks for one.
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), holder.next())
            .await
            .expect("gpu_assigned within 10 s")
            .expect("session open")
            .expect("a frame");
        if message.to_text().is_ok_and(|t| t.contains("gpu_assigned")) {
            break;
        }
    }
    send(
        &mut holder,
        json!({"type": "generation_paused_updated", "paused": true}),
    )
    .await;
    holder.send(Message::text("{not json")).await.unwrap();
    send(&mut holder, json!({"type": "warp_drive"})).await;

    // gpu_unavailable: a second session finds no free worker within the acquire timeout.
    let mut waiting = open(&base, json!({"type": "session_init_v2"})).await;
    let (messages, close) = until_close(&mut waiting, Duration::from_secs(10)).await;
    assert_eq!(of_type(&messages, "error")[0]["code"], "gpu_unavailable");
    assert_eq!(close, Some(1013));

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counted = (
            errors_counted(&base, "session_rejected").await,
            errors_counted(&base, "invalid_message").await,
            errors_counted(&base, "gpu_unavailable").await,
        );
        if counted == (1.0, 2.0, 1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counted {counted:?}, sent (1, 2, 1)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_answers_no_ping_is_dropped_and_its_worker_freed() {
    let (_replica, base) = start_replica(&[
        ("FRAMECAST_REPLICA__STREAMING__PING_INTERVAL_SECONDS", "1"),
        ("FRAMECAST_REPLICA__STREAMING__PONG_TIMEOUT_SECONDS", "2"),
    ])
    .await;
    let available = || async {
        get_json(&format!("{}/status", framecast_e2e::admin_base(&base))).await["available_gpus"]
            .clone()
    };

    // A live client (its WebSocket stack answers pings while it reads) keeps its session.
    let mut live = open(&base, json!({"type": "session_init_v2"})).await;
    send(
        &mut live,
        json!({"type": "generation_paused_updated", "paused": true}),
    )
    .await;
    let (messages, close) = until_close(&mut live, Duration::from_millis(3500)).await;
    assert_eq!(
        close, None,
        "a client that answers pings stays: {messages:?}"
    );
    assert!(of_type(&messages, "error").is_empty(), "{messages:?}");
    drop(live);
    let deadline = Instant::now() + Duration::from_secs(5);
    while available().await != 1 {
        assert!(
            Instant::now() < deadline,
            "the live client's worker never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A peer that stops reading (a crashed browser tab behind a proxy that keeps the TCP
    // connection) never answers: the paused session ends long before its idle timeout.
    let mut dead = open(&base, json!({"type": "session_init_v2"})).await;
    send(
        &mut dead,
        json!({"type": "generation_paused_updated", "paused": true}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while available().await != 0 {
        assert!(
            Instant::now() < deadline,
            "the session never got the worker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let freed_after = Instant::now();
    let deadline = freed_after + Duration::from_secs(8);
    while available().await != 1 {
        assert!(
            Instant::now() < deadline,
            "a silent peer still holds the worker after 8 s (idle timeout is 120 s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(dead);
}
