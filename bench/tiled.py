"""Tiled restoration benchmark (issue: real photos): quality and seams per stop rule,
peak memory, and tiled-vs-whole time.  Writes JSON (one section per mode) and pictures.

    python bench/tiled.py quality --photos opencv/home,skimage/coffee --tasks noise25,jpeg10,sr4
    python bench/tiled.py restore --photos skimage/coffee,sklearn/china --tasks noise25   # as diip-run does
    python bench/tiled.py memory            # diip-run on a 4000x3000 photo, --max-iters 2, peak RSS
    python bench/tiled.py time --size 256   # tiled vs whole image, s/iteration, as a ratio

Photos are the default model's held-out ones (models/fetch_photos.sh), at full size.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _load(out: Path) -> dict:
    return json.loads(out.read_text()) if out.is_file() else {"benchmark": "tiled"}


def _save(out: Path, report: dict) -> None:
    report["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def quality(args) -> dict:

    from diip_deploy.bench.degrade import TASKS
    from diip_deploy.bench.tiled import compare_stops, tile_histories
    from diip_deploy.runtime.images.codec import save_image
    from diip_deploy.runtime.restorer import Restorer
    from diip_deploy.train.photos import load_photos

    photos = load_photos()
    r = Restorer(args.export, "ort-cpu", args.threads, batch=args.batch)
    rule = r.settings
    rows = []
    for task in args.tasks.split(","):
        for i, name in enumerate(args.photos.split(",")):
            clean = photos[name].astype(np.float64)
            if args.crop:
                ch, cw = (int(v) for v in args.crop.split("x"))
                y0, x0 = (clean.shape[0] - ch) // 2, (clean.shape[1] - cw) // 2
                clean = clean[y0 : y0 + ch, x0 : x0 + cw]
            degraded = TASKS[task](clean, seed=i)
            hist = tile_histories(r, degraded.astype(np.float32), seed=0)
            if args.save_histories:  # for re-applying other stop rules offline (compare_stops)
                args.save_histories.mkdir(parents=True, exist_ok=True)
                np.savez(
                    args.save_histories / f"{task}_{name.replace('/', '_')}.npz",
                    xs=hist["xs"],
                    loss=hist["loss"],
                    laplacian_var=hist["laplacian_var"],
                    clean=clean,
                    degraded=degraded,
                )
            res = compare_stops(hist, clean, degraded, rule)
            stem = f"tiled_{task}_{name.replace('/', '_')}"
            pics = res.pop("images")
            if args.pictures:
                gap = np.ones((clean.shape[0], 8, 3))
                save_image(
                    args.out.parent / f"{stem}.png",
                    np.concatenate([degraded, gap, pics["per_tile"], gap, pics["per_image"], gap, clean], axis=1),
                )
            row = {"task": task, "photo": name, "size": list(clean.shape[:2]), **res}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "psnr_curve"}), flush=True)
    summary = {}
    for task in sorted({r_["task"] for r_ in rows}):
        tr = [x for x in rows if x["task"] == task]
        summary[task] = {
            k: {
                "psnr": round(float(np.mean([x[k]["psnr"] for x in tr])), 3),
                "seam_ratio": round(float(np.mean([x[k]["seam_ratio"] for x in tr])), 3),
            }
            for k in ("input", "per_tile", "per_image", "oracle")
        }
        summary[task]["images"] = len(tr)
    r.close()
    return {
        "settings": {
            **r.settings.as_dict(),
            "tile": r.tiling.tile_size,
            "overlap": r.tiling.overlap,
            "batch": args.batch,
            "export": str(args.export),
        },
        "summary": summary,
        "rows": rows,
    }


def restore(args) -> dict:
    """The shipped path as a user runs it (default settings, auto stop) on full-size photos:
    PSNR in and out, the seam ratio and the time, per photo and task."""
    from diip_deploy.bench.degrade import TASKS
    from diip_deploy.bench.metrics import psnr
    from diip_deploy.bench.tiled import seam_ratio
    from diip_deploy.runtime.restorer import Restorer
    from diip_deploy.train.photos import load_photos

    photos = load_photos()
    r = Restorer(args.export, args.backend, args.threads, batch=args.batch)
    rows = []
    for task in args.tasks.split(","):
        for i, name in enumerate(args.photos.split(",")):
            clean = photos[name].astype(np.float64)
            degraded = TASKS[task](clean, seed=i).astype(np.float32)
            t0 = time.perf_counter()
            out, rep = r.restore_array(degraded)
            row = {
                "task": task,
                "photo": name,
                "size": list(clean.shape[:2]),
                "tiles": rep["tiling"]["tiles"],
                "input_psnr": round(psnr(clean, degraded), 3),
                "output_psnr": round(psnr(clean, out), 3),
                "gain_db": round(psnr(clean, out) - psnr(clean, degraded), 3),
                "seam_ratio": round(seam_ratio(out, r.tiling.plan(*clean.shape[:2])), 3),
                "clean_seam_ratio": round(seam_ratio(clean, r.tiling.plan(*clean.shape[:2])), 3),
                "stop": rep["stop_iteration"],
                "stop_reason": rep["stop_reason"],
                "guard": rep.get("guard"),
                "defaults": r.manifest.defaults,
                "backend": f"{r.backend} {r.settings.precision}",
                "seconds": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    r.close()
    tasks = sorted({x["task"] for x in rows})
    return {
        "rows": rows,
        "mean_gain_db": {t: round(float(np.mean([x["gain_db"] for x in rows if x["task"] == t])), 3) for t in tasks},
    }


def memory(args) -> dict:
    from PIL import Image

    from diip_deploy.runtime.images.codec import save_image
    from diip_deploy.train.photos import load_photos

    base = load_photos()["opencv/home"]
    out = {"max_iters": args.max_iters, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for size, batch in ((args.small, args.batch), (args.small, args.batch * 4), (args.big, args.batch)):
            w, h = (int(v) for v in size.split("x"))
            path = Path(tmp) / f"photo_{w}x{h}.png"
            if not path.exists():
                big = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)) / 255.0
                save_image(path, np.clip(big + np.random.default_rng(0).normal(0, 25 / 255, big.shape), 0, 1))
                del big
            # one child process per run, so each peak is that run's own
            cmd = [
                sys.executable,
                "-c",
                "import sys, resource, subprocess; "
                "p = subprocess.run(sys.argv[1:]); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)",
                sys.executable,
                "-m",
                "diip_deploy.runtime.commands.cli",
                str(path),
                "--model",
                str(args.export),
                "--out",
                str(Path(tmp) / "out"),
                "--max-iters",
                str(args.max_iters),
                "--batch",
                str(batch),
                "--quiet",
                "--backend",
                "ort-cpu",
                "--threads",
                str(args.threads),
            ]
            t0 = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit(f"diip-run failed: {p.stderr.strip().splitlines()[-1]}")
            rep = json.loads((Path(tmp) / "out" / f"photo_{w}x{h}.json").read_text())
            run = {
                "size": [w, h],
                "batch": batch,
                "tiles": rep["tiling"]["tiles"],
                "peak_rss_mb": round(int(p.stdout.strip().splitlines()[-1]) / 1024, 1),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            out["runs"].append(run)
            print(json.dumps(run), flush=True)
    return out


def timing(args) -> dict:
    from diip_deploy.bench.tiled import time_tiled_vs_whole
    from diip_deploy.runtime.restorer import Restorer
    from diip_deploy.train.photos import load_photos

    img = load_photos()["opencv/home"][: args.size, : args.size].astype(np.float32)
    tiled = Restorer(args.export, "ort-cpu", args.threads, batch=args.batch)
    whole = Restorer(args.export, "ort-cpu", args.threads, tile=0)
    res = time_tiled_vs_whole(tiled, whole, img, args.iters, args.rounds)
    print(json.dumps(res), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("quality", "restore", "memory", "time"))
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--photos", default="opencv/home")
    ap.add_argument("--tasks", default="noise25")
    ap.add_argument("--crop", default=None, help="HxW centre crop of each photo (default: full size)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--backend", default="auto", help="restore: the backend a user's diip-run would pick")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pictures", action="store_true", help="save degraded | per-tile | per-image | clean strips")
    ap.add_argument("--save-histories", type=Path, default=None, help="folder for each run's recorded tiles (npz)")
    ap.add_argument("--small", default="1000x750")
    ap.add_argument("--big", default="4000x3000")
    ap.add_argument("--max-iters", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "tiled.json")
    args = ap.parse_args()
    report = _load(args.out)
    report[args.mode] = {"quality": quality, "restore": restore, "memory": memory, "time": timing}[args.mode](args)
    _save(args.out, report)


if __name__ == "__main__":
    main()
