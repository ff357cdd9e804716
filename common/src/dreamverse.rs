//! The Dreamverse `WS /ws` wire protocol: what FastVideo's Dreamverse web app sends and
//! expects (`shared/protocols/dreamverse-ws.md`, sections 1B.1-1B.4).
//!
//! It differs from `/v1/stream` ([`crate::protocol`]) in spirit as well as shape: client
//! frames are read the way Dreamverse's Python server reads them, leniently (`dict.get`
//! with a default, Python truthiness for flags, unknown `type`s ignored), while server
//! frames keep their `null`s (`"prompt_id": null`), because the web app reads them that way.
//! Only a frame that is not a JSON object (or a binary frame) is an error, and it ends the
//! session.

use serde::Serialize;
use serde_json::{Map, Value};

/// `stream_mode` and `media_init.mode`: audio and video in one fragmented MP4 per segment.
pub const STREAM_MODE: &str = "av_fmp4";

/// The rewrite model used when the client names none (or one not in [`REWRITE_MODELS`]).
pub const DEFAULT_REWRITE_MODEL: &str = "gpt-oss-120b";

/// Rewrite models a client may choose. There is no prompt pipeline yet (issue 15), so the
/// choice is only echoed back.
pub const REWRITE_MODELS: &[&str] = &[DEFAULT_REWRITE_MODEL];

/// `rewrite_temperature` when the client gives none (or no finite number).
pub const DEFAULT_REWRITE_TEMPERATURE: f64 = 1.0;

/// Largest decoded `initial_image` Dreamverse accepts: 15 MiB.
pub const MAX_INITIAL_IMAGE_BYTES: usize = 15 * 1024 * 1024;

/// Image types an `initial_image` may have.
pub const INITIAL_IMAGE_MIME_TYPES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];

/// A client frame that ends the session: Dreamverse's reader stops on anything but a JSON
/// object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON at all.
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("message must be a JSON object")]
    NotObject,
    /// A binary frame.
    #[error("binary frames are not accepted; send JSON text")]
    Binary,
}

/// Reads one text frame as a JSON object.
pub fn parse_frame(text: &str) -> Result<Map<String, Value>, FrameError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(FrameError::NotObject),
        Err(e) => Err(FrameError::NotJson(e.to_string())),
    }
}

/// The settings of a project: the opening frame (`session_init_v2`, legacy `select_model`
/// or anything else) and `project_init_v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectSettings {
    /// The rollout id (`preset_id`, not `preset`).
    pub preset_id: Option<String>,
    /// `""` when absent.
    pub preset_label: String,
    /// The seed prompts: non-strings and blank ones dropped, the rest trimmed.
    pub curated_prompts: Vec<String>,
    /// When non-empty (and not single-clip, and no curated prompts), the seed list is built
    /// from it before generation starts.
    pub initial_rollout_prompt: String,
    /// Default true.
    pub enhancement_enabled: bool,
    pub auto_extension_enabled: bool,
    pub loop_generation_enabled: bool,
    /// One clip per request, no segment cap.
    pub single_clip_mode: bool,
    /// As sent; [`resolve_rewrite_model`] picks the one used.
    pub rewrite_model: Option<String>,
    /// As sent; [`resolve_rewrite_temperature`] clamps it.
    pub rewrite_temperature: Option<f64>,
    /// The raw `initial_image` value; [`parse_initial_image`] checks it.
    pub initial_image: Option<Value>,
}

impl Default for ProjectSettings {
    /// What a session gets when no opening frame arrives in time.
    fn default() -> Self {
        Self::from_fields(&Map::new(), "curated_prompts")
    }
}

impl ProjectSettings {
    /// The opening frame: its `type` says where the prompts are, `session_init_v2` in
    /// `curated_prompts`, anything else (legacy `select_model`) in `segment_prompts`.
    pub fn from_init_frame(fields: &Map<String, Value>) -> Self {
        let prompts = match fields.get("type").and_then(Value::as_str) {
            Some("session_init_v2") => "curated_prompts",
            _ => "segment_prompts",
        };
        Self::from_fields(fields, prompts)
    }

