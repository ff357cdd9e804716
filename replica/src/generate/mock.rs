//! `MockGenerator`: a clearly named test double that produces deterministic synthetic video
//! (and optionally a tone) without a model, for tests, benchmarks and demos without weights.
//!
//! Frames depend on the seed, the prompt and the position in the stream; motion and the
//! tone's phase continue across segments through the continuation state, so a restored
//! session produces exactly the frames the original would have.

use std::ops::ControlFlow;
use std::time::Duration;

use framecast_common::protocol::ContinuationState;
use serde::{Deserialize, Serialize};

use super::{
    GenerateError, GeneratedSegment, Generator, SegmentRequest, StepProgress, StreamFormat,
};

/// The `kind` of the mock's continuation state.
pub const MOCK_STATE_KIND: &str = "framecast.mock.v1";

/// How the mock behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockSettings {
    /// Output geometry (and audio format, if any).
    pub format: StreamFormat,
    /// Wall time one segment takes, spread evenly over its steps.
    pub latency: Duration,
}

/// What the mock carries from one segment to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct MockState {
    /// Frames generated so far in the stream.
    frames_done: u64,
    /// Audio samples (per channel) generated so far.
    samples_done: u64,
}

/// Deterministic synthetic frames; a test double, never a stand-in for real generation.
#[derive(Debug, Clone)]
pub struct MockGenerator {
    settings: MockSettings,
}

impl MockGenerator {
    /// A mock with the given output format and latency.
    pub fn new(settings: MockSettings) -> Self {
        Self { settings }
    }

    /// A 16x16, 2-frame, 1 ms mock for unit tests of whatever hands generators around.
    #[cfg(test)]
    pub(crate) fn tiny() -> Self {
        Self::new(MockSettings {
            format: super::StreamFormat {
                width: 16,
                height: 16,
                fps: 8,
                frames_per_segment: 2,
                audio: None,
            },
            latency: std::time::Duration::from_millis(1),
        })
    }

    fn parse_state(&self, state: Option<&ContinuationState>) -> Result<MockState, GenerateError> {
        match state {
            None => Ok(MockState {
                frames_done: 0,
                samples_done: 0,
            }),
            Some(s) if s.kind != MOCK_STATE_KIND => Err(GenerateError::InvalidState(format!(
                "kind `{}` is not `{MOCK_STATE_KIND}`",
                s.kind
            ))),
            Some(s) => serde_json::from_value(s.payload.clone())
                .map_err(|e| GenerateError::InvalidState(format!("payload: {e}"))),
        }
    }
}

/// FNV-1a: a stable hash, so frames are identical across runs and processes.
fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A horizontal gradient with a vertical bar sweeping across and a bright band sweeping
/// down; built from one template row so synthesis stays cheap next to real encoding.
fn render_frame(format: &StreamFormat, look: u64, frame_index: u64) -> Vec<u8> {
    let (w, h) = (format.width as usize, format.height as usize);
    let base = [(look >> 8) as u8, (look >> 16) as u8, (look >> 24) as u8];
    // The bar's speed depends on the prompt.
    let speed = 2 + (look % 5) as usize;
    let bar = (frame_index as usize * speed) % w.max(1);
    let half_bar = w / 32 + 2;
    let mut row = vec![0u8; w * 3];
    for (x, px) in row.chunks_exact_mut(3).enumerate() {
        if x.abs_diff(bar) < half_bar {
            px.copy_from_slice(&[255, 255, 255]);
        } else {
            let ramp = (x * 255 / w) as u8 / 2;
            px.copy_from_slice(&[
                base[0].wrapping_add(ramp),
                base[1],
                base[2].wrapping_add(ramp / 2),
            ]);
        }
    }
    let band_height = (h / 12).max(1);
    let band = (frame_index as usize * speed) % h.max(1);
    let mut frame = vec![0u8; w * h * 3];
    for (y, out) in frame.chunks_exact_mut(w * 3).enumerate() {
        if y.abs_diff(band) < band_height {
            out.fill(base[1] | 0x80);
        } else {
            out.copy_from_slice(&row);
        }
    }
    frame
}

impl Generator for MockGenerator {
    fn format(&self) -> StreamFormat {
        self.settings.format
    }

