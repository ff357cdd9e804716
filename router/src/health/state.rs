//! The health state machine of one replica, fed probe results by the health checker.
//!
//! Pure bookkeeping: no I/O, no registry, no runtime. A replica starts `unknown` and takes no
//! session until a probe succeeds; `failure_threshold` consecutive failures make it
//! `unhealthy`, and `recovery_threshold` consecutive successes make it `healthy` again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::HealthCheckConfig;

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
    pub status: HealthStatus,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// Unix time (seconds) of the last successful probe.
    pub last_ok_at: Option<f64>,
    /// Round trip of the last successful probe; failed probes leave it as it was.
    pub last_latency_ms: Option<f64>,
    /// Why the last failed probe failed; successes leave it as it was.
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
    fn from(config: &HealthCheckConfig) -> Self {
        Self {
            failure: config.failure_threshold,
            recovery: config.recovery_threshold,
        }
    }
}

impl ReplicaHealth {
    /// Records a successful probe that took `latency`.
    pub fn success(&mut self, latency: Duration, thresholds: Thresholds) {
        self.consecutive_successes += 1;
        self.consecutive_failures = 0;
        self.last_latency_ms = Some(latency.as_secs_f64() * 1e3);
        self.last_ok_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64());
        self.status = match self.status {
            HealthStatus::Unknown | HealthStatus::Healthy => HealthStatus::Healthy,
            HealthStatus::Unhealthy if self.consecutive_successes >= thresholds.recovery => {
                HealthStatus::Healthy
            }
            HealthStatus::Unhealthy => HealthStatus::Unhealthy,
        };
    }

    /// Records a failed probe.
    pub fn failure(&mut self, error: String, thresholds: Thresholds) {
        self.consecutive_failures += 1;
        self.consecutive_successes = 0;
        self.last_error = Some(error);
        if self.consecutive_failures >= thresholds.failure {
            self.status = HealthStatus::Unhealthy;
        }
    }

    /// Whether sessions may go to this replica.
    pub fn is_routable(&self) -> bool {
        self.status == HealthStatus::Healthy
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
