//! The router's own endpoints, answered before any proxying: `/status` for SREs, `/healthz`
//! and `/readyz` for orchestrators. Everything else goes to a replica.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::Session;
use serde_json::json;

use crate::registry::ReplicaRegistry;

/// Answers `session` if it asks for an admin endpoint; returns whether it did.
pub async fn respond(session: &mut Session, registry: &ReplicaRegistry) -> pingora::Result<bool> {
    if session.req_header().method != http::Method::GET {
        return Ok(false);
    }
    let (status, body) = match session.req_header().uri.path() {
        "/status" => (200, json!({ "replicas": registry.status() })),
        "/healthz" => (200, json!({ "status": "ok" })),
        "/readyz" if registry.any_routable() => (200, json!({ "status": "ready" })),
        "/readyz" => (503, json!({ "detail": "no healthy replica" })),
        _ => return Ok(false),
    };
    let body = Bytes::from(body.to_string());
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}
