//! The `/v1/stream` wire protocol: one JSON object per text frame, tagged by `type`.
//!
//! Compatible with FastVideo's streaming contract so its clients work unchanged. Fields the
//! client leaves out take their defaults, `null` fields are omitted on the way out, and
//! unknown extra fields are ignored (older or newer clients keep working). Parsing reports
//! *which* field is wrong, because "invalid message" alone helps no client developer.

use serde::{Deserialize, Serialize};

/// Message types a client may send.
pub const CLIENT_MESSAGE_TYPES: [&str; 9] = [
    "session_init_v2",
    "segment_prompt_source",
    "seed_prompts_updated",
    "enhancement_updated",
    "auto_extension_updated",
    "loop_generation_updated",
    "generation_paused_updated",
    "snapshot_state",
    "ping",
];

/// Exportable generator state that lets a session continue elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinuationState {
    /// Names the model family and state version (`framecast.wan.v1`, `framecast.mock.v1`).
    pub kind: String,
    /// Kind-specific content; large tensors are referenced by blob id.
    pub payload: serde_json::Value,
    /// The replica's HMAC-SHA256 over `kind` and `payload` (base64url), set on every state a
    /// `continuation_state_snapshot` hands out. A state passed back in `session_init_v2`
    /// must carry it unchanged (key order and whitespace do not matter); a missing or
    /// mismatching signature gets the state refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl ContinuationState {
    /// An unsigned state of `kind`.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            signature: None,
        }
    }
}

/// An image that conditions the first segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitialImage {
    /// `image/png`, `image/jpeg` or `image/webp`.
    pub mime: String,
    /// Display name, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The image bytes, standard base64.
    pub data: String,
}

/// Where a segment's prompt came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSource {
    /// One of the session's curated prompts.
    Curated,
    /// Rewritten by the prompt enhancer.
    Enhanced,
    /// Typed by the user.
    User,
    /// Continued automatically by auto-extension.
    AutoExtension,
}

/// The opening frame of a session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionInit {
    /// The client's own identifier, for logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Generation preset the client expects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Human-readable preset name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset_label: Option<String>,
    /// Prompts to cycle through with loop generation.
    pub curated_prompts: Vec<String>,
    /// Image that conditions the first segment. `null` and `{}` (what FastVideo's clients
    /// send for "no image") both mean none.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "initial_image_or_empty"
    )]
    pub initial_image: Option<InitialImage>,
    /// Rewrite prompts with the enhancer.
    pub enhancement_enabled: bool,
    /// Keep generating continuation segments without waiting for prompts.
    pub auto_extension_enabled: bool,
    /// Cycle through `curated_prompts`.
    pub loop_generation_enabled: bool,
    /// Generate one clip and end.
    pub single_clip_mode: bool,
    /// Only `av_fmp4` is served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_mode: Option<String>,
    /// State exported earlier with `snapshot_state`, to continue from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuation_state: Option<ContinuationState>,
    /// Continue a session whose connection was lost (its replica died, the network dropped),
    /// on whichever replica this connection reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume: Option<Box<ResumeRequest>>,
    /// Also publish the stream as a live HLS ladder for any number of viewers (when the
    /// replica allows broadcasts): answered by `broadcast_started` with the playlist's path.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub broadcast: bool,
}

/// What a client sends to continue a lost session: the `session_resumable` it was given
/// and where its media stopped. The server regenerates from that segment on, with the
/// prompts and seeds the lost replica used, so no segment is lost or repeated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRequest {
    /// From `session_resumable`.
    pub session_id: String,
    /// From the newest `session_resumable`: it proves the client owns the session.
    pub token: String,
    /// The first segment whose `media_segment_complete` the client did not receive.
    pub next_segment_idx: u32,
}

/// A request for the next segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentPrompt {
    /// What to generate.
    pub prompt: String,
    /// What to steer away from (with guidance scale > 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Where the prompt came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PromptSource>,
    /// Noise seed; the server picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Denoising steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_inference_steps: Option<u32>,
    /// Classifier-free guidance scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<f32>,
}

/// The body of the on/off toggles (`enhancement_updated`, `auto_extension_updated`,
/// `loop_generation_updated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toggle {
    /// New state.
    pub enabled: bool,
}

/// The body of `generation_paused_updated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseToggle {
    /// New state.
    pub paused: bool,
}

