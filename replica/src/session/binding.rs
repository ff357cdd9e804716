//! Worker binding: the session waits in the pool's queue (told its place), checks a
//! restored continuation state against the worker it got, and starts its pipeline there.

use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use framecast_common::protocol::{ErrorCode, ServerMessage};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::controller::{ClientStream, Session, error};
use super::resume::Start;
use super::{Outgoing, SessionContext, SessionState, close_code};
use crate::pipeline::{PipelineOutputs, encoder_settings};
use crate::pool::{PoolError, QueuePosition, WorkerLease};

/// How a session's wait in the pool's queue ended.
pub(super) enum Waited {
    /// The pool answered (a lease, or why none came); with the client messages that arrived
    /// meanwhile, to be handled once active.
    Lease(Result<WorkerLease, PoolError>, Vec<Message>),
    /// The replica started draining.
    Draining,
    /// The client closed the socket or went away.
    ClientGone,
}

/// Waits in `ctx`'s pool queue for a worker (at most `pool.acquire_timeout_seconds`),
/// telling `on_queued` each new place. The client's messages meanwhile are kept, up to
/// `max_buffered`; beyond that the socket is not read until the wait ends. Both protocols'
/// sessions bind through here.
pub(super) async fn wait_for_worker(
    ctx: &SessionContext,
    stream: &mut ClientStream,
    on_queued: &mut (dyn FnMut(QueuePosition) + Send),
    max_buffered: usize,
) -> Waited {
    let timeout = Duration::from_secs(ctx.config.pool.acquire_timeout_seconds);
    let pool = ctx.pool.clone();
    let acquire = pool.acquire(timeout, on_queued);
    tokio::pin!(acquire);
    let mut buffered = Vec::new();
    let drain = ctx.drain.clone();
    loop {
        tokio::select! {
            lease = &mut acquire => return Waited::Lease(lease, buffered),
            _ = drain.started() => return Waited::Draining,
            msg = stream.next(), if buffered.len() < max_buffered => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Waited::ClientGone,
                Some(Ok(m)) => buffered.push(m),
            },
        }
    }
}

impl Session {
    /// Queues for a worker (reporting positions), then starts the pipeline. Client messages
    /// that arrive meanwhile are returned to be handled once active.
    pub(super) async fn bind_worker(&mut self, stream: &mut ClientStream) -> Option<Vec<Message>> {
        self.become_(SessionState::Queued);
        let out = self.out.clone();
        let mut on_queued = move |p: QueuePosition| {
            let _ = out.try_send(Outgoing::text(&ServerMessage::QueueStatus {
                position: p.position,
                queue_depth: p.queue_depth,
            }));
        };
        let (lease, buffered) =
            match wait_for_worker(&self.ctx, stream, &mut on_queued, usize::MAX).await {
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
        let taken_over = self.taken_over.as_ref().map(|t| t.state.clone());
        if let Some(Some(state)) = &taken_over {
            // From this replica's own store (never from the client), so it needs no
            // signature; the worker still checks it fits.
            if let Err(e) = lease.validate_state(state).await {
                let message = format!("the resumed session's checkpoint does not fit: {e}");
                self.end_with(
                    [error(ErrorCode::WorkerFailed, message, false, None)],
                    SessionState::Error,
                    close_code::INTERNAL,
                    "resume failed",
                )
                .await;
                return None;
            }
            initial_state = Some(state.clone());
        } else if let Some(state) = self.init.continuation_state.take() {
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
        // The first segment starts from the resumed checkpoint or the client's state, if any.
        let latest = match &initial_state {
            Some(state) => Start::Checkpoint {
                state: state.clone(),
            },
            None => Start::Fresh,
        };
        self.last_state = initial_state.clone();
        let encoder = encoder_settings(&self.ctx.config.media, format);
        // A broadcast the replica does not allow is refused; the session streams as usual.
        let broadcast = match (self.init.broadcast, self.ctx.config.broadcast.enabled) {
            (true, true) => Some(self.ctx.config.broadcast.clone()),
            (true, false) => {
                self.invalid(
                    "broadcast: this replica does not publish broadcasts (broadcast.enabled is off)",
                    "broadcast:disabled",
                )
                .await;
                None
            }
            (false, _) => None,
        };
        let gpu_id = lease.gpu_id();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        self.events = Some(events_rx);
        self.pipeline = Some(lease.start_pipeline(
            initial_state,
            encoder,
            self.id.clone(),
            broadcast,
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
        self.announce_resume(latest).await;
        self.try_schedule();
        Some(buffered)
    }
}
