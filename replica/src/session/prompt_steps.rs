//! The prompt pipeline on `/v1/stream`: the safety filter on every prompt, enhancement of the
//! client's prompts when `enhancement_enabled`, and auto-extension by the LLM when the
//! prompts run out. The LLM works beside the session's loop (a job per step), while the
//! segment under way is generated; a failed or late step falls back (the prompt as typed,
//! the newest prompt repeated), so generation waits at most `prompt.operation_timeout_ms`.

use framecast_common::protocol::{ErrorCode, PromptSource, SegmentPrompt};

use super::controller::{Session, error};
use crate::prompt::Stage;
use crate::prompt::operations::MAX_WINDOW_PROMPTS;

/// A finished LLM step, for [`Session::on_prompt_step`].
#[derive(Debug)]
pub(super) enum StepDone {
    Enhanced {
        prompt: SegmentPrompt,
        result: Result<String, String>,
        latency_ms: f64,
    },
    AutoExtended {
        ticket: u64,
        result: Result<String, String>,
        latency_ms: f64,
    },
}

/// The session's prompt-pipeline state.
#[derive(Debug, Default)]
pub(super) struct PromptSteps {
    /// Client prompts waiting for enhancement, in arrival order.
    raw: std::collections::VecDeque<SegmentPrompt>,
    /// A prompt is being enhanced (one at a time, so the order holds).
    enhancing: bool,
    /// The auto-extension under way, by ticket.
    auto_pending: Option<u64>,
    next_ticket: u64,
    /// Prompts generated so far, oldest first (auto-extension's context).
    history: std::collections::VecDeque<String>,
    jobs: tokio::task::JoinSet<StepDone>,
}

impl PromptSteps {
    /// Client prompts accepted and not yet handed to the scheduler.
    pub(super) fn waiting(&self) -> usize {
        self.raw.len() + usize::from(self.enhancing)
    }

    /// The next finished step; pending forever when none is under way.
    pub(super) async fn next_done(&mut self) -> Option<StepDone> {
        if self.jobs.is_empty() {
            return std::future::pending().await;
        }
        match self.jobs.join_next().await? {
            Ok(done) => Some(done),
            Err(e) => {
                tracing::error!(error = %e, "prompt step failed");
                None
            }
        }
    }

    /// Remembers a generated prompt as auto-extension's context.
    pub(super) fn generated(&mut self, prompt: &str) {
        if self.history.len() == MAX_WINDOW_PROMPTS {
            self.history.pop_front();
        }
        self.history.push_back(prompt.to_string());
    }
}

impl Session {
    /// A client prompt that passed the limits: refused if the safety filter blocks it, else
    /// enhanced first (when asked and an LLM is configured) or queued as typed.
    pub(super) async fn accept_prompt(&mut self, prompt: SegmentPrompt) {
        if self.ctx.prompts.blocks(&prompt.prompt, Stage::User) {
            self.refuse_blocked("the prompt").await;
            return;
        }
        if self.init.enhancement_enabled && self.ctx.prompts.llm_available() {
            self.steps.raw.push_back(prompt);
            self.start_enhancement();
        } else {
            self.schedule.request(prompt);
            self.try_schedule();
        }
    }

    /// An `error {code: prompt_blocked}`: the prompt is not generated, the session goes on.
    pub(super) async fn refuse_blocked(&mut self, what: &str) {
        self.log
            .event("prompt_blocked", serde_json::json!({"what": what}));
        let message = format!("the safety filter blocked {what}; it will not be generated");
        self.send(error(
            ErrorCode::PromptBlocked,
            message,
            false,
            Some("safety_filter".into()),
        ))
        .await;
    }

    fn start_enhancement(&mut self) {
        if self.steps.enhancing {
            return;
        }
        let Some(prompt) = self.steps.raw.pop_front() else {
            return;
        };
        self.steps.enhancing = true;
        let service = self.ctx.prompts.clone();
        self.steps.jobs.spawn(async move {
            let (result, latency_ms) = service.enhance(&prompt.prompt).await.into_text();
            StepDone::Enhanced {
                prompt,
                result,
                latency_ms,
            }
        });
    }

    /// Asks the LLM for auto-extension's next prompt when it is the only source left.
    pub(super) fn maybe_auto_extend(&mut self) {
        let steps = &self.steps;
        if steps.auto_pending.is_some()
            || !steps.raw.is_empty()
            || steps.enhancing
            || !self.ctx.prompts.llm_available()
            || !self.schedule.needs_auto_prompt(&self.init)
        {
            return;
        }
        let mut previous: Vec<String> = self.steps.history.iter().cloned().collect();
        if previous.is_empty() {
            previous = self.init.curated_prompts.clone();
        }
        if previous.is_empty() {
            // Nothing to continue from yet: the client's first prompt starts the story.
            return;
        }
        self.steps.next_ticket += 1;
        let ticket = self.steps.next_ticket;
        self.steps.auto_pending = Some(ticket);
        let service = self.ctx.prompts.clone();
        self.steps.jobs.spawn(async move {
            let (result, latency_ms) = service.auto_extend(&previous).await.into_text();
            StepDone::AutoExtended {
                ticket,
                result,
                latency_ms,
            }
        });
    }

    /// Auto-extension was switched off: its step under way no longer matters.
    pub(super) fn cancel_auto_extension(&mut self) {
        self.steps.auto_pending = None;
        self.schedule.clear_auto();
    }

    /// A step finished: its prompt goes to the scheduler (or its fallback does).
    pub(super) async fn on_prompt_step(&mut self, done: StepDone) {
        match done {
            StepDone::Enhanced {
                mut prompt,
                result,
                latency_ms,
            } => {
                self.steps.enhancing = false;
                self.log.event(
                    "rewrite_done",
                    serde_json::json!({"kind": "enhance_prompt", "ok": result.is_ok(), "latency_ms": latency_ms}),
                );
                match result {
                    Ok(text) if self.ctx.prompts.blocks(&text, Stage::Enhanced) => {
                        self.refuse_blocked("the enhanced prompt").await;
                    }
                    Ok(text) => {
                        prompt.prompt = text;
                        prompt.source = Some(PromptSource::Enhanced);
                        self.schedule.request(prompt);
                    }
                    Err(e) => {
                        // The prompt as typed: a dead provider never loses the request.
                        tracing::info!(session = %self.id, error = %e, "enhancement failed; the prompt goes as typed");
                        self.schedule.request(prompt);
                    }
                }
                self.start_enhancement();
            }
            StepDone::AutoExtended {
                ticket,
                result,
                latency_ms,
            } => {
                if self.steps.auto_pending != Some(ticket) {
                    return;
                }
                self.steps.auto_pending = None;
                self.log.event(
                    "rewrite_done",
                    serde_json::json!({"kind": "auto_extend", "ok": result.is_ok(), "latency_ms": latency_ms}),
                );
                let invented = match result {
                    Ok(text) if !self.ctx.prompts.blocks(&text, Stage::Auto) => Some(text),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::info!(session = %self.id, error = %e, "auto-extension failed; the newest prompt repeats");
                        None
                    }
                };
                let fallback = self.schedule.last_prompt().map(|p| p.prompt.clone());
                let text = invented
                    .or(fallback)
                    .or_else(|| self.init.curated_prompts.first().cloned());
                if let Some(text) = text {
                    self.schedule.offer_auto(SegmentPrompt {
                        prompt: text,
                        negative_prompt: None,
                        source: Some(PromptSource::AutoExtension),
                        seed: None,
                        num_inference_steps: None,
                        guidance_scale: None,
                    });
                }
            }
        }
        self.try_schedule();
    }
}
