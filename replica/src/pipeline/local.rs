//! The pipeline's two threads in this process, started for one session.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};

use framecast_common::protocol::ContinuationState;

use super::generation::{GenerationJob, generation_loop};
use super::media::{MediaJob, media_loop};
use super::{PipelineOutputs, SegmentJob, SegmentPipeline};
use crate::generate::Generator;
use crate::media::EncoderSettings;
use crate::store::export_owner;

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
    /// the blobs the session exports are stored under its [`export_owner`].
    pub fn start<G>(
        generator: G,
        initial_state: Option<ContinuationState>,
        encoder: EncoderSettings,
        stream_id: String,
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
            let owner = export_owner(&stream_id);
            std::thread::Builder::new()
                .name("fc-generate".into())
                .spawn(move || {
                    let mut generator = generator;
                    generation_loop(
                        generator.as_mut(),
                        initial_state,
                        &owner,
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
                .spawn(move || media_loop(encoder, stream_id, media_rx, &cancel, &outputs))
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
