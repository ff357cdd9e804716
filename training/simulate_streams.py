"""Simulates the replica's streams of the eval's prompts in Python (diffusers' own Wan classes)
and reports, per segment, how often the background is right in latent space and once decoded:
the diagnosis that told the transformer's faults from the VAE decoder's.

    .venv/bin/python training/simulate_streams.py models/framecast-shapes --streams 48

Each stream is sampled as the replica samples it (8 Euler steps, guidance 3, the previous
segment's last latent frame re-imposed at the current noise level before every step): a fresh
segment and a continuation with the eval prompt, then two with its switch prompt, 3 new latent
frames (12 video frames) each. The whole stream is decoded in one pass, as the replica's
decoder carries its caches from segment to segment. In latent space a segment's background is
the training background whose mean latent is nearest to the segment's; decoded, the named
background nearest to the frames' median colour (majority over the segment's frames).
`--prime` empties the decoder's caches at the switch and primes them with the first new
latent frame, to tell the caches' memory of the old scene from the latents themselves.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_decoder  # noqa: E402
import train  # noqa: E402
import world  # noqa: E402

NEW_FRAMES = 3  # latent frames per segment: 12 video frames


def background(caption: str) -> str:
    return caption.split()[-2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--latents", type=Path, default=Path("target/training/latents.pt"),
                   help="the training latents (for each background's mean latent)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--prime", action="store_true")
    args = p.parse_args()

    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(args.model)
    net, vae = pipe.transformer, pipe.vae
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    data = torch.load(args.latents, weights_only=False)
    means: dict[str, list[torch.Tensor]] = collections.defaultdict(list)
    for lat, cap in zip(data["latents"], data["captions"]):
        means[background(cap)].append(lat[:, 1:].mean(dim=(1, 2, 3)))
    size = data["latents"].shape[-2:]
    names = list(means)
    protos = torch.stack([torch.stack(means[k]).mean(0) for k in names])

    prompts = world.eval_prompts()[: args.streams]
    caps = [p["prompt"]["caption"] for p in prompts] + [p["switch_to"]["caption"] for p in prompts]
    embeds = train.embed_captions(pipe.tokenizer, pipe.text_encoder, caps + [""])
    sigmas = [float(s) for s in train.shifted_sigma(torch.linspace(1, 0, args.steps + 1), 3.0)]

    def sample(caption: str, context: torch.Tensor | None, seed: int) -> torch.Tensor:
        frames = NEW_FRAMES + 1
        noise = torch.randn(1, vae.config.z_dim, frames, *size, generator=torch.Generator().manual_seed(seed))
        x = noise.clone()
        for a, b in zip(sigmas[:-1], sigmas[1:]):
            if context is not None:
                x[:, :, :1] = context * (1 - a) + noise[:, :, :1] * a
            t = torch.tensor([a * 1000])
            v = net(x, t, embeds[caption][None], return_dict=False)[0]
            vu = net(x, t, embeds[""][None], return_dict=False)[0]
            x = x + (b - a) * (vu + args.guidance * (v - vu))
        if context is not None:
            x[:, :, :1] = context
        return x

    def decode(z: torch.Tensor, prime_at: int | None) -> torch.Tensor:
        x = vae.post_quant_conv(z * std + mean)
        vae.clear_cache()
        out = []
        for i in range(x.shape[2]):
            if i == prime_at:
                vae.clear_cache()
                vae._conv_idx = [0]
                vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=True)
            vae._conv_idx = [0]
            out.append(vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                   first_chunk=i == 0))
        vae.clear_cache()
        return ((torch.cat(out, 2).clamp(-1, 1) + 1) / 2)[0]

    right = collections.Counter()
    with torch.no_grad():
        for n, p in enumerate(prompts):
            a, b = p["prompt"]["caption"], p["switch_to"]["caption"]
            segments = [sample(a, None, n)]
            for k, caption in enumerate((a, b, b)):
                nxt = sample(caption, segments[-1][:, :, -1:], 100 * n + k)
                segments.append(nxt[:, :, 1:])
            z = torch.cat(segments, dim=2)
            video = decode(z, 1 + 2 * NEW_FRAMES if args.prime else None)
            for seg, caption in enumerate((a, a, b, b)):
                lat = range(1 + seg * NEW_FRAMES, 1 + (seg + 1) * NEW_FRAMES)
                pix = range(1 + seg * 4 * NEW_FRAMES, 1 + (seg + 1) * 4 * NEW_FRAMES)
                in_latent = [names[int(((protos - z[0, :, f].mean(dim=(1, 2))) ** 2).sum(1).argmin())] for f in lat]
                decoded = check_decoder.named_backgrounds(video[:, list(pix)] * 255)
                want = background(caption)
                right[(seg, "latent")] += collections.Counter(in_latent).most_common(1)[0][0] == want
                right[(seg, "decoded")] += collections.Counter(decoded).most_common(1)[0][0] == want
    print(f"background right, {len(prompts)} streams ({'primed at the switch' if args.prime else 'plain'}):")
    for seg, label in enumerate(("fresh", "continued", "switch", "after the switch")):
        lat, dec = right[(seg, "latent")], right[(seg, "decoded")]
        print(f"  segment {seg} ({label}): latent {lat / len(prompts):.0%}, decoded {dec / len(prompts):.0%}")


if __name__ == "__main__":
    main()
