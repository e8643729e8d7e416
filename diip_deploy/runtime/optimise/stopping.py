"""Self-supervised early stopping, as pure functions of the loss / sharpness history.

- Loss slope (noise, JPEG): raw normalised slope Delta_k = (L_{k-1} - L_k) / L_{k-1}.
  Under Adam it is noisy (a single flat step would stop a run at iteration 4-13), so it
  is smoothed over ``window`` iterations: a trailing mean of Delta (``slope_fit`` =
  "mean"), or a least-squares line through the last window + 1 losses divided by their
  mean ("regression").  Stop at the first k >= max(window, slope_min_iter) where the
  smoothed slope has been below eps for ``patience`` iterations running, and return
  the reconstruction of iteration k.
- Laplacian-variance peak (blur, low resolution): sigma2_k, optionally smoothed by a
  trailing mean over ``lap_window``; stop at the first k > k_min with
  sigma2_k > sigma2_{k+1}, and return the reconstruction of iteration k (the peak).
- ``auto`` runs both and takes whichever is *detected* first (the peak at k is only
  known at k + 1); ``paper-auto`` is the paper's rules exactly (raw slope, no minimum
  iteration, no patience, raw Laplacian), kept so that fidelity stays measurable;
  ``none`` never stops early.  The iteration cap is the loop's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...settings import RestoreSettings

# The paper's rules with its published thresholds (docs/method.md): what "paper-auto" scores use.
PAPER_SETTINGS = {"stop": "paper-auto", "eps": 1e-3, "k_min": 100}


@dataclass(frozen=True)
class StopDecision:
    iteration: int  # whose reconstruction to return
    reason: str  # "slope", "laplacian" or "max_iters"
    detected_at: int  # iteration at which the criterion could tell


def resolved(rule: RestoreSettings) -> RestoreSettings:
    """paper-auto as the plain settings it stands for (the criteria read a rule's stop,
    eps, slope_window, slope_fit, slope_min_iter, patience, k_min and lap_window)."""
    if rule.stop != "paper-auto":
        return rule
    return replace(rule, stop="auto", slope_window=1, slope_min_iter=0, patience=1, slope_fit="mean", lap_window=1)


def raw_slopes(losses: Union[Sequence[float], np.ndarray]) -> np.ndarray:
    """Delta for each k >= 1 (NaN at k = 0)."""
    L = np.asarray(losses, dtype=np.float64)
    out = np.full(L.shape, np.nan)
    if len(L) > 1:
        out[1:] = (L[:-1] - L[1:]) / np.maximum(np.abs(L[:-1]), 1e-30)
    return out


def smoothed_slopes(losses: Union[Sequence[float], np.ndarray], window: int, fit: str = "mean") -> np.ndarray:
    """The slope at each k >= window (NaN before): the trailing mean of the last
    ``window`` raw slopes, or minus the least-squares slope of the last window + 1 losses
    over their mean."""
    if window < 1:
        raise ValueError("slope window must be >= 1")
    L = np.asarray(losses, dtype=np.float64)
    out = np.full(L.shape, np.nan)
    if len(L) <= window:
        return out
    if fit == "mean":
        out[window:] = sliding_window_view(raw_slopes(L)[1:], window).mean(axis=-1)
    else:
        seg = sliding_window_view(L, window + 1)
        x = np.arange(window + 1, dtype=np.float64) - window / 2.0
        b = (seg * x).sum(axis=-1) / (x * x).sum()
        out[window:] = -b / np.maximum(np.abs(seg.mean(axis=-1)), 1e-30)
    return out


def smoothed_laplacian(laplacian_vars: Sequence[float], window: int = 1) -> np.ndarray:
    """Trailing mean of the Laplacian variance over ``window`` iterations (NaN before)."""
    v = np.asarray(laplacian_vars, dtype=np.float64)
    if window == 1:
        return v
    out = np.full(v.shape, np.nan)
    if len(v) >= window:
        out[window - 1 :] = sliding_window_view(v, window).mean(axis=-1)
    return out


def slope_stop(
    losses: Sequence[float], eps: float, window: int, min_iter: int = 0, patience: int = 1, fit: str = "mean"
) -> Optional[StopDecision]:
    s = smoothed_slopes(losses, window, fit)
    below = np.nan_to_num(s, nan=np.inf) < eps
    below[: min(len(below), min_iter)] = False
    run = 0
    for k, b in enumerate(below):
        run = run + 1 if b else 0
        if run >= patience:
            return StopDecision(iteration=k, reason="slope", detected_at=k)
    return None


def laplacian_stop(laplacian_vars: Sequence[float], k_min: int, window: int = 1) -> Optional[StopDecision]:
    v = smoothed_laplacian(laplacian_vars, window)
    if len(v) < k_min + 3:
        return None
    ks = np.arange(k_min + 1, len(v) - 1)
    hits = ks[v[ks] > v[ks + 1]]
    if len(hits) == 0:
        return None
    k = int(hits[0])
    return StopDecision(iteration=k, reason="laplacian", detected_at=k + 1)


def decide(losses: Sequence[float], laplacian_vars: Sequence[float], rule: RestoreSettings) -> Optional[StopDecision]:
    """The stop the criteria of ``rule.stop`` call for in this history, or None."""
    r = resolved(rule)
    found: List[StopDecision] = []
    if r.stop in ("auto", "slope"):
        d = slope_stop(losses, r.eps, r.slope_window, r.slope_min_iter, r.patience, r.slope_fit)
        if d:
            found.append(d)
    if r.stop in ("auto", "laplacian"):
        d = laplacian_stop(laplacian_vars, r.k_min, r.lap_window)
        if d:
            found.append(d)
    return min(found, key=lambda d: (d.detected_at, d.iteration)) if found else None


class Stopper:
    """``decide`` evaluated online, one iteration at a time, for one sample of a batch.

    Each update looks only at the newest iteration (earlier ones were looked at when
    they were newest), so a run of n iterations costs O(n * window), and the first
    decision it returns is the one ``decide`` gives on the history so far.
    """

    def __init__(self, rule: RestoreSettings):
        self.rule = resolved(rule)
        self.losses: List[float] = []
        self.laplacian_vars: List[float] = []
        self.slopes: List[Optional[float]] = []
        self._smoothed_lap: List[float] = []
        self._run = 0

    def history(self) -> Dict[str, list]:
        """What the criteria saw, per iteration: the report's and the plots' history."""
        return {"loss": self.losses, "slope": self.slopes, "laplacian_var": self.laplacian_vars}

    def update(self, loss: float, laplacian_var: float) -> Optional[StopDecision]:
        r = self.rule
        self.losses.append(float(loss))
        self.laplacian_vars.append(float(laplacian_var))
        k = len(self.losses) - 1
        slope = float(smoothed_slopes(self.losses[-(r.slope_window + 1) :], r.slope_window, r.slope_fit)[-1])
        self.slopes.append(slope if np.isfinite(slope) else None)
        self._run = self._run + 1 if (np.isfinite(slope) and slope < r.eps and k >= r.slope_min_iter) else 0
        self._smoothed_lap.append(float(smoothed_laplacian(self.laplacian_vars[-r.lap_window :], r.lap_window)[-1]))
        found: List[StopDecision] = []
        if r.stop in ("auto", "slope") and self._run >= r.patience:
            found.append(StopDecision(iteration=k, reason="slope", detected_at=k))
        j = k - 1  # the Laplacian peak at j is known once j + 1 is
        v = self._smoothed_lap
        if r.stop in ("auto", "laplacian") and j >= r.k_min + 1 and v[j] > v[k]:
            found.append(StopDecision(iteration=j, reason="laplacian", detected_at=k))
        return min(found, key=lambda d: (d.detected_at, d.iteration)) if found else None


def laplacian_variance(x: np.ndarray) -> np.ndarray:
    """Variance of the 4-neighbour Laplacian of each image's channel mean ([B,C,H,W] -> [B])."""
    return laplacian_variance_of(np.asarray(x, dtype=np.float64))


def laplacian_variance_of(x: Any) -> Any:
    """The same as arithmetic on numpy arrays or torch tensors (the iteration graphs are
    traced from it), in x's own precision."""
    g = x.mean(1)
    lap = g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:] - 4 * g[:, 1:-1, 1:-1]
    flat = lap.reshape(lap.shape[0], -1)
    centred = flat - flat.mean(1)[:, None]
    return (centred * centred).mean(1)
