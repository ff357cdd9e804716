//! Which prompt each Dreamverse segment gets and when streams start and end: the
//! server-driven prompt policy of Dreamverse's session controller, as a pure state machine.
//!
//! The session feeds it client messages and the pipeline's progress (`generated`,
//! `media_done`) and asks it, after each, what to do next ([`PromptPolicy::poll`]); every
//! frame it wants sent waits in its outbox ([`PromptPolicy::take_messages`]). No I/O and no
//! clock, so each rule is unit-tested here.
//!
//! Prompt selection per segment, in order: the first seed prompt after a reset; the user's
//! ready prompts; the next seed prompt; with loop generation, the seed list again
//! (`loop_restarted`); with auto-extension, a prompt the prompt pipeline invents; else
//! `prompt_sources_blocked` and wait.
//!
//! Generation of segment k+1 overlaps the encoding and sending of segment k, as on
//! `/v1/stream` (and as Dreamverse does since it decoupled streaming from generation): the
//! next segment is chosen once segment k is generated ([`PromptPolicy::generated`]). Its
//! announcement (`segment_prompt_source`, `ltx2_segment_start`, and any
//! `prompt_sources_blocked` / `_resumed`) is held until segment k's media is out
//! ([`PromptPolicy::media_done`], or [`PromptPolicy::release_held`] when k+1's media begins
//! first), so each segment's frames still arrive in the documented order
//! (`segment_prompt_source` … `ltx2_segment_complete`). The price: a prompt typed while
//! segment k's media goes out is used for k+2. Anything that starts a new stream (a reset,
//! the end of a project, the cap) waits for every segment in flight.
//!
//! The prompt pipeline's LLM steps are asynchronous jobs the policy asks for
//! ([`PromptPolicy::take_jobs`]) and the session runs, handing each result back
//! ([`PromptPolicy::enhanced`], [`PromptPolicy::auto_extended`], [`PromptPolicy::rewritten`]);
//! a job the policy no longer waits for (a reset, a new project, a toggle) is recognised by
//! its ticket and its result dropped. Enhancement runs while the segment under way is
//! generated, one user prompt at a time in arrival order; auto-extension asks for the next
//! prompt as soon as the segment that empties the prompt sources starts, so a fast LLM has
//! it ready before it is needed. Without an LLM every step takes its failure path: user
//! prompts are used as typed (`user_raw`, even with enhancement on), auto-extension reports
//! `auto_prompt_failed` once per segment and does not retry until its toggle changes, a
//! rewrite leaves the seed list unchanged (`fallback_used: true`), and an
//! `initial_rollout_prompt` becomes the seed prompt of every segment of the capped rollout
//! (one continuous shot of what the user typed). The same failure paths serve a provider
//! that fails or runs past its time budget. The safety filter screens every prompt before
//! it can be generated: typed, enhanced, invented and rewritten.

use std::collections::VecDeque;

use framecast_common::dreamverse::{
    AppendPrompt, ClientMessage, ENHANCEMENT_FAILED_ERROR, ENHANCEMENT_FAILED_SOURCE,
    ProjectSettings, PromptSource, ResetReason, RewriteSeedPrompts, STREAM_MODE, ServerMessage,
    SimpleGenerate, resolve_rewrite_model, resolve_rewrite_temperature, round_ms,
};

use crate::config::ClientLimits;
use crate::prompt::Stage;
use crate::prompt::operations::MAX_WINDOW_PROMPTS;
use crate::session::limits;

/// The error every prompt-pipeline step reports when no provider is configured.
pub const NO_PROMPT_PIPELINE: &str = "prompt pipeline not configured";
/// Dreamverse's answer to prompt messages while no project is active.
pub const NO_PROJECT: &str = "Start a new project before sending prompts.";
/// Dreamverse's answer to `project_init_v1` while a project is active or ending.
pub const PROJECT_STILL_ENDING: &str = "Current project is still ending. Wait for the reset to finish before starting another \
     project.";

/// A segment the session should generate now.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentPlan {
    /// 1-based within the stream.
    pub segment_idx: u32,
    /// `max(segment_idx, seed count)`.
    pub total_segments: u32,
    pub prompt: String,
    pub source: PromptSource,
    pub prompt_id: Option<String>,
    pub seed_prompt_index: Option<u32>,
    pub loop_iteration: u32,
}

/// What starts the next stream once nothing is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reset {
    Seeds(ResetReason),
    /// Loop generation ran out of seed prompts and starts them again.
    Loop,
}

/// A user prompt, as typed or enhanced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UserPrompt {
    prompt_id: String,
    prompt: String,
    source: PromptSource,
}

/// The safety filter as the policy sees it: true when a prompt must not be generated.
pub type Blocks = Box<dyn Fn(&str, Stage) -> bool + Send + Sync>;

/// What the policy needs of the prompt pipeline: whether an LLM can be asked at all, and
/// the safety filter.
pub struct PromptTools {
    pub llm: bool,
    pub blocks: Blocks,
}

impl std::fmt::Debug for PromptTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTools")
            .field("llm", &self.llm)
            .finish_non_exhaustive()
    }
}

impl PromptTools {
    /// No LLM, nothing blocked.
    pub fn none() -> Self {
        Self {
            llm: false,
            blocks: Box::new(|_, _| false),
        }
    }
}

/// An LLM step the session should run and answer with the same ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptJob {
    /// Enhance a user prompt → [`PromptPolicy::enhanced`].
    Enhance { ticket: u64, prompt: String },
    /// Invent the next prompt from the previous ones → [`PromptPolicy::auto_extended`].
    AutoExtend { ticket: u64, previous: Vec<String> },
    /// Write `count` seed prompts → [`PromptPolicy::rewritten`].
    Rewrite {
        ticket: u64,
        instruction: String,
        window: Vec<String>,
        count: usize,
    },
}

/// A rewrite's prompts and the LLM's raw answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteAnswer {
    pub prompts: Vec<String>,
    pub raw: String,
}

/// What a rewrite under way is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RewriteKind {
    /// `rewrite_seed_prompts` with this instruction.
    User(String),
    /// The seed list of a project opened with an `initial_rollout_prompt`.
    InitialRollout,
}

/// The prompt chosen for the next segment.
struct Selected {
    prompt: String,
    source: PromptSource,
    prompt_id: Option<String>,
    seed_prompt_index: Option<u32>,
}

/// One session's prompt policy across its projects.
pub struct PromptPolicy {
    cap: u32,
    limits: ClientLimits,
    new_prompt_id: Box<dyn FnMut() -> String + Send + Sync>,
    tools: PromptTools,
    outbox: Vec<ServerMessage>,
    jobs: Vec<PromptJob>,
    next_ticket: u64,

    /// A project is running (between its init and `project_idle`).
    active: bool,
    /// `end_project_keep_session` arrived; the project ends once nothing is in flight.
    ending: bool,
    /// An `ltx2_stream_start` went out and its `ltx2_stream_complete` has not.
    stream_started: bool,

    preset_id: Option<String>,
    preset_label: String,
    initial_rollout_prompt: String,
    enhancement: bool,
    auto_extension: bool,
    loop_generation: bool,
    single_clip: bool,
    paused: bool,
    rewrite_model: String,

    /// The project's seed prompts (what resets go back to).
    seeds: Vec<String>,
    /// The list the stream walks, and how far it got.
    curated: Vec<String>,
    curated_idx: usize,
    /// The last segment started in this stream (1-based; 0 before the first).
    segment_idx: u32,
    loop_iteration: u32,
    ready: VecDeque<UserPrompt>,
    /// User prompts waiting for enhancement, in arrival order.
    raw: VecDeque<UserPrompt>,
    /// The user prompt being enhanced, with its job's ticket.
    enhancing: Option<(u64, UserPrompt)>,
    /// A prompt auto-extension wrote, kept for the segment that needs it.
    auto_ready: Option<String>,
    /// The auto-extension under way: its ticket and the segment it was asked for.
    auto_pending: Option<(u64, u32)>,
    /// The rewrite under way.
    rewriting: Option<(u64, RewriteKind)>,
    /// The stream's prompts so far, oldest first: auto-extension's context.
    history: VecDeque<String>,
    /// The prompt of a `simple_generate` with enhancement on, queued after its reset.
    simple_request: Option<UserPrompt>,
    pending_reset: Option<Reset>,
    /// After a reset, the first seed prompt comes before anything the user queued.
    force_first_seed: bool,
    /// `prompt_sources_blocked` went out; the next segment reports `prompt_sources_resumed`.
    blocked_reported: bool,
    /// The segment auto-extension failed for; no retry until the toggle changes.
    auto_failed_at: Option<u32>,
    /// Segments started since the rollout began; the cap counts them.
    generated: u32,
    /// The cap was reached: waiting for `restart_generation` (or a rewrite).
    waiting_for_rewrite: bool,
    /// Generation waits for the seed list an `initial_rollout_prompt` builds.
    initial_rollout_pending: bool,
    /// Single-clip mode: the clip is made; waiting for the next request.
    clip_done: bool,

    /// A segment is being generated.
    generating: bool,
    /// Segments started whose media has not all gone out (at most 2: one streaming, the
    /// next generating).
    unfinished_media: u32,
    /// Frames about the next segment, each held until the media of the segments started
    /// before it is out: (segments started before it, frame).
    held: Vec<(u32, ServerMessage)>,
    /// Segments started since the session began (the pipeline numbers them the same way).
    started_total: u32,
    /// Segments whose media is all out.
    media_done_total: u32,
}

