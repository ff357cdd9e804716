//! The shipped default model through the whole product path: the replica with the shipped
//! config (`config/replica.yaml`: `models/framecast-shapes` on the CPU), the router in front,
//! and `framecast-eval` driving held-out prompts (never seen in training) over WebSocket,
//! decoding what came back and scoring it.
//!
//! The model does not reach all of issue 17's targets yet (see its model card), so the
//! thresholds here are set from what it does reach on these 8 streams, below it with margin:
//! background 100 %, direction 96 %, colour (object and background) 92 % of judged segments,
//! every switch shown within one segment and seam score 1.31 with the shipped config (8
//! steps, guidance 3; over 48 streams: 100, 96, 88, 81 % and 1.39). The fifth session's
//! model scored 100, 92, 92, 100 % and 1.30 here; the one before it colour 79 % and seam 0.98
//! (a switch within one segment in 40 % of 48 streams); the one before that (red and yellow decoded orange) colour 71 %, seam 1.27. The seam bound is the
//! issue's target itself: this model's decoder, trained on cuts, steps a little at segment
//! seams. A broken pipeline scores near
//! chance (background 19–22 % when prompts were mis-tokenized or the VAE decoded garbage;
//! direction 27 % when captions were padded unlike training; background 65 % and colour 34 %
//! when the transformer drew a blended first latent frame, over 48 streams; seam score 1.64
//! with a decoder that jumped at every latent frame, over 48). Timing figures are only
//! checked for presence: the suite runs tests side by side, so speed is the benches' and
//! `scripts/eval`'s.

use std::path::Path;
use std::time::Duration;

use framecast_e2e::{binary, spawn_replica_with_args, start_router, wait_for_status};

/// Streams and segments: 8 held-out prompts, a switch after segment 2.
const STREAMS: &str = "8";
const SEGMENTS: &str = "4";
const MIN_BACKGROUND: f64 = 0.85;
const MIN_DIRECTION: f64 = 0.75;
const MIN_COLOUR: f64 = 0.8;
const MIN_SWITCH: f64 = 0.75;
const MAX_SEAM: f64 = 1.5;

#[tokio::test]
async fn the_shipped_model_draws_held_out_prompts_through_router_and_replica() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join("models/framecast-shapes");
    let config = root.join("config/replica.yaml");
    let (_replica, base) = spawn_replica_with_args(
        &["--config", config.to_str().unwrap()],
        &[
            (
                "FRAMECAST_REPLICA__GENERATOR__MODEL_PATH",
                model.to_str().unwrap(),
            ),
            ("FRAMECAST_REPLICA__GENERATOR__DEVICE", "cpu"),
        ],
    );
    wait_for_status(&format!("{base}/readyz"), 200, Duration::from_secs(180)).await;
    let router = start_router(std::slice::from_ref(&base), &[]).await;
    let out = tempfile::tempdir().unwrap();
    let url = format!("{}/v1/stream", router.base.replace("http://", "ws://"));
    let run = tokio::task::spawn_blocking({
        let out = out.path().to_owned();
        move || {
            std::process::Command::new(binary("framecast-eval"))
                .args(["--url", &url, "--model", model.to_str().unwrap()])
                .args(["--streams", STREAMS, "--segments", SEGMENTS])
                .arg("--out")
                .arg(&out)
                .output()
                .expect("framecast-eval runs")
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "framecast-eval failed: {stderr}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("eval.json")).unwrap()).unwrap();
    let agg = &report["aggregate"];
    let f = |k: &str| {
        agg[k]
            .as_f64()
            .unwrap_or_else(|| panic!("aggregate.{k}: {agg}"))
    };
    assert_eq!(agg["streams"], 8, "{agg}");
    assert_eq!(agg["failed_streams"], 0, "{report}");
    assert!(f("background_adherence") >= MIN_BACKGROUND, "{agg}");
    assert!(f("direction_adherence") >= MIN_DIRECTION, "{agg}");
    assert!(f("colour_adherence") >= MIN_COLOUR, "{agg}");
    assert!(f("switch_within_one_segment") >= MIN_SWITCH, "{agg}");
    for k in [
        "colour_adherence",
        "direction_adherence",
        "switch_within_one_segment",
    ] {
        assert!((0.0..=1.0).contains(&f(k)), "{agg}");
    }
    assert!(f("seam_score") > 0.0, "{agg}");
    assert!(f("seam_score") <= MAX_SEAM, "{agg}");
    assert!(f("realtime_factor_median") > 0.0, "{agg}");
    assert!(f("time_to_first_media_ms_median") > 0.0, "{agg}");
    // Every stream was recorded whole: 4 segments of frames each, and a contact sheet row.
    for s in report["streams"].as_array().unwrap() {
        assert_eq!(s["segments"].as_array().unwrap().len(), 4, "{s}");
    }
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert_eq!(html.matches("<div class=stream>").count(), 8);
    assert!(html.matches("data:image/png;base64,").count() >= 32);
    assert_eq!(
        std::fs::read_dir(out.path().join("streams"))
            .unwrap()
            .count(),
        8
    );
}
