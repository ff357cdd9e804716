//! The replica's settings, section by section, loaded as defaults < YAML < environment.
//!
//! Every section rejects unknown fields so a typo in a file fails loudly at start-up
//! instead of silently keeping a default.

use std::path::{Path, PathBuf};

use framecast_common::config::{
    ConfigError, FieldError, LayeredConfig, MAX_SECONDS, Validate, at_least, at_least_one,
    at_most_max_seconds, in_range, not_empty,
};
use serde::{Deserialize, Serialize};

/// Environment variables starting with this prefix (then `__`) override the file.
pub const ENV_PREFIX: &str = "FRAMECAST_REPLICA";

/// Everything the replica reads from its configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicaConfig {
    /// HTTP/WebSocket listener.
    pub server: ServerSettings,
    /// Session budgets and protocol limits.
    pub streaming: StreamingSettings,
    /// The Dreamverse protocol on `/ws`: its session lifetime and segment cap.
    pub dreamverse: DreamverseSettings,
    /// Workers that run generation.
    pub pool: PoolSettings,
    /// Which generator runs and where.
    pub generator: GeneratorSettings,
    /// How frames become fragmented MP4.
    pub media: MediaSettings,
    /// Where continuation states and blobs are kept.
    pub store: StoreSettings,
    /// LLM providers for prompt enhancement, auto-extension and rewrites, used by sessions
    /// of both protocols (see `crate::prompt`).
    pub prompt: PromptSettings,
    /// The prompt safety filter (a fastText classifier); off unless enabled.
    pub safety: SafetySettings,
    /// Sessions that ask for it also go out as an HLS ladder (the `broadcast` module).
    pub broadcast: BroadcastSettings,
}

impl ReplicaConfig {
    /// Loads defaults < `file` < `FRAMECAST_REPLICA__*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        LayeredConfig::new(ENV_PREFIX).file(file).load()
    }
}

/// Listener address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on for clients: `/v1/stream`, the player, `/healthz` and `/readyz`
    /// (0 picks a free one, which is logged).
    pub port: u16,
    /// Address of the admin listener (`/status`, `/metrics`, probes); `null` means `host`.
    /// Keep it off the public network.
    pub admin_host: Option<String>,
    /// Port of the admin listener (0 picks a free one); must differ from `port`.
    pub admin_port: u16,
    /// Who may open a session when clients can reach the replica without the router
    /// (the router checks the same way in front of it): API keys, JWTs, allowed origins.
    pub auth: framecast_common::auth::AuthConfig,
    /// On SIGTERM, how long live sessions may go on finishing their segment before they are
    /// ended (`ltx2_stream_complete {reason: draining}`, close 1001) and the process exits.
    pub shutdown_grace_seconds: u64,
    /// Web origins (`https://app.example.com`) whose pages may read this server's HTTP
    /// answers from script; empty: none, only same-origin pages (the built-in player).
    /// WebSocket upgrades are not governed by CORS.
    pub cors_allowed_origins: Vec<String>,
    /// A directory of static files (a built web app such as Dreamverse's `out/`) served at
    /// `/` on the client port, `index.html` for directories; `null` serves the built-in
    /// player there. The API paths keep their answers either way.
    pub web_root: Option<PathBuf>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8000,
            admin_host: None,
            admin_port: 8001,
            auth: framecast_common::auth::AuthConfig::default(),
            shutdown_grace_seconds: 30,
            cors_allowed_origins: Vec::new(),
            web_root: None,
        }
    }
}

/// Session budgets and protocol limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingSettings {
    /// A session with neither client messages nor stream activity (a segment generated or
    /// sent) for this long gets `session_timeout` and is closed: a paused, silent session.
    pub session_timeout_seconds: u64,
    /// Longest life of any session, streaming or paused, active or not; it then ends with
    /// `ltx2_stream_complete {reason: max_duration}` and close 1000.
    pub max_session_seconds: u64,
    /// Segments one session may generate before the stream ends with `segment_cap`.
    pub generation_segment_cap: u32,
    /// Sessions this replica serves at once; more are refused with close 1013.
    pub max_sessions: u32,
    /// Largest client WebSocket message accepted; larger ones close the session with 1009.
    pub max_message_bytes: usize,
    /// Largest decoded `initial_image` in `session_init_v2` (the opening frame may exceed
    /// `max_message_bytes` by what such an image needs in base64).
    pub max_init_image_bytes: usize,
    /// A client that sends no `session_init_v2` within this time is closed.
    pub init_timeout_seconds: u64,
    /// A client that takes this long to accept one message is disconnected (slow reader).
    pub client_write_timeout_seconds: u64,
    /// Messages queued for one client; when full, generation waits instead of buffering.
    pub send_queue_messages: usize,
    /// The server pings every client this often; 0 turns pings off.
    pub ping_interval_seconds: u64,
    /// A client that has not answered a ping (pong) this long after it was sent is taken as
    /// gone: its session ends and its worker goes back (a dead peer that never reads would
    /// otherwise hold a paused session's worker until the idle timeout).
    pub pong_timeout_seconds: u64,
    /// Directory for one JSONL event log per session; `null` turns the logs off.
    pub session_log_dir: Option<PathBuf>,
    /// One session's log stops growing at this many bytes (its last line says so).
    pub session_log_max_file_bytes: u64,
    /// All session logs in `session_log_dir` together; opening a new one deletes the oldest
    /// until they fit.
    pub session_log_max_total_bytes: u64,
    /// What one client may ask for; anything beyond gets `invalid_message` naming the field.
    pub limits: ClientLimits,
}

/// Bounds on every number and list a client controls. Each costs GPU time or memory, so
/// none is left to the client: a request beyond one is refused with `invalid_message`
/// naming the field and the allowed range, and the session goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientLimits {
    /// Most denoising steps one segment may ask for (`num_inference_steps`). The sampler's
    /// memory and time grow with it; 4 billion once allocated 14 GB in one worker.
    pub max_inference_steps: u32,
    /// Highest classifier-free guidance scale (`guidance_scale` must be finite and within
    /// 0 ..= this).
    pub max_guidance_scale: f32,
    /// Longest prompt or negative prompt, in characters.
    pub max_prompt_chars: usize,
    /// Prompts one session may have waiting for a segment; more are refused until one
    /// starts.
    pub max_queued_prompts: usize,
    /// Longest seed-prompt list (`curated_prompts`, `seed_prompts_updated`).
    pub max_seed_prompts: usize,
    /// Largest initial image in pixels (width x height), checked before its pixels are
    /// decoded: a small PNG can claim gigapixels.
    pub max_image_pixels: u64,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_inference_steps: 100,
            max_guidance_scale: 20.0,
            max_prompt_chars: 2000,
            max_queued_prompts: 16,
            max_seed_prompts: 64,
            max_image_pixels: 4096 * 4096,
        }
    }
}

