//! The Wan diffusion transformer (diffusers' `WanTransformer3DModel`): a 3D patch embedding,
//! `num_layers` blocks of self-attention with 3D rotary position embedding, cross-attention
//! to the text embedding and a feed-forward, each modulated by the timestep (shift, scale,
//! gate), then a modulated output head that unpatchifies back to latent video.
//!
//! Text-to-video only: image conditioning (`image_dim`, `added_kv_proj_dim`) is refused at
//! load time.

use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::WanError;
use super::layers::{Fp32LayerNorm, Linear, RmsNorm};
use super::weights::{Weights, read_config};

/// `transformer/config.json`, the fields this implementation reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TransformerConfig {
    /// `(t, h, w)` patch size.
    pub patch_size: Vec<i64>,
    pub num_attention_heads: i64,
    pub attention_head_dim: i64,
    /// Latent channels in.
    pub in_channels: i64,
    /// Latent channels out.
    pub out_channels: Option<i64>,
    /// Width of the text encoder's output.
    pub text_dim: i64,
    /// Width of the sinusoidal timestep embedding.
    pub freq_dim: i64,
    pub ffn_dim: i64,
    pub num_layers: i64,
    /// Whether cross-attention normalises its input (affine LayerNorm).
    pub cross_attn_norm: bool,
    /// Query/key normalisation; only `rms_norm_across_heads` exists in Wan2.1.
    pub qk_norm: Option<String>,
    pub eps: f64,
    /// Image conditioning width (I2V models); must be null here.
    #[serde(default)]
    pub image_dim: Option<i64>,
    /// Image key/value width (I2V models); must be null here.
    #[serde(default)]
    pub added_kv_proj_dim: Option<i64>,
    /// Positions the rotary tables cover per axis.
    pub rope_max_seq_len: i64,
}

impl TransformerConfig {
    fn check(&self, path: &Path) -> Result<(), WanError> {
        let refuse = |field: &str, message: String| {
            Err(WanError::Config {
                path: path.to_path_buf(),
                field: field.to_string(),
                message,
            })
        };
        if self.patch_size.len() != 3 || self.patch_size.iter().any(|&p| p < 1) {
            return refuse(
                "patch_size",
                format!("must be three positive sizes, got {:?}", self.patch_size),
            );
        }
        if self.qk_norm.as_deref() != Some("rms_norm_across_heads") {
            return refuse(
                "qk_norm",
                format!(
                    "only `rms_norm_across_heads` is supported, got {:?}",
                    self.qk_norm
                ),
            );
        }
        if self.image_dim.is_some() || self.added_kv_proj_dim.is_some() {
            return refuse(
                "image_dim",
                "image-conditioned (I2V) transformers are not supported".into(),
            );
        }
        if self.attention_head_dim < 6 || self.attention_head_dim % 2 != 0 {
            return refuse(
                "attention_head_dim",
                "must be even and at least 6 (3D rotary embedding)".into(),
            );
        }
        if self.freq_dim % 2 != 0 {
            return refuse("freq_dim", "must be even".into());
        }
        Ok(())
    }

    fn inner_dim(&self) -> i64 {
        self.num_attention_heads * self.attention_head_dim
    }
}

/// Self- or cross-attention with RMS-normalised queries and keys.
#[derive(Debug)]
struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    norm_q: RmsNorm,
    norm_k: RmsNorm,
    heads: i64,
}

impl Attention {
    fn load(w: &mut Weights, prefix: &str, c: &TransformerConfig) -> Result<Self, WanError> {
        let dim = c.inner_dim();
        Ok(Self {
            to_q: Linear::load(w, &format!("{prefix}.to_q"), dim, dim, true)?,
            to_k: Linear::load(w, &format!("{prefix}.to_k"), dim, dim, true)?,
            to_v: Linear::load(w, &format!("{prefix}.to_v"), dim, dim, true)?,
            to_out: Linear::load(w, &format!("{prefix}.to_out.0"), dim, dim, true)?,
            norm_q: RmsNorm::load(w, &format!("{prefix}.norm_q"), dim, c.eps)?,
            norm_k: RmsNorm::load(w, &format!("{prefix}.norm_k"), dim, c.eps)?,
            heads: c.num_attention_heads,
        })
    }

