//! Chooses the libtorch device at start-up and proves libtorch works before serving.
//!
//! A replica that cannot run a tensor op must fail at boot with a clear message, not on the
//! first session.

use tch::{Cuda, Device, Kind, Tensor};

use crate::config::DeviceKind;

/// The device generation will run on, and what libtorch saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Where tensors live.
    pub device: Device,
    /// Whether libtorch found a usable CUDA runtime and GPU.
    pub cuda_available: bool,
    /// Visible CUDA devices.
    pub cuda_device_count: i64,
}

impl DeviceInfo {
    /// `cpu` or `cuda:N`, for logs and `/health`.
    pub fn label(&self) -> String {
        match self.device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".into(),
        }
    }
}

/// libtorch could not provide the requested device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// `generator.device: cuda` on a machine where libtorch sees no GPU.
    #[error(
        "generator.device is `cuda` but libtorch sees no CUDA device \
         (is the CUDA build of torch installed and a GPU visible?)"
    )]
    CudaUnavailable,
    /// `cuda:N` names a device that is not visible.
    #[error("device cuda:{index} does not exist: libtorch sees {visible} CUDA device(s)")]
    NoSuchDevice {
        /// The requested index.
        index: u32,
        /// Visible devices.
        visible: i64,
    },
    /// The self-test tensor op failed.
    #[error("libtorch self-test failed on {device}: {source}")]
    SelfTest {
        /// The device the op ran on.
        device: String,
        /// libtorch's error.
        source: tch::TchError,
    },
}

/// Resolves `kind` to a device and runs a small matmul on it.
pub fn probe(kind: DeviceKind) -> Result<DeviceInfo, DeviceError> {
    let cuda_available = Cuda::is_available();
    let cuda_device_count = if cuda_available {
        Cuda::device_count()
    } else {
        0
    };
    let device = match kind {
        DeviceKind::Cpu => Device::Cpu,
        DeviceKind::Cuda(_) if !cuda_available => return Err(DeviceError::CudaUnavailable),
        DeviceKind::Cuda(None) => Device::Cuda(0),
        DeviceKind::Cuda(Some(i)) if i64::from(i) >= cuda_device_count => {
            return Err(DeviceError::NoSuchDevice {
                index: i,
                visible: cuda_device_count,
            });
        }
        DeviceKind::Cuda(Some(i)) => Device::Cuda(i as usize),
        DeviceKind::Auto => Device::cuda_if_available(),
    };
    let info = DeviceInfo {
        device,
        cuda_available,
        cuda_device_count,
    };
    self_test(device).map_err(|source| DeviceError::SelfTest {
        device: info.label(),
        source,
    })?;
    Ok(info)
}

/// A 2x2 identity times a known matrix must give the matrix back.
fn self_test(device: Device) -> Result<(), tch::TchError> {
    let _guard = tch::no_grad_guard();
    let eye = Tensor::f_eye(2, (Kind::Float, device))?;
    let m = Tensor::f_from_slice(&[1.0f32, 2.0, 3.0, 4.0])?
        .f_view([2, 2])?
        .f_to_device(device)?;
    let product = eye.f_matmul(&m)?;
    let diff = f64::try_from(product.f_sub(&m)?.f_abs()?.f_sum(Kind::Float)?)?;
    if diff == 0.0 {
        Ok(())
    } else {
        Err(tch::TchError::Kind(format!(
            "identity matmul differs by {diff}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_probe_runs_the_self_test() {
        let info = probe(DeviceKind::Cpu).unwrap();
        assert_eq!(info.device, Device::Cpu);
        assert_eq!(info.label(), "cpu");
    }

    #[test]
    fn cuda_request_without_gpu_is_a_clear_error() {
        if Cuda::is_available() {
            return; // On a GPU machine the request is legitimate; covered by device runs.
        }
        let err = probe(DeviceKind::Cuda(None)).unwrap_err();
        assert!(matches!(err, DeviceError::CudaUnavailable));
        assert!(err.to_string().contains("generator.device"));
    }
}
