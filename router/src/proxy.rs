//! The pingora proxy on the client port: every request, WebSocket upgrades included, goes to
//! the replica the registry selects. An upgrade is first checked against the auth policy
//! (origin, credentials: 401/403 before any replica is involved) and the per-client limits.
//!
//! pingora passes an upgraded connection through as a byte tunnel, so `/v1/stream`
//! sessions need no message parsing here. A replica that refuses the connection, or drops it
//! before answering the handshake (a process killed just as the kernel accepted the
//! connection), is skipped and the next one tried; the client never sees the failed attempt.
//!
//! A replica lost after its `101` cannot be replaced under the client, so the client is told
//! ([`crate::upstream_loss`]): the replica's frame headers are followed in
//! `response_body_filter`, which pingora also runs for the upgraded body. When the replica
//! closes its socket (FIN) pingora ends that body with `end_of_stream` and no data, and the
//! last frames ride on that call; when the socket is reset (or a read fails) pingora skips
//! the body filters and ends the request with an upstream error, so `fail_to_proxy` writes
//! them to the client instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::ErrorSource;
use pingora::http::ResponseHeader;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorType, Result};

use framecast_common::auth::Authenticator;

use crate::broadcast_owner::{BroadcastOwners, broadcast_id};
use crate::client_limits::{ClientLimiter, ClientSlot};
use crate::observability::{self, Protocol};
use crate::registry::{ReplicaRegistry, SessionGuard};
use crate::resolve::Resolve;
use crate::upstream_loss::UpstreamWatch;

/// Routes each downstream request to a replica from the registry.
#[derive(Debug)]
pub struct StreamProxy {
    registry: Arc<ReplicaRegistry>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    clients: ClientLimiter,
    auth: Authenticator,
    resolver: Arc<dyn Resolve>,
    /// The largest client frame the replicas take (`router.client_frame_limit_bytes`).
    client_frame_limit: u64,
    /// Which replica serves which broadcast's files.
    broadcasts: BroadcastOwners,
}

/// pingora's per-request context: the replicas one request was sent to.
#[derive(Debug, Default)]
pub struct RequestRoute {
    /// Replicas tried so far, the current one last.
    tried: Vec<usize>,
    /// Held while a WebSocket session is routed to `tried.last()`.
    session: Option<SessionGuard>,
    /// The client's slot under the per-address limits, held for the whole session.
    client: Option<ClientSlot>,
    /// Set when the replica switched a WebSocket upgrade to the tunnel (its `101`).
    upstream: Option<UpstreamWatch>,
    /// The client was already answered (a refusal frame): nothing more is written to it.
    answered: bool,
    /// The replica that serves the broadcast this request reads.
    broadcast_owner: Option<usize>,
}

impl RequestRoute {
    /// The last frames for the client when the tunnel's replica is gone without having closed
    /// the session (see [`UpstreamWatch::farewell`]); `None` outside a WebSocket tunnel.
    fn farewell(&mut self, cause: &dyn std::fmt::Display) -> Option<Bytes> {
        let replica = self
            .session
            .as_ref()
            .map_or("unknown", |guard| guard.replica().name.as_str());
        self.upstream.as_mut()?.farewell(replica, cause)
    }
}

impl StreamProxy {
    /// A proxy over `registry`: `connect_timeout` bounds each connection attempt to a replica,
    /// `idle_timeout` closes a tunnel with no bytes either way for that long; `auth` and
    /// `clients` decide which upgrades are let through.
    pub fn new(
        registry: Arc<ReplicaRegistry>,
        connect_timeout: Duration,
        idle_timeout: Duration,
        clients: ClientLimiter,
        auth: Authenticator,
        resolver: Arc<dyn Resolve>,
        client_frame_limit: u64,
    ) -> Self {
        Self {
            registry,
            connect_timeout,
            idle_timeout,
            clients,
            auth,
            resolver,
            client_frame_limit,
            broadcasts: BroadcastOwners::default(),
        }
    }

    /// The next replica (not in `ctx.tried`) whose name resolves, with its address; `None`
    /// when none is left. A name that does not resolve within the connect timeout (a deleted
    /// pod's record is gone) is skipped for this request; the health checker, resolving
    /// through the same resolver, marks its replica unhealthy after its failure threshold.
    async fn next_resolved(&self, ctx: &mut RequestRoute) -> Option<(usize, SocketAddr)> {
        loop {
            let index = self.registry.select(&ctx.tried)?;
            if let Some(found) = self.resolved(index, ctx).await {
                return Some(found);
            }
        }
    }

