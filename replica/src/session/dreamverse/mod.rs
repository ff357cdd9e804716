//! `WS /ws`: the Dreamverse protocol (what FastVideo's Dreamverse web app speaks), an
//! adapter over the session core.
//!
//! What is Dreamverse's own: its framing and lenient messages
//! ([`framecast_common::dreamverse`]), its server-driven prompt policy ([`policy`]) and the
//! shape of its media frames ([`translate`]). What is shared with `/v1/stream`: the worker
//! queue and its lease, the pipeline (generation and media threads), the socket writer, the
//! session log, the client limits, the initial-image checks, the drain and the metrics.
//!
//! One socket holds one worker and one pipeline for its whole life, across restarts, loop
//! restarts and new projects (`project_init_v1`, `simple_generate`): the worker is never
//! given back mid-session (so a queued session cannot take it between two projects), and
//! the translator numbers segments per Dreamverse stream and repeats the init segment
//! before each segment's media. The continuation state is not reset between streams (the
//! pipeline has no such request yet): a new stream continues from the last frames and its
//! initial image is used only if it is the socket's first segment.
//!
//! Order of a session: accept → `queue_status` → the opening frame (at most
//! `streaming.init_timeout_seconds`; defaults without one) → capacity, initial image →
//! queue for a worker (`queue_status` while waiting) → `gpu_assigned` → the project's
//! frames and its segments ([`event_loop`]) until `leave`, the client closing, the
//! session's lifetime, a failure or the drain. Every ending the client is told about is an
//! `error` (or `session_timeout`) and a close frame.

mod event_loop;
mod opening;
pub mod policy;
mod prompt_jobs;
pub mod translate;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocket;
use framecast_common::dreamverse::ServerMessage;
use framecast_common::protocol::ErrorCode;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::admission::ActiveGuard;
use super::log::{LogLimits, SessionLog};
use super::{Outgoing, SessionContext, SessionState, initial_image, writer};
use crate::observability;
use crate::pipeline::{PipelineEvent, SegmentPipeline};
use crate::store::random_token;
use policy::{PromptPolicy, PromptTools};
use translate::Translator;

/// Serves one Dreamverse WebSocket until it ends; always finishes with a close frame.
pub async fn run_dreamverse_session(socket: WebSocket, ctx: SessionContext) {
    let streaming = ctx.config.streaming.clone();
    let (sink, mut stream) = socket.split();
    let (out, out_rx) = mpsc::channel::<Outgoing>(streaming.send_queue_messages);
    let write_timeout = Duration::from_secs(streaming.client_write_timeout_seconds);
    // Dreamverse sessions do not resume, so nobody waits on what was written.
    let (written, _) = tokio::sync::watch::channel(0);
    let writer = tokio::spawn(writer::write_to_client(
        sink,
        out_rx,
        write_timeout,
        written,
        None,
    ));

    let mut session = DreamverseSession::new(ctx, out.clone());
    session.run(&mut stream).await;
    drop(session);
    drop(out);
    writer::finish(writer, &mut stream).await;
}

/// The client's half of the socket.
type ClientStream = futures_util::stream::SplitStream<WebSocket>;

/// What the session does after handling one input.
enum Flow {
    Continue,
    End,
}

/// One Dreamverse session's state.
struct DreamverseSession {
    ctx: SessionContext,
    /// The socket writer's queue.
    out: mpsc::Sender<Outgoing>,
    state: SessionState,
    /// Random, 64 bits: names the session in logs and stores, and its pipeline stream.
    id: String,
    log: SessionLog,
    policy: PromptPolicy,
    translator: Translator,
    pipeline: Option<Box<dyn SegmentPipeline>>,
    events: Option<mpsc::UnboundedReceiver<PipelineEvent>>,
    /// What the pipeline sends for the client, before translation.
    media: Option<mpsc::Receiver<Outgoing>>,
    /// Conditions the first segment (see the module docs).
    image: Option<Arc<initial_image::DecodedImage>>,
    /// The pipeline's index of the next segment (it counts across streams).
    next_pipeline_segment: u32,
    /// Seeds derive from it and the pipeline's segment index.
    seed: u64,
    accepted: Instant,
    /// The session ends here (`session_timeout`), counted from `gpu_assigned`.
    end_of_life: Instant,
    /// When the unanswered ping went out; `None` once the client answered.
    ping_sent: Option<Instant>,
    /// `gpu_assigned.session_timeout`: the lifetime in seconds, as the client was told.
    lifetime_seconds: u64,
    active_slot: Option<ActiveGuard>,
    /// The prompt pipeline's jobs under way (aborted with the session).
    jobs: JoinSet<prompt_jobs::JobDone>,
}

