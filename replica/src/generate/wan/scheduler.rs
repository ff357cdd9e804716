//! Flow-matching Euler sampling with a shifted sigma schedule (diffusers'
//! `FlowMatchEulerDiscreteScheduler` with `shift`, no dynamic shifting): the model predicts a
//! velocity, and each step moves the sample by `(sigma_next - sigma) * velocity`.
//!
//! Wan2.1's published checkpoints ship a `UniPCMultistepScheduler` config with `flow_shift`;
//! its shift is read from there, and sampling uses this Euler scheduler either way.

use std::path::Path;

use serde::Deserialize;
use tch::{Kind, Tensor};

use super::WanError;

/// The fields of `scheduler/scheduler_config.json` that matter here.
#[derive(Debug, Clone, Deserialize)]
struct SchedulerFile {
    #[serde(rename = "_class_name", default)]
    class_name: Option<String>,
    #[serde(default = "default_train_steps")]
    num_train_timesteps: u32,
    #[serde(default)]
    shift: Option<f64>,
    #[serde(default)]
    flow_shift: Option<f64>,
    #[serde(default)]
    use_dynamic_shifting: bool,
    #[serde(default)]
    use_karras_sigmas: bool,
    #[serde(default)]
    use_exponential_sigmas: bool,
    #[serde(default)]
    use_beta_sigmas: bool,
    #[serde(default)]
    invert_sigmas: bool,
    #[serde(default)]
    stochastic_sampling: bool,
    #[serde(default)]
    shift_terminal: Option<f64>,
}

fn default_train_steps() -> u32 {
    1000
}

/// The sampler's constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowMatchEuler {
    /// Sigma shift (3.0 for Wan2.1 at 480p, 5.0 at 720p).
    pub shift: f64,
    pub num_train_timesteps: u32,
}

/// The timesteps of one sampling run and the sigmas between them.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Model timesteps, one per step, decreasing.
    pub timesteps: Vec<f32>,
    /// Noise levels, one per step plus the final 0.
    pub sigmas: Vec<f32>,
}

impl FlowMatchEuler {
    /// Reads `dir/scheduler_config.json` (a flow-matching Euler or UniPC-with-flow config).
    pub fn load(dir: &Path) -> Result<Self, WanError> {
        let path = dir.join("scheduler_config.json");
        let text = std::fs::read_to_string(&path).map_err(|_| WanError::MissingFile {
            path: path.clone(),
            what: "the scheduler config",
        })?;
        let file: SchedulerFile =
            serde_json::from_str(&text).map_err(|e| WanError::Unreadable {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let refuse = |field: &str, message: &str| {
            Err(WanError::Config {
                path: path.clone(),
                field: field.into(),
                message: message.into(),
            })
        };
        for (set, field) in [
            (file.use_dynamic_shifting, "use_dynamic_shifting"),
            (file.use_karras_sigmas, "use_karras_sigmas"),
            (file.use_exponential_sigmas, "use_exponential_sigmas"),
            (file.use_beta_sigmas, "use_beta_sigmas"),
            (file.invert_sigmas, "invert_sigmas"),
            (file.stochastic_sampling, "stochastic_sampling"),
            (file.shift_terminal.is_some(), "shift_terminal"),
        ] {
            if set {
                return refuse(
                    field,
                    "not supported by Framecast's flow-matching Euler sampler",
                );
            }
        }
        let shift = match (file.class_name.as_deref(), file.shift, file.flow_shift) {
            (Some("UniPCMultistepScheduler"), _, Some(s)) => s,
            (_, Some(s), _) => s,
            (_, None, Some(s)) => s,
            _ => 1.0,
        };
        if !(shift.is_finite() && shift > 0.0) {
            return refuse("shift", "must be greater than 0");
        }
        if file.num_train_timesteps == 0 {
            return refuse("num_train_timesteps", "must be at least 1");
        }
        Ok(Self {
            shift,
            num_train_timesteps: file.num_train_timesteps,
        })
    }

    fn shifted(&self, sigma: f64) -> f64 {
        self.shift * sigma / (1.0 + (self.shift - 1.0) * sigma)
    }

    /// The schedule for `steps` steps, as diffusers computes it (the endpoints come from the
    /// shifted training schedule, the linear spacing between them is shifted again).
    pub fn schedule(&self, steps: u32) -> Schedule {
        let n = f64::from(self.num_train_timesteps);
        // diffusers keeps the training sigmas in fp32.
        let sigma_max = self.shifted(1.0) as f32 as f64;
        let sigma_min = self.shifted(f64::from(1.0f32 / n as f32)) as f32 as f64;
        let (start, end) = (sigma_max * n, sigma_min * n);
        let mut sigmas: Vec<f32> = (0..steps)
            .map(|i| {
                let t = if steps == 1 {
                    start
                } else {
                    start + (end - start) * f64::from(i) / f64::from(steps - 1)
                };
                self.shifted(t / n) as f32
            })
            .collect();
        let timesteps = sigmas.iter().map(|s| s * n as f32).collect();
        sigmas.push(0.0);
        Schedule { timesteps, sigmas }
    }

    /// One Euler step from `schedule.sigmas[i]` to `schedule.sigmas[i + 1]`.
    pub fn step(schedule: &Schedule, i: usize, sample: &Tensor, velocity: &Tensor) -> Tensor {
        let dt = f64::from(schedule.sigmas[i + 1] - schedule.sigmas[i]);
        (sample.to_kind(Kind::Float) + velocity.to_kind(Kind::Float) * dt).to_kind(velocity.kind())
    }
}
