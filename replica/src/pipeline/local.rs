//! The pipeline's two threads in this process, started for one session.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};

use framecast_common::protocol::ContinuationState;

use super::generation::{GenerationJob, generation_loop};
use super::media::{MediaJob, media_loop};
use super::{PipelineOutputs, SegmentJob, SegmentPipeline};
use crate::config::BroadcastSettings;
use crate::generate::Generator;
use crate::media::EncoderSettings;

/// Jobs the session may queue ahead of the generation thread: the next segment and a
/// snapshot request, with room to spare.
const QUEUED_JOBS: usize = 4;

/// A session's generation and media threads in this process.
#[derive(Debug)]
pub struct LocalPipeline {
    jobs: SyncSender<GenerationJob>,
    cancel: Arc<AtomicBool>,
}

impl LocalPipeline {
    /// Starts both threads. The generation thread owns `generator` until it stops, so
    /// whatever `G` gives back on drop (a pool's lease) goes back only once no segment is
    /// being generated any more. `stream_id` is the session id: it names the fMP4 stream, and
    /// the blobs the session exports are stored under its
    /// [`export_owner`](crate::store::export_owner).
    pub fn start<G>(
        generator: G,
        initial_state: Option<ContinuationState>,
        encoder: EncoderSettings,
        stream_id: String,
        broadcast: Option<BroadcastSettings>,
        outputs: PipelineOutputs,
    ) -> Self
    where
        G: AsMut<dyn Generator> + Send + 'static,
    {
        let cancel = Arc::new(AtomicBool::new(false));
        let (jobs_tx, jobs_rx) = sync_channel::<GenerationJob>(QUEUED_JOBS);
        let (media_tx, media_rx) = sync_channel::<MediaJob>(1);
        {
            let (cancel, outputs) = (cancel.clone(), outputs.clone());
            let session_id = stream_id.clone();
            std::thread::Builder::new()
                .name("fc-generate".into())
                .spawn(move || {
                    let mut generator = generator;
                    generation_loop(
                        generator.as_mut(),
                        initial_state,
                        &session_id,
                        jobs_rx,
                        media_tx,
                        &cancel,
                        &outputs,
                    );
                    drop(generator);
                    tracing::debug!("generation thread done; generator released");
                })
                .expect("spawn generation thread");
        }
        {
            let cancel = cancel.clone();
            std::thread::Builder::new()
                .name("fc-media".into())
                .spawn(move || {
                    media_loop(encoder, stream_id, broadcast, media_rx, &cancel, &outputs)
                })
                .expect("spawn media thread");
        }
        Self {
            jobs: jobs_tx,
            cancel,
        }
    }
}

impl SegmentPipeline for LocalPipeline {
    fn submit(&self, job: SegmentJob) -> bool {
        self.jobs.try_send(GenerationJob::Segment(job)).is_ok()
    }

    fn export(&self) -> bool {
        self.jobs.try_send(GenerationJob::Export).is_ok()
    }

    fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }
}

impl Drop for LocalPipeline {
    fn drop(&mut self) {
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::SegmentRequest;
    use crate::pipeline::{PipelineEvent, encoder_settings};

    fn job(segment_idx: u32, fresh_stream: bool) -> SegmentJob {
        SegmentJob {
            request: SegmentRequest {
                segment_idx,
                prompt: "p".into(),
                negative_prompt: None,
                seed: 1,
                num_inference_steps: 1,
                guidance_scale: 1.0,
                fresh_stream,
                checkpoint_max_bytes: None,
                initial_image: None,
            },
            scheduled_at: std::time::Instant::now(),
        }
    }

    #[test]
    fn a_fresh_stream_drops_the_carried_state() {
        crate::media::elements::init().unwrap();
        let config = crate::config::ReplicaConfig::default();
        let blobs =
            std::sync::Arc::new(crate::store::memory::MemoryBlobStore::from_config(&config));
        let generator = crate::generate::build(&config.generator, blobs).unwrap();
        let encoder = encoder_settings(&config.media, generator.format());
        let (out, mut out_rx) = tokio::sync::mpsc::channel(10_000);
        let (events, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
        let pipeline = LocalPipeline::start(
            generator,
            None,
            encoder,
            "fresh".into(),
            None,
            PipelineOutputs {
                out,
                events,
                started: std::time::Instant::now(),
            },
        );
        for (idx, fresh) in [(0, false), (1, false), (2, true)] {
            assert!(pipeline.submit(job(idx, fresh)));
        }
        let mut frames_done = Vec::new();
        while frames_done.len() < 3 {
            while out_rx.try_recv().is_ok() {}
            match events_rx.try_recv() {
                Ok(PipelineEvent::Generated { next_state, .. }) => {
                    frames_done.push(next_state.payload["frames_done"].as_u64().unwrap());
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        let per_segment = frames_done[0];
        assert!(per_segment > 0);
        // Continued, continued again, then started over.
        assert_eq!(frames_done, [per_segment, 2 * per_segment, per_segment]);
    }
}
