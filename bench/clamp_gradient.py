"""The clamp's gradient, mask against straight-through (issue 26), on validation crops with
ordinary and saturated colours from the training photos, as diip-run restores them.

Per crop (noise σ25): the shipped defaults with ``--clamp-gradient mask`` (what diip-run
returns today, guard included) and with ``straight``, beside a 150-evaluation run with the
slope stop (the issue's reference); PSNR, evaluations to the stop, and the largest error
of a channel's mean (0..255).  Quality only: nothing here is timed.

    python bench/clamp_gradient.py --json bench/results/clamp_gradient.json --picture bench/results/clamp_gradient.png
    python bench/clamp_gradient.py --photo opencv/home    # the held-out 512x384 photo, both, side by side

``--photo`` restores a held-out photo with noise σ25 as diip-run does (backend auto, the
shipped defaults), once with each clamp gradient, alternating in one run, and records
time and PSNR under ``photo`` in the JSON (pause every other job while it runs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RUNS = {
    "mask": {"clamp_gradient": "mask"},
    "straight": {"clamp_gradient": "straight"},
    "reference_150_slope": {"clamp_gradient": "mask", "max_iters": 150, "stop": "slope", "guard_at": 0},
}


def crops(n_plain: int, n_windows: int, n_recoloured: int, size: int) -> List[Any]:
    from diip_deploy.bench.saturated import saturated_crops
    from diip_deploy.bench.tune import validation_crops

    plain = [(name, "plain", c) for name, c in validation_crops(n_plain, size, 0)]
    return plain + [(name, "saturated", c) for name, c in saturated_crops(n_windows, n_recoloured, size)]


def run(export: Path, threads: int, n_plain: int, n_windows: int, n_recoloured: int) -> Dict[str, Any]:
    from diip_deploy.bench.degrade import TASKS
    from diip_deploy.bench.metrics import psnr
    from diip_deploy.bench.saturated import channel_mean_error
    from diip_deploy.runtime.restorer import Restorer

    rows = []
    restorers = {k: Restorer(export, "ort-cpu", threads, **opts) for k, opts in RUNS.items()}
    for i, (name, kind, clean) in enumerate(crops(n_plain, n_windows, n_recoloured, 64)):
        y = TASKS["noise25"](clean, seed=i).astype(np.float32)
        row: Dict[str, Any] = {"crop": name, "kind": kind, "input_psnr": round(psnr(clean, y), 3)}
        for k, r in restorers.items():
            out, rep = r.restore_array(y)
            row[k] = {
                "psnr": round(psnr(clean, out), 3),
                "evaluations": rep["iterations_run"],
                "stop": rep["stop_reason"],
                "channel_mean_error": round(channel_mean_error(out, clean), 2),
                "out": out,
            }
        print(
            f"{name:48s} {kind:9s} in {row['input_psnr']:.2f} "
            + " ".join(f"{k} {row[k]['psnr']:.2f}/{row[k]['channel_mean_error']:.1f}" for k in RUNS),
            flush=True,
        )
        rows.append((clean, y, row))
    for r in restorers.values():
        r.close()
    return {"rows": rows}


def summary(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for kind in ("plain", "saturated", "all"):
        sel = [r for r in rows if kind == "all" or r["kind"] == kind]
        out[kind] = {
            k: {
                "mean_psnr": round(float(np.mean([r[k]["psnr"] for r in sel])), 3),
                "median_evaluations": float(np.median([r[k]["evaluations"] for r in sel])),
                "max_channel_mean_error": max(r[k]["channel_mean_error"] for r in sel),
                "worst_below_reference_db": round(max(r["reference_150_slope"]["psnr"] - r[k]["psnr"] for r in sel), 3),
            }
            for k in RUNS
        }
    return out


def picture(triples: List[Any], path: Path) -> None:
    """Rows of clean | noisy | mask | straight | reference, saturated crops first."""
    from PIL import Image

    triples = sorted(triples, key=lambda t: t[2]["kind"] != "saturated")
    size = triples[0][0].shape[0]
    sheet = Image.new("RGB", (5 * size, len(triples) * size))
    for j, (clean, y, row) in enumerate(triples):
        for i, img in enumerate([clean, y] + [row[k]["out"] for k in RUNS]):
            sheet.paste(Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)), (i * size, j * size))
    sheet.save(path)


def photo(export: Path, name: str, threads: int) -> Dict[str, Any]:
    import time

    from diip_deploy.bench.degrade import TASKS
    from diip_deploy.bench.metrics import psnr
    from diip_deploy.runtime.restorer import Restorer
    from diip_deploy.train.photos import load_photos

    clean = load_photos()[name].astype(np.float64)
    y = TASKS["noise25"](clean, seed=0).astype(np.float32)
    out: Dict[str, Any] = {"photo": name, "size": list(clean.shape[:2]), "input_psnr": round(psnr(clean, y), 3)}
    for mode in ("mask", "straight"):
        with Restorer(export, "auto", threads, clamp_gradient=mode) as r:
            t0 = time.perf_counter()
            restored, rep = r.restore_array(y)
            seconds = time.perf_counter() - t0
            out["backend"] = f"{r.backend} {r.settings.precision}"
        out[mode] = {"psnr": round(psnr(clean, restored), 3), "seconds": round(seconds, 1), "stop": rep["stop_reason"]}
        print(mode, out[mode], flush=True)
    out["time_ratio_straight_over_mask"] = round(out["straight"]["seconds"] / out["mask"]["seconds"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plain", type=int, default=8)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--recoloured", type=int, default=8)
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "clamp_gradient.json")
    ap.add_argument("--picture", type=Path, default=None)
    ap.add_argument("--photo", default=None, help="a held-out photo to restore whole with each clamp gradient")
    args = ap.parse_args()
    if args.photo:
        result = json.loads(args.json.read_text()) if args.json.is_file() else {}
        result["photo"] = photo(args.export, args.photo, args.threads)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result["photo"], indent=1))
        return
    triples = run(args.export, args.threads, args.plain, args.windows, args.recoloured)["rows"]
    if args.picture:
        picture(triples, args.picture)
    rows = [{**row, **{k: {f: v for f, v in row[k].items() if f != "out"} for k in RUNS}} for _, _, row in triples]
    result = {"task": "noise25", "backend": "ort-cpu fp32", "runs": RUNS, "summary": summary(rows), "crops": rows}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
