//! Resumable sessions: the record a `/v1/stream` session writes after every segment so a
//! client that lost its connection (its replica died, the network dropped, the replica
//! drained) can continue on any replica sharing the stores, and how a
//! `session_init_v2.resume` takes that record over.
//!
//! The record is a `framecast.resume.v1` state in the session store under the session id.
//! For each of the newest `store.resume.window_segments` segments it holds the request that
//! generated it (prompt, seed, steps) and the generator checkpoint it started from; then the
//! checkpoint after the newest generated segment, the scheduler's queue and the toggles. The
//! client names the first segment whose `media_segment_complete` it did not receive: the new
//! replica starts from that segment's checkpoint and regenerates it, and the later ones the
//! lost replica had started, from the same requests, then goes on with the queue. No
//! segment is lost or repeated, and the encoder places the first of them where the client's
//! fMP4 timeline stopped.
//!
//! The token is 128 random bits that only the client sees (`session_resumable`); the record
//! keeps its SHA-256, compared in constant time, and every resume replaces it.

use std::collections::VecDeque;

use framecast_common::protocol::{
    ContinuationState, ResumeRequest, SegmentPrompt, ServerMessage, SessionInit,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::controller::Session;
use super::schedule::ScheduleSnapshot;
use super::{Outgoing, SessionState};
use crate::config::GeneratorSettings;
use crate::generate::SegmentRequest;
use crate::observability;

/// The `kind` of resume records in the session store.
pub const RESUME_KIND: &str = "framecast.resume.v1";

/// What a segment's generation started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Start {
    /// A fresh stream: nothing conditions it.
    Fresh,
    /// This generator checkpoint (in the shared blob store).
    Checkpoint { state: ContinuationState },
    /// No checkpoint could be written (or the segment started from something that cannot be
    /// stored, such as the client's initial image): not a resume point.
    Unavailable,
}

/// One started segment, as a resume regenerates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// The segment's index.
    pub idx: u32,
    /// Its request (seed, steps and guidance filled in), replayed as a client prompt.
    pub prompt: SegmentPrompt,
    /// What it started from.
    pub start: Start,
}

/// Everything a resume needs, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeRecord {
    /// SHA-256 of the current token, as hex.
    pub token_sha256: String,
    /// `[width, height, fps, frames_per_segment]`: only a replica generating the same format
    /// can continue the client's media.
    pub format: [u32; 4],
    /// The newest started segments, oldest first.
    pub segments: Vec<SegmentEntry>,
    /// Segments generated so far.
    pub generated: u32,
    /// What segment `generated` starts from.
    pub latest: Start,
    /// The scheduler's queue and counters.
    pub schedule: ScheduleSnapshot,
    /// The session's curated prompts and toggles.
    pub curated_prompts: Vec<String>,
    pub enhancement_enabled: bool,
    pub auto_extension_enabled: bool,
    pub loop_generation_enabled: bool,
}

/// Why a resume was refused; the session then starts a fresh stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeRefused {
    /// Not the shape `session_resumable` gives out.
    #[error("resume.session_id must be 16 and resume.token 32 lowercase hex digits")]
    Malformed,
    /// Unknown, expired, or ended normally.
    #[error("no resumable session `{0}` (unknown, expired, or it ended normally)")]
    NoRecord(String),
    /// The token does not match.
    #[error("resume.token does not match the session's newest token")]
    BadToken,
    /// The segment is outside what the record covers.
    #[error("segment {asked} cannot be resumed: the record covers segments {oldest} to {newest}")]
    OutOfWindow {
        asked: u32,
        oldest: u32,
        newest: u32,
    },
    /// The segment has no checkpoint.
    #[error("segment {0} has no checkpoint to resume from")]
    NotResumePoint(u32),
    /// Another output format.
    #[error("the session streamed {theirs:?} (w, h, fps, frames); this replica streams {ours:?}")]
    FormatMismatch { theirs: [u32; 4], ours: [u32; 4] },
    /// The store failed (e.g. Redis is down).
    #[error("the session store failed: {0}")]
    Store(String),
    /// The record is unreadable.
    #[error("the stored record is unreadable: {0}")]
    Corrupt(String),
}

