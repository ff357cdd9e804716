//! The fMP4 encoder end to end: real x264/opus/AAC encoders, real isofmp4mux, and the output
//! decoded back with GStreamer's decodebin.

use std::time::Duration;

use framecast_replica::media::boxes::{find_box, fourcc, tfdt_decode_times, top_level_boxes};
use framecast_replica::media::{
    AudioEncoderKind, AudioSettings, ChunkKind, EncoderSettings, Fmp4Encoder, MediaChunk,
    MediaError,
};

#[path = "support/decode.rs"]
mod decode;
use decode::decode_fmp4;

const W: u32 = 160;
const H: u32 = 96;
const FPS: u32 = 24;
const WAIT: Duration = Duration::from_secs(10);

fn settings() -> EncoderSettings {
    // 250 ms fragments: 6 frames each.
    EncoderSettings::new(W, H, FPS, 250)
}

/// A frame whose colour depends on its index, so the encoder has real work to do.
fn frame(i: u32) -> Vec<u8> {
    let mut f = vec![0u8; (W * H * 3) as usize];
    for (p, px) in f.chunks_exact_mut(3).enumerate() {
        let x = (p as u32 % W + i * 4) as u8;
        let y = (p as u32 / W) as u8;
        px.copy_from_slice(&[x, y, (i * 9) as u8]);
    }
    f
}

/// Collects chunks until `count` fragments of `segment` have arrived (or fails after WAIT).
fn take_segment(encoder: &Fmp4Encoder, segment: u32, fragments: usize) -> Vec<MediaChunk> {
    let mut got = Vec::new();
    while got
        .iter()
        .filter(|c: &&MediaChunk| c.kind == ChunkKind::Fragment)
        .count()
        < fragments
    {
        let chunk = encoder
            .next_chunk(WAIT)
            .unwrap()
            .unwrap_or_else(|| panic!("segment {segment}: only {} chunks arrived", got.len()));
        assert_eq!(
            chunk.segment_idx,
            segment,
            "{:?}",
            (chunk.kind, chunk.fragment_idx)
        );
        got.push(chunk);
    }
    got
}

fn encode_segments(
    settings: EncoderSettings,
    segments: u32,
    frames_per_segment: u32,
) -> (Fmp4Encoder, Vec<Vec<MediaChunk>>) {
    let fragments = (frames_per_segment / settings.frames_per_fragment) as usize;
    let mut encoder = Fmp4Encoder::new(settings).unwrap();
    let mut per_segment = Vec::new();
    for s in 0..segments {
        encoder.begin_segment(s).unwrap();
        for i in 0..frames_per_segment {
            encoder
                .push_frame(frame(s * frames_per_segment + i))
                .unwrap();
        }
        encoder.end_segment().unwrap();
        // Every fragment of the segment arrives before the next segment's first frame.
        per_segment.push(take_segment(&encoder, s, fragments));
    }
    (encoder, per_segment)
}

#[test]
fn chunks_are_whole_boxes_with_init_once_and_fragments_per_segment() {
    let (encoder, per_segment) = encode_segments(settings(), 3, 24);
    let rest = encoder.finish(WAIT).unwrap();
    assert!(
        rest.is_empty(),
        "every fragment came out at its segment's end: {rest:?}"
    );

    let init = &per_segment[0][0];
    assert_eq!(init.kind, ChunkKind::Init);
    let init_boxes: Vec<String> = top_level_boxes(&init.bytes)
        .unwrap()
        .iter()
        .map(|(k, _, _)| fourcc(k))
        .collect();
    assert_eq!(init_boxes, ["ftyp", "moov"]);
    assert!(
        find_box(&init.bytes, &[b"moov", b"mvex"]).is_some(),
        "moov has mvex"
    );

    let mut last_tfdt = None;
    for (s, chunks) in per_segment.iter().enumerate() {
        let fragments: Vec<&MediaChunk> = chunks
            .iter()
            .filter(|c| c.kind == ChunkKind::Fragment)
            .collect();
        assert_eq!(
            fragments.len(),
            4,
            "segment {s}: 24 frames in 6-frame fragments"
        );
        if s > 0 {
            assert!(
                chunks.iter().all(|c| c.kind == ChunkKind::Fragment),
                "one init only"
            );
        }
        let mut total = Duration::ZERO;
        for (i, f) in fragments.iter().enumerate() {
            assert_eq!(f.fragment_idx as usize, i);
            assert_eq!(f.byte_len(), f.bytes.len());
            let boxes: Vec<String> = top_level_boxes(&f.bytes)
                .unwrap()
                .iter()
                .map(|(k, _, _)| fourcc(k))
                .collect();
            let boxes: Vec<&str> = boxes
                .iter()
                .map(String::as_str)
                .skip_while(|b| *b == "styp")
                .collect();
            assert_eq!(
                boxes,
                ["moof", "mdat"],
                "segment {s} fragment {i}: one moof+mdat pair"
            );
            let tfdt = tfdt_decode_times(find_box(&f.bytes, &[b"moof"]).unwrap());
            let t = *tfdt.first().expect("a traf with tfdt");
            if let Some(prev) = last_tfdt {
                assert!(
                    t > prev,
                    "decode times increase across segments: {prev} then {t}"
                );
            }
            last_tfdt = Some(t);
            total += f.duration;
        }
        let ms = total.as_millis();
        assert!(
            (990..=1010).contains(&ms),
            "segment {s} covers 1 s, got {ms} ms"
        );
    }
}

