//! Tensors to and from safetensors bytes in memory (fp32, little-endian), for continuation
//! states kept in the blob store and moved between replicas.

use std::borrow::Cow;

use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::{Device, Kind, Tensor};

struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for F32View {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Serialises named tensors (copied to the CPU as fp32).
pub fn to_bytes(tensors: &[(String, &Tensor)]) -> Result<Vec<u8>, String> {
    let views = tensors
        .iter()
        .map(|(name, t)| {
            let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            let shape = t.size().iter().map(|&d| d as usize).collect();
            let values = Vec::<f32>::try_from(t.flatten(0, -1)).map_err(|e| e.to_string())?;
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok((name.clone(), F32View { shape, bytes }))
        })
        .collect::<Result<Vec<_>, String>>()?;
    safetensors::tensor::serialize(views, &None).map_err(|e| e.to_string())
}

/// Parses bytes from [`to_bytes`] onto `device` in `kind`, in name order.
pub fn from_bytes(
    bytes: &[u8],
    device: Device,
    kind: Kind,
) -> Result<Vec<(String, Tensor)>, String> {
    let parsed = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (name, view) in parsed.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(format!(
                "tensor `{name}` is {:?}, expected F32",
                view.dtype()
            ));
        }
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(view.data(), &shape, Kind::Float)
            .map_err(|e| e.to_string())?
            .to_device(device)
            .to_kind(kind);
        out.push((name, tensor));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
