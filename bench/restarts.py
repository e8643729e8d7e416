"""--restarts K against its cost (issue: auto-stop), on the tuning crops of the training
photos (``--held-out`` for the held-out ones), each crop restored as ``diip-run`` would:
the manifest's defaults, one 64x64 tile, K restarts batched and averaged, one stop.
Writes JSON: per task and K, mean input / restored PSNR, stop iteration, tile-iterations
and seconds; K values alternate crop by crop, so machine noise hits them alike.

    python bench/restarts.py --n 6 --k 1,3 --json bench/results/restarts.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from diip_deploy.bench.degrade import TASKS
    from diip_deploy.bench.metrics import psnr
    from diip_deploy.bench.report import emit
    from diip_deploy.bench.tune import TUNE_TASKS, validation_crops
    from diip_deploy.runtime.restorer import Restorer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", default=str(REPO / "models" / "default-export"))
    p.add_argument("--n", type=int, default=6, help="crops per task")
    p.add_argument("--k", default="1,3", help="restart counts to compare")
    p.add_argument("--tasks", default=",".join(TUNE_TASKS))
    p.add_argument("--held-out", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    ks = [int(k) for k in a.k.split(",")]
    restorers = {k: Restorer(a.export, "ort-cpu", a.threads, restarts=k) for k in ks}
    size = restorers[ks[0]].tiling.tile_size
    crops = validation_crops(a.n, size, 0, held_out=a.held_out)
    rows = {}
    for task in a.tasks.split(","):
        per = {k: {"input": [], "restored": [], "stop": [], "tile_iterations": [], "seconds": []} for k in ks}
        for i, (_name, clean) in enumerate(crops):
            y = TASKS[task](clean, seed=i)
            for k in ks:
                t0 = time.perf_counter()
                out, rep = restorers[k].restore_array(y.astype(np.float32))
                m = per[k]
                m["seconds"].append(time.perf_counter() - t0)
                m["input"].append(psnr(clean, y))
                m["restored"].append(psnr(clean, out))
                m["stop"].append(rep["stop_iteration"])
                m["tile_iterations"].append(rep["iterations_run"])
            print(
                f"{task} {i + 1}/{len(crops)}: " + ", ".join(f"K={k} {per[k]['restored'][-1]:.2f} dB" for k in ks),
                file=sys.stderr,
            )
        rows[task] = {str(k): {key: round(float(np.mean(v)), 3) for key, v in m.items()} for k, m in per.items()}
        base = rows[task][str(ks[0])]
        for k in ks[1:]:
            r = rows[task][str(k)]
            r["gain_db"] = round(r["restored"] - base["restored"], 3)
            r["time_ratio"] = round(r["seconds"] / base["seconds"], 3)
    report = {
        "benchmark": "restarts",
        "export": a.export,
        "crops_per_task": a.n,
        "crop_size": size,
        "split": "held-out photos" if a.held_out else "training photos (tuning crops)",
        "defaults": restorers[ks[0]].manifest.defaults,
        "k": ks,
        "tasks": rows,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    for r in restorers.values():
        r.close()
    emit(report, a.json)


if __name__ == "__main__":
    main()
