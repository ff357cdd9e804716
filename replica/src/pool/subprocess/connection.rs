//! The server's end of one worker process's socket: sends commands, routes what comes back
//! to the session it belongs to, answers the worker's blob requests from the server's store,
//! and fails every session on it when the process dies.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use framecast_common::protocol::{ContinuationState, ErrorCode};
use parking_lot::{Mutex, MutexGuard};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::generate::GenerateError;
use crate::pipeline::{Outgoing, PipelineEvent, PipelineOutputs, SegmentJob, SegmentPipeline};
use crate::pool::WorkerLease;
use crate::pool::ipc::{Frame, FromWorker, MetricOp, ToWorker, read_frame, write_frame};
use crate::store::BlobStore;

/// How long a state validation may take in the worker.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages about the worker itself (not about a session), for its supervisor.
pub(super) type LifecycleEvents = mpsc::UnboundedReceiver<FromWorker>;

/// One worker process's socket, as the server sees it.
#[derive(Debug)]
pub struct WorkerConnection {
    index: usize,
    tx: mpsc::UnboundedSender<Frame<ToWorker>>,
    routes: Mutex<Routes>,
    calls: Mutex<HashMap<u64, oneshot::Sender<Result<(), GenerateError>>>>,
    next_id: AtomicU64,
    closed_notify: Notify,
    /// Segments submitted and segments finished (media done or failed), for the watchdog.
    submitted: AtomicU64,
    finished: AtomicU64,
    /// When the worker last sent anything.
    last_heard: Mutex<Instant>,
}

#[derive(Debug, Default)]
struct Routes {
    sessions: HashMap<u64, PipelineOutputs>,
    /// Why the connection closed, once it has.
    closed: Option<String>,
}

