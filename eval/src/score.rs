//! Judging a decoded stream against its prompts, and the aggregate over the prompt set.
//!
//! A stream of S segments asks for prompt A for segments `0..switch_at` and prompt B after.
//! Colour adherence (object and background colour both right) and direction adherence are
//! judged per segment against the prompt in force; the first segment after the switch is
//! left to the switch latency instead (it starts from A's last frame by design). Switch
//! latency counts the segments generated with B until one shows B's colour and motion: 1
//! means the first one already does.

use serde::Serialize;

use crate::analyze::{ClipReading, Palette, read_clip, seam_score};
use crate::decode::DecodedVideo;
use crate::world::{EvalPrompt, Scene};

/// One segment's reading and verdict.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentVerdict {
    /// 0-based segment number.
    pub segment: u32,
    /// The caption in force.
    pub caption: String,
    /// What the analysis saw.
    pub object_colour: Option<String>,
    pub background: Option<String>,
    pub motion: Option<String>,
    /// Mean displacement in pixels per frame.
    pub velocity: (f32, f32),
    /// Object and background colour match the caption.
    pub colour_ok: bool,
    /// The background alone, and the object's colour alone (diagnostics).
    pub background_ok: bool,
    pub object_colour_ok: bool,
    /// Motion matches the caption.
    pub motion_ok: bool,
    /// Counted in the adherence figures (false for the first segment after the switch).
    pub judged: bool,
}

/// Everything measured about one stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamScore {
    /// The prompt set entry.
    pub id: u32,
    pub prompt: String,
    pub switch_to: String,
    /// First segment with the new prompt.
    pub switch_at: u32,
    pub segments: Vec<SegmentVerdict>,
    /// Fraction of judged segments with the right colours.
    pub colour_adherence: f64,
    /// Fraction of judged segments with the right motion.
    pub direction_adherence: f64,
    /// Frame difference across segment boundaries over the mean within segments.
    pub seam_score: Option<f64>,
    /// Segments generated with the new prompt until it shows; `None`: it never did.
    pub switch_latency_segments: Option<u32>,
    /// From `session_init_v2` to the first media byte.
    pub time_to_first_media_ms: f64,
    /// Media seconds per wall second while streaming.
    pub realtime_factor: Option<f64>,
    /// Mean server-side generation time per segment.
    pub generation_ms_mean: f64,
}

/// Timings of the recording a score carries along.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub time_to_first_media_ms: f64,
    pub realtime_factor: Option<f64>,
    pub generation_ms_mean: f64,
}

fn verdict(segment: u32, scene: &Scene, reading: &ClipReading, judged: bool) -> SegmentVerdict {
    let object_colour_ok = reading.object_colour.as_deref() == Some(scene.colour.as_str());
    let background_ok = reading.background.as_deref() == Some(scene.background.as_str());
    let colour_ok = object_colour_ok && background_ok;
    let motion_ok = reading.motion.is_some() && reading.motion == scene.motion();
    SegmentVerdict {
        segment,
        caption: scene.caption.clone(),
        object_colour: reading.object_colour.clone(),
        background: reading.background.clone(),
        motion: reading.motion.map(|m| m.as_str().to_string()),
        velocity: reading.velocity,
        colour_ok,
        background_ok,
        object_colour_ok,
        motion_ok,
        judged,
    }
}

/// Scores a decoded stream of `frames_per_segment`-frame segments.
pub fn score_stream(
    prompt: &EvalPrompt,
    video: &DecodedVideo,
    frames_per_segment: usize,
    switch_at: u32,
    palette: &Palette,
    timings: Timings,
) -> StreamScore {
    let frames: Vec<&[u8]> = video.frames.iter().map(Vec::as_slice).collect();
    let (w, h) = (video.width, video.height);
    let per = frames_per_segment.max(1);
    let mut segments = Vec::new();
    let mut latency = None;
    for (i, clip) in frames.chunks(per).enumerate() {
        if clip.len() < per {
            break; // a truncated tail is not a segment
        }
        let i = i as u32;
        let reading = read_clip(clip, w, h, palette);
        let (scene, judged) = if i < switch_at {
            (&prompt.prompt, true)
        } else {
            (&prompt.switch_to, i > switch_at)
        };
        let v = verdict(i, scene, &reading, judged);
        if i >= switch_at && latency.is_none() && v.colour_ok && v.motion_ok {
            latency = Some(i - switch_at + 1);
        }
        segments.push(v);
    }
    let judged: Vec<&SegmentVerdict> = segments.iter().filter(|s| s.judged).collect();
    let rate = |ok: fn(&SegmentVerdict) -> bool| {
        if judged.is_empty() {
            0.0
        } else {
            judged.iter().filter(|s| ok(s)).count() as f64 / judged.len() as f64
        }
    };
    StreamScore {
        id: prompt.id,
        prompt: prompt.prompt.caption.clone(),
        switch_to: prompt.switch_to.caption.clone(),
        switch_at,
        colour_adherence: rate(|s| s.colour_ok),
        direction_adherence: rate(|s| s.motion_ok),
        seam_score: seam_score(&frames, per, Some(switch_at as usize)),
        switch_latency_segments: latency,
        segments,
        time_to_first_media_ms: timings.time_to_first_media_ms,
        realtime_factor: timings.realtime_factor,
        generation_ms_mean: timings.generation_ms_mean,
    }
}