    /// The fields of an init frame, the seed prompts read from `prompts_key`.
    pub fn from_fields(fields: &Map<String, Value>, prompts_key: &str) -> Self {
        Self {
            preset_id: fields.get("preset_id").and_then(raw_text),
            preset_label: text(fields, "preset_label"),
            curated_prompts: prompt_list(fields.get(prompts_key)),
            initial_rollout_prompt: text(fields, "initial_rollout_prompt"),
            enhancement_enabled: flag(fields, "enhancement_enabled").unwrap_or(true),
            auto_extension_enabled: flag(fields, "auto_extension_enabled").unwrap_or(false),
            loop_generation_enabled: flag(fields, "loop_generation_enabled").unwrap_or(false),
            single_clip_mode: flag(fields, "single_clip_mode").unwrap_or(false),
            rewrite_model: non_empty(text(fields, "rewrite_model")),
            rewrite_temperature: number(fields.get("rewrite_temperature")),
            initial_image: fields.get("initial_image").cloned(),
        }
    }
}

/// `append_prompt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendPrompt {
    /// Trimmed; must not be empty.
    pub prompt: String,
    /// The client's id for it; the server makes one (a UUID) when absent.
    pub prompt_id: Option<String>,
}

/// `simple_generate`: switch to single-clip mode and generate one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct SimpleGenerate {
    /// Trimmed; must not be empty.
    pub prompt: String,
    pub prompt_id: Option<String>,
    /// Replaces the project's when non-empty.
    pub preset_id: Option<String>,
    /// Replaces the project's when non-empty.
    pub preset_label: Option<String>,
    /// Default true.
    pub enhancement_enabled: bool,
    /// The raw `initial_image` value; replaces the project's image.
    pub initial_image: Option<Value>,
}

/// `rewrite_seed_prompts`.
#[derive(Debug, Clone, PartialEq)]
pub struct RewriteSeedPrompts {
    /// Trimmed; may be empty.
    pub rewrite_instruction: String,
    /// The prompts the rewrite looks at (the web app pads them to 6).
    pub prompt_window_prompts: Vec<String>,
    pub rewrite_model: Option<String>,
    pub rewrite_temperature: Option<f64>,
}

/// Messages after the opening frame. Fields are read leniently, with Dreamverse's defaults;
/// a flag the client leaves out is `None` (the server keeps its current value).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Starts a new project on the same socket (only while no project is active).
    ProjectInitV1(ProjectSettings),
    /// Ends the project, keeping the socket and its worker.
    EndProjectKeepSession,
    AppendPrompt(AppendPrompt),
    SimpleGenerate(SimpleGenerate),
    SetEnhancement {
        enabled: Option<bool>,
    },
    SetAutoExtension {
        enabled: Option<bool>,
    },
    SetLoopGeneration {
        enabled: Option<bool>,
    },
    SetGenerationPaused {
        paused: Option<bool>,
    },
    ResetToSeedPrompts,
    RestartGeneration,
    RewriteSeedPrompts(RewriteSeedPrompts),
    SetRewriteModel {
        rewrite_model: Option<String>,
    },
    SetRewriteTemperature {
        rewrite_temperature: Option<f64>,
    },
    /// Ends the session (no reply).
    Leave,
    /// A type the server does not act on (a second `session_init_v2`, a typo, a future
    /// message): silently ignored, as Dreamverse does.
    Ignored(Option<String>),
}

