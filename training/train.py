"""Trains Framecast's default model on the shapes world and writes it as a diffusers-format
Wan2.1 directory.

    .venv/bin/python training/train.py --out models/framecast-shapes

Phases, each resumable from its checkpoint in --work (so training can span sessions; rerun the
same command to go on):

1. `vae`: the causal VAE (`AutoencoderKLWan`) as a deterministic autoencoder on the world's
   frames, first single frames (the causal encoder's first-frame path, ~2x cheaper per step),
   then 5-frame clips (first frame + one 4-frame chunk, so the temporal layers and the causal
   caches are trained too). With `--vae-cut-share`, that share of the clips cuts to another
   scene at a random latent frame, as a prompt switch does.
2. `latents`: long clips encoded to latents once; their per-channel mean and std become the
   VAE's `latents_mean`/`latents_std`, so the transformer sees unit-scale latents.
3. `transformer`: `WanTransformer3DModel` with flow matching on windows of those latents,
   conditioned on the frozen UMT5 encoder's embeddings of the captions (padded with zeros to
   `model.TEXT_TOKENS` as `WanPipeline.encode_prompt` pads to its max_sequence_length).
   Windows are built like Framecast's streaming uses them: a fresh stream's first segment (no
   context), a continuation (the previous segment's last clean latent frame first, noised like
   the rest as the sampler re-imposes it), and a prompt switch (that context frame from a clip
   with another caption). The context frame is in the loss of fresh windows only, and a share
   of windows is noised to sigma 0.95-1, where the caption alone decides the colours.
   `--tf-object-weight` weighs the object's latent cells up in the loss.
4. `decoder`: the VAE decoder alone fine-tuned (object colours weighted up, windows deep in
   a stream after caches filled without gradient, clips that cut to another clip as prompt
   switches do); the encoder, and so the latents, stay as they are.
5. `export`: the pipeline saved with `save_pretrained`, `world.json` and a model card.

`--init-from DIR` starts a phase that has no checkpoint from the weights of an exported model
(e.g. the committed one), so training goes on across machines that lose --work; with
`--vae-minutes 0` the VAE is taken as it is.

Uses CUDA when available. Wall-time budgets per phase (--vae-minutes, --transformer-minutes,
--decoder-minutes) bound the run on a CPU; steps done so far are kept in the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import model  # noqa: E402
import world  # noqa: E402

SEED = 20261206
SIZE = 64  # training resolution, square
TEXT_TOKENS = model.TEXT_TOKENS


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) → float (3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def clip_batch(rng: random.Random, scenes: list[world.Scene], batch: int, frames: int, crop: int = SIZE) -> torch.Tensor:
    """`batch` random clips of `frames` frames, each cropped to a random `crop`-pixel square
    (on the 8-pixel latent grid): the VAE is convolutional, so crops teach it the same at a
    quarter of the cost."""
    out = []
    for _ in range(batch):
        clip = world.render(rng.choice(scenes), rng.randrange(1 << 30), frames, SIZE, SIZE, start=rng.randrange(400))
        ox, oy = rng.randrange(0, SIZE - crop + 1, 8), rng.randrange(0, SIZE - crop + 1, 8)
        out.append(to_tensor(clip[:, oy : oy + crop, ox : ox + crop]))
    return torch.stack(out)


def decode_unclamped(vae, z: torch.Tensor, warm: int = 0) -> torch.Tensor:
    """`AutoencoderKLWan._decode` without its final clamp to [-1, 1]: clamped pixels pass no
    gradient, and a fresh decoder's outputs are mostly out of range, which stalled training at
    the mean colour. The first `warm` latent frames only fill the decoder's causal caches
    (without gradient) and their pixel frames are left out: a window deep in a stream."""
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    frames = []
    for i in range(x.shape[2]):
        vae._conv_idx = [0]
        with torch.set_grad_enabled(torch.is_grad_enabled() and i >= warm):
            out = vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0)
        if i >= warm:
            frames.append(out)
    vae.clear_cache()
    return torch.cat(frames, 2)


class Checkpoint:
    """One phase's module + optimiser + progress in --work; saved every few minutes."""

    def __init__(self, work: Path, name: str):
        self.path = work / f"{name}.pt"

    def load(self, module: torch.nn.Module, opt: torch.optim.Optimizer | None) -> dict:
        if not self.path.exists():
            return {"step": 0, "seconds": 0.0, "done": False, "losses": []}
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        module.load_state_dict(state["module"])
        if opt is not None and state.get("opt") is not None:
            opt.load_state_dict(state["opt"])
        return state["progress"]

    def save(self, module: torch.nn.Module, opt: torch.optim.Optimizer | None, progress: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save({"module": module.state_dict(), "opt": opt.state_dict() if opt else None, "progress": progress}, tmp)
        tmp.replace(self.path)


def warm_start(args, module: torch.nn.Module, name: str, prog: dict) -> None:
    """Loads `--init-from`'s weights for phase `name` into a phase with no checkpoint yet, and
    carries the steps and minutes they were trained for into its progress (so the model card
    counts all of them)."""
    if args.init_from is None or prog["step"] > 0 or prog.get("init_from"):
        return
    sub = args.init_from / name
    missing, unexpected = module.load_state_dict(load_weights(sub), strict=False)
    if missing or unexpected:
        raise SystemExit(f"--init-from {sub}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    carry_progress(args, name, prog)
    log(f"{name}: warm start from {sub} ({prog['init_from']['steps']} steps before)")


def load_weights(sub: Path) -> dict[str, torch.Tensor]:
    """The state dict of an exported model's component directory (`vae`, `transformer`)."""
    from safetensors.torch import load_file

    state = {}
    for f in sorted(sub.glob("*.safetensors")):
        state.update(load_file(f))
    return state


def carry_progress(args, name: str, prog: dict) -> None:
    """Records in a phase's progress the steps and minutes `--init-from`'s training.json gives
    phase `name`, when the phase starts from those weights; recorded once, at the start, so a
    resumed phase (or an --init-from that already counts this run) is not counted twice."""
    before = json.loads((args.init_from / "training.json").read_text()).get(name, {})
    prog["init_from"] = {"dir": str(args.init_from), "steps": before.get("steps", 0), "minutes": before.get("minutes", 0.0)}


def cosine_lr(base: float, step: int, total: int, warmup: int = 30) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(total, 1)))))


