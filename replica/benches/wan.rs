//! Wan generation speed on this machine: Framecast's tch implementation against diffusers'
//! WanPipeline (Python, same model directory, resolution, frames, steps and thread count),
//! per 1 s segment, for the tiny model and a mid-size one (random weights either way).
//!
//! `cargo bench -p framecast-replica --bench wan`
//!
//! A segment is 24 frames at 24 fps. Framecast times continuation segments of a stream (one
//! context latent frame + 6 new ones through the transformer, 6 decoded); diffusers generates
//! 25 frames (7 latent frames) per call, the nearest single-call equivalent. Median of 3
//! after one warm-up each; the two run alternately.

use std::ops::ControlFlow;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framecast_replica::generate::wan::generator::WanGenerator;
use framecast_replica::generate::{Generator, SegmentRequest, StreamFormat};
use framecast_replica::store::memory::MemoryBlobStore;
use support::{median, mid_model, python, root};

mod support;

const THREADS: i32 = 2;
const STEPS: u32 = 4;
const RUNS: usize = 3;
const FORMAT: StreamFormat = StreamFormat {
    width: 320,
    height: 192,
    fps: 24,
    frames_per_segment: 24,
    audio: None,
};

fn framecast_segment_seconds(model: &Path) -> f64 {
    let blobs = Arc::new(MemoryBlobStore::new(1 << 30, Duration::from_secs(600)));
    let mut g = WanGenerator::load(model, FORMAT, tch::Device::Cpu, blobs).expect("load model");
    let request = |segment_idx| SegmentRequest {
        fresh_stream: false,
        checkpoint_max_bytes: None,
        segment_idx,
        prompt: "a red fox runs through a snowy forest at dawn".into(),
        negative_prompt: None,
        seed: 1,
        num_inference_steps: STEPS,
        guidance_scale: 1.0,
        initial_image: None,
    };
    let mut state = g
        .generate(&request(0), None, &mut |_| ControlFlow::Continue(()))
        .expect("first segment")
        .next_state;
    let mut times = Vec::new();
    for i in 1..=RUNS as u32 {
        let started = Instant::now();
        let segment = g
            .generate(
                &request(i),
                Some(&state),
                &mut |_| ControlFlow::Continue(()),
            )
            .expect("segment");
        times.push(started.elapsed().as_secs_f64());
        assert_eq!(segment.frames.len(), 24);
        state = segment.next_state;
    }
    median(times)
}

fn diffusers_segment_seconds(model: &Path) -> f64 {
    let out = Command::new(python())
        .arg(root().join("scripts/bench_wan_diffusers.py"))
        .arg(model)
        .args([
            FORMAT.width.to_string(),
            FORMAT.height.to_string(),
            (FORMAT.frames_per_segment + 1).to_string(),
            STEPS.to_string(),
            THREADS.to_string(),
            RUNS.to_string(),
        ])
        .output()
        .expect("run scripts/bench_wan_diffusers.py");
    assert!(
        out.status.success(),
        "diffusers benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    result["median_s"].as_f64().expect("median_s")
}

fn main() {
    tch::set_num_threads(THREADS);
    let models = [
        ("tiny", root().join("models/wan-tiny")),
        ("mid", mid_model()),
    ];
    println!(
        "\nWan segment generation, {}x{}, {} frames, {STEPS} steps, CPU fp32, {THREADS} threads, median of {RUNS}",
        FORMAT.width, FORMAT.height, FORMAT.frames_per_segment
    );
    println!(
        "{:<6} {:>14} {:>14} {:>8} {:>12} {:>10}",
        "model", "framecast s", "diffusers s", "ratio", "frames/s", "realtime"
    );
    for (name, model) in &models {
        let ours = framecast_segment_seconds(model);
        let theirs = diffusers_segment_seconds(model);
        let video_seconds = f64::from(FORMAT.frames_per_segment) / f64::from(FORMAT.fps);
        println!(
            "{:<6} {:>14.3} {:>14.3} {:>7.2}x {:>12.1} {:>9.2}x",
            name,
            ours,
            theirs,
            ours / theirs,
            f64::from(FORMAT.frames_per_segment) / ours,
            video_seconds / ours,
        );
    }
}
