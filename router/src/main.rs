//! `framecast-router`: loads the layered configuration and runs the pingora proxy.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use framecast_common::startup;
use framecast_router::config::{ENV_PREFIX, RouterFile};
use framecast_router::server::RouterServer;

/// Framecast router: health-gated front door for replica servers.
///
/// Settings come from built-in defaults, then the YAML file given with --config, then
/// FRAMECAST_ROUTER__* environment variables (e.g. FRAMECAST_ROUTER__ROUTER__PORT=9100).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// YAML configuration file (see config/router.yaml for every field).
    #[arg(long, short, env = "FRAMECAST_ROUTER_CONFIG")]
    config: Option<PathBuf>,

    /// Load and validate the configuration, print the effective settings as JSON, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    framecast_common::logging::init("info");

    let file: RouterFile =
        startup::load_or_exit("framecast-router", cli.config.as_deref(), ENV_PREFIX);
    if cli.check_config {
        return startup::check_config(&file);
    }
    let config = file.router;

    let metrics = match framecast_common::metrics::install_recorder("router") {
        Ok(handle) => {
            framecast_router::observability::describe();
            Some(handle)
        }
        Err(err) => {
            eprintln!("framecast-router: cannot install the metrics recorder: {err}");
            return ExitCode::FAILURE;
        }
    };
    let server = match RouterServer::new(&config, metrics) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("framecast-router: {err}");
            return ExitCode::from(startup::EXIT_INVALID_CONFIG);
        }
    };
    let replicas: Vec<String> = config
        .replicas
        .iter()
        .map(|r| format!("{}{}", r.url, if r.primary { " (primary)" } else { "" }))
        .collect();
    tracing::info!(
        listen = %server.listen_address(),
        admin = %server.admin_address(),
        replicas = ?replicas,
        "framecast-router starting"
    );
    server.run();
    ExitCode::SUCCESS
}
