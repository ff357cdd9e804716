//! Every segment of a `/v1/stream` session is a self-contained fMP4 file: its bytes (the
//! binary frames between its `media_init` and its `media_segment_complete`) start with the
//! stream's init segment, so a client that saves each segment gets a file ffmpeg plays, as
//! with FastVideo; the fragments' decode times still run on across segments, so a Media
//! Source player appending everything to one SourceBuffer sees continuous media.
//!
//! Real server on 127.0.0.1, MockGenerator frames, the real GStreamer encoder; ffprobe and
//! ffmpeg (Debian's) check the saved files.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framecast_replica::config::{AudioEncoderKind, ReplicaConfig};
use framecast_replica::generate;
use framecast_replica::media::boxes::{find_box, fourcc, tfdt_decode_times, top_level_boxes};
use framecast_replica::media::codec::avc1_from_avcc;
use framecast_replica::pool::in_process::InProcessPool;
use framecast_replica::server::{self, AppState};
use framecast_replica::session::SessionContext;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SEGMENTS: u32 = 3;
const FRAMES: u32 = 12;

fn config(audio: Option<AudioEncoderKind>) -> ReplicaConfig {
    let mut c = ReplicaConfig::default();
    c.generator.width = 128;
    c.generator.height = 72;
    c.generator.fps = 24;
    c.generator.frames_per_segment = FRAMES;
    c.generator.num_inference_steps = 2;
    c.generator.mock_latency_ms = 20;
    c.generator.mock_audio = audio.is_some();
    if let Some(kind) = audio {
        c.media.audio_encoder = kind;
    }
    c.media.fragment_duration_ms = 250;
    c.streaming.generation_segment_cap = SEGMENTS;
    c.streaming.session_log_dir = None;
    c
}

/// Starts a replica server on a free port; returns its `/v1/stream` URL.
async fn start(config: ReplicaConfig) -> String {
    framecast_replica::media::elements::init().unwrap();
    let blobs: Arc<dyn framecast_replica::store::BlobStore> =
        Arc::new(framecast_replica::store::memory::MemoryBlobStore::from_config(&config));
    let generator = generate::build(&config.generator, blobs).unwrap();
    let pool = Arc::new(InProcessPool::new(vec![generator], false));
    let sessions = SessionContext::new(pool, Arc::new(config));
    let recorder = framecast_common::metrics::standalone_recorder();
    let state = AppState::new("cpu".into(), recorder.handle(), sessions);
    state.mark_ready();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server::router(state)).await.unwrap() });
    format!("ws://{addr}/v1/stream")
}

/// One segment as a client sees it.
#[derive(Debug, Default)]
struct Segment {
    idx: u64,
    mime: String,
    /// Binary frames, in order.
    frames: Vec<Vec<u8>>,
    /// `chunks` of its `media_segment_complete`.
    chunks_reported: u64,
}

impl Segment {
    fn bytes(&self) -> Vec<u8> {
        self.frames.concat()
    }
}