def run_phase(name: str, ckpt: Checkpoint, module, opt, prog: dict, budget: float, step_fn, *,
              params, lr: tuple[float, int], max_norm: float, log_every: int) -> None:
    """Trains until the phase's wall-time budget (seconds, counting earlier runs) is spent:
    `step_fn(step, elapsed_fraction)` returns the batch's loss (and a note for the log); the
    learning rate follows `cosine_lr(*lr)`; the checkpoint is saved every two minutes and at
    the end, so an interrupted phase resumes where it stopped."""
    start = time.time() - prog["seconds"]
    last_save = time.time()
    module.train()
    while time.time() - start < budget:
        step = prog["step"]
        for g in opt.param_groups:
            g["lr"] = cosine_lr(lr[0], step, lr[1])
        loss, note = step_fn(step, (time.time() - start) / budget)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        opt.step()
        prog["step"] = step + 1
        prog["losses"].append(round(loss.item(), 5))
        if step % log_every == 0:
            log(f"{name} step {step}{note} loss {np.mean(prog['losses'][-log_every:]):.4f}")
        if time.time() - last_save > 120:
            prog["seconds"] = time.time() - start
            ckpt.save(module, opt, prog)
            last_save = time.time()
    prog["seconds"] = time.time() - start
    prog["done"] = True
    ckpt.save(module, opt, prog)
    module.eval()


