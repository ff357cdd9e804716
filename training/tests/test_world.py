"""The shapes world: deterministic, its captions say what its pixels show, and the held-out
set really is held out."""

import sys
import unittest
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import world  # noqa: E402


def centroid(frame: np.ndarray, bg: np.ndarray) -> tuple[float, float]:
    """Circular mean of the pixels that are not background (the world wraps)."""
    h, w, _ = frame.shape
    mask = np.abs(frame.astype(int) - bg.astype(int)).sum(-1) > 60
    ys, xs = np.nonzero(mask)
    ang = lambda v, n: np.angle(np.exp(2j * np.pi * v / n).mean()) % (2 * np.pi) * n / (2 * np.pi)
    return ang(xs, w), ang(ys, h)


def wrapped(d: float, n: int) -> float:
    return (d + n / 2) % n - n / 2


class WorldTest(unittest.TestCase):
    def test_rendering_is_deterministic_by_seed(self):
        s = world.Scene("red", "circle", "left", "blue")
        a = world.render(s, 5, 6)
        self.assertTrue(np.array_equal(a, world.render(s, 5, 6)))
        self.assertFalse(np.array_equal(a, world.render(s, 6, 6)))
        # Frames start..start+n of a clip are the same frames however they are asked for.
        self.assertTrue(np.array_equal(a[3:], world.render(s, 5, 3, start=3)))

    def test_captions_match_pixels(self):
        for motion, (dx, dy) in world.MOTIONS.items():
            for shape in world.SHAPES:
                s = world.Scene("yellow", shape, motion, "black")
                frames = world.render(s, 11, 9)
                bg = np.array(world.BACKGROUND_COLOURS["black"])
                obj = np.array(world.OBJECT_COLOURS["yellow"])
                # The background colour fills most of the frame; the object's colour is there.
                flat = frames[0].reshape(-1, 3).astype(int)
                self.assertGreater((np.abs(flat - bg).sum(1) < 3).mean(), 0.8, s.caption)
                self.assertGreater((np.abs(flat - obj).sum(1) < 3).sum(), 30, s.caption)
                (x0, y0), (x1, y1) = centroid(frames[0], bg), centroid(frames[-1], bg)
                vx, vy = wrapped(x1 - x0, 64) / 8, wrapped(y1 - y0, 64) / 8
                if motion == "still":
                    self.assertLess(abs(vx) + abs(vy), 0.05, s.caption)
                else:
                    self.assertGreater(vx * dx + vy * dy, 1.0, s.caption)
                    self.assertLess(abs(vx * dy) + abs(vy * dx), 0.1, s.caption)

    def test_an_object_never_takes_the_background_colour(self):
        for s in world.training_scenes() + world.held_out_scenes():
            self.assertNotEqual(world.OBJECT_COLOURS[s.colour], world.BACKGROUND_COLOURS[s.background])

    def test_held_out_triples_are_never_trained_on_but_their_parts_are(self):
        held = world.held_out_triples()
        self.assertGreaterEqual(len(held), 10)
        train = world.training_scenes()
        self.assertFalse({s.triple for s in train} & held)
        for i, names in enumerate((world.OBJECT_COLOURS, world.SHAPES, world.MOTIONS)):
            self.assertEqual({s.triple[i] for s in train}, set(names))

    def test_eval_prompts_are_held_out_and_switch_to_something_visible(self):
        prompts = world.eval_prompts()
        self.assertGreaterEqual(len(prompts), 40)
        held = world.held_out_triples()
        for p in prompts:
            a, b = p["prompt"], p["switch_to"]
            self.assertIn((a["colour"], a["shape"], a["motion"]), held)
            self.assertIn((b["colour"], b["shape"], b["motion"]), held)
            self.assertNotEqual(a["colour"], b["colour"])
            self.assertNotEqual(a["motion"], b["motion"])
        self.assertEqual(prompts, world.eval_prompts())

    def test_captions_use_the_right_article(self):
        self.assertTrue(world.Scene("orange", "square", "up", "gray").caption.startswith("an orange square moving up"))
        self.assertEqual(
            world.Scene("red", "triangle", "still", "white").caption,
            "a red triangle standing still on a white background",
        )


class TokenizerTest(unittest.TestCase):
    def test_every_caption_tokenizes_without_unknown_pieces(self):
        import model

        tok = model.tokenizer()
        unk = tok.convert_tokens_to_ids("<unk>")
        for caption in world.vocabulary():
            ids = tok(caption)["input_ids"]
            self.assertNotIn(unk, ids, caption)
            self.assertEqual(ids[-1], tok.eos_token_id)


if __name__ == "__main__":
    unittest.main()
