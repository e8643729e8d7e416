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

from typing import Callable, Iterable, List, Optional, Sequence, Tuple

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


def replay(
    correlations: Sequence[float],
    stop_iteration: int,
    detected_at: int,
    max_correlation: float,
    guard_at: int = 0,
    max_iters: Optional[int] = None,
) -> Tuple[int, bool, int]:
    """What the loop and the guard make of one run, from its recorded per-iteration
    residual correlations: (the iteration whose result is judged, kept?, iterations run).

    The same order as the runtime: at iteration ``guard_at - 1``, if no stop has been
    detected yet, a result the guard would revert ends the run there (the early guard);
    otherwise the run ends where the stop rule detected its stop (or at the cap) and the
    guard judges that stop's result.  Lets a benchmark score what ``diip-run`` returns
    from histories alone."""
    cap = len(correlations) if max_iters is None else max_iters
    early = 0 < guard_at < cap and max_correlation < 1.0
    if (
        early
        and detected_at >= guard_at
        and not keeps_restoration(round(correlations[guard_at - 1], 4), max_correlation)
    ):
        return guard_at - 1, False, guard_at
    return stop_iteration, keeps_restoration(round(correlations[stop_iteration], 4), max_correlation), detected_at + 1