impl Default for StreamingSettings {
    fn default() -> Self {
        Self {
            session_timeout_seconds: 120,
            max_session_seconds: 3600,
            generation_segment_cap: 32,
            max_sessions: 4,
            max_message_bytes: 1 << 20,
            max_init_image_bytes: 32 << 20,
            init_timeout_seconds: 10,
            client_write_timeout_seconds: 10,
            send_queue_messages: 64,
            ping_interval_seconds: 15,
            pong_timeout_seconds: 15,
            session_log_dir: Some(std::env::temp_dir().join("framecast-sessions")),
            session_log_max_file_bytes: 1 << 20,
            session_log_max_total_bytes: 256 << 20,
            limits: ClientLimits::default(),
        }
    }
}

/// The Dreamverse protocol (`WS /ws`, what FastVideo's Dreamverse web app speaks). Its
/// sessions also follow `streaming` (limits, message sizes, pings, the init wait), except the
/// idle timeout and the `/v1/stream` segment cap: a Dreamverse session lives a fixed time and
/// its cap pauses a rollout instead of ending the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DreamverseSettings {
    /// Seconds a session lives from `gpu_assigned` whatever it does (Dreamverse: 300), sent
    /// as `gpu_assigned.session_timeout`; it then gets `session_timeout` and close 1000.
    /// `streaming.max_session_seconds` (from accept) ends it first if shorter.
    pub session_lifetime_seconds: u64,
    /// Segments of one rollout before its stream completes and the server waits for
    /// `restart_generation` (Dreamverse: 6); single-clip mode has none.
    pub generation_segment_cap: u32,
}

impl Default for DreamverseSettings {
    fn default() -> Self {
        Self {
            session_lifetime_seconds: 300,
            generation_segment_cap: 6,
        }
    }
}

/// A named OpenAI-compatible provider whose base URL and key variable are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderPreset {
    /// `https://api.cerebras.ai/v1`, key in `CEREBRAS_API_KEY`.
    Cerebras,
    /// `https://api.groq.com/openai/v1`, key in `GROQ_API_KEY`.
    Groq,
}

impl ProviderPreset {
    /// The preset's chat-completions base URL (without `/chat/completions`).
    pub fn base_url(self) -> &'static str {
        match self {
            Self::Cerebras => "https://api.cerebras.ai/v1",
            Self::Groq => "https://api.groq.com/openai/v1",
        }
    }

    /// The environment variable the preset reads its API key from.
    pub fn api_key_env(self) -> &'static str {
        match self {
            Self::Cerebras => "CEREBRAS_API_KEY",
            Self::Groq => "GROQ_API_KEY",
        }
    }
}

/// Longest request timeout a prompt provider may be given (10 minutes).
pub const MAX_PROMPT_TIMEOUT_MS: u64 = 600_000;
/// Largest `max_tokens` a prompt provider may be asked for.
pub const MAX_PROMPT_MAX_TOKENS: u32 = 32_768;

/// The prompt pipeline: OpenAI-compatible chat-completions providers tried in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptSettings {
    /// Whether the pipeline is built at all (off for the local demo).
    pub enabled: bool,
    /// Providers in priority order; the next one is tried when one fails retryably.
    pub providers: Vec<ProviderSettings>,
    /// Milliseconds one provider request may take (1..=600000).
    pub timeout_ms: u64,
    /// Milliseconds a whole operation may take, fallbacks included (1..=600000): past it
    /// the session takes the failure path (the raw prompt, `prompt_fallback_used`,
    /// `auto_prompt_failed`), so a dead provider never holds generation longer.
    pub operation_timeout_ms: u64,
    /// Sampling temperature sent to every provider (0..=2).
    pub temperature: f32,
    /// Most tokens a provider may answer with (1..=32768).
    pub max_tokens: u32,
    /// A directory with `enhance.txt`, `auto_extend.txt`, `rewrite.txt` replacing the
    /// built-in system prompts; a file is re-read when its modification time changes.
    pub system_prompt_dir: Option<PathBuf>,
}

impl Default for PromptSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            providers: Vec::new(),
            timeout_ms: 20_000,
            operation_timeout_ms: 30_000,
            temperature: 0.7,
            max_tokens: 256,
            system_prompt_dir: None,
        }
    }
}

/// One OpenAI-compatible provider: a preset (Cerebras, Groq) or any server by base URL.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Name reported as the provider that answered; unique in the list.
    pub name: String,
    /// Fills `base_url` and `api_key_env` when they are not given.
    #[serde(default)]
    pub preset: Option<ProviderPreset>,
    /// Base URL such as `http://127.0.0.1:8000/v1`; requests go to `{base_url}/chat/completions`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Model name sent in every request.
    pub model: String,
    /// API key; wins over `api_key_env`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Whether requests may go without a key (local vLLM, llama.cpp, Ollama).
    #[serde(default)]
    pub allow_no_key: bool,
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("name", &self.name)
            .field("preset", &self.preset)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_env", &self.api_key_env)
            .field("allow_no_key", &self.allow_no_key)
            .finish()
    }
}

impl ProviderSettings {
    /// The configured base URL, or the preset's.
    pub fn resolved_base_url(&self) -> Option<&str> {
        self.base_url
            .as_deref()
            .or_else(|| self.preset.map(ProviderPreset::base_url))
    }

    /// The configured key variable, or the preset's.
    pub fn resolved_api_key_env(&self) -> Option<&str> {
        self.api_key_env
            .as_deref()
            .or_else(|| self.preset.map(ProviderPreset::api_key_env))
    }
}

