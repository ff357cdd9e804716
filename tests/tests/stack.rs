//! The real router in front of the real replica: requests reach the replica through pingora,
//! and both stop cleanly on SIGTERM.

use std::time::Duration;

use framecast_e2e::{ChildGuard, free_port, get_json, get_text, wait_for_status};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// The replica and the router in front of it, with the base URL of each listener.
struct Stack {
    replica: ChildGuard,
    router: ChildGuard,
    replica_url: String,
    replica_admin: String,
    through_router: String,
    router_admin: String,
    _config: tempfile::NamedTempFile,
}

/// Starts the replica (mock generator, CPU) and a router in front of it with 0.2 s probes.
fn start_stack() -> Stack {
    let replica_port = free_port().to_string();
    let replica_admin_port = free_port().to_string();
    let router_port = free_port().to_string();
    let router_admin_port = free_port().to_string();
    let replica_url = format!("http://127.0.0.1:{replica_port}");
    let replica = ChildGuard::spawn(
        "framecast-replica",
        &[],
        &[
            ("FRAMECAST_REPLICA__SERVER__HOST", "127.0.0.1"),
            ("FRAMECAST_REPLICA__SERVER__PORT", &replica_port),
            ("FRAMECAST_REPLICA__SERVER__ADMIN_PORT", &replica_admin_port),
            ("FRAMECAST_REPLICA__GENERATOR__DEVICE", "cpu"),
        ],
    );
    let config = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "router:\n  host: 127.0.0.1\n  port: {router_port}\n  admin_port: {router_admin_port}\n  threads: 1\n  shutdown_grace_seconds: 1\n  health_check:\n    path: /readyz\n    interval_seconds: 0.2\n  replicas:\n    - url: {replica_url}\n      admin_url: http://127.0.0.1:{replica_admin_port}\n      name: replica-0\n      primary: true\n"
        ),
    )
    .unwrap();
    let router = ChildGuard::spawn(
        "framecast-router",
        &["--config", config.path().to_str().unwrap()],
        &[],
    );
    Stack {
        replica,
        router,
        replica_url,
        replica_admin: format!("http://127.0.0.1:{replica_admin_port}"),
        through_router: format!("http://127.0.0.1:{router_port}"),
        router_admin: format!("http://127.0.0.1:{router_admin_port}"),
        _config: config,
    }
}

#[tokio::test]
async fn router_forwards_to_a_live_replica() {
    let Stack {
        mut replica,
        mut router,
        replica_url,
        replica_admin,
        through_router,
        router_admin,
        _config,
    } = start_stack();

    // The replica turns ready only after its libtorch and GStreamer self-checks, and says
    // which video encoder its sessions use (no GPU here: x264).
    let ready: serde_json::Value = wait_for_status(
        &format!("{replica_url}/readyz"),
        200,
        Duration::from_secs(60),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["video_encoder"], "x264enc");

    let health: serde_json::Value = wait_for_status(
        &format!("{through_router}/health"),
        200,
        Duration::from_secs(30),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["stream_mode"], "av_fmp4");
    assert_eq!(health["device"], "cpu");

    let page = reqwest::get(format!("{through_router}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<title>Framecast</title>")
    );

    // Each binary exports its own metrics.
    for (url, expected) in [
        (
            format!("{replica_admin}/metrics"),
            "framecast_build_info{component=\"replica\"",
        ),
        (
            format!("{router_admin}/metrics"),
            "framecast_build_info{component=\"router\"",
        ),
        (
            format!("{router_admin}/metrics"),
            "framecast_router_replica_up{replica=\"replica-0\"} 1",
        ),
    ] {
        let metrics = get_text(&url).await;
        assert!(
            metrics.contains(expected),
            "{url} lacks {expected}:\n{metrics}"
        );
    }

    // The router's own view: the replica is healthy and primary.
    let status = get_json(&format!("{router_admin}/status")).await;
    let row = &status["replicas"][0];
    assert_eq!(row["name"], "replica-0");
    assert_eq!(row["status"], "healthy", "{status}");
    assert_eq!(row["primary"], true);
    assert!(row["last_latency_ms"].as_f64().is_some(), "{status}");
    // Capacity comes from the replica's own /status: one worker, free.
    assert_eq!(row["capacity"]["total_gpus"], 1, "{status}");
    assert_eq!(row["available_capacity"], 1, "{status}");
    assert_eq!(row["active_sessions"], 0, "{status}");

    let status = replica
        .terminate(Duration::from_secs(10))
        .expect("replica exits on SIGTERM");
    assert!(status.success(), "replica exit status {status}");

    // Three failed probes (0.2 s apart) later the router stops being ready.
    wait_for_status(
        &format!("{router_admin}/readyz"),
        503,
        Duration::from_secs(10),
    )
    .await;
    let status = get_json(&format!("{router_admin}/status")).await;
    assert_eq!(status["replicas"][0]["status"], "unhealthy", "{status}");
    assert!(
        status["replicas"][0]["consecutive_failures"]
            .as_u64()
            .unwrap()
            >= 3
    );
    assert!(
        status["replicas"][0]["last_error"].as_str().is_some(),
        "{status}"
    );
    let status = router
        .terminate(Duration::from_secs(20))
        .expect("router exits on SIGTERM");
    assert!(status.success(), "router exit status {status}");
}

#[tokio::test]
async fn a_replica_killed_mid_session_closes_the_client_socket() {
    // Every field bound: what `..` leaves out is dropped (a router killed) at once.
    let Stack {
        mut replica,
        router: _router,
        replica_url: _,
        replica_admin: _,
        through_router,
        router_admin,
        _config,
    } = start_stack();
    wait_for_status(
        &format!("{router_admin}/readyz"),
        200,
        Duration::from_secs(60),
    )
    .await;
    let ws_url = format!("{}/v1/stream", through_router.replace("http", "ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    ws.send(Message::text(r#"{"type":"session_init_v2"}"#))
        .await
        .unwrap();
    // Wait until the session holds the worker, then kill the replica under it.
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("the session starts")
            .expect("open")
            .expect("valid frame");
        if message.to_text().is_ok_and(|t| t.contains("gpu_assigned")) {
            break;
        }
    }
    let status = get_json(&format!("{router_admin}/status")).await;
    assert_eq!(status["replicas"][0]["active_sessions"], 1, "{status}");
    replica.kill();
    let closed = framecast_e2e::closes_within(&mut ws, Duration::from_secs(5)).await;
    assert!(closed, "the client's socket closed with the replica");
    wait_for_status(
        &format!("{router_admin}/readyz"),
        503,
        Duration::from_secs(10),
    )
    .await;
    let status = get_json(&format!("{router_admin}/status")).await;
    assert_eq!(status["replicas"][0]["active_sessions"], 0, "{status}");
}
