"""Tiled restoration measured: quality against stop rules, seams, memory and time.

The quality run restores every tile of a photo to the iteration cap (stop = none) and
records each tile's reconstructions and histories; the stopping rules are then applied
to those histories with the runtime's own pure functions, so per-tile stopping (each
tile its own stop, the runtime's way), per-image stopping (the sum of tile losses and
the Laplacian of the blended image) and the oracle compare on identical runs.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

import numpy as np

from ..runtime.images.tiling import Blender, TilePlan, border_mask
from ..runtime.optimise.loop import restore_iter
from ..runtime.optimise.stopping import decide, laplacian_variance
from ..runtime.restorer import Restorer
from ..settings import RestoreSettings
from .metrics import psnr, ssim


def seam_ratio(img: np.ndarray, plan: TilePlan) -> float:
    """Mean absolute gradient across tile edges over that inside tiles (HxWxC image
    cropped from the plan's padded canvas); 1.0 means the edges are invisible to it."""
    h, w = img.shape[:2]
    cols, rows = border_mask(plan)
    dx = np.abs(np.diff(img, axis=1)).mean(axis=2)
    dy = np.abs(np.diff(img, axis=0)).mean(axis=2)
    cols, rows = cols[:h, : w - 1], rows[: h - 1, :w]
    border = np.concatenate([dx[cols], dy[rows]])
    inner = np.concatenate([dx[~cols], dy[~rows]])
    return float(border.mean() / max(inner.mean(), 1e-12)) if border.size and inner.size else 1.0


def _blend(plan: TilePlan, tiles: np.ndarray, h: int, w: int) -> np.ndarray:
    b = Blender(plan, tiles.shape[1])
    for i, t in enumerate(tiles):
        b.add(i, t.astype(np.float32))
    return np.clip((b.result()[:, :h, :w].transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0)


def tile_histories(restorer: Restorer, degraded: np.ndarray, seed: int = 0) -> Dict[str, Any]:
    """Every tile run to the iteration cap: x0 per tile and iteration (float16), losses and
    Laplacian variances per tile, and the plan."""
    from dataclasses import replace

    h, w = degraded.shape[:2]
    layout = restorer.layout(degraded, seed)
    plan, tiles, seeds = layout.plan, layout.tiles, layout.seeds
    cfg = replace(restorer.settings, stop="none")
    n, k_max, c = len(plan), cfg.max_iters, degraded.shape[2]
    xs = np.zeros((n, k_max, c, plan.tile_h, plan.tile_w), dtype=np.float16)
    losses = np.zeros((n, k_max))
    laps = np.zeros((n, k_max))

    def keep(info: Dict[str, Any]) -> None:
        for j, (i, k) in enumerate(zip(info["index"], info["k"])):
            xs[i, k] = info["x0"][j]
            losses[i, k] = info["loss"][j]
            laps[i, k] = info["laplacian_var"][j]

    t0 = time.perf_counter()
    for _ in restore_iter(restorer.chain, tiles, cfg, seeds, restorer.settings.batch, keep):
        pass
    return {
        "plan": plan,
        "xs": xs,
        "loss": losses,
        "laplacian_var": laps,
        "seconds": time.perf_counter() - t0,
        "size": (h, w),
    }


def compare_stops(
    hist: Dict[str, Any], clean: np.ndarray, degraded: np.ndarray, rule: RestoreSettings
) -> Dict[str, Any]:
    """Per-tile, per-image and oracle stops of one recorded run: PSNR, SSIM, seams, stops.
    ``rule``: the settings whose stop rule decides."""
    plan, xs = hist["plan"], hist["xs"]
    h, w = hist["size"]
    n, k_max = xs.shape[:2]
    out: Dict[str, Any] = {
        "input": {
            "psnr": psnr(clean, degraded),
            "ssim": ssim(clean, degraded),
            "seam_ratio": seam_ratio(degraded, plan),
        },
        "clean": {"seam_ratio": seam_ratio(clean, plan)},
    }
    # per tile: each tile's own decision on its own history
    stops = []
    for i in range(n):
        d = decide(hist["loss"][i], hist["laplacian_var"][i], rule)
        stops.append(d.iteration if d else k_max - 1)
    img = _blend(plan, xs[np.arange(n), stops], h, w)
    out["per_tile"] = {
        "psnr": psnr(clean, img),
        "ssim": ssim(clean, img),
        "seam_ratio": seam_ratio(img, plan),
        "stop_iterations": {"min": int(min(stops)), "median": float(np.median(stops)), "max": int(max(stops))},
        "tile_iterations": int(sum(s + 1 for s in stops)),
    }
    # per image: the summed loss and the blended image's sharpness decide for all tiles
    blended = [_blend(plan, xs[:, k], h, w) for k in range(k_max)]
    img_laps = [float(laplacian_variance(b.transpose(2, 0, 1)[None] * 2 - 1)[0]) for b in blended]
    d = decide(hist["loss"].sum(axis=0), img_laps, rule)
    k_img = d.iteration if d else k_max - 1
    out["per_image"] = {
        "psnr": psnr(clean, blended[k_img]),
        "ssim": ssim(clean, blended[k_img]),
        "seam_ratio": seam_ratio(blended[k_img], plan),
        "stop_iteration": k_img,
        "tile_iterations": int(n * ((d.detected_at if d else k_max - 1) + 1)),
    }
    curve = [psnr(clean, b) for b in blended]
    k_best = int(np.argmax(curve))
    out["oracle"] = {
        "psnr": curve[k_best],
        "ssim": ssim(clean, blended[k_best]),
        "seam_ratio": seam_ratio(blended[k_best], plan),
        "stop_iteration": k_best,
    }
    out["psnr_curve"] = [round(p, 3) for p in curve]
    out["tiles"] = n
    out["seconds_to_cap"] = round(hist["seconds"], 1)
    out["images"] = {"per_tile": img, "per_image": blended[k_img], "oracle": blended[k_best]}
    return out


def time_tiled_vs_whole(
    restorer_tiled: Restorer, restorer_whole: Restorer, img: np.ndarray, iters: int, rounds: int = 3
) -> Dict[str, Any]:
    """Seconds per DIIP iteration over the whole image, tiled and whole, alternated."""
    from dataclasses import replace

    t_tiled: List[float] = []
    t_whole: List[float] = []
    for r in (restorer_tiled, restorer_whole):
        r.settings = replace(r.settings, stop="none", max_iters=iters)
    for _ in range(rounds):
        for r, ts in ((restorer_tiled, t_tiled), (restorer_whole, t_whole)):
            t0 = time.perf_counter()
            r.restore_array(img)
            ts.append((time.perf_counter() - t0) / iters)
    tiled, whole = float(np.median(t_tiled)), float(np.median(t_whole))
    plan = restorer_tiled.tiling.plan(*img.shape[:2])
    return {
        "size": list(img.shape[:2]),
        "tiles": len(plan),
        "tile": plan.tile_h,
        "overlap": plan.overlap,
        "batch": restorer_tiled.settings.batch,
        "tiled_s_per_iter": round(tiled, 4),
        "whole_s_per_iter": round(whole, 4),
        "ratio_tiled_over_whole": round(tiled / whole, 3),
    }
