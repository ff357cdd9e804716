//! The Wan VAE encoder (diffusers' `WanEncoder3d`, non-residual as in Wan2.1): video to
//! latents, the first frame alone and then four frames per call, with the causal cache
//! carried between calls exactly as diffusers' `_encode` does.

use tch::Tensor;

use super::super::WanError;
use super::super::weights::Weights;
use super::VaeConfig;
use super::blocks::{
    AttentionBlock, CausalConv3d, ChannelRmsNorm, FeatureCache, FrameConv, ResBlock,
    downsample_time,
};

#[derive(Debug)]
enum Layer {
    Res(ResBlock),
    /// Spatial 2x downsampling, and temporal 2x when `time_conv` is present.
    Down {
        conv: FrameConv,
        time_conv: Option<CausalConv3d>,
    },
}

/// The encoder's networks.
#[derive(Debug)]
pub struct Encoder {
    conv_in: CausalConv3d,
    layers: Vec<Layer>,
    mid_in: ResBlock,
    mid_attn: AttentionBlock,
    mid_out: ResBlock,
    norm_out: ChannelRmsNorm,
    conv_out: CausalConv3d,
}

impl Encoder {
    /// Loads `encoder.*` as `config` lays it out.
    pub fn load(w: &mut Weights, c: &VaeConfig) -> Result<Self, WanError> {
        let dims: Vec<i64> = std::iter::once(1)
            .chain(c.dim_mult.iter().copied())
            .map(|m| c.base_dim * m)
            .collect();
        let k3 = [3, 3, 3];
        let conv_in = CausalConv3d::load(
            w,
            "encoder.conv_in",
            (c.in_channels, dims[0]),
            k3,
            [1, 1, 1],
            [1, 1, 1],
        )?;
        let mut layers = Vec::new();
        let mut index = 0;
        for i in 0..dims.len() - 1 {
            let mut input = dims[i];
            let output = dims[i + 1];
            for _ in 0..c.num_res_blocks {
                layers.push(Layer::Res(ResBlock::load(
                    w,
                    &format!("encoder.down_blocks.{index}"),
                    input,
                    output,
                )?));
                index += 1;
                input = output;
            }
            if i != c.dim_mult.len() - 1 {
                let p = format!("encoder.down_blocks.{index}");
                layers.push(Layer::Down {
                    conv: FrameConv::load(w, &format!("{p}.resample.1"), output, output)?,
                    time_conv: if c.temperal_downsample[i] {
                        Some(CausalConv3d::load(
                            w,
                            &format!("{p}.time_conv"),
                            (output, output),
                            [3, 1, 1],
                            [2, 1, 1],
                            [0, 0, 0],
                        )?)
                    } else {
                        None
                    },
                });
                index += 1;
            }
        }
        let last = *dims.last().expect("non-empty");
        Ok(Self {
            conv_in,
            layers,
            mid_in: ResBlock::load(w, "encoder.mid_block.resnets.0", last, last)?,
            mid_attn: AttentionBlock::load(w, "encoder.mid_block.attentions.0", last)?,
            mid_out: ResBlock::load(w, "encoder.mid_block.resnets.1", last, last)?,
            norm_out: ChannelRmsNorm::load(w, "encoder.norm_out", last, true)?,
            conv_out: CausalConv3d::load(
                w,
                "encoder.conv_out",
                (last, 2 * c.z_dim),
                k3,
                [1, 1, 1],
                [1, 1, 1],
            )?,
        })
    }

    /// Encodes one chunk of video frames (1, then 4 at a time) into latent statistics.
    pub fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Tensor {
        cache.rewind();
        let mut x = self.conv_in.cached(x, cache);
        for layer in &self.layers {
            x = match layer {
                Layer::Res(block) => block.forward(&x, cache),
                Layer::Down { conv, time_conv } => {
                    // ZeroPad2d((0, 1, 0, 1)), then a 3x3 convolution with stride 2.
                    let y = conv.per_frame(&x, |f| f.constant_pad_nd([0, 1, 0, 1]), 0, 2);
                    match time_conv {
                        Some(tc) => downsample_time(tc, &y, cache),
                        None => y,
                    }
                }
            };
        }
        let x = self.mid_in.forward(&x, cache);
        let x = self.mid_attn.forward(&x);
        let x = self.mid_out.forward(&x, cache);
        let x = self.norm_out.forward(&x).silu();
        self.conv_out.cached(&x, cache)
    }
}
