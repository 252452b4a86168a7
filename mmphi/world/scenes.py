"""Scenes of the shapes world: sampling and rendering.

A scene is 1-3 objects, each a (shape, colour, size) placed in one of five slots of a 3x3
grid (left, right, top, bottom, centre), at most one object per slot, and no two objects
with the same colour *and* shape, so "the red circle" always names one object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "yellow": (240, 200, 20),
    "purple": (148, 60, 189),
    "orange": (255, 127, 14),
}
POSITIONS = ("left", "right", "top", "bottom", "centre")
# (row, col) of each slot in the 3x3 grid.
SLOTS = {"top": (0, 1), "left": (1, 0), "centre": (1, 1), "right": (1, 2), "bottom": (2, 1)}
# Reading order used by canonical descriptions.
READING_ORDER = ("top", "left", "centre", "right", "bottom")
SIZES = {"small": 0.5, "large": 0.8}  # fraction of a grid cell
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    position: str
    dx: float = 0.0  # jitter inside the cell, in cell fractions
    dy: float = 0.0


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: tuple[int, int, int]

    def signature(self) -> tuple:
        """What makes two scenes "the same scene" (jitter and background aside)."""
        return tuple(sorted((o.shape, o.colour, o.size, o.position) for o in self.objects))

    def ordered(self) -> list[Obj]:
        return sorted(self.objects, key=lambda o: READING_ORDER.index(o.position))

    def to_json(self) -> dict:
        return {"objects": [asdict(o) for o in self.ordered()], "background": list(self.background)}

    @staticmethod
    def from_json(data: dict) -> Scene:
        return Scene(tuple(Obj(**o) for o in data["objects"]), tuple(data["background"]))


def sample_scene(rng: np.random.Generator, max_objects: int = 3) -> Scene:
    n = int(rng.integers(1, max_objects + 1))
    positions = rng.choice(len(POSITIONS), size=n, replace=False)
    objects: list[Obj] = []
    pairs: set[tuple[str, str]] = set()
    colours = list(COLOURS)
    for p in positions:
        while True:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            colour = colours[int(rng.integers(len(colours)))]
            if (shape, colour) not in pairs:
                break
        pairs.add((shape, colour))
        size = ("small", "large")[int(rng.integers(2))]
        slack = (1.0 - SIZES[size]) / 2 * 0.6
        dx, dy = (float(v) for v in rng.uniform(-slack, slack, size=2))
        objects.append(Obj(shape, colour, size, POSITIONS[int(p)], round(dx, 4), round(dy, 4)))
    grey = int(rng.integers(228, 250))
    tint = int(rng.integers(-6, 7))
    return Scene(tuple(objects), (grey, grey, min(255, grey + tint)))


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.98, cy + r * 0.8), (cx - r * 0.98, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    raise ValueError(shape)


def render(scene: Scene, image_size: int = 96) -> Image.Image:
    """Draw a scene; supersampled then downsized so edges are anti-aliased."""
    big = image_size * SUPERSAMPLE
    cell = big / 3
    img = Image.new("RGB", (big, big), scene.background)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        row, col = SLOTS[o.position]
        cx = (col + 0.5 + o.dx) * cell
        cy = (row + 0.5 + o.dy) * cell
        r = SIZES[o.size] * cell / 2
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif o.shape == "square":
            s = r * 0.85
            draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
        else:
            draw.polygon(_polygon(o.shape, cx, cy, r), fill=fill)
    return img.resize((image_size, image_size), Image.Resampling.LANCZOS)
