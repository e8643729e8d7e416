"""Self-supervised early stopping, as pure functions of the loss / sharpness history.

- Loss slope (noise, JPEG): raw normalised slope Delta_k = (L_{k-1} - L_k) / L_{k-1}.
  Under Adam it is noisy (a single flat step would stop a run at iteration 4-13), so it
  is smoothed by a trailing mean over ``window`` iterations; stop at the first k >= window
  whose smoothed slope is below eps, and return the reconstruction of iteration k.
- Laplacian-variance peak (blur, low resolution): stop at the first k > k_min with
  sigma2_k > sigma2_{k+1}, and return the reconstruction of iteration k (the peak).
- ``auto`` runs both and takes whichever is *detected* first (the peak at k is only
  known at k + 1); ``none`` never stops early.  The iteration cap is the loop's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

STOP_MODES = ("auto", "slope", "laplacian", "none")


@dataclass(frozen=True)
class StopDecision:
    iteration: int  # whose reconstruction to return
    reason: str  # "slope", "laplacian" or "max_iters"
    detected_at: int  # iteration at which the criterion could tell


def raw_slopes(losses: Sequence[float]) -> np.ndarray:
    """Delta for each k >= 1 (NaN at k = 0)."""
    L = np.asarray(losses, dtype=np.float64)
    out = np.full(L.shape, np.nan)
    if len(L) > 1:
        out[1:] = (L[:-1] - L[1:]) / np.maximum(np.abs(L[:-1]), 1e-30)
    return out


def smoothed_slopes(losses: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean of the last ``window`` raw slopes (NaN until k >= window)."""
    raw = raw_slopes(losses)
    out = np.full(raw.shape, np.nan)
    if window < 1:
        raise ValueError("slope window must be >= 1")
    if len(raw) > window:
        c = np.cumsum(np.nan_to_num(raw))
        out[window:] = (c[window:] - c[:-window]) / window
    return out


def slope_stop(losses: Sequence[float], eps: float = 1e-3, window: int = 5) -> Optional[StopDecision]:
    s = smoothed_slopes(losses, window)
    hits = np.nonzero(s < eps)[0]
    if len(hits) == 0:
        return None
    k = int(hits[0])
    return StopDecision(iteration=k, reason="slope", detected_at=k)


def laplacian_stop(laplacian_vars: Sequence[float], k_min: int = 100) -> Optional[StopDecision]:
    v = np.asarray(laplacian_vars, dtype=np.float64)
    if len(v) < k_min + 3:
        return None
    ks = np.arange(k_min + 1, len(v) - 1)
    hits = ks[v[ks] > v[ks + 1]]
    if len(hits) == 0:
        return None
    k = int(hits[0])
    return StopDecision(iteration=k, reason="laplacian", detected_at=k + 1)


def decide(losses: Sequence[float], laplacian_vars: Sequence[float], mode: str = "auto", eps: float = 1e-3,
           window: int = 5, k_min: int = 100) -> Optional[StopDecision]:
    """The stop the criteria of ``mode`` call for in this history, or None."""
    if mode not in STOP_MODES:
        raise ValueError(f"stop must be one of {STOP_MODES}, got {mode!r}")
    found: List[StopDecision] = []
    if mode in ("auto", "slope"):
        d = slope_stop(losses, eps, window)
        if d:
            found.append(d)
    if mode in ("auto", "laplacian"):
        d = laplacian_stop(laplacian_vars, k_min)
        if d:
            found.append(d)
    return min(found, key=lambda d: (d.detected_at, d.iteration)) if found else None


class Stopper:
    """``decide`` evaluated online, one iteration at a time, for one sample of a batch.

    Each update looks only at the newest iteration (earlier ones were looked at when
    they were newest), so a run of n iterations costs O(n * window), and the first
    decision it returns is the one ``decide`` gives on the history so far.
    """

    def __init__(self, mode: str = "auto", eps: float = 1e-3, window: int = 5, k_min: int = 100):
        if mode not in STOP_MODES:
            raise ValueError(f"stop must be one of {STOP_MODES}, got {mode!r}")
        self.mode, self.eps, self.window, self.k_min = mode, eps, window, k_min
        self.losses: List[float] = []
        self.laplacian_vars: List[float] = []
        self.slopes: List[Optional[float]] = []

    def update(self, loss: float, laplacian_var: float) -> Optional[StopDecision]:
        self.losses.append(float(loss))
        self.laplacian_vars.append(float(laplacian_var))
        k = len(self.losses) - 1
        slope = float(smoothed_slopes(self.losses[-(self.window + 1):], self.window)[-1])
        self.slopes.append(slope if np.isfinite(slope) else None)
        found: List[StopDecision] = []
        if self.mode in ("auto", "slope") and k >= self.window and slope < self.eps:
            found.append(StopDecision(iteration=k, reason="slope", detected_at=k))
        j = k - 1  # the Laplacian peak at j is known once j + 1 is
        if self.mode in ("auto", "laplacian") and j >= self.k_min + 1 and self.laplacian_vars[j] > self.laplacian_vars[k]:
            found.append(StopDecision(iteration=j, reason="laplacian", detected_at=k))
        return min(found, key=lambda d: (d.detected_at, d.iteration)) if found else None


def laplacian_variance(x: np.ndarray) -> np.ndarray:
    """Variance of the 4-neighbour Laplacian of each image's channel mean ([B,C,H,W] -> [B])."""
    g = np.asarray(x, dtype=np.float64).mean(axis=1)
    lap = (g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:] - 4 * g[:, 1:-1, 1:-1])
    return lap.reshape(lap.shape[0], -1).var(axis=1)
