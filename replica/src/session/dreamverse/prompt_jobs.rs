//! Runs the prompt policy's LLM jobs on the runtime, beside the session's loop, and hands
//! their results back to the policy: enhancement and auto-extension work while the segment
//! under way is generated, never in its way.

use super::policy::{PromptJob, RewriteAnswer};
use super::{DreamverseSession, Flow};

/// A finished job, for [`DreamverseSession::on_prompt_job`].
#[derive(Debug)]
pub(super) enum JobDone {
    Enhanced {
        ticket: u64,
        result: Result<String, String>,
        latency_ms: f64,
    },
    AutoExtended {
        ticket: u64,
        result: Result<String, String>,
        latency_ms: f64,
    },
    Rewritten {
        ticket: u64,
        result: Result<RewriteAnswer, String>,
        latency_ms: f64,
    },
}

impl DreamverseSession {
    /// Spawns every job the policy asked for (at most one of each kind is under way).
    pub(super) fn start_prompt_jobs(&mut self) {
        for job in self.policy.take_jobs() {
            let service = self.ctx.prompts.clone();
            let session = self.id.clone();
            self.log.event("prompt_job", job_summary(&job));
            self.jobs.spawn(async move {
                let done = match job {
                    PromptJob::Enhance { ticket, prompt } => {
                        let (result, latency_ms) = service.enhance(&prompt).await.into_text();
                        JobDone::Enhanced {
                            ticket,
                            result,
                            latency_ms,
                        }
                    }
                    PromptJob::AutoExtend { ticket, previous } => {
                        let (result, latency_ms) = service.auto_extend(&previous).await.into_text();
                        JobDone::AutoExtended {
                            ticket,
                            result,
                            latency_ms,
                        }
                    }
                    PromptJob::Rewrite {
                        ticket,
                        instruction,
                        window,
                        count,
                    } => {
                        let t = service.rewrite(&instruction, &window, count).await;
                        JobDone::Rewritten {
                            ticket,
                            result: t
                                .result
                                .map(|r| RewriteAnswer {
                                    prompts: r.alternatives,
                                    raw: r.raw,
                                })
                                .map_err(|e| e.to_string()),
                            latency_ms: t.latency_ms,
                        }
                    }
                };
                tracing::debug!(%session, ?done, "prompt job done");
                done
            });
        }
    }

    /// A job finished: the policy takes its result, then the session moves on.
    pub(super) async fn on_prompt_job(&mut self, done: JobDone) -> Flow {
        let (kind, ok, latency_ms) = match &done {
            JobDone::Enhanced {
                result, latency_ms, ..
            } => ("enhance", result.is_ok(), *latency_ms),
            JobDone::AutoExtended {
                result, latency_ms, ..
            } => ("auto_extend", result.is_ok(), *latency_ms),
            JobDone::Rewritten {
                result, latency_ms, ..
            } => ("rewrite", result.is_ok(), *latency_ms),
        };
        self.log.event(
            "rewrite_done",
            serde_json::json!({"kind": kind, "ok": ok, "latency_ms": latency_ms}),
        );
        match done {
            JobDone::Enhanced {
                ticket,
                result,
                latency_ms,
            } => self.policy.enhanced(ticket, result, latency_ms),
            JobDone::AutoExtended {
                ticket,
                result,
                latency_ms,
            } => self.policy.auto_extended(ticket, result, latency_ms),
            JobDone::Rewritten {
                ticket,
                result,
                latency_ms,
            } => self.policy.rewritten(ticket, result, latency_ms),
        }
        self.advance().await
    }
}

/// What the session log keeps of a job (no prompt texts beyond the log's own limits).
fn job_summary(job: &PromptJob) -> serde_json::Value {
    match job {
        PromptJob::Enhance { ticket, prompt } => {
            serde_json::json!({"kind": "enhance", "ticket": ticket, "prompt": prompt})
        }
        PromptJob::AutoExtend { ticket, previous } => {
            serde_json::json!({"kind": "auto_extend", "ticket": ticket, "previous": previous.len()})
        }
        PromptJob::Rewrite {
            ticket,
            instruction,
            count,
            ..
        } => serde_json::json!({
            "kind": "rewrite", "ticket": ticket, "instruction": instruction, "count": count
        }),
    }
}
