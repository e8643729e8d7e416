"""g(z) and d loss / d z in numpy, over eps and VJP graphs run by any backend.

Forward: the DDIM chain of ``diip_deploy.schedule``.  Reverse: starting from
gbar = dL/dx0, each step back does gbar <- D * gbar + vjp(x_i, t_i, E * gbar)
(``schedule.step_jacobian_terms``); the surrogate gradient drops the VJP term, so it
needs forward graphs only.  Where the manifest ships a fused chain graph for the
gradient mode, one call does the whole iteration instead.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..schedule import ChainSpec, ddim_step, mse_loss_grad, step_jacobian_terms
from .backends.base import Runner
from .manifest import fused_graph_name

EpsFn = Callable[[np.ndarray, int], np.ndarray]
VjpFn = Callable[[np.ndarray, int, np.ndarray], np.ndarray]


def chain_forward(eps_fn: EpsFn, z: np.ndarray, spec: ChainSpec) -> Tuple[np.ndarray, List[Tuple[np.ndarray, np.ndarray]]]:
    """(x0, per-step (x_t, unclamped mask)) for the reverse pass."""
    x = z
    x0 = z
    states = []
    for c in spec.coefficients():
        eps = eps_fn(x, c.t)
        x_next, x0, unclamped = ddim_step(x, eps, c, spec.clamp)
        states.append((x, unclamped))
        x = x_next
    return x0, states


def chain_backward(vjp_fn: Optional[VjpFn], states: List[Tuple[np.ndarray, np.ndarray]], spec: ChainSpec,
                   gbar: np.ndarray) -> np.ndarray:
    """d loss / d z from gbar = d loss / d x0; ``vjp_fn=None`` is the surrogate gradient."""
    for c, (x_t, unclamped) in reversed(list(zip(spec.coefficients(), states))):
        D, E = step_jacobian_terms(c, unclamped)
        through_eps = vjp_fn(x_t, c.t, (E * gbar).astype(np.float32)) if vjp_fn is not None else 0.0
        gbar = (D * gbar + through_eps).astype(np.float32)
    return gbar


class GraphChain:
    """The chain over one model's runners ({'unet', 'unet_vjp', 'chain_*'}: Runner)."""

    def __init__(self, spec: ChainSpec, runners: Dict[str, Runner]):
        self.spec = spec
        self.runners = runners

    def _timestep(self, x: np.ndarray, t: int) -> np.ndarray:
        return np.full((x.shape[0],), t, dtype=np.int64)

    def eps(self, x: np.ndarray, t: int) -> np.ndarray:
        return self.runners["unet"].infer({"sample": x, "timestep": self._timestep(x, t)})["eps"]

    def vjp(self, x: np.ndarray, t: int, cotangent: np.ndarray) -> np.ndarray:
        """The VJP is linear in the cotangent: scale it to unit size by a power of two
        (exact in float32) so fp16 engines neither overflow nor flush it to zero."""
        peak = float(np.max(np.abs(cotangent))) if cotangent.size else 0.0
        scale = float(2.0 ** np.round(np.log2(peak))) if peak > 0 and np.isfinite(peak) else 1.0
        feed = {"sample": x, "timestep": self._timestep(x, t), "cotangent": (cotangent / scale).astype(np.float32)}
        return self.runners["unet_vjp"].infer(feed)["vjp"] * np.float32(scale)

    def forward(self, z: np.ndarray) -> np.ndarray:
        return chain_forward(self.eps, z.astype(np.float32), self.spec)[0]

    def uses_fused(self, gradient: str) -> bool:
        return fused_graph_name(gradient) in self.runners

    def loss_and_grad(self, z: np.ndarray, y: np.ndarray, gradient: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x0, per-image MSE loss [B], d(sum loss)/dz), float32."""
        z = z.astype(np.float32, copy=False)
        y = y.astype(np.float32, copy=False)
        if self.uses_fused(gradient):
            out = self.runners[fused_graph_name(gradient)].infer({"z": z, "y": y})
            return out["x0"], out["loss"], out["grad"]
        if gradient == "exact" and "unet_vjp" not in self.runners:
            raise ValueError("exact gradient needs the unet_vjp graph; this export has only the surrogate")
        x0, states = chain_forward(self.eps, z, self.spec)
        loss, gbar = mse_loss_grad(x0, y)
        grad = chain_backward(self.vjp if gradient == "exact" else None, states, self.spec, gbar.astype(np.float32))
        return x0, loss.astype(np.float32), grad

    def close(self) -> None:
        for r in self.runners.values():
            r.deactivate()
