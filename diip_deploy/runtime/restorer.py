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
from dataclasses import asdict, dataclass, field
from dataclasses import replace as dataclasses_replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .guard import residual_correlation
from .images import ImageError, check_pixels, pad_to_multiple, read_image
from .loop import (RestoreConfig, RestoreResult, Seed, device_loop_runner, iteration_graph_fits, restore_iter,
                   restore_joint)
from .manifest import Manifest, load_manifest
from .select import Selection, device_loop_graph, open_chain, select_backend
from .tiling import Blender, TilePlan, cut, plan_regions, plan_tiles, sub_plan, tile_seed

DEFAULT_MAX_PIXELS = 50_000_000


@dataclass
class TileSettings:
    tile: Optional[int] = None  # None: the manifest's tile size; 0: the whole image
    overlap: Optional[int] = None  # None: a quarter of the tile
    batch: Optional[int] = None  # None: default_batch for the backend and tile size
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


CPU_BATCH = 8  # tiles per call on the CPU, and on TensorRT engines (their profile's default opt)
GPU_PIXELS_PER_CALL = 512 * 512  # on an H100 one call of 16 tiles of 64x64 took 7.0 ms, of 512x512 20 ms (issue 11)


def default_batch(backend: str, tile: int) -> int:
    """Tiles per graph call where --batch is not given: 8 on the CPU and on TensorRT engines
    (built for up to 16); on ONNX Runtime's GPU providers as many as make 512x512 pixels
    (64 tiles of 64), since a GPU call costs about the same up to there.  The output
    does not depend on it."""
    if backend in ("ort-cpu", "tensorrt") or tile <= 0:
        return CPU_BATCH
    return max(1, min(64, GPU_PIXELS_PER_CALL // (tile * tile)))


def check_tile_settings(manifest: Manifest, tiles: TileSettings) -> None:
    m, t, o = manifest.size_multiple, tile_size(manifest, tiles), overlap(manifest, tiles)
    if t < 0 or (t and t % m):
        raise ValueError(f"--tile {t} must be 0 or a positive multiple of the model's size multiple {m}")
    if t * t > manifest.max_tile_pixels:
        raise ValueError(f"--tile {t} exceeds the model's largest tile ({manifest.max_tile_pixels} pixels)")
    if t and not 0 <= o <= t // 2:
        raise ValueError(f"--tile-overlap {o} must be in 0..{t // 2} for --tile {t}")
    if (tiles.batch is not None and tiles.batch < 1) or tiles.region_tiles < 1:
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


def restart_seed(seed: Seed, restart: int) -> Seed:
    """Restart 0 keeps the tile's seed (so one restart is the plain run); restart r > 0
    appends r, an independent stream."""
    if restart == 0:
        return seed
    return (*seed, restart) if isinstance(seed, tuple) else (seed, restart)


def mean_restarts(parts: Sequence[np.ndarray], restarts: int, n: int) -> List[np.ndarray]:
    """Per tile, the mean of its ``restarts`` reconstructions (sample r * n + j)."""
    if restarts == 1:
        return list(parts)
    return [np.mean([parts[r * n + j] for r in range(restarts)], axis=0, dtype=np.float32) for j in range(n)]


class RestartMean:
    """Blends the restarts of a unit's tiles into the mean of their blends (the blend is
    linear), for the joint stop's Laplacian."""

    def __init__(self, blender: Blender, restarts: int, n: int):
        self.blender, self.restarts, self.n = blender, restarts, n

    def start(self) -> None:
        self.blender.start()

    def add(self, index: int, x0: np.ndarray) -> None:
        self.blender.add(index % self.n, x0 / np.float32(self.restarts))

    def result(self) -> np.ndarray:
        return self.blender.result()


def _per_restart(callback: Optional[Callable[[Dict[str, Any]], None]], restarts: int):
    """A loop callback that counts tiles, not samples, when each tile runs ``restarts`` times."""
    if callback is None or restarts == 1:
        return callback

    def cb(info: Dict[str, Any]) -> None:
        callback({**info, "done": info["done"] // restarts, "total": info["total"] // restarts})

    return cb


def _offset_progress(callback: Optional[Callable[[Dict[str, Any]], None]], done_before: int, total: int):
    """A region's loop callback, with tiles done / total counted over the whole image."""
    if callback is None:
        return None

    def cb(info: Dict[str, Any]) -> None:
        callback({**info, "done": done_before + info["done"], "total": total})

    return cb


@dataclass
class UnitResult:
    """One unit of an image's tiles restored: a region sharing one stop (image scope) or a
    chunk of tiles each stopping alone (tile scope).  Small and picklable, so a Ray worker
    can restore a unit of a huge photo and the driver blend it."""

    parts: List[np.ndarray]  # each tile's x0, [C, th, tw] in [-1, 1], in the unit's order
    stops: List[int]  # one per stop decision (1 for a region, one per tile in the tile scope)
    reasons: List[str]
    iterations_run: int  # tile-iterations
    seconds: float
    history: Optional[Dict[str, list]] = None  # when the unit made one stop decision
    backend: str = ""
    loop: str = "host"  # where z and the optimiser's moments lived (device_loop.py)
    batch: int = 0  # tiles per graph call it ran with (the restorer's, resolved for its backend)
    residual_corr: List[float] = field(default_factory=list)  # the guard's measure, per decision
    reverted: int = 0  # decisions where the guard returned the input
    peak_rss_mb: float = 0.0
    device_memory_mb: Optional[float] = None


class ImageTiling:
    """Tiles, seeds and units of an image for one manifest and tile settings: what a
    Restorer cuts and what a Ray driver plans, with no backend opened."""

    def __init__(self, manifest: Manifest, tiles: TileSettings):
        check_tile_settings(manifest, tiles)
        self.manifest, self.tiles = manifest, tiles

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

    def units(self, plan: TilePlan) -> List[List[int]]:
        """The groups of tiles restored together, in blending order: regions that share a
        stop (image scope), or runs of ``region_tiles`` tiles that stop alone (tile scope)."""
        if self.tiles.stop_scope == "tile":
            n, k = len(plan), self.tiles.region_tiles
            return [list(range(i, min(i + k, n))) for i in range(0, n, k)]
        return plan_regions(plan, self.tiles.region_tiles)

    def stops_per_tile(self, plan: TilePlan) -> bool:
        """Whether progress is better counted in tiles than in iterations of one stop."""
        return self.tiles.stop_scope == "tile" or len(self.units(plan)) > 1

    def check_image(self, img: np.ndarray) -> None:
        h, w, c = img.shape
        if c != self.manifest.channels:
            raise ImageError(f"image has {c} channels, the model takes {self.manifest.channels}")
        check_pixels(h, w, self.tiles.max_pixels)

    def tiles_of(self, img: np.ndarray, seed: int) -> Tuple[TilePlan, "_TileSource", List[Tuple[int, int, int]]]:
        """(plan, tiles in model range cut on demand, each tile's seed) for an HxWxC image."""
        plan = self.plan(*img.shape[:2])
        padded, _ = pad_to_multiple(img, self.manifest.size_multiple)
        y = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32) * 2.0 - 1.0
        return plan, _TileSource(y, plan), [tile_seed(seed, t) for t in plan.tiles]


class ImageAssembly:
    """Blends an image's units as they come back, in unit order whatever order they arrive
    in (a unit that comes early waits), so the bytes never depend on who restored what."""

    def __init__(self, tiling: ImageTiling, cfg: RestoreConfig, img_shape: Tuple[int, ...], seed: int,
                 units: Sequence[Sequence[int]]):
        self.tiling, self.cfg, self.seed, self.units = tiling, cfg, seed, list(units)
        self.h, self.w, c = img_shape
        self.plan = tiling.plan(self.h, self.w)
        self.blender = Blender(self.plan, c)
        self.waiting: Dict[int, UnitResult] = {}
        self.stats: List[UnitResult] = []  # the blended units' statistics, pixels dropped

    def add(self, k: int, result: UnitResult) -> None:
        self.waiting[k] = result
        while len(self.stats) in self.waiting:
            n = len(self.stats)
            res = self.waiting.pop(n)
            for i, part in zip(self.units[n], res.parts):
                self.blender.add(i, part)
            self.stats.append(dataclasses_replace(res, parts=[]))

    @property
    def complete(self) -> bool:
        return len(self.stats) == len(self.units)

    def result(self) -> Tuple[np.ndarray, Dict[str, Any]]:
        """(restored HxWxC in [0, 1], report) once every unit is in."""
        if not self.complete:
            raise RuntimeError(f"{len(self.units) - len(self.stats)} of {len(self.units)} tile units never came back")
        restored = np.clip((self.blender.result()[:, :self.h, :self.w].transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0)
        return restored, _report(self.tiling, self.cfg, self.plan, self.seed, self.h, self.w, self.stats)


def _report(tiling: ImageTiling, cfg: RestoreConfig, plan: TilePlan, seed: int, h: int, w: int,
            results: Sequence[UnitResult]) -> Dict[str, Any]:
    stops = [k for r in results for k in r.stops]
    reasons = Counter(x for r in results for x in r.reasons)
    s = np.asarray(stops)
    single = results[0] if len(stops) == 1 else None
    scope = tiling.tiles.stop_scope
    report: Dict[str, Any] = {
        "stop_iteration": int(np.median(s)) if single is None else single.stops[0],
        "stop_reason": (single.reasons[0] if single is not None
                        else f"per {'tile' if scope == 'tile' else 'region'}: "
                        + ", ".join(f"{n} {r}" for r, n in reasons.most_common())),
        "iterations_run": int(sum(r.iterations_run for r in results)), "backend": results[0].backend,
        "gradient": cfg.gradient, "seed": seed,
        "settings": {**{k: v for k, v in asdict(cfg).items() if k not in ("seed", "gradient")},
                     "steps": len(tiling.manifest.chain_spec.timesteps)},
        "size": [int(w), int(h)], "padded_size": [int(plan.width), int(plan.height)],
        "tiling": {"tile": [plan.tile_w, plan.tile_h], "overlap": plan.overlap, "tiles": len(plan),
                   "batch": results[0].batch, "stop_scope": scope, "stops": len(stops),
                   "stop_iterations": {"min": int(s.min()), "median": float(np.median(s)), "mean": round(float(s.mean()), 2),
                                       "max": int(s.max())},
                   "stop_reasons": dict(reasons)},
        # measurements of this run: kept apart, since the record above is reproducible to the byte
        "run": {"seconds": round(sum(r.seconds for r in results), 3), "loop": results[0].loop,
                "peak_rss_mb": max(r.peak_rss_mb for r in results)},
    }
    corrs = [c for r in results for c in r.residual_corr]
    if corrs:  # the residual guard ran
        report["guard"] = {"max_correlation": cfg.residual_guard, "judged": len(corrs),
                           "reverted_to_input": int(sum(r.reverted for r in results)),
                           "correlation": corrs[0] if len(corrs) == 1 else
                           {"min": min(corrs), "median": float(np.median(corrs)), "max": max(corrs)}}
    device = [r.device_memory_mb for r in results if r.device_memory_mb is not None]
    if device:
        report["run"]["device_memory_mb"] = max(device)
    if single is not None and single.history is not None:
        report["history"] = single.history
    return report


LOOPS = ("auto", "device", "host")
DEVICE_BACKENDS = ("ort-cuda", "ort-tensorrt")  # where a device loop pays (on the CPU it does not: README)


def wants_device_loop(manifest: Manifest, backend: str, cfg: RestoreConfig) -> bool:
    """Whether to open the export's iteration graph: ``auto`` on GPU backends where the
    export has one; ``device`` wherever it can run, and an error where it cannot."""
    if cfg.loop not in LOOPS:
        raise ValueError(f"--loop must be one of {', '.join(LOOPS)}, got {cfg.loop!r}")
    if cfg.loop == "host" or (cfg.loop == "auto" and (backend not in DEVICE_BACKENDS or not iteration_graph_fits(cfg))):
        return False
    graph = device_loop_graph(manifest, backend, cfg.gradient, cfg.precision)
    if cfg.loop == "auto":
        return graph is not None
    if graph is None:
        fp16 = " --precision fp16" if cfg.precision == "fp16" else ""
        raise ValueError(f"--loop device needs an ONNX Runtime backend and the export's iterate_{cfg.gradient}"
                         f"{'_fp16' if fp16 else ''} graph (diip-export MODEL --out {manifest.root} --iterate "
                         f"{cfg.gradient}{fp16} --add)")
    if not iteration_graph_fits(cfg):
        raise ValueError("--loop device runs Adam with the projection, as the iteration graph does; use --loop host")
    return True


class Restorer:
    """Opens a manifest and a backend once; ``restore_array`` and ``restore_file`` use them."""

    def __init__(self, model_dir: Path | str, backend: str = "auto", threads: Optional[int] = None,
                 tiles: Optional[TileSettings] = None, manifest: Optional[Manifest] = None, **overrides: Any):
        self.manifest, self.cfg, self.tiles = self.check(model_dir, tiles, manifest, **overrides)
        self.selection: Selection = select_backend(self.manifest, backend)
        if self.tiles.batch is None:
            self.tiles = dataclasses_replace(self.tiles, batch=default_batch(self.selection.backend,
                                                                             tile_size(self.manifest, self.tiles)))
        self.tiling = ImageTiling(self.manifest, self.tiles)
        on_device = wants_device_loop(self.manifest, self.selection.backend, self.cfg)
        self.chain = open_chain(self.manifest, self.selection.backend, self.cfg.gradient, threads,
                                precision=self.cfg.precision, device_loop=on_device)
        self.loop = "device" if device_loop_runner(self.chain, self.cfg) is not None else "host"

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
        return self.tiling.tile_size

    @property
    def overlap(self) -> int:
        return self.tiling.overlap

    def plan(self, height: int, width: int) -> TilePlan:
        return self.tiling.plan(height, width)

    def tiles_of(self, img: np.ndarray, seed: int) -> Tuple[TilePlan, "_TileSource", List[Tuple[int, int, int]]]:
        return self.tiling.tiles_of(img, seed)

    def restore_unit(self, tiles: "_TileSource", plan: TilePlan, unit: Sequence[int], seeds: Sequence[Seed],
                     callback: Optional[Callable[[Dict[str, Any]], None]] = None) -> UnitResult:
        """The tiles ``unit`` of an image: lockstep with one stop (image scope) or each
        stopping alone (tile scope)."""
        t0 = time.perf_counter()
        c, k, n = self.manifest.channels, self.cfg.restarts, len(unit)
        samples = _Subset(tiles, [i for _ in range(k) for i in unit])  # restart r of tile j is sample r * n + j
        sample_seeds = [restart_seed(seeds[i], r) for r in range(k) for i in unit]
        progress = _per_restart(callback, k)
        if self.tiles.stop_scope == "image":
            blend = Blender(sub_plan(plan, unit), c)
            joint = restore_joint(self.chain, samples, self.cfg, blend if k == 1 else RestartMean(blend, k, n),
                                  sample_seeds, self.tiles.batch, progress)
            parts, stops, reasons = mean_restarts(joint.parts, k, n), [joint.stop_iteration], [joint.stop_reason]
            iters, history = joint.iterations_run * len(samples), joint.history
            judged = [(list(range(n)), joint.x0)]  # the guard judges the blended region
        else:
            by_index: Dict[int, RestoreResult] = {}
            for j, r in restore_iter(self.chain, samples, self.cfg, sample_seeds, self.tiles.batch, progress):
                by_index[j] = r
            ordered = [by_index[j] for j in range(len(samples))]
            parts = mean_restarts([r.x0 for r in ordered], k, n)
            stops, reasons = [r.stop_iteration for r in ordered], [r.stop_reason for r in ordered]
            iters = sum(r.iterations_run for r in ordered)
            history = ordered[0].history if len(ordered) == 1 else None
            judged = [([j], parts[j]) for j in range(n)]  # the guard judges each tile
        corrs, reverted = self._guard(tiles, plan, unit, parts, judged)
        device = [b for b in (r.device_memory_bytes() for r in self.chain.runners.values()) if b is not None]
        return UnitResult(parts, stops, reasons, int(iters), time.perf_counter() - t0, history, self.backend, self.loop,
                          int(self.tiles.batch or 0), corrs, reverted, round(peak_rss_bytes() / 2**20, 1), round(sum(device) / 2**20, 1) if device else None)

    def _guard(self, tiles: "_TileSource", plan: TilePlan, unit: Sequence[int], parts: List[np.ndarray],
               judged: List[Tuple[List[int], np.ndarray]]) -> Tuple[List[float], int]:
        """The residual guard over each (group of positions in ``unit``, their restored
        image) pair: where the residual against the input is too correlated, the group's
        parts become the input's tiles, in place.  Returns each group's correlation and how
        many were reverted."""
        if self.cfg.residual_guard >= 1.0:
            return [], 0
        corrs, reverted = [], 0
        for group, restored in judged:
            if len(group) == 1:
                damaged = tiles[unit[group[0]]]
            else:
                inp = Blender(sub_plan(plan, [unit[j] for j in group]), self.manifest.channels)
                for g, j in enumerate(group):
                    inp.add(g, tiles[unit[j]])
                damaged = inp.result()
            corr = residual_correlation(restored, damaged)
            corrs.append(round(corr, 4))
            if corr > self.cfg.residual_guard:
                reverted += 1
                for j in group:
                    parts[j] = tiles[unit[j]]
        return corrs, reverted

    def restore_array(self, img: np.ndarray, seed: Optional[int] = None,
                      callback: Optional[Callable[[Dict[str, Any]], None]] = None) -> Tuple[np.ndarray, Dict[str, Any]]:
        """Restore an HxWxC image in [0, 1]: (restored HxWxC in [0, 1], report)."""
        self.tiling.check_image(img)
        seed = self.cfg.seed if seed is None else int(seed)
        plan, tiles, seeds = self.tiles_of(img, seed)
        units = self.tiling.units(plan)
        starts = np.cumsum([0] + [len(u) for u in units])
        assembly = ImageAssembly(self.tiling, self.cfg, img.shape, seed, units)
        for k, (unit, start) in enumerate(zip(units, starts)):
            assembly.add(k, self.restore_unit(tiles, plan, unit, seeds, _offset_progress(callback, int(start), len(plan))))
        return assembly.result()

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