def train_vae(args, device: torch.device) -> torch.nn.Module:
    vae = model.vae(SEED).to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=args.vae_lr, betas=(0.9, 0.99))
    ckpt = Checkpoint(args.work, "vae")
    prog = ckpt.load(vae, opt)
    warm_start(args, vae, "vae", prog)
    args.vae_from_init = bool(prog.get("init_from"))
    budget = args.vae_minutes * 60
    if prog["seconds"] >= budget:
        if not ckpt.path.exists():
            ckpt.save(vae, None, prog)
        vae.eval()
        return vae
    scenes = world.training_scenes()
    rng = random.Random(SEED + prog["step"])

    def step_fn(step: int, elapsed: float):
        # The first half of the budget on single frames, then clips of the first frame and
        # two 4-frame chunks: the second chunk is the first to see its causal caches filled
        # by a chunk before it, as every later chunk of a stream does (trained on one chunk
        # only, the decoder drew garbage from the third latent frame on).
        single = elapsed < args.vae_single_share
        frames = 1 if single else args.vae_clip_frames
        b = args.vae_batch * (3 if single else 1)
        cut = not single and args.vae_cut_share > 0
        x = clip_batch(rng, scenes, 2 * b if cut else b, frames, args.vae_crop).to(device)
        mu = vae.encode(x).latent_dist.mode()
        if cut:
            # Prompt switches: a share of the clips cut to another scene, their latents
            # spliced from the two clips' own (as the transformer draws a switch), so the
            # decoder learns to leave the old scene (held in its causal caches) behind from
            # the first latent frame after the cut; the encoder trains on both clips.
            other, mu_other = x[b:], mu[b:]
            x, mu = x[:b].clone(), mu[:b].clone()
            cut_to_other(rng, x, mu, other, mu_other, share=args.vae_cut_share)
        y = decode_unclamped(vae, mu)
        mse = weighted_mse(y, x, args.vae_object_weight)
        return mse + 1e-4 * mu.pow(2).mean(), " (frames)" if single else " (clips)"

    run_phase("vae", ckpt, vae, opt, prog, budget, step_fn, params=list(vae.parameters()),
              lr=(args.vae_lr, args.vae_steps_estimate), max_norm=5.0, log_every=50)
    return vae


def blend_vae_decoder(args, vae):
    """With `--vae-blend` below 1, the VAE phase's decoder mixed with `--init-from`'s (the
    encoder, and so the latents, as trained). The whole-VAE run with cuts drew switches and
    kept colours, but stepped at segment seams (eval seam 1.56); mixed 0.75 with the decoder
    it started from, 1.34 with the switches kept (see the model card)."""
    if args.vae_blend >= 1:
        return vae
    if args.init_from is None:
        raise SystemExit("--vae-blend needs --init-from: the VAE whose decoder is mixed in")
    return blend_decoder(vae, load_weights(args.init_from / "vae"), args.vae_blend)


@torch.no_grad()
def encode_latents(args, vae, device: torch.device) -> dict:
    """Long clips (1 + 4 * L frames) of every training scene → normalised latents."""
    path = args.work / "latents.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    vae.eval()
    rng = random.Random(SEED + 1)
    scenes = world.training_scenes()
    frames = 1 + 4 * args.latent_clip
    items = []
    for rep in range(args.clips_per_scene):
        for s in scenes:
            items.append((s, rng.randrange(1 << 30), rng.randrange(400)))
    lat, caps = [], []
    t0 = time.time()
    for i in range(0, len(items), 16):
        chunk = items[i : i + 16]
        x = torch.stack([to_tensor(world.render(s, seed, frames, SIZE, SIZE, start=st)) for s, seed, st in chunk]).to(device)
        lat.append(vae.encode(x).latent_dist.mode().cpu())
        caps += [s.caption for s, _, _ in chunk]
        if i % 320 == 0:
            log(f"latents {i}/{len(items)} ({time.time() - t0:.0f} s)")
    lat = torch.cat(lat)
    mean = lat.mean(dim=(0, 2, 3, 4))
    std = lat.std(dim=(0, 2, 3, 4)).clamp_min(1e-3)
    norm = (lat - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)
    out = {"latents": norm, "captions": caps, "mean": mean.tolist(), "std": std.tolist()}
    torch.save(out, path)
    return out


@torch.no_grad()
def embed_captions(tok, text_encoder, captions: list[str]) -> dict[str, torch.Tensor]:
    """WanPipeline.encode_prompt's embedding of each caption: the encoder's output for the real
    tokens, zeros up to TEXT_TOKENS."""
    out = {}
    for c in sorted(set(captions)):
        enc = tok([c], padding="max_length", max_length=TEXT_TOKENS, truncation=True, return_tensors="pt")
        n = int(enc.attention_mask.sum())
        h = text_encoder(enc.input_ids, enc.attention_mask).last_hidden_state[0, :n]
        out[c] = torch.cat([h, h.new_zeros(TEXT_TOKENS - n, h.shape[1])])
    return out


