//! Providers in priority order: a retryable failure moves on to the next one, a
//! non-retryable one stops, and when all fail the last error is returned.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::operations::Operation;
use super::provider::{Message, Provider, ProviderError};
use crate::observability;

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

/// Providers tried in order, each with the count of requests it answered (reported by
/// `/internal/monitor/sessions` as Dreamverse does).
#[derive(Debug)]
pub struct ProviderChain {
    providers: Vec<(Provider, AtomicU64)>,
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
        Ok(Self {
            providers: providers
                .into_iter()
                .map(|p| (p, AtomicU64::new(0)))
                .collect(),
        })
    }

    /// Adds `provider` at `priority` (0 makes it primary; `None` or past the end appends it
    /// as the last fallback).
    pub fn register(&mut self, provider: Provider, priority: Option<usize>) {
        let entry = (provider, AtomicU64::new(0));
        match priority {
            Some(i) if i < self.providers.len() => self.providers.insert(i, entry),
            _ => self.providers.push(entry),
        }
    }

    /// Provider names in priority order.
    pub fn names(&self) -> Vec<&str> {
        self.providers.iter().map(|(p, _)| p.name()).collect()
    }

    /// How many requests each provider answered since start.
    pub fn success_counts(&self) -> BTreeMap<String, u64> {
        self.providers
            .iter()
            .map(|(p, n)| (p.name().to_string(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Asks each provider in turn until one answers or one fails non-retryably; every
    /// attempt is counted under `operation`.
    pub async fn complete(
        &self,
        operation: Operation,
        messages: &[Message],
    ) -> Result<Completion, ProviderError> {
        let op = operation.label();
        let mut last = None;
        for (i, (provider, answered)) in self.providers.iter().enumerate() {
            let started = Instant::now();
            let result = provider.complete(messages).await;
            let took = started.elapsed();
            match result {
                Ok(text) => {
                    observability::prompt_request(provider.name(), op, took, None);
                    answered.fetch_add(1, Ordering::Relaxed);
                    if i > 0 {
                        observability::prompt_fallback(op);
                    }
                    return Ok(Completion {
                        text,
                        provider: provider.name().to_string(),
                        fallback_used: i > 0,
                    });
                }
                Err(e) => {
                    observability::prompt_request(provider.name(), op, took, Some(e.class()));
                    tracing::warn!(
                        provider = provider.name(),
                        operation = op,
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
