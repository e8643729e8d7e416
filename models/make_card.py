"""Measure the default model for its card: loss curve, unconditional samples, one-step
denoising PSNR at several t on the held-out photos, and CPU speed of diip-run.

    python models/make_card.py --model models/default --export models/default-export

Writes models/default/loss_curve.png, samples.png and card_metrics.json; the DIIP
restoration numbers and pictures come from diip-bench (bench/results).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def loss_curve(training: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.array(training["losses"])
    w = 50
    smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(losses, lw=0.4, alpha=0.4, label="per step")
    ax.plot(np.arange(w - 1, len(losses)), smooth, lw=1.5, label=f"{w}-step mean")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("eps MSE")
    ax.set_title("default model: training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def samples(model_dir: str, out: Path, n: int = 16, size: int = 64, steps: int = 50, seed: int = 0) -> None:
    import torch
    from diffusers import DDIMScheduler, DDPMPipeline

    from diip_deploy.runtime.images.codec import save_image

    pipe = DDPMPipeline.from_pretrained(model_dir)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(pipe.unet(x, t).sample, t, x).prev_sample
    imgs = ((x.clamp(-1, 1) + 1) / 2).numpy().transpose(0, 2, 3, 1)
    rows = [np.concatenate(list(imgs[r * 4 : (r + 1) * 4]), axis=1) for r in range(n // 4)]
    save_image(out, np.repeat(np.repeat(np.concatenate(rows, 0), 2, 0), 2, 1))


def denoising_psnr(model_dir: str, ts=(25, 50, 100, 200, 400), size: int = 64, seed: int = 0) -> dict:
    """One-step denoising on held-out crops: x_t = sqrt(a) x0 + sqrt(1-a) eps, then the
    predicted x0.  The input's PSNR is that of x_t / sqrt(a), the noisy image at the same
    scale (noise sigma = sqrt((1-a)/a) in [-1, 1] units)."""
    import torch
    from diffusers import DDPMPipeline

    from diip_deploy.bench.metrics import psnr
    from diip_deploy.train.photos import held_out_crops

    pipe = DDPMPipeline.from_pretrained(model_dir)
    acp = pipe.scheduler.alphas_cumprod
    crops = [c for _, c in held_out_crops(size)]
    x0 = torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) * 2 - 1)
    g = torch.Generator().manual_seed(seed)

    def to01(v: torch.Tensor) -> np.ndarray:
        return ((v.clamp(-1, 1) + 1) / 2).numpy().transpose(0, 2, 3, 1)

    out = {}
    for t in ts:
        a = float(acp[t])
        xt = a**0.5 * x0 + (1 - a) ** 0.5 * torch.randn(x0.shape, generator=g)
        with torch.no_grad():
            pred = pipe.unet(xt, torch.full((len(x0),), t)).sample
        x0_hat = (xt - (1 - a) ** 0.5 * pred) / a**0.5
        out[str(t)] = {
            "noise_sigma_255": round(255 / 2 * ((1 - a) / a) ** 0.5, 1),
            "input_psnr": float(np.mean([psnr(c, n) for c, n in zip(crops, to01(xt / a**0.5))])),
            "denoised_psnr": float(np.mean([psnr(c, d) for c, d in zip(crops, to01(x0_hat))])),
        }
    return out


def diip_by_size(export_dir: str, sizes=(32, 64, 128), n: int = 3) -> dict:
    """What diip-run returns, defaults and guard included, on noisy (sigma 25/255) held-out
    crops at several sizes (larger ones in the export's tiles): where the defaults hold."""
    from diip_deploy.bench.degrade import gaussian_noise
    from diip_deploy.bench.metrics import psnr
    from diip_deploy.runtime.restorer import Restorer
    from diip_deploy.train.photos import held_out_crops

    out = {}
    with Restorer(export_dir, "ort-cpu", 2) as r:
        for size in sizes:
            rows = []
            for i, (_name, x) in enumerate(held_out_crops(size, scale=0.25 * size / 64)[:n]):
                y = gaussian_noise(x.astype(np.float64), 25.0, seed=i).astype(np.float32)
                t0 = time.perf_counter()
                restored, rep = r.restore_array(y, seed=0)
                rows.append((psnr(x, y), psnr(x, restored), time.perf_counter() - t0, rep["iterations_run"]))
            a = np.array(rows)
            out[str(size)] = {
                "input_psnr": float(a[:, 0].mean()),
                "output_psnr": float(a[:, 1].mean()),
                "gain_db": float((a[:, 1] - a[:, 0]).mean()),
                "seconds": float(a[:, 2].mean()),
                "iterations": float(a[:, 3].mean()),
                "images": n,
            }
            print(size, out[str(size)], flush=True)
    return out


def diip_run_seconds(export_dir: str, image: str) -> dict:
    """Wall time of `diip-run` with default settings on one 64x64 image (a new process)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "diip_deploy.runtime.commands.cli", image, "--model", export_dir]
            + ["--out", tmp, "--quiet"],
            check=True,
        )
        wall = time.perf_counter() - t0
        rep = json.loads(next(Path(tmp).glob("*.json")).read_text())
    return {
        "image": image,
        "wall_seconds": round(wall, 2),
        "iterations_run": rep["iterations_run"],
        "stop_reason": rep["stop_reason"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/default")
    ap.add_argument("--export", default="models/default-export")
    ap.add_argument("--image", default="examples/chelsea_noise25.png")
    args = ap.parse_args()
    model = Path(args.model)
    # the last stage whose record kept its loss history (focus-new's went with its lost
    # checkpoints; the card says which stage the curve shows)
    for name in ("training.json", "training_second_stage.json", "training_first_stage.json"):
        training = json.loads((model / name).read_text()) if (model / name).is_file() else {}
        if "losses" in training:
            loss_curve(training, model / "loss_curve.png")
            print(f"loss curve from {name}", file=sys.stderr)
            break
    samples(args.model, model / "samples.png")
    metrics = {
        "denoising": denoising_psnr(args.model),
        "diip_run": diip_run_seconds(args.export, args.image),
        "diip_by_size": diip_by_size(args.export),
    }
    (model / "card_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
