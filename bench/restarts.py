"""--restarts K against its cost (issue: auto-stop), on the tuning crops of the training
photos (``--held-out`` for the held-out ones), each crop restored as ``diip-run`` would:
the manifest's defaults, one 64x64 tile, K restarts batched and averaged, one stop, the
residual guard.  Writes JSON: per task and K, mean input / restored PSNR, stop iteration,
tile-iterations, seconds and crops handed back by the guard, and each K's gain over the
first crop for crop (mean +- standard error, crops won); K values alternate crop by crop,
so machine noise hits them alike.  ``--photo NAME`` instead restores one held-out photo
at ``--size`` per task and K as diip-run does (``--backend``, auto by default), the K
values taking turns ABBA over ``--repeats`` rounds: the photo time a user pays for K.

    python bench/restarts.py --n 6 --k 1,3 --json bench/results/restarts.json
    python bench/restarts.py --photo opencv/home --k 1,2 --tasks noise25 --json F
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def photo_rows(a, ks) -> dict:
    """Per task, each K's photo runs (ABBA over ``a.repeats`` rounds): median seconds,
    PSNR, and the time and PSNR against the first K."""
    from cpu import SEEDS, photo

    from diip_deploy.bench.cpu_speed import alternating_runs, photo_row
    from diip_deploy.bench.degrade import TASKS

    img = photo(a.photo, a.size)
    rows = {}
    for i, task in enumerate(a.tasks.split(",")):
        damaged = TASKS[task](img, seed=SEEDS.get(task, i)).astype(np.float32)

        def restored(k: str) -> dict:
            return photo_row(a.export, img, damaged, a.backend, a.threads or 2, {"restarts": int(k)})

        rows[task] = alternating_runs(
            restored,
            [str(k) for k in ks],
            a.repeats,
            ("seconds", "output_psnr", "input_psnr", "backend", "tiles"),
            on_run=lambda k, kept: print(
                f"{task} K={k}: {kept['seconds']:.1f} s, {kept['output_psnr']:.2f} dB", file=sys.stderr
            ),
        )
        base = rows[task][str(ks[0])]
        for k in ks[1:]:
            r = rows[task][str(k)]
            r["time_ratio"] = round(r["seconds"] / base["seconds"], 3)
            r["gain_db"] = round(r["output_psnr"] - base["output_psnr"], 3)
    return rows


def main() -> None:
    from diip_deploy.bench.degrade import TASKS
    from diip_deploy.bench.metrics import gain_summary, psnr
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
    p.add_argument("--photo", default=None, help="a held-out photo to time instead of crops (e.g. opencv/home)")
    p.add_argument("--size", default="512x384", help="the photo's size")
    p.add_argument("--backend", default="auto", help="the photo's backend")
    p.add_argument("--repeats", type=int, default=2, help="photo runs per K, the order alternating")
    a = p.parse_args()
    ks = [int(k) for k in a.k.split(",")]
    if a.photo:
        emit(
            {
                "benchmark": "restarts (photo)",
                "export": a.export,
                "photo": a.photo,
                "size": a.size,
                "k": ks,
                "tasks": photo_rows(a, ks),
                "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            },
            a.json,
        )
        return
    restorers = {k: Restorer(a.export, "ort-cpu", a.threads, restarts=k) for k in ks}
    size = restorers[ks[0]].tiling.tile_size
    crops = validation_crops(a.n, size, 0, held_out=a.held_out)
    rows = {}
    for task in a.tasks.split(","):
        per = {
            k: {"input": [], "restored": [], "stop": [], "tile_iterations": [], "seconds": [], "handed_back": []}
            for k in ks
        }
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
                m["handed_back"].append(rep.get("guard", {}).get("reverted_to_input", 0))
            print(
                f"{task} {i + 1}/{len(crops)}: " + ", ".join(f"K={k} {per[k]['restored'][-1]:.2f} dB" for k in ks),
                file=sys.stderr,
            )
        rows[task] = {
            str(k): {key: round(float(np.sum(v) if key == "handed_back" else np.mean(v)), 3) for key, v in m.items()}
            for k, m in per.items()
        }
        base = rows[task][str(ks[0])]
        for k in ks[1:]:
            r = rows[task][str(k)]
            r["gain"] = gain_summary(per[k]["restored"], per[ks[0]]["restored"])
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
