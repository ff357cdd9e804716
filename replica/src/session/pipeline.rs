//! The two threads behind one session that keep generation and media apart:
//!
//! ```text
//! controller ──jobs──▶ generation thread ──segments (bounded: 1)──▶ media thread ──▶ send queue
//!     ▲                    │ (owns the worker lease)                 │ (owns the encoder)
//!     └────────── events: generated / media done / failed ──────────┘
//! ```
//!
//! Segment k+1 is generated while segment k is encoded and sent. Frames move into the media
//! thread by value, so the generator never sees them again. Every hand-off is bounded: a slow
//! client fills the send queue, the media thread waits on it, the segment channel fills and
//! the generation thread waits; nothing buffers without bound. When the session ends the
//! controller cancels: generation stops at the next step and the lease (the worker) goes back.
//!
//! With a subprocess pool both threads run in the worker process instead (the same code, see
//! `pool::subprocess`), and [`SegmentPipeline`] forwards jobs there and relays what comes
//! back into the same channels, so the controller cannot tell the difference.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use framecast_common::protocol::{ContinuationState, ErrorCode, ServerMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::Outgoing;
use crate::config::MediaSettings;
use crate::generate::{GenerateError, GeneratedSegment, SegmentRequest, StreamFormat};
use crate::media::{AudioSettings, ChunkKind, EncoderSettings, Fmp4Encoder, MediaError};
use crate::observability;
use crate::pool::subprocess::RemoteSession;
use crate::pool::{Worker, WorkerLease};

/// How long the media thread waits for a segment's last fragment before moving on.
const FRAGMENT_WAIT: Duration = Duration::from_secs(5);

/// One segment to generate.
#[derive(Debug, Clone)]
pub struct SegmentJob {
    /// What to generate.
    pub request: SegmentRequest,
    /// When the controller asked for it (for `e2e_latency_ms`).
    pub scheduled_at: Instant,
}

/// What the threads tell the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PipelineEvent {
    /// A segment was generated; `next_state` continues from it.
    Generated {
        /// The segment.
        segment_idx: u32,
        /// State after it.
        next_state: ContinuationState,
    },
    /// Every fragment of a segment is in the send queue.
    MediaDone {
        /// The segment.
        segment_idx: u32,
    },
    /// The portable state asked for with [`SegmentPipeline::export`].
    Exported {
        /// The state, its tensors in the blob store.
        state: ContinuationState,
    },
    /// The state could not be exported; the session goes on.
    ExportFailed {
        /// Why.
        message: String,
    },
    /// The session cannot go on.
    Failed {
        /// Error category for the client.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
}

