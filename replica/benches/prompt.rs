//! Prompt-pipeline benchmarks against the real server on loopback (MockGenerator as the
//! model, a real local HTTP server imitating an OpenAI-compatible provider):
//!
//!   cargo bench -p framecast-replica --bench prompt
//!
//! (a) Prompt-ready latency on the Dreamverse protocol (`WS /ws`): the time from sending
//!     `append_prompt` (enhancement on) to `prompt_ready` on the client, with a provider
//!     answering in 300 ms and one answering at once; the overhead is what the pipeline,
//!     the session and two loopback hops add to the provider's own time. The server's
//!     sockets have `TCP_NODELAY`, as the binary sets it (`server::without_nagle`); a last
//!     row runs the instant provider with Nagle's algorithm on, as before that fix: it held
//!     `prompt_ready` behind the unacknowledged `prompt_enhancing` until the client's
//!     delayed ACK (~40 ms on Linux).
//! (b) Segment cadence while enhancement runs: the interval between consecutive
//!     `ltx2_segment_complete` frames with no prompt traffic (baseline) against the same
//!     session while the client keeps one enhancement under way at all times (300 ms
//!     provider), on `/ws`; and on `/v1/stream` with the same client prompts, enhancement
//!     off (baseline) against on. Enhancement works beside generation, so the ratio should
//!     be 1.00.

#[allow(dead_code)]
#[path = "../tests/support/fake_llm.rs"]
mod fake_llm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_llm::{FakeLlm, Reply, user_text};
use framecast_replica::config::{PromptSettings, ReplicaConfig};
use framecast_replica::generate;
use framecast_replica::pool::in_process::InProcessPool;
use framecast_replica::prompt::{PromptEnhancer, PromptService};
use framecast_replica::server::{self, AppState};
use framecast_replica::session::SessionContext;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the fake provider takes to answer in (a) and (b).
const PROVIDER_DELAY: Duration = Duration::from_millis(300);
/// Measured `append_prompt` round trips per provider in (a), after one warm-up.
const PROMPTS: usize = 12;
/// Segments per session in (b).
const SEGMENTS: u32 = 16;
/// Mock generation time per segment in (b): a segment every ~250 ms.
const MOCK_LATENCY_MS: u64 = 250;
const LIMIT: Duration = Duration::from_secs(30);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The nearest-rank 90th percentile.
fn p90(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = (v.len() * 9).div_ceil(10);
    v[rank.max(1) - 1]
}

/// Small, fast settings: 128x72, 12 frames (0.5 s) per segment, no session logs.
fn config() -> ReplicaConfig {
    let mut c = ReplicaConfig::default();
    c.generator.width = 128;
    c.generator.height = 72;
    c.generator.fps = 24;
    c.generator.frames_per_segment = 12;
    c.generator.num_inference_steps = 3;
    c.generator.mock_latency_ms = MOCK_LATENCY_MS;
    c.media.fragment_duration_ms = 250;
    c.streaming.session_log_dir = None;
    c.streaming.session_timeout_seconds = 600;
    c.streaming.generation_segment_cap = SEGMENTS;
    c.dreamverse.generation_segment_cap = SEGMENTS;
    c
}

/// A prompt pipeline over the fake provider `llm`.
fn service(llm: &FakeLlm) -> PromptService {
    let settings = PromptSettings {
        enabled: true,
        providers: vec![llm.provider("fake")],
        timeout_ms: 10_000,
        operation_timeout_ms: 10_000,
        ..PromptSettings::default()
    };
    PromptService::disabled().with_enhancer(
        PromptEnhancer::from_settings(&settings).unwrap(),
        Duration::from_secs(10),
    )
}

/// A fake provider answering `ENHANCED(<user text>)` after `delay`.
async fn provider(delay: Duration) -> FakeLlm {
    fake_llm::start(move |body| Reply::Text(format!("ENHANCED({})", user_text(body)), delay)).await
}

