//! Headless chromium plays a 3-segment session from the real replica binary, through the
//! real router binary: the whole product path, MockGenerator (the test double) standing in
//! only for the model.

use std::process::Command;
use std::time::Duration;

use framecast_e2e::{ChildGuard, free_port, get_text, play_in_chromium, wait_for_status};

#[tokio::test]
async fn chromium_plays_a_three_segment_session_through_the_router() {
    let replica_port = free_port().to_string();
    let router_port = free_port().to_string();
    let _replica = ChildGuard::spawn(
        "framecast-replica",
        &[],
        &[
            ("FRAMECAST_REPLICA__SERVER__HOST", "127.0.0.1"),
            ("FRAMECAST_REPLICA__SERVER__PORT", &replica_port),
            ("FRAMECAST_REPLICA__GENERATOR__DEVICE", "cpu"),
            ("FRAMECAST_REPLICA__GENERATOR__WIDTH", "320"),
            ("FRAMECAST_REPLICA__GENERATOR__HEIGHT", "180"),
            ("FRAMECAST_REPLICA__GENERATOR__MOCK_LATENCY_MS", "300"),
            ("FRAMECAST_REPLICA__STREAMING__GENERATION_SEGMENT_CAP", "3"),
        ],
    );
    let config = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "router:\n  host: 127.0.0.1\n  port: {router_port}\n  threads: 1\n  shutdown_grace_seconds: 1\n  health_check:\n    path: /readyz\n    interval_seconds: 0.2\n  replicas:\n    - url: http://127.0.0.1:{replica_port}\n      primary: true\n"
        ),
    )
    .unwrap();
    let _router = ChildGuard::spawn(
        "framecast-router",
        &["--config", config.path().to_str().unwrap()],
        &[],
    );
    // Ready once the worker has warmed up (two mock segments).
    wait_for_status(
        &format!("http://127.0.0.1:{router_port}/readyz"),
        200,
        Duration::from_secs(60),
    )
    .await;

    let url = format!(
        "http://127.0.0.1:{router_port}/?autoplay=1&prompt=a%20lighthouse%20in%20a%20storm"
    );
    let result = play_in_chromium(&url, Duration::from_secs(40)).await;

    // Three 1 s segments (24 frames at 24 fps by default).
    assert_eq!(result["errors"], serde_json::json!([]), "{result}");
    assert_eq!(result["timedOut"], false, "{result}");
    assert_eq!(result["segmentsComplete"], 3, "{result}");
    assert_eq!(result["streamComplete"], true, "{result}");
    let played = result["currentTime"].as_f64().unwrap();
    assert!(played >= 0.9 * 3.0, "played {played} s of 3 s: {result}");

    // The session shows up in both binaries' metrics, and both expositions are clean.
    let router_metrics = get_text(&format!("http://127.0.0.1:{router_port}/metrics")).await;
    let ended_ok: f64 = router_metrics
        .lines()
        .filter(|l| {
            l.starts_with("framecast_router_sessions_total{") && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        ended_ok, 1.0,
        "one session ended through the router:\n{router_metrics}"
    );
    for name in [
        "framecast_router_sessions_active{replica=\"127.0.0.1:",
        "framecast_router_health_probe_seconds_bucket",
        "framecast_router_bytes_total{direction=\"downstream\"}",
    ] {
        assert!(
            router_metrics.contains(name),
            "missing `{name}` in:\n{router_metrics}"
        );
    }
    let downstream: f64 = router_metrics
        .lines()
        .find_map(|l| l.strip_prefix("framecast_router_bytes_total{direction=\"downstream\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    // Everything the browser received went through the tunnel (plus JSON and framing).
    let received = result["bytes"].as_f64().unwrap();
    assert!(
        downstream >= received && received > 10_000.0,
        "router counted {downstream} bytes downstream, the browser got {received} media bytes"
    );
    promtool_check(&router_metrics);
    let metrics = get_text(&format!("http://127.0.0.1:{replica_port}/metrics")).await;
    for name in [
        "framecast_sessions_total{outcome=\"complete\"} 1",
        "framecast_segment_generation_seconds_count",
        "framecast_denoise_step_seconds_count",
        "framecast_time_to_first_media_seconds_count 1",
        "framecast_encode_seconds_count",
        "framecast_media_bytes_total",
        "framecast_realtime_factor",
        "framecast_worker_up{gpu=\"0\"} 1",
        "framecast_queue_depth 0",
        "framecast_sessions_active",
    ] {
        assert!(metrics.contains(name), "missing `{name}` in:\n{metrics}");
    }
    promtool_check(&metrics);

    // Every metric the Helm chart's dashboard and alerts query exists in these scrapes.
    let exported = exported_names(&format!("{router_metrics}\n{metrics}"));
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/framecast");
    for file in ["dashboards/framecast.json", "files/alerts.yaml"] {
        let text = std::fs::read_to_string(chart.join(file)).unwrap();
        let used = framecast_names(&text);
        assert!(used.len() >= 5, "{file} uses {used:?}");
        for name in used {
            assert!(
                exported.contains(&name),
                "{file} queries `{name}`, which neither binary exports"
            );
        }
    }
}

/// Metric names of an exposition's sample lines.
fn exported_names(exposition: &str) -> std::collections::BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Every `framecast_*` identifier in a dashboard or rules file.
fn framecast_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("framecast_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn promtool_check(metrics: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
