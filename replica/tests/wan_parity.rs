//! Numerical parity of the tch Wan implementation with diffusers/transformers, fp32 on CPU,
//! on the tiny model `scripts/make_tiny_wan.py` builds with the real PyPI classes (run by
//! scripts/setup), and clear errors for broken model directories.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use framecast_replica::generate::wan::WanError;
use framecast_replica::generate::wan::scheduler::FlowMatchEuler;
use framecast_replica::generate::wan::text_encoder::TextEncoder;
use framecast_replica::generate::wan::transformer::WanTransformer;
use framecast_replica::generate::wan::vae::{DecoderState, WanVae};
use tch::{Device, Kind, Tensor};

#[path = "support/tensors.rs"]
mod tensors;
use tensors::{max_abs_diff, read_reference};

/// Largest absolute difference accepted against the reference (fp32, CPU).
const TOLERANCE: f64 = 1e-4;

fn model_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/wan-tiny");
    assert!(
        dir.join("model_index.json").exists(),
        "{} is missing: run scripts/setup (it builds the tiny model)",
        dir.display()
    );
    dir
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    read_reference(&model_dir().join("reference").join(name))
}

#[test]
fn transformer_forward_matches_diffusers() {
    let _no_grad = tch::no_grad_guard();
    let model =
        WanTransformer::load(&model_dir().join("transformer"), Device::Cpu, Kind::Float).unwrap();
    let r = reference("transformer_forward.safetensors");
    let out = model.forward(
        &r["hidden_states"],
        &r["timestep"],
        &r["encoder_hidden_states"],
    );
    let diff = max_abs_diff(&out, &r["output"]);
    eprintln!("transformer: max abs diff {diff:e}");
    assert!(
        diff <= TOLERANCE,
        "max |framecast - diffusers| = {diff:e} > {TOLERANCE:e}"
    );
    // Not trivially equal: the output has real magnitude.
    assert!(r["output"].abs().max().double_value(&[]) > 1e-2);
}

#[test]
fn scheduler_matches_diffusers() {
    let sampler = FlowMatchEuler::load(&model_dir().join("scheduler")).unwrap();
    assert_eq!(sampler.shift, 3.0);
    let r = reference("scheduler.safetensors");
    let schedule = sampler.schedule(4);
    let timesteps = Tensor::from_slice(&schedule.timesteps);
    let sigmas = Tensor::from_slice(&schedule.sigmas);
    // Timesteps are in [0, 1000]: 1e-3 absolute is 1e-6 relative.
    assert!(max_abs_diff(&timesteps, &r["timesteps"]) <= 1e-3);
    assert!(max_abs_diff(&sigmas, &r["sigmas"]) <= 1e-6);
    let mut sample = r["sample"].shallow_clone();
    for i in 0..2 {
        sample = FlowMatchEuler::step(&schedule, i, &sample, &r["velocity"]);
    }
    let diff = max_abs_diff(&sample, &r["after_two_steps"]);
    assert!(diff <= 1e-6, "two Euler steps differ by {diff:e}");
}

