//! The page served at `/`, compiled into the binary so a replica needs no files beside it.

use axum::response::Html;

const INDEX_HTML: &str = include_str!("../../static/index.html");

/// `GET /`: the Framecast page.
pub async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}