    /// Replica `index` (recorded as tried) with its address; `None` when its name does not
    /// resolve within the connect timeout.
    async fn resolved(&self, index: usize, ctx: &mut RequestRoute) -> Option<(usize, SocketAddr)> {
        ctx.tried.push(index);
        let replica = self.registry.replica(index);
        if let Ok(addr) = replica.authority.parse::<SocketAddr>() {
            // An address already (configured so, or discovered): nothing to resolve.
            return Some((index, addr));
        }
        let resolved = tokio::time::timeout(
            self.connect_timeout,
            self.resolver.resolve(&replica.authority),
        )
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "name resolution timed out",
            ))
        });
        match resolved {
            Ok(addr) => Some((index, addr)),
            Err(e) => {
                tracing::warn!(replica = %replica.name, authority = %replica.authority, error = %e, "replica name does not resolve; trying another");
                observability::resolve_failed(&replica.name);
                None
            }
        }
    }

    /// The replica just tried (`ctx.tried`'s last) failed before the client saw an answer:
    /// ends its session count, counts the failure and lets pingora retry if another replica
    /// can take the request.
    fn retry_elsewhere(&self, ctx: &mut RequestRoute, e: &mut Error, why: &'static str) {
        ctx.session = None;
        // Always set here: `upstream_peer` records a replica before pingora connects to it.
        let Some(&index) = ctx.tried.last() else {
            return;
        };
        let name = &self.registry.replica(index).name;
        observability::connect_failed(name);
        let another = self.registry.can_route(&ctx.tried);
        tracing::warn!(replica = %name, error = %e, retrying = another, "{why}");
        e.set_retry(another);
    }
}

#[async_trait]
impl ProxyHttp for StreamProxy {
    type CTX = RequestRoute;

