"""A verifiable image reward for the procedural scenes: a miniature GenEval that reads pixels, not a network.

The prompt is parsed with the procedural caption grammar (``corl.data.procedural``: "a red circle
and a blue square on a white background") into named objects and a background. Every fact is one
check on the image, and the reward is the fraction of checks that hold:

- ``background``: most of the image border is the named background colour;
- ``count``: the number of foreground blobs equals the number of named objects;
- ``colour[i]``, ``shape[i]``: the blob paired with object ``i`` has its colour and its shape.

Pixels are classified to the nearest palette colour (the object colours and the backgrounds), or
to none when they are far from all of them, so the approximate colours of VQ-decoded images still
count. A blob is a 4-connected region of one object colour, large and thick enough (the colour
fringe around a blurry edge is neither). Its shape is read from the moments of its pixels, which
blur and stray pixels barely move: a triangle is lopsided (its rows skewed), a square puts more
weight in its corners than a circle. Objects are paired one-to-one with blobs to pass the most
checks, so "a red circle and a red square" needs two red blobs, and a red square beside a blue
circle does not pass as a red circle.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np
import torch

from corl.data.procedural import BACKGROUNDS, COLOURS, SHAPES
from corl.modules.rewards.base import GeneratedImages, ImageReward, RewardScore

PALETTE_NAMES = (*COLOURS, *BACKGROUNDS)  # object colours first: classes below len(COLOURS) are foreground
PALETTE = np.array([*COLOURS.values(), *BACKGROUNDS.values()], dtype=np.float32)  # [P, 3] RGB
NO_COLOUR = len(PALETTE_NAMES)  # the class of pixels far from every palette colour

_OBJECT = re.compile(rf"an? ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})")
_CAPTION = re.compile(rf"(.+) on an? ({'|'.join(BACKGROUNDS)}) background")

SceneObjects = list[tuple[str, str]]  # [(colour, shape)] in prompt order


def parse_caption(prompt: str) -> tuple[SceneObjects, str] | None:
    """``([(colour, shape), ...], background)`` of a procedural caption; None if it does not follow the grammar."""
    text = " ".join(prompt.lower().split()).rstrip(".")
    caption = _CAPTION.fullmatch(text)
    if caption is None:
        return None
    listed, background = caption.groups()
    head, _, last = listed.rpartition(" and ")
    objects = []
    for part in [*head.split(", "), last] if head else [last]:
        named = _OBJECT.fullmatch(part)
        if named is None:
            return None
        objects.append((named[1], named[2]))
    return objects, background


def classify_pixels(image: np.ndarray, max_distance: float) -> np.ndarray:
    """``[H, W]`` index into ``PALETTE_NAMES`` of each pixel's nearest colour; ``NO_COLOUR`` beyond ``max_distance``."""
    pixels = np.asarray(image, dtype=np.float32)  # [H, W, 3] in [0, 255]
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2, as one matmul rather than an [H, W, P, 3] difference
    squared = (pixels**2).sum(-1, keepdims=True) - 2 * pixels @ PALETTE.T + (PALETTE**2).sum(-1)  # [H, W, P]
    nearest = squared.argmin(axis=-1)
    return np.where(squared.min(axis=-1) <= max_distance**2, nearest, NO_COLOUR)


