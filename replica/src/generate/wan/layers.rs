//! The small building blocks the Wan networks share, each holding its tensors and applying
//! them the way the matching PyTorch module does.

use tch::Tensor;

use super::WanError;
use super::weights::Weights;

/// `torch.nn.Linear`.
#[derive(Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// `prefix.weight` (`out x in`) and, when `bias`, `prefix.bias`.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        input: i64,
        output: i64,
        bias: bool,
    ) -> Result<Self, WanError> {
        Ok(Self {
            weight: w.take(&format!("{prefix}.weight"), &[output, input])?,
            bias: if bias {
                Some(w.take(&format!("{prefix}.bias"), &[output])?)
            } else {
                None
            },
        })
    }

    /// `x W^T + b` over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// `torch.nn.RMSNorm` with a learned scale.
#[derive(Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// `prefix.weight` of size `dim`.
    pub fn load(w: &mut Weights, prefix: &str, dim: i64, eps: f64) -> Result<Self, WanError> {
        Ok(Self {
            weight: w.take(&format!("{prefix}.weight"), &[dim])?,
            eps,
        })
    }

    /// Normalises the last dimension by its root mean square, then scales.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let rms = (x.pow_tensor_scalar(2).mean_dim(-1, true, None) + self.eps).rsqrt();
        x * rms * &self.weight
    }
}

/// `LayerNorm` computed in fp32 (diffusers' `FP32LayerNorm`), optionally affine.
#[derive(Debug)]
pub struct Fp32LayerNorm {
    affine: Option<(Tensor, Tensor)>,
    dim: i64,
    eps: f64,
}

impl Fp32LayerNorm {
    /// Without learned parameters.
    pub fn plain(dim: i64, eps: f64) -> Self {
        Self {
            affine: None,
            dim,
            eps,
        }
    }

    /// With `prefix.weight` and `prefix.bias`.
    pub fn load(w: &mut Weights, prefix: &str, dim: i64, eps: f64) -> Result<Self, WanError> {
        Ok(Self {
            affine: Some((
                w.take(&format!("{prefix}.weight"), &[dim])?,
                w.take(&format!("{prefix}.bias"), &[dim])?,
            )),
            dim,
            eps,
        })
    }

    /// Normalises the last dimension in fp32; returns fp32.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x = x.to_kind(tch::Kind::Float);
        let (weight, bias) = match &self.affine {
            Some((w, b)) => (
                Some(w.to_kind(tch::Kind::Float)),
                Some(b.to_kind(tch::Kind::Float)),
            ),
            None => (None, None),
        };
        x.layer_norm([self.dim], weight.as_ref(), bias.as_ref(), self.eps, true)
    }
}