/// Starts a replica on 127.0.0.1 whose sessions use `prompts`; its `host:port`. With
/// `nagle`, its accepted sockets keep Nagle's algorithm (the binary turns it off).
async fn start(config: ReplicaConfig, prompts: PromptService, nagle: bool) -> std::net::SocketAddr {
    framecast_replica::media::elements::init().unwrap();
    let config = Arc::new(config);
    let blobs: Arc<dyn framecast_replica::store::BlobStore> = Arc::new(
        framecast_replica::store::memory::MemoryBlobStore::new(64 << 20, Duration::from_secs(600)),
    );
    let pool = Arc::new(InProcessPool::new(
        vec![generate::build(&config.generator, blobs).unwrap()],
        false,
    ));
    let mut sessions = SessionContext::new(pool, config);
    sessions.prompts = prompts;
    let state = AppState::new(
        "cpu".into(),
        framecast_common::metrics::standalone_recorder().handle(),
        sessions,
    );
    state.mark_ready();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    if nagle {
        tokio::spawn(async move { axum::serve(listener, server::router(state)).await.unwrap() });
    } else {
        let listener = server::without_nagle(listener);
        tokio::spawn(async move { axum::serve(listener, server::router(state)).await.unwrap() });
    }
    addr
}

async fn connect(addr: std::net::SocketAddr, path: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap()
        .0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text frame as JSON (media and control frames skipped); `None` once closed.
async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("the server went silent");
        match msg? {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Reads until a frame of `kind` arrives.
async fn read_until(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next_json(ws).await.expect("closed early");
        if v["type"] == kind {
            return v;
        }
        assert!(v["type"] != "error", "{v}");
    }
}

fn seeds(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("seed scene {i}")).collect()
}

/// One provider's (a) numbers: client-measured and server-reported times, in ms.
struct Ready {
    client: Vec<f64>,
    server: Vec<f64>,
}

/// (a): `append_prompt` → `prompt_ready` on a Dreamverse session that is generating.
async fn prompt_ready(delay: Duration, nagle: bool) -> Ready {
    let llm = provider(delay).await;
    let mut config = config();
    config.dreamverse.generation_segment_cap = 64;
    let addr = start(config, service(&llm), nagle).await;
    let mut ws = connect(addr, "/ws").await;
    send(
        &mut ws,
        json!({"type": "session_init_v2", "curated_prompts": seeds(4),
               "loop_generation_enabled": true}),
    )
    .await;
    read_until(&mut ws, "ltx2_segment_start").await;
    let mut ready = Ready {
        client: Vec::new(),
        server: Vec::new(),
    };
    for i in 0..=PROMPTS {
        let id = format!("p{i}");
        let sent = Instant::now();
        send(
            &mut ws,
            json!({"type": "append_prompt", "prompt": format!("a red fox {i}"), "prompt_id": id}),
        )
        .await;
        let v = loop {
            let v = next_json(&mut ws).await.expect("closed early");
            if (v["type"] == "prompt_ready" || v["type"] == "prompt_fallback_used")
                && v["prompt_id"] == id.as_str()
            {
                break v;
            }
        };
        let elapsed = sent.elapsed().as_secs_f64() * 1e3;
        assert_eq!(v["type"], "prompt_ready", "{v}");
        assert_eq!(v["source"], "user_enhanced", "{v}");
        if i > 0 {
            // The first request also opened the provider connection.
            ready.client.push(elapsed);
            ready.server.push(v["latency_ms"].as_f64().unwrap());
        }
    }
    ready
}

/// One session's (b) numbers.
struct Cadence {
    /// Intervals between consecutive `ltx2_segment_complete`, ms.
    intervals: Vec<f64>,
    /// Enhancements finished while the segments were generated.
    enhanced: usize,
    /// Segments generated from an enhanced prompt.
    enhanced_segments: usize,
    /// Fraction of the measured span during which an enhancement was under way.
    busy: f64,
}

impl Cadence {
    fn median(&self) -> f64 {
        median(self.intervals.clone())
    }

    fn mean(&self) -> f64 {
        self.intervals.iter().sum::<f64>() / self.intervals.len() as f64
    }
}

/// Tracks when the client had an enhancement under way.
#[derive(Default)]
struct Busy {
    since: Option<Instant>,
    spans: Vec<(Instant, Instant)>,
}

impl Busy {
    fn start(&mut self) {
        self.since = Some(Instant::now());
    }

    fn stop(&mut self) {
        if let Some(s) = self.since.take() {
            self.spans.push((s, Instant::now()));
        }
    }

