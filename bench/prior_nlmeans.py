"""DIIP against non-local means on the learning curve's crops (issue 27's second bar).

Each point of bench/results/prior_curve.json holds DIIP's per-crop PSNR (each crop's own
noise, averaged over its starting noises) for a checkpoint and for the export shipped when
it was measured. The noisy inputs are drawn deterministically from the crops
(prior_curve.noisy), so scikit-image's non-local means (sigma estimated) is scored here on
the very same inputs, crop for crop, without running DIIP again.

    python bench/prior_nlmeans.py --run direct-more --step 4000 --held-out \\
        --out bench/results/prior_ship/nlmeans.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from prior_compare import find
from prior_curve import nlmeans_crops, noisy

REPO = Path(__file__).resolve().parents[1]


def against(name: str, diip: list, baseline: list) -> dict:
    from diip_deploy.bench.metrics import gain_summary

    counted = gain_summary(diip, baseline)
    return {
        f"{name}_mean_psnr": round(float(np.mean(diip)), 3),
        f"{name}_over_nlmeans_db": counted["gain_db"],
        f"{name}_over_nlmeans_stderr": counted["stderr_db"],
        f"{name}_wins": counted["won"],
    }


def main() -> None:
    from diip_deploy.bench.tune import tuning_crops
    from diip_deploy.runtime.images.codec import save_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a run's name in prior_curve.json (its label up to the first space)")
    ap.add_argument("--step", type=int, required=True)
    ap.add_argument("--held-out", action="store_true")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "prior_curve.json")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    point = find(json.loads(args.json.read_text())["points"], args.run, args.step, args.held_out)
    n = len(point["crops"])
    if args.held_out:
        crops = tuning_crops(n, 64, 0, True, saturated=0)
    else:  # prior_curve.py's validation crops: as many saturated ones as ordinary
        crops = tuning_crops(n // 2, 64, 0, False, saturated=n - n // 2)
    if [name for name, _ in crops] != point["crops"]:
        raise SystemExit("the point's crops are not the ones prior_curve.py draws for this split and count")
    baseline = nlmeans_crops(crops, noisy(crops))
    result = {
        "tool": "bench/prior_nlmeans.py",
        "point": f"{point['label']} step {point['step']}",
        "task": point["task"],
        "split": point["split"],
        "crops": n,
        "start_seeds": point.get("start_seeds", 1),
        "nlmeans_mean_psnr": round(float(np.mean(baseline)), 3),
        **against("checkpoint", point["psnr"], baseline),
        **against("shipped_then", point["shipped_psnr"], baseline),
        "nlmeans_psnr": baseline,
    }
    if args.out:
        save_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "nlmeans_psnr"}, indent=1))


if __name__ == "__main__":
    main()
