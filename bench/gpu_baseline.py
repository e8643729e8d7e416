"""GPU baseline for the TensorRT work: the torch reference on CUDA, per DIIP iteration,
at 256x256 with a UNet shaped like google/ddpm-celebahq-256 (random weights; timing only).

    python bench/gpu_baseline.py --json bench/gpu_baseline.json

Prints JSON with the device named, s/iteration and peak memory per gradient mode.  Needs
a CUDA torch; exits with a one-line reason where there is none.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def celebahq_like_unet():
    """google/ddpm-celebahq-256's layout: 6 levels, 2 layers per block, attention at 16x16."""
    from celeba import CELEBA_HQ_256  # beside this script: the one copy of that layout
    from diffusers import UNet2DModel

    return UNet2DModel(**CELEBA_HQ_256)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_baseline: no CUDA device visible to torch")
    from diip_deploy.export.reference import EpsModel, loss_and_grad
    from diip_deploy.export.trace import prepare_unet
    from diip_deploy.schedule import ChainSpec, linear_alphas_cumprod

    dev = torch.device("cuda")
    torch.manual_seed(0)
    unet = prepare_unet(celebahq_like_unet())
    acp = linear_alphas_cumprod()
    eps_model = EpsModel(unet, acp, "epsilon").to(dev).eval()
    spec = ChainSpec.from_table(acp, args.steps)
    z = torch.randn(1, 3, args.size, args.size, device=dev)
    y = torch.rand(1, 3, args.size, args.size, device=dev) * 2 - 1
    results = []
    for gradient in ("surrogate", "exact"):
        loss_and_grad(eps_model, z, y, spec, gradient)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            loss_and_grad(eps_model, z, y, spec, gradient)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        results.append(
            {
                "gradient": gradient,
                "s_per_iter": round(statistics.median(times), 4),
                "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    report = {
        "benchmark": "gpu_baseline",
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "unet_parameters": int(sum(p.numel() for p in unet.parameters())),
        "size": args.size,
        "steps": args.steps,
        "results": results,
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