impl std::fmt::Debug for PromptPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptPolicy")
            .field("active", &self.active)
            .field("segment_idx", &self.segment_idx)
            .field("loop_iteration", &self.loop_iteration)
            .field("generating", &self.generating)
            .field("unfinished_media", &self.unfinished_media)
            .finish_non_exhaustive()
    }
}

impl PromptPolicy {
    /// A policy stopping each rollout after `cap` segments (at least 1), checking client
    /// values against `limits`; `new_prompt_id` names user prompts the client left unnamed.
    pub fn new(
        cap: u32,
        limits: ClientLimits,
        new_prompt_id: impl FnMut() -> String + Send + Sync + 'static,
        tools: PromptTools,
    ) -> Self {
        Self {
            cap,
            limits,
            new_prompt_id: Box::new(new_prompt_id),
            tools,
            outbox: Vec::new(),
            jobs: Vec::new(),
            next_ticket: 0,
            active: false,
            ending: false,
            stream_started: false,
            preset_id: None,
            preset_label: String::new(),
            initial_rollout_prompt: String::new(),
            enhancement: true,
            auto_extension: false,
            loop_generation: false,
            single_clip: false,
            paused: false,
            rewrite_model: resolve_rewrite_model(None),
            seeds: Vec::new(),
            curated: Vec::new(),
            curated_idx: 0,
            segment_idx: 0,
            loop_iteration: 0,
            ready: VecDeque::new(),
            raw: VecDeque::new(),
            enhancing: None,
            auto_ready: None,
            auto_pending: None,
            rewriting: None,
            history: VecDeque::new(),
            simple_request: None,
            pending_reset: None,
            force_first_seed: false,
            blocked_reported: false,
            auto_failed_at: None,
            generated: 0,
            waiting_for_rewrite: false,
            initial_rollout_pending: false,
            clip_done: false,
            generating: false,
            unfinished_media: 0,
            held: Vec::new(),
            started_total: 0,
            media_done_total: 0,
        }
    }

    /// The frames to send, in order.
    pub fn take_messages(&mut self) -> Vec<ServerMessage> {
        std::mem::take(&mut self.outbox)
    }

    /// The LLM steps to run, in order.
    pub fn take_jobs(&mut self) -> Vec<PromptJob> {
        std::mem::take(&mut self.jobs)
    }

    /// An enhancement finished: the prompt is ready (`user_enhanced`), or dropped with
    /// `prompt_fallback_used` (failure) or an `error` (blocked). The next one starts.
    pub fn enhanced(&mut self, ticket: u64, result: Result<String, String>, latency_ms: f64) {
        let Some((_, p)) = self.enhancing.take_if(|(t, _)| *t == ticket) else {
            return;
        };
        let latency_ms = round_ms(latency_ms);
        match result {
            Ok(text) if (self.tools.blocks)(&text, Stage::Enhanced) => {
                self.push_error(blocked_message(&p.prompt_id));
            }
            Ok(text) => {
                self.outbox.push(ServerMessage::PromptReady {
                    prompt_id: p.prompt_id.clone(),
                    prompt: text.clone(),
                    source: PromptSource::UserEnhanced,
                    latency_ms,
                });
                self.ready.push_back(UserPrompt {
                    prompt: text,
                    source: PromptSource::UserEnhanced,
                    ..p
                });
            }
            Err(_) => self.outbox.push(ServerMessage::PromptFallbackUsed {
                prompt_id: p.prompt_id,
                prompt: p.prompt,
                source: ENHANCEMENT_FAILED_SOURCE,
                latency_ms,
                error: ENHANCEMENT_FAILED_ERROR,
            }),
        }
        self.start_enhancement();
    }

    /// An auto-extension finished: its prompt waits for the segment that needs it, or
    /// `auto_prompt_failed` (no retry for that segment until the toggle changes).
    pub fn auto_extended(&mut self, ticket: u64, result: Result<String, String>, latency_ms: f64) {
        let Some((_, segment_idx)) = self.auto_pending.take_if(|(t, _)| *t == ticket) else {
            return;
        };
        let result = result.and_then(|text| {
            if (self.tools.blocks)(&text, Stage::Auto) {
                Err("the safety filter blocked the invented prompt".to_string())
            } else {
                Ok(text)
            }
        });
        match result {
            Ok(text) => self.auto_ready = Some(text),
            Err(error) => {
                self.auto_failed_at = Some(segment_idx);
                self.outbox.push(ServerMessage::AutoPromptFailed {
                    segment_idx,
                    latency_ms: round_ms(latency_ms),
                    error,
                });
            }
        }
    }

    /// A rewrite finished: the new seed list replaces the old one and the rollout restarts
    /// from it (after the segment under way), or the failure variant keeps the old list.
    pub fn rewritten(
        &mut self,
        ticket: u64,
        result: Result<RewriteAnswer, String>,
        latency_ms: f64,
    ) {
        let Some((_, kind)) = self.rewriting.take_if(|(t, _)| *t == ticket) else {
            return;
        };
        let latency_ms = round_ms(latency_ms);
        let max = self.limits.max_seed_prompts.max(1);
        let result = result.and_then(|mut answer| {
            answer.prompts.truncate(max);
            if answer.prompts.is_empty() {
                Err("the rewrite returned no prompts".to_string())
            } else if answer
                .prompts
                .iter()
                .any(|p| (self.tools.blocks)(p, Stage::Rewrite))
            {
                Err("the safety filter blocked a rewritten prompt".to_string())
            } else {
                Ok(answer)
            }
        });
        let instruction = match &kind {
            RewriteKind::User(instruction) => instruction.clone(),
            RewriteKind::InitialRollout => self.initial_rollout_prompt.clone(),
        };
        match result {
            Ok(answer) => {
                self.seeds = answer.prompts;
                self.outbox.push(ServerMessage::SeedPromptsRewritten {
                    prompts: self.seeds.clone(),
                    preset_id: self.preset_id.clone(),
                    preset_label: self.preset_label.clone(),
                    reason: "rewrite",
                    fallback_used: false,
                    error: None,
                    model: self.rewrite_model.clone(),
                    latency_ms,
                    raw_llm_output: Some(answer.raw),
                    rewrite_instruction: instruction,
                });
                self.outbox.push(ServerMessage::RewriteSeedPromptsDone {
                    fallback_used: false,
                    error: None,
                    preset_id: self.preset_id.clone(),
                    preset_label: self.preset_label.clone(),
                    model: self.rewrite_model.clone(),
                    latency_ms,
                });
                if kind == RewriteKind::InitialRollout {
                    self.curated = self.seeds.clone();
                    self.finish_initial_rollout();
                } else {
                    self.generated = 0;
                    self.waiting_for_rewrite = false;
                    self.pending_reset = Some(Reset::Seeds(if self.in_flight() {
                        ResetReason::RewriteDuringGeneration
                    } else {
                        ResetReason::RewriteRollout
                    }));
                }
            }
            Err(error) => {
                if kind == RewriteKind::InitialRollout {
                    self.initial_rollout_fallback();
                }
                self.rewrite_failed(instruction, error, latency_ms);
            }
        }
    }

    /// Whether a segment is being generated or its media is still going out.
    pub fn in_flight(&self) -> bool {
        self.generating || self.unfinished_media > 0
    }

    /// The segment under way was generated: the next may be chosen and generated while its
    /// media goes out.
    pub fn generated(&mut self) {
        self.generating = false;
    }

    /// The media of pipeline segment `begins` (0-based, in start order) is about to go
    /// out, so every segment before it is out: what was held for it goes out now.
    pub fn release_held(&mut self, begins: u32) {
        self.release(begins);
    }

