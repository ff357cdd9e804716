"""The trainer's batch building: which windows train the first latent frame, the decoder's cuts
and its object weighting; and check_decoder's object-colour measure."""

import random
import sys
import unittest
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import check_decoder  # noqa: E402
import train  # noqa: E402
import world  # noqa: E402


def numbered_latents(clips: int, frames: int) -> torch.Tensor:
    """(clips, 1, frames, 1, 1) latents whose value is clip * 100 + frame."""
    v = torch.tensor([[c * 100 + f for f in range(frames)] for c in range(clips)], dtype=torch.float32)
    return v.view(clips, 1, frames, 1, 1)


class WindowsTest(unittest.TestCase):
    def test_fresh_flags_exactly_the_windows_that_start_at_a_clip_start(self):
        lat = numbered_latents(6, 9)
        data = {"latents": lat, "captions": [f"c{i % 3}" for i in range(6)]}
        by_caption: dict[str, list[int]] = {}
        for i, c in enumerate(data["captions"]):
            by_caption.setdefault(c, []).append(i)
        rng = random.Random(1)
        seen = {True: 0, False: 0}
        for _ in range(50):
            x, caps, fresh = train.windows(rng, data, 16, by_caption, switch_share=0.25)
            self.assertEqual(fresh.shape, (16,))
            for w, f in zip(x, fresh.tolist()):
                starts_clip = int(w[0, 0, 0, 0]) % 100 == 0
                self.assertEqual(f, starts_clip)
                seen[f] += 1
        # ~30 % fresh; both kinds present.
        self.assertGreater(seen[True], 100)
        self.assertGreater(seen[False], 400)

    def test_switch_share_sets_how_many_windows_change_clip(self):
        lat = numbered_latents(8, 9)
        data = {"latents": lat, "captions": [f"c{i}" for i in range(8)]}
        by_caption = {f"c{i}": [i] for i in range(8)}
        for share, lo, hi in ((0.0, 0.0, 0.0), (0.5, 0.4, 0.6)):
            rng = random.Random(2)
            switched = total = 0
            for _ in range(40):
                x, _, _ = train.windows(rng, data, 16, by_caption, switch_share=share)
                for w in x:
                    clips = {int(v) // 100 for v in w[0, :, 0, 0]}
                    switched += len(clips) > 1
                    total += 1
            self.assertGreaterEqual(switched / total, lo)
            self.assertLessEqual(switched / total, hi)


    def test_near_switches_change_the_colour_alone_and_fresh_share_is_obeyed(self):
        captions = ["a red circle moving left on a blue background",
                    "an orange circle moving left on a blue background",
                    "a yellow square moving up on a gray background",
                    "a red circle moving right on a blue background"]
        near = train.colour_neighbours(captions)
        self.assertEqual(near[captions[0]], [captions[1]])
        self.assertEqual(near[captions[1]], [captions[0]])
        self.assertEqual(near[captions[2]], [])
        lat = numbered_latents(4, 9)
        data = {"latents": lat, "captions": captions}
        by_caption = {c: [i] for i, c in enumerate(captions)}
        rng = random.Random(3)
        fresh_seen = total = 0
        for _ in range(40):
            x, caps, fresh = train.windows(rng, data, 16, by_caption, switch_share=1.0 - 0.6,
                                           fresh_share=0.6, near=near, near_share=1.0)
            fresh_seen += int(fresh.sum())
            total += len(fresh)
            for w, cap in zip(x, caps):
                clips = [int(v) // 100 for v in w[0, :, 0, 0]]
                if clips[0] != clips[-1] and clips[0] in (0, 1):
                    # A switch from a caption with a neighbour goes to that neighbour.
                    self.assertEqual(cap, near[captions[clips[0]]][0])
        self.assertGreater(fresh_seen / total, 0.5)
        self.assertLess(fresh_seen / total, 0.7)


class DecoderBatchTest(unittest.TestCase):
    def test_a_cut_takes_latents_and_their_pixel_frames_from_the_other_clip_alike(self):
        seen = set()
        for seed in range(20):
            x = torch.zeros(3, 3, 13, 4, 4)
            z = torch.zeros(3, 2, 4, 1, 1)
            cuts = train.cut_to_other(random.Random(seed), x, z, torch.ones_like(x), torch.ones_like(z), share=1.0)
            for i, k in enumerate(cuts):
                seen.add(k)
                # Latent frames 0..k-1 (pixel frames 0..4(k-1)) kept; the rest cut.
                self.assertTrue(torch.all(z[i, :, :k] == 0) and torch.all(z[i, :, k:] == 1))
                self.assertTrue(torch.all(x[i, :, : 1 + 4 * (k - 1)] == 0))
                self.assertTrue(torch.all(x[i, :, 1 + 4 * (k - 1) :] == 1))
        # The cut falls anywhere after the first frame.
        self.assertEqual(seen, {1, 2, 3})

    def test_earliest_bounds_where_the_cut_falls(self):
        for seed in range(20):
            x, z = torch.zeros(2, 3, 21, 4, 4), torch.zeros(2, 2, 6, 1, 1)
            cuts = train.cut_to_other(random.Random(seed), x, z, torch.ones_like(x), torch.ones_like(z), share=1.0, earliest=4)
            self.assertTrue(all(k in (4, 5) for k in cuts), cuts)

    def test_a_warm_decode_is_the_tail_of_the_whole_decode_and_trains_only_the_tail(self):
        import model

        vae = model.vae(train.SEED)
        z = torch.randn(1, model.Z_DIM, 4, 2, 2, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            whole = train.decode_unclamped(vae, z)
        tail = train.decode_unclamped(vae, z, warm=2)
        self.assertEqual(tail.shape[2], 8)  # latent frames 2 and 3: 4 pixel frames each
        self.assertTrue(torch.allclose(tail, whole[:, :, -8:], atol=1e-5))
        self.assertTrue(tail.requires_grad)

    def test_no_cut_at_share_zero(self):
        x, z = torch.zeros(2, 3, 9, 4, 4), torch.zeros(2, 2, 3, 1, 1)
        cuts = train.cut_to_other(random.Random(0), x, z, torch.ones_like(x), torch.ones_like(z), share=0.0)
        self.assertEqual(cuts, [None, None])
        self.assertEqual(float(x.abs().sum() + z.abs().sum()), 0.0)

    def test_object_pixels_weigh_more(self):
        x = torch.full((1, 3, 2, 16, 16), -0.5)  # background
        x[0, 0, :, 4:8, 4:8] = 0.9  # a red-ish square
        w = train.object_weights(x)
        self.assertEqual(w.shape, (1, 1, 2, 16, 16))
        self.assertTrue(torch.all(w[0, 0, :, 4:8, 4:8] == train.OBJECT_WEIGHT))
        self.assertEqual(float(w.sum()), 2 * (16 * 16 - 16) + 2 * 16 * train.OBJECT_WEIGHT)
        w = train.object_weights(x, 40.0)
        self.assertTrue(torch.all(w[0, 0, :, 4:8, 4:8] == 40.0))

    def test_the_objects_latent_cells_weigh_more_in_the_flow_matching_loss(self):
        x0 = torch.randn(2, 16, 3, 8, 8) * 0.05 + torch.randn(1, 16, 1, 1, 1)  # a flat background
        x0[0, :, :, 2:4, 5:7] += 3.0  # an object of 4 cells in clip 0
        w = train.latent_object_weights(x0, 4.0)
        self.assertEqual(w.shape, (2, 1, 3, 8, 8))  # broadcast over channels
        self.assertTrue(torch.all(w[0, 0, :, 2:4, 5:7] == 4.0))
        self.assertEqual(float(w[0].sum()), 3 * (60 + 4 * 4.0))
        self.assertTrue(torch.all(w[1] == 1.0))  # no object: plain MSE
        self.assertTrue(torch.all(train.latent_object_weights(x0, 1.0) == 1.0))


class ObjectColourTest(unittest.TestCase):
    def test_the_interior_names_the_rendered_colour_and_a_shifted_one_is_named_apart(self):
        scene = world.Scene("yellow", "circle", "left", "black")
        clip = world.render(scene, 5, 3)
        inner = check_decoder.object_interior(clip, "yellow")
        self.assertTrue(inner.any(axis=(1, 2)).all())
        # Interior only: no pixel of the one-pixel blended edge.
        full = np.abs(clip.astype(float) - world.OBJECT_COLOURS["yellow"]).sum(-1) < 3
        self.assertLess(inner.sum(), full.sum())
        video = torch.from_numpy(clip).permute(3, 0, 1, 2).float()
        self.assertEqual(check_decoder.named_object_colours(video, inner), ["yellow"] * 3)
        # Yellow with the green channel pulled down as the decoder did: named orange.
        video[1] = torch.where(torch.from_numpy(inner), torch.tensor(150.0), video[1])
        self.assertEqual(check_decoder.named_object_colours(video, inner), ["orange"] * 3)
        inner[1] = False
        self.assertIsNone(check_decoder.named_object_colours(video, inner)[1])


class ExportHistoryTest(unittest.TestCase):
    def test_runs_recorded_by_hand_are_carried_and_phases_are_not(self):
        earlier = {"seed": 1, "size": 64, "device": "cpu", "vae": {"steps": 3}, "transformer": {"steps": 4},
                   "decoder": {"steps": 5}, "vae_longclip": {"steps": 2753}}
        self.assertEqual(train.other_history(earlier), {"vae_longclip": {"steps": 2753}})
        self.assertEqual(train.other_history({}), {})


if __name__ == "__main__":
    unittest.main()
