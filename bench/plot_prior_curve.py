"""The prior's learning curve as a picture for the model card (issue 27): validation DIIP
PSNR against CPU-hours, one line per training run, from bench/results/prior_curve.json.

Plots each point's gain over the shipped prior restoring the same crops from the same
starting noises in the same run, so points measured with different seed counts or crops
still compare; the shipped prior is the zero line, marked at its own CPU-hours.  Only
points measured under the shipped defaults of issue 26 are drawn: on validation crops as
filled markers joined by a line, on held-out crops as hollow markers in the run's colour
(whether the gain carries to photos the run never saw).

A second panel holds the points measured under the shipped chain (issue 26's timesteps,
``CHAIN_TAG``) on held-out crops: their baselines changed as priors shipped
(the first prior, then direct-more, then focus-new), so they are drawn as mean PSNR,
which compares across them because every such point restores the same 16 held-out crops
from the same 3 starting noises; non-local means on those inputs is the dashed line.

    python bench/plot_prior_curve.py            # writes models/default/learning_curve.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from prior_curve import BETAS_TAG, SHIPPED_CPU_HOURS, on_split, run_name  # noqa: E402

DEFAULTS_TAG = "lr 0.1, cap 30, --clamp-gradient straight"
CHAIN_TAG = "timesteps 700,450,250,100,20"  # the shipped chain since issue 26: the second panel


def series(points: List[dict], held_out: bool = False) -> Dict[str, List[Tuple[float, float]]]:
    """Run name -> [(CPU-hours, gain over the shipped prior in dB)], points under the shipped
    defaults only, on validation crops (or ``held_out`` ones), by ``run_name``."""
    runs: Dict[str, List[Tuple[float, float]]] = defaultdict(list)
    for p in points:
        if DEFAULTS_TAG not in p["task"] or not on_split(p, held_out):
            continue
        name = run_name(p["label"]) + (
            ", continued from the shipped prior" if "init from shipped" in p["label"] else ""
        )
        runs[name].append((p["cpu_hours"], p["mean_psnr"] - p["shipped_mean_psnr"]))
    return {k: sorted(v) for k, v in runs.items()}


def chain_series(points: List[dict], betas: bool = False) -> Tuple[Dict[str, List[Tuple[float, float]]], float | None]:
    """Run name -> [(CPU-hours, held-out mean PSNR)] for points under the shipped chain at
    torch's Adam betas (``betas``: at the shipped defaults' beta2 of 0.95 instead, which
    adds 0.12 dB on these crops, so its points lie on a curve of their own), and the
    NL-means PSNR on their inputs where recorded."""
    runs: Dict[str, List[Tuple[float, float]]] = defaultdict(list)
    nlmeans = None
    for p in points:
        if CHAIN_TAG in p["task"] and (BETAS_TAG in p["task"]) == betas and on_split(p, True):
            runs[run_name(p["label"])].append((p["cpu_hours"], p["mean_psnr"]))
            nlmeans = p.get("nlmeans_mean_psnr", nlmeans)
    return {k: sorted(v) for k, v in runs.items()}, nlmeans


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "prior_curve.json")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "default" / "learning_curve.png")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = json.loads(args.json.read_text())["points"]
    runs, held = series(points), series(points, held_out=True)
    chained, nlmeans = chain_series(points)
    chained_b2, _ = chain_series(points, betas=True)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(16.0, 4.6), dpi=100, width_ratios=(2, 1), layout="constrained")
    for name in list(runs) + [n for n in held if n not in runs]:  # a run measured only held out too
        colour = None
        if name in runs:
            pts = runs[name]
            (line,) = ax.plot([h for h, _ in pts], [g for _, g in pts], "o-", label=name)
            colour = line.get_color()
        if name in held:
            hx, hy = zip(*held[name])
            ax.plot(hx, hy, "o", mfc="none", color=colour, label=f"{name}: held-out crops")  # None: a colour of its own
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.plot([SHIPPED_CPU_HOURS], [0.0], "k*", ms=12, label="shipped prior")
    ax.set_xlabel("training CPU-hours")
    ax.set_ylabel("DIIP noise PSNR minus the shipped prior's (dB)")
    ax.set_title("noise σ25, the shipped DIIP defaults (filled: validation crops)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the points, not over them
    for name, pts in chained.items():
        ax2.plot([h for h, _ in pts], [v for _, v in pts], "o-", mfc="none", label=name)
    for name, pts in chained_b2.items():
        ax2.plot([h for h, _ in pts], [v for _, v in pts], "s-", label=f"{name}, beta2 0.95 (the shipped defaults)")
    if nlmeans is not None:
        ax2.axhline(nlmeans, color="grey", ls="--", lw=0.8, label=f"NL-means ({nlmeans:.2f})")
    ax2.set_xlabel("training CPU-hours")
    ax2.set_ylabel("held-out DIIP noise PSNR (dB)")
    ax2.set_title("chain t = 700 ... 20, cap 25: held-out crops", fontsize=10)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, loc="lower right")
    fig.savefig(args.out)
    legend = ax.get_legend_handles_labels()[1]
    report = {
        "out": str(args.out),
        "runs": runs,
        "held_out": held,
        "current_chain": chained,
        "current_chain_beta2_0.95": chained_b2,
        "legend": legend,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
