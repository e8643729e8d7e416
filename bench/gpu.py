"""GPU benchmark of the runtime (issue: GPU runtime): seconds per DIIP iteration and device
memory for the shipped export on ONNX Runtime, per precision (fp32, and fp16 where the
export has diip-fp16 copies), with and without IO binding and CUDA graphs, and the
device loop (iterate_surrogate.onnx: state in device buffers, one call per iteration,
with and without CUDA graphs), at 64, 256 and 512, plus one 1-megapixel tiled photo per
loop (3 iterations timed, the full photo estimated at the iteration cap).  Reads
pre-exported graphs only: no diffusers needed.

    python bench/gpu.py --json bench/results/gpu.json              # on a GPU machine (ort-cuda)
    python bench/gpu.py --dry-run                                   # this script's own check, on the CPU
    python bench/gpu.py --save-torch cache/unet.ts                  # where diffusers is: the torch side
    python bench/gpu.py --torch cache/unet.ts --json ...            # ... then torch eager beside ORT

The torch eager reference is the same chain with autograd (diip_deploy/export/reference.py)
over the model as TorchScript, traced once where diffusers is installed, so the GPU machine
needs torch alone; each size reports ORT's best variant over torch eager as a ratio.

Writes JSON with the device named; each variant runs alone, so one that fails (a shape
that CUDA graphs refuse, a missing provider) is recorded with its one-line error.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def gpu_name() -> Optional[str]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.used", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def device_used_mb() -> Optional[float]:
    """Device memory in use (all processes), from nvidia-smi; None without a GPU."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return float(out.stdout.split()[0]) if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def _timed(
    chain, make_step, manifest, size: int, batch: int, iters: int, warmup: int, before: Optional[float]
) -> Dict[str, Any]:
    """Median and minimum seconds of ``iters`` calls of the step ``make_step(chain, z, y)``
    returns, after ``warmup`` untimed ones, and the device memory added since ``before``;
    closes the chain."""
    try:
        rng = np.random.default_rng(0)
        shape = (batch, manifest.channels, size, size)
        z = rng.standard_normal(shape).astype(np.float32)
        y = np.clip(rng.standard_normal(shape) * 0.5, -1, 1).astype(np.float32)
        step = make_step(chain, z, y)
        times: List[float] = []
        for i in range(iters + warmup):
            t0 = time.perf_counter()
            step()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        after = device_used_mb()
    finally:
        chain.close()
    return {
        "s_per_iter": round(statistics.median(times), 5),
        "min": round(min(times), 5),
        **({"device_mb_added": round(after - before, 1)} if before is not None and after is not None else {}),
    }


def time_chain(
    manifest,
    backend: str,
    size: int,
    batch: int,
    iters: int,
    precision: str,
    io_binding: bool,
    cuda_graph: bool,
    threads: Optional[int],
) -> Dict[str, Any]:
    """Median seconds per iteration of the host loop (surrogate): the graph calls, then
    numpy's Laplacian variance, Adam and projection, as the loop does; after 2 warm-up
    iterations, and the device memory it added."""
    from diip_deploy.runtime.backends.select import open_chain
    from diip_deploy.runtime.optimise.optim import Adam, project_to_sphere
    from diip_deploy.runtime.optimise.stopping import laplacian_variance

    def make_step(chain, z, y):
        state, opt = {"z": z}, Adam(lr=0.01)

        def step() -> None:
            x0, _, g = chain.loss_and_grad(state["z"], y)
            laplacian_variance(x0)
            state["z"] = project_to_sphere(opt.step(state["z"], g))

        return step

    before = device_used_mb()
    chain = open_chain(
        manifest, backend, "surrogate", threads, precision=precision, io_binding=io_binding, cuda_graph=cuda_graph
    )
    return _timed(chain, make_step, manifest, size, batch, iters, 2, before)


def time_device_loop(
    manifest,
    backend: str,
    size: int,
    batch: int,
    iters: int,
    cuda_graph: bool,
    threads: Optional[int],
    precision: str = "fp32",
) -> Dict[str, Any]:
    """Median seconds per iteration of the device loop: one iteration-graph call, with the
    losses, Laplacian variances and |grad|^2 brought to the host as the loop does (3
    warm-up calls: ORT captures a CUDA graph per parity after a plain run)."""
    from diip_deploy.runtime.backends.select import open_chain
    from diip_deploy.runtime.optimise.device_loop import DeviceBatch

    before = device_used_mb()
    chain = open_chain(
        manifest,
        backend,
        "surrogate",
        threads,
        cuda_graph=cuda_graph,
        precision=precision,
        loop_graph="iterate_surrogate",
    )
    if chain.iterate is None:
        chain.close()
        raise ValueError(f"this export has no {precision} iteration graph (diip-export --iterate surrogate --add)")
    return _timed(
        chain,
        lambda c, z, y: DeviceBatch(c.iterate, z, np.zeros_like(z), np.zeros_like(z), y, np.zeros(len(z)), lr=0.01).run,
        manifest,
        size,
        batch,
        iters,
        3,
        before,
    )


