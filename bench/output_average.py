"""Issue 26, tried before it is built: return a running average of the chain's outputs
rather than the last one, measured against the last one on the same trajectories.

Deep Image Prior averages its outputs over iterations (an exponential moving average),
because each iterate carries optimiser noise that the average cancels.  DIIP's short run
at a high rate may carry the same noise.  One ``diip-tune record`` run is made; its
callback also keeps, per crop and per weight ``beta``, the bias-corrected exponential
average of x0 over the evaluations so far (``beta`` 0 is x0 itself).  The loss and
Laplacian histories, and so every stop decision, are the chain's own and the same for
every beta; only the image judged at the chosen evaluation differs: its PSNR, per-channel
mean error and residual correlation (the guard's input).  One histories file is written
per beta, as ``diip-tune record`` writes them, so bench/warm_start.py and
bench/few_evals.py compare them with beta 0 crop for crop.  Quality only.

    python bench/output_average.py --beta 0.3 0.5 0.7 --seed 0 --out-dir D
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

import numpy as np

from diip_deploy.bench import loop_study
from diip_deploy.bench.tune_scoring import recorded_inputs
from diip_deploy.runtime.images.codec import save_json, to_model_range


def running_average(outputs: List[np.ndarray], beta: float) -> List[np.ndarray]:
    """The bias-corrected exponential average of ``outputs`` after each of them (``beta``
    the weight of the past), as Deep Image Prior averages its iterates."""
    averaged, m = [], np.zeros_like(outputs[0], dtype=np.float64)
    for n, x0 in enumerate(outputs, start=1):
        m = beta * m + (1 - beta) * np.asarray(x0, dtype=np.float64)
        averaged.append((m / (1 - beta**n)).astype(np.float32))
    return averaged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beta", type=float, nargs="+", required=True, help="averaging weights to record (0 < beta < 1)")
    loop_study.add_arguments(ap)
    ap.add_argument("--out-dir", type=Path, required=True)
    args = ap.parse_args()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"_lr{args.lr:g}" if args.lr is not None else ""
    out = args.out_dir / f"beta0{tag}_seed{args.seed}.json"
    h, outputs = loop_study.record_outputs(args, out, "output_average", {"beta": 0})
    inputs = [(clean, to_model_range(y)[0]) for _, clean, y in recorded_inputs(h)]  # cut once for every beta
    for b in args.beta:
        hb = loop_study.rescored_histories(h, inputs, {i: running_average(xs, b) for i, xs in outputs.items()})
        hb["output_average"] = {"beta": b}
        path = args.out_dir / f"beta{b:g}{tag}_seed{args.seed}.json"
        save_json(path, hb)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