impl Drop for DreamverseSession {
    fn drop(&mut self) {
        // Everything the session's pipeline stored goes with it.
        self.ctx.states.remove(&self.id);
        self.ctx.blobs.drop_owner(&self.id);
    }
}

impl DreamverseSession {
    fn new(ctx: SessionContext, out: mpsc::Sender<Outgoing>) -> Self {
        let seed = RandomState::new().hash_one(Instant::now());
        let id = format!("{seed:016x}");
        let streaming = &ctx.config.streaming;
        let limits = LogLimits {
            max_file_bytes: streaming.session_log_max_file_bytes,
            max_total_bytes: streaming.session_log_max_total_bytes,
        };
        let log = SessionLog::open(streaming.session_log_dir.as_deref(), &id, limits);
        let service = ctx.prompts.clone();
        let tools = PromptTools {
            llm: service.llm_available(),
            blocks: Box::new(move |text, stage| service.blocks(text, stage)),
        };
        let policy = PromptPolicy::new(
            ctx.config.dreamverse.generation_segment_cap,
            streaming.limits.clone(),
            uuid4,
            tools,
        );
        let now = Instant::now();
        Self {
            ctx,
            out,
            state: SessionState::Initializing,
            id,
            log,
            policy,
            translator: Translator::default(),
            pipeline: None,
            events: None,
            media: None,
            image: None,
            next_pipeline_segment: 0,
            // Below 2^53: seeds stay exact in a browser.
            seed: seed >> 16,
            accepted: now,
            end_of_life: now,
            ping_sent: None,
            lifetime_seconds: 0,
            active_slot: None,
            jobs: JoinSet::new(),
        }
    }

    async fn run(&mut self, stream: &mut ClientStream) {
        let Some(buffered) = self.open(stream).await else {
            return;
        };
        for msg in buffered {
            if let Flow::End = self.on_client(msg).await {
                return;
            }
        }
        self.main_loop(stream).await;
    }

    fn become_(&mut self, to: SessionState) {
        if let Err(e) = self.state.transition(to) {
            tracing::error!(session = %self.id, error = %e, "session state bug");
            return;
        }
        tracing::info!(session = %self.id, state = ?to, protocol = "dreamverse", "session state");
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
    async fn send(&self, item: Outgoing) -> bool {
        self.out.send(item).await.is_ok()
    }

    async fn send_message(&self, message: &ServerMessage) -> bool {
        self.send(Outgoing::Text(message.to_json())).await
    }

    /// Sends what the policy queued and starts the prompt jobs it asked for; its `error`s
    /// (refused client input) are counted as `invalid_message`. False once the writer has
    /// stopped.
    async fn flush_policy(&mut self) -> bool {
        self.start_prompt_jobs();
        for message in self.policy.take_messages() {
            if let ServerMessage::Error { message } = &message {
                observability::error_sent(ErrorCode::InvalidMessage.as_str());
                self.log
                    .event("client_error", serde_json::json!({"error": message}));
            }
            if !self.send_message(&message).await {
                return false;
            }
        }
        true
    }

    /// Ends in state `end`: stops the pipeline and queues the close frame.
    async fn close(&mut self, end: SessionState, code: u16, reason: &str) -> Flow {
        self.become_(end);
        if let Some(p) = self.pipeline.take() {
            p.cancel();
        }
        let _ = self.send(Outgoing::Close(code, reason.into())).await;
        Flow::End
    }

    /// Ends on something the client must be told: an `error {message}` (counted under
    /// `code`), then the close frame.
    async fn end_with_error(
        &mut self,
        code: ErrorCode,
        message: impl Into<String>,
        end: SessionState,
        close_code: u16,
        reason: &str,
    ) -> Flow {
        let message = message.into();
        tracing::info!(session = %self.id, %message, close_code, "session ends with an error");
        self.log.event(
            "failed",
            serde_json::json!({"code": code, "message": &message}),
        );
        observability::error_sent(code.as_str());
        let _ = self.send_message(&ServerMessage::error(message)).await;
        self.close(end, close_code, reason).await
    }
}

/// A random UUID (version 4), for user prompts the client left unnamed.
fn uuid4() -> String {
    let t = random_token();
    let variant = ['8', '9', 'a', 'b'][usize::from(t.as_bytes()[16] % 4)];
    format!(
        "{}-{}-4{}-{variant}{}-{}",
        &t[0..8],
        &t[8..12],
        &t[13..16],
        &t[17..20],
        &t[20..32]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_have_the_version_4_shape() {
        let id = super::uuid4();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{id}"
        );
        assert!(parts[2].starts_with('4'), "{id}");
        assert!("89ab".contains(&parts[3][..1]), "{id}");
        assert_ne!(id, super::uuid4());
    }
}
