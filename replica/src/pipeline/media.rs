//! The media thread: encodes each generated segment into fMP4 with the session's encoder and
//! queues the chunks for the client as soon as each fragment exists.
//!
//! Every segment's bytes start with the stream's init segment (`ftyp`+`moov`), announced by
//! its own `media_init`, and hold all of the segment's frames and sound (the encoder ends
//! each segment's muxer before `media_segment_complete`): a client that saves each segment
//! as a file gets a playable fMP4 of the whole segment, as FastVideo's segments are. The
//! encoder keeps one timeline, so the fragments' decode times run on across segments (from
//! the first segment's place on it: a resumed stream continues where the client stopped), and
//! a Media Source player appending everything to one SourceBuffer (in `segments` or
//! `sequence` mode) sees the same init segment again, which MSE allows, and continuous
//! media.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use framecast_common::protocol::{ErrorCode, ServerMessage};
use tokio::sync::mpsc;

use super::{Outgoing, PipelineEvent, PipelineOutputs};
use crate::broadcast::{Ladder, LadderPlan};
use crate::config::BroadcastSettings;
use crate::generate::GeneratedSegment;
use crate::media::{ChunkKind, EncoderSettings, Fmp4Encoder, MediaChunk, MediaError};
use crate::observability;

/// A generated segment on its way to the encoder.
#[derive(Debug)]
pub(super) struct MediaJob {
    pub(super) segment_idx: u32,
    pub(super) segment: GeneratedSegment,
    pub(super) generation_ms: u64,
    pub(super) scheduled_at: Instant,
}

pub(super) fn media_loop(
    settings: EncoderSettings,
    stream_id: String,
    broadcast: Option<BroadcastSettings>,
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
    let mut broadcast = broadcast.map(|b| Broadcast::Planned(b, settings.clone()));
    let encoder = match Fmp4Encoder::new(settings) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let mut media = MediaStream {
        encoder,
        stream_id,
        init: None,
        first_media_sent: false,
        last_done: None,
    };
    let mut first = true;
    while let Ok(job) = jobs.recv() {
        if cancel.load(Ordering::Acquire) {
            return;
        }
        if std::mem::take(&mut first) {
            // Every segment has the same number of frames, so segment k's media starts at
            // frame k × that on the stream's timeline: a stream resumed at segment k in this
            // new encoder continues the timeline the client's player already holds.
            let start = u64::from(job.segment_idx) * job.segment.frames.len() as u64;
            if let Err(e) = media.encoder.start_timeline_at(start) {
                return fail(e);
            }
        }
        // The ladder gets its own copy: the encoder takes the frames over.
        let (idx, frames) = (
            job.segment_idx,
            broadcast
                .as_ref()
                .map(|_| Arc::new(job.segment.frames.clone())),
        );
        match media.encode_segment(job, outputs, cancel) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return fail(e),
        }
        if let (Some(b), Some(frames)) = (&mut broadcast, frames)
            && !b.push(&media.stream_id, idx, frames, outputs)
        {
            // Refused or failed: the session streams on without it.
            broadcast = None;
        }
    }
}

/// A session's broadcast, started with its first segment (whose frame count it needs).
enum Broadcast {
    Planned(BroadcastSettings, EncoderSettings),
    /// The ladder, how long its files outlive it, and whether the client was told.
    Running(Ladder, Duration, bool),
}

impl Broadcast {
    /// Hands segment `idx` to the ladder (waiting for room: back-pressure), starting the
    /// ladder first if need be, and tells the client once the master playlist exists. False
    /// when the broadcast was refused or failed (the client was told), so it is dropped.
    fn push(
        &mut self,
        stream_id: &str,
        idx: u32,
        frames: Arc<Vec<Vec<u8>>>,
        outputs: &PipelineOutputs,
    ) -> bool {
        let tell = |message: ServerMessage| {
            let _ = outputs.out.blocking_send(Outgoing::text(&message));
        };
        if let Broadcast::Planned(settings, encoder) = self {
            let retain = Duration::from_secs(settings.retain_seconds);
            let plan = LadderPlan {
                stream_id: stream_id.to_string(),
                settings: settings.clone(),
                encoder: encoder.clone(),
                frames_per_segment: frames.len() as u32,
                first_segment: idx,
            };
            match Ladder::start(&plan) {
                Ok(ladder) => *self = Broadcast::Running(ladder, retain, false),
                Err(e) => {
                    tracing::warn!(error = %e, "broadcast not started");
                    tell(refusal(format!("broadcast: {e}"), "broadcast:not_started"));
                    return false;
                }
            }
        }
        let Broadcast::Running(ladder, _, told) = self else {
            return false;
        };
        if let Err(e) = ladder.push_segment(idx, frames) {
            tracing::warn!(error = %e, "broadcast failed; the session streams on");
            tell(refusal(format!("broadcast: {e}"), "broadcast:failed"));
            return false;
        }
        if !*told && ladder.write_master_if_ready() {
            *told = true;
            tell(ServerMessage::BroadcastStarted {
                stream_id: ladder.id().to_string(),
                master_playlist: ladder.master_path(),
            });
        }
        true
    }
}

