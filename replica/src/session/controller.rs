//! One session from accept to close: the [`Session`] value every stage works on, and the
//! order of the stages — admission (`admission.rs`), worker binding (`binding.rs`), then
//! the message and event loop (`event_loop.rs`).
//!
//! Bad input never kills a session that can go on: a malformed or unknown message gets an
//! `error {code: invalid_message}` naming the problem and the loop continues. Only a bad
//! first frame (1003), an oversized frame (1009), capacity (1013) and internal failures
//! (1011) close the connection, always with a close frame.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocket;
use framecast_common::protocol::{ContinuationState, ErrorCode, ServerMessage, SessionInit};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::admission::ActiveGuard;
use super::context::SessionContext;
use super::log::{LogLimits, SessionLog};
use super::prompt_steps::PromptSteps;
use super::resume::{ResumeLog, TakenOver};
use super::resume_gate::{RecordTracker, ResumeGate};
use super::schedule::SegmentScheduler;
use super::{Outgoing, SessionState, initial_image, writer};
use crate::observability;
use crate::pipeline::{PipelineEvent, SegmentPipeline};

/// Serves one WebSocket until the stream ends; always finishes with a close frame.
pub async fn run_session(socket: WebSocket, ctx: SessionContext) {
    let streaming = ctx.config.streaming.clone();
    let (sink, mut stream) = socket.split();
    let (out, out_rx) = mpsc::channel::<Outgoing>(streaming.send_queue_messages);

    let write_timeout = Duration::from_secs(streaming.client_write_timeout_seconds);
    let (written_tx, written) = tokio::sync::watch::channel(0);
    let resume = &ctx.config.store.resume;
    let (gate, records) = resume
        .enabled
        .then(|| ResumeGate::new(Duration::from_millis(resume.record_wait_ms)))
        .unzip();
    let writer = tokio::spawn(writer::write_to_client(
        sink,
        out_rx,
        write_timeout,
        written_tx,
        gate,
    ));

    let mut session = Session::new(ctx, out.clone(), written);
    session.records = records;
    session.run(&mut stream).await;
    drop(session);
    drop(out);
    writer::finish(writer, &mut stream).await;
}

/// The client's half of the socket.
pub(super) type ClientStream = futures_util::stream::SplitStream<WebSocket>;

/// An `error` frame for the client, counted in `framecast_errors_total{code}`.
pub(super) fn error(
    code: ErrorCode,
    message: impl Into<String>,
    retryable: bool,
    reason: Option<String>,
) -> Outgoing {
    observability::error_sent(code.as_str());
    Outgoing::text(&ServerMessage::Error {
        code,
        message: message.into(),
        retryable,
        reason,
    })
}

/// What the loop does after handling one input.
pub(super) enum Flow {
    Continue,
    End,
}

/// One session's state, shared by its stages.
pub(super) struct Session {
    pub(super) ctx: SessionContext,
    pub(super) out: mpsc::Sender<Outgoing>,
    pub(super) state: SessionState,
    /// Random, 64 bits: names the session in logs, stores and its stream id.
    pub(super) id: String,
    pub(super) init: SessionInit,
    pub(super) schedule: SegmentScheduler,
    /// The newest continuation state (after the last generated segment).
    pub(super) last_state: Option<ContinuationState>,
    /// The last client message or pipeline event; the idle timer counts from here.
    pub(super) last_activity: Instant,
    /// When the socket was accepted; `streaming.max_session_seconds` counts from here.
    pub(super) started: Instant,
    /// When the unanswered ping went out; `None` once the client answered.
    pub(super) ping_sent: Option<Instant>,
    pub(super) pipeline: Option<Box<dyn SegmentPipeline>>,
    pub(super) events: Option<mpsc::UnboundedReceiver<PipelineEvent>>,
    /// Conditions segment 0 once a model-backed generator uses it.
    pub(super) initial_image: Option<std::sync::Arc<initial_image::DecodedImage>>,
    pub(super) log: SessionLog,
    pub(super) active: Option<ActiveGuard>,
    /// Enhancement and auto-extension under way.
    pub(super) steps: PromptSteps,
    /// The resume record this session writes after every segment (`store.resume`).
    pub(super) resume: Option<ResumeLog>,
    /// Set when this session continues a lost one, until its pipeline starts.
    pub(super) taken_over: Option<TakenOver>,
    /// How many segments' media the writer has written to the socket: generation runs at
    /// most `store.resume.window_segments - 1` segments ahead of it, so a resume can always
    /// start at any segment the client may not have received.
    pub(super) written: tokio::sync::watch::Receiver<u32>,
    /// Keep the resume record when the session ends: it ended without the client's
    /// consent (connection lost, replica draining), so the client may come back for it.
    pub(super) keep_record: bool,
    /// Tells the socket writer's gate when each resume record landed (`store.resume`).
    pub(super) records: Option<RecordTracker>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(records) = &self.records {
            records.stop();
        }
        // Everything the session stored goes with it, unless the client may resume it; then
        // the store's time to live ends it.
        if self.keep_record && self.resume.is_some() {
            tracing::info!(session = %self.id, "resume record kept for the client to come back");
            return;
        }
        self.ctx.states.remove(&self.id);
        self.ctx.blobs.drop_owner(&self.id);
    }
}

