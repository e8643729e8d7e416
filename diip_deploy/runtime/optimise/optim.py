"""Optimisers over the latent z, as plain state + update functions (numpy).

Adam follows torch.optim.Adam exactly (bias-corrected moments, eps outside the square
root), so the runtime can be checked step for step against the torch reference.  The
update and the projection are plain arithmetic (``adam_update``, ``rms_project``) that
runs on numpy arrays and torch tensors alike: the numpy loop calls them, and the
iteration graphs (``iterate_*.onnx``, traced from torch) carry the same code onto the
device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

import numpy as np

OPTIMIZERS = ("adam", "gd")


ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which the paper's runs use
ADAM_EPS = 1e-8


@dataclass
class Adam:
    lr: float
    beta1: float = ADAM_BETAS[0]
    beta2: float = ADAM_BETAS[1]
    eps: float = ADAM_EPS
    step_count: int = 0
    m: Optional[np.ndarray] = field(default=None, repr=False)
    v: Optional[np.ndarray] = field(default=None, repr=False)

    def step(self, z: np.ndarray, grad: np.ndarray) -> np.ndarray:
        if self.m is None or self.v is None:
            self.m = np.zeros_like(z)
            self.v = np.zeros_like(z)
        self.step_count += 1
        z_next, self.m, self.v = adam_update(
            z, self.m, self.v, grad, self.step_count, self.lr, self.beta1, self.beta2, self.eps
        )
        return z_next.astype(z.dtype)


def adam_update(
    z: Any,
    m: Any,
    v: Any,
    grad: Any,
    step: Any,
    lr: Any,
    beta1: float = ADAM_BETAS[0],
    beta2: float = ADAM_BETAS[1],
    eps: float = ADAM_EPS,
) -> Tuple[Any, Any, Any]:
    """(z, m, v) after one Adam step; ``step`` is the step count after this one and ``lr``
    the learning rate, numbers or per-sample arrays shaped to broadcast against z."""
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    bc1 = 1 - beta1**step
    bc2 = 1 - beta2**step
    denom = v**0.5 / bc2**0.5 + eps
    return z - (lr / bc1) * m / denom, m, v


@dataclass
class GradientDescent:
    lr: float

    def step(self, z: np.ndarray, grad: np.ndarray) -> np.ndarray:
        return (z - self.lr * grad).astype(z.dtype)


def scheduled_lr(lr: float, lr_final: float, evaluations: int, max_iters: int) -> float:
    """The rate for the Adam steps after ``evaluations`` evaluations of a run capped at
    ``max_iters``: ``lr`` at the start, ``lr * lr_final`` at the cap, a half cosine in
    between (``lr_final`` 1: constant)."""
    if lr_final == 1.0:
        return lr
    done = min(max(evaluations, 0), max_iters) / max(max_iters, 1)
    return lr * (lr_final + (1.0 - lr_final) * 0.5 * (1.0 + math.cos(math.pi * done)))


def make_optimizer(name: str, lr: float, betas: Tuple[float, float] = ADAM_BETAS):
    if name == "adam":
        return Adam(lr=lr, beta1=betas[0], beta2=betas[1])
    if name == "gd":
        return GradientDescent(lr=lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def project_to_sphere(z: np.ndarray) -> np.ndarray:
    """Each image's z rescaled to norm sqrt(C*H*W), where Gaussian noise concentrates (BIRD)."""
    return rms_project(z.astype(np.float64)).astype(z.dtype)


def rms_project(z: Any) -> Any:
    """The projection as arithmetic on numpy or torch: norm sqrt(n) over n values is a root
    mean square of 1, so no shape enters (traced graphs keep H and W dynamic)."""
    ms = (z * z).reshape(z.shape[0], -1).mean(1)
    return z / ((ms + 1e-24) ** 0.5).reshape(-1, *([1] * (len(z.shape) - 1)))