/// The body of `seed_prompts_updated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedPrompts {
    /// The new curated prompts; left out means none (as FastVideo reads it).
    #[serde(default)]
    pub seed_prompts: Vec<String>,
}

/// What kind of JSON value this is, for messages.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `initial_image` as FastVideo's clients send it: `null` or an empty object for "no image",
/// else a full [`InitialImage`]. Anything else (a number, a list, an object missing `data`)
/// is still an error naming the field.
fn initial_image_or_empty<'de, D>(deserializer: D) -> Result<Option<InitialImage>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(serde_json::Value::Object(map)) if map.is_empty() => Ok(None),
        Some(value) if !value.is_object() => Err(D::Error::custom(format_args!(
            "expected an object {{mime, data, name?}}, `{{}}` or null, got {}",
            json_kind(&value)
        ))),
        Some(value) => serde_path_to_error::deserialize(value)
            .map(Some)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                // A missing field keeps serde's wording, which the caller lifts into the
                // path; a bad nested field names itself.
                if path == "." {
                    D::Error::custom(inner)
                } else {
                    D::Error::custom(format_args!("field `{path}`: {inner}"))
                }
            }),
    }
}

/// The body of messages that carry nothing but their type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First frame of every session.
    SessionInitV2(SessionInit),
    /// Generate the next segment with this prompt.
    SegmentPromptSource(SegmentPrompt),
    /// Replaces the curated prompts.
    SeedPromptsUpdated(SeedPrompts),
    /// Turns the prompt enhancer on or off.
    EnhancementUpdated(Toggle),
    /// Turns auto-extension on or off.
    AutoExtensionUpdated(Toggle),
    /// Turns loop generation on or off.
    LoopGenerationUpdated(Toggle),
    /// Pauses or resumes generation after the current segment.
    GenerationPausedUpdated(PauseToggle),
    /// Asks for the continuation state.
    SnapshotState(Empty),
    /// Keep-alive; counts as activity.
    Ping(Empty),
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamEndReason {
    /// The session generated its maximum number of segments.
    SegmentCap,
    /// The client asked to stop (or single-clip mode finished).
    StopRequested,
    /// An error ended the stream.
    Error,
    /// The client was idle too long.
    IdleTimeout,
    /// The replica is shutting down.
    Draining,
    /// The session reached the replica's longest session lifetime.
    MaxDuration,
}

/// Machine-readable error categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The session cannot be accepted (capacity, bad first frame).
    SessionRejected,
    /// A client message is malformed; the session continues.
    InvalidMessage,
    /// The client's preset does not match the server's.
    PresetMismatch,
    /// No worker is available.
    GpuUnavailable,
    /// The worker failed while serving the session.
    WorkerFailed,
    /// Something upstream took too long.
    UpstreamTimeout,
    /// A server bug or media failure.
    InternalError,
    /// The safety filter blocked a prompt; it is not generated.
    PromptBlocked,
}

impl ErrorCode {
    /// Every code, for exporting a zero series per code up front.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::SessionRejected,
        ErrorCode::InvalidMessage,
        ErrorCode::PresetMismatch,
        ErrorCode::GpuUnavailable,
        ErrorCode::WorkerFailed,
        ErrorCode::UpstreamTimeout,
        ErrorCode::InternalError,
        ErrorCode::PromptBlocked,
    ];

    /// The wire name (`invalid_message`, ...), for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::SessionRejected => "session_rejected",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::PresetMismatch => "preset_mismatch",
            ErrorCode::GpuUnavailable => "gpu_unavailable",
            ErrorCode::WorkerFailed => "worker_failed",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::PromptBlocked => "prompt_blocked",
        }
    }
}

