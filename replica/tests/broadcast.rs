//! The broadcast ladder with real x264 encoders and isofmp4mux: every rung decodes, its
//! decode times run on across segments, several workers per rung write what one would
//! (names and timing), a worker whose codec configuration disagrees gives its segment back
//! and stops, and ffprobe reads the playlists.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use std::time::Duration;

use framecast_replica::broadcast::invariant::InvariantCheck;
use framecast_replica::broadcast::queue::SegmentChunk;
use framecast_replica::broadcast::rung::{Rung, RungOutput};
use framecast_replica::broadcast::worker::{WorkerExit, run_worker};
use framecast_replica::broadcast::{Ladder, LadderPlan};
use framecast_replica::config::{BroadcastSettings, RungSettings};
use framecast_replica::media::EncoderSettings;
use framecast_replica::media::boxes::{find_box, tfdt_decode_times};

#[path = "support/decode.rs"]
mod decode;
use decode::decode_fmp4;

const W: u32 = 192;
const H: u32 = 112;
const FPS: u32 = 12;
const PER_SEGMENT: u32 = 12;
const SEGMENTS: u32 = 5;

/// Frame `i`: a square moving over a gradient, so every rung has something to encode.
fn frame(i: u32) -> Vec<u8> {
    let mut f = vec![0u8; (W * H * 3) as usize];
    for y in 0..H {
        for x in 0..W {
            let p = ((y * W + x) * 3) as usize;
            let inside = (x + 200 - (i * 3) % 200) % 200 < 30 && (40..70).contains(&y);
            let v = if inside {
                [250, 30, 30]
            } else {
                [x as u8, y as u8 * 2, 90]
            };
            f[p..p + 3].copy_from_slice(&v);
        }
    }
    f
}

fn settings(dir: &Path, workers: usize) -> BroadcastSettings {
    let rung = |name: &str, divisor, bitrate_kbps| RungSettings {
        name: name.into(),
        divisor,
        bitrate_kbps,
    };
    BroadcastSettings {
        enabled: true,
        dir: dir.to_owned(),
        ladder: vec![
            rung("full", 1, 800),
            rung("half", 2, 300),
            rung("quarter", 4, 100),
        ],
        workers_per_rung: workers,
        queue_segments: 2,
        window_segments: 4,
        max_broadcasts: 16,
        retain_seconds: 1,
    }
}

fn plan(dir: &Path, id: &str, workers: usize) -> LadderPlan {
    LadderPlan {
        stream_id: id.into(),
        settings: settings(dir, workers),
        encoder: EncoderSettings::new(W, H, FPS, 500),
        frames_per_segment: PER_SEGMENT,
        first_segment: 0,
    }
}

fn run(dir: &Path, id: &str, workers: usize) -> Ladder {
    let ladder = Ladder::start(&plan(dir, id, workers)).unwrap();
    for s in 0..SEGMENTS {
        let frames = (0..PER_SEGMENT)
            .map(|i| frame(s * PER_SEGMENT + i))
            .collect();
        ladder.push_segment(s, Arc::new(frames)).unwrap();
    }
    let outputs = ladder.finish();
    assert!(
        outputs.iter().all(|o| o.exit == WorkerExit::Drained),
        "{outputs:?}"
    );
    ladder
}

/// (segment file name, tfdt, bytes) of a rung, in name order.
fn segments(rung: &Path) -> Vec<(String, u64)> {
    let mut names: Vec<String> = std::fs::read_dir(rung)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".m4s"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(rung.join(&n)).unwrap();
            let moof = find_box(&bytes, &[b"moof"]).expect("a moof");
            let tfdt = tfdt_decode_times(moof)[0];
            (n, tfdt)
        })
        .collect()
}

fn timescale_ticks_per_frame(rung: &Path) -> u64 {
    let init = std::fs::read(rung.join("init.mp4")).unwrap();
    let mdhd = find_box(&init, &[b"moov", b"trak", b"mdia", b"mdhd"]).expect("mdhd");
    // Version 0: 4 bytes version/flags, creation, modification, then the timescale.
    let at = if mdhd[0] == 1 { 20 } else { 12 };
    let timescale = u32::from_be_bytes(mdhd[at..at + 4].try_into().unwrap());
    u64::from(timescale) / u64::from(FPS)
}

