//! The Wan VAE decoder (diffusers' `WanDecoder3d`, non-residual as in Wan2.1): latent frames
//! to video, one latent frame per call so the causal cache carries everything between them.

use tch::Tensor;

use super::super::WanError;
use super::super::weights::Weights;
use super::VaeConfig;
use super::blocks::{
    CausalConv3d, FrameConv, MidBlock, OutputHead, ResBlock, upsample_time, upsample2x,
};
use super::feature_cache::FeatureCache;

#[derive(Debug)]
struct Upsampler {
    conv: FrameConv,
    time_conv: Option<CausalConv3d>,
}

#[derive(Debug)]
struct UpBlock {
    resnets: Vec<ResBlock>,
    upsampler: Option<Upsampler>,
}

/// The decoder's networks.
#[derive(Debug)]
pub struct Decoder {
    conv_in: CausalConv3d,
    mid: MidBlock,
    up_blocks: Vec<UpBlock>,
    head: OutputHead,
}

impl Decoder {
    /// Loads `decoder.*` as `config` lays it out.
    pub fn load(w: &mut Weights, c: &VaeConfig) -> Result<Self, WanError> {
        let dim = c.decoder_base_dim.unwrap_or(c.base_dim);
        let dims: Vec<i64> = std::iter::once(*c.dim_mult.last().expect("validated"))
            .chain(c.dim_mult.iter().rev().copied())
            .map(|m| dim * m)
            .collect();
        let temporal_up: Vec<bool> = c.temperal_downsample.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        for i in 0..dims.len() - 1 {
            let p = format!("decoder.up_blocks.{i}");
            // Upsamplers halve the channels they hand on.
            let mut input = if i > 0 { dims[i] / 2 } else { dims[i] };
            let output = dims[i + 1];
            let mut resnets = Vec::new();
            for j in 0..=c.num_res_blocks {
                resnets.push(ResBlock::load(
                    w,
                    &format!("{p}.resnets.{j}"),
                    input,
                    output,
                )?);
                input = output;
            }
            let upsampler = if i != c.dim_mult.len() - 1 {
                let up = format!("{p}.upsamplers.0");
                let time_conv = if temporal_up[i] {
                    Some(CausalConv3d::load(
                        w,
                        &format!("{up}.time_conv"),
                        (output, output * 2),
                        [3, 1, 1],
                        [1, 1, 1],
                        [1, 0, 0],
                    )?)
                } else {
                    None
                };
                Some(Upsampler {
                    conv: FrameConv::load(w, &format!("{up}.resample.1"), output, output / 2)?,
                    time_conv,
                })
            } else {
                None
            };
            up_blocks.push(UpBlock { resnets, upsampler });
        }
        let last = *dims.last().expect("non-empty");
        Ok(Self {
            conv_in: CausalConv3d::cube(w, "decoder.conv_in", (c.z_dim, dims[0]))?,
            mid: MidBlock::load(w, "decoder.mid_block", dims[0])?,
            up_blocks,
            head: OutputHead::load(w, "decoder", last, c.out_channels)?,
        })
    }

    /// Decodes one chunk of latent frames (after `post_quant_conv`) into video frames.
    pub fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Tensor {
        cache.rewind();
        let x = self.conv_in.cached(x, cache);
        let mut x = self.mid.forward(&x, cache);
        for block in &self.up_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(&x, cache);
            }
            if let Some(up) = &block.upsampler {
                if let Some(time_conv) = &up.time_conv {
                    x = upsample_time(time_conv, &x, cache);
                }
                x = up.conv.per_frame(&x, upsample2x, 1, 1);
            }
        }
        self.head.forward(&x, cache)
    }
}
