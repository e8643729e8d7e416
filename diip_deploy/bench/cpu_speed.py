"""Where a CPU's time goes in DIIP, measured side by side in one run (issue 18).

Three levels, each comparing the CPU variants in the same process, one after the other:
one UNet call (FLOPs counted from the graph, achieved GFLOP/s against this machine's own
sgemm peak), one tile-iteration of the real joint loop (UNet time against host time:
the numpy DDIM step, Adam, blending and the Laplacian), and whole photos restored with
two sets of defaults (time, PSNR, stop, and how good the progress bar's ETA was).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..runtime.backends.base import Runner

# Every CPU variant the runtime has: (backend, precision).
CPU_VARIANTS = {
    "ort-fp32": ("ort-cpu", "fp32"),
    "openvino-fp32": ("openvino", "fp32"),
    "openvino-bf16": ("openvino", "bf16"),
}


def count_flops(path: str, feed: Dict[str, np.ndarray]) -> int:
    """Multiply-adds x 2 of every Conv, MatMul and Gemm of an ONNX graph at ``feed``'s
    shapes; the shapes are read off one ONNX Runtime run with those tensors exposed, so
    attention's activation-by-activation products count too."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(path)
    g = model.graph
    shapes: Dict[str, Tuple[int, ...]] = {i.name: tuple(i.dims) for i in g.initializer}
    heavy = [n for n in g.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    want = {n.output[0] for n in heavy} | {n.input[0] for n in heavy} | {n.input[1] for n in heavy}
    for name in sorted(want - set(shapes) - set(feed) - {o.name for o in g.output}):
        g.output.append(helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    shapes.update(zip(names, (np.shape(v) for v in session.run(None, feed))))
    shapes.update({k: v.shape for k, v in feed.items()})
    total = 0
    for n in heavy:
        out = shapes[n.output[0]]
        if n.op_type == "Conv":
            total += 2 * int(np.prod(out)) * int(np.prod(shapes[n.input[1]][1:]))
        else:
            a = shapes[n.input[0]]
            trans_a = any(at.name == "transA" and at.i for at in n.attribute)
            total += 2 * int(np.prod(out)) * int(a[0] if trans_a else a[-1])
    return total


def sgemm_gflops(n: int = 2048, rounds: int = 3) -> float:
    """This machine's fp32 matrix-product peak as numpy's BLAS reaches it, in GFLOP/s."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(rounds))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def unet_rows(
    manifest: Any, variants: Sequence[str], threads: int, batch: int, rounds: int, peak: float
) -> Dict[str, Dict[str, Any]]:
    """One UNet call of ``batch`` tiles per variant: ms, GFLOP/s, share of the sgemm peak,
    speed against ort-fp32 and the relative error of its output against ort-fp32's; the
    variants take turns, round after round."""
    from ..runtime.backends.cpu_variants import unet_feed
    from ..runtime.backends.select import make_runner

    feed = unet_feed(manifest, batch)
    gflop = count_flops(str(manifest.graph_path("unet")), feed) / 1e9
    runners = {v: make_runner(manifest, _bp(v)[0], "unet", threads, precision=_bp(v)[1]) for v in variants}
    outs: Dict[str, np.ndarray] = {}
    times: Dict[str, List[float]] = {v: [] for v in variants}
    for v, r in runners.items():
        outs[v] = r.activate().infer(feed)["eps"]
    for _ in range(rounds):
        for v, r in runners.items():
            times[v].append(_timed(functools.partial(r.infer, feed)))
    ref = outs[variants[0]]
    rows = {}
    for v, r in runners.items():
        s = float(np.median(times[v]))
        rows[v] = {
            "ms": round(s * 1000, 1),
            "gflop": round(gflop, 2),
            "gflops": round(gflop / s, 1),
            "of_sgemm_peak": round(gflop / s / peak, 3),
            "speed_vs_first": round(float(np.median(times[variants[0]])) / s, 3),
            "rel_error_vs_first": float(f"{np.linalg.norm(outs[v] - ref) / np.linalg.norm(ref):.2e}"),
        }
        r.deactivate()
    return rows


def _bp(variant: str) -> Tuple[str, str]:
    backend, precision = CPU_VARIANTS[variant]
    return backend, precision


class TimedRunner(Runner):
    """A runner that adds up the seconds spent in another runner's calls."""

    def __init__(self, inner: Runner):
        super().__init__()
        self.inner, self.seconds, self.calls = inner, 0.0, 0
        self.name = inner.name

    def activate_impl(self) -> None:
        self.inner.activate()

    @property
    def input_names(self) -> List[str]:
        return self.inner.input_names

    def infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = self.inner.infer(feed)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    def deactivate_impl(self) -> None:
        self.inner.deactivate()


def iteration_rows(
    export_dir: str, image: np.ndarray, variants: Sequence[str], threads: int, iters: int, **options: Any
) -> Dict[str, Dict[str, Any]]:
    """The real joint loop over ``image``'s tiles (one region) for ``iters`` iterations per
    variant: seconds per tile-iteration, in the UNet and on the host."""
    from ..runtime.restorer import Restorer

    rows = {}
    for v in variants:
        backend, precision = _bp(v)
        with Restorer(export_dir, backend, threads, precision=precision, stop="none", max_iters=iters, **options) as r:
            timed = {n: TimedRunner(x) for n, x in r.chain.runners.items()}
            for attr in ("fused", "iterate"):  # the chain holds these by reference too
                held = getattr(r.chain, attr)
                if held is not None:
                    setattr(r.chain, attr, next(timed[n] for n, x in r.chain.runners.items() if x is held))
            r.chain.runners.update(timed)
            layout = r.layout(image)
            t0 = time.perf_counter()
            for k in range(len(layout.units)):
                r.restore_unit(layout, k)
            total = time.perf_counter() - t0
            graph = sum(t.seconds for t in timed.values())
            n = len(layout.plan) * iters
            rows[v] = {
                "tiles": len(layout.plan),
                "iterations": iters,
                "batch": r.settings.batch,
                "steps_per_eval": r.settings.steps_per_eval,  # the host does the extra steps
                "ms_per_tile_iteration": round(total / n * 1000, 2),
                "unet_ms": round(graph / n * 1000, 2),
                "host_ms": round((total - graph) / n * 1000, 2),
                "host_share": round((total - graph) / total, 4),
            }
    return rows


def alternating_runs(
    run: Callable[[str], Dict[str, Any]],
    sides: Sequence[str],
    repeats: int,
    keep: Sequence[str],
    first: int = 0,
    on_run: Optional[Callable[[str, Dict[str, Any]], None]] = None,
) -> Dict[str, Dict[str, Any]]:
    """Each side's ``run(side)`` ``repeats`` times, the sides taking turns ABBA (round r in
    the given order when ``first + r`` is even), so that a machine's drift hits them alike.
    Per side: its first run's ``keep`` fields, with ``seconds`` the median over its runs
    and ``runs_seconds`` each run's; ``on_run(side, kept)`` hears each run as it ends."""
    runs: Dict[str, List[Dict[str, Any]]] = {side: [] for side in sides}
    for r in range(repeats):
        for side in list(sides) if (first + r) % 2 == 0 else list(reversed(sides)):
            row = run(side)
            runs[side].append({k: row[k] for k in keep})
            if on_run is not None:
                on_run(side, runs[side][-1])
    return {
        side: {
            **rs[0],
            "seconds": float(np.median([x["seconds"] for x in rs])),
            "runs_seconds": [x["seconds"] for x in rs],
        }
        for side, rs in runs.items()
    }


def photo_row(
    export_dir: str,
    clean: np.ndarray,
    damaged: np.ndarray,
    backend: str,
    threads: int,
    options: Dict[str, Any],
    eta_at: float = 0.1,
) -> Dict[str, Any]:
    """One whole photo restored as ``diip-run`` does, with the progress bar's ETA read
    when ``eta_at`` of the run's tile-iterations are done (and checked against the end)."""
    from ..runtime.commands.progress import WorkClock
    from ..runtime.restorer import Restorer
    from .metrics import psnr

    with Restorer(export_dir, backend, threads, **options) as r:
        layout = r.layout(damaged)
        clock = WorkClock(len(layout.plan), r.settings.max_iters)
        seen: Dict[str, Optional[float]] = {"eta": None, "at": None}

        def listen(info: Dict[str, Any]) -> None:
            clock(info)
            if seen["eta"] is None and clock.fraction >= eta_at:
                seen["eta"], seen["at"] = clock.eta(), clock.elapsed()

        t0 = time.perf_counter()
        out, rep = r.restore_layout(layout, listen)
        seconds = time.perf_counter() - t0
        remaining = seconds - seen["at"] if seen["at"] is not None else None
        return {
            "backend": r.backend,
            "precision": r.settings.precision,
            "tiles": len(layout.plan),
            "overlap": r.tiling.overlap,
            "seconds": round(seconds, 1),
            "input_psnr": round(psnr(clean, damaged), 3),
            "output_psnr": round(psnr(clean, out), 3),
            "stop": rep["stop_iteration"],
            "stop_reason": rep["stop_reason"],
            "guard": rep.get("guard"),
            "eta_at_10pct_s": None if seen["eta"] is None else round(seen["eta"], 1),
            "actual_remaining_s": None if remaining is None else round(remaining, 1),
            "eta_error": None if not remaining or seen["eta"] is None else round(seen["eta"] / remaining - 1, 3),
            "settings": {k: v for k, v in r.settings.as_dict().items() if k in options},
        }