/// The `error` a client gets when its broadcast does not start or stops; its stream goes on.
fn refusal(message: String, reason: &str) -> ServerMessage {
    ServerMessage::Error {
        code: ErrorCode::InternalError,
        message,
        retryable: true,
        reason: Some(reason.into()),
    }
}

impl Drop for Broadcast {
    fn drop(&mut self) {
        if let Broadcast::Running(ladder, retain, _) = self {
            ladder.finish();
            ladder.remove_later(*retain);
        }
    }
}

/// The media thread's state across segments.
struct MediaStream {
    encoder: Fmp4Encoder,
    stream_id: String,
    /// The stream's init segment, once the muxer produced it: it opens every segment's bytes.
    init: Option<Vec<u8>>,
    /// Whether the stream's first media went out (for time-to-first-media).
    first_media_sent: bool,
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
        let fps = self.encoder.settings().fps;
        let encoder = &mut self.encoder;
        let idx = job.segment_idx;
        let frame_count = job.segment.frames.len() as u32;
        let encode_started = Instant::now();
        let mut sender = ChunkSender {
            session_started: outputs.started,
            segment_idx: idx,
            stream_id: &self.stream_id,
            init: &mut self.init,
            first_media_sent: &mut self.first_media_sent,
            segment_started: false,
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
        // Returns once the segment's muxer has written everything of it out: its last
        // (possibly partial) fragment and its sound are among the ready chunks, before
        // `media_segment_complete` and before the next segment's `media_init`.
        encoder.end_segment()?;
        if !sender.send(encoder, encoder.drain_ready()?) {
            return Ok(false);
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
        let done = std::iter::once(Outgoing::Encoded(idx)).chain(done.iter().map(Outgoing::text));
        for msg in done {
            if outputs.out.blocking_send(msg).is_err() {
                return Ok(false);
            }
        }
        let _ = outputs
            .events
            .send(PipelineEvent::MediaDone { segment_idx: idx });
        Ok(true)
    }
}

/// Queues one segment's chunks for the client: `media_init` before the first one, whose
/// bytes start with the init segment.
struct ChunkSender<'a> {
    session_started: Instant,
    segment_idx: u32,
    stream_id: &'a str,
    init: &'a mut Option<Vec<u8>>,
    first_media_sent: &'a mut bool,
    /// Whether this segment's `media_init` and first bytes went out.
    segment_started: bool,
    chunks: u32,
    out: &'a mpsc::Sender<Outgoing>,
}

impl ChunkSender<'_> {
    /// False once the client is gone.
    fn send(&mut self, encoder: &Fmp4Encoder, chunks: Vec<MediaChunk>) -> bool {
        for chunk in chunks {
            let mut bytes = chunk.bytes;
            if chunk.kind == ChunkKind::Init {
                // The muxer writes it once per stream (again only if the caps changed).
                *self.init = Some(bytes.clone());
            }
            if !self.segment_started {
                let msg = ServerMessage::MediaInit {
                    segment_idx: self.segment_idx,
                    mime: encoder.mime().unwrap_or_else(|| "video/mp4".into()),
                    stream_id: self.stream_id.to_string(),
                    mode: "av_fmp4".into(),
                };
                if self.out.blocking_send(Outgoing::text(&msg)).is_err() {
                    return false;
                }
                self.segment_started = true;
                if let (ChunkKind::Fragment, Some(init)) = (chunk.kind, self.init.as_deref()) {
                    bytes = [init, &bytes].concat();
                }
                if !*self.first_media_sent {
                    *self.first_media_sent = true;
                    observability::first_media(self.session_started.elapsed());
                }
            }
            observability::media_bytes(bytes.len());
            self.chunks += 1;
            if self.out.blocking_send(Outgoing::Binary(bytes)).is_err() {
                return false;
            }
        }
        true
    }
}
