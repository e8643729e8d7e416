"""``Restorer``: one model and one backend, opened once, restoring arrays and files.

The CLI, the benchmarks and the Ray workers all go through it.  An image is cut into
overlapping tiles of the model's tile size (from the manifest), each with its own seed;
tiles run through the loop ``batch`` per graph call and are blended back.  By default
the tiles of a region (at most ``region_tiles``) share one stop, so the optimiser state
held at once grows with the region and the batch, not with the image; with the tile
scope every tile stops on its own.
"""

from __future__ import annotations

import resource
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .images import ImageError, check_pixels, pad_to_multiple, read_image
from .loop import JointResult, RestoreConfig, RestoreResult, restore_iter, restore_joint
from .manifest import Manifest, load_manifest
from .select import Selection, open_chain, select_backend
from .tiling import Blender, TilePlan, cut, plan_regions, plan_tiles, sub_plan, tile_seed

DEFAULT_MAX_PIXELS = 50_000_000


@dataclass
class TileSettings:
    tile: Optional[int] = None  # None: the manifest's tile size; 0: the whole image
    overlap: Optional[int] = None  # None: a quarter of the tile
    batch: int = 8
    max_pixels: int = DEFAULT_MAX_PIXELS
    stop_scope: str = "image"  # "image": one stop for all tiles (per region); "tile": each tile its own
    region_tiles: int = 256  # image scope: at most this many tiles share one stop, so memory stays bounded


STOP_SCOPES = ("image", "tile")


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def tile_size(manifest: Manifest, tiles: TileSettings) -> int:
    return manifest.tile_size if tiles.tile is None else int(tiles.tile)


def overlap(manifest: Manifest, tiles: TileSettings) -> int:
    return tile_size(manifest, tiles) // 4 if tiles.overlap is None else int(tiles.overlap)


def check_tile_settings(manifest: Manifest, tiles: TileSettings) -> None:
    m, t, o = manifest.size_multiple, tile_size(manifest, tiles), overlap(manifest, tiles)
    if t < 0 or (t and t % m):
        raise ValueError(f"--tile {t} must be 0 or a positive multiple of the model's size multiple {m}")
    if t * t > manifest.max_tile_pixels:
        raise ValueError(f"--tile {t} exceeds the model's largest tile ({manifest.max_tile_pixels} pixels)")
    if t and not 0 <= o <= t // 2:
        raise ValueError(f"--tile-overlap {o} must be in 0..{t // 2} for --tile {t}")
    if tiles.batch < 1 or tiles.region_tiles < 1:
        raise ValueError("--batch and --region-tiles must be >= 1")
    if tiles.stop_scope not in STOP_SCOPES:
        raise ValueError(f"--stop-scope must be one of {', '.join(STOP_SCOPES)}")


class _TileSource:
    """Tiles of one padded image in model range, cut on demand (no [N, C, h, w] copy)."""

    def __init__(self, image: np.ndarray, plan: TilePlan):
        self.image = image
        self.plan = plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> np.ndarray:
        return cut(self.image, [self.plan.tiles[i]])[0]


class _Subset:
    """Some samples of a source, renumbered from 0."""

    def __init__(self, source: Any, indices: Sequence[int]):
        self.source, self.indices = source, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.source[self.indices[i]]


def _offset_progress(callback: Optional[Callable[[Dict[str, Any]], None]], done_before: int, total: int):
    """A region's loop callback, with tiles done / total counted over the whole image."""
    if callback is None:
        return None

    def cb(info: Dict[str, Any]) -> None:
        callback({**info, "done": done_before + info["done"], "total": total})

    return cb


