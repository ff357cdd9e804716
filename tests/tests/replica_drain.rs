//! SIGTERM drains the real replica binary: `/readyz` turns 503 at once, new sessions are
//! refused retryably with close 1001, a live session finishes the segment under way and
//! ends with `ltx2_stream_complete {reason: draining}` and close 1001, and the process exits.

use std::time::{Duration, Instant};

use framecast_e2e::{
    ClientWs as Ws, open_stream as open, start_mock_replica, until_close, wait_for_status,
};
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn wait_for(ws: &mut Ws, kind: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains(kind) => return,
            Ok(Some(Ok(_))) => {}
            other => panic!("no {kind}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_live_segment_finish_then_ends_sessions_with_draining() {
    let (mut replica, base) = start_mock_replica(&[
        ("FRAMECAST_REPLICA__SERVER__SHUTDOWN_GRACE_SECONDS", "10"),
        ("FRAMECAST_REPLICA__GENERATOR__MOCK_LATENCY_MS", "300"),
        (
            "FRAMECAST_REPLICA__STREAMING__GENERATION_SEGMENT_CAP",
            "100",
        ),
    ])
    .await;

    let mut live = open(
        &base,
        json!({"type": "session_init_v2", "curated_prompts": ["surf"], "auto_extension_enabled": true}),
    )
    .await;
    wait_for(&mut live, "ltx2_segment_complete").await;

    replica.signal_term();
    wait_for_status(&format!("{base}/readyz"), 503, Duration::from_secs(2)).await;

    let mut late = open(&base, json!({"type": "session_init_v2"})).await;
    let (messages, close) = until_close(&mut late, Duration::from_secs(5)).await;
    let error = messages
        .iter()
        .find(|m| m["type"] == "error")
        .expect("a refusal");
    assert_eq!(error["reason"], "draining", "{error}");
    assert_eq!(error["retryable"], true);
    assert_eq!(close, Some(1001));

    let (messages, close) = until_close(&mut live, Duration::from_secs(8)).await;
    let complete = messages
        .iter()
        .find(|m| m["type"] == "ltx2_stream_complete")
        .unwrap_or_else(|| panic!("no ltx2_stream_complete: {messages:?}"));
    assert_eq!(complete["reason"], "draining");
    assert_eq!(close, Some(1001));
    // Every segment that was under way when the drain began was finished and sent.
    let segments = |kind: &str| -> std::collections::BTreeSet<u64> {
        messages
            .iter()
            .filter(|m| m["type"] == kind)
            .map(|m| m["segment_idx"].as_u64().unwrap())
            .collect()
    };
    let completed = segments("ltx2_segment_complete");
    assert!(!completed.is_empty(), "{messages:?}");
    for kind in [
        "ltx2_segment_start",
        "step_complete",
        "media_segment_complete",
    ] {
        assert!(
            segments(kind).is_subset(&completed),
            "a segment was cut off ({kind}): {messages:?}"
        );
    }

    let status = replica
        .wait_exit(Duration::from_secs(10))
        .expect("the replica exits once drained");
    assert!(status.success(), "{status:?}");
}