impl ClientMessage {
    /// Reads a message from a frame's fields.
    pub fn from_fields(fields: &Map<String, Value>) -> Self {
        let message_type = fields.get("type").and_then(Value::as_str);
        match message_type {
            Some("project_init_v1") => {
                Self::ProjectInitV1(ProjectSettings::from_fields(fields, "curated_prompts"))
            }
            Some("end_project_keep_session") => Self::EndProjectKeepSession,
            Some("append_prompt") => Self::AppendPrompt(AppendPrompt {
                prompt: text(fields, "prompt"),
                prompt_id: non_empty(text(fields, "prompt_id")),
            }),
            Some("simple_generate") => Self::SimpleGenerate(SimpleGenerate {
                prompt: text(fields, "prompt"),
                prompt_id: non_empty(text(fields, "prompt_id")),
                preset_id: non_empty(text(fields, "preset_id")),
                preset_label: non_empty(text(fields, "preset_label")),
                enhancement_enabled: flag(fields, "enhancement_enabled").unwrap_or(true),
                initial_image: fields.get("initial_image").cloned(),
            }),
            Some("set_enhancement") => Self::SetEnhancement {
                enabled: flag(fields, "enabled"),
            },
            Some("set_auto_extension") => Self::SetAutoExtension {
                enabled: flag(fields, "enabled"),
            },
            Some("set_loop_generation") => Self::SetLoopGeneration {
                enabled: flag(fields, "enabled"),
            },
            Some("set_generation_paused") => Self::SetGenerationPaused {
                paused: flag(fields, "paused"),
            },
            Some("reset_to_seed_prompts") => Self::ResetToSeedPrompts,
            Some("restart_generation") => Self::RestartGeneration,
            Some("rewrite_seed_prompts") => Self::RewriteSeedPrompts(RewriteSeedPrompts {
                rewrite_instruction: text(fields, "rewrite_instruction"),
                prompt_window_prompts: prompt_list(fields.get("prompt_window_prompts")),
                rewrite_model: non_empty(text(fields, "rewrite_model")),
                rewrite_temperature: number(fields.get("rewrite_temperature")),
            }),
            Some("set_rewrite_model") => Self::SetRewriteModel {
                rewrite_model: non_empty(text(fields, "rewrite_model")),
            },
            Some("set_rewrite_temperature") => Self::SetRewriteTemperature {
                rewrite_temperature: number(fields.get("rewrite_temperature")),
            },
            Some("leave") => Self::Leave,
            other => Self::Ignored(other.map(str::to_string)),
        }
    }
}

/// The rewrite model a request gets: the named one if allowed, else the default.
pub fn resolve_rewrite_model(requested: Option<&str>) -> String {
    match requested.map(str::trim) {
        Some(m) if REWRITE_MODELS.contains(&m) => m.to_string(),
        _ => DEFAULT_REWRITE_MODEL.to_string(),
    }
}

/// The rewrite temperature a request gets: clamped to 0..=2, the default if absent or not
/// a finite number.
pub fn resolve_rewrite_temperature(requested: Option<f64>) -> f64 {
    match requested {
        Some(t) if t.is_finite() => t.clamp(0.0, 2.0),
        _ => DEFAULT_REWRITE_TEMPERATURE,
    }
}

/// An `initial_image` whose data URL is well-formed; its bytes are not checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataUrlImage {
    /// One of [`INITIAL_IMAGE_MIME_TYPES`], from the data URL.
    pub mime: String,
    /// Display name, for logs.
    pub name: Option<String>,
    /// Standard base64 with whitespace removed.
    pub base64: String,
}

/// Checks the shape of an `initial_image` value (`{data_url, mime_type?, name?}`); `Ok(None)`
/// for `null` or an empty `data_url`. The error says what is wrong, in Dreamverse's words.
pub fn parse_initial_image(value: &Value) -> Result<Option<DataUrlImage>, String> {
    let fields = match value {
        Value::Null => return Ok(None),
        Value::Object(fields) => fields,
        _ => return Err("initial_image must be an object.".into()),
    };
    let data_url = text(fields, "data_url");
    if data_url.is_empty() {
        return Ok(None);
    }
    let malformed = || "initial_image.data_url must be a base64 data URL.".to_string();
    let rest = data_url.strip_prefix("data:").ok_or_else(malformed)?;
    let (mime, data) = rest.split_once(";base64,").ok_or_else(malformed)?;
    let mime_ok = !mime.is_empty()
        && mime
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.+/".contains(c));
    let data_ok = !data.is_empty()
        && data
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c) || c.is_whitespace());
    if !mime_ok || !data_ok {
        return Err(malformed());
    }
    let mime = mime.trim().to_lowercase();
    let declared = non_empty(text(fields, "mime_type")).map(|m| m.to_lowercase());
    if declared.is_some_and(|declared| declared != mime) {
        return Err("initial_image.mime_type must match the data URL mime type.".into());
    }
    if !INITIAL_IMAGE_MIME_TYPES.contains(&mime.as_str()) {
        return Err("initial_image must be a PNG, JPEG, or WebP image.".into());
    }
    Ok(Some(DataUrlImage {
        mime,
        name: non_empty(text(fields, "name")),
        base64: data.chars().filter(|c| !c.is_whitespace()).collect(),
    }))
}

