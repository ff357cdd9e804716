//! The player page plays the encoder's output in a real browser: Debian's headless chromium,
//! driven by playwright-core (tests/browser/play.mjs), loads the player page
//! (replica/static/index.html), which connects to a small local WebSocket server fed live by
//! `Fmp4Encoder`.

use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use framecast_replica::media::{
    AudioEncoderKind, AudioSettings, ChunkKind, EncoderSettings, Fmp4Encoder,
};
use serde_json::json;
use tokio::sync::mpsc;

const SEGMENTS: u32 = 4;
const FPS: u32 = 24;
const FRAMES_PER_SEGMENT: u32 = 24;
const W: u32 = 320;
const H: u32 = 180;

/// A moving diagonal gradient, so the decoder has real motion to show.
fn frame(i: u32) -> Vec<u8> {
    let mut f = vec![0u8; (W * H * 3) as usize];
    for (p, px) in f.chunks_exact_mut(3).enumerate() {
        let (x, y) = (p as u32 % W, p as u32 / W);
        px.copy_from_slice(&[(x + i * 6) as u8, (y + i * 3) as u8, ((x + y) / 2) as u8]);
    }
    f
}

fn text(tx: &mpsc::UnboundedSender<Message>, value: serde_json::Value) {
    let _ = tx.send(Message::Text(value.to_string().into()));
}

/// How the test server shapes the stream.
#[derive(Debug, Clone, Copy)]
struct StreamShape {
    /// Add an Opus track.
    audio: bool,
    /// Send the init segment again at every segment start, as FastVideo's server does.
    resend_init: bool,
}

/// Encodes the stream live (segment by segment, a little faster than real time) and sends
/// protocol messages the way the replica does.
fn produce(tx: mpsc::UnboundedSender<Message>, shape: StreamShape) {
    let StreamShape { audio, resend_init } = shape;
    let mut settings = EncoderSettings::new(W, H, FPS, 250);
    if audio {
        settings.audio = Some(AudioSettings {
            sample_rate: 48_000,
            channels: 1,
            encoder: AudioEncoderKind::Opus,
        });
    }
    let mut enc = Fmp4Encoder::new(settings).expect("encoder");
    let mut announced = false;
    let mut init: Option<Vec<u8>> = None;
    for s in 0..SEGMENTS {
        if resend_init && let Some(init) = &init {
            let _ = tx.send(Message::Binary(init.clone().into()));
        }
        enc.begin_segment(s).unwrap();
        if audio {
            let tone: Vec<f32> = (0..48_000)
                .map(|n| (n as f32 * 330.0 * std::f32::consts::TAU / 48_000.0).sin() * 0.1)
                .collect();
            enc.push_audio(tone).unwrap();
        }
        for i in 0..FRAMES_PER_SEGMENT {
            enc.push_frame(frame(s * FRAMES_PER_SEGMENT + i)).unwrap();
        }
        enc.end_segment().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let chunks = enc.drain_ready().unwrap();
        if !announced && !chunks.is_empty() {
            let mime = enc.mime().expect("mime known once output exists");
            text(
                &tx,
                json!({"type": "media_init", "segment_idx": s, "mime": mime,
                             "stream_id": "test", "mode": "av_fmp4"}),
            );
            announced = true;
        }
        let fragments = chunks
            .iter()
            .filter(|c| c.kind == ChunkKind::Fragment)
            .count();
        for c in chunks {
            if c.kind == ChunkKind::Init {
                init = Some(c.bytes.clone());
            }
            let _ = tx.send(Message::Binary(c.bytes.into()));
        }
        text(
            &tx,
            json!({"type": "media_segment_complete", "segment_idx": s,
                         "stream_id": "test", "chunks": fragments, "duration_ms": 1000}),
        );
        // The "generator" takes 0.5 s more per 1 s segment: faster than real time.
        std::thread::sleep(Duration::from_millis(500));
    }
    for c in enc.finish(Duration::from_secs(10)).unwrap() {
        let _ = tx.send(Message::Binary(c.bytes.into()));
    }
    text(
        &tx,
        json!({"type": "ltx2_stream_complete", "reason": "segment_cap"}),
    );
}

async fn stream(ws: WebSocketUpgrade, shape: StreamShape) -> impl IntoResponse {
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let producer = tokio::task::spawn_blocking(move || produce(tx, shape));
        while let Some(msg) = rx.recv().await {
            if socket.send(msg).await.is_err() {
                break;
            }
        }
        producer.await.expect("producer finished");
        let _ = socket.send(Message::Close(None)).await;
    })
}

async fn play(shape: StreamShape) -> serde_json::Value {
    let app = Router::new()
        .route(
            "/player.html",
            get(|| async { Html(include_str!("../static/index.html")) }),
        )
        .route(
            "/player.js",
            get(|| async {
                (
                    [("content-type", "text/javascript")],
                    include_str!("../static/player.js"),
                )
            }),
        )
        .route(
            "/stream",
            get(move |ws: WebSocketUpgrade| stream(ws, shape)),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let url = format!("http://{addr}/player.html?autoplay=1&ws=ws://{addr}/stream");
    framecast_e2e::play_in_chromium(&url, Duration::from_secs(30)).await
}

fn assert_played_through(result: &serde_json::Value) {
    let duration = f64::from(SEGMENTS * FRAMES_PER_SEGMENT) / f64::from(FPS);
    assert_eq!(result["errors"], json!([]), "{result}");
    assert_eq!(result["timedOut"], false, "{result}");
    let current = result["currentTime"].as_f64().unwrap();
    assert!(
        current >= 0.9 * duration,
        "played {current} s of {duration} s: {result}"
    );
    assert!(result["timeToFirstFrameMs"].as_f64().is_some(), "{result}");
    let stall = result["longestStallMs"].as_f64().unwrap();
    assert!(stall <= 1000.0, "longest stall {stall} ms: {result}");
    assert_eq!(result["segmentsComplete"], SEGMENTS, "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_the_live_stream_to_the_end() {
    let result = play(StreamShape {
        audio: false,
        resend_init: false,
    })
    .await;
    assert_played_through(&result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_video_with_opus_audio() {
    let result = play(StreamShape {
        audio: true,
        resend_init: false,
    })
    .await;
    assert_played_through(&result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_when_the_init_segment_is_resent_every_segment() {
    let result = play(StreamShape {
        audio: false,
        resend_init: true,
    })
    .await;
    assert_played_through(&result);
}
