//! One child process per worker (`framecast-replica worker`), so a crash in libtorch, CUDA
//! or GStreamer costs one session instead of the whole replica.
//!
//! ```text
//! server ── Unix socket (child's stdin) ──▶ worker process
//!   Start / Submit / Cancel / Validate      generator + encoder threads (crate::pipeline)
//!   ◀── Text / Media (fMP4 bytes) / Event / BlobPut / Metric
//! ```
//!
//! Each worker runs the same generation and media threads as the in-process pool, so only
//! finished fMP4 chunks and control messages cross the socket. Continuation states stay in
//! the server's blob store (the worker asks over the socket), so a restarted or different
//! worker continues any stream. A supervisor task per worker restarts a process that dies:
//! its session gets `worker_failed` (retryable), the slot reports `process_alive: false`
//! and sessions queue for it until the new process is loaded and warm.

mod connection;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use framecast_common::protocol::ContinuationState;
use parking_lot::Mutex;
use tokio::process::Child;

use connection::LifecycleEvents;
pub use connection::{RemotePipeline, WorkerConnection};

use super::queue::{SlotInfo, WorkerQueue};
use super::{PoolError, PoolStatus, QueuePosition, Worker, WorkerLease, WorkerPool};
use crate::config::DeviceKind;
use crate::generate::{GenerateError, SegmentRequest, StreamFormat};
use crate::pool::ipc::{Frame, FromWorker, ToWorker};
use crate::store::BlobStore;

/// A crash this long after start counts as a fresh failure: the backoff starts over.
const STABLE_UPTIME: Duration = Duration::from_secs(60);
/// The longest wait between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How to start a worker process.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The executable (normally this binary, `std::env::current_exe()`).
    pub program: PathBuf,
    /// Arguments before `worker` (e.g. `--config replica.yaml`).
    pub args: Vec<String>,
}

/// Settings of a [`SubprocessPool`].
#[derive(Debug, Clone)]
pub struct SubprocessSettings {
    /// How to start workers.
    pub command: WorkerCommand,
    /// One entry per worker.
    pub devices: Vec<DeviceKind>,
    /// The warmup each (re)started worker runs before serving; `None` serves at once.
    pub warmup: Option<SegmentRequest>,
    /// First wait before restarting a dead worker.
    pub restart_backoff: Duration,
    /// Silence, while segments are owed, after which a worker is killed as hung.
    pub stall_timeout: Duration,
}

/// Why the pool could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The process could not be started.
    #[error("cannot start worker process {index}: {source}")]
    Spawn {
        /// Which worker.
        index: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// The process started but could not load its generator.
    #[error("worker process {index} failed to load: {error}")]
    Load {
        /// Which worker.
        index: usize,
        /// What it reported.
        error: String,
    },
}

/// A worker in another process, as the queue hands it out.
#[derive(Debug, Clone)]
pub struct RemoteWorker {
    format: StreamFormat,
    current: Arc<Mutex<Arc<WorkerConnection>>>,
}

impl RemoteWorker {
    /// What the worker generates.
    pub fn format(&self) -> StreamFormat {
        self.format
    }

    /// The socket of the worker's current process.
    pub fn connection(&self) -> Arc<WorkerConnection> {
        self.current.lock().clone()
    }

    /// Asks the worker process whether it accepts `state`.
    pub async fn validate_state(&self, state: &ContinuationState) -> Result<(), GenerateError> {
        self.connection().validate(state).await
    }
}

/// Worker processes behind the shared FIFO queue.
#[derive(Debug, Clone)]
pub struct SubprocessPool {
    queue: WorkerQueue,
}

/// A live worker process and its socket.
struct Process {
    child: Child,
    conn: Arc<WorkerConnection>,
    lifecycle: LifecycleEvents,
    started: Instant,
}