    /// `x`: (B, S, D); `context`: keys/values source (None = self-attention); `rope`: the
    /// (cos, sin) tables for self-attention.
    fn forward(&self, x: &Tensor, context: Option<&Tensor>, rope: Option<&Rope>) -> Tensor {
        let kv = context.unwrap_or(x);
        let split = |t: Tensor| {
            let (b, s, d) = t.size3().expect("(B, S, D)");
            t.view([b, s, self.heads, d / self.heads])
        };
        let mut q = split(self.norm_q.forward(&self.to_q.forward(x)));
        let mut k = split(self.norm_k.forward(&self.to_k.forward(kv)));
        let v = split(self.to_v.forward(kv));
        if let Some(rope) = rope {
            q = rope.apply(&q);
            k = rope.apply(&k);
        }
        // (B, S, H, D) -> (B, H, S, D) for SDPA, and back.
        let out = Tensor::scaled_dot_product_attention(
            &q.transpose(1, 2),
            &k.transpose(1, 2),
            &v.transpose(1, 2),
            None::<&Tensor>,
            0.0,
            false,
            None,
            false,
        )
        .transpose(1, 2);
        let (b, s, h, d) = out.size4().expect("(B, S, H, D)");
        self.to_out
            .forward(&out.reshape([b, s, h * d]).to_kind(x.kind()))
    }
}

/// 3D rotary position embedding tables for one latent grid.
#[derive(Debug)]
struct Rope {
    /// (1, S, 1, head_dim), values for even channels at even positions.
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Tables for a `(frames, height, width)` grid of patches, as diffusers'
    /// `WanRotaryPosEmbed` builds them (fp64 frequencies, interleaved pairs).
    fn new(head_dim: i64, max_len: i64, grid: (i64, i64, i64), device: Device) -> Self {
        let h_dim = 2 * (head_dim / 6);
        let t_dim = head_dim - 2 * h_dim;
        let (f, h, w) = grid;
        let axis = |dim: i64, len: i64| {
            let opts = (Kind::Double, device);
            let inv = Tensor::arange_start_step(0, dim, 2, opts)
                .slice(0, 0, dim / 2, 1)
                .divide_scalar(dim as f64);
            let inv = Tensor::from(10000.0f64)
                .to_device(device)
                .pow(&inv)
                .reciprocal();
            let pos = Tensor::arange(max_len, opts);
            let freqs = pos.outer(&inv).slice(0, 0, len, 1);
            (
                freqs
                    .cos()
                    .repeat_interleave_self_int(2, 1, None)
                    .to_kind(Kind::Float),
                freqs
                    .sin()
                    .repeat_interleave_self_int(2, 1, None)
                    .to_kind(Kind::Float),
            )
        };
        let expand = |(c, s): (Tensor, Tensor), shape: [i64; 3]| {
            let d = c.size()[1];
            let view = [shape[0], shape[1], shape[2], d];
            (
                c.view(view).expand([f, h, w, d], false),
                s.view(view).expand([f, h, w, d], false),
            )
        };
        let (ct, st) = expand(axis(t_dim, f), [f, 1, 1]);
        let (ch, sh) = expand(axis(h_dim, h), [1, h, 1]);
        let (cw, sw) = expand(axis(h_dim, w), [1, 1, w]);
        let cos = Tensor::cat(&[ct, ch, cw], -1).reshape([1, f * h * w, 1, head_dim]);
        let sin = Tensor::cat(&[st, sh, sw], -1).reshape([1, f * h * w, 1, head_dim]);
        Self { cos, sin }
    }

    /// Rotates interleaved channel pairs of `x` (B, S, H, D).
    fn apply(&self, x: &Tensor) -> Tensor {
        let x1 = x.slice(-1, 0, None, 2);
        let x2 = x.slice(-1, 1, None, 2);
        let cos = self.cos.slice(-1, 0, None, 2);
        let sin = self.sin.slice(-1, 1, None, 2);
        let even = &x1 * &cos - &x2 * &sin;
        let odd = &x1 * &sin + &x2 * &cos;
        Tensor::stack(&[even, odd], -1)
            .flatten(-2, -1)
            .to_kind(x.kind())
    }
}

