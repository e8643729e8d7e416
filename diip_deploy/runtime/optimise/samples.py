"""What both DIIP loops share: one sample's state, a batched graph call, the step dict.

A sample (an image or a tile) carries its own seed, z, optimiser moments and online
stopper, so its result is the one it would get alone, whatever else shares its batch.
Its state lives on the host (numpy) or, with an iteration graph, in a ``DeviceBatch``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from ...schedule import forward_noised
from ...settings import RestoreSettings
from .chain import loss_and_grad_with_eps
from .device_loop import DeviceBatch
from .optim import ADAM_BETAS, make_optimizer, project_to_sphere, scheduled_lr
from .stopping import Stopper


class NonFiniteError(Exception):
    """The loss or the gradient stopped being finite; one line says when."""


class LossAndGrad(Protocol):
    def loss_and_grad(self, z: np.ndarray, y: np.ndarray) -> tuple: ...


Seed = Union[int, Tuple[int, ...]]


class SampleSource(Protocol):
    """Samples cut on demand (e.g. tiles of one image)."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> np.ndarray: ...


Samples = Union[np.ndarray, Sequence[np.ndarray], SampleSource]


@dataclass
class RestoreResult:
    x0: np.ndarray  # [C, H, W] in [-1, 1], from iteration stop_iteration
    stop_iteration: int
    stop_reason: str
    iterations_run: int
    seconds: float  # from the sample's first graph call to its last
    history: Dict[str, list] = field(default_factory=dict)


def initial_latent(
    shape, seed: Seed, project: bool = True, noised: Optional[Tuple[np.ndarray, float, float]] = None
) -> np.ndarray:
    """Seeded Gaussian z of ``shape`` ([C, H, W] or [1, C, H, W]); a tuple seed (image seed,
    tile row, tile column) gives each tile its own independent stream.  ``noised`` (y,
    a_T, strength): that same noise added to y by the forward process (``--init noised``)."""
    z = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    if noised is not None:
        y, a_t, strength = noised
        z = forward_noised(np.asarray(y, dtype=np.float32).reshape(shape), z, a_t, strength).astype(np.float32)
    if not project:
        return z
    return project_to_sphere(z[None])[0] if len(shape) == 3 else project_to_sphere(z)


class Sample:
    """One sample's state in the batch: z, optimiser moments, stopper, recent x0."""

    def __init__(self, index: int, y: np.ndarray, seed: Seed, settings: RestoreSettings, a_start: float):
        """``a_start``: a_T, alphas_cumprod at the chain's first timestep (``start_alpha``)."""
        self.index = index  # y itself is not kept: the loop cuts it from the source per call
        if not np.all(np.isfinite(y)):
            raise NonFiniteError(f"sample {index}: input holds NaN or infinite values")
        noised = (y, a_start, settings.init_strength) if settings.init == "noised" else None
        self.z = initial_latent(y.shape, seed, settings.project, noised)[None]
        self.opt = make_optimizer(settings.optimizer, settings.lr, (settings.adam_beta1, settings.adam_beta2))
        self.rate = (settings.lr, settings.lr_final, settings.max_iters)
        self.evaluations = 0  # of the chain for this sample; its own count, also under a joint stop
        self.stopper = Stopper(settings)
        self.recent: Dict[int, Tuple[Any, int]] = {}  # iteration -> (that iteration's x0 rows, row)
        self.result: Optional[RestoreResult] = None
        self.t0 = time.perf_counter()

    def step(self, grad: np.ndarray, project: bool) -> None:
        lr, lr_final, cap = self.rate
        self.opt.lr = scheduled_lr(lr, lr_final, self.evaluations - 1, cap)  # the steps of the latest evaluation
        z = self.opt.step(self.z, grad)
        self.z = project_to_sphere(z) if project else z

    @property
    def k(self) -> int:
        return len(self.stopper.losses)


def start_alpha(chain: Any, settings: RestoreSettings) -> float:
    """a_T of the chain's first step, where ``--init noised`` starts (unused, 1.0, by the
    noise start, so a chain without a ``spec`` still runs the paper's start)."""
    if settings.init != "noised":
        return 1.0
    spec = getattr(chain, "spec", None)
    if spec is None:
        raise ValueError("--init noised needs the chain's timesteps (a chain with a spec)")
    return float(spec.alphas[0])


def check_finite(losses: np.ndarray, grad_finite: Sequence[bool], iterations: Sequence[int]) -> None:
    for j, k in enumerate(iterations):
        loss = float(losses[j])
        if not np.isfinite(loss) or not grad_finite[j]:
            raise NonFiniteError(f"loss or gradient became non-finite at iteration {k} (loss {loss}); try a lower --lr")


def targets(ys: Samples, part: Sequence[Sample]) -> np.ndarray:
    """The damaged inputs of ``part``, stacked as one batch (cut from the source per call)."""
    return np.stack([ys[s.index] for s in part]).astype(np.float32, copy=False)


