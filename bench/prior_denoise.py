"""How well each prior predicts x0 at the chain's own timesteps, side by side (issue 27).

DIIP calls the prior only at the shipped chain's timesteps (800, 600, 400, 200, 0), so a
prior trained to focus on them (``diip-train --focus-fraction``) should predict x0 better
there.  This checks that directly, before any DIIP run: held-out 64x64 crops, noised by
DDPM's forward process with fixed noise, the one-step x0 prediction (clamped, as the
chain clamps it) scored in PSNR per timestep, every prior on the same noise.  Quality
only; a cheap check, not a substitute for ``bench/prior_curve.py``.

It also scores each prior as a denoiser *told* the noise level: the learning curve's own
noisy inputs (sigma 25 of 255, clipped; ``prior_curve.noisy``) scaled by sqrt(a_t) at the
timestep whose forward-process noise matches sigma 25, and one x0 prediction.  DIIP is
blind and gets no such help; the gap between the two is what DIIP leaves of what the
prior knows.

    python bench/prior_denoise.py --model shipped=models/default \\
        --model focus=~/diip-cache/runs/focus-c32.work
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

from diip_deploy.schedule import StepCoefficients, forward_noised, predict_x0

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))  # prior_curve's noisy inputs
SHIPPED_EXPORT = REPO / "models" / "default-export"


def load_unet(where: Path):
    """A pipeline folder's UNet, or the EMA of a ``diip-train --work`` checkpoint (its folder,
    or a file ``--keep-every`` kept)."""
    from diip_deploy.train.trainer import CHECKPOINT, load_ema

    if where.is_file() or (where / CHECKPOINT).is_file():  # a kept step's file, or a run's folder
        return load_ema(where)[0]
    from diffusers import UNet2DModel

    return UNet2DModel.from_pretrained(str(where), subfolder="unet").eval()


def x0_psnr(unet, clean: np.ndarray, steps: List[StepCoefficients], draws: int) -> Dict[int, float]:
    """Mean PSNR of the clamped one-step x0 prediction per chain step, over ``draws`` fixed
    noises: the forward process and x0_hat are schedule.py's, as the chain computes them."""
    import torch

    from diip_deploy.bench.metrics import psnr

    x0 = torch.from_numpy(clean.transpose(0, 3, 1, 2) * 2 - 1).float()  # [-1, 1], NCHW
    out: Dict[int, float] = {}
    for c in steps:
        scores = []
        for d in range(draws):
            g = torch.Generator().manual_seed(1000 * d + c.t)
            xt = forward_noised(x0, torch.randn(x0.shape, generator=g), c.a_t)
            with torch.no_grad():
                eps = unet(xt, torch.full((len(x0),), c.t)).sample
            restored = (predict_x0(xt, eps, c).clamp(-1, 1).numpy().transpose(0, 2, 3, 1) + 1) / 2
            scores += [psnr(a, b) for a, b in zip(clean, restored)]
        out[c.t] = round(float(np.mean(scores)), 3)
    return out


def told_noise_psnr(unet, crops, alphas_cumprod: np.ndarray, sigma: float = 25.0) -> Dict[str, float]:
    """One x0 prediction from each crop's sigma-noised input (the learning curve's), at the
    timestep whose noise-to-signal ratio sqrt((1 - a) / a) matches sigma (of 255, so 2 sigma
    / 255 in the model's range): the prior as a denoiser told the noise level."""
    import torch
    from prior_curve import noisy

    from diip_deploy.bench.metrics import psnr

    ratio = np.sqrt((1 - alphas_cumprod) / alphas_cumprod)
    t = int(np.argmin(np.abs(ratio - 2 * sigma / 255)))
    c = StepCoefficients(t=t, a_t=float(alphas_cumprod[t]), a_prev=1.0)
    ys = torch.from_numpy(np.stack(noisy(crops)).transpose(0, 3, 1, 2) * 2 - 1).float()
    xt = forward_noised(ys, 0.0, c.a_t)  # the noisy input is x0 plus the noise already: no more is added
    with torch.no_grad():
        eps = unet(xt, torch.full((len(ys),), t)).sample
    x0 = predict_x0(xt, eps, c).clamp(-1, 1).numpy().transpose(0, 2, 3, 1)
    scores = [psnr(clean, (x + 1) / 2) for (_, clean), x in zip(crops, x0)]
    return {"t": t, "sigma": sigma, "psnr": round(float(np.mean(scores)), 3)}


def main() -> None:
    import torch

    from diip_deploy.bench.tune import tuning_crops
    from diip_deploy.export.loading import folder_alphas_cumprod
    from diip_deploy.manifest import load_manifest

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="label=folder (pipeline or --work)")
    ap.add_argument("--crops", type=int, default=16)
    ap.add_argument("--draws", type=int, default=4, help="noise draws per crop and timestep")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "prior_denoise.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = [c for c in load_manifest(SHIPPED_EXPORT).chain_spec.coefficients() if c.t > 0]
    timesteps = [c.t for c in steps]
    crops = tuning_crops(args.crops, 64, 0, True, saturated=0)
    clean = np.stack([c for _, c in crops]).astype(np.float32)
    table = folder_alphas_cumprod(REPO / "models" / "default")  # every prior here trained on this schedule
    rows, told = {}, {}
    for spec in args.model:
        label, _, folder = spec.partition("=")
        unet = load_unet(Path(folder).expanduser())
        rows[label] = x0_psnr(unet, clean, steps, args.draws)
        told[label] = told_noise_psnr(unet, crops, table)
    print("| prior | " + " | ".join(f"t={t}" for t in timesteps) + " |")
    print("|---|" + "---|" * len(timesteps))
    for label, scores in rows.items():
        print(f"| {label} | " + " | ".join(f"{scores[t]:.2f}" for t in timesteps) + " |")
    for label, row in told.items():
        print(f"{label}, told the noise level (sigma {row['sigma']:g}, t = {row['t']}): {row['psnr']:.2f} dB")
    record = {
        "task": "one-step x0 prediction (clamped), DDPM forward noise, PSNR",
        "split": "HELD-OUT photos",
        "crops": [name for name, _ in crops],
        "draws": args.draws,
        "models": {spec.partition("=")[0]: spec.partition("=")[2] for spec in args.model},
        "psnr": {label: {str(t): v for t, v in scores.items()} for label, scores in rows.items()},
        "told_noise_level": {
            "task": "the learning curve's noise25 inputs, one x0 prediction at the matching timestep, PSNR",
            **told,
        },
    }
    args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
