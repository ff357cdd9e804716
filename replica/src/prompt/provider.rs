//! One OpenAI-compatible chat-completions client: `POST {base_url}/chat/completions` with
//! `{model, messages, max_tokens, temperature}` and `Authorization: Bearer <key>`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{MAX_PROMPT_MAX_TOKENS, MAX_PROMPT_TIMEOUT_MS, ProviderSettings};

/// Longest answer kept from a provider, in characters; the rest is cut off.
pub const MAX_ANSWER_CHARS: usize = 8_000;
/// Largest response body read from a provider; a longer one is an invalid response.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why a provider request failed. [`ProviderError::is_retryable`] says whether the next
/// provider should be tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Neither a key nor a set key variable (never retried: every attempt fails the same).
    #[error("{provider}: no API key (set api_key or the {env} environment variable)")]
    MissingKey { provider: String, env: String },
    /// The provider answered with an error status.
    #[error("{provider}: HTTP {status}: {body}")]
    Status {
        provider: String,
        status: u16,
        body: String,
    },
    /// No complete answer within the timeout.
    #[error("{provider}: no answer within {timeout_ms} ms")]
    Timeout { provider: String, timeout_ms: u64 },
    /// Connecting, sending or reading failed.
    #[error("{provider}: transport error: {message}")]
    Transport { provider: String, message: String },
    /// A 2xx answer that is not a chat completion (not JSON, no choices, no text, too big).
    #[error("{provider}: invalid response: {reason}")]
    InvalidResponse { provider: String, reason: String },
}

impl ProviderError {
    /// 429, 5xx, timeouts and transport errors are worth another provider; a missing key,
    /// other 4xx and malformed answers are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::MissingKey { .. } | Self::InvalidResponse { .. } => false,
        }
    }

    /// A short class name for logs and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Self::MissingKey { .. } => "missing_key",
            Self::Status { status, .. } if *status == 429 => "rate_limited",
            Self::Status { status, .. } if *status >= 500 => "server_error",
            Self::Status { .. } => "client_error",
            Self::Timeout { .. } => "timeout",
            Self::Transport { .. } => "transport",
            Self::InvalidResponse { .. } => "invalid_response",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".into(),
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// Request parameters shared by every provider of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub timeout: Duration,
    pub max_tokens: u32,
    pub temperature: f32,
}

impl Sampling {
    /// Clamps to the ranges the configuration allows (timeout 1 ms..=10 min, max_tokens
    /// 1..=32768, temperature 0..=2; a non-finite temperature becomes 0.7).
    pub fn bounded(timeout: Duration, max_tokens: u32, temperature: f32) -> Self {
        let ms = (timeout.as_millis().min(u128::from(MAX_PROMPT_TIMEOUT_MS)) as u64).max(1);
        Self {
            timeout: Duration::from_millis(ms),
            max_tokens: max_tokens.clamp(1, MAX_PROMPT_MAX_TOKENS),
            temperature: if temperature.is_finite() {
                temperature.clamp(0.0, 2.0)
            } else {
                0.7
            },
        }
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    max_tokens: u32,
    temperature: f32,
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<ChoiceMessage>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

/// An OpenAI-compatible chat-completions provider.
pub struct Provider {
    name: String,
    endpoint: String,
    model: String,
    api_key: Option<String>,
    key_env: String,
    allow_no_key: bool,
    sampling: Sampling,
    client: reqwest::Client,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("has_key", &self.api_key.is_some())
            .field("sampling", &self.sampling)
            .finish()
    }
}

impl Provider {
    /// Builds a provider from its settings, reading the key variable from the process
    /// environment. An explicit `api_key` wins over the variable.
    pub fn new(settings: &ProviderSettings, sampling: Sampling) -> Result<Self, ProviderError> {
        Self::with_env(settings, sampling, |name| std::env::var(name).ok())
    }

    /// As [`Provider::new`], reading variables through `env`.
    pub fn with_env(
        settings: &ProviderSettings,
        sampling: Sampling,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ProviderError> {
        let name = settings.name.clone();
        let base = settings
            .resolved_base_url()
            .ok_or_else(|| ProviderError::InvalidResponse {
                provider: name.clone(),
                reason: "no base_url and no preset".into(),
            })?;
        let key_env = settings.resolved_api_key_env().unwrap_or("").to_string();
        let api_key = settings
            .api_key
            .clone()
            .filter(|k| !k.is_empty())
            .or_else(|| {
                (!key_env.is_empty())
                    .then(|| env(&key_env))
                    .flatten()
                    .filter(|k| !k.is_empty())
            });
        let sampling =
            Sampling::bounded(sampling.timeout, sampling.max_tokens, sampling.temperature);
        let client = reqwest::Client::builder()
            .timeout(sampling.timeout)
            .build()
            .map_err(|e| ProviderError::Transport {
                provider: name.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            endpoint: format!("{}/chat/completions", base.trim_end_matches('/')),
            model: settings.model.clone(),
            api_key,
            key_env,
            allow_no_key: settings.allow_no_key,
            sampling,
            client,
            name,
        })
    }

    /// The name reported as the provider that answered.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `messages` and returns the first choice's text, trimmed and cut to
    /// [`MAX_ANSWER_CHARS`].
    pub async fn complete(&self, messages: &[Message]) -> Result<String, ProviderError> {
        let provider = || self.name.clone();
        if self.api_key.is_none() && !self.allow_no_key {
            return Err(ProviderError::MissingKey {
                provider: provider(),
                env: if self.key_env.is_empty() {
                    "api_key_env".into()
                } else {
                    self.key_env.clone()
                },
            });
        }
        let body = ChatRequest {
            model: &self.model,
            messages,
            max_tokens: self.sampling.max_tokens,
            temperature: self.sampling.temperature,
        };
        let mut request = self.client.post(&self.endpoint).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                ProviderError::Timeout {
                    provider: provider(),
                    timeout_ms: self.sampling.timeout.as_millis() as u64,
                }
            } else {
                ProviderError::Transport {
                    provider: provider(),
                    message: e.to_string(),
                }
            }
        };
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                if !status.is_success() {
                    break;
                }
                return Err(ProviderError::InvalidResponse {
                    provider: provider(),
                    reason: format!("body over {MAX_BODY_BYTES} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            return Err(ProviderError::Status {
                provider: provider(),
                status: status.as_u16(),
                body: truncate_chars(text.trim(), 500).to_string(),
            });
        }
        let parsed: ChatResponse =
            serde_json::from_slice(&bytes).map_err(|e| ProviderError::InvalidResponse {
                provider: provider(),
                reason: format!("not a chat completion: {e}"),
            })?;
        let Some(first) = parsed.choices.into_iter().next() else {
            return Err(ProviderError::InvalidResponse {
                provider: provider(),
                reason: "no choices".into(),
            });
        };
        let text = first
            .message
            .and_then(|m| m.content)
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ProviderError::InvalidResponse {
                provider: provider(),
                reason: "the first choice has no text".into(),
            })?;
        Ok(truncate_chars(&text, MAX_ANSWER_CHARS).to_string())
    }
}

/// The first `max` characters of `text`.
pub fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
