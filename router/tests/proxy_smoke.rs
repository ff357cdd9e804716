//! Proves pingora is real: the router, started in-process on 127.0.0.1, proxies an HTTP
//! request to a local server and stops when told to.

mod support;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use framecast_router::config::ReplicaEndpoint;
use support::TestRouter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingora_proxies_one_request_to_a_local_server() {
    // The "replica": a real HTTP server on loopback that says who answered.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/hello",
            get(|headers: http::HeaderMap| async move {
                let via = headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                (
                    [("x-served-by", "backend")],
                    format!("hello from backend (host {via})"),
                )
            }),
        );
    tokio::spawn(async move { axum::serve(backend, app).await.unwrap() });

    let mut config = support::config(
        vec![ReplicaEndpoint {
            url: format!("http://{backend_addr}"),
            admin_url: None,
            name: Some("backend".into()),
            primary: true,
            weight: 1,
        }],
        0.1,
    );
    config.health_check.path = "/health".into();
    config.health_check.capacity_path = None;
    let port = config.port;
    let router = TestRouter::start(&config);

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/hello");
    let deadline = Instant::now() + Duration::from_secs(10);
    // The replica takes sessions once its first health probe passed.
    let ready = router.admin_url("/readyz");
    let response = loop {
        match client.get(&ready).send().await {
            Ok(r) if r.status() == 200 => break client.get(&url).send().await.unwrap(),
            other if Instant::now() < deadline => {
                let _ = other;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("router never became ready: {other:?}"),
        }
    };
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-served-by"], "backend");
    let body = response.text().await.unwrap();
    assert!(body.starts_with("hello from backend"), "{body}");
    assert!(
        body.contains(&format!("127.0.0.1:{port}")),
        "Host header is passed through: {body}"
    );

    tokio::task::spawn_blocking(move || router.shutdown())
        .await
        .unwrap()
        .expect("router thread exits cleanly after shutdown");
    assert!(
        client.get(&url).send().await.is_err(),
        "the listener is closed after shutdown"
    );
}
