"""The DIIP loop: optimise z so that g(z) fits y, and stop before it fits the damage.

Batch-native and plain, k-diffusion style: samples (images or tiles) run together in
graph calls of up to ``batch``, each with its own noise seed, optimiser moments,
histories and online stopper, so a sample's result is the one it would get alone.  A
finished sample leaves the batch and the next waiting one takes its place, so a batch
stays full until the work runs out.  Per iteration ``callback`` gets a ``StepInfo``;
progress bars, previews and the benchmark's oracle hang on that.  The reconstruction
returned is the one of the iteration the stopping criterion chose, not the last one
computed.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ...settings import RestoreSettings
from .device_loop import DeviceBatch, HostRows
from .samples import (
    LossAndGrad,
    RestoreResult,
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
    unload_batch,
)
from .stopping import laplacian_variance

Callback = Optional[Callable[[Dict[str, Any]], None]]


def check_run(
    n: int, settings: RestoreSettings, seeds: Optional[Sequence[Seed]], batch: Optional[int]
) -> Tuple[List[Seed], int]:
    """(one seed per sample, the batch size) for a run of ``n`` samples."""
    batch = n if not batch else batch
    if batch < 1:
        raise ValueError("batch must be >= 1")
    seeds = [settings.seed] * n if seeds is None else list(seeds)
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} samples")
    return seeds, batch


def restore_iter(
    chain: LossAndGrad,
    ys: Samples,
    settings: RestoreSettings,
    seeds: Optional[Sequence[Seed]] = None,
    batch: Optional[int] = None,
    callback: Callback = None,
) -> Iterator[Tuple[int, RestoreResult]]:
    """Run DIIP on every sample of ``ys`` (each [C, H, W] in [-1, 1], all one shape; an
    array [N, C, H, W] or any sequence that cuts them lazily), yielding (index, result) as
    samples finish.  ``seeds[i]`` seeds sample i's z (default: settings.seed for all)."""
    n = len(ys)
    seeds, batch = check_run(n, settings, seeds, batch)
    device = device_runner(chain, settings)
    a_start = start_alpha(chain, settings)
    waiting = iter(range(n))
    active: List[Sample] = []
    on_device: Optional[DeviceBatch] = None  # the active samples' state, while they stay the same set
    done = 0
    while True:
        while len(active) < batch:
            i = next(waiting, None)
            if i is None:
                break
            active.append(Sample(i, ys[i], seeds[i], settings, a_start))
            on_device = None
        if not active:
            return
        ks = [s.k for s in active]
        if device is not None:
            if on_device is None:
                on_device = load_batch(device, active, ys, settings.lr)
            rows, losses, laps = device_call(on_device, ks)
        else:
            x0s, losses, grads, eps = evaluate(chain, active, ys, ks, settings)
            laps = laplacian_variance(x0s)
            rows = HostRows(x0s)
        finished: List[Sample] = []
        stepping: List[int] = []
        for j, s in enumerate(active):
            k = s.k
            decision = s.stopper.update(float(losses[j]), float(laps[j]))
            s.recent = {k: (rows, j), **({k - 1: s.recent[k - 1]} if k - 1 in s.recent else {})}
            if decision is not None or k + 1 >= settings.max_iters:
                finished.append(s)
                stop_k, reason = (decision.iteration, decision.reason) if decision else (k, "max_iters")
                kept, row = s.recent[stop_k]
                s.result = RestoreResult(
                    x0=kept.host()[row].copy(),
                    stop_iteration=stop_k,
                    stop_reason=reason,
                    iterations_run=k + 1,
                    seconds=time.perf_counter() - s.t0,
                    history=s.stopper.history(),
                )
            elif device is None:
                stepping.append(j)
        if device is None:
            step_evaluated(chain, active, stepping, ys, grads, eps, settings)
        if on_device is not None and finished:  # the set changes: the others' state comes home
            unload_batch(on_device, active)
            on_device = None
        done += len(finished)
        if callback is not None:
            callback(
                StepInfo(
                    rows,
                    index=[s.index for s in active],
                    k=ks,
                    loss=losses,
                    slope=[s.stopper.slopes[-1] for s in active],
                    laplacian_var=laps,
                    done=done,
                    total=n,
                )
            )
        for s in finished:
            active.remove(s)
            assert s.result is not None
            yield s.index, s.result


def restore(
    chain: LossAndGrad,
    y: np.ndarray,
    settings: RestoreSettings,
    seeds: Optional[Sequence[Seed]] = None,
    batch: Optional[int] = None,
    callback: Callback = None,
) -> List[RestoreResult]:
    """Run DIIP on y [B, C, H, W] in [-1, 1]; one result per sample, in order."""
    if y.ndim != 4:
        raise ValueError(f"restore takes images [B, C, H, W], got shape {y.shape}")
    results: List[Optional[RestoreResult]] = [None] * len(y)
    for i, r in restore_iter(chain, y, settings, seeds, batch, callback):
        results[i] = r
    return results  # type: ignore[return-value]