impl PromptSettings {
    fn validate(&self) -> Result<(), FieldError> {
        in_range(
            "prompt.timeout_ms",
            self.timeout_ms,
            1,
            MAX_PROMPT_TIMEOUT_MS,
        )?;
        in_range(
            "prompt.operation_timeout_ms",
            self.operation_timeout_ms,
            1,
            MAX_PROMPT_TIMEOUT_MS,
        )?;
        in_range(
            "prompt.max_tokens",
            self.max_tokens,
            1,
            MAX_PROMPT_MAX_TOKENS,
        )?;
        if !(self.temperature.is_finite() && (0.0..=2.0).contains(&self.temperature)) {
            return Err(FieldError::new(
                "prompt.temperature",
                format!("must be between 0 and 2 (got {})", self.temperature),
            ));
        }
        if self.enabled && self.providers.is_empty() {
            return Err(FieldError::new(
                "prompt.providers",
                "must name at least one provider when prompt.enabled is true",
            ));
        }
        for (i, p) in self.providers.iter().enumerate() {
            let field = |name: &str| format!("prompt.providers[{i}].{name}");
            not_empty(&field("name"), &p.name)?;
            if self.providers[..i].iter().any(|q| q.name == p.name) {
                return Err(FieldError::new(
                    field("name"),
                    format!("`{}` is used by an earlier provider", p.name),
                ));
            }
            not_empty(&field("model"), &p.model)?;
            match p.resolved_base_url() {
                None => {
                    return Err(FieldError::new(
                        field("base_url"),
                        "is required without a preset",
                    ));
                }
                Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                    return Err(FieldError::new(
                        field("base_url"),
                        format!("`{url}` is not an http:// or https:// URL"),
                    ));
                }
                Some(_) => {}
            }
            if let Some(env) = &p.api_key_env {
                not_empty(&field("api_key_env"), env)?;
            }
        }
        Ok(())
    }
}

/// The prompt safety filter: a supervised fastText classifier that keeps unsafe prompts
/// from generation (see `crate::prompt::safety`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SafetySettings {
    /// Whether prompts are screened (off for the local demo).
    pub enabled: bool,
    /// The classifier, a `.bin` from fastText's `train_supervised` (not a quantized
    /// `.ftz`). Required when enabled; a file that is missing or cannot be read does not
    /// stop the replica: the filter is then unavailable and allows every prompt, and the
    /// cause is logged once at start-up.
    pub model_path: Option<PathBuf>,
    /// Lowest probability (0..=1) of `unsafe_label`, as the classifier's top label, that
    /// blocks a prompt.
    pub block_threshold: f32,
    /// The label meaning unsafe, with fastText's prefix, as in the training data.
    pub unsafe_label: String,
}

impl Default for SafetySettings {
    fn default() -> Self {
        Self {
            enabled: false,
            model_path: None,
            block_threshold: 0.5,
            unsafe_label: "__label__unsafe".to_string(),
        }
    }
}

impl SafetySettings {
    fn validate(&self) -> Result<(), FieldError> {
        in_range("safety.block_threshold", self.block_threshold, 0.0, 1.0)?;
        not_empty("safety.unsafe_label", &self.unsafe_label)?;
        if self.enabled && self.model_path.is_none() {
            return Err(FieldError::new(
                "safety.model_path",
                "is required when safety.enabled is true",
            ));
        }
        Ok(())
    }
}

/// Where a worker's generation runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// Generators live on threads of the server process (simplest; a crash takes the
    /// replica down).
    #[default]
    InProcess,
    /// One child process per worker (`framecast-replica worker`), restarted when it dies;
    /// a crash fails only that worker's session.
    Subprocess,
}

/// Generation workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSettings {
    /// Workers (one per device); sessions beyond them wait in a FIFO queue.
    pub num_workers: u32,
    /// A queued session that gets no worker within this time is told to retry later.
    pub acquire_timeout_seconds: u64,
    /// Run a two-segment warmup on each worker before reporting ready.
    pub warmup: bool,
    /// Threads in this process or one child process per worker.
    pub mode: PoolMode,
    /// The device of each worker, in order (`cuda:0`, `cuda:1`, ...); empty: every worker
    /// uses `generator.device`. When set, its length must equal `num_workers`.
    pub devices: Vec<DeviceKind>,
    /// Seconds to wait before restarting a worker process that died (doubles on repeated
    /// crashes, up to 60).
    pub restart_backoff_seconds: u64,
    /// A worker process that has segments to make but sends nothing (no step, no media) for
    /// this many seconds is taken as hung (a stuck CUDA call), killed and restarted.
    pub stall_timeout_seconds: u64,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            num_workers: 1,
            acquire_timeout_seconds: 60,
            warmup: true,
            mode: PoolMode::InProcess,
            devices: Vec::new(),
            restart_backoff_seconds: 1,
            stall_timeout_seconds: 600,
        }
    }
}

impl PoolSettings {
    /// The device of worker `index`.
    pub fn device_of(&self, index: usize, default: DeviceKind) -> DeviceKind {
        self.devices.get(index).copied().unwrap_or(default)
    }
}

/// Which generator runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeneratorKind {
    /// Deterministic synthetic frames (`MockGenerator`), for tests and demos without weights.
    #[default]
    Mock,
    /// The Wan2.1 text-to-video model in `model_path` (diffusers format), run with libtorch.
    Wan,
}

/// Where tensors live: `auto`, `cpu`, `cuda` (the first visible GPU) or `cuda:N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceKind {
    /// CUDA when libtorch sees a GPU, else CPU.
    #[default]
    Auto,
    /// CPU, fp32.
    Cpu,
    /// A CUDA device (`None`: the first visible one); start-up fails if it is not there.
    Cuda(Option<u32>),
}

impl DeviceKind {
    /// The CUDA index this names, if any.
    pub fn cuda_index(self) -> Option<u32> {
        match self {
            DeviceKind::Cuda(index) => index,
            _ => None,
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceKind::Auto => f.write_str("auto"),
            DeviceKind::Cpu => f.write_str("cpu"),
            DeviceKind::Cuda(None) => f.write_str("cuda"),
            DeviceKind::Cuda(Some(i)) => write!(f, "cuda:{i}"),
        }
    }
}

impl TryFrom<String> for DeviceKind {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("unknown device `{s}`; expected auto, cpu, cuda or cuda:N");
        match s.as_str() {
            "auto" => Ok(DeviceKind::Auto),
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda(None)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(|i| DeviceKind::Cuda(Some(i)))
                .ok_or_else(bad),
        }
    }
}

impl From<DeviceKind> for String {
    fn from(d: DeviceKind) -> String {
        d.to_string()
    }
}

/// Generator choice and model location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorSettings {
    pub kind: GeneratorKind,
    /// Diffusers-format model directory (used by model-backed generators).
    pub model_path: PathBuf,
    pub device: DeviceKind,
    /// Output width in pixels (even).
    pub width: u32,
    /// Output height in pixels (even).
    pub height: u32,
    /// Output frames per second.
    pub fps: u32,
    pub frames_per_segment: u32,
    /// Denoising steps when the client does not say.
    pub num_inference_steps: u32,
    /// Classifier-free guidance when the client does not say (1: none, one transformer pass
    /// per step; above 1 two). The best value is the model's: measured by `framecast-eval`.
    pub guidance_scale: f32,
    /// `mock` only: wall time one segment takes.
    pub mock_latency_ms: u64,
    /// `mock` only: add a tone audio track.
    pub mock_audio: bool,
}

