//! The shipped default model (`models/framecast-shapes`, trained by `scripts/train-model`)
//! loads unchanged and runs as diffusers ran it when it was exported: the same token ids for a
//! caption of its grammar and for other words, the same prompt embeddings, the same VAE
//! decode (fp32, CPU). The trainer writes the reference beside the weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use framecast_replica::generate::wan::pipeline_config::PipelineConfig;
use framecast_replica::generate::wan::text_encoder::TextEncoder;
use framecast_replica::generate::wan::vae::{DecoderState, WanVae};
use tch::{Device, Kind, Tensor};

#[path = "support/tensors.rs"]
mod tensors;
use tensors::{max_abs_diff, read_reference};

const TOLERANCE: f64 = 1e-4;

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/framecast-shapes")
}

fn reference() -> HashMap<String, Tensor> {
    read_reference(&model_dir().join("reference.safetensors"))
}

#[test]
fn the_shipped_models_text_encoder_matches_transformers() {
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
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    // Trained on captions padded to 32 tokens, not WanPipeline's 512 (see training/model.py),
    // and the replica must pad as training did.
    let tokens = PipelineConfig::load(&dir).unwrap().max_sequence_length;
    assert_eq!(tokens, 32);
    let r = reference();
    for name in ["grammar", "other"] {
        let text = prompts[name].as_str().unwrap();
        let ids = encoder.tokenize(text, tokens).unwrap();
        let expected = Vec::<i64>::try_from(&r[&format!("{name}_ids")]).unwrap();
        // Padded with <pad> (0) after the real tokens.
        assert_eq!(&ids[..expected.len()], expected, "token ids of {text:?}");
        assert!(ids[expected.len()..].iter().all(|&i| i == 0), "{ids:?}");
        let embeds = encoder.encode(text, tokens).unwrap();
        assert_eq!(embeds.size()[1], tokens as i64);
        let diff = max_abs_diff(&embeds, &r[&format!("{name}_embeds")]);
        assert!(diff <= TOLERANCE, "{text:?}: max abs diff {diff:e}");
    }
    // The grammar's words are whole tokens: one per word, plus </s>.
    let grammar = prompts["grammar"].as_str().unwrap();
    let real = encoder.tokenize(grammar, tokens).unwrap();
    assert_eq!(
        real.iter().filter(|&&i| i != 0).count(),
        grammar.split_whitespace().count() + 1
    );
}

#[test]
fn the_shipped_models_vae_decodes_as_diffusers_did() {
    let _no_grad = tch::no_grad_guard();
    let vae = WanVae::load(&model_dir().join("vae"), Device::Cpu, Kind::Float).unwrap();
    let r = reference();
    let video = vae.decode(&r["vae_latents"], &mut DecoderState::default());
    let diff = max_abs_diff(&video, &r["vae_video"]);
    assert!(diff <= TOLERANCE, "max abs diff {diff:e}");
}
