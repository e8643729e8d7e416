"""The joint loop: the tiles of one region step in lockstep and share one stop.

One stopper decides for all, on the summed loss and on the Laplacian variance of the
assembled (blended) reconstruction, so a region stops where its picture stops
improving, not where its noisiest tile does.  Each sample keeps its own seed and
optimiser, so the result depends neither on the batch size nor on the order samples
run in; memory holds every sample's z and moments, and two assembled reconstructions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from ...settings import RestoreSettings
from .loop import Callback, check_run
from .samples import (
    LossAndGrad,
    Sample,
    Samples,
    Seed,
    StepInfo,
    device_call,
    device_runner,
    evaluate,
    load_batch,
    start_alpha,
    step_evaluated,
)
from .stopping import StopDecision, Stopper, laplacian_variance

# Judges a region's blended reconstruction early (``guard_at``): True returns the input.
GiveUp = Callable[[np.ndarray], bool]


def balanced_chunks(items: Sequence, batch: int) -> List[Sequence]:
    """``items`` in as few calls of at most ``batch`` as possible, of near-equal sizes
    (9 tiles at batch 8: 5 + 4, not 8 + 1, whose lone tile costs a third of a full call)."""
    calls = -(-len(items) // batch)
    bounds = [round(i * len(items) / calls) for i in range(calls + 1)]
    return [items[lo:hi] for lo, hi in zip(bounds, bounds[1:])]


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


class _Stacked:
    """One iteration's per-sample x0, stacked only when a listener asks."""

    def __init__(self, parts: List[np.ndarray]):
        self.parts = parts

    def host(self) -> np.ndarray:
        return np.stack(self.parts)


def restore_joint(
    chain: LossAndGrad,
    ys: Samples,
    settings: RestoreSettings,
    assembler: Assembler,
    seeds: Optional[Sequence[Seed]] = None,
    batch: Optional[int] = None,
    callback: Callback = None,
    give_up: Optional[GiveUp] = None,
) -> JointResult:
    """All samples (the tiles of one image or region) in lockstep, at most ``batch`` per
    graph call, under one stop; returns the assembled reconstruction the stop chose.
    ``give_up``, asked once at iteration ``settings.guard_at``, ends a run that the guard
    will revert anyway (stop reason "guard")."""
    n = len(ys)
    seeds, batch = check_run(n, settings, seeds, batch)
    a_start = start_alpha(chain, settings)
    samples = [Sample(i, ys[i], seeds[i], settings, a_start) for i in range(n)]
    chunks = balanced_chunks(samples, batch)
    device = device_runner(chain, settings)
    on_device = [load_batch(device, part, ys, settings.lr) for part in chunks] if device is not None else []
    stopper = Stopper(settings)
    recent: Dict[int, Tuple[np.ndarray, List[np.ndarray]]] = {}
    t0 = time.perf_counter()
    decision = None
    for k in range(settings.max_iters):
        assembler.start()
        losses_k: List[float] = []
        parts: List[np.ndarray] = []
        for c, part in enumerate(chunks):
            if device is not None:  # the assembled image's Laplacian needs every x0 on the host
                rows, losses, _ = device_call(on_device[c], [k] * len(part))
                x0s = rows.host()
            else:
                x0s, losses, grads, eps = evaluate(chain, part, ys, [k] * len(part), settings)
            for j, s in enumerate(part):
                assembler.add(s.index, x0s[j])
                parts.append(x0s[j].copy())
                losses_k.append(float(losses[j]))
            if device is None and k + 1 < settings.max_iters:
                step_evaluated(chain, part, range(len(part)), ys, grads, eps, settings)
        image = assembler.result()
        lap = float(laplacian_variance(image[None])[0])
        decision = stopper.update(float(np.sum(losses_k)), lap)
        if decision is None and give_up is not None and k + 1 == settings.guard_at and give_up(image):
            decision = StopDecision(iteration=k, reason="guard", detected_at=k)
        recent = {k: (image, parts), **({k - 1: recent[k - 1]} if k - 1 in recent else {})}
        if callback is not None:
            last = decision is not None or k + 1 == settings.max_iters
            callback(
                StepInfo(
                    _Stacked(parts),
                    index=range(n),
                    k=[k] * n,
                    loss=losses_k,
                    slope=[stopper.slopes[-1]] * n,
                    laplacian_var=[lap] * n,
                    done=n if last else 0,
                    total=n,
                    image=image[None],
                )
            )
        if decision is not None:
            break
    stop_k, reason = (decision.iteration, decision.reason) if decision else (settings.max_iters - 1, "max_iters")
    return JointResult(
        x0=recent[stop_k][0],
        parts=recent[stop_k][1],
        stop_iteration=stop_k,
        stop_reason=reason,
        iterations_run=len(stopper.losses),
        seconds=time.perf_counter() - t0,
        history=stopper.history(),
    )
