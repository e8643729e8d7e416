"""Region-sized histories on training photos, for the CPU speed defaults (issue 18).

The shipped stop was tuned on 64x64 crops; a photo's region stops on the summed loss of
its tiles, which is smoother.  ``record`` restores region-sized crops of *training* photos
(never the held-out ones) as ``diip-run`` does (image scope, joint loop) to a cap with no
stop, once per (learning rate, tile overlap), and keeps per iteration the region's summed
loss, Laplacian variance, PSNR against the clean crop, the residual guard's correlation
and the seam ratio.  ``choose`` replays the runtime's own ``decide`` and guard rule over
those histories for each candidate and writes the scores beside the choice.

    python bench/cpu_tune.py record --out bench/results/cpu_tune_histories.json
    python bench/cpu_tune.py choose --histories bench/results/cpu_tune_histories.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def record(args) -> dict:
    from diip_deploy.bench.degrade import TASKS
    from diip_deploy.bench.metrics import psnr
    from diip_deploy.bench.tiled import seam_ratio
    from diip_deploy.runtime.optimise.guard import residual_correlation
    from diip_deploy.runtime.restorer import Restorer
    from diip_deploy.train.photos import load_photos, split

    train, _ = split(load_photos())
    names = args.photos.split(",")
    for n in names:
        if n not in train:
            raise SystemExit(f"{n} is not a training photo: choose on training photos only")
    runs = []
    for lr, overlap in [(float(a), int(b)) for a, b in (c.split("@") for c in args.configs.split(","))]:
        r = Restorer(
            args.export, "ort-cpu", args.threads, stop="none", max_iters=args.iters, lr=lr, tile_overlap=overlap
        )
        for task in args.tasks.split(","):
            for i, name in enumerate(names):
                clean = train[name][: args.crop, : args.crop].astype(np.float64)
                damaged = TASKS[task](clean, seed=i).astype(np.float32)
                layout = r.layout(damaged)
                h, w = clean.shape[:2]
                dmg = layout.blend(range(len(layout.plan)), layout.tiles.__getitem__)
                rows = {"psnr": [], "corr": [], "seam": []}

                def keep(info, layout=layout, clean=clean, dmg=dmg, rows=rows, h=h, w=w):
                    img = info["image"][0]
                    out = np.clip((img[:, :h, :w].transpose(1, 2, 0) + 1) / 2, 0, 1)
                    rows["psnr"].append(round(psnr(clean, out), 4))
                    rows["corr"].append(round(residual_correlation(img, dmg), 4))
                    k = int(info["k"][0])
                    rows["seam"].append(round(seam_ratio(out, layout.plan), 4) if k % 10 == 9 else None)

                t0 = time.perf_counter()
                res = r.restore_unit(layout, 0, keep)
                run = {
                    "task": task,
                    "photo": name,
                    "lr": lr,
                    "overlap": overlap,
                    "tiles": len(layout.plan),
                    "input_psnr": round(psnr(clean, damaged), 4),
                    "clean_seam": round(seam_ratio(clean, layout.plan), 4),
                    "loss": [round(x, 7) for x in res.history["loss"]],
                    "laplacian_var": [round(x, 7) for x in res.history["laplacian_var"]],
                    **rows,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
                runs.append(run)
                best = int(np.argmax(run["psnr"]))
                print(
                    json.dumps({k: v for k, v in run.items() if not isinstance(v, list)} | {"best": best}), flush=True
                )
                args.out.write_text(json.dumps({"iters": args.iters, "crop": args.crop, "runs": runs}) + "\n")
        r.close()
    return {"iters": args.iters, "crop": args.crop, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("record",))
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--photos", default="skimage/astronaut,skimage/motorcycle_left")
    ap.add_argument("--tasks", default="noise25,jpeg10")
    ap.add_argument("--configs", default="0.03@16,0.1@16,0.1@8", help="lr@overlap, comma separated")
    ap.add_argument("--crop", type=int, default=160)
    ap.add_argument("--iters", type=int, default=90)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cpu_tune_histories.json")
    args = ap.parse_args()
    record(args)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
