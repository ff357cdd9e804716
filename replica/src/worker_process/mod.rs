//! The worker process (`framecast-replica worker`): loads one generator, then runs the same
//! generation and media threads as an in-process worker for each session the server hands
//! it, relaying fMP4 chunks, control messages, events and metrics over its socket (stdin).
//!
//! It keeps nothing the server cannot rebuild: continuation states go to the server's blob
//! store through [`RemoteBlobStore`], so a restarted worker continues any stream, and its
//! metrics go to the server's registry through [`ForwardingRecorder`].
//!
//! This is the top of the worker process as `server` is the top of the replica process: it
//! uses the pool (an in-process pool of its one generator) and the pipeline below it.

mod blob_store;
mod metrics_forwarder;

pub use blob_store::RemoteBlobStore;
pub use metrics_forwarder::ForwardingRecorder;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::config::{DeviceKind, ReplicaConfig};
use crate::generate::{self, RgbImage};
use crate::pipeline::{Outgoing, PipelineEvent, PipelineOutputs, SegmentJob, encoder_settings};
use crate::pool::WorkerPool;
use crate::pool::in_process::{self, InProcessPool};
use crate::pool::ipc::{Frame, FromWorker, ToWorker, read_frame, write_frame};
use crate::store::BlobStore;
use blob_store::BlobAnswer;

/// How long a session waits for the generator (its previous session may still be stopping).
const LEASE_TIMEOUT: Duration = Duration::from_secs(600);

/// Control frames for the server (events, blob requests, metrics), sent ahead of media.
type ControlSink = mpsc::UnboundedSender<Frame<FromWorker>>;

/// Runs the worker until the server closes the socket. `device` overrides
/// `generator.device` (the server passes each worker its own).
pub fn run(config: ReplicaConfig, index: usize, device: DeviceKind) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, index, device))
}

async fn serve(config: ReplicaConfig, index: usize, device: DeviceKind) -> anyhow::Result<()> {
    let socket = std::io::stdin().as_fd().try_clone_to_owned()?;
    let socket = std::os::unix::net::UnixStream::from(socket);
    socket.set_nonblocking(true)?;
    let (mut read, mut write) = tokio::net::UnixStream::from_std(socket)?.into_split();

    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let blobs = Arc::new(RemoteBlobStore::new(control_tx.clone()));
    let mut settings = config.generator.clone();
    settings.device = device;
    let built = {
        let blobs: Arc<dyn BlobStore> = blobs.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            crate::media::elements::init()?;
            crate::media::elements::require(&crate::media::elements::REQUIRED_VIDEO_ELEMENTS)?;
            let label = crate::device::probe(settings.device)?.label();
            Ok((generate::build(&settings, blobs)?, label))
        })
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("loading panicked: {e}")))
    };
    let (generator, label) = match built {
        Ok(built) => built,
        Err(e) => {
            let error = format!("{e:#}");
            let _ = write_frame(&mut write, &Frame::new(FromWorker::BuildFailed { error })).await;
            return Err(e);
        }
    };
    let format = generator.format();
    write_frame(
        &mut write,
        &Frame::new(FromWorker::Hello {
            format,
            device: label.clone(),
        }),
    )
    .await?;
    tracing::info!(worker = index, device = %label, "worker loaded");

    // Control frames (events, blob requests, metrics) overtake media; media is bounded so a
    // slow client slows generation down instead of filling memory.
    let (media_tx, media_rx) = mpsc::channel(16);
    tokio::spawn(write_loop(write, control_rx, media_rx));
    let _ = metrics::set_global_recorder(ForwardingRecorder::new(control_tx.clone()));

    let pool = InProcessPool::new(vec![generator], false);
    let worker = WorkerSessions {
        env: SessionEnv {
            pool,
            config: Arc::new(config),
            format,
            control: control_tx,
            media: media_tx,
        },
        sessions: Mutex::default(),
    };
    loop {
        let frame = match read_frame::<ToWorker>(&mut read).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "server socket failed");
                break;
            }
        };
        worker.handle(frame, &blobs);
    }
    tracing::info!(worker = index, "server closed the socket; worker exits");
    exit_now()
}

/// Ends the worker at once, whatever its generation and media threads are doing.
///
/// The server closing the socket (it stopped, or was killed) leaves nothing for the worker
/// to finish: continuation states live in the server's blob store and no client can get its
/// media. A normal exit would run libtorch's and GLib's destructors while those threads are
/// still inside them (GLib aborts when that happens, see `media::elements::init`); `_exit`
/// skips them.
fn exit_now() -> ! {
    #[allow(unsafe_code)]
    // SAFETY: `_exit` takes no pointers and is async-signal-safe; it cannot be misused.
    unsafe {
        libc::_exit(0)
    }
}

async fn write_loop(
    mut write: OwnedWriteHalf,
    mut control: mpsc::UnboundedReceiver<Frame<FromWorker>>,
    mut media: mpsc::Receiver<Frame<FromWorker>>,
) {
    loop {
        let frame = tokio::select! {
            biased;
            Some(frame) = control.recv() => frame,
            Some(frame) = media.recv() => frame,
            else => return,
        };
        if write_frame(&mut write, &frame).await.is_err() {
            return;
        }
    }
}

/// Per-session commands, in the order the server sent them.
enum Command {
    Submit(SegmentJob),
    Export,
    Cancel,
}

struct WorkerSessions {
    env: SessionEnv,
    sessions: Mutex<HashMap<u64, mpsc::UnboundedSender<Command>>>,
}