#[test]
fn every_rung_decodes_at_its_size_with_continuous_decode_times() {
    let dir = tempfile::tempdir().unwrap();
    let ladder = run(dir.path(), "one", 2);
    let root = dir.path().join("one");
    let master = std::fs::read_to_string(root.join("master.m3u8")).unwrap();
    for (name, w, h) in [("full", 192, 112), ("half", 96, 56), ("quarter", 48, 28)] {
        assert!(master.contains(&format!("RESOLUTION={w}x{h}")), "{master}");
        assert!(master.contains(&format!("{name}/index.m3u8")), "{master}");
        let rung = root.join(name);
        let per_frame = timescale_ticks_per_frame(&rung);
        let segs = segments(&rung);
        // The window keeps 4 listed plus 2 behind it: all 5 here.
        assert_eq!(segs.len(), SEGMENTS as usize, "{name}: {segs:?}");
        for (k, (file, tfdt)) in segs.iter().enumerate() {
            assert_eq!(file, &format!("seg{k:05}.m4s"));
            assert_eq!(
                *tfdt,
                k as u64 * u64::from(PER_SEGMENT) * per_frame,
                "{name} {file}"
            );
        }
        // init + every segment in order is one playable stream of every frame.
        let mut stream = std::fs::read(rung.join("init.mp4")).unwrap();
        for (file, _) in &segs {
            stream.extend(std::fs::read(rung.join(file)).unwrap());
        }
        let (frames, dw, dh) = decode_fmp4(&stream);
        assert_eq!(
            (frames, dw, dh),
            ((SEGMENTS * PER_SEGMENT) as usize, w, h),
            "{name}"
        );
        let playlist = std::fs::read_to_string(rung.join("index.m3u8")).unwrap();
        assert!(
            playlist.contains("#EXT-X-MAP:URI=\"init.mp4\""),
            "{playlist}"
        );
        assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
        assert!(playlist.contains("#EXT-X-MEDIA-SEQUENCE:1"), "{playlist}");
    }
    drop(ladder);
}

#[test]
fn several_workers_per_rung_write_what_one_worker_writes() {
    let dir = tempfile::tempdir().unwrap();
    let single = run(dir.path(), "single", 1);
    let multi = run(dir.path(), "multi", 3);
    for rung in ["full", "half", "quarter"] {
        let a = segments(&dir.path().join("single").join(rung));
        let b = segments(&dir.path().join("multi").join(rung));
        assert_eq!(a, b, "{rung}: names and decode times");
        let list = |id: &str| {
            std::fs::read_to_string(dir.path().join(id).join(rung).join("index.m3u8")).unwrap()
        };
        assert_eq!(list("single"), list("multi"), "{rung}: playlists");
    }
    drop((single, multi));
}

#[test]
fn a_worker_with_another_codec_configuration_requeues_its_segment_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let rung = |name: &str| {
        let output = RungOutput::new(dir.path().join(name), 4, 1.0, 0).unwrap();
        Arc::new(Rung::new(name.into(), (W, H), PER_SEGMENT, 2, output))
    };
    let chunk = |s: u32| SegmentChunk {
        segment_idx: s,
        frames: Arc::new(
            (0..PER_SEGMENT)
                .map(|i| frame(s * PER_SEGMENT + i))
                .collect(),
        ),
        submitted_at: std::time::Instant::now(),
    };
    let good = EncoderSettings::new(W, H, FPS, 500);
    // The rung's invariant, as its first worker sets it.
    let a = rung("a");
    a.queue.push(chunk(0), Duration::from_secs(1)).unwrap();
    a.queue.close();
    let first = run_worker(a.clone(), 0, good.clone());
    assert_eq!((first.exit, first.segments), (WorkerExit::Drained, vec![0]));
    let invariant = a
        .invariant
        .get()
        .expect("the first worker set the invariant");

    let b = rung("b");
    assert_eq!(b.invariant.check(invariant), InvariantCheck::Set);
    b.queue.push(chunk(3), Duration::from_secs(1)).unwrap();
    // Another size: its SPS disagrees.
    let odd = run_worker(b.clone(), 1, EncoderSettings::new(W - 32, H, FPS, 500));
    assert_eq!(odd.exit, WorkerExit::Mismatch { field: "width" }, "{odd:?}");
    assert!(odd.segments.is_empty());
    assert_eq!(b.queue.len(), 1, "the segment went back to the queue");
    assert!(!b.failed());
    // A worker that agrees takes it over.
    b.queue.close();
    let helper = run_worker(b.clone(), 2, good);
    assert_eq!(
        (helper.exit, helper.segments),
        (WorkerExit::Drained, vec![3])
    );
    let segs = segments(&dir.path().join("b"));
    assert_eq!(segs.len(), 1);
    assert_eq!(
        segs[0].1,
        3 * u64::from(PER_SEGMENT) * timescale_ticks_per_frame(&dir.path().join("a"))
    );
}

#[test]
fn ffprobe_reads_the_master_playlist_and_every_rung() {
    let dir = tempfile::tempdir().unwrap();
    let ladder = run(dir.path(), "probe", 2);
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(dir.path().join("probe/master.m3u8"))
        .output()
        .expect("ffprobe runs (scripts/setup installs ffmpeg)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for size in ["h264,192,112", "h264,96,56", "h264,48,28"] {
        assert!(text.lines().any(|l| l.trim() == size), "{size} in {text}");
    }
    drop(ladder);
}
