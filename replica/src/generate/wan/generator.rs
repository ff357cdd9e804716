//! [`WanGenerator`]: the [`Generator`] the session controller drives, built from the Wan
//! networks. Each segment denoises `frames_per_segment / 4` new latent frames with the
//! flow-matching Euler sampler (classifier-free guidance with the negative prompt when
//! `guidance_scale > 1`); the last clean latent frame of the previous segment is prepended
//! and re-imposed at the current noise level at every step, so motion continues; the VAE
//! decoder's causal cache is carried from segment to segment, so there is no seam.
//!
//! A fresh stream with an initial image starts from the image's VAE latent the same way.
//! How that state is kept between segments and exported is [`super::stream_state`]'s part.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use framecast_common::protocol::ContinuationState;
use parking_lot::Mutex;
use tch::{Device, Kind, Tensor};

use super::WanError;
use super::pipeline_config::PipelineConfig;
use super::scheduler::{FlowMatchEuler, Schedule};
use super::stream_state::{StreamState, StreamStates, WAN_STATE_KIND};
use super::text_encoder::TextEncoder;
use super::transformer::WanTransformer;
use super::vae::{DecoderState, WanVae};
use crate::generate::{
    GenerateError, GeneratedSegment, Generator, RgbImage, SegmentRequest, StepProgress,
    StreamFormat,
};
use crate::store::BlobStore;

/// Clean latent frames of a segment that condition the next one.
const CONTEXT_FRAMES: i64 = 1;
/// Clean latent frames a stream keeps for a portable checkpoint: decoding them again
/// rebuilds the VAE decoder's causal caches (see `StreamState::history`). Measured on the
/// tiny model 21 latent frames into a stream: 16 frames rebuild them to within 2/255 of the
/// exact continuation, 8 to 19/255, 1 to 27/255 (`replica/tests/wan_resume.rs`).
const HISTORY_FRAMES: i64 = 16;
/// Prompt embeddings kept per worker.
const PROMPT_CACHE: usize = 32;

/// Serialises libtorch's global CPU generator, so seeded noise is reproducible even with
/// several workers in one process.
static NOISE_LOCK: Mutex<()> = Mutex::new(());

/// Text-to-video with the Wan2.1 networks on one device.
pub struct WanGenerator {
    text: TextEncoder,
    transformer: WanTransformer,
    vae: WanVae,
    sampler: FlowMatchEuler,
    format: StreamFormat,
    device: Device,
    kind: Kind,
    /// Text tokens the transformer attends to (the model's `max_sequence_length`).
    text_tokens: usize,
    /// Prompt → text embedding, at most `PROMPT_CACHE` of them.
    prompts: HashMap<String, Tensor>,
    streams: StreamStates,
    /// Latent frames each segment adds: `frames_per_segment / temporal_factor`.
    latent_frames: i64,
    /// Latent (height, width) of every segment.
    latent_hw: (i64, i64),
    /// Latent frames a stream keeps for portable checkpoints.
    history_frames: i64,
}

