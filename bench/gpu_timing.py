"""The timing parts of bench/gpu.py: seconds per iteration of a chain, of the device loop,
and of torch eager beside them, each measured alone, with the device's memory.  Run
through bench/gpu.py."""

from __future__ import annotations

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


def timed(
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
    return timed(chain, make_step, manifest, size, batch, iters, 2, before)


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
    return timed(
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
