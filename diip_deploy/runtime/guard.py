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


def keeps_restoration(restored: np.ndarray, damaged: np.ndarray, max_correlation: float) -> bool:
    """Whether the guard accepts the restoration (``max_correlation`` >= 1: always)."""
    return max_correlation >= 1.0 or residual_correlation(restored, damaged) <= max_correlation
