//! The active session's loop: client messages, pipeline events, the idle timer and a client
//! that stopped reading, until one of them ends the stream.

use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use framecast_common::protocol::{
    ClientMessage, ErrorCode, ServerMessage, StreamEndReason, parse_client_message,
};
use futures_util::StreamExt;

use super::controller::{ClientStream, Flow, Session, error};
use super::{Outgoing, SessionState, close_code, limits};
use crate::pipeline::{PipelineEvent, SegmentJob};
use crate::prompt::Stage;

impl Session {
    pub(super) async fn main_loop(&mut self, stream: &mut ClientStream) {
        let idle = Duration::from_secs(self.ctx.config.streaming.session_timeout_seconds);
        let lifetime = Duration::from_secs(self.ctx.config.streaming.max_session_seconds);
        let end_of_life = tokio::time::Instant::from_std(self.started + lifetime);
        let streaming = &self.ctx.config.streaming;
        let pong_timeout = Duration::from_secs(streaming.pong_timeout_seconds);
        let mut pings = (streaming.ping_interval_seconds > 0).then(|| {
            let every = Duration::from_secs(streaming.ping_interval_seconds);
            tokio::time::interval_at(tokio::time::Instant::now() + every, every)
        });
        let drain = self.ctx.drain.clone();
        let mut events = self.events.take().expect("set when the worker was bound");
        loop {
            let draining = drain.is_draining();
            if draining && !self.schedule.in_flight() {
                // The segment under way (if any) went out; nothing new starts while draining.
                self.end_draining().await;
                return;
            }
            let idle_deadline = tokio::time::Instant::from_std(self.last_activity + idle);
            let pong_deadline = self
                .ping_sent
                .map(|sent| tokio::time::Instant::from_std(sent + pong_timeout));
            let drain_deadline = drain.deadline().map(tokio::time::Instant::from_std);
            let flow = tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(m)) => self.on_client(m).await,
                    Some(Err(e)) => self.on_read_error(e).await,
                    None => {
                        tracing::info!(session = %self.id, "client went away");
                        // No close frame: the connection was lost, so keep what a resume needs.
                        self.keep_record = true;
                        self.become_(SessionState::Complete);
                        Flow::End
                    }
                },
                ev = events.recv() => match ev {
                    Some(ev) => {
                        // A stream that is producing segments is not idle.
                        self.last_activity = Instant::now();
                        self.on_event(ev).await
                    }
                    None => Flow::End,
                },
                // The client caught up: a segment held back for the resume window may start.
                Ok(()) = self.written.changed(), if self.resume.is_some() => {
                    self.try_schedule();
                    Flow::Continue
                }
                Some(done) = self.steps.next_done() => {
                    self.on_prompt_step(done).await;
                    Flow::Continue
                }
                _ = drain.started(), if !draining => Flow::Continue,
                _ = sleep_until_some(drain_deadline), if draining => {
                    tracing::warn!(session = %self.id, "drain grace over with a segment under way");
                    self.end_draining().await;
                    Flow::End
                }
                _ = tick(&mut pings), if self.ping_sent.is_none() => {
                    self.ping_sent = Some(Instant::now());
                    self.send(Outgoing::Ping).await;
                    Flow::Continue
                }
                _ = sleep_until_some(pong_deadline), if pong_deadline.is_some() => {
                    tracing::info!(session = %self.id, ?pong_timeout, "client answered no ping; taken as gone");
                    self.keep_record = true;
                    self.close(SessionState::Error, close_code::GOING_AWAY, "pong timeout").await;
                    Flow::End
                }
                _ = tokio::time::sleep_until(end_of_life) => {
                    tracing::info!(session = %self.id, ?lifetime, "session reached its longest lifetime");
                    self.end_with(
                        [stream_complete(StreamEndReason::MaxDuration)],
                        SessionState::Complete,
                        close_code::NORMAL,
                        "max session duration",
                    )
                    .await
                }
                // Idle means no client message and no segment under way (a slow segment
                // counts as activity until it is done).
                _ = tokio::time::sleep_until(idle_deadline), if !self.schedule.in_flight() => {
                    let frames = [
                        Outgoing::text(&ServerMessage::SessionTimeout { timeout_seconds: idle.as_secs() }),
                        stream_complete(StreamEndReason::IdleTimeout),
                    ];
                    self.end_with(frames, SessionState::Timeout, close_code::NORMAL, "idle timeout").await
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
        if is_too_big(&e) {
            let limit = self.ctx.config.streaming.max_message_bytes;
            self.too_big(format!("message larger than {limit} bytes"))
                .await
        } else {
            tracing::info!(session = %self.id, error = %text, "client connection failed");
            self.keep_record = true;
            self.become_(SessionState::Complete);
            Flow::End
        }
    }

