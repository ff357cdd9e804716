//! Encoder benchmark: Framecast's long-lived GStreamer pipeline against the reference's
//! approach (one `ffmpeg` process per segment), measured in the same run.
//!
//!   cargo bench -p framecast-replica --bench encoder
//!
//! Workload: 5 s of 1024x576 RGB at 24 fps, in five 1 s segments, frames pushed as fast as
//! the encoder takes them. Reported per approach (median of the rounds): throughput in frames
//! per second until all output is out, and the time from the first frame pushed to the first
//! media fragment (`moof`+`mdat`) out. Ratios are Framecast relative to the reference.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use framecast_replica::media::boxes::ChunkSplitter;
use framecast_replica::media::{ChunkKind, EncoderSettings, Fmp4Encoder};

const W: u32 = 1024;
const H: u32 = 576;
const FPS: u32 = 24;
const SEGMENTS: u32 = 5;
const FRAMES_PER_SEGMENT: u32 = 24;
const ROUNDS: usize = 5;

#[derive(Debug, Clone, Copy)]
struct Measurement {
    fps: f64,
    first_fragment: Duration,
}

fn frames() -> Vec<Vec<u8>> {
    (0..SEGMENTS * FRAMES_PER_SEGMENT)
        .map(|i| {
            let mut f = vec![0u8; (W * H * 3) as usize];
            for (p, px) in f.chunks_exact_mut(3).enumerate() {
                let (x, y) = (p as u32 % W, p as u32 / W);
                px.copy_from_slice(&[
                    (x / 4 + i * 3) as u8,
                    (y / 3 + i) as u8,
                    ((x ^ y) / 8) as u8,
                ]);
            }
            f
        })
        .collect()
}

fn framecast(frames: &[Vec<u8>]) -> Measurement {
    let mut enc = Fmp4Encoder::new(EncoderSettings::new(W, H, FPS, 500)).expect("encoder");
    let start = Instant::now();
    let mut first_fragment = None;
    let mut note = |chunks: Vec<framecast_replica::media::MediaChunk>| {
        for c in chunks {
            if c.kind == ChunkKind::Fragment && first_fragment.is_none() {
                first_fragment = Some(c.emitted_at - start);
            }
        }
    };
    for s in 0..SEGMENTS {
        enc.begin_segment(s).unwrap();
        for f in &frames[(s * FRAMES_PER_SEGMENT) as usize..((s + 1) * FRAMES_PER_SEGMENT) as usize]
        {
            enc.push_frame(f.clone()).unwrap();
            note(enc.drain_ready().unwrap());
        }
        enc.end_segment().unwrap();
    }
    note(enc.finish(Duration::from_secs(60)).unwrap());
    let elapsed = start.elapsed();
    Measurement {
        fps: frames.len() as f64 / elapsed.as_secs_f64(),
        first_fragment: first_fragment.expect("fragments were produced"),
    }
}

/// The reference: a fresh ffmpeg per segment with FastVideo's arguments.
fn reference(frames: &[Vec<u8>]) -> Measurement {
    let start = Instant::now();
    let mut first_fragment = None;
    for s in 0..SEGMENTS {
        let mut child = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
            ])
            .args(["-s", &format!("{W}x{H}"), "-r", &FPS.to_string(), "-i", "-"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args([
                "-pix_fmt",
                "yuv420p",
                "-movflags",
                "empty_moov+default_base_moof+frag_keyframe",
            ])
            .args(["-f", "mp4", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("ffmpeg runs (Debian package ffmpeg)");
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut splitter = ChunkSplitter::new();
            let mut first = None;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = stdout.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                let chunks = splitter.push(&buf[..n]).unwrap();
                if first.is_none() && chunks.iter().any(|c| c.kind == ChunkKind::Fragment) {
                    first = Some(Instant::now());
                }
            }
            first
        });
        let mut stdin = child.stdin.take().unwrap();
        for f in &frames[(s * FRAMES_PER_SEGMENT) as usize..((s + 1) * FRAMES_PER_SEGMENT) as usize]
        {
            stdin.write_all(f).unwrap();
        }
        drop(stdin);
        let first = reader.join().unwrap();
        assert!(child.wait().unwrap().success());
        if first_fragment.is_none() {
            first_fragment = first.map(|t| t - start);
        }
    }
    let elapsed = start.elapsed();
    Measurement {
        fps: frames.len() as f64 / elapsed.as_secs_f64(),
        first_fragment: first_fragment.expect("ffmpeg produced fragments"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let frames = frames();
    // Warm both paths once (page cache, GStreamer registry, ffmpeg binary).
    framecast(&frames);
    reference(&frames);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate the order so drift on a shared machine hits both sides.
        if round % 2 == 0 {
            ours.push(framecast(&frames));
            theirs.push(reference(&frames));
        } else {
            theirs.push(reference(&frames));
            ours.push(framecast(&frames));
        }
    }
    let fps = |m: &[Measurement]| median(m.iter().map(|x| x.fps).collect());
    let first = |m: &[Measurement]| {
        median(
            m.iter()
                .map(|x| x.first_fragment.as_secs_f64() * 1e3)
                .collect(),
        )
    };
    let (our_fps, ref_fps) = (fps(&ours), fps(&theirs));
    let (our_first, ref_first) = (first(&ours), first(&theirs));
    println!(
        "encoder benchmark: {W}x{H} @ {FPS} fps, {SEGMENTS} segments x {FRAMES_PER_SEGMENT} frames, median of {ROUNDS} rounds"
    );
    println!(
        "{:<44} {:>12} {:>22}",
        "approach", "frames/s", "first fragment (ms)"
    );
    println!(
        "{:<44} {:>12.1} {:>22.1}",
        "framecast (one GStreamer pipeline, x264enc)", our_fps, our_first
    );
    println!(
        "{:<44} {:>12.1} {:>22.1}",
        "reference (ffmpeg process per segment)", ref_fps, ref_first
    );
    println!(
        "throughput ratio (framecast / reference):        {:.2}x",
        our_fps / ref_fps
    );
    println!(
        "first-fragment ratio (framecast / reference):    {:.2}x",
        our_first / ref_first
    );
}