def shifted_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * u / (1 + (shift - 1) * u)


def windows(rng: random.Random, data: dict, batch: int, by_caption: dict[str, list[int]], switch_share: float,
            fresh_share: float = 0.3, near: dict[str, list[str]] | None = None, near_share: float = 0.0):
    """A batch of latent windows as streaming uses them (see the module docs), their captions,
    and which are fresh streams (their first frame is a clip's first: the VAE's image latent).
    `fresh_share` of the windows are fresh, `switch_share` prompt switches, the rest continue.
    A `near_share` of the switches go to a caption that differs from the context's in the
    object's colour alone (`near`, by caption), when there is one: the context frame then
    shows the right shape in the wrong colour, and only the caption says which."""
    lat, caps = data["latents"], data["captions"]
    n_clips, _, L = lat.shape[0], lat.shape[1], lat.shape[2]
    n = rng.choice((2, 3, 4, 6))  # new latent frames per segment: 8, 12, 16 or 24 video frames
    xs, cs, fresh = [], [], []
    for _ in range(batch):
        i = rng.randrange(n_clips)
        kind = rng.random()
        fresh.append(kind < fresh_share)
        if kind < fresh_share:  # fresh stream: n + 1 frames from the clip's start
            xs.append(lat[i, :, : n + 1])
            cs.append(caps[i])
        elif kind < 1.0 - switch_share:  # continuation: context frame j, then j+1 .. j+n
            j = rng.randrange(1, L - n)
            xs.append(lat[i, :, j : j + n + 1])
            cs.append(caps[i])
        else:  # prompt switch: context from clip i, new frames from a clip with another caption
            close = (near or {}).get(caps[i])
            if close and rng.random() < near_share:
                other = rng.choice(close)
            else:
                other = rng.choice([c for c in by_caption if c != caps[i]])
            k = rng.choice(by_caption[other])
            j = rng.randrange(1, L)
            m = rng.randrange(1, L - n + 1)
            xs.append(torch.cat([lat[i, :, j : j + 1], lat[k, :, m : m + n]], dim=1))
            cs.append(caps[k])
    return torch.stack(xs), cs, torch.tensor(fresh)


def colour_neighbours(captions) -> dict[str, list[str]]:
    """For each caption, the other captions that differ from it in the first object's colour
    alone ("a red circle moving left on a blue background" -> "an orange circle moving left
    on a blue background", ...)."""
    def rest(caption: str) -> tuple[str, ...]:
        words = caption.split()
        return tuple(words[2:])  # drops the article and the colour

    by_rest: dict[tuple[str, ...], set[str]] = {}
    for c in captions:
        by_rest.setdefault(rest(c), set()).add(c)
    return {c: sorted(by_rest[rest(c)] - {c}) for c in set(captions)}


