//! A rung's encoder worker: pop a segment → scale its frames to the rung → encode them with
//! the worker's own encoder into a fresh muxer placed at the segment's decode time → hand
//! the CMAF segment to the rung → repeat, until the queue is closed and drained.
//!
//! Each worker owns one encoder for its life. Before its first segment counts, the worker's
//! codec configuration (from its init segment) is compared with the rung's invariant, or
//! becomes it: a worker that disagrees puts its segment back for another worker and stops;
//! a worker whose output cannot be parsed is a configuration error, and the rung fails.

use std::sync::Arc;
use std::time::Duration;

use super::invariant::{Bitstream, InvariantCheck, validate_or_set};
use super::queue::SegmentChunk;
use super::rung::Rung;
use crate::media::{ChunkKind, EncoderSettings, Fmp4Encoder, MediaError};

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerExit {
    /// The queue was closed and drained.
    Drained,
    /// Its codec configuration differed from the rung's in `field`; its segment was
    /// requeued.
    Mismatch { field: &'static str },
    /// It could not go on (encoder error, unparsable output); the rung is failed.
    Failed(String),
}

/// What a worker did, for the orchestrator and the tests.
#[derive(Debug, Clone)]
pub struct WorkerOutput {
    /// Its number within the rung.
    pub worker: usize,
    /// The segments it wrote, in the order it wrote them.
    pub segments: Vec<u32>,
    pub exit: WorkerExit,
}

/// RGB24 `frame` of `sw`x`sh` scaled to `dw`x`dh` (a copy when the size is the same).
pub fn scale_rgb(frame: &[u8], sw: u32, sh: u32, dw: u32, dh: u32) -> Vec<u8> {
    if (sw, sh) == (dw, dh) {
        return frame.to_vec();
    }
    match image::RgbImage::from_raw(sw, sh, frame.to_vec()) {
        Some(img) => {
            image::imageops::resize(&img, dw, dh, image::imageops::FilterType::Triangle).into_raw()
        }
        // A frame of the wrong size (never from a generator) becomes black, not a panic.
        None => vec![0; (dw * dh * 3) as usize],
    }
}

/// One segment encoded: its init segment (when this encoder made one) and its fragments.
struct Encoded {
    init: Option<Vec<u8>>,
    fragments: Vec<u8>,
    duration: Duration,
}

fn encode(
    encoder: &mut Fmp4Encoder,
    chunk: &SegmentChunk,
    rung: &Rung,
) -> Result<Encoded, MediaError> {
    let per_segment = rung.frames_per_segment;
    let start = u64::from(chunk.segment_idx) * u64::from(per_segment);
    encoder.jump_timeline_to(start)?;
    encoder.begin_segment(chunk.segment_idx)?;
    let (sw, sh) = rung.source_size;
    let settings = encoder.settings().clone();
    for frame in chunk.frames.iter() {
        encoder.push_frame(scale_rgb(frame, sw, sh, settings.width, settings.height))?;
    }
    encoder.end_segment()?;
    let mut out = Encoded {
        init: None,
        fragments: Vec::new(),
        duration: Duration::ZERO,
    };
    for c in encoder.drain_ready()? {
        match c.kind {
            ChunkKind::Init => out.init = Some(c.bytes),
            ChunkKind::Fragment => {
                out.duration += c.duration;
                out.fragments.extend_from_slice(&c.bytes);
            }
        }
    }
    Ok(out)
}

/// Runs worker `worker` of `rung` with an encoder built from `settings` until the queue is
/// closed and drained. Blocking: run it on a thread of its own.
pub fn run_worker(rung: Arc<Rung>, worker: usize, settings: EncoderSettings) -> WorkerOutput {
    let mut output = WorkerOutput {
        worker,
        segments: Vec::new(),
        exit: WorkerExit::Drained,
    };
    let mut encoder: Option<Fmp4Encoder> = None;
    let mut checked = false;
    while let Some(chunk) = rung.queue.pop() {
        if rung.failed() {
            break;
        }
        let start = u64::from(chunk.segment_idx) * u64::from(rung.frames_per_segment);
        // A requeued segment earlier than this encoder's timeline needs a fresh encoder.
        if encoder.as_ref().is_some_and(|e| e.next_frame() > start) {
            encoder = None;
        }
        let enc = match &mut encoder {
            Some(e) => e,
            None => match Fmp4Encoder::new(settings.clone()) {
                Ok(e) => {
                    checked = false;
                    encoder.insert(e)
                }
                Err(e) => return fail(&rung, output, &chunk, e.to_string()),
            },
        };
        let encoded = match encode(enc, &chunk, &rung) {
            Ok(encoded) => encoded,
            Err(e) => return fail(&rung, output, &chunk, e.to_string()),
        };
        if !checked {
            let Some(init) = &encoded.init else {
                return fail(
                    &rung,
                    output,
                    &chunk,
                    "the encoder made no init segment".into(),
                );
            };
            match validate_or_set(&rung.invariant, Bitstream::InitSegment(init)) {
                Ok(InvariantCheck::Set) => {
                    if let Err(e) = rung.output.write_init(init) {
                        return fail(&rung, output, &chunk, format!("writing init.mp4: {e}"));
                    }
                }
                Ok(InvariantCheck::Matched) => {}
                Ok(InvariantCheck::Mismatch { field }) => {
                    tracing::warn!(
                        rung = %rung.name, worker, field,
                        "encoder worker's codec configuration differs from the rung's; segment requeued, worker stops"
                    );
                    rung.queue.requeue(chunk);
                    output.exit = WorkerExit::Mismatch { field };
                    return output;
                }
                Err(e) => {
                    return fail(&rung, output, &chunk, format!("malformed bitstream: {e}"));
                }
            }
            checked = true;
        }
        if let Err(e) = rung.output.write_segment(
            chunk.segment_idx,
            &encoded.fragments,
            encoded.duration,
            chunk.submitted_at,
        ) {
            return fail(&rung, output, &chunk, format!("writing a segment: {e}"));
        }
        output.segments.push(chunk.segment_idx);
    }
    if let Some(e) = encoder {
        let _ = e.finish(Duration::from_secs(5));
    }
    output
}

fn fail(rung: &Rung, mut output: WorkerOutput, chunk: &SegmentChunk, why: String) -> WorkerOutput {
    let why = format!("segment {}: {why}", chunk.segment_idx);
    tracing::error!(rung = %rung.name, worker = output.worker, error = %why, "broadcast encoder worker failed");
    rung.fail(why.clone());
    output.exit = WorkerExit::Failed(why);
    output
}
