"""Builds `models/wan-tiny`: a complete diffusers-format Wan2.1 text-to-video model directory
with a tiny configuration, fixed seed and random (untrained) weights, made with the real
classes from PyPI's diffusers and transformers — the same layout and key names as
Wan2.1-T2V-1.3B-Diffusers — plus reference outputs for the parity tests in
`models/wan-tiny/reference/`.

    .venv/bin/python scripts/make_tiny_wan.py [--out models/wan-tiny]

scripts/setup runs it when the directory is missing or this script changed. The model is
untrained: it produces noise-like video, and exists so tests, CI and the demo exercise the
real libtorch code path without downloading gigabytes.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

SEED = 20261122
CORPUS = [
    "a red fox runs through a snowy forest at dawn",
    "a lighthouse in a storm with waves crashing on the rocks",
    "a cat sleeping on a sunny windowsill",
    "aerial view of a city at night with glowing streets",
    "a paper boat drifting down a rainy street",
    "slow motion of a hummingbird drinking from a flower",
    "low quality, blurry, distorted, watermark, text",
]

TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=4,
    out_channels=4,
    text_dim=32,
    freq_dim=32,
    ffn_dim=48,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=32,
)


def tokenizer() -> PreTrainedTokenizerFast:
    """A small Unigram tokenizer in T5's style: <pad>=0, </s>=1, <unk>=2, </s> appended."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=32
    )


TINY_VAE = dict(
    base_dim=8,
    z_dim=4,
    # Wan2.1's structure (8x spatial, 4x temporal compression), narrow.
    dim_mult=[1, 2, 2, 2],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    latents_mean=[0.1, -0.2, 0.3, 0.0],
    latents_std=[1.5, 0.8, 1.2, 1.0],
)

# Sizes: "tiny" for tests and the demo; "mid" for benchmarks and the GPU check's bf16-vs-fp32
# comparison (a realistic amount of compute on a CPU without Wan2.1-1.3B's 30-layer,
# 1536-wide transformer); "wan2.1-1.3b" for GPU figures: Wan2.1-T2V-1.3B's transformer and
# VAE exactly (random weights), with a 2-layer UMT5 of the real width (the real 24-layer
# encoder runs once per prompt, and its 5.7 B parameters would take minutes to initialise).
PRESETS = {
    "tiny": dict(transformer=TRANSFORMER, vae=TINY_VAE, text=dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)),
    "mid": dict(
        transformer=dict(TRANSFORMER, num_attention_heads=4, attention_head_dim=48, text_dim=128, freq_dim=128, ffn_dim=768, num_layers=4),
        vae=dict(TINY_VAE, base_dim=32),
        text=dict(d_model=128, d_kv=32, d_ff=256, num_layers=4, num_heads=4),
    ),
    "wan2.1-1.3b": dict(
        transformer=dict(
            TRANSFORMER,
            num_attention_heads=12,
            attention_head_dim=128,
            in_channels=16,
            out_channels=16,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=8960,
            num_layers=30,
            rope_max_seq_len=1024,
        ),
        # AutoencoderKLWan's defaults are Wan2.1's VAE.
        vae=dict(),
        text=dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=2, num_heads=64),
    ),
}


def build(out: Path, preset: str = "tiny") -> WanPipeline:
    size = PRESETS[preset]
    torch.manual_seed(SEED)
    tok = tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tok),
            **size["text"],
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
        )
    ).eval()
    transformer = WanTransformer3DModel(**size["transformer"]).eval()
    vae = AutoencoderKLWan(**size["vae"]).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = WanPipeline(
        tokenizer=tok, text_encoder=text_encoder, transformer=transformer, vae=vae, scheduler=scheduler
    )
    if out.exists():
        shutil.rmtree(out)
    pipe.save_pretrained(out, safe_serialization=True)
    return pipe