def train_transformer(args, data: dict, embeds: dict, device: torch.device) -> torch.nn.Module:
    net = model.transformer(SEED + 2).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.tf_lr, weight_decay=0.01)
    ckpt = Checkpoint(args.work, "transformer")
    prog = ckpt.load(net, opt)
    warm_start(args, net, "transformer", prog)
    budget = args.transformer_minutes * 60
    if prog["seconds"] >= budget:
        if not ckpt.path.exists():
            ckpt.save(net, None, prog)
        net.eval()
        return net
    by_caption: dict[str, list[int]] = {}
    for i, c in enumerate(data["captions"]):
        by_caption.setdefault(c, []).append(i)
    near = colour_neighbours(by_caption)
    empty = embeds[""]
    rng = random.Random(SEED + 3 + prog["step"])
    gen = torch.Generator().manual_seed(SEED + prog["step"])

    def step_fn(step: int, elapsed: float):
        x0, cs, fresh = windows(rng, data, args.tf_batch, by_caption, args.switch_share,
                                args.fresh_share, near, args.switch_near_share)
        # 10% of captions dropped, so classifier-free guidance has an unconditional model.
        ctx = torch.stack([empty if rng.random() < 0.1 else embeds[c] for c in cs])
        u = torch.rand(x0.shape[0], generator=gen)
        sigma = shifted_sigma(u, model.SCHEDULER_SHIFT)
        # A share of windows near sigma 1, where the caption is all the model has to go on and
        # the sampler's first step sets colours and layout. (Tried when the colours looked
        # lost there; they were not, and it moved the sigma-1 loss little: 0.590 -> 0.577.)
        top = torch.rand(x0.shape[0], generator=gen) < args.top_noise_share
        sigma = torch.where(top, 1.0 - 0.05 * torch.rand(x0.shape[0], generator=gen), sigma)
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        target = noise - x0
        x0, xt, target, ctx = (t.to(device) for t in (x0, xt, target, ctx))
        pred = net(xt, (sigma * 1000).to(device), ctx, return_dict=False)[0]
        # The first latent frame of a fresh stream is the VAE's image latent, unlike the
        # context frame of a continuation, which the sampler re-imposes (so what the model
        # predicts for it is never used). Trained on both, the model drew a blend of the two
        # for a fresh stream's first frame, off the VAE's manifold: decoded, it came out
        # near-white, and the decoder's caches carried that into the whole stream (background
        # right in latent space for 97 % of drawn streams, 54 % once decoded; 100 % with a
        # real first frame). So the first frame is in the loss for fresh windows only.
        w = latent_object_weights(x0, args.tf_object_weight)
        per_frame = ((pred - target).pow(2) * w).mean(dim=(1, 3, 4)) / w.mean(dim=(1, 3, 4))
        keep = torch.ones_like(per_frame)
        keep[:, 0] = fresh.to(device).float()
        return (per_frame * keep).sum() / keep.sum(), ""

    run_phase("transformer", ckpt, net, opt, prog, budget, step_fn, params=list(net.parameters()),
              lr=(args.tf_lr, args.tf_steps_estimate), max_norm=1.0, log_every=100)
    return net


OBJECT_WEIGHT = 10.0
# A latent cell is the object's when its channels lie this far (RMS, in unit-scale latents)
# from its frame's median cell: ~14 % of cells (~9 of 64 at 64x64), the object and its rim.
LATENT_OBJECT_DISTANCE = 1.0


