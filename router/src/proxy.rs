//! The pingora proxy: admin endpoints are answered here ([`crate::admin`]); every other
//! request, WebSocket upgrades included, goes to the healthy replica the registry selects.
//!
//! pingora passes an upgraded connection through as a byte tunnel, so `/v1/stream`
//! sessions need no frame parsing here.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::observability;
use crate::registry::ReplicaRegistry;

/// Routes each downstream request to a replica from the registry.
#[derive(Debug)]
pub struct StreamProxy {
    registry: Arc<ReplicaRegistry>,
    metrics: Option<PrometheusHandle>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl StreamProxy {
    /// A proxy over `registry` with the given upstream connect and idle timeouts.
    pub fn new(
        registry: Arc<ReplicaRegistry>,
        metrics: Option<PrometheusHandle>,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            registry,
            metrics,
            connect_timeout,
            idle_timeout,
        }
    }
}

#[async_trait]
impl ProxyHttp for StreamProxy {
    /// The replica a request went to, once chosen.
    type CTX = Option<String>;

    fn new_ctx(&self) -> Self::CTX {
        None
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut Self::CTX) -> Result<bool> {
        if crate::admin::respond(session, &self.registry, self.metrics.as_ref()).await? {
            return Ok(true);
        }
        if session.is_upgrade_req() && self.registry.select().is_none() {
            observability::no_replica();
            tracing::warn!("no healthy replica: refusing a WebSocket session with 1013");
            crate::refusal::refuse_websocket(
                session,
                "no replica is available right now; retry shortly",
            )
            .await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Self::CTX) {
        let Some(replica) = ctx.take() else { return };
        if session.is_upgrade_req() {
            let outcome = if error.is_some() { "error" } else { "ok" };
            observability::session_closed(
                &replica,
                outcome,
                session.body_bytes_sent(),
                session.body_bytes_read(),
            );
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let Some(replica) = self.registry.select() else {
            observability::no_replica();
            return Error::e_explain(ErrorType::ConnectNoRoute, "no healthy replica");
        };
        if session.is_upgrade_req() && ctx.is_none() {
            observability::session_opened(&replica.name);
        }
        *ctx = Some(replica.name.clone());
        tracing::debug!(
            replica = %replica.name,
            path = %session.req_header().uri.path(),
            "routing request"
        );
        let mut peer = HttpPeer::new(
            replica.authority.as_str(),
            replica.tls,
            replica.host.clone(),
        );
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.idle_timeout = Some(self.idle_timeout);
        peer.options.read_timeout = Some(self.idle_timeout);
        peer.options.write_timeout = Some(self.idle_timeout);
        Ok(Box::new(peer))
    }
}
