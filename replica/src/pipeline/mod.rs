//! What a worker runs for one session: a generation thread and a media thread that keep
//! generation and encoding apart.
//!
//! ```text
//! session ──jobs──▶ generation thread ──segments (bounded: 1)──▶ media thread ──▶ send queue
//!    ▲                 │ (owns the generator)                       │ (owns the encoder)
//!    └────────── events: generated / media done / failed ──────────┘
//! ```
//!
//! Segment k+1 is generated while segment k is encoded and sent. Frames move into the media
//! thread by value, so the generator never sees them again. Every hand-off is bounded: a slow
//! client fills the send queue, the media thread waits on it, the segment channel fills and
//! the generation thread waits; nothing buffers without bound. When the session ends it
//! cancels: generation stops at the next step and the generator goes back to its owner.
//!
//! This layer knows generators and encoders only. Which worker a session gets, and whether
//! these threads run in this process or in a worker process, is the pool's business: both
//! hand the session a [`SegmentPipeline`] to drive.

mod generation;
mod local;
mod media;

use std::time::Instant;

use framecast_common::protocol::{ContinuationState, ErrorCode, ServerMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::MediaSettings;
use crate::generate::{SegmentRequest, StreamFormat};
use crate::media::{AudioSettings, EncoderSettings};

pub use local::LocalPipeline;

/// A frame for the client, queued in the session's bounded send queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A JSON control message.
    Text(String),
    /// fMP4 bytes (whole boxes).
    Binary(Vec<u8>),
    /// Close the connection with a code and reason; nothing is sent after it.
    Close(u16, String),
    /// A WebSocket ping, to learn whether the client is still there.
    Ping,
    /// Not sent: once the writer reaches it, everything queued before it (segment N's
    /// media) is written to the socket, and the writer reports N + 1 segments written.
    Written(u32),
    /// Not sent: segment N's media is queued before it and its completion messages follow;
    /// the session's socket writer holds them until the resume record covering segment
    /// N + 1 is stored (its resume gate).
    Encoded(u32),
}

impl Outgoing {
    /// A control message as JSON text.
    pub fn text(msg: &ServerMessage) -> Self {
        Outgoing::Text(msg.to_json())
    }
}

/// One segment to generate.
#[derive(Debug, Clone)]
pub struct SegmentJob {
    pub request: SegmentRequest,
    /// When the session asked for it; `e2e_latency_ms` is measured from here.
    pub scheduled_at: Instant,
}

/// What the threads tell the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PipelineEvent {
    /// A segment was generated; `next_state` continues from it.
    Generated {
        segment_idx: u32,
        next_state: ContinuationState,
        /// The checkpoint the request asked for (`checkpoint_max_bytes`): a state in the
        /// shared stores another replica can continue from. `None` when none was asked for
        /// or it could not be written (logged; that segment is then no resume point).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<ContinuationState>,
    },
    /// Every fragment of a segment is in the send queue.
    MediaDone { segment_idx: u32 },
    /// The portable state asked for with [`SegmentPipeline::export`], its tensors in the blob
    /// store.
    Exported { state: ContinuationState },
    /// The state could not be exported; the session goes on.
    ExportFailed { message: String },
    /// The session cannot go on.
    Failed {
        /// Error category for the client.
        code: ErrorCode,
        message: String,
    },
}

/// Channels the threads report through.
#[derive(Debug, Clone)]
pub struct PipelineOutputs {
    /// Messages and media for the client (bounded: back-pressure reaches generation).
    pub out: mpsc::Sender<Outgoing>,
    /// Events for the session; few and small, so unbounded.
    pub events: mpsc::UnboundedSender<PipelineEvent>,
    /// When the session became active, for time-to-first-media.
    pub started: Instant,
}

/// The running threads of one session, wherever they run; dropping it cancels them.
///
/// Every method returns at once: answers come back as [`PipelineEvent`]s.
pub trait SegmentPipeline: Send + Sync + std::fmt::Debug {
    /// Queues a segment; false when the pipeline has stopped.
    fn submit(&self, job: SegmentJob) -> bool;

    /// Asks for a portable copy of the newest state, answered by [`PipelineEvent::Exported`]
    /// or [`PipelineEvent::ExportFailed`] once the segment being generated is done; false
    /// when the pipeline has stopped or is full.
    fn export(&self) -> bool;

    /// Stops both threads as soon as they notice (within one denoising step).
    fn cancel(&self);
}

/// The encoder settings for a generator's format under the media configuration.
pub fn encoder_settings(media: &MediaSettings, format: StreamFormat) -> EncoderSettings {
    let mut encoder = EncoderSettings::from_config(media, format.width, format.height, format.fps);
    encoder.audio = format.audio.map(|(sample_rate, channels)| AudioSettings {
        sample_rate,
        channels,
        encoder: media.audio_encoder,
    });
    encoder
}
