//! Broadcast ladder benchmark: encode throughput of the default three-rung ladder (1x, 1/2,
//! 1/4) from a 1280x720 source with 1, 2 and 4 encoder workers per rung, and the latency from
//! a segment's frames being handed over to its segment being listed in the top rung's
//! playlist.
//!
//!   cargo bench -p framecast-replica --bench broadcast
//!
//! Workload: 6 s of 1280x720 RGB at 24 fps in 1 s segments, handed over as fast as the ladder
//! takes them. Rounds alternate the worker counts; reported: the median round per count, as
//! source frames per second until every rung's playlist ended, with the ratio to 1 worker
//! measured in the same run, and the median and worst hand-over → listed latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use framecast_replica::broadcast::{Ladder, LadderPlan};
use framecast_replica::config::BroadcastSettings;
use framecast_replica::media::EncoderSettings;

const W: u32 = 1280;
const H: u32 = 720;
const FPS: u32 = 24;
const SEGMENTS: u32 = 6;
const ROUNDS: usize = 3;

fn segment(s: u32) -> Arc<Vec<Vec<u8>>> {
    Arc::new(
        (0..FPS)
            .map(|i| {
                let t = s * FPS + i;
                let mut f = vec![0u8; (W * H * 3) as usize];
                for (p, px) in f.chunks_exact_mut(3).enumerate() {
                    let (x, y) = (p as u32 % W, p as u32 / W);
                    px.copy_from_slice(&[
                        (x / 5 + t * 3) as u8,
                        (y / 3 + t) as u8,
                        ((x ^ y) / 8) as u8,
                    ]);
                }
                f
            })
            .collect(),
    )
}

struct Round {
    fps: f64,
    latencies: Vec<Duration>,
}

fn round(segments: &[Arc<Vec<Vec<u8>>>], workers: usize, dir: &std::path::Path, n: usize) -> Round {
    let settings = BroadcastSettings {
        enabled: true,
        dir: dir.to_owned(),
        workers_per_rung: workers,
        queue_segments: SEGMENTS as usize,
        window_segments: SEGMENTS as usize,
        ..BroadcastSettings::default()
    };
    let plan = LadderPlan {
        stream_id: format!("bench-{workers}-{n}"),
        settings,
        encoder: EncoderSettings::new(W, H, FPS, 500),
        frames_per_segment: FPS,
        first_segment: 0,
    };
    let ladder = Ladder::start(&plan).expect("ladder starts");
    let start = Instant::now();
    for (s, frames) in segments.iter().enumerate() {
        ladder.push_segment(s as u32, frames.clone()).expect("push");
    }
    ladder.finish();
    let wall = start.elapsed();
    let latencies = ladder.rungs().next().expect("a rung").output.latencies();
    Round {
        fps: f64::from(SEGMENTS * FPS) / wall.as_secs_f64(),
        latencies,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segments: Vec<_> = (0..SEGMENTS).map(segment).collect();
    let counts = [1usize, 2, 4];
    let mut fps = vec![Vec::new(); counts.len()];
    let mut lat = vec![Vec::new(); counts.len()];
    for n in 0..ROUNDS {
        for (k, &workers) in counts.iter().enumerate() {
            let r = round(&segments, workers, dir.path(), n);
            fps[k].push(r.fps);
            lat[k].extend(r.latencies.iter().map(Duration::as_secs_f64));
        }
    }
    let base = median(fps[0].clone());
    println!(
        "ladder 1280x720 → 1280x720 + 640x360 + 320x180, {SEGMENTS} s at {FPS} fps, median of {ROUNDS} rounds, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| workers per rung | source frames/s | vs 1 worker | hand-over → listed (median) | (worst) |"
    );
    println!("|---|---|---|---|---|");
    for (k, &workers) in counts.iter().enumerate() {
        let f = median(fps[k].clone());
        let worst = lat[k].iter().copied().fold(0.0, f64::max);
        println!(
            "| {workers} | {f:.1} | {:.2}x | {:.0} ms | {:.0} ms |",
            f / base,
            median(lat[k].clone()) * 1000.0,
            worst * 1000.0
        );
    }
}