def latent_object_weights(x0: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-cell flow-matching loss weights of clean latent windows (B, C, T, h, w), broadcast
    over channels: `weight` on the object's cells, 1 elsewhere. The background fills most of
    the cells, so with plain MSE the loss barely cares whether the object comes out red,
    orange or yellow (the VAE keeps them apart; the transformer blurred them)."""
    if weight == 1:  # plain MSE: no median to take on every step
        return torch.ones_like(x0[:, :1])
    med = x0.flatten(3).median(dim=3).values[..., None, None]
    dist = (x0 - med).pow(2).mean(dim=1, keepdim=True).sqrt()
    return 1 + (weight - 1) * (dist > LATENT_OBJECT_DISTANCE).float()


def object_weights(x: torch.Tensor, weight: float = OBJECT_WEIGHT) -> torch.Tensor:
    """Per-pixel loss weights of clips (B, 3, T, H, W): `weight` where a pixel is far from
    its frame's median colour (the background; the object is ~4 % of a frame), else 1."""
    if weight == 1:  # plain MSE (the VAE phase's default): no median to take on every step
        return torch.ones_like(x[:, :1])
    bg = x.flatten(3).median(dim=3).values[..., None, None]
    obj = ((x - bg).abs().sum(dim=1, keepdim=True) > 0.3).float()
    return 1 + (weight - 1) * obj


def weighted_mse(y: torch.Tensor, x: torch.Tensor, weight: float) -> torch.Tensor:
    """MSE of clips `y` against `x` with the object's pixels weighing `weight` (1: plain MSE)."""
    w = object_weights(x, weight)
    return ((y - x) ** 2 * w).sum() / (w.sum() * x.shape[1])


def cut_to_other(rng: random.Random, x, z, other, z_other, share: float, earliest: int = 1) -> list[int | None]:
    """In place, for a `share` of the clips: keeps the latent frames before a random one k
    (`earliest` or later; and their pixel frames) and takes the rest from `other`, as a prompt
    switch cuts to a new scene. x, other: (B, 3, 1 + 4K, H, W) pixels; z, z_other: their
    (B, C, 1 + K, h, w) latents. Returns each clip's k (None where not cut)."""
    cuts: list[int | None] = []
    for i in range(x.shape[0]):
        if rng.random() >= share:
            cuts.append(None)
            continue
        k = rng.randrange(min(earliest, z.shape[2] - 1), z.shape[2])  # first latent frame of the new scene
        z[i, :, k:] = z_other[i, :, k:]
        x[i, :, 1 + 4 * (k - 1) :] = other[i, :, 1 + 4 * (k - 1) :]
        cuts.append(k)
    return cuts


def blend_decoder(vae, before: dict, blend: float):
    """The fine-tuned decoder's weights mixed with those it started from (`blend` of the
    fine-tuned). The first decoder fine-tune (33-frame clips, no deep windows) drew prompt
    switches better but drifted backgrounds in long streams, and was shipped as an even mix;
    the deep-window fine-tune after it is shipped as 0.75 of it (unmixed, it drew a step at
    every latent frame boundary; see the model card). The checkpoint keeps the unmixed
    weights."""
    state = vae.state_dict()
    with torch.no_grad():
        for k, v in state.items():
            if k.startswith(("decoder.", "post_quant_conv.")):
                v.copy_(blend * v + (1 - blend) * before[k].to(v.device))
    vae.eval()
    return vae


def train_decoder(args, vae, device: torch.device) -> torch.nn.Module:
    """Fine-tunes the VAE decoder (the encoder, and so the latents and the transformer, stay as
    they are) for colour, for long streams and for cuts.

    Trained on plain MSE, the decoder desaturated the object (~4 % of a frame): red decoded
    with twice its green and close to orange. Here the object's pixels weigh OBJECT_WEIGHT
    times more. The replica decodes a stream as one clip, its causal caches carried from
    segment to segment; a decoder trained on 33-frame clips drew gray backgrounds green from
    frame ~33 on, and a clip that cut to another scene with the old background (or none it
    knew) for most of the frames after the cut. So each step decodes a window of
    `--decoder-window` latent frames after a random number (up to `--decoder-warm-max`) that
    only fill the caches, and `--decoder-cut-share` of the clips cut to another clip at a
    random latent frame, each part's frames the target."""
    ckpt = Checkpoint(args.work, "decoder")
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.Adam(params, lr=args.decoder_lr, betas=(0.9, 0.99))
    before = {k: v.detach().clone() for k, v in vae.state_dict().items()}
    prog = ckpt.load(vae, opt)
    if args.vae_from_init and prog["step"] == 0 and not prog.get("init_from"):
        # The decoder fine-tuned here goes on from --init-from's, fine-tuned before.
        carry_progress(args, "decoder", prog)
    budget = args.decoder_minutes * 60
    if prog["seconds"] >= budget:
        return blend_decoder(vae, before, args.decoder_blend if prog["step"] else 1.0)
    scenes = world.training_scenes()
    rng = random.Random(SEED + 7 + prog["step"])
    for p in vae.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)

    def step_fn(step: int, elapsed: float):
        b = args.decoder_batch
        warm = rng.randint(0, args.decoder_warm_max)
        frames = 1 + 4 * (warm + args.decoder_window - 1)
        x = clip_batch(rng, scenes, 2 * b, frames).to(device)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        x, other, z, z_other = x[:b], x[b:], z[:b], z[b:]
        cuts = cut_to_other(rng, x, z, other, z_other, share=args.decoder_cut_share, earliest=max(1, warm - 2))
        # Half the cuts as the encoder makes them of the cut clip, half spliced from the two
        # clips' own latents (as the transformer, trained on such splices, draws a switch).
        joint = [i for i, k in enumerate(cuts) if k is not None and rng.random() < 0.5]
        if joint:
            with torch.no_grad():
                z[joint] = vae.encode(x[joint]).latent_dist.mode()
        y = decode_unclamped(vae, z, warm)
        x = x[:, :, x.shape[2] - y.shape[2] :]
        return weighted_mse(y, x, args.decoder_object_weight), f" (warm {warm})"

    run_phase("decoder", ckpt, vae, opt, prog, budget, step_fn, params=params,
              lr=(args.decoder_lr, args.decoder_steps_estimate), max_norm=5.0, log_every=50)
    return blend_decoder(vae, before, args.decoder_blend)