/// One transformer block.
#[derive(Debug)]
struct Block {
    attn1: Attention,
    attn2: Attention,
    norm1: Fp32LayerNorm,
    norm2: Option<Fp32LayerNorm>,
    norm3: Fp32LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    scale_shift_table: Tensor,
}

impl Block {
    fn load(w: &mut Weights, i: i64, c: &TransformerConfig) -> Result<Self, WanError> {
        let p = format!("blocks.{i}");
        let dim = c.inner_dim();
        Ok(Self {
            attn1: Attention::load(w, &format!("{p}.attn1"), c)?,
            attn2: Attention::load(w, &format!("{p}.attn2"), c)?,
            norm1: Fp32LayerNorm::plain(dim, c.eps),
            norm2: if c.cross_attn_norm {
                Some(Fp32LayerNorm::load(w, &format!("{p}.norm2"), dim, c.eps)?)
            } else {
                None
            },
            norm3: Fp32LayerNorm::plain(dim, c.eps),
            ffn_in: Linear::load(w, &format!("{p}.ffn.net.0.proj"), dim, c.ffn_dim, true)?,
            ffn_out: Linear::load(w, &format!("{p}.ffn.net.2"), c.ffn_dim, dim, true)?,
            scale_shift_table: w.take(&format!("{p}.scale_shift_table"), &[1, 6, dim])?,
        })
    }

    /// `x`: (B, S, D); `context`: (B, L, D); `temb`: (B, 6, D) timestep projection.
    fn forward(&self, x: &Tensor, context: &Tensor, temb: &Tensor, rope: &Rope) -> Tensor {
        let kind = x.kind();
        let mods =
            (&self.scale_shift_table.to_kind(Kind::Float) + temb.to_kind(Kind::Float)).chunk(6, 1);
        let (shift, scale, gate) = (&mods[0], &mods[1], &mods[2]);
        let (c_shift, c_scale, c_gate) = (&mods[3], &mods[4], &mods[5]);

        let normed = (self.norm1.forward(x) * (scale + 1.0) + shift).to_kind(kind);
        let attn = self.attn1.forward(&normed, None, Some(rope));
        let x = (x.to_kind(Kind::Float) + attn * gate).to_kind(kind);

        let normed = match &self.norm2 {
            Some(norm) => norm.forward(&x).to_kind(kind),
            None => x.shallow_clone(),
        };
        let x = &x + self.attn2.forward(&normed, Some(context), None);

        let normed = (self.norm3.forward(&x) * (c_scale + 1.0) + c_shift).to_kind(kind);
        let ff = self
            .ffn_out
            .forward(&self.ffn_in.forward(&normed).gelu("tanh"));
        (x.to_kind(Kind::Float) + ff.to_kind(Kind::Float) * c_gate).to_kind(kind)
    }
}

/// The Wan DiT with its weights on one device.
#[derive(Debug)]
pub struct WanTransformer {
    config: TransformerConfig,
    patch_weight: Tensor,
    patch_bias: Tensor,
    time_1: Linear,
    time_2: Linear,
    time_proj: Linear,
    text_1: Linear,
    text_2: Linear,
    blocks: Vec<Block>,
    norm_out: Fp32LayerNorm,
    proj_out: Linear,
    scale_shift_table: Tensor,
    device: Device,
}

