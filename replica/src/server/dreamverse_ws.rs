//! `GET /ws`: upgrades to a WebSocket speaking the Dreamverse protocol (what FastVideo's
//! Dreamverse web app opens on its own origin) and hands it to a Dreamverse session.

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
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
    if let Some(refused) = super::access::refusal(&state, &headers, &uri) {
        return refused;
    }
    let ctx = state.inner.sessions.clone();
    let mut streaming = ctx.config.streaming.clone();
    streaming.max_init_image_bytes = streaming.max_init_image_bytes.min(MAX_INITIAL_IMAGE_BYTES);
    let limit = streaming.max_init_frame_bytes();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| run_dreamverse_session(socket, ctx))
}
