//! The prompt pipeline: OpenAI-compatible LLM providers ([`provider`]), a priority-ordered
//! list with fallback ([`chain`]), and the operations on top: enhance, auto-extend and
//! rewrite ([`operations`]).
//!
//! Built from the `prompt` section of the configuration ([`PromptEnhancer::from_settings`])
//! but **not yet wired into sessions**: `/v1/stream` still ignores `enhancement_enabled`, the
//! Dreamverse protocol does not enhance `append_prompt`, auto-extend or serve
//! `rewrite_seed_prompts` with it, there is no `/prompt-system-config` endpoint, and no
//! safety filter.

pub mod chain;
pub mod operations;
pub mod provider;

use std::time::Duration;

pub use chain::{Completion, NoProviders, ProviderChain};
pub use operations::{
    Operation, PromptEnhancer, PromptError, Rewrite, SystemPrompts, split_alternatives,
};
pub use provider::{Message, Provider, ProviderError, Sampling};

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
