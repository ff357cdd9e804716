//! The router's settings: FastVideo's router YAML schema (`router:` block) plus Framecast's
//! extras (selection policy, timeouts, drain grace), checked field by field at load time.
//!
//! Misconfiguration must stop the process with a message naming the field, never surface
//! later as "no replica available" in the middle of a session.

use std::collections::HashSet;
use std::path::Path;

use framecast_common::auth::{AuthConfig, Authenticator};
use framecast_common::config::{
    ConfigError, FieldError, LayeredConfig, Validate, at_least_one, at_most_max_seconds, in_range,
    not_empty, positive_seconds,
};
use serde::{Deserialize, Serialize};
use url::Url;

/// Environment variables starting with this prefix (then `__`) override the file.
pub const ENV_PREFIX: &str = "FRAMECAST_ROUTER";

/// The router's configuration file: everything sits under `router:` as in FastVideo.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterFile {
    pub router: RouterConfig,
}

impl RouterFile {
    /// Loads defaults < `file` < `FRAMECAST_ROUTER__*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        LayeredConfig::new(ENV_PREFIX).file(file).load()
    }
}

impl Validate for RouterFile {
    fn validate(&self) -> Result<(), FieldError> {
        self.router.validate()
    }
}

/// How a session picks among healthy replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionPolicy {
    /// The healthy primary while it has free capacity, else the healthy replica with the
    /// most free capacity (ties: the primary, then configuration order).
    #[default]
    PrimaryFirst,
    /// The healthy replica with the fewest live sessions through this router per unit of
    /// `weight`; ties go to the primary, then to configuration order.
    LeastSessions,
    /// Healthy replicas in turn, each `weight` times per cycle (smooth weighted round
    /// robin, so a heavy replica's turns are spread out rather than bunched).
    RoundRobin,
}

/// Listener, replicas, health checks and tunnel policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on for clients: `/v1/stream` and the player, nothing else.
    pub port: u16,
    /// Address of the admin listener (`/status`, `/metrics`, `/healthz`, `/readyz`);
    /// `null` means `host`. Keep it off the public network.
    pub admin_host: Option<String>,
    /// Port of the admin listener; must differ from `port`.
    pub admin_port: u16,
    /// Who may open a WebSocket session: API keys, JWTs, allowed origins.
    pub auth: AuthConfig,
    /// The replica servers sessions are sent to.
    pub replicas: Vec<ReplicaEndpoint>,
    /// How replicas are probed and when they flip between healthy and unhealthy.
    pub health_check: HealthCheckConfig,
    pub selection: SelectionPolicy,
    /// Time allowed to open the TCP connection to a replica before trying another.
    pub connect_timeout_seconds: f64,
    /// A tunnel with no bytes either way for this long is closed.
    pub tunnel_idle_timeout_seconds: f64,
    /// On SIGTERM, open tunnels get this long to finish before the process exits.
    pub shutdown_grace_seconds: u64,
    /// Worker threads of the proxy runtime.
    pub threads: usize,
    /// Per-client-address limits on WebSocket sessions.
    pub client_limits: ClientLimitsConfig,
    /// Replicas found in DNS, besides (or instead of) `replicas`.
    pub discovery: DiscoveryConfig,
    /// The largest client message the replicas take (their `streaming.max_message_bytes`;
    /// keep the two equal). A replica drops a client that sends more, and a reset can swallow
    /// its refusal on the way: the router then gives the client that refusal itself
    /// (`invalid_message`, 1009) instead of reporting a lost replica.
    pub client_frame_limit_bytes: u64,
}

/// Replicas found in DNS: every address a name resolves to is a replica, and the name is
/// resolved again every health-check interval, so replicas come and go without a restart
/// (a Kubernetes headless Service's name lists its ready pods). A new address starts
/// `unknown` and takes sessions after a good probe; one that leaves the answer is retired:
/// no new sessions, its open ones go on. A failed lookup changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// The name to resolve (e.g. `framecast-replica-headless.video.svc.cluster.local`);
    /// `null`: no discovery.
    pub dns_name: Option<String>,
    /// Client port of every discovered replica.
    pub port: u16,
    /// Admin port (capacity is read there); `null`: `port`.
    pub admin_port: Option<u16>,
    /// Most addresses discovery keeps track of over the router's life (retired ones count),
    /// so a name that keeps changing cannot grow the router without bound.
    pub max_replicas: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            dns_name: None,
            port: 8000,
            admin_port: Some(8001),
            max_replicas: 256,
        }
    }
}