    /// The fraction of `from..to` covered by spans (open ones run to `to`).
    fn fraction(&self, from: Instant, to: Instant) -> f64 {
        let open = self.since.map(|s| (s, to));
        let covered: Duration = self
            .spans
            .iter()
            .copied()
            .chain(open)
            .map(|(a, b)| b.min(to).saturating_duration_since(a.max(from)))
            .sum();
        covered.as_secs_f64() / (to - from).as_secs_f64()
    }
}

/// (b) on `/ws`: 16 seed prompts, `SEGMENTS` segments; with `enhance`, an `append_prompt`
/// is sent whenever the previous one is ready, so one enhancement is always under way.
async fn dreamverse_cadence(addr: std::net::SocketAddr, enhance: bool) -> Cadence {
    let mut ws = connect(addr, "/ws").await;
    send(
        &mut ws,
        json!({"type": "session_init_v2", "curated_prompts": seeds(SEGMENTS as usize),
               "enhancement_enabled": true}),
    )
    .await;
    read_until(&mut ws, "ltx2_segment_start").await;
    let mut sent = 0;
    let mut busy = Busy::default();
    let mut append = async |ws: &mut Ws, busy: &mut Busy| {
        sent += 1;
        busy.start();
        send(
            ws,
            json!({"type": "append_prompt", "prompt": format!("a red fox {sent}"),
                   "prompt_id": format!("u{sent}")}),
        )
        .await;
    };
    if enhance {
        append(&mut ws, &mut busy).await;
    }
    let mut done = Vec::new();
    let mut enhanced = 0;
    let mut enhanced_segments = 0;
    while (done.len() as u32) < SEGMENTS {
        let v = next_json(&mut ws).await.expect("closed early");
        match v["type"].as_str().unwrap_or_default() {
            "ltx2_segment_complete" => done.push(Instant::now()),
            "ltx2_segment_start" if v["source"] == "user_enhanced" => enhanced_segments += 1,
            "prompt_ready" | "prompt_fallback_used" => {
                assert_eq!(v["type"], "prompt_ready", "{v}");
                busy.stop();
                enhanced += 1;
                append(&mut ws, &mut busy).await;
            }
            "error" | "prompt_sources_blocked" => panic!("{v}"),
            _ => {}
        }
    }
    let (first, last) = (done[0], done[done.len() - 1]);
    Cadence {
        intervals: done
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
            .collect(),
        enhanced,
        enhanced_segments,
        busy: if enhance {
            busy.fraction(first, last)
        } else {
            0.0
        },
    }
}

/// (b) on `/v1/stream`: 12 curated prompts looped, `SEGMENTS` segments, and the client
/// keeps two of its own prompts waiting (one is sent whenever one starts), with
/// `enhancement_enabled` as given: enhanced one at a time, one is always being enhanced.
async fn v1_cadence(addr: std::net::SocketAddr, enhance: bool) -> Cadence {
    let mut ws = connect(addr, "/v1/stream").await;
    send(
        &mut ws,
        json!({"type": "session_init_v2", "curated_prompts": seeds(12),
               "loop_generation_enabled": true, "enhancement_enabled": enhance}),
    )
    .await;
    let mut sent = 0;
    let mut prompt = async |ws: &mut Ws| {
        sent += 1;
        send(
            ws,
            json!({"type": "segment_prompt_source", "prompt": format!("client prompt {sent}")}),
        )
        .await;
    };
    prompt(&mut ws).await;
    prompt(&mut ws).await;
    let mut done = Vec::new();
    let mut client_segments = 0;
    while (done.len() as u32) < SEGMENTS {
        let v = next_json(&mut ws).await.expect("closed early");
        match v["type"].as_str().unwrap_or_default() {
            "ltx2_segment_complete" => done.push(Instant::now()),
            "ltx2_segment_start" => {
                let text = v["prompt"].as_str().unwrap_or_default();
                if text.contains("client prompt") {
                    assert_eq!(text.starts_with("ENHANCED("), enhance, "{v}");
                    client_segments += 1;
                    prompt(&mut ws).await;
                }
            }
            "error" => panic!("{v}"),
            _ => {}
        }
    }
    Cadence {
        intervals: done
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
            .collect(),
        enhanced: if enhance { client_segments } else { 0 },
        enhanced_segments: client_segments,
        busy: 0.0,
    }
}

