//! Which segment a session generates next, and when it has generated enough.
//!
//! Pure policy, no I/O, so every rule is unit-tested: a prompt the client asked for comes
//! first; then loop generation cycles the curated prompts; then auto-extension: a prompt the
//! LLM invented ([`SegmentScheduler::offer_auto`]) when the session has a prompt pipeline,
//! else the newest prompt repeated. One segment is generated at a time (the media thread overlaps it with the
//! previous one), nothing starts while paused, and the cap ends the stream.

use std::collections::VecDeque;

use framecast_common::protocol::{SegmentPrompt, SessionInit};

use crate::generate::SegmentRequest;

/// Per-session scheduling state.
#[derive(Debug, Clone)]
pub struct SegmentScheduler {
    pending: VecDeque<SegmentPrompt>,
    last_prompt: Option<SegmentPrompt>,
    /// Auto-extension's next prompt, from the LLM.
    auto: Option<SegmentPrompt>,
    /// Auto-extension waits for the LLM instead of repeating the newest prompt.
    llm_auto: bool,
    paused: bool,
    generating: bool,
    scheduled: u32,
    media_done: u32,
    cap: u32,
    seed: u64,
    default_steps: u32,
    default_guidance: f32,
}

impl SegmentScheduler {
    /// At most `cap` segments; seeds not given by the client derive from `seed`.
    pub fn new(cap: u32, seed: u64, default_steps: u32) -> Self {
        Self {
            pending: VecDeque::new(),
            last_prompt: None,
            auto: None,
            llm_auto: false,
            paused: false,
            generating: false,
            scheduled: 0,
            media_done: 0,
            cap,
            seed,
            default_steps,
            default_guidance: 1.0,
        }
    }

    /// Guidance for segments whose prompt does not set it (`generator.guidance_scale`).
    pub fn with_default_guidance(mut self, guidance_scale: f32) -> Self {
        self.default_guidance = guidance_scale;
        self
    }

    /// Lowers the cap (single-clip mode asks for one segment).
    pub fn limit(&mut self, cap: u32) {
        self.cap = self.cap.min(cap);
    }

    /// Prompts the client asked for that no segment has started yet.
    pub fn queued(&self) -> usize {
        self.pending.len()
    }

    /// Whether a segment is being generated or its media is still going out.
    pub fn in_flight(&self) -> bool {
        self.generating || self.media_done < self.scheduled
    }

    /// Auto-extension's prompts come from [`SegmentScheduler::offer_auto`] (the session has
    /// an LLM) instead of repeating the newest prompt.
    pub fn use_llm_auto_extension(&mut self) {
        self.llm_auto = true;
    }

    /// Auto-extension's next prompt.
    pub fn offer_auto(&mut self, prompt: SegmentPrompt) {
        self.auto = Some(prompt);
    }

    /// Drops an offered auto-extension prompt (the toggle went off).
    pub fn clear_auto(&mut self) {
        self.auto = None;
    }

    /// The newest prompt generated (auto-extension's fallback).
    pub fn last_prompt(&self) -> Option<&SegmentPrompt> {
        self.last_prompt.as_ref()
    }

    /// Whether, once the segment under way is done, auto-extension is the only source of the
    /// next prompt and has none yet: the moment to ask the LLM.
    pub fn needs_auto_prompt(&self, init: &SessionInit) -> bool {
        init.auto_extension_enabled
            && self.llm_auto
            && self.auto.is_none()
            && self.pending.is_empty()
            && (!init.loop_generation_enabled || init.curated_prompts.is_empty())
            && self.scheduled < self.cap
    }

    /// Queues a prompt the client asked for.
    pub fn request(&mut self, prompt: SegmentPrompt) {
        self.pending.push_back(prompt);
    }

    /// Pauses or resumes; a segment under way finishes either way.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// The segment under way was generated; another may start.
    pub fn generated(&mut self) {
        self.generating = false;
    }

    /// A segment's media went out; true when that was the last one the cap allows.
    pub fn media_done(&mut self) -> bool {
        self.media_done += 1;
        self.media_done >= self.cap
    }

