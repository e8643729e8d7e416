"""The DIIP loop: optimise z so that g(z) fits y, and stop before it fits the damage.

Batch-native and plain, k-diffusion style: samples (images or tiles) run together in
graph calls of up to ``batch``, each with its own noise seed, optimiser moments,
histories and online stopper, so a sample's result is the one it would get alone.  A
finished sample leaves the batch and the next waiting one takes its place, so a batch
stays full until the work runs out.  Per iteration ``callback`` gets a small dict
(k, x0, loss, slope, laplacian_var per sample, and the counts done / total); progress
bars, previews and the benchmark's oracle hang on that.  The reconstruction returned
is the one of the iteration the stopping criterion chose, not the last one computed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from .device_loop import DeviceBatch, HostRows
from .optim import make_optimizer, project_to_sphere
from .stopping import Stopper, laplacian_variance


class NonFiniteError(Exception):
    """The loss or the gradient stopped being finite; one line says when."""


class LossAndGrad(Protocol):
    def loss_and_grad(self, z: np.ndarray, y: np.ndarray) -> tuple: ...


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
    slope_min_iter: int = 0
    patience: int = 1
    slope_fit: str = "mean"
    lap_window: int = 1
    restarts: int = 1  # runs from different seeds, averaged (Restorer)
    residual_guard: float = 1.0  # return the input where the residual's correlation exceeds this (1: off)
    precision: str = "fp32"  # which of the export's graphs run: fp32, or its verified fp16 copies
    loop: str = "auto"  # where z and Adam's moments live: device (iteration graph), host (numpy), auto

    @classmethod
    def from_defaults(cls, defaults: Dict[str, Any], **overrides: Any) -> "RestoreConfig":
        """A manifest's defaults, with every override that is not None taking precedence."""
        d = {**defaults, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(lr=float(d["lr"]), optimizer=str(d["optimizer"]), gradient=str(d["gradient"]),
                   max_iters=int(d["max_iters"]), stop=str(d["stop"]), eps=float(d["eps"]),
                   slope_window=int(d["slope_window"]), k_min=int(d["k_min"]), seed=int(d.get("seed", 0)),
                   slope_min_iter=int(d.get("slope_min_iter", 0)), patience=int(d.get("patience", 1)),
                   slope_fit=str(d.get("slope_fit", "mean")), lap_window=int(d.get("lap_window", 1)),
                   restarts=int(d.get("restarts", 1)), precision=str(d.get("precision", "fp32")),
                   loop=str(d.get("loop", "auto")),
                   residual_guard=float(d.get("residual_guard", 1.0)))

    def stopper(self) -> Stopper:
        return Stopper(**self.stop_settings())

    def stop_settings(self) -> Dict[str, Any]:
        """The criteria's settings, as ``decide`` takes them after the history."""
        return {"mode": self.stop, "eps": self.eps, "window": self.slope_window, "k_min": self.k_min,
                "slope_min_iter": self.slope_min_iter, "patience": self.patience, "slope_fit": self.slope_fit,
                "lap_window": self.lap_window}


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


def initial_latent(shape, seed: Seed, project: bool = True) -> np.ndarray:
    """Seeded Gaussian z of ``shape`` ([C, H, W] or [1, C, H, W]); a tuple seed (image seed,
    tile row, tile column) gives each tile its own independent stream."""
    z = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    if not project:
        return z
    return project_to_sphere(z[None])[0] if len(shape) == 3 else project_to_sphere(z)


class _Sample:
    """One sample's state in the batch: z, optimiser moments, stopper, last two x0."""

    def __init__(self, index: int, y: np.ndarray, seed: Seed, cfg: RestoreConfig):
        self.index = index  # y itself is not kept: the loop cuts it from the source per call
        if not np.all(np.isfinite(y)):
            raise NonFiniteError(f"sample {index}: input holds NaN or infinite values")
        self.z = initial_latent(y.shape, seed, cfg.project)[None]
        self.opt = make_optimizer(cfg.optimizer, cfg.lr)
        self.stopper = cfg.stopper()
        self.recent: Dict[int, Tuple[Any, int]] = {}  # iteration -> (that iteration's x0 rows, row)
        self.result: Optional[RestoreResult] = None
        self.t0 = time.perf_counter()

    def step(self, grad: np.ndarray, project: bool) -> None:
        z = self.opt.step(self.z, grad)
        self.z = project_to_sphere(z) if project else z

    @property
    def k(self) -> int:
        return len(self.stopper.losses)


def _check_finite(losses: np.ndarray, grad_finite: Sequence[bool], iterations: Sequence[int]) -> None:
    for j, k in enumerate(iterations):
        loss = float(losses[j])
        if not np.isfinite(loss) or not grad_finite[j]:
            raise NonFiniteError(f"loss or gradient became non-finite at iteration {k} (loss {loss}); try a lower --lr")


def _graph_call(chain: LossAndGrad, part: Sequence[_Sample], ys: Samples, iterations: Sequence[int]) -> tuple:
    """One batched loss-and-gradient call over some samples; a non-finite loss or gradient
    is an error that names the iteration."""
    x0s, losses, grads = chain.loss_and_grad(np.concatenate([s.z for s in part]),
                                             np.stack([ys[s.index] for s in part]).astype(np.float32, copy=False))
    _check_finite(losses, [bool(np.all(np.isfinite(g))) for g in grads], iterations)
    return x0s, losses, grads


def iteration_graph_fits(cfg: RestoreConfig) -> bool:
    """Whether an iteration graph computes this run's update: Adam with the projection."""
    return cfg.optimizer == "adam" and cfg.project


def device_loop_runner(chain: Any, cfg: RestoreConfig) -> Any:
    """The chain's iteration graph where this run can keep its state on the device, else
    None: the host loop."""
    runner = getattr(chain, "iterate", None)
    return runner if runner is not None and iteration_graph_fits(cfg) else None


def _load(runner: Any, part: Sequence[_Sample], ys: Samples, cfg: RestoreConfig) -> DeviceBatch:
    """The samples' z, moments and y copied into a DeviceBatch."""
    z = np.concatenate([s.z for s in part])
    m = np.concatenate([s.opt.m if s.opt.m is not None else np.zeros_like(s.z) for s in part])
    v = np.concatenate([s.opt.v if s.opt.v is not None else np.zeros_like(s.z) for s in part])
    y = np.stack([ys[s.index] for s in part]).astype(np.float32, copy=False)
    return DeviceBatch(runner, z, m, v, y, np.array([s.opt.step_count for s in part]), cfg.lr)


def _unload(batch: DeviceBatch, part: Sequence[_Sample]) -> None:
    """Each sample's z and moments back from the device, as its own host state."""
    z, m, v = batch.state_host()
    for j, s in enumerate(part):
        s.z, s.opt.m, s.opt.v = z[j:j + 1], m[j:j + 1], v[j:j + 1]
        s.opt.step_count = int(batch.steps[j])


def _device_call(batch: DeviceBatch, iterations: Sequence[int]) -> tuple:
    losses, laps, grad_sq, rows = batch.run()
    _check_finite(losses, [bool(np.isfinite(g)) for g in grad_sq], iterations)
    return rows, losses, laps


class StepInfo(dict):
    """The callback's dict; its ``x0`` comes off the device only when a listener reads it."""

    def __init__(self, rows: Any, **fields: Any):
        super().__init__(**fields)
        self._rows = rows

    def __missing__(self, key: str) -> Any:
        if key != "x0":
            raise KeyError(key)
        self["x0"] = x0 = self._rows.host()
        return x0


def restore_iter(chain: LossAndGrad, ys: Samples, cfg: RestoreConfig, seeds: Optional[Sequence[Seed]] = None,
                 batch: Optional[int] = None, callback: Optional[Callable[[Dict[str, Any]], None]] = None
                 ) -> Iterator[Tuple[int, RestoreResult]]:
    """Run DIIP on every sample of ``ys`` (each [C, H, W] in [-1, 1], all one shape; an
    array [N, C, H, W] or any sequence that cuts them lazily), yielding (index, result) as
    samples finish.  ``seeds[i]`` seeds sample i's z (default: cfg.seed for all)."""
    n = len(ys)
    if cfg.max_iters < 1:
        raise ValueError("max_iters must be >= 1")
    batch = n if not batch else batch
    if batch < 1:
        raise ValueError("batch must be >= 1")
    seeds = [cfg.seed] * n if seeds is None else list(seeds)
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} samples")
    device = device_loop_runner(chain, cfg)
    waiting = iter(range(n))
    active: List[_Sample] = []
    on_device: Optional[DeviceBatch] = None  # the active samples' state, while they stay the same set
    done = 0
    while True:
        while len(active) < batch:
            i = next(waiting, None)
            if i is None:
                break
            active.append(_Sample(i, ys[i], seeds[i], cfg))
            on_device = None
        if not active:
            return
        ks = [s.k for s in active]
        if device is not None:
            if on_device is None:
                on_device = _load(device, active, ys, cfg)
            rows, losses, laps = _device_call(on_device, ks)
        else:
            x0s, losses, grads = _graph_call(chain, active, ys, ks)
            laps = laplacian_variance(x0s)
            rows = HostRows(x0s)
        finished: List[_Sample] = []
        for j, s in enumerate(active):
            k = s.k
            decision = s.stopper.update(float(losses[j]), float(laps[j]))
            s.recent = {k: (rows, j), **({k - 1: s.recent[k - 1]} if k - 1 in s.recent else {})}
            if decision is not None or k + 1 >= cfg.max_iters:
                finished.append(s)
                stop_k, reason = (decision.iteration, decision.reason) if decision else (k, "max_iters")
                kept, row = s.recent[stop_k]
                s.result = RestoreResult(
                    x0=kept.host()[row].copy(), stop_iteration=stop_k, stop_reason=reason, iterations_run=k + 1,
                    seconds=time.perf_counter() - s.t0,
                    history={"loss": s.stopper.losses, "slope": s.stopper.slopes, "laplacian_var": s.stopper.laplacian_vars})
            elif device is None:
                s.step(grads[j:j + 1], cfg.project)
        if on_device is not None and finished:  # the set changes: the others' state comes home
            _unload(on_device, active)
            on_device = None
        done += len(finished)
        if callback is not None:
            callback(StepInfo(rows, index=[s.index for s in active], k=[s.k - 1 for s in active],
                              loss=[float(v) for v in losses], slope=[s.stopper.slopes[-1] for s in active],
                              laplacian_var=[float(v) for v in laps], done=done, total=n))
        for s in finished:
            active.remove(s)
            assert s.result is not None
            yield s.index, s.result


