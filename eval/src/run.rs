//! One eval run: record every prompt's stream (a few at a time), decode the recordings with
//! the prefetch pool while scoring them as they come, and write the report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::analyze::Palette;
use crate::client::{Recording, StreamPlan, record};
use crate::decode::decode_file;
use crate::pool::{PoolError, VideoPool};
use crate::report::{self, Report, Targets, Thumbnails};
use crate::score::{Aggregate, StreamScore, Timings, aggregate, score_stream};
use crate::world::EvalPrompt;

/// What to run.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// `ws://host:port/v1/stream`.
    pub url: String,
    pub palette: Palette,
    pub prompts: Vec<EvalPrompt>,
    /// Segments per stream, and the first segment with the switched prompt.
    pub segments: u32,
    pub switch_at: u32,
    /// Denoising steps; the server's default when `None`.
    pub steps: Option<u32>,
    /// Classifier-free guidance scale; the server's default when `None`.
    pub guidance_scale: Option<f32>,
    /// Streams recorded at once.
    pub concurrency: usize,
    /// Decoder threads, and decoded streams held at most while waiting to be scored.
    pub loader_threads: usize,
    pub prefetch: usize,
    pub stream_timeout: Duration,
    /// Where recordings and the report go.
    pub out: PathBuf,
    pub targets: Targets,
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub aggregate: Aggregate,
    pub missed_targets: Vec<&'static str>,
    pub report_dir: PathBuf,
}

/// Why a run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("decoder pool: {0}")]
    Pool(String),
    #[error("every stream failed; the first: {0}")]
    NothingRecorded(String),
}

fn plan(cfg: &EvalConfig, p: &EvalPrompt) -> StreamPlan {
    let prompts = (0..cfg.segments)
        .map(|i| {
            if i < cfg.switch_at {
                p.prompt.caption.clone()
            } else {
                p.switch_to.caption.clone()
            }
        })
        .collect();
    StreamPlan {
        url: cfg.url.clone(),
        prompts,
        seed: p.seed,
        steps: cfg.steps,
        guidance_scale: cfg.guidance_scale,
        timeout: cfg.stream_timeout,
    }
}

/// Records every stream, at most `concurrency` at once; results in prompt order.
async fn record_all(cfg: &EvalConfig) -> Vec<Result<Recording, String>> {
    let gate = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks = Vec::new();
    for p in &cfg.prompts {
        let plan = plan(cfg, p);
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            record(&plan).await.map_err(|e| e.to_string())
        }));
    }
    let mut out = Vec::new();
    for (p, t) in cfg.prompts.iter().zip(tasks) {
        let r = t.await.unwrap_or_else(|e| Err(format!("task failed: {e}")));
        match &r {
            Ok(rec) => tracing::info!(
                id = p.id,
                ttfm_ms = rec.time_to_first_media.as_millis() as u64,
                "stream recorded"
            ),
            Err(e) => tracing::warn!(id = p.id, error = %e, "stream failed"),
        }
        out.push(r);
    }
    out
}

/// Runs the eval; blocking (it starts its own runtime for the WebSocket part).
pub fn run(cfg: &EvalConfig) -> Result<Outcome, RunError> {
    let streams_dir = cfg.out.join("streams");
    let write_err = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source| RunError::Write { path, source }
    };
    std::fs::create_dir_all(&streams_dir).map_err(write_err(&streams_dir))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(write_err(&cfg.out))?;
    let recordings = runtime.block_on(record_all(cfg));
    let mut failures: Vec<(u32, String)> = Vec::new();
    // (prompt index, file, recording) of every stream that was recorded.
    let mut recorded = Vec::new();
    for (i, (p, r)) in cfg.prompts.iter().zip(recordings).enumerate() {
        match r {
            Ok(rec) => {
                let path = streams_dir.join(format!("{:03}.mp4", p.id));
                std::fs::write(&path, &rec.fmp4).map_err(write_err(&path))?;
                recorded.push((i, path, rec));
            }
            Err(e) => failures.push((p.id, e)),
        }
    }
    if recorded.is_empty() {
        let first = failures.first().map(|f| f.1.clone()).unwrap_or_default();
        return Err(RunError::NothingRecorded(first));
    }
    let paths: Vec<PathBuf> = recorded.iter().map(|r| r.1.clone()).collect();
    let pool = VideoPool::new(paths, cfg.loader_threads, cfg.prefetch, |path: &PathBuf| {
        decode_file(path)
    })
    .map_err(|e| RunError::Pool(e.to_string()))?;
    let mut scored: Vec<Option<(StreamScore, Thumbnails)>> = vec![None; recorded.len()];
    while let Some(item) = pool.get() {
        let (k, video) = match item {
            Ok(item) => item,
            Err(e) => {
                // A stream that does not decode is a failed stream, not a failed run.
                let id = match &e {
                    PoolError::Load { index, .. } => cfg.prompts[recorded[*index].0].id,
                    _ => return Err(RunError::Pool(e.to_string())),
                };
                failures.push((id, e.to_string()));
                continue;
            }
        };
        let (i, _, rec) = &recorded[k];
        let prompt = &cfg.prompts[*i];
        let fps = rec.frames_per_segment as usize;
        let timings = Timings {
            time_to_first_media_ms: rec.time_to_first_media.as_secs_f64() * 1000.0,
            realtime_factor: rec.realtime_factor(),
            generation_ms_mean: rec.generation_ms.iter().sum::<u64>() as f64
                / rec.generation_ms.len().max(1) as f64,
        };
        let score = score_stream(prompt, &video, fps, cfg.switch_at, &cfg.palette, timings);
        let frames = video
            .frames
            .chunks(fps.max(1))
            .filter(|c| c.len() == fps)
            .map(|c| c[fps / 2].clone())
            .collect();
        let thumbs = Thumbnails {
            width: video.width,
            height: video.height,
            frames,
        };
        scored[k] = Some((score, thumbs));
    }
    drop(pool);
    let (scores, thumbs): (Vec<StreamScore>, Vec<Thumbnails>) =
        scored.into_iter().flatten().unzip();
    let agg = aggregate(&scores, failures.len());
    let missed = cfg.targets.missed(&agg);
    let settings = serde_json::json!({
        "url": cfg.url,
        "streams": cfg.prompts.len(),
        "segments": cfg.segments,
        "switch_at": cfg.switch_at,
        "steps": cfg.steps,
        "guidance_scale": cfg.guidance_scale,
        "concurrency": cfg.concurrency,
        "loader_threads": cfg.loader_threads,
    });
    let report = Report {
        format: "framecast.eval.v1",
        settings,
        targets: cfg.targets,
        aggregate: &agg,
        missed_targets: missed.clone(),
        streams: &scores,
        failures: &failures,
    };
    report::write(&cfg.out, &report, &thumbs).map_err(write_err(&cfg.out))?;
    Ok(Outcome {
        aggregate: agg,
        missed_targets: missed,
        report_dir: cfg.out.clone(),
    })
}
