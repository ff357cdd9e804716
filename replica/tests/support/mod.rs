//! What the replica's integration tests share: an in-process replica server on loopback
//! (MockGenerator, the test double, as the model; the real GStreamer encoder), a WebSocket
//! client that records everything the server sent, and a real HTTP server imitating an
//! OpenAI-compatible LLM provider.
//!
//! Each test binary uses part of it.
#![allow(dead_code)]

pub mod classifier;
pub mod fake_llm;
pub mod transcript;
pub mod wan;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use framecast_replica::config::ReplicaConfig;
use framecast_replica::generate;
use framecast_replica::pool::in_process::InProcessPool;
use framecast_replica::prompt::PromptService;
use framecast_replica::server::{self, AppState};
use framecast_replica::session::SessionContext;

/// A replica serving on 127.0.0.1 in this process.
pub struct Server {
    /// `127.0.0.1:port` of the client listener.
    pub addr: std::net::SocketAddr,
    /// `http://127.0.0.1:port` of the admin listener.
    pub admin: String,
    pub pool: Arc<InProcessPool>,
    pub state: AppState,
}

impl Server {
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Waits until the worker is free again, failing with `what` after `limit`.
    pub async fn wait_for_free_worker(&self, limit: Duration, what: &str) {
        use framecast_replica::pool::WorkerPool;
        let since = std::time::Instant::now();
        while self.pool.status().available_gpus == 0 {
            assert!(since.elapsed() < limit, "{what} (after {limit:?})");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The metrics this test process records.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = framecast_common::metrics::standalone_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("the only recorder of this test process");
        handle
    })
}

/// The value of one series (`name{labels}`) as `/metrics` renders it; 0 when absent.
pub fn counter(series: &str) -> f64 {
    metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Small, fast settings: 128x72, 12 frames per segment, 60 ms of mock latency.
pub fn small_config() -> ReplicaConfig {
    let mut c = ReplicaConfig::default();
    c.generator.width = 128;
    c.generator.height = 72;
    c.generator.fps = 24;
    c.generator.frames_per_segment = 12;
    c.generator.num_inference_steps = 3;
    c.generator.mock_latency_ms = 60;
    c.media.fragment_duration_ms = 250;
    c.streaming.max_sessions = 2;
    c.streaming.max_message_bytes = 64 * 1024;
    c.streaming.session_log_dir = None;
    c
}

/// Starts a replica with `config` whose sessions use `prompts`.
pub async fn start(config: ReplicaConfig, prompts: PromptService) -> Server {
    framecast_replica::media::elements::init().unwrap();
    framecast_common::logging::init("framecast_replica=debug");
    let config = Arc::new(config);
    let blobs: Arc<dyn framecast_replica::store::BlobStore> = Arc::new(
        framecast_replica::store::memory::MemoryBlobStore::new(64 << 20, Duration::from_secs(600)),
    );
    let generators = (0..config.pool.num_workers)
        .map(|_| generate::build(&config.generator, blobs.clone()).unwrap())
        .collect();
    let pool = Arc::new(InProcessPool::new(generators, false));
    let mut sessions = SessionContext::new(pool.clone(), config);
    sessions.prompts = prompts;
    let state = AppState::new("cpu".into(), metrics().clone(), sessions);
    state.mark_ready();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server::router(state.clone());
    let listener = server::without_nagle(listener);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", admin_listener.local_addr().unwrap());
    let admin_app = server::admin_router(state.clone());
    tokio::spawn(async move { axum::serve(admin_listener, admin_app).await.unwrap() });
    Server {
        addr,
        admin,
        pool,
        state,
    }
}
