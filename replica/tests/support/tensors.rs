//! Comparing tch tensors with reference tensors diffusers/transformers wrote, for the parity
//! tests; included alone with `#[path = "support/tensors.rs"] mod tensors;`.

use std::collections::HashMap;
use std::path::Path;

use tch::Tensor;

/// Every tensor of a safetensors file, by name; panics naming the file when unreadable.
pub fn read_reference(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// Largest absolute element-wise difference of two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}
