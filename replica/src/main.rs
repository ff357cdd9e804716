//! `framecast-replica`: loads the layered configuration, checks libtorch and GStreamer, serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use framecast_common::startup;
use framecast_replica::config::{DeviceKind, ENV_PREFIX, PoolMode, ReplicaConfig};
use framecast_replica::generate::SegmentRequest;
use framecast_replica::pool::WorkerPool;
use framecast_replica::pool::in_process::InProcessPool;
use framecast_replica::pool::subprocess::{SubprocessPool, SubprocessSettings, WorkerCommand};
use framecast_replica::prompt::PromptService;
use framecast_replica::server::{self, AppState};
use framecast_replica::session::SessionContext;
use framecast_replica::{device, device_check, media};
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

    /// Load the model at generator.model_path on the CPU, checking model_index.json, every
    /// config and every tensor's name and shape against the configured geometry, print a
    /// summary as JSON and exit: 0 when the replica can serve it (for an init container that
    /// provisions the model before the replica starts).
    #[arg(long)]
    check_model: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run one generation worker process. The replica starts these itself when
    /// `pool.mode: subprocess`; they speak to it over their stdin (a Unix socket) and are not
    /// meant to be run by hand.
    Worker {
        /// The worker's slot in the pool.
        #[arg(long)]
        index: usize,
        /// Device override (`cpu`, `cuda`, `cuda:N`, `auto`); default: generator.device.
        #[arg(long, value_parser = parse_device)]
        device: Option<DeviceKind>,
    },
    /// Run the configured model (generator.model_path at generator.width x height, fps and
    /// frames_per_segment) for a few segments on one device and print timings as JSON; with
    /// --reference, also in fp32 on that device and compare the frames. Exits 1 when they
    /// differ by more than --max-mean-abs-diff. For proving a new GPU machine before it serves.
    DeviceCheck {
        /// The device under test (`cpu`, `cuda`, `cuda:N`, `auto`).
        #[arg(long, value_parser = parse_device, default_value = "auto")]
        device: DeviceKind,
        /// Its precision (`auto`: bf16 on CUDA, fp32 on the CPU, as serving does).
        #[arg(long, value_enum, default_value = "auto")]
        dtype: device_check::Dtype,
        /// Run the same segments in fp32 here and compare (e.g. `cpu`).
        #[arg(long, value_parser = parse_device)]
        reference: Option<DeviceKind>,
        /// Segments in the stream; the first is a warm-up when there are more.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
        segments: u32,
        /// Denoising steps per segment (default: generator.num_inference_steps).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        steps: Option<u32>,
        /// Classifier-free guidance (above 1 runs the transformer twice per step).
        #[arg(long, default_value_t = 1.0)]
        guidance_scale: f32,
        /// Noise seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The prompt of every segment.
        #[arg(long, default_value = "a red circle moving left on a blue background")]
        prompt: String,
        /// Largest mean absolute pixel difference (8-bit levels) from the reference that
        /// passes.
        #[arg(long, default_value_t = 4.0)]
        max_mean_abs_diff: f64,
    },
}

