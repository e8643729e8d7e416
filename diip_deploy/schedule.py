"""The truncated DDIM chain, written once.

Symbols follow DDIM (Song et al. 2021) and docs/method.md: ``a`` is alphas_cumprod,
``a_t`` its value at the current timestep and ``a_prev`` at the next one (1 after
the last step).  Every function here is plain arithmetic that works on numpy arrays
and on torch tensors alike, so the torch reference (autograd, the test oracle) and the
numpy runtime run literally the same code.  Nothing in this module imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike

NUM_TRAIN_TIMESTEPS = 1000


def linear_alphas_cumprod(
    beta_start: float = 1e-4, beta_end: float = 0.02, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> np.ndarray:
    """DDPM's linear beta schedule, as cumulative products of alphas (float64)."""
    betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def scaled_linear_alphas_cumprod(
    beta_start: float, beta_end: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> np.ndarray:
    """Stable-Diffusion style ``scaled_linear`` schedule (linear in sqrt(beta))."""
    betas = np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def squaredcos_alphas_cumprod(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """Improved-DDPM cosine schedule (``squaredcos_cap_v2``), betas capped at 0.999."""

    def alpha_bar(t: float) -> float:
        return float(np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2)

    n = num_train_timesteps
    betas = np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)])
    return np.cumprod(1.0 - betas)


