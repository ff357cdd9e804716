//! Worker binding: the session waits in the pool's queue (told its place), checks a
//! restored continuation state against the worker it got, and starts its pipeline there.

use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use framecast_common::protocol::{ErrorCode, ServerMessage};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::controller::{ClientStream, Session, error};
use super::{Outgoing, SessionState, close_code};
use crate::pipeline::{PipelineOutputs, encoder_settings};
use crate::pool::QueuePosition;

impl Session {
    /// Queues for a worker (reporting positions), then starts the pipeline. Client messages
    /// that arrive meanwhile are returned to be handled once active.
    pub(super) async fn bind_worker(&mut self, stream: &mut ClientStream) -> Option<Vec<Message>> {
        self.become_(SessionState::Queued);
        let timeout = Duration::from_secs(self.ctx.config.pool.acquire_timeout_seconds);
        let pool = self.ctx.pool.clone();
        let out = self.out.clone();
        let mut on_queued = move |p: QueuePosition| {
            let _ = out.try_send(Outgoing::text(&ServerMessage::QueueStatus {
                position: p.position,
                queue_depth: p.queue_depth,
            }));
        };
        let acquire = pool.acquire(timeout, &mut on_queued);
        tokio::pin!(acquire);
        let mut buffered = Vec::new();
        let drain = self.ctx.drain.clone();
        let lease = loop {
            tokio::select! {
                lease = &mut acquire => break lease,
                _ = drain.started() => {
                    self.refuse_draining().await;
                    return None;
                }
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
                let refusal = error(ErrorCode::GpuUnavailable, e.to_string(), true, None);
                self.end_with(
                    [refusal],
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
            // Only a state this replica signed comes back in (its payload names blobs and
            // live streams); the worker gets it unsigned and needs no secret.
            let checked = match self.ctx.signer.verify(state) {
                Ok(state) => lease
                    .validate_state(&state)
                    .await
                    .map(|()| state)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match checked {
                Ok(state) => initial_state = Some(state),
                Err(e) => {
                    self.invalid(
                        format!("continuation_state: {e}"),
                        "field:continuation_state",
                    )
                    .await;
                }
            }
        }
        self.last_state = initial_state.clone();
        let encoder = encoder_settings(&self.ctx.config.media, format);
        let gpu_id = lease.gpu_id();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        self.events = Some(events_rx);
        self.pipeline = Some(lease.start_pipeline(
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
}