impl std::fmt::Debug for WanGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WanGenerator")
            .field("format", &self.format)
            .field("device", &self.device)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl WanGenerator {
    /// Loads the diffusers-format model in `dir` onto `device` (fp32 on CPU, bf16 on CUDA)
    /// for segments of `format`, keeping stream states in `blobs`.
    pub fn load(
        dir: &Path,
        format: StreamFormat,
        device: Device,
        blobs: Arc<dyn BlobStore>,
    ) -> Result<Self, WanError> {
        let kind = if device.is_cuda() {
            Kind::BFloat16
        } else {
            Kind::Float
        };
        Self::load_as(dir, format, device, kind, blobs)
    }

    /// [`WanGenerator::load`] in a chosen precision: `device-check` compares bf16 with fp32
    /// on one device to tell rounding from a device's own error.
    pub fn load_as(
        dir: &Path,
        format: StreamFormat,
        device: Device,
        kind: Kind,
        blobs: Arc<dyn BlobStore>,
    ) -> Result<Self, WanError> {
        let _no_grad = tch::no_grad_guard();
        let text_tokens = PipelineConfig::load(dir)?.max_sequence_length;
        let text = TextEncoder::load(
            &dir.join("text_encoder"),
            &dir.join("tokenizer"),
            device,
            kind,
        )?;
        let transformer = WanTransformer::load(&dir.join("transformer"), device, kind)?;
        let vae = WanVae::load(&dir.join("vae"), device, kind)?;
        let sampler = FlowMatchEuler::load(&dir.join("scheduler"))?;
        let temporal = vae.config().temporal_factor();
        let spatial = vae.config().spatial_factor();
        let patch = transformer.config().patch_size.clone();
        let frames = i64::from(format.frames_per_segment);
        if frames % temporal != 0 {
            return Err(WanError::Format(format!(
                "generator.frames_per_segment ({frames}) must be a multiple of the VAE's temporal factor {temporal}"
            )));
        }
        let (w, h) = (i64::from(format.width), i64::from(format.height));
        let multiple = spatial * patch[1].max(patch[2]);
        if w % multiple != 0 || h % multiple != 0 {
            return Err(WanError::Format(format!(
                "generator.width and height ({w}x{h}) must be multiples of {multiple} for this model"
            )));
        }
        let latent_hw = (h / spatial, w / spatial);
        Ok(Self {
            text,
            transformer,
            vae,
            sampler,
            format,
            device,
            kind,
            text_tokens,
            prompts: HashMap::new(),
            streams: StreamStates::new(blobs, device, kind, latent_hw),
            latent_frames: frames / temporal,
            latent_hw,
            history_frames: HISTORY_FRAMES,
        })
    }

    /// How many clean latent frames a stream keeps for its portable checkpoints (at least
    /// 1; default 16): more rebuild the decoder's caches more faithfully on restore, and
    /// take longer to decode then.
    pub fn set_history_frames(&mut self, frames: i64) {
        self.history_frames = frames.max(1);
    }

    /// The sampling schedule for `steps` steps.
    pub fn schedule(&self, steps: u32) -> Schedule {
        self.sampler.schedule(steps)
    }

    /// Decodes a whole latent video (1, z, F, h, w) into video in [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Tensor {
        let _no_grad = tch::no_grad_guard();
        self.vae.decode(latents, &mut DecoderState::default())
    }

    /// The prompt's text embedding (1, max_sequence_length, text_dim), cached per worker.
    pub fn embed(&mut self, prompt: &str) -> Result<Tensor, GenerateError> {
        if let Some(e) = self.prompts.get(prompt) {
            return Ok(e.shallow_clone());
        }
        let e = self
            .text
            .encode(prompt, self.text_tokens)
            .map_err(|e| GenerateError::Failed(e.to_string()))?;
        if self.prompts.len() >= PROMPT_CACHE {
            self.prompts.clear();
        }
        self.prompts.insert(prompt.to_string(), e.shallow_clone());
        Ok(e)
    }

    /// Standard normal noise of `shape`, the same for the same seed on any device.
    fn noise(&self, seed: u64, shape: &[i64]) -> Tensor {
        let _lock = NOISE_LOCK.lock();
        tch::manual_seed(seed as i64);
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
            .to_device(self.device)
            .to_kind(self.kind)
    }

    /// The denoising loop: from `noise` (1, z, F, h, w) to clean latents, guided by `cond`
    /// (and `uncond` at `guidance` when given), with `context` clean frames re-imposed at the
    /// current noise level before every step. Public so the parity tests can run it on
    /// diffusers' inputs.
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        &self,
        noise: &Tensor,
        cond: &Tensor,
        uncond: Option<&Tensor>,
        guidance: f64,
        schedule: &Schedule,
        context: Option<&Tensor>,
        progress: &mut dyn FnMut(StepProgress) -> ControlFlow<()>,
    ) -> Result<Tensor, GenerateError> {
        let _no_grad = tch::no_grad_guard();
        let steps = schedule.timesteps.len();
        let mut latents = noise.shallow_clone();
        let impose = |latents: &Tensor, sigma: f64| {
            if let Some(ctx) = context {
                let k = ctx.size()[2];
                let noisy = ctx * (1.0 - sigma) + noise.narrow(2, 0, k) * sigma;
                latents
                    .narrow(2, 0, k)
                    .copy_(&noisy.to_kind(latents.kind()));
            }
        };
        for i in 0..steps {
            impose(&latents, f64::from(schedule.sigmas[i]));
            let t = Tensor::from_slice(&[schedule.timesteps[i]]).to_device(self.device);
            let mut velocity = self.transformer.forward(&latents, &t, cond);
            if let Some(uncond) = uncond {
                let v_uncond = self.transformer.forward(&latents, &t, uncond);
                velocity = &v_uncond + (&velocity - &v_uncond) * guidance;
            }
            latents = FlowMatchEuler::step(schedule, i, &latents, &velocity);
            let step = StepProgress {
                step: i as u32 + 1,
                total_steps: steps as u32,
            };
            if progress(step).is_break() {
                return Err(GenerateError::Cancelled);
            }
        }
        impose(&latents, 0.0);
        Ok(latents)
    }
}