    fn release(&mut self, media_out: u32) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(after, _)| *after <= media_out);
        self.outbox.extend(due.into_iter().map(|(_, m)| m));
        self.held = later;
    }

    /// Whether a stream is open (its `ltx2_stream_complete` still due).
    pub fn stream_started(&self) -> bool {
        self.stream_started
    }

    /// Queues an `error`.
    pub fn push_error(&mut self, message: impl Into<String>) {
        self.outbox.push(ServerMessage::error(message));
    }

    /// Closes the open stream, if any (the session is ending).
    pub fn complete_stream(&mut self) {
        if std::mem::take(&mut self.stream_started) {
            self.outbox.push(ServerMessage::Ltx2StreamComplete);
        }
    }

    /// The first project, from the opening frame, once a worker is assigned. A field beyond
    /// a limit gets an `error` naming it and is dropped; the project starts anyway.
    pub fn start_session(&mut self, mut settings: ProjectSettings) {
        self.sanitize(&mut settings);
        self.apply_settings(settings, true);
        self.outbox.push(ServerMessage::LoopGenerationUpdated {
            enabled: self.loop_generation,
        });
        self.outbox.push(ServerMessage::GenerationPausedUpdated {
            paused: self.paused,
        });
        if self.initial_rollout_pending {
            self.build_initial_rollout();
        } else {
            self.stream_started = true;
            self.outbox.push(self.stream_start());
            self.outbox.push(ServerMessage::SeedPromptsInit {
                prompts: self.seeds.clone(),
                preset_id: self.preset_id.clone(),
                preset_label: self.preset_label.clone(),
                reason: "init",
                seed_prompt_count: count(self.seeds.len()),
            });
        }
    }

    /// Whether `project_init_v1` may start a project now; if not, the `error` is queued.
    /// (The session checks its initial image in between.)
    pub fn check_project_init(&mut self, settings: &ProjectSettings) -> bool {
        if self.active || self.ending {
            self.push_error(PROJECT_STILL_ENDING);
            return false;
        }
        let mut checked = settings.clone();
        self.sanitize(&mut checked)
    }

    /// Starts the project [`PromptPolicy::check_project_init`] allowed.
    pub fn project_init(&mut self, settings: ProjectSettings) {
        self.apply_settings(settings, false);
        if self.initial_rollout_pending {
            self.build_initial_rollout();
        } else {
            self.pending_reset = Some(Reset::Seeds(ResetReason::ProjectInit));
        }
    }

    /// Whether `simple_generate` goes on (false and silent without a project, as in
    /// Dreamverse; false with an `error` for a bad prompt).
    pub fn check_simple_generate(&mut self, request: &SimpleGenerate) -> bool {
        if !self.active {
            return false;
        }
        if request.prompt.is_empty() {
            self.push_error("simple_generate requires a non-empty prompt");
            return false;
        }
        let checks = [
            check_text("prompt", &request.prompt, &self.limits),
            check_optional("prompt_id", request.prompt_id.as_deref(), &self.limits),
            check_optional("preset_id", request.preset_id.as_deref(), &self.limits),
            check_optional(
                "preset_label",
                request.preset_label.as_deref(),
                &self.limits,
            ),
        ];
        if !self.first_refusal(checks) {
            return false;
        }
        if (self.tools.blocks)(&request.prompt, Stage::User) {
            let id = request.prompt_id.as_deref().unwrap_or("of simple_generate");
            self.push_error(blocked_message(id));
            return false;
        }
        true
    }

    /// Single-clip mode, one clip of `request`'s prompt in a new stream.
    pub fn simple_generate(&mut self, request: SimpleGenerate) {
        if let Some(id) = request.preset_id {
            self.preset_id = Some(id);
        }
        if let Some(label) = request.preset_label {
            self.preset_label = label;
        }
        self.enhancement = request.enhancement_enabled;
        self.auto_extension = false;
        self.loop_generation = false;
        self.single_clip = true;
        self.paused = false;
        self.pending_reset = Some(Reset::Seeds(ResetReason::SimpleGenerate));
        let prompt_id = request.prompt_id.unwrap_or_else(|| (self.new_prompt_id)());
        if self.enhancement {
            // Goes through the prompt pipeline, so it is a user prompt, after the reset.
            self.seeds.clear();
            self.outbox.push(ServerMessage::PromptReceived {
                prompt_id: prompt_id.clone(),
                queue_depth: 1,
            });
            self.simple_request = Some(UserPrompt {
                prompt_id,
                prompt: request.prompt,
                source: PromptSource::UserRaw,
            });
        } else {
            self.seeds = vec![request.prompt];
            self.simple_request = None;
        }
        self.curated = self.seeds.clone();
    }

    /// Every other client message (`project_init_v1`, `simple_generate` and `leave` need the
    /// session and go through it).
    pub fn on_message(&mut self, message: ClientMessage) {
        if let ClientMessage::EndProjectKeepSession = message {
            self.loop_generation = false;
            self.paused = false;
            self.waiting_for_rewrite = false;
            self.initial_rollout_pending = false;
            self.rewriting = None;
            self.ending = true;
            return;
        }
        if !self.active {
            if matches!(
                message,
                ClientMessage::AppendPrompt(_)
                    | ClientMessage::RewriteSeedPrompts(_)
                    | ClientMessage::ResetToSeedPrompts
                    | ClientMessage::RestartGeneration
            ) {
                self.push_error(NO_PROJECT);
            }
            return;
        }
        match message {
            ClientMessage::AppendPrompt(p) => self.append_prompt(p),
            ClientMessage::SetEnhancement { enabled } => {
                self.enhancement = enabled.unwrap_or(self.enhancement);
                self.outbox.push(ServerMessage::EnhancementUpdated {
                    enabled: self.enhancement,
                });
            }
            ClientMessage::SetAutoExtension { enabled } => {
                self.auto_extension = enabled.unwrap_or(self.auto_extension);
                // A change of mind is the external action that allows another try.
                self.auto_failed_at = None;
                if !self.auto_extension {
                    self.auto_pending = None;
                    self.auto_ready = None;
                }
                self.outbox.push(ServerMessage::AutoExtensionUpdated {
                    enabled: self.auto_extension,
                });
            }
            ClientMessage::SetLoopGeneration { enabled } => {
                self.loop_generation = enabled.unwrap_or(self.loop_generation);
                self.outbox.push(ServerMessage::LoopGenerationUpdated {
                    enabled: self.loop_generation,
                });
            }
            ClientMessage::SetGenerationPaused { paused } => {
                self.paused = paused.unwrap_or(self.paused);
                self.outbox.push(ServerMessage::GenerationPausedUpdated {
                    paused: self.paused,
                });
            }
            ClientMessage::ResetToSeedPrompts => {
                self.pending_reset = Some(Reset::Seeds(ResetReason::ManualReset));
                self.outbox.push(ServerMessage::SeedPromptsResetPending {
                    seed_prompt_count: count(self.seeds.len()),
                });
            }
            ClientMessage::RestartGeneration => {
                self.generated = 0;
                self.waiting_for_rewrite = false;
                self.paused = false;
                self.pending_reset = Some(Reset::Seeds(ResetReason::CapRestart));
                self.outbox.push(ServerMessage::GenerationRestarted {
                    reason: "cap_restart",
                    segment_cap: self.segment_cap(),
                });
            }
            ClientMessage::RewriteSeedPrompts(r) => self.rewrite_seed_prompts(r),
            ClientMessage::SetRewriteModel { rewrite_model } => {
                self.rewrite_model = resolve_rewrite_model(rewrite_model.as_deref());
                self.outbox.push(ServerMessage::RewriteModelUpdated {
                    rewrite_model: self.rewrite_model.clone(),
                });
            }
            ClientMessage::SetRewriteTemperature {
                rewrite_temperature,
            } => {
                self.outbox.push(ServerMessage::RewriteTemperatureUpdated {
                    rewrite_temperature: resolve_rewrite_temperature(rewrite_temperature),
                });
            }
            ClientMessage::EndProjectKeepSession
            | ClientMessage::ProjectInitV1(_)
            | ClientMessage::SimpleGenerate(_)
            | ClientMessage::Leave
            | ClientMessage::Ignored(_) => {}
        }
    }

    /// A segment's media is all out: the next one's announcement goes out.
    pub fn media_done(&mut self) {
        self.unfinished_media = self.unfinished_media.saturating_sub(1);
        self.media_done_total += 1;
        self.release(self.media_done_total);
        if self.single_clip && self.clip_done && !self.in_flight() {
            // One clip per request: its stream ends with it.
            self.complete_stream();
        }
    }

    /// Decides what happens next: starts streams, ends projects and the capped rollout, and
    /// returns the segment to generate, if one should start now.
    pub fn poll(&mut self) -> Option<SegmentPlan> {
        loop {
            if self.ending {
                if !self.in_flight() {
                    self.enter_idle();
                }
                return None;
            }
            if !self.active {
                return None;
            }
            if let Some(reset) = self.pending_reset {
                if self.in_flight() {
                    return None;
                }
                self.apply_reset(reset);
            }
            if let Some(request) = self.simple_request.take() {
                self.accept_user_prompt(request);
            }
            if !self.single_clip && !self.waiting_for_rewrite && self.generated >= self.cap {
                if self.in_flight() {
                    return None;
                }
                self.loop_generation = false;
                self.waiting_for_rewrite = true;
                self.complete_stream();
            }
            if self.waiting_for_rewrite
                || self.initial_rollout_pending
                || self.paused
                || self.generating
                || self.unfinished_media > 1
                || (self.single_clip && self.clip_done)
            {
                return None;
            }
            let next = self.segment_idx + 1;
            let Some(selected) = self.select() else {
                if self.loop_generation && !self.seeds.is_empty() {
                    self.pending_reset = Some(Reset::Loop);
                    continue;
                }
                if self.auto_extension {
                    if let Some(prompt) = self.auto_ready.take() {
                        let plan = self.start_segment(Selected {
                            prompt,
                            source: PromptSource::AutoLlm,
                            prompt_id: None,
                            seed_prompt_index: None,
                        });
                        self.prefetch_auto();
                        return Some(plan);
                    }
                    if self.tools.llm {
                        self.request_auto(next);
                    } else if self.auto_failed_at != Some(next) {
                        // Without an LLM it fails once per segment and is not retried
                        // until the toggle changes.
                        self.auto_failed_at = Some(next);
                        self.outbox.push(ServerMessage::AutoPromptFailed {
                            segment_idx: next,
                            latency_ms: 0.0,
                            error: NO_PROMPT_PIPELINE.into(),
                        });
                    }
                } else if !self.single_clip && !self.blocked_reported {
                    self.blocked_reported = true;
                    self.announce(ServerMessage::PromptSourcesBlocked { segment_idx: next });
                }
                return None;
            };
            let plan = self.start_segment(selected);
            self.prefetch_auto();
            return Some(plan);
        }
    }

    /// Asks for the prompt after the segment just started when nothing else will provide
    /// one, so the LLM works while the segment is generated.
    fn prefetch_auto(&mut self) {
        let sources_dry = self.ready.is_empty()
            && self.raw.is_empty()
            && self.enhancing.is_none()
            && self.curated_idx >= self.curated.len()
            && !self.loop_generation;
        if self.auto_extension
            && self.tools.llm
            && self.auto_ready.is_none()
            && sources_dry
            && !self.single_clip
            && self.generated < self.cap
        {
            self.request_auto(self.segment_idx + 1);
        }
    }

    /// Starts an auto-extension for segment `next` unless one is under way or it already
    /// failed for that segment.
    fn request_auto(&mut self, next: u32) {
        if self.auto_pending.is_some() || self.auto_failed_at == Some(next) {
            return;
        }
        let ticket = self.ticket();
        let mut previous: Vec<String> = self.history.iter().cloned().collect();
        if previous.is_empty() {
            // A stream with nothing generated yet continues from its seed prompts.
            previous = self.seeds.clone();
        }
        self.jobs.push(PromptJob::AutoExtend { ticket, previous });
        self.auto_pending = Some((ticket, next));
    }

    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    fn start_segment(&mut self, s: Selected) -> SegmentPlan {
        if std::mem::take(&mut self.blocked_reported) {
            self.announce(ServerMessage::PromptSourcesResumed {
                segment_idx: self.segment_idx + 1,
                source: s.source,
                prompt_id: s.prompt_id.clone(),
            });
        }
        self.segment_idx += 1;
        if self.auto_failed_at.is_some_and(|at| at <= self.segment_idx) {
            self.auto_failed_at = None;
        }
        self.generated += 1;
        if self.history.len() == MAX_WINDOW_PROMPTS {
            self.history.pop_front();
        }
        self.history.push_back(s.prompt.clone());
        if self.single_clip {
            self.clip_done = true;
        }
        let plan = SegmentPlan {
            segment_idx: self.segment_idx,
            total_segments: self.segment_idx.max(count(self.curated.len())),
            prompt: s.prompt,
            source: s.source,
            prompt_id: s.prompt_id,
            seed_prompt_index: s.seed_prompt_index,
            loop_iteration: self.loop_iteration,
        };
        self.announce(ServerMessage::SegmentPromptSource {
            segment_idx: plan.segment_idx,
            source: plan.source,
            prompt_id: plan.prompt_id.clone(),
            fallback_used: false,
            seed_prompt_index: plan.seed_prompt_index,
            loop_iteration: plan.loop_iteration,
        });
        self.announce(ServerMessage::Ltx2SegmentStart {
            segment_idx: plan.segment_idx,
            total_segments: plan.total_segments,
            prompt: plan.prompt.clone(),
            source: plan.source,
            seed_prompt_index: plan.seed_prompt_index,
            loop_iteration: plan.loop_iteration,
        });
        self.generating = true;
        self.unfinished_media += 1;
        self.started_total += 1;
        plan
    }

    /// Queues a frame about the next segment, held while the previous segment's media is
    /// still going out.
    fn announce(&mut self, message: ServerMessage) {
        if self.unfinished_media > 0 {
            self.held.push((self.started_total, message));
        } else {
            self.outbox.push(message);
        }
    }

    fn select(&mut self) -> Option<Selected> {
        let force = std::mem::take(&mut self.force_first_seed);
        if force && self.curated_idx < self.curated.len() {
            return self.next_seed();
        }
        if let Some(p) = self.ready.pop_front() {
            return Some(Selected {
                prompt: p.prompt,
                source: p.source,
                prompt_id: Some(p.prompt_id),
                seed_prompt_index: None,
            });
        }
        self.next_seed()
    }

    fn next_seed(&mut self) -> Option<Selected> {
        let prompt = self.curated.get(self.curated_idx)?.clone();
        let index = count(self.curated_idx);
        self.curated_idx += 1;
        Some(Selected {
            prompt,
            source: PromptSource::Curated,
            prompt_id: None,
            seed_prompt_index: Some(index),
        })
    }

    fn append_prompt(&mut self, p: AppendPrompt) {
        if (self.waiting_for_rewrite || self.initial_rollout_pending) && !self.single_clip {
            self.push_error("Use Rewrite to create or restart the rollout.");
            return;
        }
        if p.prompt.is_empty() {
            self.push_error("append_prompt requires a non-empty prompt");
            return;
        }
        let checks = [
            check_text("prompt", &p.prompt, &self.limits),
            check_optional("prompt_id", p.prompt_id.as_deref(), &self.limits),
        ];
        if !self.first_refusal(checks) {
            return;
        }
        let max = self.limits.max_queued_prompts;
        let waiting = self.waiting_user_prompts();
        if waiting >= max {
            self.push_error(format!(
                "append_prompt: {waiting} prompts are already waiting (at most {max}, \
                 streaming.limits.max_queued_prompts); send the next one once a segment has \
                 started"
            ));
            return;
        }
        let prompt_id = p.prompt_id.unwrap_or_else(|| (self.new_prompt_id)());
        self.outbox.push(ServerMessage::PromptReceived {
            prompt_id: prompt_id.clone(),
            queue_depth: count(waiting + 1),
        });
        if (self.tools.blocks)(&p.prompt, Stage::User) {
            self.push_error(blocked_message(&prompt_id));
            return;
        }
        self.accept_user_prompt(UserPrompt {
            prompt_id,
            prompt: p.prompt,
            source: PromptSource::UserRaw,
        });
    }

    /// User prompts received and not yet generated (ready or being enhanced).
    fn waiting_user_prompts(&self) -> usize {
        self.ready.len() + self.raw.len() + usize::from(self.enhancing.is_some())
    }

    /// A screened user prompt goes to enhancement when it is on and an LLM is configured,
    /// else it is ready as typed (`user_raw`, even with enhancement on).
    fn accept_user_prompt(&mut self, p: UserPrompt) {
        if self.enhancement && self.tools.llm {
            self.raw.push_back(p);
            self.start_enhancement();
        } else {
            self.ready_user_prompt(p);
        }
    }

    /// Enhances the oldest waiting prompt unless one is under way.
    fn start_enhancement(&mut self) {
        if self.enhancing.is_some() {
            return;
        }
        let Some(p) = self.raw.pop_front() else {
            return;
        };
        let ticket = self.ticket();
        self.outbox.push(ServerMessage::PromptEnhancing {
            prompt_id: p.prompt_id.clone(),
        });
        self.jobs.push(PromptJob::Enhance {
            ticket,
            prompt: p.prompt.clone(),
        });
        self.enhancing = Some((ticket, p));
    }

    /// A user prompt ready as typed.
    fn ready_user_prompt(&mut self, p: UserPrompt) {
        self.outbox.push(ServerMessage::PromptReady {
            prompt_id: p.prompt_id.clone(),
            prompt: p.prompt.clone(),
            source: PromptSource::UserRaw,
            latency_ms: 0.0,
        });
        self.ready.push_back(p);
    }

    /// `rewrite_seed_prompts` without a prompt pipeline: the failure variants, the seed
    /// list unchanged, nothing restarted.
    fn rewrite_seed_prompts(&mut self, r: RewriteSeedPrompts) {
        let checks = [
            check_text("rewrite_instruction", &r.rewrite_instruction, &self.limits),
            limits::check_seed_prompts(
                "prompt_window_prompts",
                &r.prompt_window_prompts,
                &self.limits,
            )
            .map_err(|refusal| refusal.message),
        ];
        if !self.first_refusal(checks) {
            return;
        }
        self.rewrite_model = resolve_rewrite_model(r.rewrite_model.as_deref());
        if self.seeds.is_empty() {
            self.push_error("No seed prompts available to rewrite.");
            return;
        }
        self.outbox.push(ServerMessage::RewriteSeedPromptsStarted {
            model: self.rewrite_model.clone(),
        });
        if !self.tools.llm {
            self.rewrite_failed(r.rewrite_instruction, NO_PROMPT_PIPELINE.into(), 0.0);
            return;
        }
        let window = if r.prompt_window_prompts.is_empty() {
            self.seeds.clone()
        } else {
            r.prompt_window_prompts
        };
        let count = window.len().clamp(1, self.limits.max_seed_prompts.max(1));
        // A newer rewrite replaces one under way (whose answer is then dropped).
        let ticket = self.ticket();
        self.jobs.push(PromptJob::Rewrite {
            ticket,
            instruction: r.rewrite_instruction.clone(),
            window,
            count,
        });
        self.rewriting = Some((ticket, RewriteKind::User(r.rewrite_instruction)));
    }

    /// The initial rollout: an LLM writes the seed list from the prompt while generation is
    /// paused; without one (or when it fails) the rollout is the prompt itself.
    fn build_initial_rollout(&mut self) {
        self.outbox.push(ServerMessage::RewriteSeedPromptsStarted {
            model: self.rewrite_model.clone(),
        });
        if self.tools.llm {
            let ticket = self.ticket();
            self.jobs.push(PromptJob::Rewrite {
                ticket,
                instruction: self.initial_rollout_prompt.clone(),
                window: Vec::new(),
                count: self.rollout_length(),
            });
            self.rewriting = Some((ticket, RewriteKind::InitialRollout));
            return;
        }
        self.initial_rollout_fallback();
        self.rewrite_failed(
            self.initial_rollout_prompt.clone(),
            NO_PROMPT_PIPELINE.into(),
            0.0,
        );
    }

    /// Segments of a capped rollout (bounded by the seed-list limit).
    fn rollout_length(&self) -> usize {
        self.cap
            .clamp(1, self.limits.max_seed_prompts.max(1) as u32) as usize
    }

    /// No LLM to write a story from the prompt: the rollout shows the prompt itself for
    /// the whole capped rollout (a continuous shot), rather than one lone segment.
    fn initial_rollout_fallback(&mut self) {
        self.seeds = vec![self.initial_rollout_prompt.clone(); self.rollout_length()];
        self.curated = self.seeds.clone();
        self.finish_initial_rollout();
    }

    /// The rollout's seed list is in place: generation starts from it.
    fn finish_initial_rollout(&mut self) {
        self.pending_reset = Some(Reset::Seeds(ResetReason::InitialRewrite));
        self.paused = false;
        self.initial_rollout_pending = false;
        self.outbox
            .push(ServerMessage::GenerationPausedUpdated { paused: false });
    }

    fn rewrite_failed(&mut self, rewrite_instruction: String, error: String, latency_ms: f64) {
        self.outbox.push(ServerMessage::SeedPromptsRewritten {
            prompts: self.seeds.clone(),
            preset_id: self.preset_id.clone(),
            preset_label: self.preset_label.clone(),
            reason: "rewrite",
            fallback_used: true,
            error: Some(error.clone()),
            model: self.rewrite_model.clone(),
            latency_ms,
            raw_llm_output: None,
            rewrite_instruction,
        });
        self.outbox.push(ServerMessage::RewriteSeedPromptsComplete {
            fallback_used: true,
            error: Some(error),
            model: self.rewrite_model.clone(),
            latency_ms,
        });
    }

    /// Takes a project's settings; `session_start` for the opening frame (whose preset
    /// fields replace the old ones even when empty).
    fn apply_settings(&mut self, s: ProjectSettings, session_start: bool) {
        if session_start {
            self.preset_id = s.preset_id;
            self.preset_label = s.preset_label;
        } else {
            if let Some(id) = s.preset_id.map(|id| id.trim().to_string())
                && !id.is_empty()
            {
                self.preset_id = Some(id);
            }
            if !s.preset_label.is_empty() {
                self.preset_label = s.preset_label;
            }
        }
        self.enhancement = s.enhancement_enabled;
        self.auto_extension = s.auto_extension_enabled;
        self.loop_generation = s.loop_generation_enabled;
        self.single_clip = s.single_clip_mode;
        self.rewrite_model = resolve_rewrite_model(s.rewrite_model.as_deref());
        self.seeds = s.curated_prompts;
        self.curated = self.seeds.clone();
        self.initial_rollout_prompt = s.initial_rollout_prompt;
        self.curated_idx = 0;
        self.segment_idx = 0;
        self.pending_reset = None;
        self.force_first_seed = false;
        self.generated = 0;
        self.waiting_for_rewrite = false;
        self.auto_failed_at = None;
        self.blocked_reported = false;
        self.simple_request = None;
        self.drop_user_queues();
        self.auto_ready = None;
        self.auto_pending = None;
        self.rewriting = None;
        self.history.clear();
        self.clip_done = false;
        self.paused =
            !self.initial_rollout_prompt.is_empty() && !self.single_clip && self.seeds.is_empty();
        self.initial_rollout_pending = self.paused;
        // A project's first stream is iteration 1: at once for the opening frame, through
        // its reset otherwise.
        self.loop_iteration = u32::from(session_start && !self.paused);
        self.active = true;
        self.ending = false;
        self.stream_started = false;
    }

    /// Starts a new stream from the seed list.
    fn apply_reset(&mut self, reset: Reset) {
        self.pending_reset = None;
        self.curated = self.seeds.clone();
        self.curated_idx = 0;
        self.segment_idx = 0;
        self.auto_failed_at = None;
        self.blocked_reported = false;
        self.force_first_seed = !self.curated.is_empty();
        self.clip_done = false;
        let (dropped_raw, dropped_ready) = self.drop_user_queues();
        self.auto_ready = None;
        self.auto_pending = None;
        self.history.clear();
        self.loop_iteration += 1;
        self.stream_started = true;
        self.outbox.push(self.stream_start());
        let seed_prompt_count = count(self.seeds.len());
        self.outbox.push(match reset {
            Reset::Loop => ServerMessage::LoopRestarted {
                loop_iteration: self.loop_iteration,
                seed_prompt_count,
                dropped_user_raw_queue: dropped_raw,
                dropped_user_ready_queue: dropped_ready,
            },
            Reset::Seeds(reason) => ServerMessage::SeedPromptsResetApplied {
                reason,
                loop_iteration: self.loop_iteration,
                seed_prompt_count,
                dropped_user_raw_queue: dropped_raw,
                dropped_user_ready_queue: dropped_ready,
            },
        });
        if reset == Reset::Seeds(ResetReason::CapRestart) {
            self.generated = 0;
        }
        self.waiting_for_rewrite = false;
    }

    /// Ends the project, keeping the session: queues dropped, stream closed, `project_idle`.
    fn enter_idle(&mut self) {
        let (dropped_raw, dropped_ready) = self.drop_user_queues();
        self.auto_ready = None;
        self.auto_pending = None;
        self.rewriting = None;
        self.history.clear();
        self.simple_request = None;
        self.seeds.clear();
        self.curated.clear();
        self.curated_idx = 0;
        self.segment_idx = 0;
        self.generated = 0;
        self.waiting_for_rewrite = false;
        self.auto_failed_at = None;
        self.blocked_reported = false;
        self.paused = false;
        self.pending_reset = None;
        self.force_first_seed = false;
        self.clip_done = false;
        self.initial_rollout_pending = false;
        self.initial_rollout_prompt.clear();
        self.active = false;
        self.ending = false;
        self.complete_stream();
        self.outbox.push(ServerMessage::ProjectIdle {
            dropped_user_raw_queue: dropped_raw,
            dropped_user_ready_queue: dropped_ready,
        });
    }

    /// Drops the user prompts waiting for enhancement and those ready; their counts.
    fn drop_user_queues(&mut self) -> (u32, u32) {
        let raw = count(self.raw.len() + usize::from(self.enhancing.is_some()));
        let ready = count(self.ready.len());
        self.raw.clear();
        self.enhancing = None;
        self.ready.clear();
        (raw, ready)
    }

    fn stream_start(&self) -> ServerMessage {
        ServerMessage::Ltx2StreamStart {
            total_segments: count(self.curated.len()),
            preset_id: self.preset_id.clone(),
            stream_mode: STREAM_MODE,
            live_mode: true,
            loop_generation_enabled: self.loop_generation,
            loop_iteration: self.loop_iteration,
            generation_segment_cap: self.segment_cap(),
        }
    }

    /// The cap the client is told: none (0) in single-clip mode.
    fn segment_cap(&self) -> u32 {
        if self.single_clip { 0 } else { self.cap }
    }

    /// Checks a project's client values; each one beyond a limit gets an `error` naming it
    /// and is reset to its default. True when all were within limits.
    fn sanitize(&mut self, s: &mut ProjectSettings) -> bool {
        let mut ok = true;
        if let Err(refusal) =
            limits::check_seed_prompts("curated_prompts", &s.curated_prompts, &self.limits)
        {
            self.push_error(refusal.message);
            s.curated_prompts.clear();
            ok = false;
        }
        let limits = self.limits.clone();
        for (field, value) in [
            ("initial_rollout_prompt", &mut s.initial_rollout_prompt),
            ("preset_label", &mut s.preset_label),
        ] {
            if let Err(message) = check_text(field, value, &limits) {
                self.push_error(message);
                value.clear();
                ok = false;
            }
        }
        if let Err(message) = check_optional("preset_id", s.preset_id.as_deref(), &limits) {
            self.push_error(message);
            s.preset_id = None;
            ok = false;
        }
        ok
    }

    /// Queues the first refusal among `checks`; true when there was none.
    fn first_refusal<const N: usize>(&mut self, checks: [Result<(), String>; N]) -> bool {
        match checks.into_iter().find_map(Result::err) {
            Some(message) => {
                self.push_error(message);
                false
            }
            None => true,
        }
    }
}