def loop_parity(manifest, backend: str, size: int, batch: int, iters: int, threads: Optional[int]) -> Dict[str, Any]:
    """The device loop on ``backend`` against the host loop on the CPU provider: the same
    tiles, seeds and iterations, no early stop; the largest pixel difference (of 255)."""
    from diip_deploy.manifest import iterate_graph_name
    from diip_deploy.runtime.backends.select import open_chain
    from diip_deploy.runtime.optimise.loop import restore_iter

    ys = np.clip(np.random.default_rng(1).standard_normal((batch, manifest.channels, size, size)) * 0.5, -1, 1)
    cfg = manifest.settings(max_iters=iters, stop="none")
    out = {}
    for name, (b, device) in {"host_cpu": ("ort-cpu", False), "device": (backend, True)}.items():
        graph = (
            iterate_graph_name(cfg.gradient)
            if device and manifest.has_graph(iterate_graph_name(cfg.gradient))
            else None
        )
        chain = open_chain(manifest, b, cfg.gradient, threads, loop_graph=graph, clamp_gradient=cfg.clamp_gradient)
        try:
            if device and chain.iterate is None:
                raise ValueError("this export has no iteration graph for the manifest's gradient")
            out[name] = dict(restore_iter(chain, ys.astype(np.float32), cfg, [(0, i) for i in range(batch)]))
        finally:
            chain.close()
    diff = max(float(np.abs(out["device"][i].x0 - out["host_cpu"][i].x0).max()) for i in range(batch)) * 127.5
    loss = max(
        abs(out["device"][i].history["loss"][-1] / out["host_cpu"][i].history["loss"][-1] - 1) for i in range(batch)
    )
    return {
        "size": size,
        "batch": batch,
        "iterations": iters,
        "max_diff_of_255": round(diff, 4),
        "last_loss_rel_diff": float(f"{loss:.3g}"),
    }


def save_torchscript(model_dir: Path, path: Path, size: int = 32) -> None:
    """Trace the model (the UNet and its eps conversion, diffusers' default attention) to
    TorchScript; needs diffusers, here only."""
    import torch

    from diip_deploy.export.loading import load_model
    from diip_deploy.export.reference import EpsModel

    loaded = load_model(str(model_dir))
    model = EpsModel(loaded.unet.eval().requires_grad_(False), loaded.alphas_cumprod, loaded.prediction_type).eval()
    sample = torch.randn(1, loaded.unet.config.in_channels, size, size)
    traced = torch.jit.trace(model, (sample, torch.tensor([500])), check_trace=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path))


def time_torch(ts_path: Path, manifest, size: int, batch: int, iters: int, device: str) -> Dict[str, Any]:
    """torch eager (autograd through the chain, surrogate) per iteration, same shapes."""
    import torch

    from diip_deploy.export.reference import loss_and_grad

    model = torch.jit.load(str(ts_path), map_location=device).eval()
    spec = manifest.chain_spec
    rng = np.random.default_rng(0)
    shape = (batch, manifest.channels, size, size)
    z = torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).to(device)
    y = torch.from_numpy(np.clip(rng.standard_normal(shape) * 0.5, -1, 1).astype(np.float32)).to(device)
    times: List[float] = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(iters + 2):
        t0 = time.perf_counter()
        _, _, g = loss_and_grad(model, z, y, spec, "surrogate")
        z = (z - 0.01 * g).detach()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    row = {"s_per_iter": round(statistics.median(times), 5), "min": round(min(times), 5)}
    if device == "cuda":
        row["peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def time_photo(
    export: Path,
    backend: str,
    height: int,
    width: int,
    iters: int,
    precision: str,
    threads: Optional[int],
    loop: str = "host",
) -> Dict[str, Any]:
    """A tiled photo through the Restorer (the shipped path), ``iters`` iterations, no early
    stop; the full photo estimated at the manifest's iteration cap."""
    from diip_deploy.runtime.restorer import Restorer

    img = np.random.default_rng(0).random((height, width, 3)).astype(np.float32)
    with Restorer(
        export, backend, threads, batch=16, max_iters=iters, stop="none", precision=precision, loop=loop
    ) as r:
        cap = int(r.manifest.defaults["max_iters"])
        t0 = time.perf_counter()
        _, rep = r.restore_array(img)
        seconds = time.perf_counter() - t0
    return {
        "size": [width, height],
        "tiles": rep["tiling"]["tiles"],
        "iterations": iters,
        "loop": rep["run"]["loop"],
        "seconds": round(seconds, 3),
        "s_per_iter": round(seconds / iters, 4),
        "estimated_seconds_at_cap": round(seconds / iters * cap, 1),
        "cap": cap,
    }


