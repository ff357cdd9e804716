//! Liveness, readiness and metrics endpoints, in the shapes FastVideo's router probes expect.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

/// `GET /health`: liveness plus what the router shows operators.
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    Json(json!({
        "status": "ok",
        "sessions": state.inner.sessions.active.load(std::sync::atomic::Ordering::Relaxed),
        "stream_mode": "av_fmp4",
        "device": state.inner.device,
    }))
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once start-up checks passed, else 503 with a `detail`.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.inner.sessions.drain.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "detail": "replica is draining: it takes no new sessions" })),
        );
    }
    if state.is_ready() {
        // Which encoder the sessions use, so an SRE sees a GPU pod that fell back to x264.
        let kind = state.inner.sessions.config.media.video_encoder;
        let encoder = crate::media::video_encoder_name(kind).unwrap_or("unavailable");
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "video_encoder": encoder })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "detail": "replica is starting: device checks or worker warmup not finished" }),
            ),
        )
    }
}

/// `GET /status`: the worker pool, in FastVideo's shape.
pub async fn status(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.inner.sessions.pool.status())
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let sessions = &state.inner.sessions;
    crate::observability::record_pool(
        &sessions.pool.status(),
        sessions.active.load(std::sync::atomic::Ordering::Relaxed),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.inner.metrics.render(),
    )
}
