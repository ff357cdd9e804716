"""Measures the VAE alone on what streaming asks of it: clips that cut to another scene (as a
prompt switch does) and long unbroken clips, each encoded and decoded whole (the decoder's
causal caches carried from frame to frame, as the replica decodes).

    .venv/bin/python training/check_decoder.py models/framecast-shapes/vae target/training/decoder.pt

Each argument is a diffusers VAE directory or a training checkpoint (`vae.pt`, `decoder.pt`).
For each: how often a decoded frame's background (the named colour nearest its median) is the
scene's, in the first latent frame after a cut and in the later ones; the same, and the mean
absolute error, over long clips without a cut, and how often the object's interior decodes
nearest its named colour (by colour), with its mean absolute error. Cut clips come both encoded whole and spliced
from the two scenes' own latents (what a transformer trained on such splices draws).
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import model  # noqa: E402
import train  # noqa: E402
import world  # noqa: E402

LATENT_FRAMES = 12  # after the first: 49 video frames, as long as the eval's streams


def load(path: Path):
    if path.is_dir():
        from diffusers import AutoencoderKLWan

        return AutoencoderKLWan.from_pretrained(path).eval()
    vae = model.vae(train.SEED)
    vae.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["module"])
    return vae.eval()


def nearest(palette: dict[str, tuple[int, int, int]], colour: np.ndarray) -> str:
    """The name of `palette`'s colour nearest `colour` (RGB, 0..255)."""
    names = list(palette)
    rgb = np.array([palette[k] for k in names], float)
    return names[int(((rgb - colour) ** 2).sum(1).argmin())]


def named_backgrounds(video: torch.Tensor) -> list[str]:
    """The nearest named background to each frame's median colour; video (3, T, H, W) in 0..255."""
    medians = np.median(video.reshape(3, video.shape[1], -1).permute(1, 2, 0).numpy(), axis=1)
    return [nearest(world.BACKGROUND_COLOURS, m) for m in medians]


def object_interior(clip: np.ndarray, colour: str) -> np.ndarray:
    """(T, H, W) mask of a rendered clip's object pixels whose 4 neighbours are object too:
    where the decoded colour is the object's own, not an edge blended with the background."""
    m = np.abs(clip.astype(float) - np.array(world.OBJECT_COLOURS[colour], float)).sum(-1) < 3
    inner = m.copy()
    inner[:, 1:-1, 1:-1] &= m[:, :-2, 1:-1] & m[:, 2:, 1:-1] & m[:, 1:-1, :-2] & m[:, 1:-1, 2:]
    return inner


def named_object_colours(video: torch.Tensor, inner: np.ndarray) -> list[str | None]:
    """The nearest named object colour to each frame's mean over `inner`; video (3, T, H, W) in
    0..255. None where a frame has no interior pixel (the object too thin there)."""
    pixels = video.permute(1, 2, 3, 0).numpy()
    return [nearest(world.OBJECT_COLOURS, p[m].mean(0)) if m.any() else None for p, m in zip(pixels, inner)]


@torch.no_grad()
def measure(vae, clips: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    scenes = world.training_scenes()
    frames = 1 + 4 * LATENT_FRAMES
    right, count = collections.Counter(), collections.Counter()
    abs_err, obj_err = [], []

    def decode(z):
        return ((train.decode_unclamped(vae, z).clamp(-1, 1) + 1) / 2 * 255)[0]

    for _ in range(clips):
        a, b = rng.sample(scenes, 2)
        while a.background == b.background:
            b = rng.choice(scenes)
        k = rng.randint(1, LATENT_FRAMES - 1)  # first latent frame of the new scene
        first_new = 1 + 4 * (k - 1)
        sa, sb, start = rng.randrange(1 << 30), rng.randrange(1 << 30), rng.randrange(400)
        clip_a = world.render(a, sa, frames)
        clip_b = world.render(b, sb, frames, start=start)
        cut = np.concatenate([clip_a[:first_new], clip_b[first_new:]])
        z_a = vae.encode(train.to_tensor(clip_a)[None]).latent_dist.mode()
        z_b = vae.encode(train.to_tensor(clip_b)[None]).latent_dist.mode()
        whole = vae.encode(train.to_tensor(cut)[None]).latent_dist.mode()
        spliced = torch.cat([z_a[:, :, :k], z_b[:, :, k:]], dim=2)
        for kind, z in (("cut encoded whole", whole), ("cut spliced", spliced)):
            got = named_backgrounds(decode(z))
            for f in range(first_new, frames):
                part = "first new latent frame" if f < first_new + 4 else "later"
                right[(kind, part)] += got[f] == b.background
                count[(kind, part)] += 1
        video = decode(z_a)
        got = named_backgrounds(video)
        right[("unbroken", "all frames")] += sum(g == a.background for g in got)
        count[("unbroken", "all frames")] += len(got)
        abs_err.append(float((video - torch.from_numpy(clip_a).permute(3, 0, 1, 2).float()).abs().mean()))
        inner = object_interior(clip_a, a.colour)
        for f, got in enumerate(named_object_colours(video, inner)):
            if got is not None:
                key = ("unbroken", f"object colour ({a.colour})")
                right[key] += got == a.colour
                count[key] += 1
        obj_err.append(float(np.abs(video.permute(1, 2, 3, 0).numpy()[inner] - world.OBJECT_COLOURS[a.colour]).mean()))
    out = {f"{kind}, {part}": right[(kind, part)] / count[(kind, part)] for kind, part in sorted(count)}
    out["unbroken, mean abs error (0..255)"] = float(np.mean(abs_err))
    out["unbroken, object interior mean abs error (0..255)"] = float(np.mean(obj_err))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("vaes", type=Path, nargs="+")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    for path in args.vaes:
        print(f"{path} ({args.clips} clips of {1 + 4 * LATENT_FRAMES} frames):")
        for name, value in measure(load(path), args.clips, args.seed).items():
            label = name if "object" in name else f"background right, {name}"
            print(f"  {name}: {value:.1f}" if "error" in name else f"  {label}: {value:.0%}")


if __name__ == "__main__":
    main()