    /// The next segment to generate, if the session wants one now. `init` carries the
    /// session's toggles and curated prompts as they are at this moment.
    pub fn next(&mut self, init: &SessionInit) -> Option<SegmentRequest> {
        if self.generating || self.paused || self.scheduled >= self.cap {
            return None;
        }
        let prompt = self.next_prompt(init)?;
        let segment_idx = self.scheduled;
        let request = SegmentRequest {
            fresh_stream: false,
            checkpoint_max_bytes: None,
            segment_idx,
            prompt: prompt.prompt.clone(),
            negative_prompt: prompt.negative_prompt.clone(),
            seed: prompt
                .seed
                .unwrap_or(self.seed.wrapping_add(u64::from(segment_idx))),
            num_inference_steps: prompt.num_inference_steps.unwrap_or(self.default_steps),
            guidance_scale: prompt.guidance_scale.unwrap_or(self.default_guidance),
            initial_image: None,
        };
        self.last_prompt = Some(prompt);
        self.generating = true;
        self.scheduled += 1;
        Some(request)
    }

    /// Segments started so far (the next one's index).
    pub fn scheduled(&self) -> u32 {
        self.scheduled
    }

    /// Where the schedule stands, for a resume record.
    pub fn snapshot(&self) -> ScheduleSnapshot {
        ScheduleSnapshot {
            scheduled: self.scheduled,
            pending: self.pending.iter().cloned().collect(),
            last_prompt: self.last_prompt.clone(),
            paused: self.paused,
            cap: self.cap,
        }
    }

    /// Continues a lost session's schedule at segment `next`: first `replay` (the prompts,
    /// seeds included, of the segments from `next` on that the lost replica had started),
    /// then the prompts that were waiting there. The cap counts the segments before `next`.
    pub fn resume_at(&mut self, next: u32, replay: Vec<SegmentPrompt>, snapshot: ScheduleSnapshot) {
        self.scheduled = next;
        self.media_done = next;
        self.pending = replay.into_iter().chain(snapshot.pending).collect();
        self.last_prompt = snapshot.last_prompt;
        self.paused = snapshot.paused;
        self.cap = self.cap.min(snapshot.cap);
    }

    fn next_prompt(&mut self, init: &SessionInit) -> Option<SegmentPrompt> {
        if let Some(p) = self.pending.pop_front() {
            return Some(p);
        }
        let curated = &init.curated_prompts;
        if init.loop_generation_enabled && !curated.is_empty() {
            let prompt = curated[self.scheduled as usize % curated.len()].clone();
            return Some(plain(prompt));
        }
        if init.auto_extension_enabled {
            if self.llm_auto {
                return self.auto.take();
            }
            return self
                .last_prompt
                .clone()
                .or_else(|| curated.first().cloned().map(plain));
        }
        None
    }
}

/// The part of a [`SegmentScheduler`] a resumed session takes over.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleSnapshot {
    /// Segments started so far.
    pub scheduled: u32,
    /// Client prompts no segment has started yet.
    pub pending: Vec<SegmentPrompt>,
    /// The newest prompt generated (auto-extension repeats it).
    pub last_prompt: Option<SegmentPrompt>,
    /// Generation paused by the client.
    pub paused: bool,
    /// The segment cap in force (single-clip mode lowers it).
    pub cap: u32,
}

