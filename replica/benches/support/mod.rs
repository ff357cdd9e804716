//! What the Wan benches share: the workspace paths and the mid-size model.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn python() -> PathBuf {
    root().join(".venv/bin/python")
}

/// The mid-size model, built once under target/ with the same builder as the tiny one.
pub fn mid_model() -> PathBuf {
    let dir = root().join("target/wan-mid");
    if !dir.join("model_index.json").exists() {
        let status = Command::new(python())
            .arg(root().join("scripts/make_tiny_wan.py"))
            .args(["--preset", "mid", "--out"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run scripts/make_tiny_wan.py");
        assert!(status.success(), "building the mid-size model failed");
    }
    dir
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
