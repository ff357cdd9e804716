//! FastVideo's Dreamverse web app, unchanged (its built static export), served by the real
//! replica binary from `server.web_root` and opened through the real router binary in
//! headless chromium, used as a person would (tests/browser/dreamverse.mjs): type a prompt
//! into "Continuation prompt", press "Generate", watch three streamed segments; start a new
//! project from the sidebar with one of the app's preset stories and watch three segments;
//! and a refused session shows the app's notice.
//!
//! Without a prompt pipeline no LLM turns a typed prompt into a story: `/ws` shows the
//! prompt itself for the whole capped rollout. With one (a real local HTTP server imitating
//! an OpenAI-compatible provider), the typed prompt becomes an LLM-written story whose
//! prompts are what the segments generate.
//!
//! The replica runs the mock generator (`generator.kind: mock`), not Wan2.1, so the test is
//! about serving, the protocol and playback, and takes seconds.
//!
//! The app is third-party and not in this repository: it is read from `$DREAMVERSE_WEB_OUT`
//! (default /work/shared/dreamverse-web/out); without it the test says so and passes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use framecast_e2e::{browser_dir, start_router, wait_for_status};
use serde_json::Value;

/// Segments of 48 frames at 24 fps: two seconds each. (The app starts playing once 1 s is
/// buffered, or on later appends; a lone segment of just under 1 s would wait forever.)
const SEGMENT_SECONDS: f64 = 2.0;

fn web_out() -> Option<PathBuf> {
    let dir = std::env::var_os("DREAMVERSE_WEB_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/dreamverse-web/out"));
    if dir.join("index.html").exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: no Dreamverse web app build at {} (set DREAMVERSE_WEB_OUT)",
            dir.display()
        );
        None
    }
}

/// Where screenshots go: the test's own directory under `target/tmp`.
fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("dreamverse_app")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs tests/browser/dreamverse.mjs and returns its report.
async fn drive(
    scenario: &str,
    url: &str,
    out: &Path,
    timeout: Duration,
    env: &[(&str, &str)],
) -> Value {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/setup"
    );
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("dreamverse.mjs"))
        .arg(scenario)
        .arg(url)
        .arg(out)
        .arg(timeout.as_millis().to_string())
        .arg((3.0 * SEGMENT_SECONDS).to_string())
        .envs(env.iter().copied());
    let output = tokio::task::spawn_blocking(move || cmd.output().expect("node runs"))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "dreamverse.mjs failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    eprintln!("dreamverse.mjs {scenario}: {report}");
    for shot in report["screenshots"].as_array().into_iter().flatten() {
        eprintln!("screenshot: {}", shot.as_str().unwrap());
    }
    report
}

/// The mock replica serving the app, capacity one session.
async fn replica(web: &Path) -> (framecast_e2e::ChildGuard, String) {
    replica_with_args(web, &[]).await
}

/// [`replica`] with command-line arguments (`--config <file>` for settings on top).
async fn replica_with_args(web: &Path, args: &[&str]) -> (framecast_e2e::ChildGuard, String) {
    framecast_e2e::start_mock_replica_with_args(
        args,
        &[
            ("FRAMECAST_REPLICA__SERVER__WEB_ROOT", web.to_str().unwrap()),
            ("FRAMECAST_REPLICA__GENERATOR__WIDTH", "320"),
            ("FRAMECAST_REPLICA__GENERATOR__HEIGHT", "192"),
            ("FRAMECAST_REPLICA__GENERATOR__FPS", "24"),
            ("FRAMECAST_REPLICA__GENERATOR__FRAMES_PER_SEGMENT", "48"),
            ("FRAMECAST_REPLICA__GENERATOR__MOCK_LATENCY_MS", "100"),
            ("FRAMECAST_REPLICA__STREAMING__MAX_SESSIONS", "1"),
        ],
    )
    .await
}