impl ResumeRefused {
    /// The `reason` of the error frame and the metric's outcome label.
    pub fn reason(&self) -> &'static str {
        match self {
            ResumeRefused::Malformed => "malformed",
            ResumeRefused::NoRecord(_) => "no_record",
            ResumeRefused::BadToken => "bad_token",
            ResumeRefused::OutOfWindow { .. } => "out_of_window",
            ResumeRefused::NotResumePoint(_) => "not_resume_point",
            ResumeRefused::FormatMismatch { .. } => "format_mismatch",
            ResumeRefused::Store(_) => "store_error",
            ResumeRefused::Corrupt(_) => "corrupt",
        }
    }
}

/// Where a resume starts: the checkpoint (none for a fresh stream) and the prompts to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumePlan {
    /// The generator state segment `next` starts from.
    pub state: Option<ContinuationState>,
    /// The segments from `next` on the lost replica had started, in order.
    pub replay: Vec<SegmentPrompt>,
}

/// The format array of a record: what this replica's generators produce (every worker
/// shares `generator`'s geometry).
pub fn format_key(generator: &GeneratorSettings) -> [u32; 4] {
    [
        generator.width,
        generator.height,
        generator.fps,
        generator.frames_per_segment,
    ]
}

fn sha256_hex(token: &str) -> String {
    crate::store::hex(&Sha256::digest(token.as_bytes()))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks the shape of a client's resume request before any store is asked.
pub fn check_request(r: &ResumeRequest) -> Result<(), ResumeRefused> {
    if is_hex(&r.session_id, 16) && is_hex(&r.token, 32) {
        Ok(())
    } else {
        Err(ResumeRefused::Malformed)
    }
}

impl ResumeRecord {
    /// Reads a record from the session store's state.
    pub fn from_state(state: &ContinuationState) -> Result<Self, ResumeRefused> {
        if state.kind != RESUME_KIND {
            return Err(ResumeRefused::Corrupt(format!(
                "kind `{}` is not `{RESUME_KIND}`",
                state.kind
            )));
        }
        serde_json::from_value(state.payload.clone())
            .map_err(|e| ResumeRefused::Corrupt(e.to_string()))
    }

    /// The record as a session-store state.
    pub fn to_state(&self) -> ContinuationState {
        ContinuationState::new(
            RESUME_KIND,
            serde_json::to_value(self).expect("resume records serialize"),
        )
    }

    /// Whether `token` is the session's newest token (constant time).
    pub fn token_matches(&self, token: &str) -> bool {
        sha256_hex(token)
            .as_bytes()
            .ct_eq(self.token_sha256.as_bytes())
            .into()
    }

    /// How to continue at segment `next` (the first the client did not fully receive).
    pub fn plan(&self, next: u32) -> Result<ResumePlan, ResumeRefused> {
        let start = if next == self.schedule.scheduled && next == self.generated {
            // Every started segment reached the client: continue after the newest.
            &self.latest
        } else if let Some(entry) = self.segments.iter().find(|e| e.idx == next) {
            &entry.start
        } else {
            return Err(ResumeRefused::OutOfWindow {
                asked: next,
                oldest: self.segments.first().map_or(self.generated, |e| e.idx),
                newest: self.generated,
            });
        };
        let state = match start {
            Start::Fresh => None,
            Start::Checkpoint { state } => Some(state.clone()),
            Start::Unavailable => return Err(ResumeRefused::NotResumePoint(next)),
        };
        let replay = self
            .segments
            .iter()
            .filter(|e| e.idx >= next)
            .map(|e| e.prompt.clone())
            .collect();
        Ok(ResumePlan { state, replay })
    }
}

/// A live session's side of resuming: its token and the newest segments' entries.
#[derive(Debug)]
pub struct ResumeLog {
    token: String,
    window: usize,
    max_state_bytes: u64,
    segments: VecDeque<SegmentEntry>,
    generated: u32,
    latest: Start,
    /// The segment this session resumed at (0 for a new one).
    resumed_at: u32,
}

impl ResumeLog {
    /// A log with a fresh token whose next segment starts from `latest`, after `generated`
    /// segments.
    pub fn new(window: u32, max_state_bytes: u64, generated: u32, latest: Start) -> Self {
        Self {
            token: crate::store::random_token(),
            window: window.max(1) as usize,
            max_state_bytes,
            segments: VecDeque::new(),
            generated,
            latest,
            resumed_at: generated,
        }
    }

    /// The token to hand the client.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// How many segments back a resume may start.
    pub fn window(&self) -> u32 {
        self.window as u32
    }

    /// Whether segment `next` may start while `written` segments' media went out: only while
    /// the window still holds every segment the client may lack (those not written, and the
    /// newest written one, which may still be on its way).
    pub fn may_start(&self, next: u32, written: u32) -> bool {
        // A resumed session's writer counts from zero; the segments before it went out
        // on the lost connection.
        next + 1 < written.max(self.resumed_at) + self.window as u32
    }

    /// Records a segment as it is submitted and asks the generator for its checkpoint.
    pub fn started(&mut self, request: &mut SegmentRequest) {
        request.checkpoint_max_bytes = Some(self.max_state_bytes);
        let start = if request.initial_image.is_some() || request.fresh_stream {
            // The image is not stored, so the segment cannot be remade as it was.
            Start::Unavailable
        } else {
            self.latest.clone()
        };
        self.segments.push_back(SegmentEntry {
            idx: request.segment_idx,
            prompt: SegmentPrompt {
                prompt: request.prompt.clone(),
                negative_prompt: request.negative_prompt.clone(),
                source: None,
                seed: Some(request.seed),
                num_inference_steps: Some(request.num_inference_steps),
                guidance_scale: Some(request.guidance_scale),
            },
            start,
        });
        while self.segments.len() > self.window {
            self.segments.pop_front();
        }
    }

    /// A segment was generated; the next one starts from its checkpoint (none: not a resume
    /// point).
    pub fn generated(&mut self, checkpoint: Option<ContinuationState>) {
        self.generated += 1;
        self.latest = match checkpoint {
            Some(state) => Start::Checkpoint { state },
            None => Start::Unavailable,
        };
    }

    /// The record to store now.
    pub fn record(
        &self,
        format: [u32; 4],
        schedule: ScheduleSnapshot,
        init: &SessionInit,
    ) -> ResumeRecord {
        ResumeRecord {
            token_sha256: sha256_hex(&self.token),
            format,
            segments: self.segments.iter().cloned().collect(),
            generated: self.generated,
            latest: self.latest.clone(),
            schedule,
            curated_prompts: init.curated_prompts.clone(),
            enhancement_enabled: init.enhancement_enabled,
            auto_extension_enabled: init.auto_extension_enabled,
            loop_generation_enabled: init.loop_generation_enabled,
        }
    }
}

/// What a taken-over session starts from, until its pipeline starts.
#[derive(Debug)]
pub struct TakenOver {
    /// The segment that comes next.
    pub segment_idx: u32,
    /// The generator state it starts from.
    pub state: Option<ContinuationState>,
}

impl Session {
    /// Takes over the session `request` names, when its record allows: adopts its id,
    /// schedule and toggles, and remembers the checkpoint to start the pipeline from. On
    /// refusal the client gets `error {code: invalid_message, reason: resume:<why>}` and
    /// the session starts a fresh stream.
    pub(super) async fn take_over(&mut self, request: ResumeRequest) {
        let outcome = self.try_take_over(&request).await;
        let label = match &outcome {
            Ok(()) => "resumed",
            Err(e) => e.reason(),
        };
        observability::resume_attempt(label);
        if let Err(e) = outcome {
            tracing::info!(session = %self.id, resume = %request.session_id, error = %e, "resume refused; starting a fresh stream");
            self.log.event(
                "resume_refused",
                serde_json::json!({"error": e.to_string()}),
            );
            self.invalid(
                format!("{e}; a fresh stream starts instead"),
                format!("resume:{}", e.reason()),
            )
            .await;
        }
    }

    async fn try_take_over(&mut self, request: &ResumeRequest) -> Result<(), ResumeRefused> {
        let settings = &self.ctx.config.store.resume;
        if !settings.enabled {
            return Err(ResumeRefused::NoRecord(request.session_id.clone()));
        }
        check_request(request)?;
        let states = self.ctx.states.clone();
        let id = request.session_id.clone();
        // The store may wait on the network.
        let loaded = tokio::task::spawn_blocking(move || states.load(&id))
            .await
            .map_err(|e| ResumeRefused::Store(e.to_string()))?
            .map_err(|e| ResumeRefused::Store(e.to_string()))?
            .ok_or_else(|| ResumeRefused::NoRecord(request.session_id.clone()))?;
        let record = ResumeRecord::from_state(&loaded)?;
        if !record.token_matches(&request.token) {
            return Err(ResumeRefused::BadToken);
        }
        let ours = format_key(&self.ctx.config.generator);
        if record.format != ours {
            return Err(ResumeRefused::FormatMismatch {
                theirs: record.format,
                ours,
            });
        }
        let next = request.next_segment_idx;
        let plan = record.plan(next)?;
        tracing::info!(session = %request.session_id, was = %self.id, segment = next, replay = plan.replay.len(), "resuming a session");
        self.log.event(
            "resumed",
            serde_json::json!({"session_id": &request.session_id, "segment_idx": next}),
        );
        self.id = request.session_id.clone();
        self.schedule.resume_at(next, plan.replay, record.schedule);
        self.init.curated_prompts = record.curated_prompts;
        self.init.enhancement_enabled = record.enhancement_enabled;
        self.init.auto_extension_enabled = record.auto_extension_enabled;
        self.init.loop_generation_enabled = record.loop_generation_enabled;
        // Resuming replaces any state the client also sent.
        self.init.continuation_state = None;
        self.taken_over = Some(TakenOver {
            segment_idx: next,
            state: plan.state,
        });
        Ok(())
    }

    /// Starts the session's resume log (when resumes are on) and tells the client how to
    /// resume, and whether this session is itself a resume. Once the pipeline started,
    /// before the first segment.
    pub(super) async fn announce_resume(&mut self, latest: Start) {
        let settings = &self.ctx.config.store.resume;
        if settings.enabled {
            let generated = self.taken_over.as_ref().map_or(0, |t| t.segment_idx);
            // A window of checkpoints fits in the session's blob quota.
            let quota = self.ctx.config.store.max_blob_bytes_per_session as u64;
            let max_state =
                (settings.max_exact_state_bytes).min(quota / u64::from(settings.window_segments));
            let log = ResumeLog::new(settings.window_segments, max_state, generated, latest);
            let msg = ServerMessage::SessionResumable {
                session_id: self.id.clone(),
                token: log.token().to_owned(),
                window_segments: log.window(),
            };
            self.resume = Some(log);
            self.send(Outgoing::text(&msg)).await;
        }
        if let Some(taken) = &self.taken_over {
            let msg = ServerMessage::SessionResumed {
                session_id: self.id.clone(),
                segment_idx: taken.segment_idx,
            };
            self.send(Outgoing::text(&msg)).await;
        }
    }

    /// Stores the resume record as it stands (never waits: the store writes behind); the
    /// socket writer's gate learns when it landed.
    pub(super) fn save_resume_record(&self) {
        let Some(log) = &self.resume else {
            return;
        };
        if self.state != SessionState::Active {
            if let Some(records) = &self.records {
                records.stop();
            }
            return;
        }
        let format = format_key(&self.ctx.config.generator);
        let record = log.record(format, self.schedule.snapshot(), &self.init);
        let saved = match &self.records {
            Some(records) => {
                let landed = records.landed(record.generated);
                self.ctx
                    .states
                    .save_then(&self.id, &record.to_state(), landed)
            }
            None => self.ctx.states.save(&self.id, &record.to_state()),
        };
        if let Err(e) = saved {
            tracing::warn!(session = %self.id, error = %e, "resume record not stored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(idx: u32) -> SegmentRequest {
        SegmentRequest {
            segment_idx: idx,
            prompt: format!("prompt {idx}"),
            negative_prompt: None,
            seed: 100 + u64::from(idx),
            num_inference_steps: 2,
            guidance_scale: 1.0,
            fresh_stream: false,
            checkpoint_max_bytes: None,
            initial_image: None,
        }
    }

    fn checkpoint(after: u32) -> ContinuationState {
        ContinuationState::new("framecast.mock.v1", serde_json::json!({"after": after}))
    }

    /// A log that started and generated `n` segments, each checkpointed.
    fn log_of(n: u32, window: u32) -> ResumeLog {
        let mut log = ResumeLog::new(window, 1 << 20, 0, Start::Fresh);
        for idx in 0..n {
            let mut r = request(idx);
            log.started(&mut r);
            assert_eq!(r.checkpoint_max_bytes, Some(1 << 20));
            log.generated(Some(checkpoint(idx)));
        }
        log
    }

    fn record(log: &ResumeLog, scheduled: u32) -> ResumeRecord {
        let schedule = ScheduleSnapshot {
            scheduled,
            cap: 100,
            ..ScheduleSnapshot::default()
        };
        log.record([64, 64, 8, 4], schedule, &SessionInit::default())
    }

    #[test]
    fn a_resume_starts_from_the_checkpoint_before_the_segment_and_replays_the_rest() {
        let mut log = log_of(5, 3);
        // Segment 5 started, not generated yet.
        log.started(&mut request(5));
        let record = record(&log, 6);
        let plan = record.plan(4).unwrap();
        assert_eq!(plan.state, Some(checkpoint(3)));
        let replayed: Vec<_> = plan.replay.iter().map(|p| p.prompt.as_str()).collect();
        assert_eq!(replayed, ["prompt 4", "prompt 5"]);
        assert_eq!(plan.replay[0].seed, Some(104));
        // The window holds the 3 newest: 3, 4, 5.
        assert_eq!(record.plan(3).unwrap().state, Some(checkpoint(2)));
        assert_eq!(
            record.plan(2),
            Err(ResumeRefused::OutOfWindow {
                asked: 2,
                oldest: 3,
                newest: 5
            })
        );
        // Segment 5 is not generated, so nothing after it can have been received.
        assert!(matches!(
            record.plan(6),
            Err(ResumeRefused::OutOfWindow { .. })
        ));
    }

    #[test]
    fn after_every_segment_went_out_a_resume_continues_after_the_newest() {
        let log = log_of(2, 4);
        let record = record(&log, 2);
        let plan = record.plan(2).unwrap();
        assert_eq!(plan.state, Some(checkpoint(1)));
        assert!(plan.replay.is_empty());
        // Segment 0 started fresh.
        let plan = record.plan(0).unwrap();
        assert_eq!(plan.state, None);
        assert_eq!(plan.replay.len(), 2);
    }

    #[test]
    fn a_segment_without_checkpoint_is_no_resume_point() {
        let mut log = log_of(1, 4);
        log.started(&mut request(1));
        log.generated(None);
        log.started(&mut request(2));
        let record = record(&log, 3);
        assert_eq!(record.plan(2), Err(ResumeRefused::NotResumePoint(2)));
        assert!(record.plan(1).is_ok());
        // A segment conditioned on the client's image cannot be remade.
        let mut log = ResumeLog::new(4, 1, 0, Start::Fresh);
        let mut first = request(0);
        first.initial_image = Some(std::sync::Arc::new(crate::generate::RgbImage {
            width: 2,
            height: 2,
            rgb: vec![0; 12],
        }));
        log.started(&mut first);
        assert_eq!(
            record_of(&log).plan(0),
            Err(ResumeRefused::NotResumePoint(0))
        );
    }

    fn record_of(log: &ResumeLog) -> ResumeRecord {
        record(log, 1)
    }

    #[test]
    fn every_refusal_has_a_zero_series_up_front() {
        let refusals = [
            ResumeRefused::Malformed,
            ResumeRefused::NoRecord(String::new()),
            ResumeRefused::BadToken,
            ResumeRefused::OutOfWindow {
                asked: 0,
                oldest: 0,
                newest: 0,
            },
            ResumeRefused::NotResumePoint(0),
            ResumeRefused::FormatMismatch {
                theirs: [0; 4],
                ours: [0; 4],
            },
            ResumeRefused::Store(String::new()),
            ResumeRefused::Corrupt(String::new()),
        ];
        for r in refusals {
            assert!(
                observability::RESUME_OUTCOMES.contains(&r.reason()),
                "{}",
                r.reason()
            );
        }
    }

    #[test]
    fn generation_stays_inside_the_window_of_what_was_written() {
        let log = ResumeLog::new(4, 1, 0, Start::Fresh);
        // Two segments ahead of the one being written, no more.
        assert!(log.may_start(0, 0));
        assert!(log.may_start(2, 0));
        assert!(!log.may_start(3, 0));
        assert!(log.may_start(3, 1));
        // A resumed session counts from where it resumed.
        let resumed = ResumeLog::new(4, 1, 10, Start::Fresh);
        assert!(resumed.may_start(12, 0));
        assert!(!resumed.may_start(13, 0));
        assert!(resumed.may_start(13, 11));
    }

    #[test]
    fn only_the_newest_token_matches_and_the_record_round_trips() {
        let log = log_of(1, 2);
        let record = record(&log, 1);
        assert!(record.token_matches(log.token()));
        assert!(!record.token_matches(&"0".repeat(32)));
        let other = ResumeLog::new(2, 1, 0, Start::Fresh);
        assert!(!record.token_matches(other.token()));
        assert_ne!(log.token(), other.token());
        let back = ResumeRecord::from_state(&record.to_state()).unwrap();
        assert_eq!(back, record);
        let foreign = ContinuationState::new("framecast.mock.v1", serde_json::json!({}));
        assert!(matches!(
            ResumeRecord::from_state(&foreign),
            Err(ResumeRefused::Corrupt(_))
        ));
    }

    #[test]
    fn requests_must_have_the_shape_the_server_hands_out() {
        let good = ResumeRequest {
            session_id: "0123456789abcdef".into(),
            token: "0123456789abcdef".repeat(2),
            next_segment_idx: 0,
        };
        assert_eq!(check_request(&good), Ok(()));
        for (id, token) in [
            ("0123456789ABCDEF", good.token.as_str()),
            ("0123456789abcde", good.token.as_str()),
            ("session:*", good.token.as_str()),
            (good.session_id.as_str(), "short"),
            (good.session_id.as_str(), &"z".repeat(32)),
        ] {
            let bad = ResumeRequest {
                session_id: id.into(),
                token: token.into(),
                ..good.clone()
            };
            assert_eq!(
                check_request(&bad),
                Err(ResumeRefused::Malformed),
                "{id} {token}"
            );
        }
    }
}
