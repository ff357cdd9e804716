//! The tiny Wan model the generator tests share: where it is, the format they generate and
//! the request they generate with.

use std::path::{Path, PathBuf};

use framecast_replica::generate::{SegmentRequest, StreamFormat};

/// `models/wan-tiny`, built by scripts/setup.
pub fn model_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/wan-tiny");
    assert!(
        dir.join("model_index.json").exists(),
        "{} is missing: run scripts/setup",
        dir.display()
    );
    dir
}

/// 80x64 at 8 fps, 8 frames (two latent frames) a segment.
pub const FORMAT: StreamFormat = StreamFormat {
    width: 80,
    height: 64,
    fps: 8,
    frames_per_segment: 8,
    audio: None,
};

/// Segment `segment_idx` of one fixed prompt and seed, 2 steps, no guidance.
pub fn request(segment_idx: u32) -> SegmentRequest {
    SegmentRequest {
        fresh_stream: false,
        checkpoint_max_bytes: None,
        segment_idx,
        prompt: "a red fox runs through a snowy forest at dawn".into(),
        negative_prompt: None,
        seed: 7,
        num_inference_steps: 2,
        guidance_scale: 1.0,
        initial_image: None,
    }
}
