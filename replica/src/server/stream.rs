//! `GET /v1/stream`: upgrades to a WebSocket and hands it to a session.

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;

use super::AppState;
use crate::session::run_session;

/// Checks the auth policy (origin, credentials: 403/401 before any upgrade), then upgrades
/// with room for the opening frame (which may carry an image); the session applies the
/// ordinary limit to every later message. Larger frames close the session (1009).
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = super::access::refusal(&state, &headers, &uri) {
        return refused;
    }
    let ctx = state.inner.sessions.clone();
    let limit = ctx.config.streaming.max_init_frame_bytes();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| run_session(socket, ctx))
}
