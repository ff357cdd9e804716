//! The prompt pipeline: OpenAI-compatible LLM providers ([`provider`]), a priority-ordered
//! list with fallback ([`chain`]), the operations on top: enhance, auto-extend and rewrite
//! ([`operations`]), the safety filter ([`safety`]), and what sessions use of all that, with
//! time budgets and metrics ([`service`]).
//!
//! Built once per process from the `prompt` and `safety` sections
//! ([`PromptService::from_config`]) and shared by every session of both protocols.

pub mod chain;
pub mod operations;
pub mod provider;
pub mod safety;
pub mod service;

use std::time::Duration;

pub use chain::{Completion, NoProviders, ProviderChain};
pub use operations::{
    Operation, PromptEnhancer, PromptError, Rewrite, SystemPrompts, WriteError, split_alternatives,
};
pub use provider::{Message, Provider, ProviderError, Sampling};
pub use safety::{SafetyDecision, SafetyFilter, Verdict};
pub use service::{PromptFailure, PromptService, Stage, Timed};

use crate::config::PromptSettings;

/// Why the pipeline could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    NoProviders(#[from] NoProviders),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl PromptEnhancer {
    /// Builds the providers, their chain and the system prompts from `settings`, reading
    /// key variables from the process environment.
    pub fn from_settings(settings: &PromptSettings) -> Result<Self, BuildError> {
        let sampling = Sampling::bounded(
            Duration::from_millis(settings.timeout_ms),
            settings.max_tokens,
            settings.temperature,
        );
        let providers = settings
            .providers
            .iter()
            .map(|p| Provider::new(p, sampling))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(
            ProviderChain::new(providers)?,
            SystemPrompts::new(settings.system_prompt_dir.clone()),
        ))
    }
}