impl WanGenerator {
    /// The image as a normalised latent frame (1, z, 1, h, w): centre-cropped to the stream's
    /// aspect ratio, resized to its size, VAE-encoded.
    fn encode_image(&self, image: &RgbImage) -> Result<Tensor, GenerateError> {
        let (iw, ih) = (i64::from(image.width), i64::from(image.height));
        if image.rgb.len() as i64 != iw * ih * 3 || iw == 0 || ih == 0 {
            return Err(GenerateError::InvalidRequest(format!(
                "initial image of {iw}x{ih} has {} bytes",
                image.rgb.len()
            )));
        }
        let (tw, th) = (i64::from(self.format.width), i64::from(self.format.height));
        let pixels = Tensor::from_slice(&image.rgb)
            .view([ih, iw, 3])
            .permute([2, 0, 1])
            .unsqueeze(0)
            .to_kind(Kind::Float);
        // Largest centred crop with the target aspect ratio.
        let (cw, ch) = if iw * th > ih * tw {
            (ih * tw / th, ih)
        } else {
            (iw, iw * th / tw)
        };
        let cropped =
            pixels
                .narrow(3, (iw - cw) / 2, cw.max(1))
                .narrow(2, (ih - ch) / 2, ch.max(1));
        let resized = cropped.upsample_bilinear2d([th, tw], false, None, None);
        let video = (resized / 127.5 - 1.0)
            .unsqueeze(2)
            .to_device(self.device)
            .to_kind(self.kind);
        Ok(self.vae.encode(&video))
    }
}

/// RGB24 frames from video in [-1, 1] (1, 3, T, H, W).
fn to_rgb(video: &Tensor) -> Result<Vec<Vec<u8>>, GenerateError> {
    let frames = ((video.to_kind(Kind::Float) + 1.0) * 127.5)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .squeeze_dim(0)
        .permute([1, 2, 3, 0])
        .contiguous()
        .to_device(Device::Cpu);
    let t = frames.size()[0];
    (0..t)
        .map(|i| {
            Vec::<u8>::try_from(frames.get(i).flatten(0, -1))
                .map_err(|e| GenerateError::Failed(e.to_string()))
        })
        .collect()
}

impl Generator for WanGenerator {
    fn format(&self) -> StreamFormat {
        self.format
    }

