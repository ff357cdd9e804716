//! Session benchmarks against the real server on loopback (MockGenerator as the model):
//!
//!   cargo bench -p framecast-replica --bench session
//!
//! (a) Segment cadence: with generation taking G and encoding taking E per segment, the wall
//!     time per segment must approach max(G, E) (overlapped), not G + E (serial). G and E are
//!     measured in the same run, each on its own; G is set close to E so overlap matters.
//! (b) Time from sending `session_init_v2` to the first media byte, with the default
//!     generator settings (mock latency 250 ms), median of several sessions.
//! (c) What worker processes cost: (a)'s cadence and (b)'s time to first byte with
//!     `pool.mode: subprocess` (generation and encoding in a `framecast-replica worker`
//!     process, fMP4 relayed over its socket) against the in-process pool, same run.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framecast_replica::config::{PoolMode, ReplicaConfig};
use framecast_replica::generate::{self, SegmentRequest};
use framecast_replica::media::{EncoderSettings, Fmp4Encoder};
use framecast_replica::pool::WorkerPool;
use framecast_replica::pool::in_process::InProcessPool;
use framecast_replica::pool::subprocess::{SubprocessPool, SubprocessSettings, WorkerCommand};
use framecast_replica::server::{self, AppState};
use framecast_replica::session::SessionContext;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn request(idx: u32, steps: u32) -> SegmentRequest {
    SegmentRequest {
        fresh_stream: false,
        checkpoint_max_bytes: None,
        segment_idx: idx,
        prompt: "bench".into(),
        negative_prompt: None,
        seed: 1,
        num_inference_steps: steps,
        guidance_scale: 1.0,
        initial_image: None,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn start(config: ReplicaConfig) -> String {
    start_with(config, PoolMode::InProcess).await
}

async fn start_with(config: ReplicaConfig, mode: PoolMode) -> String {
    framecast_replica::media::elements::init().unwrap();
    let config = Arc::new(config);
    let blobs = test_blobs();
    let pool: Arc<dyn WorkerPool> = match mode {
        PoolMode::InProcess => Arc::new(InProcessPool::new(
            vec![generate::build(&config.generator, blobs.clone()).unwrap()],
            false,
        )),
        PoolMode::Subprocess => {
            // The worker reads the same settings from a file (JSON is YAML).
            let file = std::env::temp_dir().join(format!(
                "framecast-bench-{}-{}.yaml",
                std::process::id(),
                config.generator.width
            ));
            std::fs::write(&file, serde_json::to_string(&*config).unwrap()).unwrap();
            let settings = SubprocessSettings {
                command: WorkerCommand {
                    program: env!("CARGO_BIN_EXE_framecast-replica").into(),
                    args: vec!["--config".into(), file.display().to_string()],
                },
                devices: vec![config.generator.device],
                warmup: None,
                restart_backoff: Duration::from_secs(1),
                stall_timeout: Duration::from_secs(600),
            };
            Arc::new(
                SubprocessPool::start(settings, blobs.clone())
                    .await
                    .unwrap(),
            )
        }
    };
    let sessions = SessionContext::with_blobs(pool, config, blobs);
    let state = AppState::new(
        "cpu".into(),
        framecast_common::metrics::standalone_recorder().handle(),
        sessions,
    );
    state.mark_ready();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server::router(state)).await.unwrap() });
    format!("ws://{addr}/v1/stream")
}

/// Generation time of one segment, measured alone (sleep plus frame synthesis).
fn measure_generation(config: &ReplicaConfig) -> Duration {
    let mut g = generate::build(&config.generator, test_blobs()).unwrap();
    let runs: Vec<f64> = (0..5)
        .map(|i| {
            let t = Instant::now();
            g.generate(
                &request(i, config.generator.num_inference_steps),
                None,
                &mut |_| ControlFlow::Continue(()),
            )
            .unwrap();
            t.elapsed().as_secs_f64()
        })
        .collect();
    Duration::from_secs_f64(median(runs))
}

