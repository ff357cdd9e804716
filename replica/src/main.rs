//! `framecast-replica`: loads the layered configuration, checks libtorch and GStreamer, serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use framecast_replica::config::ReplicaConfig;
use framecast_replica::generate::SegmentRequest;
use framecast_replica::pool::in_process::InProcessPool;
use framecast_replica::server::{self, AppState};
use framecast_replica::session::SessionContext;
use framecast_replica::{device, media};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Framecast replica: real-time text-to-video generation streamed as fragmented MP4.
///
/// Settings come from built-in defaults, then the YAML file given with --config, then
/// FRAMECAST_REPLICA__* environment variables (e.g. FRAMECAST_REPLICA__SERVER__PORT=8001).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// YAML configuration file (see config/replica.yaml for every field).
    #[arg(long, short, env = "FRAMECAST_REPLICA_CONFIG")]
    config: Option<PathBuf>,

    /// Load and validate the configuration, print the effective settings as JSON, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    framecast_common::logging::init("info,tower_http=info");

    let config = match ReplicaConfig::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("framecast-replica: {err}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!(
            "{}",
            serde_json::to_string_pretty(&config).expect("settings serialize")
        );
        return ExitCode::SUCCESS;
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("framecast-replica: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("framecast-replica: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ReplicaConfig) -> anyhow::Result<()> {
    let metrics = framecast_common::metrics::install_recorder("replica")
        .context("installing the Prometheus recorder")?;
    framecast_replica::observability::describe();

    let listener = TcpListener::bind((config.server.host.as_str(), config.server.port))
        .await
        .with_context(|| format!("binding {}:{}", config.server.host, config.server.port))?;
    let local: SocketAddr = listener.local_addr()?;

    // Device and media checks run before /readyz turns ready, so probes see the truth.
    let device_kind = config.generator.device;
    let checks = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let info = device::probe(device_kind)?;
        media::elements::init()?;
        media::elements::require(&media::elements::REQUIRED_VIDEO_ELEMENTS)?;
        tracing::info!(
            device = %info.label(),
            cuda_available = info.cuda_available,
            cuda_devices = info.cuda_device_count,
            gstreamer = %media::elements::gstreamer_version(),
            "libtorch and GStreamer ready"
        );
        Ok(info.label())
    })
    .await
    .context("start-up checks panicked")?
    .context("start-up checks failed")?;

    let config = Arc::new(config);
    let blobs: Arc<dyn framecast_replica::store::BlobStore> =
        Arc::new(framecast_replica::store::memory::MemoryBlobStore::from_config(&config));
    let generators = (0..config.pool.num_workers)
        .map(|_| framecast_replica::generate::build(&config.generator, blobs.clone()))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot load the generator")?;
    let pool = InProcessPool::new(generators, config.pool.warmup);
    let sessions = SessionContext::with_blobs(Arc::new(pool.clone()), config.clone(), blobs);
    let state = AppState::new(checks, metrics, sessions);
    let app = server::router(state.clone());
    state.mark_ready();
    if config.pool.warmup {
        // /readyz stays 503 until a worker has generated a first and a continuation segment.
        let request = warmup_request(&config);
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let ready = pool.warm_up(&request);
            tracing::info!(ready_workers = ready, elapsed = ?started.elapsed(), "warmup finished");
        });
    }
    tracing::info!(address = %local, "framecast-replica listening on http://{local}/");

    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("framecast-replica stopped");
    Ok(())
}

fn warmup_request(config: &ReplicaConfig) -> SegmentRequest {
    SegmentRequest {
        segment_idx: 0,
        prompt: "warmup".into(),
        negative_prompt: None,
        seed: 0,
        num_inference_steps: config.generator.num_inference_steps,
        guidance_scale: 1.0,
        initial_image: None,
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the replica");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}
