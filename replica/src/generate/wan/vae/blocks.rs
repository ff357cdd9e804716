//! The Wan VAE's building blocks, shared by the encoder and the decoder: the causal 3D
//! convolution, the channel RMS norm, the residual, attention, middle and output blocks, and
//! the temporal resamplers. Every causal convolution reads and updates its slot of the
//! [`FeatureCache`], in the order diffusers visits them.

use tch::{Kind, Tensor};

use super::super::WanError;
use super::super::weights::Weights;
use super::feature_cache::{CACHE_FRAMES, FeatureCache, Slot};

/// Up to this many stacked input channels (`kt * in`), the conv2d formulation beats conv3d
/// on the CPU (measured with `cargo bench -p framecast-replica --bench wan`: 8–16 channel
/// layers run about 2x faster, 32–64 channel layers slower).
const STACKED_CHANNELS_MAX: i64 = 48;

/// A 3D convolution that pads only the past in time (diffusers' `WanCausalConv3d`).
///
/// Narrow layers on the CPU are computed as one 2D convolution over every output frame with
/// the `kt` input frames it sees stacked along channels: the same sums as `conv3d`, but
/// libtorch's CPU conv2d kernels are much faster than its conv3d there.
#[derive(Debug)]
pub struct CausalConv3d {
    weight: Tensor,
    /// `weight` as (out, kt * in, kh, kw), frame-major along the input channels.
    weight_2d: Tensor,
    bias: Tensor,
    /// Half-padding (t, h, w) of the equivalent symmetric convolution.
    pad: [i64; 3],
    stride: [i64; 3],
}

impl CausalConv3d {
    /// `prefix.weight` (out, in, kt, kh, kw) and `prefix.bias`.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        (input, output): (i64, i64),
        kernel: [i64; 3],
        stride: [i64; 3],
        pad: [i64; 3],
    ) -> Result<Self, WanError> {
        let weight = w.take(
            &format!("{prefix}.weight"),
            &[output, input, kernel[0], kernel[1], kernel[2]],
        )?;
        let weight_2d = weight.permute([0, 2, 1, 3, 4]).reshape([
            output,
            kernel[0] * input,
            kernel[1],
            kernel[2],
        ]);
        Ok(Self {
            weight,
            weight_2d,
            bias: w.take(&format!("{prefix}.bias"), &[output])?,
            pad,
            stride,
        })
    }

    /// A 3x3x3 convolution padded by one (the common case).
    pub fn cube(w: &mut Weights, prefix: &str, io: (i64, i64)) -> Result<Self, WanError> {
        Self::load(w, prefix, io, [3, 3, 3], [1, 1, 1], [1, 1, 1])
    }

    /// A 1x1x1 convolution.
    pub fn pointwise(w: &mut Weights, prefix: &str, io: (i64, i64)) -> Result<Self, WanError> {
        Self::load(w, prefix, io, [1, 1, 1], [1, 1, 1], [0, 0, 0])
    }

    /// Convolves `x` (B, C, T, H, W), with `past` frames standing in for time padding.
    pub fn forward(&self, x: &Tensor, past: Option<&Tensor>) -> Tensor {
        let [pt, ph, pw] = self.pad;
        let mut time_pad = 2 * pt;
        let x = match past {
            Some(past) if pt > 0 => {
                time_pad -= past.size()[2];
                Tensor::cat(&[past, x], 2)
            }
            _ => x.shallow_clone(),
        };
        let x = x.constant_pad_nd([pw, pw, ph, ph, time_pad, 0]);
        let (b, c, t, h, w) = x.size5().expect("(B, C, T, H, W)");
        let kt = self.weight.size()[2];
        let st = self.stride[0];
        let t_out = (t - kt) / st + 1;
        if t_out < 1 || kt * c > STACKED_CHANNELS_MAX || x.device().is_cuda() {
            return x.conv3d(
                &self.weight,
                Some(&self.bias),
                self.stride,
                [0, 0, 0],
                [1, 1, 1],
                1,
            );
        }
        let taps: Vec<Tensor> = (0..kt)
            .map(|j| x.slice(2, j, j + st * (t_out - 1) + 1, st))
            .collect();
        let stacked =
            Tensor::cat(&taps, 1)
                .permute([0, 2, 1, 3, 4])
                .reshape([b * t_out, kt * c, h, w]);
        let y = stacked.conv2d(
            &self.weight_2d,
            Some(&self.bias),
            [self.stride[1], self.stride[2]],
            [0, 0],
            [1, 1],
            1,
        );
        let (_, out, ho, wo) = y.size4().expect("(N, C, H, W)");
        y.reshape([b, t_out, out, ho, wo]).permute([0, 2, 1, 3, 4])
    }

    /// [`Self::forward`] through cache slot `cache.next`, then remembers `x`'s last frames
    /// (diffusers' pattern around every cached convolution).
    pub fn cached(&self, x: &Tensor, cache: &mut FeatureCache) -> Tensor {
        let slot = cache.next_slot();
        let t = x.size()[2];
        let keep = t.min(CACHE_FRAMES);
        let mut last = x.narrow(2, t - keep, keep).copy();
        let out = match &*slot {
            Slot::Frames(past) => {
                if keep < CACHE_FRAMES {
                    last = Tensor::cat(&[past.narrow(2, past.size()[2] - 1, 1), last], 2);
                }
                self.forward(x, Some(past))
            }
            _ => self.forward(x, None),
        };
        *slot = Slot::Frames(last);
        out
    }
}

