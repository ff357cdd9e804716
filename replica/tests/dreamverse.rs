//! The Dreamverse protocol on `/ws`: real WebSocket clients against the real replica server
//! on 127.0.0.1, with MockGenerator (the test double) producing frames and the real
//! GStreamer encoder producing fMP4. What is checked is what FastVideo's Dreamverse web app
//! reads (`shared/protocols/dreamverse-ws.md`, 1B).

mod support;

use std::time::{Duration, Instant};

use framecast_replica::config::ReplicaConfig;
use framecast_replica::prompt::PromptService;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Server, counter, small_config};
use tokio_tungstenite::tungstenite::Message;

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn test_config() -> ReplicaConfig {
    small_config()
}

/// A replica without a prompt pipeline (each LLM step takes its documented failure path).
async fn start(config: ReplicaConfig) -> Server {
    support::start(config, PromptService::disabled()).await
}

async fn connect(server: &Server) -> Client {
    tokio_tungstenite::connect_async(server.ws_url("/ws"))
        .await
        .unwrap()
        .0
}

/// A server with `config` and a client that sent `opening` as its first frame.
async fn open(config: ReplicaConfig, opening: Value) -> (Server, Client) {
    let server = start(config).await;
    let mut client = connect(&server).await;
    send(&mut client, opening).await;
    (server, client)
}

