"""The prior's learning curve as a picture for the model card (issue 27): validation DIIP
PSNR against CPU-hours, one line per training run, from bench/results/prior_curve.json.

Plots each point's gain over the shipped prior restoring the same crops from the same
starting noises in the same run, so points measured with different seed counts or crops
still compare; the shipped prior is the zero line, marked at its own CPU-hours.  Only
points measured under the shipped defaults of issue 26 are drawn: on validation crops as
filled markers joined by a line, on held-out crops as hollow markers in the run's colour
(whether the gain carries to photos the run never saw).

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
from prior_curve import SHIPPED_CPU_HOURS, on_split, run_name  # noqa: E402

DEFAULTS_TAG = "lr 0.1, cap 30, --clamp-gradient straight"


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
    fig, ax = plt.subplots(figsize=(10.0, 4.4), dpi=100)
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
    fig.tight_layout()
    fig.savefig(args.out)
    legend = ax.get_legend_handles_labels()[1]
    print(json.dumps({"out": str(args.out), "runs": runs, "held_out": held, "legend": legend}, indent=1))


if __name__ == "__main__":
    main()