impl Default for GeneratorSettings {
    fn default() -> Self {
        Self {
            kind: GeneratorKind::default(),
            model_path: PathBuf::from("models/wan-tiny"),
            device: DeviceKind::default(),
            width: 512,
            height: 288,
            fps: 24,
            frames_per_segment: 24,
            num_inference_steps: 4,
            guidance_scale: 1.0,
            mock_latency_ms: 250,
            mock_audio: false,
        }
    }
}

/// H.264 encoder choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoEncoderKind {
    /// `nvh264enc` when the element and a GPU exist, else `x264enc`.
    #[default]
    Auto,
    /// Software `x264enc`.
    X264,
    /// NVIDIA `nvh264enc`.
    Nvh264,
}

/// H.264 profile requested from the encoder (the real one is read back from its output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum H264Profile {
    /// Constrained baseline: decodes everywhere, cheapest to encode.
    #[default]
    ConstrainedBaseline,
    Main,
    /// High: best quality per bit.
    High,
}

/// Audio encoder for streams that carry sound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioEncoderKind {
    /// `opusenc`.
    #[default]
    Opus,
    /// `avenc_aac` (AAC-LC).
    Aac,
}

/// Encoding into fragmented MP4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    pub video_encoder: VideoEncoderKind,
    /// x264 `speed-preset` (ultrafast … placebo).
    pub x264_speed_preset: String,
    /// Target video bitrate.
    pub bitrate_kbps: u32,
    /// Highest H.264 profile the encoder may use (x264 signals the lowest its preset needs).
    pub h264_profile: H264Profile,
    /// Encoder for the audio track, when a generator produces sound.
    pub audio_encoder: AudioEncoderKind,
    /// Length of one fMP4 fragment (and GOP); shorter starts playback sooner.
    pub fragment_duration_ms: u32,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            video_encoder: VideoEncoderKind::default(),
            x264_speed_preset: "ultrafast".into(),
            bitrate_kbps: 2500,
            h264_profile: H264Profile::default(),
            audio_encoder: AudioEncoderKind::default(),
            fragment_duration_ms: 500,
        }
    }
}

/// Broadcast output: a session that asks for it (`session_init_v2.broadcast`) is also
/// encoded as a ladder of renditions into CMAF segments with live HLS playlists, served at
/// `/v1/broadcast/{stream id}/master.m3u8` for any number of viewers and HTTP caches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BroadcastSettings {
    /// Whether sessions may broadcast at all; off by default (each broadcast costs one
    /// encoder per worker per rung).
    pub enabled: bool,
    /// Where segments and playlists are written (one directory per stream) and served from.
    pub dir: PathBuf,
    /// The renditions, largest first: each scales the generated frames down by `divisor`.
    pub ladder: Vec<RungSettings>,
    /// Encoder workers per rung at the start (threads, one encoder each); 1 to 16.
    pub workers_per_rung: usize,
    /// Segments a rung's queue holds waiting for a worker; when full, the session's media
    /// waits (back-pressure, as for a slow WebSocket client). At least 1.
    pub queue_segments: usize,
    /// Segments listed in a live media playlist (older ones are deleted); 3 to 100.
    pub window_segments: usize,
    /// Broadcasts at once on this replica; a session asking beyond it streams without one.
    pub max_broadcasts: usize,
    /// Seconds an ended broadcast's files stay servable before they are deleted.
    pub retain_seconds: u64,
}

/// One rendition of the ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RungSettings {
    /// Its path component: letters, digits, `-` and `_`, at most 16.
    pub name: String,
    /// The generated frame size divided by this (1, 2, 4, …), rounded down to even.
    pub divisor: u32,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
}

impl Default for BroadcastSettings {
    fn default() -> Self {
        let rung = |name: &str, divisor, bitrate_kbps| RungSettings {
            name: name.into(),
            divisor,
            bitrate_kbps,
        };
        Self {
            enabled: false,
            dir: PathBuf::from("/tmp/framecast-broadcast"),
            ladder: vec![
                rung("full", 1, 2500),
                rung("half", 2, 800),
                rung("quarter", 4, 250),
            ],
            workers_per_rung: 2,
            queue_segments: 4,
            window_segments: 6,
            max_broadcasts: 4,
            retain_seconds: 60,
        }
    }
}

impl BroadcastSettings {
    fn validate(&self) -> Result<(), FieldError> {
        if self.ladder.is_empty() {
            return Err(FieldError::new(
                "broadcast.ladder",
                "needs at least one rung",
            ));
        }
        for (i, rung) in self.ladder.iter().enumerate() {
            let valid_name = !rung.name.is_empty()
                && rung.name.len() <= 16
                && rung
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_name {
                return Err(FieldError::new(
                    format!("broadcast.ladder[{i}].name"),
                    format!("`{}`: 1 to 16 letters, digits, `-` or `_`", rung.name),
                ));
            }
            if self.ladder[..i].iter().any(|r| r.name == rung.name) {
                return Err(FieldError::new(
                    format!("broadcast.ladder[{i}].name"),
                    format!("`{}` is used twice", rung.name),
                ));
            }
            in_range(
                &format!("broadcast.ladder[{i}].divisor"),
                rung.divisor,
                1,
                16,
            )?;
            at_least_one(
                &format!("broadcast.ladder[{i}].bitrate_kbps"),
                rung.bitrate_kbps,
            )?;
        }
        in_range("broadcast.workers_per_rung", self.workers_per_rung, 1, 16)?;
        at_least_one("broadcast.queue_segments", self.queue_segments)?;
        in_range("broadcast.window_segments", self.window_segments, 3, 100)?;
        at_least_one("broadcast.max_broadcasts", self.max_broadcasts)?;
        Ok(())
    }
}

