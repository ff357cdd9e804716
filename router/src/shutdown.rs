//! Graceful shutdown that drains instead of cutting sessions.
//!
//! pingora's own SIGTERM handling stops accepting at once and then sleeps a fixed grace
//! period. A video session lasts minutes, and an orchestrator needs to see the router go
//! unready before connections start failing, so on SIGTERM the router first *drains*:
//! `/readyz` answers 503 at once, new WebSocket sessions are refused with the protocol's
//! retryable `gpu_unavailable` + 1013, open tunnels keep flowing, and the process exits as
//! soon as the last tunnel closes or the grace period ends, whichever comes first.
//! SIGINT (or a second SIGTERM) exits at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::registry::ReplicaRegistry;

/// How often the drain checks whether the last tunnel has closed.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Waits for SIGTERM or SIGINT and drains the registry's sessions before telling pingora to
/// stop.
#[derive(Debug)]
pub struct DrainingShutdown {
    registry: Arc<ReplicaRegistry>,
    grace: Duration,
}

impl DrainingShutdown {
    /// Drains `registry` for at most `grace` on SIGTERM.
    pub fn new(registry: Arc<ReplicaRegistry>, grace: Duration) -> Self {
        Self { registry, grace }
    }
}

#[async_trait]
impl ShutdownSignalWatch for DrainingShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; shutdown will not drain");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting now");
                return ShutdownSignal::FastShutdown;
            }
        }
        self.registry.start_draining();
        let deadline = Instant::now() + self.grace;
        tracing::info!(
            open_sessions = self.registry.active_sessions(),
            grace_seconds = self.grace.as_secs_f64(),
            "SIGTERM: draining (readyz 503, new sessions refused)"
        );
        loop {
            let open = self.registry.active_sessions();
            if open == 0 {
                tracing::info!("drained: no open session left");
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    open_sessions = open,
                    "grace period over: closing the remaining sessions"
                );
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(DRAIN_POLL_INTERVAL) => {}
                _ = term.recv() => { tracing::info!("second SIGTERM: exiting now"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: exiting now"); break; }
            }
        }
        ShutdownSignal::GracefulTerminate
    }
}