struct MediaJob {
    segment_idx: u32,
    segment: GeneratedSegment,
    generation_ms: u64,
    scheduled_at: Instant,
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

/// The running threads of one session (here or in a worker process); dropping it cancels
/// them.
#[derive(Debug)]
pub struct SegmentPipeline {
    inner: Running,
}

/// What the generation thread does next, in order.
#[derive(Debug)]
enum Job {
    Segment(SegmentJob),
    /// Make the newest state portable (between segments, on the thread owning the worker).
    Export,
}

#[derive(Debug)]
enum Running {
    Local {
        jobs: SyncSender<Job>,
        cancel: Arc<AtomicBool>,
    },
    Remote(RemoteSession),
}

/// Channels the threads report through.
#[derive(Debug, Clone)]
pub struct PipelineOutputs {
    /// Messages and media for the client (bounded).
    pub out: mpsc::Sender<Outgoing>,
    /// Events for the controller.
    pub events: mpsc::UnboundedSender<PipelineEvent>,
    /// When the session became active (for time-to-first-media).
    pub started: Instant,
}

impl SegmentPipeline {
    /// Starts both threads; the lease moves into the generation thread. For a remote worker
    /// the threads start in its process (which encodes with its own copy of the same
    /// settings) and the lease stays with the returned pipeline.
    pub fn start(
        mut lease: WorkerLease,
        initial_state: Option<ContinuationState>,
        encoder: EncoderSettings,
        stream_id: String,
        outputs: PipelineOutputs,
    ) -> Self {
        if let Worker::Remote(remote) = lease.worker() {
            let conn = remote.connection();
            return Self {
                inner: Running::Remote(RemoteSession::start(
                    lease,
                    conn,
                    initial_state,
                    stream_id,
                    outputs,
                )),
            };
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let (jobs_tx, jobs_rx) = sync_channel::<Job>(4);
        let (media_tx, media_rx) = sync_channel::<MediaJob>(1);
        {
            let (cancel, outputs) = (cancel.clone(), outputs.clone());
            std::thread::Builder::new()
                .name("fc-generate".into())
                .spawn(move || {
                    generation_loop(lease, initial_state, jobs_rx, media_tx, &cancel, &outputs)
                })
                .expect("spawn generation thread");
        }
        {
            let cancel = cancel.clone();
            std::thread::Builder::new()
                .name("fc-media".into())
                .spawn(move || media_loop(encoder, stream_id, media_rx, &cancel, &outputs))
                .expect("spawn media thread");
        }
        Self {
            inner: Running::Local {
                jobs: jobs_tx,
                cancel,
            },
        }
    }

    /// Queues a segment; false when the pipeline has stopped.
    pub fn submit(&self, job: SegmentJob) -> bool {
        match &self.inner {
            Running::Local { jobs, .. } => jobs.try_send(Job::Segment(job)).is_ok(),
            Running::Remote(remote) => remote.submit(job),
        }
    }

    /// Asks for a portable copy of the newest state, answered by [`PipelineEvent::Exported`]
    /// or [`PipelineEvent::ExportFailed`] once the segment being generated is done; false
    /// when the pipeline has stopped or is full.
    pub fn export(&self) -> bool {
        match &self.inner {
            Running::Local { jobs, .. } => jobs.try_send(Job::Export).is_ok(),
            Running::Remote(remote) => remote.export(),
        }
    }

    /// Stops both threads as soon as they notice (within one denoising step).
    pub fn cancel(&self) {
        match &self.inner {
            Running::Local { cancel, .. } => cancel.store(true, Ordering::Release),
            Running::Remote(remote) => remote.cancel(),
        }
    }
}

impl Drop for SegmentPipeline {
    fn drop(&mut self) {
        self.cancel();
    }
}

fn generation_loop(
    mut lease: WorkerLease,
    mut state: Option<ContinuationState>,
    jobs: Receiver<Job>,
    media: SyncSender<MediaJob>,
    cancel: &AtomicBool,
    outputs: &PipelineOutputs,
) {
    let send = |msg: ServerMessage| outputs.out.blocking_send(Outgoing::text(&msg)).is_ok();
    let gpu = lease.gpu_id();
    let Some(generator) = lease.generator() else {
        unreachable!("local pipelines run local workers only");
    };
    while let Ok(job) = jobs.recv() {
        if cancel.load(Ordering::Acquire) {
            break;
        }
        let job = match job {
            Job::Segment(job) => job,
            Job::Export => {
                let event = match state.as_ref().map(|s| generator.export_state(s)) {
                    Some(Ok(state)) => PipelineEvent::Exported { state },
                    Some(Err(e)) => PipelineEvent::ExportFailed {
                        message: e.to_string(),
                    },
                    None => PipelineEvent::ExportFailed {
                        message: "no segment generated yet: nothing to snapshot".into(),
                    },
                };
                let _ = outputs.events.send(event);
                continue;
            }
        };
        let idx = job.request.segment_idx;
        let total_steps = job.request.num_inference_steps;
        if !send(ServerMessage::Ltx2SegmentStart {
            segment_idx: idx,
            prompt: job.request.prompt.clone(),
            total_steps,
        }) {
            break;
        }
        let started = Instant::now();
        let mut last_step = started;
        // A panic in the model (a bug, or a libtorch error surfacing as one) fails this
        // session like any other generation error instead of silently ending its threads.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            generator.generate(&job.request, state.as_ref(), &mut |p| {
                observability::denoise_step(last_step.elapsed());
                last_step = Instant::now();
                let delivered = send(ServerMessage::StepComplete {
                    segment_idx: idx,
                    step: p.step,
                    total_steps: p.total_steps,
                    stage: "denoise".into(),
                });
                if cancel.load(Ordering::Acquire) || !delivered {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            })
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(GenerateError::Failed(format!("generator panicked: {what}")))
        });
        match result {
            Ok(segment) => {
                observability::segment_generated(started.elapsed());
                state = Some(segment.next_state.clone());
                let _ = outputs.events.send(PipelineEvent::Generated {
                    segment_idx: idx,
                    next_state: segment.next_state.clone(),
                });
                let job = MediaJob {
                    segment_idx: idx,
                    segment,
                    generation_ms: started.elapsed().as_millis() as u64,
                    scheduled_at: job.scheduled_at,
                };
                // Waits while the media thread is busy with the previous segment.
                if media.send(job).is_err() {
                    break;
                }
            }
            Err(GenerateError::Cancelled) => break,
            Err(e) => {
                let _ = outputs.events.send(PipelineEvent::Failed {
                    code: ErrorCode::WorkerFailed,
                    message: e.to_string(),
                });
                break;
            }
        }
    }
    tracing::debug!(gpu, "generation thread done; worker released");
}

