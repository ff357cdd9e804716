//! Admission: the opening `session_init_v2` (within the init timeout), the stream mode, the
//! replica's session capacity and the optional initial image.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use framecast_common::protocol::{ClientMessage, ErrorCode, ProtocolError, parse_client_message};
use futures_util::StreamExt;

use super::controller::{ClientStream, Flow, Session, error};
use super::{SessionState, close_code, initial_image, limits};
use crate::prompt::Stage;

/// Counts a session as active for as long as it lives.
pub(super) struct ActiveGuard(Arc<AtomicU32>);

impl ActiveGuard {
    /// Counts one more live session in `active`; returns how many there were before.
    pub(super) fn enter(active: &Arc<AtomicU32>) -> (u32, Self) {
        let before = active.fetch_add(1, Ordering::AcqRel);
        (before, Self(active.clone()))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Session {
    /// Waits for a valid `session_init_v2` and checks capacity; `Flow::End` when the session
    /// was refused (with an error and a close frame) or the client left.
    /// The socket then lingers for the client's close (`writer::finish`), after the session
    /// and its capacity slot are gone.
    pub(super) async fn admit(&mut self, stream: &mut ClientStream) -> Flow {
        let init_timeout = Duration::from_secs(self.ctx.config.streaming.init_timeout_seconds);
        let first = match tokio::time::timeout(init_timeout, stream.next()).await {
            Err(_) => {
                let refusal = error(
                    ErrorCode::SessionRejected,
                    "no session_init_v2 within the init timeout",
                    true,
                    Some("init_timeout".into()),
                );
                return self
                    .end_with(
                        [refusal],
                        SessionState::Timeout,
                        close_code::NORMAL,
                        "init timeout",
                    )
                    .await;
            }
            Ok(Some(Err(e))) if super::event_loop::is_too_big(&e) => {
                // Like any later message over the limit: refused with 1009, not dropped.
                let limit = self.ctx.config.streaming.max_init_frame_bytes();
                let refusal = error(
                    ErrorCode::SessionRejected,
                    format!("opening message larger than {limit} bytes"),
                    false,
                    Some("frame_too_large".into()),
                );
                return self
                    .end_with(
                        [refusal],
                        SessionState::Rejected,
                        close_code::TOO_BIG,
                        "message too big",
                    )
                    .await;
            }
            Ok(None) | Ok(Some(Err(_))) => {
                self.become_(SessionState::Complete);
                return Flow::End;
            }
            Ok(Some(Ok(m))) => m,
        };
        let init = match &first {
            Message::Text(t) => parse_client_message(t.as_str()),
            Message::Close(_) => {
                self.become_(SessionState::Complete);
                return Flow::End;
            }
            _ => Err(ProtocolError::MissingType),
        };
        let mut init = match init {
            Ok(ClientMessage::SessionInitV2(init)) => init,
            Ok(_) | Err(_) => {
                let detail = match init {
                    Err(e) => e.to_string(),
                    Ok(_) => "the first message must be session_init_v2".into(),
                };
                let refusal = error(
                    ErrorCode::SessionRejected,
                    detail,
                    false,
                    Some("bad_first_frame".into()),
                );
                return self
                    .end_with(
                        [refusal],
                        SessionState::Rejected,
                        close_code::UNSUPPORTED,
                        "expected session_init_v2",
                    )
                    .await;
            }
        };
        if let Some(mode) = &init.stream_mode
            && mode != "av_fmp4"
        {
            let refusal = error(
                ErrorCode::SessionRejected,
                format!("stream_mode `{mode}` is not supported (only av_fmp4)"),
                false,
                Some("field:stream_mode".into()),
            );
            return self
                .end_with(
                    [refusal],
                    SessionState::Rejected,
                    close_code::UNSUPPORTED,
                    "unsupported stream_mode",
                )
                .await;
        }
        // Checked once the opening frame is read: closing with it unread would reset the
        // connection and lose the refusal.
        if self.ctx.drain.is_draining() {
            return self.refuse_draining().await;
        }
        let max = self.ctx.config.streaming.max_sessions;
        let (active, guard) = ActiveGuard::enter(&self.ctx.active);
        self.active = Some(guard);
        if active >= max {
            let refusal = error(
                ErrorCode::SessionRejected,
                format!("replica is at capacity ({max} sessions)"),
                true,
                Some("capacity".into()),
            );
            return self
                .end_with(
                    [refusal],
                    SessionState::Rejected,
                    close_code::TRY_AGAIN_LATER,
                    "at capacity",
                )
                .await;
        }
        if let Some(n) = init
            .curated_prompts
            .iter()
            .position(|p| self.ctx.prompts.blocks(p, Stage::Init))
        {
            let refusal = error(
                ErrorCode::PromptBlocked,
                format!("the safety filter blocked curated prompt {}", n + 1),
                false,
                Some("safety_filter".into()),
            );
            return self
                .end_with(
                    [refusal],
                    SessionState::Rejected,
                    close_code::POLICY,
                    "Prompt blocked",
                )
                .await;
        }
        if init.single_clip_mode {
            self.schedule.limit(1);
        }
        let limits = &self.ctx.config.streaming.limits;
        if let Err(refusal) =
            limits::check_seed_prompts("curated_prompts", &init.curated_prompts, limits)
        {
            // The session goes on without the list.
            init.curated_prompts.clear();
            self.invalid(refusal.message, refusal.reason).await;
        }
        if let Some(image) = init.initial_image.clone() {
            let max_bytes = self.ctx.config.streaming.max_init_image_bytes;
            let max_pixels = limits.max_image_pixels;
            // Decoding is CPU work of up to a second: not on the async runtime's threads.
            let decoded = tokio::task::spawn_blocking(move || {
                initial_image::decode(&image, max_bytes, max_pixels)
            })
            .await
            .unwrap_or_else(|e| {
                Err(initial_image::ImageError::Undecodable {
                    mime: "image".into(),
                    reason: format!("decoder panicked: {e}"),
                })
            });
            match decoded {
                Ok(decoded) => {
                    tracing::info!(session = %self.id, width = decoded.width, height = decoded.height, "initial image accepted");
                    self.initial_image = Some(Arc::new(decoded));
                }
                // The session goes on without the image.
                Err(e) => self.invalid(e.to_string(), e.reason()).await,
            }
        }
        self.init = init;
        self.last_activity = Instant::now();
        Flow::Continue
    }

    /// Refuses a session the draining replica will not serve: retryable, close 1001.
    pub(super) async fn refuse_draining(&mut self) -> Flow {
        let refusal = error(
            ErrorCode::SessionRejected,
            "replica is shutting down; connect again to reach another replica",
            true,
            Some("draining".into()),
        );
        self.end_with(
            [refusal],
            SessionState::Rejected,
            close_code::GOING_AWAY,
            "draining",
        )
        .await
    }
}
