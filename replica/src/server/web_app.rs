//! What a web app served beside the API (Dreamverse's, from `server.web_root`) calls over
//! HTTP besides its WebSocket: the static files themselves, a public view of `/status`, the
//! prompt system config (read on the client listener, written on the admin one) and clear
//! refusals for the devtools endpoints Framecast does not have. The public side is read-only and shows only
//! the fields the app reads; changes and internals are on the admin listener.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use framecast_common::dreamverse::{
    DEFAULT_REWRITE_MODEL, DEFAULT_REWRITE_TEMPERATURE, REWRITE_MODELS,
};
use serde_json::{Value, json};
use tower_http::services::{ServeDir, ServeFile};

use crate::prompt::{Operation, WriteError};

use super::AppState;

/// The client listener's part: the public `/status` view, the read-only prompt config and
/// the unsupported devtools endpoints.
pub(super) fn client_routes() -> Router<AppState> {
    Router::new()
        .route("/status", get(public_status))
        .route(
            "/prompt-system-config",
            get(prompt_system_config).post(prompt_system_config_admin_only),
        )
        .route("/curated-presets", any(curated_presets))
        .route("/curated-presets/{*rest}", any(curated_presets))
        .route("/lora", any(lora))
        .route("/lora/{*rest}", any(lora))
}

/// The admin listener's part: the whole prompt config, writing it (into
/// `prompt.system_prompt_dir`), reloading it from disk, and the session monitor.
pub(super) fn admin_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/prompt-system-config",
            get(prompt_system_config_full).post(write_prompt_system_config),
        )
        .route(
            "/prompt-system-config/reload",
            axum::routing::post(reload_prompt_system_config),
        )
        .route("/internal/monitor/sessions", get(monitor_sessions))
}

/// The files under `root`, `index.html` for a directory; a missing file answers 404 with
/// the app's own `404.html` when it has one.
pub(super) fn static_files(root: &Path) -> ServeDir<tower_http::set_status::SetStatus<ServeFile>> {
    ServeDir::new(root)
        .append_index_html_on_directories(true)
        .not_found_service(ServeFile::new(root.join("404.html")))
}

/// `GET /status` on the client listener: only what the app words its notices from (no GPUs,
/// failed warmups) and what a client may want to know before queueing. The full pool is
/// on the admin listener.
async fn public_status(State(state): State<AppState>) -> Json<Value> {
    let status = state.inner.sessions.pool.status();
    Json(json!({
        "total_gpus": status.total_gpus,
        "available_gpus": status.available_gpus,
        "warmup_failed_gpus": status.warmup_failed_gpus,
    }))
}

/// The system prompt each of the app's fields edits.
const FIELDS: [(&str, Operation); 3] = [
    ("next_segment_system_prompt", Operation::Enhance),
    ("auto_extension_system_prompt", Operation::AutoExtend),
    ("rewrite_window_system_prompt", Operation::Rewrite),
];

/// The system prompt in force for `op` (the built-in without a prompt pipeline).
fn system_prompt(state: &AppState, op: Operation) -> String {
    match state.inner.sessions.prompts.enhancer() {
        Some(e) => e.system_prompts().get(op),
        None => op.default_system_prompt().to_string(),
    }
}

/// `GET /prompt-system-config` on the client listener: the three system prompts the app's
/// editor shows, nothing else.
async fn prompt_system_config(State(state): State<AppState>) -> Json<Value> {
    let mut body = serde_json::Map::new();
    for (field, op) in FIELDS {
        body.insert(field.into(), system_prompt(&state, op).into());
    }
    Json(Value::Object(body))
}

/// `GET /prompt-system-config` on the admin listener: Dreamverse's whole shape, with the
/// override files' paths and the providers.
async fn prompt_system_config_full(State(state): State<AppState>) -> Json<Value> {
    let Json(Value::Object(mut body)) = prompt_system_config(State(state.clone())).await else {
        unreachable!("an object")
    };
    let prompts = &state.inner.sessions.prompts;
    for (field, op) in FIELDS {
        let path = prompts
            .enhancer()
            .and_then(|e| e.system_prompts().path(op))
            .map(|p| p.display().to_string());
        body.insert(format!("{field}_path"), json!(path));
    }
    body.insert("rewrite_model".into(), DEFAULT_REWRITE_MODEL.into());
    body.insert("rewrite_model_options".into(), json!(REWRITE_MODELS));
    body.insert(
        "rewrite_temperature".into(),
        json!(DEFAULT_REWRITE_TEMPERATURE),
    );
    body.insert(
        "providers".into(),
        json!(prompts.enhancer().map(|e| e.chain().names())),
    );
    Json(Value::Object(body))
}

