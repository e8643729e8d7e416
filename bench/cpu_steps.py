"""DDIM steps S on region-sized training crops (issue 18): does a shorter chain keep the picture?

Each UNet call saved per iteration is a fifth of a CPU iteration with the shipped S = 5.
The runtime computes the chain from the manifest's timesteps and alphas, and the UNet
takes the timestep as an input, so another S needs no new graph: this copies the export
with another chain in its manifest (alphas of the shipped model's scheduler, linear betas
1e-4..0.02 over 1000, at those timesteps) and
restores 160x160 crops of training photos (noise σ25) as ``diip-run`` does (one region,
no stop, no early guard), keeping the PSNR per iteration.

    python bench/cpu_steps.py --out bench/results/cpu_steps.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHAINS = "800-600-400-200-0,800-500-200-0,800-400-0,500-0,800-0"


def export_with_chain(export: Path, timesteps: list, into: Path) -> Path:
    """A copy of ``export`` whose manifest holds another chain (graphs with the chain baked
    in are dropped; the runtime then uses the per-step UNet graph)."""
    from diip_deploy.manifest import read_data, write_manifest
    from diip_deploy.schedule import linear_alphas_cumprod

    out = into / "-".join(map(str, timesteps))
    shutil.copytree(export, out)
    data = read_data(out)
    alphas = linear_alphas_cumprod()
    data["chain"].update(
        steps=len(timesteps), timesteps=timesteps, alphas_cumprod=[float(alphas[t]) for t in timesteps]
    )
    data["graphs"] = {k: v for k, v in data["graphs"].items() if "chain" not in v}
    write_manifest(out, data)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--chains", default=CHAINS, help="timesteps joined by '-', chains by ','")
    ap.add_argument("--photos", default="matplotlib/grace_hopper,opencv/Blender_Suzanne1")
    ap.add_argument("--crop", type=int, default=160)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cpu_steps.json")
    args = ap.parse_args()

    from diip_deploy.bench.degrade import TASKS
    from diip_deploy.bench.metrics import psnr
    from diip_deploy.runtime.restorer import Restorer
    from diip_deploy.train.photos import training_photos

    names = args.photos.split(",")
    train = training_photos(names)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for text in args.chains.split(","):
            ts = [int(t) for t in text.split("-")]
            export = export_with_chain(args.export, ts, Path(tmp))
            with Restorer(export, "ort-cpu", args.threads, stop="none", max_iters=args.iters, guard_at=0) as r:
                for i, name in enumerate(names):
                    clean = train[name][: args.crop, : args.crop].astype(np.float64)
                    damaged = TASKS["noise25"](clean, seed=i).astype(np.float32)
                    layout = r.layout(damaged)
                    h, w = clean.shape[:2]
                    curve = []

                    def keep(info, curve=curve, clean=clean, h=h, w=w):
                        img = info["image"][0][:, :h, :w].transpose(1, 2, 0)
                        curve.append(round(psnr(clean, np.clip((img + 1) / 2, 0, 1)), 3))

                    t0 = time.perf_counter()
                    r.restore_unit(layout, 0, keep)
                    row = {
                        "timesteps": ts,
                        "photo": name,
                        "input_psnr": round(psnr(clean, damaged), 3),
                        "psnr_at": {k: curve[k - 1] for k in (20, 40, 60, 80, 100) if k <= len(curve)},
                        "best": [int(np.argmax(curve)) + 1, max(curve)],
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    args.out.write_text(
        json.dumps({"task": "noise25", "crop": args.crop, "iters": args.iters, "rows": rows}, indent=1) + "\n"
    )
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