/// Python's truthiness, which is how Dreamverse reads flags (`bool(data.get(...))`).
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A flag, `None` when the field is absent.
fn flag(fields: &Map<String, Value>, key: &str) -> Option<bool> {
    fields.get(key).map(truthy)
}

/// `str(data.get(key) or "").strip()`.
fn text(fields: &Map<String, Value>, key: &str) -> String {
    match fields.get(key) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(v) if truthy(v) => v.to_string(),
        _ => String::new(),
    }
}

/// A value used as text without trimming (`preset_id` of the opening frame); `None` for
/// `null`.
fn raw_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A number, or a string holding one (Python's `float(x)`); `None` otherwise.
fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// A list of prompts: strings only, trimmed, blank ones dropped; anything but a list is
/// empty.
fn prompt_list(value: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(items)) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(Value::as_str)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Where a segment's prompt came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSource {
    /// The seed prompt list.
    Curated,
    /// A user prompt rewritten by the prompt pipeline.
    UserEnhanced,
    /// A user prompt as typed.
    UserRaw,
    /// Invented by the prompt pipeline (auto-extension).
    AutoLlm,
}

/// Why the seed prompts were applied again (`seed_prompts_reset_applied.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    ManualReset,
    CapRestart,
    ProjectInit,
    InitialRewrite,
    RewriteRollout,
    RewriteDuringGeneration,
    SimpleGenerate,
}

/// `step_complete.latency_ms`, in milliseconds with two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepLatency {
    /// From the segment's start to its last byte queued.
    pub total: f64,
    /// Generation alone.
    pub worker_e2e: f64,
    /// Same as `total`.
    pub main_user_step: f64,
    /// `total - worker_e2e`.
    pub overhead: f64,
}