async fn send(client: &mut Client, value: Value) {
    client
        .send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// One frame from the server.
#[derive(Debug, Clone)]
enum Frame {
    Json(Value),
    Binary(Vec<u8>),
}

/// Everything the server sent, in order, and how it closed.
#[derive(Debug, Default)]
struct Transcript {
    frames: Vec<Frame>,
    /// The close frame's code and reason, once it came.
    close: Option<(u16, String)>,
}

impl Transcript {
    /// The JSON messages, in order.
    fn messages(&self) -> impl Iterator<Item = &Value> {
        self.frames.iter().filter_map(|f| match f {
            Frame::Json(v) => Some(v),
            Frame::Binary(_) => None,
        })
    }

    /// The `type` of each frame (`binary` for media).
    fn types(&self) -> Vec<String> {
        self.frames
            .iter()
            .map(|f| match f {
                Frame::Json(v) => v["type"].as_str().unwrap().to_string(),
                Frame::Binary(_) => "binary".into(),
            })
            .collect()
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.messages().filter(|m| m["type"] == kind).collect()
    }

    fn first(&self, kind: &str) -> &Value {
        self.messages()
            .find(|m| m["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {:?}", self.types()))
    }

    fn count(&self, kind: &str) -> usize {
        self.all(kind).len()
    }

    /// Where the first message of `kind` is, counting every frame.
    fn index(&self, kind: &str) -> usize {
        self.position(|m| m["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {:?}", self.types()))
    }

    /// Where the first message matching `pred` is, counting every frame.
    fn position(&self, pred: impl Fn(&Value) -> bool) -> Option<usize> {
        self.frames
            .iter()
            .position(|f| matches!(f, Frame::Json(v) if pred(v)))
    }

    /// Where every message of `kind` is, counting every frame.
    fn indices(&self, kind: &str) -> Vec<usize> {
        self.types()
            .iter()
            .enumerate()
            .filter(|(_, k)| *k == kind)
            .map(|(i, _)| i)
            .collect()
    }

    /// The `segment_idx` of every `ltx2_segment_start`.
    fn segment_starts(&self) -> Vec<u64> {
        self.all("ltx2_segment_start")
            .iter()
            .map(|m| m["segment_idx"].as_u64().unwrap())
            .collect()
    }
}

/// Reads frames into `t` until `done` matches one (true) or `limit` passes or the server
/// closes (false).
async fn read_into(
    client: &mut Client,
    t: &mut Transcript,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline.into(), client.next()).await {
        match msg {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(&text).unwrap();
                let finished = done(&v);
                t.frames.push(Frame::Json(v));
                if finished {
                    return true;
                }
            }
            Ok(Message::Binary(b)) => t.frames.push(Frame::Binary(b.to_vec())),
            Ok(Message::Close(frame)) => {
                t.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                return false;
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Reads until the first message of `kind` (failing without one within `limit`).
async fn read_until(client: &mut Client, kind: &str, limit: Duration) -> Transcript {
    let mut t = Transcript::default();
    let found = read_into(client, &mut t, limit, |m| m["type"] == kind).await;
    assert!(found, "no {kind} within {limit:?}; saw {:?}", t.types());
    t
}

/// Reads until `n` messages of `kind` came.
async fn read_until_nth(client: &mut Client, kind: &str, n: usize, limit: Duration) -> Transcript {
    let mut t = Transcript::default();
    for _ in 0..n {
        let found = read_into(client, &mut t, limit, |m| m["type"] == kind).await;
        assert!(
            found,
            "not {n} {kind} within {limit:?}; saw {:?}",
            t.types()
        );
    }
    t
}

/// Reads everything for `limit` (or until the server closes).
async fn read_for(client: &mut Client, limit: Duration) -> Transcript {
    let mut t = Transcript::default();
    read_into(client, &mut t, limit, |_| false).await;
    t
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

/// `segNNN-xxxxxxxx` for segment `idx`.
fn assert_stream_id(id: &Value, idx: u64) {
    let id = id.as_str().unwrap();
    let (head, hex) = id.split_once('-').unwrap_or_else(|| panic!("{id}"));
    assert_eq!(head, format!("seg{idx:03}"), "{id}");
    assert!(
        hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
}

/// Checks segment `idx`'s media: `media_init` (fields, stream id), binary frames that
/// start with an init segment, `media_segment_complete` counting them, then one
/// `step_complete` and `ltx2_segment_complete`; returns its stream id.
fn check_segment_media(t: &Transcript, idx: u64, total_segments: u64) -> String {
    let of = |kind: &'static str| {
        move |m: &Value| m["type"] == kind && (kind == "step_complete" || m["segment_idx"] == idx)
    };
    let init_at = t.position(of("media_init")).unwrap_or_else(|| {
        panic!(
            "no media_init {idx}: {:?}",
            t.messages().collect::<Vec<_>>()
        )
    });
    let done_at = t
        .position(of("media_segment_complete"))
        .expect("media_segment_complete");
    let Frame::Json(init) = &t.frames[init_at] else {
        unreachable!()
    };
    assert_eq!(
        keys(init),
        ["mime", "mode", "segment_idx", "stream_id", "type"]
    );
    assert_eq!(init["mode"], "av_fmp4");
    assert!(
        init["mime"]
            .as_str()
            .unwrap()
            .starts_with("video/mp4; codecs=\"avc1."),
        "{init}"
    );
    assert_stream_id(&init["stream_id"], idx);
    let binaries: Vec<&Vec<u8>> = t.frames[init_at + 1..done_at]
        .iter()
        .filter_map(|f| match f {
            Frame::Binary(b) => Some(b),
            Frame::Json(_) => None,
        })
        .collect();
    assert!(!binaries.is_empty(), "segment {idx} has no media");
    assert_eq!(
        &binaries[0][4..8],
        b"ftyp",
        "segment {idx}'s bytes start with an init segment"
    );
    let Frame::Json(done) = &t.frames[done_at] else {
        unreachable!()
    };
    assert_eq!(
        done,
        &json!({"type": "media_segment_complete", "segment_idx": idx,
                "stream_id": init["stream_id"], "chunks": binaries.len()})
    );
    // Its step and completion follow, in that order.
    let rest = Transcript {
        frames: t.frames[done_at..].to_vec(),
        close: None,
    };
    let step = rest.first("step_complete");
    assert_eq!(keys(step), ["latency_ms", "type"]);
    let l = &step["latency_ms"];
    assert_eq!(
        keys(l),
        ["main_user_step", "overhead", "total", "worker_e2e"]
    );
    let f = |k: &str| l[k].as_f64().unwrap_or_else(|| panic!("{k}: {l}"));
    assert_eq!(f("total"), f("main_user_step"));
    assert!(
        (f("total") - f("worker_e2e") - f("overhead")).abs() < 0.011,
        "{l}"
    );
    assert!(f("worker_e2e") > 0.0, "{l}");
    let complete = rest.index("ltx2_segment_complete");
    assert!(rest.index("step_complete") < complete);
    let Frame::Json(complete) = &rest.frames[complete] else {
        unreachable!()
    };
    assert_eq!(
        complete,
        &json!({"type": "ltx2_segment_complete", "segment_idx": idx, "total_segments": total_segments})
    );
    init["stream_id"].as_str().unwrap().to_string()
}

const LONG: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_seed_prompts_stream_in_dreamverse_order_with_exact_fields() {
    let server = start(test_config()).await;
    let mut client = connect(&server).await;
    let first: Value =
        serde_json::from_str(client.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(
        first,
        json!({"type": "queue_status", "position": 0, "total_gpus": 1, "available_gpus": 1}),
        "sent before the opening frame"
    );
    send(
        &mut client,
        json!({"type": "session_init_v2", "preset_id": "p1", "preset_label": "P1",
        "curated_prompts": ["one", "two"], "enhancement_enabled": false, "initial_image": null}),
    )
    .await;
    let t = read_until(&mut client, "prompt_sources_blocked", LONG).await;

    let head: Vec<&Value> = t.messages().take(6).collect();
    assert_eq!(
        head,
        [
            &json!({"type": "gpu_assigned", "gpu_id": 0, "session_timeout": 300}),
            &json!({"type": "loop_generation_updated", "enabled": false}),
            &json!({"type": "generation_paused_updated", "paused": false}),
            &json!({"type": "ltx2_stream_start", "total_segments": 2, "preset_id": "p1",
                    "stream_mode": "av_fmp4", "live_mode": true, "loop_generation_enabled": false,
                    "loop_iteration": 1, "generation_segment_cap": 6}),
            &json!({"type": "seed_prompts_updated", "prompts": ["one", "two"], "preset_id": "p1",
                    "preset_label": "P1", "reason": "init", "seed_prompt_count": 2}),
            &json!({"type": "segment_prompt_source", "segment_idx": 1, "source": "curated",
                    "prompt_id": null, "fallback_used": false, "seed_prompt_index": 0,
                    "loop_iteration": 1}),
        ]
    );
    for (idx, prompt) in [(1u64, "one"), (2, "two")] {
        let source_at = t
            .position(|m| m["type"] == "segment_prompt_source" && m["segment_idx"] == idx)
            .unwrap();
        let start_at = t
            .position(|m| m["type"] == "ltx2_segment_start" && m["segment_idx"] == idx)
            .unwrap();
        let init_at = t
            .position(|m| m["type"] == "media_init" && m["segment_idx"] == idx)
            .unwrap();
        assert!(
            source_at < start_at && start_at < init_at,
            "{:?}",
            t.types()
        );
        let Frame::Json(start) = &t.frames[start_at] else {
            unreachable!()
        };
        assert_eq!(
            start,
            &json!({"type": "ltx2_segment_start", "segment_idx": idx, "total_segments": 2,
                    "prompt": prompt, "source": "curated", "seed_prompt_index": idx - 1,
                    "loop_iteration": 1})
        );
        check_segment_media(&t, idx, 2);
    }
    // The documented order, segment after segment (runs of binary frames shown once).
    let mut order = t.types();
    order.dedup_by(|a, b| a == "binary" && b == "binary");
    let segment = [
        "segment_prompt_source",
        "ltx2_segment_start",
        "media_init",
        "binary",
        "media_segment_complete",
        "step_complete",
        "ltx2_segment_complete",
    ];
    let expected: Vec<&str> = [
        "gpu_assigned",
        "loop_generation_updated",
        "generation_paused_updated",
        "ltx2_stream_start",
        "seed_prompts_updated",
    ]
    .into_iter()
    .chain(segment)
    .chain(segment)
    .chain(["prompt_sources_blocked"])
    .collect();
    assert_eq!(order, expected);
    let ids: Vec<&Value> = t
        .all("media_init")
        .iter()
        .map(|m| &m["stream_id"])
        .collect();
    assert_ne!(ids[0], ids[1], "each segment has its own stream id");
    assert_eq!(t.count("step_complete"), 2, "one per segment, not per step");
    assert_eq!(
        t.all("prompt_sources_blocked"),
        [&json!({"type": "prompt_sources_blocked", "segment_idx": 3})]
    );
    assert_eq!(t.count("generation_cap_reached"), 0);
    assert!(t.close.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_appended_while_blocked_resumes_generation_as_typed() {
    let server = start(test_config()).await;
    let mut client = connect(&server).await;
    // Enhancement stays on (the default): without a prompt pipeline the prompt goes as typed.
    send(
        &mut client,
        json!({"type": "session_init_v2", "curated_prompts": ["one"]}),
    )
    .await;
    let t = read_until(&mut client, "prompt_sources_blocked", LONG).await;
    assert_eq!(t.first("prompt_sources_blocked")["segment_idx"], 2);
    send(
        &mut client,
        json!({"type": "append_prompt", "prompt": "user prompt", "prompt_id": "u1"}),
    )
    .await;
    let t = read_until(&mut client, "ltx2_segment_complete", LONG).await;
    let head: Vec<&Value> = t.messages().take(5).collect();
    assert_eq!(
        head,
        [
            &json!({"type": "prompt_received", "prompt_id": "u1", "queue_depth": 1}),
            &json!({"type": "prompt_ready", "prompt_id": "u1", "prompt": "user prompt",
                    "source": "user_raw", "latency_ms": 0.0}),
            &json!({"type": "prompt_sources_resumed", "segment_idx": 2, "source": "user_raw",
                    "prompt_id": "u1"}),
            &json!({"type": "segment_prompt_source", "segment_idx": 2, "source": "user_raw",
                    "prompt_id": "u1", "fallback_used": false, "seed_prompt_index": null,
                    "loop_iteration": 1}),
            &json!({"type": "ltx2_segment_start", "segment_idx": 2, "total_segments": 2,
                    "prompt": "user prompt", "source": "user_raw", "seed_prompt_index": null,
                    "loop_iteration": 1}),
        ]
    );
    check_segment_media(&t, 2, 2);
    // And blocked again, reported once more.
    let t = read_until(&mut client, "prompt_sources_blocked", LONG).await;
    assert_eq!(t.first("prompt_sources_blocked")["segment_idx"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_completes_the_stream_and_a_restart_begins_again_at_segment_one() {
    let mut config = test_config();
    config.dreamverse.generation_segment_cap = 1;
    let (_server, mut client) = open(
        config,
        json!({"type": "session_init_v2", "curated_prompts": ["a", "b"]}),
    )
    .await;
    let t = read_until(&mut client, "ltx2_stream_complete", LONG).await;
    assert_eq!(t.first("ltx2_stream_start")["generation_segment_cap"], 1);
    assert_eq!(t.segment_starts(), [1]);
    assert!(t.index("ltx2_segment_complete") < t.index("ltx2_stream_complete"));
    assert_eq!(
        t.first("ltx2_stream_complete"),
        &json!({"type": "ltx2_stream_complete"}),
        "no fields"
    );
    let first_id = check_segment_media(&t, 1, 2);
    // The server waits: nothing more comes.
    let idle = read_for(&mut client, Duration::from_millis(600)).await;
    assert!(idle.frames.is_empty(), "{:?}", idle.types());

    send(&mut client, json!({"type": "restart_generation"})).await;
    let t = read_until(&mut client, "ltx2_stream_complete", LONG).await;
    let head: Vec<&Value> = t.messages().take(5).collect();
    assert_eq!(
        head,
        [
            &json!({"type": "generation_restarted", "reason": "cap_restart", "segment_cap": 1}),
            &json!({"type": "ltx2_stream_start", "total_segments": 2, "preset_id": null,
                    "stream_mode": "av_fmp4", "live_mode": true, "loop_generation_enabled": false,
                    "loop_iteration": 2, "generation_segment_cap": 1}),
            &json!({"type": "seed_prompts_reset_applied", "reason": "cap_restart",
                    "loop_iteration": 2, "seed_prompt_count": 2, "dropped_user_raw_queue": 0,
                    "dropped_user_ready_queue": 0}),
            &json!({"type": "segment_prompt_source", "segment_idx": 1, "source": "curated",
                    "prompt_id": null, "fallback_used": false, "seed_prompt_index": 0,
                    "loop_iteration": 2}),
            &json!({"type": "ltx2_segment_start", "segment_idx": 1, "total_segments": 2,
                    "prompt": "a", "source": "curated", "seed_prompt_index": 0,
                    "loop_iteration": 2}),
        ]
    );
    let second_id = check_segment_media(&t, 1, 2);
    assert_ne!(first_id, second_id);
    assert_eq!(t.count("generation_cap_reached"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_without_a_prompt_pipeline_reports_its_fallback_and_keeps_the_seeds() {
    let mut config = test_config();
    config.dreamverse.generation_segment_cap = 1;
    let (_server, mut client) = open(
        config,
        json!({"type": "session_init_v2", "preset_id": "p1", "preset_label": "P1",
        "curated_prompts": ["a", "b"]}),
    )
    .await;
    read_until(&mut client, "ltx2_stream_complete", LONG).await;
    send(
        &mut client,
        json!({"type": "rewrite_seed_prompts", "rewrite_instruction": "make it night",
        "prompt_window_prompts": ["a", "b"], "rewrite_model": "not-allowed"}),
    )
    .await;
    let t = read_until(&mut client, "rewrite_seed_prompts_complete", LONG).await;
    assert_eq!(
        t.messages().collect::<Vec<_>>(),
        [
            &json!({"type": "rewrite_seed_prompts_started", "model": "gpt-oss-120b"}),
            &json!({"type": "seed_prompts_updated", "prompts": ["a", "b"], "preset_id": "p1",
                    "preset_label": "P1", "reason": "rewrite", "fallback_used": true,
                    "error": "prompt pipeline not configured", "model": "gpt-oss-120b",
                    "latency_ms": 0.0, "raw_llm_output": null,
                    "rewrite_instruction": "make it night"}),
            &json!({"type": "rewrite_seed_prompts_complete", "fallback_used": true,
                    "error": "prompt pipeline not configured", "model": "gpt-oss-120b",
                    "latency_ms": 0.0}),
        ]
    );
    // A failed rewrite restarts nothing.
    let idle = read_for(&mut client, Duration::from_millis(600)).await;
    assert!(idle.frames.is_empty(), "{:?}", idle.types());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_clip_mode_and_simple_generate_make_one_clip_each() {
    let (_server, mut client) = open(
        test_config(),
        json!({"type": "session_init_v2", "single_clip_mode": true,
        "curated_prompts": ["first"], "enhancement_enabled": false}),
    )
    .await;
    let mut t = read_until(&mut client, "ltx2_stream_complete", LONG).await;
    send(
        &mut client,
        json!({"type": "simple_generate", "prompt": "second", "prompt_id": "s1"}),
    )
    .await;
    let second = read_until(&mut client, "ltx2_stream_complete", LONG).await;
    t.frames.extend(second.frames);
    let rest = read_for(&mut client, Duration::from_millis(400)).await;
    t.frames.extend(rest.frames);

    assert_eq!(t.count("gpu_assigned"), 1);
    assert_eq!(t.count("ltx2_stream_start"), 2, "{:?}", t.types());
    assert_eq!(t.count("ltx2_stream_complete"), 2, "{:?}", t.types());
    assert_eq!(t.segment_starts(), [1, 1]);
    for start in t.all("ltx2_stream_start") {
        assert_eq!(
            start["generation_segment_cap"], 0,
            "no cap in single-clip mode"
        );
    }
    assert_eq!(t.count("prompt_sources_blocked"), 0);
    assert_eq!(
        t.first("prompt_received"),
        &json!({"type": "prompt_received", "prompt_id": "s1", "queue_depth": 1})
    );
    assert_eq!(t.first("prompt_ready")["source"], "user_raw");
    assert_eq!(
        t.first("seed_prompts_reset_applied")["reason"],
        "simple_generate"
    );
    let prompts: Vec<&Value> = t
        .all("ltx2_segment_start")
        .iter()
        .map(|m| &m["prompt"])
        .collect();
    assert_eq!(prompts, [&json!("first"), &json!("second")]);
    // Each clip's stream completes after the clip.
    let completes = t.indices("ltx2_stream_complete");
    let segment_completes = t.indices("ltx2_segment_complete");
    assert!(segment_completes[0] < completes[0] && completes[0] < segment_completes[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_project_starts_on_the_same_socket_after_project_idle() {
    let (_server, mut client) = open(
        test_config(),
        json!({"type": "session_init_v2", "preset_id": "p1", "curated_prompts": ["a"]}),
    )
    .await;
    let mut t = read_until(&mut client, "ltx2_segment_complete", LONG).await;
    // A prompt waiting (paused) when the project ends is dropped.
    send(
        &mut client,
        json!({"type": "set_generation_paused", "paused": true}),
    )
    .await;
    send(
        &mut client,
        json!({"type": "append_prompt", "prompt": "queued"}),
    )
    .await;
    send(&mut client, json!({"type": "end_project_keep_session"})).await;
    t.frames
        .extend(read_until(&mut client, "project_idle", LONG).await.frames);
    // Nothing but errors for prompts until a new project starts.
    send(
        &mut client,
        json!({"type": "append_prompt", "prompt": "too early"}),
    )
    .await;
    send(
        &mut client,
        json!({"type": "project_init_v1", "preset_id": "p2",
        "curated_prompts": ["b"], "enhancement_enabled": false}),
    )
    .await;
    t.frames.extend(
        read_until(&mut client, "ltx2_segment_complete", LONG)
            .await
            .frames,
    );

    assert_eq!(t.count("gpu_assigned"), 1);
    let idle = t.index("project_idle");
    let starts = t.indices("ltx2_stream_start");
    assert_eq!(starts.len(), 2, "{:?}", t.types());
    assert!(starts[0] < idle && idle < starts[1], "{:?}", t.types());
    assert_eq!(
        t.types()[idle - 1],
        "ltx2_stream_complete",
        "the open stream ends first"
    );
    let Frame::Json(idle_msg) = &t.frames[idle] else {
        unreachable!()
    };
    assert_eq!(
        idle_msg,
        &json!({"type": "project_idle", "dropped_user_raw_queue": 0, "dropped_user_ready_queue": 1})
    );
    let after_idle = Transcript {
        frames: t.frames[idle..].to_vec(),
        close: None,
    };
    assert_eq!(
        after_idle.first("error"),
        &json!({"type": "error", "message": "Start a new project before sending prompts."})
    );
    let Frame::Json(second_start) = &t.frames[starts[1]] else {
        unreachable!()
    };
    assert_eq!(second_start["preset_id"], "p2");
    assert_eq!(second_start["loop_iteration"], 1);
    assert_eq!(second_start["total_segments"], 1);
    assert_eq!(
        after_idle.first("seed_prompts_reset_applied")["reason"],
        "project_init"
    );
    let start = after_idle.first("ltx2_segment_start");
    assert_eq!(
        (&start["segment_idx"], &start["prompt"]),
        (&json!(1), &json!("b"))
    );
    check_segment_media(&after_idle, 1, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_init_while_a_project_streams_is_refused_and_the_project_goes_on() {
    let (_server, mut client) = open(
        test_config(),
        json!({"type": "session_init_v2", "curated_prompts": ["a", "b"]}),
    )
    .await;
    read_until(&mut client, "ltx2_stream_start", LONG).await;
    let before = counter("framecast_errors_total{code=\"invalid_message\"}");
    send(
        &mut client,
        json!({"type": "project_init_v1", "curated_prompts": ["c"]}),
    )
    .await;
    let t = read_until(&mut client, "error", LONG).await;
    assert_eq!(
        t.first("error"),
        &json!({"type": "error", "message": "Current project is still ending. Wait for the reset to finish before starting another project."})
    );
    assert!(counter("framecast_errors_total{code=\"invalid_message\"}") >= before + 1.0);
    let t = read_until_nth(&mut client, "ltx2_segment_complete", 2, LONG).await;
    let prompts: Vec<&Value> = t
        .all("ltx2_segment_start")
        .iter()
        .map(|m| &m["prompt"])
        .collect();
    assert!(
        !prompts.contains(&&json!("c")),
        "the refused project never ran: {prompts:?}"
    );
    assert_eq!(t.count("ltx2_stream_start"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setting_is_acknowledged() {
    let (_server, mut client) = open(test_config(), json!({"type": "session_init_v2"})).await;
    read_until(&mut client, "prompt_sources_blocked", LONG).await;
    let asks = [
        (
            json!({"type": "set_enhancement", "enabled": false}),
            json!({"type": "enhancement_updated", "enabled": false}),
        ),
        (
            json!({"type": "set_loop_generation", "enabled": true}),
            json!({"type": "loop_generation_updated", "enabled": true}),
        ),
        (
            json!({"type": "set_generation_paused", "paused": true}),
            json!({"type": "generation_paused_updated", "paused": true}),
        ),
        (
            json!({"type": "set_rewrite_model", "rewrite_model": "unknown-model"}),
            json!({"type": "rewrite_model_updated", "rewrite_model": "gpt-oss-120b"}),
        ),
        (
            json!({"type": "set_rewrite_temperature", "rewrite_temperature": 5}),
            json!({"type": "rewrite_temperature_updated", "rewrite_temperature": 2.0}),
        ),
        (
            json!({"type": "reset_to_seed_prompts"}),
            json!({"type": "seed_prompts_reset_pending", "seed_prompt_count": 0}),
        ),
        (json!({"type": "no_such_type"}), json!(null)),
        (
            json!({"type": "set_generation_paused", "paused": false}),
            json!({"type": "generation_paused_updated", "paused": false}),
        ),
    ];
    for (ask, answer) in asks {
        send(&mut client, ask.clone()).await;
        if answer.is_null() {
            continue;
        }
        let t = read_until(&mut client, answer["type"].as_str().unwrap(), LONG).await;
        assert_eq!(t.messages().last().unwrap(), &answer, "answer to {ask}");
    }
    // Auto-extension needs the prompt pipeline: one failure, no retry until toggled.
    send(
        &mut client,
        json!({"type": "set_auto_extension", "enabled": true}),
    )
    .await;
    let t = read_until(&mut client, "auto_prompt_failed", LONG).await;
    assert_eq!(
        t.first("auto_extension_updated"),
        &json!({"type": "auto_extension_updated", "enabled": true})
    );
    assert_eq!(
        t.first("auto_prompt_failed"),
        &json!({"type": "auto_prompt_failed", "segment_idx": 1, "latency_ms": 0.0,
                "error": "prompt pipeline not configured"})
    );
    let quiet = read_for(&mut client, Duration::from_millis(400)).await;
    assert_eq!(quiet.count("auto_prompt_failed"), 0, "{:?}", quiet.types());
    assert_eq!(quiet.count("ltx2_segment_start"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_opening_frame_reads_segment_prompts() {
    let server = start(test_config()).await;
    for opening in [
        json!({"type": "select_model", "segment_prompts": ["legacy"], "curated_prompts": ["no"]}),
        json!({"type": "anything_else", "segment_prompts": ["legacy"]}),
    ] {
        let mut client = connect(&server).await;
        send(&mut client, opening.clone()).await;
        let t = read_until(&mut client, "ltx2_segment_start", LONG).await;
        assert_eq!(
            t.first("seed_prompts_updated")["prompts"],
            json!(["legacy"]),
            "{opening}"
        );
        assert_eq!(t.first("ltx2_segment_start")["prompt"], "legacy");
        drop(client);
        server
            .wait_for_free_worker(LONG, "the session kept the worker")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_opening_frame_the_session_starts_with_defaults() {
    let mut config = test_config();
    config.streaming.init_timeout_seconds = 1;
    let server = start(config).await;
    let mut client = connect(&server).await;
    let started = Instant::now();
    let t = read_until(&mut client, "prompt_sources_blocked", LONG).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        t.messages().collect::<Vec<_>>(),
        [
            &json!({"type": "queue_status", "position": 0, "total_gpus": 1, "available_gpus": 1}),
            &json!({"type": "gpu_assigned", "gpu_id": 0, "session_timeout": 300}),
            &json!({"type": "loop_generation_updated", "enabled": false}),
            &json!({"type": "generation_paused_updated", "paused": false}),
            &json!({"type": "ltx2_stream_start", "total_segments": 0, "preset_id": null,
                    "stream_mode": "av_fmp4", "live_mode": true, "loop_generation_enabled": false,
                    "loop_iteration": 1, "generation_segment_cap": 6}),
            &json!({"type": "seed_prompts_updated", "prompts": [], "preset_id": null,
                    "preset_label": "", "reason": "init", "seed_prompt_count": 0}),
            &json!({"type": "prompt_sources_blocked", "segment_idx": 1}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_is_not_a_json_object_ends_the_session_with_an_error_and_a_close() {
    let server = start(test_config()).await;
    let before = counter("framecast_errors_total{code=\"invalid_message\"}");

    // Mid-session.
    let mut client = connect(&server).await;
    send(&mut client, json!({"type": "session_init_v2"})).await;
    read_until(&mut client, "prompt_sources_blocked", LONG).await;
    client.send(Message::Text("not json".into())).await.unwrap();
    let t = read_for(&mut client, LONG).await;
    assert_eq!(t.types(), ["error"]);
    assert!(
        t.first("error")["message"]
            .as_str()
            .unwrap()
            .starts_with("message is not valid JSON"),
        "{t:?}"
    );
    assert_eq!(keys(t.first("error")), ["message", "type"]);
    assert_eq!(t.close, Some((1003, "Invalid message".into())));
    server
        .wait_for_free_worker(LONG, "the ended session kept the worker")
        .await;

    // As the opening frame: a binary frame, then a JSON value that is not an object.
    for bad in [
        Message::Binary(vec![1, 2, 3].into()),
        Message::Text("[1]".into()),
    ] {
        let mut client = connect(&server).await;
        client.next().await.unwrap().unwrap(); // queue_status
        client.send(bad).await.unwrap();
        let t = read_for(&mut client, LONG).await;
        assert_eq!(t.types(), ["error"], "{t:?}");
        assert_eq!(t.close.as_ref().map(|c| c.0), Some(1003));
    }
    assert!(counter("framecast_errors_total{code=\"invalid_message\"}") >= before + 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_prompts_never_start_generation() {
    let (_server, mut client) = open(
        test_config(),
        json!({"type": "session_init_v2", "enhancement_enabled": false}),
    )
    .await;
    read_until(&mut client, "prompt_sources_blocked", LONG).await;
    send(
        &mut client,
        json!({"type": "append_prompt", "prompt": "   "}),
    )
    .await;
    send(
        &mut client,
        json!({"type": "append_prompt", "prompt": "x".repeat(2001)}),
    )
    .await;
    send(&mut client, json!({"type": "append_prompt"})).await;
    let t = read_for(&mut client, Duration::from_millis(800)).await;
    let errors: Vec<&str> = t
        .all("error")
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 3, "{:?}", t.types());
    assert_eq!(errors[0], "append_prompt requires a non-empty prompt");
    assert!(
        errors[1].starts_with("prompt is longer than 2000"),
        "{errors:?}"
    );
    assert_eq!(errors[2], "append_prompt requires a non-empty prompt");
    assert_eq!(t.count("prompt_received"), 0);
    assert_eq!(t.count("ltx2_segment_start"), 0, "{:?}", t.types());
    assert_eq!(
        t.count("prompt_sources_blocked"),
        0,
        "reported once, before"
    );
    assert!(t.close.is_none(), "the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_lifetime_ends_it_with_session_timeout_and_1000() {
    let mut config = test_config();
    config.dreamverse.session_lifetime_seconds = 1;
    let (server, mut client) = open(
        config,
        json!({"type": "session_init_v2", "curated_prompts": ["a"]}),
    )
    .await;
    let started = Instant::now();
    let t = read_for(&mut client, LONG).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(t.first("gpu_assigned")["session_timeout"], 1);
    let last = t.messages().last().unwrap();
    assert_eq!(
        last,
        &json!({"type": "session_timeout", "message": "Session expired after 1 seconds"})
    );
    assert_eq!(t.close, Some((1000, "Session timeout".into())));
    server
        .wait_for_free_worker(LONG, "the expired session kept the worker")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_session_hears_its_place_first_and_gets_the_worker_next() {
    let server = start(test_config()).await;
    let mut holder = connect(&server).await;
    send(&mut holder, json!({"type": "session_init_v2"})).await;
    read_until(&mut holder, "gpu_assigned", LONG).await;

    let mut waiting = connect(&server).await;
    let first = read_until(&mut waiting, "queue_status", LONG).await;
    assert_eq!(
        first.messages().collect::<Vec<_>>(),
        [&json!({"type": "queue_status", "position": 1, "total_gpus": 1, "available_gpus": 0})]
    );
    send(&mut waiting, json!({"type": "session_init_v2"})).await;
    let queued = read_until(&mut waiting, "queue_status", LONG).await;
    assert_eq!(
        queued.messages().collect::<Vec<_>>(),
        [&json!({"type": "queue_status", "position": 1, "total_gpus": 1, "available_gpus": 0})]
    );
    send(&mut holder, json!({"type": "leave"})).await;
    let t = read_for(&mut holder, LONG).await;
    assert_eq!(
        t.close.map(|c| c.0),
        Some(1000),
        "leave ends with a close frame"
    );
    let t = read_until(&mut waiting, "gpu_assigned", LONG).await;
    assert_eq!(t.first("gpu_assigned")["gpu_id"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_images_are_checked_and_a_bad_one_closes_with_1003() {
    use base64::Engine;
    let server = start(test_config()).await;
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let good = base64::engine::general_purpose::STANDARD.encode(png.into_inner());

    let mut client = connect(&server).await;
    send(
        &mut client,
        json!({"type": "session_init_v2", "curated_prompts": ["a"],
        "initial_image": {"data_url": format!("data:image/png;base64,{good}"),
                          "mime_type": "image/png", "name": "red.png"}}),
    )
    .await;
    let t = read_until(&mut client, "ltx2_segment_complete", LONG).await;
    assert_eq!(t.count("error"), 0, "{:?}", t.types());
    drop(client);
    server
        .wait_for_free_worker(LONG, "the previous session kept the worker")
        .await;

    for (image, why) in [
        (
            json!({"data_url": "data:image/png;base64,bm90IGFuIGltYWdl"}),
            "does not decode",
        ),
        (
            json!({"data_url": format!("data:image/png;base64,{good}"), "mime_type": "image/jpeg"}),
            "must match the data URL",
        ),
        (
            json!({"data_url": "data:image/gif;base64,R0lG"}),
            "PNG, JPEG, or WebP",
        ),
        (json!("not an object"), "must be an object"),
    ] {
        let mut client = connect(&server).await;
        send(
            &mut client,
            json!({"type": "session_init_v2", "initial_image": image}),
        )
        .await;
        let t = read_for(&mut client, LONG).await;
        assert_eq!(t.types(), ["queue_status", "error"], "{why}");
        let message = t.first("error")["message"].as_str().unwrap();
        assert!(message.contains(why), "{why}: {message}");
        assert_eq!(
            t.close,
            Some((1003, "Invalid initial image".into())),
            "{why}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_completes_the_stream_after_its_segment_and_closes_with_1001() {
    let mut config = test_config();
    config.server.shutdown_grace_seconds = 5;
    let (server, mut client) = open(
        config,
        json!({"type": "session_init_v2", "curated_prompts": ["a", "b", "c"]}),
    )
    .await;
    let mut t = read_until(&mut client, "ltx2_segment_start", LONG).await;
    let state = server.state.clone();
    let drained = tokio::spawn(async move { state.drain().await });
    let rest = read_for(&mut client, LONG).await;
    t.frames.extend(rest.frames);
    drained.await.unwrap();
    assert_eq!(rest.close, Some((1001, "draining".into())));
    assert_eq!(
        t.messages().last().unwrap(),
        &json!({"type": "ltx2_stream_complete"})
    );
    // The segments under way finished; no third one started.
    let starts = t.segment_starts();
    assert!(starts.len() <= 2, "{starts:?}");
    assert_eq!(t.count("ltx2_segment_complete"), starts.len());
    assert_eq!(t.count("error"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_segment_generates_while_the_previous_ones_media_goes_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.streaming.session_log_dir = Some(dir.path().to_path_buf());
    let (_server, mut client) = open(
        config,
        json!({"type": "session_init_v2", "curated_prompts": ["a", "b", "c"]}),
    )
    .await;
    let t = read_until_nth(&mut client, "ltx2_segment_complete", 3, LONG).await;
    // The announcements still come in Dreamverse's order, one segment after the other.
    for idx in [2u64, 3] {
        let previous_done = t
            .position(|m| m["type"] == "ltx2_segment_complete" && m["segment_idx"] == idx - 1)
            .unwrap();
        let source = t
            .position(|m| m["type"] == "segment_prompt_source" && m["segment_idx"] == idx)
            .unwrap();
        assert!(previous_done < source, "{:?}", t.types());
    }
    send(&mut client, json!({"type": "leave"})).await;
    let _ = read_for(&mut client, LONG).await;
    // The session log shows when the server started each segment: before the previous
    // one's media was out.
    let events = || -> Vec<Value> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect::<Vec<Value>>()
            })
            .collect()
    };
    let since = Instant::now();
    let mut log = events();
    while !log.iter().any(|e| e["event"] == "state") || log.len() < 8 {
        assert!(since.elapsed() < LONG, "no session log: {log:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        log = events();
    }
    let at = |event: &str, segment: u64| {
        log.iter()
            .position(|e| e["event"] == event && e["pipeline_segment"] == segment)
            .unwrap_or_else(|| panic!("no {event} {segment} in {log:?}"))
    };
    for k in [0u64, 1] {
        assert!(
            at("segment_start", k + 1) < at("segment_complete", k),
            "segment {} waited for segment {k}'s media: {log:?}",
            k + 1
        );
    }
}
