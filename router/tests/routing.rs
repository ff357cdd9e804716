//! The router against mock replicas that are real HTTP + WebSocket servers on loopback:
//! health flips after exactly the configured number of probes, primary preference and
//! fallback, capacity-aware selection, the other selection policies, retry on connect
//! failure and on a handshake dropped unanswered, a replica dying mid-session, and many sessions that send right after the `101`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use framecast_e2e::MockReplica;
use framecast_router::config::{ReplicaEndpoint, SelectionPolicy};
use futures_util::StreamExt;
use support::{TestRouter, config, endpoint, roundtrip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// A primary and a secondary mock, a router probing them every `interval` seconds, and
/// both seen healthy.
async fn primary_and_secondary(interval: f64) -> (MockReplica, MockReplica, TestRouter) {
    let primary = MockReplica::start("primary");
    let secondary = MockReplica::start("secondary");
    let cfg = config(
        vec![endpoint(&primary, true), endpoint(&secondary, false)],
        interval,
    );
    let router = TestRouter::start(&cfg);
    router
        .wait_for_replica("secondary", WAIT, is("healthy"))
        .await;
    router
        .wait_for_replica("primary", WAIT, is("healthy"))
        .await;
    (primary, secondary, router)
}

fn is(status: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |row| row["status"] == status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_flips_after_exactly_the_configured_probe_counts() {
    let replica = MockReplica::start("only");
    let mut cfg = config(vec![endpoint(&replica, true)], 0.5);
    cfg.health_check.failure_threshold = 3;
    cfg.health_check.recovery_threshold = 2;
    let router = TestRouter::start(&cfg);

    // /status is polled every 10 ms against 500 ms probes, so every state is seen.
    let row = router.wait_for_replica("only", WAIT, is("healthy")).await;
    assert_eq!(
        row["consecutive_successes"], 1,
        "one good probe is enough to leave `unknown`"
    );

    replica.set_healthy(false);
    let probes_before = replica.probes();
    // Every row on the way down: healthy with 1 and 2 failures, then unhealthy at exactly 3.
    let mut seen_failures = Vec::new();
    let row = router
        .wait_for_replica("only", WAIT, |row| {
            if row["status"] == "healthy" {
                seen_failures.push(row["consecutive_failures"].as_u64().unwrap());
            }
            row["status"] == "unhealthy"
        })
        .await;
    assert_eq!(row["consecutive_failures"], 3, "{row}");
    assert!(replica.probes() - probes_before >= 3);
    assert!(seen_failures.iter().all(|&f| f < 3), "{seen_failures:?}");
    assert!(
        seen_failures.contains(&2),
        "the 2-failure state was visible: {seen_failures:?}"
    );
    assert_eq!(row["last_error"], "HTTP 503");

    replica.set_healthy(true);
    let mut seen_successes = Vec::new();
    let row = router
        .wait_for_replica("only", WAIT, |row| {
            if row["status"] == "unhealthy" {
                seen_successes.push(row["consecutive_successes"].as_u64().unwrap());
            }
            row["status"] == "healthy"
        })
        .await;
    assert_eq!(row["consecutive_successes"], 2, "{row}");
    assert!(seen_successes.contains(&1), "{seen_successes:?}");
    assert!(row["last_latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(row["last_ok_at"].as_f64().unwrap() > 1.7e9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_prefer_the_primary_and_fall_back_while_it_is_down() {
    let secondary = MockReplica::start("secondary");
    let primary = MockReplica::start("primary");
    // The primary is listed second: preference is by flag, not order.
    let cfg = config(
        vec![endpoint(&secondary, false), endpoint(&primary, true)],
        0.1,
    );
    let router = TestRouter::start(&cfg);
    router
        .wait_for_replica("primary", WAIT, is("healthy"))
        .await;
    router
        .wait_for_replica("secondary", WAIT, is("healthy"))
        .await;

    for _ in 0..3 {
        assert_eq!(router.session_on().await.0, "primary");
    }
    primary.set_healthy(false);
    router
        .wait_for_replica("primary", WAIT, is("unhealthy"))
        .await;
    assert_eq!(router.session_on().await.0, "secondary");

    primary.set_healthy(true);
    router
        .wait_for_replica("primary", WAIT, is("healthy"))
        .await;
    assert_eq!(router.session_on().await.0, "primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_primary_sends_sessions_to_the_replica_with_room() {
    let primary = MockReplica::start("primary");
    let secondary = MockReplica::start("secondary");
    let cfg = config(
        vec![endpoint(&primary, true), endpoint(&secondary, false)],
        0.1,
    );
    let router = TestRouter::start(&cfg);
    router
        .wait_for_replica("secondary", WAIT, is("healthy"))
        .await;

    primary.set_capacity(1, 0, 2);
    secondary.set_capacity(2, 2, 0);
    router
        .wait_for_replica("primary", WAIT, |r| r["available_capacity"] == -2)
        .await;
    router
        .wait_for_replica("secondary", WAIT, |r| r["available_capacity"] == 2)
        .await;
    let (first, _keep) = router.session_on().await;
    assert_eq!(first, "secondary");
    let row = router.replica_status("secondary").await;
    assert_eq!(row["active_sessions"], 1, "{row}");
    assert_eq!(row["capacity"]["queue_size"], 0);

    // Both full: the shorter queue wins.
    secondary.set_capacity(2, 0, 4);
    router
        .wait_for_replica("secondary", WAIT, |r| r["available_capacity"] == -4)
        .await;
    assert_eq!(router.session_on().await.0, "primary");

    // The primary has room again: it is preferred again.
    primary.set_capacity(1, 1, 0);
    secondary.set_capacity(2, 2, 0);
    router
        .wait_for_replica("primary", WAIT, |r| r["available_capacity"] == 1)
        .await;
    assert_eq!(router.session_on().await.0, "primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_and_least_sessions_balances_open_sessions() {
    let a = MockReplica::start("a");
    let b = MockReplica::start("b");
    let mut cfg = config(vec![endpoint(&a, false), endpoint(&b, false)], 0.1);
    cfg.selection = SelectionPolicy::RoundRobin;
    let router = TestRouter::start(&cfg);
    router.wait_for_replica("a", WAIT, is("healthy")).await;
    router.wait_for_replica("b", WAIT, is("healthy")).await;
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(router.session_on().await.0);
    }
    assert_eq!(names, ["a", "b", "a", "b"]);
    drop(router);

    let mut cfg = config(vec![endpoint(&a, false), endpoint(&b, false)], 0.1);
    cfg.selection = SelectionPolicy::LeastSessions;
    let router = TestRouter::start(&cfg);
    router.wait_for_replica("b", WAIT, is("healthy")).await;
    router.wait_for_replica("a", WAIT, is("healthy")).await;
    let (first, held) = router.session_on().await;
    assert_eq!(first, "a");
    // `a` holds a session: the next ones go to `b` until it holds as many.
    let (second, _held_b) = router.session_on().await;
    assert_eq!(second, "b");
    drop(held);
    router
        .wait_for_replica("a", WAIT, |r| r["active_sessions"] == 0)
        .await;
    assert_eq!(router.session_on().await.0, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_refuses_connections_is_skipped_before_the_handshake() {
    // Probes every 60 s: the router still believes the dead primary is healthy.
    let (mut primary, _secondary, router) = primary_and_secondary(60.0).await;
    primary.kill();

    let (name, _ws) = router.session_on().await;
    assert_eq!(
        name, "secondary",
        "the connect failure was retried elsewhere"
    );
    let row = router.replica_status("primary").await;
    assert_eq!(row["status"], "healthy", "no probe ran in between: {row}");
    assert_eq!(
        row["active_sessions"], 0,
        "the failed attempt is not counted"
    );
    assert_eq!(
        router.replica_status("secondary").await["active_sessions"],
        1
    );
}

/// A replica that dies while answering a handshake, on the test's runtime: every probe gets
/// `200 {}`, every `/v1/stream` request is read and its connection closed unanswered.
/// Returns its URL and the number of handshakes it dropped.
async fn handshake_dropper() -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let dropped = Arc::new(AtomicU64::new(0));
    let count = dropped.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"GET /v1/stream") {
                    count.fetch_add(1, Ordering::SeqCst);
                    return; // dropped: closed with no answer
                }
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                              content-length: 2\r\nconnection: close\r\n\r\n{}";
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_drops_the_handshake_is_skipped_before_the_client_sees_it() {
    let (url, dropped) = handshake_dropper().await;
    let secondary = MockReplica::start("secondary");
    let dying = ReplicaEndpoint {
        url,
        admin_url: None,
        name: Some("dying".into()),
        primary: true,
        weight: 1,
    };
    // Probes every 60 s: the dying primary keeps its healthy verdict throughout.
    let router = TestRouter::start(&config(vec![dying, endpoint(&secondary, false)], 60.0));
    router.wait_for_replica("dying", WAIT, is("healthy")).await;
    router
        .wait_for_replica("secondary", WAIT, is("healthy"))
        .await;

    let (name, _ws) = router.session_on().await;
    assert_eq!(
        name, "secondary",
        "the dropped handshake was retried elsewhere"
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the primary was tried first"
    );
    let row = router.replica_status("dying").await;
    assert_eq!(
        row["active_sessions"], 0,
        "the failed attempt is not counted: {row}"
    );
    assert_eq!(
        router.replica_status("secondary").await["active_sessions"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_session_closes_the_client_and_new_sessions_move() {
    let (mut primary, _secondary, router) = primary_and_secondary(0.1).await;

    let (name, mut ws) = router.session_on().await;
    assert_eq!(name, "primary");
    let echoed = roundtrip(&mut ws, Message::binary(vec![7u8; 1000])).await;
    assert_eq!(echoed.into_data().len(), 1000);

    primary.kill();
    let end = framecast_e2e::closes_within(&mut ws, Duration::from_secs(5)).await;
    assert!(end, "the client's socket closed when the replica died");

    router
        .wait_for_replica("primary", WAIT, is("unhealthy"))
        .await;
    router
        .wait_for_replica("primary", WAIT, |r| r["active_sessions"] == 0)
        .await;
    assert_eq!(router.session_on().await.0, "secondary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_that_send_at_once_are_all_echoed() {
    // Regression test for pingora #946: a tunnel torn down right after the 101 loses the
    // client's first frame. Each session sends the moment the handshake completes.
    let replica = MockReplica::start("echo");
    let router = TestRouter::start(&config(vec![endpoint(&replica, true)], 1.0));
    router.wait_for_replica("echo", WAIT, is("healthy")).await;

    let mut failures = Vec::new();
    for i in 0..1000 {
        let mut ws = router.connect().await;
        let text = format!("hello {i}");
        let result = tokio::time::timeout(Duration::from_secs(5), async {
            futures_util::SinkExt::send(&mut ws, Message::text(text.clone())).await?;
            ws.next().await.transpose()
        })
        .await;
        match result {
            Ok(Ok(Some(Message::Text(t)))) if t.as_str() == text => {}
            other => failures.push(format!("session {i}: {other:?}")),
        }
        let _ = ws.close(None).await;
    }
    assert!(
        failures.is_empty(),
        "{} of 1000 sessions lost their first message: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(replica.sessions(), 1000);
}
