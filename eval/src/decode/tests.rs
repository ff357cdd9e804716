//! Recordings made in the test with x264enc and isofmp4mux, as the replica makes them, plus
//! files that are cut short, garbage, empty or missing.

use super::*;

/// Encodes `source` (a launch fragment producing raw video) the way the replica does:
/// x264enc into isofmp4mux, fragments of half a second.
fn record(dir: &Path, name: &str, source: &str) -> PathBuf {
    gst::init().unwrap();
    gstfmp4::plugin_register_static().unwrap();
    let path = dir.join(name);
    let launch = format!(
        "{source} ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast \
         ! h264parse ! isofmp4mux name=mux fragment-duration=500000000 ! filesink name=out"
    );
    let pipeline = gst::parse::launch(&launch)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    pipeline
        .by_name("out")
        .unwrap()
        .set_property("location", path.to_str().unwrap());
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let message = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("recording timed out");
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        matches!(message.view(), gst::MessageView::Eos(_)),
        "recording failed: {message:?}"
    );
    path
}

fn assert_colour(video: &DecodedVideo, expected: [u8; 3], tolerance: u8) {
    for (n, frame) in video.frames.iter().enumerate() {
        for pixel in frame.chunks_exact(3) {
            for c in 0..3 {
                assert!(
                    pixel[c].abs_diff(expected[c]) <= tolerance,
                    "frame {n}: pixel {pixel:?} is not {expected:?}"
                );
            }
        }
    }
}

#[test]
fn decodes_every_frame_at_its_size_with_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let path = record(
        dir.path(),
        "ball.mp4",
        "videotestsrc num-buffers=24 pattern=ball ! video/x-raw,width=64,height=48,framerate=12/1",
    );
    let video = decode_file(&path).unwrap();
    assert_eq!((video.width, video.height), (64, 48));
    assert_eq!(video.frames.len(), 24);
    assert_eq!(video.pts_ns.len(), 24);
    assert!(video.frames.iter().all(|f| f.len() == 64 * 48 * 3));
    // 12 fps: one frame every 83.3 ms, in order.
    assert!(
        video.pts_ns.windows(2).all(|w| w[1] > w[0]),
        "{:?}",
        video.pts_ns
    );
    let step = (video.pts_ns[23] - video.pts_ns[0]) / 23;
    assert!(
        step.abs_diff(83_333_333) < 1_000_000,
        "frame step {step} ns"
    );
    // The ball moves: frames are not all alike.
    assert_ne!(video.frames[0], video.frames[12]);
    assert_eq!(video.frame_refs().len(), 24);
}

#[test]
fn solid_colour_decodes_to_that_colour_with_padded_rows_removed() {
    let dir = tempfile::tempdir().unwrap();
    // 66 px wide: 198-byte RGB rows, which GStreamer pads to 200.
    let path = record(
        dir.path(),
        "blue.mp4",
        "videotestsrc num-buffers=12 pattern=solid-color foreground-color=0xff2846e6 \
         ! video/x-raw,width=66,height=50,framerate=12/1",
    );
    let video = decode_file(&path).unwrap();
    assert_eq!((video.width, video.height), (66, 50));
    assert_eq!(video.frames.len(), 12);
    assert!(video.frames.iter().all(|f| f.len() == 66 * 50 * 3));
    assert_colour(&video, [40, 70, 230], 12);
}

#[test]
fn red_test_pattern_decodes_to_red() {
    let dir = tempfile::tempdir().unwrap();
    let path = record(
        dir.path(),
        "red.mp4",
        "videotestsrc num-buffers=6 pattern=red ! video/x-raw,width=64,height=64,framerate=12/1",
    );
    assert_colour(&decode_file(&path).unwrap(), [255, 0, 0], 12);
}

#[test]
fn an_audio_track_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = record(
        dir.path(),
        "av.mp4",
        "audiotestsrc num-buffers=20 samplesperbuffer=960 ! audioconvert ! opusenc ! mux. \
         videotestsrc num-buffers=12 ! video/x-raw,width=64,height=48,framerate=12/1",
    );
    // `record` appends the video chain; the audio branch joins the muxer by name.
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes.windows(4).any(|w| w == b"Opus"),
        "no audio track was muxed"
    );
    let video = decode_file(&path).unwrap();
    assert_eq!(video.frames.len(), 12);
}

#[test]
fn a_recording_cut_inside_a_fragment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = record(
        dir.path(),
        "whole.mp4",
        "videotestsrc num-buffers=24 pattern=ball ! video/x-raw,width=64,height=48,framerate=12/1",
    );
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = decode_file(&cut).unwrap_err();
    assert!(matches!(err, DecodeError::Truncated { .. }), "{err:?}");
}

#[test]
fn a_recording_cut_between_fragments_is_the_shorter_video() {
    let dir = tempfile::tempdir().unwrap();
    let path = record(
        dir.path(),
        "whole.mp4",
        "videotestsrc num-buffers=24 pattern=ball ! video/x-raw,width=64,height=48,framerate=12/1",
    );
    let bytes = std::fs::read(&path).unwrap();
    // Keep everything before the last `moof`: the init segment and the first fragments.
    let last_moof = bytes.windows(4).rposition(|w| w == b"moof").unwrap() - 4;
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..last_moof]).unwrap();
    let video = decode_file(&cut).unwrap();
    assert!(
        (1..24).contains(&video.frames.len()),
        "{} frames",
        video.frames.len()
    );
}

#[test]
fn garbage_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.mp4");
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let bytes: Vec<u8> = (0..50_000)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            (x >> 56) as u8
        })
        .collect();
    std::fs::write(&path, bytes).unwrap();
    let started = Instant::now();
    let err = decode_file(&path).unwrap_err();
    assert!(started.elapsed() < STALL_TIMEOUT, "{err}");
    // Garbage that happens to parse as boxes still fails, in the demuxer.
    std::fs::write(&path, b"\0\0\0\x10abcdefghijkl\0\0\0\x08wxyz").unwrap();
    let err = decode_file(&path).unwrap_err();
    assert!(matches!(err, DecodeError::Stream { .. }), "{err:?}");
}

#[test]
fn an_empty_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.mp4");
    std::fs::write(&path, b"").unwrap();
    assert!(decode_file(&path).is_err());
}

#[test]
fn a_missing_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = decode_file(&dir.path().join("no such file.mp4")).unwrap_err();
    assert!(matches!(err, DecodeError::Io { .. }), "{err:?}");
}
