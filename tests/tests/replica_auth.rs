//! The replica binary reachable without the router: with `server.auth` on, an upgrade needs
//! a key (from a mounted key file) or a JWT (secret from the environment); `/metrics` and the
//! full `/status` are served on the admin listener only.

use std::time::Duration;

use framecast_e2e::{admin_base, get_text, start_mock_replica};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KEY: &str = "fc_replica_key_0123456789";

async fn upgrade(url: &str, bearer: Option<&str>) -> Result<framecast_e2e::ClientWs, u16> {
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

#[tokio::test]
async fn replica_auth_checks_keys_and_tokens_and_keeps_internals_on_the_admin_port() {
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keys.path(), format!("# test key\n{KEY}\n")).unwrap();
    let (_replica, base) = start_mock_replica(&[
        ("FRAMECAST_REPLICA__SERVER__AUTH__REQUIRED", "true"),
        (
            "FRAMECAST_REPLICA__SERVER__AUTH__API_KEYS_FILE",
            keys.path().to_str().unwrap(),
        ),
        (
            "FRAMECAST_REPLICA__SERVER__AUTH__JWT__HS256_SECRET",
            "replica-test-secret-of-32-bytes!",
        ),
    ])
    .await;
    let admin = admin_base(&base);
    let url = format!("{}/v1/stream", base.replace("http", "ws"));

    assert_eq!(upgrade(&url, None).await.err(), Some(401));
    // The Dreamverse door is guarded the same way.
    let dreamverse = format!("{}/ws", base.replace("http", "ws"));
    assert_eq!(upgrade(&dreamverse, None).await.err(), Some(401));
    assert!(upgrade(&dreamverse, Some(KEY)).await.is_ok());
    assert_eq!(
        upgrade(&url, Some("not-a-key-at-all")).await.err(),
        Some(401)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "svc", "exp": now + 60}),
        &jsonwebtoken::EncodingKey::from_secret(b"replica-test-secret-of-32-bytes!"),
    )
    .unwrap();
    for credential in [KEY, token.as_str()] {
        let mut ws = upgrade(&url, Some(credential)).await.expect("accepted");
        ws.send(Message::text(
            serde_json::json!({"type": "session_init_v2", "prompt": "a test"}).to_string(),
        ))
        .await
        .unwrap();
        let assigned = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(Ok(message)) = ws.next().await {
                if message.to_text().is_ok_and(|t| t.contains("gpu_assigned")) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(assigned, Ok(true), "the session got a worker");
        ws.close(None).await.unwrap();
    }

    let metrics = get_text(&format!("{admin}/metrics")).await;
    let refused: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("framecast_requests_refused_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 3.0, "{metrics}");
    let client = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(client.status(), 404, "/metrics on the client port");
    let internal = reqwest::get(format!("{admin}/metrics")).await.unwrap();
    assert_eq!(internal.status(), 200, "/metrics on the admin port");
    // The client port's /status is the public view the Dreamverse app reads: three numbers,
    // no worker pids, devices or errors; the whole pool is on the admin port.
    let public: serde_json::Value = reqwest::get(format!("{base}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut fields: Vec<&str> = public
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["available_gpus", "total_gpus", "warmup_failed_gpus"],
        "{public}"
    );
    let internal: serde_json::Value = reqwest::get(format!("{admin}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(internal["gpu_status"].is_object(), "{internal}");
}