/// Limits per client address, checked before a session is routed. A refusal is the
/// protocol's `error {code: session_rejected, error_code: "ip_session_limit", retryable:
/// true}` and close 1013, which the Dreamverse web app understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientLimitsConfig {
    /// Open sessions one address may hold at once; 0 turns the limit off.
    pub max_sessions_per_ip: u32,
    /// Sessions one address may open per minute (closed ones count); 0 turns it off.
    pub new_sessions_per_ip_per_minute: u32,
    /// Proxies (IP addresses or CIDR networks, e.g. an ingress's pod network) whose
    /// `X-Forwarded-For` header names the client; from anyone else it is ignored.
    pub trusted_proxies: Vec<String>,
}

impl Default for ClientLimitsConfig {
    fn default() -> Self {
        Self {
            max_sessions_per_ip: 8,
            new_sessions_per_ip_per_minute: 60,
            trusted_proxies: Vec::new(),
        }
    }
}

impl ClientLimitsConfig {
    /// The trusted proxies as networks (a bare address is a /32 or /128); entries that do
    /// not parse are skipped here and refused by validation.
    pub fn trusted_networks(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|s| parse_network(s).ok())
            .collect()
    }
}

fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is neither an IP address nor a CIDR network"))
}

impl RouterConfig {
    /// `host:port` of the client listener (IPv6 literals bracketed).
    pub fn listen_address(&self) -> String {
        socket_address(&self.host, self.port)
    }

    /// `host:port` of the admin listener.
    pub fn admin_address(&self) -> String {
        socket_address(
            self.admin_host.as_deref().unwrap_or(&self.host),
            self.admin_port,
        )
    }
}

fn socket_address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 9000,
            admin_host: None,
            admin_port: 9001,
            auth: AuthConfig::default(),
            replicas: vec![ReplicaEndpoint {
                url: "http://127.0.0.1:8000".into(),
                admin_url: Some("http://127.0.0.1:8001".into()),
                name: Some("local".into()),
                primary: true,
                weight: 1,
            }],
            health_check: HealthCheckConfig::default(),
            selection: SelectionPolicy::default(),
            connect_timeout_seconds: 2.0,
            tunnel_idle_timeout_seconds: 300.0,
            shutdown_grace_seconds: 30,
            threads: 2,
            client_limits: ClientLimitsConfig::default(),
            discovery: DiscoveryConfig::default(),
            client_frame_limit_bytes: 1 << 20,
        }
    }
}

/// One replica server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaEndpoint {
    /// Base URL, scheme and authority only (`http://replica-0:8000`).
    pub url: String,
    /// Base URL of the replica's admin listener, where its capacity (`/status`) is read;
    /// `null` means `url` (a replica serving everything on one port, or a test double).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<String>,
    /// Label in `/status`, logs and metrics; defaults to the URL's `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Preferred while healthy; at most one replica may be primary.
    #[serde(default)]
    pub primary: bool,
    /// Relative share of sessions under weighted policies.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

impl ReplicaEndpoint {
    /// The replica's `host:port` (the port defaulted from the scheme).
    pub fn authority(&self) -> Result<String, FieldError> {
        let url = parse_replica_url(&self.url).map_err(|m| FieldError::new("url", m))?;
        // `host_str` keeps the brackets of an IPv6 literal, as an authority needs.
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        Ok(format!("{host}:{port}"))
    }

    /// Whether the replica is reached over TLS.
    pub fn uses_tls(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// The base URL of the admin listener (`admin_url`, else `url`).
    pub fn admin_base(&self) -> &str {
        self.admin_url.as_deref().unwrap_or(&self.url)
    }

    /// The label used in `/status`, logs and metrics.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.authority().ok())
            .unwrap_or_else(|| self.url.clone())
    }
}

/// Replica probing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path probed on every replica; HTTP status < 400 counts as success.
    pub path: String,
    /// Time between probe rounds.
    pub interval_seconds: f64,
    /// Time allowed for one probe.
    pub timeout_seconds: f64,
    /// Consecutive failures that turn a replica unhealthy.
    pub failure_threshold: u32,
    /// Consecutive successes that turn an unhealthy replica healthy again.
    pub recovery_threshold: u32,
    /// Path read after each successful probe for the replica's capacity (FastVideo's pool
    /// status: `available_gpus`, `queue_size`); `null` turns capacity reading off, and a
    /// replica whose capacity cannot be read is treated as having room.
    pub capacity_path: Option<String>,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            path: "/health".into(),
            interval_seconds: 5.0,
            timeout_seconds: 2.0,
            failure_threshold: 3,
            recovery_threshold: 2,
            capacity_path: Some("/status".into()),
        }
    }
}

fn parse_replica_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("`{raw}` must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{raw}` has no host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{raw}` must be scheme://host:port only, without a path, query or fragment"
        ));
    }
    Ok(url)
}

