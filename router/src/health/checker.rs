//! The health-check service: probes every replica concurrently each interval and records the
//! results (and the capacity read after each successful probe) in the registry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::HealthCheckConfig;
use crate::health::state::{HealthStatus, Thresholds};
use crate::registry::ReplicaRegistry;
use crate::resolve::{ForReqwest, Resolve};

/// Probes one replica: success is an HTTP status below 400 within `timeout`.
pub async fn probe(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    match client.get(url).timeout(timeout).send().await {
        Ok(r) if r.status().as_u16() < 400 => Ok(started.elapsed()),
        Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Err(format!("no answer within {timeout:?}")),
        Err(e) => Err(format!("unreachable: {e}")),
    }
}

/// The pingora background service that probes every replica each interval.
#[derive(Debug)]
pub struct HealthChecker {
    registry: Arc<ReplicaRegistry>,
    config: HealthCheckConfig,
    client: reqwest::Client,
}

impl HealthChecker {
    /// Probes the replicas of `registry` as `config` says, resolving their names with
    /// `resolver` (the proxy's, so a name that stops resolving fails the probes too).
    pub fn new(
        registry: Arc<ReplicaRegistry>,
        config: HealthCheckConfig,
        resolver: Arc<dyn Resolve>,
    ) -> Self {
        // A fresh connection per probe: a kept-alive one would keep a replica healthy after
        // its name stopped resolving (the pod was deleted) or its address changed.
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(ForReqwest(resolver)))
            .pool_max_idle_per_host(0)
            .build()
            .expect("a reqwest client with default TLS settings builds");
        Self {
            registry,
            config,
            client,
        }
    }

    /// One round: every replica probed concurrently (its capacity read right after a
    /// successful probe), results recorded.
    pub async fn probe_all(&self) {
        let timeout = Duration::from_secs_f64(self.config.timeout_seconds);
        let thresholds = Thresholds::from(&self.config);
        // Retired replicas (gone from DNS) are not probed.
        let live: Vec<(usize, &crate::registry::Replica)> = self
            .registry
            .all()
            .filter(|(i, _)| !self.registry.is_retired(*i))
            .collect();
        let probes = live.into_iter().map(|(i, replica)| {
            let base = replica.url.trim_end_matches('/');
            let url = format!("{base}{}", self.config.path);
            let admin = replica.admin_url.trim_end_matches('/');
            let capacity_url = self
                .config
                .capacity_path
                .as_ref()
                .map(|p| format!("{admin}{p}"));
            let client = &self.client;
            async move {
                let health = probe(client, &url, timeout).await;
                let capacity = match (&health, capacity_url) {
                    (Ok(_), Some(url)) => match crate::capacity::fetch(client, &url, timeout).await
                    {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::debug!(url, error = %e, "treating capacity as unknown");
                            None
                        }
                    },
                    _ => None,
                };
                (i, health, capacity)
            }
        });
        for (i, result, capacity) in futures_util::future::join_all(probes).await {
            let replica = self.registry.replica(i);
            let before = self.registry.health(i).status;
            let latency = result.as_ref().ok().copied();
            let after = self.registry.update_health(i, |h| match result {
                Ok(latency) => h.success(latency, thresholds),
                Err(e) => h.failure(e, thresholds),
            });
            self.registry.set_capacity(i, capacity);
            crate::observability::probed(&replica.name, after == HealthStatus::Healthy, latency);
            if before != after {
                tracing::info!(replica = %replica.name, from = ?before, to = ?after, "replica health changed");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let interval = Duration::from_secs_f64(self.config.interval_seconds);
        loop {
            self.probe_all().await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
