"""Issue 26, tried before it is built: the restoration's low frequencies taken from the
input, measured against the chain's own output on the same trajectories.  Not adopted
(docs/method.md): the noisy inputs are clipped to [0, 255], so their local means are
biased wherever a channel nears 0 or 255, and the chain's own output is nearer the truth
there.

A short run reaches texture before colour, and the damaged input's local means are
nearly clean for zero-mean damage.  One ``diip-tune record`` run is made; its callback
keeps each crop's x0 at every evaluation, and for each ``--sigma`` the corrected image
``x0 + G_sigma * (y - x0)`` is scored in its place (``inf``: each channel's mean over the
crop).  The losses, and so every stop decision, are the chain's own; only the image
judged at the chosen evaluation differs: its PSNR, per-channel mean error and residual
correlation (the guard's input).  One histories file is written per sigma, as
``diip-tune record`` writes them, so bench/replay_compare.py and bench/few_evals.py
compare them with the plain output (sigma 0) crop for crop.  Quality only.

    python bench/input_lowpass.py --sigma 4 8 16 inf --seed 0 --out-dir D
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from diip_deploy.bench import loop_study
from diip_deploy.bench.tune_scoring import recorded_inputs
from diip_deploy.runtime.images.codec import save_json, to_model_range


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """``x`` ([..., H, W]) blurred over its last two axes by scipy's Gaussian of ``sigma``
    pixels (reflected borders, cut at 3 sigma); ``sigma = inf`` gives each channel's mean
    everywhere."""
    from scipy.ndimage import gaussian_filter

    x = np.asarray(x, dtype=np.float64)
    if math.isinf(sigma):
        return np.broadcast_to(x.mean(axis=(-2, -1), keepdims=True), x.shape).copy()
    return gaussian_filter(x, (0,) * (x.ndim - 2) + (sigma, sigma), mode="reflect", truncate=3.0)


def take_low_frequencies(restored: np.ndarray, damaged: np.ndarray, sigma: float) -> np.ndarray:
    """``restored`` with its low frequencies (below a Gaussian of ``sigma`` pixels) taken
    from ``damaged``, both in the model's range [-1, 1] and of one shape [..., C, H, W];
    clipped back to that range.  ``sigma <= 0`` returns ``restored`` unchanged."""
    if sigma <= 0:
        return restored
    residual = np.asarray(damaged, dtype=np.float64) - np.asarray(restored, dtype=np.float64)
    out = np.asarray(restored, dtype=np.float64) + gaussian_blur(residual, sigma)
    return np.clip(out, -1.0, 1.0).astype(np.asarray(restored).dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sigma", type=float, nargs="+", required=True, help="blur widths in pixels to score (inf: mean)")
    loop_study.add_arguments(ap)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--tag", default="", help="added to the file names (e.g. the task)")
    args = ap.parse_args()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    tag = args.tag + (f"_lr{args.lr:g}" if args.lr is not None else "")
    out = args.out_dir / f"sigma0{tag}_seed{args.seed}.json"
    h, outputs = loop_study.record_outputs(args, out, "input_lowpass", {"sigma": 0})
    inputs = [(clean, to_model_range(y)[0]) for _, clean, y in recorded_inputs(h)]
    for sigma in args.sigma:
        corrected = {i: [take_low_frequencies(x, inputs[i][1], sigma) for x in xs] for i, xs in outputs.items()}
        hs = loop_study.rescored_histories(h, inputs, corrected)
        hs["input_lowpass"] = {"sigma": sigma if np.isfinite(sigma) else "inf"}
        path = args.out_dir / f"sigma{sigma:g}{tag}_seed{args.seed}.json"
        save_json(path, hs)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
