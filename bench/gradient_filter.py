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

from diip_deploy.bench.tune import record
from diip_deploy.runtime.images.codec import save_json
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
    ap.add_argument("--export", type=Path, default=Path("models/default-export"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=8, help="ordinary noisy crops (plus as many saturated ones)")
    ap.add_argument("--max-iters", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    step = samples.Sample.step

    def filtered_step(self, grad, project):
        return step(self, boosted(grad, args.boost, args.radius), project)

    samples.Sample.step = filtered_step  # type: ignore[method-assign]
    h = record(
        args.export,
        args.n,
        64,
        ["noise25"],
        None,
        args.max_iters,
        16,
        args.threads,
        args.seed,
        saturated=args.n,
    )
    h["gradient_filter"] = {"boost": args.boost, "radius": args.radius}
    save_json(args.out, h)
    print(f"wrote {args.out}: {len(h['samples'])} histories in {h['seconds']} s")


if __name__ == "__main__":
    main()