def restore(chain: LossAndGrad, y: np.ndarray, cfg: RestoreConfig, seeds: Optional[Sequence[Seed]] = None,
            batch: Optional[int] = None, callback: Optional[Callable[[Dict[str, Any]], None]] = None) -> List[RestoreResult]:
    """Run DIIP on y [B, C, H, W] in [-1, 1]; one result per sample, in order."""
    if y.ndim != 4:
        raise ValueError(f"restore takes images [B, C, H, W], got shape {y.shape}")
    results: List[Optional[RestoreResult]] = [None] * len(y)
    for i, r in restore_iter(chain, y, cfg, seeds, batch, callback):
        results[i] = r
    return results  # type: ignore[return-value]


class Assembler(Protocol):
    """Puts per-sample reconstructions of one iteration together (e.g. blends tiles)."""

    def start(self) -> None: ...

    def add(self, index: int, x0: np.ndarray) -> None: ...

    def result(self) -> np.ndarray: ...


@dataclass
class JointResult:
    x0: np.ndarray  # the assembled reconstruction of iteration stop_iteration
    parts: List[np.ndarray]  # each sample's x0 at that iteration
    stop_iteration: int
    stop_reason: str
    iterations_run: int
    seconds: float
    history: Dict[str, list] = field(default_factory=dict)


