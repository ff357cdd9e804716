//! A real HTTP server on 127.0.0.1:0 that imitates an OpenAI-compatible provider's
//! `POST /v1/chat/completions`: it records every request and answers as its script says.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use framecast_replica::config::ProviderSettings;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// How the fake answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A chat completion with this text, after this delay.
    Text(String, Duration),
    /// An error status with a JSON body.
    Status(u16),
}

/// Decides the reply from the request body (`messages[0]` is the system prompt,
/// `messages[1]` the user's text).
pub type Script = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

/// A running fake provider.
pub struct FakeLlm {
    pub base_url: String,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl FakeLlm {
    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().clone()
    }

    /// Provider settings pointing at this fake, named `name`, with a key.
    pub fn provider(&self, name: &str) -> ProviderSettings {
        ProviderSettings {
            name: name.into(),
            preset: None,
            base_url: Some(self.base_url.clone()),
            model: "fake-model".into(),
            api_key: Some(format!("key-{name}")),
            api_key_env: None,
            allow_no_key: false,
        }
    }
}

/// The user's text of a request (`messages[1].content`).
pub fn user_text(body: &Value) -> String {
    body["messages"][1]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The system prompt of a request (`messages[0].content`).
pub fn system_text(body: &Value) -> String {
    body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[derive(Clone)]
struct Shared {
    script: Script,
    requests: Arc<Mutex<Vec<Value>>>,
}

async fn handle(State(shared): State<Shared>, body: axum::body::Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.requests.lock().push(body.clone());
    match (shared.script)(&body) {
        Reply::Text(text, delay) => {
            tokio::time::sleep(delay).await;
            axum::Json(json!({
                "id": "fake", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]
            }))
            .into_response()
        }
        Reply::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            axum::Json(json!({"error": {"message": format!("status {code}")}})),
        )
            .into_response(),
    }
}

/// Starts a fake provider answering by `script`.
pub async fn start(script: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> FakeLlm {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let shared = Shared {
        script: Arc::new(script),
        requests: requests.clone(),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(handle))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    FakeLlm {
        base_url: format!("http://{addr}/v1"),
        requests,
    }
}
