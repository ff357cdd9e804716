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
        admin_url: None,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_counted_in_errors_total() {
    let metrics = framecast_common::metrics::install_recorder("router").unwrap();
    let gone = ReplicaEndpoint {
        url: format!("http://127.0.0.1:{}", free_port()),
        admin_url: None,
        name: Some("gone".into()),
        primary: true,
        weight: 1,
    };
    let router = TestRouter::start_with_metrics(&config(vec![gone], 0.1), Some(metrics));
    let series = "framecast_errors_total{code=\"gpu_unavailable\"}";
    let counted = || async {
        let text = framecast_e2e::get_text(&router.admin_url("/metrics")).await;
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .map(|v| v.trim().parse::<f64>().unwrap())
    };
    framecast_e2e::wait_for_status(&router.admin_url("/metrics"), 200, Duration::from_secs(10))
        .await;
    let url = format!("ws://127.0.0.1:{}/v1/stream", router.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted().await.is_none() {
        assert!(
            Instant::now() < deadline,
            "{series} is not exported from the start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted().await, Some(0.0));
    for _ in 0..3 {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    }
    assert_eq!(counted().await, Some(3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_session_limit_is_refused_with_ip_session_limit_and_1013() {
    let replica = framecast_e2e::MockReplica::start("mock");
    let mut config = config(vec![support::endpoint(&replica, true)], 0.1);
    config.client_limits.max_sessions_per_ip = 2;
    let router = TestRouter::start(&config);
    router
        .wait_for_replica("mock", Duration::from_secs(10), |r| {
            r["status"] == "healthy"
        })
        .await;
    let first = router.connect().await;
    let second = router.connect().await;
    // The third from the same address is refused in the protocol's retryable way.
    let mut third = router.connect().await;
    let message = third.next().await.unwrap().unwrap();
    let error: serde_json::Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(error["code"], "session_rejected", "{error}");
    assert_eq!(error["error_code"], "ip_session_limit");
    assert_eq!(error["retryable"], true);
    match third.next().await.unwrap().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1013),
        other => panic!("expected a close frame, got {other:?}"),
    }
    // A slot frees when a session ends.
    drop(first);
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (answer, _session) = router.session_on().await;
        if answer == "mock" {
            break;
        }
        assert!(Instant::now() < deadline, "slots never came back: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