/// Messages the server sends; binary fMP4 frames travel separately. Optional fields are sent
/// as `null`, never left out.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Right after accept (`position` 0 when a worker is free, else the place the session
    /// will take), then while queued (`available_gpus` 0).
    QueueStatus {
        position: u32,
        total_gpus: u32,
        available_gpus: u32,
    },
    /// A worker serves the session; `session_timeout` is its whole lifetime in seconds, from
    /// now.
    GpuAssigned {
        gpu_id: u32,
        session_timeout: u64,
    },
    LoopGenerationUpdated {
        enabled: bool,
    },
    GenerationPausedUpdated {
        paused: bool,
    },
    EnhancementUpdated {
        enabled: bool,
    },
    AutoExtensionUpdated {
        enabled: bool,
    },
    RewriteModelUpdated {
        rewrite_model: String,
    },
    RewriteTemperatureUpdated {
        rewrite_temperature: f64,
    },
    /// A stream (rollout) begins; the client builds a new media pipeline.
    Ltx2StreamStart {
        /// The seed list's length.
        total_segments: u32,
        preset_id: Option<String>,
        /// [`STREAM_MODE`].
        stream_mode: &'static str,
        live_mode: bool,
        loop_generation_enabled: bool,
        loop_iteration: u32,
        /// 0 in single-clip mode.
        generation_segment_cap: u32,
    },
    /// The seed prompts as a project starts (`reason: "init"`).
    #[serde(rename = "seed_prompts_updated")]
    SeedPromptsInit {
        prompts: Vec<String>,
        preset_id: Option<String>,
        preset_label: String,
        reason: &'static str,
        seed_prompt_count: u32,
    },
    /// The seed prompts after a rewrite (`reason: "rewrite"`).
    #[serde(rename = "seed_prompts_updated")]
    SeedPromptsRewritten {
        prompts: Vec<String>,
        preset_id: Option<String>,
        preset_label: String,
        reason: &'static str,
        fallback_used: bool,
        error: Option<String>,
        model: String,
        latency_ms: f64,
        raw_llm_output: Option<String>,
        rewrite_instruction: String,
    },
    SegmentPromptSource {
        /// 1-based within the stream.
        segment_idx: u32,
        source: PromptSource,
        prompt_id: Option<String>,
        fallback_used: bool,
        seed_prompt_index: Option<u32>,
        loop_iteration: u32,
    },
    Ltx2SegmentStart {
        segment_idx: u32,
        /// `max(segment_idx, seed count)`.
        total_segments: u32,
        prompt: String,
        source: PromptSource,
        seed_prompt_index: Option<u32>,
        loop_iteration: u32,
    },
    /// Before the segment's first byte.
    MediaInit {
        segment_idx: u32,
        mime: String,
        /// `seg` + 3-digit segment index + `-` + 8 hex digits.
        stream_id: String,
        mode: &'static str,
    },
    MediaSegmentComplete {
        segment_idx: u32,
        stream_id: String,
        /// Binary frames of the segment.
        chunks: u32,
    },
    /// One per segment (no `segment_idx`).
    StepComplete {
        latency_ms: StepLatency,
    },
    Ltx2SegmentComplete {
        segment_idx: u32,
        total_segments: u32,
    },
    /// The stream ended; no fields.
    Ltx2StreamComplete,
    PromptReceived {
        prompt_id: String,
        queue_depth: u32,
    },
    PromptReady {
        prompt_id: String,
        prompt: String,
        source: PromptSource,
        latency_ms: f64,
    },
    /// The prompt pipeline is enhancing a user prompt.
    PromptEnhancing {
        prompt_id: String,
    },
    /// Enhancement failed: the prompt is dropped, not generated.
    PromptFallbackUsed {
        prompt_id: String,
        /// The prompt as the user typed it.
        prompt: String,
        /// [`ENHANCEMENT_FAILED_SOURCE`].
        source: &'static str,
        latency_ms: f64,
        /// [`ENHANCEMENT_FAILED_ERROR`].
        error: &'static str,
    },
    /// No prompt source for the next segment; generation waits.
    PromptSourcesBlocked {
        segment_idx: u32,
    },
    PromptSourcesResumed {
        segment_idx: u32,
        source: PromptSource,
        prompt_id: Option<String>,
    },
    AutoPromptFailed {
        segment_idx: u32,
        latency_ms: f64,
        error: String,
    },
    RewriteSeedPromptsStarted {
        model: String,
    },
    /// A rewrite that failed (its preset fields are left out, as in Dreamverse's failure
    /// variants).
    RewriteSeedPromptsComplete {
        fallback_used: bool,
        error: Option<String>,
        model: String,
        latency_ms: f64,
    },
    /// A rewrite that succeeded: the new seed list is in force.
    #[serde(rename = "rewrite_seed_prompts_complete")]
    RewriteSeedPromptsDone {
        fallback_used: bool,
        error: Option<String>,
        preset_id: Option<String>,
        preset_label: String,
        model: String,
        latency_ms: f64,
    },
    SeedPromptsResetPending {
        seed_prompt_count: u32,
    },
    SeedPromptsResetApplied {
        reason: ResetReason,
        loop_iteration: u32,
        seed_prompt_count: u32,
        dropped_user_raw_queue: u32,
        dropped_user_ready_queue: u32,
    },
    LoopRestarted {
        loop_iteration: u32,
        seed_prompt_count: u32,
        dropped_user_raw_queue: u32,
        dropped_user_ready_queue: u32,
    },
    GenerationRestarted {
        reason: &'static str,
        segment_cap: u32,
    },
    /// The project ended; the socket and its worker stay for the next `project_init_v1`.
    ProjectIdle {
        dropped_user_raw_queue: u32,
        dropped_user_ready_queue: u32,
    },
    /// The session's lifetime is over; a close 1000 `Session timeout` follows.
    SessionTimeout {
        message: String,
    },
    /// Dreamverse errors carry only a message.
    Error {
        message: String,
    },
}

