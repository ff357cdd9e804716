//! SIGTERM drains the real router binary: `/readyz` turns 503 at once, new WebSocket sessions
//! get the retryable refusal, open tunnels keep working, and the process exits as soon as the
//! last one closes — or when the grace period ends, closing what is left.

use std::time::{Duration, Instant};

use framecast_e2e::{ChildGuard, MockReplica, free_port, get_json, wait_for_status};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn start_router(
    replica: &MockReplica,
    grace_seconds: u64,
) -> (ChildGuard, u16, u16, tempfile::NamedTempFile) {
    let port = free_port();
    let admin = free_port();
    let config = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "router:\n  host: 127.0.0.1\n  port: {port}\n  admin_port: {admin}\n  threads: 1\n  shutdown_grace_seconds: {grace_seconds}\n  health_check:\n    interval_seconds: 0.1\n  replicas:\n    - url: {}\n      name: mock\n",
            replica.url()
        ),
    )
    .unwrap();
    let router = ChildGuard::spawn(
        "framecast-router",
        &["--config", config.path().to_str().unwrap()],
        &[],
    );
    (router, port, admin, config)
}

async fn echo(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an echo within 5 s")
        .expect("session open")
        .expect("valid frame");
    reply.into_text().unwrap().to_string()
}

async fn ready_router(port: u16, admin: u16) -> Ws {
    wait_for_status(
        &format!("http://127.0.0.1:{admin}/readyz"),
        200,
        Duration::from_secs(20),
    )
    .await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/v1/stream"))
        .await
        .unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_sessions_and_exits_when_the_last_closes() {
    let replica = MockReplica::start("mock");
    let (mut router, port, admin, _config) = start_router(&replica, 30);
    let mut session = ready_router(port, admin).await;
    assert_eq!(echo(&mut session, "before").await, "before");

    router.signal_term();
    // Not ready at once, though still answering.
    wait_for_status(
        &format!("http://127.0.0.1:{admin}/readyz"),
        503,
        Duration::from_secs(2),
    )
    .await;
    let status = get_json(&format!("http://127.0.0.1:{admin}/status")).await;
    assert_eq!(status["draining"], true);
    assert_eq!(status["active_sessions"], 1);

    // A new session is refused in the protocol's retryable way.
    let (mut refused, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/v1/stream"))
            .await
            .unwrap();
    let error: serde_json::Value =
        serde_json::from_str(refused.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(error["code"], "gpu_unavailable");
    assert_eq!(error["retryable"], true);
    assert!(error["message"].as_str().unwrap().contains("shutting down"));

    // The open session keeps flowing during the drain.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(echo(&mut session, "during").await, "during");
    assert!(
        router.try_wait().is_none(),
        "still running while a session is open"
    );

    session.close(None).await.unwrap();
    let closed_at = Instant::now();
    let status = router
        .wait_exit(Duration::from_secs(10))
        .expect("the router exits once drained");
    assert!(status.success(), "exit status {status}");
    assert!(
        closed_at.elapsed() < Duration::from_secs(5),
        "exited {:?} after the last session closed, long before the 30 s grace",
        closed_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_bounds_the_drain() {
    let replica = MockReplica::start("mock");
    let (mut router, port, admin, _config) = start_router(&replica, 1);
    let mut session = ready_router(port, admin).await;
    assert_eq!(echo(&mut session, "hi").await, "hi");

    let started = Instant::now();
    router.signal_term();
    let status = router
        .wait_exit(Duration::from_secs(10))
        .expect("the router exits after the grace period");
    assert!(status.success(), "exit status {status}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "exit after {took:?} with a 1 s grace"
    );
    let end = framecast_e2e::closes_within(&mut session, Duration::from_secs(5)).await;
    assert!(end, "the leftover session was closed");
}