    fn state_kind(&self) -> &'static str {
        WAN_STATE_KIND
    }

    fn validate_state(&self, state: &ContinuationState) -> Result<(), GenerateError> {
        self.streams.validate(state)
    }

    fn export_state(
        &mut self,
        state: &ContinuationState,
        owner: &str,
    ) -> Result<ContinuationState, GenerateError> {
        self.streams.export(state, owner)
    }

    fn checkpoint_state(
        &mut self,
        state: &ContinuationState,
        owner: &str,
        max_bytes: u64,
    ) -> Result<ContinuationState, GenerateError> {
        self.streams.checkpoint(state, owner, max_bytes)
    }

    fn generate(
        &mut self,
        request: &SegmentRequest,
        state: Option<&ContinuationState>,
        progress: &mut dyn FnMut(StepProgress) -> ControlFlow<()>,
    ) -> Result<GeneratedSegment, GenerateError> {
        request.check()?;
        let _no_grad = tch::no_grad_guard();
        let stream = match state {
            Some(s) => Some(self.streams.restore(s)?),
            None => None,
        };
        let cond = self.embed(&request.prompt)?;
        let uncond = if request.guidance_scale > 1.0 {
            Some(self.embed(request.negative_prompt.as_deref().unwrap_or(""))?)
        } else {
            None
        };
        // A fresh stream starts from the initial image's latent when there is one, which
        // conditions the segment like a previous segment's last frame would.
        let image = match (&stream, &request.initial_image) {
            (None, Some(image)) => Some(self.encode_image(image)?),
            _ => None,
        };
        // A fresh stream decodes one extra latent frame (the image's, or an extra generated
        // one): the first latent frame yields a single video frame, which is dropped so every
        // segment has exactly frames_per_segment frames.
        let fresh_stream = stream.is_none();
        let context = match &stream {
            Some(s) => Some(s.context.shallow_clone()),
            None => image.as_ref().map(Tensor::shallow_clone),
        };
        let k = if context.is_some() { CONTEXT_FRAMES } else { 0 };
        let new_frames = self.latent_frames + i64::from(fresh_stream && image.is_none());
        let z = self.vae.config().z_dim;
        let (h, w) = self.latent_hw;
        let seed =
            request.seed ^ u64::from(request.segment_idx).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let noise = self.noise(seed, &[1, z, k + new_frames, h, w]);
        let schedule = self.sampler.schedule(request.num_inference_steps);
        let latents = self.sample(
            &noise,
            &cond,
            uncond.as_ref(),
            f64::from(request.guidance_scale),
            &schedule,
            context.as_ref(),
            progress,
        )?;
        let fresh = latents.narrow(2, k, new_frames);
        let (mut decoder, history) = match stream {
            // Restored from a portable checkpoint: decoding the history (its frames were
            // shown already; discarded here) rebuilds the causal caches the decoder needs to
            // continue from it.
            Some(s) if s.needs_cache_rebuild() => {
                let mut decoder = DecoderState::default();
                let _ = self.vae.decode(&s.history, &mut decoder);
                (decoder, Some(s.history))
            }
            Some(s) => (s.decoder, Some(s.history)),
            None => (DecoderState::default(), None),
        };
        let to_decode = if image.is_some() { &latents } else { &fresh };
        let mut video = self.vae.decode(to_decode, &mut decoder);
        let history = match history {
            Some(h) => Tensor::cat(&[h, to_decode.shallow_clone()], 2),
            None => to_decode.shallow_clone(),
        };
        let kept = history.size()[2].min(self.history_frames);
        let history = history.narrow(2, history.size()[2] - kept, kept).copy();
        if fresh_stream {
            video = video.narrow(2, 1, video.size()[2] - 1);
        }
        let frames = to_rgb(&video)?;
        let next = StreamState {
            context: fresh
                .narrow(2, new_frames - CONTEXT_FRAMES, CONTEXT_FRAMES)
                .copy(),
            history,
            decoder,
        };
        let next_state = self.streams.keep(next);
        Ok(GeneratedSegment {
            frames,
            audio: None,
            next_state,
        })
    }
}