#[test]
fn text_encoder_matches_transformers() {
    let _no_grad = tch::no_grad_guard();
    let dir = model_dir();
    let encoder = TextEncoder::load(
        &dir.join("text_encoder"),
        &dir.join("tokenizer"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let prompts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference/prompts.json")).unwrap())
            .unwrap();
    let r = reference("text_encoder.safetensors");
    for name in ["short", "long"] {
        let ids = encoder
            .tokenize(prompts[name].as_str().unwrap(), 512)
            .unwrap();
        let expected = Vec::<i64>::try_from(&r[&format!("{name}_ids")]).unwrap();
        assert_eq!(ids, expected, "{name} prompt token ids");
    }
    assert_eq!(
        Vec::<i64>::try_from(&r["long_ids"]).unwrap().len(),
        512,
        "the long prompt is truncated"
    );
    let embeds = encoder
        .encode(prompts["short"].as_str().unwrap(), 512)
        .unwrap();
    let diff = max_abs_diff(&embeds, &r["short_embeds"]);
    eprintln!("text encoder: max abs diff {diff:e}");
    assert!(
        diff <= TOLERANCE,
        "max |framecast - transformers| = {diff:e} > {TOLERANCE:e}"
    );
}

#[test]
fn vae_decode_matches_diffusers_and_streams_without_a_seam() {
    let _no_grad = tch::no_grad_guard();
    let vae = WanVae::load(&model_dir().join("vae"), Device::Cpu, Kind::Float).unwrap();
    let r = reference("vae_decode.safetensors");
    let latents = &r["latents"];
    let whole = vae.decode(latents, &mut DecoderState::default());
    let diff = max_abs_diff(&whole, &r["video"]);
    eprintln!("vae decode: max abs diff {diff:e}");
    assert!(diff <= TOLERANCE, "max |framecast - diffusers| = {diff:e}");

    // Segment by segment (1 latent frame, then 2) with the state carried: the same frames.
    let mut state = DecoderState::default();
    let first = vae.decode(&latents.narrow(2, 0, 1), &mut state);
    let second = vae.decode(&latents.narrow(2, 1, 2), &mut state);
    assert_eq!(first.size()[2], 1);
    assert_eq!(second.size()[2], 8);
    let streamed = Tensor::cat(&[first, second], 2);
    let seam = max_abs_diff(&streamed, &whole);
    assert!(seam <= 1e-5, "streamed decode differs by {seam:e}");
}

#[test]
fn vae_encode_matches_diffusers() {
    let _no_grad = tch::no_grad_guard();
    let vae = WanVae::load(&model_dir().join("vae"), Device::Cpu, Kind::Float).unwrap();
    let r = reference("vae_encode.safetensors");
    let latents = vae.encode(&r["video"]);
    let diff = max_abs_diff(&latents, &r["latents"]);
    eprintln!("vae encode: max abs diff {diff:e}");
    assert!(diff <= TOLERANCE, "max |framecast - diffusers| = {diff:e}");
}

/// A copy of the tiny transformer directory whose config.json `edit` changes.
fn edited_copy(edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let src = model_dir().join("transformer");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&config_path, config.to_string()).unwrap();
    dir
}

#[test]
fn broken_model_directories_name_the_file_field_or_key() {
    let missing = WanTransformer::load(
        Path::new("/nonexistent/transformer"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap_err();
    assert!(matches!(missing, WanError::MissingFile { .. }), "{missing}");
    assert!(missing.to_string().contains("/nonexistent/transformer"));

    let i2v = edited_copy(|c| c["image_dim"] = 1280.into());
    let err = WanTransformer::load(i2v.path(), Device::Cpu, Kind::Float).unwrap_err();
    assert!(err.to_string().contains("field `image_dim`"), "{err}");

    let wrong_type = edited_copy(|c| c["num_layers"] = "two".into());
    let err = WanTransformer::load(wrong_type.path(), Device::Cpu, Kind::Float).unwrap_err();
    assert!(err.to_string().contains("num_layers"), "{err}");

    let wider = edited_copy(|c| c["ffn_dim"] = 64.into());
    let err = WanTransformer::load(wider.path(), Device::Cpu, Kind::Float).unwrap_err();
    match &err {
        WanError::Shape { key, expected, .. } => {
            assert_eq!(key, "blocks.0.ffn.net.0.proj.weight");
            assert_eq!(expected, &vec![64, 24]);
        }
        other => panic!("expected a shape error, got {other}"),
    }

    let deeper = edited_copy(|c| c["num_layers"] = 3.into());
    let err = WanTransformer::load(deeper.path(), Device::Cpu, Kind::Float).unwrap_err();
    assert!(
        err.to_string().contains("blocks.2.attn1.to_q.weight"),
        "{err}"
    );

    let shallower = edited_copy(|c| c["num_layers"] = 1.into());
    let err = WanTransformer::load(shallower.path(), Device::Cpu, Kind::Float).unwrap_err();
    assert!(err.to_string().contains("blocks.1."), "{err}");
}
