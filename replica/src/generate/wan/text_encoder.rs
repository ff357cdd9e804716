//! The UMT5 text encoder (transformers' `UMT5EncoderModel`) with its tokenizer (the
//! `tokenizers` crate reading `tokenizer/tokenizer.json`): prompt → token ids → embeddings
//! the transformer cross-attends to, padded with zeros to `max_sequence_length` exactly as
//! diffusers' `WanPipeline` does.
//!
//! T5 specifics kept: RMS norms without mean or bias, unscaled dot-product attention with a
//! learned relative-position bias in every layer (the "U" of UMT5), gated-GELU feed-forward.

use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

use super::WanError;
use super::layers::Linear;
use super::weights::{Weights, read_config};

/// `text_encoder/config.json`, the fields this implementation reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TextEncoderConfig {
    pub vocab_size: i64,
    /// Model width.
    pub d_model: i64,
    /// Width per head.
    pub d_kv: i64,
    /// Feed-forward width.
    pub d_ff: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    pub relative_attention_num_buckets: i64,
    /// Distance beyond which positions share a bucket.
    pub relative_attention_max_distance: i64,
    /// Epsilon of the RMS norms.
    pub layer_norm_epsilon: f64,
    /// Must be `gated-gelu` (UMT5).
    pub feed_forward_proj: String,
}

/// T5's RMS norm: no mean subtraction, no bias, computed in fp32.
#[derive(Debug)]
struct T5Norm {
    weight: Tensor,
    eps: f64,
}

impl T5Norm {
    fn load(w: &mut Weights, key: &str, dim: i64, eps: f64) -> Result<Self, WanError> {
        Ok(Self {
            weight: w.take(key, &[dim])?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let variance = x
            .to_kind(Kind::Float)
            .pow_tensor_scalar(2)
            .mean_dim(-1, true, None);
        let normed = x * (variance + self.eps).rsqrt();
        &self.weight * normed.to_kind(self.weight.kind())
    }
}

#[derive(Debug)]
struct Layer {
    attn_norm: T5Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    relative_bias: Tensor,
    ff_norm: T5Norm,
    wi_0: Linear,
    wi_1: Linear,
    wo: Linear,
}

/// The encoder, its tokenizer and its weights on one device.
#[derive(Debug)]
pub struct TextEncoder {
    config: TextEncoderConfig,
    tokenizer: Tokenizer,
    embed: Tensor,
    layers: Vec<Layer>,
    final_norm: T5Norm,
    device: Device,
}

impl TextEncoder {
    /// Loads `text_encoder_dir` (config.json + safetensors) and `tokenizer_dir/tokenizer.json`.
    pub fn load(
        text_encoder_dir: &Path,
        tokenizer_dir: &Path,
        device: Device,
        kind: Kind,
    ) -> Result<Self, WanError> {
        let config: TextEncoderConfig = read_config(text_encoder_dir)?;
        let config_path = text_encoder_dir.join("config.json");
        if config.feed_forward_proj != "gated-gelu" {
            return Err(WanError::Config {
                path: config_path,
                field: "feed_forward_proj".into(),
                message: format!(
                    "only `gated-gelu` (UMT5) is supported, got `{}`",
                    config.feed_forward_proj
                ),
            });
        }
        let tokenizer_path = tokenizer_dir.join("tokenizer.json");
        if !tokenizer_path.exists() {
            return Err(WanError::MissingFile {
                path: tokenizer_path,
                what: "the tokenizer (tokenizers' JSON format)",
            });
        }
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| WanError::Unreadable {
                path: tokenizer_path.clone(),
                message: e.to_string(),
            })?;
        // A tokenizer.json saved after transformers padded a batch keeps that padding and
        // truncation as defaults: the prompt's real tokens are what the encoder must see
        // (pads would be attended to), and `tokenize` truncates the way transformers does.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| WanError::Unreadable {
                path: tokenizer_path.clone(),
                message: e.to_string(),
            })?;