fn no_media_errors(report: &Value) {
    for field in [
        "pageErrors",
        "consoleErrors",
        "videoErrors",
        "sourceBufferErrors",
        "appendErrors",
    ] {
        assert_eq!(report[field], serde_json::json!([]), "{field}: {report}");
    }
    for ws in report["ws"].as_array().unwrap() {
        assert_eq!(ws["errors"], serde_json::json!([]), "{report}");
    }
}

#[tokio::test]
async fn the_dreamverse_app_plays_generates_and_starts_a_new_project_through_the_router() {
    let Some(web) = web_out() else { return };
    let started = Instant::now();
    let (_replica, base) = replica(&web).await;
    let router = start_router(std::slice::from_ref(&base), &[]).await;
    let out = out_dir("play");

    let report = drive(
        "play",
        &format!("{}/", router.base),
        &out,
        Duration::from_secs(90),
        &[],
    )
    .await;
    no_media_errors(&report);
    // The typed prompt's stream plays.
    let typed = &report["typedProject"];
    assert_eq!(typed["timedOut"], false, "typed prompt: {report}");
    assert!(
        typed["played"].as_f64().unwrap() >= 3.0 * SEGMENT_SECONDS,
        "{report}"
    );
    assert!(typed["segmentsComplete"].as_u64().unwrap() >= 3, "{report}");
    assert!(
        typed["longestStallMs"].as_u64().unwrap() <= 1000,
        "{report}"
    );
    assert_eq!(report["leaveVisible"], true, "{report}");
    // The new project's rollout plays three segments without a stall.
    let rollout = &report["presetProject"];
    assert_eq!(rollout["timedOut"], false, "new project: {report}");
    assert!(
        rollout["played"].as_f64().unwrap() >= 3.0 * SEGMENT_SECONDS,
        "{report}"
    );
    assert!(
        rollout["segmentsComplete"].as_u64().unwrap() >= 3,
        "{report}"
    );
    assert!(rollout["newMediaInits"].as_u64().unwrap() >= 3, "{report}");
    assert!(
        rollout["longestStallMs"].as_u64().unwrap() <= 1000,
        "a stall over 1 s: {report}"
    );
    // One socket: the app opened the session with session_init_v2 and started the second
    // project on it.
    let ws = &report["ws"][0];
    assert!(ws["url"].as_str().unwrap().ends_with("/ws"), "{report}");
    let sent: Vec<&str> = ws["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(sent.first(), Some(&"session_init_v2"), "{report}");
    assert!(sent.contains(&"end_project_keep_session"), "{report}");
    assert!(sent.contains(&"project_init_v1"), "{report}");
    for shot in report["screenshots"].as_array().unwrap() {
        assert!(Path::new(shot.as_str().unwrap()).exists(), "{shot}");
    }
    eprintln!("both projects played in {:?}", started.elapsed());
}

#[tokio::test]
async fn a_refused_session_shows_the_apps_notice() {
    let Some(web) = web_out() else { return };
    let (mut replica, base) = replica(&web).await;
    let router = start_router(std::slice::from_ref(&base), &[]).await;

    // The replica's one session slot is taken: the app's session is refused.
    let holder = hold_a_session(&router.base).await;
    let out = out_dir("refused-capacity");
    let report = drive(
        "refused",
        &format!("{}/", router.base),
        &out,
        Duration::from_secs(30),
        &[],
    )
    .await;
    let notices = report["notices"].as_array().unwrap();
    assert!(!notices.is_empty(), "no notice shown: {report}");
    assert_eq!(report["played"], 0.0, "{report}");
    holder.abort();

    // The page is open, then the replica goes away: the router has no healthy replica.
    let out = out_dir("refused-no-replica");
    let pause = out.join("go");
    let url = format!("{}/", router.base);
    let pause_env = pause.to_str().unwrap().to_string();
    let driver = tokio::spawn({
        let out = out.clone();
        async move {
            drive(
                "refused",
                &url,
                &out,
                Duration::from_secs(60),
                &[("DREAMVERSE_PAUSE_FILE", &pause_env)],
            )
            .await
        }
    });
    let loaded = pause.with_extension("loaded");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !loaded.exists() {
        assert!(Instant::now() < deadline, "the page did not load");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    replica.kill();
    wait_for_status(
        &format!("{}/readyz", router.admin),
        503,
        Duration::from_secs(30),
    )
    .await;
    std::fs::write(&pause, "").unwrap();
    let report = driver.await.unwrap();
    let notices: Vec<&str> = report["notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notices.iter().any(|n| n.contains("not reachable")),
        "{report}"
    );
    assert!(report["ws"].as_array().unwrap().is_empty(), "{report}");
}

/// Opens a Dreamverse session through the router as the app would; once a worker is
/// assigned, a task keeps reading it (a reader that stops would be disconnected as too
/// slow) until aborted, which closes it.
async fn hold_a_session(base: &str) -> tokio::task::JoinHandle<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("{}/ws", base.replace("http", "ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let init = serde_json::json!({
        "type": "session_init_v2",
        "curated_prompts": ["a quiet harbour at dawn"],
        "initial_image": null,
        "single_clip_mode": false,
        "enhancement_enabled": false,
        "auto_extension_enabled": false,
        "loop_generation_enabled": true,
    });
    ws.send(Message::text(init.to_string())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.contains("\"gpu_assigned\"") => break,
            Ok(Some(Ok(_))) => {}
            other => panic!("no gpu_assigned on {url}: {other:?}"),
        }
    }
    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} })
}

