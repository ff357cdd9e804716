//! `framecast-replica device-check`: runs the configured Wan model on one device, segment after
//! segment as a session would, and optionally the same segments on a reference device in fp32,
//! to show a new machine both fast enough and right before it takes traffic.
//!
//! Noise is drawn on the CPU from the seed (see `WanGenerator`), so both devices start every
//! segment from the same latents and any difference is the device's arithmetic (bf16 rounding,
//! other kernels), carried through the denoising steps and the continuation between segments.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tch::{Device, Kind};

use crate::config::{DeviceKind, GeneratorSettings};
use crate::device::{self, DeviceError};
use crate::generate::wan::WanError;
use crate::generate::wan::generator::WanGenerator;
use crate::generate::{GenerateError, Generator, SegmentRequest, StreamFormat};
use crate::store::memory::MemoryBlobStore;

/// Precision of the checked device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dtype {
    /// What serving uses: bf16 on CUDA, fp32 on the CPU.
    Auto,
    /// fp32.
    Fp32,
    /// bf16.
    Bf16,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct CheckSettings {
    /// The device under test.
    pub device: DeviceKind,
    /// Its precision.
    pub dtype: Dtype,
    /// Where the same segments run in fp32 for comparison (`None`: no comparison).
    pub reference: Option<DeviceKind>,
    /// Segments in the stream (the first is a warm-up and left out of the timings when there
    /// are more).
    pub segments: u32,
    /// Denoising steps per segment.
    pub steps: u32,
    /// Classifier-free guidance scale (above 1 doubles the transformer's work).
    pub guidance_scale: f32,
    /// Noise seed.
    pub seed: u64,
    /// The prompt of every segment.
    pub prompt: String,
    /// Largest mean absolute difference from the reference, in 8-bit pixel levels, that
    /// passes.
    pub max_mean_abs_diff: f64,
}

/// Why the check could not run (a mismatch is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The device is not there or libtorch cannot use it.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The model could not be loaded.
    #[error("generator.model_path: {0}")]
    Model(#[from] WanError),
    /// A segment failed.
    #[error("segment {segment}: {source}")]
    Generate {
        /// Which segment.
        segment: u32,
        /// Why.
        source: GenerateError,
    },
    /// Nothing to check.
    #[error("{0}")]
    Settings(String),
}

/// One device's run.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceRun {
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// `fp32` or `bf16`.
    pub dtype: &'static str,
    /// Loading the model onto the device.
    pub load_seconds: f64,
    /// Wall time of each segment, frames copied back to the host included.
    pub segment_seconds: Vec<f64>,
    /// Median of the segments after the first (the first pays for kernel loading and
    /// autotuning), or the only one.
    pub seconds_per_segment: f64,
    /// Frames generated per second at that pace.
    pub frames_per_second: f64,
    /// Media seconds per wall second: above 1 a stream never waits for this device.
    pub realtime_factor: f64,
}

/// How far the device's frames are from the reference's.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The reference run (fp32).
    pub reference: DeviceRun,
    /// Mean absolute difference over all pixels, in 8-bit levels.
    pub mean_abs_diff: f64,
    /// The same per segment: growth shows error carried through continuations.
    pub mean_abs_diff_per_segment: Vec<f64>,
    /// Largest single-pixel difference.
    pub max_abs_diff: u8,
    /// Peak signal-to-noise ratio of the device's frames against the reference's, in dB.
    pub psnr_db: f64,
    /// The pass mark for `mean_abs_diff`.
    pub max_mean_abs_diff: f64,
    /// `mean_abs_diff <= max_mean_abs_diff`.
    pub within_tolerance: bool,
}

/// What `device-check` prints.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// Whether libtorch found a CUDA runtime and a GPU.
    pub cuda_available: bool,
    /// Visible CUDA devices.
    pub cuda_device_count: i64,
    /// Whether cuDNN is usable.
    pub cudnn_available: bool,
    /// The model directory.
    pub model: String,
    /// Frame size, rate and segment length.
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub frames_per_segment: u32,
    /// Denoising steps and guidance per segment.
    pub steps: u32,
    pub guidance_scale: f32,
    /// The device under test.
    pub run: DeviceRun,
    /// Against the reference, when one was asked for.
    pub comparison: Option<Comparison>,
}

