//! The Wan VAE decoder (diffusers' `WanDecoder3d`, non-residual as in Wan2.1): latent frames
//! to video, one latent frame per call so the causal cache carries everything between them.

use tch::Tensor;

use super::super::WanError;
use super::super::weights::Weights;
use super::VaeConfig;
use super::blocks::{
    AttentionBlock, CausalConv3d, ChannelRmsNorm, FeatureCache, FrameConv, ResBlock, upsample_time,
    upsample2x,
};

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
    mid_in: ResBlock,
    mid_attn: AttentionBlock,
    mid_out: ResBlock,
    up_blocks: Vec<UpBlock>,
    norm_out: ChannelRmsNorm,
    conv_out: CausalConv3d,
}

impl Decoder {
    /// Loads `decoder.*` as `config` lays it out.
    pub fn load(w: &mut Weights, c: &VaeConfig) -> Result<Self, WanError> {
        let dim = c.decoder_base_dim.unwrap_or(c.base_dim);
        let mults: Vec<i64> = std::iter::once(*c.dim_mult.last().expect("validated"))
            .chain(c.dim_mult.iter().rev().copied())
            .collect();
        let dims: Vec<i64> = mults.iter().map(|m| dim * m).collect();
        let temporal_up: Vec<bool> = c.temperal_downsample.iter().rev().copied().collect();
        let k3 = [3, 3, 3];
        let conv_in = CausalConv3d::load(
            w,
            "decoder.conv_in",
            (c.z_dim, dims[0]),
            k3,
            [1, 1, 1],
            [1, 1, 1],
        )?;
        let mid_in = ResBlock::load(w, "decoder.mid_block.resnets.0", dims[0], dims[0])?;
        let mid_attn = AttentionBlock::load(w, "decoder.mid_block.attentions.0", dims[0])?;
        let mid_out = ResBlock::load(w, "decoder.mid_block.resnets.1", dims[0], dims[0])?;
        let mut up_blocks = Vec::new();
        for i in 0..dims.len() - 1 {
            let p = format!("decoder.up_blocks.{i}");
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
                Some(Upsampler {
                    conv: FrameConv::load(w, &format!("{up}.resample.1"), output, output / 2)?,
                    time_conv: if temporal_up[i] {
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
                    },
                })
            } else {
                None
            };
            up_blocks.push(UpBlock { resnets, upsampler });
        }
        let last = *dims.last().expect("non-empty");
        Ok(Self {
            conv_in,
            mid_in,
            mid_attn,
            mid_out,
            up_blocks,
            norm_out: ChannelRmsNorm::load(w, "decoder.norm_out", last, true)?,
            conv_out: CausalConv3d::load(
                w,
                "decoder.conv_out",
                (last, c.out_channels),
                k3,
                [1, 1, 1],
                [1, 1, 1],
            )?,
        })
    }

    /// Decodes one chunk of latent frames (after `post_quant_conv`) into video frames.
    pub fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Tensor {
        cache.rewind();
        let x = self.conv_in.cached(x, cache);
        let x = self.mid_in.forward(&x, cache);
        let x = self.mid_attn.forward(&x);
        let mut x = self.mid_out.forward(&x, cache);
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
        let x = self.norm_out.forward(&x).silu();
        self.conv_out.cached(&x, cache)
    }
}
