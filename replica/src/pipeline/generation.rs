//! The generation thread: turns segment jobs into frames with the session's generator and
//! hands them to the media thread, one segment ahead at most.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use framecast_common::protocol::{ContinuationState, ErrorCode, ServerMessage};

use super::media::MediaJob;
use super::{Outgoing, PipelineEvent, PipelineOutputs, SegmentJob};
use crate::generate::{GenerateError, Generator};
use crate::observability;
use crate::store::export_owner;

/// What the generation thread does next, in order.
#[derive(Debug)]
pub(super) enum GenerationJob {
    Segment(SegmentJob),
    /// Make the newest state portable (between segments, on the thread owning the generator).
    Export,
}

/// `session_id` owns the blobs a checkpoint writes (they go with the session); an export's
/// go to its [`export_owner`], which outlives it.
pub(super) fn generation_loop(
    generator: &mut dyn Generator,
    mut state: Option<ContinuationState>,
    session_id: &str,
    jobs: Receiver<GenerationJob>,
    media: SyncSender<MediaJob>,
    cancel: &AtomicBool,
    outputs: &PipelineOutputs,
) {
    let send = |msg: ServerMessage| outputs.out.blocking_send(Outgoing::text(&msg)).is_ok();
    let export_owner = export_owner(session_id);
    while let Ok(job) = jobs.recv() {
        if cancel.load(Ordering::Acquire) {
            break;
        }
        let job = match job {
            GenerationJob::Segment(job) => job,
            GenerationJob::Export => {
                let exported = state
                    .as_ref()
                    .map(|s| generator.export_state(s, &export_owner));
                let event = match exported {
                    Some(Ok(state)) => PipelineEvent::Exported { state },
                    Some(Err(e)) => PipelineEvent::ExportFailed {
                        message: e.to_string(),
                    },
                    None => PipelineEvent::ExportFailed {
                        message: "no segment generated yet: nothing to snapshot".into(),
                    },
                };
                let _ = outputs.events.send(event);
                continue;
            }
        };
        if job.request.fresh_stream {
            state = None;
        }
        let idx = job.request.segment_idx;
        let total_steps = job.request.num_inference_steps;
        if !send(ServerMessage::Ltx2SegmentStart {
            segment_idx: idx,
            prompt: job.request.prompt.clone(),
            total_steps,
        }) {
            break;
        }
        let started = Instant::now();
        let mut last_step = started;
        // A panic in the model (a bug, or a libtorch error surfacing as one) fails this
        // session like any other generation error instead of silently ending its threads.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            generator.generate(&job.request, state.as_ref(), &mut |p| {
                observability::denoise_step(last_step.elapsed());
                last_step = Instant::now();
                let delivered = send(ServerMessage::StepComplete {
                    segment_idx: idx,
                    step: p.step,
                    total_steps: p.total_steps,
                    stage: "denoise".into(),
                });
                if cancel.load(Ordering::Acquire) || !delivered {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            })
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(GenerateError::Failed(format!("generator panicked: {what}")))
        });
        match result {
            Ok(segment) => {
                observability::segment_generated(started.elapsed());
                state = Some(segment.next_state.clone());
                let checkpoint = job.request.checkpoint_max_bytes.and_then(|max_bytes| {
                    generator
                        .checkpoint_state(&segment.next_state, session_id, max_bytes)
                        .inspect_err(|e| {
                            tracing::warn!(session = session_id, segment = idx, error = %e, "no checkpoint: this segment is no resume point");
                        })
                        .ok()
                });
                let _ = outputs.events.send(PipelineEvent::Generated {
                    segment_idx: idx,
                    next_state: segment.next_state.clone(),
                    checkpoint,
                });
                let job = MediaJob {
                    segment_idx: idx,
                    segment,
                    generation_ms: started.elapsed().as_millis() as u64,
                    scheduled_at: job.scheduled_at,
                };
                // Waits while the media thread is busy with the previous segment.
                if media.send(job).is_err() {
                    break;
                }
            }
            Err(GenerateError::Cancelled) => break,
            Err(e) => {
                let _ = outputs.events.send(PipelineEvent::Failed {
                    code: ErrorCode::WorkerFailed,
                    message: e.to_string(),
                });
                break;
            }
        }
    }
}