        let mut w = Weights::load(text_encoder_dir, device, kind)?;
        let c = &config;
        let inner = c.num_heads * c.d_kv;
        // Checkpoints carry the tied embedding as `shared.weight`, `encoder.embed_tokens.weight`
        // or both.
        let embed_shape = [c.vocab_size, c.d_model];
        let embed = match w.take("shared.weight", &embed_shape) {
            Ok(t) => {
                let _ = w.take("encoder.embed_tokens.weight", &embed_shape);
                t
            }
            Err(WanError::MissingKey { .. }) => {
                w.take("encoder.embed_tokens.weight", &embed_shape)?
            }
            Err(e) => return Err(e),
        };
        let eps = c.layer_norm_epsilon;
        let layers = (0..c.num_layers)
            .map(|i| {
                let p = format!("encoder.block.{i}.layer");
                Ok(Layer {
                    attn_norm: T5Norm::load(
                        &mut w,
                        &format!("{p}.0.layer_norm.weight"),
                        c.d_model,
                        eps,
                    )?,
                    q: Linear::load(
                        &mut w,
                        &format!("{p}.0.SelfAttention.q"),
                        c.d_model,
                        inner,
                        false,
                    )?,
                    k: Linear::load(
                        &mut w,
                        &format!("{p}.0.SelfAttention.k"),
                        c.d_model,
                        inner,
                        false,
                    )?,
                    v: Linear::load(
                        &mut w,
                        &format!("{p}.0.SelfAttention.v"),
                        c.d_model,
                        inner,
                        false,
                    )?,
                    o: Linear::load(
                        &mut w,
                        &format!("{p}.0.SelfAttention.o"),
                        inner,
                        c.d_model,
                        false,
                    )?,
                    relative_bias: w.take(
                        &format!("{p}.0.SelfAttention.relative_attention_bias.weight"),
                        &[c.relative_attention_num_buckets, c.num_heads],
                    )?,
                    ff_norm: T5Norm::load(
                        &mut w,
                        &format!("{p}.1.layer_norm.weight"),
                        c.d_model,
                        eps,
                    )?,
                    wi_0: Linear::load(
                        &mut w,
                        &format!("{p}.1.DenseReluDense.wi_0"),
                        c.d_model,
                        c.d_ff,
                        false,
                    )?,
                    wi_1: Linear::load(
                        &mut w,
                        &format!("{p}.1.DenseReluDense.wi_1"),
                        c.d_model,
                        c.d_ff,
                        false,
                    )?,
                    wo: Linear::load(
                        &mut w,
                        &format!("{p}.1.DenseReluDense.wo"),
                        c.d_ff,
                        c.d_model,
                        false,
                    )?,
                })
            })
            .collect::<Result<Vec<_>, WanError>>()?;
        let final_norm = T5Norm::load(&mut w, "encoder.final_layer_norm.weight", c.d_model, eps)?;
        let unused = w.unused();
        if !unused.is_empty() {
            return Err(WanError::Config {
                path: config_path,
                field: "num_layers".into(),
                message: format!(
                    "the weights hold tensors the config does not describe: {}",
                    unused.join(", ")
                ),
            });
        }
        Ok(Self {
            config,
            tokenizer,
            embed,
            layers,
            final_norm,
            device,
        })
    }

    /// Token ids of `prompt` with the end-of-sequence token, at most `max_len` of them.
    pub fn tokenize(&self, prompt: &str, max_len: usize) -> Result<Vec<i64>, WanError> {
        // diffusers' prompt_clean: collapse whitespace.
        let prompt = prompt.split_whitespace().collect::<Vec<_>>().join(" ");
        let encoding = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| WanError::Unreadable {
                path: "tokenizer.json".into(),
                message: format!("cannot tokenize the prompt: {e}"),
            })?;
        let mut ids: Vec<i64> = encoding.get_ids().iter().map(|&i| i64::from(i)).collect();
        if ids.len() > max_len {
            // Truncate like transformers: keep the end-of-sequence token last.
            let eos = *ids.last().expect("non-empty");
            ids.truncate(max_len.saturating_sub(1));
            ids.push(eos);
        }
        Ok(ids)
    }

    /// T5's bucketing of relative positions (bidirectional encoder).
    fn position_bias(&self, layer: &Layer, len: i64) -> Tensor {
        let c = &self.config;
        let opts = (Kind::Int64, self.device);
        let pos = Tensor::arange(len, opts);
        let relative = pos.unsqueeze(0) - pos.unsqueeze(1); // memory - query
        let num_buckets = c.relative_attention_num_buckets / 2;
        let mut buckets = relative.gt(0).to_kind(Kind::Int64) * num_buckets;
        let relative = relative.abs();
        let max_exact = num_buckets / 2;
        let is_small = relative.lt(max_exact);
        let log_ratio = (relative.to_kind(Kind::Float) / max_exact as f64).log()
            / ((c.relative_attention_max_distance as f64) / max_exact as f64).ln()
            * (num_buckets - max_exact) as f64;
        let large = (log_ratio.to_kind(Kind::Int64) + max_exact).clamp_max(num_buckets - 1);
        buckets += relative.where_self(&is_small, &large);
        // (L, L, H) -> (1, H, L, L)
        layer
            .relative_bias
            .index_select(0, &buckets.flatten(0, -1))
            .view([len, len, c.num_heads])
            .permute([2, 0, 1])
            .unsqueeze(0)
    }

    /// Encoder output for `ids`: (1, len, d_model).
    pub fn encode_ids(&self, ids: &[i64]) -> Tensor {
        let c = &self.config;
        let len = ids.len() as i64;
        let ids = Tensor::from_slice(ids).to_device(self.device);
        let mut x = self.embed.index_select(0, &ids).unsqueeze(0);
        let heads = |t: Tensor| t.view([1, len, c.num_heads, c.d_kv]).transpose(1, 2);
        for layer in &self.layers {
            let h = layer.attn_norm.forward(&x);
            let (q, k, v) = (
                heads(layer.q.forward(&h)),
                heads(layer.k.forward(&h)),
                heads(layer.v.forward(&h)),
            );
            // T5 does not scale scores by 1/sqrt(d).
            let scores = q.matmul(&k.transpose(-1, -2)) + self.position_bias(layer, len);
            let probs = scores
                .to_kind(Kind::Float)
                .softmax(-1, Kind::Float)
                .to_kind(q.kind());
            let attn = probs
                .matmul(&v)
                .transpose(1, 2)
                .reshape([1, len, c.num_heads * c.d_kv]);
            x = &x + layer.o.forward(&attn);
            let h = layer.ff_norm.forward(&x);
            let gated = layer.wi_0.forward(&h).gelu("tanh") * layer.wi_1.forward(&h);
            x = &x + layer.wo.forward(&gated.to_kind(x.kind()));
        }
        self.final_norm.forward(&x)
    }

    /// The prompt's embedding as the transformer takes it: (1, max_len, d_model), the real
    /// tokens' encodings followed by zeros.
    pub fn encode(&self, prompt: &str, max_len: usize) -> Result<Tensor, WanError> {
        let ids = self.tokenize(prompt, max_len)?;
        let encoded = self.encode_ids(&ids);
        let pad = max_len as i64 - ids.len() as i64;
        Ok(if pad > 0 {
            encoded.constant_pad_nd([0, 0, 0, pad])
        } else {
            encoded
        })
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &TextEncoderConfig {
        &self.config
    }
}