def restore_joint(chain: LossAndGrad, ys: Samples, cfg: RestoreConfig, assembler: Assembler,
                  seeds: Optional[Sequence[Seed]] = None, batch: Optional[int] = None,
                  callback: Optional[Callable[[Dict[str, Any]], None]] = None) -> JointResult:
    """All samples (the tiles of one image) step in lockstep, ``batch`` per graph call, and
    one stopper decides for all: on the summed loss and on the Laplacian variance of the
    assembled reconstruction.  Each sample keeps its own seed and optimiser, so the result
    depends neither on the batch size nor on the order samples run in; memory holds every
    sample's z and moments, and two assembled reconstructions."""
    n = len(ys)
    batch = n if not batch else batch
    if cfg.max_iters < 1 or batch < 1:
        raise ValueError("max_iters and batch must be >= 1")
    seeds = [cfg.seed] * n if seeds is None else list(seeds)
    samples = [_Sample(i, ys[i], seeds[i], cfg) for i in range(n)]
    chunks = [samples[lo:lo + batch] for lo in range(0, n, batch)]
    device = device_loop_runner(chain, cfg)
    on_device = [_load(device, part, ys, cfg) for part in chunks] if device is not None else []
    stopper = cfg.stopper()
    recent: Dict[int, Tuple[np.ndarray, List[np.ndarray]]] = {}
    t0 = time.perf_counter()
    decision = None
    for k in range(cfg.max_iters):
        assembler.start()
        losses_k: List[float] = []
        parts: List[np.ndarray] = []
        for c, part in enumerate(chunks):
            if device is not None:  # the assembled image's Laplacian needs every x0 on the host
                rows, losses, _ = _device_call(on_device[c], [k] * len(part))
                x0s = rows.host()
            else:
                x0s, losses, grads = _graph_call(chain, part, ys, [k] * len(part))
            for j, s in enumerate(part):
                assembler.add(s.index, x0s[j])
                parts.append(x0s[j].copy())
                losses_k.append(float(losses[j]))
                if device is None and k + 1 < cfg.max_iters:
                    s.step(grads[j:j + 1], cfg.project)
        total = float(np.sum(losses_k))
        image = assembler.result()
        lap = float(laplacian_variance(image[None])[0])
        decision = stopper.update(total, lap)
        recent = {k: (image, parts), **({k - 1: recent[k - 1]} if k - 1 in recent else {})}
        if callback is not None:
            callback({"index": list(range(n)), "k": [k] * n, "x0": image[None], "loss": [total], "slope": [stopper.slopes[-1]],
                      "laplacian_var": [lap], "done": n if decision is not None or k + 1 == cfg.max_iters else 0,
                      "total": n})
        if decision is not None:
            break
    stop_k, reason = (decision.iteration, decision.reason) if decision else (cfg.max_iters - 1, "max_iters")
    return JointResult(x0=recent[stop_k][0], parts=recent[stop_k][1], stop_iteration=stop_k, stop_reason=reason, iterations_run=len(stopper.losses),
                       seconds=time.perf_counter() - t0,
                       history={"loss": stopper.losses, "slope": stopper.slopes, "laplacian_var": stopper.laplacian_vars})