impl Validate for RouterConfig {
    fn validate(&self) -> Result<(), FieldError> {
        not_empty("router.host", &self.host)?;
        if let Some(admin_host) = &self.admin_host {
            not_empty("router.admin_host", admin_host)?;
        }
        if self.admin_port == self.port && self.port != 0 {
            return Err(FieldError::new(
                "router.admin_port",
                format!("must differ from router.port ({})", self.port),
            ));
        }
        Authenticator::from_config(&self.auth, "router.auth")?;
        if let Some(name) = &self.discovery.dns_name {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid {
                return Err(FieldError::new(
                    "router.discovery.dns_name",
                    format!(
                        "`{name}` is not a DNS name (e.g. framecast-replica-headless.video.svc.cluster.local)"
                    ),
                ));
            }
            at_least_one("router.discovery.port", self.discovery.port)?;
            if self.discovery.admin_port == Some(0) {
                return Err(FieldError::new(
                    "router.discovery.admin_port",
                    "must be a port (1 to 65535) or null",
                ));
            }
            in_range(
                "router.discovery.max_replicas",
                self.discovery.max_replicas,
                1,
                4096,
            )?;
        }
        at_least_one(
            "router.client_frame_limit_bytes",
            self.client_frame_limit_bytes,
        )?;
        if self.replicas.is_empty() && self.discovery.dns_name.is_none() {
            return Err(FieldError::new(
                "router.replicas",
                "at least one replica is required (or router.discovery.dns_name)",
            ));
        }
        let mut seen_urls = HashSet::new();
        let mut seen_names = HashSet::new();
        let mut primary: Option<usize> = None;
        for (i, replica) in self.replicas.iter().enumerate() {
            let field = |name: &str| format!("router.replicas[{i}].{name}");
            let url =
                parse_replica_url(&replica.url).map_err(|m| FieldError::new(field("url"), m))?;
            if let Some(admin) = &replica.admin_url {
                parse_replica_url(admin).map_err(|m| FieldError::new(field("admin_url"), m))?;
            }
            if !seen_urls.insert(url.as_str().to_string()) {
                return Err(FieldError::new(
                    field("url"),
                    format!("`{}` is listed more than once", replica.url),
                ));
            }
            if replica.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                return Err(FieldError::new(
                    field("name"),
                    "must not be empty when given",
                ));
            }
            if !seen_names.insert(replica.display_name()) {
                return Err(FieldError::new(
                    field("name"),
                    format!("`{}` is used by another replica", replica.display_name()),
                ));
            }
            at_least_one(&field("weight"), replica.weight)?;
            if replica.primary {
                if let Some(first) = primary {
                    return Err(FieldError::new(
                        field("primary"),
                        format!("only one replica may be primary (replicas[{first}] already is)"),
                    ));
                }
                primary = Some(i);
            }
        }
        for (i, proxy) in self.client_limits.trusted_proxies.iter().enumerate() {
            parse_network(proxy).map_err(|m| {
                FieldError::new(format!("router.client_limits.trusted_proxies[{i}]"), m)
            })?;
        }
        let hc = &self.health_check;
        if !hc.path.starts_with('/') {
            return Err(FieldError::new(
                "router.health_check.path",
                "must start with `/`",
            ));
        }
        positive_seconds("router.health_check.interval_seconds", hc.interval_seconds)?;
        positive_seconds("router.health_check.timeout_seconds", hc.timeout_seconds)?;
        at_least_one(
            "router.health_check.failure_threshold",
            hc.failure_threshold,
        )?;
        at_least_one(
            "router.health_check.recovery_threshold",
            hc.recovery_threshold,
        )?;
        positive_seconds(
            "router.connect_timeout_seconds",
            self.connect_timeout_seconds,
        )?;
        positive_seconds(
            "router.tunnel_idle_timeout_seconds",
            self.tunnel_idle_timeout_seconds,
        )?;
        if hc
            .capacity_path
            .as_deref()
            .is_some_and(|p| !p.starts_with('/'))
        {
            return Err(FieldError::new(
                "router.health_check.capacity_path",
                "must start with `/` (or be null to turn capacity reading off)",
            ));
        }
        at_least_one("router.threads", self.threads)?;
        // A longer grace overflows the drain deadline (`now + grace` panics on SIGTERM).
        at_most_max_seconds("router.shutdown_grace_seconds", self.shutdown_grace_seconds)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(url: &str) -> ReplicaEndpoint {
        ReplicaEndpoint {
            url: url.into(),
            admin_url: None,
            name: None,
            primary: false,
            weight: 1,
        }
    }

    fn config_with(replicas: Vec<ReplicaEndpoint>) -> RouterConfig {
        RouterConfig {
            replicas,
            ..RouterConfig::default()
        }
    }

    fn rejected_field(config: &RouterConfig) -> String {
        config
            .validate()
            .expect_err("config should be rejected")
            .field
    }

