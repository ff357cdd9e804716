//! The Wan VAE (diffusers' `AutoencoderKLWan`, Wan2.1 layout): a causal 3D autoencoder that
//! compresses video 4x in time and 8x in space. The decoder turns denoised latents into
//! frames; the [`DecoderState`] carries its causal cache from one call to the next, so a
//! stream decoded segment by segment has no seam — the frames are those of decoding the
//! whole latent video at once.

pub mod blocks;
pub mod decoder;
pub mod encoder;
pub mod feature_cache;

use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::WanError;
use super::weights::{Weights, read_config};
use blocks::CausalConv3d;
use decoder::Decoder;
use encoder::Encoder;
use feature_cache::FeatureCache;

/// `vae/config.json`, the fields this implementation reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VaeConfig {
    /// Encoder width multiplier base.
    pub base_dim: i64,
    /// Decoder width base (defaults to `base_dim`).
    #[serde(default)]
    pub decoder_base_dim: Option<i64>,
    /// Latent channels.
    pub z_dim: i64,
    /// Width multipliers per level.
    pub dim_mult: Vec<i64>,
    /// Residual blocks per level.
    pub num_res_blocks: usize,
    /// Which levels halve (encoder) / double (decoder) time.
    pub temperal_downsample: Vec<bool>,
    /// Per-channel latent mean.
    pub latents_mean: Vec<f64>,
    /// Per-channel latent standard deviation.
    pub latents_std: Vec<f64>,
    /// Wan2.2's residual variant; unsupported.
    #[serde(default)]
    pub is_residual: bool,
    /// Video channels in.
    #[serde(default = "three")]
    pub in_channels: i64,
    /// Video channels out.
    #[serde(default = "three")]
    pub out_channels: i64,
    /// Wan2.2's pixel patching; unsupported.
    #[serde(default)]
    pub patch_size: Option<i64>,
}

fn three() -> i64 {
    3
}

impl VaeConfig {
    fn check(&self, path: &Path) -> Result<(), WanError> {
        let refuse = |field: &str, message: String| {
            Err(WanError::Config {
                path: path.to_path_buf(),
                field: field.into(),
                message,
            })
        };
        if self.is_residual {
            return refuse(
                "is_residual",
                "the residual (Wan2.2) VAE is not supported".into(),
            );
        }
        if self.patch_size.is_some() {
            return refuse(
                "patch_size",
                "patchified (Wan2.2) VAEs are not supported".into(),
            );
        }
        if self.dim_mult.len() < 2 || self.temperal_downsample.len() != self.dim_mult.len() - 1 {
            return refuse(
                "temperal_downsample",
                format!(
                    "needs one entry per level transition ({} for dim_mult {:?})",
                    self.dim_mult.len().saturating_sub(1),
                    self.dim_mult
                ),
            );
        }
        for (field, values) in [
            ("latents_mean", &self.latents_mean),
            ("latents_std", &self.latents_std),
        ] {
            if values.len() as i64 != self.z_dim {
                return refuse(
                    field,
                    format!("needs z_dim = {} values, got {}", self.z_dim, values.len()),
                );
            }
        }
        Ok(())
    }

    /// Video frames per latent frame after the first.
    pub fn temporal_factor(&self) -> i64 {
        1 << self.temperal_downsample.iter().filter(|&&t| t).count()
    }

    /// Pixels per latent pixel along each side.
    pub fn spatial_factor(&self) -> i64 {
        1 << (self.dim_mult.len() - 1)
    }
}

/// Where a stream's decoding stands: the decoder's causal cache and whether the first
/// latent frame (which yields one video frame, not `temporal_factor`) is behind it.
#[derive(Debug, Default)]
pub struct DecoderState {
    pub cache: FeatureCache,
    /// Latent frames decoded so far.
    pub frames_decoded: u64,
}

/// The VAE on one device.
#[derive(Debug)]
pub struct WanVae {
    config: VaeConfig,
    quant_conv: CausalConv3d,
    encoder: Encoder,
    post_quant_conv: CausalConv3d,
    decoder: Decoder,
    mean: Tensor,
    std: Tensor,
}

impl WanVae {
    /// Loads `dir` (`config.json` + safetensors) onto `device` in `kind`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, WanError> {
        let config: VaeConfig = read_config(dir)?;
        config.check(&dir.join("config.json"))?;
        let mut w = Weights::load(dir, device, kind)?;
        let z = config.z_dim;
        let post_quant_conv = CausalConv3d::pointwise(&mut w, "post_quant_conv", (z, z))?;
        let decoder = Decoder::load(&mut w, &config)?;
        let quant_conv = CausalConv3d::pointwise(&mut w, "quant_conv", (2 * z, 2 * z))?;
        let encoder = Encoder::load(&mut w, &config)?;
        let unused = w.unused();
        if !unused.is_empty() {
            return Err(WanError::Config {
                path: dir.join("config.json"),
                field: "dim_mult".into(),
                message: format!(
                    "the weights hold tensors the config does not describe: {}",
                    unused.join(", ")
                ),
            });
        }
        let per_channel = |v: &[f64]| {
            Tensor::from_slice(v)
                .to_kind(kind)
                .to_device(device)
                .view([1, z, 1, 1, 1])
        };
        Ok(Self {
            mean: per_channel(&config.latents_mean),
            std: per_channel(&config.latents_std),
            quant_conv,
            encoder,
            post_quant_conv,
            decoder,
            config,
        })
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Encodes video in [-1, 1] (B, 3, T, H, W), T = 1 + 4k, into normalised latents
    /// (the distribution's mode, scaled as the transformer expects) (B, z, 1 + k, h, w).
    pub fn encode(&self, video: &Tensor) -> Tensor {
        let t = video.size()[2];
        let mut cache = FeatureCache::default();
        let mut chunks = vec![self.encoder.forward(&video.narrow(2, 0, 1), &mut cache)];
        let factor = self.config.temporal_factor();
        let mut start = 1;
        while start < t {
            let len = factor.min(t - start);
            chunks.push(
                self.encoder
                    .forward(&video.narrow(2, start, len), &mut cache),
            );
            start += len;
        }
        let stats = self.quant_conv.forward(&Tensor::cat(&chunks, 2), None);
        let mean = stats.narrow(1, 0, self.config.z_dim);
        (mean - &self.mean) / &self.std
    }

    /// Decodes normalised latents (B, z, F, h, w), as the transformer produces them, into
    /// video in [-1, 1] (B, 3, T, H, W), continuing from `state`: T is
    /// `1 + temporal_factor * (F - 1)` for a stream's first chunk, `temporal_factor * F` after.
    pub fn decode(&self, latents: &Tensor, state: &mut DecoderState) -> Tensor {
        let z = latents * &self.std + &self.mean;
        let x = self.post_quant_conv.forward(&z, None);
        let frames = x.size()[2];
        let chunks: Vec<Tensor> = (0..frames)
            .map(|i| {
                let out = self.decoder.forward(&x.narrow(2, i, 1), &mut state.cache);
                state.frames_decoded += 1;
                out
            })
            .collect();
        Tensor::cat(&chunks, 2).clamp(-1.0, 1.0)
    }
}
