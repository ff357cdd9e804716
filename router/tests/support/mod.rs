//! Runs the real router in-process on loopback for a test and stops it when dropped.

#![allow(dead_code)] // each test file uses a different subset

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use framecast_e2e::{MockReplica, free_port, get_json};
use framecast_router::config::{
    ClientLimitsConfig, HealthCheckConfig, ReplicaEndpoint, RouterConfig,
};
use framecast_router::resolve::{Resolve, SystemResolver};
use framecast_router::server::RouterServer;
use futures_util::{SinkExt, StreamExt};
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Stops the pingora server when notified, instead of on a Unix signal.
struct NotifyShutdown(Arc<Notify>);

#[async_trait]
impl ShutdownSignalWatch for NotifyShutdown {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

/// A running router; dropping it shuts it down.
pub struct TestRouter {
    pub port: u16,
    pub admin_port: u16,
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A replica entry for `mock`.
pub fn endpoint(mock: &MockReplica, primary: bool) -> ReplicaEndpoint {
    ReplicaEndpoint {
        url: mock.url(),
        admin_url: None,
        name: Some(mock.name().to_string()),
        primary,
        weight: 1,
    }
}

/// Loopback router config with fast health checks over `replicas`.
pub fn config(replicas: Vec<ReplicaEndpoint>, interval_seconds: f64) -> RouterConfig {
    RouterConfig {
        host: "127.0.0.1".into(),
        port: free_port(),
        admin_port: free_port(),
        replicas,
        threads: 1,
        health_check: HealthCheckConfig {
            interval_seconds,
            timeout_seconds: 0.5,
            failure_threshold: 2,
            recovery_threshold: 2,
            ..HealthCheckConfig::default()
        },
        connect_timeout_seconds: 0.5,
        // Every test client shares 127.0.0.1; tests of the limits set their own.
        client_limits: ClientLimitsConfig {
            max_sessions_per_ip: 0,
            new_sessions_per_ip_per_minute: 0,
            trusted_proxies: Vec::new(),
        },
        ..RouterConfig::default()
    }
}

impl TestRouter {
    /// Starts a router with `config` on its own thread.
    pub fn start(config: &RouterConfig) -> Self {
        Self::start_with_metrics(config, None)
    }

    /// Like [`TestRouter::start`], serving `metrics` at `/metrics`.
    pub fn start_with_metrics(
        config: &RouterConfig,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Self {
        Self::start_with_resolver(config, metrics, Arc::new(SystemResolver))
    }

    /// Like [`TestRouter::start_with_metrics`], resolving replica names with `resolver`.
    pub fn start_with_resolver(
        config: &RouterConfig,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
        resolver: Arc<dyn Resolve>,
    ) -> Self {
        let server =
            RouterServer::with_resolver(config, metrics, resolver).expect("router config is valid");
        let stop = Arc::new(Notify::new());
        let shutdown = NotifyShutdown(stop.clone());
        let thread = std::thread::spawn(move || {
            server.run_with(RunArgs {
                shutdown_signal: Box::new(shutdown),
            })
        });
        Self {
            port: config.port,
            admin_port: config.admin_port,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the router and waits for its thread; `Err` if it panicked.
    pub fn shutdown(mut self) -> std::thread::Result<()> {
        self.stop.notify_one();
        self.thread.take().map_or(Ok(()), |t| t.join())
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:<admin port><path>`: `/status`, `/metrics`, `/healthz`, `/readyz`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The router's `/status` body.
    pub async fn status(&self) -> serde_json::Value {
        get_json(&self.admin_url("/status")).await
    }

    /// The `/status` row of replica `name`.
    pub async fn replica_status(&self, name: &str) -> serde_json::Value {
        let status = self.status().await;
        status["replicas"]
            .as_array()
            .expect("replicas array")
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {status}"))
            .clone()
    }

    /// Polls `/status` until `pred` holds for replica `name`'s row, or panics after `timeout`.
    pub async fn wait_for_replica(
        &self,
        name: &str,
        timeout: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            // The listener may not be up yet on the first calls.
            let status = match reqwest::get(self.admin_url("/status")).await {
                Ok(r) => r.json::<serde_json::Value>().await.ok(),
                Err(_) => None,
            };
            let row = status.as_ref().and_then(|s| {
                s["replicas"]
                    .as_array()
                    .and_then(|rows| rows.iter().find(|r| r["name"] == name))
            });
            if let Some(row) = row {
                if pred(row) {
                    return row.clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} never reached the expected state: {row}"
                );
            }
            assert!(Instant::now() < deadline, "router /status never answered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Opens a WebSocket session through the router.
    pub async fn connect(&self) -> Ws {
        let url = format!("ws://127.0.0.1:{}/v1/stream", self.port);
        let (ws, response) = tokio_tungstenite::connect_async(&url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        assert_eq!(response.status(), 101);
        ws
    }

    /// Which replica a new session lands on (asks the mock's `whoami`); the session stays
    /// open while the returned socket lives.
    pub async fn session_on(&self) -> (String, Ws) {
        let mut ws = self.connect().await;
        let name = roundtrip(&mut ws, Message::text("whoami")).await;
        (name.into_text().unwrap().to_string(), ws)
    }
}

/// Sends `message` and returns the next data message, within 5 s.
pub async fn roundtrip(ws: &mut Ws, message: Message) -> Message {
    ws.send(message).await.expect("send through the router");
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an answer within 5 s")
            .expect("the session is still open")
            .expect("a valid frame");
        if next.is_text() || next.is_binary() {
            return next;
        }
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
