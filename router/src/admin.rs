//! The router's own endpoints, answered before any proxying: `/status` for SREs, `/metrics`
//! for Prometheus, `/healthz` and `/readyz` for orchestrators. Everything else goes to a
//! replica.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::Session;
use serde_json::json;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::registry::ReplicaRegistry;

const JSON_CONTENT_TYPE: &str = "application/json";
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers `session` if it asks for an admin endpoint; returns whether it did.
pub async fn respond(
    session: &mut Session,
    registry: &ReplicaRegistry,
    metrics: Option<&PrometheusHandle>,
) -> pingora::Result<bool> {
    if session.req_header().method != http::Method::GET {
        return Ok(false);
    }
    let (status, content_type, body) = match session.req_header().uri.path() {
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
        "/metrics" => match metrics {
            Some(handle) => (200, PROMETHEUS_CONTENT_TYPE, handle.render()),
            None => return Ok(false),
        },
        _ => return Ok(false),
    };
    let body = Bytes::from(body);
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header("content-type", content_type)?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}