impl WorkerSessions {
    fn handle(&self, Frame { header, body }: Frame<ToWorker>, blobs: &RemoteBlobStore) {
        match header {
            ToWorker::Warmup { request } => {
                let (pool, control) = (self.env.pool.clone(), self.env.control.clone());
                tokio::spawn(async move {
                    let result = match pool.acquire(LEASE_TIMEOUT, &mut |_| {}).await {
                        Ok(mut lease) => tokio::task::spawn_blocking(move || {
                            let generator = lease.generator().expect("a local worker");
                            in_process::warm_up(generator, &request).map_err(|e| e.to_string())
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("warmup panicked: {e}"))),
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = control.send(Frame::new(FromWorker::WarmedUp { result }));
                });
            }
            ToWorker::Validate { call, state } => {
                let (pool, control) = (self.env.pool.clone(), self.env.control.clone());
                tokio::spawn(async move {
                    let result = match pool.acquire(LEASE_TIMEOUT, &mut |_| {}).await {
                        Ok(mut lease) => lease.validate_state(&state).await,
                        Err(e) => Err(generate::GenerateError::Failed(e.to_string())),
                    };
                    let _ = control.send(Frame::new(FromWorker::Validated { call, result }));
                });
            }
            ToWorker::Start {
                session,
                session_id,
                initial_state,
                broadcast,
            } => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.sessions.lock().insert(session, tx);
                tokio::spawn(run_session(
                    self.env.clone(),
                    session,
                    session_id,
                    initial_state,
                    broadcast,
                    rx,
                ));
            }
            ToWorker::Submit {
                session,
                mut request,
                image_size,
                scheduled_us_ago,
            } => {
                if let Some((width, height)) = image_size {
                    request.initial_image = Some(Arc::new(RgbImage {
                        width,
                        height,
                        rgb: body,
                    }));
                }
                let scheduled_at = Instant::now()
                    .checked_sub(Duration::from_micros(scheduled_us_ago))
                    .unwrap_or_else(Instant::now);
                self.command(
                    session,
                    Command::Submit(SegmentJob {
                        request,
                        scheduled_at,
                    }),
                );
            }
            ToWorker::Export { session } => self.command(session, Command::Export),
            ToWorker::Cancel { session } => {
                self.command(session, Command::Cancel);
                self.sessions.lock().remove(&session);
            }
            ToWorker::BlobStored { call, result } => {
                blobs.answer(call, BlobAnswer::Stored(result));
            }
            ToWorker::BlobLoaded { call, result } => {
                blobs.answer(call, BlobAnswer::Loaded(result, body));
            }
        }
    }

    fn command(&self, session: u64, command: Command) {
        if let Some(tx) = self.sessions.lock().get(&session) {
            let _ = tx.send(command);
        }
    }
}

/// What every session in the worker shares.
#[derive(Clone)]
struct SessionEnv {
    pool: InProcessPool,
    config: Arc<ReplicaConfig>,
    format: generate::StreamFormat,
    control: ControlSink,
    media: mpsc::Sender<Frame<FromWorker>>,
}

/// One session in the worker: waits for the generator, starts the pipeline threads, feeds
/// them the server's commands and relays their output until they stop.
async fn run_session(
    env: SessionEnv,
    session: u64,
    session_id: String,
    initial_state: Option<framecast_common::protocol::ContinuationState>,
    broadcast: bool,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let fail = |message: String| {
        let _ = env.control.send(Frame::new(FromWorker::Event {
            session,
            event: PipelineEvent::Failed {
                code: framecast_common::protocol::ErrorCode::WorkerFailed,
                message,
            },
        }));
    };
    // Jobs can arrive while the previous session still holds the generator; keep them.
    let mut early = Vec::new();
    let mut quiet = |_| {};
    let acquire = env.pool.acquire(LEASE_TIMEOUT, &mut quiet);
    tokio::pin!(acquire);
    let lease = loop {
        tokio::select! {
            lease = &mut acquire => break lease,
            command = commands.recv() => match command {
                Some(command @ (Command::Submit(_) | Command::Export)) => early.push(command),
                Some(Command::Cancel) | None => return,
            },
        }
    };
    let lease = match lease {
        Ok(lease) => lease,
        Err(e) => return fail(format!("worker busy: {e}")),
    };
    let (out_tx, mut out_rx) = mpsc::channel(env.config.streaming.send_queue_messages);
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let pipeline = lease.start_pipeline(
        initial_state,
        encoder_settings(&env.config.media, env.format),
        session_id,
        broadcast.then(|| env.config.broadcast.clone()),
        PipelineOutputs {
            out: out_tx,
            events: events_tx,
            started: Instant::now(),
        },
    );
    let media = env.media.clone();
    let relay_out = tokio::spawn(async move {
        while let Some(out) = out_rx.recv().await {
            let frame = match out {
                Outgoing::Text(text) => Frame::new(FromWorker::Text { session, text }),
                Outgoing::Binary(bytes) => Frame::with_body(FromWorker::Media { session }, bytes),
                Outgoing::Encoded(segment) => Frame::new(FromWorker::Encoded { session, segment }),
                Outgoing::Close(..) | Outgoing::Ping | Outgoing::Written(_) => continue,
            };
            if media.send(frame).await.is_err() {
                return;
            }
        }
    });
    let control = env.control.clone();
    let relay_events = tokio::spawn(async move {
        while let Some(event) = events_rx.recv().await {
            let _ = control.send(Frame::new(FromWorker::Event { session, event }));
        }
    });
    let apply = |command| match command {
        Command::Submit(job) => pipeline.submit(job),
        Command::Export => pipeline.export(),
        Command::Cancel => false,
    };
    let mut go_on = early.into_iter().all(apply);
    while go_on {
        match commands.recv().await {
            Some(command) => go_on = apply(command),
            None => break,
        }
    }
    pipeline.cancel();
    drop(pipeline);
    let _ = relay_out.await;
    let _ = relay_events.await;
}