fn parse_device(s: &str) -> Result<DeviceKind, String> {
    DeviceKind::try_from(s.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    framecast_common::logging::init("info,tower_http=info");

    let config: ReplicaConfig =
        startup::load_or_exit("framecast-replica", cli.config.as_deref(), ENV_PREFIX);
    if let Some(Command::Worker { index, device }) = cli.command {
        let device = device.unwrap_or(config.generator.device);
        return match framecast_replica::worker_process::run(config, index, device) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("framecast-replica worker {index}: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::DeviceCheck {
        device,
        dtype,
        reference,
        segments,
        steps,
        guidance_scale,
        seed,
        prompt,
        max_mean_abs_diff,
    }) = cli.command
    {
        let check = device_check::CheckSettings {
            device,
            dtype,
            reference,
            segments,
            steps: steps.unwrap_or(config.generator.num_inference_steps),
            guidance_scale,
            seed,
            prompt,
            max_mean_abs_diff,
        };
        return match device_check::run(&config.generator, &check) {
            Ok(report) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
                if report.passed() {
                    ExitCode::SUCCESS
                } else {
                    eprintln!("framecast-replica device-check: frames differ beyond the tolerance");
                    ExitCode::from(1)
                }
            }
            Err(err) => {
                eprintln!("framecast-replica device-check: {err}");
                ExitCode::from(2)
            }
        };
    }
    if cli.check_config {
        return startup::check_config(&config);
    }
    if cli.check_model {
        return check_model(&config);
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("framecast-replica: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("framecast-replica: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-model`: loads the configured model as a worker would, on the CPU (an init
/// container has no GPU to spare), and reports whether it is usable.
fn check_model(config: &ReplicaConfig) -> ExitCode {
    let g = &config.generator;
    if g.kind == framecast_replica::config::GeneratorKind::Mock {
        println!(
            "{}",
            serde_json::json!({"ok": true, "kind": "mock", "note": "the mock generator has no model to check"})
        );
        return ExitCode::SUCCESS;
    }
    let format = framecast_replica::generate::StreamFormat {
        width: g.width,
        height: g.height,
        fps: g.fps,
        frames_per_segment: g.frames_per_segment,
        audio: None,
    };
    let blobs = Arc::new(framecast_replica::store::memory::MemoryBlobStore::new(
        1 << 20,
        std::time::Duration::from_secs(1),
    ));
    let started = std::time::Instant::now();
    match framecast_replica::generate::wan::generator::WanGenerator::load(
        &g.model_path,
        format,
        tch::Device::Cpu,
        blobs,
    ) {
        Ok(_) => {
            println!(
                "{}",
                serde_json::json!({
                    "ok": true,
                    "kind": "wan",
                    "model_path": g.model_path,
                    "format": {"width": g.width, "height": g.height, "fps": g.fps, "frames_per_segment": g.frames_per_segment},
                    "load_seconds": started.elapsed().as_secs_f64(),
                })
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "framecast-replica: generator.model_path `{}` cannot be served: {e}",
                g.model_path.display()
            );
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ReplicaConfig, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let metrics = framecast_common::metrics::install_recorder("replica")
        .context("installing the Prometheus recorder")?;
    framecast_replica::observability::describe();

    let listener = TcpListener::bind((config.server.host.as_str(), config.server.port))
        .await
        .with_context(|| format!("binding {}:{}", config.server.host, config.server.port))?;
    let local: SocketAddr = listener.local_addr()?;
    let admin_host = config
        .server
        .admin_host
        .clone()
        .unwrap_or_else(|| config.server.host.clone());
    let admin_listener = TcpListener::bind((admin_host.as_str(), config.server.admin_port))
        .await
        .with_context(|| {
            format!(
                "binding the admin listener {admin_host}:{}",
                config.server.admin_port
            )
        })?;
    let admin_local: SocketAddr = admin_listener.local_addr()?;
    framecast_common::auth::register_refusal_metric();

    // Device and media checks run before /readyz turns ready, so probes see the truth.
    // Worker processes own the GPUs; the server itself only proves libtorch loads.
    let device_kind = match config.pool.mode {
        PoolMode::InProcess => config.generator.device,
        PoolMode::Subprocess => DeviceKind::Cpu,
    };
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
    // In memory or in Redis (`store.backend`); a Redis store connects on first use, so the
    // replica starts, and serves sessions without resume, while Redis is down.
    let blobs = framecast_replica::store::blob_store(&config.store)
        .context("cannot build the blob store (the `store` section)")?;
    let states = framecast_replica::store::session_store(&config.store)
        .context("cannot build the session store (the `store` section)")?;
    tracing::info!(backend = ?config.store.backend, "session and blob stores");
    let devices: Vec<DeviceKind> = (0..config.pool.num_workers as usize)
        .map(|i| config.pool.device_of(i, config.generator.device))
        .collect();
    let pool: Arc<dyn WorkerPool> = match config.pool.mode {
        PoolMode::InProcess => {
            let generators = devices
                .iter()
                .map(|&device| {
                    let mut settings = config.generator.clone();
                    settings.device = device;
                    let generator = framecast_replica::generate::build(&settings, blobs.clone())?;
                    Ok((generator, device.to_string()))
                })
                .collect::<Result<Vec<_>, framecast_replica::generate::BuildError>>()
                .context("cannot load the generator")?;
            let pool = InProcessPool::on_devices(generators, config.pool.warmup);
            if config.pool.warmup {
                // /readyz stays 503 until a worker has generated a first and a continuation
                // segment.
                let (pool, request) = (pool.clone(), warmup_request(&config));
                tokio::task::spawn_blocking(move || {
                    let started = std::time::Instant::now();
                    let ready = pool.warm_up(&request);
                    tracing::info!(ready_workers = ready, elapsed = ?started.elapsed(), "warmup finished");
                });
            }
            Arc::new(pool)
        }
        PoolMode::Subprocess => {
            let mut args = Vec::new();
            if let Some(path) = &config_path {
                args.extend(["--config".to_string(), path.display().to_string()]);
            }
            let settings = SubprocessSettings {
                command: WorkerCommand {
                    program: std::env::current_exe().context("locating this executable")?,
                    args,
                },
                devices,
                warmup: config.pool.warmup.then(|| warmup_request(&config)),
                restart_backoff: std::time::Duration::from_secs(
                    config.pool.restart_backoff_seconds,
                ),
                stall_timeout: std::time::Duration::from_secs(config.pool.stall_timeout_seconds),
            };
            let pool = SubprocessPool::start(settings, blobs.clone())
                .await
                .context("cannot start the worker processes")?;
            Arc::new(pool)
        }
    };
    let mut sessions = SessionContext::with_stores(pool, config.clone(), states, blobs);
    sessions.prompts = PromptService::from_config(&config)
        .context("cannot build the prompt pipeline (the `prompt` section)")?;
    if sessions.prompts.llm_available() {
        let names: Vec<&str> = config
            .prompt
            .providers
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        tracing::info!(providers = ?names, "prompt pipeline on");
    }
    let state = AppState::new(checks, metrics, sessions);
    let app = server::router(state.clone());
    let admin_app = server::admin_router(state.clone());
    state.mark_ready();
    tracing::info!(address = %local, admin = %admin_local, "framecast-replica listening on http://{local}/ (admin: http://{admin_local}/)");

    // The admin listener outlives the drain, so probes and metrics see it through.
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin_listener, admin_app).await {
            tracing::error!(error = %e, "the admin listener stopped");
        }
    });
    let draining = state.clone();
    axum::serve(server::without_nagle(listener), app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            draining.drain().await;
        })
        .await
        .context("serving HTTP")?;
    tracing::info!("framecast-replica stopped");
    Ok(())
}

fn warmup_request(config: &ReplicaConfig) -> SegmentRequest {
    SegmentRequest {
        fresh_stream: false,
        checkpoint_max_bytes: None,
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
