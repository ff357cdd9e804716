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

use crate::registry::ReplicaRegistry;

/// Routes each downstream request to a replica from the registry.
#[derive(Debug)]
pub struct StreamProxy {
    registry: Arc<ReplicaRegistry>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl StreamProxy {
    /// A proxy over `registry` with the given upstream connect and idle timeouts.
    pub fn new(
        registry: Arc<ReplicaRegistry>,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            registry,
            connect_timeout,
            idle_timeout,
        }
    }
}

#[async_trait]
impl ProxyHttp for StreamProxy {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        crate::admin::respond(session, &self.registry).await
    }

    async fn upstream_peer(&self, session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let Some(replica) = self.registry.select() else {
            return Error::e_explain(ErrorType::ConnectNoRoute, "no healthy replica");
        };
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
