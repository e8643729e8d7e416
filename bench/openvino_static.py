"""OpenVINO with a static compile per recurring input shape against its dynamic compile,
side by side in one run: the UNet call, and whole 512x384 photos as diip-run restores
them (issue 26's photo time).

The runner compiles an ONNX graph for its dynamic shapes; ``OpenVinoRunner.static_after``
(3) calls of one shape later it also compiles it for that shape alone.  This benchmark
runs each side with the class attribute set (``None``: dynamic only), the sides taking
turns, and writes the times, their ratio and the PSNR each side returned.  Quality is not
this benchmark's question (``diip-variants`` checks the bf16 restorations against fp32),
but each photo row records its PSNR so that a change shows.  Time nothing else meanwhile.

    python bench/openvino_static.py --precision bf16 --json bench/results/openvino_static.json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def sides() -> Dict[str, Optional[int]]:
    """Each side's ``OpenVinoRunner.static_after``: None (dynamic only), and the runner's
    own default, read from the class rather than restated here."""
    from diip_deploy.runtime.backends.openvino import OpenVinoRunner

    return {"dynamic": None, "static": OpenVinoRunner.static_after}


def unet_side_by_side(export: Path, precision: str, threads: int, batch: int, rounds: int) -> Dict[str, Any]:
    """One UNet call of ``batch`` tiles on each side, the sides taking turns round after
    round: the median ms, the ratio, and the largest difference between their outputs."""
    from diip_deploy.bench.cpu_speed import _timed
    from diip_deploy.manifest.reading import load_manifest
    from diip_deploy.runtime.backends.cpu_variants import unet_feed
    from diip_deploy.runtime.backends.openvino import OpenVinoRunner

    manifest = load_manifest(export)
    feed = unet_feed(manifest, batch)
    runners = {}
    for side, after in sides().items():
        r = OpenVinoRunner(manifest.graph_path("unet"), precision, threads)
        r.static_after = after  # this instance only
        runners[side] = r.activate()
    outs = {side: [r.infer(feed)["eps"] for _ in range(3)][-1] for side, r in runners.items()}  # static compiled by now
    times: Dict[str, List[float]] = {side: [] for side in runners}
    for _ in range(rounds):
        for side, r in runners.items():
            times[side].append(_timed(functools.partial(r.infer, feed)))
    ms = {side: float(np.median(t)) * 1000 for side, t in times.items()}
    row = {
        "batch": batch,
        "rounds": rounds,
        "ms": {side: round(v, 1) for side, v in ms.items()},
        "static_shapes": runners["static"].static_shapes,
        "speedup": round(ms["dynamic"] / ms["static"], 3),
        "max_abs_difference": float(f"{np.abs(outs['static'] - outs['dynamic']).max():.3g}"),
    }
    for r in runners.values():
        r.deactivate()
    return row


def photo_side_by_side(
    export: Path, precision: str, threads: int, tasks: List[str], photo_name: str, size: str, repeats: int
):
    """Each task's photo restored with the export's defaults on each side, ``repeats``
    times, the order alternating (ABBA...): each side's runs, their median seconds, the
    PSNR and the speed-up of the medians."""
    from cpu import SEEDS, photo

    from diip_deploy.bench.cpu_speed import alternating_runs, photo_row
    from diip_deploy.bench.degrade import TASKS
    from diip_deploy.runtime.backends.openvino import OpenVinoRunner

    img = photo(photo_name, size)
    static_after = sides()
    rows = []
    for i, task in enumerate(tasks):
        damaged = TASKS[task](img, seed=SEEDS.get(task, i)).astype(np.float32)

        def restored(side: str) -> Dict[str, Any]:
            OpenVinoRunner.static_after = static_after[side]
            try:
                return photo_row(str(export), img, damaged, "openvino", threads, {"precision": precision})
            finally:
                OpenVinoRunner.static_after = static_after["static"]  # the class default again

        pair: Dict[str, Any] = {"task": task, "photo": photo_name, "size": size}
        pair.update(
            alternating_runs(
                restored,
                list(static_after),
                repeats,
                ("seconds", "output_psnr", "input_psnr", "stop", "stop_reason", "tiles"),
                first=i,
                on_run=lambda side, kept: print(json.dumps({"task": task, side: kept}), flush=True),
            )
        )
        pair["speedup"] = round(pair["dynamic"]["seconds"] / pair["static"]["seconds"], 3)
        pair["psnr_change_db"] = round(pair["static"]["output_psnr"] - pair["dynamic"]["output_psnr"], 3)
        rows.append(pair)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--tasks", default="noise25,jpeg10", help="photo tasks; empty: the UNet rows only")
    ap.add_argument("--repeats", type=int, default=2, help="photo runs a side, the order alternating")
    ap.add_argument("--photo", default="opencv/home")
    ap.add_argument("--size", default="512x384")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from diip_deploy.runtime.backends.cpu_variants import machine_name
    from diip_deploy.runtime.backends.openvino import cpu_has_bf16

    if args.precision == "bf16" and not cpu_has_bf16():
        raise SystemExit("this CPU has no native bf16: OpenVINO would run fp32 under the bf16 hint")
    report: Dict[str, Any] = {
        "benchmark": "bench/openvino_static.py",
        "on": machine_name(),
        "threads": args.threads,
        "precision": args.precision,
        "static_after": sides()["static"],
        "unet": [unet_side_by_side(args.export, args.precision, args.threads, b, args.rounds) for b in (8, 7)],
    }
    for row in report["unet"]:
        print(json.dumps(row), flush=True)
    tasks = [t for t in args.tasks.split(",") if t]
    if tasks:
        report["photo"] = photo_side_by_side(
            args.export, args.precision, args.threads, tasks, args.photo, args.size, args.repeats
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