impl DeviceReport {
    /// False only when a comparison ran and missed its tolerance.
    pub fn passed(&self) -> bool {
        self.comparison.as_ref().is_none_or(|c| c.within_tolerance)
    }
}

/// Runs the check for the model and geometry in `generator`.
pub fn run(
    generator: &GeneratorSettings,
    check: &CheckSettings,
) -> Result<DeviceReport, CheckError> {
    if check.segments == 0 || check.steps == 0 {
        return Err(CheckError::Settings(
            "--segments and --steps must be at least 1".into(),
        ));
    }
    if !(check.guidance_scale.is_finite() && check.guidance_scale >= 0.0) {
        return Err(CheckError::Settings(format!(
            "--guidance-scale must be a finite number of at least 0, not {}",
            check.guidance_scale
        )));
    }
    if !(check.max_mean_abs_diff.is_finite() && check.max_mean_abs_diff >= 0.0) {
        return Err(CheckError::Settings(format!(
            "--max-mean-abs-diff must be a finite number of at least 0, not {}",
            check.max_mean_abs_diff
        )));
    }
    let format = StreamFormat {
        width: generator.width,
        height: generator.height,
        fps: generator.fps,
        frames_per_segment: generator.frames_per_segment,
        audio: None,
    };
    let info = device::probe(check.device)?;
    let kind = match (check.dtype, info.device) {
        (Dtype::Fp32, _) | (Dtype::Auto, Device::Cpu) => Kind::Float,
        _ => Kind::BFloat16,
    };
    let (run, frames) = run_on(generator, check, format, info.device, kind)?;
    let comparison = match check.reference {
        None => None,
        Some(reference) => {
            let device = device::probe(reference)?.device;
            let (reference, expected) = run_on(generator, check, format, device, Kind::Float)?;
            Some(compare(
                reference,
                &frames,
                &expected,
                check.max_mean_abs_diff,
            ))
        }
    };
    Ok(DeviceReport {
        cuda_available: info.cuda_available,
        cuda_device_count: info.cuda_device_count,
        cudnn_available: tch::Cuda::cudnn_is_available(),
        model: generator.model_path.display().to_string(),
        width: format.width,
        height: format.height,
        fps: format.fps,
        frames_per_segment: format.frames_per_segment,
        steps: check.steps,
        guidance_scale: check.guidance_scale,
        run,
        comparison,
    })
}

/// Every segment's RGB frames, in order.
type SegmentFrames = Vec<Vec<Vec<u8>>>;