/// Whether `id` can name a broadcast (`/v1/broadcast/{id}/…`): what stream ids are (letters,
/// digits, `-`, `_`; at most 64), nothing that walks a file system. The replica, which maps it
/// to a directory, and the router, which looks its owner up, share this one rule.
pub fn valid_broadcast_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Messages the server sends (binary fMP4 frames travel separately).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The session waits for a worker.
    QueueStatus {
        /// 1-based place in the queue.
        position: u32,
        /// Sessions waiting in all.
        queue_depth: u32,
    },
    /// A worker serves the session now.
    GpuAssigned {
        /// The worker's device index.
        gpu_id: u32,
        /// Idle seconds before the session is closed.
        session_timeout: u64,
    },
    /// Stream geometry, before the first segment.
    Ltx2StreamStart {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preset: Option<String>,
        width: u32,
        height: u32,
        /// Frames per second.
        fps: u32,
        /// Frames per segment.
        num_frames: u32,
    },
    /// Generation of a segment begins.
    Ltx2SegmentStart {
        /// 0-based segment number.
        segment_idx: u32,
        prompt: String,
        /// Denoising steps it will take.
        total_steps: u32,
    },
    /// One denoising step finished.
    StepComplete {
        /// 0-based segment number.
        segment_idx: u32,
        /// 1-based step number.
        step: u32,
        /// Steps in all.
        total_steps: u32,
        /// Which phase (`denoise`, `decode`).
        stage: String,
    },
    /// The fMP4 stream's codec, before each segment's first binary frame. That frame starts
    /// with the stream's init segment (`ftyp`+`moov`, the same bytes every time), so each
    /// segment's bytes form a playable fMP4 file; fragment times run on across segments.
    MediaInit {
        /// The segment whose bytes follow.
        segment_idx: u32,
        /// `video/mp4; codecs="..."` for MediaSource.
        mime: String,
        /// Identifies the fMP4 stream.
        stream_id: String,
        /// `av_fmp4`.
        mode: String,
    },
    /// Every fragment of a segment was sent.
    MediaSegmentComplete {
        /// 0-based segment number.
        segment_idx: u32,
        /// Identifies the fMP4 stream.
        stream_id: String,
        /// Binary frames sent for the segment.
        chunks: u32,
        /// Media time of the segment.
        duration_ms: u64,
    },
    /// A segment is generated and fully sent.
    Ltx2SegmentComplete {
        /// 0-based segment number.
        segment_idx: u32,
        /// Time spent generating.
        generation_time_ms: u64,
        /// From the request to the last byte sent.
        e2e_latency_ms: u64,
    },
    /// The stream ended.
    Ltx2StreamComplete {
        /// Why.
        reason: StreamEndReason,
    },
    /// The session was idle too long and is being closed.
    SessionTimeout {
        /// The idle limit.
        timeout_seconds: u64,
    },
    /// Answer to `snapshot_state`.
    ContinuationStateSnapshot { state: ContinuationState },
    /// How to continue this session if the connection is lost: sent once the session is
    /// active (again with a fresh token after a resume). Send both back in
    /// `session_init_v2.resume`; the token is a secret.
    SessionResumable {
        /// The session's id, kept across resumes.
        session_id: String,
        /// 128 random bits as hex, bound to the session; replaced on every resume.
        token: String,
        /// How many segments back a resume may start (older ones are forgotten).
        window_segments: u32,
    },
    /// A resume was accepted: the stream continues at `segment_idx`, on the same fMP4
    /// timeline (the media of segment k starts at k × `num_frames` frames).
    SessionResumed {
        /// The session's id.
        session_id: String,
        /// The segment that comes next.
        segment_idx: u32,
    },
    /// The stream is being published as live HLS: its master playlist is served at
    /// `master_playlist` (a path on the origin the session connected to).
    BroadcastStarted {
        /// Identifies the broadcast (the fMP4 stream id).
        stream_id: String,
        /// `/v1/broadcast/<stream_id>/master.m3u8`.
        master_playlist: String,
    },
    /// Something went wrong.
    Error {
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
        /// A finer machine-readable reason (`field:prompt`, `frame_too_large`, ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl ServerMessage {
    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>, retryable: bool) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
            retryable,
            reason: None,
        }
    }

    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// A client frame that is not a valid message; the text says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The frame is not JSON.
    #[error("message is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object with a string `type`.
    #[error("message must be a JSON object with a string `type` field")]
    MissingType,
    /// A `type` this server does not know.
    #[error("unknown message type `{0}` (expected one of: {types})", types = CLIENT_MESSAGE_TYPES.join(", "))]
    UnknownType(String),
    /// A known type with a missing or mistyped field.
    #[error("invalid `{message_type}` message: field `{field}`: {problem}")]
    InvalidField {
        message_type: String,
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ProtocolError {
    /// A short machine-readable reason for the `error` frame.
    pub fn reason(&self) -> String {
        match self {
            ProtocolError::NotJson(_) => "not_json".into(),
            ProtocolError::MissingType => "missing_type".into(),
            ProtocolError::UnknownType(_) => "unknown_type".into(),
            ProtocolError::InvalidField { field, .. } => format!("field:{field}"),
        }
    }
}

/// Parses one client text frame.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtocolError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    let message_type = value
        .get("type")
        .and_then(serde_json::Value::as_str)
        .ok_or(ProtocolError::MissingType)?
        .to_string();
    // Deserialize the payload type directly (not through the tagged enum, which would hide
    // the path of a bad field); the `type` key is ignored like any extra field.
    let p = MessageBody {
        value,
        message_type: &message_type,
    };
    Ok(match message_type.as_str() {
        "session_init_v2" => ClientMessage::SessionInitV2(p.parse()?),
        "segment_prompt_source" => ClientMessage::SegmentPromptSource(p.parse()?),
        "seed_prompts_updated" => ClientMessage::SeedPromptsUpdated(p.parse()?),
        "enhancement_updated" => ClientMessage::EnhancementUpdated(p.parse()?),
        "auto_extension_updated" => ClientMessage::AutoExtensionUpdated(p.parse()?),
        "loop_generation_updated" => ClientMessage::LoopGenerationUpdated(p.parse()?),
        "generation_paused_updated" => ClientMessage::GenerationPausedUpdated(p.parse()?),
        "snapshot_state" => ClientMessage::SnapshotState(p.parse()?),
        "ping" => ClientMessage::Ping(p.parse()?),
        _ => return Err(ProtocolError::UnknownType(message_type)),
    })
}

