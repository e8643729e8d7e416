"""The residual guard: a blind check, after the stop, that what DIIP removed looks like noise.

Where the prior cannot represent an image (JPEG blocks, bicubic blur, water drops on this
small model), the chain's output drifts from the input in structured ways: the residual
(output - input) is smooth, its neighbouring pixels strongly correlated.  Where DIIP
removes noise, the residual is close to white.  The guard measures the residual's
lag-one correlation (mean of horizontal and vertical, per-channel mean removed) and,
above a threshold, returns the input instead of a restoration that would lose to it.
Pure functions over arrays, like the stopping rules.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Tuple

import numpy as np


def residual_correlation(restored: np.ndarray, damaged: np.ndarray) -> float:
    """Lag-one spatial correlation of ``restored - damaged`` ([C, H, W]); 0 for a white
    residual, near 1 for a smooth one, 0 when the two are equal."""
    r = restored.astype(np.float64) - damaged.astype(np.float64)
    r -= r.mean(axis=(-2, -1), keepdims=True)
    energy = float(np.mean(r * r))
    if energy <= 1e-20 or r.shape[-1] < 2 or r.shape[-2] < 2:
        return 0.0
    across = float(np.mean(r[..., :, 1:] * r[..., :, :-1]))
    down = float(np.mean(r[..., 1:, :] * r[..., :-1, :]))
    return (across + down) / 2.0 / energy


def keeps_restoration(correlation: float, max_correlation: float) -> bool:
    """The guard's rule: keep a restoration whose residual correlation is at most
    ``max_correlation`` (>= 1: the guard is off, every restoration is kept)."""
    return max_correlation >= 1.0 or correlation <= max_correlation


def judge(
    pairs: Iterable[Tuple[np.ndarray, Callable[[], np.ndarray]]], max_correlation: float
) -> List[Tuple[float, bool]]:
    """(correlation rounded as reported, kept?) for each (restored, damaged-maker) pair; the
    damaged image is made only when the guard is on."""
    if max_correlation >= 1.0:
        return []
    out = []
    for restored, damaged in pairs:
        corr = round(residual_correlation(restored, damaged()), 4)
        out.append((corr, keeps_restoration(corr, max_correlation)))
    return out
