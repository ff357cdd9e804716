//! Workers, and the FIFO queue sessions wait in for one.
//!
//! [`WorkerPool`] is the seam between a session and where generation runs: the in-process
//! pool ([`in_process::InProcessPool`]) holds generators on this process's threads; the
//! subprocess pool ([`subprocess::SubprocessPool`]) holds worker processes, one per device,
//! that generate and encode themselves and send back fMP4. Either way a session gets a
//! [`WorkerLease`], starts its [`SegmentPipeline`] from it, and drives that; the worker goes
//! back to the pool once the pipeline has stopped (on every kind of ending).

pub mod in_process;
pub mod ipc;
mod queue;
pub mod subprocess;

use std::time::Duration;

use async_trait::async_trait;
use framecast_common::protocol::ContinuationState;

use crate::config::BroadcastSettings;
use crate::generate::{GenerateError, Generator, StreamFormat};
use crate::media::EncoderSettings;
use crate::pipeline::{LocalPipeline, PipelineOutputs, SegmentPipeline};
pub use crate::status::{PoolStatus, WorkerStatus};
use subprocess::{RemotePipeline, RemoteWorker};

/// Where a waiting session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePosition {
    /// 1-based place in the queue.
    pub position: u32,
    /// Sessions waiting in all.
    pub queue_depth: u32,
}

/// Why no worker was granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// No worker became free within the acquire timeout.
    #[error("no worker became free within {0:?}")]
    Timeout(Duration),
    /// No worker is ready (warmup failed or still running).
    #[error("no worker is ready")]
    NoneReady,
}

/// Where a worker's generation runs.
pub enum Worker {
    /// A generator on this process's threads.
    Local(Box<dyn Generator>),
    /// A child process that generates and encodes; only fMP4 and control messages come back.
    Remote(RemoteWorker),
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Worker::Local(g) => f.debug_tuple("Local").field(&g.format()).finish(),
            Worker::Remote(r) => f.debug_tuple("Remote").field(r).finish(),
        }
    }
}

impl Worker {
    fn format(&self) -> StreamFormat {
        match self {
            Worker::Local(g) => g.format(),
            Worker::Remote(r) => r.format(),
        }
    }
}

/// Gives a leased worker back to its pool.
type Release = Box<dyn FnOnce(Worker) + Send>;

/// A worker granted to one session; dropping it returns the worker to the pool.
pub struct WorkerLease {
    gpu_id: u32,
    worker: Option<Worker>,
    release: Option<Release>,
}

impl std::fmt::Debug for WorkerLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLease")
            .field("gpu_id", &self.gpu_id)
            .finish_non_exhaustive()
    }
}

impl WorkerLease {
    /// A lease on `worker` that calls `release` with it when dropped.
    pub fn new(gpu_id: u32, worker: Worker, release: impl FnOnce(Worker) + Send + 'static) -> Self {
        Self {
            gpu_id,
            worker: Some(worker),
            release: Some(Box::new(release)),
        }
    }

    /// The worker's device index (reported to the client as `gpu_id`).
    pub fn gpu_id(&self) -> u32 {
        self.gpu_id
    }

    /// The worker, for this session only.
    pub fn worker(&mut self) -> &mut Worker {
        self.worker.as_mut().expect("present until drop")
    }

    /// Geometry and audio format of what the worker generates.
    pub fn format(&self) -> StreamFormat {
        self.worker.as_ref().expect("present until drop").format()
    }

    /// Checks a client's continuation state against the worker's generator (in the child
    /// process for a remote worker).
    pub async fn validate_state(&mut self, state: &ContinuationState) -> Result<(), GenerateError> {
        // Nothing borrowed from the lease lives across the await (the lease is not `Sync`).
        let remote = match self.worker() {
            Worker::Local(g) => return g.validate_state(state),
            Worker::Remote(r) => r.clone(),
        };
        remote.validate_state(state).await
    }

    /// Starts the session's pipeline on this worker: its threads in this process for a local
    /// worker (the lease moves into the generation thread), in the worker's process for a
    /// remote one (which encodes with its own copy of the same settings).
    pub fn start_pipeline(
        mut self,
        initial_state: Option<ContinuationState>,
        encoder: EncoderSettings,
        stream_id: String,
        broadcast: Option<BroadcastSettings>,
        outputs: PipelineOutputs,
    ) -> Box<dyn SegmentPipeline> {
        match self.worker() {
            Worker::Remote(remote) => {
                let conn = remote.connection();
                Box::new(RemotePipeline::start(
                    self,
                    conn,
                    initial_state,
                    stream_id,
                    broadcast.is_some(),
                    outputs,
                ))
            }
            Worker::Local(_) => Box::new(LocalPipeline::start(
                LocalGenerator(self),
                initial_state,
                encoder,
                stream_id,
                broadcast,
                outputs,
            )),
        }
    }

    /// The in-process generator; `None` for a remote worker.
    pub fn generator(&mut self) -> Option<&mut dyn Generator> {
        match self.worker() {
            Worker::Local(g) => Some(g.as_mut()),
            Worker::Remote(_) => None,
        }
    }
}

/// A lease on a local worker, lent to a pipeline's generation thread as its generator.
struct LocalGenerator(WorkerLease);

impl AsMut<dyn Generator> for LocalGenerator {
    fn as_mut(&mut self) -> &mut (dyn Generator + 'static) {
        match self.0.worker() {
            Worker::Local(g) => g.as_mut(),
            Worker::Remote(_) => unreachable!("only local workers get a LocalGenerator"),
        }
    }
}

impl Drop for WorkerLease {
    fn drop(&mut self) {
        if let (Some(worker), Some(release)) = (self.worker.take(), self.release.take()) {
            release(worker);
        }
    }
}

/// Hands workers to sessions, first come first served.
#[async_trait]
pub trait WorkerPool: Send + Sync {
    /// Waits up to `timeout` for a worker, calling `on_queued` whenever this session's place
    /// in the queue changes (not at all when a worker is free at once).
    async fn acquire(
        &self,
        timeout: Duration,
        on_queued: &mut (dyn FnMut(QueuePosition) + Send),
    ) -> Result<WorkerLease, PoolError>;

    /// A snapshot for `/status` and metrics.
    fn status(&self) -> PoolStatus;

    /// Whether at least one worker is warm (drives `/readyz`).
    fn is_ready(&self) -> bool {
        self.status().gpu_status.values().any(|w| w.ready)
    }
}
