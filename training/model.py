"""The untrained networks of Framecast's default model, made with diffusers' and transformers'
own Wan classes, so the trained result is a diffusers-format Wan2.1 directory that the tch
implementation (and diffusers' `WanPipeline`) loads unchanged."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

import world

# Latent channels: Wan2.1's 16 (4 were too few for the VAE to learn edges within the hour).
Z_DIM = 16

VAE = dict(
    base_dim=16,
    z_dim=Z_DIM,
    # Wan2.1's structure (8x spatial, 4x temporal compression), narrow.
    dim_mult=[1, 2, 2, 2],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[False, True, True],
)

TEXT = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)

TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=32,
    in_channels=Z_DIM,
    out_channels=Z_DIM,
    text_dim=TEXT["d_model"],
    freq_dim=64,
    ffn_dim=384,
    num_layers=4,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=64,
)

# Text tokens the transformer attends to: the captions' real tokens, then zeros up to this.
# WanPipeline pads to 512, and at 512 this model's cross-attention put 85-95 % of its weight on
# the ~500 identical pad keys and learned the background only; the grammar's captions are
# under 16 tokens. Exported as `framecast.json`'s max_sequence_length, which the replica reads
# (and which WanPipeline users pass as `max_sequence_length`).
TEXT_TOKENS = 32

# The sampler's shift: 3.0 is Wan2.1's; the world is simple enough that few steps do.
SCHEDULER_SHIFT = 3.0


def tokenizer() -> PreTrainedTokenizerFast:
    """A Unigram tokenizer in T5's style (<pad>=0, </s>=1, <unk>=2, </s> appended) with every
    word of the world's grammar as one piece, and single characters as the fallback for other
    words (so any prompt tokenizes, and the grammar's words are never split)."""
    words = sorted({w for caption in world.vocabulary() for w in caption.split()})
    chars = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz0123456789"))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -1.0) for w in words]
    vocab += [("\u2581", -5.0)] + [(c, -10.0) for c in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=TEXT_TOKENS
    )


def text_encoder(vocab: int, seed: int) -> UMT5EncoderModel:
    torch.manual_seed(seed)
    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=vocab,
            **TEXT,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
        )
    ).eval()


def vae(seed: int) -> AutoencoderKLWan:
    torch.manual_seed(seed)
    return AutoencoderKLWan(**VAE, latents_mean=[0.0] * Z_DIM, latents_std=[1.0] * Z_DIM)


def transformer(seed: int) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(**TRANSFORMER)


def scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(shift=SCHEDULER_SHIFT)
