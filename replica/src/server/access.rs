//! The auth policy at the WebSocket doors (`/v1/stream`, `/ws`): origin and credentials are
//! checked before any upgrade, so a refused client never holds a session or a worker.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::AppState;

/// `None` when the request may upgrade; else the answer to send: 401 with a `Bearer`
/// challenge, or 403 for a foreign origin, with a JSON body saying why (counted in
/// `framecast_requests_refused_total{reason}`).
pub(super) fn refusal(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Option<Response> {
    let Err(refusal) = state.inner.auth.check(headers, uri.query()) else {
        return None;
    };
    tracing::info!(reason = refusal.reason(), path = %uri.path(), "refusing an upgrade");
    framecast_common::auth::record_refusal(&refusal);
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let body = Json(serde_json::json!({
        "error": {"code": refusal.reason(), "message": refusal.to_string()}
    }));
    Some(if status == StatusCode::UNAUTHORIZED {
        (
            status,
            [("www-authenticate", "Bearer realm=\"framecast\"")],
            body,
        )
            .into_response()
    } else {
        (status, body).into_response()
    })
}
