//! The replicas this router knows, resolved once from configuration, with the health the
//! [`crate::health::HealthChecker`] records for each; it answers which replica a new
//! session goes to.

use std::sync::{Mutex, MutexGuard};

use framecast_common::config::FieldError;
use serde::Serialize;

use crate::config::RouterConfig;
use crate::health::{HealthStatus, ReplicaHealth};

/// One replica, with its address already parsed out of the configured URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Label used in logs, `/status` and metrics.
    pub name: String,
    /// The configured base URL.
    pub url: String,
    /// `host:port` to connect to.
    pub authority: String,
    /// Host name sent as SNI when `tls` is set.
    pub host: String,
    /// Whether the replica is reached over TLS.
    pub tls: bool,
    /// Whether the replica is preferred.
    pub primary: bool,
}

/// All configured replicas, in configuration order, and their health.
#[derive(Debug)]
pub struct ReplicaRegistry {
    replicas: Vec<Replica>,
    health: Vec<Mutex<ReplicaHealth>>,
}

/// One replica's row in the router's `/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaStatus {
    /// Base URL.
    pub url: String,
    /// Label.
    pub name: String,
    /// Preferred while healthy.
    pub primary: bool,
    /// Probe history and verdict.
    #[serde(flatten)]
    pub health: ReplicaHealth,
}

impl ReplicaRegistry {
    /// Resolves every configured replica; fails on the first bad URL (validation already
    /// rejects those, so this only fails for configs that skipped validation).
    pub fn from_config(config: &RouterConfig) -> Result<Self, FieldError> {
        let replicas = config
            .replicas
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let authority = r.authority().map_err(|e| {
                    FieldError::new(format!("router.replicas[{i}].{}", e.field), e.message)
                })?;
                let host = authority
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                    .unwrap_or(&authority)
                    .to_string();
                Ok(Replica {
                    name: r.display_name(),
                    url: r.url.clone(),
                    authority,
                    host,
                    tls: r.uses_tls(),
                    primary: r.primary,
                })
            })
            .collect::<Result<Vec<_>, FieldError>>()?;
        let health = replicas.iter().map(|_| Mutex::default()).collect();
        Ok(Self { replicas, health })
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, ReplicaHealth> {
        self.health[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of replica `i`'s health.
    pub fn health(&self, i: usize) -> ReplicaHealth {
        self.lock(i).clone()
    }

    /// Applies `f` to replica `i`'s health; returns the status after it.
    pub fn update_health(&self, i: usize, f: impl FnOnce(&mut ReplicaHealth)) -> HealthStatus {
        let mut h = self.lock(i);
        f(&mut h);
        h.status
    }

    /// Whether any replica can take a session (drives `/readyz`).
    pub fn any_routable(&self) -> bool {
        (0..self.replicas.len()).any(|i| self.lock(i).is_routable())
    }

    /// Every replica with its health, for `/status`.
    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.replicas
            .iter()
            .enumerate()
            .map(|(i, r)| ReplicaStatus {
                url: r.url.clone(),
                name: r.name.clone(),
                primary: r.primary,
                health: self.health(i),
            })
            .collect()
    }

    /// The replica a new session goes to: the healthy primary, else the first healthy one.
    pub fn select(&self) -> Option<&Replica> {
        let routable: Vec<&Replica> = self
            .replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| self.lock(*i).is_routable())
            .map(|(_, r)| r)
            .collect();
        routable
            .iter()
            .find(|r| r.primary)
            .or_else(|| routable.first())
            .copied()
    }

    /// Every replica, in configuration order.
    pub fn all(&self) -> &[Replica] {
        &self.replicas
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReplicaEndpoint;

    fn endpoint(url: &str, primary: bool) -> ReplicaEndpoint {
        ReplicaEndpoint {
            url: url.into(),
            name: None,
            primary,
            weight: 1,
        }
    }

    fn healthy(registry: &ReplicaRegistry, i: usize) {
        registry.update_health(i, |h| h.success(std::time::Duration::ZERO, T));
    }

    fn down(registry: &ReplicaRegistry, i: usize) {
        for _ in 0..T.failure {
            registry.update_health(i, |h| h.failure("down".into(), T));
        }
    }

    const T: crate::health::Thresholds = crate::health::Thresholds {
        failure: 2,
        recovery: 1,
    };

    #[test]
    fn prefers_the_healthy_primary_wherever_it_is_listed() {
        let config = RouterConfig {
            replicas: vec![endpoint("http://a:1", false), endpoint("https://b:2", true)],
            ..RouterConfig::default()
        };
        let registry = ReplicaRegistry::from_config(&config).unwrap();
        assert!(
            registry.select().is_none(),
            "unknown replicas take no sessions"
        );
        healthy(&registry, 0);
        healthy(&registry, 1);
        let chosen = registry.select().unwrap();
        assert_eq!(chosen.authority, "b:2");
        assert!(chosen.tls);
        assert_eq!(chosen.host, "b");
        assert_eq!(chosen.name, "b:2");
    }

    #[test]
    fn falls_back_to_a_healthy_secondary_and_back() {
        let config = RouterConfig {
            replicas: vec![endpoint("http://a:1", true), endpoint("http://b:2", false)],
            ..RouterConfig::default()
        };
        let registry = ReplicaRegistry::from_config(&config).unwrap();
        healthy(&registry, 0);
        healthy(&registry, 1);
        assert_eq!(registry.select().unwrap().authority, "a:1");
        down(&registry, 0);
        assert_eq!(registry.select().unwrap().authority, "b:2");
        down(&registry, 1);
        assert!(registry.select().is_none());
        assert!(!registry.any_routable());
        healthy(&registry, 0);
        assert_eq!(registry.select().unwrap().authority, "a:1");
        let status = registry.status();
        assert_eq!(
            status[1].health.status,
            crate::health::HealthStatus::Unhealthy
        );
        assert_eq!(status[1].health.last_error.as_deref(), Some("down"));
    }
}
