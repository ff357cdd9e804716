//! `framecast-eval --timing-only`: the serving figures of a stack whose model has nothing to be
//! scored against (a random-weight model on a new GPU, say): time to first media byte, the
//! realtime factor and the server's generation time per segment, with each stream's fMP4 kept.
//! Nothing is decoded, so it needs no H.264 decoder.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::client::{ClientError, Recording, StreamPlan, record};
use crate::score::median;

/// What to run.
#[derive(Debug, Clone)]
pub struct TimingConfig {
    /// `ws://host:port/v1/stream`.
    pub url: String,
    /// The prompt of every segment.
    pub prompt: String,
    /// Segments per stream (at least 2, for a realtime factor).
    pub segments: u32,
    /// Streams, one after another.
    pub streams: u32,
    /// Denoising steps; the server's default when `None`.
    pub steps: Option<u32>,
    /// Longest time one stream may take.
    pub timeout: Duration,
    /// Where `timing.json` and the recordings go.
    pub out: PathBuf,
}

/// One stream's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StreamTiming {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub frames_per_segment: u32,
    /// From `session_init_v2` to the first media byte.
    pub time_to_first_media_ms: f64,
    /// When each segment's media was complete, from `session_init_v2`.
    pub segment_done_ms: Vec<f64>,
    /// The server's generation time of each segment.
    pub generation_ms: Vec<u64>,
    /// Media seconds per wall second after the first segment (`None` with one segment).
    pub realtime_factor: Option<f64>,
    /// The recording's size and file name in the output folder.
    pub media_bytes: usize,
    pub recording: String,
}

/// `timing.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TimingReport {
    pub url: String,
    pub prompt: String,
    pub streams: Vec<StreamTiming>,
    /// Medians over the streams.
    pub median_time_to_first_media_ms: f64,
    pub median_realtime_factor: Option<f64>,
    /// Median over every segment after each stream's first.
    pub median_generation_ms: Option<f64>,
}

/// Why the run failed.
#[derive(Debug, thiserror::Error)]
pub enum TimingError {
    #[error("stream {stream}: {source}")]
    Stream { stream: u32, source: ClientError },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn timing(rec: &Recording, recording: String) -> StreamTiming {
    StreamTiming {
        width: rec.width,
        height: rec.height,
        fps: rec.fps,
        frames_per_segment: rec.frames_per_segment,
        time_to_first_media_ms: ms(rec.time_to_first_media),
        segment_done_ms: rec.segment_done.iter().copied().map(ms).collect(),
        generation_ms: rec.generation_ms.clone(),
        realtime_factor: rec.realtime_factor(),
        media_bytes: rec.fmp4.len(),
        recording,
    }
}

/// Records `cfg.streams` streams one after another and writes `timing.json`.
pub fn run_timing(cfg: &TimingConfig) -> Result<TimingReport, TimingError> {
    std::fs::create_dir_all(&cfg.out)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let plan = StreamPlan {
        url: cfg.url.clone(),
        prompts: vec![cfg.prompt.clone(); cfg.segments as usize],
        seed: 42,
        steps: cfg.steps,
        guidance_scale: None,
        timeout: cfg.timeout,
    };
    let mut streams = Vec::new();
    for stream in 0..cfg.streams {
        let rec = runtime
            .block_on(record(&plan))
            .map_err(|source| TimingError::Stream { stream, source })?;
        let name = format!("timing-{stream:02}.mp4");
        std::fs::write(cfg.out.join(&name), &rec.fmp4)?;
        streams.push(timing(&rec, name));
    }
    let report = TimingReport {
        url: cfg.url.clone(),
        prompt: cfg.prompt.clone(),
        median_time_to_first_media_ms: median(
            streams.iter().map(|s| s.time_to_first_media_ms).collect(),
        )
        .unwrap_or_default(),
        median_realtime_factor: median(streams.iter().filter_map(|s| s.realtime_factor).collect()),
        median_generation_ms: median(
            streams
                .iter()
                .flat_map(|s| s.generation_ms.iter().skip(1).map(|&g| g as f64))
                .collect(),
        ),
        streams,
    };
    std::fs::write(
        cfg.out.join("timing.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streams_figures_come_from_its_recording() {
        let rec = Recording {
            fmp4: vec![0; 10],
            width: 64,
            height: 48,
            fps: 12,
            frames_per_segment: 12,
            time_to_first_media: Duration::from_millis(150),
            segment_done: vec![Duration::from_millis(400), Duration::from_millis(900)],
            generation_ms: vec![300, 250],
        };
        let t = timing(&rec, "x.mp4".into());
        assert_eq!(t.time_to_first_media_ms, 150.0);
        assert_eq!(t.segment_done_ms, vec![400.0, 900.0]);
        assert!((t.realtime_factor.unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(t.media_bytes, 10);
    }

    #[test]
    fn medians_of_nothing_are_none() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
