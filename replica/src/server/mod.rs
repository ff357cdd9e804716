//! The replica's HTTP servers: the client router ([`router`]: player, `/v1/stream`, the
//! Dreamverse protocol's `/ws`, probes)
//! and the admin router ([`admin_router`]: `/status`, `/metrics`, probes) on a separate
//! listener, one small handler per endpoint, tower layers for tracing, timeouts, body limits
//! and CORS.

mod access;
mod broadcast;
mod dreamverse_ws;
mod health;
mod player;
mod stream;
mod web_app;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use framecast_common::auth::Authenticator;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::cors::CorsLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::session::SessionContext;

/// HTTP requests (not WebSocket sessions) that take longer than this are cut off.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest HTTP request body; WebSocket messages have their own limit.
const HTTP_BODY_LIMIT: usize = 64 * 1024;

/// State every handler can read; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ready: AtomicBool,
    device: String,
    metrics: PrometheusHandle,
    sessions: SessionContext,
    auth: Authenticator,
}

impl AppState {
    /// Starts not ready; [`AppState::mark_ready`] flips `/readyz` once start-up checks pass
    /// (and a worker must be warm as well).
    ///
    /// Panics if `server.auth` is invalid: configuration validation rejects that first.
    pub fn new(device: String, metrics: PrometheusHandle, sessions: SessionContext) -> Self {
        let auth = Authenticator::from_config(&sessions.config.server.auth, "server.auth")
            .expect("server.auth was validated with the configuration");
        Self {
            inner: Arc::new(Inner {
                ready: AtomicBool::new(false),
                device,
                metrics,
                sessions,
                auth,
            }),
        }
    }

    /// Lets `/readyz` answer 200.
    pub fn mark_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }

    /// Starts the drain (SIGTERM): `/readyz` answers 503, new sessions are refused and live
    /// ones wind down. Resolves once no session is left or the grace period (plus a moment
    /// for the last close frames) is over.
    pub async fn drain(&self) {
        let sessions = &self.inner.sessions;
        sessions.drain.start();
        let live = || sessions.active.load(Ordering::Acquire);
        tracing::info!(live_sessions = live(), "draining");
        let until = sessions
            .drain
            .deadline()
            .unwrap_or_else(std::time::Instant::now)
            + Duration::from_secs(2);
        while live() > 0 && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(live_sessions = live(), "drained");
    }

    fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire) && self.inner.sessions.pool.is_ready()
    }
}

/// Probes come every few seconds from the router, Kubernetes and Prometheus, and a 503 from
/// /readyz during warmup is the expected answer: traced, each would log an ERROR. Both
/// listeners answer them.
fn probes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
}

/// The client listener's routes: the player (or the files of `server.web_root`),
/// `/v1/stream`, the probes and what the web app reads; nothing that shows internals.
pub fn router(state: AppState) -> Router {
    let cors = cors(&state.inner.sessions.config.server.cors_allowed_origins);
    let app = match &state.inner.sessions.config.server.web_root {
        Some(root) => Router::new().fallback_service(web_app::static_files(root)),
        None => Router::new().route("/", get(player::index)),
    };
    app.route("/player.js", get(player::script))
        .route("/v1/stream", get(stream::upgrade))
        .route("/ws", get(dreamverse_ws::upgrade))
        .route("/v1/broadcast/{id}/{*rest}", get(broadcast::file))
        .merge(web_app::client_routes())
        // Paths only: a query may carry an access token.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &http::Request<_>| {
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
        }))
        .merge(probes())
        .layer(TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            HTTP_TIMEOUT,
        ))
        .layer(RequestBodyLimitLayer::new(HTTP_BODY_LIMIT))
        .layer(cors)
        .with_state(state)
}

/// The admin listener's routes: `/status` (the worker pool) and `/metrics`, plus the
/// probes, for the router, Kubernetes and Prometheus only.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/status", get(health::status))
        .route("/metrics", get(health::metrics))
        .merge(web_app::admin_routes())
        .merge(probes())
        .layer(TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            HTTP_TIMEOUT,
        ))
        .layer(RequestBodyLimitLayer::new(HTTP_BODY_LIMIT))
        .with_state(state)
}

