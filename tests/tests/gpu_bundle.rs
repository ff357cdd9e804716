//! The GPU bundle (`scripts/gpu-bundle`, `gpu/`) works on a machine that has none of the
//! build's environment: it is built from this test build's binaries and its `gpu-check` runs on
//! the CPU under `env -i`, with no `.venv` on PATH, no GStreamer variables and no FRAMECAST_*
//! settings. Only libtorch comes from outside, as on the GPU machine: `.venv`'s torch/lib
//! stands in for the GPU image's. A broken bundle (a library left out, a plugin missing, a
//! wrapper that lets system GStreamer in) fails here rather than on the GPU machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use framecast_e2e::binary;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_bundle_runs_gpu_check_in_a_clean_environment() {
    let root = root();
    let binaries = binary("framecast-replica").parent().unwrap().to_owned();
    let out = tempfile::tempdir().unwrap();
    // Test binaries are unoptimised, so the size limit is the release bundle's business
    // (scripts/gpu-bundle enforces it there); everything else is the same.
    let built = Command::new(root.join("scripts/gpu-bundle"))
        .arg("--out")
        .arg(out.path())
        .arg("--binaries")
        .arg(&binaries)
        .args(["--max-mib", "400", "--xz-level", "0"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "scripts/gpu-bundle failed: {}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let bundle = out.path().join("framecast-gpu");
    assert!(out.path().join("framecast-gpu.tar.xz").exists());

    let torch_lib = std::fs::canonicalize(root.join(".venv/libtorch"))
        .unwrap()
        .join("lib");
    let report_dir = out.path().join("report");
    let run = Command::new("env")
        .arg("-i")
        .arg("PATH=/usr/bin:/bin")
        .arg(format!("HOME={}", out.path().display()))
        .arg(format!("FRAMECAST_TORCH_LIB={}", torch_lib.display()))
        .arg(format!(
            "FRAMECAST_GPU_CHECK_WORK={}",
            out.path().join("work").display()
        ))
        .arg(format!(
            "FRAMECAST_BUNDLE_STATE={}",
            out.path().join("state").display()
        ))
        .arg(bundle.join("gpu-check"))
        .args(["--device", "cpu", "--quick", "--out"])
        .arg(&report_dir)
        .output()
        .unwrap();
    let log = std::fs::read_to_string(report_dir.join("gpu-check.log")).unwrap_or_default();
    assert!(
        run.status.success(),
        "gpu-check failed:\n{log}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("gpu-check.json")).unwrap()).unwrap();

    // bf16 on the CPU against fp32: the comparison ran, differed (so it compares something)
    // and stayed within the tolerance gpu-check applies to the GPU.
    let mid = &report["steps"]["mid"]["report"];
    assert_eq!(mid["run"]["dtype"], "bf16", "{mid}");
    assert_eq!(mid["comparison"]["reference"]["dtype"], "fp32", "{mid}");
    let diff = mid["comparison"]["mean_abs_diff"].as_f64().unwrap();
    assert!(diff > 0.0, "bf16 and fp32 frames identical: {mid}");
    assert_eq!(mid["comparison"]["within_tolerance"], true, "{mid}");
    assert_eq!(mid["cuda_available"], false);

    // A whole session streamed with x264, and every GStreamer and GLib library the replica
    // and its worker mapped is the bundle's.
    let session = &report["steps"]["session"];
    assert_eq!(session["ok"], true, "{session}\n{log}");
    assert_eq!(session["video_encoder"], "x264enc");
    let timing = &session["timing"]["streams"][0];
    assert!(timing["media_bytes"].as_u64().unwrap() > 1000, "{timing}");
    assert_eq!(timing["segment_done_ms"].as_array().unwrap().len(), 3);
    for key in ["libraries", "worker_libraries"] {
        let libs: Vec<&str> = session[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key}: {session}"))
            .iter()
            .filter_map(|l| l.as_str())
            .collect();
        let gst: Vec<&&str> = libs
            .iter()
            .filter(|l| l.contains("libgst") || l.contains("libglib") || l.contains("libx264"))
            .collect();
        assert!(!gst.is_empty(), "{key}: no GStreamer mapped: {libs:?}");
        let bundle = std::fs::canonicalize(&bundle).unwrap();
        for lib in gst {
            assert!(
                Path::new(lib).starts_with(&bundle),
                "{key}: {lib} is not the bundle's"
            );
        }
    }
    // The 1.3B-shaped model needs torch in python3, which the clean environment lacks.
    assert!(
        report["steps"]["wan2.1-1.3b"]["skipped"].is_string(),
        "{report}"
    );
}