/// diffusers' `WanRMS_norm`: L2-normalise over channels, scale by sqrt(C) and a gain.
#[derive(Debug)]
pub struct ChannelRmsNorm {
    gamma: Tensor,
    scale: f64,
}

impl ChannelRmsNorm {
    /// `prefix.gamma` shaped (C, 1, 1, 1) for video or (C, 1, 1) for images.
    pub fn load(w: &mut Weights, prefix: &str, dim: i64, video: bool) -> Result<Self, WanError> {
        let shape: &[i64] = if video { &[dim, 1, 1, 1] } else { &[dim, 1, 1] };
        Ok(Self {
            gamma: w.take(&format!("{prefix}.gamma"), shape)?,
            scale: (dim as f64).sqrt(),
        })
    }

    /// Normalises dimension 1.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let norm = x.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
        x / norm * self.scale * &self.gamma
    }
}

/// Pre-norm residual block of two 3x3x3 causal convolutions.
#[derive(Debug)]
pub struct ResBlock {
    norm1: ChannelRmsNorm,
    conv1: CausalConv3d,
    norm2: ChannelRmsNorm,
    conv2: CausalConv3d,
    shortcut: Option<CausalConv3d>,
}

impl ResBlock {
    /// The block under `prefix`, `input` → `output` channels.
    pub fn load(w: &mut Weights, prefix: &str, input: i64, output: i64) -> Result<Self, WanError> {
        Ok(Self {
            norm1: ChannelRmsNorm::load(w, &format!("{prefix}.norm1"), input, true)?,
            conv1: CausalConv3d::cube(w, &format!("{prefix}.conv1"), (input, output))?,
            norm2: ChannelRmsNorm::load(w, &format!("{prefix}.norm2"), output, true)?,
            conv2: CausalConv3d::cube(w, &format!("{prefix}.conv2"), (output, output))?,
            shortcut: if input != output {
                Some(CausalConv3d::pointwise(
                    w,
                    &format!("{prefix}.conv_shortcut"),
                    (input, output),
                )?)
            } else {
                None
            },
        })
    }

    /// Applies the block, threading `cache` through both convolutions.
    pub fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Tensor {
        let h = match &self.shortcut {
            Some(conv) => conv.forward(x, None),
            None => x.shallow_clone(),
        };
        let y = self.norm1.forward(x).silu();
        let y = self.conv1.cached(&y, cache);
        let y = self.norm2.forward(&y).silu();
        self.conv2.cached(&y, cache) + h
    }
}

/// Single-head spatial self-attention applied to each frame.
#[derive(Debug)]
pub struct AttentionBlock {
    norm: ChannelRmsNorm,
    qkv_w: Tensor,
    qkv_b: Tensor,
    proj_w: Tensor,
    proj_b: Tensor,
}

impl AttentionBlock {
    /// The block under `prefix` over `dim` channels.
    pub fn load(w: &mut Weights, prefix: &str, dim: i64) -> Result<Self, WanError> {
        Ok(Self {
            norm: ChannelRmsNorm::load(w, &format!("{prefix}.norm"), dim, false)?,
            qkv_w: w.take(&format!("{prefix}.to_qkv.weight"), &[3 * dim, dim, 1, 1])?,
            qkv_b: w.take(&format!("{prefix}.to_qkv.bias"), &[3 * dim])?,
            proj_w: w.take(&format!("{prefix}.proj.weight"), &[dim, dim, 1, 1])?,
            proj_b: w.take(&format!("{prefix}.proj.bias"), &[dim])?,
        })
    }

