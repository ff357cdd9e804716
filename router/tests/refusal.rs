//! With no routable replica, a WebSocket client still gets a readable refusal: the router
//! completes the handshake, sends `error {code: gpu_unavailable, retryable: true}` and
//! closes with 1013.

use std::time::{Duration, Instant};

use framecast_e2e::free_port;
use framecast_router::config::{HealthCheckConfig, ReplicaEndpoint, RouterConfig};
use framecast_router::server::RouterServer;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_replica_means_error_frame_and_close_1013() {
    let port = free_port();
    let config = RouterConfig {
        host: "127.0.0.1".into(),
        port,
        // Nothing listens there: the replica never becomes healthy.
        replicas: vec![ReplicaEndpoint {
            url: format!("http://127.0.0.1:{}", free_port()),
            name: Some("gone".into()),
            primary: true,
            weight: 1,
        }],
        threads: 1,
        health_check: HealthCheckConfig {
            interval_seconds: 0.1,
            timeout_seconds: 0.2,
            ..HealthCheckConfig::default()
        },
        ..RouterConfig::default()
    };
    let server = RouterServer::new(&config, None).unwrap();
    std::thread::spawn(move || server.run());

    let url = format!("ws://127.0.0.1:{port}/v1/stream");
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
}