def ddim_timesteps(steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> List[int]:
    """DDIM 'leading' spacing: S=10 over T=1000 gives 900, 800, ..., 0 (as BIRD)."""
    if steps < 1 or steps > num_train_timesteps:
        raise ValueError(f"steps must be in 1..{num_train_timesteps}, got {steps}")
    stride = num_train_timesteps // steps
    return [stride * i for i in range(steps)][::-1]


def checked_timesteps(timesteps: Sequence[int], num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> List[int]:
    """A chain's own timesteps (any spacing): strictly falling, within the training table."""
    ts = [int(t) for t in timesteps]
    if not ts or any(b >= a for a, b in zip(ts, ts[1:])) or ts[-1] < 0 or ts[0] >= num_train_timesteps:
        raise ValueError(f"timesteps must fall strictly within 0..{num_train_timesteps - 1}, got {ts}")
    return ts


@dataclass(frozen=True)
class StepCoefficients:
    """Scalars of one DDIM step x_t -> x_prev (eta = 0)."""

    t: int
    a_t: float
    a_prev: float

    @property
    def sqrt_a(self) -> float:
        return float(np.sqrt(self.a_t))

    @property
    def sqrt_1ma(self) -> float:
        return float(np.sqrt(1.0 - self.a_t))

    @property
    def sqrt_a_prev(self) -> float:
        return float(np.sqrt(self.a_prev))

    @property
    def sqrt_1ma_prev(self) -> float:
        return float(np.sqrt(1.0 - self.a_prev))

    @property
    def A(self) -> float:
        """d x_prev / d x_t with eps held fixed and x0 unclamped: sqrt(a_prev / a_t)."""
        return self.sqrt_a_prev / self.sqrt_a

    @property
    def B(self) -> float:
        """d x_prev / d eps with x0 unclamped."""
        return self.sqrt_1ma_prev - self.sqrt_a_prev * self.sqrt_1ma / self.sqrt_a

    @property
    def A_clamped(self) -> float:
        """d x_prev / d x_t where x0 was clamped: sqrt((1 - a_prev) / (1 - a_t))."""
        return self.sqrt_1ma_prev / self.sqrt_1ma


PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class ChainSpec:
    """What fixes g(z): the timesteps, alphas_cumprod at them, and x0 clamping.

    This is exactly what the manifest records, so the runtime rebuilds the chain from
    it without the scheduler or the full alphas table.
    """

    timesteps: Sequence[int]
    alphas: Sequence[float]
    clamp: bool = True

    @classmethod
    def from_table(
        cls, alphas_cumprod: ArrayLike, steps: int, clamp: bool = True, timesteps: Optional[Sequence[int]] = None
    ) -> ChainSpec:
        """The chain at DDIM's leading spacing of ``steps``, or at ``timesteps`` where given."""
        ac = np.asarray(alphas_cumprod, dtype=np.float64)
        ts = ddim_timesteps(steps, len(ac)) if timesteps is None else checked_timesteps(timesteps, len(ac))
        return cls(timesteps=tuple(ts), alphas=tuple(float(ac[t]) for t in ts), clamp=clamp)

    def coefficients(self) -> List[StepCoefficients]:
        """Coefficients of each step; a_prev is the next step's alpha, 1 after the last."""
        out = []
        for i, (t, a) in enumerate(zip(self.timesteps, self.alphas)):
            a_prev = float(self.alphas[i + 1]) if i + 1 < len(self.alphas) else 1.0
            out.append(StepCoefficients(t=int(t), a_t=float(a), a_prev=a_prev))
        return out


def model_output_to_eps(output: Any, x_t: Any, sqrt_a: Any, sqrt_1ma: Any, prediction_type: str) -> Any:
    """Turn a UNet output into the noise prediction eps the chain uses.

    ``sqrt_a``/``sqrt_1ma`` are sqrt(a_t) and sqrt(1 - a_t), scalars or arrays that
    broadcast against ``x_t`` (the exported graphs gather them per timestep).
    """
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return sqrt_a * output + sqrt_1ma * x_t
    raise ValueError(f"unsupported prediction_type {prediction_type!r} (one of {', '.join(PREDICTION_TYPES)})")


def predict_x0(x_t: Any, eps: Any, c: StepCoefficients) -> Any:
    """x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)."""
    return (x_t - c.sqrt_1ma * eps) / c.sqrt_a


def ddim_step(x_t: Any, eps: Any, c: StepCoefficients, clamp: bool, clamp_fn: Any = None) -> tuple:
    """One deterministic DDIM step.

    Returns ``(x_prev, x0_hat, unclamped)`` where ``unclamped`` is the boolean mask of
    pixels whose x0_hat lay inside [-1, 1] (all True without clamping).  With clamping,
    eps is re-derived from the clamped x0_hat (diffusers' use_clipped_model_output).
    ``clamp_fn`` replaces the clamp (same forward): the torch reference passes a
    straight-through one.
    """
    x0 = predict_x0(x_t, eps, c)
    if not clamp:
        return c.sqrt_a_prev * x0 + c.sqrt_1ma_prev * eps, x0, (x0 == x0)
    unclamped = (x0 >= -1.0) & (x0 <= 1.0)
    x0 = x0.clip(-1.0, 1.0) if clamp_fn is None else clamp_fn(x0)
    eps = (x_t - c.sqrt_a * x0) / c.sqrt_1ma
    return c.sqrt_a_prev * x0 + c.sqrt_1ma_prev * eps, x0, unclamped


def passed_by_clamp(unclamped: Any, straight: bool) -> Any:
    """Where the clamp passes the gradient: the unclamped mask, or everywhere when the clamp
    is straight-through (its backward taken as the identity; the forward is unchanged)."""
    return unclamped | True if straight else unclamped


def straight_through_clamp(x0: Any, detach: Any) -> Any:
    """x0 clamped to [-1, 1] in the forward, the identity in the backward (``detach`` stops
    the gradient: torch's ``Tensor.detach``): the torch reference of ``passed_by_clamp``."""
    return x0 + detach(x0.clip(-1.0, 1.0) - x0)


def step_jacobian_terms(c: StepCoefficients, unclamped: Any) -> tuple:
    """Terms of the step's vector-Jacobian product, for the reverse pass.

    d x_prev = D * d x_t + (unclamped * B) * d eps, with D = A where unclamped and
    A_clamped where clamped.  So with gbar = dL/dx_prev:
        dL/dx_t = D * gbar + vjp_eps(x_t, unclamped * B * gbar)
    The surrogate gradient (BIRD's fast inversion) drops the second term.
    Returns ``(D, E)`` with E = unclamped * B, both broadcastable like ``unclamped``.
    """
    m = unclamped * 1.0
    D = m * c.A + (1.0 - m) * c.A_clamped
    E = m * c.B
    return D, E


def mse_loss(x0: Any, y: Any) -> Any:
    """Per-image mean squared error [B].  Each image of a batch gets its own loss;
    summing them keeps the images' gradients independent."""
    diff = x0 - y
    return (diff * diff).reshape(diff.shape[0], -1).mean(1)


def mse_loss_grad(x0: np.ndarray, y: np.ndarray) -> tuple:
    """(per-image MSE [B], d(sum of losses)/d x0) for numpy arrays."""
    diff = x0 - y
    n = diff[0].size
    return mse_loss(x0, y), diff * (2.0 / n)


def forward_noised(y: Any, noise: Any, a_t: float, strength: float = 1.0) -> Any:
    """DDPM's forward process q(x_t | x_0 = strength * y): sqrt(a_t) * strength * y +
    sqrt(1 - a_t) * noise.  At strength 1, x_t is what the UNet was trained to see at t
    for an image y; the chain's start ``--init noised`` (issue 26)."""
    return float(np.sqrt(a_t)) * strength * y + float(np.sqrt(1.0 - a_t)) * noise


def sphere_radius(shape: Sequence[int]) -> float:
    """BIRD projects z onto the sphere of radius sqrt(C*H*W) (per image)."""
    return float(np.sqrt(np.prod(shape)))
