//! Assembles the pingora server from the router configuration.

use std::sync::Arc;
use std::time::Duration;

use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};

use metrics_exporter_prometheus::PrometheusHandle;
use pingora::services::background::background_service;

use crate::client_limits::ClientLimiter;
use crate::config::RouterConfig;
use crate::health::checker::HealthChecker;
use crate::proxy::StreamProxy;
use crate::registry::ReplicaRegistry;
use crate::shutdown::DrainingShutdown;

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A replica entry could not be resolved.
    #[error("invalid replica: {0}")]
    Replica(#[from] framecast_common::config::FieldError),
}

/// A configured router, ready to run.
pub struct RouterServer {
    server: Server,
    listen: String,
    registry: Arc<ReplicaRegistry>,
    grace: Duration,
}

impl std::fmt::Debug for RouterServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterServer")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl RouterServer {
    /// Builds the pingora server and its proxy service listening on `host:port`; `/metrics`
    /// renders `metrics` when given.
    pub fn new(
        config: &RouterConfig,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, StartError> {
        let registry = Arc::new(ReplicaRegistry::from_config(config)?);
        crate::observability::register_router();
        for replica in registry.all() {
            crate::observability::register_replica(&replica.name);
        }
        let conf = ServerConf {
            threads: config.threads,
            // The drain (crate::shutdown) already waited for the tunnels before pingora
            // hears of the shutdown; what is left is closed promptly.
            grace_period_seconds: Some(0),
            graceful_shutdown_timeout_seconds: Some(1),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();

        let checker = HealthChecker::new(registry.clone(), config.health_check.clone());
        server.add_service(background_service("health checks", checker));
        let proxy = StreamProxy::new(
            registry.clone(),
            metrics,
            Duration::from_secs_f64(config.connect_timeout_seconds),
            Duration::from_secs_f64(config.tunnel_idle_timeout_seconds),
            ClientLimiter::new(&config.client_limits),
        );
        let conf: Arc<ServerConf> = server.configuration.clone();
        let mut service = http_proxy_service_with_name(&conf, proxy, "framecast-router");
        let listen = if config.host.contains(':') {
            format!("[{}]:{}", config.host, config.port)
        } else {
            format!("{}:{}", config.host, config.port)
        };
        service.add_tcp(&listen);
        server.add_service(service);
        Ok(Self {
            server,
            listen,
            registry,
            grace: Duration::from_secs(config.shutdown_grace_seconds),
        })
    }

    /// The `host:port` the proxy listens on.
    pub fn listen_address(&self) -> &str {
        &self.listen
    }

    /// Runs until SIGTERM (drains: see [`crate::shutdown`]) or SIGINT (exits at once).
    pub fn run(self) {
        let signal = DrainingShutdown::new(self.registry.clone(), self.grace);
        self.server.run(RunArgs {
            shutdown_signal: Box::new(signal),
        });
    }

    /// Runs until `shutdown` says so; tests use this instead of Unix signals.
    pub fn run_with(self, run_args: RunArgs) {
        self.server.run(run_args);
    }
}
