//! `MockReplica`: a test double for a replica server — a real HTTP + WebSocket server on
//! 127.0.0.1:0 whose health, latency and capacity a test switches at will, and which can drop
//! its connections abruptly or die outright.
//!
//! It runs on its own Tokio runtime, so stopping it closes every socket it holds (listener,
//! keep-alive probe connections, tunnels) the way a killed process would, whatever runtime
//! the test itself uses.
//!
//! Endpoints: `/health`, `/healthz` and `/readyz` (200, or 503 when unhealthy), `/status`
//! (FastVideo's pool status with the configured capacity) and `/v1/stream` (and `/ws`), a WebSocket that
//! echoes every text and binary message (the text `whoami` is answered with the replica's
//! name instead).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::watch;

/// A switchable fake replica; see the module docs.
#[derive(Debug)]
pub struct MockReplica {
    name: String,
    addr: SocketAddr,
    state: Arc<MockState>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Disconnects once the server task, and with it the listener, has been dropped.
    listener_closed: std::sync::mpsc::Receiver<()>,
}

#[derive(Debug)]
struct MockState {
    name: String,
    healthy: AtomicBool,
    delay_ms: AtomicU64,
    /// (total, available, queue)
    capacity: Mutex<(u32, u32, u32)>,
    probes: AtomicU64,
    sessions: AtomicU64,
    open: AtomicU64,
    /// Bumped to make every open WebSocket task return without a close frame.
    drop_generation: watch::Sender<u64>,
}

impl MockReplica {
    /// Starts a healthy replica reporting 8 free workers.
    pub fn start(name: &str) -> Self {
        Self::start_at(name, "127.0.0.1:0".parse().expect("an address"))
    }

    /// [`MockReplica::start`] listening on `addr` (any 127.x.y.z address is loopback on
    /// Linux, so several mocks can share one port, like pods behind a headless Service).
    pub fn start_at(name: &str, addr: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name(format!("mock-{name}"))
            .build()
            .expect("mock replica runtime");
        let state = Arc::new(MockState {
            name: name.to_string(),
            healthy: AtomicBool::new(true),
            delay_ms: AtomicU64::new(0),
            capacity: Mutex::new((8, 8, 0)),
            probes: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            open: AtomicU64::new(0),
            drop_generation: watch::channel(0).0,
        });
        let app = Router::new()
            .route("/health", get(health))
            .route("/healthz", get(health))
            .route("/readyz", get(health))
            .route("/status", get(status))
            .route("/v1/stream", get(stream))
            // The Dreamverse door: the same echo, so routing by protocol can be observed.
            .route("/ws", get(stream))
            .with_state(state.clone());
        // Bound here (not with block_on) so tests may start a mock from async code.
        let listener = std::net::TcpListener::bind(addr).expect("bind mock replica");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("mock replica address");
        let (closed_tx, listener_closed) = std::sync::mpsc::channel::<()>();
        runtime.spawn(async move {
            // Declared before the listener, so dropped after it.
            let _closed = closed_tx;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, app).await
        });
        Self {
            name: name.to_string(),
            addr,
            state,
            runtime: Some(runtime),
            listener_closed,
        }
    }

    /// Its base URL, as a router's replica list wants it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its name (what `whoami` answers).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes health endpoints answer 200 (`true`) or 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Delays every health answer and WebSocket handshake by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// What `/status` reports: `total` workers, `available` free ones, `queue` waiting.
    pub fn set_capacity(&self, total: u32, available: u32, queue: u32) {
        *self.state.capacity.lock().unwrap() = (total, available, queue);
    }

    /// Health requests answered so far (any verdict).
    pub fn probes(&self) -> u64 {
        self.state.probes.load(Ordering::SeqCst)
    }

    /// WebSocket sessions accepted so far.
    pub fn sessions(&self) -> u64 {
        self.state.sessions.load(Ordering::SeqCst)
    }

    /// WebSocket sessions open now.
    pub fn open_sessions(&self) -> u64 {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Closes every open WebSocket without a close frame; the server keeps running.
    pub fn drop_connections(&self) {
        self.state.drop_generation.send_modify(|g| *g += 1);
    }

    /// Dies: the listener and every connection close at once, as if the process were killed.
    ///
    /// Returns once the listener is closed: `shutdown_background` drops tasks on the runtime's
    /// own threads, and a connection the kernel accepted before that would be reset after the
    /// connect succeeded — a refused connection is what a killed process leaves behind.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
            // Blocks the caller briefly; allowed in async tests because the server runs on
            // its own runtime. Err(Disconnected) is the signal.
            let _ = self.listener_closed.recv_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for MockReplica {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn delay(state: &MockState) {
    let ms = state.delay_ms.load(Ordering::SeqCst);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

async fn health(State(state): State<Arc<MockState>>) -> Response {
    state.probes.fetch_add(1, Ordering::SeqCst);
    delay(&state).await;
    if state.healthy.load(Ordering::SeqCst) {
        axum::Json(json!({"status": "ok"})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy").into_response()
    }
}

async fn status(State(state): State<Arc<MockState>>) -> Response {
    let (total, available, queue) = *state.capacity.lock().unwrap();
    axum::Json(json!({
        "total_gpus": total,
        "available_gpus": available,
        "queue_size": queue,
        "warmup_enabled": false,
        "warmup_successful_gpus": 0,
        "warmup_failed_gpus": 0,
        "gpu_status": {},
    }))
    .into_response()
}

async fn stream(State(state): State<Arc<MockState>>, ws: WebSocketUpgrade) -> Response {
    delay(&state).await;
    ws.max_message_size(128 << 20)
        .on_upgrade(move |socket| echo(state, socket))
}

async fn echo(state: Arc<MockState>, socket: WebSocket) {
    state.sessions.fetch_add(1, Ordering::SeqCst);
    state.open.fetch_add(1, Ordering::SeqCst);
    let mut dropped = state.drop_generation.subscribe();
    let (mut tx, mut rx) = socket.split();
    loop {
        tokio::select! {
            _ = dropped.changed() => break,
            message = rx.next() => {
                let reply = match message {
                    Some(Ok(Message::Text(t))) if t.as_str() == "whoami" => {
                        Message::Text(state.name.clone().into())
                    }
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m,
                    Some(Ok(Message::Close(frame))) => {
                        let _ = tx.send(Message::Close(frame)).await;
                        break;
                    }
                    Some(Ok(_)) => continue,
                    _ => break,
                };
                if tx.send(reply).await.is_err() {
                    break;
                }
            }
        }
    }
    state.open.fetch_sub(1, Ordering::SeqCst);
}
