//! With no routable replica, a WebSocket client still gets a readable refusal: the router
//! completes the handshake, sends `error {code: gpu_unavailable, retryable: true}` and
//! closes with 1013.

mod support;

use std::time::{Duration, Instant};

use framecast_e2e::free_port;
use framecast_router::config::ReplicaEndpoint;
use futures_util::StreamExt;
use support::{TestRouter, config};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_replica_means_error_frame_and_close_1013() {
    // Nothing listens there: the replica never becomes healthy.
    let gone = ReplicaEndpoint {
        url: format!("http://127.0.0.1:{}", free_port()),
        name: Some("gone".into()),
        primary: true,
        weight: 1,
    };
    let router = TestRouter::start(&config(vec![gone], 0.1));

    let url = format!("ws://127.0.0.1:{}/v1/stream", router.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ws = loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, response)) => {
                assert_eq!(response.status(), 101);
                break ws;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("router never answered the upgrade: {e}"),
        }
    };
    let first = ws.next().await.unwrap().unwrap();
    let error: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "gpu_unavailable");
    assert_eq!(error["retryable"], true);
    match ws.next().await.unwrap().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1013),
        other => panic!("expected a close frame, got {other:?}"),
    }
    let row = router.replica_status("gone").await;
    assert_ne!(row["status"], "healthy", "{row}");
}
