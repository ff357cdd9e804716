//! From accept to `gpu_assigned`: the first `queue_status`, the opening frame, capacity, the
//! initial image, the wait for a worker and the pipeline started on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use framecast_common::dreamverse::{
    FrameError, MAX_INITIAL_IMAGE_BYTES, ProjectSettings, ServerMessage, parse_frame,
    parse_initial_image,
};
use framecast_common::protocol::{ErrorCode, InitialImage};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{ClientStream, DreamverseSession, Flow};
use crate::pipeline::{PipelineOutputs, encoder_settings};
use crate::pool::QueuePosition;
use crate::prompt::Stage;
use crate::session::admission::ActiveGuard;
use crate::session::binding::{Waited, wait_for_worker};
use crate::session::{Outgoing, SessionState, close_code, initial_image};

/// Client messages kept while the session waits for a worker; beyond them the socket is not
/// read until a worker is granted.
const MAX_BUFFERED: usize = 64;

impl DreamverseSession {
    /// Runs the session up to `gpu_assigned`; the client messages that arrived meanwhile,
    /// or `None` when the session ended (with its close frame) or the client left.
    pub(super) async fn open(&mut self, stream: &mut ClientStream) -> Option<Vec<Message>> {
        // Before anything is read: where the session stands.
        let status = self.ctx.pool.status();
        let position = if status.available_gpus == 0 {
            status.queue_size + 1
        } else {
            0
        };
        self.send_message(&ServerMessage::QueueStatus {
            position,
            total_gpus: status.total_gpus,
            available_gpus: status.available_gpus,
        })
        .await;
        let settings = self.read_opening(stream).await?;
        // Checked once the opening frame is read: closing with it unread would reset the
        // connection and lose the refusal.
        if self.ctx.drain.is_draining() {
            self.refuse_draining().await;
            return None;
        }
        let max = self.ctx.config.streaming.max_sessions;
        let (active, guard) = ActiveGuard::enter(&self.ctx.active);
        self.active_slot = Some(guard);
        if active >= max {
            self.end_with_error(
                ErrorCode::SessionRejected,
                format!("replica is at capacity ({max} sessions); try again later"),
                SessionState::Rejected,
                close_code::TRY_AGAIN_LATER,
                "at capacity",
            )
            .await;
            return None;
        }
        if let Some(message) = self.screen_opening(&settings) {
            self.end_with_error(
                ErrorCode::PromptBlocked,
                message,
                SessionState::Rejected,
                close_code::POLICY,
                "Prompt blocked",
            )
            .await;
            return None;
        }
        if let Some(value) = &settings.initial_image {
            match self.decode_image(value).await {
                Ok(image) => self.image = image,
                Err(message) => {
                    self.end_with_error(
                        ErrorCode::InvalidMessage,
                        message,
                        SessionState::Rejected,
                        close_code::UNSUPPORTED,
                        "Invalid initial image",
                    )
                    .await;
                    return None;
                }
            }
        }
        let buffered = self.bind_worker(stream).await?;
        self.policy.start_session(settings);
        if let Flow::End = self.advance().await {
            return None;
        }
        Some(buffered)
    }

    /// The safety filter's verdict on the opening frame's prompts: the `error` message for
    /// the first one it blocks.
    pub(super) fn screen_opening(&self, settings: &ProjectSettings) -> Option<String> {
        let prompts = &self.ctx.prompts;
        if let Some(n) = settings
            .curated_prompts
            .iter()
            .position(|p| prompts.blocks(p, Stage::Init))
        {
            return Some(format!(
                "Prompt safety filter blocked initial prompt {}. Change it and start again.",
                n + 1
            ));
        }
        let rollout = &settings.initial_rollout_prompt;
        (!rollout.is_empty() && prompts.blocks(rollout, Stage::Init)).then(|| {
            "Prompt safety filter blocked the initial rollout prompt. Change it and start again."
                .to_string()
        })
    }