def evaluate(chain: Any, part: Sequence[Sample], ys: Samples, iterations: Sequence[int], settings: RestoreSettings):
    """One batched evaluation of the chain for some samples: (x0s, losses, grads, each
    step's eps where the run takes more than one step per evaluation, else None).  A
    non-finite loss or gradient is an error that names the iteration."""
    z = np.concatenate([s.z for s in part])
    y = targets(ys, part)
    if settings.steps_per_eval == 1:
        (x0s, losses, grads), eps = chain.loss_and_grad(z, y), None
    else:
        x0s, losses, grads, eps = chain.loss_grad_and_eps(z, y)
    check_finite(losses, [bool(np.all(np.isfinite(g))) for g in grads], iterations)
    return x0s, losses, grads, eps


def step_evaluated(
    chain: Any,
    part: Sequence[Sample],
    rows: Sequence[int],
    ys: Samples,
    grads: np.ndarray,
    eps: Optional[List[np.ndarray]],
    settings: RestoreSettings,
) -> None:
    """The Adam steps of one evaluation for the samples of ``part`` (their ``rows`` in it):
    the first on its gradient, then ``steps_per_eval - 1`` more on the chain run again
    with that evaluation's eps (numpy, no graph call)."""
    for j in rows:
        part[j].evaluations += 1
        part[j].step(grads[j : j + 1], settings.project)
    if eps is None or not rows:
        return
    stepping = [part[j] for j in rows]
    kept = [e[list(rows)] for e in eps]
    y = targets(ys, stepping)
    for extra in range(1, settings.steps_per_eval):
        z = np.concatenate([s.z for s in stepping])
        _, losses, more = loss_and_grad_with_eps(chain.spec, kept, z, y, chain.straight)
        if not (np.all(np.isfinite(losses)) and np.all(np.isfinite(more))):
            raise NonFiniteError(
                f"loss or gradient became non-finite on reused eps (step {extra + 1}); try a lower --lr"
            )
        for j, s in enumerate(stepping):
            s.step(more[j : j + 1], settings.project)


def load_batch(runner: Any, part: Sequence[Sample], ys: Samples, lr: float) -> DeviceBatch:
    """The samples' z, moments and y copied into a DeviceBatch."""
    z = np.concatenate([s.z for s in part])
    m = np.concatenate([s.opt.m if s.opt.m is not None else np.zeros_like(s.z) for s in part])
    v = np.concatenate([s.opt.v if s.opt.v is not None else np.zeros_like(s.z) for s in part])
    y = targets(ys, part)
    return DeviceBatch(runner, z, m, v, y, np.array([s.opt.step_count for s in part]), lr)


def unload_batch(batch: DeviceBatch, part: Sequence[Sample]) -> None:
    """Each sample's z and moments back from the device, as its own host state."""
    z, m, v = batch.state_host()
    for j, s in enumerate(part):
        s.z, s.opt.m, s.opt.v = z[j : j + 1], m[j : j + 1], v[j : j + 1]
        s.opt.step_count = int(batch.steps[j])


def device_call(batch: DeviceBatch, iterations: Sequence[int]) -> tuple:
    losses, laps, grad_sq, rows = batch.run()
    check_finite(losses, [bool(np.isfinite(g)) for g in grad_sq], iterations)
    return rows, losses, laps


def _floats(values: Sequence[Optional[float]]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


class StepInfo(dict):
    """The callback's dict, with the same keys in every loop (k-diffusion style).

    Per sample of the step, as arrays: ``index``, ``k`` (its iteration), ``loss`` (its own
    MSE), ``slope`` and ``laplacian_var`` (what the stop that governs it saw: its own in
    ``restore_iter``, its region's in ``restore_joint``; NaN before the slope is
    defined), and ``x0`` [B, C, H, W], brought off the device only when a listener reads
    it; then ``done`` and ``total`` samples.  ``restore_joint`` adds ``image``, the
    blended reconstruction [1, C, H, W]."""

    def __init__(
        self,
        rows: Any,
        index: Sequence[int],
        k: Sequence[int],
        loss: Sequence[float],
        slope: Sequence[Optional[float]],
        laplacian_var: Sequence[float],
        done: int,
        total: int,
        **extra: Any,
    ):
        super().__init__(
            index=np.asarray(index, dtype=np.int64),
            k=np.asarray(k, dtype=np.int64),
            loss=_floats(loss),
            slope=_floats(slope),
            laplacian_var=_floats(laplacian_var),
            done=done,
            total=total,
            **extra,
        )
        self._rows = rows

    def __missing__(self, key: str) -> Any:
        if key != "x0":
            raise KeyError(key)
        self["x0"] = x0 = self._rows.host()
        return x0


def iteration_graph_fits(settings: RestoreSettings) -> bool:
    """Whether an iteration graph computes this run's update: one Adam step (with the
    projection) per evaluation, at the betas traced into it (torch's defaults), at one rate.
    (Which clamp gradient a graph holds is the manifest's to say: ``device_loop_graph``.)"""
    betas = (settings.adam_beta1, settings.adam_beta2)
    return (
        settings.optimizer == "adam"
        and settings.project
        and betas == ADAM_BETAS
        and settings.steps_per_eval == 1
        and settings.lr_final == 1.0
    )


def device_runner(chain: Any, settings: RestoreSettings) -> Any:
    """The chain's iteration graph where this run can keep its state on the device, else
    None: the host loop."""
    runner = getattr(chain, "iterate", None)
    return runner if runner is not None and iteration_graph_fits(settings) else None