# Prompts whose tokens and embeddings the Rust side must reproduce: one of the grammar, one
# with words it does not know (split into characters) and punctuation it drops.
REFERENCE_PROMPTS = {
    "grammar": "an orange triangle moving up on a gray background",
    "other": "A red ball bouncing on a green lawn!",
}


@torch.no_grad()
def write_reference(out: Path) -> None:
    """`reference.safetensors` beside the model: token ids and `WanPipeline.encode_prompt`
    embeddings of `REFERENCE_PROMPTS`, and a VAE decode, for the Rust parity test of the shipped
    model (`replica/tests/shapes_model.rs`)."""
    from diffusers import WanPipeline
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean
    from safetensors.torch import save_file

    pipe = WanPipeline.from_pretrained(out)
    tensors = {}
    for name, text in REFERENCE_PROMPTS.items():
        enc = pipe.tokenizer(prompt_clean(text), padding="max_length", max_length=TEXT_TOKENS, truncation=True)
        tensors[f"{name}_ids"] = torch.tensor([i for i, m in zip(enc["input_ids"], enc["attention_mask"]) if m])
        embeds, _ = pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=TEXT_TOKENS)
        tensors[f"{name}_embeds"] = embeds.contiguous()
    g = torch.Generator().manual_seed(SEED)
    z = torch.randn(1, model.Z_DIM, 2, SIZE // 8, SIZE // 8, generator=g)
    vae = pipe.vae
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    tensors["vae_latents"] = z
    tensors["vae_video"] = vae.decode(z * std + mean, return_dict=False)[0].contiguous()
    save_file(tensors, out / "reference.safetensors")
    (out / "reference.json").write_text(json.dumps(REFERENCE_PROMPTS, indent=1) + "\n")


PHASES = ("vae", "transformer", "decoder")


def other_history(earlier: dict) -> dict:
    """The entries of `--init-from`'s training.json that no phase here rewrites (runs recorded
    by hand, such as `vae_longclip`), so a model trained on from it keeps its lineage."""
    return {k: v for k, v in earlier.items() if k not in PHASES + ("seed", "size", "device")}


def export(args, tok, text_encoder, vae, net, data) -> None:
    from diffusers import WanPipeline

    vae.register_to_config(latents_mean=data["mean"], latents_std=data["std"])
    # Encoding batches padded to 512 left that as the tokenizer's default; saved, it would pad
    # every prompt for whoever loads it.
    tok.backend_tokenizer.no_padding()
    tok.backend_tokenizer.no_truncation()
    pipe = WanPipeline(tokenizer=tok, text_encoder=text_encoder, transformer=net.cpu(), vae=vae.cpu(), scheduler=model.scheduler())
    out = args.out
    pipe.save_pretrained(out, safe_serialization=True)
    # What WanPipeline users pass as max_sequence_length, and the replica reads.
    (out / "framecast.json").write_text(json.dumps({"max_sequence_length": TEXT_TOKENS}, indent=2) + "\n")
    (out / "world.json").write_text(json.dumps(world.world_json(), indent=2) + "\n")
    (out / "eval-prompts.json").write_text(json.dumps(world.eval_prompts(), indent=1) + "\n")
    earlier = json.loads((args.init_from / "training.json").read_text()) if args.init_from else {}
    progress = other_history(earlier)
    for name in PHASES:
        if not (args.work / f"{name}.pt").exists():
            if name in earlier:  # a phase not run here: as --init-from recorded it
                progress[name] = earlier[name]
            continue
        p = torch.load(args.work / f"{name}.pt", map_location="cpu", weights_only=False)["progress"]
        before = p.get("init_from") or {"steps": 0, "minutes": 0.0}
        progress[name] = {
            "steps": before["steps"] + p["step"],
            "minutes": round(before["minutes"] + p["seconds"] / 60, 1),
            "final_loss": round(float(np.mean(p["losses"][-100:])), 4) if p["losses"] else earlier.get(name, {}).get("final_loss"),
        }
        if name == "decoder":
            progress[name]["blend"] = args.decoder_blend
        if name == "vae" and args.vae_blend < 1:
            progress[name]["blend"] = args.vae_blend
    (out / "training.json").write_text(json.dumps({"seed": SEED, "size": SIZE, "device": str(args.device_used), **progress}, indent=2) + "\n")
    write_reference(out)
    size = sum(p.stat().st_size for p in out.rglob("*.safetensors"))
    log(f"exported {out} ({size / 1e6:.1f} MB of weights): {progress}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("models/framecast-shapes"))
    p.add_argument("--work", type=Path, default=Path("target/training"))
    p.add_argument("--vae-minutes", type=float, default=35)
    p.add_argument("--transformer-minutes", type=float, default=25)
    p.add_argument("--vae-lr", type=float, default=5e-4)
    p.add_argument("--vae-batch", type=int, default=12)
    p.add_argument("--vae-crop", type=int, default=32)
    p.add_argument("--vae-clip-frames", type=int, default=9, help="1 + 4k frames per clip in the clip phase")
    p.add_argument("--vae-single-share", type=float, default=0.5,
                   help="share of the VAE's budget on single frames before clips")
    p.add_argument("--vae-object-weight", type=float, default=1.0,
                   help="loss weight of the object's pixels in the VAE phase (1: plain MSE)")
    p.add_argument("--vae-steps-estimate", type=int, default=5000)
    p.add_argument("--vae-blend", type=float, default=1.0,
                   help="share of the VAE phase's decoder in the exported one, the rest --init-from's")
    p.add_argument("--vae-cut-share", type=float, default=0.0,
                   help="share of the VAE's clips (clip part) that cut to another scene at a random latent frame")
    p.add_argument("--tf-lr", type=float, default=1e-3)
    p.add_argument("--tf-batch", type=int, default=32)
    p.add_argument("--tf-steps-estimate", type=int, default=8000)
    p.add_argument("--tf-object-weight", type=float, default=1.0,
                   help="flow-matching loss weight of the object's latent cells (1: plain MSE)")
    p.add_argument("--decoder-minutes", type=float, default=15)
    p.add_argument("--decoder-lr", type=float, default=2e-4)
    p.add_argument("--decoder-batch", type=int, default=2)
    p.add_argument("--decoder-window", type=int, default=4, help="latent frames per decoder step that carry the loss")
    p.add_argument("--decoder-warm-max", type=int, default=16,
                   help="most latent frames decoded before the window only to fill the caches (a stream's depth)")
    p.add_argument("--decoder-steps-estimate", type=int, default=450)
    p.add_argument("--decoder-cut-share", type=float, default=0.5, help="share of the decoder's clips that cut to another")
    p.add_argument("--decoder-object-weight", type=float, default=OBJECT_WEIGHT,
                   help="loss weight of the object's pixels against the background's")
    p.add_argument("--decoder-blend", type=float, default=1.0, help="share of the fine-tuned decoder in the exported one")
    p.add_argument("--top-noise-share", type=float, default=0.25, help="share of windows noised to sigma 0.95-1")
    p.add_argument("--switch-share", type=float, default=0.25, help="share of windows that are prompt switches")
    p.add_argument("--fresh-share", type=float, default=0.3, help="share of windows that are fresh streams")
    p.add_argument("--switch-near-share", type=float, default=0.0,
                   help="share of the switches to a caption that differs in the object's colour alone")
    p.add_argument("--latent-clip", type=int, default=8, help="latent frames per encoded training clip (minus the first)")
    p.add_argument("--clips-per-scene", type=int, default=4)
    p.add_argument("--init-from", type=Path, default=None, help="exported model to start phases without a checkpoint from")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.device_used = device
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    log(f"training on {device}, work dir {args.work}")
    tok = model.tokenizer()
    text_encoder = model.text_encoder(len(tok), SEED + 1)
    vae = blend_vae_decoder(args, train_vae(args, device))
    data = encode_latents(args, vae, device)
    embeds = embed_captions(tok, text_encoder, data["captions"] + [""] + [s.caption for s in world.held_out_scenes()])
    net = train_transformer(args, data, embeds, device)
    vae = train_decoder(args, vae, device)
    export(args, tok, text_encoder, vae, net, data)


if __name__ == "__main__":
    main()
