"""g(z) and d loss / d z in numpy, over eps and VJP graphs run by any backend.

Forward: the DDIM chain of ``diip_deploy.schedule``.  Reverse: starting from
gbar = dL/dx0, each step back does gbar <- D * gbar + vjp(x_i, t_i, E * gbar)
(``schedule.step_jacobian_terms``); the surrogate gradient drops the VJP term, so it
needs forward graphs only.  Where the manifest ships a fused chain graph for the
gradient mode, one call does the whole iteration instead.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...manifest import fused_graph_name, iterate_graph_name
from ...schedule import ChainSpec, ddim_step, mse_loss_grad, passed_by_clamp, step_jacobian_terms
from ..backends.base import Runner

EpsFn = Callable[[np.ndarray, int], np.ndarray]
VjpFn = Callable[[np.ndarray, int, np.ndarray], np.ndarray]


def chain_forward(
    eps_fn: EpsFn, z: np.ndarray, spec: ChainSpec
) -> Tuple[np.ndarray, List[Tuple[np.ndarray, np.ndarray]]]:
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


def chain_backward(
    vjp_fn: Optional[VjpFn],
    states: List[Tuple[np.ndarray, np.ndarray]],
    spec: ChainSpec,
    gbar: np.ndarray,
    straight: bool = False,
) -> np.ndarray:
    """d loss / d z from gbar = d loss / d x0; ``vjp_fn=None`` is the surrogate gradient;
    ``straight``: the clamp passes the gradient everywhere (``--clamp-gradient straight``)."""
    for c, (x_t, unclamped) in reversed(list(zip(spec.coefficients(), states))):
        D, E = step_jacobian_terms(c, passed_by_clamp(unclamped, straight))
        through_eps = vjp_fn(x_t, c.t, (E * gbar).astype(np.float32)) if vjp_fn is not None else 0.0
        gbar = (D * gbar + through_eps).astype(np.float32)
    return gbar


def loss_and_grad_with_eps(
    spec: ChainSpec, eps: Sequence[np.ndarray], z: np.ndarray, y: np.ndarray, straight: bool = False
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x0, per-image loss, surrogate gradient) of the chain at ``z`` with each step's eps
    given (an earlier evaluation's, at a nearby z) instead of asked of the UNet: numpy
    only.  The surrogate gradient holds eps constant; these steps hold it fixed."""
    steps = iter(eps)
    x0, states = chain_forward(lambda x, t: next(steps), z, spec)
    loss, gbar = mse_loss_grad(x0, y)
    return x0, loss.astype(np.float32), chain_backward(None, states, spec, gbar.astype(np.float32), straight)


class GraphChain:
    """The chain over one model's runners ({'unet', 'unet_vjp', 'chain_*', 'iterate_*'}:
    Runner), for one gradient mode, bound when the chain is opened; the loop runs
    ``iterate`` itself (device_loop.py) where it can."""

    def __init__(
        self,
        spec: ChainSpec,
        runners: Dict[str, Runner],
        gradient: str = "surrogate",
        clamp_gradient: str = "mask",
        baked_clamp_gradient: Optional[Dict[str, str]] = None,
    ):
        """``baked_clamp_gradient``: the clamp gradient each fused or iteration runner was
        traced with (the manifest's record; the mask where not given)."""
        if gradient not in ("exact", "surrogate"):
            raise ValueError(f"gradient must be exact or surrogate, got {gradient!r}")
        self.straight = clamp_gradient == "straight"
        held = baked_clamp_gradient or {}
        for n in (fused_graph_name(gradient), iterate_graph_name(gradient)):
            if n in runners and held.get(n, "mask") != clamp_gradient:
                raise ValueError(
                    f"--clamp-gradient {clamp_gradient}: {n} was traced with {held.get(n, 'mask')}; "
                    "the per-step graph computes either"
                )
        if gradient == "exact" and "unet_vjp" not in runners and fused_graph_name(gradient) not in runners:
            raise ValueError("exact gradient needs the unet_vjp graph; this export has only the surrogate")
        self.spec = spec
        self.runners = runners
        self.gradient = gradient
        self.fused = runners.get(fused_graph_name(gradient))
        self.iterate = runners.get(iterate_graph_name(gradient))  # the device loop's graph, if opened

    def _timestep(self, x: np.ndarray, t: int) -> np.ndarray:
        return np.full((x.shape[0],), t, dtype=np.int64)

    def eps(self, x: np.ndarray, t: int) -> np.ndarray:
        return self.runners["unet"].infer({"sample": x, "timestep": self._timestep(x, t)})["eps"]

    def vjp(self, x: np.ndarray, t: int, cotangent: np.ndarray) -> np.ndarray:
        """The VJP is linear in the cotangent: scale each sample's to unit size by a power
        of two (exact in float32) so fp16 engines neither overflow nor flush it to zero,
        whatever the other samples of the batch hold."""
        peak = (
            np.abs(cotangent).reshape(cotangent.shape[0], -1).max(axis=1) if cotangent.size else np.ones(len(cotangent))
        )
        ok = (peak > 0) & np.isfinite(peak)
        scale = np.where(ok, 2.0 ** np.round(np.log2(np.where(ok, peak, 1.0))), 1.0).astype(np.float32)
        scale = scale.reshape(-1, *([1] * (cotangent.ndim - 1)))
        feed = {"sample": x, "timestep": self._timestep(x, t), "cotangent": (cotangent / scale).astype(np.float32)}
        return self.runners["unet_vjp"].infer(feed)["vjp"] * scale

    def forward(self, z: np.ndarray) -> np.ndarray:
        return chain_forward(self.eps, z.astype(np.float32), self.spec)[0]

    @property
    def uses_fused(self) -> bool:
        return self.fused is not None

    def loss_and_grad(self, z: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x0, per-image MSE loss [B], d(sum loss)/dz), float32; samples are independent."""
        z = z.astype(np.float32, copy=False)
        y = y.astype(np.float32, copy=False)
        if self.fused is not None:
            out = self.fused.infer({"z": z, "y": y})
            return out["x0"], out["loss"], out["grad"]
        return self.loss_grad_and_eps(z, y)[:3]

    def loss_grad_and_eps(
        self, z: np.ndarray, y: np.ndarray
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[np.ndarray]]:
        """``loss_and_grad`` through the per-step UNet graph, with each step's eps kept for
        ``loss_and_grad_with_eps`` (a fused graph keeps none)."""
        if "unet" not in self.runners:
            raise ValueError("reusing eps needs the per-step unet graph; this chain opened only the fused one")
        z = z.astype(np.float32, copy=False)
        y = y.astype(np.float32, copy=False)
        kept: List[np.ndarray] = []

        def eps_fn(x: np.ndarray, t: int) -> np.ndarray:
            kept.append(self.eps(x, t))
            return kept[-1]

        x0, states = chain_forward(eps_fn, z, self.spec)
        loss, gbar = mse_loss_grad(x0, y)
        grad = chain_backward(
            self.vjp if self.gradient == "exact" else None, states, self.spec, gbar.astype(np.float32), self.straight
        )
        return x0, loss.astype(np.float32), grad, kept

    def close(self) -> None:
        for r in self.runners.values():
            r.deactivate()
