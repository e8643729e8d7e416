"""Tiles: plan overlapping windows over an image, cut them out, and blend them back.

Pure functions over arrays.  Every tile of a plan has the same shape (so tiles batch),
tiles overlap by at least ``overlap`` pixels, and the blend weights of all tiles sum
to exactly 1 at every pixel: each tile's window ramps up (sin^2) over the overlap on
sides that have a neighbour and is flat elsewhere, and the windows are then divided by
their sum.  Each tile's noise seed comes from the image seed and the tile's position,
so a restoration depends neither on the batch size nor on the order tiles run in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class Tile:
    y: int  # top row in the (padded) image
    x: int  # left column
    h: int
    w: int

    @property
    def window(self) -> Tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)


@dataclass(frozen=True)
class TilePlan:
    height: int  # the (padded) image the plan covers
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    tiles: Tuple[Tile, ...]

    def __len__(self) -> int:
        return len(self.tiles)


def axis_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Evenly spread starts of tiles of size ``tile`` that cover [0, length) and overlap
    by at least ``overlap``; one start where the tile covers the whole axis."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> TilePlan:
    """Tiles of at most ``tile`` x ``tile`` over an image; tile <= 0 means one tile, the
    whole image.  An image smaller than the tile on a side gets tiles of its own size there."""
    if tile <= 0:
        tile, overlap = max(height, width), 0
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"tile overlap must be in 0..{tile // 2} (half the tile), got {overlap}")
    th, tw = min(tile, height), min(tile, width)
    ys = axis_starts(height, th, overlap)
    xs = axis_starts(width, tw, overlap)
    tiles = tuple(Tile(y, x, th, tw) for y in ys for x in xs)
    return TilePlan(height, width, th, tw, overlap, tiles)


def _ramp(n: int) -> np.ndarray:
    """sin^2 rising over n pixels, strictly inside (0, 1), so the sum of a ramp and its
    mirror is exactly 1 where two tiles overlap by n."""
    return np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2


def _axis_window(size: int, start: int, length: int, overlap: int) -> np.ndarray:
    w = np.ones(size, dtype=np.float64)
    if overlap > 0:
        if start > 0:
            w[:overlap] = _ramp(overlap)
        if start + size < length:
            w[size - overlap :] = np.minimum(w[size - overlap :], _ramp(overlap)[::-1])
    return w


def raw_window(plan: TilePlan, tile: Tile) -> np.ndarray:
    """The unnormalised separable window of one tile [h, w]."""
    wy = _axis_window(tile.h, tile.y, plan.height, plan.overlap)
    wx = _axis_window(tile.w, tile.x, plan.width, plan.overlap)
    return np.outer(wy, wx)


def weight_sum(plan: TilePlan) -> np.ndarray:
    """Sum of all raw windows over the image [H, W] (float64): what blending divides by."""
    total = np.zeros((plan.height, plan.width), dtype=np.float64)
    for t in plan.tiles:
        total[t.window] += raw_window(plan, t)
    return total


def cut(image: np.ndarray, tiles: Sequence[Tile]) -> np.ndarray:
    """Stack the tiles of a [C, H, W] image into [N, C, h, w]."""
    return np.stack([image[(slice(None),) + t.window] for t in tiles])


class Blender:
    """Accumulates restored tiles into a [C, H, W] canvas, in any order, one at a time:
    memory is one canvas and one weight map, whatever the number of tiles."""

    def __init__(self, plan: TilePlan, channels: int):
        self.plan = plan
        self.channels = channels
        self.total = weight_sum(plan).astype(np.float32)
        self.start()

    def start(self) -> None:
        """A fresh canvas (the previous one stays valid for whoever holds it)."""
        self.canvas = np.zeros((self.channels, self.plan.height, self.plan.width), dtype=np.float32)

    def add(self, index: int, tile_image: np.ndarray) -> None:
        t = self.plan.tiles[index]
        w = raw_window(self.plan, t).astype(np.float32) / self.total[t.window]
        self.canvas[(slice(None),) + t.window] += w[None] * tile_image

    def result(self) -> np.ndarray:
        return self.canvas


def plan_regions(plan: TilePlan, max_tiles: int) -> List[List[int]]:
    """Blocks of neighbouring tiles that share one stop, at most ``max_tiles`` each, cut as
    evenly as the tile grid allows; fixed by the plan alone (not by batch or order)."""
    ys = sorted({t.y for t in plan.tiles})
    xs = sorted({t.x for t in plan.tiles})
    side = max(1, math.isqrt(max_tiles))
    row_groups = np.array_split(np.arange(len(ys)), math.ceil(len(ys) / side))
    col_groups = np.array_split(np.arange(len(xs)), math.ceil(len(xs) / side))
    index = {(t.y, t.x): i for i, t in enumerate(plan.tiles)}
    return [[index[(ys[r], xs[c])] for r in rows for c in cols] for rows in row_groups for cols in col_groups]


def sub_plan(plan: TilePlan, indices: Sequence[int]) -> TilePlan:
    """The plan of some tiles alone, over their bounding box (for blending them locally)."""
    tiles = [plan.tiles[i] for i in indices]
    y0, x0 = min(t.y for t in tiles), min(t.x for t in tiles)
    y1, x1 = max(t.y + t.h for t in tiles), max(t.x + t.w for t in tiles)
    return TilePlan(
        y1 - y0,
        x1 - x0,
        plan.tile_h,
        plan.tile_w,
        plan.overlap,
        tuple(Tile(t.y - y0, t.x - x0, t.h, t.w) for t in tiles),
    )


def tile_seed(seed: int, tile: Tile) -> Tuple[int, int, int]:
    """The entropy of one tile's starting noise: the image seed and the tile's position."""
    return (int(seed), int(tile.y), int(tile.x))


def border_mask(plan: TilePlan, width: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """[H, W-1] and [H-1, W] boolean masks of horizontal and vertical pixel differences
    that cross a tile edge (within ``width`` pixels of one), for measuring seams."""
    cols = np.zeros(plan.width - 1, dtype=bool)
    rows = np.zeros(plan.height - 1, dtype=bool)
    for t in plan.tiles:
        for edge in (t.x, t.x + t.w):
            if 0 < edge < plan.width:
                cols[max(0, edge - width) : min(plan.width - 1, edge + width - 1) + 1] = True
        for edge in (t.y, t.y + t.h):
            if 0 < edge < plan.height:
                rows[max(0, edge - width) : min(plan.height - 1, edge + width - 1) + 1] = True
    return (
        np.broadcast_to(cols[None, :], (plan.height, plan.width - 1)),
        np.broadcast_to(rows[:, None], (plan.height - 1, plan.width)),
    )
