//! The prompt safety filter: a fastText classifier (`__label__safe` / `__label__unsafe`)
//! scores every prompt before it is generated, and a prompt whose top label is the unsafe
//! one with at least `safety.block_threshold` probability is blocked.
//!
//! The rule is the reference server's (`PromptSafetyFilter.classify`): fastText's
//! `predict(k=1)` on the prompt as one line, block when the top label is unsafe and its score
//! is at least the threshold (default 0.5), allow otherwise. The filter is opt-in and never
//! stops the replica: with no file, or one that cannot be loaded, every decision is
//! `Unavailable`, which sessions treat as allow, and the cause is logged once at start-up.
//!
//! Differences from the reference: the model is loaded when the replica starts rather than on
//! the first prompt, so a bad file shows in the start-up log; the label is reported as the
//! file spells it (`__label__unsafe`, configurable as `safety.unsafe_label`) where the
//! reference strips the prefix; the score is the model's probability, where fastText adds
//! 1e-5 (so a score never exceeds 1); only the first [`MAX_SCORED_CHARS`] characters are
//! scored; and a model whose labels lack the unsafe label is unavailable rather than a
//! filter that silently never blocks. Like the reference, a threshold below 0.5 blocks no
//! more than 0.5 does with two labels, since only the top label can block.
//!
//! fastText models are read by [`fasttext`], our own reader of the `.bin` format, rather than
//! the `fasttext` crate: the crate (0.8, a pure-Rust port of all of fastText, 11k lines
//! with training, quantization and SIMD `unsafe`, about 11 s to build) sizes its
//! allocations from the file header, so a corrupt file could abort the process, and we need
//! only `predict` on supervised models, which the reader does in a few hundred lines that
//! the parity test checks against the fastText wheel.

mod fasttext;

use metrics::{counter, describe_counter};

pub use fasttext::{FastTextClassifier, LoadError, Prediction};

use crate::config::SafetySettings;

/// Safety checks by verdict (`allow`, `block`, `unavailable`).
pub const SAFETY_CHECKS_TOTAL: &str = "framecast_safety_checks_total";

/// Longest prefix of a prompt that is scored, in characters, so a hostile prompt costs
/// little (prompts are capped at `streaming.limits.max_prompt_chars`, 2000 by default).
pub const MAX_SCORED_CHARS: usize = 4096;

/// Registers the help text and zero series for every verdict, so a dashboard sees them
/// before the first prompt.
pub fn describe_metrics() {
    describe_counter!(
        SAFETY_CHECKS_TOTAL,
        "Prompts screened by the safety filter, by verdict (allow, block, unavailable)."
    );
    for verdict in [Verdict::Allow, Verdict::Block, Verdict::Unavailable] {
        counter!(SAFETY_CHECKS_TOTAL, "verdict" => verdict.as_str()).absolute(0);
    }
}

/// What the filter concluded about one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Block,
    /// The filter is off or has no usable model; sessions treat it as allow.
    Unavailable,
}

impl Verdict {
    /// The metric label and log value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Block => "block",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A verdict with the classifier's top label and its probability, for the error frame and
/// the log (both `None` when the classifier did not run or found no known token).
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyDecision {
    pub verdict: Verdict,
    pub label: Option<String>,
    pub score: Option<f32>,
}

impl SafetyDecision {
    /// Whether the prompt must not be generated; `Unavailable` is not a block.
    pub fn is_blocked(&self) -> bool {
        self.verdict == Verdict::Block
    }

    fn unavailable() -> Self {
        Self {
            verdict: Verdict::Unavailable,
            label: None,
            score: None,
        }
    }
}

/// The filter every session shares: the classifier loaded once, or why there is none.
pub struct SafetyFilter {
    classifier: Result<FastTextClassifier, String>,
    unsafe_label: String,
    block_threshold: f32,
}

impl std::fmt::Debug for SafetyFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("SafetyFilter");
        match &self.classifier {
            Ok(c) => d.field("labels", &c.labels()),
            Err(cause) => d.field("unavailable", cause),
        };
        d.field("unsafe_label", &self.unsafe_label)
            .field("block_threshold", &self.block_threshold)
            .finish()
    }
}

