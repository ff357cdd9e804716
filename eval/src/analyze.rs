//! Reads a decoded clip of the shapes world: which colour the object is, what the
//! background is, and which way the object moves.
//!
//! A clip shows one flat-coloured object (about a fifth of the frame across) on a flat
//! background, moving steadily or standing still. The world wraps around: an object leaving
//! on one side re-enters on the other and may be split across the edges, so positions are
//! circular means per axis and frame-to-frame steps are wrapped into `[-W/2, W/2)`. The
//! frames come from a small generative model through H.264, blurry and noisy, so every
//! estimate is a median or a majority rather than a single pixel or frame.

use std::f32::consts::TAU;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The smallest colour distance (Euclidean, in RGB units) from the background that counts as
/// object. The closest object/background pair of the standard palette (purple on gray) is
/// 116 apart, so this sits well inside any real contrast.
const MIN_CONTRAST: f32 = 40.0;

/// How far above the frame's typical distance from the background (its noise) a pixel must
/// be to count as object: about 6 sigma of Gaussian noise, so noise alone rarely passes.
const NOISE_FACTOR: f32 = 4.0;

/// The smallest object, as a fraction of the frame: an eighth of the expected object's
/// area, so a half-washed-out object still counts while specks of noise do not.
const MIN_OBJECT_FRACTION: f32 = 0.004;

/// Below this speed, in fractions of the frame's smaller side per frame, an object stands
/// still: 0.38 px a frame at 64 px, a third of the slowest motion of the shapes world
/// (1.1 px a frame) and well above the jitter of a still object's centroid.
const STILL_SPEED: f32 = 0.006;

/// The fewest frame-to-frame steps a motion verdict rests on.
const MIN_STEPS: usize = 2;

/// Named colours the readings are matched against; the eval fills it from the world's
/// description so that names here are the names in the captions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Palette {
    pub objects: Vec<(String, [u8; 3])>,
    pub backgrounds: Vec<(String, [u8; 3])>,
}

impl Palette {
    /// The object colour nearest `rgb`; `None` only for a palette without object colours.
    pub fn nearest_object(&self, rgb: [u8; 3]) -> Option<&str> {
        nearest(&self.objects, rgb)
    }

    /// The background colour nearest `rgb`; `None` only for a palette without backgrounds.
    pub fn nearest_background(&self, rgb: [u8; 3]) -> Option<&str> {
        nearest(&self.backgrounds, rgb)
    }
}

fn nearest(colours: &[(String, [u8; 3])], rgb: [u8; 3]) -> Option<&str> {
    colours
        .iter()
        .min_by_key(|(_, c)| distance2(*c, rgb))
        .map(|(name, _)| name.as_str())
}

/// Which way an object moves, in image terms: up is towards row 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Motion {
    Left,
    Right,
    Up,
    Down,
    Still,
}

impl Motion {
    /// The word captions use.
    pub fn as_str(self) -> &'static str {
        match self {
            Motion::Left => "left",
            Motion::Right => "right",
            Motion::Up => "up",
            Motion::Down => "down",
            Motion::Still => "still",
        }
    }

    /// Classifies a velocity in pixels per frame. The still threshold scales with the
    /// frame's smaller side, so the same world rendered larger reads the same.
    pub fn from_velocity((vx, vy): (f32, f32), width: u32, height: u32) -> Motion {
        let side = width.min(height) as f32;
        if vx.hypot(vy) < STILL_SPEED * side {
            Motion::Still
        } else if vx.abs() >= vy.abs() {
            if vx < 0.0 {
                Motion::Left
            } else {
                Motion::Right
            }
        } else if vy < 0.0 {
            Motion::Up
        } else {
            Motion::Down
        }
    }
}

impl fmt::Display for Motion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names no [`Motion`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown motion {0:?} (expected left, right, up, down or still)")]
pub struct ParseMotionError(pub String);

impl FromStr for Motion {
    type Err = ParseMotionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "left" => Ok(Motion::Left),
            "right" => Ok(Motion::Right),
            "up" => Ok(Motion::Up),
            "down" => Ok(Motion::Down),
            "still" => Ok(Motion::Still),
            _ => Err(ParseMotionError(s.to_string())),
        }
    }
}

/// What one frame shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FrameReading {
    /// The per-channel median of all pixels: the object covers far less than half the frame.
    pub background: [u8; 3],
    /// The median colour of the object's core; `None` when nothing object-sized stands out.
    pub object: Option<[u8; 3]>,
    /// The object's centre `(x, y)` in pixels, a circular mean per axis so that an object
    /// split across the edges is placed where it is, not in the middle of the frame.
    pub centroid: Option<(f32, f32)>,
    /// The fraction of the frame nearer the object's colour than the background's.
    pub area_fraction: f32,
}

