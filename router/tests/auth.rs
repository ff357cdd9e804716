//! The router's front door with auth on: upgrades without a valid API key or JWT get 401
//! (a foreign origin 403) before any replica is involved; valid ones are proxied; every
//! refusal is counted; the admin endpoints are on their own listener only.

mod support;

use std::time::Duration;

use framecast_common::auth::{AuthConfig, JwtConfig};
use support::{TestRouter, config, roundtrip};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KEY: &str = "fc_test_key_0123456789abcdef";
const SECRET: &str = "a-test-hs256-secret-of-32-bytes!";

fn jwt(exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "tester", "exp": now + exp_offset}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The status of an upgrade of `url` with `headers`, and the socket when it was accepted.
async fn upgrade(
    url: &str,
    headers: &[(&'static str, String)],
) -> (u16, Option<support::Ws>, String) {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, response)) => (response.status().as_u16(), Some(ws), String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (
                response.status().as_u16(),
                None,
                format!("{challenge} {body}"),
            )
        }
        Err(e) => panic!("upgrade {url}: {e}"),
    }
}

fn refused(metrics: &str, reason: &str) -> f64 {
    let series = format!("framecast_requests_refused_total{{reason=\"{reason}\"}}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("{series} is not exported:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_valid_credentials_and_allowed_origins_reach_a_replica() {
    let metrics = framecast_common::metrics::install_recorder("router").unwrap();
    let replica = framecast_e2e::MockReplica::start("mock");
    let mut config = config(vec![support::endpoint(&replica, true)], 0.1);
    config.auth = AuthConfig {
        required: true,
        api_keys: vec![KEY.into()],
        jwt: JwtConfig {
            hs256_secret: Some(SECRET.into()),
            ..JwtConfig::default()
        },
        allowed_origins: vec!["https://app.example.com".into()],
        ..AuthConfig::default()
    };
    let router = TestRouter::start_with_metrics(&config, Some(metrics));
    router
        .wait_for_replica("mock", Duration::from_secs(10), |r| {
            r["status"] == "healthy"
        })
        .await;
    let url = format!("ws://127.0.0.1:{}/v1/stream", router.port);
    let metrics_url = router.admin_url("/metrics");
    let metrics = || framecast_e2e::get_text(&metrics_url);
    assert_eq!(refused(&metrics().await, "missing_credentials"), 0.0);

    // No credential, a wrong key, an expired token, a foreign page: refused before a replica.
    let (status, ws, why) = upgrade(&url, &[]).await;
    assert_eq!((status, ws.is_none()), (401, true));
    assert!(
        why.contains("Bearer") && why.contains("missing_credentials"),
        "{why}"
    );
    let (status, _, why) = upgrade(
        &url,
        &[(
            "authorization",
            "Bearer fc_test_key_0123456789abcdeX".into(),
        )],
    )
    .await;
    assert_eq!(status, 401, "{why}");
    let (status, _, why) =
        upgrade(&url, &[("authorization", format!("Bearer {}", jwt(-3600)))]).await;
    assert_eq!(status, 401);
    assert!(why.contains("expired_token"), "{why}");
    let (status, _, _) = upgrade(
        &url,
        &[
            ("authorization", format!("Bearer {KEY}")),
            ("origin", "https://evil.example".into()),
        ],
    )
    .await;
    assert_eq!(status, 403);
    let text = metrics().await;
    assert_eq!(refused(&text, "missing_credentials"), 1.0);
    assert_eq!(refused(&text, "invalid_credentials"), 1.0);
    assert_eq!(refused(&text, "expired_token"), 1.0);
    assert_eq!(refused(&text, "origin"), 1.0);
    assert_eq!(router.replica_status("mock").await["active_sessions"], 0);

    // An API key in the header, a key in the query (browsers), a live JWT from an allowed
    // page: each reaches the replica.
    for (query, headers) in [
        ("", vec![("authorization", format!("Bearer {KEY}"))]),
        (&*format!("?access_token={KEY}"), vec![]),
        (
            "",
            vec![
                ("authorization", format!("Bearer {}", jwt(60))),
                ("origin", "https://app.example.com".into()),
            ],
        ),
    ] {
        let (status, ws, why) = upgrade(&format!("{url}{query}"), &headers).await;
        assert_eq!(status, 101, "{query} {headers:?}: {why}");
        let mut ws = ws.unwrap();
        let reply = roundtrip(&mut ws, Message::text("whoami")).await;
        assert_eq!(reply.into_text().unwrap(), "mock");
        drop(ws);
    }
    // The Dreamverse app's door is routed (and guarded) the same way, and counted apart.
    let dreamverse = format!("ws://127.0.0.1:{}/ws", router.port);
    assert_eq!(upgrade(&dreamverse, &[]).await.0, 401);
    let (status, ws, _) = upgrade(&dreamverse, &[("authorization", format!("Bearer {KEY}"))]).await;
    assert_eq!(status, 101);
    let reply = roundtrip(&mut ws.unwrap(), Message::text("whoami")).await;
    assert_eq!(reply.into_text().unwrap(), "mock");
    let text = metrics().await;
    let routed = |protocol: &str| {
        let series =
            format!("framecast_router_sessions_by_protocol_total{{protocol=\"{protocol}\"}}");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map(|v| v.trim().parse::<f64>().unwrap())
            .unwrap_or_else(|| panic!("{series} is not exported:\n{text}"))
    };
    assert_eq!(routed("v1_stream"), 3.0);
    assert_eq!(routed("dreamverse"), 1.0);
    assert_eq!(routed("other"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internals_are_on_the_admin_listener_only() {
    let replica = framecast_e2e::MockReplica::start("mock");
    let router = TestRouter::start(&config(vec![support::endpoint(&replica, true)], 0.1));
    router
        .wait_for_replica("mock", Duration::from_secs(10), |r| {
            r["status"] == "healthy"
        })
        .await;
    // The client port proxies everything to the replica: the router's /status (replica URLs,
    // probe errors) is not there; what answers is the replica's own client listener.
    let client_status = reqwest::get(router.url("/status")).await.unwrap();
    let body = client_status.text().await.unwrap();
    assert!(
        !body.contains("\"replicas\""),
        "router internals on the client port: {body}"
    );
    let admin = router.status().await;
    assert_eq!(admin["replicas"][0]["name"], "mock");
    let readyz = reqwest::get(router.admin_url("/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 200);
    let nothing = reqwest::get(router.admin_url("/v1/stream")).await.unwrap();
    assert_eq!(nothing.status(), 404);
    let post = reqwest::Client::new()
        .post(router.admin_url("/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
}
