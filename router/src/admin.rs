//! The router's admin listener, separate from the client port: `/status` for SREs,
//! `/metrics` for Prometheus, `/healthz` and `/readyz` for orchestrators. Replica URLs,
//! probe errors and counters stay off the public network; the client port only proxies.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use metrics_exporter_prometheus::PrometheusHandle;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::registry::ReplicaRegistry;

const JSON_CONTENT_TYPE: &str = "application/json";
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The admin endpoints as a pingora HTTP app.
#[derive(Debug)]
pub struct AdminApp {
    registry: Arc<ReplicaRegistry>,
    metrics: Option<PrometheusHandle>,
}

impl AdminApp {
    /// Serves `registry`'s state, and `metrics` at `/metrics` when given.
    pub fn new(registry: Arc<ReplicaRegistry>, metrics: Option<PrometheusHandle>) -> Self {
        Self { registry, metrics }
    }

    /// The status, content type and body for a GET of `path`.
    pub fn answer(&self, path: &str) -> (u16, &'static str, String) {
        let registry = &self.registry;
        match path {
            "/status" => (
                200,
                JSON_CONTENT_TYPE,
                json!({
                    "replicas": registry.status(),
                    "active_sessions": registry.active_sessions(),
                    "draining": registry.is_draining(),
                })
                .to_string(),
            ),
            "/healthz" => (
                200,
                JSON_CONTENT_TYPE,
                json!({ "status": "ok" }).to_string(),
            ),
            "/readyz" if registry.is_draining() => (
                503,
                JSON_CONTENT_TYPE,
                json!({ "detail": "draining: shutting down" }).to_string(),
            ),
            "/readyz" if registry.any_routable() => (
                200,
                JSON_CONTENT_TYPE,
                json!({ "status": "ready" }).to_string(),
            ),
            "/readyz" => (
                503,
                JSON_CONTENT_TYPE,
                json!({ "detail": "no healthy replica" }).to_string(),
            ),
            "/metrics" => match &self.metrics {
                Some(handle) => (200, PROMETHEUS_CONTENT_TYPE, handle.render()),
                None => not_found(),
            },
            _ => not_found(),
        }
    }
}

fn not_found() -> (u16, &'static str, String) {
    (
        404,
        JSON_CONTENT_TYPE,
        json!({ "detail": "not found: the admin listener serves /status, /metrics, /healthz and /readyz" })
            .to_string(),
    )
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, content_type, body) = if session.req_header().method == http::Method::GET {
            self.answer(session.req_header().uri.path())
        } else {
            (
                405,
                JSON_CONTENT_TYPE,
                json!({ "detail": "the admin endpoints are read-only (GET)" }).to_string(),
            )
        };
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("content-length", body.len())
            .header("cache-control", "no-store")
            .body(body.into_bytes())
            .expect("static headers are valid")
    }
}
