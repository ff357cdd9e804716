//! A short k6 load run (scripts/load/sessions.js) through the real router against two mock
//! replicas: 50 virtual users open 4 sessions each, one after another (200 sessions, session
//! churn), each waiting for two media segments before it closes. Every session must succeed:
//! k6 exits 0 (its thresholds: no error frame, no unexpected close, no failed check) and its
//! `--summary-export` counts 200 good sessions. The longer runs and the soak are
//! scripts/load-test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use framecast_e2e::{ChildGuard, get_json, start_mock_replica, start_router};
use serde_json::Value;

const VUS: usize = 50;
const ITERATIONS: usize = 4;
const REPLICAS: usize = 2;
/// Per replica: 4 in-process mock workers, room for every VU's session at once (the rest of
/// a replica's sessions wait for a worker, well within the acquire timeout).
const WORKERS: usize = 4;
const MAX_SESSIONS: usize = 64;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// A counter of the k6 summary (absent when nothing was ever added to it).
fn count(summary: &Value, metric: &str) -> u64 {
    summary["metrics"][metric]["count"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_through_the_router_all_succeed() {
    let k6 = workspace().join(".venv/bin/k6");
    assert!(
        k6.exists(),
        "{} is missing: run scripts/setup",
        k6.display()
    );
    let script = workspace().join("scripts/load/sessions.js");
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("sessions");
    let logs = logs.to_str().unwrap();

    let mut replicas: Vec<(ChildGuard, String)> = Vec::new();
    let (workers, max_sessions) = (WORKERS.to_string(), MAX_SESSIONS.to_string());
    for _ in 0..REPLICAS {
        replicas.push(
            start_mock_replica(&[
                ("FRAMECAST_REPLICA__POOL__NUM_WORKERS", &workers),
                ("FRAMECAST_REPLICA__STREAMING__MAX_SESSIONS", &max_sessions),
                ("FRAMECAST_REPLICA__POOL__ACQUIRE_TIMEOUT_SECONDS", "60"),
                ("FRAMECAST_REPLICA__STREAMING__SESSION_LOG_DIR", logs),
            ])
            .await,
        );
    }
    let urls: Vec<String> = replicas.iter().map(|(_, url)| url.clone()).collect();
    let mut router = start_router(&urls, &[]).await;
    // Both replicas take sessions before the load starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = get_json(&format!("{}/status", router.admin)).await;
        let healthy = status["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "healthy")
            .count();
        if healthy == REPLICAS {
            break;
        }
        assert!(Instant::now() < deadline, "replicas not healthy: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let summary_path = dir.path().join("k6-summary.json");
    let started = Instant::now();
    let run = tokio::process::Command::new(&k6)
        .args(["run", "--no-usage-report", "--summary-export"])
        .arg(&summary_path)
        .arg(&script)
        .env("ROUTER_URL", &router.base)
        .env("VUS", VUS.to_string())
        .env("ITERATIONS", ITERATIONS.to_string())
        .env("SEGMENTS", "2")
        .env("SESSION_TIMEOUT_S", "60")
        .env("K6_NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("k6 finished within 150 s")
        .expect("k6 runs");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let failures: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| l.contains("failed:") || l.contains("level=error"))
        .take(10)
        .collect();

    let text = std::fs::read_to_string(&summary_path)
        .unwrap_or_else(|e| panic!("no k6 summary ({e}):\n{stdout}\n{stderr}"));
    let summary: Value = serde_json::from_str(&text).unwrap();
    let ok = count(&summary, "framecast_sessions_ok");
    let checks = &summary["metrics"]["checks"];
    let media = count(&summary, "framecast_media_frames");
    eprintln!(
        "k6: {ok} sessions ok, {} failed, {} error frames, {} unexpected closes, {} checks passed \
         and {} failed, {media} media frames, in {:.1} s",
        count(&summary, "framecast_sessions_failed"),
        count(&summary, "framecast_error_frames"),
        count(&summary, "framecast_unexpected_closes"),
        checks["passes"],
        checks["fails"],
        took.as_secs_f64()
    );
    assert!(
        output.status.success(),
        "k6 exited with {} (a threshold failed); first failures:\n{}",
        output.status,
        failures.join("\n")
    );
    assert_eq!(ok, (VUS * ITERATIONS) as u64, "{failures:?}");
    for metric in [
        "framecast_sessions_failed",
        "framecast_error_frames",
        "framecast_unexpected_closes",
        "framecast_socket_errors",
        "framecast_session_timeouts",
    ] {
        assert_eq!(count(&summary, metric), 0, "{metric}");
    }
    assert_eq!(checks["fails"], 0, "{checks}");
    assert!(
        media >= 2 * ok,
        "two media frames or more per session: {media}"
    );

    // Nothing crashed, and every session is over on both replicas.
    assert!(router.process.try_wait().is_none(), "the router died");
    for (replica, url) in &mut replicas {
        assert!(replica.try_wait().is_none(), "replica {url} died");
        let deadline = Instant::now() + Duration::from_secs(10);
        while get_json(&format!("{url}/health")).await["sessions"] != 0 {
            assert!(Instant::now() < deadline, "{url} still has sessions");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
