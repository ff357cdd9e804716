//! The replicas this router knows, resolved once from configuration.
//!
//! Health state and capacity join each entry when health checking lands; until then the
//! registry only answers which replica a new session should go to.

use framecast_common::config::FieldError;

use crate::config::RouterConfig;

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

/// All configured replicas, in configuration order.
#[derive(Debug, Clone)]
pub struct ReplicaRegistry {
    replicas: Vec<Replica>,
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
        Ok(Self { replicas })
    }

    /// Every replica, in configuration order.
    pub fn all(&self) -> &[Replica] {
        &self.replicas
    }

    /// The replica a new session goes to: the primary, else the first configured.
    pub fn preferred(&self) -> Option<&Replica> {
        self.replicas
            .iter()
            .find(|r| r.primary)
            .or_else(|| self.replicas.first())
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

    #[test]
    fn prefers_the_primary_wherever_it_is_listed() {
        let config = RouterConfig {
            replicas: vec![endpoint("http://a:1", false), endpoint("https://b:2", true)],
            ..RouterConfig::default()
        };
        let registry = ReplicaRegistry::from_config(&config).unwrap();
        let chosen = registry.preferred().unwrap();
        assert_eq!(chosen.authority, "b:2");
        assert!(chosen.tls);
        assert_eq!(chosen.host, "b");
        assert_eq!(chosen.name, "b:2");
    }

    #[test]
    fn falls_back_to_the_first_without_a_primary() {
        let config = RouterConfig {
            replicas: vec![endpoint("http://a:1", false), endpoint("http://b:2", false)],
            ..RouterConfig::default()
        };
        let registry = ReplicaRegistry::from_config(&config).unwrap();
        assert_eq!(registry.preferred().unwrap().authority, "a:1");
    }
}
