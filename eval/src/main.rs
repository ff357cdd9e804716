//! `framecast-eval`: measures whether a running Framecast stack draws what it is told.
//!
//! ```text
//! framecast-eval --url ws://127.0.0.1:8080/v1/stream --model models/framecast-shapes --out target/eval
//! ```
//!
//! Exit status: 0 when the report was written (and, with `--require-targets`, every target
//! was met), 1 when targets were missed, 2 when the run could not be made.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use framecast_eval::report::Targets;
use framecast_eval::run::{EvalConfig, run};
use framecast_eval::timing::{TimingConfig, run_timing};
use framecast_eval::world::{load_palette, load_prompts};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Drives held-out prompts through a running Framecast stack and scores the video it streams."
)]
struct Args {
    /// The stream endpoint: the router's or a replica's `/v1/stream`.
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/stream")]
    url: String,
    /// The model directory whose `world.json` and `eval-prompts.json` define the prompts and
    /// colours.
    #[arg(long, default_value = "models/framecast-shapes")]
    model: PathBuf,
    /// A prompt set other than the model's `eval-prompts.json`.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Streams to run (the first N prompts of the set; 0: all).
    #[arg(long, default_value_t = 0)]
    streams: usize,
    /// Segments per stream.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=64))]
    segments: u32,
    /// First segment generated with the second prompt (default: half way).
    #[arg(long)]
    switch_at: Option<u32>,
    /// Denoising steps (default: the server's).
    #[arg(long)]
    steps: Option<u32>,
    /// Classifier-free guidance scale (default: the server's).
    #[arg(long)]
    guidance_scale: Option<f32>,
    /// Streams recorded at once (1 measures each stream's realtime factor alone).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    concurrency: u32,
    /// Decoder threads of the prefetch pool.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    loader_threads: u32,
    /// Decoded streams held at most, waiting to be scored.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    prefetch: u32,
    /// Longest time one stream may take, in seconds.
    #[arg(long, default_value_t = 300)]
    stream_timeout_seconds: u64,
    /// Where recordings, `eval.json` and `report.html` go.
    #[arg(long, default_value = "target/eval")]
    out: PathBuf,
    /// Exit with 1 when a target is missed.
    #[arg(long)]
    require_targets: bool,
    /// Only measure serving (time to first media, realtime factor, generation time) of
    /// --streams streams (default 1) of --prompt, writing `timing.json`: for models with no
    /// world to score against. Decodes nothing.
    #[arg(long)]
    timing_only: bool,
    /// The prompt of every segment with --timing-only.
    #[arg(long, default_value = "a red circle moving left on a blue background")]
    prompt: String,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "framecast_eval=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match eval(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("framecast-eval: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn eval(args: &Args) -> anyhow::Result<ExitCode> {
    if args.timing_only {
        let report = run_timing(&TimingConfig {
            url: args.url.clone(),
            prompt: args.prompt.clone(),
            segments: args.segments,
            streams: u32::try_from(args.streams.max(1)).unwrap_or(u32::MAX),
            steps: args.steps,
            timeout: Duration::from_secs(args.stream_timeout_seconds),
            out: args.out.clone(),
        })?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let palette = load_palette(&args.model.join("world.json"))?;
    let prompts_path = args
        .prompts
        .clone()
        .unwrap_or_else(|| args.model.join("eval-prompts.json"));
    let mut prompts = load_prompts(&prompts_path, &palette)?;
    if args.streams > 0 {
        prompts.truncate(args.streams);
    }
    let switch_at = args.switch_at.unwrap_or(args.segments / 2);
    anyhow::ensure!(
        (1..args.segments).contains(&switch_at),
        "--switch-at must be between 1 and {} (segments - 1)",
        args.segments - 1
    );
    let cfg = EvalConfig {
        url: args.url.clone(),
        palette,
        prompts,
        segments: args.segments,
        switch_at,
        steps: args.steps,
        guidance_scale: args.guidance_scale,
        concurrency: args.concurrency as usize,
        loader_threads: args.loader_threads as usize,
        prefetch: args.prefetch as usize,
        stream_timeout: Duration::from_secs(args.stream_timeout_seconds),
        out: args.out.clone(),
        targets: Targets::default(),
    };
    let outcome = run(&cfg)?;
    println!("{}", serde_json::to_string_pretty(&outcome.aggregate)?);
    eprintln!(
        "report: {}",
        outcome.report_dir.join("report.html").display()
    );
    if outcome.missed_targets.is_empty() {
        eprintln!("every target met");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("targets missed: {}", outcome.missed_targets.join(", "));
        Ok(if args.require_targets {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }
}
