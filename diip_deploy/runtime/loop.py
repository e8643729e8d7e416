"""The DIIP loop: optimise z so that g(z) fits y, and stop before it fits the damage.

A plain function over arrays, k-diffusion style: per iteration it hands a small dict
(k, x0, loss, slope, laplacian_var) to ``callback``; progress bars, previews and the
benchmark's oracle hang on that.  The reconstruction returned is the one of the
iteration the stopping criterion chose, not the last one computed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol

import numpy as np

from .optim import make_optimizer, project_to_sphere
from .stopping import decide, laplacian_variance, smoothed_slopes


class NonFiniteError(Exception):
    """The loss or the gradient stopped being finite; one line says when."""


class LossAndGrad(Protocol):
    def loss_and_grad(self, z: np.ndarray, y: np.ndarray, gradient: str) -> tuple: ...


@dataclass
class RestoreConfig:
    lr: float = 0.01
    optimizer: str = "adam"
    gradient: str = "surrogate"
    max_iters: int = 300
    stop: str = "auto"
    eps: float = 1e-3
    slope_window: int = 5
    k_min: int = 100
    seed: int = 0
    project: bool = True

    @classmethod
    def from_defaults(cls, defaults: Dict[str, Any], **overrides: Any) -> "RestoreConfig":
        """A manifest's defaults, with every override that is not None taking precedence."""
        d = {**defaults, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(lr=float(d["lr"]), optimizer=str(d["optimizer"]), gradient=str(d["gradient"]),
                   max_iters=int(d["max_iters"]), stop=str(d["stop"]), eps=float(d["eps"]),
                   slope_window=int(d["slope_window"]), k_min=int(d["k_min"]), seed=int(d.get("seed", 0)))


@dataclass
class RestoreResult:
    x0: np.ndarray  # [1, C, H, W] in [-1, 1], from iteration stop_iteration
    stop_iteration: int
    stop_reason: str
    iterations_run: int
    seconds: float
    history: Dict[str, list] = field(default_factory=dict)


def initial_latent(shape, seed: int, project: bool = True) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return project_to_sphere(z) if project else z


def _finite_or_none(v: float) -> Optional[float]:
    return float(v) if np.isfinite(v) else None


def restore(chain: LossAndGrad, y: np.ndarray, cfg: RestoreConfig,
            callback: Optional[Callable[[Dict[str, Any]], None]] = None) -> RestoreResult:
    """Run DIIP on one image y [1, C, H, W] in [-1, 1]."""
    if y.ndim != 4 or y.shape[0] != 1:
        raise ValueError(f"restore takes one image [1, C, H, W], got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise NonFiniteError("input image holds NaN or infinite values")
    if cfg.max_iters < 1:
        raise ValueError("max_iters must be >= 1")
    t0 = time.perf_counter()
    y = y.astype(np.float32)
    z = initial_latent(y.shape, cfg.seed, cfg.project)
    opt = make_optimizer(cfg.optimizer, cfg.lr)
    losses: List[float] = []
    laps: List[float] = []
    recent: Dict[int, np.ndarray] = {}
    decision = None
    for k in range(cfg.max_iters):
        x0, loss, grad = chain.loss_and_grad(z, y, cfg.gradient)
        loss_k = float(loss[0])
        if not np.isfinite(loss_k) or not np.all(np.isfinite(grad)):
            raise NonFiniteError(f"loss or gradient became non-finite at iteration {k} (loss {loss_k}); try a lower --lr")
        losses.append(loss_k)
        laps.append(float(laplacian_variance(x0)[0]))
        recent = {k: x0, **({k - 1: recent[k - 1]} if k - 1 in recent else {})}
        slope = smoothed_slopes(losses, cfg.slope_window)[-1]
        if callback is not None:
            callback({"k": k, "x0": x0, "loss": loss_k, "slope": _finite_or_none(slope), "laplacian_var": laps[-1]})
        decision = decide(losses, laps, cfg.stop, cfg.eps, cfg.slope_window, cfg.k_min)
        if decision is not None:
            break
        if k + 1 < cfg.max_iters:
            z = opt.step(z, grad)
            if cfg.project:
                z = project_to_sphere(z)
    n = len(losses)
    stop_k, reason = (decision.iteration, decision.reason) if decision else (n - 1, "max_iters")
    slopes = smoothed_slopes(losses, cfg.slope_window)
    return RestoreResult(
        x0=recent[stop_k], stop_iteration=stop_k, stop_reason=reason, iterations_run=n,
        seconds=time.perf_counter() - t0,
        history={"loss": losses, "slope": [_finite_or_none(s) for s in slopes], "laplacian_var": laps},
    )