/// `POST /prompt-system-config` (admin): any subset of the three system prompts, written
/// into `prompt.system_prompt_dir` and in force for the next LLM call (an empty text goes
/// back to the built-in). Unknown or non-string fields are refused before anything is
/// written.
async fn write_prompt_system_config(
    State(state): State<AppState>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> axum::response::Response {
    let Ok(Json(Value::Object(fields))) = body else {
        return detail(StatusCode::BAD_REQUEST, "the body must be a JSON object").into_response();
    };
    let mut updates = Vec::new();
    for (name, value) in &fields {
        let Some((_, op)) = FIELDS.iter().find(|(f, _)| f == name) else {
            let known: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
            let message = format!("unknown field `{name}` (known: {})", known.join(", "));
            return detail(StatusCode::BAD_REQUEST, &message).into_response();
        };
        let Some(text) = value.as_str() else {
            let message = format!("`{name}` must be a string");
            return detail(StatusCode::BAD_REQUEST, &message).into_response();
        };
        updates.push((*op, text));
    }
    let Some(enhancer) = state.inner.sessions.prompts.enhancer() else {
        return detail(
            StatusCode::CONFLICT,
            "prompt pipeline not configured (prompt.enabled is false): nothing uses these prompts",
        )
        .into_response();
    };
    for (op, text) in updates {
        match enhancer.system_prompts().write(op, text) {
            Ok(()) => tracing::info!(operation = op.label(), "system prompt replaced"),
            Err(e @ WriteError::NoDirectory) => {
                return detail(StatusCode::CONFLICT, &e.to_string()).into_response();
            }
            Err(e @ WriteError::TooLong { .. }) => {
                return detail(StatusCode::BAD_REQUEST, &e.to_string()).into_response();
            }
            Err(e @ WriteError::Io { .. }) => {
                tracing::error!(error = %e, "system prompt not written");
                return detail(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()).into_response();
            }
        }
    }
    prompt_system_config_full(State(state))
        .await
        .into_response()
}

/// `POST /prompt-system-config/reload` (admin): reads every override file again now (they
/// are also re-read whenever their modification time changes).
async fn reload_prompt_system_config(State(state): State<AppState>) -> axum::response::Response {
    if let Some(e) = state.inner.sessions.prompts.enhancer() {
        e.system_prompts().reload();
    }
    prompt_system_config_full(State(state))
        .await
        .into_response()
}

/// `POST /prompt-system-config` on the client listener: changing the server is admin-only.
async fn prompt_system_config_admin_only() -> impl IntoResponse {
    detail(
        StatusCode::FORBIDDEN,
        "changing the prompt system config is admin-only: this listener is read-only",
    )
}

/// `GET /internal/monitor/sessions` (admin): FastVideo's monitor shape.
async fn monitor_sessions(State(state): State<AppState>) -> Json<Value> {
    let status = state.inner.sessions.pool.status();
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Json(json!({
        "service": "framecast-replica",
        "pending_sessions": status.queue_size,
        "max_available_sessions": status.total_gpus,
        "prompt_provider_success_counts": state.inner.sessions.prompts.provider_success_counts(),
        "ts": ts,
    }))
}

/// `/curated-presets` and below, any method.
async fn curated_presets() -> impl IntoResponse {
    detail(
        StatusCode::NOT_FOUND,
        "curated presets are not supported by Framecast",
    )
}

/// `/lora` and below, any method.
async fn lora() -> impl IntoResponse {
    detail(
        StatusCode::NOT_FOUND,
        "LoRA styles are not supported by Framecast",
    )
}

/// A `{detail}` body, FastAPI's error shape, which the app shows.
fn detail(status: StatusCode, message: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "detail": message })))
}

#[cfg(test)]
mod tests {
    use super::super::{admin_router, router};
    use super::*;
    use axum::body::Body;
    use http::{Method, Request};
    use tower::ServiceExt;

    fn state_with(config: crate::config::ReplicaConfig) -> AppState {
        let recorder = framecast_common::metrics::standalone_recorder();
        let config = std::sync::Arc::new(config);
        let blobs =
            std::sync::Arc::new(crate::store::memory::MemoryBlobStore::from_config(&config));
        let generator = crate::generate::build(&config.generator, blobs).unwrap();
        let pool = crate::pool::in_process::InProcessPool::new(vec![generator], false);
        let sessions = crate::session::SessionContext::new(std::sync::Arc::new(pool), config);
        AppState::new("cpu".into(), recorder.handle(), sessions)
    }

    fn state() -> AppState {
        state_with(crate::config::ReplicaConfig::default())
    }