    fn state_kind(&self) -> &'static str {
        MOCK_STATE_KIND
    }

    fn validate_state(&self, state: &ContinuationState) -> Result<(), GenerateError> {
        self.parse_state(Some(state)).map(|_| ())
    }

    fn generate(
        &mut self,
        request: &SegmentRequest,
        state: Option<&ContinuationState>,
        progress: &mut dyn FnMut(StepProgress) -> ControlFlow<()>,
    ) -> Result<GeneratedSegment, GenerateError> {
        request.check()?;
        let began = std::time::Instant::now();
        let start = self.parse_state(state)?;
        let format = self.settings.format;
        let look = fnv1a(
            request.prompt.as_bytes(),
            fnv1a(&request.seed.to_le_bytes(), 0xcbf2_9ce4_8422_2325),
        );
        let frames: Vec<Vec<u8>> = (0..u64::from(format.frames_per_segment))
            .map(|i| render_frame(&format, look, start.frames_done + i))
            .collect();

        let mut samples_done = start.samples_done;
        let audio = format.audio.map(|(rate, channels)| {
            let n = u64::from(rate) * u64::from(format.frames_per_segment) / u64::from(format.fps);
            let freq = 220.0 + (look % 440) as f64;
            let samples: Vec<f32> = (samples_done..samples_done + n)
                .flat_map(|t| {
                    let v =
                        ((t as f64) * freq * std::f64::consts::TAU / f64::from(rate)).sin() * 0.2;
                    std::iter::repeat_n(v as f32, channels as usize)
                })
                .collect();
            samples_done += n;
            samples
        });

        // Pace the steps so the whole call takes `latency` of wall time, synthesis included:
        // like a GPU model, the segment's duration does not grow when the CPU is busy.
        let steps = request.num_inference_steps;
        for step in 1..=steps {
            let due = self.settings.latency * step / steps;
            std::thread::sleep(due.saturating_sub(began.elapsed()));
            if progress(StepProgress {
                step,
                total_steps: steps,
            })
            .is_break()
            {
                return Err(GenerateError::Cancelled);
            }
        }

        let next = MockState {
            frames_done: start.frames_done + u64::from(format.frames_per_segment),
            samples_done,
        };
        Ok(GeneratedSegment {
            frames,
            audio,
            next_state: ContinuationState::new(
                MOCK_STATE_KIND,
                serde_json::to_value(next).expect("mock state serializes"),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mock(audio: bool) -> MockGenerator {
        MockGenerator::new(MockSettings {
            format: StreamFormat {
                width: 64,
                height: 32,
                fps: 8,
                frames_per_segment: 4,
                audio: audio.then_some((8000, 2)),
            },
            latency: Duration::from_millis(8),
        })
    }

    fn request(prompt: &str, seed: u64, segment_idx: u32) -> SegmentRequest {
        SegmentRequest {
            fresh_stream: false,
            checkpoint_max_bytes: None,
            segment_idx,
            prompt: prompt.into(),
            negative_prompt: None,
            seed,
            num_inference_steps: 4,
            guidance_scale: 1.0,
            initial_image: None,
        }
    }

    fn run(
        g: &mut MockGenerator,
        r: &SegmentRequest,
        s: Option<&ContinuationState>,
    ) -> GeneratedSegment {
        g.generate(r, s, &mut |_| ControlFlow::Continue(()))
            .unwrap()
    }

    #[test]
    fn frames_are_deterministic_and_depend_on_seed_and_prompt() {
        let mut g = mock(false);
        let a = run(&mut g, &request("a cat", 1, 0), None);
        assert_eq!(
            a,
            run(&mut g, &request("a cat", 1, 0), None),
            "same inputs, same output"
        );
        assert_eq!(a.frames.len(), 4);
        assert!(a.frames.iter().all(|f| f.len() == 64 * 32 * 3));
        assert_ne!(
            a.frames,
            run(&mut g, &request("a cat", 2, 0), None).frames,
            "seed matters"
        );
        assert_ne!(
            a.frames,
            run(&mut g, &request("a dog", 1, 0), None).frames,
            "prompt matters"
        );
    }

    #[test]
    fn continuation_moves_on_and_restores_identically() {
        let mut g = mock(true);
        let first = run(&mut g, &request("p", 1, 0), None);
        let second = run(&mut g, &request("p", 1, 1), Some(&first.next_state));
        assert_ne!(first.frames, second.frames, "the stream moves on");
        // A state carried to a fresh generator (another process) gives the same segment.
        let exported = serde_json::to_string(&first.next_state).unwrap();
        let imported: ContinuationState = serde_json::from_str(&exported).unwrap();
        let mut other = mock(true);
        assert_eq!(
            run(&mut other, &request("p", 1, 1), Some(&imported)),
            second
        );
    }

    #[test]
    fn audio_covers_the_segment() {
        let mut g = mock(true);
        let seg = run(&mut g, &request("p", 1, 0), None);
        // 4 frames at 8 fps = 0.5 s of 8 kHz stereo.
        assert_eq!(seg.audio.unwrap().len(), 4000 * 2);
        assert!(
            run(&mut mock(false), &request("p", 1, 0), None)
                .audio
                .is_none()
        );
    }

    #[test]
    fn progress_is_reported_for_every_step() {
        let mut g = mock(false);
        let mut seen = Vec::new();
        g.generate(&request("p", 1, 0), None, &mut |p| {
            seen.push(p);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            seen.iter().map(|p| p.step).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert!(seen.iter().all(|p| p.total_steps == 4));
    }

    #[test]
    fn breaking_from_progress_cancels() {
        let mut g = mock(false);
        let mut steps = 0;
        let result = g.generate(&request("p", 1, 0), None, &mut |_| {
            steps += 1;
            if steps == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(result, Err(GenerateError::Cancelled));
        assert_eq!(steps, 2);
    }

    #[test]
    fn foreign_or_broken_states_are_rejected() {
        let g = mock(false);
        let foreign = ContinuationState::new("framecast.wan.v1", serde_json::json!({}));
        assert!(matches!(
            g.validate_state(&foreign),
            Err(GenerateError::InvalidState(_))
        ));
        let broken =
            ContinuationState::new(MOCK_STATE_KIND, serde_json::json!({"frames_done": "x"}));
        assert!(matches!(
            g.validate_state(&broken),
            Err(GenerateError::InvalidState(_))
        ));
        let mut g = mock(false);
        let mut r = request("p", 1, 0);
        r.num_inference_steps = 0;
        assert!(matches!(
            g.generate(&r, None, &mut |_| ControlFlow::Continue(())),
            Err(GenerateError::InvalidRequest(_))
        ));
    }
}