/// Where the session and blob stores live (in memory, or in Redis shared by replicas), their
/// bounds, and the key continuation states are signed with.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `memory` (this process only; the default) or `redis` (`store.redis`).
    pub backend: StoreBackend,
    /// The Redis server, when `backend` is `redis`.
    pub redis: RedisSettings,
    /// Continuation states kept at most (oldest evicted first); with Redis, how many saves
    /// may wait for the server at once (one per session).
    pub max_sessions: usize,
    /// Bytes of blobs (tensors) kept at most (oldest evicted first); with Redis, the largest
    /// single blob (the server's `maxmemory` bounds the total).
    pub blob_capacity_bytes: usize,
    /// Bytes of blobs one owner (one session's exported states) may hold at once: its own
    /// oldest go first to make room, and a single blob larger than this is refused, so one
    /// client cannot evict what other sessions stored.
    pub max_blob_bytes_per_session: usize,
    /// Anything older than this is dropped.
    pub ttl_seconds: u64,
    /// The HMAC-SHA256 key continuation states handed to clients are signed with (at least
    /// 32 characters). `None`: a random key per process, so states only resume on the
    /// replica process that made them. Replicas behind one router must share one secret.
    /// Shown as `<redacted>` by `--check-config` and in debug output.
    #[serde(serialize_with = "redacted")]
    pub state_secret: Option<String>,
    /// Sessions a client can continue after losing its connection (`store.resume`).
    pub resume: ResumeSettings,
}

/// Resumable sessions: after every segment a `/v1/stream` session writes a resume record
/// (its recent segments' prompts and seeds, generator checkpoints, toggles) to the session
/// store, so a client whose replica died continues on any replica sharing the stores
/// (`backend: redis`; with `memory`, only on the same replica process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResumeSettings {
    /// Write resume records and accept `session_init_v2.resume`.
    pub enabled: bool,
    /// How many of the newest segments a resume may start from (2 to 64). Generation runs
    /// at most this many segments, less one, ahead of the media written to the client, so
    /// every segment the client may lack stays resumable; 3 or more keeps generation of the
    /// next segment overlapping the sending of the current one. Each keeps a checkpoint in
    /// the blob store.
    pub window_segments: u32,
    /// A generator checkpoint holds the exact stream state (for Wan: the latent context and
    /// the VAE decoder's caches) when it takes at most this many bytes, else the portable
    /// form (the context alone, caches rebuilt on restore; a small seam). The Wan2.1 1.3B
    /// decoder cache at 832x480 is 1.8 GiB in bf16, so it is never written per segment.
    /// Lowered to `max_blob_bytes_per_session / window_segments` when that is smaller, so a
    /// window of checkpoints fits in the session's blob quota.
    pub max_exact_state_bytes: u64,
    /// How long a segment's `media_segment_complete` may wait for the resume record that
    /// covers the next segment to reach the store (0 to 10000 ms; 0: never wait). The client
    /// resumes after the last segment reported complete, so without the wait a replica
    /// killed before its write-behind store caught up leaves a client that cannot resume.
    /// After one wait ran out, or a save failed, none waits until a record lands again: a
    /// slow or lost store costs resumes, never the stream's pace.
    pub record_wait_ms: u64,
}

impl Default for ResumeSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            window_segments: 4,
            max_exact_state_bytes: 4 << 20,
            record_wait_ms: 250,
        }
    }
}

/// Serializes a secret as `<redacted>` (or `null` when unset).
fn redacted<S: serde::Serializer>(secret: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_some("<redacted>"),
        None => s.serialize_none(),
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            redis: RedisSettings::default(),
            max_sessions: 1024,
            blob_capacity_bytes: 256 << 20,
            max_blob_bytes_per_session: 64 << 20,
            ttl_seconds: 3600,
            state_secret: None,
            resume: ResumeSettings::default(),
        }
    }
}

/// Shortest `store.state_secret` accepted: 32 characters (256 bits as hex would be 64).
pub const MIN_STATE_SECRET_CHARS: usize = 32;

impl std::fmt::Debug for StoreSettings {
    // By hand, so the secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("backend", &self.backend)
            .field("redis", &self.redis)
            .field("max_sessions", &self.max_sessions)
            .field("blob_capacity_bytes", &self.blob_capacity_bytes)
            .field(
                "max_blob_bytes_per_session",
                &self.max_blob_bytes_per_session,
            )
            .field("ttl_seconds", &self.ttl_seconds)
            .field(
                "state_secret",
                &self.state_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("resume", &self.resume)
            .finish()
    }
}

/// Which implementation holds the session and blob stores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// In this process: bounded, lost with it, invisible to other replicas.
    #[default]
    Memory,
    /// A Redis server (`store.redis`) several replicas can share; an outage loses what would
    /// have been stored (no resume), never a session.
    Redis,
}

/// The Redis server the stores use when `store.backend` is `redis`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user[:password]@]host[:port][/db]` (or `redis+unix:///path`). A password in
    /// it is shown as `<redacted>` by `--check-config` and in debug output; set it through
    /// `FRAMECAST_REPLICA__STORE__REDIS__URL` from a secret store.
    #[serde(serialize_with = "redacted_url")]
    pub url: String,
    /// Prepended to every key, so several deployments (or tests) can share one server.
    pub key_prefix: String,
    /// The longest one command may take, and one connection attempt, in milliseconds; raise
    /// it for large snapshot blobs over a slow link.
    pub timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            key_prefix: "framecast:".into(),
            timeout_ms: 2000,
        }
    }
}

impl std::fmt::Debug for RedisSettings {
    // By hand, so a password in the URL never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// `url` with its credentials (user info, and a query that names a password) replaced by
/// `<redacted>`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) if query.to_ascii_lowercase().contains("pass") => {
            (rest, Some("<redacted>"))
        }
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => format!("<redacted>{}", &rest[at..]),
        None => rest.to_string(),
    };
    let mut shown = if scheme.is_empty() {
        rest
    } else {
        format!("{scheme}://{rest}")
    };
    if let Some(query) = query {
        shown.push('?');
        shown.push_str(query);
    }
    shown
}

fn redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// x264's `speed-preset` names, fastest first.
pub const X264_SPEED_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

impl StreamingSettings {
    /// The largest opening frame: room for the biggest image in base64 plus the other fields.
    pub fn max_init_frame_bytes(&self) -> usize {
        (self.max_init_image_bytes.div_ceil(3) * 4 + 64 * 1024).max(self.max_message_bytes)
    }
}