/// Runs one session to its segment cap and cuts the binary frames into segments at each
/// `media_init`; fails on bytes that arrive before any `media_init`.
async fn session_segments(url: &str) -> Vec<Segment> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let init = json!({"type": "session_init_v2", "curated_prompts": ["a red fox"], "auto_extension_enabled": true});
    ws.send(Message::text(init.to_string())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut segments: Vec<Segment> = Vec::new();
    let mut open = false;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline.into(), ws.next()).await {
        match msg.unwrap() {
            Message::Text(text) => {
                let v: Value = serde_json::from_str(&text).unwrap();
                match v["type"].as_str().unwrap() {
                    "media_init" => {
                        assert!(!open, "media_init inside segment: {v}");
                        open = true;
                        segments.push(Segment {
                            idx: v["segment_idx"].as_u64().unwrap(),
                            mime: v["mime"].as_str().unwrap().to_string(),
                            ..Segment::default()
                        });
                    }
                    "media_segment_complete" => {
                        let last = segments.last_mut().expect("a media_init came first");
                        assert_eq!(v["segment_idx"].as_u64(), Some(last.idx), "{v}");
                        last.chunks_reported = v["chunks"].as_u64().unwrap();
                        open = false;
                    }
                    "error" => panic!("{v}"),
                    "ltx2_stream_complete" => break,
                    _ => {}
                }
            }
            Message::Binary(b) => {
                assert!(
                    open,
                    "binary frame outside a media_init .. media_segment_complete"
                );
                segments.last_mut().unwrap().frames.push(b.to_vec());
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(segments.len() as u32, SEGMENTS, "{segments:?}");
    segments
}

/// The `avcC` record inside an init segment (found by its type; enough for a test).
fn avcc(init: &[u8]) -> &[u8] {
    let at = init
        .windows(4)
        .position(|w| w == b"avcC")
        .expect("an avcC box");
    let size = u32::from_be_bytes(init[at - 4..at].try_into().unwrap()) as usize;
    &init[at + 4..at - 4 + size]
}

/// Checks each segment's box structure and the timeline across them; returns the init.
fn check_structure(segments: &[Segment]) -> Vec<u8> {
    let mut init: Option<Vec<u8>> = None;
    let mut last_video_tfdt = None;
    for (k, segment) in segments.iter().enumerate() {
        assert_eq!(segment.idx, k as u64, "segments in order");
        assert_eq!(segment.chunks_reported, segment.frames.len() as u64);
        let bytes = segment.bytes();
        let boxes = top_level_boxes(&bytes).unwrap();
        let kinds: Vec<String> = boxes.iter().map(|(kind, _, _)| fourcc(kind)).collect();
        assert_eq!(kinds[..2], ["ftyp", "moov"], "segment {k}: {kinds:?}");
        // Each fragment: `moof` + `mdat`, with the muxer's optional `styp` (or `sidx`, `prft`)
        // before it.
        let rest: Vec<&String> = kinds[2..]
            .iter()
            .filter(|k| !["styp", "sidx", "prft"].contains(&k.as_str()))
            .collect();
        assert!(
            !rest.is_empty() && rest.chunks(2).all(|pair| pair == ["moof", "mdat"]),
            "segment {k}: {kinds:?}"
        );
        assert!(
            segment.frames[0].starts_with(&bytes[..boxes[1].1 + boxes[1].2]),
            "the first binary frame of segment {k} starts with the whole init segment"
        );
        // The same init segment every time (re-appending it is a no-op for MSE).
        let this_init = bytes[..boxes[1].1 + boxes[1].2].to_vec();
        match &init {
            None => init = Some(this_init),
            Some(first) => assert_eq!(first, &this_init, "segment {k}'s init segment differs"),
        }
        // Fragment times run on: the first video fragment of a later segment starts after
        // everything before it.
        for (kind, offset, size) in &boxes {
            if kind == b"moof" {
                let moof = find_box(&bytes[*offset..offset + size], &[b"moof"]).unwrap();
                let video = tfdt_decode_times(moof)[0];
                if let Some(previous) = last_video_tfdt {
                    assert!(
                        video > previous,
                        "segment {k}: tfdt {video} after {previous}"
                    );
                }
                last_video_tfdt = Some(video);
            }
        }
        // The announced codec string is the stream's own.
        let avc1 = avc1_from_avcc(avcc(&bytes)).unwrap();
        assert!(
            segment
                .mime
                .starts_with(&format!("video/mp4; codecs=\"{avc1}")),
            "segment {k}: mime {} for a stream of {avc1}",
            segment.mime
        );
    }
    init.unwrap()
}

/// ffprobe's view of one saved file: `(codec_type, decoded frames or packets)` per stream.
fn probe(path: &std::path::Path) -> Vec<(String, u64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .arg("stream=codec_type,nb_read_frames")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs (Debian package ffmpeg)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap().to_string(),
                s["nb_read_frames"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// ffmpeg decodes the whole file without a single error.
fn decodes_cleanly(path: &std::path::Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn save(dir: &std::path::Path, segment: &Segment) -> std::path::PathBuf {
    let path = dir.join(format!("segment-{}.mp4", segment.idx));
    std::fs::write(&path, segment.bytes()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_segment_is_a_playable_fmp4_file() {
    let url = start(config(None)).await;
    let segments = session_segments(&url).await;
    check_structure(&segments);
    let dir = tempfile::tempdir().unwrap();
    for segment in &segments {
        let path = save(dir.path(), segment);
        assert_eq!(
            probe(&path),
            [("video".to_string(), u64::from(FRAMES))],
            "segment {} decodes to all its frames",
            segment.idx
        );
        decodes_cleanly(&path);
    }
    // The whole stream is one valid file too: later init segments are the same bytes.
    let all: Vec<u8> = segments.iter().flat_map(Segment::bytes).collect();
    let path = dir.path().join("all.mp4");
    std::fs::write(&path, all).unwrap();
    decodes_cleanly(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_audio_video_segment_is_a_playable_fmp4_file() {
    let url = start(config(Some(AudioEncoderKind::Aac))).await;
    let segments = session_segments(&url).await;
    check_structure(&segments);
    for segment in &segments {
        assert!(
            segment.mime.ends_with(",mp4a.40.2\""),
            "segment {}: {}",
            segment.idx,
            segment.mime
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for segment in &segments {
        let path = save(dir.path(), segment);
        let streams = probe(&path);
        // Both tracks in every file, and all of the segment's own frames: its last fragment
        // is out before `media_segment_complete`, not with the next segment's audio.
        assert!(
            streams
                .iter()
                .any(|(kind, n)| kind == "video" && *n == u64::from(FRAMES)),
            "segment {}: {streams:?}",
            segment.idx
        );
        assert!(
            streams.iter().any(|(kind, n)| kind == "audio" && *n > 0),
            "segment {}: {streams:?}",
            segment.idx
        );
        decodes_cleanly(&path);
    }
}
