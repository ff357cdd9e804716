//! The protocol loop of one session: validate the opening frame, wait for a worker, then
//! turn client messages and pipeline events into segments until the stream ends.
//!
//! Bad input never kills a session that can go on: a malformed or unknown message gets an
//! `error {code: invalid_message}` naming the problem and the loop continues. Only a bad
//! first frame (1003), an oversized frame (1009), capacity (1013) and internal failures
//! (1011) close the connection, always with a close frame.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use framecast_common::protocol::{
    ClientMessage, ContinuationState, ErrorCode, ProtocolError, ServerMessage, SessionInit,
    StreamEndReason, parse_client_message,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::log::SessionLog;
use super::pipeline::{self, PipelineEvent, PipelineOutputs, SegmentJob, SegmentPipeline};
use super::schedule::SegmentScheduler;
use super::{Outgoing, SessionState, close_code, initial_image, writer};
use crate::config::ReplicaConfig;
use crate::observability;
use crate::pool::WorkerPool;
use crate::store::memory::{MemoryBlobStore, MemorySessionStore};
use crate::store::{BlobStore, SessionStore};

/// What every session shares.
#[derive(Clone)]
pub struct SessionContext {
    /// Where workers come from.
    pub pool: Arc<dyn WorkerPool>,
    /// The replica's settings.
    pub config: Arc<ReplicaConfig>,
    /// Sessions connected now (past their opening frame).
    pub active: Arc<AtomicU32>,
    /// Latest continuation state of each live session.
    pub states: Arc<dyn SessionStore>,
    /// Large payloads of continuation states, owned by sessions.
    pub blobs: Arc<dyn BlobStore>,
}

impl SessionContext {
    /// A context with in-memory stores bounded as `config.store` says.
    pub fn new(pool: Arc<dyn WorkerPool>, config: Arc<ReplicaConfig>) -> Self {
        let blobs = Arc::new(MemoryBlobStore::from_config(&config));
        Self::with_blobs(pool, config, blobs)
    }

    /// A context sharing `blobs` with the pool's generators (they keep stream states there).
    pub fn with_blobs(
        pool: Arc<dyn WorkerPool>,
        config: Arc<ReplicaConfig>,
        blobs: Arc<dyn BlobStore>,
    ) -> Self {
        let ttl = Duration::from_secs(config.store.ttl_seconds);
        Self {
            states: Arc::new(MemorySessionStore::new(config.store.max_sessions, ttl)),
            blobs,
            pool,
            config,
            active: Arc::default(),
        }
    }
}

