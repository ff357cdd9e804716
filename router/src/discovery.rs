//! DNS discovery (`router.discovery`): resolves a name every health-check interval and hands
//! the answer to the registry, which adds new addresses as replicas (they start `unknown`
//! and take sessions after a good probe) and retires those that left (no new sessions; open
//! ones go on until they end). Kubernetes' headless Service name lists the ready pods of a
//! StatefulSet, so replicas added or removed by an autoscaler reach the router without a
//! restart. A failed lookup keeps the current set: a DNS hiccup must not retire every replica.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::DiscoveryConfig;
use crate::registry::ReplicaRegistry;
use crate::resolve::Resolve;

/// The pingora background service that keeps the registry in step with DNS.
#[derive(Debug)]
pub struct Discovery {
    registry: Arc<ReplicaRegistry>,
    name: String,
    config: DiscoveryConfig,
    interval: Duration,
    resolver: Arc<dyn Resolve>,
}

impl Discovery {
    /// Discovery of `config.dns_name` every `interval`; `None` when no name is configured.
    pub fn new(
        registry: Arc<ReplicaRegistry>,
        config: &DiscoveryConfig,
        interval: Duration,
        resolver: Arc<dyn Resolve>,
    ) -> Option<Self> {
        Some(Self {
            registry,
            name: config.dns_name.clone()?,
            config: config.clone(),
            interval,
            resolver,
        })
    }

    /// One lookup, its answer applied to the registry.
    pub async fn discover_once(&self) {
        let authority = format!("{}:{}", self.name, self.config.port);
        let found = match tokio::time::timeout(
            self.interval.max(Duration::from_secs(1)),
            self.resolver.resolve_all(&authority),
        )
        .await
        {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(name = %self.name, error = %e, "replica discovery lookup failed; keeping the replicas known");
                crate::observability::discovery_failed();
                return;
            }
            Err(_) => {
                tracing::warn!(name = %self.name, "replica discovery lookup timed out; keeping the replicas known");
                crate::observability::discovery_failed();
                return;
            }
        };
        let admin_port = self.config.admin_port.unwrap_or(self.config.port);
        let changes = self
            .registry
            .discover(&found, admin_port, self.config.max_replicas);
        for i in &changes.added {
            let replica = self.registry.replica(*i);
            crate::observability::register_replica(&replica.name);
            tracing::info!(replica = %replica.name, "replica discovered; probing it");
        }
        for i in &changes.retired {
            tracing::info!(replica = %self.registry.replica(*i).name, "replica left DNS; retired (no new sessions)");
        }
        for i in &changes.returned {
            tracing::info!(replica = %self.registry.replica(*i).name, "retired replica is back in DNS");
        }
        if changes.over_limit > 0 {
            tracing::warn!(
                skipped = changes.over_limit,
                max = self.config.max_replicas,
                "router.discovery.max_replicas reached; new addresses ignored"
            );
        }
        crate::observability::discovered(self.registry.len());
    }
}

#[async_trait]
impl BackgroundService for Discovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.discover_once().await;
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
