//! The player page and its script, compiled into the binary so a replica needs no files
//! beside it.

use axum::http::header;
use axum::response::{Html, IntoResponse};

const INDEX_HTML: &str = include_str!("../../static/index.html");
const PLAYER_JS: &str = include_str!("../../static/player.js");

/// `GET /`: the player (prompt, start, next prompt, stop, stream stats).
pub async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

/// `GET /player.js`: the Media Source Extensions player module.
pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        PLAYER_JS,
    )
}
