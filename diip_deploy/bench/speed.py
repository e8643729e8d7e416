"""Time per DIIP iteration, ONNX Runtime runner against the torch reference (eager).

The two run alternately, round after round, same model, size, gradient mode and
threads, with ORT's intra-op spinning off; the ratio of medians is what to read.
"""

from __future__ import annotations

import statistics
import time
from typing import Dict, List

import numpy as np


def runtime_vs_torch(
    model_dir: str,
    export_dir: str,
    size: int = 64,
    threads: int = 2,
    rounds: int = 5,
    iters: int = 3,
    gradients=("surrogate", "exact"),
) -> List[Dict]:
    import torch

    from ..export.loading import load_model
    from ..export.reference import EpsModel, loss_and_grad
    from ..export.trace import prepare_unet
    from ..runtime import load_manifest, open_chain

    torch.set_num_threads(threads)
    manifest = load_manifest(export_dir)
    spec = manifest.chain_spec
    loaded = load_model(model_dir)
    eps_model = EpsModel(prepare_unet(loaded.unet), loaded.alphas_cumprod, loaded.prediction_type).eval()
    rng = np.random.default_rng(0)
    shape = (1, manifest.channels, size, size)
    z = rng.standard_normal(shape).astype(np.float32)
    y = rng.uniform(-1, 1, shape).astype(np.float32)
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    results = []
    for gradient in gradients:
        variants = {"per-step": False}
        if manifest.has_graph(f"chain_{gradient}"):
            variants["fused"] = True
        for variant, fused in variants.items():
            chain = open_chain(manifest, "ort-cpu", gradient, threads=threads, prefer_fused=fused)
            chain.loss_and_grad(z, y)  # warm-up both sides
            loss_and_grad(eps_model, zt, yt, spec, gradient)
            t_ort, t_torch = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                for _ in range(iters):
                    chain.loss_and_grad(z, y)
                t_ort.append((time.perf_counter() - t0) / iters)
                t0 = time.perf_counter()
                for _ in range(iters):
                    loss_and_grad(eps_model, zt, yt, spec, gradient)
                t_torch.append((time.perf_counter() - t0) / iters)
            chain.close()
            ort_s, torch_s = statistics.median(t_ort), statistics.median(t_torch)
            results.append(
                {
                    "gradient": gradient,
                    "runtime_graphs": variant,
                    "size": size,
                    "threads": threads,
                    "steps": len(spec.timesteps),
                    "ort_s_per_iter": round(ort_s, 4),
                    "torch_s_per_iter": round(torch_s, 4),
                    "ratio_ort_over_torch": round(ort_s / torch_s, 3),
                }
            )
    return results