/// Encode time of one segment, measured alone on a live encoder.
fn measure_encoding(config: &ReplicaConfig) -> Duration {
    let g = &config.generator;
    let mut gen_ = generate::build(g, test_blobs()).unwrap();
    let segment = gen_
        .generate(&request(0, 1), None, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    let mut enc = Fmp4Encoder::new(EncoderSettings::from_config(
        &config.media,
        g.width,
        g.height,
        g.fps,
    ))
    .unwrap();
    let fragments = g
        .frames_per_segment
        .div_ceil(enc.settings().frames_per_fragment) as usize;
    let mut runs = Vec::new();
    for s in 0..6u32 {
        let t = Instant::now();
        enc.begin_segment(s).unwrap();
        for f in segment.frames.clone() {
            enc.push_frame(f).unwrap();
        }
        enc.end_segment().unwrap();
        let mut got = 0;
        while got < fragments {
            let c = enc.next_chunk(Duration::from_secs(10)).unwrap().unwrap();
            got += usize::from(c.kind == framecast_replica::media::ChunkKind::Fragment);
        }
        if s > 0 {
            runs.push(t.elapsed().as_secs_f64());
        }
    }
    Duration::from_secs_f64(median(runs))
}

async fn cadence(config: ReplicaConfig, mode: PoolMode, segments: u32) -> Duration {
    let url = start_with(config, mode).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let init = json!({"type": "session_init_v2", "curated_prompts": ["bench"], "auto_extension_enabled": true});
    ws.send(Message::Text(init.to_string().into()))
        .await
        .unwrap();
    let mut done = Vec::new();
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "ltx2_segment_complete" {
                done.push(Instant::now());
                if done.len() as u32 == segments {
                    break;
                }
            }
        }
    }
    // Steady state: from the first segment's completion to the last's.
    (done[done.len() - 1] - done[0]) / (segments - 1)
}

async fn time_to_first_byte(url: &str) -> Duration {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let init = json!({"type": "session_init_v2", "curated_prompts": ["bench"], "auto_extension_enabled": true});
    let sent = Instant::now();
    ws.send(Message::Text(init.to_string().into()))
        .await
        .unwrap();
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Binary(_) = msg {
            return sent.elapsed();
        }
    }
    panic!("no media arrived");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // (a) Cadence at 1280x720, where encoding a 1 s segment takes real time.
    let mut config = ReplicaConfig::default();
    config.generator.width = 1280;
    config.generator.height = 720;
    config.streaming.generation_segment_cap = 12;
    config.streaming.session_timeout_seconds = 600;
    let e = measure_encoding(&config);
    // Make generation about as long as encoding: the case where overlap matters most.
    config.generator.mock_latency_ms = (e.as_millis() as u64).max(20);
    let g = measure_generation(&config);
    let per_segment = cadence(config.clone(), PoolMode::InProcess, 10).await;
    let per_segment_sub = cadence(config, PoolMode::Subprocess, 10).await;
    let ideal = g.max(e);
    println!("session benchmark (a): segment cadence, 1280x720, 24 frames per segment");
    println!("  generation alone G = {:>7.1} ms", g.as_secs_f64() * 1e3);
    println!("  encoding alone   E = {:>7.1} ms", e.as_secs_f64() * 1e3);
    println!(
        "  measured per segment = {:>7.1} ms (serial G+E would be {:.1} ms)",
        per_segment.as_secs_f64() * 1e3,
        (g + e).as_secs_f64() * 1e3
    );
    println!(
        "  measured / max(G, E) = {:.2}  (target <= 1.10; serial would be {:.2})",
        per_segment.as_secs_f64() / ideal.as_secs_f64(),
        (g + e).as_secs_f64() / ideal.as_secs_f64()
    );

    // (b) Time to first media byte with the default generator settings.
    let mut config = ReplicaConfig::default();
    config.streaming.max_sessions = 64;
    let latency = config.generator.mock_latency_ms;
    let url = start(config.clone()).await;
    let url_sub = start_with(config, PoolMode::Subprocess).await;
    let mut runs = Vec::new();
    let mut runs_sub = Vec::new();
    for _ in 0..7 {
        runs.push(time_to_first_byte(&url).await.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(100)).await;
        runs_sub.push(time_to_first_byte(&url_sub).await.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "session benchmark (b): session_init_v2 -> first media byte, 512x288, mock latency {latency} ms"
    );
    println!(
        "  median {:.1} ms over {} sessions (target < 300 ms); of which mock generation {latency} ms",
        median(runs.clone()),
        runs.len()
    );

    let ttfb_sub = median(runs_sub);
    println!("session benchmark (c): worker processes vs in-process workers, same run");
    println!(
        "  (a) per segment: subprocess {:.1} ms vs in-process {:.1} ms = {:.2}x",
        per_segment_sub.as_secs_f64() * 1e3,
        per_segment.as_secs_f64() * 1e3,
        per_segment_sub.as_secs_f64() / per_segment.as_secs_f64()
    );
    println!(
        "  (b) first media byte: subprocess {ttfb_sub:.1} ms vs in-process {:.1} ms = {:+.1} ms",
        median(runs.clone()),
        ttfb_sub - median(runs)
    );
}

/// A blob store for generators under test (the mock keeps nothing there).
fn test_blobs() -> std::sync::Arc<dyn framecast_replica::store::BlobStore> {
    std::sync::Arc::new(framecast_replica::store::memory::MemoryBlobStore::new(
        64 << 20,
        std::time::Duration::from_secs(600),
    ))
}
