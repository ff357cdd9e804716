//! `GET /ws`: upgrades to a WebSocket speaking the Dreamverse protocol (what FastVideo's
//! Dreamverse web app opens on its own origin) and hands it to a Dreamverse session.

use axum::Json;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use framecast_common::dreamverse::MAX_INITIAL_IMAGE_BYTES;

use super::AppState;
use crate::session::run_dreamverse_session;

/// Checks the auth policy as `/v1/stream` does (origin, credentials: 403/401 before any
/// upgrade), then upgrades with room for a message carrying an initial image (at most
/// 15 MiB, as in Dreamverse, and at most `streaming.max_init_image_bytes`); the session
/// holds every other message to `streaming.max_message_bytes`.
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(refusal) = state.inner.auth.check(&headers, uri.query()) {
        tracing::info!(reason = refusal.reason(), "refusing a Dreamverse upgrade");
        framecast_common::auth::record_refusal(&refusal);
        let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let body = Json(serde_json::json!({
            "error": {"code": refusal.reason(), "message": refusal.to_string()}
        }));
        return if status == StatusCode::UNAUTHORIZED {
            (
                status,
                [("www-authenticate", "Bearer realm=\"framecast\"")],
                body,
            )
                .into_response()
        } else {
            (status, body).into_response()
        };
    }
    let ctx = state.inner.sessions.clone();
    let mut streaming = ctx.config.streaming.clone();
    streaming.max_init_image_bytes = streaming.max_init_image_bytes.min(MAX_INITIAL_IMAGE_BYTES);
    let limit = streaming.max_init_frame_bytes();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| run_dreamverse_session(socket, ctx))
}
