//! Assembles the pingora server from the router configuration.

use std::sync::Arc;
use std::time::Duration;

use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};

use metrics_exporter_prometheus::PrometheusHandle;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use framecast_common::auth::Authenticator;

use crate::admin::AdminApp;
use crate::client_limits::ClientLimiter;
use crate::config::RouterConfig;
use crate::discovery::Discovery;
use crate::health::checker::HealthChecker;
use crate::proxy::StreamProxy;
use crate::registry::ReplicaRegistry;
use crate::resolve::{Resolve, SystemResolver};
use crate::shutdown::DrainingShutdown;

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A replica entry or the auth settings could not be loaded.
    #[error("invalid configuration: {0}")]
    Config(#[from] framecast_common::config::FieldError),
}

/// A configured router, ready to run.
pub struct RouterServer {
    server: Server,
    listen: String,
    admin_listen: String,
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
    /// Builds the pingora server: the proxy on `host:port`, the admin endpoints on
    /// `admin_host:admin_port` (`/metrics` renders `metrics` when given).
    pub fn new(
        config: &RouterConfig,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, StartError> {
        Self::with_resolver(config, metrics, Arc::new(SystemResolver))
    }

    /// [`RouterServer::new`] resolving replica names with `resolver` (probes and sessions
    /// alike) instead of the operating system's resolver.
    pub fn with_resolver(
        config: &RouterConfig,
        metrics: Option<PrometheusHandle>,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, StartError> {
        let registry = Arc::new(ReplicaRegistry::from_config(config)?);
        let auth = Authenticator::from_config(&config.auth, "router.auth")?;
        crate::observability::register_router();
        framecast_common::auth::register_refusal_metric();
        for (_, replica) in registry.all() {
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

        let checker = HealthChecker::new(
            registry.clone(),
            config.health_check.clone(),
            resolver.clone(),
        );
        server.add_service(background_service("health checks", checker));
        crate::observability::discovered(registry.len());
        if let Some(discovery) = Discovery::new(
            registry.clone(),
            &config.discovery,
            Duration::from_secs_f64(config.health_check.interval_seconds),
            resolver.clone(),
        ) {
            server.add_service(background_service("replica discovery", discovery));
        }
        let proxy = StreamProxy::new(
            registry.clone(),
            Duration::from_secs_f64(config.connect_timeout_seconds),
            Duration::from_secs_f64(config.tunnel_idle_timeout_seconds),
            ClientLimiter::new(&config.client_limits),
            auth,
            resolver,
            config.client_frame_limit_bytes,
        );
        let conf: Arc<ServerConf> = server.configuration.clone();
        let mut service = http_proxy_service_with_name(&conf, proxy, "framecast-router");
        let listen = config.listen_address();
        service.add_tcp(&listen);
        server.add_service(service);
        let mut admin = Service::new(
            "framecast-router admin".into(),
            AdminApp::new(registry.clone(), metrics),
        );
        let admin_listen = config.admin_address();
        admin.add_tcp(&admin_listen);
        server.add_service(admin);
        Ok(Self {
            server,
            listen,
            admin_listen,
            registry,
            grace: Duration::from_secs(config.shutdown_grace_seconds),
        })
    }

    /// The `host:port` the proxy listens on.
    pub fn listen_address(&self) -> &str {
        &self.listen
    }

    /// The `host:port` of the admin endpoints.
    pub fn admin_address(&self) -> &str {
        &self.admin_listen
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
