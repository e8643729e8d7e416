"""Optimisers over the latent z, as plain state + update functions (numpy).

Adam follows torch.optim.Adam exactly (bias-corrected moments, eps outside the square
root), so the runtime can be checked step for step against the torch reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..schedule import sphere_radius

OPTIMIZERS = ("adam", "gd")


@dataclass
class Adam:
    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    step_count: int = 0
    m: Optional[np.ndarray] = field(default=None, repr=False)
    v: Optional[np.ndarray] = field(default=None, repr=False)

    def step(self, z: np.ndarray, grad: np.ndarray) -> np.ndarray:
        if self.m is None or self.v is None:
            self.m = np.zeros_like(z)
            self.v = np.zeros_like(z)
        self.step_count += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad * grad
        bc1 = 1 - self.beta1**self.step_count
        bc2 = 1 - self.beta2**self.step_count
        denom = np.sqrt(self.v) / np.sqrt(bc2) + self.eps
        return (z - (self.lr / bc1) * self.m / denom).astype(z.dtype)


@dataclass
class GradientDescent:
    lr: float

    def step(self, z: np.ndarray, grad: np.ndarray) -> np.ndarray:
        return (z - self.lr * grad).astype(z.dtype)


def make_optimizer(name: str, lr: float):
    if name == "adam":
        return Adam(lr=lr)
    if name == "gd":
        return GradientDescent(lr=lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def project_to_sphere(z: np.ndarray) -> np.ndarray:
    """Each image's z rescaled to norm sqrt(C*H*W), where Gaussian noise concentrates (BIRD)."""
    r = sphere_radius(z.shape[1:])
    norms = np.sqrt((z.reshape(z.shape[0], -1).astype(np.float64) ** 2).sum(1)).reshape(-1, *([1] * (z.ndim - 1)))
    return (z * (r / np.maximum(norms, 1e-12))).astype(z.dtype)