    #[test]
    fn defaults_are_valid_and_match_the_reference() {
        let c = RouterConfig::default();
        c.validate().unwrap();
        assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 9000));
        assert_eq!(
            c.health_check,
            HealthCheckConfig {
                path: "/health".into(),
                interval_seconds: 5.0,
                timeout_seconds: 2.0,
                failure_threshold: 3,
                recovery_threshold: 2,
                capacity_path: Some("/status".into()),
            }
        );
    }

    #[test]
    fn rejects_empty_replica_list() {
        assert_eq!(rejected_field(&config_with(vec![])), "router.replicas");
    }

    #[test]
    fn discovery_may_replace_the_list_and_its_fields_are_checked() {
        let mut c = config_with(vec![]);
        c.discovery.dns_name = Some("fc-framecast-replica-headless.video.svc.cluster.local".into());
        c.validate().unwrap();
        for (name, field) in [
            ("bad name", "router.discovery.dns_name"),
            ("a..b", "router.discovery.dns_name"),
            ("", "router.discovery.dns_name"),
        ] {
            let mut bad = c.clone();
            bad.discovery.dns_name = Some(name.into());
            assert_eq!(rejected_field(&bad), field, "{name:?}");
        }
        let mut bad = c.clone();
        bad.discovery.port = 0;
        assert_eq!(rejected_field(&bad), "router.discovery.port");
        let mut bad = c.clone();
        bad.discovery.admin_port = Some(0);
        assert_eq!(rejected_field(&bad), "router.discovery.admin_port");
        let mut bad = c;
        bad.discovery.max_replicas = 0;
        assert_eq!(rejected_field(&bad), "router.discovery.max_replicas");
    }

    #[test]
    fn rejects_bad_urls_naming_the_index() {
        for bad in [
            "ftp://a:1",
            "http://a:1/v1",
            "http://a:1?x=1",
            "http://a:1#frag",
            "not a url",
        ] {
            let c = config_with(vec![replica("http://ok:1"), replica(bad)]);
            assert_eq!(rejected_field(&c), "router.replicas[1].url", "{bad}");
        }
        let c = config_with(vec![replica("http://ok:1/")]);
        c.validate().expect("a bare trailing slash is not a path");
    }

    #[test]
    fn rejects_duplicate_urls_and_two_primaries() {
        let c = config_with(vec![replica("http://a:1"), replica("http://a:1/")]);
        assert_eq!(rejected_field(&c), "router.replicas[1].url");
        let mut a = replica("http://a:1");
        let mut b = replica("http://b:1");
        a.primary = true;
        b.primary = true;
        assert_eq!(
            rejected_field(&config_with(vec![a, b])),
            "router.replicas[1].primary"
        );
    }

    #[test]
    fn rejects_nonpositive_timings_and_zero_thresholds() {
        let mut c = RouterConfig::default();
        c.health_check.interval_seconds = 0.0;
        assert_eq!(rejected_field(&c), "router.health_check.interval_seconds");
        let mut c = RouterConfig::default();
        c.health_check.timeout_seconds = -1.0;
        assert_eq!(rejected_field(&c), "router.health_check.timeout_seconds");
        let mut c = RouterConfig::default();
        c.health_check.failure_threshold = 0;
        assert_eq!(rejected_field(&c), "router.health_check.failure_threshold");
        let mut c = RouterConfig::default();
        c.health_check.recovery_threshold = 0;
        assert_eq!(rejected_field(&c), "router.health_check.recovery_threshold");
    }

    #[test]
    fn every_selection_policy_is_accepted_and_capacity_path_is_checked() {
        for policy in [SelectionPolicy::LeastSessions, SelectionPolicy::RoundRobin] {
            let c = RouterConfig {
                selection: policy,
                ..RouterConfig::default()
            };
            c.validate().unwrap();
        }
        let mut c = RouterConfig::default();
        c.health_check.capacity_path = Some("status".into());
        assert_eq!(rejected_field(&c), "router.health_check.capacity_path");
        c.health_check.capacity_path = None;
        c.validate().unwrap();
    }

    #[test]
    fn authority_defaults_port_from_scheme() {
        assert_eq!(replica("http://a").authority().unwrap(), "a:80");
        assert_eq!(replica("https://a").authority().unwrap(), "a:443");
        assert_eq!(
            replica("http://10.0.0.1:8001").authority().unwrap(),
            "10.0.0.1:8001"
        );
        assert_eq!(
            replica("http://[::1]:8001").authority().unwrap(),
            "[::1]:8001"
        );
    }

    #[test]
    fn env_overrides_router_port() {
        let file: RouterFile = LayeredConfig::new(ENV_PREFIX)
            .env_vars([(
                "FRAMECAST_ROUTER__ROUTER__PORT".to_string(),
                "9100".to_string(),
            )])
            .load()
            .unwrap();
        assert_eq!(file.router.port, 9100);
    }
}
