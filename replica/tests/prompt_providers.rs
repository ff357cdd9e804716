//! The prompt pipeline against a real local HTTP server that imitates an OpenAI-compatible
//! provider: it records every request and answers as its scenario says.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use framecast_common::config::Validate;
use framecast_replica::config::{PromptSettings, ProviderPreset, ProviderSettings, ReplicaConfig};
use framecast_replica::prompt::{
    Operation, PromptEnhancer, PromptError, Provider, ProviderChain, ProviderError, Sampling,
    SystemPrompts, split_alternatives,
};
use parking_lot::Mutex;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
enum Scenario {
    Answer(&'static str),
    Status(u16),
    Slow(Duration),
    NotJson,
    EmptyChoices,
}

#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    authorization: Option<String>,
    body: Value,
}

#[derive(Clone)]
struct MockState {
    scenario: Scenario,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

struct Mock {
    base_url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Mock {
    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().clone()
    }
}

async fn handle(
    State(state): State<MockState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.requests.lock().push(Recorded {
        path: uri.path().to_string(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let answer = |text: &str| {
        axum::Json(json!({
            "id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]
        }))
        .into_response()
    };
    match state.scenario {
        Scenario::Answer(text) => answer(text),
        Scenario::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            format!("{{\"error\":\"status {code}\"}}"),
        )
            .into_response(),
        Scenario::Slow(delay) => {
            tokio::time::sleep(delay).await;
            answer("too late")
        }
        Scenario::NotJson => "<html>gateway</html>".into_response(),
        Scenario::EmptyChoices => axum::Json(json!({"choices": []})).into_response(),
    }
}

async fn mock(scenario: Scenario) -> Mock {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let state = MockState {
        scenario,
        requests: requests.clone(),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(handle))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Mock {
        base_url: format!("http://{addr}/v1"),
        requests,
    }
}

fn settings(name: &str, base_url: &str) -> ProviderSettings {
    ProviderSettings {
        name: name.into(),
        preset: None,
        base_url: Some(base_url.into()),
        model: "test-model".into(),
        api_key: Some(format!("key-{name}")),
        api_key_env: None,
        allow_no_key: false,
    }
}

fn sampling(timeout_ms: u64) -> Sampling {
    Sampling::bounded(Duration::from_millis(timeout_ms), 123, 0.5)
}

fn provider(name: &str, mock: &Mock) -> Provider {
    Provider::new(&settings(name, &mock.base_url), sampling(5_000)).unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn enhancer(providers: Vec<Provider>, dir: Option<std::path::PathBuf>) -> PromptEnhancer {
    PromptEnhancer::new(
        ProviderChain::new(providers).unwrap(),
        SystemPrompts::new(dir),
    )
}

#[tokio::test]
async fn success_posts_the_chat_completion_request() {
    let server = mock(Scenario::Answer("  a fox in fresh snow, dawn light  ")).await;
    let p = provider("primary", &server);
    let e = enhancer(vec![p], None);
    let done = e.enhance("a fox").await.unwrap();
    assert_eq!(done.text, "a fox in fresh snow, dawn light");
    assert_eq!(done.provider, "primary");
    assert!(!done.fallback_used);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.authorization.as_deref(), Some("Bearer key-primary"));
    assert_eq!(r.body["model"], "test-model");
    assert_eq!(r.body["max_tokens"], 123);
    assert_eq!(r.body["temperature"], 0.5);
    let messages = r.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(
        messages[0]["content"],
        Operation::Enhance.default_system_prompt()
    );
    assert_eq!(messages[1], json!({"role": "user", "content": "a fox"}));
}

async fn first_fails_with(
    scenario: Scenario,
    timeout_ms: u64,
) -> (Result<String, PromptError>, Mock, Mock) {
    let bad = mock(scenario).await;
    let good = mock(Scenario::Answer("from the second")).await;
    let first = Provider::new(&settings("first", &bad.base_url), sampling(timeout_ms)).unwrap();
    let second = provider("second", &good);
    let e = enhancer(vec![first, second], None);
    let result = e.enhance("a fox").await.map(|c| {
        assert_eq!(c.provider, "second");
        assert!(c.fallback_used);
        c.text
    });
    (result, bad, good)
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    for code in [401, 400, 403, 404] {
        let (result, bad, good) = first_fails_with(Scenario::Status(code), 5_000).await;
        match result {
            Err(PromptError::Provider(e @ ProviderError::Status { status, .. })) => {
                assert_eq!(status, code);
                assert!(!e.is_retryable());
            }
            other => panic!("{code}: {other:?}"),
        }
        assert_eq!(bad.requests().len(), 1);
        assert!(good.requests().is_empty(), "{code} fell back");
    }
}

#[tokio::test]
async fn rate_limits_and_server_errors_fall_back() {
    for code in [429, 500, 503] {
        let (result, bad, good) = first_fails_with(Scenario::Status(code), 5_000).await;
        assert_eq!(result.unwrap(), "from the second", "{code}");
        assert_eq!(bad.requests().len(), 1);
        assert_eq!(good.requests().len(), 1);
    }
}

#[tokio::test]
async fn a_timeout_falls_back() {
    let started = std::time::Instant::now();
    let (result, _bad, good) = first_fails_with(Scenario::Slow(Duration::from_secs(5)), 200).await;
    assert_eq!(result.unwrap(), "from the second");
    assert_eq!(good.requests().len(), 1);
    assert!(started.elapsed() < Duration::from_secs(3));

    let slow = mock(Scenario::Slow(Duration::from_secs(5))).await;
    let p = Provider::new(&settings("slow", &slow.base_url), sampling(200)).unwrap();
    let err = p.complete(&[]).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Timeout {
                timeout_ms: 200,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_transport_error_is_retryable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let p = Provider::new(&settings("gone", &url), sampling(2_000)).unwrap();
    let err = p.complete(&[]).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn all_failing_returns_the_last_error() {
    let a = mock(Scenario::Status(500)).await;
    let b = mock(Scenario::Status(503)).await;
    let e = enhancer(vec![provider("a", &a), provider("b", &b)], None);
    match e.enhance("x").await {
        Err(PromptError::Provider(ProviderError::Status {
            provider, status, ..
        })) => {
            assert_eq!((provider.as_str(), status), ("b", 503));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn non_json_and_empty_choices_are_errors() {
    for scenario in [Scenario::NotJson, Scenario::EmptyChoices] {
        let (result, _bad, good) = first_fails_with(scenario.clone(), 5_000).await;
        match result {
            Err(PromptError::Provider(e @ ProviderError::InvalidResponse { .. })) => {
                assert!(!e.is_retryable());
            }
            other => panic!("{scenario:?}: {other:?}"),
        }
        assert!(good.requests().is_empty());
    }
}

#[tokio::test]
async fn a_missing_key_is_a_non_retryable_error() {
    let server = mock(Scenario::Answer("x")).await;
    let mut s = settings("keyless", &server.base_url);
    s.api_key = None;
    s.api_key_env = Some("FRAMECAST_TEST_NO_SUCH_KEY".into());
    let p = Provider::with_env(&s, sampling(1_000), no_env).unwrap();
    let err = p.complete(&[]).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::MissingKey {
            provider: "keyless".into(),
            env: "FRAMECAST_TEST_NO_SUCH_KEY".into()
        }
    );
    assert!(!err.is_retryable());
    assert!(server.requests().is_empty());

    // A preset names its variable.
    let mut groq = settings("groq", &server.base_url);
    groq.api_key = None;
    groq.preset = Some(ProviderPreset::Groq);
    let err = Provider::with_env(&groq, sampling(1_000), no_env)
        .unwrap()
        .complete(&[])
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::MissingKey { ref env, .. } if env == "GROQ_API_KEY"));

    // A local server may go without one.
    s.allow_no_key = true;
    let p = Provider::with_env(&s, sampling(1_000), no_env).unwrap();
    assert_eq!(p.complete(&[]).await.unwrap(), "x");
    assert_eq!(server.requests()[0].authorization, None);
}

#[tokio::test]
async fn the_key_comes_from_the_environment_and_an_explicit_key_wins() {
    let server = mock(Scenario::Answer("ok")).await;
    let mut s = settings("env", &server.base_url);
    s.api_key = None;
    s.api_key_env = Some("FRAMECAST_TEST_KEY".into());
    let env = |name: &str| (name == "FRAMECAST_TEST_KEY").then(|| "from-env".to_string());
    Provider::with_env(&s, sampling(1_000), env)
        .unwrap()
        .complete(&[])
        .await
        .unwrap();
    s.api_key = Some("explicit".into());
    Provider::with_env(&s, sampling(1_000), env)
        .unwrap()
        .complete(&[])
        .await
        .unwrap();
    // The real process environment: PATH is always set.
    let mut real = settings("real-env", &server.base_url);
    real.api_key = None;
    real.api_key_env = Some("PATH".into());
    Provider::new(&real, sampling(1_000))
        .unwrap()
        .complete(&[])
        .await
        .unwrap();
    let auth: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| r.authorization.unwrap())
        .collect();
    assert_eq!(
        auth,
        [
            "Bearer from-env".to_string(),
            "Bearer explicit".to_string(),
            format!("Bearer {}", std::env::var("PATH").unwrap()),
        ]
    );
}

#[test]
fn presets_name_their_endpoints() {
    let mut s = settings("cerebras", "unused");
    s.base_url = None;
    s.preset = Some(ProviderPreset::Cerebras);
    let p = Provider::with_env(&s, sampling(1_000), no_env).unwrap();
    assert_eq!(p.endpoint(), "https://api.cerebras.ai/v1/chat/completions");
    assert_eq!(s.resolved_api_key_env(), Some("CEREBRAS_API_KEY"));
    s.preset = Some(ProviderPreset::Groq);
    let p = Provider::with_env(&s, sampling(1_000), no_env).unwrap();
    assert_eq!(
        p.endpoint(),
        "https://api.groq.com/openai/v1/chat/completions"
    );
    assert_eq!(s.resolved_api_key_env(), Some("GROQ_API_KEY"));
    // A base URL wins over the preset's and a trailing slash is tolerated.
    s.base_url = Some("http://127.0.0.1:11434/v1/".into());
    let p = Provider::with_env(&s, sampling(1_000), no_env).unwrap();
    assert_eq!(p.endpoint(), "http://127.0.0.1:11434/v1/chat/completions");
}

#[tokio::test]
async fn answers_are_capped() {
    let long: &'static str = Box::leak("é".repeat(20_000).into_boxed_str());
    let server = mock(Scenario::Answer(long)).await;
    let text = provider("p", &server).complete(&[]).await.unwrap();
    assert_eq!(
        text.chars().count(),
        framecast_replica::prompt::provider::MAX_ANSWER_CHARS
    );
}

#[tokio::test]
async fn auto_extend_joins_prior_prompts_with_newlines() {
    let server = mock(Scenario::Answer("the fox stops")).await;
    let e = enhancer(vec![provider("p", &server)], None);
    let done = e
        .auto_extend(&["a fox runs".into(), "  ".into(), "the fox jumps".into()])
        .await
        .unwrap();
    assert_eq!(done.text, "the fox stops");
    let body = &server.requests()[0].body;
    assert_eq!(
        body["messages"][0]["content"],
        Operation::AutoExtend.default_system_prompt()
    );
    assert_eq!(body["messages"][1]["content"], "a fox runs\nthe fox jumps");
    assert!(matches!(
        e.auto_extend(&[" ".into()]).await,
        Err(PromptError::Blank(_))
    ));
}

#[tokio::test]
async fn rewrite_splits_the_answer_and_respects_the_count() {
    let server = mock(Scenario::Answer(
        "1. night falls\n2) rain starts\n- wind\n* snow",
    ))
    .await;
    let e = enhancer(vec![provider("p", &server)], None);
    let r = e
        .rewrite("make it stormy", &["a calm lake".into()], 3)
        .await
        .unwrap();
    assert_eq!(r.alternatives, ["night falls", "rain starts", "wind"]);
    assert_eq!(r.provider, "p");
    assert!(!r.fallback_used);
    let user = server.requests()[0].body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(user.contains("make it stormy"), "{user}");
    assert!(user.contains("a calm lake"), "{user}");
    assert!(user.contains("Write 3 prompts"), "{user}");
    assert!(matches!(
        e.rewrite("   ", &[], 3).await,
        Err(PromptError::Blank(_))
    ));
    let one = e.rewrite("x", &[], 0).await.unwrap();
    assert_eq!(one.alternatives, ["night falls"]);
}

#[test]
fn split_rules() {
    assert_eq!(split_alternatives("a\n\nb\n c \n", 5), ["a", "b", "c"]);
    assert_eq!(
        split_alternatives("1. one\n2) two\n10. ten", 5),
        ["one", "two", "ten"]
    );
    assert_eq!(
        split_alternatives("- dash\n* star\n• dot\n-\n", 5),
        ["dash", "star", "dot"]
    );
    assert_eq!(split_alternatives("a\nb\nc", 2), ["a", "b"]);
    assert_eq!(split_alternatives("a\nb\nc", 0), ["a"]);
    assert_eq!(
        split_alternatives("2024 was a year", 5),
        ["2024 was a year"]
    );
    let many = (0..100).map(|i| format!("p{i}\n")).collect::<String>();
    assert_eq!(split_alternatives(&many, usize::MAX).len(), 16);
    assert!(split_alternatives(" \n ", 3).is_empty());
}

#[tokio::test]
async fn override_files_are_read_and_reloaded_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = mock(Scenario::Answer("ok")).await;
    let e = enhancer(vec![provider("p", &server)], Some(dir.path().to_path_buf()));
    let system = |i: usize| {
        server.requests()[i].body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    e.enhance("x").await.unwrap();
    assert_eq!(system(0), Operation::Enhance.default_system_prompt());

    let path = dir.path().join("enhance.txt");
    let write = |text: &str, secs: u64| {
        std::fs::write(&path, text).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    };
    write("first override\n", 1_000_000);
    e.enhance("x").await.unwrap();
    assert_eq!(system(1), "first override");
    write("second override", 2_000_000);
    e.enhance("x").await.unwrap();
    assert_eq!(system(2), "second override");
    // Other operations keep their built-ins.
    e.auto_extend(&["x".into()]).await.unwrap();
    assert_eq!(system(3), Operation::AutoExtend.default_system_prompt());
    // A removed file falls back to the built-in.
    std::fs::remove_file(&path).unwrap();
    e.enhance("x").await.unwrap();
    assert_eq!(system(4), Operation::Enhance.default_system_prompt());
}

#[test]
fn the_chain_needs_a_provider_and_registers_by_priority() {
    assert!(ProviderChain::new(Vec::new()).is_err());
    let p = |name: &str| {
        Provider::with_env(
            &settings(name, "http://127.0.0.1:9/v1"),
            sampling(1_000),
            no_env,
        )
        .unwrap()
    };
    let mut chain = ProviderChain::new(vec![p("a")]).unwrap();
    chain.register(p("b"), None);
    chain.register(p("c"), Some(0));
    assert_eq!(chain.names(), ["c", "a", "b"]);
}

#[test]
fn config_numbers_are_bounded() {
    let valid = |prompt: PromptSettings| {
        ReplicaConfig {
            prompt,
            ..ReplicaConfig::default()
        }
        .validate()
        .map_err(|e| e.to_string())
    };
    assert!(valid(PromptSettings::default()).is_ok());
    let with = |f: fn(&mut PromptSettings)| {
        let mut s = PromptSettings::default();
        f(&mut s);
        valid(s).unwrap_err()
    };
    assert!(with(|s| s.timeout_ms = 0).contains("prompt.timeout_ms"));
    assert!(with(|s| s.max_tokens = 0).contains("prompt.max_tokens"));
    assert!(with(|s| s.max_tokens = 100_000).contains("prompt.max_tokens"));
    assert!(with(|s| s.temperature = 2.5).contains("prompt.temperature"));
    assert!(with(|s| s.temperature = f32::NAN).contains("prompt.temperature"));
    assert!(with(|s| s.enabled = true).contains("prompt.providers"));
    assert!(
        with(|s| s.providers = vec![settings("a", "ftp://x"), settings("b", "http://x")])
            .contains("prompt.providers[0].base_url")
    );
    assert!(
        with(|s| s.providers = vec![settings("a", "http://x"), settings("a", "http://y")])
            .contains("prompt.providers[1].name")
    );
    assert!(
        with(|s| {
            let mut p = settings("a", "http://x");
            p.base_url = None;
            s.providers = vec![p];
        })
        .contains("prompt.providers[0].base_url")
    );
    // The shipped file parses and validates, and the pipeline builds from settings.
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/replica.yaml");
    let config = ReplicaConfig::load(Some(&file)).unwrap();
    assert_eq!(config.prompt, PromptSettings::default());
    let s = PromptSettings {
        providers: vec![settings("a", "http://127.0.0.1:9/v1")],
        ..PromptSettings::default()
    };
    let built = PromptEnhancer::from_settings(&s).unwrap();
    assert_eq!(built.chain().names(), ["a"]);
    assert!(PromptEnhancer::from_settings(&PromptSettings::default()).is_err());
    // Keys never show in Debug output.
    assert!(!format!("{:?}", settings("a", "http://x")).contains("key-a"));
}