impl WorkerConnection {
    /// Starts the reader and writer tasks on `socket`; lifecycle messages go to the returned
    /// receiver.
    pub(super) fn start(
        index: usize,
        socket: tokio::net::UnixStream,
        blobs: Arc<dyn BlobStore>,
    ) -> (Arc<Self>, LifecycleEvents) {
        let (read, write) = socket.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let (life_tx, life_rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Self {
            index,
            tx,
            routes: Mutex::default(),
            calls: Mutex::default(),
            next_id: AtomicU64::new(1),
            closed_notify: Notify::new(),
            submitted: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            last_heard: Mutex::new(Instant::now()),
        });
        tokio::spawn(write_loop(conn.clone(), write, rx));
        tokio::spawn(read_loop(conn.clone(), read, blobs, life_tx));
        (conn, life_rx)
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends a command; false once the connection is closed.
    pub(super) fn send(&self, frame: Frame<ToWorker>) -> bool {
        !self.is_closed() && self.tx.send(frame).is_ok()
    }

    /// Whether the socket has closed (the process died or is being replaced).
    pub fn is_closed(&self) -> bool {
        self.routes().closed.is_some()
    }

    /// Resolves once the socket has closed.
    pub(super) async fn closed(&self) {
        let notified = self.closed_notify.notified();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    /// Fails every session on this connection with `worker_failed` (retryable) and refuses
    /// further commands.
    pub(super) fn close(&self, why: &str) {
        let sessions = {
            let mut routes = self.routes();
            if routes.closed.is_some() {
                return;
            }
            routes.closed = Some(why.to_string());
            std::mem::take(&mut routes.sessions)
        };
        self.closed_notify.notify_waiters();
        for (_, outputs) in sessions {
            let _ = outputs.events.send(PipelineEvent::Failed {
                code: ErrorCode::WorkerFailed,
                message: why.to_string(),
            });
        }
        self.calls.lock().clear();
    }

    /// Resolves once the worker has had segments to make but sent nothing for `timeout`.
    pub(super) async fn stalled(&self, timeout: Duration) -> Duration {
        loop {
            let silent = self.last_heard.lock().elapsed();
            let busy =
                self.submitted.load(Ordering::Acquire) > self.finished.load(Ordering::Acquire);
            if busy && silent >= timeout {
                return silent;
            }
            let next_check = if busy { timeout - silent } else { timeout };
            tokio::time::sleep(next_check.max(Duration::from_millis(50))).await;
        }
    }

    /// Asks the worker whether it accepts `state`.
    pub(super) async fn validate(&self, state: &ContinuationState) -> Result<(), GenerateError> {
        let call = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.calls.lock().insert(call, tx);
        let gone = || GenerateError::Failed(format!("worker process {} went away", self.index));
        if !self.send(Frame::new(ToWorker::Validate {
            call,
            state: state.clone(),
        })) {
            return Err(gone());
        }
        match tokio::time::timeout(VALIDATE_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(GenerateError::Failed(format!(
                "worker process {} did not answer within {VALIDATE_TIMEOUT:?}",
                self.index
            ))),
        }
    }

    fn heard(&self) {
        *self.last_heard.lock() = Instant::now();
    }

    fn route(&self, session: u64) -> Option<PipelineOutputs> {
        self.routes().sessions.get(&session).cloned()
    }
}

/// A session streaming from a worker process; holds the worker's lease until dropped.
#[derive(Debug)]
pub struct RemotePipeline {
    session: u64,
    conn: Arc<WorkerConnection>,
    /// Held (never touched) until the session ends; the mutex only makes the session `Sync`.
    _lease: Mutex<WorkerLease>,
}

impl RemotePipeline {
    /// Registers the session's channels and tells the worker to start its threads.
    pub fn start(
        lease: WorkerLease,
        conn: Arc<WorkerConnection>,
        initial_state: Option<ContinuationState>,
        stream_id: String,
        broadcast: bool,
        outputs: PipelineOutputs,
    ) -> Self {
        let session = conn.next_id();
        let refused = {
            let mut routes = conn.routes();
            match &routes.closed {
                Some(why) => Some(why.clone()),
                None => {
                    routes.sessions.insert(session, outputs.clone());
                    None
                }
            }
        };
        let started = refused.is_none()
            && conn.send(Frame::new(ToWorker::Start {
                session,
                session_id: stream_id,
                initial_state,
                broadcast,
            }));
        if !started {
            let why = refused.unwrap_or_else(|| format!("worker process {} went away", conn.index));
            let _ = outputs.events.send(PipelineEvent::Failed {
                code: ErrorCode::WorkerFailed,
                message: why,
            });
        }
        Self {
            session,
            conn,
            _lease: Mutex::new(lease),
        }
    }
}

/// Commands cross the socket; answers come back through `dispatch` to the session's channels.
impl SegmentPipeline for RemotePipeline {
    fn submit(&self, job: SegmentJob) -> bool {
        let mut request = job.request;
        let image = request.initial_image.take();
        let image_size = image.as_ref().map(|i| (i.width, i.height));
        let body = image.map(|i| i.rgb.clone()).unwrap_or_default();
        if self.conn.submitted.load(Ordering::Acquire) == self.conn.finished.load(Ordering::Acquire)
        {
            // The silence the watchdog measures starts now, not at the last segment.
            self.conn.heard();
        }
        self.conn.submitted.fetch_add(1, Ordering::AcqRel);
        self.conn.send(Frame::with_body(
            ToWorker::Submit {
                session: self.session,
                request,
                image_size,
                scheduled_us_ago: job.scheduled_at.elapsed().as_micros() as u64,
            },
            body,
        ))
    }

    fn export(&self) -> bool {
        self.conn.send(Frame::new(ToWorker::Export {
            session: self.session,
        }))
    }

    fn cancel(&self) {
        self.conn.send(Frame::new(ToWorker::Cancel {
            session: self.session,
        }));
    }
}

impl Drop for RemotePipeline {
    fn drop(&mut self) {
        self.cancel();
        // Whatever the worker still sends for this session is dropped from here on, and its
        // unfinished segments no longer count as work the worker owes.
        self.conn.routes().sessions.remove(&self.session);
        let done = self.conn.submitted.load(Ordering::Acquire);
        self.conn.finished.fetch_max(done, Ordering::AcqRel);
    }
}

async fn write_loop(
    conn: Arc<WorkerConnection>,
    mut write: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Frame<ToWorker>>,
) {
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { return };
                if let Err(e) = write_frame(&mut write, &frame).await {
                    conn.close(&format!("worker process {} socket failed: {e}", conn.index));
                    return;
                }
            }
            _ = conn.closed() => return,
        }
    }
}