fn plain(prompt: String) -> SegmentPrompt {
    SegmentPrompt {
        prompt,
        negative_prompt: None,
        source: None,
        seed: None,
        num_inference_steps: None,
        guidance_scale: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(curated: &[&str], looped: bool, auto: bool) -> SessionInit {
        SessionInit {
            curated_prompts: curated.iter().map(|s| s.to_string()).collect(),
            loop_generation_enabled: looped,
            auto_extension_enabled: auto,
            ..SessionInit::default()
        }
    }

    /// Runs the scheduler as the controller does: each segment generated before the next.
    fn prompts(s: &mut SegmentScheduler, init: &SessionInit, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            match s.next(init) {
                Some(r) => {
                    out.push(r.prompt);
                    s.generated();
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn guidance_not_asked_for_is_the_configured_default() {
        let mut s = SegmentScheduler::new(10, 0, 4).with_default_guidance(3.0);
        let i = init(&[], false, false);
        s.request(plain("default".into()));
        assert_eq!(s.next(&i).unwrap().guidance_scale, 3.0);
        s.generated();
        s.request(SegmentPrompt {
            guidance_scale: Some(1.5),
            ..plain("asked".into())
        });
        assert_eq!(s.next(&i).unwrap().guidance_scale, 1.5);
    }

    #[test]
    fn without_toggles_it_waits_for_requests() {
        let mut s = SegmentScheduler::new(10, 0, 4);
        let i = init(&["curated"], false, false);
        assert!(s.next(&i).is_none());
        s.request(plain("asked".into()));
        assert_eq!(prompts(&mut s, &i, 5), ["asked"]);
    }

    #[test]
    fn requests_come_before_loops_and_loops_before_extension() {
        let mut s = SegmentScheduler::new(10, 0, 4);
        let i = init(&["a", "b"], true, true);
        s.request(plain("asked".into()));
        assert_eq!(prompts(&mut s, &i, 4), ["asked", "b", "a", "b"]);
    }

    #[test]
    fn auto_extension_repeats_the_newest_prompt() {
        let mut s = SegmentScheduler::new(10, 0, 4);
        let i = init(&["first"], false, true);
        assert_eq!(prompts(&mut s, &i, 2), ["first", "first"]);
        s.request(plain("newer".into()));
        assert_eq!(prompts(&mut s, &i, 3), ["newer", "newer", "newer"]);
    }

    #[test]
    fn one_segment_at_a_time_pause_and_cap() {
        let mut s = SegmentScheduler::new(2, 0, 4);
        let i = init(&["p"], false, true);
        assert!(s.next(&i).is_some());
        assert!(s.next(&i).is_none(), "still generating the first");
        s.generated();
        s.set_paused(true);
        assert!(s.next(&i).is_none(), "paused");
        s.set_paused(false);
        assert!(s.next(&i).is_some());
        s.generated();
        assert!(s.next(&i).is_none(), "cap of 2 reached");
        assert!(!s.media_done());
        assert!(s.media_done(), "the second segment's media ends the stream");
    }

    #[test]
    fn single_clip_limit_and_request_defaults() {
        let mut s = SegmentScheduler::new(10, 100, 6);
        s.limit(1);
        let r = s.next(&init(&["p"], false, true)).unwrap();
        assert_eq!(
            (
                r.segment_idx,
                r.seed,
                r.num_inference_steps,
                r.guidance_scale
            ),
            (0, 100, 6, 1.0)
        );
        s.generated();
        assert!(s.next(&init(&["p"], false, true)).is_none());
        let mut s = SegmentScheduler::new(10, 100, 6);
        s.request(SegmentPrompt {
            seed: Some(7),
            num_inference_steps: Some(2),
            ..plain("x".into())
        });
        let r = s.next(&init(&[], false, false)).unwrap();
        assert_eq!(
            (r.seed, r.num_inference_steps),
            (7, 2),
            "the client's values win"
        );
    }

    #[test]
    fn llm_auto_extension_waits_for_the_offered_prompt() {
        let mut s = SegmentScheduler::new(3, 0, 4);
        s.use_llm_auto_extension();
        let i = init(&["a"], false, true);
        s.request(plain("a".into()));
        assert!(!s.needs_auto_prompt(&i), "a client prompt is waiting");
        assert_eq!(s.next(&i).unwrap().prompt, "a");
        assert!(
            s.needs_auto_prompt(&i),
            "asked while segment 0 is generated"
        );
        s.generated();
        assert!(s.next(&i).is_none(), "no repeat: waits for the LLM");
        s.offer_auto(plain("b".into()));
        assert!(!s.needs_auto_prompt(&i));
        assert_eq!(s.next(&i).unwrap().prompt, "b");
        assert_eq!(s.last_prompt().unwrap().prompt, "b");
        s.generated();
        s.offer_auto(plain("c".into()));
        assert_eq!(s.next(&i).unwrap().prompt, "c");
        assert!(!s.needs_auto_prompt(&i), "the cap is reached");
    }
}