/// One stream of `check.segments` segments on `device`: its timings and every segment's frames.
fn run_on(
    generator: &GeneratorSettings,
    check: &CheckSettings,
    format: StreamFormat,
    device: Device,
    kind: Kind,
) -> Result<(DeviceRun, SegmentFrames), CheckError> {
    let blobs = Arc::new(MemoryBlobStore::new(256 << 20, Duration::from_secs(600)));
    let started = Instant::now();
    let mut model = WanGenerator::load_as(&generator.model_path, format, device, kind, blobs)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let mut state = None;
    let mut segment_seconds = Vec::new();
    let mut frames = Vec::new();
    for segment in 0..check.segments {
        let request = SegmentRequest {
            segment_idx: segment,
            prompt: check.prompt.clone(),
            negative_prompt: None,
            seed: check.seed,
            num_inference_steps: check.steps,
            guidance_scale: check.guidance_scale,
            fresh_stream: false,
            checkpoint_max_bytes: None,
            initial_image: None,
        };
        let started = Instant::now();
        let out = model
            .generate(&request, state.as_ref(), &mut |_| ControlFlow::Continue(()))
            .map_err(|source| CheckError::Generate { segment, source })?;
        segment_seconds.push(started.elapsed().as_secs_f64());
        frames.push(out.frames);
        state = Some(out.next_state);
    }
    let steady = if segment_seconds.len() > 1 {
        &segment_seconds[1..]
    } else {
        &segment_seconds[..]
    };
    let seconds_per_segment = median(steady);
    let media_seconds = f64::from(format.frames_per_segment) / f64::from(format.fps.max(1));
    let run = DeviceRun {
        device: match device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".into(),
        },
        dtype: if kind == Kind::BFloat16 {
            "bf16"
        } else {
            "fp32"
        },
        load_seconds,
        segment_seconds,
        seconds_per_segment,
        frames_per_second: f64::from(format.frames_per_segment) / seconds_per_segment,
        realtime_factor: media_seconds / seconds_per_segment,
    };
    Ok((run, frames))
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Pixel statistics of `got` against `expected`, segment by segment.
fn compare(
    reference: DeviceRun,
    got: &[Vec<Vec<u8>>],
    expected: &[Vec<Vec<u8>>],
    max_mean_abs_diff: f64,
) -> Comparison {
    let (mut sum, mut sq, mut n, mut max) = (0u64, 0u64, 0u64, 0u8);
    let mut per_segment = Vec::new();
    for (a, b) in got.iter().zip(expected) {
        let (mut seg_sum, mut seg_n) = (0u64, 0u64);
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            let d = x.abs_diff(*y);
            seg_sum += u64::from(d);
            sq += u64::from(d) * u64::from(d);
            seg_n += 1;
            max = max.max(d);
        }
        per_segment.push(seg_sum as f64 / seg_n.max(1) as f64);
        sum += seg_sum;
        n += seg_n;
    }
    let mean_abs_diff = sum as f64 / n.max(1) as f64;
    let mse = sq as f64 / n.max(1) as f64;
    let psnr_db = if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    };
    Comparison {
        reference,
        mean_abs_diff,
        mean_abs_diff_per_segment: per_segment,
        max_abs_diff: max,
        psnr_db,
        max_mean_abs_diff,
        within_tolerance: mean_abs_diff <= max_mean_abs_diff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_stub() -> DeviceRun {
        DeviceRun {
            device: "cpu".into(),
            dtype: "fp32",
            load_seconds: 0.0,
            segment_seconds: vec![1.0],
            seconds_per_segment: 1.0,
            frames_per_second: 1.0,
            realtime_factor: 1.0,
        }
    }

    #[test]
    fn identical_frames_pass_with_infinite_psnr() {
        let frames = vec![vec![vec![1u8, 2, 3]; 2]; 2];
        let c = compare(run_stub(), &frames, &frames, 0.0);
        assert_eq!(c.mean_abs_diff, 0.0);
        assert!(c.psnr_db.is_infinite());
        assert!(c.within_tolerance);
    }

    #[test]
    fn differences_are_averaged_per_segment_and_judged_against_the_tolerance() {
        let got = vec![vec![vec![10u8; 4]], vec![vec![10u8; 4]]];
        let expected = vec![vec![vec![10u8; 4]], vec![vec![14u8; 4]]];
        let c = compare(run_stub(), &got, &expected, 1.5);
        assert_eq!(c.mean_abs_diff_per_segment, vec![0.0, 4.0]);
        assert_eq!(c.mean_abs_diff, 2.0);
        assert_eq!(c.max_abs_diff, 4);
        // MSE 8 → 10·log10(65025 / 8) ≈ 39.1 dB.
        assert!((c.psnr_db - 39.1).abs() < 0.1, "{}", c.psnr_db);
        assert!(!c.within_tolerance);
    }

    #[test]
    fn bad_settings_are_refused_before_anything_loads() {
        let generator = GeneratorSettings::default();
        let good = CheckSettings {
            device: DeviceKind::Cpu,
            dtype: Dtype::Auto,
            reference: None,
            segments: 1,
            steps: 1,
            guidance_scale: 1.0,
            seed: 1,
            prompt: "p".into(),
            max_mean_abs_diff: 4.0,
        };
        for bad in [
            CheckSettings {
                segments: 0,
                ..good.clone()
            },
            CheckSettings {
                guidance_scale: f32::NAN,
                ..good.clone()
            },
            CheckSettings {
                guidance_scale: -1.0,
                ..good.clone()
            },
            CheckSettings {
                max_mean_abs_diff: f64::INFINITY,
                ..good.clone()
            },
        ] {
            let err = run(&generator, &bad).unwrap_err();
            assert!(matches!(err, CheckError::Settings(_)), "{err}");
        }
    }

    #[test]
    fn the_median_is_the_middle_value() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[5.0]), 5.0);
    }
}
