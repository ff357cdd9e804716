//! What sessions use of the prompt pipeline: the LLM operations (when a provider is
//! configured) and the safety filter, each LLM call held to one time budget and measured, so
//! a session never waits on a dead provider longer than `prompt.operation_timeout_ms`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::operations::{Operation, PromptEnhancer, PromptError, Rewrite};
use super::safety::{SafetyDecision, SafetyFilter};
use super::{BuildError, Completion};
use crate::config::ReplicaConfig;
use crate::observability;

/// Why an operation gave no answer: the session then takes its failure path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptFailure {
    /// `prompt.enabled` is false: no provider to ask.
    #[error("prompt pipeline not configured")]
    NotConfigured,
    /// The whole operation (fallbacks included) ran past its budget.
    #[error("no answer within {budget_ms} ms")]
    TimedOut { budget_ms: u64 },
    #[error(transparent)]
    Failed(#[from] PromptError),
}

impl PromptFailure {
    /// A short class name for metrics and logs.
    pub fn class(&self) -> &'static str {
        match self {
            Self::NotConfigured => "not_configured",
            Self::TimedOut { .. } => "timeout",
            Self::Failed(PromptError::Blank(_)) => "blank",
            Self::Failed(PromptError::EmptyAnswer) => "empty_answer",
            Self::Failed(PromptError::Provider(e)) => e.class(),
        }
    }
}

/// An operation's outcome and how long it took (for `latency_ms` fields).
#[derive(Debug)]
pub struct Timed<T> {
    pub result: Result<T, PromptFailure>,
    pub latency_ms: f64,
}

impl Timed<Completion> {
    /// The answer's text (or why there is none, for logs and frames) and the latency.
    pub fn into_text(self) -> (Result<String, String>, f64) {
        (
            self.result.map(|c| c.text).map_err(|e| e.to_string()),
            self.latency_ms,
        )
    }
}

/// Where a prompt being screened comes from, for the blocked-prompt metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The session's opening frame (seed prompts, the initial rollout prompt).
    Init,
    /// A prompt as the user typed it.
    User,
    /// A user prompt after enhancement.
    Enhanced,
    /// A prompt auto-extension invented.
    Auto,
    /// A prompt a rewrite wrote.
    Rewrite,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::User => "user",
            Self::Enhanced => "enhanced",
            Self::Auto => "auto",
            Self::Rewrite => "rewrite",
        }
    }
}

/// The prompt pipeline as sessions see it; cheap to clone (shared by every session).
#[derive(Debug, Clone)]
pub struct PromptService {
    enhancer: Option<Arc<PromptEnhancer>>,
    safety: Arc<SafetyFilter>,
    budget: Duration,
}

impl PromptService {
    /// No LLM and no safety filter: every step takes its failure path, every prompt passes.
    pub fn disabled() -> Self {
        Self {
            enhancer: None,
            safety: Arc::new(SafetyFilter::disabled()),
            budget: Duration::from_secs(30),
        }
    }

    /// The pipeline the `prompt` and `safety` sections describe (the LLM only when
    /// `prompt.enabled`; the filter only when `safety.enabled`).
    pub fn from_config(config: &ReplicaConfig) -> Result<Self, BuildError> {
        let enhancer = if config.prompt.enabled {
            Some(Arc::new(PromptEnhancer::from_settings(&config.prompt)?))
        } else {
            None
        };
        let safety = if config.safety.enabled {
            SafetyFilter::from_settings(&config.safety)
        } else {
            SafetyFilter::disabled()
        };
        Ok(Self {
            enhancer,
            safety: Arc::new(safety),
            budget: Duration::from_millis(config.prompt.operation_timeout_ms),
        })
    }

    /// Replaces the LLM side (tests and embedders build their own chain).
    pub fn with_enhancer(mut self, enhancer: PromptEnhancer, budget: Duration) -> Self {
        self.enhancer = Some(Arc::new(enhancer));
        self.budget = budget;
        self
    }

    /// Replaces the safety filter.
    pub fn with_safety(mut self, safety: SafetyFilter) -> Self {
        self.safety = Arc::new(safety);
        self
    }

    /// Whether LLM operations can succeed at all (a provider is configured).
    pub fn llm_available(&self) -> bool {
        self.enhancer.is_some()
    }

    /// The LLM operations, for the system-prompt endpoints.
    pub fn enhancer(&self) -> Option<&PromptEnhancer> {
        self.enhancer.as_deref()
    }

    /// How many requests each provider answered (empty without a pipeline).
    pub fn provider_success_counts(&self) -> BTreeMap<String, u64> {
        self.enhancer
            .as_ref()
            .map(|e| e.chain().success_counts())
            .unwrap_or_default()
    }

    /// The safety filter's decision on `text`; a block is counted under `stage`.
    pub fn screen(&self, text: &str, stage: Stage) -> SafetyDecision {
        let decision = self.safety.check(text);
        if decision.is_blocked() {
            observability::prompt_blocked(stage.label());
            tracing::info!(
                stage = stage.label(),
                label = decision.label.as_deref().unwrap_or(""),
                score = decision.score.unwrap_or(0.0),
                "prompt blocked by the safety filter"
            );
        }
        decision
    }

    /// Whether the safety filter blocks `text` (see [`PromptService::screen`]).
    pub fn blocks(&self, text: &str, stage: Stage) -> bool {
        self.screen(text, stage).is_blocked()
    }

    /// A richer video prompt from a user's prompt.
    pub async fn enhance(&self, prompt: &str) -> Timed<Completion> {
        self.run(
            Operation::Enhance,
            |e| async move { e.enhance(prompt).await },
        )
        .await
    }

    /// The next prompt of a continuous video from the previous ones (oldest first).
    pub async fn auto_extend(&self, previous: &[String]) -> Timed<Completion> {
        self.run(Operation::AutoExtend, |e| async move {
            e.auto_extend(previous).await
        })
        .await
    }

    /// Up to `count` prompts following `instruction`, given the current `window`.
    pub async fn rewrite(
        &self,
        instruction: &str,
        window: &[String],
        count: usize,
    ) -> Timed<Rewrite> {
        self.run(Operation::Rewrite, |e| async move {
            e.rewrite(instruction, window, count).await
        })
        .await
    }

    async fn run<'a, T, F, Fut>(&'a self, op: Operation, call: F) -> Timed<T>
    where
        F: FnOnce(&'a PromptEnhancer) -> Fut,
        Fut: std::future::Future<Output = Result<T, PromptError>> + 'a,
    {
        let started = Instant::now();
        let result = match &self.enhancer {
            None => Err(PromptFailure::NotConfigured),
            Some(enhancer) => match tokio::time::timeout(self.budget, call(enhancer)).await {
                Ok(result) => result.map_err(PromptFailure::from),
                Err(_) => Err(PromptFailure::TimedOut {
                    budget_ms: u64::try_from(self.budget.as_millis()).unwrap_or(u64::MAX),
                }),
            },
        };
        if let Err(e) = &result
            && *e != PromptFailure::NotConfigured
        {
            observability::prompt_operation_failed(op.label(), e.class());
            tracing::warn!(
                operation = op.label(),
                class = e.class(),
                "prompt operation failed: {e}"
            );
        }

        Timed {
            result,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }
}
