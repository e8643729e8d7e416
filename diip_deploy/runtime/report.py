"""The per-image JSON report: what was run (reproducible to the byte) and what it cost.

Everything but ``run`` is a function of the inputs and the settings, so a Ray run and a
plain run write the same JSON; ``run`` holds this run's measurements (time, memory).
"""

from __future__ import annotations

import resource
import sys
from collections import Counter
from typing import Any, Dict, Sequence

import numpy as np

from ..settings import RestoreSettings
from .images.layout import ImageLayout
from .units import UnitResult


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _spread(values: Sequence[float]) -> Dict[str, float]:
    s = np.asarray(values)
    return {
        "min": s.min().item(),
        "median": float(np.median(s)),
        "mean": round(float(s.mean()), 2),
        "max": s.max().item(),
    }


def image_report(
    settings: RestoreSettings,
    layout: ImageLayout,
    timesteps: Sequence[int],
    results: Sequence[UnitResult],
    notes: Sequence[str] = (),
) -> Dict[str, Any]:
    """The report of one image restored unit by unit; ``timesteps``: the chain's;
    ``notes``: where the model's defaults yielded to the user's options."""
    stops = [k for r in results for k in r.stops]
    reasons = Counter(x for r in results for x in r.reasons)
    single = results[0] if len(stops) == 1 else None
    scope, plan = settings.stop_scope, layout.plan
    h, w, _ = layout.shape
    report: Dict[str, Any] = {
        "stop_iteration": int(np.median(stops)) if single is None else single.stops[0],
        "stop_reason": (
            single.reasons[0]
            if single is not None
            else f"per {'tile' if scope == 'tile' else 'region'}: "
            + ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        ),
        "iterations_run": int(sum(r.iterations_run for r in results)),
        "backend": results[0].backend,
        "seed": layout.seed,
        # every option but the batch, a cost choice that leaves the bytes alone (it is under tiling)
        "settings": {
            **{k: v for k, v in settings.as_dict().items() if k != "batch"},
            "seed": layout.seed,
            "steps": len(timesteps),
            "timesteps": [int(t) for t in timesteps],  # the export's chain, which --timesteps may set
        },
        "size": [int(w), int(h)],
        "padded_size": [int(plan.width), int(plan.height)],
        "tiling": {
            "tile": [plan.tile_w, plan.tile_h],
            "overlap": plan.overlap,
            "tiles": len(plan),
            "batch": results[0].batch,
            "stop_scope": scope,
            "stops": len(stops),
            "stop_iterations": _spread(stops),
            "stop_reasons": dict(reasons),
        },
        # measurements of this run: kept apart, since the record above is reproducible to the byte
        "run": {
            "seconds": round(sum(r.seconds for r in results), 3),
            "loop": results[0].loop,
            "peak_rss_mb": max(r.peak_rss_mb for r in results),
        },
    }
    corrs = [c for r in results for c in r.residual_corr]
    if corrs:  # the residual guard ran
        report["guard"] = {
            "max_correlation": settings.residual_guard,
            "judged": len(corrs),
            "reverted_to_input": int(sum(r.reverted for r in results)),
            "correlation": corrs[0]
            if len(corrs) == 1
            else {"min": min(corrs), "median": float(np.median(corrs)), "max": max(corrs)},
        }
    if notes:
        report["notes"] = list(notes)
    device = [r.device_memory_mb for r in results if r.device_memory_mb is not None]
    if device:
        report["run"]["device_memory_mb"] = max(device)
    if single is not None and single.history is not None:
        report["history"] = single.history
    return report
