//! Providers in priority order: a retryable failure moves on to the next one, a
//! non-retryable one stops, and when all fail the last error is returned.

use super::provider::{Message, Provider, ProviderError};

/// A provider's answer and who gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The answer's text (trimmed, bounded by the provider).
    pub text: String,
    /// Name of the provider that answered.
    pub provider: String,
    /// Whether an earlier provider failed first.
    pub fallback_used: bool,
}

/// Providers tried in order.
#[derive(Debug)]
pub struct ProviderChain {
    providers: Vec<Provider>,
}

/// A chain needs at least one provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a provider chain needs at least one provider")]
pub struct NoProviders;

impl ProviderChain {
    pub fn new(providers: Vec<Provider>) -> Result<Self, NoProviders> {
        if providers.is_empty() {
            return Err(NoProviders);
        }
        Ok(Self { providers })
    }

    /// Adds `provider` at `priority` (0 makes it primary; `None` or past the end appends it
    /// as the last fallback).
    pub fn register(&mut self, provider: Provider, priority: Option<usize>) {
        match priority {
            Some(i) if i < self.providers.len() => self.providers.insert(i, provider),
            _ => self.providers.push(provider),
        }
    }

    /// Provider names in priority order.
    pub fn names(&self) -> Vec<&str> {
        self.providers.iter().map(Provider::name).collect()
    }

    /// Asks each provider in turn until one answers or one fails non-retryably.
    pub async fn complete(&self, messages: &[Message]) -> Result<Completion, ProviderError> {
        let mut last = None;
        for (i, provider) in self.providers.iter().enumerate() {
            match provider.complete(messages).await {
                Ok(text) => {
                    return Ok(Completion {
                        text,
                        provider: provider.name().to_string(),
                        fallback_used: i > 0,
                    });
                }
                Err(e) => {
                    tracing::warn!(
                        provider = provider.name(),
                        class = e.class(),
                        retryable = e.is_retryable(),
                        "prompt provider failed: {e}"
                    );
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.expect("a chain has at least one provider"))
    }
}
