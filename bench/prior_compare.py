"""Two points of the prior's learning curve compared crop for crop (issue 27).

Each point of bench/results/prior_curve.json holds its per-crop PSNR (each crop averaged
over its starting noises); two points measured on the same crops compare crop for crop,
which is far tighter than their means, since a crop's difficulty dominates its score.
Prints the mean gain of B over A, its standard error and the crops B wins.

    python bench/prior_compare.py --a "direct-more" 4000 --b "deep2" 3000 --held-out
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from prior_curve import on_split, run_name

from diip_deploy.bench.metrics import gain_summary

REPO = Path(__file__).resolve().parents[1]


def find(points: List[Dict[str, Any]], run: str, step: int, held_out: bool) -> Dict[str, Any]:
    """The last point of run ``run`` (``run_name``) at ``step`` on that split."""
    hits = [p for p in points if run_name(p["label"]) == run and p.get("step") == step and on_split(p, held_out)]
    if not hits:
        raise SystemExit(f"no point of {run!r} at step {step} ({'held-out' if held_out else 'validation'} crops)")
    return hits[-1]


def compare(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    if a["crops"] != b["crops"] or a.get("start_seeds") != b.get("start_seeds"):
        raise SystemExit("the two points were measured on other crops or starting noises: no crop-for-crop comparison")
    gain = np.asarray(b["psnr"]) - np.asarray(a["psnr"])
    counted = gain_summary(b["psnr"], a["psnr"])
    return {
        "a": f"{a['label']} step {a['step']}",
        "b": f"{b['label']} step {b['step']}",
        "a_mean": a["mean_psnr"],
        "b_mean": b["mean_psnr"],
        "gain_db": counted["gain_db"],
        "gain_stderr": counted["stderr_db"],
        "b_wins": counted["won"],
        "crops": counted["of"],
        "gain_range": [round(float(gain.min()), 2), round(float(gain.max()), 2)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", nargs=2, metavar=("RUN", "STEP"), required=True)
    ap.add_argument("--b", nargs=2, metavar=("RUN", "STEP"), required=True)
    ap.add_argument("--held-out", action="store_true")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "prior_curve.json")
    args = ap.parse_args()
    points = json.loads(args.json.read_text())["points"]
    a = find(points, args.a[0], int(args.a[1]), args.held_out)
    b = find(points, args.b[0], int(args.b[1]), args.held_out)
    print(json.dumps(compare(a, b), indent=1))


if __name__ == "__main__":
    main()