class Restorer:
    """Opens a manifest and a backend once; ``restore_array`` and ``restore_file`` use them."""

    def __init__(self, model_dir: Path | str, backend: str = "auto", threads: Optional[int] = None,
                 tiles: Optional[TileSettings] = None, manifest: Optional[Manifest] = None, **overrides: Any):
        self.manifest, self.cfg, self.tiles = self.check(model_dir, tiles, manifest, **overrides)
        self.selection: Selection = select_backend(self.manifest, backend)
        self.chain = open_chain(self.manifest, self.selection.backend, self.cfg.gradient, threads)

    @staticmethod
    def check(model_dir: Path | str, tiles: Optional[TileSettings] = None, manifest: Optional[Manifest] = None,
              **overrides: Any) -> Tuple[Manifest, RestoreConfig, TileSettings]:
        """The manifest, config and tile settings a Restorer would use, checked, with no
        backend opened (what a driver checks before handing work to workers)."""
        manifest = manifest if manifest is not None else load_manifest(model_dir)
        cfg = RestoreConfig.from_defaults(manifest.defaults, **overrides)
        tiles = tiles or TileSettings()
        check_tile_settings(manifest, tiles)
        return manifest, cfg, tiles

    @property
    def backend(self) -> str:
        return self.selection.backend

    @property
    def tile_size(self) -> int:
        return tile_size(self.manifest, self.tiles)

    @property
    def overlap(self) -> int:
        return overlap(self.manifest, self.tiles)

    def plan(self, height: int, width: int) -> TilePlan:
        """The tiles of an image of this size (padded to the model's multiple)."""
        m = self.manifest.size_multiple
        hp, wp = height + (-height) % m, width + (-width) % m
        if self.tile_size == 0 and hp * wp > self.manifest.max_tile_pixels:
            raise ImageError(f"image is {width}x{height}: too large to restore whole (--tile 0) with this model "
                             f"(at most {self.manifest.max_tile_pixels} pixels); use tiles")
        return plan_tiles(hp, wp, self.tile_size, self.overlap)

    def regions(self, plan: TilePlan) -> List[List[int]]:
        """The groups of tiles that stop together (one per tile in the tile scope)."""
        if self.tiles.stop_scope == "tile":
            return [[i] for i in range(len(plan))]
        return plan_regions(plan, self.tiles.region_tiles)

    def tiles_of(self, img: np.ndarray, seed: int) -> Tuple[TilePlan, "_TileSource", List[Tuple[int, int, int]]]:
        """(plan, tiles in model range cut on demand, each tile's seed) for an HxWxC image."""
        plan = self.plan(*img.shape[:2])
        padded, _ = pad_to_multiple(img, self.manifest.size_multiple)
        y = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32) * 2.0 - 1.0
        return plan, _TileSource(y, plan), [tile_seed(seed, t) for t in plan.tiles]

    def restore_array(self, img: np.ndarray, seed: Optional[int] = None,
                      callback: Optional[Callable[[Dict[str, Any]], None]] = None) -> Tuple[np.ndarray, Dict[str, Any]]:
        """Restore an HxWxC image in [0, 1]: (restored HxWxC in [0, 1], report)."""
        h, w, c = img.shape
        if c != self.manifest.channels:
            raise ImageError(f"image has {c} channels, the model takes {self.manifest.channels}")
        check_pixels(h, w, self.tiles.max_pixels)
        seed = self.cfg.seed if seed is None else int(seed)
        plan, tiles, seeds = self.tiles_of(img, seed)
        blender = Blender(plan, c)
        t0 = time.perf_counter()
        single: Optional[Union[JointResult, RestoreResult]] = None
        stops: List[int] = []
        reasons: Counter = Counter()
        iters = 0
        if self.tiles.stop_scope == "image":
            done = 0
            regions = self.regions(plan)
            for region in regions:
                joint = restore_joint(self.chain, _Subset(tiles, region), self.cfg, Blender(sub_plan(plan, region), c),
                                      [seeds[i] for i in region], self.tiles.batch,
                                      _offset_progress(callback, done, len(plan)))
                for i, part in zip(region, joint.parts):
                    blender.add(i, part)
                stops.append(joint.stop_iteration)
                reasons[joint.stop_reason] += 1
                iters += joint.iterations_run * len(region)
                done += len(region)
                single = joint if len(regions) == 1 else None
        else:
            for i, r in restore_iter(self.chain, tiles, self.cfg, seeds, self.tiles.batch, callback):
                blender.add(i, r.x0)
                stops.append(r.stop_iteration)
                reasons[r.stop_reason] += 1
                iters += r.iterations_run
                single = r if len(plan) == 1 else None
        seconds = time.perf_counter() - t0
        restored = np.clip((blender.result()[:, :h, :w].transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0)
        report = self._report(plan, seed, h, w, stops, reasons, iters, seconds, single)
        return restored, report

    def _report(self, plan: TilePlan, seed: int, h: int, w: int, stops, reasons, iters: int, seconds: float,
                single) -> Dict[str, Any]:
        s = np.asarray(stops)
        report: Dict[str, Any] = {
            "stop_iteration": int(np.median(s)) if single is None else single.stop_iteration,
            "stop_reason": (single.stop_reason if single is not None
                            else f"per {'tile' if self.tiles.stop_scope == 'tile' else 'region'}: "
                            + ", ".join(f"{n} {r}" for r, n in reasons.most_common())),
            "iterations_run": iters, "backend": self.backend,
            "gradient": self.cfg.gradient, "seed": seed,
            "settings": {**{k: v for k, v in asdict(self.cfg).items() if k not in ("seed", "gradient")},
                         "steps": len(self.manifest.chain_spec.timesteps)},
            "size": [int(w), int(h)], "padded_size": [int(plan.width), int(plan.height)],
            "tiling": {"tile": [plan.tile_w, plan.tile_h], "overlap": plan.overlap, "tiles": len(plan),
                       "batch": self.tiles.batch, "stop_scope": self.tiles.stop_scope, "stops": len(stops),
                       "stop_iterations": {"min": int(s.min()), "median": float(np.median(s)), "mean": round(float(s.mean()), 2),
                                           "max": int(s.max())},
                       "stop_reasons": dict(reasons)},
            # measurements of this run: kept apart, since the record above is reproducible to the byte
            "run": {"seconds": round(seconds, 3), "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1)},
        }
        device = [b for b in (r.device_memory_bytes() for r in self.chain.runners.values()) if b is not None]
        if device:
            report["run"]["device_memory_mb"] = round(sum(device) / 2**20, 1)
        if single is not None:
            report["history"] = single.history
        return report

    def restore_file(self, path: Path | str, seed: Optional[int] = None,
                     callback: Optional[Callable[[Dict[str, Any]], None]] = None) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
        """(input HxWxC, restored HxWxC, report) for one image file, nothing written
        (``jobs.restore_job`` also writes the output pair)."""
        img, notes = read_image(path, self.manifest.channels, self.tiles.max_pixels)
        restored, report = self.restore_array(img, seed, callback)
        return img, restored, {"input": str(path), "decoding": notes, **report}

    def close(self) -> None:
        self.chain.close()

    def __enter__(self) -> "Restorer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

