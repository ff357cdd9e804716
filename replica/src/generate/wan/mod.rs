//! The Wan2.1 text-to-video family, implemented natively with `tch` so the real model runs
//! in-process on libtorch (no Python, no TorchScript): one module per network, each loading
//! a diffusers-format sub-directory (`config.json` + `*.safetensors`, sharded or not) with
//! the same key names as diffusers, so Wan2.1-T2V-1.3B-Diffusers loads unchanged.
//!
//! Networks: [`text_encoder`] (UMT5 + tokenizer), [`transformer`] (the DiT,
//! `WanTransformer3DModel`), [`vae`] (`AutoencoderKLWan`'s decoder), on the shared
//! [`weights`] loader and [`layers`]; [`scheduler`] samples; [`pipeline_config`] reads what
//! `WanPipeline` takes as call arguments; [`generator`] ties them into the
//! session controller's `Generator`, whose streams [`stream_state`] keeps between segments and
//! exports (as [`tensor_bytes`]) to the blob store.

pub mod generator;
pub mod layers;
pub mod pipeline_config;
pub mod scheduler;
pub mod stream_state;
pub mod tensor_bytes;
pub mod text_encoder;
pub mod transformer;
pub mod vae;
pub mod weights;

use std::path::PathBuf;

/// Why a model directory could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum WanError {
    /// A file the model needs is not there.
    #[error("{path}: missing ({what})")]
    MissingFile {
        /// The file or directory looked for.
        path: PathBuf,
        /// What it should contain.
        what: &'static str,
    },
    /// A file exists but cannot be read or parsed.
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    /// A tensor the network needs is absent from the weights.
    #[error("{dir}: no tensor `{key}` in the safetensors files")]
    MissingKey {
        /// The network's directory.
        dir: PathBuf,
        /// The diffusers key.
        key: String,
    },
    /// A tensor has another shape than the config implies.
    #[error("{dir}: tensor `{key}` has shape {found:?}, the config implies {expected:?}")]
    Shape {
        /// The network's directory.
        dir: PathBuf,
        /// The diffusers key.
        key: String,
        /// Shape the config implies.
        expected: Vec<i64>,
        /// Shape in the file.
        found: Vec<i64>,
    },
    /// A config value this implementation does not support (or that is invalid).
    #[error("{path}: field `{field}`: {message}")]
    Config {
        /// The config.json.
        path: PathBuf,
        field: String,
        /// Why it is refused.
        message: String,
    },
    /// The stream format does not fit the model.
    #[error("{0}")]
    Format(String),
    /// libtorch refused an operation.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
