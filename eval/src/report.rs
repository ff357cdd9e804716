//! The eval's output: `eval.json` (settings, aggregate, every stream's score) and
//! `report.html`, a self-contained contact sheet a person can look at: per stream, one frame
//! from the middle of each segment, marked pass or fail.

use std::fmt::Write as _;
use std::io::Cursor;
use std::path::Path;

use base64::Engine as _;
use serde::Serialize;

use crate::score::{Aggregate, StreamScore};

/// The targets the aggregate is checked against.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Targets {
    pub colour_adherence: f64,
    pub direction_adherence: f64,
    /// At most.
    pub seam_score: f64,
    /// Fraction of streams whose switch shows within one segment.
    pub switch_within_one_segment: f64,
    pub realtime_factor: f64,
}

impl Default for Targets {
    /// Issue 17's targets.
    fn default() -> Self {
        Self {
            colour_adherence: 0.9,
            direction_adherence: 0.8,
            seam_score: 1.5,
            switch_within_one_segment: 1.0,
            realtime_factor: 1.5,
        }
    }
}

impl Targets {
    /// Which targets the aggregate misses, by name.
    pub fn missed(&self, a: &Aggregate) -> Vec<&'static str> {
        let mut missed = Vec::new();
        if a.colour_adherence < self.colour_adherence {
            missed.push("colour_adherence");
        }
        if a.direction_adherence < self.direction_adherence {
            missed.push("direction_adherence");
        }
        if a.seam_score > self.seam_score {
            missed.push("seam_score");
        }
        if a.switch_within_one_segment < self.switch_within_one_segment {
            missed.push("switch_within_one_segment");
        }
        if a.realtime_factor_min < self.realtime_factor {
            missed.push("realtime_factor");
        }
        missed
    }
}

/// One stream's thumbnails for the contact sheet: RGB24 frames of `width` x `height`.
#[derive(Debug, Clone)]
pub struct Thumbnails {
    pub width: u32,
    pub height: u32,
    pub frames: Vec<Vec<u8>>,
}

/// The whole report, as written to `eval.json`.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub format: &'static str,
    pub settings: serde_json::Value,
    pub targets: Targets,
    pub aggregate: &'a Aggregate,
    pub missed_targets: Vec<&'static str>,
    pub streams: &'a [StreamScore],
    /// Streams that could not be recorded or decoded, with why.
    pub failures: &'a [(u32, String)],
}

/// Writes `eval.json` and `report.html` into `dir`.
pub fn write(dir: &Path, report: &Report<'_>, thumbs: &[Thumbnails]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("eval.json"), json + "\n")?;
    std::fs::write(dir.join("report.html"), html(report, thumbs))
}

fn png_data_uri(t: &Thumbnails, frame: &[u8]) -> Option<String> {
    let img = image::RgbImage::from_raw(t.width, t.height, frame.to_vec())?;
    // Small frames are scaled up without smoothing, so what is judged is what is seen.
    let scale = (128 / t.width.max(1)).max(1);
    let img = image::imageops::resize(
        &img,
        t.width * scale,
        t.height * scale,
        image::imageops::FilterType::Nearest,
    );
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .ok()?;
    Some(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn html(report: &Report<'_>, thumbs: &[Thumbnails]) -> String {
    let a = report.aggregate;
    let t = &report.targets;
    let mark = |ok: bool| if ok { "pass" } else { "fail" };
    let mut out = String::from(
        "<!doctype html><meta charset=utf-8><title>Framecast eval</title><style>\
         body{font:14px system-ui,sans-serif;margin:2em;background:#fafafa}\
         table{border-collapse:collapse}td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}\
         .pass{color:#070}.fail{color:#b00;font-weight:bold}\
         .stream{margin:1em 0;padding:.5em;background:#fff;border:1px solid #ddd}\
         .seg{display:inline-block;margin:2px;text-align:center;font-size:11px}\
         .seg img{display:block;border:3px solid #070;image-rendering:pixelated}\
         .seg.bad img{border-color:#b00}.seg.switch img{border-style:dashed}</style>\
         <h1>Framecast eval</h1>",
    );
    let rows = [
        (
            "colour adherence",
            pct(a.colour_adherence),
            format!("≥ {}", pct(t.colour_adherence)),
            a.colour_adherence >= t.colour_adherence,
        ),
        (
            "direction adherence",
            pct(a.direction_adherence),
            format!("≥ {}", pct(t.direction_adherence)),
            a.direction_adherence >= t.direction_adherence,
        ),
        (
            "seam score",
            format!("{:.2}", a.seam_score),
            format!("≤ {}", t.seam_score),
            a.seam_score <= t.seam_score,
        ),
        (
            "switch shown within 1 segment",
            pct(a.switch_within_one_segment),
            format!("≥ {}", pct(t.switch_within_one_segment)),
            a.switch_within_one_segment >= t.switch_within_one_segment,
        ),
        (
            "realtime factor (slowest stream)",
            format!("{:.2}", a.realtime_factor_min),
            format!("≥ {}", t.realtime_factor),
            a.realtime_factor_min >= t.realtime_factor,
        ),
    ];
    let _ = write!(
        out,
        "<p>{} streams scored, {} failed; time to first media (median) {:.0} ms; realtime factor (median) {:.2}.</p>\
         <table><tr><th>metric</th><th>measured</th><th>target</th><th></th></tr>",
        a.streams, a.failed_streams, a.time_to_first_media_ms_median, a.realtime_factor_median
    );
    for (name, got, want, ok) in rows {
        let _ = write!(
            out,
            "<tr><td>{name}</td><td>{got}</td><td>{want}</td><td class={}>{}</td></tr>",
            mark(ok),
            mark(ok)
        );
    }
    out.push_str("</table>");
    for (id, why) in report.failures {
        let _ = write!(out, "<p class=fail>stream {id} failed: {}</p>", escape(why));
    }
    out.push_str(
        "<h2>Contact sheet</h2><p>One frame from the middle of each segment. Green: colour and \
         motion as asked; red: not; dashed: the first segment after the prompt switch (judged by \
         the switch latency only).</p>",
    );
    for (s, th) in report.streams.iter().zip(thumbs) {
        let _ = write!(
            out,
            "<div class=stream><b>#{}</b> {} → <i>{}</i> (from segment {}) · colour {} · direction {} · seam {} · switch latency {}<br>",
            s.id,
            escape(&s.prompt),
            escape(&s.switch_to),
            s.switch_at,
            pct(s.colour_adherence),
            pct(s.direction_adherence),
            s.seam_score.map_or("n/a".into(), |x| format!("{x:.2}")),
            s.switch_latency_segments
                .map_or("never".into(), |l| l.to_string()),
        );
        for (v, frame) in s.segments.iter().zip(&th.frames) {
            let class = match (v.judged, v.colour_ok && v.motion_ok) {
                (false, _) => "seg switch",
                (true, true) => "seg",
                (true, false) => "seg bad",
            };
            let uri = png_data_uri(th, frame).unwrap_or_default();
            let _ = write!(
                out,
                "<div class='{class}'><img src='{uri}' alt='segment {}'>{}: {} {} on {}</div>",
                v.segment,
                v.segment,
                v.object_colour.as_deref().unwrap_or("?"),
                v.motion.as_deref().unwrap_or("?"),
                v.background.as_deref().unwrap_or("?"),
            );
        }
        out.push_str("</div>");
    }
    out
}
