//! Proves libtorch is real and linked: tensors are created and a conv3d gives a known result.

use tch::{Device, Kind, Tensor};

#[test]
fn conv3d_on_cpu_matches_hand_computed_result() {
    let _guard = tch::no_grad_guard();
    // x[d,h,w] = 9d + 3h + w on a 3x3x3 grid; a 2x2x2 kernel of ones sums each 2x2x2 window.
    let input = Tensor::arange(27, (Kind::Float, Device::Cpu)).view([1, 1, 3, 3, 3]);
    let weight = Tensor::ones([1, 1, 2, 2, 2], (Kind::Float, Device::Cpu));
    let bias = Tensor::from_slice(&[0.5f32]);
    let output = input.conv3d(&weight, Some(&bias), [1, 1, 1], [0, 0, 0], [1, 1, 1], 1);

    assert_eq!(output.size(), vec![1, 1, 2, 2, 2]);
    // Window at (i,j,k) sums 52 + 8*(9i + 3j + k); plus the bias.
    let expected: Vec<f32> = [52.0, 60.0, 76.0, 84.0, 124.0, 132.0, 148.0, 156.0]
        .iter()
        .map(|v| v + 0.5)
        .collect();
    let got = Vec::<f32>::try_from(output.flatten(0, -1)).unwrap();
    assert_eq!(got, expected);
}

#[test]
fn tensor_arithmetic_and_dtype_conversion() {
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    let b = &a * 2.0 + 1.0;
    assert_eq!(Vec::<f32>::try_from(&b).unwrap(), vec![3.0, 5.0, 7.0]);
    let as_bf16 = b.to_kind(Kind::BFloat16);
    assert_eq!(as_bf16.kind(), Kind::BFloat16);
    assert_eq!(f64::try_from(as_bf16.sum(Kind::Float)).unwrap(), 15.0);
}