/// A local HTTP server imitating an OpenAI-compatible provider: a rewrite (what the app's
/// typed prompt starts) is answered with a numbered six-scene story about it; every request
/// body is kept.
async fn story_llm() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = requests.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |axum::Json(body): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(body);
                let story: Vec<String> = (1..=6)
                    .map(|i| format!("{i}. Scene {i}: the lighthouse keeper's night, part {i}"))
                    .collect();
                axum::Json(serde_json::json!({
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": story.join("\n")}}]
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), requests)
}

#[tokio::test]
async fn with_a_prompt_pipeline_the_typed_prompt_becomes_an_llm_written_story() {
    let Some(web) = web_out() else { return };
    let (llm, requests) = story_llm().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("replica.yaml");
    std::fs::write(
        &config,
        format!(
            "prompt:\n  enabled: true\n  providers:\n    - {{name: local, base_url: \"{llm}\", model: story-model, allow_no_key: true}}\n"
        ),
    )
    .unwrap();
    let (_replica, base) = replica_with_args(&web, &["--config", config.to_str().unwrap()]).await;
    let router = start_router(std::slice::from_ref(&base), &[]).await;
    let out = out_dir("story");
    let report = drive(
        "play",
        &format!("{}/", router.base),
        &out,
        Duration::from_secs(90),
        &[],
    )
    .await;
    no_media_errors(&report);
    let typed = &report["typedProject"];
    assert_eq!(typed["timedOut"], false, "{report}");
    assert!(typed["segmentsComplete"].as_u64().unwrap() >= 3, "{report}");
    // The LLM was asked to write the rollout from what was typed ...
    let asked = requests.lock().unwrap().clone();
    assert!(
        asked.iter().any(|r| r["messages"][1]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("a lighthouse in a storm")),
        "{asked:?}"
    );
    // ... and its scenes, not the typed prompt, are what the segments generated.
    let ws = &report["ws"][0];
    let rewrite = ws["seedUpdates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["reason"] == "rewrite")
        .unwrap_or_else(|| panic!("no rewrite: {report}"));
    assert_eq!(rewrite["fallbackUsed"], false, "{report}");
    let prompts: Vec<&str> = ws["segmentPrompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        &prompts[..3],
        [
            "Scene 1: the lighthouse keeper's night, part 1",
            "Scene 2: the lighthouse keeper's night, part 2",
            "Scene 3: the lighthouse keeper's night, part 3",
        ],
        "{report}"
    );
}
