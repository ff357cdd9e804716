"""The shapes world: procedural video clips with captions, the data Framecast's default model
is trained on and the ground truth its eval measures against.

A clip is one flat-coloured object (circle, square or triangle) on a flat background, moving
left, right, up or down at a steady speed or standing still. The world wraps around (an object
leaving on the left comes back on the right), so a stream can go on for any number of segments
and the object never leaves the picture. Captions come from a small grammar:

    a red circle moving left on a blue background
    a yellow triangle standing still on a black background

Everything is deterministic by seed. Some (colour, shape, motion) triples are held out: never
drawn for training, used by the eval (`held_out_prompts`). `world.json` (written next to the
trained model) carries the grammar and the colours, so the Rust eval checks pixels against the
same definitions.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Named colours, RGB. Far apart from each other, so "which named colour is this" has one answer.
OBJECT_COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 70, 230),
    "yellow": (245, 220, 30),
    "purple": (150, 40, 200),
    "orange": (250, 130, 20),
}
BACKGROUND_COLOURS = {
    "black": (15, 15, 15),
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
    "blue": (40, 70, 230),
    "green": (30, 190, 50),
}
SHAPES = ("circle", "square", "triangle")
# Motion name → (dx, dy) per frame in units of the speed; image y grows downwards.
MOTIONS = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "still": (0, 0),
}
MOTION_PHRASES = {
    "left": "moving left",
    "right": "moving right",
    "up": "moving up",
    "down": "moving down",
    "still": "standing still",
}
# Of every 7 (colour, shape, motion) triples one is held out (chosen by this seed), so every
# colour, shape and motion is seen in training, but not every combination.
HELD_OUT_SEED = 17
HELD_OUT_EVERY = 7


@dataclass(frozen=True)
class Scene:
    """What a caption says: the parameters of a clip before its random placement."""

    colour: str
    shape: str
    motion: str
    background: str

    @property
    def caption(self) -> str:
        article = "an" if self.colour[0] in "aeiou" else "a"
        return f"{article} {self.colour} {self.shape} {MOTION_PHRASES[self.motion]} on a {self.background} background"

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.motion)


def all_triples() -> list[tuple[str, str, str]]:
    return list(itertools.product(OBJECT_COLOURS, SHAPES, MOTIONS))


def held_out_triples() -> set[tuple[str, str, str]]:
    triples = all_triples()
    rng = random.Random(HELD_OUT_SEED)
    rng.shuffle(triples)
    return set(triples[: len(triples) // HELD_OUT_EVERY])


def backgrounds_for(colour: str) -> list[str]:
    """Backgrounds an object of `colour` may be drawn on: never its own colour."""
    return [b for b, rgb in BACKGROUND_COLOURS.items() if rgb != OBJECT_COLOURS[colour]]


def training_scenes() -> list[Scene]:
    held = held_out_triples()
    return [
        Scene(c, s, m, b)
        for (c, s, m) in all_triples()
        if (c, s, m) not in held
        for b in backgrounds_for(c)
    ]


def held_out_scenes() -> list[Scene]:
    return [Scene(c, s, m, b) for (c, s, m) in sorted(held_out_triples()) for b in backgrounds_for(c)]


def vocabulary() -> list[str]:
    """Every caption the grammar can make (training and held out), for the tokenizer."""
    return [Scene(c, s, m, b).caption for (c, s, m) in all_triples() for b in backgrounds_for(c)]


@dataclass(frozen=True)
class Placement:
    """Where a clip's object starts and how it moves: drawn from the clip's seed."""

    x: float
    y: float
    size: float
    speed: float


def placement(seed: int, width: int, height: int) -> Placement:
    rng = random.Random(seed)
    return Placement(
        x=rng.uniform(0, width),
        y=rng.uniform(0, height),
        size=rng.uniform(0.16, 0.22) * min(width, height),
        speed=rng.uniform(0.018, 0.026) * min(width, height),
    )


def _coverage(shape: str, px: np.ndarray, py: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Fraction of each pixel (centres px, py) inside the shape centred at (cx, cy) with
    half-size r: a one-pixel linear ramp at the edge, so moving objects do not flicker."""
    dx, dy = px - cx, py - cy
    if shape == "circle":
        d = np.sqrt(dx * dx + dy * dy) - r
    elif shape == "square":
        d = np.maximum(np.abs(dx), np.abs(dy)) - r * 0.85
    elif shape == "triangle":
        # Upward-pointing isosceles triangle inscribed in the circle of radius r.
        k = np.sqrt(3.0)
        qx, qy = np.abs(dx) / r, dy / r
        d = np.maximum((k * qx - qy) / 2.0 - 0.5, qy - 0.5) * r
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.clip(0.5 - d, 0.0, 1.0)


def render(scene: Scene, seed: int, frames: int, width: int = 64, height: int = 64, start: int = 0) -> np.ndarray:
    """Frames `start .. start+frames` of the clip `(scene, seed)` as uint8 (T, H, W, 3)."""
    p = placement(seed, width, height)
    dx, dy = MOTIONS[scene.motion]
    obj = np.array(OBJECT_COLOURS[scene.colour], dtype=np.float32)
    bg = np.array(BACKGROUND_COLOURS[scene.background], dtype=np.float32)
    py, px = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for i in range(frames):
        t = start + i
        cx = (p.x + dx * p.speed * t) % width
        cy = (p.y + dy * p.speed * t) % height
        cover = np.zeros((height, width), dtype=np.float32)
        # The world wraps: draw the copies one width/height away too.
        for ox in (-width, 0, width):
            for oy in (-height, 0, height):
                cover = np.maximum(cover, _coverage(scene.shape, px, py, cx + ox, cy + oy, p.size))
        img = bg[None, None, :] * (1.0 - cover[..., None]) + obj[None, None, :] * cover[..., None]
        out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def world_json() -> dict:
    """The grammar and ground truth the Rust eval reads (`world.json` beside the model)."""
    return {
        "format": "framecast.world.v1",
        "object_colours": {k: list(v) for k, v in OBJECT_COLOURS.items()},
        "background_colours": {k: list(v) for k, v in BACKGROUND_COLOURS.items()},
        "shapes": list(SHAPES),
        "motions": {k: {"dx": v[0], "dy": v[1], "phrase": MOTION_PHRASES[k]} for k, v in MOTIONS.items()},
        "held_out_triples": [list(t) for t in sorted(held_out_triples())],
    }


def eval_prompts(count: int = 48, seed: int = 7) -> list[dict]:
    """`count` held-out scenes (each with a second held-out scene to switch to), as the eval's
    prompt set: caption plus the expected colours and motion."""
    scenes = held_out_scenes()
    rng = random.Random(seed)
    rng.shuffle(scenes)
    picked = [scenes[i % len(scenes)] for i in range(count)]
    out = []
    for i, s in enumerate(picked):
        # The switch target differs in object colour and motion, so the switch is measurable.
        others = [o for o in scenes if o.colour != s.colour and o.motion != s.motion and o.motion != "still"]
        t = others[rng.randrange(len(others))]
        out.append({"id": i, "seed": 1000 + i, "prompt": describe(s), "switch_to": describe(t)})
    return out


def describe(s: Scene) -> dict:
    return {
        "caption": s.caption,
        "colour": s.colour,
        "shape": s.shape,
        "motion": s.motion,
        "background": s.background,
    }


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("world.json")
    out.write_text(json.dumps(world_json(), indent=2) + "\n")