    async fn call(app: Router, method: Method, path: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn json_of(app: Router, method: Method, path: &str) -> (StatusCode, Value) {
        let (status, body) = call(app, method, path).await;
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (status, json)
    }

    fn keys(value: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    #[tokio::test]
    async fn public_status_shows_only_what_the_app_reads() {
        let (status, json) = json_of(router(state()), Method::GET, "/status").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            keys(&json),
            ["available_gpus", "total_gpus", "warmup_failed_gpus"],
            "{json}"
        );
        assert_eq!(json["total_gpus"], 1);
        assert_eq!(json["warmup_failed_gpus"], 0);
        // The full pool (per worker: pids, devices, errors) stays on the admin listener.
        let (status, full) = json_of(admin_router(state()), Method::GET, "/status").await;
        assert_eq!(status, StatusCode::OK);
        assert!(full.get("gpu_status").is_some(), "{full}");
    }

    #[tokio::test]
    async fn prompt_system_config_is_public_read_only() {
        let state = state();
        let (status, json) =
            json_of(router(state.clone()), Method::GET, "/prompt-system-config").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            keys(&json),
            [
                "auto_extension_system_prompt",
                "next_segment_system_prompt",
                "rewrite_window_system_prompt",
            ],
            "{json}"
        );
        // Without a prompt pipeline: the built-ins, which is what an LLM would get.
        assert_eq!(
            json["next_segment_system_prompt"],
            Operation::Enhance.default_system_prompt()
        );
        // No file paths or other internals.
        assert!(!json.to_string().contains("_path"), "{json}");

        let (status, json) =
            json_of(router(state.clone()), Method::POST, "/prompt-system-config").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            json["detail"].as_str().unwrap().contains("admin-only"),
            "{json}"
        );

        let (status, json) = json_of(
            admin_router(state.clone()),
            Method::POST,
            "/prompt-system-config",
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{json}");
        assert!(
            json["detail"]
                .as_str()
                .unwrap()
                .contains("prompt pipeline not configured"),
            "{json}"
        );
        let (status, full) =
            json_of(admin_router(state), Method::GET, "/prompt-system-config").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(full["rewrite_model"], DEFAULT_REWRITE_MODEL);
        assert_eq!(full["rewrite_model_options"], json!(REWRITE_MODELS));
        assert_eq!(full["rewrite_temperature"], DEFAULT_REWRITE_TEMPERATURE);
        assert_eq!(full["next_segment_system_prompt_path"], Value::Null);
    }

    #[tokio::test]
    async fn monitor_sessions_is_admin_only_in_fastvideo_shape() {
        let state = state();
        let (status, json) = json_of(
            admin_router(state.clone()),
            Method::GET,
            "/internal/monitor/sessions",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            keys(&json),
            [
                "max_available_sessions",
                "pending_sessions",
                "prompt_provider_success_counts",
                "service",
                "ts"
            ],
            "{json}"
        );
        assert_eq!(json["service"], "framecast-replica");
        assert_eq!(json["pending_sessions"], 0);
        assert_eq!(json["max_available_sessions"], 1);
        assert_eq!(json["prompt_provider_success_counts"], json!({}));
        assert!(json["ts"].as_f64().unwrap() > 1.7e9, "{json}");
        let (status, _) = call(router(state), Method::GET, "/internal/monitor/sessions").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn devtools_endpoints_say_they_are_not_supported() {
        for (method, path, what) in [
            (Method::GET, "/curated-presets", "curated presets"),
            (Method::POST, "/curated-presets/append", "curated presets"),
            (Method::POST, "/lora", "LoRA"),
            (Method::GET, "/lora/options", "LoRA"),
        ] {
            let (status, json) = json_of(router(state()), method, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            let detail = json["detail"].as_str().unwrap();
            assert!(
                detail.contains(what) && detail.contains("not supported by Framecast"),
                "{path}: {detail}"
            );
        }
    }

    #[tokio::test]
    async fn web_root_serves_the_app_at_the_root_and_keeps_the_api() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<title>The App</title>").unwrap();
        std::fs::write(dir.path().join("404.html"), "app's not found page").unwrap();
        std::fs::create_dir(dir.path().join("_next")).unwrap();
        std::fs::write(dir.path().join("_next/app.js"), "console.log(1)").unwrap();
        let mut config = crate::config::ReplicaConfig::default();
        config.server.web_root = Some(dir.path().to_path_buf());
        let state = state_with(config);

        let (status, body) = call(router(state.clone()), Method::GET, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("The App"), "{body}");
        let (status, body) = call(router(state.clone()), Method::GET, "/_next/app.js").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "console.log(1)"));
        let (status, body) = call(router(state.clone()), Method::GET, "/nope.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("not found page"), "{body}");
        // Nothing outside the root.
        let (status, _) = call(router(state.clone()), Method::GET, "/../Cargo.toml").await;
        assert_ne!(status, StatusCode::OK);
        // The API keeps its answers; the admin listener serves no files.
        for path in ["/healthz", "/status", "/prompt-system-config", "/player.js"] {
            let (status, _) = call(router(state.clone()), Method::GET, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
        let (status, body) = call(router(state.clone()), Method::GET, "/lora/options").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("not supported"), "{body}");
        let (status, _) = call(admin_router(state), Method::GET, "/").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
