//! The active session's loop: client messages (through the policy), the pipeline's frames
//! (through the translator) and events, pings, the drain and the session's lifetime.

use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use framecast_common::dreamverse::{ClientMessage, FrameError, ServerMessage, parse_frame};
use framecast_common::protocol::ErrorCode;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::policy::SegmentPlan;
use super::translate::SegmentLabel;
use super::{ClientStream, DreamverseSession, Flow};
use crate::generate::SegmentRequest;
use crate::pipeline::{PipelineEvent, SegmentJob};
use crate::session::event_loop::{is_too_big, sleep_until_some, tick};
use crate::session::{Outgoing, SessionState, close_code};

impl DreamverseSession {
    pub(super) async fn main_loop(&mut self, stream: &mut ClientStream) {
        let streaming = &self.ctx.config.streaming;
        let pong_timeout = Duration::from_secs(streaming.pong_timeout_seconds);
        let mut pings = (streaming.ping_interval_seconds > 0).then(|| {
            let every = Duration::from_secs(streaming.ping_interval_seconds);
            tokio::time::interval_at(tokio::time::Instant::now() + every, every)
        });
        let end_of_life = tokio::time::Instant::from_std(self.end_of_life);
        let drain = self.ctx.drain.clone();
        let mut events = self.events.take().expect("set when the worker was bound");
        let mut media = self.media.take().expect("set when the worker was bound");
        let mut media_open = true;
        loop {
            let draining = drain.is_draining();
            if draining && !self.policy.in_flight() {
                // The segment under way (if any) went out; nothing new starts while draining.
                self.end_draining().await;
                return;
            }
            let pong_deadline = self
                .ping_sent
                .map(|sent| tokio::time::Instant::from_std(sent + pong_timeout));
            let drain_deadline = drain.deadline().map(tokio::time::Instant::from_std);
            let flow = tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(m)) => self.on_client(m).await,
                    Some(Err(e)) if is_too_big(&e) => self.too_big().await,
                    Some(Err(e)) => {
                        tracing::info!(session = %self.id, error = %e, "client connection failed");
                        self.become_(SessionState::Complete);
                        Flow::End
                    }
                    None => {
                        tracing::info!(session = %self.id, "client went away");
                        self.become_(SessionState::Complete);
                        Flow::End
                    }
                },
                frame = media.recv(), if media_open => match frame {
                    Some(frame) => self.forward(frame).await,
                    None => {
                        media_open = false;
                        Flow::Continue
                    }
                },
                ev = events.recv() => match ev {
                    Some(ev) => {
                        // The threads send a segment's frames before its event: all of them
                        // go out before the event is acted on (a stream complete after it).
                        match self.forward_pending(&mut media).await {
                            Flow::Continue => self.on_event(ev).await,
                            Flow::End => Flow::End,
                        }
                    }
                    None => {
                        self.end_with_error(
                            ErrorCode::InternalError,
                            "AV streaming failed: the pipeline stopped",
                            SessionState::Error,
                            close_code::INTERNAL,
                            "internal error",
                        )
                        .await
                    }
                },
                Some(done) = self.jobs.join_next(), if !self.jobs.is_empty() => match done {
                    Ok(done) => self.on_prompt_job(done).await,
                    Err(e) => {
                        // A job that panicked: its step is lost, the session goes on.
                        tracing::error!(session = %self.id, error = %e, "prompt job failed");
                        Flow::Continue
                    }
                },
                _ = drain.started(), if !draining => Flow::Continue,
                _ = sleep_until_some(drain_deadline), if draining => {
                    tracing::warn!(session = %self.id, "drain grace over with a segment under way");
                    self.end_draining().await
                }
                _ = tick(&mut pings), if self.ping_sent.is_none() => {
                    self.ping_sent = Some(Instant::now());
                    self.send(Outgoing::Ping).await;
                    Flow::Continue
                }
                _ = sleep_until_some(pong_deadline), if pong_deadline.is_some() => {
                    tracing::info!(session = %self.id, ?pong_timeout, "client answered no ping; taken as gone");
                    self.close(SessionState::Error, close_code::GOING_AWAY, "pong timeout").await
                }
                _ = tokio::time::sleep_until(end_of_life) => self.expire().await,
                _ = self.out.closed() => {
                    // The writer gave up on a client that does not read.
                    self.close(SessionState::Error, close_code::NORMAL, "client too slow").await
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

    pub(super) async fn on_client(&mut self, msg: Message) -> Flow {
        let text = match msg {
            Message::Pong(_) => {
                self.ping_sent = None;
                return Flow::Continue;
            }
            Message::Ping(_) => return Flow::Continue,
            Message::Close(_) => {
                tracing::info!(session = %self.id, "client closed the session");
                self.become_(SessionState::Complete);
                return Flow::End;
            }
            Message::Binary(_) => {
                return self
                    .invalid_frame(FrameError::Binary, SessionState::Error)
                    .await;
            }
            Message::Text(text) => text,
        };
        let fields = match parse_frame(text.as_str()) {
            Ok(fields) => fields,
            Err(e) => return self.invalid_frame(e, SessionState::Error).await,
        };
        let message = ClientMessage::from_fields(&fields);
        // Only the messages that may carry an image may be larger than a message.
        let carries_image = matches!(
            message,
            ClientMessage::ProjectInitV1(_) | ClientMessage::SimpleGenerate(_)
        );
        if text.len() > self.ctx.config.streaming.max_message_bytes && !carries_image {
            return self.too_big().await;
        }
        let mut logged = fields;
        logged.remove("initial_image");
        self.log.event("client_message", Value::Object(logged));
        match message {
            ClientMessage::Leave => {
                tracing::info!(session = %self.id, "client left");
                return self
                    .close(SessionState::Complete, close_code::NORMAL, "leave")
                    .await;
            }
            ClientMessage::ProjectInitV1(settings) => {
                if self.policy.check_project_init(&settings)
                    && self.screen_project(&settings)
                    && self.replace_image(settings.initial_image.as_ref()).await
                {
                    self.policy.project_init(settings);
                }
            }
            ClientMessage::SimpleGenerate(request) => {
                if self.policy.check_simple_generate(&request)
                    && self.replace_image(request.initial_image.as_ref()).await
                {
                    self.policy.simple_generate(request);
                }
            }
            other => self.policy.on_message(other),
        }
        self.advance().await
    }

    /// Whether a new project's prompts pass the safety filter; if not, the `error` is
    /// queued and the project does not start (the session goes on).
    fn screen_project(&mut self, settings: &framecast_common::dreamverse::ProjectSettings) -> bool {
        match self.screen_opening(settings) {
            Some(message) => {
                self.policy.push_error(message);
                false
            }
            None => true,
        }
    }

    /// Takes the image a new project or clip brings (none clears the old one); false, with
    /// the `error` queued, when it is refused.
    async fn replace_image(&mut self, value: Option<&Value>) -> bool {
        let decoded = match value {
            Some(value) => self.decode_image(value).await,
            None => Ok(None),
        };
        match decoded {
            Ok(image) => {
                self.image = image;
                true
            }
            Err(message) => {
                self.policy.push_error(message);
                false
            }
        }
    }

    async fn on_event(&mut self, ev: PipelineEvent) -> Flow {
        match ev {
            // The next segment is generated while this one's media goes out (see the policy).
            PipelineEvent::Generated { segment_idx, .. } => {
                tracing::debug!(session = %self.id, segment_idx, "segment generated");
                self.policy.generated();
                self.advance().await
            }
            PipelineEvent::MediaDone { segment_idx } => {
                self.log.event(
                    "segment_complete",
                    serde_json::json!({"pipeline_segment": segment_idx}),
                );
                self.policy.media_done();
                self.advance().await
            }
            PipelineEvent::Failed { code, message } => {
                tracing::error!(session = %self.id, ?code, %message, "session failed");
                self.end_with_error(
                    code,
                    format!("AV streaming failed: {message}"),
                    SessionState::Error,
                    close_code::INTERNAL,
                    "internal error",
                )
                .await
            }
            // Dreamverse has no snapshots; the session never asks for one.
            PipelineEvent::Exported { .. } | PipelineEvent::ExportFailed { .. } => Flow::Continue,
        }
    }

    /// Sends what the policy has to say and starts the segment it wants, if any (none while
    /// draining).
    pub(super) async fn advance(&mut self) -> Flow {
        let plan = if self.ctx.drain.is_draining() {
            None
        } else {
            self.policy.poll()
        };
        // The segment's announcement goes out before any of its media can.
        if !self.flush_policy().await {
            return Flow::End;
        }
        if let Some(plan) = plan {
            self.submit(plan);
        }
        Flow::Continue
    }

    fn submit(&mut self, plan: SegmentPlan) {
        let Some(pipeline) = &self.pipeline else {
            return;
        };
        let pipeline_idx = self.next_pipeline_segment;
        self.next_pipeline_segment += 1;
        self.translator.label(
            pipeline_idx,
            SegmentLabel {
                segment_idx: plan.segment_idx,
                total_segments: plan.total_segments,
            },
        );
        self.log.event(
            "segment_start",
            serde_json::json!({
                "segment_idx": plan.segment_idx,
                "pipeline_segment": pipeline_idx,
                "source": plan.source,
                "prompt_id": plan.prompt_id,
                "loop_iteration": plan.loop_iteration,
            }),
        );
        let request = SegmentRequest {
            segment_idx: pipeline_idx,
            prompt: plan.prompt,
            negative_prompt: None,
            seed: self.seed.wrapping_add(u64::from(pipeline_idx)),
            num_inference_steps: self.ctx.config.generator.num_inference_steps,
            guidance_scale: self.ctx.config.generator.guidance_scale,
            // Each Dreamverse stream (after a restart, a new project, a single clip) starts
            // afresh: nothing of the previous stream's frames conditions it.
            fresh_stream: plan.segment_idx == 1,
            checkpoint_max_bytes: None,
            // Dreamverse conditions each stream's first segment on the image; the generator
            // uses it when the pipeline has no state yet (see the module docs).
            initial_image: if plan.segment_idx == 1 {
                self.image.clone()
            } else {
                None
            },
        };
        let job = SegmentJob {
            request,
            scheduled_at: Instant::now(),
        };
        if !pipeline.submit(job) {
            // The pipeline has stopped; its failure event ends the session.
            tracing::debug!(session = %self.id, "segment not submitted: pipeline stopped");
        }
    }

    /// Translates one pipeline frame and queues the result for the client; the first frame
    /// of a segment's media lets the segment's held announcement go out before it.
    async fn forward(&mut self, frame: Outgoing) -> Flow {
        if let Some(begins) = self.translator.begins_segment(&frame) {
            self.policy.release_held(begins);
            if !self.flush_policy().await {
                return Flow::End;
            }
        }
        for item in self.translator.translate(frame) {
            if !self.send(item).await {
                return Flow::End;
            }
        }
        Flow::Continue
    }

    /// Forwards every pipeline frame already waiting.
    async fn forward_pending(&mut self, media: &mut mpsc::Receiver<Outgoing>) -> Flow {
        while let Ok(frame) = media.try_recv() {
            if let Flow::End = self.forward(frame).await {
                return Flow::End;
            }
        }
        Flow::Continue
    }

    /// The session's lifetime is over: `session_timeout`, close 1000 `Session timeout`.
    async fn expire(&mut self) -> Flow {
        let lifetime = self.lifetime_seconds;
        tracing::info!(session = %self.id, lifetime, "session reached its lifetime");
        let message = ServerMessage::SessionTimeout {
            message: format!("Session expired after {lifetime} seconds"),
        };
        self.send_message(&message).await;
        self.close(SessionState::Timeout, close_code::NORMAL, "Session timeout")
            .await
    }

    /// Ends a live session for the drain: `ltx2_stream_complete` if a stream is open, 1001.
    async fn end_draining(&mut self) -> Flow {
        tracing::info!(session = %self.id, "session ends: the replica is draining");
        self.policy.complete_stream();
        self.flush_policy().await;
        self.close(SessionState::Complete, close_code::GOING_AWAY, "draining")
            .await
    }

    /// Ends the session over a frame larger than allowed (1009).
    pub(super) async fn too_big(&mut self) -> Flow {
        let limit = self.ctx.config.streaming.max_message_bytes;
        self.end_with_error(
            ErrorCode::InvalidMessage,
            format!("message larger than {limit} bytes"),
            SessionState::Error,
            close_code::TOO_BIG,
            "message too big",
        )
        .await
    }
}