    fn new_ctx(&self) -> Self::CTX {
        RequestRoute::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        if !session.is_upgrade_req() {
            // A broadcast's files are on the replica whose workers write them.
            let path = session.req_header().uri.path().to_string();
            if let Some(id) = broadcast_id(&path) {
                match self.broadcasts.owner(&self.registry, id).await {
                    Some(index) => ctx.broadcast_owner = Some(index),
                    None => {
                        let mut answer = ResponseHeader::build(http::StatusCode::NOT_FOUND, None)?;
                        answer.insert_header(http::header::CONTENT_LENGTH, "0")?;
                        session
                            .write_response_header(Box::new(answer), true)
                            .await?;
                        return Ok(true);
                    }
                }
            }
            return Ok(false);
        }
        let request = session.req_header();
        if let Err(refusal) = self.auth.check(&request.headers, request.uri.query()) {
            tracing::info!(reason = refusal.reason(), path = %request.uri.path(), "refusing an upgrade");
            framecast_common::auth::record_refusal(&refusal);
            crate::refusal::refuse_unauthorized(session, &refusal).await?;
            return Ok(true);
        }
        if !self.registry.can_route(&[]) {
            observability::no_replica();
            let message = if self.registry.is_draining() {
                tracing::info!("draining: refusing a new WebSocket session with 1013");
                "this router is shutting down; retry shortly"
            } else {
                tracing::warn!("no healthy replica: refusing a WebSocket session with 1013");
                "no replica is available right now; retry shortly"
            };
            crate::refusal::refuse_websocket(session, message).await?;
            return Ok(true);
        }
        if let Some(peer) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            let forwarded = session
                .req_header()
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok());
            let client = self.clients.client_ip(peer, forwarded);
            match self.clients.admit(client) {
                Ok(slot) => ctx.client = Some(slot),
                Err(refusal) => {
                    tracing::info!(%client, %refusal, "refusing a WebSocket session: client limit");
                    crate::refusal::refuse_client(session, &refusal.to_string()).await?;
                    return Ok(true);
                }
            }
        }
        // pingora's default downstream idle limit is 60 s; a paused stream may be quieter.
        session.set_read_timeout(Some(self.idle_timeout));
        session.set_write_timeout(Some(self.idle_timeout));
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let next = match ctx.broadcast_owner.take() {
            Some(owner) => self.resolved(owner, ctx).await,
            None => self.next_resolved(ctx).await,
        };
        let Some((index, addr)) = next else {
            observability::no_replica();
            if session.is_upgrade_req() && session.response_written().is_none() {
                // Nothing reached a replica yet: the client gets the refusal frame.
                crate::refusal::refuse_websocket(
                    session,
                    "no replica is available right now; retry shortly",
                )
                .await?;
                ctx.answered = true;
            }
            return Error::e_explain(ErrorType::ConnectNoRoute, "no healthy replica");
        };
        let replica = self.registry.replica(index);
        if session.is_upgrade_req() {
            if ctx.tried.len() == 1 {
                observability::session_routed(session.req_header().uri.path());
            }
            // Replaces (and so ends) the guard of a replica that failed to connect.
            ctx.session = Some(self.registry.open_session(index));
        }
        tracing::debug!(
            replica = %replica.name,
            path = %session.req_header().uri.path(),
            attempt = ctx.tried.len(),
            "routing request"
        );
        // An address, not the name: pingora would resolve a name synchronously and panic
        // when it does not resolve.
        let mut peer = HttpPeer::new(addr, replica.tls, replica.host.clone());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.idle_timeout = Some(self.idle_timeout);
        peer.options.read_timeout = Some(self.idle_timeout);
        peer.options.write_timeout = Some(self.idle_timeout);
        Ok(Box::new(peer))
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let websocket = session
            .req_header()
            .headers
            .get(http::header::UPGRADE)
            .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if websocket && upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            let protocol = Protocol::of_path(session.req_header().uri.path());
            ctx.upstream = Some(UpstreamWatch::new(protocol, self.client_frame_limit));
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The client's frame headers: if the replica drops the connection over one of them,
        // the client gets the replica's refusal, not a lost-replica error.
        if let (Some(watch), Some(chunk)) = (ctx.upstream.as_mut(), body.as_deref()) {
            watch.observe_client(chunk);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        let Some(watch) = ctx.upstream.as_mut() else {
            return Ok(None);
        };
        if let Some(chunk) = body.take() {
            // Whole frames only: a frame still arriving waits for its last byte.
            *body = Some(watch.forward(&chunk));
        }
        // The upgraded body ends only when the replica closes its side of the connection.
        if end_of_stream && let Some(last) = ctx.farewell(&"the replica closed the connection") {
            *body = Some(match body.take() {
                Some(chunk) if !chunk.is_empty() => {
                    let mut joined = BytesMut::from(chunk);
                    joined.extend_from_slice(&last);
                    joined.freeze()
                }
                _ => last,
            });
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the replica yet, so another one can take the request as is.
        self.retry_elsewhere(ctx, &mut e, "cannot connect to replica");
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // A handshake is a bodyless GET: until the replica's answer reaches the client,
        // nothing has happened that another replica could not redo.
        let unanswered_handshake = session.is_upgrade_req()
            && session.response_written().is_none()
            && !session.as_ref().retry_buffer_truncated();
        if unanswered_handshake {
            self.retry_elsewhere(ctx, &mut e, "replica dropped the handshake");
        } else if !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
        {
            // pingora's default policy for everything else.
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        if ctx.answered {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        // A reset or failed read of the replica's socket mid-tunnel ends here, not in the body
        // filter.
        if *e.esource() == ErrorSource::Upstream
            && let Some(last) = ctx.farewell(e)
        {
            if let Err(write) = session.write_response_body(Some(last), true).await {
                tracing::debug!(error = %write, "the client is gone too: no upstream-loss frames");
            }
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        default_failure(session, e).await
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Self::CTX) {
        let Some(guard) = ctx.session.take() else {
            return;
        };
        let outcome = if error.is_some() { "error" } else { "ok" };
        observability::session_closed(
            &guard.replica().name,
            outcome,
            session.body_bytes_sent(),
            session.body_bytes_read(),
        );
    }
}

/// pingora's default `fail_to_proxy`: an HTTP error status for the client when no response
/// was written yet (502 for an upstream fault), nothing when the client's connection is dead.
async fn default_failure(session: &mut Session, e: &Error) -> FailToProxy {
    let code = match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (_, ErrorSource::Upstream) => 502,
        (
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (_, ErrorSource::Downstream) => 400,
        (_, ErrorSource::Internal | ErrorSource::Unset) => 500,
    };
    if code > 0
        && let Err(write) = session.respond_error(code).await
    {
        tracing::error!(error = %write, "failed to send an error response to the client");
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}