impl SubprocessPool {
    /// Starts every worker process and waits until each has loaded its generator; a worker
    /// that cannot load fails the whole start (as a bad model directory fails an in-process
    /// replica). Warmups then run in the background; `/readyz` waits for them.
    pub async fn start(
        settings: SubprocessSettings,
        blobs: Arc<dyn BlobStore>,
    ) -> Result<Self, SpawnError> {
        let mut loads = Vec::new();
        for (index, &device) in settings.devices.iter().enumerate() {
            let (command, blobs) = (settings.command.clone(), blobs.clone());
            loads.push(tokio::spawn(async move {
                let mut process = spawn(index, device, &command, blobs)?;
                let format = hello(&mut process)
                    .await
                    .map_err(|error| SpawnError::Load { index, error })?;
                Ok::<_, SpawnError>((process, format))
            }));
        }
        let mut processes = Vec::new();
        for load in loads {
            processes.push(load.await.expect("worker start task panicked")?);
        }
        let mut workers = Vec::new();
        let mut supervisors = Vec::new();
        for (index, (process, (format, device))) in processes.into_iter().enumerate() {
            let current = Arc::new(Mutex::new(process.conn.clone()));
            let info = SlotInfo {
                ready: settings.warmup.is_none(),
                pending: true,
                alive: true,
                pid: process.child.id(),
                device,
                ..SlotInfo::default()
            };
            workers.push((
                Worker::Remote(RemoteWorker {
                    format,
                    current: current.clone(),
                }),
                info,
            ));
            supervisors.push((index, process, current));
        }
        let queue = WorkerQueue::new(workers, settings.warmup.is_some());
        for (index, process, current) in supervisors {
            let supervisor = Supervisor {
                index,
                device: settings.devices[index],
                settings: settings.clone(),
                blobs: blobs.clone(),
                queue: queue.clone(),
                current,
            };
            tokio::spawn(supervisor.run(process));
        }
        Ok(Self { queue })
    }
}

#[async_trait]
impl WorkerPool for SubprocessPool {
    async fn acquire(
        &self,
        timeout: Duration,
        on_queued: &mut (dyn FnMut(QueuePosition) + Send),
    ) -> Result<WorkerLease, PoolError> {
        self.queue.acquire(timeout, on_queued).await
    }

    fn status(&self) -> PoolStatus {
        self.queue.status()
    }
}

/// Starts `framecast-replica worker` for `index` with its socket as the child's stdin.
fn spawn(
    index: usize,
    device: DeviceKind,
    command: &WorkerCommand,
    blobs: Arc<dyn BlobStore>,
) -> Result<Process, SpawnError> {
    let fail = |source| SpawnError::Spawn { index, source };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(fail)?;
    ours.set_nonblocking(true).map_err(fail)?;
    let ours = tokio::net::UnixStream::from_std(ours).map_err(fail)?;
    let mut cmd = tokio::process::Command::new(&command.program);
    cmd.args(&command.args)
        .args(["worker", "--index", &index.to_string()])
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // A worker on `cuda:N` sees only that GPU, as its device 0.
    match device.cuda_index() {
        Some(n) => cmd
            .env("CUDA_VISIBLE_DEVICES", n.to_string())
            .args(["--device", "cuda"]),
        None => cmd.args(["--device", &device.to_string()]),
    };
    let child = cmd.spawn().map_err(fail)?;
    let (conn, lifecycle) = WorkerConnection::start(index, ours, blobs);
    tracing::info!(worker = index, pid = child.id(), %device, "worker process started");
    Ok(Process {
        child,
        conn,
        lifecycle,
        started: Instant::now(),
    })
}

/// Waits for the worker's `hello`: its format and device label; `Err` with its reason when
/// it fails to load or dies.
async fn hello(process: &mut Process) -> Result<(StreamFormat, String), String> {
    let result = tokio::select! {
        msg = process.lifecycle.recv() => lifecycle_result(msg),
        status = process.child.wait() => {
            // It may have explained itself just before exiting.
            match tokio::time::timeout(Duration::from_secs(1), process.lifecycle.recv()).await {
                Ok(msg @ Some(FromWorker::BuildFailed { .. })) => lifecycle_result(msg),
                _ => Err(format!("exited while loading ({})", describe_exit(status))),
            }
        }
    };
    result
}

