//! Replica health: a small state machine per replica, fed by probes that run concurrently
//! every interval.
//!
//! pingora starts backends healthy; we do not. A replica starts `unknown` and takes no
//! session until a probe succeeds; `failure_threshold` consecutive failures make it
//! `unhealthy`, and `recovery_threshold` consecutive successes make it `healthy` again.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;

use crate::config::HealthCheckConfig;
use crate::registry::ReplicaRegistry;

/// What the router believes about a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Not probed successfully yet: takes no sessions.
    Unknown,
    /// Takes sessions.
    Healthy,
    /// Failed `failure_threshold` probes in a row: takes no sessions.
    Unhealthy,
}

/// Probe history of one replica.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaHealth {
    /// Current verdict.
    pub status: HealthStatus,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// Successful probes in a row.
    pub consecutive_successes: u32,
    /// Unix time (seconds) of the last successful probe.
    pub last_ok_at: Option<f64>,
    /// Round trip of the last successful probe.
    pub last_latency_ms: Option<f64>,
    /// Why the last failed probe failed.
    pub last_error: Option<String>,
}

impl Default for ReplicaHealth {
    fn default() -> Self {
        Self {
            status: HealthStatus::Unknown,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last_ok_at: None,
            last_latency_ms: None,
            last_error: None,
        }
    }
}

/// The consecutive counts that flip a replica's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Failures in a row that make a replica unhealthy.
    pub failure: u32,
    /// Successes in a row that make an unhealthy replica healthy.
    pub recovery: u32,
}

impl From<&HealthCheckConfig> for Thresholds {
    fn from(c: &HealthCheckConfig) -> Self {
        Self {
            failure: c.failure_threshold,
            recovery: c.recovery_threshold,
        }
    }
}

impl ReplicaHealth {
    /// Records a successful probe that took `latency`.
    pub fn success(&mut self, latency: Duration, t: Thresholds) {
        self.consecutive_successes += 1;
        self.consecutive_failures = 0;
        self.last_latency_ms = Some(latency.as_secs_f64() * 1e3);
        self.last_ok_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64());
        self.status = match self.status {
            HealthStatus::Unknown | HealthStatus::Healthy => HealthStatus::Healthy,
            HealthStatus::Unhealthy if self.consecutive_successes >= t.recovery => {
                HealthStatus::Healthy
            }
            HealthStatus::Unhealthy => HealthStatus::Unhealthy,
        };
    }

    /// Records a failed probe.
    pub fn failure(&mut self, error: String, t: Thresholds) {
        self.consecutive_failures += 1;
        self.consecutive_successes = 0;
        self.last_error = Some(error);
        if self.consecutive_failures >= t.failure {
            self.status = HealthStatus::Unhealthy;
        }
    }

    /// Whether sessions may go to this replica.
    pub fn is_routable(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

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
    /// Probes the replicas of `registry` as `config` says.
    pub fn new(registry: Arc<ReplicaRegistry>, config: HealthCheckConfig) -> Self {
        Self {
            registry,
            config,
            client: reqwest::Client::new(),
        }
    }

    /// One round: every replica probed concurrently (its capacity read right after a
    /// successful probe), results recorded.
    pub async fn probe_all(&self) {
        let timeout = Duration::from_secs_f64(self.config.timeout_seconds);
        let thresholds = Thresholds::from(&self.config);
        let probes = self.registry.all().iter().enumerate().map(|(i, replica)| {
            let base = replica.url.trim_end_matches('/');
            let url = format!("{base}{}", self.config.path);
            let capacity_url = self
                .config
                .capacity_path
                .as_ref()
                .map(|p| format!("{base}{p}"));
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
            let replica = &self.registry.all()[i];
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

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        failure: 3,
        recovery: 2,
    };

    #[test]
    fn starts_unknown_and_a_first_success_makes_it_healthy() {
        let mut h = ReplicaHealth::default();
        assert!(!h.is_routable());
        h.success(Duration::from_millis(4), T);
        assert_eq!(h.status, HealthStatus::Healthy);
        assert_eq!(h.last_latency_ms, Some(4.0));
        assert!(h.last_ok_at.is_some());
    }

    #[test]
    fn exactly_failure_threshold_failures_make_it_unhealthy() {
        let mut h = ReplicaHealth::default();
        h.success(Duration::ZERO, T);
        h.failure("x".into(), T);
        h.failure("x".into(), T);
        assert_eq!(h.status, HealthStatus::Healthy, "2 of 3 failures");
        h.failure("refused".into(), T);
        assert_eq!(h.status, HealthStatus::Unhealthy);
        assert_eq!(h.last_error.as_deref(), Some("refused"));
    }

    #[test]
    fn exactly_recovery_threshold_successes_make_it_healthy_again() {
        let mut h = ReplicaHealth::default();
        for _ in 0..3 {
            h.failure("x".into(), T);
        }
        assert_eq!(
            h.status,
            HealthStatus::Unhealthy,
            "unknown replicas can fail too"
        );
        h.success(Duration::ZERO, T);
        assert_eq!(h.status, HealthStatus::Unhealthy, "1 of 2 successes");
        h.success(Duration::ZERO, T);
        assert_eq!(h.status, HealthStatus::Healthy);
    }

    #[test]
    fn a_failure_resets_the_success_streak() {
        let mut h = ReplicaHealth::default();
        for _ in 0..3 {
            h.failure("x".into(), T);
        }
        h.success(Duration::ZERO, T);
        h.failure("x".into(), T);
        h.success(Duration::ZERO, T);
        assert_eq!(h.status, HealthStatus::Unhealthy);
        assert_eq!(h.consecutive_successes, 1);
    }
}