def label_components(classes: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """``[H, W]`` component ids: 4-connected foreground pixels of one class share an id (a pixel's flat index).

    Min-label propagation with pointer jumping: every pixel points at a pixel of its component with a
    smaller or equal index, so ``labels[labels]`` stays inside the component and halves the chains.
    """
    h, w = classes.shape
    join_x = foreground[:, 1:] & foreground[:, :-1] & (classes[:, 1:] == classes[:, :-1])  # [H, W-1]
    join_y = foreground[1:] & foreground[:-1] & (classes[1:] == classes[:-1])  # [H-1, W]
    labels = np.arange(h * w).reshape(h, w)
    while True:
        new = labels.copy()
        pair = np.minimum(labels[:, 1:], labels[:, :-1])
        new[:, 1:] = np.where(join_x, np.minimum(new[:, 1:], pair), new[:, 1:])
        new[:, :-1] = np.where(join_x, np.minimum(new[:, :-1], pair), new[:, :-1])
        pair = np.minimum(labels[1:], labels[:-1])
        new[1:] = np.where(join_y, np.minimum(new[1:], pair), new[1:])
        new[:-1] = np.where(join_y, np.minimum(new[:-1], pair), new[:-1])
        new = new.ravel()[new]
        if np.array_equal(new, labels):
            return labels
        labels = new


@dataclass(frozen=True)
class SceneThresholds:
    """The pixel-statistics thresholds of the scene checks (each documented on ``SceneReward``)."""

    max_distance: float = 80.0
    min_area_fraction: float = 0.01
    triangle_skew: float = 0.25
    square_corners: float = 0.8
    background_share: float = 0.5


def shape_of(rows: np.ndarray, cols: np.ndarray, limits: SceneThresholds) -> str:
    """A blob's shape from the moments of its pixels' coordinates ``[N]``, which a few stray pixels barely move.

    With u, v the standardised column and row: an apex-up (or down) triangle is lopsided, its rows
    skewed (E[v^3] = -2 sqrt(2) / 5 ~ -0.57) where circles and squares are symmetric (0). Of the
    symmetric, a square puts weight in its corners, E[u^2 v^2] = E[u^2] E[v^2] = 1, a disk less,
    2/3. Blur rounds corners and noise frays edges, but both keep these far apart on 64 px images.
    """
    u = (cols - cols.mean()) / max(cols.std(), 1e-6)
    v = (rows - rows.mean()) / max(rows.std(), 1e-6)
    if abs(np.mean(v**3)) >= limits.triangle_skew:
        return "triangle"
    return "square" if np.mean(u**2 * v**2) >= limits.square_corners else "circle"


@dataclass(frozen=True)
class Blob:
    """One foreground blob: a connected region of one object colour."""

    colour: str
    shape: str
    area: int  # pixels
    x: float  # centroid column as a fraction of the image width, in [0, 1]


def find_blobs(classes: np.ndarray, limits: SceneThresholds) -> list[Blob]:
    """The blobs of a class map ``[H, W]``, largest first: components of one object colour, large and thick enough.

    A blob needs ``min_area`` pixels, a quarter of them core: pixels whose four neighbours are in
    it too. That drops the one- or two-pixel fringes that blurred edges blend into other colours
    (a yellow edge on black reads orange), however long they are.
    """
    foreground = classes < len(COLOURS)
    labels = label_components(classes, foreground)
    padded = np.pad(labels, 1, mode="edge")  # the image border does not erode
    core = foreground & (padded[:-2, 1:-1] == labels) & (padded[2:, 1:-1] == labels)
    core &= (padded[1:-1, :-2] == labels) & (padded[1:-1, 2:] == labels)
    min_area = max(1, round(limits.min_area_fraction * classes.size))
    roots, areas = np.unique(labels[foreground], return_counts=True)
    cores = np.bincount(labels[core], minlength=classes.size)[roots]
    blobs = []
    for root in roots[(areas >= min_area) & (4 * cores >= min_area)]:
        rows, cols = np.nonzero(labels == root)
        x = (cols.mean() + 0.5) / classes.shape[1]
        blobs.append(Blob(PALETTE_NAMES[classes.flat[root]], shape_of(rows, cols, limits), len(rows), x))
    return sorted(blobs, key=lambda blob: -blob.area)


def match_objects(objects: SceneObjects, blobs: list[Blob]) -> list[Blob | None]:
    """The blob paired with each object (None: unpaired), one-to-one, passing the most colour and shape checks.

    Ties go to the pairing whose blobs lie nearest the objects' slots (left to right, as the
    procedural scenes are drawn). Exhaustive over subsets of blobs, so keep ``blobs`` short.
    """
    slots = [(i + 0.5) / len(objects) for i in range(len(objects))]

    @functools.cache
    def best(i: int, used: int) -> tuple[float, tuple[int, ...]]:  # objects i.. with the blobs in `used` taken
        if i == len(objects):
            return 0.0, ()
        value, rest = best(i + 1, used)
        choice = (value, (-1, *rest))
        colour, shape = objects[i]
        for j, blob in enumerate(blobs):
            if not used >> j & 1:
                gain = (blob.colour == colour) + (blob.shape == shape) - 0.01 * abs(blob.x - slots[i])
                value, rest = best(i + 1, used | 1 << j)
                if gain + value > choice[0]:
                    choice = (gain + value, (j, *rest))
        return choice

    return [blobs[j] if j >= 0 else None for j in best(0, 0)[1]]


def border_of(classes: np.ndarray) -> np.ndarray:
    """The classes of the image's outer band, 1 px wide per 32 px of height."""
    ring = max(1, classes.shape[0] // 32)
    return np.concatenate([classes[:ring], classes[-ring:], classes[:, :ring].T, classes[:, -ring:].T], axis=None)


def scene_checks(image: np.ndarray, prompt: str, limits: SceneThresholds | None = None) -> dict[str, bool] | None:
    """Each fact of the prompt checked on the image ``[H, W, 3]`` (uint8, or float in [0, 255]); None if unparsable.

    Keys: ``background``, ``count``, then ``colour[i]`` and ``shape[i]`` for the i-th named object.
    """
    parsed = parse_caption(prompt)
    if parsed is None:
        return None
    objects, background = parsed
    limits = limits or SceneThresholds()
    classes = classify_pixels(image, limits.max_distance)  # [H, W]
    blobs = find_blobs(classes, limits)
    paired = match_objects(objects, blobs[: len(objects) + 2])  # the largest few: the search is exponential
    checks = {
        "background": bool(np.mean(border_of(classes) == PALETTE_NAMES.index(background)) >= limits.background_share),
        "count": len(blobs) == len(objects),
    }
    for i, ((colour, shape), blob) in enumerate(zip(objects, paired, strict=True)):
        checks[f"colour[{i}]"] = blob is not None and blob.colour == colour
        checks[f"shape[{i}]"] = blob is not None and blob.shape == shape
    return checks


class SceneReward(ImageReward):
    """The fraction of the prompt's facts (background, count, each object's colour and shape) the image shows.

    For prompts in the procedural caption grammar; any other prompt scores NaN. Pure pixel
    statistics on the CPU (``scene_checks``), 1-2 ms an image at 64 px.

    Args:
        max_distance: RGB distance (0-255 scale) beyond which a pixel is no palette colour, so an
            off-palette object (cyan, ~120 from blue) is no object while a VQ decoder's approximate
            colours still count. Telling close colours apart (orange and yellow are ~71 apart) is
            the nearest-colour assignment's job, not the cut-off's.
        min_area_fraction: the smallest blob, as a fraction of the image (the smallest procedural
            object, a triangle of three at 32 px, covers ~4%; speckle in noise stays far below 1%).
        triangle_skew: blobs whose rows are at least this skewed are triangles (an apex-up triangle
            -0.57, ~-0.4 blurred; circles and squares 0, within +-0.1 blurred and noisy).
        square_corners: symmetric blobs with at least this E[u^2 v^2] of their standardised
            coordinates are squares, below it circles (a square 1, ~0.83 heavily blurred; a disk
            2/3, up to ~0.71 blurred).
        background_share: the least share of the border band in the named background colour.
        weight: weight in the image reward.
        name: log name.
    """

    default_name = "scene"

    def __init__(
        self,
        max_distance: float = SceneThresholds.max_distance,
        min_area_fraction: float = SceneThresholds.min_area_fraction,
        triangle_skew: float = SceneThresholds.triangle_skew,
        square_corners: float = SceneThresholds.square_corners,
        background_share: float = SceneThresholds.background_share,
        weight: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(weight, name)
        self.limits = SceneThresholds(max_distance, min_area_fraction, triangle_skew, square_corners, background_share)

    def __call__(self, samples: GeneratedImages) -> torch.Tensor:
        """The fraction of checks passed per image, on the images' device; NaN for an unparsable prompt."""
        return self.scored(samples).values

    @torch.no_grad()
    def scored(self, samples: GeneratedImages) -> RewardScore:
        """The scores, and per image the share of each kind of check passed, GenEval's categories in miniature.

        Parts: ``background`` and ``count`` (0 or 1), ``colour`` and ``shape`` (the fraction of the
        named objects with theirs); NaN for an unparsable prompt.
        """
        pixels = samples.images.float().add(1.0).mul(127.5).clamp(0.0, 255.0)  # [R, 3, H, W] in [0, 255]
        pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()  # [R, H, W, 3]
        rows = [scene_checks(image, prompt, self.limits) for image, prompt in zip(pixels, samples.prompts, strict=True)]

        def mean_of(kind: str) -> torch.Tensor:  # per image, the mean of its checks of this kind
            values = [np.mean([v for k, v in checks.items() if k.split("[")[0] == kind]) if checks else np.nan
                      for checks in rows]
            return torch.tensor(values, dtype=torch.float32, device=samples.images.device)

        scores = torch.tensor([np.mean(list(checks.values())) if checks else np.nan for checks in rows],
                              dtype=torch.float32, device=samples.images.device)
        return RewardScore(scores, {kind: mean_of(kind) for kind in ("background", "count", "colour", "shape")})