fn media_loop(
    settings: EncoderSettings,
    stream_id: String,
    jobs: Receiver<MediaJob>,
    cancel: &AtomicBool,
    outputs: &PipelineOutputs,
) {
    let fail = |e: MediaError| {
        let _ = outputs.events.send(PipelineEvent::Failed {
            code: ErrorCode::InternalError,
            message: format!("media: {e}"),
        });
    };
    let encoder = match Fmp4Encoder::new(settings) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let mut media = MediaStream {
        encoder,
        stream_id,
        announced: false,
        last_done: None,
    };
    while let Ok(job) = jobs.recv() {
        if cancel.load(Ordering::Acquire) {
            return;
        }
        match media.encode_segment(job, outputs, cancel) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return fail(e),
        }
    }
}

/// The media thread's state across segments.
struct MediaStream {
    encoder: Fmp4Encoder,
    stream_id: String,
    /// Whether `media_init` went out (once per stream).
    announced: bool,
    /// When the previous segment was done (for the realtime factor).
    last_done: Option<Instant>,
}

impl MediaStream {
    /// Encodes one segment and queues its chunks as they appear; `Ok(false)` once the client
    /// is gone.
    fn encode_segment(
        &mut self,
        job: MediaJob,
        outputs: &PipelineOutputs,
        cancel: &AtomicBool,
    ) -> Result<bool, MediaError> {
        let frames_per_fragment = self.encoder.settings().frames_per_fragment;
        let fps = self.encoder.settings().fps;
        let encoder = &mut self.encoder;
        let idx = job.segment_idx;
        let frame_count = job.segment.frames.len() as u32;
        let expected_fragments = frame_count.div_ceil(frames_per_fragment);
        let encode_started = Instant::now();
        let mut sender = ChunkSender {
            session_started: outputs.started,
            segment_idx: idx,
            stream_id: &self.stream_id,
            announced: &mut self.announced,
            fragments: 0,
            chunks: 0,
            out: &outputs.out,
        };

        encoder.begin_segment(idx)?;
        if let Some(audio) = job.segment.audio {
            encoder.push_audio(audio)?;
        }
        for frame in job.segment.frames {
            if cancel.load(Ordering::Acquire) {
                return Ok(false);
            }
            encoder.push_frame(frame)?;
            // Send fragments as soon as they exist: playback starts before the segment ends.
            if !sender.send(encoder, encoder.drain_ready()?) {
                return Ok(false);
            }
        }
        encoder.end_segment()?;
        while sender.fragments < expected_fragments {
            match encoder.next_chunk(FRAGMENT_WAIT)? {
                Some(chunk) => {
                    if !sender.send(encoder, vec![chunk]) {
                        return Ok(false);
                    }
                }
                // An audio track's tail can wait for the next segment's audio; go on.
                None => break,
            }
        }
        let duration_ms = u64::from(frame_count) * 1000 / u64::from(fps);
        observability::segment_encoded(
            encode_started.elapsed(),
            Duration::from_millis(duration_ms),
            self.last_done
                .replace(Instant::now())
                .map_or(Duration::ZERO, |t| t.elapsed()),
        );
        let done = [
            ServerMessage::MediaSegmentComplete {
                segment_idx: idx,
                stream_id: self.stream_id.clone(),
                chunks: sender.chunks,
                duration_ms,
            },
            ServerMessage::Ltx2SegmentComplete {
                segment_idx: idx,
                generation_time_ms: job.generation_ms,
                e2e_latency_ms: job.scheduled_at.elapsed().as_millis() as u64,
            },
        ];
        for msg in done {
            if outputs.out.blocking_send(Outgoing::text(&msg)).is_err() {
                return Ok(false);
            }
        }
        let _ = outputs
            .events
            .send(PipelineEvent::MediaDone { segment_idx: idx });
        Ok(true)
    }
}

/// Queues one segment's chunks for the client, announcing the codec before the first one.
struct ChunkSender<'a> {
    session_started: Instant,
    segment_idx: u32,
    stream_id: &'a str,
    announced: &'a mut bool,
    fragments: u32,
    chunks: u32,
    out: &'a mpsc::Sender<Outgoing>,
}

impl ChunkSender<'_> {
    /// False once the client is gone.
    fn send(&mut self, encoder: &Fmp4Encoder, chunks: Vec<crate::media::MediaChunk>) -> bool {
        for chunk in chunks {
            if !*self.announced {
                let msg = ServerMessage::MediaInit {
                    segment_idx: self.segment_idx,
                    mime: encoder.mime().unwrap_or_else(|| "video/mp4".into()),
                    stream_id: self.stream_id.to_string(),
                    mode: "av_fmp4".into(),
                };
                if self.out.blocking_send(Outgoing::text(&msg)).is_err() {
                    return false;
                }
                *self.announced = true;
                observability::first_media(self.session_started.elapsed());
            }
            observability::media_bytes(chunk.bytes.len());
            if chunk.kind == ChunkKind::Fragment {
                self.fragments += 1;
            }
            self.chunks += 1;
            if self
                .out
                .blocking_send(Outgoing::Binary(chunk.bytes))
                .is_err()
            {
                return false;
            }
        }
        true
    }
}
