"""The residual guard's threshold (issue: auto-stop): restore tuning crops as diip-run does
(the manifest's defaults, guard off), record per crop the input and restored PSNR and the
residual's lag-one correlation, then score every threshold: a crop over it gets its input
back.  ``--split held-out`` reports on the held-out photos; choose on the training ones.

    python bench/guard.py --n 12 --rows cache/guard_train.json --json bench/results/guard.json
    python bench/guard.py --n 8 --split held-out --rows cache/guard_held.json --json bench/results/guard_heldout.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 1.0)


def record(export: str, n: int, held_out: bool, threads: int) -> List[Dict[str, Any]]:
    from diip_deploy.bench.degrade import TASKS
    from diip_deploy.bench.metrics import psnr
    from diip_deploy.bench.tune import TUNE_TASKS, validation_crops
    from diip_deploy.runtime.optimise.guard import residual_correlation
    from diip_deploy.runtime.restorer import Restorer

    rows = []
    with Restorer(export, "ort-cpu", threads, batch=16, residual_guard=1.0) as r:
        crops = validation_crops(n, r.tiling.tile_size, 0, held_out=held_out)
        for task in TUNE_TASKS:
            for i, (name, clean) in enumerate(crops):
                y = TASKS[task](clean, seed=i).astype(np.float32)
                if not np.isfinite(psnr(clean, y)):
                    continue  # undamaged (a flat patch): nothing to judge
                out, rep = r.restore_array(y)
                rho = residual_correlation(out.transpose(2, 0, 1), y.transpose(2, 0, 1))
                rows.append(
                    {
                        "task": task,
                        "crop": name,
                        "input": psnr(clean, y),
                        "restored": psnr(clean, out),
                        "correlation": rho,
                        "stop": rep["stop_iteration"],
                    }
                )
                print(
                    f"{task} {i}: {rows[-1]['input']:.2f} -> {rows[-1]['restored']:.2f} dB, correlation {rho:.3f}",
                    file=sys.stderr,
                )
    return rows


def summarise(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per threshold and task: mean PSNR with the guard, its margin over the input, and
    how many crops got their input back."""
    out: Dict[str, Any] = {}
    for th in THRESHOLDS:
        per = {}
        for task in sorted({r["task"] for r in rows}):
            rs = [r for r in rows if r["task"] == task]
            kept = [r["input"] if r["correlation"] > th else r["restored"] for r in rs]
            per[task] = {
                "input": round(float(np.mean([r["input"] for r in rs])), 3),
                "guarded": round(float(np.mean(kept)), 3),
                "margin_db": round(float(np.mean(kept) - np.mean([r["input"] for r in rs])), 3),
                "reverted": int(sum(r["correlation"] > th for r in rs)),
                "crops": len(rs),
            }
        out["off" if th >= 1.0 else str(th)] = per
    return out


def main() -> None:
    from diip_deploy.bench.report import emit

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", default=str(REPO / "models" / "default-export"))
    ap.add_argument("--n", type=int, default=12, help="crops per task")
    ap.add_argument("--split", choices=("training", "held-out"), default="training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=Path, required=True, help="per-crop rows: read if present, else recorded here")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if a.rows.is_file():
        rows = json.loads(a.rows.read_text())
    else:
        rows = record(a.export, a.n, a.split == "held-out", a.threads)
        a.rows.parent.mkdir(parents=True, exist_ok=True)
        a.rows.write_text(json.dumps(rows))
    emit(
        {
            "benchmark": "residual guard",
            "export": a.export,
            "split": a.split,
            "crops_per_task": a.n,
            "thresholds": summarise(rows),
            "rows": rows,
        },
        a.json,
    )


if __name__ == "__main__":
    main()