/// Reads one RGB24 frame, `width * 3` bytes a row. A buffer too short for its size reads as
/// an empty frame rather than panicking.
pub fn read_frame(rgb: &[u8], width: u32, height: u32) -> FrameReading {
    let (w, h) = (width as usize, height as usize);
    let n = w * h;
    if n == 0 || rgb.len() < n * 3 {
        return FrameReading::default();
    }
    let pixels: Vec<[u8; 3]> = rgb[..n * 3]
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    let background = channel_medians(pixels.iter().copied()).unwrap_or_default();
    let empty = FrameReading {
        background,
        ..FrameReading::default()
    };

    // Distances from the background; their median is the noise, as most pixels are background.
    let dist: Vec<f32> = pixels.iter().map(|&p| distance(p, background)).collect();
    let noise = median(dist.clone()).unwrap_or(0.0);
    let threshold = MIN_CONTRAST.max(NOISE_FACTOR * noise);
    let mask: Vec<bool> = dist.iter().map(|&d| d > threshold).collect();
    let component = largest_component(&mask, w, h);
    if (component.len() as f32) < MIN_OBJECT_FRACTION * n as f32 {
        return empty;
    }

    // The core (the half of the component farthest from the background) gives the colour,
    // free of the blurred rim that mixes object and background.
    let rim = median(component.iter().map(|&i| dist[i]).collect()).unwrap_or(0.0);
    let object = channel_medians(
        component
            .iter()
            .filter(|&&i| dist[i] >= rim)
            .map(|&i| pixels[i]),
    );
    let Some(object) = object else {
        return empty;
    };
    // A blurred edge pixel is a mix of the two colours; the object ends where the mix is
    // half object, so area and centre do not depend on how blurry the frame is.
    let cut = threshold.max(distance(object, background) / 2.0);
    let body: Vec<usize> = component
        .iter()
        .copied()
        .filter(|&i| dist[i] >= cut)
        .collect();
    let body = if body.is_empty() { component } else { body };
    FrameReading {
        background,
        object: Some(object),
        centroid: Some((
            circular_mean(body.iter().map(|&i| i % w), w),
            circular_mean(body.iter().map(|&i| i / w), h),
        )),
        area_fraction: body.len() as f32 / n as f32,
    }
}

/// What a clip shows, to be compared with its caption.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClipReading {
    /// The palette name most frames' object is nearest to.
    pub object_colour: Option<String>,
    /// The palette name most frames' background is nearest to.
    pub background: Option<String>,
    /// `None` when too few consecutive frames show the object to tell.
    pub motion: Option<Motion>,
    /// The median wrapped step between consecutive frames, pixels per frame: a median, so
    /// that a frame where the object is misread (or a jump at a segment seam) does not
    /// swing the verdict.
    pub velocity: (f32, f32),
}

/// Reads a clip of RGB24 frames of one size.
pub fn read_clip(frames: &[&[u8]], width: u32, height: u32, palette: &Palette) -> ClipReading {
    let readings: Vec<FrameReading> = frames
        .iter()
        .map(|f| read_frame(f, width, height))
        .collect();
    let background = majority(
        &palette.backgrounds,
        readings
            .iter()
            .filter_map(|r| palette.nearest_background(r.background)),
    );
    let object_colour = majority(
        &palette.objects,
        readings
            .iter()
            .filter_map(|r| r.object.and_then(|o| palette.nearest_object(o))),
    );

    let (w, h) = (width as f32, height as f32);
    let steps: Vec<(f32, f32)> = readings
        .windows(2)
        .filter_map(|pair| Some((pair[0].centroid?, pair[1].centroid?)))
        .map(|((x0, y0), (x1, y1))| (wrap(x1 - x0, w), wrap(y1 - y0, h)))
        .collect();
    let velocity = (steps.len() >= MIN_STEPS).then(|| {
        let vx = median(steps.iter().map(|s| s.0).collect()).unwrap_or(0.0);
        let vy = median(steps.iter().map(|s| s.1).collect()).unwrap_or(0.0);
        (vx, vy)
    });
    ClipReading {
        object_colour,
        background,
        motion: velocity.map(|v| Motion::from_velocity(v, width, height)),
        velocity: velocity.unwrap_or_default(),
    }
}