/// Cross-origin reads only for the configured origins (GET); none by default, so a page on
/// another site cannot read `/status` or `/metrics` through a visitor's browser.
fn cors(origins: &[String]) -> CorsLayer {
    let allowed: Vec<http::HeaderValue> = origins
        .iter()
        .filter_map(|o| http::HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(allowed)
        .allow_methods([http::Method::GET])
}

/// The client listener with TCP_NODELAY on every accepted socket: frames go out as they are
/// written. With Nagle's algorithm a small frame written right after another (such as
/// `prompt_ready` after `prompt_enhancing`) waits for the client's delayed ACK, ~40 ms
/// (measured by `benches/prompt.rs`).
pub fn without_nagle(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    listener.tap_io(set_nodelay as fn(&mut tokio::net::TcpStream))
}

fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::{Request, StatusCode};
    use tower::ServiceExt;

    fn state() -> AppState {
        let recorder = framecast_common::metrics::standalone_recorder();
        let config = std::sync::Arc::new(crate::config::ReplicaConfig::default());
        let pool = crate::pool::in_process::InProcessPool::new(
            vec![
                crate::generate::build(
                    &config.generator,
                    std::sync::Arc::new(crate::store::memory::MemoryBlobStore::from_config(
                        &config,
                    )),
                )
                .unwrap(),
            ],
            false,
        );
        let sessions = SessionContext::new(std::sync::Arc::new(pool), config);
        AppState::new("cpu".into(), recorder.handle(), sessions)
    }

    #[tokio::test]
    async fn only_configured_origins_may_read_across_sites() {
        let mut config = crate::config::ReplicaConfig::default();
        config.server.cors_allowed_origins = vec!["https://app.example.com".into()];
        let pool = crate::pool::in_process::InProcessPool::new(Vec::new(), false);
        let sessions = SessionContext::new(std::sync::Arc::new(pool), std::sync::Arc::new(config));
        let recorder = framecast_common::metrics::standalone_recorder();
        let app = router(AppState::new("cpu".into(), recorder.handle(), sessions));
        let allowed_for = |origin: &'static str| {
            let app = app.clone();
            async move {
                let request = Request::get("/healthz")
                    .header("origin", origin)
                    .body(Body::empty())
                    .unwrap();
                let response = app.oneshot(request).await.unwrap();
                response
                    .headers()
                    .get("access-control-allow-origin")
                    .map(|v| v.to_str().unwrap().to_string())
            }
        };
        assert_eq!(
            allowed_for("https://app.example.com").await.as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(allowed_for("https://evil.example").await, None);
        // The default allows no other site at all.
        let app = router(state());
        let request = Request::get("/healthz")
            .header("origin", "https://evil.example")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
    }

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_turns_ready_only_after_mark_ready() {
        let state = state();
        let (status, body) = get(router(state.clone()), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("detail"), "{body}");
        state.mark_ready();
        let (status, _) = get(router(state), "/readyz").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn health_reports_stream_mode_and_device() {
        let (status, body) = get(router(state()), "/health").await;
        assert_eq!(status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["stream_mode"], "av_fmp4");
        assert_eq!(json["device"], "cpu");
        assert_eq!(json["sessions"], 0);
    }

    #[tokio::test]
    async fn index_serves_the_page() {
        let (status, body) = get(router(state()), "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("<title>Framecast</title>"), "{body}");
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let (status, _) = get(router(state()), "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn internals_are_served_on_the_admin_listener_only() {
        let state = state();
        // (`/status` on the client listener is a three-field public view: see web_app.)
        for path in ["/metrics"] {
            let (status, _) = get(router(state.clone()), path).await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{path} on the client listener"
            );
            let (status, _) = get(admin_router(state.clone()), path).await;
            assert_eq!(status, StatusCode::OK, "{path} on the admin listener");
        }
        let (status, _) = get(admin_router(state.clone()), "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = get(admin_router(state), "/v1/stream").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
