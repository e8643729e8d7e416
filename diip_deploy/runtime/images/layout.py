"""The tile layout of one image, computed once, and its assembly from restored units.

``ImageTiling`` holds a manifest's tile rules under a run's settings (tile size, overlap,
units of tiles that share a stop) and opens no backend, so a Ray driver plans with it as
a Restorer does.  ``ImageLayout`` is one image's plan, units, tiles and seeds, made once
per image and shared by the progress bar, the restorer and the assembly.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as dataclasses_replace
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

from ...manifest import Manifest
from ...settings import RestoreSettings
from ..units import UnitResult
from .codec import ImageError, check_pixels, pad_to_multiple
from .tiling import Blender, TilePlan, cut, plan_regions, plan_tiles, sub_plan, tile_seed


class TileSource:
    """Tiles of one padded image in model range, cut on demand (no [N, C, h, w] copy)."""

    def __init__(self, image: np.ndarray, plan: TilePlan):
        self.image = image
        self.plan = plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> np.ndarray:
        return cut(self.image, [self.plan.tiles[i]])[0]


class Subset:
    """Some samples of a source, renumbered from 0."""

    def __init__(self, source: Any, indices: Sequence[int]):
        self.source, self.indices = source, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.source[self.indices[i]]


@dataclass
class ImageLayout:
    """One image's tiles: the plan, the units restored together, the tiles in model range
    (cut on demand) and each tile's seed."""

    shape: Tuple[int, int, int]  # the image's H, W, C
    seed: int
    plan: TilePlan
    units: List[List[int]]
    tiles: TileSource
    seeds: List[Tuple[int, int, int]]

    def blend(self, indices: Sequence[int], image_of: Callable[[int], np.ndarray]) -> np.ndarray:
        """The tiles ``indices`` blended over their bounding box, tile i's pixels from
        ``image_of(i)``."""
        blender = Blender(sub_plan(self.plan, indices), self.shape[2])
        for g, i in enumerate(indices):
            blender.add(g, image_of(i))
        return blender.result()


class ImageTiling:
    """A manifest's tiles under a run's settings, with no backend opened."""

    def __init__(self, manifest: Manifest, settings: RestoreSettings):
        self.manifest, self.settings = manifest, settings
        self.tile_size = manifest.tile_size if settings.tile is None else settings.tile
        self.overlap = self.tile_size // 4 if settings.tile_overlap is None else settings.tile_overlap
        m, t, o = manifest.size_multiple, self.tile_size, self.overlap
        if t % m:
            raise ValueError(f"--tile {t} must be 0 or a positive multiple of the model's size multiple {m}")
        if t * t > manifest.max_tile_pixels:
            raise ValueError(f"--tile {t} exceeds the model's largest tile ({manifest.max_tile_pixels} pixels)")
        if t and not o <= t // 2:
            raise ValueError(f"--tile-overlap {o} must be in 0..{t // 2} for --tile {t}")

    def plan(self, height: int, width: int) -> TilePlan:
        """The tiles of an image of this size (padded to the model's multiple)."""
        m = self.manifest.size_multiple
        hp, wp = height + (-height) % m, width + (-width) % m
        if self.tile_size == 0 and hp * wp > self.manifest.max_tile_pixels:
            raise ImageError(
                f"image is {width}x{height}: too large to restore whole (--tile 0) with this model "
                f"(at most {self.manifest.max_tile_pixels} pixels); use tiles"
            )
        return plan_tiles(hp, wp, self.tile_size, self.overlap)

    def units(self, plan: TilePlan) -> List[List[int]]:
        """The groups of tiles restored together, in blending order: regions that share a
        stop (image scope), or runs of ``region_tiles`` tiles that stop alone (tile scope)."""
        if self.settings.stop_scope == "tile":
            n, k = len(plan), self.settings.region_tiles
            return [list(range(i, min(i + k, n))) for i in range(0, n, k)]
        return plan_regions(plan, self.settings.region_tiles)

    def check_image(self, img: np.ndarray) -> None:
        h, w, c = img.shape
        if c != self.manifest.channels:
            raise ImageError(f"image has {c} channels, the model takes {self.manifest.channels}")
        check_pixels(h, w, self.settings.max_pixels)

    def layout(self, img: np.ndarray, seed: int) -> ImageLayout:
        """The layout of an HxWxC image in [0, 1], checked against the model."""
        self.check_image(img)
        plan = self.plan(*img.shape[:2])
        padded, _ = pad_to_multiple(img, self.manifest.size_multiple)
        y = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32) * 2.0 - 1.0
        return ImageLayout(
            img.shape, seed, plan, self.units(plan), TileSource(y, plan), [tile_seed(seed, t) for t in plan.tiles]
        )


class ImageAssembly:
    """Blends an image's units as they come back, in unit order whatever order they arrive
    in (a unit that comes early waits), so the bytes never depend on who restored what."""

    def __init__(self, layout: ImageLayout):
        self.layout = layout
        self.blender = Blender(layout.plan, layout.shape[2])
        self.waiting: Dict[int, UnitResult] = {}
        self.stats: List[UnitResult] = []  # the blended units' statistics, pixels dropped

    def add(self, k: int, result: UnitResult) -> None:
        self.waiting[k] = result
        while len(self.stats) in self.waiting:
            n = len(self.stats)
            res = self.waiting.pop(n)
            for i, part in zip(self.layout.units[n], res.parts):
                self.blender.add(i, part)
            self.stats.append(dataclasses_replace(res, parts=[]))

    @property
    def complete(self) -> bool:
        return len(self.stats) == len(self.layout.units)

    def restored(self) -> np.ndarray:
        """The restored HxWxC image in [0, 1], once every unit is in."""
        if not self.complete:
            missing = len(self.layout.units) - len(self.stats)
            raise RuntimeError(f"{missing} of {len(self.layout.units)} tile units never came back")
        h, w, _ = self.layout.shape
        return np.clip((self.blender.result()[:, :h, :w].transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0)
