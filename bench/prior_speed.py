"""The speed side of issue 27's architecture comparison: a candidate UNet's call time on
this CPU beside the shipped one's, in one run, with parameters and GFLOP per tile.

Each ``--work`` is a ``diip-train`` checkpoint folder; its EMA weights are exported as
``bench/prior_curve.py`` does (the shipped chain and defaults).  The exports take turns,
round after round, one UNet call of 8 tiles of the tile size each (bench/cpu.py's
``unet`` row, ONNX Runtime fp32); the weights do not change the time, so any checkpoint of
a candidate times it.  Quality per CPU millisecond is then prior_curve.py's PSNR over
these milliseconds.

    python bench/prior_speed.py --work ~/diip-cache/runs/c16-4lvl.work --json bench/results/prior_speed.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from prior_curve import SHIPPED, export_checkpoint


def parameters(export: Path) -> int:
    from diip_deploy.manifest import load_manifest

    return int(load_manifest(export).data["model"]["parameters"])


def timed(exports: Dict[str, Path], threads: int, rounds: int) -> Dict[str, Dict[str, Any]]:
    """Milliseconds per UNet call of 8 tiles, the exports taking turns each round."""
    import time

    from diip_deploy.bench.cpu_speed import count_flops
    from diip_deploy.manifest import load_manifest
    from diip_deploy.runtime.backends.cpu_variants import unet_feed
    from diip_deploy.runtime.backends.select import make_runner

    manifests = {k: load_manifest(p) for k, p in exports.items()}
    feeds = {k: unet_feed(m, 8) for k, m in manifests.items()}
    runners = {k: make_runner(m, "ort-cpu", "unet", threads).activate() for k, m in manifests.items()}
    for k, r in runners.items():
        r.infer(feeds[k])  # warm-up
    times: Dict[str, List[float]] = {k: [] for k in exports}
    for _ in range(rounds):
        for k, r in runners.items():
            t0 = time.perf_counter()
            r.infer(feeds[k])
            times[k].append(time.perf_counter() - t0)
    rows = {}
    for k, m in manifests.items():
        runners[k].deactivate()
        gflop = count_flops(str(m.graph_path("unet")), feeds[k]) / 1e9
        rows[k] = {
            "parameters": parameters(exports[k]),
            "gflop_per_tile": round(gflop / 8, 2),
            "ms_per_call_of_8_tiles": round(float(np.median(times[k])) * 1000, 1),
        }
    first = next(iter(rows.values()))["ms_per_call_of_8_tiles"]
    for row in rows.values():
        row["time_vs_shipped"] = round(row["ms_per_call_of_8_tiles"] / first, 3)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, nargs="+", required=True, help="diip-train --work folders")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        exports = {"shipped": SHIPPED}
        made = {}
        for work in args.work:
            out = Path(tmp) / work.name
            made[work.name] = export_checkpoint(work, out)["settings"]
            exports[work.name] = out / "export"
        rows = timed(exports, args.threads, args.rounds)
    for name, settings in made.items():
        rows[name]["channels"] = settings["channels"]
        rows[name]["layers_per_block"] = settings.get("layers_per_block", 1)
    result = {"tool": "bench/prior_speed.py", "backend": "ort-cpu fp32", "threads": args.threads, "rows": rows}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
