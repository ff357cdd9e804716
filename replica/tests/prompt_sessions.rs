//! The prompt pipeline in live sessions of both protocols: a real replica server on
//! loopback whose prompt service talks to a real local HTTP server imitating an
//! OpenAI-compatible provider. What the generator receives is what `ltx2_segment_start`
//! announces (the same plan feeds both).

mod support;

use std::time::Duration;

use framecast_replica::config::PromptSettings;
use framecast_replica::prompt::{PromptEnhancer, PromptService};
use serde_json::{Value, json};
use support::classifier::{BENIGN, Classifier, UNSAFE};
use support::fake_llm::{self, FakeLlm, Reply, system_text, user_text};
use support::transcript::{Transcript, connect, read_to_close, read_until, read_until_match, send};
use support::{Server, counter, small_config, start};

const LIMIT: Duration = Duration::from_secs(20);

/// A prompt service over `llms` (in priority order), each operation bounded by `budget`.
fn service(llms: &[&FakeLlm], budget: Duration, dir: Option<std::path::PathBuf>) -> PromptService {
    let settings = PromptSettings {
        enabled: true,
        providers: llms
            .iter()
            .enumerate()
            .map(|(i, l)| l.provider(&format!("llm{i}")))
            .collect(),
        timeout_ms: 10_000,
        operation_timeout_ms: u64::try_from(budget.as_millis()).unwrap(),
        system_prompt_dir: dir,
        ..PromptSettings::default()
    };
    PromptService::disabled()
        .with_enhancer(PromptEnhancer::from_settings(&settings).unwrap(), budget)
}

/// Answers every request with `ENHANCED(<user text>)` after `delay`.
async fn echoing_llm(delay: Duration) -> FakeLlm {
    fake_llm::start(move |body| Reply::Text(format!("ENHANCED({})", user_text(body)), delay)).await
}

async fn dreamverse(server: &Server, opening: Value) -> support::transcript::Client {
    let mut client = connect(&server.ws_url("/ws")).await;
    send(&mut client, opening).await;
    client
}