@torch.no_grad()
def references(pipe: WanPipeline, out: Path) -> None:
    """Inputs and outputs of each network on fixed inputs, for the Rust parity tests."""
    ref = out / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(SEED)
    t = pipe.transformer
    latents = torch.randn(1, 4, 3, 8, 10, generator=g)
    context = torch.randn(1, 7, 32, generator=g)
    timestep = torch.tensor([625.0])
    output = t(latents, timestep, context, return_dict=False)[0]
    save_file(
        {
            "hidden_states": latents.contiguous(),
            "timestep": timestep,
            "encoder_hidden_states": context.contiguous(),
            "output": output.contiguous(),
        },
        ref / "transformer_forward.safetensors",
    )
    sched = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(4)
    sample = torch.randn(1, 4, 3, 8, 10, generator=g)
    velocity = torch.randn(1, 4, 3, 8, 10, generator=g)
    steps = [sample]
    for t in sched.timesteps[:2]:
        steps.append(sched.step(velocity, t, steps[-1], return_dict=False)[0])
    save_file(
        {
            "timesteps": sched.timesteps.contiguous(),
            "sigmas": sched.sigmas.contiguous(),
            "sample": sample,
            "velocity": velocity,
            "after_two_steps": steps[-1].contiguous(),
        },
        ref / "scheduler.safetensors",
    )
    # Text encoder: tokenisation (incl. truncation) and WanPipeline.encode_prompt's output.
    prompt = "A red fox runs through   a snowy forest at dawn"
    long_prompt = " ".join(CORPUS * 80)
    tensors = {}
    for name, text in (("short", prompt), ("long", long_prompt)):
        enc = pipe.tokenizer(prompt_clean(text), padding="max_length", max_length=512, truncation=True, add_special_tokens=True)
        ids = torch.tensor([i for i, m in zip(enc["input_ids"], enc["attention_mask"]) if m])
        tensors[f"{name}_ids"] = ids
    embeds, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, max_sequence_length=512)
    tensors["short_embeds"] = embeds.contiguous()
    save_file(tensors, ref / "text_encoder.safetensors")
    # VAE decode of 3 latent frames (9 video frames) as WanPipeline does it: unnormalise, decode.
    z = torch.randn(1, 4, 3, 8, 10, generator=g)
    vae = pipe.vae
    mean = torch.tensor(vae.config.latents_mean).view(1, 4, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, 4, 1, 1, 1)
    video = vae.decode(z / inv_std + mean, return_dict=False)[0]
    save_file({"latents": z.contiguous(), "video": video.contiguous()}, ref / "vae_decode.safetensors")
    # VAE encode of 5 frames (first frame alone, then 4), normalised as the Wan pipelines do.
    clip = torch.rand(1, 3, 5, 64, 80, generator=g) * 2 - 1
    mode = vae.encode(clip).latent_dist.mode()
    save_file({"video": clip, "latents": ((mode - mean) * inv_std).contiguous()}, ref / "vae_encode.safetensors")
    # The whole WanPipeline, 2 steps with classifier-free guidance, from given latents.
    pipe.set_progress_bar_config(disable=True)
    start = torch.randn(1, 4, 3, 8, 10, generator=g)
    args = dict(
        prompt=prompt,
        negative_prompt="low quality, blurry",
        height=64,
        width=80,
        num_frames=9,
        num_inference_steps=2,
        guidance_scale=2.0,
        latents=start.clone(),
        return_dict=False,
    )
    final_latents = pipe(output_type="latent", **args)[0]
    video = pipe(output_type="pt", **args)[0]  # (B, F, C, H, W) in [0, 1]
    save_file(
        {"start": start, "latents": final_latents.contiguous(), "video": video.contiguous()},
        ref / "pipeline.safetensors",
    )
    (ref / "prompts.json").write_text(json.dumps({"short": prompt, "long": long_prompt}))
    (ref / "README.md").write_text(
        "Reference tensors written by scripts/make_tiny_wan.py with diffusers "
        f"{__import__('diffusers').__version__} and transformers {__import__('transformers').__version__} "
        "(fp32, CPU).\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models/wan-tiny"))
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    args = parser.parse_args()
    if args.preset == "tiny":
        torch.set_num_threads(1)  # bit-identical references on any machine
    pipe = build(args.out, args.preset)
    if args.preset == "tiny":
        references(pipe, args.out)
    files = sorted(str(p.relative_to(args.out)) for p in args.out.rglob("*") if p.is_file())
    print(json.dumps({"model": str(args.out), "files": files}, indent=1))


if __name__ == "__main__":
    main()
