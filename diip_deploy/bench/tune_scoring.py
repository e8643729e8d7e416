"""``diip-tune``'s scoring: candidate stop settings applied to recorded histories.

Every score is a function of a histories file alone (``tune.record`` writes it), with the
runtime's own ``decide`` and guard replay, so a choice is reproducible from the file.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..runtime.optimise.guard import replay
from ..runtime.optimise.stopping import decide
from ..settings import RestoreSettings
from .degrade import TASKS
from .metrics import psnr
from .tune import tuning_crops

# Candidate stop settings (the criteria's parameters; lr needs its own recorded run).
GRID: Dict[str, Sequence[Any]] = {
    "stop": ("auto", "slope", "laplacian"),
    "eps": (1e-3, 3e-4, 1e-4),
    "slope_window": (5, 10, 20),
    "k_min": (50, 80, 110),
    "slope_min_iter": (0, 20, 40),
    "patience": (1, 3),
    "slope_fit": ("mean", "regression"),
    "lap_window": (1, 5),
}


def scored_samples(histories: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The samples with something to restore: a crop whose damaged input equals the clean
    one (a flat patch that JPEG or downscaling leave intact) has an infinite input PSNR,
    which no mean can hold."""
    return [s for s in histories["samples"] if np.isfinite(s["input_psnr"])]


def recorded_inputs(histories: Dict[str, Any]) -> Iterator[Tuple[Dict[str, Any], np.ndarray, np.ndarray]]:
    """(sample, clean crop, damaged input) for each recorded sample: the crops cut and
    damaged again from the photos, the same way ``record`` did, checked by name."""
    seed = int(histories.get("seed", 0))
    held_out = "HELD-OUT" in histories["split"]
    crops = tuning_crops(histories["n_per_task"], histories["crop_size"], seed, held_out, histories.get("saturated", 0))
    for j, s in enumerate(histories["samples"]):
        i = j % len(crops)
        name, clean = crops[i]
        if name != s["crop"]:
            raise ValueError(f"crop {i} is {name} here but {s['crop']} in the histories: other photos or seed")
        yield s, clean, TASKS[s["task"]](clean, seed=seed + i)