    pub(super) async fn on_client(&mut self, msg: Message) -> Flow {
        // Control frames come from the client's WebSocket stack, not from the user: they
        // prove the peer is there but are no activity for the idle timer.
        match &msg {
            Message::Pong(_) => {
                self.ping_sent = None;
                return Flow::Continue;
            }
            Message::Ping(_) => return Flow::Continue,
            _ => {}
        }
        self.last_activity = Instant::now();
        let limit = self.ctx.config.streaming.max_message_bytes;
        let size = match &msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => 0,
        };
        if size > limit {
            return self
                .too_big(format!(
                    "message of {size} bytes is larger than {limit} bytes"
                ))
                .await;
        }
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                self.invalid(
                    "binary frames are not accepted; send JSON text",
                    "binary_frame",
                )
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
                self.invalid(e.to_string(), e.reason()).await;
                return Flow::Continue;
            }
        };
        match parsed {
            ClientMessage::SessionInitV2(_) => {
                self.invalid("session already initialised", "duplicate_init")
                    .await;
            }
            ClientMessage::SegmentPromptSource(p) => {
                let limits = &self.ctx.config.streaming.limits;
                let queued = self.schedule.queued() + self.steps.waiting();
                if let Err(refusal) = limits::check_prompt(&p, limits) {
                    self.invalid(refusal.message, refusal.reason).await;
                } else if queued >= limits.max_queued_prompts {
                    let message = format!(
                        "{queued} prompts are already waiting (at most {}); send the next one \
                         once a segment has started",
                        limits.max_queued_prompts
                    );
                    self.invalid(message, "prompt_queue_full").await;
                } else {
                    self.accept_prompt(p).await;
                }
            }
            ClientMessage::SeedPromptsUpdated(s) => {
                let limits = &self.ctx.config.streaming.limits;
                match limits::check_seed_prompts("seed_prompts", &s.seed_prompts, limits) {
                    Ok(())
                        if s.seed_prompts
                            .iter()
                            .any(|p| self.ctx.prompts.blocks(p, Stage::User)) =>
                    {
                        self.refuse_blocked("a seed prompt (the list is not applied)")
                            .await;
                    }
                    Ok(()) => self.init.curated_prompts = s.seed_prompts,
                    Err(refusal) => self.invalid(refusal.message, refusal.reason).await,
                }
            }
            ClientMessage::EnhancementUpdated(t) => self.init.enhancement_enabled = t.enabled,
            ClientMessage::AutoExtensionUpdated(t) => {
                self.init.auto_extension_enabled = t.enabled;
                if !t.enabled {
                    self.cancel_auto_extension();
                }
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
                let asked =
                    self.last_state.is_some() && self.pipeline.as_ref().is_some_and(|p| p.export());
                if !asked {
                    self.invalid("no segment generated yet: nothing to snapshot", "no_state")
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
                // Signed as it leaves the server: only this state, unchanged, resumes.
                let state = self.ctx.signer.sign(state);
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
            PipelineEvent::Generated {
                next_state,
                checkpoint,
                ..
            } => {
                if let Some(log) = &mut self.resume {
                    log.generated(checkpoint);
                }
                self.last_state = Some(next_state);
                self.schedule.generated();
                self.try_schedule();
                // After scheduling, so the record holds the segment just started too.
                self.save_resume_record();
                Flow::Continue
            }
            PipelineEvent::MediaDone { segment_idx } => {
                if self.resume.is_some() {
                    // Behind the segment's last frame in the send queue.
                    self.send(Outgoing::Written(segment_idx)).await;
                }
                self.log.event(
                    "segment_complete",
                    serde_json::json!({"segment_idx": segment_idx}),
                );
                if self.schedule.media_done() {
                    return self
                        .end_with(
                            [stream_complete(StreamEndReason::SegmentCap)],
                            SessionState::Complete,
                            close_code::NORMAL,
                            "segment cap reached",
                        )
                        .await;
                }
                Flow::Continue
            }
            PipelineEvent::Failed { code, message } => {
                tracing::error!(session = %self.id, ?code, %message, "session failed");
                self.log.event(
                    "failed",
                    serde_json::json!({"code": code, "message": &message}),
                );
                let frames = [
                    error(code, message, code == ErrorCode::WorkerFailed, None),
                    stream_complete(StreamEndReason::Error),
                ];
                self.end_with(
                    frames,
                    SessionState::Error,
                    close_code::INTERNAL,
                    "internal error",
                )
                .await
            }
        }
    }

    /// Starts the next segment when the schedule wants one.
    pub(super) fn try_schedule(&mut self) {
        let Some(pipeline) = &self.pipeline else {
            return;
        };
        if self.ctx.drain.is_draining() {
            return;
        }
        if let Some(log) = &self.resume
            && !log.may_start(self.schedule.scheduled(), *self.written.borrow())
        {
            // Too far ahead of what the client got: wait for the writer.
            return;
        }
        let Some(mut request) = self.schedule.next(&self.init) else {
            self.maybe_auto_extend();
            return;
        };
        self.steps.generated(&request.prompt);
        if request.segment_idx == 0 && self.taken_over.is_none() {
            // A fresh stream starts from the image; a restored one ignores it.
            request.initial_image = self.initial_image.clone();
        }
        if let Some(log) = &mut self.resume {
            log.started(&mut request);
        }
        let job = SegmentJob {
            request,
            scheduled_at: Instant::now(),
        };
        if !pipeline.submit(job) {
            // The pipeline has stopped; its failure event ends the session.
            tracing::debug!(session = %self.id, "segment not submitted: pipeline stopped");
        }
        // Asked while this segment is generated, so the prompt after it is ready in time.
        self.maybe_auto_extend();
    }

    /// Ends a live session for the drain: `ltx2_stream_complete {reason: draining}`, 1001.
    async fn end_draining(&mut self) -> Flow {
        tracing::info!(session = %self.id, "session ends: the replica is draining");
        // The client can resume the stream on another replica.
        self.keep_record = true;
        self.end_with(
            [stream_complete(StreamEndReason::Draining)],
            SessionState::Complete,
            close_code::GOING_AWAY,
            "draining",
        )
        .await
    }

    /// Ends the session over a frame larger than `streaming.max_message_bytes` (1009).
    async fn too_big(&mut self, message: String) -> Flow {
        let refusal = error(
            ErrorCode::InvalidMessage,
            message,
            false,
            Some("frame_too_large".into()),
        );
        self.end_with(
            [refusal],
            SessionState::Error,
            close_code::TOO_BIG,
            "message too big",
        )
        .await
    }
}

fn stream_complete(reason: StreamEndReason) -> Outgoing {
    Outgoing::text(&ServerMessage::Ltx2StreamComplete { reason })
}

/// Whether a read failed because the frame was over the socket's size limit.
pub(super) fn is_too_big(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("too long") || text.contains("too big") || text.contains("Space limit")
}

/// Sleeps until `deadline`, or forever without one.
pub(super) async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The next ping tick, or never when pings are off.
pub(super) async fn tick(pings: &mut Option<tokio::time::Interval>) {
    match pings {
        Some(pings) => {
            pings.tick().await;
        }
        None => std::future::pending().await,
    }
}
