"""CPU speed benchmark (issue 18): where the time goes, and a whole photo old vs new.

    python bench/cpu.py                     # every section, writes bench/results/cpu.json
    python bench/cpu.py --sections unet,iteration --out /tmp/cpu.json

Sections, each side by side in this one run (time nothing else while it runs):
  machine    numpy sgemm peak on these threads
  unet       one UNet call of 8 tiles per CPU variant: FLOPs from the graph, GFLOP/s
  iteration  the joint loop on a 16-tile region: UNet vs host ms per tile-iteration
  photo      a held-out 512x384 photo, sigma-25 noise and JPEG q10, with the defaults this
             issue started from (OLD) against the shipped ones: time, PSNR, stop, ETA
  estimate   a 12-megapixel photo's time with the shipped defaults, from the photo rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# The shipped defaults when issue 18 was filed (manifest of 2026-11-26), with the tile
# overlap they implied (a quarter of 64) and the backend they ran on.
OLD = {
    "backend": "ort-cpu",
    "options": {
        "precision": "fp32",
        "lr": 0.03,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "steps_per_eval": 1,
        "max_iters": 150,
        "stop": "slope",
        "eps": 1e-4,
        "slope_window": 20,
        "k_min": 50,
        "slope_min_iter": 0,
        "patience": 3,
        "slope_fit": "regression",
        "lap_window": 1,
        "residual_guard": 0.5,
        "guard_at": 0,
        "tile_overlap": None,  # a quarter of the tile: set from the export
        "batch": 8,
    },
}


# each task's damage seed, as in the first run (a task run alone gets the same damage)
SEEDS = {"noise25": 0, "jpeg10": 1}


def old_from_manifest(path: Path) -> dict:
    """OLD from an earlier manifest: its defaults, each passed as an explicit option so
    that none of this export's defaults fills in, a key it lacks at the settings' own
    default (an old manifest without ``clamp_gradient`` ran the mask)."""
    from diip_deploy.settings import RestoreSettings

    defaults = json.loads(Path(path).read_text())["defaults"]
    fields = RestoreSettings().as_dict()
    options = {k: defaults.get(k, fields[k]) for k in fields if k not in ("restarts", "seed", "precision", "batch")}
    return {"backend": "auto", "manifest": str(path), "options": {**options, "precision": "auto"}}


def photo(name: str, size: str) -> np.ndarray:
    from PIL import Image

    from diip_deploy.train.photos import load_photos

    img = load_photos()[name]
    w, h = (int(v) for v in size.split("x"))
    if img.shape[:2] != (h, w):
        img = np.asarray(Image.fromarray((img * 255).round().astype(np.uint8)).resize((w, h), Image.BICUBIC)) / 255.0
    return img.astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--sections", default="machine,unet,iteration,photo,estimate")
    ap.add_argument("--photo", default="opencv/home")
    ap.add_argument("--size", default="512x384")
    ap.add_argument("--tasks", default="noise25,jpeg10")
    ap.add_argument(
        "--reuse-old",
        default="",
        help="tasks whose OLD row is taken from the earlier run in --out (its date kept): the ratio then "
        "spans two runs, and says so",
    )
    ap.add_argument(
        "--old-manifest",
        type=Path,
        default=None,
        help="a manifest whose defaults are the OLD side of the photo rows (e.g. the shipped one before a change, "
        "from git show), run on this export's graphs; without it, the defaults issue 18 started from",
    )
    ap.add_argument(
        "--old-export",
        type=Path,
        default=None,
        help="the export the OLD side of the photo rows runs, its own chain and graphs (e.g. the shipped one "
        "before diip-export --rechain, from git archive; its manifest's defaults unless --old-manifest); "
        "without it, --export",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=6, help="iterations of the iteration section")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cpu.json")
    args = ap.parse_args()

    from diip_deploy.bench.cpu_speed import CPU_VARIANTS, iteration_rows, photo_row, sgemm_gflops, unet_rows
    from diip_deploy.bench.degrade import TASKS
    from diip_deploy.manifest import load_manifest
    from diip_deploy.runtime.backends.cpu_variants import machine_name
    from diip_deploy.runtime.backends.openvino import unavailable_reason
    from diip_deploy.runtime.images.tiling import plan_tiles
    from diip_deploy.runtime.restorer import Restorer

    sections = args.sections.split(",")
    manifest = load_manifest(args.export)
    OLD["options"]["tile_overlap"] = manifest.tile_size // 4
    old_manifest = args.old_manifest or (args.old_export / "manifest.json" if args.old_export else None)
    old = OLD if old_manifest is None else old_from_manifest(old_manifest)
    old_export = args.old_export or args.export
    variants = [v for v in CPU_VARIANTS if not (v.startswith("openvino") and unavailable_reason())]
    report = json.loads(args.out.read_text()) if args.out.is_file() else {"benchmark": "cpu"}
    report.update(
        machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
        cpus=os.cpu_count(),
        threads=args.threads,
        export=str(args.export.relative_to(REPO) if args.export.is_relative_to(REPO) else args.export),
    )

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")

    def show(name: str, value) -> None:
        report[name] = value
        print(json.dumps({name: value}), flush=True)
        save()

    peak = report.get("sgemm_gflops")
    if "machine" in sections or peak is None:
        peak = round(sgemm_gflops(), 1)
        show("sgemm_gflops", peak)
    if "unet" in sections:
        show("unet_call", unet_rows(manifest, variants, args.threads, 8, args.rounds, peak))
    img = photo(args.photo, args.size)
    if "iteration" in sections:
        region = img[:160, :160].astype(np.float32)  # 16 tiles at the old overlap, 9 at 8
        show("tile_iteration", iteration_rows(str(args.export), region, variants, args.threads, args.iters))
    if "photo" in sections:
        new = {"backend": "auto", "options": {}}
        with Restorer(args.export, "auto", args.threads) as r:
            new_settings = {k: v for k, v in r.settings.as_dict().items() if k in OLD["options"]}
            new_settings["tile_overlap"] = r.tiling.overlap
        tasks = args.tasks.split(",")
        # rows of tasks not run this time stay, each with the date it was measured
        before = {r["task"]: r for r in report.get("photo", {}).get("rows", [])}
        earlier = [r for t, r in before.items() if t not in tasks]
        reuse = set(filter(None, args.reuse_old.split(",")))
        rows = []
        for i, task in enumerate(tasks):
            damaged = TASKS[task](img, seed=SEEDS.get(task, i)).astype(np.float32)
            pair = {}
            for label, cfg in (("old", old), ("new", new)):
                if label == "old" and task in reuse:
                    old_date = before[task].get(
                        "old_measured", before[task].get("measured", "2026-12-03, an earlier run")
                    )
                    pair["old"], pair["old_measured"] = before[task]["old"], old_date
                    continue
                export = old_export if label == "old" else args.export
                row = photo_row(str(export), img, damaged, cfg["backend"], args.threads, cfg["options"])
                pair[label] = row
                print(json.dumps({"task": task, label: row}), flush=True)
            pair["speedup"] = round(pair["old"]["seconds"] / pair["new"]["seconds"], 2)
            if task in reuse:
                pair["speedup_note"] = "OLD from an earlier run on this machine: a ratio across two runs"
            pair["psnr_change_db"] = round(pair["new"]["output_psnr"] - pair["old"]["output_psnr"], 3)
            measured = time.strftime("%Y-%m-%d", time.gmtime())
            on = machine_name()  # photo times differ by CPU (AMX or not) more than by defaults
            rows.append({"task": task, "photo": args.photo, "size": args.size, "measured": measured, "on": on, **pair})
            if old_manifest is not None and "photo" in report and "photo_issue18" not in report:
                report["photo_issue18"] = report["photo"]  # the comparison issue 18 made, kept beside
            report["photo"] = {"old_defaults": old, "new_defaults": new_settings, "rows": rows + earlier}
            save()
        show("photo", report["photo"])
    if "estimate" in sections and "photo" in report:
        est = {}
        for row in report["photo"]["rows"]:
            n = row["new"]
            per_tile_s = n["seconds"] / n["tiles"]  # the photo's own mix of stops, guard and overheads
            tiles_12mp = len(plan_tiles(3000, 4000, manifest.tile_size, n["overlap"]))
            est[row["task"]] = {
                "tiles": tiles_12mp,
                "minutes": round(per_tile_s * tiles_12mp / 60, 1),
                "basis": f"{row['size']} photo's seconds per tile x the 4000x3000 photo's tiles",
            }
        show("estimate_12mp", est)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