/// The figures the targets are set on, over every stream that was recorded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Aggregate {
    /// Streams scored / streams that failed to record or decode.
    pub streams: usize,
    pub failed_streams: usize,
    /// Over every judged segment of every stream.
    pub colour_adherence: f64,
    pub direction_adherence: f64,
    /// Its two halves: the background's colour, and the object's.
    pub background_adherence: f64,
    pub object_colour_adherence: f64,
    /// Mean of the streams' seam scores.
    pub seam_score: f64,
    /// Fraction of streams whose switch showed within one segment.
    pub switch_within_one_segment: f64,
    /// Mean switch latency over the streams whose switch showed.
    pub switch_latency_mean_segments: f64,
    pub time_to_first_media_ms_median: f64,
    /// The slowest stream's realtime factor, and the median.
    pub realtime_factor_min: f64,
    pub realtime_factor_median: f64,
}

/// The median (the mean of the middle two of an even count); `None` of nothing.
pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Aggregates the stream scores; failed streams count against nothing but are reported.
pub fn aggregate(scores: &[StreamScore], failed: usize) -> Aggregate {
    let judged: Vec<&SegmentVerdict> = scores
        .iter()
        .flat_map(|s| s.segments.iter().filter(|v| v.judged))
        .collect();
    let frac = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let latencies: Vec<f64> = scores
        .iter()
        .filter_map(|s| s.switch_latency_segments.map(f64::from))
        .collect();
    let rtf: Vec<f64> = scores.iter().filter_map(|s| s.realtime_factor).collect();
    Aggregate {
        streams: scores.len(),
        failed_streams: failed,
        colour_adherence: frac(judged.iter().filter(|v| v.colour_ok).count(), judged.len()),
        direction_adherence: frac(judged.iter().filter(|v| v.motion_ok).count(), judged.len()),
        background_adherence: frac(
            judged.iter().filter(|v| v.background_ok).count(),
            judged.len(),
        ),
        object_colour_adherence: frac(
            judged.iter().filter(|v| v.object_colour_ok).count(),
            judged.len(),
        ),
        seam_score: mean(
            &scores
                .iter()
                .filter_map(|s| s.seam_score)
                .collect::<Vec<_>>(),
        ),
        switch_within_one_segment: frac(
            scores
                .iter()
                .filter(|s| s.switch_latency_segments.is_some_and(|l| l <= 1))
                .count(),
            scores.len(),
        ),
        switch_latency_mean_segments: mean(&latencies),
        time_to_first_media_ms_median: median(
            scores.iter().map(|s| s.time_to_first_media_ms).collect(),
        )
        .unwrap_or(0.0),
        realtime_factor_min: rtf.iter().copied().reduce(f64::min).unwrap_or(0.0),
        realtime_factor_median: median(rtf).unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(colour_ok: bool, motion_ok: bool, judged: bool) -> SegmentVerdict {
        SegmentVerdict {
            segment: 0,
            caption: String::new(),
            object_colour: None,
            background: None,
            motion: None,
            velocity: (0.0, 0.0),
            colour_ok,
            background_ok: colour_ok,
            object_colour_ok: colour_ok,
            motion_ok,
            judged,
        }
    }

    fn stream(segments: Vec<SegmentVerdict>, latency: Option<u32>, rtf: f64) -> StreamScore {
        StreamScore {
            id: 0,
            prompt: String::new(),
            switch_to: String::new(),
            switch_at: 2,
            segments,
            colour_adherence: 0.0,
            direction_adherence: 0.0,
            seam_score: Some(1.0),
            switch_latency_segments: latency,
            time_to_first_media_ms: 100.0,
            realtime_factor: Some(rtf),
            generation_ms_mean: 1.0,
        }
    }

    #[test]
    fn aggregate_counts_judged_segments_and_switches() {
        let a = stream(
            vec![
                seg(true, true, true),
                seg(true, false, true),
                seg(false, false, false),
            ],
            Some(1),
            2.0,
        );
        let b = stream(vec![seg(false, true, true)], Some(2), 3.0);
        let c = stream(vec![seg(true, true, true)], None, 4.0);
        let agg = aggregate(&[a, b, c], 1);
        assert_eq!(agg.streams, 3);
        assert_eq!(agg.failed_streams, 1);
        assert!((agg.colour_adherence - 0.75).abs() < 1e-9);
        assert!((agg.background_adherence - 0.75).abs() < 1e-9);
        assert!((agg.direction_adherence - 0.75).abs() < 1e-9);
        assert!((agg.switch_within_one_segment - 1.0 / 3.0).abs() < 1e-9);
        assert!((agg.switch_latency_mean_segments - 1.5).abs() < 1e-9);
        assert_eq!(agg.realtime_factor_min, 2.0);
        assert_eq!(agg.realtime_factor_median, 3.0);
    }

    #[test]
    fn an_empty_run_aggregates_to_zeros_not_nan() {
        let agg = aggregate(&[], 2);
        assert_eq!(agg.colour_adherence, 0.0);
        assert_eq!(agg.realtime_factor_median, 0.0);
        assert!(agg.realtime_factor_min.is_finite());
    }
}