fn lifecycle_result(msg: Option<FromWorker>) -> Result<(StreamFormat, String), String> {
    match msg {
        Some(FromWorker::Hello { format, device }) => Ok((format, device)),
        Some(FromWorker::BuildFailed { error }) => Err(error),
        Some(other) => Err(format!("sent {other:?} before hello")),
        None => Err("closed its socket while loading".into()),
    }
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// Keeps one worker slot backed by a live, warm process.
struct Supervisor {
    index: usize,
    device: DeviceKind,
    settings: SubprocessSettings,
    blobs: Arc<dyn BlobStore>,
    queue: WorkerQueue,
    current: Arc<Mutex<Arc<WorkerConnection>>>,
}

impl Supervisor {
    async fn run(self, mut process: Process) {
        let mut backoff = self.settings.restart_backoff;
        loop {
            self.warm_up(&mut process).await;
            let status = tokio::select! {
                status = process.child.wait() => status,
                silent = process.conn.stalled(self.settings.stall_timeout) => {
                    let why = format!(
                        "worker process {} stalled: nothing for {:.0} s while generating; restarting it",
                        self.index,
                        silent.as_secs_f64()
                    );
                    tracing::error!(worker = self.index, "{why}");
                    process.conn.close(&why);
                    let _ = process.child.start_kill();
                    process.child.wait().await
                }
                _ = process.conn.closed() => {
                    // The socket broke but the process lives on: replace it.
                    let _ = process.child.start_kill();
                    process.child.wait().await
                }
            };
            let how = describe_exit(status);
            process
                .conn
                .close(&format!("worker process {} exited ({how})", self.index));
            self.queue.update(self.index, |info| {
                info.ready = false;
                info.pending = true;
                info.alive = false;
                info.pid = None;
                info.restarts += 1;
            });
            if process.started.elapsed() >= STABLE_UPTIME {
                backoff = self.settings.restart_backoff;
            }
            tracing::error!(worker = self.index, exit = %how, restart_in = ?backoff, "worker process died");
            process = self.restart(&mut backoff).await;
        }
    }

    /// Starts a replacement, retrying with a growing backoff until one loads.
    async fn restart(&self, backoff: &mut Duration) -> Process {
        loop {
            tokio::time::sleep(*backoff).await;
            *backoff = (*backoff * 2).min(MAX_BACKOFF);
            let mut process = match spawn(
                self.index,
                self.device,
                &self.settings.command,
                self.blobs.clone(),
            ) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(worker = self.index, error = %e, "worker restart failed");
                    continue;
                }
            };
            let pid = process.child.id();
            self.queue.update(self.index, |info| {
                info.alive = true;
                info.pid = pid;
            });
            match hello(&mut process).await {
                Ok((_, device)) => {
                    self.queue.update(self.index, |info| info.device = device);
                    *self.current.lock() = process.conn.clone();
                    return process;
                }
                Err(error) => {
                    tracing::error!(worker = self.index, %error, "restarted worker failed to load");
                    self.queue.update(self.index, |info| {
                        info.alive = false;
                        info.pid = None;
                        info.warmup = Some(Err(error));
                    });
                }
            }
        }
    }

    /// Runs the warmup (if configured) and opens the slot to sessions.
    async fn warm_up(&self, process: &mut Process) {
        let Some(request) = self.settings.warmup.clone() else {
            self.queue.update(self.index, |info| {
                info.ready = true;
                info.pending = false;
            });
            return;
        };
        let started = Instant::now();
        let result = if process.conn.send(Frame::new(ToWorker::Warmup { request })) {
            loop {
                match process.lifecycle.recv().await {
                    Some(FromWorker::WarmedUp { result }) => break result,
                    Some(_) => continue,
                    None => break Err("worker process exited during warmup".into()),
                }
            }
        } else {
            Err("worker process exited before warmup".into())
        };
        match &result {
            Ok(()) => {
                tracing::info!(worker = self.index, elapsed = ?started.elapsed(), "worker warm")
            }
            Err(e) => tracing::error!(worker = self.index, error = %e, "worker warmup failed"),
        }
        self.queue.update(self.index, |info| {
            info.ready = result.is_ok();
            info.pending = false;
            info.warmup = Some(result);
        });
    }
}