#[test]
fn output_decodes_to_every_frame_at_the_right_size() {
    let (encoder, per_segment) = encode_segments(settings(), 2, 24);
    let mut bytes: Vec<u8> = per_segment
        .iter()
        .flatten()
        .flat_map(|c| c.bytes.clone())
        .collect();
    for c in encoder.finish(WAIT).unwrap() {
        bytes.extend(c.bytes);
    }
    assert_eq!(decode_fmp4(&bytes), (48, W as i32, H as i32));
}

#[test]
fn init_segment_repeated_before_each_segment_still_decodes() {
    // FastVideo clients append the init segment again at every segment start.
    let (encoder, per_segment) = encode_segments(settings(), 2, 24);
    let init = per_segment[0][0].bytes.clone();
    let mut bytes = Vec::new();
    for chunks in &per_segment {
        bytes.extend(&init);
        for c in chunks.iter().filter(|c| c.kind == ChunkKind::Fragment) {
            bytes.extend(&c.bytes);
        }
    }
    drop(encoder);
    assert_eq!(decode_fmp4(&bytes).0, 48);
}

#[test]
fn mime_comes_from_the_produced_stream() {
    let (encoder, _) = encode_segments(settings(), 1, 12);
    let mime = encoder.mime().expect("known after the first frame");
    assert!(mime.starts_with(r#"video/mp4; codecs="avc1.42"#), "{mime}");
    assert!(
        !mime.contains(','),
        "no audio codec without an audio track: {mime}"
    );
}

fn with_audio(encoder: AudioEncoderKind) -> (String, Vec<u8>) {
    let mut s = settings();
    s.audio = Some(AudioSettings {
        sample_rate: 48_000,
        channels: 2,
        encoder,
    });
    let mut enc = Fmp4Encoder::new(s).unwrap();
    let mut bytes = Vec::new();
    for seg in 0..2u32 {
        enc.begin_segment(seg).unwrap();
        // The muxer interleaves by time, so a segment's audio goes in alongside its frames.
        // Here: 1 s of a 440 Hz tone, stereo interleaved, then the 24 frames.
        let tone: Vec<f32> = (0..48_000)
            .flat_map(|n| {
                let v = (n as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin() * 0.2;
                [v, v]
            })
            .collect();
        enc.push_audio(tone).unwrap();
        for i in 0..24 {
            enc.push_frame(frame(seg * 24 + i)).unwrap();
        }
        enc.end_segment().unwrap();
    }
    let mime = loop {
        if let Some(m) = enc.mime() {
            break m;
        }
        bytes.extend(enc.next_chunk(WAIT).unwrap().expect("chunks flow").bytes);
    };
    bytes.extend(enc.drain_ready().unwrap().into_iter().flat_map(|c| c.bytes));
    bytes.extend(enc.finish(WAIT).unwrap().into_iter().flat_map(|c| c.bytes));
    (mime, bytes)
}

fn track_count(bytes: &[u8]) -> usize {
    let moov = find_box(bytes, &[b"moov"]).unwrap();
    top_level_boxes(moov)
        .unwrap()
        .iter()
        .filter(|(k, _, _)| k == b"trak")
        .count()
}

#[test]
fn audio_and_video_with_opus() {
    let (mime, bytes) = with_audio(AudioEncoderKind::Opus);
    assert!(mime.ends_with(r#",opus""#), "{mime}");
    assert_eq!(track_count(&bytes), 2);
    assert_eq!(
        decode_fmp4(&bytes).0,
        48,
        "video still decodes with audio muxed in"
    );
}

#[test]
fn audio_and_video_with_aac() {
    let (mime, bytes) = with_audio(AudioEncoderKind::Aac);
    assert!(mime.ends_with(r#",mp4a.40.2""#), "{mime}");
    assert_eq!(track_count(&bytes), 2);
}

#[test]
fn bad_input_is_a_typed_error_and_the_encoder_keeps_working() {
    let mut enc = Fmp4Encoder::new(settings()).unwrap();
    let err = enc.push_frame(vec![0; 10]).unwrap_err();
    assert!(
        matches!(err, MediaError::FrameSize { expected, got: 10, .. } if expected == (W * H * 3) as usize)
    );
    assert!(matches!(
        enc.push_audio(vec![0.0; 4]).unwrap_err(),
        MediaError::NoAudioTrack
    ));
    for i in 0..12 {
        enc.push_frame(frame(i)).unwrap();
    }
    enc.end_segment().unwrap();
    let chunks = enc.finish(WAIT).unwrap();
    assert!(
        chunks
            .iter()
            .filter(|c| c.kind == ChunkKind::Fragment)
            .count()
            >= 2
    );

    let mut odd = settings();
    odd.width = 161;
    assert!(matches!(
        Fmp4Encoder::new(odd).unwrap_err(),
        MediaError::InvalidSettings(_)
    ));
    let mut s = settings();
    s.audio = Some(AudioSettings {
        sample_rate: 48_000,
        channels: 2,
        encoder: AudioEncoderKind::Opus,
    });
    let mut enc = Fmp4Encoder::new(s).unwrap();
    assert!(matches!(
        enc.push_audio(vec![0.0; 3]).unwrap_err(),
        MediaError::AudioLength {
            samples: 3,
            channels: 2
        }
    ));
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn short_life() {
    let mut enc = Fmp4Encoder::new(settings()).unwrap();
    for i in 0..6 {
        enc.push_frame(frame(i)).unwrap();
    }
    enc.end_segment().unwrap();
    assert!(enc.next_chunk(WAIT).unwrap().is_some());
    // Dropped with the pipeline still running: Drop must tear it down.
}

#[test]
fn dropping_fifty_encoders_leaks_neither_threads_nor_memory() {
    // Warm up: GStreamer's registry, x264's tables and the allocator's pools.
    for _ in 0..3 {
        short_life();
    }
    std::thread::sleep(Duration::from_millis(200));
    let (threads_before, rss_before) = (thread_count(), rss_kib());
    for _ in 0..50 {
        short_life();
    }
    std::thread::sleep(Duration::from_millis(500));
    let (threads_after, rss_after) = (thread_count(), rss_kib());
    assert!(
        threads_after <= threads_before + 2,
        "threads grew from {threads_before} to {threads_after}"
    );
    assert!(
        rss_after < rss_before + 20 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB over 50 encoders"
    );
}

#[test]
fn configured_profile_shows_in_the_codec_string() {
    let media = framecast_replica::config::MediaSettings {
        h264_profile: framecast_replica::media::H264Profile::High,
        // ultrafast uses no High-profile tool (no CABAC, no 8x8 transform), so x264 would
        // signal baseline whatever we allow; superfast uses both.
        x264_speed_preset: "superfast".into(),
        fragment_duration_ms: 250,
        ..Default::default()
    };
    let settings = EncoderSettings::from_config(&media, W, H, FPS);
    assert_eq!(settings.frames_per_fragment, 6);
    let (encoder, _) = encode_segments(settings, 1, 12);
    let mime = encoder.mime().unwrap();
    assert!(
        mime.starts_with(r#"video/mp4; codecs="avc1.64"#),
        "High profile is 0x64: {mime}"
    );
}

#[test]
fn nvenc_requested_without_a_gpu_names_the_element() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        return; // A GPU machine may legitimately have nvh264enc.
    }
    let mut s = settings();
    s.video_encoder = framecast_replica::config::VideoEncoderKind::Nvh264;
    let err = Fmp4Encoder::new(s).unwrap_err();
    assert!(
        matches!(err, MediaError::MissingElement { ref element, .. } if element == "nvh264enc"),
        "{err:?}"
    );
}

#[test]
fn a_consumer_that_never_reads_gets_a_bounded_wait_and_a_prompt_drop() {
    let mut s = EncoderSettings::new(W, H, FPS, 40); // one frame per fragment
    s.wait_timeout = Duration::from_millis(500);
    let mut enc = Fmp4Encoder::new(s).unwrap();
    let started = std::time::Instant::now();
    let err = (0..2000)
        .map(|i| enc.push_frame(frame(i)))
        .find_map(Result::err)
        .expect("pushing without reading must hit the bound");
    assert!(matches!(err, MediaError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let dropping = std::time::Instant::now();
    drop(enc);
    assert!(
        dropping.elapsed() < Duration::from_millis(400),
        "drop took {:?}",
        dropping.elapsed()
    );
}
