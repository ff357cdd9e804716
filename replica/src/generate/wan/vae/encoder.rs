//! The Wan VAE encoder (diffusers' `WanEncoder3d`, non-residual as in Wan2.1): video to
//! latents, the first frame alone and then four frames per call, with the causal cache
//! carried between calls exactly as diffusers' `_encode` does.

use tch::Tensor;

use super::super::WanError;
use super::super::weights::Weights;
use super::VaeConfig;
use super::blocks::{CausalConv3d, FrameConv, MidBlock, OutputHead, ResBlock, downsample_time};
use super::feature_cache::FeatureCache;

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
    mid: MidBlock,
    head: OutputHead,
}

impl Encoder {
    /// Loads `encoder.*` as `config` lays it out (its layers are one flat list in diffusers).
    pub fn load(w: &mut Weights, c: &VaeConfig) -> Result<Self, WanError> {
        let dims: Vec<i64> = std::iter::once(1)
            .chain(c.dim_mult.iter().copied())
            .map(|m| c.base_dim * m)
            .collect();
        let mut layers = Vec::new();
        let mut index = 0;
        for i in 0..dims.len() - 1 {
            let mut input = dims[i];
            let output = dims[i + 1];
            for _ in 0..c.num_res_blocks {
                let prefix = format!("encoder.down_blocks.{index}");
                layers.push(Layer::Res(ResBlock::load(w, &prefix, input, output)?));
                index += 1;
                input = output;
            }
            if i != c.dim_mult.len() - 1 {
                let p = format!("encoder.down_blocks.{index}");
                let time_conv = if c.temperal_downsample[i] {
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
                };
                layers.push(Layer::Down {
                    conv: FrameConv::load(w, &format!("{p}.resample.1"), output, output)?,
                    time_conv,
                });
                index += 1;
            }
        }
        let last = *dims.last().expect("non-empty");
        Ok(Self {
            conv_in: CausalConv3d::cube(w, "encoder.conv_in", (c.in_channels, dims[0]))?,
            layers,
            mid: MidBlock::load(w, "encoder.mid_block", last)?,
            head: OutputHead::load(w, "encoder", last, 2 * c.z_dim)?,
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
        let x = self.mid.forward(&x, cache);
        self.head.forward(&x, cache)
    }
}
