"""Issue 26's "step size per frequency", tried before it is built: the latent gradient with
its low frequencies boosted, measured against the shipped gradient on the same crops.

A colour far from where the Gaussian start puts the chain is a low-frequency error in x0,
and Adam's per-element steps follow the gradient's sign, which its high frequencies
dominate.  Here each Adam step sees ``g + a * lowpass(g)`` instead of ``g``, where
lowpass is each channel's mean over the tile (``--radius 0``) or a box blur of that
radius.  Only the host loop's steps are changed, and only in this process (a patched
``Sample.step``); nothing is built into the runtime unless it wins.  Histories are
written as ``diip-tune record`` writes them, so bench/warm_start.py compares them with the
shipped gradient's records crop for crop.  Quality only.

    python bench/gradient_filter.py --boost 3 --radius 0 --seed 1 --out F.json
    python bench/warm_start.py --noise N1.json --candidate "dc x3" F.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter

from diip_deploy.bench import loop_study
from diip_deploy.runtime.optimise import samples


def boosted(grad: np.ndarray, boost: float, radius: int) -> np.ndarray:
    """``grad`` [1, C, H, W] plus ``boost`` times its low-pass part."""
    if radius == 0:
        low = grad.mean(axis=(2, 3), keepdims=True)
    else:
        low = uniform_filter(grad, size=(1, 1, 2 * radius + 1, 2 * radius + 1), mode="reflect")
    return (grad + boost * low).astype(grad.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boost", type=float, required=True)
    ap.add_argument("--radius", type=int, default=0, help="box radius in latent pixels; 0: the channel mean")
    loop_study.add_arguments(ap)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    step = samples.Sample.step

    def filtered_step(self, grad, project):
        return step(self, boosted(grad, args.boost, args.radius), project)

    samples.Sample.step = filtered_step  # type: ignore[method-assign]
    loop_study.record_crops(args, args.out, "gradient_filter", {"boost": args.boost, "radius": args.radius})


if __name__ == "__main__":
    main()