    /// `x`: (B, C, T, H, W).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, t, h, w) = x.size5().expect("(B, C, T, H, W)");
        let frames = x.permute([0, 2, 1, 3, 4]).reshape([b * t, c, h, w]);
        let qkv = self
            .norm
            .forward(&frames)
            .conv2d(&self.qkv_w, Some(&self.qkv_b), [1, 1], [0, 0], [1, 1], 1)
            .reshape([b * t, 1, 3 * c, h * w])
            .permute([0, 1, 3, 2])
            .contiguous();
        let parts = qkv.chunk(3, -1);
        let attn = Tensor::scaled_dot_product_attention(
            &parts[0],
            &parts[1],
            &parts[2],
            None::<&Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let out = attn
            .squeeze_dim(1)
            .permute([0, 2, 1])
            .reshape([b * t, c, h, w])
            .conv2d(&self.proj_w, Some(&self.proj_b), [1, 1], [0, 0], [1, 1], 1)
            .view([b, t, c, h, w])
            .permute([0, 2, 1, 3, 4]);
        out + x
    }
}

/// The middle of both encoder and decoder: residual block, attention, residual block.
#[derive(Debug)]
pub struct MidBlock {
    res_in: ResBlock,
    attn: AttentionBlock,
    res_out: ResBlock,
}

impl MidBlock {
    /// `prefix.resnets.{0,1}` and `prefix.attentions.0` over `dim` channels.
    pub fn load(w: &mut Weights, prefix: &str, dim: i64) -> Result<Self, WanError> {
        Ok(Self {
            res_in: ResBlock::load(w, &format!("{prefix}.resnets.0"), dim, dim)?,
            attn: AttentionBlock::load(w, &format!("{prefix}.attentions.0"), dim)?,
            res_out: ResBlock::load(w, &format!("{prefix}.resnets.1"), dim, dim)?,
        })
    }

    /// Applies the three blocks.
    pub fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Tensor {
        let x = self.res_in.forward(x, cache);
        let x = self.attn.forward(&x);
        self.res_out.forward(&x, cache)
    }
}

/// The end of both encoder and decoder: RMS norm, SiLU, cached 3x3x3 convolution.
#[derive(Debug)]
pub struct OutputHead {
    norm: ChannelRmsNorm,
    conv: CausalConv3d,
}

impl OutputHead {
    /// `{net}.norm_out` and `{net}.conv_out`, `input` → `output` channels.
    pub fn load(w: &mut Weights, net: &str, input: i64, output: i64) -> Result<Self, WanError> {
        Ok(Self {
            norm: ChannelRmsNorm::load(w, &format!("{net}.norm_out"), input, true)?,
            conv: CausalConv3d::cube(w, &format!("{net}.conv_out"), (input, output))?,
        })
    }

    /// Applies the head.
    pub fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Tensor {
        self.conv.cached(&self.norm.forward(x).silu(), cache)
    }
}

/// Per-frame 2D convolution (the spatial half of a resampler).
#[derive(Debug)]
pub struct FrameConv {
    weight: Tensor,
    bias: Tensor,
}

impl FrameConv {
    /// `prefix.weight` (out, in, 3, 3) and `prefix.bias`.
    pub fn load(w: &mut Weights, prefix: &str, input: i64, output: i64) -> Result<Self, WanError> {
        Ok(Self {
            weight: w.take(&format!("{prefix}.weight"), &[output, input, 3, 3])?,
            bias: w.take(&format!("{prefix}.bias"), &[output])?,
        })
    }

    /// Applies `f` (on (B*T, C, H, W)) then the convolution with `padding`/`stride` to every
    /// frame of `x` (B, C, T, H, W).
    pub fn per_frame(
        &self,
        x: &Tensor,
        f: impl Fn(Tensor) -> Tensor,
        padding: i64,
        stride: i64,
    ) -> Tensor {
        let (b, c, t, h, w) = x.size5().expect("(B, C, T, H, W)");
        let frames = f(x.permute([0, 2, 1, 3, 4]).reshape([b * t, c, h, w]));
        let y = frames.conv2d(
            &self.weight,
            Some(&self.bias),
            [stride, stride],
            [padding, padding],
            [1, 1],
            1,
        );
        let (_, c2, h2, w2) = y.size4().expect("(N, C, H, W)");
        y.view([b, t, c2, h2, w2]).permute([0, 2, 1, 3, 4])
    }
}