    /// The opening frame, or Dreamverse's defaults when none arrives in time; `None` when
    /// the session ended.
    async fn read_opening(&mut self, stream: &mut ClientStream) -> Option<ProjectSettings> {
        let wait = Duration::from_secs(self.ctx.config.streaming.init_timeout_seconds);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    tracing::info!(session = %self.id, ?wait, "no opening frame; defaults");
                    return Some(ProjectSettings::default());
                }
                Ok(Some(Err(e))) if crate::session::event_loop::is_too_big(&e) => {
                    self.too_big().await;
                    return None;
                }
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {
                    self.become_(SessionState::Complete);
                    return None;
                }
                Ok(Some(Ok(msg))) => msg,
            };
            let frame = match msg {
                Message::Text(text) => parse_frame(text.as_str()),
                Message::Binary(_) => Err(FrameError::Binary),
                _ => continue,
            };
            match frame {
                Ok(fields) => {
                    let mut logged = fields.clone();
                    logged.remove("initial_image");
                    self.log.event("init", Value::Object(logged));
                    return Some(ProjectSettings::from_init_frame(&fields));
                }
                Err(e) => {
                    self.invalid_frame(e, SessionState::Rejected).await;
                    return None;
                }
            }
        }
    }

    /// Checks and decodes an `initial_image` value (off the async runtime); `Ok(None)` for
    /// none. The error is the message for the client.
    pub(super) async fn decode_image(
        &self,
        value: &Value,
    ) -> Result<Option<Arc<initial_image::DecodedImage>>, String> {
        let Some(image) = parse_initial_image(value)? else {
            return Ok(None);
        };
        let streaming = &self.ctx.config.streaming;
        let max_bytes = MAX_INITIAL_IMAGE_BYTES.min(streaming.max_init_image_bytes);
        let max_pixels = streaming.limits.max_image_pixels;
        let input = InitialImage {
            mime: image.mime,
            name: image.name,
            data: image.base64,
        };
        let decoded = tokio::task::spawn_blocking(move || {
            initial_image::decode(&input, max_bytes, max_pixels)
        })
        .await
        .map_err(|e| format!("initial_image could not be decoded: {e}"))?;
        match decoded {
            Ok(image) => {
                tracing::info!(session = %self.id, width = image.width, height = image.height, "initial image accepted");
                Ok(Some(Arc::new(image)))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Queues for a worker (reporting positions), starts the pipeline on it and sends
    /// `gpu_assigned`. Client messages that arrive meanwhile are returned.
    async fn bind_worker(&mut self, stream: &mut ClientStream) -> Option<Vec<Message>> {
        self.become_(SessionState::Queued);
        let total_gpus = self.ctx.pool.status().total_gpus;
        let out = self.out.clone();
        let mut on_queued = move |p: QueuePosition| {
            let queued = ServerMessage::QueueStatus {
                position: p.position,
                total_gpus,
                available_gpus: 0,
            };
            let _ = out.try_send(Outgoing::Text(queued.to_json()));
        };
        let (lease, buffered) =
            match wait_for_worker(&self.ctx, stream, &mut on_queued, MAX_BUFFERED).await {
                Waited::Lease(lease, buffered) => (lease, buffered),
                Waited::Draining => {
                    self.refuse_draining().await;
                    return None;
                }
                Waited::ClientGone => {
                    self.become_(SessionState::Complete);
                    return None;
                }
            };
        let lease = match lease {
            Ok(lease) => lease,
            Err(e) => {
                self.end_with_error(
                    ErrorCode::GpuUnavailable,
                    e.to_string(),
                    SessionState::Rejected,
                    close_code::TRY_AGAIN_LATER,
                    "no worker available",
                )
                .await;
                return None;
            }
        };
        self.become_(SessionState::GpuBinding);
        let encoder = encoder_settings(&self.ctx.config.media, lease.format());
        let gpu_id = lease.gpu_id();
        let config = self.ctx.config.clone();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (media_tx, media_rx) = mpsc::channel(config.streaming.send_queue_messages);
        self.events = Some(events_rx);
        self.media = Some(media_rx);
        self.pipeline = Some(lease.start_pipeline(
            None,
            encoder,
            self.id.clone(),
            None,
            PipelineOutputs {
                out: media_tx,
                events: events_tx,
                started: Instant::now(),
            },
        ));
        self.become_(SessionState::Active);
        // The lifetime counts from here, within the replica's longest session.
        let now = Instant::now();
        let longest = self.accepted + Duration::from_secs(config.streaming.max_session_seconds);
        let lifetime = Duration::from_secs(config.dreamverse.session_lifetime_seconds);
        self.end_of_life = (now + lifetime).min(longest);
        self.lifetime_seconds = self.end_of_life.saturating_duration_since(now).as_secs();
        self.send_message(&ServerMessage::GpuAssigned {
            gpu_id,
            session_timeout: self.lifetime_seconds,
        })
        .await;
        Some(buffered)
    }

    /// Refuses a session the draining replica will not serve: close 1001.
    async fn refuse_draining(&mut self) -> Flow {
        self.end_with_error(
            ErrorCode::SessionRejected,
            "replica is shutting down; connect again to reach another replica",
            SessionState::Rejected,
            close_code::GOING_AWAY,
            "draining",
        )
        .await
    }

    /// Ends the session over a frame that is not a JSON object: Dreamverse's reader stops
    /// there. Close 1003.
    pub(super) async fn invalid_frame(&mut self, e: FrameError, end: SessionState) -> Flow {
        self.end_with_error(
            ErrorCode::InvalidMessage,
            e.to_string(),
            end,
            close_code::UNSUPPORTED,
            "Invalid message",
        )
        .await
    }
}