impl ServerMessage {
    /// An `error` frame.
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
        }
    }

    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// `prompt_fallback_used.source`.
pub const ENHANCEMENT_FAILED_SOURCE: &str = "user_enhancement_failed";
/// `prompt_fallback_used.error`, Dreamverse's words.
pub const ENHANCEMENT_FAILED_ERROR: &str = "Prompt extension failed for this request.";

/// Milliseconds rounded to two decimals, as Dreamverse reports latencies.
pub fn round_ms(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn wire(msg: &ServerMessage) -> Value {
        serde_json::from_str(&msg.to_json()).unwrap()
    }

    #[test]
    fn an_empty_init_takes_dreamverse_defaults() {
        let s = ProjectSettings::from_init_frame(&fields(json!({"type": "session_init_v2"})));
        assert_eq!(s, ProjectSettings::default());
        assert!(s.enhancement_enabled, "enhancement defaults on");
        assert!(!s.auto_extension_enabled && !s.loop_generation_enabled && !s.single_clip_mode);
        assert_eq!((s.preset_id, s.preset_label.as_str()), (None, ""));
    }

    #[test]
    fn the_init_type_selects_the_prompt_field() {
        let frame = json!({"curated_prompts": ["a"], "segment_prompts": ["b"]});
        let mut v2 = fields(frame.clone());
        v2.insert("type".into(), json!("session_init_v2"));
        assert_eq!(ProjectSettings::from_init_frame(&v2).curated_prompts, ["a"]);
        for other in [json!("select_model"), json!("anything"), Value::Null] {
            let mut legacy = fields(frame.clone());
            legacy.insert("type".into(), other);
            assert_eq!(
                ProjectSettings::from_init_frame(&legacy).curated_prompts,
                ["b"]
            );
        }
    }

    #[test]
    fn fields_are_read_leniently() {
        let s = ProjectSettings::from_init_frame(&fields(json!({
            "type": "session_init_v2",
            "preset_id": "p1",
            "preset_label": "  P1 ",
            "curated_prompts": ["  one ", "", "   ", 7, null, "two"],
            "enhancement_enabled": 0,
            "loop_generation_enabled": "no",
            "single_clip_mode": null,
            "rewrite_temperature": "1.5",
            "rewrite_model": "  ",
        })));
        assert_eq!(s.curated_prompts, ["one", "two"]);
        assert_eq!(s.preset_id.as_deref(), Some("p1"));
        assert_eq!(s.preset_label, "P1");
        assert!(!s.enhancement_enabled, "0 is false");
        assert!(s.loop_generation_enabled, "a non-empty string is true");
        assert!(!s.single_clip_mode, "null is false");
        assert_eq!(s.rewrite_temperature, Some(1.5));
        assert_eq!(s.rewrite_model, None);
        let s = ProjectSettings::from_init_frame(&fields(
            json!({"type": "session_init_v2", "curated_prompts": "one"}),
        ));
        assert!(s.curated_prompts.is_empty(), "not a list");
    }

    #[test]
    fn messages_parse_with_defaults_and_unknown_types_are_ignored() {
        let m = |v| ClientMessage::from_fields(&fields(v));
        assert_eq!(
            m(json!({"type": "append_prompt", "prompt": " hi "})),
            ClientMessage::AppendPrompt(AppendPrompt {
                prompt: "hi".into(),
                prompt_id: None
            })
        );
        assert_eq!(
            m(json!({"type": "set_generation_paused"})),
            ClientMessage::SetGenerationPaused { paused: None },
            "absent: keep the current value"
        );
        assert_eq!(
            m(json!({"type": "set_loop_generation", "enabled": 1})),
            ClientMessage::SetLoopGeneration {
                enabled: Some(true)
            }
        );
        let ClientMessage::SimpleGenerate(s) = m(json!({"type": "simple_generate", "prompt": "x"}))
        else {
            panic!()
        };
        assert!(s.enhancement_enabled && s.preset_id.is_none() && s.initial_image.is_none());
        assert_eq!(
            m(json!({"type": "launch_rockets"})),
            ClientMessage::Ignored(Some("launch_rockets".into()))
        );
        assert_eq!(m(json!({"no_type": 1})), ClientMessage::Ignored(None));
        assert_eq!(m(json!({"type": "leave"})), ClientMessage::Leave);
    }

    #[test]
    fn only_json_objects_are_frames() {
        assert!(matches!(parse_frame("{nope"), Err(FrameError::NotJson(_))));
        assert_eq!(parse_frame("[1]"), Err(FrameError::NotObject));
        assert_eq!(parse_frame("\"x\""), Err(FrameError::NotObject));
        assert!(
            parse_frame(r#"{"type": 3}"#).is_ok(),
            "a bad type is ignored later"
        );
    }

    #[test]
    fn rewrite_settings_resolve_to_allowed_values() {
        assert_eq!(resolve_rewrite_model(Some("other")), DEFAULT_REWRITE_MODEL);
        assert_eq!(resolve_rewrite_model(None), DEFAULT_REWRITE_MODEL);
        assert_eq!(resolve_rewrite_temperature(Some(5.0)), 2.0);
        assert_eq!(resolve_rewrite_temperature(Some(-1.0)), 0.0);
        assert_eq!(resolve_rewrite_temperature(Some(f64::NAN)), 1.0);
        assert_eq!(resolve_rewrite_temperature(None), 1.0);
    }

    #[test]
    fn initial_images_are_checked_like_dreamverse() {
        let image = |v| parse_initial_image(&v);
        assert_eq!(image(Value::Null), Ok(None));
        assert_eq!(image(json!({"data_url": ""})), Ok(None));
        assert!(image(json!("data:image/png;base64,AAAA")).is_err());
        let ok = image(json!({"data_url": "data:image/PNG;base64,iVBO\nRw==", "name": "a.png"}))
            .unwrap()
            .unwrap();
        assert_eq!(
            ok,
            DataUrlImage {
                mime: "image/png".into(),
                name: Some("a.png".into()),
                base64: "iVBORw==".into()
            }
        );
        let err = |v| image(v).unwrap_err();
        assert!(err(json!({"data_url": "http://x/a.png"})).contains("data URL"));
        assert!(err(json!({"data_url": "data:image/png;base64,%%%"})).contains("data URL"));
        assert!(
            err(json!({"data_url": "data:image/png;base64,AAAA", "mime_type": "image/jpeg"}))
                .contains("must match")
        );
        assert!(err(json!({"data_url": "data:image/gif;base64,AAAA"})).contains("PNG, JPEG"));
    }

    #[test]
    fn server_messages_keep_their_nulls() {
        let v = wire(&ServerMessage::SegmentPromptSource {
            segment_idx: 1,
            source: PromptSource::Curated,
            prompt_id: None,
            fallback_used: false,
            seed_prompt_index: Some(0),
            loop_iteration: 1,
        });
        assert_eq!(
            v,
            json!({"type": "segment_prompt_source", "segment_idx": 1, "source": "curated",
                   "prompt_id": null, "fallback_used": false, "seed_prompt_index": 0,
                   "loop_iteration": 1})
        );
        assert_eq!(
            wire(&ServerMessage::Ltx2StreamComplete),
            json!({"type": "ltx2_stream_complete"})
        );
        assert_eq!(
            wire(&ServerMessage::error("bad")),
            json!({"type": "error", "message": "bad"})
        );
        let v = wire(&ServerMessage::SeedPromptsInit {
            prompts: vec!["one".into()],
            preset_id: None,
            preset_label: String::new(),
            reason: "init",
            seed_prompt_count: 1,
        });
        assert_eq!(v["type"], "seed_prompts_updated");
        assert_eq!(v["preset_id"], Value::Null);
        let step = ServerMessage::StepComplete {
            latency_ms: StepLatency {
                total: 125.0,
                worker_e2e: 5.0,
                main_user_step: 125.0,
                overhead: 120.0,
            },
        };
        assert_eq!(
            step.to_json(),
            r#"{"type":"step_complete","latency_ms":{"total":125.0,"worker_e2e":5.0,"main_user_step":125.0,"overhead":120.0}}"#
        );
        assert_eq!(round_ms(1.23456), 1.23);
    }
}