fn print_ready(label: &str, delay: Duration, r: &Ready) {
    let d = delay.as_secs_f64() * 1e3;
    let (med, p90_) = (median(r.client.clone()), p90(r.client.clone()));
    let ratio = if d > 0.0 {
        format!("{:.3}", med / d)
    } else {
        "-".into()
    };
    println!(
        "  {label:<14} {d:>6.0} {med:>9.1} {p90_:>9.1} {:>+10.1} {:>+10.1} {ratio:>8} {:>9.1}",
        med - d,
        p90_ - d,
        median(r.server.clone()),
    );
}

fn print_cadence(label: &str, c: &Cadence) {
    println!(
        "  {label:<44} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>5} {:>5}",
        c.median(),
        c.mean(),
        c.intervals.iter().copied().fold(f64::INFINITY, f64::min),
        c.intervals.iter().copied().fold(0.0, f64::max),
        c.enhanced,
        c.enhanced_segments,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let started = Instant::now();

    // (a) Prompt-ready latency.
    let slow = prompt_ready(PROVIDER_DELAY, false).await;
    let instant = prompt_ready(Duration::ZERO, false).await;
    let instant_nagle = prompt_ready(Duration::ZERO, true).await;
    println!(
        "prompt benchmark (a): /ws append_prompt -> prompt_ready (enhancement on), \
         {PROMPTS} prompts each, session generating (128x72, mock {MOCK_LATENCY_MS} ms)"
    );
    println!(
        "  {:<14} {:>6} {:>9} {:>9} {:>10} {:>10} {:>8} {:>9}",
        "provider", "ms", "median", "p90", "over(med)", "over(p90)", "ratio", "server"
    );
    print_ready("300 ms answer", PROVIDER_DELAY, &slow);
    print_ready("instant answer", Duration::ZERO, &instant);
    print_ready("instant, Nagle", Duration::ZERO, &instant_nagle);
    println!(
        "  (ms; over = measured - provider time; ratio = median / provider time; \
         server = latency_ms in prompt_ready; Nagle: the replica's sockets without \
         TCP_NODELAY, as before the binary set it: prompt_ready written right after \
         prompt_enhancing waits for the client's delayed ACK, ~40 ms)"
    );

    // (b) Segment cadence, each pair on one server (the same provider in both runs).
    let llm = provider(PROVIDER_DELAY).await;
    let addr = start(config(), service(&llm), false).await;
    let dv_base = dreamverse_cadence(addr, false).await;
    let dv_load = dreamverse_cadence(addr, true).await;
    let v1_base = v1_cadence(addr, false).await;
    let v1_load = v1_cadence(addr, true).await;
    println!(
        "prompt benchmark (b): interval between ltx2_segment_complete frames, {SEGMENTS} segments \
         per session, mock {MOCK_LATENCY_MS} ms, provider {} ms",
        PROVIDER_DELAY.as_millis()
    );
    println!(
        "  {:<44} {:>8} {:>8} {:>8} {:>8} {:>5} {:>5}",
        "session", "median", "mean", "min", "max", "enh", "segs"
    );
    print_cadence("/ws, no prompt traffic", &dv_base);
    print_cadence("/ws, an enhancement always under way", &dv_load);
    print_cadence("/v1/stream, client prompts, enhancement off", &v1_base);
    print_cadence("/v1/stream, client prompts, enhancement on", &v1_load);
    println!("  (ms; enh = enhancements finished; segs = segments from an enhanced/client prompt)");
    println!(
        "  /ws: an enhancement was under way {:.0}% of the measured span",
        dv_load.busy * 100.0
    );
    println!(
        "  cadence ratio /ws         (enhancing / baseline): median {:.3}, mean {:.3}",
        dv_load.median() / dv_base.median(),
        dv_load.mean() / dv_base.mean()
    );
    println!(
        "  cadence ratio /v1/stream  (on / off):             median {:.3}, mean {:.3}",
        v1_load.median() / v1_base.median(),
        v1_load.mean() / v1_base.mean()
    );
    println!(
        "prompt benchmark: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