def classic_scores(histories: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """Per task, the mean PSNR of the classic blind baselines on the recorded crops."""
    from .classic import CLASSIC

    per: Dict[str, Dict[str, List[float]]] = {}
    for s, clean, y in recorded_inputs(histories):
        if not np.isfinite(s["input_psnr"]):
            continue
        for method, fn in CLASSIC.get(TASKS[s["task"]].name, {}).items():
            per.setdefault(s["task"], {}).setdefault(method, []).append(psnr(clean, np.clip(fn(y), 0, 1)))
    return {task: {m: round(float(np.mean(v)), 3) for m, v in methods.items()} for task, methods in per.items()}


def per_crop(histories: Dict[str, Any], settings: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One setting replayed on each scored crop: its input PSNR, the stop rule's result
    (``auto``) and iteration (``stop``), the oracle up to the cap, and where the histories
    hold each iteration's residual correlation (recorded since the early guard), what
    diip-run hands back once the residual guard has judged the run (``returned``, with
    ``kept``; ``cost`` then counts the early guard's stops) and, where recorded, that
    result's per-channel mean error (0..255; the input's own counts as 0)."""
    out = []
    rule = RestoreSettings(**settings)
    for s in scored_samples(histories):
        s = {k: v[: rule.max_iters] if isinstance(v, list) else v for k, v in s.items()}  # the cap ends a run
        d = decide(s["loss"], s["laplacian_var"], rule)
        k = d.iteration if d else len(s["psnr"]) - 1
        detected = d.detected_at if d else k
        crop: Dict[str, Any] = {
            "task": s["task"],
            "crop": s["crop"],
            "input": s["input_psnr"],
            "auto": s["psnr"][k],
            "oracle": max(s["psnr"]),
            "stop": k,
            "cost": detected + 1,
        }
        if s.get("correlation"):
            judged, kept, run = replay(
                s["correlation"], k, detected, rule.residual_guard, rule.guard_at, rule.max_iters
            )
            crop.update(returned=s["psnr"][judged] if kept else s["input_psnr"], kept=kept, cost=run)
            if s.get("channel_mean_error"):
                crop["channel_mean_error"] = s["channel_mean_error"][judged] if kept else 0.0
        out.append(crop)
    return out


def score(histories: Dict[str, Any], settings: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """Per task, the means of ``per_crop`` (input, auto, oracle, stop, cost, returned), how
    many crops the guard ``reverted`` and the worst crop's ``channel_mean_error_max``."""
    per: Dict[str, List[Dict[str, Any]]] = {}
    for c in per_crop(histories, settings):
        per.setdefault(c["task"], []).append(c)
    out: Dict[str, Dict[str, float]] = {}
    for task, crops in per.items():
        keys = ("input", "auto", "oracle", "stop", "cost") + (("returned",) if "returned" in crops[0] else ())
        out[task] = {k: round(float(np.mean([c[k] for c in crops])), 3) for k in keys}
        if "kept" in crops[0]:
            out[task]["reverted"] = sum(not c["kept"] for c in crops)
        if "channel_mean_error" in crops[0]:  # the worst crop's colour drift, 0..255
            out[task]["channel_mean_error_max"] = round(float(max(c["channel_mean_error"] for c in crops)), 2)
    return out


def candidates(grid: Dict[str, Sequence[Any]] = GRID) -> Iterable[Dict[str, Any]]:
    """Every setting of the grid, skipping parameters the mode never reads."""
    seen = set()
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        c = dict(zip(keys, values))
        if c["stop"] == "laplacian":
            c.update(
                eps=grid["eps"][0], slope_window=grid["slope_window"][0], slope_min_iter=0, patience=1, slope_fit="mean"
            )
        if c["stop"] == "slope":
            c.update(k_min=grid["k_min"][0], lap_window=1)
        key = tuple(sorted(c.items()))
        if key not in seen:
            seen.add(key)
            yield c


def choose(
    histories: Dict[str, Any], max_loss_db: float = 0.2, grid: Dict[str, Sequence[Any]] = GRID
) -> Dict[str, Any]:
    """The admissible setting with the best mean auto-stop PSNR over tasks (ties: cheaper)."""
    best: Optional[Tuple[Tuple[float, float], Dict[str, Any], Dict[str, Any]]] = None
    fallback: Optional[Tuple[Tuple[float, float], Dict[str, Any], Dict[str, Any]]] = None
    n = 0
    for c in candidates(grid):
        n += 1
        sc = score(histories, c)
        worst_margin = min(t["auto"] - t["input"] for t in sc.values())
        mean_auto = float(np.mean([t["auto"] for t in sc.values()]))
        cost = float(np.mean([t["cost"] for t in sc.values()]))
        if worst_margin >= -max_loss_db:
            key = (round(mean_auto, 3), -cost)
            if best is None or key > best[0]:
                best = (key, c, sc)
        fkey = (round(worst_margin, 3), mean_auto)
        if fallback is None or fkey > fallback[0]:
            fallback = (fkey, c, sc)
    assert fallback is not None
    chosen = best or fallback
    return {
        "settings": chosen[1],
        "scores": chosen[2],
        "admissible": best is not None,
        "candidates": n,
        "max_loss_db": max_loss_db,
    }


def best_run(runs: Sequence[Dict[str, Any]], max_loss_db: float = 0.2) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Across recorded runs (one per learning rate): the run and choice that win, admissible first."""

    def key(choice: Dict[str, Any]) -> Tuple[bool, float]:
        return choice["admissible"], float(np.mean([t["auto"] for t in choice["scores"].values()]))

    scored = [(h, choose(h, max_loss_db)) for h in runs]
    return max(scored, key=lambda hc: key(hc[1]))


def write_defaults(
    export_dir: Path, histories: Dict[str, Any], choice: Dict[str, Any], reference: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """The chosen stop settings into the manifest's defaults, with the validation scores."""
    from ..manifest import read_data, set_defaults, write_manifest

    data = read_data(export_dir)
    set_defaults(data, {"lr": histories["settings"]["lr"], **choice["settings"]})
    data["validation"] = {
        "tool": "diip-tune",
        "crops_per_task": histories["n_per_task"],
        "excluded_undamaged": len(histories["samples"]) - len(scored_samples(histories)),
        "crop_size": histories["crop_size"],
        "split": histories["split"],
        "admissible": choice["admissible"],
        "max_loss_db": choice["max_loss_db"],
        "scores": choice["scores"],
        **({"previous_defaults_scores": reference} if reference else {}),
    }
    write_manifest(Path(export_dir), data)
    return data
