"""Saturated colours, looked at: the saturated validation crops restored by two exports
under their own defaults, as diip-run returns them, side by side in one picture (clean |
noisy | each export), with each export's mean PSNR and worst channel-mean error.  Quality
only.

    python bench/saturated_sheet.py --export OLD --export models/default-export \
        --out bench/results/chain_timesteps/saturated_old_new.png

``--examples`` lays out the shipped examples/ instead (each damaged photo beside its clean
original in examples/clean/), every task as diip-run returns it, residual guard included.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from diip_deploy.bench.degrade import TASKS
from diip_deploy.bench.metrics import psnr
from diip_deploy.bench.saturated import channel_mean_error, saturated_crops
from diip_deploy.runtime.restorer import Restorer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example_pairs() -> tuple:
    """examples/<photo>_<task>.png beside examples/clean/<photo>.png: (names and clean), damaged."""
    from diip_deploy.runtime.images.codec import load_image

    damaged = sorted(EXAMPLES.glob("*_*.png"))
    crops = [(p.stem, load_image(EXAMPLES / "clean" / f"{p.stem.split('_')[0]}.png")) for p in damaged]
    return crops, [load_image(p) for p in damaged]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, action="append", required=True, help="one per column, in order")
    ap.add_argument("--seed", type=int, default=0, help="picks the crops (diip-tune record's saturated ones)")
    ap.add_argument("--n", type=int, default=8, help="saturated crops: half windows, half recoloured")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--examples", action="store_true", help="the shipped examples/ instead of the saturated crops")
    ap.add_argument("--out", type=Path, required=True, help="the PNG; its numbers go beside it as .json")
    args = ap.parse_args()
    if args.examples:
        crops, noisy = example_pairs()
    else:
        crops = saturated_crops(args.n // 2, args.n - args.n // 2, 64, args.seed)
        noisy = [TASKS["noise25"](clean, seed=i).astype(np.float32) for i, (_, clean) in enumerate(crops)]
    columns, scores = [], {}
    for export in args.export:
        with Restorer(export, "ort-cpu", args.threads) as r:
            restored = [r.restore_array(y, seed=0)[0] for y in noisy]
        columns.append(restored)
        rows = [(psnr(c, o), channel_mean_error(o, c)) for (_, c), o in zip(crops, restored)]
        scores[str(export)] = {
            "mean_psnr": round(float(np.mean([p for p, _ in rows])), 2),
            "worst_channel_error": round(float(max(e for _, e in rows)), 2),
            "crops": {name: [round(p, 2), round(e, 2)] for (name, _), (p, e) in zip(crops, rows)},
        }
        print(str(export), scores[str(export)]["mean_psnr"], scores[str(export)]["worst_channel_error"])
    sheet = np.concatenate(
        [np.concatenate([c, y, *(col[i] for col in columns)], 1) for i, ((_, c), y) in enumerate(zip(crops, noisy))], 0
    )
    picture = Image.fromarray((np.clip(sheet, 0, 1) * 255).round().astype(np.uint8))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(args.out)
    damage = "damaged" if args.examples else "noisy"
    args.out.with_suffix(".json").write_text(json.dumps({"columns": f"clean | {damage} | exports", **scores}, indent=1))


if __name__ == "__main__":
    main()