/// Nearest-neighbour 2x spatial upsampling of (N, C, H, W), computed in fp32.
pub fn upsample2x(x: Tensor) -> Tensor {
    let kind = x.kind();
    x.to_kind(Kind::Float)
        .repeat_interleave_self_int(2, 2, None)
        .repeat_interleave_self_int(2, 3, None)
        .to_kind(kind)
}

/// The temporal upsampler's cache handling (diffusers' `WanResample`, `upsample3d`): the
/// first chunk only marks the slot; later chunks double their frames with `time_conv`.
pub fn upsample_time(time_conv: &CausalConv3d, x: &Tensor, cache: &mut FeatureCache) -> Tensor {
    let slot = cache.next_slot();
    if matches!(slot, Slot::Empty) {
        *slot = Slot::Rep;
        return x.shallow_clone();
    }
    let (b, c, t, h, w) = x.size5().expect("(B, C, T, H, W)");
    let keep = t.min(CACHE_FRAMES);
    let mut last = x.narrow(2, t - keep, keep).copy();
    let y = match &*slot {
        Slot::Frames(past) => {
            if keep < CACHE_FRAMES {
                last = Tensor::cat(&[past.narrow(2, past.size()[2] - 1, 1), last], 2);
            }
            time_conv.forward(x, Some(past))
        }
        _ => {
            if keep < CACHE_FRAMES {
                last = Tensor::cat(&[last.zeros_like(), last], 2);
            }
            time_conv.forward(x, None)
        }
    };
    *slot = Slot::Frames(last);
    // (B, 2C, T, H, W) -> (B, C, T, 2, H, W) -> (B, C, 2T, H, W): the two halves interleave.
    let y = y.reshape([b, 2, c, t, h, w]);
    Tensor::stack(&[y.select(1, 0), y.select(1, 1)], 3).reshape([b, c, t * 2, h, w])
}

/// The temporal downsampler's cache handling (diffusers' `WanResample`, `downsample3d`): the
/// first chunk passes through and is remembered; later chunks are convolved with stride 2
/// together with the last remembered frame.
pub fn downsample_time(time_conv: &CausalConv3d, x: &Tensor, cache: &mut FeatureCache) -> Tensor {
    let slot = cache.next_slot();
    let t = x.size()[2];
    let out = match &*slot {
        Slot::Frames(past) => {
            let previous = past.narrow(2, past.size()[2] - 1, 1);
            time_conv.forward(&Tensor::cat(&[&previous, x], 2), None)
        }
        _ => {
            *slot = Slot::Frames(x.copy());
            return x.shallow_clone();
        }
    };
    *slot = Slot::Frames(x.narrow(2, t - 1, 1).copy());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(input: i64, output: i64, kernel: [i64; 3], stride: [i64; 3]) -> CausalConv3d {
        tch::manual_seed(3);
        let weight = Tensor::randn(
            [output, input, kernel[0], kernel[1], kernel[2]],
            (Kind::Float, tch::Device::Cpu),
        );
        CausalConv3d {
            weight_2d: weight.permute([0, 2, 1, 3, 4]).reshape([
                output,
                kernel[0] * input,
                kernel[1],
                kernel[2],
            ]),
            weight,
            bias: Tensor::randn([output], (Kind::Float, tch::Device::Cpu)),
            pad: [kernel[0] / 2, kernel[1] / 2, kernel[2] / 2],
            stride,
        }
    }

    /// Both formulations (stacked conv2d for narrow layers, conv3d for wide ones) against
    /// libtorch's conv3d on the same padded input, with and without a time stride.
    #[test]
    fn causal_conv_matches_conv3d_on_both_paths() {
        for (channels, stride) in [
            (4, [1, 1, 1]),
            (4, [2, 1, 1]),
            (24, [1, 1, 1]),
            (8, [1, 2, 2]),
        ] {
            let c = conv(channels, 6, [3, 3, 3], stride);
            let x = Tensor::randn([1, channels, 5, 9, 7], (Kind::Float, tch::Device::Cpu));
            let expected = x.constant_pad_nd([1, 1, 1, 1, 2, 0]).conv3d(
                &c.weight,
                Some(&c.bias),
                stride,
                [0, 0, 0],
                [1, 1, 1],
                1,
            );
            let got = c.forward(&x, None);
            assert_eq!(got.size(), expected.size());
            let diff = (&got - &expected).abs().max().double_value(&[]);
            assert!(
                diff < 1e-4,
                "{channels} channels, stride {stride:?}: {diff}"
            );
        }
    }
}