/// The `error` for a prompt the safety filter blocked.
fn blocked_message(prompt_id: &str) -> String {
    format!("Prompt safety filter blocked prompt {prompt_id}; it will not be generated.")
}

/// Checks one client text against `streaming.limits.max_prompt_chars`, naming `field`.
fn check_text(field: &str, text: &str, limits: &ClientLimits) -> Result<(), String> {
    // The shared check of seed lists checks each prompt; one text is a list of one, whose
    // refusal names the item (`field[0]`).
    limits::check_seed_prompts(field, std::slice::from_ref(&text.to_string()), limits)
        .map_err(|r| r.message.replacen(&format!("{field}[0]"), field, 1))
}

fn check_optional(field: &str, text: Option<&str>, limits: &ClientLimits) -> Result<(), String> {
    text.map_or(Ok(()), |t| check_text(field, t, limits))
}

/// A count for the wire (bounded by the limits far below `u32::MAX`).
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn policy(cap: u32) -> PromptPolicy {
        policy_with(cap, PromptTools::none())
    }

    fn policy_with(cap: u32, tools: PromptTools) -> PromptPolicy {
        let mut n = 0;
        PromptPolicy::new(
            cap,
            ClientLimits::default(),
            move || {
                n += 1;
                format!("id{n}")
            },
            tools,
        )
    }

    fn settings(prompts: &[&str]) -> ProjectSettings {
        ProjectSettings {
            preset_id: Some("p1".into()),
            preset_label: "P1".into(),
            curated_prompts: prompts.iter().map(|p| p.to_string()).collect(),
            ..ProjectSettings::default()
        }
    }

    /// The frames queued so far, as JSON.
    fn sent(p: &mut PromptPolicy) -> Vec<Value> {
        p.take_messages()
            .iter()
            .map(|m| serde_json::from_str(&m.to_json()).unwrap())
            .collect()
    }

    fn types(frames: &[Value]) -> Vec<String> {
        frames
            .iter()
            .map(|f| f["type"].as_str().unwrap().to_string())
            .collect()
    }

    /// Generates and streams the planned segment, as the pipeline would.
    fn finish(p: &mut PromptPolicy) {
        p.generated();
        p.media_done();
    }

    /// Runs segments to completion until the policy wants none; their prompts.
    fn run(p: &mut PromptPolicy) -> Vec<String> {
        let mut prompts = Vec::new();
        while let Some(plan) = p.poll() {
            prompts.push(plan.prompt);
            finish(p);
            assert!(prompts.len() < 100, "runaway");
        }
        prompts
    }

    fn message(text: Value) -> ClientMessage {
        let Value::Object(fields) = text else {
            unreachable!()
        };
        ClientMessage::from_fields(&fields)
    }

    #[test]
    fn a_session_starts_with_the_documented_frames_and_walks_the_seeds() {
        let mut p = policy(6);
        p.start_session(settings(&["one", "two"]));
        let frames = sent(&mut p);
        assert_eq!(
            types(&frames),
            [
                "loop_generation_updated",
                "generation_paused_updated",
                "ltx2_stream_start",
                "seed_prompts_updated"
            ]
        );
        assert_eq!(
            frames[2],
            json!({"type": "ltx2_stream_start", "total_segments": 2, "preset_id": "p1",
                   "stream_mode": "av_fmp4", "live_mode": true, "loop_generation_enabled": false,
                   "loop_iteration": 1, "generation_segment_cap": 6})
        );
        let plan = p.poll().unwrap();
        assert_eq!(
            (
                plan.segment_idx,
                plan.prompt.as_str(),
                plan.seed_prompt_index
            ),
            (1, "one", Some(0))
        );
        assert_eq!(
            types(&sent(&mut p)),
            ["segment_prompt_source", "ltx2_segment_start"]
        );
        assert!(p.poll().is_none(), "one segment generates at a time");
        p.generated();
        // Segment 2 generates while segment 1's media goes out; it is announced after it.
        let plan = p.poll().unwrap();
        assert_eq!((plan.segment_idx, plan.total_segments), (2, 2));
        assert!(
            sent(&mut p).is_empty(),
            "held until segment 1's media is out"
        );
        assert!(p.poll().is_none(), "at most one segment ahead");
        p.media_done();
        assert_eq!(
            types(&sent(&mut p)),
            ["segment_prompt_source", "ltx2_segment_start"]
        );
        finish(&mut p);
        assert!(p.poll().is_none());
        assert_eq!(
            sent(&mut p).last().unwrap(),
            &json!({"type": "prompt_sources_blocked", "segment_idx": 3})
        );
        assert!(p.poll().is_none());
        assert!(sent(&mut p).is_empty(), "blocked is reported once");
    }

    #[test]
    fn a_user_prompt_unblocks_and_is_used_raw() {
        let mut p = policy(6);
        p.start_session(settings(&["one"]));
        assert_eq!(run(&mut p), ["one"]);
        sent(&mut p);
        p.on_message(message(
            json!({"type": "append_prompt", "prompt": " user prompt ", "prompt_id": "u1"}),
        ));
        let plan = p.poll().unwrap();
        assert_eq!(
            (
                plan.segment_idx,
                plan.prompt.as_str(),
                plan.source,
                plan.prompt_id.as_deref()
            ),
            (2, "user prompt", PromptSource::UserRaw, Some("u1"))
        );
        let frames = sent(&mut p);
        assert_eq!(
            types(&frames),
            [
                "prompt_received",
                "prompt_ready",
                "prompt_sources_resumed",
                "segment_prompt_source",
                "ltx2_segment_start"
            ]
        );
        assert_eq!(
            frames[2],
            json!({"type": "prompt_sources_resumed", "segment_idx": 2, "source": "user_raw", "prompt_id": "u1"})
        );
        assert_eq!(frames[1]["source"], "user_raw");
    }

    #[test]
    fn user_prompts_come_after_a_forced_first_seed_and_before_the_rest() {
        let mut p = policy(10);
        p.start_session(settings(&["a", "b"]));
        p.on_message(message(json!({"type": "append_prompt", "prompt": "u"})));
        assert_eq!(run(&mut p), ["u", "a", "b"]);
        p.on_message(message(json!({"type": "reset_to_seed_prompts"})));
        p.on_message(message(
            json!({"type": "append_prompt", "prompt": "dropped"}),
        ));
        // The reset drops the queue: the seeds start again.
        assert_eq!(run(&mut p), ["a", "b"]);
        let frames = sent(&mut p);
        let applied = frames
            .iter()
            .find(|f| f["type"] == "seed_prompts_reset_applied")
            .unwrap();
        assert_eq!(
            applied,
            &json!({"type": "seed_prompts_reset_applied", "reason": "manual_reset",
                    "loop_iteration": 2, "seed_prompt_count": 2, "dropped_user_raw_queue": 0,
                    "dropped_user_ready_queue": 1})
        );
    }

    #[test]
    fn loop_generation_restarts_the_seeds_until_the_cap_then_waits_for_a_restart() {
        let mut p = policy(3);
        let mut s = settings(&["a", "b"]);
        s.loop_generation_enabled = true;
        p.start_session(s);
        assert_eq!(run(&mut p), ["a", "b", "a"]);
        let frames = sent(&mut p);
        assert!(types(&frames).contains(&"loop_restarted".to_string()));
        assert_eq!(types(&frames).last().unwrap(), "ltx2_stream_complete");
        p.on_message(message(json!({"type": "append_prompt", "prompt": "x"})));
        assert_eq!(
            sent(&mut p),
            [json!({"type": "error", "message": "Use Rewrite to create or restart the rollout."})]
        );
        p.on_message(message(json!({"type": "restart_generation"})));
        let plan = p.poll().unwrap();
        assert_eq!((plan.segment_idx, plan.prompt.as_str()), (1, "a"));
        let frames = sent(&mut p);
        assert_eq!(
            frames[0],
            json!({"type": "generation_restarted", "reason": "cap_restart", "segment_cap": 3})
        );
        assert_eq!(frames[1]["type"], "ltx2_stream_start");
        assert_eq!(
            frames[1]["loop_generation_enabled"], false,
            "the cap ends looping"
        );
        assert_eq!(frames[2]["reason"], "cap_restart");
    }

    #[test]
    fn the_cap_completes_the_stream_only_after_the_last_segment_media() {
        let mut p = policy(1);
        p.start_session(settings(&["a", "b"]));
        p.poll().unwrap();
        p.generated();
        assert!(p.poll().is_none());
        assert!(!types(&sent(&mut p)).contains(&"ltx2_stream_complete".to_string()));
        p.media_done();
        assert!(p.poll().is_none());
        assert_eq!(types(&sent(&mut p)), ["ltx2_stream_complete"]);
    }

    #[test]
    fn auto_extension_fails_once_without_a_prompt_pipeline_until_toggled() {
        let mut p = policy(6);
        let mut s = settings(&[]);
        s.auto_extension_enabled = true;
        p.start_session(s);
        sent(&mut p);
        assert!(p.poll().is_none());
        assert_eq!(
            sent(&mut p),
            [
                json!({"type": "auto_prompt_failed", "segment_idx": 1, "latency_ms": 0.0, "error": NO_PROMPT_PIPELINE})
            ]
        );
        assert!(p.poll().is_none());
        assert!(sent(&mut p).is_empty(), "no retry");
        p.on_message(message(
            json!({"type": "set_auto_extension", "enabled": true}),
        ));
        assert!(p.poll().is_none());
        assert_eq!(
            types(&sent(&mut p)),
            ["auto_extension_updated", "auto_prompt_failed"]
        );
    }

    #[test]
    fn a_rewrite_without_a_prompt_pipeline_keeps_the_seeds() {
        let mut p = policy(6);
        p.start_session(settings(&["a"]));
        sent(&mut p);
        p.on_message(message(
            json!({"type": "rewrite_seed_prompts", "rewrite_instruction": "darker", "prompt_window_prompts": ["a"]}),
        ));
        let frames = sent(&mut p);
        assert_eq!(
            frames,
            [
                json!({"type": "rewrite_seed_prompts_started", "model": "gpt-oss-120b"}),
                json!({"type": "seed_prompts_updated", "prompts": ["a"], "preset_id": "p1",
                       "preset_label": "P1", "reason": "rewrite", "fallback_used": true,
                       "error": NO_PROMPT_PIPELINE, "model": "gpt-oss-120b", "latency_ms": 0.0,
                       "raw_llm_output": null, "rewrite_instruction": "darker"}),
                json!({"type": "rewrite_seed_prompts_complete", "fallback_used": true,
                       "error": NO_PROMPT_PIPELINE, "model": "gpt-oss-120b", "latency_ms": 0.0}),
            ]
        );
        let mut empty = policy(6);
        empty.start_session(settings(&[]));
        sent(&mut empty);
        empty.on_message(message(json!({"type": "rewrite_seed_prompts"})));
        assert_eq!(
            sent(&mut empty),
            [json!({"type": "error", "message": "No seed prompts available to rewrite."})]
        );
    }

    #[test]
    fn an_initial_rollout_prompt_seeds_the_whole_capped_rollout() {
        let mut p = policy(6);
        let mut s = settings(&[]);
        s.initial_rollout_prompt = "a castle".into();
        p.start_session(s);
        let frames = sent(&mut p);
        assert_eq!(
            types(&frames),
            [
                "loop_generation_updated",
                "generation_paused_updated",
                "rewrite_seed_prompts_started",
                "generation_paused_updated",
                "seed_prompts_updated",
                "rewrite_seed_prompts_complete"
            ]
        );
        assert_eq!(frames[1]["paused"], true);
        assert_eq!(frames[4]["prompts"], json!(vec!["a castle"; 6]));
        let plan = p.poll().unwrap();
        assert_eq!((plan.segment_idx, plan.prompt.as_str()), (1, "a castle"));
        let frames = sent(&mut p);
        assert_eq!(frames[0]["loop_iteration"], 1);
        assert_eq!(frames[1]["reason"], "initial_rewrite");
    }

    #[test]
    fn single_clip_makes_one_clip_per_request() {
        let mut p = policy(6);
        let mut s = settings(&["first"]);
        s.single_clip_mode = true;
        p.start_session(s);
        assert_eq!(sent(&mut p)[2]["generation_segment_cap"], 0);
        assert_eq!(run(&mut p), ["first"]);
        assert_eq!(
            types(&sent(&mut p)),
            [
                "segment_prompt_source",
                "ltx2_segment_start",
                "ltx2_stream_complete"
            ]
        );
        let request =
            message(json!({"type": "simple_generate", "prompt": "second", "prompt_id": "s1"}));
        let ClientMessage::SimpleGenerate(request) = request else {
            unreachable!()
        };
        assert!(p.check_simple_generate(&request));
        p.simple_generate(request);
        let plan = p.poll().unwrap();
        assert_eq!(
            (plan.segment_idx, plan.prompt.as_str(), plan.source),
            (1, "second", PromptSource::UserRaw)
        );
        assert_eq!(
            types(&sent(&mut p)),
            [
                "prompt_received",
                "ltx2_stream_start",
                "seed_prompts_reset_applied",
                "prompt_ready",
                "segment_prompt_source",
                "ltx2_segment_start"
            ]
        );
        finish(&mut p);
        assert!(p.poll().is_none());
        assert_eq!(types(&sent(&mut p)), ["ltx2_stream_complete"]);
    }

    #[test]
    fn a_project_ends_after_its_segment_and_a_new_one_starts_only_when_idle() {
        let mut p = policy(6);
        p.start_session(settings(&["a", "b"]));
        p.poll().unwrap();
        sent(&mut p);
        p.on_message(ClientMessage::EndProjectKeepSession);
        assert!(!p.check_project_init(&settings(&["c"])), "still ending");
        assert_eq!(sent(&mut p)[0]["message"], PROJECT_STILL_ENDING);
        assert!(p.poll().is_none(), "waits for the segment in flight");
        assert!(sent(&mut p).is_empty());
        finish(&mut p);
        assert!(p.poll().is_none());
        assert_eq!(
            sent(&mut p),
            [
                json!({"type": "ltx2_stream_complete"}),
                json!({"type": "project_idle", "dropped_user_raw_queue": 0, "dropped_user_ready_queue": 0})
            ]
        );
        p.on_message(message(json!({"type": "append_prompt", "prompt": "x"})));
        p.on_message(message(
            json!({"type": "set_loop_generation", "enabled": true}),
        ));
        assert_eq!(
            sent(&mut p),
            [json!({"type": "error", "message": NO_PROJECT})]
        );
        assert!(p.check_project_init(&settings(&["c"])));
        p.project_init(settings(&["c"]));
        assert_eq!(run(&mut p), ["c"]);
        let frames = sent(&mut p);
        assert_eq!(frames[0]["type"], "ltx2_stream_start");
        assert_eq!(frames[0]["loop_iteration"], 1);
        assert_eq!(frames[1]["reason"], "project_init");
    }

    #[test]
    fn pausing_holds_the_next_segment() {
        let mut p = policy(6);
        p.start_session(settings(&["a", "b"]));
        p.on_message(message(
            json!({"type": "set_generation_paused", "paused": true}),
        ));
        assert!(p.poll().is_none());
        p.on_message(message(json!({"type": "set_generation_paused"})));
        assert!(p.poll().is_none(), "absent keeps it paused");
        p.on_message(message(
            json!({"type": "set_generation_paused", "paused": false}),
        ));
        assert_eq!(run(&mut p), ["a", "b"]);
    }

    #[test]
    fn client_values_beyond_the_limits_are_refused_by_name() {
        let mut p = policy(6);
        let mut s = settings(&["ok"]);
        s.curated_prompts = vec!["p".into(); 65];
        s.initial_rollout_prompt = "x".repeat(2001);
        p.start_session(s);
        let frames = sent(&mut p);
        let errors: Vec<&str> = frames
            .iter()
            .filter(|f| f["type"] == "error")
            .map(|f| f["message"].as_str().unwrap())
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("curated_prompts "), "{errors:?}");
        assert!(
            errors[1].starts_with("initial_rollout_prompt is longer than 2000"),
            "{errors:?}"
        );
        assert!(
            types(&frames).contains(&"ltx2_stream_start".to_string()),
            "the session goes on"
        );

        p.on_message(message(
            json!({"type": "append_prompt", "prompt": "y".repeat(2001)}),
        ));
        assert!(
            sent(&mut p)[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("prompt is longer")
        );
        p.on_message(message(
            json!({"type": "set_generation_paused", "paused": true}),
        ));
        for i in 0..16 {
            p.on_message(message(
                json!({"type": "append_prompt", "prompt": format!("q{i}")}),
            ));
        }
        sent(&mut p);
        p.on_message(message(
            json!({"type": "append_prompt", "prompt": "one too many"}),
        ));
        let refusal = sent(&mut p);
        assert!(
            refusal[0]["message"]
                .as_str()
                .unwrap()
                .contains("max_queued_prompts"),
            "{refusal:?}"
        );
        p.on_message(message(json!({"type": "rewrite_seed_prompts",
            "prompt_window_prompts": vec!["w"; 65]})));
        assert!(
            sent(&mut p)[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("prompt_window_prompts ")
        );
    }

    #[test]
    fn a_blocked_session_starts_nothing() {
        let mut p = policy(6);
        p.start_session(settings(&[]));
        for _ in 0..3 {
            assert!(p.poll().is_none());
        }
        p.on_message(message(json!({"type": "append_prompt", "prompt": ""})));
        assert!(p.poll().is_none(), "an empty prompt starts nothing");
        let frames = sent(&mut p);
        assert_eq!(
            types(&frames)
                .iter()
                .filter(|t| *t == "prompt_sources_blocked")
                .count(),
            1
        );
        assert!(!types(&frames).contains(&"ltx2_segment_start".to_string()));
    }

    /// An LLM is configured; prompts containing "forbidden" are blocked.
    fn llm_policy(cap: u32) -> PromptPolicy {
        policy_with(
            cap,
            PromptTools {
                llm: true,
                blocks: Box::new(|text, _| text.contains("forbidden")),
            },
        )
    }

    fn one_job(p: &mut PromptPolicy) -> PromptJob {
        let mut jobs = p.take_jobs();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        jobs.pop().unwrap()
    }

    fn ticket(job: &PromptJob) -> u64 {
        match job {
            PromptJob::Enhance { ticket, .. }
            | PromptJob::AutoExtend { ticket, .. }
            | PromptJob::Rewrite { ticket, .. } => *ticket,
        }
    }

    #[test]
    fn an_enhanced_prompt_is_generated_and_a_failed_one_is_dropped() {
        let mut p = llm_policy(6);
        p.start_session(settings(&["one"]));
        let plan = p.poll().unwrap();
        assert_eq!(plan.prompt, "one");
        sent(&mut p);
        // Typed while segment 1 is under way: enhancement starts at once.
        p.on_message(message(
            json!({"type": "append_prompt", "prompt": "a fox", "prompt_id": "u1"}),
        ));
        p.on_message(message(
            json!({"type": "append_prompt", "prompt": "a cat", "prompt_id": "u2"}),
        ));
        let first = one_job(&mut p);
        assert_eq!(
            first,
            PromptJob::Enhance {
                ticket: ticket(&first),
                prompt: "a fox".into()
            }
        );
        assert_eq!(
            sent(&mut p),
            [
                json!({"type": "prompt_received", "prompt_id": "u1", "queue_depth": 1}),
                json!({"type": "prompt_enhancing", "prompt_id": "u1"}),
                json!({"type": "prompt_received", "prompt_id": "u2", "queue_depth": 2}),
            ]
        );
        p.enhanced(
            ticket(&first),
            Ok("A red fox runs through snow.".into()),
            12.345,
        );
        let second = one_job(&mut p);
        assert_eq!(
            sent(&mut p),
            [
                json!({"type": "prompt_ready", "prompt_id": "u1",
                       "prompt": "A red fox runs through snow.", "source": "user_enhanced",
                       "latency_ms": 12.35}),
                json!({"type": "prompt_enhancing", "prompt_id": "u2"}),
            ]
        );
        p.enhanced(ticket(&second), Err("timeout".into()), 30.0);
        assert_eq!(
            sent(&mut p),
            [
                json!({"type": "prompt_fallback_used", "prompt_id": "u2", "prompt": "a cat",
                    "source": "user_enhancement_failed", "latency_ms": 30.0,
                    "error": "Prompt extension failed for this request."})
            ]
        );
        finish(&mut p);
        let plan = p.poll().unwrap();
        assert_eq!(
            (plan.prompt.as_str(), plan.source, plan.prompt_id.as_deref()),
            (
                "A red fox runs through snow.",
                PromptSource::UserEnhanced,
                Some("u1")
            )
        );
        finish(&mut p);
        assert!(p.poll().is_none(), "the failed prompt is never generated");
        assert!(p.take_jobs().is_empty());
    }

    #[test]
    fn blocked_prompts_never_start_generation() {
        let mut p = llm_policy(6);
        p.start_session(settings(&["one"]));
        run(&mut p);
        sent(&mut p);
        p.on_message(message(
            json!({"type": "append_prompt", "prompt": "forbidden thing", "prompt_id": "b1"}),
        ));
        let frames = sent(&mut p);
        assert_eq!(types(&frames), ["prompt_received", "error"]);
        assert!(frames[1]["message"].as_str().unwrap().contains("b1"));
        assert!(p.take_jobs().is_empty(), "a blocked prompt is not enhanced");
        // The LLM turns a harmless prompt into a blocked one.
        p.on_message(message(
            json!({"type": "append_prompt", "prompt": "a fox", "prompt_id": "u1"}),
        ));
        let job = one_job(&mut p);
        p.enhanced(ticket(&job), Ok("a forbidden fox".into()), 1.0);
        assert_eq!(types(&sent(&mut p)).last().unwrap(), "error");
        assert!(p.poll().is_none());
        // Single-clip requests are screened too.
        let mut s = llm_policy(6);
        s.start_session(settings(&["one"]));
        let ClientMessage::SimpleGenerate(request) =
            message(json!({"type": "simple_generate", "prompt": "forbidden"}))
        else {
            panic!("not a simple_generate")
        };
        assert!(!s.check_simple_generate(&request));
    }

    #[test]
    fn an_enhancement_dropped_by_a_reset_is_ignored() {
        let mut p = llm_policy(6);
        p.start_session(settings(&["one", "two"]));
        p.poll().unwrap();
        p.on_message(message(json!({"type": "append_prompt", "prompt": "a fox"})));
        let job = one_job(&mut p);
        p.on_message(message(json!({"type": "reset_to_seed_prompts"})));
        finish(&mut p);
        p.poll().unwrap();
        let frames = sent(&mut p);
        let applied = frames
            .iter()
            .find(|f| f["type"] == "seed_prompts_reset_applied")
            .unwrap();
        assert_eq!(applied["dropped_user_raw_queue"], 1);
        p.enhanced(ticket(&job), Ok("late".into()), 1.0);
        assert!(sent(&mut p).is_empty(), "a stale result says nothing");
        finish(&mut p);
        assert_eq!(p.poll().unwrap().prompt, "two");
    }

    #[test]
    fn auto_extension_asks_ahead_and_uses_the_invented_prompt() {
        let mut p = llm_policy(6);
        let mut s = settings(&["one"]);
        s.auto_extension_enabled = true;
        p.start_session(s);
        p.poll().unwrap();
        // Segment 1 empties the sources: the LLM is asked while it is generated.
        let job = one_job(&mut p);
        let PromptJob::AutoExtend { previous, .. } = &job else {
            panic!("{job:?}")
        };
        assert_eq!(previous, &["one".to_string()]);
        p.auto_extended(ticket(&job), Ok("two, invented".into()), 250.0);
        finish(&mut p);
        let plan = p.poll().unwrap();
        assert_eq!(
            (plan.segment_idx, plan.prompt.as_str(), plan.source),
            (2, "two, invented", PromptSource::AutoLlm)
        );
        let next = one_job(&mut p);
        let PromptJob::AutoExtend { previous, .. } = &next else {
            panic!("{next:?}")
        };
        assert_eq!(previous.len(), 2);
        // A failure is reported once for its segment and not retried.
        p.auto_extended(ticket(&next), Err("HTTP 500".into()), 3.0);
        let frames = sent(&mut p);
        assert_eq!(
            frames.last().unwrap(),
            &json!({"type": "auto_prompt_failed", "segment_idx": 3, "latency_ms": 3.0,
                    "error": "HTTP 500"})
        );
        finish(&mut p);
        assert!(p.poll().is_none());
        assert!(
            p.take_jobs().is_empty(),
            "no retry until the toggle changes"
        );
        p.on_message(message(
            json!({"type": "set_auto_extension", "enabled": true}),
        ));
        assert!(p.poll().is_none());
        let retry = one_job(&mut p);
        p.auto_extended(ticket(&retry), Ok("three".into()), 1.0);
        assert_eq!(p.poll().unwrap().prompt, "three");
    }

    #[test]
    fn a_rewrite_replaces_the_seeds_and_restarts_after_the_segment_under_way() {
        let mut p = llm_policy(6);
        p.start_session(settings(&["one", "two"]));
        p.poll().unwrap();
        sent(&mut p);
        p.on_message(message(json!({"type": "rewrite_seed_prompts",
            "rewrite_instruction": "stormy", "prompt_window_prompts": ["one", "two", "pad"]})));
        let job = one_job(&mut p);
        let PromptJob::Rewrite { count, window, .. } = &job else {
            panic!("{job:?}")
        };
        assert_eq!((*count, window.len()), (3, 3));
        p.rewritten(
            ticket(&job),
            Ok(RewriteAnswer {
                prompts: vec!["storm one".into(), "storm two".into()],
                raw: "1. storm one\n2. storm two".into(),
            }),
            99.0,
        );
        let frames = sent(&mut p);
        assert_eq!(
            frames[1],
            json!({"type": "seed_prompts_updated", "prompts": ["storm one", "storm two"],
                   "preset_id": "p1", "preset_label": "P1", "reason": "rewrite",
                   "fallback_used": false, "error": null, "model": "gpt-oss-120b",
                   "latency_ms": 99.0, "raw_llm_output": "1. storm one\n2. storm two",
                   "rewrite_instruction": "stormy"})
        );
        assert_eq!(
            frames[2],
            json!({"type": "rewrite_seed_prompts_complete", "fallback_used": false,
                   "error": null, "preset_id": "p1", "preset_label": "P1",
                   "model": "gpt-oss-120b", "latency_ms": 99.0})
        );
        assert!(p.poll().is_none(), "the segment under way finishes first");
        finish(&mut p);
        let plan = p.poll().unwrap();
        assert_eq!((plan.segment_idx, plan.prompt.as_str()), (1, "storm one"));
        let applied = sent(&mut p)
            .into_iter()
            .find(|f| f["type"] == "seed_prompts_reset_applied")
            .unwrap();
        assert_eq!(applied["reason"], "rewrite_during_generation");
    }

    #[test]
    fn a_failed_or_blocked_rewrite_keeps_the_seeds() {
        let mut p = llm_policy(1);
        p.start_session(settings(&["one", "two"]));
        assert_eq!(run(&mut p), ["one"], "cap 1");
        sent(&mut p);
        p.on_message(message(
            json!({"type": "rewrite_seed_prompts", "rewrite_instruction": "x"}),
        ));
        let job = one_job(&mut p);
        p.rewritten(
            ticket(&job),
            Ok(RewriteAnswer {
                prompts: vec!["fine".into(), "forbidden".into()],
                raw: String::new(),
            }),
            5.0,
        );
        let frames = sent(&mut p);
        assert_eq!(frames[1]["fallback_used"], true);
        assert_eq!(frames[1]["prompts"], json!(["one", "two"]));
        assert!(p.poll().is_none(), "still waiting at the cap");
        // A good rewrite at the cap restarts the rollout from segment 1.
        p.on_message(message(
            json!({"type": "rewrite_seed_prompts", "rewrite_instruction": "x"}),
        ));
        let job = one_job(&mut p);
        p.rewritten(
            ticket(&job),
            Ok(RewriteAnswer {
                prompts: vec!["new".into()],
                raw: "new".into(),
            }),
            5.0,
        );
        let plan = p.poll().unwrap();
        assert_eq!((plan.segment_idx, plan.prompt.as_str()), (1, "new"));
        let applied = sent(&mut p)
            .into_iter()
            .find(|f| f["type"] == "seed_prompts_reset_applied")
            .unwrap();
        assert_eq!(applied["reason"], "rewrite_rollout");
    }

    #[test]
    fn an_initial_rollout_prompt_is_written_into_seeds_by_the_llm() {
        let mut p = llm_policy(3);
        let mut s = settings(&[]);
        s.initial_rollout_prompt = "a lighthouse".into();
        p.start_session(s);
        assert!(p.poll().is_none(), "paused until the seed list is written");
        let job = one_job(&mut p);
        let PromptJob::Rewrite {
            instruction, count, ..
        } = &job
        else {
            panic!("{job:?}")
        };
        assert_eq!((instruction.as_str(), *count), ("a lighthouse", 3));
        p.rewritten(
            ticket(&job),
            Ok(RewriteAnswer {
                prompts: vec!["dawn".into(), "noon".into(), "dusk".into()],
                raw: "dawn\nnoon\ndusk".into(),
            }),
            10.0,
        );
        assert_eq!(run(&mut p), ["dawn", "noon", "dusk"]);
        let frames = sent(&mut p);
        let applied = frames
            .iter()
            .find(|f| f["type"] == "seed_prompts_reset_applied")
            .unwrap();
        assert_eq!(applied["reason"], "initial_rewrite");
    }
}