def _row(row: Dict[str, Any], measure) -> Dict[str, Any]:
    """One variant timed; its failure is a line in the JSON, not a lost run."""
    try:
        row.update(measure())
    except Exception as e:
        row["error"] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    print(json.dumps(row), file=sys.stderr)
    return row


def main() -> None:
    from diip_deploy.bench.report import emit
    from diip_deploy.manifest import load_manifest

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--backend", default="ort-cuda")
    ap.add_argument("--sizes", default="64,256,512")
    ap.add_argument("--tile-batch", type=int, default=16, help="also time this many 64x64 tiles in one call")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--photo", default="1024x1024", help="HxW of the tiled photo ('' to skip)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, 2 iterations: checks the script")
    ap.add_argument("--torch", type=Path, default=None, help="TorchScript model (--save-torch) to time beside ORT")
    ap.add_argument("--save-torch", type=Path, default=None, help="trace --model to TorchScript here and exit")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "default", help="diffusers model for --save-torch")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if a.save_torch:
        save_torchscript(a.model, a.save_torch)
        print(f"wrote {a.save_torch}", file=sys.stderr)
        return
    if a.dry_run:
        a.backend, a.sizes, a.iters, a.photo, a.tile_batch = "ort-cpu", "16,32", 2, "48x64", 4
    manifest = load_manifest(a.export)
    precisions = ["fp32"] + (["fp16"] if manifest.has_graph("unet_fp16") else [])
    variants = [
        (p, io, cg)
        for p in precisions
        for io, cg in ((False, False), (True, False), (True, True))
        if not cg or a.backend == "ort-cuda"
    ]
    loop_precisions = [
        p
        for p in ("fp32", "fp16")
        if manifest.has_graph("iterate_surrogate" + ("_fp16" if p == "fp16" else "")) and p in precisions
    ]
    loop_variants = [(p, cg) for p in loop_precisions for cg in ([False, True] if a.backend == "ort-cuda" else [False])]
    shapes = [(1, int(s)) for s in a.sizes.split(",")] + (
        [(a.tile_batch, 64 if not a.dry_run else 16)] if a.tile_batch > 1 else []
    )
    results: List[Dict[str, Any]] = []
    for batch, size in shapes:
        for precision, io, cg in variants:
            row: Dict[str, Any] = {
                "batch": batch,
                "size": size,
                "precision": precision,
                "io_binding": io,
                "cuda_graph": cg,
            }
            results.append(
                _row(row, lambda: time_chain(manifest, a.backend, size, batch, a.iters, precision, io, cg, a.threads))
            )
        for precision, cg in loop_variants:
            row = {"batch": batch, "size": size, "precision": precision, "loop": "device", "cuda_graph": cg}
            results.append(
                _row(row, lambda: time_device_loop(manifest, a.backend, size, batch, a.iters, cg, a.threads, precision))
            )
        if a.torch:
            ort_best = min(
                (x["s_per_iter"] for x in results if x["batch"] == batch and x["size"] == size and "s_per_iter" in x),
                default=None,
            )

            def torch_row() -> Dict[str, Any]:
                t = time_torch(a.torch, manifest, size, batch, a.iters, "cpu" if a.backend == "ort-cpu" else "cuda")
                return {**t, **({"ort_best_over_torch": round(ort_best / t["s_per_iter"], 3)} if ort_best else {})}

            results.append(
                _row({"batch": batch, "size": size, "reference": "torch eager, autograd (surrogate)"}, torch_row)
            )
    photo = None
    if a.photo:
        h, w = (int(v) for v in a.photo.split("x"))
        runs = [(p, "host") for p in precisions] + [(p, "device") for p in loop_precisions]
        photo = {
            f"{p}_{loop}": time_photo(a.export, a.backend, h, w, 3 if not a.dry_run else 1, p, a.threads, loop)
            for p, loop in runs
        }
        print(json.dumps(photo), file=sys.stderr)
    parity = _row(
        {"check": f"device loop on {a.backend} against the host loop on ort-cpu"},
        lambda: loop_parity(manifest, a.backend, 64 if not a.dry_run else 16, 4, a.iters, a.threads),
    )
    report = {
        "benchmark": "gpu",
        "backend": a.backend,
        "device": gpu_name() or platform.processor() or platform.machine(),
        "export": str(a.export),
        "dry_run": a.dry_run,
        "iterations_timed": a.iters,
        "chain": results,
        "photo": photo,
        "parity": parity,
        "torch_reference": str(a.torch) if a.torch else None,
    }
    emit(report, a.json)


if __name__ == "__main__":
    main()