impl Session {
    fn new(
        ctx: SessionContext,
        out: mpsc::Sender<Outgoing>,
        written: tokio::sync::watch::Receiver<u32>,
    ) -> Self {
        let seed = RandomState::new().hash_one(Instant::now());
        let id = format!("{seed:016x}");
        let streaming = &ctx.config.streaming;
        let limits = LogLimits {
            max_file_bytes: streaming.session_log_max_file_bytes,
            max_total_bytes: streaming.session_log_max_total_bytes,
        };
        let log = SessionLog::open(streaming.session_log_dir.as_deref(), &id, limits);
        let mut schedule = SegmentScheduler::new(
            ctx.config.streaming.generation_segment_cap,
            seed >> 16,
            ctx.config.generator.num_inference_steps,
        )
        .with_default_guidance(ctx.config.generator.guidance_scale);
        if ctx.prompts.llm_available() {
            schedule.use_llm_auto_extension();
        }
        Self {
            schedule,
            ctx,
            out,
            state: SessionState::Initializing,
            id,
            init: SessionInit::default(),
            last_state: None,
            last_activity: Instant::now(),
            started: Instant::now(),
            ping_sent: None,
            pipeline: None,
            events: None,
            initial_image: None,
            log,
            active: None,
            steps: PromptSteps::default(),
            resume: None,
            taken_over: None,
            written,
            keep_record: false,
            records: None,
        }
    }

    async fn run(&mut self, stream: &mut ClientStream) {
        if let Flow::End = self.admit(stream).await {
            return;
        }
        if let Some(request) = self.init.resume.take() {
            self.take_over(*request).await;
        }
        let Some(buffered) = self.bind_worker(stream).await else {
            return;
        };
        for msg in buffered {
            if let Flow::End = self.on_client(msg).await {
                return;
            }
        }
        self.main_loop(stream).await;
    }

    pub(super) fn become_(&mut self, to: SessionState) {
        if let Err(e) = self.state.transition(to) {
            tracing::error!(session = %self.id, error = %e, "session state bug");
            return;
        }
        tracing::info!(session = %self.id, state = ?to, "session state");
        self.log.event("state", serde_json::json!({"state": to}));
        let outcome = match to {
            SessionState::Complete => "complete",
            SessionState::Error => "error",
            SessionState::Timeout => "timeout",
            SessionState::Rejected => "rejected",
            _ => return,
        };
        observability::session_ended(outcome);
    }

    /// Queues a frame for the client; false once the writer has stopped.
    pub(super) async fn send(&self, item: Outgoing) -> bool {
        self.out.send(item).await.is_ok()
    }

    /// Answers a message the session cannot use with a retryable `invalid_message` naming
    /// `reason` (`field:<name>`, `binary_frame`, ...); the session goes on.
    pub(super) async fn invalid(&self, message: impl Into<String>, reason: impl Into<String>) {
        let _ = self
            .send(error(
                ErrorCode::InvalidMessage,
                message,
                true,
                Some(reason.into()),
            ))
            .await;
    }

    /// Ends in state `end`: stops the pipeline and queues the close frame.
    pub(super) async fn close(&mut self, end: SessionState, code: u16, reason: &str) {
        self.become_(end);
        if let Some(p) = self.pipeline.take() {
            p.cancel();
        }
        let _ = self.send(Outgoing::Close(code, reason.into())).await;
    }

    /// Sends `frames` (an `error`, maybe a `ltx2_stream_complete`), then closes: the one way
    /// a session ends on something the client must be told about.
    pub(super) async fn end_with(
        &mut self,
        frames: impl IntoIterator<Item = Outgoing>,
        end: SessionState,
        code: u16,
        reason: &str,
    ) -> Flow {
        for frame in frames {
            let _ = self.send(frame).await;
        }
        self.close(end, code, reason).await;
        Flow::End
    }
}