impl WanTransformer {
    /// Loads `dir` (`config.json` + safetensors) onto `device` in `kind`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, WanError> {
        let config: TransformerConfig = read_config(dir)?;
        config.check(&dir.join("config.json"))?;
        let mut w = Weights::load(dir, device, kind)?;
        let c = &config;
        let dim = c.inner_dim();
        let (pt, ph, pw) = (c.patch_size[0], c.patch_size[1], c.patch_size[2]);
        let out = c.out_channels.unwrap_or(c.in_channels);
        let model = Self {
            patch_weight: w.take("patch_embedding.weight", &[dim, c.in_channels, pt, ph, pw])?,
            patch_bias: w.take("patch_embedding.bias", &[dim])?,
            time_1: Linear::load(
                &mut w,
                "condition_embedder.time_embedder.linear_1",
                c.freq_dim,
                dim,
                true,
            )?,
            time_2: Linear::load(
                &mut w,
                "condition_embedder.time_embedder.linear_2",
                dim,
                dim,
                true,
            )?,
            time_proj: Linear::load(&mut w, "condition_embedder.time_proj", dim, 6 * dim, true)?,
            text_1: Linear::load(
                &mut w,
                "condition_embedder.text_embedder.linear_1",
                c.text_dim,
                dim,
                true,
            )?,
            text_2: Linear::load(
                &mut w,
                "condition_embedder.text_embedder.linear_2",
                dim,
                dim,
                true,
            )?,
            blocks: (0..c.num_layers)
                .map(|i| Block::load(&mut w, i, c))
                .collect::<Result<_, _>>()?,
            norm_out: Fp32LayerNorm::plain(dim, c.eps),
            proj_out: Linear::load(&mut w, "proj_out", dim, out * pt * ph * pw, true)?,
            scale_shift_table: w.take("scale_shift_table", &[1, 2, dim])?,
            device,
            config,
        };
        // diffusers ignores `norm_added_q` in old checkpoints; anything else left over means
        // the checkpoint and config disagree.
        let unused: Vec<String> = w
            .unused()
            .into_iter()
            .filter(|k| !k.contains("norm_added_q"))
            .collect();
        if !unused.is_empty() {
            return Err(WanError::Config {
                path: dir.join("config.json"),
                field: "num_layers".into(),
                message: format!(
                    "the weights hold tensors the config does not describe: {}",
                    unused.join(", ")
                ),
            });
        }
        Ok(model)
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// Sinusoidal timestep embedding (diffusers' `Timesteps`, `flip_sin_to_cos=True`).
    fn timestep_embedding(&self, timestep: &Tensor) -> Tensor {
        let half = self.config.freq_dim / 2;
        let exponent =
            Tensor::arange(half, (Kind::Float, self.device)) * (-(10000f64.ln()) / half as f64);
        let args = timestep.to_kind(Kind::Float).unsqueeze(1) * exponent.exp().unsqueeze(0);
        Tensor::cat(&[args.cos(), args.sin()], -1)
    }

    /// Predicts the flow (velocity) for `latents` (B, C, F, H, W) at `timestep` (B,), given
    /// the text embedding `context` (B, L, text_dim).
    pub fn forward(&self, latents: &Tensor, timestep: &Tensor, context: &Tensor) -> Tensor {
        let c = &self.config;
        let kind = latents.kind();
        let (b, _, f, h, w) = latents.size5().expect("latents are (B, C, F, H, W)");
        let (pt, ph, pw) = (c.patch_size[0], c.patch_size[1], c.patch_size[2]);
        let grid = (f / pt, h / ph, w / pw);
        let rope = Rope::new(c.attention_head_dim, c.rope_max_seq_len, grid, self.device);

        let x = latents
            .conv3d(
                &self.patch_weight,
                Some(&self.patch_bias),
                [pt, ph, pw],
                [0, 0, 0],
                [1, 1, 1],
                1,
            )
            .flatten(2, -1)
            .transpose(1, 2)
            .contiguous();

        let temb = self.time_2.forward(
            &self
                .time_1
                .forward(&self.timestep_embedding(timestep).to_kind(kind))
                .silu(),
        );
        let timestep_proj = self.time_proj.forward(&temb.silu()).unflatten(1, [6, -1]);
        let context = self
            .text_2
            .forward(&self.text_1.forward(context).gelu("tanh"));

        let mut x = x;
        for block in &self.blocks {
            x = block.forward(&x, &context, &timestep_proj, &rope);
        }

        let mods = (&self.scale_shift_table.to_kind(Kind::Float)
            + temb.to_kind(Kind::Float).unsqueeze(1))
        .chunk(2, 1);
        let x = (self.norm_out.forward(&x) * (&mods[1] + 1.0) + &mods[0]).to_kind(kind);
        let x = self.proj_out.forward(&x);
        let out = c.out_channels.unwrap_or(c.in_channels);
        x.reshape([b, grid.0, grid.1, grid.2, pt, ph, pw, out])
            .permute([0, 7, 1, 4, 2, 5, 3, 6])
            .reshape([b, out, f, h, w])
    }
}