/// How abrupt the steps across segment boundaries are compared with the steps within
/// segments: the mean absolute pixel difference from frame `k * segment_len - 1` to
/// `k * segment_len`, over the mean within segments. About 1 when a continuation picks up
/// where the previous segment left off; well above 1 when it jumps. The boundary before
/// segment `switch_at` (where a prompt switch starts) is left out: there the scene is meant
/// to change, and counting it would reward a model that ignores the switch. `None` with no
/// continuation boundary, no step within a segment, or no change within segments to compare
/// against.
pub fn seam_score(frames: &[&[u8]], segment_len: usize, switch_at: Option<usize>) -> Option<f64> {
    if segment_len == 0 {
        return None;
    }
    let (mut seams, mut within) = (Vec::new(), Vec::new());
    for (i, pair) in frames.windows(2).enumerate() {
        let boundary = (i + 1) % segment_len == 0;
        if boundary && Some((i + 1) / segment_len) == switch_at {
            continue;
        }
        let step = mean_abs_diff(pair[0], pair[1]);
        if boundary {
            seams.push(step);
        } else {
            within.push(step);
        }
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let (seam, within) = (mean(&seams)?, mean(&within)?);
    (within > 0.0).then(|| seam / within)
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    sum as f64 / n as f64
}

fn distance2(a: [u8; 3], b: [u8; 3]) -> u32 {
    a.iter()
        .zip(b)
        .map(|(&x, y)| u32::from(x.abs_diff(y)).pow(2))
        .sum()
}

fn distance(a: [u8; 3], b: [u8; 3]) -> f32 {
    (distance2(a, b) as f32).sqrt()
}

/// The per-channel median, by histogram; `None` for no pixels.
fn channel_medians(pixels: impl Iterator<Item = [u8; 3]>) -> Option<[u8; 3]> {
    let mut histograms = [[0u32; 256]; 3];
    let mut count = 0u32;
    for p in pixels {
        for c in 0..3 {
            histograms[c][usize::from(p[c])] += 1;
        }
        count += 1;
    }
    if count == 0 {
        return None;
    }
    let half = count.div_ceil(2);
    Some(histograms.map(|hist| {
        let mut seen = 0;
        let position = hist.iter().position(|&k| {
            seen += k;
            seen >= half
        });
        position.unwrap_or(255) as u8
    }))
}

fn median(mut values: Vec<f32>) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f32::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The most common name, ties going to the one listed first in the palette.
fn majority<'a>(
    colours: &[(String, [u8; 3])],
    names: impl Iterator<Item = &'a str>,
) -> Option<String> {
    let mut counts = vec![0usize; colours.len()];
    for name in names {
        if let Some(i) = colours.iter().position(|(n, _)| n == name) {
            counts[i] += 1;
        }
    }
    let (best, &count) = counts.iter().enumerate().rev().max_by_key(|&(_, k)| k)?;
    (count > 0).then(|| colours[best].0.clone())
}

/// `d` wrapped into `[-size/2, size/2)`: the shortest way round the wrapped world.
fn wrap(d: f32, size: f32) -> f32 {
    (d + size / 2.0).rem_euclid(size) - size / 2.0
}

/// The circular mean of positions on an axis that wraps at `size`, in `[0, size)`.
fn circular_mean(positions: impl Iterator<Item = usize>, size: usize) -> f32 {
    let (mut sin, mut cos) = (0.0f64, 0.0f64);
    for p in positions {
        let angle = f64::from(TAU) * p as f64 / size as f64;
        sin += angle.sin();
        cos += angle.cos();
    }
    let angle = sin.atan2(cos);
    ((angle / f64::from(TAU) * size as f64).rem_euclid(size as f64)) as f32
}

/// The pixel indices of the largest 8-connected region of `mask` on the torus, so that an
/// object split across the edges is one region and specks of noise are left out.
fn largest_component(mask: &[bool], w: usize, h: usize) -> Vec<usize> {
    let mut seen = vec![false; mask.len()];
    let mut best = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        let mut region = Vec::new();
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            region.push(i);
            let (x, y) = (i % w, i / w);
            for (dx, dy) in [(w - 1, h - 1), (0, h - 1), (1, h - 1), (w - 1, 0), (1, 0)]
                .into_iter()
                .chain([(w - 1, 1), (0, 1), (1, 1)])
            {
                let j = (y + dy) % h * w + (x + dx) % w;
                if mask[j] && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        if region.len() > best.len() {
            best = region;
        }
    }
    best
}

#[cfg(test)]
mod tests;