fn segment_starts(t: &Transcript) -> Vec<(u64, String, String)> {
    t.all("ltx2_segment_start")
        .iter()
        .map(|m| {
            (
                m["segment_idx"].as_u64().unwrap(),
                m["prompt"].as_str().unwrap().to_string(),
                m["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_appended_prompt_is_enhanced_and_the_enhanced_text_is_generated() {
    let llm = echoing_llm(Duration::from_millis(50)).await;
    let server = start(
        small_config(),
        service(&[&llm], Duration::from_secs(5), None),
    )
    .await;
    let before = counter(
        "framecast_prompt_requests_total{provider=\"llm0\",operation=\"enhance\",outcome=\"ok\"}",
    );
    let mut client = dreamverse(
        &server,
        json!({"type": "session_init_v2", "curated_prompts": ["a quiet harbour"],
               "enhancement_enabled": true}),
    )
    .await;
    let mut t = Transcript::default();
    read_until(&mut client, &mut t, "ltx2_segment_start", LIMIT).await;
    send(
        &mut client,
        json!({"type": "append_prompt", "prompt": "a red fox", "prompt_id": "u1"}),
    )
    .await;
    read_until_match(&mut client, &mut t, LIMIT, "segment 2", |m| {
        m["type"] == "ltx2_segment_start" && m["segment_idx"] == 2
    })
    .await;
    let types = t.types();
    let at = |kind: &str| types.iter().position(|k| k == kind).unwrap();
    assert!(at("prompt_received") < at("prompt_enhancing"));
    assert!(at("prompt_enhancing") < at("prompt_ready"));
    let ready = t.first("prompt_ready");
    assert_eq!(ready["prompt_id"], "u1");
    assert_eq!(ready["source"], "user_enhanced");
    assert_eq!(ready["prompt"], "ENHANCED(a red fox)");
    assert!(ready["latency_ms"].as_f64().unwrap() >= 50.0, "{ready}");
    let source = t
        .all("segment_prompt_source")
        .into_iter()
        .find(|m| m["segment_idx"] == 2)
        .unwrap()
        .clone();
    assert_eq!(source["source"], "user_enhanced");
    assert_eq!(source["prompt_id"], "u1");
    assert_eq!(
        segment_starts(&t)[1],
        (
            2,
            "ENHANCED(a red fox)".to_string(),
            "user_enhanced".to_string()
        )
    );
    // The provider got the prompt under the enhancement system prompt.
    let requests = llm.requests();
    assert_eq!(user_text(&requests[0]), "a red fox");
    assert!(
        system_text(&requests[0]).contains("video"),
        "{}",
        requests[0]
    );
    let after = counter(
        "framecast_prompt_requests_total{provider=\"llm0\",operation=\"enhance\",outcome=\"ok\"}",
    );
    assert!(after > before, "{before} -> {after}");
}

#[tokio::test]
async fn a_dead_or_slow_provider_drops_the_prompt_within_the_budget() {
    for (name, llm) in [
        ("500", fake_llm::start(|_| Reply::Status(500)).await),
        (
            "slow",
            fake_llm::start(|_| Reply::Text("late".into(), Duration::from_secs(30))).await,
        ),
    ] {
        let budget = Duration::from_millis(400);
        let server = start(small_config(), service(&[&llm], budget, None)).await;
        let mut client = dreamverse(
            &server,
            json!({"type": "session_init_v2", "curated_prompts": ["one"]}),
        )
        .await;
        let mut t = Transcript::default();
        read_until(&mut client, &mut t, "ltx2_segment_complete", LIMIT).await;
        let sent = std::time::Instant::now();
        send(
            &mut client,
            json!({"type": "append_prompt", "prompt": "a cat", "prompt_id": "c1"}),
        )
        .await;
        read_until(&mut client, &mut t, "prompt_fallback_used", LIMIT).await;
        let waited = sent.elapsed();
        assert!(
            waited < budget + Duration::from_secs(2),
            "{name}: {waited:?}"
        );
        assert_eq!(
            t.first("prompt_fallback_used"),
            &json!({"type": "prompt_fallback_used", "prompt_id": "c1", "prompt": "a cat",
                    "source": "user_enhancement_failed",
                    "latency_ms": t.first("prompt_fallback_used")["latency_ms"],
                    "error": "Prompt extension failed for this request."})
        );
        // The dropped prompt is never generated: the sources stay dry.
        read_to_close(&mut client, &mut t, Duration::from_secs(1)).await;
        assert_eq!(t.all("prompt_sources_blocked").len(), 1);
        assert_eq!(segment_starts(&t).len(), 1, "{name}: {:?}", t.types());
    }
    assert!(
        counter(
            "framecast_prompt_operation_failures_total{operation=\"enhance\",reason=\"timeout\"}"
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_retryable_failure_falls_back_to_the_next_provider() {
    let limited = fake_llm::start(|_| Reply::Status(429)).await;
    let backup = echoing_llm(Duration::ZERO).await;
    let before = counter("framecast_prompt_fallbacks_total{operation=\"enhance\"}");
    let limited_series = "framecast_prompt_errors_total{provider=\"llm0\",operation=\"enhance\",class=\"rate_limited\"}";
    let timed_series =
        "framecast_prompt_request_seconds_count{provider=\"llm1\",operation=\"enhance\"}";
    let (limited_before, timed_before) = (counter(limited_series), counter(timed_series));
    let server = start(
        small_config(),
        service(&[&limited, &backup], Duration::from_secs(5), None),
    )
    .await;
    let mut client = dreamverse(
        &server,
        json!({"type": "session_init_v2", "curated_prompts": ["one"]}),
    )
    .await;
    let mut t = Transcript::default();
    read_until(&mut client, &mut t, "ltx2_segment_start", LIMIT).await;
    send(
        &mut client,
        json!({"type": "append_prompt", "prompt": "rain"}),
    )
    .await;
    read_until(&mut client, &mut t, "prompt_ready", LIMIT).await;
    assert_eq!(t.first("prompt_ready")["prompt"], "ENHANCED(rain)");
    assert_eq!((limited.requests().len(), backup.requests().len()), (1, 1));
    assert!(counter("framecast_prompt_fallbacks_total{operation=\"enhance\"}") > before);
    assert!(counter(limited_series) > limited_before);
    assert!(
        counter(timed_series) > timed_before,
        "{}",
        support::metrics().render()
    );
    // The monitor reports who answered, as Dreamverse does.
    let monitor: Value = reqwest::get(format!("{}/internal/monitor/sessions", server.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        monitor["prompt_provider_success_counts"],
        json!({"llm0": 0, "llm1": 1})
    );
}

#[tokio::test]
async fn auto_extension_invents_the_next_prompts_while_segments_generate() {
    let llm = fake_llm::start(|body| {
        let n = user_text(body).lines().count();
        Reply::Text(format!("scene {}", n + 1), Duration::from_millis(20))
    })
    .await;
    let server = start(
        small_config(),
        service(&[&llm], Duration::from_secs(5), None),
    )
    .await;
    let mut client = dreamverse(
        &server,
        json!({"type": "session_init_v2", "curated_prompts": ["scene 1"],
               "auto_extension_enabled": true}),
    )
    .await;
    let mut t = Transcript::default();
    read_until_match(&mut client, &mut t, LIMIT, "segment 4", |m| {
        m["type"] == "ltx2_segment_start" && m["segment_idx"] == 4
    })
    .await;
    assert_eq!(
        segment_starts(&t),
        [
            (1, "scene 1".into(), "curated".into()),
            (2, "scene 2".into(), "auto_llm".into()),
            (3, "scene 3".into(), "auto_llm".into()),
            (4, "scene 4".into(), "auto_llm".into()),
        ]
    );
    assert!(
        t.all("prompt_sources_blocked").is_empty(),
        "{:?}",
        t.types()
    );
    assert!(t.all("auto_prompt_failed").is_empty());
    // Each request carried the story so far.
    assert_eq!(user_text(&llm.requests()[2]), "scene 1\nscene 2\nscene 3");
}

#[tokio::test]
async fn a_rewrite_replaces_the_seeds_and_restarts_the_rollout() {
    let llm = fake_llm::start(|_| {
        Reply::Text(
            "1. storm over the sea\n2. lightning on the mast".into(),
            Duration::ZERO,
        )
    })
    .await;
    let mut config = small_config();
    config.dreamverse.generation_segment_cap = 2;
    let server = start(config, service(&[&llm], Duration::from_secs(5), None)).await;
    let mut client = dreamverse(
        &server,
        json!({"type": "session_init_v2", "curated_prompts": ["calm sea", "sunset"]}),
    )
    .await;
    let mut t = Transcript::default();
    read_until(&mut client, &mut t, "ltx2_stream_complete", LIMIT).await;
    send(
        &mut client,
        json!({"type": "rewrite_seed_prompts", "rewrite_instruction": "make it stormy",
               "prompt_window_prompts": ["calm sea", "sunset"]}),
    )
    .await;
    read_until_match(&mut client, &mut t, LIMIT, "restarted segment 2", |m| {
        m["type"] == "ltx2_segment_start" && m["prompt"] == "lightning on the mast"
    })
    .await;
    let updated = t
        .all("seed_prompts_updated")
        .into_iter()
        .find(|m| m["reason"] == "rewrite")
        .unwrap()
        .clone();
    assert_eq!(
        updated["prompts"],
        json!(["storm over the sea", "lightning on the mast"])
    );
    assert_eq!(updated["fallback_used"], false);
    assert_eq!(
        t.first("rewrite_seed_prompts_complete")["fallback_used"],
        false
    );
    let applied = t.first("seed_prompts_reset_applied");
    assert_eq!(applied["reason"], "rewrite_rollout");
    let starts = segment_starts(&t);
    assert_eq!(
        starts[2].0, 1,
        "the rollout restarts at segment 1: {starts:?}"
    );
    assert_eq!(starts[2].1, "storm over the sea");
    assert!(user_text(&llm.requests()[0]).contains("make it stormy"));
}

#[tokio::test]
async fn v1_stream_enhances_client_prompts_and_auto_extends_with_the_llm() {
    let llm = echoing_llm(Duration::from_millis(20)).await;
    let mut config = small_config();
    config.streaming.generation_segment_cap = 3;
    let server = start(config, service(&[&llm], Duration::from_secs(5), None)).await;
    let mut client = connect(&server.ws_url("/v1/stream")).await;
    send(
        &mut client,
        json!({"type": "session_init_v2", "enhancement_enabled": true,
               "auto_extension_enabled": true}),
    )
    .await;
    send(
        &mut client,
        json!({"type": "segment_prompt_source", "prompt": "a red fox"}),
    )
    .await;
    let mut t = Transcript::default();
    read_to_close(&mut client, &mut t, LIMIT).await;
    let prompts: Vec<String> = t
        .all("ltx2_segment_start")
        .iter()
        .map(|m| m["prompt"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(prompts.len(), 3, "{:?}", t.types());
    assert_eq!(prompts[0], "ENHANCED(a red fox)");
    // Auto-extension asked the LLM with the story so far (the enhanced prompt).
    assert_eq!(prompts[1], "ENHANCED(ENHANCED(a red fox))");
    assert!(
        prompts[2].starts_with("ENHANCED(ENHANCED(a red fox)\n"),
        "{prompts:?}"
    );
    assert_eq!(t.close.as_ref().map(|c| c.0), Some(1000));
}

#[tokio::test]
async fn v1_stream_without_a_provider_repeats_the_prompt_and_uses_it_as_typed() {
    let dead = fake_llm::start(|_| Reply::Status(503)).await;
    let mut config = small_config();
    config.streaming.generation_segment_cap = 2;
    let server = start(config, service(&[&dead], Duration::from_millis(500), None)).await;
    let mut client = connect(&server.ws_url("/v1/stream")).await;
    send(
        &mut client,
        json!({"type": "session_init_v2", "enhancement_enabled": true,
               "auto_extension_enabled": true}),
    )
    .await;
    send(
        &mut client,
        json!({"type": "segment_prompt_source", "prompt": "a red fox"}),
    )
    .await;
    let mut t = Transcript::default();
    read_to_close(&mut client, &mut t, LIMIT).await;
    let prompts: Vec<&str> = t
        .all("ltx2_segment_start")
        .iter()
        .map(|m| m["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, ["a red fox", "a red fox"], "{:?}", t.types());
}

#[tokio::test]
async fn system_prompts_are_written_on_the_admin_listener_and_used_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let llm = echoing_llm(Duration::ZERO).await;
    let server = start(
        small_config(),
        service(&[&llm], Duration::from_secs(5), Some(dir.path().into())),
    )
    .await;
    let http = reqwest::Client::new();
    let client_base = format!("http://{}", server.addr);
    // The client listener is read-only.
    let refused = http
        .post(format!("{client_base}/prompt-system-config"))
        .json(&json!({"next_segment_system_prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let bad = http
        .post(format!("{}/prompt-system-config", server.admin))
        .json(&json!({"next_segment_system_prompt": "x", "shell": "rm -rf /"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("unknown field `shell`"));
    let ok = http
        .post(format!("{}/prompt-system-config", server.admin))
        .json(&json!({"next_segment_system_prompt": "Write like a pirate."}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let full: Value = ok.json().await.unwrap();
    assert_eq!(full["next_segment_system_prompt"], "Write like a pirate.");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("enhance.txt")).unwrap(),
        "Write like a pirate."
    );
    let public: Value = http
        .get(format!("{client_base}/prompt-system-config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(public["next_segment_system_prompt"], "Write like a pirate.");
    // A file changed on disk is picked up without a restart.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.path().join("auto_extend.txt"), "Continue the saga.").unwrap();
    let mut client = dreamverse(
        &server,
        json!({"type": "session_init_v2", "curated_prompts": ["one"],
               "auto_extension_enabled": true}),
    )
    .await;
    let mut t = Transcript::default();
    read_until(&mut client, &mut t, "ltx2_segment_start", LIMIT).await;
    send(
        &mut client,
        json!({"type": "append_prompt", "prompt": "a ship"}),
    )
    .await;
    read_until(&mut client, &mut t, "prompt_ready", LIMIT).await;
    let systems: Vec<String> = llm.requests().iter().map(system_text).collect();
    assert!(
        systems.contains(&"Write like a pirate.".to_string()),
        "{systems:?}"
    );
    assert!(
        systems.contains(&"Continue the saga.".to_string()),
        "{systems:?}"
    );
}

#[tokio::test]
async fn the_safety_filter_refuses_unsafe_prompts_at_init_and_mid_session() {
    let classifier = Classifier::train();
    let llm = echoing_llm(Duration::ZERO).await;
    let prompts = service(&[&llm], Duration::from_secs(5), None).with_safety(classifier.filter());
    let server = start(small_config(), prompts).await;
    let blocked_init = "framecast_prompts_blocked_total{stage=\"init\"}";
    let before = counter(blocked_init);

    // Dreamverse: a blocked opening prompt ends the session with 1008 `Prompt blocked`.
    let mut client = dreamverse(
        &server,
        json!({"type": "session_init_v2", "curated_prompts": [BENIGN, UNSAFE]}),
    )
    .await;
    let mut t = Transcript::default();
    read_to_close(&mut client, &mut t, LIMIT).await;
    assert!(
        t.first("error")["message"]
            .as_str()
            .unwrap()
            .starts_with("Prompt safety filter blocked initial prompt 2."),
        "{:?}",
        t.first("error")
    );
    assert_eq!(t.close, Some((1008, "Prompt blocked".into())));
    assert!(t.all("gpu_assigned").is_empty(), "no worker was taken");

    // /v1/stream: the same at init, as an `error {code: prompt_blocked}`.
    let mut v1 = connect(&server.ws_url("/v1/stream")).await;
    send(
        &mut v1,
        json!({"type": "session_init_v2", "curated_prompts": [UNSAFE]}),
    )
    .await;
    let mut t = Transcript::default();
    read_to_close(&mut v1, &mut t, LIMIT).await;
    assert_eq!(t.first("error")["code"], "prompt_blocked");
    assert_eq!(t.close.as_ref().map(|c| c.0), Some(1008));
    assert!(counter(blocked_init) >= before + 2.0);

    // Mid-session on /ws: typed and enhanced prompts are screened; nothing blocked starts.
    let mut client = dreamverse(
        &server,
        json!({"type": "session_init_v2", "curated_prompts": [BENIGN]}),
    )
    .await;
    let mut t = Transcript::default();
    read_until(&mut client, &mut t, "ltx2_segment_complete", LIMIT).await;
    send(
        &mut client,
        json!({"type": "append_prompt", "prompt": UNSAFE, "prompt_id": "bad"}),
    )
    .await;
    read_until(&mut client, &mut t, "error", LIMIT).await;
    assert!(
        t.first("error")["message"]
            .as_str()
            .unwrap()
            .contains("bad")
    );
    send(
        &mut client,
        json!({"type": "append_prompt", "prompt": "a calm lake", "prompt_id": "ok"}),
    )
    .await;
    read_until_match(&mut client, &mut t, LIMIT, "segment 2", |m| {
        m["type"] == "ltx2_segment_start" && m["segment_idx"] == 2
    })
    .await;
    assert_eq!(segment_starts(&t)[1].1, "ENHANCED(a calm lake)");
    assert!(
        t.all("prompt_enhancing")
            .iter()
            .all(|m| m["prompt_id"] == "ok")
    );
    drop(client);

    // Mid-session on /v1/stream: an error frame, the session goes on with the next prompt.
    let mut v1 = connect(&server.ws_url("/v1/stream")).await;
    send(&mut v1, json!({"type": "session_init_v2"})).await;
    send(
        &mut v1,
        json!({"type": "segment_prompt_source", "prompt": UNSAFE}),
    )
    .await;
    send(
        &mut v1,
        json!({"type": "segment_prompt_source", "prompt": BENIGN}),
    )
    .await;
    let mut t = Transcript::default();
    read_until(&mut v1, &mut t, "ltx2_segment_start", LIMIT).await;
    let error = t.first("error");
    assert_eq!(
        (error["code"].as_str(), error["retryable"].as_bool()),
        (Some("prompt_blocked"), Some(false))
    );
    assert_eq!(t.first("ltx2_segment_start")["prompt"], BENIGN);
}
