//! A broadcast end to end: a session asks for one on the real replica (mock generator, real
//! encoders), is told where the master playlist is, and any HTTP client reads the ladder's
//! playlists and segments through the real router, with the content types and cache headers
//! HLS players and CDNs expect. A replica that does not allow broadcasts says so and streams
//! on.

use std::time::{Duration, Instant};

use framecast_e2e::{ClientWs, start_mock_replica, start_router};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A `/v1/stream` session on `base` that asks for a broadcast and keeps generating.
async fn broadcasting_session(base: &str) -> ClientWs {
    let mut ws = framecast_e2e::open_stream(
        base,
        serde_json::json!({"type": "session_init_v2", "broadcast": true, "auto_extension_enabled": true}),
    )
    .await;
    let prompt = serde_json::json!({"type": "segment_prompt_source", "prompt": "a red circle moving left on a blue background"});
    ws.send(Message::text(prompt.to_string())).await.unwrap();
    ws
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// JSON messages until one of type `kind` (returned), or panics after `limit`.
async fn wait_for(
    ws: &mut framecast_e2e::ClientWs,
    kind: &str,
    limit: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == kind {
                    return v;
                }
                assert_ne!(v["type"], "error", "{v}");
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no {kind} before the stream ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_broadcast_is_served_as_hls_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let (_replica, base) = start_mock_replica(&[
        ("FRAMECAST_REPLICA__BROADCAST__ENABLED", "true"),
        (
            "FRAMECAST_REPLICA__BROADCAST__DIR",
            dir.path().to_str().unwrap(),
        ),
        ("FRAMECAST_REPLICA__GENERATOR__FRAMES_PER_SEGMENT", "12"),
    ])
    .await;
    let router = start_router(std::slice::from_ref(&base), &[]).await;
    let mut ws = broadcasting_session(&router.base).await;
    let started = wait_for(&mut ws, "broadcast_started", Duration::from_secs(60)).await;
    let path = started["master_playlist"].as_str().unwrap().to_string();
    let id = started["stream_id"].as_str().unwrap();
    assert_eq!(path, format!("/v1/broadcast/{id}/master.m3u8"));

    let master = get(&format!("{}{path}", router.base)).await;
    assert_eq!(master.status(), 200);
    assert_eq!(
        header(&master, "content-type"),
        "application/vnd.apple.mpegurl"
    );
    assert!(header(&master, "cache-control").contains("max-age=1"));
    let master = master.text().await.unwrap();
    assert!(master.starts_with("#EXTM3U"), "{master}");
    for rung in ["full", "half", "quarter"] {
        assert!(master.contains(&format!("{rung}/index.m3u8")), "{master}");
    }
    assert!(master.contains("CODECS=\"avc1."), "{master}");

    let rung = format!("{}/v1/broadcast/{id}/half", router.base);
    let playlist = get(&format!("{rung}/index.m3u8")).await;
    assert_eq!(playlist.status(), 200);
    let playlist = playlist.text().await.unwrap();
    let first = playlist
        .lines()
        .find(|l| l.ends_with(".m4s"))
        .unwrap_or_else(|| panic!("a listed segment in {playlist}"));
    for (file, content_type) in [("init.mp4", "video/mp4"), (first, "video/iso.segment")] {
        let r = get(&format!("{rung}/{file}")).await;
        assert_eq!(r.status(), 200, "{file}");
        assert_eq!(header(&r, "content-type"), content_type, "{file}");
        assert!(header(&r, "cache-control").contains("immutable"), "{file}");
        assert!(!r.bytes().await.unwrap().is_empty());
    }
    // Anything else under a broadcast, or an unknown broadcast, is not found.
    for bad in [
        format!("{rung}/../../../etc/passwd"),
        format!("{rung}/seg1.m4s"),
        format!("{}/v1/broadcast/nosuchstream/master.m3u8", router.base),
    ] {
        assert_eq!(get(&bad).await.status(), 404, "{bad}");
    }
}

#[tokio::test]
async fn a_replica_without_broadcasts_refuses_one_and_streams_on() {
    let (_replica, base) = start_mock_replica(&[]).await;
    let mut ws = broadcasting_session(&base).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = false;
    let mut media = false;
    while Instant::now() < deadline && !(refused && media) {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "error" {
                    assert_eq!(v["reason"], "broadcast:disabled", "{v}");
                    refused = true;
                }
            }
            Ok(Some(Ok(Message::Binary(_)))) => media = true,
            other => panic!("stream ended: {other:?}"),
        }
    }
    assert!(refused && media, "refused {refused}, media {media}");
}

#[tokio::test]
async fn hls_js_plays_the_broadcast_in_chromium_on_every_rung() {
    let dir = tempfile::tempdir().unwrap();
    let (_replica, base) = start_mock_replica(&[
        ("FRAMECAST_REPLICA__BROADCAST__ENABLED", "true"),
        (
            "FRAMECAST_REPLICA__BROADCAST__DIR",
            dir.path().to_str().unwrap(),
        ),
        // Paced like a model: one 1 s segment every 250 ms, so the live edge moves.
        ("FRAMECAST_REPLICA__GENERATOR__MOCK_LATENCY_MS", "250"),
        (
            "FRAMECAST_REPLICA__STREAMING__GENERATION_SEGMENT_CAP",
            "200",
        ),
    ])
    .await;
    let router = start_router(std::slice::from_ref(&base), &[]).await;
    let mut ws = broadcasting_session(&router.base).await;
    let started = wait_for(&mut ws, "broadcast_started", Duration::from_secs(60)).await;
    let url = format!(
        "{}{}",
        router.base,
        started["master_playlist"].as_str().unwrap()
    );
    // Keep reading the session, so its media never waits on this client.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    let browser = framecast_e2e::browser_dir();
    let out = tokio::process::Command::new("node")
        .arg(browser.join("hls.mjs"))
        .args([url.as_str(), "6", "30"])
        .output()
        .await
        .expect("node runs hls.mjs");
    reader.abort();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hls.mjs failed: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["fatal"], false, "{r}\n{stderr}");
    let levels = r["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 3, "{r}");
    for (level, (w, h)) in levels.iter().zip([(32, 18), (64, 36), (128, 72)]) {
        assert_eq!(
            (level["width"].as_u64(), level["height"].as_u64()),
            (Some(w), Some(h)),
            "{r}"
        );
        assert!(
            level["codecs"].as_str().unwrap().starts_with("avc1."),
            "{r}"
        );
    }
    let switched: Vec<u64> = r["switches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["level"].as_u64().unwrap())
        .collect();
    // The top rung first, then each rung as it was picked.
    assert_eq!(switched.first(), Some(&2), "{r}");
    for level in 0..3 {
        assert!(switched.contains(&level), "played rung {level}: {r}");
    }
    // Playback went on in every phase: open network, throttled, and on each rung.
    for phase in r["phases"].as_array().unwrap() {
        assert!(phase["played"].as_f64().unwrap() > 1.0, "{phase} in {r}");
    }
}