impl SafetyFilter {
    /// The filter `settings` describe; never fails, so a bad model file cannot keep the
    /// replica from serving: it logs one warning naming the path and the cause, and every
    /// decision is then `Unavailable`.
    pub fn from_settings(settings: &SafetySettings) -> Self {
        if !settings.enabled {
            return Self::disabled();
        }
        let classifier = match &settings.model_path {
            None => Err("no safety.model_path is configured".to_string()),
            Some(path) => FastTextClassifier::load(path)
                .map_err(|e| format!("cannot load {}: {e}", path.display()))
                .and_then(|c| {
                    if c.labels().contains(&settings.unsafe_label) {
                        Ok(c)
                    } else {
                        Err(format!(
                            "{} has labels {:?} but not safety.unsafe_label `{}`",
                            path.display(),
                            c.labels(),
                            settings.unsafe_label
                        ))
                    }
                }),
        };
        match &classifier {
            Ok(c) => tracing::info!(
                path = ?settings.model_path,
                labels = ?c.labels(),
                block_threshold = settings.block_threshold,
                "prompt safety filter loaded"
            ),
            Err(cause) => tracing::warn!(
                path = ?settings.model_path,
                %cause,
                "prompt safety filter unavailable: prompts are allowed unchecked"
            ),
        }
        Self {
            classifier,
            unsafe_label: settings.unsafe_label.clone(),
            block_threshold: settings.block_threshold,
        }
    }

    /// A filter that allows everything (as `Unavailable`), for `safety.enabled: false`.
    pub fn disabled() -> Self {
        Self {
            classifier: Err("the safety filter is not enabled".to_string()),
            unsafe_label: String::new(),
            block_threshold: 1.0,
        }
    }

    /// Why every decision is `Unavailable`, or `None` when the classifier is loaded.
    pub fn unavailable_cause(&self) -> Option<&str> {
        self.classifier.as_ref().err().map(String::as_str)
    }

    /// Scores `text` (its first [`MAX_SCORED_CHARS`] characters) and counts the verdict.
    pub fn check(&self, text: &str) -> SafetyDecision {
        let decision = match &self.classifier {
            Err(_) => SafetyDecision::unavailable(),
            Ok(classifier) => self.decide(classifier, text),
        };
        counter!(SAFETY_CHECKS_TOTAL, "verdict" => decision.verdict.as_str()).increment(1);
        decision
    }

    fn decide(&self, classifier: &FastTextClassifier, text: &str) -> SafetyDecision {
        let scored = text
            .char_indices()
            .nth(MAX_SCORED_CHARS)
            .map_or(text, |(end, _)| &text[..end]);
        let Some(top) = classifier.predict(scored) else {
            // No token the model knows: fastText predicts nothing and the reference allows.
            return SafetyDecision {
                verdict: Verdict::Allow,
                label: None,
                score: None,
            };
        };
        if !top.probability.is_finite() {
            // Finite weights can still overflow; fastText raises here, the reference then
            // answers unavailable.
            return SafetyDecision::unavailable();
        }
        let label = &classifier.labels()[top.label];
        let verdict = if *label == self.unsafe_label && top.probability >= self.block_threshold {
            Verdict::Block
        } else {
            Verdict::Allow
        };
        SafetyDecision {
            verdict,
            label: Some(label.clone()),
            score: Some(top.probability),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(path: Option<&std::path::Path>) -> SafetySettings {
        SafetySettings {
            enabled: true,
            model_path: path.map(Into::into),
            ..SafetySettings::default()
        }
    }

    #[test]
    fn without_a_usable_model_every_decision_is_unavailable_and_not_a_block() {
        let off = SafetyFilter::from_settings(&SafetySettings::default());
        assert_eq!(
            off.unavailable_cause(),
            Some("the safety filter is not enabled")
        );
        let none = SafetyFilter::from_settings(&settings(None));
        assert!(
            none.unavailable_cause()
                .unwrap()
                .contains("safety.model_path")
        );
        let missing = SafetyFilter::from_settings(&settings(Some("/nonexistent/s.bin".as_ref())));
        assert!(
            missing
                .unavailable_cause()
                .unwrap()
                .contains("/nonexistent/s.bin"),
            "{missing:?}"
        );
        for filter in [off, none, missing, SafetyFilter::disabled()] {
            let d = filter.check("anything at all");
            assert_eq!(d.verdict, Verdict::Unavailable);
            assert!(!d.is_blocked());
            assert_eq!((d.label, d.score), (None, None));
        }
    }

    #[test]
    fn the_filter_is_shared_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<SafetyFilter>();
    }
}
