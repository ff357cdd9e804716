//! Loading one network's weights: every `*.safetensors` file of its directory (one file or
//! diffusers' shards) into a key → tensor map, handed out by key with the shape checked, so a
//! wrong checkpoint fails at load time naming the file and key rather than deep in a forward.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tch::{Device, Kind, Tensor};

use super::WanError;

/// One network's tensors, moved to the target device and dtype.
#[derive(Debug)]
pub struct Weights {
    dir: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Reads every `*.safetensors` file in `dir`; floating tensors are converted to `kind`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, WanError> {
        let entries = std::fs::read_dir(dir).map_err(|_| WanError::MissingFile {
            path: dir.to_path_buf(),
            what: "a diffusers model sub-directory",
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(WanError::MissingFile {
                path: dir.join("*.safetensors"),
                what: "the network's weights",
            });
        }
        let mut tensors = HashMap::new();
        for file in &files {
            let read = Tensor::read_safetensors(file).map_err(|e| WanError::Unreadable {
                path: file.clone(),
                message: e.to_string(),
            })?;
            for (key, tensor) in read {
                let tensor = if tensor.is_floating_point() {
                    tensor.to_device(device).to_kind(kind)
                } else {
                    tensor.to_device(device)
                };
                tensors.insert(key, tensor);
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tensors,
        })
    }

    /// The tensor under `key`, which must have `shape`.
    pub fn take(&mut self, key: &str, shape: &[i64]) -> Result<Tensor, WanError> {
        let tensor = self
            .tensors
            .remove(key)
            .ok_or_else(|| WanError::MissingKey {
                dir: self.dir.clone(),
                key: key.to_string(),
            })?;
        if tensor.size() != shape {
            return Err(WanError::Shape {
                dir: self.dir.clone(),
                key: key.to_string(),
                expected: shape.to_vec(),
                found: tensor.size(),
            });
        }
        Ok(tensor)
    }

    /// Keys nobody took: a checkpoint with more in it than the config describes.
    pub fn unused(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.tensors.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The directory the weights came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Parses `dir/config.json`, naming the file and field on any error.
pub fn read_config<T: DeserializeOwned>(dir: &Path) -> Result<T, WanError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|_| WanError::MissingFile {
        path: path.clone(),
        what: "the network's config.json",
    })?;
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| WanError::Config {
        path,
        field: e.path().to_string(),
        message: e.inner().to_string(),
    })
}