impl std::fmt::Debug for SessionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionContext")
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Counts a session as active for as long as it lives.
struct ActiveGuard(Arc<AtomicU32>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn error(
    code: ErrorCode,
    message: impl Into<String>,
    retryable: bool,
    reason: Option<String>,
) -> Outgoing {
    Outgoing::text(&ServerMessage::Error {
        code,
        message: message.into(),
        retryable,
        reason,
    })
}

/// What the loop does after handling one input.
enum Flow {
    Continue,
    End,
}

/// Serves one WebSocket until the stream ends; always finishes with a close frame.
pub async fn run_session(socket: WebSocket, ctx: SessionContext) {
    let streaming = ctx.config.streaming.clone();
    let (sink, mut stream) = socket.split();
    let (out, out_rx) = mpsc::channel::<Outgoing>(streaming.send_queue_messages);

    let write_timeout = Duration::from_secs(streaming.client_write_timeout_seconds);
    let mut writer = tokio::spawn(writer::write_to_client(sink, out_rx, write_timeout));

    let mut session = Session::new(ctx, out.clone());
    session.run(&mut stream).await;
    drop(session);
    drop(out);
    if tokio::time::timeout(Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

type ClientStream = futures_util::stream::SplitStream<WebSocket>;

struct Session {
    ctx: SessionContext,
    out: mpsc::Sender<Outgoing>,
    state: SessionState,
    id: String,
    init: SessionInit,
    schedule: SegmentScheduler,
    last_state: Option<ContinuationState>,
    last_activity: Instant,
    pipeline: Option<SegmentPipeline>,
    events: Option<mpsc::UnboundedReceiver<PipelineEvent>>,
    /// Conditions segment 0 once a model-backed generator uses it.
    initial_image: Option<std::sync::Arc<initial_image::DecodedImage>>,
    log: SessionLog,
    _active: Option<ActiveGuard>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Everything the session stored goes with it.
        self.ctx.states.remove(&self.id);
        self.ctx.blobs.drop_owner(&self.id);
    }
}

impl Session {
    fn new(ctx: SessionContext, out: mpsc::Sender<Outgoing>) -> Self {
        let seed = RandomState::new().hash_one(Instant::now());
        let id = format!("{seed:016x}");
        let log = SessionLog::open(ctx.config.streaming.session_log_dir.as_deref(), &id);
        Self {
            schedule: SegmentScheduler::new(
                ctx.config.streaming.generation_segment_cap,
                seed >> 16,
                ctx.config.generator.num_inference_steps,
            ),
            ctx,
            out,
            state: SessionState::Initializing,
            id,
            init: SessionInit::default(),
            last_state: None,
            last_activity: Instant::now(),
            pipeline: None,
            events: None,
            initial_image: None,
            log,
            _active: None,
        }
    }

    fn become_(&mut self, to: SessionState) {
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

    async fn send(&self, item: Outgoing) -> bool {
        self.out.send(item).await.is_ok()
    }

    async fn close(&mut self, end: SessionState, code: u16, reason: &str) {
        self.become_(end);
        if let Some(p) = self.pipeline.take() {
            p.cancel();
        }
        let _ = self.send(Outgoing::Close(code, reason.into())).await;
    }

    async fn run(&mut self, stream: &mut ClientStream) {
        if !self.handshake(stream).await {
            return;
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

    /// Waits for a valid `session_init_v2` and checks capacity.
    async fn handshake(&mut self, stream: &mut ClientStream) -> bool {
        let init_timeout = Duration::from_secs(self.ctx.config.streaming.init_timeout_seconds);
        let first = match tokio::time::timeout(init_timeout, stream.next()).await {
            Err(_) => {
                let _ = self
                    .send(error(
                        ErrorCode::SessionRejected,
                        "no session_init_v2 within the init timeout",
                        true,
                        Some("init_timeout".into()),
                    ))
                    .await;
                self.close(SessionState::Timeout, close_code::NORMAL, "init timeout")
                    .await;
                return false;
            }
            Ok(None) | Ok(Some(Err(_))) => {
                self.become_(SessionState::Complete);
                return false;
            }
            Ok(Some(Ok(m))) => m,
        };
        let init = match &first {
            Message::Text(t) => parse_client_message(t.as_str()),
            Message::Close(_) => {
                self.become_(SessionState::Complete);
                return false;
            }
            _ => Err(ProtocolError::MissingType),
        };
        let init = match init {
            Ok(ClientMessage::SessionInitV2(init)) => init,
            Ok(_) | Err(_) => {
                let detail = match init {
                    Err(e) => e.to_string(),
                    Ok(_) => "the first message must be session_init_v2".into(),
                };
                let _ = self
                    .send(error(
                        ErrorCode::SessionRejected,
                        detail,
                        false,
                        Some("bad_first_frame".into()),
                    ))
                    .await;
                self.close(
                    SessionState::Rejected,
                    close_code::UNSUPPORTED,
                    "expected session_init_v2",
                )
                .await;
                return false;
            }
        };
        if let Some(mode) = &init.stream_mode
            && mode != "av_fmp4"
        {
            let _ = self
                .send(error(
                    ErrorCode::SessionRejected,
                    format!("stream_mode `{mode}` is not supported (only av_fmp4)"),
                    false,
                    Some("field:stream_mode".into()),
                ))
                .await;
            self.close(
                SessionState::Rejected,
                close_code::UNSUPPORTED,
                "unsupported stream_mode",
            )
            .await;
            return false;
        }
        let max = self.ctx.config.streaming.max_sessions;
        let active = self.ctx.active.fetch_add(1, Ordering::AcqRel);
        self._active = Some(ActiveGuard(self.ctx.active.clone()));
        if active >= max {
            let _ = self
                .send(error(
                    ErrorCode::SessionRejected,
                    format!("replica is at capacity ({max} sessions)"),
                    true,
                    Some("capacity".into()),
                ))
                .await;
            self.close(
                SessionState::Rejected,
                close_code::TRY_AGAIN_LATER,
                "at capacity",
            )
            .await;
            return false;
        }
        if init.single_clip_mode {
            self.schedule.limit(1);
        }
        if let Some(image) = &init.initial_image {
            let limit = self.ctx.config.streaming.max_init_image_bytes;
            match initial_image::decode(image, limit) {
                Ok(decoded) => {
                    tracing::info!(session = %self.id, width = decoded.width, height = decoded.height, "initial image accepted");
                    self.initial_image = Some(std::sync::Arc::new(decoded));
                }
                // The session goes on without the image.
                Err(e) => {
                    let _ = self
                        .send(error(
                            ErrorCode::InvalidMessage,
                            e.to_string(),
                            true,
                            Some(e.reason().into()),
                        ))
                        .await;
                }
            }
        }
        self.init = init;
        self.last_activity = Instant::now();
        true
    }

    /// Queues for a worker (reporting positions), then starts the pipeline. Client messages
    /// that arrive meanwhile are returned to be handled once active.
    async fn bind_worker(&mut self, stream: &mut ClientStream) -> Option<Vec<Message>> {
        self.become_(SessionState::Queued);
        let timeout = Duration::from_secs(self.ctx.config.pool.acquire_timeout_seconds);
        let pool = self.ctx.pool.clone();
        let out = self.out.clone();
        let mut on_queued = move |p: crate::pool::QueuePosition| {
            let _ = out.try_send(Outgoing::text(&ServerMessage::QueueStatus {
                position: p.position,
                queue_depth: p.queue_depth,
            }));
        };
        let acquire = pool.acquire(timeout, &mut on_queued);
        tokio::pin!(acquire);
        let mut buffered = Vec::new();
        let lease = loop {
            tokio::select! {
                lease = &mut acquire => break lease,
                msg = stream.next() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        self.become_(SessionState::Complete);
                        return None;
                    }
                    Some(Ok(m)) => buffered.push(m),
                },
            }
        };
        let mut lease = match lease {
            Ok(lease) => lease,
            Err(e) => {
                let _ = self
                    .send(error(ErrorCode::GpuUnavailable, e.to_string(), true, None))
                    .await;
                self.close(
                    SessionState::Rejected,
                    close_code::TRY_AGAIN_LATER,
                    "no worker available",
                )
                .await;
                return None;
            }
        };
        self.become_(SessionState::GpuBinding);
        let format = lease.format();
        let mut initial_state = None;
        if let Some(state) = self.init.continuation_state.take() {
            match lease.validate_state(&state).await {
                Ok(()) => initial_state = Some(state),
                Err(e) => {
                    let _ = self
                        .send(error(
                            ErrorCode::InvalidMessage,
                            format!("continuation_state: {e}"),
                            true,
                            Some("field:continuation_state".into()),
                        ))
                        .await;
                }
            }
        }
        self.last_state = initial_state.clone();
        let encoder = pipeline::encoder_settings(&self.ctx.config.media, format);
        let gpu_id = lease.gpu_id();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        self.events = Some(events_rx);
        self.pipeline = Some(SegmentPipeline::start(
            lease,
            initial_state,
            encoder,
            self.id.clone(),
            PipelineOutputs {
                out: self.out.clone(),
                events: events_tx,
                started: Instant::now(),
            },
        ));
        self.become_(SessionState::Active);
        let timeout_s = self.ctx.config.streaming.session_timeout_seconds;
        self.send(Outgoing::text(&ServerMessage::GpuAssigned {
            gpu_id,
            session_timeout: timeout_s,
        }))
        .await;
        self.send(Outgoing::text(&ServerMessage::Ltx2StreamStart {
            preset: self.init.preset.clone(),
            width: format.width,
            height: format.height,
            fps: format.fps,
            num_frames: format.frames_per_segment,
        }))
        .await;
        self.try_schedule();
        Some(buffered)
    }

    async fn main_loop(&mut self, stream: &mut ClientStream) {
        let idle = Duration::from_secs(self.ctx.config.streaming.session_timeout_seconds);
        let mut events = self.events.take().expect("set when the worker was bound");
        loop {
            let idle_deadline = tokio::time::Instant::from_std(self.last_activity + idle);
            let flow = tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(m)) => self.on_client(m).await,
                    Some(Err(e)) => self.on_read_error(e).await,
                    None => {
                        tracing::info!(session = %self.id, "client went away");
                        self.become_(SessionState::Complete);
                        Flow::End
                    }
                },
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => Flow::End,
                },
                _ = tokio::time::sleep_until(idle_deadline) => {
                    let secs = idle.as_secs();
                    self.send(Outgoing::text(&ServerMessage::SessionTimeout { timeout_seconds: secs })).await;
                    self.send(Outgoing::text(&ServerMessage::Ltx2StreamComplete { reason: StreamEndReason::IdleTimeout })).await;
                    self.close(SessionState::Timeout, close_code::NORMAL, "idle timeout").await;
                    Flow::End
                }
                _ = self.out.closed() => {
                    // The writer gave up on a client that does not read.
                    self.close(SessionState::Error, close_code::NORMAL, "client too slow").await;
                    Flow::End
                }
            };
            if let Flow::End = flow {
                if let Some(p) = self.pipeline.take() {
                    p.cancel();
                }
                return;
            }
        }
    }

    async fn on_read_error(&mut self, e: axum::Error) -> Flow {
        let text = e.to_string();
        if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
            let limit = self.ctx.config.streaming.max_message_bytes;
            self.send(error(
                ErrorCode::InvalidMessage,
                format!("message larger than {limit} bytes"),
                false,
                Some("frame_too_large".into()),
            ))
            .await;
            self.close(SessionState::Error, close_code::TOO_BIG, "message too big")
                .await;
        } else {
            tracing::info!(session = %self.id, error = %text, "client connection failed");
            self.become_(SessionState::Complete);
        }
        Flow::End
    }

    async fn on_client(&mut self, msg: Message) -> Flow {
        self.last_activity = Instant::now();
        let limit = self.ctx.config.streaming.max_message_bytes;
        let size = match &msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => 0,
        };
        if size > limit {
            self.send(error(
                ErrorCode::InvalidMessage,
                format!("message of {size} bytes is larger than {limit} bytes"),
                false,
                Some("frame_too_large".into()),
            ))
            .await;
            self.close(SessionState::Error, close_code::TOO_BIG, "message too big")
                .await;
            return Flow::End;
        }
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                self.send(error(
                    ErrorCode::InvalidMessage,
                    "binary frames are not accepted; send JSON text",
                    true,
                    Some("binary_frame".into()),
                ))
                .await;
                return Flow::Continue;
            }
            Message::Close(_) => {
                tracing::info!(session = %self.id, "client closed the session");
                self.become_(SessionState::Complete);
                return Flow::End;
            }
            Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
        };
        let parsed = match parse_client_message(text.as_str()) {
            Ok(m) => {
                self.log
                    .event("client_message", serde_json::json!({"message": &m}));
                m
            }
            Err(e) => {
                self.log
                    .event("client_error", serde_json::json!({"error": e.to_string()}));
                self.send(error(
                    ErrorCode::InvalidMessage,
                    e.to_string(),
                    true,
                    Some(e.reason()),
                ))
                .await;
                return Flow::Continue;
            }
        };
        match parsed {
            ClientMessage::SessionInitV2(_) => {
                self.send(error(
                    ErrorCode::InvalidMessage,
                    "session already initialised",
                    true,
                    Some("duplicate_init".into()),
                ))
                .await;
            }
            ClientMessage::SegmentPromptSource(p) => {
                if p.prompt.trim().is_empty() {
                    self.send(error(
                        ErrorCode::InvalidMessage,
                        "prompt must not be empty",
                        true,
                        Some("field:prompt".into()),
                    ))
                    .await;
                } else if p.num_inference_steps == Some(0) {
                    self.send(error(
                        ErrorCode::InvalidMessage,
                        "num_inference_steps must be at least 1",
                        true,
                        Some("field:num_inference_steps".into()),
                    ))
                    .await;
                } else {
                    self.schedule.request(p);
                    self.try_schedule();
                }
            }
            ClientMessage::SeedPromptsUpdated(s) => self.init.curated_prompts = s.seed_prompts,
            ClientMessage::EnhancementUpdated(t) => self.init.enhancement_enabled = t.enabled,
            ClientMessage::AutoExtensionUpdated(t) => {
                self.init.auto_extension_enabled = t.enabled;
                self.try_schedule();
            }
            ClientMessage::LoopGenerationUpdated(t) => {
                self.init.loop_generation_enabled = t.enabled;
                self.try_schedule();
            }
            ClientMessage::GenerationPausedUpdated(p) => {
                self.schedule.set_paused(p.paused);
                self.try_schedule();
            }
            // Answered by the pipeline between segments (`Exported`): the generator writes
            // the stream's tensors to the blob store only when a client asks.
            ClientMessage::SnapshotState(_) => {
                let asked = self.last_state.is_some()
                    && self.pipeline.as_ref().is_some_and(SegmentPipeline::export);
                if !asked {
                    self.send(error(
                        ErrorCode::InvalidMessage,
                        "no segment generated yet: nothing to snapshot",
                        true,
                        Some("no_state".into()),
                    ))
                    .await;
                }
            }
            ClientMessage::Ping(_) => {}
        }
        Flow::Continue
    }

    async fn on_event(&mut self, ev: PipelineEvent) -> Flow {
        match ev {
            PipelineEvent::Exported { state } => {
                if let Err(e) = self.ctx.states.save(&self.id, &state) {
                    tracing::warn!(session = %self.id, error = %e, "continuation state not stored");
                }
                let msg = ServerMessage::ContinuationStateSnapshot { state };
                self.send(Outgoing::text(&msg)).await;
                Flow::Continue
            }
            PipelineEvent::ExportFailed { message } => {
                tracing::warn!(session = %self.id, %message, "snapshot failed");
                self.send(error(
                    ErrorCode::InternalError,
                    message,
                    true,
                    Some("snapshot_failed".into()),
                ))
                .await;
                Flow::Continue
            }
            PipelineEvent::Generated { next_state, .. } => {
                if let Err(e) = self.ctx.states.save(&self.id, &next_state) {
                    tracing::warn!(session = %self.id, error = %e, "continuation state not stored");
                }
                self.last_state = Some(next_state);
                self.schedule.generated();
                self.try_schedule();
                Flow::Continue
            }
            PipelineEvent::MediaDone { segment_idx } => {
                self.log.event(
                    "segment_complete",
                    serde_json::json!({"segment_idx": segment_idx}),
                );
                if self.schedule.media_done() {
                    self.send(Outgoing::text(&ServerMessage::Ltx2StreamComplete {
                        reason: StreamEndReason::SegmentCap,
                    }))
                    .await;
                    self.close(
                        SessionState::Complete,
                        close_code::NORMAL,
                        "segment cap reached",
                    )
                    .await;
                    return Flow::End;
                }
                Flow::Continue
            }
            PipelineEvent::Failed { code, message } => {
                tracing::error!(session = %self.id, ?code, %message, "session failed");
                self.log.event(
                    "failed",
                    serde_json::json!({"code": code, "message": &message}),
                );
                self.send(error(code, message, code == ErrorCode::WorkerFailed, None))
                    .await;
                self.send(Outgoing::text(&ServerMessage::Ltx2StreamComplete {
                    reason: StreamEndReason::Error,
                }))
                .await;
                self.close(SessionState::Error, close_code::INTERNAL, "internal error")
                    .await;
                Flow::End
            }
        }
    }

    /// Starts the next segment when the schedule wants one.
    fn try_schedule(&mut self) {
        let Some(pipeline) = &self.pipeline else {
            return;
        };
        let Some(mut request) = self.schedule.next(&self.init) else {
            return;
        };
        if request.segment_idx == 0 {
            // A fresh stream starts from the image; a restored one ignores it.
            request.initial_image = self.initial_image.clone();
        }
        let job = SegmentJob {
            request,
            scheduled_at: Instant::now(),
        };
        if !pipeline.submit(job) {
            // The pipeline has stopped; its failure event ends the session.
            tracing::debug!(session = %self.id, "segment not submitted: pipeline stopped");
        }
    }
}
