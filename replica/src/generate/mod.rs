//! Video generation behind one small trait, so the session controller does not care whether
//! frames come from the real libtorch model or from the [`mock::MockGenerator`] test double.
//!
//! A generator runs on one worker thread at a time; it is `Send` but never shared. Each call
//! produces one segment of owned frames (handed to the encoder without copying or aliasing)
//! and the continuation state the next segment starts from.

pub mod mock;
pub mod seam;
pub mod wan;

use std::time::Duration;

use std::ops::ControlFlow;

use framecast_common::protocol::ContinuationState;

/// Frame geometry and audio format of everything a generator produces; a worker process
/// reports it to the server in its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamFormat {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Frames in one segment.
    pub frames_per_segment: u32,
    /// `(sample rate, channels)` of the interleaved f32 audio, when there is sound.
    pub audio: Option<(u32, u32)>,
}

impl StreamFormat {
    /// Media time of one segment in milliseconds.
    pub fn segment_duration_ms(&self) -> u64 {
        u64::from(self.frames_per_segment) * 1000 / u64::from(self.fps)
    }
}

/// An RGB8 picture, e.g. the client's initial image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub rgb: Vec<u8>,
}

/// What to generate next.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegmentRequest {
    /// 0-based segment number within the session.
    pub segment_idx: u32,
    /// What to show.
    pub prompt: String,
    /// What to steer away from.
    pub negative_prompt: Option<String>,
    /// Noise seed.
    pub seed: u64,
    /// Denoising steps.
    pub num_inference_steps: u32,
    /// Classifier-free guidance scale.
    pub guidance_scale: f32,
    /// Starts a new stream: the continuation state carried from the previous segment is
    /// dropped, so nothing of the earlier frames conditions this one (Dreamverse's restart,
    /// new project and single clips). Segment 0 of a session is fresh anyway.
    #[serde(default)]
    pub fresh_stream: bool,
    /// Write a resumable checkpoint of the state this segment ends in (the session's resume
    /// record needs one per segment), holding the generator's exact state when it takes at
    /// most this many bytes and a smaller portable one otherwise
    /// ([`Generator::checkpoint_state`]). `None`: no checkpoint.
    #[serde(default)]
    pub checkpoint_max_bytes: Option<u64>,
    /// The session's initial image, on its first segment: a fresh stream starts from it.
    /// (Not serialized: worker processes receive the pixels as a frame body.)
    #[serde(skip)]
    pub initial_image: Option<std::sync::Arc<RgbImage>>,
}

impl SegmentRequest {
    /// Rejects what no generator can serve, before any model work.
    pub fn check(&self) -> Result<(), GenerateError> {
        if self.num_inference_steps == 0 {
            return Err(GenerateError::InvalidRequest(
                "num_inference_steps must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Progress reported after each denoising step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepProgress {
    /// 1-based step just finished.
    pub step: u32,
    /// Steps in all.
    pub total_steps: u32,
}

/// One generated segment.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedSegment {
    /// RGB24 frames, `width * height * 3` bytes each, owned by the receiver.
    pub frames: Vec<Vec<u8>>,
    /// Interleaved f32 samples covering the segment, when the format has audio.
    pub audio: Option<Vec<f32>>,
    /// Where the next segment continues from.
    pub next_state: ContinuationState,
}

/// Why generation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum GenerateError {
    /// The continuation state is of another kind or malformed.
    #[error("continuation state rejected: {0}")]
    InvalidState(String),
    /// The request cannot be served (zero steps, empty prompt, ...).
    #[error("invalid segment request: {0}")]
    InvalidRequest(String),
    /// The model failed.
    #[error("generation failed: {0}")]
    Failed(String),
    /// The progress callback asked to stop (the session went away).
    #[error("generation cancelled")]
    Cancelled,
}

/// Produces video segment by segment.
pub trait Generator: Send {
    /// Geometry and audio format of every segment.
    fn format(&self) -> StreamFormat;

    /// The `kind` this generator writes into continuation states and accepts back.
    fn state_kind(&self) -> &'static str;

    /// Checks a state imported from a client before any segment is generated.
    fn validate_state(&self, state: &ContinuationState) -> Result<(), GenerateError>;

    /// A portable form of `state` (a `next_state` this generator returned): what it refers to
    /// is written to the blob store under `owner` (the session's export owner, see
    /// [`crate::store::export_owner`]) so any process can continue the stream. Generators keep
    /// their newest stream live and serialize it only here, because a real model's stream
    /// state (the VAE's causal caches at full resolution) can be gigabytes. States that are
    /// portable already come back as they are.
    fn export_state(
        &mut self,
        state: &ContinuationState,
        owner: &str,
    ) -> Result<ContinuationState, GenerateError> {
        let _ = owner;
        Ok(state.clone())
    }

    /// A checkpoint of `state` (a `next_state` this generator returned) that any process
    /// sharing the blob store can continue from, stored under `owner` (the session id, so
    /// it goes with the session): the exact state when its bytes fit in `max_bytes`, else a
    /// portable approximation that is never larger (for Wan: the clean latent context
    /// without the decoder's caches, which are rebuilt on restore). A real model's exact
    /// state can be gigabytes, and a checkpoint is written after every segment, so the
    /// limit is what keeps it cheap. Generators whose state is small return the exact one.
    fn checkpoint_state(
        &mut self,
        state: &ContinuationState,
        owner: &str,
        max_bytes: u64,
    ) -> Result<ContinuationState, GenerateError> {
        let _ = max_bytes;
        self.export_state(state, owner)
    }

    /// Generates one segment, continuing from `state` (`None` for a fresh stream), calling
    /// `progress` after every denoising step; `ControlFlow::Break` from it stops generation
    /// with [`GenerateError::Cancelled`], so a worker is freed soon after its client leaves.
    fn generate(
        &mut self,
        request: &SegmentRequest,
        state: Option<&ContinuationState>,
        progress: &mut dyn FnMut(StepProgress) -> ControlFlow<()>,
    ) -> Result<GeneratedSegment, GenerateError>;
}

/// Why a generator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The device in the settings is not usable.
    #[error("generator.device: {0}")]
    Device(#[from] crate::device::DeviceError),
    /// The model directory could not be loaded.
    #[error("generator.model_path: {0}")]
    Model(#[from] wan::WanError),
}

/// The generator `settings` ask for (one per worker); model-backed generators keep stream
/// states in `blobs`.
pub fn build(
    settings: &crate::config::GeneratorSettings,
    blobs: std::sync::Arc<dyn crate::store::BlobStore>,
) -> Result<Box<dyn Generator>, BuildError> {
    let format = StreamFormat {
        width: settings.width,
        height: settings.height,
        fps: settings.fps,
        frames_per_segment: settings.frames_per_segment,
        audio: None,
    };
    Ok(match settings.kind {
        crate::config::GeneratorKind::Mock => {
            Box::new(mock::MockGenerator::new(mock::MockSettings {
                format: StreamFormat {
                    audio: settings.mock_audio.then_some((48_000, 2)),
                    ..format
                },
                latency: Duration::from_millis(settings.mock_latency_ms),
            }))
        }
        crate::config::GeneratorKind::Wan => {
            let device = crate::device::probe(settings.device)?.device;
            Box::new(wan::generator::WanGenerator::load(
                &settings.model_path,
                format,
                device,
                blobs,
            )?)
        }
    })
}