impl Validate for ReplicaConfig {
    fn validate(&self) -> Result<(), FieldError> {
        not_empty("server.host", &self.server.host)?;
        if let Some(admin_host) = &self.server.admin_host {
            not_empty("server.admin_host", admin_host)?;
        }
        if self.server.admin_port == self.server.port && self.server.port != 0 {
            return Err(FieldError::new(
                "server.admin_port",
                format!("must differ from server.port ({})", self.server.port),
            ));
        }
        framecast_common::auth::Authenticator::from_config(&self.server.auth, "server.auth")?;
        for (i, origin) in self.server.cors_allowed_origins.iter().enumerate() {
            let valid = http::HeaderValue::from_str(origin).is_ok()
                && (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/');
            if !valid {
                return Err(FieldError::new(
                    format!("server.cors_allowed_origins[{i}]"),
                    format!("`{origin}` is not an origin like https://app.example.com"),
                ));
            }
        }
        if let Some(root) = &self.server.web_root
            && !root.is_dir()
        {
            return Err(FieldError::new(
                "server.web_root",
                format!("`{}` is not a directory", root.display()),
            ));
        }
        self.prompt.validate()?;
        self.safety.validate()?;
        self.broadcast.validate()?;
        let s = &self.streaming;
        at_least_one(
            "streaming.session_timeout_seconds",
            s.session_timeout_seconds,
        )?;
        at_least_one("streaming.max_session_seconds", s.max_session_seconds)?;
        at_least(
            "streaming.session_log_max_file_bytes",
            s.session_log_max_file_bytes,
            1024,
        )?;
        at_least(
            "streaming.session_log_max_total_bytes",
            s.session_log_max_total_bytes,
            s.session_log_max_file_bytes,
        )?;
        at_least_one("streaming.generation_segment_cap", s.generation_segment_cap)?;
        let d = &self.dreamverse;
        at_least_one(
            "dreamverse.session_lifetime_seconds",
            d.session_lifetime_seconds,
        )?;
        at_least_one(
            "dreamverse.generation_segment_cap",
            d.generation_segment_cap,
        )?;
        let l = &s.limits;
        at_least_one(
            "streaming.limits.max_inference_steps",
            l.max_inference_steps,
        )?;
        if !(l.max_guidance_scale.is_finite() && l.max_guidance_scale >= 1.0) {
            return Err(FieldError::new(
                "streaming.limits.max_guidance_scale",
                format!(
                    "must be a finite number of at least 1 (got {})",
                    l.max_guidance_scale
                ),
            ));
        }
        at_least_one("streaming.limits.max_prompt_chars", l.max_prompt_chars)?;
        at_least_one("streaming.limits.max_queued_prompts", l.max_queued_prompts)?;
        at_least_one("streaming.limits.max_seed_prompts", l.max_seed_prompts)?;
        at_least("streaming.limits.max_image_pixels", l.max_image_pixels, 256)?;
        at_least_one("streaming.max_sessions", s.max_sessions)?;
        at_least("streaming.max_message_bytes", s.max_message_bytes, 1024)?;
        at_least_one("streaming.init_timeout_seconds", s.init_timeout_seconds)?;
        at_least_one(
            "streaming.client_write_timeout_seconds",
            s.client_write_timeout_seconds,
        )?;
        at_least("streaming.send_queue_messages", s.send_queue_messages, 4)?;
        at_least_one("streaming.pong_timeout_seconds", s.pong_timeout_seconds)?;
        let g = &self.generator;
        if g.width < 16 || g.height < 16 || g.width % 2 == 1 || g.height % 2 == 1 {
            return Err(FieldError::new(
                "generator.width",
                format!(
                    "frame size {}x{} must be even and at least 16x16",
                    g.width, g.height
                ),
            ));
        }
        in_range("generator.fps", g.fps, 1, 120)?;
        at_least_one("generator.frames_per_segment", g.frames_per_segment)?;
        at_least_one("generator.num_inference_steps", g.num_inference_steps)?;
        if !(g.guidance_scale.is_finite()
            && (0.0..=l.max_guidance_scale).contains(&g.guidance_scale))
        {
            return Err(FieldError::new(
                "generator.guidance_scale",
                format!(
                    "{} must be a number from 0 to streaming.limits.max_guidance_scale ({})",
                    g.guidance_scale, l.max_guidance_scale
                ),
            ));
        }
        if g.num_inference_steps > l.max_inference_steps {
            return Err(FieldError::new(
                "generator.num_inference_steps",
                format!(
                    "{} is more than streaming.limits.max_inference_steps ({})",
                    g.num_inference_steps, l.max_inference_steps
                ),
            ));
        }
        at_least_one("store.max_sessions", self.store.max_sessions)?;
        at_least_one("store.ttl_seconds", self.store.ttl_seconds)?;
        at_least_one(
            "store.max_blob_bytes_per_session",
            self.store.max_blob_bytes_per_session,
        )?;
        let resume = &self.store.resume;
        in_range(
            "store.resume.window_segments",
            resume.window_segments,
            2,
            64,
        )?;
        in_range(
            "store.resume.record_wait_ms",
            resume.record_wait_ms,
            0,
            10_000,
        )?;
        if self.store.backend == StoreBackend::Redis {
            let r = &self.store.redis;
            if let Err(e) = ::redis::Client::open(r.url.as_str()) {
                return Err(FieldError::new(
                    "store.redis.url",
                    format!(
                        "`{}` is not a Redis URL such as redis://127.0.0.1:6379/0 ({e})",
                        redact_url(&r.url),
                    ),
                ));
            }
            if r.key_prefix.is_empty()
                || r.key_prefix.len() > 128
                || r.key_prefix
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(FieldError::new(
                    "store.redis.key_prefix",
                    "must be 1 to 128 bytes without spaces or control characters \
                     (e.g. `framecast:`)",
                ));
            }
            in_range("store.redis.timeout_ms", r.timeout_ms, 1, 600_000)?;
        }
        if let Some(secret) = &self.store.state_secret
            && secret.chars().count() < MIN_STATE_SECRET_CHARS
        {
            return Err(FieldError::new(
                "store.state_secret",
                format!(
                    "must be at least {MIN_STATE_SECRET_CHARS} characters (e.g. the output of \
                     `openssl rand -hex 32`)"
                ),
            ));
        }
        at_least_one("pool.num_workers", self.pool.num_workers)?;
        if !self.pool.devices.is_empty()
            && self.pool.devices.len() != self.pool.num_workers as usize
        {
            return Err(FieldError::new(
                "pool.devices",
                format!(
                    "lists {} devices but pool.num_workers is {}; give one device per worker",
                    self.pool.devices.len(),
                    self.pool.num_workers
                ),
            ));
        }
        at_least_one(
            "pool.stall_timeout_seconds",
            self.pool.stall_timeout_seconds,
        )?;
        at_least_one(
            "pool.restart_backoff_seconds",
            self.pool.restart_backoff_seconds,
        )?;
        at_least_one(
            "pool.acquire_timeout_seconds",
            self.pool.acquire_timeout_seconds,
        )?;
        let m = &self.media;
        if !X264_SPEED_PRESETS.contains(&m.x264_speed_preset.as_str()) {
            return Err(FieldError::new(
                "media.x264_speed_preset",
                format!(
                    "`{}` is not an x264 preset (one of {})",
                    m.x264_speed_preset,
                    X264_SPEED_PRESETS.join(", ")
                ),
            ));
        }
        at_least_one("media.bitrate_kbps", m.bitrate_kbps)?;
        in_range(
            "media.fragment_duration_ms",
            m.fragment_duration_ms,
            40,
            10_000,
        )?;
        // The muxer closes a fragment only when it is full, so a fragment longer than a
        // segment would hold the segment's video back until the next one.
        let fragment_frames = (u64::from(g.fps) * u64::from(m.fragment_duration_ms)).div_ceil(1000);
        if fragment_frames > u64::from(g.frames_per_segment) {
            return Err(FieldError::new(
                "media.fragment_duration_ms",
                format!(
                    "a fragment of {} ms holds {fragment_frames} frames at {} fps, more than \
                     generator.frames_per_segment ({}); use at most {} ms",
                    m.fragment_duration_ms,
                    g.fps,
                    g.frames_per_segment,
                    u64::from(g.frames_per_segment) * 1000 / u64::from(g.fps)
                ),
            ));
        }
        // Longer than a century means "never", but would overflow a deadline (`now +
        // timeout` panics), or the mock's pacing: refuse it here rather than mid-session.
        for (field, seconds) in [
            (
                "server.shutdown_grace_seconds",
                self.server.shutdown_grace_seconds,
            ),
            (
                "streaming.session_timeout_seconds",
                s.session_timeout_seconds,
            ),
            ("streaming.max_session_seconds", s.max_session_seconds),
            (
                "dreamverse.session_lifetime_seconds",
                self.dreamverse.session_lifetime_seconds,
            ),
            ("streaming.init_timeout_seconds", s.init_timeout_seconds),
            (
                "streaming.client_write_timeout_seconds",
                s.client_write_timeout_seconds,
            ),
            ("streaming.ping_interval_seconds", s.ping_interval_seconds),
            ("streaming.pong_timeout_seconds", s.pong_timeout_seconds),
            (
                "pool.acquire_timeout_seconds",
                self.pool.acquire_timeout_seconds,
            ),
            (
                "pool.restart_backoff_seconds",
                self.pool.restart_backoff_seconds,
            ),
            (
                "pool.stall_timeout_seconds",
                self.pool.stall_timeout_seconds,
            ),
            ("store.ttl_seconds", self.store.ttl_seconds),
        ] {
            at_most_max_seconds(field, seconds)?;
        }
        if g.mock_latency_ms / 1000 > MAX_SECONDS {
            return Err(FieldError::new(
                "generator.mock_latency_ms",
                format!("must be at most {} (100 years)", MAX_SECONDS * 1000),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with_env(pairs: &[(&str, &str)]) -> Result<ReplicaConfig, ConfigError> {
        LayeredConfig::new(ENV_PREFIX)
            .env_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .load()
    }

    #[test]
    fn defaults_are_valid() {
        ReplicaConfig::default().validate().unwrap();
        assert_eq!(load_with_env(&[]).unwrap(), ReplicaConfig::default());
    }

    #[test]
    fn env_overrides_nested_fields() {
        let c = load_with_env(&[
            ("FRAMECAST_REPLICA__SERVER__PORT", "8002"),
            ("FRAMECAST_REPLICA__MEDIA__VIDEO_ENCODER", "x264"),
            (
                "FRAMECAST_REPLICA__STREAMING__SESSION_TIMEOUT_SECONDS",
                "30",
            ),
        ])
        .unwrap();
        assert_eq!(c.server.port, 8002);
        assert_eq!(c.media.video_encoder, VideoEncoderKind::X264);
        assert_eq!(c.streaming.session_timeout_seconds, 30);
    }

    #[test]
    fn default_guidance_must_be_within_the_clients_range() {
        let c = load_with_env(&[("FRAMECAST_REPLICA__GENERATOR__GUIDANCE_SCALE", "3.0")]).unwrap();
        assert_eq!(c.generator.guidance_scale, 3.0);
        for bad in ["-1", "21", "NaN"] {
            let err = load_with_env(&[("FRAMECAST_REPLICA__GENERATOR__GUIDANCE_SCALE", bad)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("generator.guidance_scale"), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_enum_value_names_the_field() {
        let err = load_with_env(&[("FRAMECAST_REPLICA__GENERATOR__DEVICE", "tpu")]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`generator.device`"), "{msg}");
        assert!(
            msg.contains("FRAMECAST_REPLICA__GENERATOR__DEVICE"),
            "{msg}"
        );
    }

    fn load_yaml(text: &str) -> Result<ReplicaConfig, ConfigError> {
        let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(file.path(), text).unwrap();
        LayeredConfig::new(ENV_PREFIX)
            .file(Some(file.path()))
            .env_vars(std::iter::empty())
            .load()
    }

    #[test]
    fn devices_parse_with_an_optional_cuda_index() {
        let c = load_yaml(
            "pool: {num_workers: 2, devices: [\"cuda:1\", cpu]}\ngenerator: {device: cuda}\n",
        )
        .unwrap();
        assert_eq!(c.pool.devices, [DeviceKind::Cuda(Some(1)), DeviceKind::Cpu]);
        assert_eq!(
            c.pool.device_of(0, c.generator.device),
            DeviceKind::Cuda(Some(1))
        );
        assert_eq!(c.generator.device, DeviceKind::Cuda(None));
        assert_eq!(DeviceKind::Cuda(Some(1)).to_string(), "cuda:1");
        let err = load_yaml("generator: {device: \"cuda:x\"}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("generator.device") && err.contains("cuda:N"),
            "{err}"
        );
    }

    #[test]
    fn device_lists_and_fragments_are_checked_against_their_neighbours() {
        let err = load_yaml("pool: {num_workers: 3, devices: [cpu]}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pool.devices") && err.contains("3"), "{err}");
        let err = load_yaml(
            "generator: {fps: 8, frames_per_segment: 4}\nmedia: {fragment_duration_ms: 1000}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("media.fragment_duration_ms") && err.contains("at most 500 ms"),
            "{err}"
        );
        for field in ["restart_backoff_seconds", "stall_timeout_seconds"] {
            let err = load_yaml(&format!("pool: {{{field}: 0}}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("pool.{field}")), "{err}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let err =
            load_with_env(&[("FRAMECAST_REPLICA__MEDIA__X264_SPEED_PRESET", "warp")]).unwrap_err();
        assert!(
            err.to_string().contains("`media.x264_speed_preset`"),
            "{err}"
        );
        let err = load_with_env(&[("FRAMECAST_REPLICA__POOL__NUM_WORKERS", "0")]).unwrap_err();
        assert!(err.to_string().contains("`pool.num_workers`"), "{err}");
    }

    #[test]
    fn the_web_root_must_be_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        let c = load_with_env(&[("FRAMECAST_REPLICA__SERVER__WEB_ROOT", path)]).unwrap();
        assert_eq!(c.server.web_root.as_deref(), Some(dir.path()));
        let missing = dir.path().join("missing");
        let err = load_with_env(&[(
            "FRAMECAST_REPLICA__SERVER__WEB_ROOT",
            missing.to_str().unwrap(),
        )])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`server.web_root`") && err.contains("missing"),
            "{err}"
        );
        let file = dir.path().join("index.html");
        std::fs::write(&file, "<html></html>").unwrap();
        let err = load_yaml(&format!("server: {{web_root: {}}}\n", file.display()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.web_root"), "{err}");
        assert_eq!(
            load_yaml("server: {web_root: null}\n")
                .unwrap()
                .server
                .web_root,
            None
        );
    }

    #[test]
    fn the_dreamverse_settings_load_and_are_checked() {
        let c =
            load_yaml("dreamverse: {session_lifetime_seconds: 60, generation_segment_cap: 2}\n")
                .unwrap();
        assert_eq!(
            c.dreamverse,
            DreamverseSettings {
                session_lifetime_seconds: 60,
                generation_segment_cap: 2
            }
        );
        for field in ["session_lifetime_seconds", "generation_segment_cap"] {
            let err = load_yaml(&format!("dreamverse: {{{field}: 0}}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("dreamverse.{field}")), "{err}");
        }
    }

    #[test]
    fn the_safety_settings_load_and_are_checked() {
        let c = load_yaml(
            "safety: {enabled: true, model_path: /srv/safety.bin, block_threshold: 0.8}\n",
        )
        .unwrap();
        assert_eq!(
            c.safety,
            SafetySettings {
                enabled: true,
                model_path: Some("/srv/safety.bin".into()),
                block_threshold: 0.8,
                unsafe_label: "__label__unsafe".to_string(),
            }
        );
        let c = load_with_env(&[("FRAMECAST_REPLICA__SAFETY__BLOCK_THRESHOLD", "1")]).unwrap();
        assert_eq!(c.safety.block_threshold, 1.0);
        for (yaml, field) in [
            ("safety: {block_threshold: 1.5}", "`safety.block_threshold`"),
            (
                "safety: {block_threshold: -0.1}",
                "`safety.block_threshold`",
            ),
            ("safety: {unsafe_label: \" \"}", "`safety.unsafe_label`"),
            ("safety: {enabled: true}", "`safety.model_path`"),
            ("safety: {model: x.bin}", "model"),
        ] {
            let err = load_yaml(&format!("{yaml}\n")).unwrap_err().to_string();
            assert!(err.contains(field), "{yaml}: {err}");
        }
    }

    #[test]
    fn the_state_secret_and_blob_quota_load_and_are_checked() {
        let secret = "0123456789abcdef0123456789abcdef";
        let c = load_with_env(&[
            ("FRAMECAST_REPLICA__STORE__STATE_SECRET", secret),
            (
                "FRAMECAST_REPLICA__STORE__MAX_BLOB_BYTES_PER_SESSION",
                "4096",
            ),
        ])
        .unwrap();
        assert_eq!(c.store.state_secret.as_deref(), Some(secret));
        assert_eq!(c.store.max_blob_bytes_per_session, 4096);
        assert!(
            !format!("{c:?}").contains(secret),
            "the secret stays out of Debug output"
        );
        let shown = serde_json::to_value(&c).unwrap();
        assert_eq!(
            shown["store"]["state_secret"], "<redacted>",
            "and out of --check-config"
        );
        let defaults = StoreSettings::default();
        assert_eq!(defaults.state_secret, None);
        assert_eq!(
            defaults.max_blob_bytes_per_session,
            defaults.blob_capacity_bytes / 4
        );

        let err = load_with_env(&[("FRAMECAST_REPLICA__STORE__STATE_SECRET", "short")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`store.state_secret`"), "{err}");
        assert_eq!(
            load_yaml("store: {state_secret: null}\n")
                .unwrap()
                .store
                .state_secret,
            None
        );
        let err = load_yaml("store: {max_blob_bytes_per_session: 0}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.max_blob_bytes_per_session"), "{err}");
    }

    #[test]
    fn the_redis_store_settings_load_are_checked_and_hide_the_password() {
        let defaults = StoreSettings::default();
        assert_eq!(defaults.backend, StoreBackend::Memory);
        assert_eq!(defaults.redis.key_prefix, "framecast:");
        let url = "redis://app:hunter2-secret@redis.internal:6380/2";
        let c = load_with_env(&[
            ("FRAMECAST_REPLICA__STORE__BACKEND", "redis"),
            ("FRAMECAST_REPLICA__STORE__REDIS__URL", url),
            ("FRAMECAST_REPLICA__STORE__REDIS__KEY_PREFIX", "fc-test:"),
        ])
        .unwrap();
        assert_eq!(c.store.backend, StoreBackend::Redis);
        assert_eq!(c.store.redis.url, url);
        assert_eq!(c.store.redis.key_prefix, "fc-test:");
        assert!(!format!("{c:?}").contains("hunter2"), "not in Debug output");
        let shown = serde_json::to_value(&c).unwrap();
        assert_eq!(
            shown["store"]["redis"]["url"], "redis://<redacted>@redis.internal:6380/2",
            "nor in --check-config"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=1&pass=hunter2"),
            "redis+unix:///run/redis.sock?<redacted>"
        );

        let backend = "store: {backend: redis, redis: ";
        for (yaml, field) in [
            ("{url: 'http://x'}}", "`store.redis.url`"),
            ("{url: 'redis://:hunter2@'}}", "`store.redis.url`"),
            ("{key_prefix: ''}}", "`store.redis.key_prefix`"),
            ("{key_prefix: 'a b'}}", "`store.redis.key_prefix`"),
            ("{timeout_ms: 0}}", "`store.redis.timeout_ms`"),
        ] {
            let err = load_yaml(&format!("{backend}{yaml}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{yaml}: {err}");
            assert!(!err.contains("hunter2"), "{yaml}: {err}");
        }
        // Unchecked while the backend is memory.
        load_yaml("store: {redis: {url: 'http://x'}}\n").unwrap();
        let err = load_yaml("store: {backend: mongo}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("backend"), "{err}");
    }
}