/// A message's JSON with its `type`, so field errors can name both.
struct MessageBody<'a> {
    value: serde_json::Value,
    message_type: &'a str,
}

impl MessageBody<'_> {
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ProtocolError> {
        serde_path_to_error::deserialize(&self.value).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde names a missing field only in its message; lift it into the path.
            let (field, problem) = match inner.strip_prefix("missing field `") {
                Some(rest) => {
                    let name = rest.trim_end_matches('`');
                    let path = if field == "." {
                        name.to_string()
                    } else {
                        format!("{field}.{name}")
                    };
                    (path, "is required".to_string())
                }
                None => (field, inner),
            };
            ProtocolError::InvalidField {
                message_type: self.message_type.to_string(),
                field,
                problem,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip_client(msg: ClientMessage) {
        let text = serde_json::to_string(&msg).unwrap();
        assert_eq!(parse_client_message(&text).unwrap(), msg, "{text}");
    }

    fn round_trip_server(msg: ServerMessage) {
        let text = msg.to_json();
        let back: ServerMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(back, msg, "{text}");
    }

    #[test]
    fn every_client_message_round_trips() {
        round_trip_client(ClientMessage::SessionInitV2(SessionInit {
            client_id: Some("c1".into()),
            curated_prompts: vec!["a cat".into()],
            initial_image: Some(InitialImage {
                mime: "image/png".into(),
                name: None,
                data: "iVBORw0KGgo=".into(),
            }),
            auto_extension_enabled: true,
            stream_mode: Some("av_fmp4".into()),
            continuation_state: Some(ContinuationState {
                kind: "framecast.mock.v1".into(),
                payload: json!({"segment": 3}),
                signature: Some("c2lnbmF0dXJl".into()),
            }),
            ..SessionInit::default()
        }));
        round_trip_client(ClientMessage::SegmentPromptSource(SegmentPrompt {
            prompt: "a dog".into(),
            negative_prompt: Some("blur".into()),
            source: Some(PromptSource::AutoExtension),
            seed: Some(7),
            num_inference_steps: Some(4),
            guidance_scale: Some(3.5),
        }));
        round_trip_client(ClientMessage::SeedPromptsUpdated(SeedPrompts {
            seed_prompts: vec!["x".into()],
        }));
        round_trip_client(ClientMessage::EnhancementUpdated(Toggle { enabled: true }));
        round_trip_client(ClientMessage::AutoExtensionUpdated(Toggle {
            enabled: false,
        }));
        round_trip_client(ClientMessage::LoopGenerationUpdated(Toggle {
            enabled: true,
        }));
        round_trip_client(ClientMessage::GenerationPausedUpdated(PauseToggle {
            paused: true,
        }));
        round_trip_client(ClientMessage::SnapshotState(Empty {}));
        round_trip_client(ClientMessage::Ping(Empty {}));
    }

    #[test]
    fn every_server_message_round_trips() {
        let state = ContinuationState::new("framecast.mock.v1", json!({"blob": "abc"}));
        for msg in [
            ServerMessage::QueueStatus {
                position: 1,
                queue_depth: 2,
            },
            ServerMessage::GpuAssigned {
                gpu_id: 0,
                session_timeout: 120,
            },
            ServerMessage::SessionResumable {
                session_id: "00ff00ff00ff00ff".into(),
                token: "ab".repeat(16),
                window_segments: 4,
            },
            ServerMessage::SessionResumed {
                session_id: "00ff00ff00ff00ff".into(),
                segment_idx: 3,
            },
            ServerMessage::Ltx2StreamStart {
                preset: None,
                width: 832,
                height: 480,
                fps: 16,
                num_frames: 33,
            },
            ServerMessage::Ltx2SegmentStart {
                segment_idx: 0,
                prompt: "p".into(),
                total_steps: 4,
            },
            ServerMessage::StepComplete {
                segment_idx: 0,
                step: 1,
                total_steps: 4,
                stage: "denoise".into(),
            },
            ServerMessage::MediaInit {
                segment_idx: 0,
                mime: "video/mp4".into(),
                stream_id: "s".into(),
                mode: "av_fmp4".into(),
            },
            ServerMessage::MediaSegmentComplete {
                segment_idx: 0,
                stream_id: "s".into(),
                chunks: 4,
                duration_ms: 2000,
            },
            ServerMessage::Ltx2SegmentComplete {
                segment_idx: 0,
                generation_time_ms: 10,
                e2e_latency_ms: 20,
            },
            ServerMessage::Ltx2StreamComplete {
                reason: StreamEndReason::SegmentCap,
            },
            ServerMessage::SessionTimeout {
                timeout_seconds: 120,
            },
            ServerMessage::ContinuationStateSnapshot { state },
            ServerMessage::error(ErrorCode::InvalidMessage, "bad", true),
        ] {
            round_trip_server(msg);
        }
    }

    #[test]
    fn wire_shapes_match_the_fastvideo_contract() {
        let v: serde_json::Value = serde_json::from_str(
            &ServerMessage::Ltx2StreamComplete {
                reason: StreamEndReason::IdleTimeout,
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type": "ltx2_stream_complete", "reason": "idle_timeout"})
        );
        let v: serde_json::Value = serde_json::from_str(
            &ServerMessage::error(ErrorCode::GpuUnavailable, "busy", true).to_json(),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "code": "gpu_unavailable", "message": "busy", "retryable": true}),
            "null fields are omitted"
        );
        let init = parse_client_message(r#"{"type":"session_init_v2"}"#).unwrap();
        assert_eq!(
            init,
            ClientMessage::SessionInitV2(SessionInit::default()),
            "all fields optional"
        );
    }

    #[test]
    fn every_listed_type_is_parsed() {
        for t in CLIENT_MESSAGE_TYPES {
            let result = parse_client_message(&format!(r#"{{"type":"{t}"}}"#));
            assert!(
                !matches!(result, Err(ProtocolError::UnknownType(_))),
                "{t}: {result:?}"
            );
        }
    }

    #[test]
    fn error_code_names_match_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn extra_fields_are_ignored() {
        let msg = parse_client_message(r#"{"type":"snapshot_state","future_field":1}"#).unwrap();
        assert_eq!(msg, ClientMessage::SnapshotState(Empty {}));
    }

    #[test]
    fn bad_frames_get_specific_errors() {
        assert!(matches!(
            parse_client_message("{nope"),
            Err(ProtocolError::NotJson(_))
        ));
        assert_eq!(parse_client_message("[1]"), Err(ProtocolError::MissingType));
        assert_eq!(
            parse_client_message(r#"{"type": 3}"#),
            Err(ProtocolError::MissingType)
        );
        let err = parse_client_message(r#"{"type":"launch_rockets"}"#).unwrap_err();
        assert_eq!(err, ProtocolError::UnknownType("launch_rockets".into()));
        assert!(err.to_string().contains("session_init_v2"), "{err}");
        assert_eq!(err.reason(), "unknown_type");
    }

    #[test]
    fn fastvideo_lenient_forms_are_accepted() {
        // FastVideo reads `seed_prompts` with a default and `initial_image: {}` as no image.
        assert_eq!(
            parse_client_message(r#"{"type":"seed_prompts_updated"}"#).unwrap(),
            ClientMessage::SeedPromptsUpdated(SeedPrompts {
                seed_prompts: Vec::new()
            })
        );
        for image in ["{}", "null"] {
            let text = format!(r#"{{"type":"session_init_v2","initial_image":{image}}}"#);
            assert_eq!(
                parse_client_message(&text).unwrap(),
                ClientMessage::SessionInitV2(SessionInit::default()),
                "{text}"
            );
        }
        // A real image still parses as one.
        let text =
            r#"{"type":"session_init_v2","initial_image":{"mime":"image/png","data":"AA=="}}"#;
        let ClientMessage::SessionInitV2(init) = parse_client_message(text).unwrap() else {
            panic!("not an init");
        };
        assert_eq!(init.initial_image.unwrap().data, "AA==");
    }

    #[test]
    fn garbage_in_the_lenient_fields_is_still_refused() {
        let field_of = |text: &str| match parse_client_message(text) {
            Err(ProtocolError::InvalidField { field, problem, .. }) => (field, problem),
            other => panic!("{text}: {other:?}"),
        };
        for (text, field) in [
            (
                r#"{"type":"seed_prompts_updated","seed_prompts":3}"#,
                "seed_prompts",
            ),
            (
                r#"{"type":"seed_prompts_updated","seed_prompts":null}"#,
                "seed_prompts",
            ),
            (
                r#"{"type":"seed_prompts_updated","seed_prompts":["a",1]}"#,
                "seed_prompts[1]",
            ),
            (
                r#"{"type":"session_init_v2","initial_image":3}"#,
                "initial_image",
            ),
            (
                r#"{"type":"session_init_v2","initial_image":[]}"#,
                "initial_image",
            ),
            (
                r#"{"type":"session_init_v2","initial_image":"x"}"#,
                "initial_image",
            ),
            (
                r#"{"type":"session_init_v2","initial_image":{"mime":"image/png"}}"#,
                "initial_image.data",
            ),
        ] {
            assert_eq!(field_of(text).0, field, "{text}");
        }
        let (field, problem) =
            field_of(r#"{"type":"session_init_v2","initial_image":{"mime":"image/png","data":7}}"#);
        assert_eq!(field, "initial_image");
        assert!(problem.contains("field `data`"), "{problem}");
    }

    #[test]
    fn a_resume_request_parses_and_its_missing_fields_are_named() {
        let text = r#"{"type":"session_init_v2","resume":{"session_id":"00ff00ff00ff00ff","token":"ab","next_segment_idx":3}}"#;
        let ClientMessage::SessionInitV2(init) = parse_client_message(text).unwrap() else {
            panic!("not an init");
        };
        let resume = init.resume.unwrap();
        assert_eq!(
            (
                resume.session_id.as_str(),
                resume.token.as_str(),
                resume.next_segment_idx
            ),
            ("00ff00ff00ff00ff", "ab", 3)
        );
        for (text, field) in [
            (
                r#"{"type":"session_init_v2","resume":{"session_id":"x","token":"y"}}"#,
                "resume.next_segment_idx",
            ),
            (
                r#"{"type":"session_init_v2","resume":{"session_id":"x","next_segment_idx":1}}"#,
                "resume.token",
            ),
            (
                r#"{"type":"session_init_v2","resume":{"session_id":"x","token":"y","next_segment_idx":-1}}"#,
                "resume.next_segment_idx",
            ),
        ] {
            match parse_client_message(text) {
                Err(ProtocolError::InvalidField { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_fields_are_named() {
        let err = parse_client_message(r#"{"type":"segment_prompt_source"}"#).unwrap_err();
        assert!(
            matches!(&err, ProtocolError::InvalidField { field, problem, .. } if field == "prompt" && problem == "is required"),
            "{err:?}"
        );
        assert_eq!(err.reason(), "field:prompt");
        let err =
            parse_client_message(r#"{"type":"segment_prompt_source","prompt":"x","seed":"seven"}"#)
                .unwrap_err();
        assert!(
            matches!(&err, ProtocolError::InvalidField { field, .. } if field == "seed"),
            "{err:?}"
        );
        let err = parse_client_message(
            r#"{"type":"segment_prompt_source","prompt":"x","source":"telepathy"}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&err, ProtocolError::InvalidField { field, .. } if field == "source"),
            "{err:?}"
        );
        let err = parse_client_message(
            r#"{"type":"session_init_v2","initial_image":{"mime":"image/png"}}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&err, ProtocolError::InvalidField { field, .. } if field == "initial_image.data" || field == "initial_image"),
            "{err:?}"
        );
    }
}
