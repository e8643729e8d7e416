"""Recorded histories of one optimiser setting against another's on the same crops, as
diip-run returns them: each file replayed under the export's stop rule and residual guard
at each cap (``tune_scoring.per_crop``), crop for crop against the base file, per task.
The mean, the gain with its standard error, the crops won and the worst per-channel mean
error.  ``bench/warm_start.py`` compares raw PSNR at fixed evaluation counts; this one
compares what a user gets.  Quality only.

    python bench/replay_compare.py --base H_base.json --candidate H_b2_0.95.json --caps 25 30 \\
        --json bench/results/adam_beta2/compare_seed0.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]


def compare(base: Dict[str, Any], candidate: Dict[str, Any], rule: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per task: both sides' means as returned, the crop-for-crop gain, and the worst channel."""
    from diip_deploy.bench.metrics import gain_summary
    from diip_deploy.bench.tune_scoring import per_crop

    a = {(c["task"], c["crop"]): c for c in per_crop(base, rule)}
    b = {(c["task"], c["crop"]): c for c in per_crop(candidate, rule)}
    if set(a) != set(b):
        raise SystemExit("the two histories hold different crops: record both with the same --seed, --n and tasks")
    out: Dict[str, Dict[str, Any]] = {}
    for task in sorted({t for t, _ in a}):
        keys = [k for k in a if k[0] == task]
        ours, base_side = [b[k]["returned"] for k in keys], [a[k]["returned"] for k in keys]
        gain = gain_summary(ours, base_side)
        out[task] = {
            "returned": round(float(np.mean(ours)), 3),
            "base_returned": round(float(np.mean(base_side)), 3),
            "gain_db": gain["gain_db"],
            "stderr_db": gain["stderr_db"],
            "won": gain["won"],
            "crops": gain["of"],
            "handed_back": sum(not b[k].get("kept", True) for k in keys),
            "channel_max": round(float(max(b[k].get("channel_mean_error", 0.0) for k in keys)), 2),
            "base_channel_max": round(float(max(a[k].get("channel_mean_error", 0.0) for k in keys)), 2),
        }
    return out


def main(argv: Sequence[str] | None = None) -> None:
    from diip_deploy.bench.tune_cli import manifest_settings
    from diip_deploy.manifest import load_manifest

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--candidate", type=Path, nargs="+", required=True)
    ap.add_argument("--caps", type=int, nargs="+", default=[25])
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export", help="whose stop rule and guard")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    shipped = manifest_settings(load_manifest(args.export).data["defaults"])
    base = json.loads(args.base.read_text())
    result: Dict[str, Any] = {"tool": "bench/replay_compare.py", "base": args.base.name, "candidates": {}}
    for path in args.candidate:
        h = json.loads(path.read_text())
        rows: List[Dict[str, Any]] = []
        for cap in args.caps:
            if cap > h["settings"]["max_iters"] or cap > base["settings"]["max_iters"]:
                raise SystemExit(f"cap {cap} is past what {path.name} or {args.base.name} recorded")
            per_task = compare(base, h, {**shipped, "max_iters": cap})
            rows.append({"cap": cap, "tasks": per_task})
            for task, r in per_task.items():
                print(
                    f"{path.name:32s} cap {cap:3d} {task:8s} {r['returned']:.2f} against {r['base_returned']:.2f} dB, "
                    f"{r['gain_db']:+.2f} +- {r['stderr_db']:.2f}, won {r['won']}/{r['crops']}, "
                    f"worst channel {r['channel_max']:.2f} against {r['base_channel_max']:.2f}"
                )
        result["candidates"][path.name] = {"settings": h["settings"], "by_cap": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
