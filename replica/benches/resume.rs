//! What resumable sessions cost a Wan stream per segment: the checkpoint written after
//! every segment (exact: latent context + VAE decoder caches; portable: the context alone),
//! its size, and what a portable restore adds (the decoder caches rebuilt by decoding the
//! context), each against generating the segment itself, measured in the same run.
//!
//! `cargo bench -p framecast-replica --bench resume`
//!
//! Tiny and mid-size models (random weights), 320x192, 24 frames, 4 steps, CPU fp32, 2
//! threads, median of 3; blobs go to the in-memory store (Redis adds its transfer).

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framecast_common::protocol::ContinuationState;
use framecast_replica::generate::wan::generator::WanGenerator;
use framecast_replica::generate::{Generator, SegmentRequest, StreamFormat};
use framecast_replica::store::BlobStore;
use framecast_replica::store::memory::MemoryBlobStore;
use support::{median, mid_model, root};

mod support;

const RUNS: u32 = 3;
const FORMAT: StreamFormat = StreamFormat {
    width: 320,
    height: 192,
    fps: 24,
    frames_per_segment: 24,
    audio: None,
};

fn request(segment_idx: u32) -> SegmentRequest {
    SegmentRequest {
        fresh_stream: false,
        checkpoint_max_bytes: None,
        segment_idx,
        prompt: "a red fox runs through a snowy forest at dawn".into(),
        negative_prompt: None,
        seed: 1,
        num_inference_steps: 4,
        guidance_scale: 1.0,
        initial_image: None,
    }
}

struct Figures {
    segment_s: f64,
    exact_s: f64,
    portable_s: f64,
    restore_s: f64,
    exact_bytes: usize,
    portable_bytes: usize,
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed().as_secs_f64())
}

fn measure(model: &Path) -> Figures {
    let blobs: Arc<dyn BlobStore> =
        Arc::new(MemoryBlobStore::new(4 << 30, Duration::from_secs(600)));
    let load = || WanGenerator::load(model, FORMAT, tch::Device::Cpu, blobs.clone()).expect("load");
    let mut g = load();
    let mut restorer = load();
    let go = |g: &mut WanGenerator, i, state: Option<&ContinuationState>| {
        g.generate(&request(i), state, &mut |_| ControlFlow::Continue(()))
            .expect("segment")
    };
    let size = |state: &ContinuationState| {
        let id = state.payload["blob"].as_str().expect("a blob");
        blobs.get(id).unwrap().unwrap().len()
    };
    let mut state = go(&mut g, 0, None).next_state;
    let (mut segment, mut exact, mut portable, mut restore) = (vec![], vec![], vec![], vec![]);
    let (mut exact_bytes, mut portable_bytes) = (0, 0);
    for i in 1..=RUNS {
        let (next, s) = timed(|| go(&mut g, i, Some(&state)));
        segment.push(s);
        state = next.next_state;
        let (e, s) = timed(|| g.checkpoint_state(&state, "bench", u64::MAX).unwrap());
        exact.push(s);
        exact_bytes = size(&e);
        let (p, s) = timed(|| g.checkpoint_state(&state, "bench", 0).unwrap());
        portable.push(s);
        portable_bytes = size(&p);
        // Another generator continues from the portable checkpoint: the segment plus the
        // caches rebuilt; what the rebuild adds is this minus a plain segment.
        let (_, s) = timed(|| go(&mut restorer, i + 1, Some(&p)));
        restore.push(s);
    }
    Figures {
        segment_s: median(segment),
        exact_s: median(exact),
        portable_s: median(portable),
        restore_s: median(restore),
        exact_bytes,
        portable_bytes,
    }
}

fn main() {
    tch::set_num_threads(2);
    println!(
        "\nResume checkpoints, {}x{}, {} frames/segment, 4 steps, CPU fp32, median of {RUNS}",
        FORMAT.width, FORMAT.height, FORMAT.frames_per_segment
    );
    println!(
        "{:<6} {:>10} {:>12} {:>10} {:>12} {:>10} {:>14} {:>10}",
        "model",
        "segment s",
        "exact bytes",
        "exact/seg",
        "portable B",
        "port./seg",
        "portable restore",
        "restore/seg"
    );
    for (name, model) in [
        ("tiny", root().join("models/wan-tiny")),
        ("mid", mid_model()),
    ] {
        let f = measure(&model);
        println!(
            "{:<6} {:>10.3} {:>12} {:>9.3}x {:>12} {:>9.4}x {:>13.3} s {:>9.2}x",
            name,
            f.segment_s,
            f.exact_bytes,
            f.exact_s / f.segment_s,
            f.portable_bytes,
            f.portable_s / f.segment_s,
            f.restore_s,
            f.restore_s / f.segment_s,
        );
    }
}
