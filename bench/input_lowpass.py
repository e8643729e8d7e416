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
from typing import Dict, List

import numpy as np

from diip_deploy.bench import loop_study
from diip_deploy.bench.tune_scoring import recorded_inputs
from diip_deploy.runtime.images.codec import save_json, to_model_range
from diip_deploy.runtime.optimise import loop


def gaussian_taps(sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian of standard deviation ``sigma`` pixels, cut at 3 sigma."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def _blur_axis(x: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """``x`` convolved with ``taps`` along ``axis``, mirrored at the borders (numpy's
    ``symmetric`` padding, repeated where the kernel outreaches the image)."""
    radius = len(taps) // 2
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    if radius < n:
        padded = np.pad(x, pad, mode="symmetric")
    else:  # the kernel is wider than the image: mirror it again and again
        index = np.arange(-radius, n + radius)
        period = 2 * n
        index = np.mod(index, period)
        index = np.where(index >= n, period - 1 - index, index)
        padded = np.take(x, index, axis=axis)
    out = np.zeros_like(x, dtype=np.float64)
    for k, w in enumerate(taps):
        out += w * np.take(padded, np.arange(k, k + n), axis=axis)
    return out


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """``x`` ([..., H, W]) blurred over its last two axes by a Gaussian of ``sigma`` pixels;
    ``sigma = inf`` gives each channel's mean everywhere."""
    x = np.asarray(x, dtype=np.float64)
    if math.isinf(sigma):
        return np.broadcast_to(x.mean(axis=(-2, -1), keepdims=True), x.shape).copy()
    taps = gaussian_taps(sigma)
    return _blur_axis(_blur_axis(x, taps, x.ndim - 1), taps, x.ndim - 2)


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

    outputs: Dict[int, List[np.ndarray]] = {}
    restore_iter = loop.restore_iter

    def keeping(chain, ys, settings, seeds=None, batch=None, callback=None):
        def listen(info):
            for j, i in enumerate(info["index"]):
                outputs.setdefault(int(i), []).append(np.asarray(info["x0"][j], dtype=np.float32))
            if callback is not None:
                callback(info)

        return restore_iter(chain, ys, settings, seeds, batch, listen)

    loop.restore_iter = keeping  # type: ignore[assignment]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tag = args.tag + (f"_lr{args.lr:g}" if args.lr is not None else "")
    h = loop_study.record_crops(args, args.out_dir / f"sigma0{tag}_seed{args.seed}.json", "input_lowpass", {"sigma": 0})
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