async fn read_loop(
    conn: Arc<WorkerConnection>,
    mut read: OwnedReadHalf,
    blobs: Arc<dyn BlobStore>,
    lifecycle: mpsc::UnboundedSender<FromWorker>,
) {
    let why = loop {
        let frame = match read_frame::<FromWorker>(&mut read).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break format!("worker process {} exited", conn.index),
            Err(e) => break format!("worker process {} connection failed: {e}", conn.index),
        };
        dispatch(&conn, frame, &blobs, &lifecycle).await;
    };
    conn.close(&why);
}

async fn dispatch(
    conn: &Arc<WorkerConnection>,
    Frame { header, body }: Frame<FromWorker>,
    blobs: &Arc<dyn BlobStore>,
    lifecycle: &mpsc::UnboundedSender<FromWorker>,
) {
    conn.heard();
    if let FromWorker::Event {
        event: PipelineEvent::MediaDone { .. } | PipelineEvent::Failed { .. },
        ..
    } = &header
    {
        conn.finished.fetch_add(1, Ordering::AcqRel);
    }
    match header {
        FromWorker::Text { session, text } => {
            if let Some(route) = conn.route(session) {
                // Waits while the client's send queue is full: back-pressure reaches the
                // worker through the socket.
                let _ = route.out.send(Outgoing::Text(text)).await;
            }
        }
        FromWorker::Media { session } => {
            if let Some(route) = conn.route(session) {
                let _ = route.out.send(Outgoing::Binary(body)).await;
            }
        }
        FromWorker::Encoded { session, segment } => {
            if let Some(route) = conn.route(session) {
                let _ = route.out.send(Outgoing::Encoded(segment)).await;
            }
        }
        FromWorker::Event { session, event } => {
            if let Some(route) = conn.route(session) {
                let _ = route.events.send(event);
            }
        }
        FromWorker::Validated { call, result } => {
            let waiter = conn.calls.lock().remove(&call);
            if let Some(waiter) = waiter {
                let _ = waiter.send(result);
            }
        }
        // The store may wait on the network (Redis): answered from a blocking thread, so
        // this loop (and the runtime) go on meanwhile; the worker matches answers by call.
        FromWorker::BlobPut { call, owner } => {
            let (conn, blobs) = (conn.clone(), blobs.clone());
            tokio::task::spawn_blocking(move || {
                let result = blobs.put(&owner, body);
                conn.send(Frame::new(ToWorker::BlobStored { call, result }));
            });
        }
        FromWorker::BlobGet { call, id } => {
            let (conn, blobs) = (conn.clone(), blobs.clone());
            tokio::task::spawn_blocking(move || {
                let (result, body) = match blobs.get(&id) {
                    Ok(Some(data)) => (Ok(true), data.as_ref().clone()),
                    Ok(None) => (Ok(false), Vec::new()),
                    Err(e) => (Err(e.to_string()), Vec::new()),
                };
                conn.send(Frame::with_body(
                    ToWorker::BlobLoaded { call, result },
                    body,
                ));
            });
        }
        FromWorker::BlobDropOwner { owner } => blobs.drop_owner(&owner),
        FromWorker::Metric { name, labels, op } => apply_metric(name, labels, op),
        other @ (FromWorker::Hello { .. }
        | FromWorker::BuildFailed { .. }
        | FromWorker::WarmedUp { .. }) => {
            let _ = lifecycle.send(other);
        }
    }
}

/// Applies a worker's metric update to this process's recorder.
fn apply_metric(name: String, labels: Vec<(String, String)>, op: MetricOp) {
    let labels: Vec<metrics::Label> = labels
        .into_iter()
        .map(|(k, v)| metrics::Label::new(k, v))
        .collect();
    match op {
        MetricOp::Increment(n) => metrics::counter!(name, labels).increment(n),
        MetricOp::Absolute(n) => metrics::counter!(name, labels).absolute(n),
        MetricOp::GaugeIncrement(x) => metrics::gauge!(name, labels).increment(x),
        MetricOp::GaugeDecrement(x) => metrics::gauge!(name, labels).decrement(x),
        MetricOp::GaugeSet(x) => metrics::gauge!(name, labels).set(x),
        MetricOp::Record(x) => metrics::histogram!(name, labels).record(x),
    }
}
