"""Ray throughput: images per minute with 1 and 2 workers (1 ONNX Runtime thread each),
same images and options, alternated in one run; prints JSON and writes it.  With
``--split``, one photo of several tile units instead (its units spread over the workers),
and the outputs of 1 and 2 workers compared byte for byte.

    python bench/ray_throughput.py --rounds 2 --json bench/results/ray.json
    python bench/ray_throughput.py --split --rounds 2 --json bench/results/ray_split.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--images", type=int, default=8, help="64x64 crops (the examples, repeated)")
    ap.add_argument("--max-iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--split", action="store_true", help="one 192x256 photo in 6 tile units (--region-tiles 4)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.split:
        args.images = 1

    import ray

    from diip_deploy.bench.report import emit
    from diip_deploy.runtime.commands.ray_runner import RunOn, run_jobs
    from diip_deploy.runtime.images.outputs import expand_inputs, plan_outputs

    examples = sorted((REPO / "examples").glob("*.png"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    times = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        if args.split:  # the examples side by side: 192x256, 20 tiles of 64
            import numpy as np
            from PIL import Image

            crops = [np.asarray(Image.open(examples[i % len(examples)]).convert("RGB")) for i in range(12)]
            rows = [np.concatenate(crops[r * 4 : (r + 1) * 4], axis=1) for r in range(3)]
            Image.fromarray(np.concatenate(rows, axis=0)).save(src / "photo.png")
        for i in range(0 if args.split else args.images):
            (src / f"img{i}.png").write_bytes(examples[i % len(examples)].read_bytes())
        options = {"max_iters": args.max_iters, "stop": "none", **({"region_tiles": 4} if args.split else {})}
        for r in range(args.rounds):
            for workers in (1, 2):
                found, _ = expand_inputs([src])
                jobs, _ = plan_outputs(found, Path(tmp) / f"out_{r}_{workers}")
                t0 = time.perf_counter()
                results = run_jobs(jobs, RunOn(str(args.export), "ort-cpu", 1, options), None, workers)
                assert all(x["ok"] for x in results), results
                times[workers].append(time.perf_counter() - t0)
        outputs = {
            w: (Path(tmp) / f"out_0_{w}" / ("photo.png" if args.split else "img0.png")).read_bytes() for w in (1, 2)
        }
        identical = outputs[1] == outputs[2]
    ray.shutdown()
    per_min = {w: 60 * args.images / statistics.median(t) for w, t in times.items()}
    report = {
        "benchmark": "ray_throughput",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": 2,
        "images": args.images,
        "size": "192x256 in 6 tile units" if args.split else "64x64",
        "outputs_identical_1_vs_2_workers": identical,
        "max_iters": args.max_iters,
        "threads_per_worker": 1,
        "images_per_minute": {str(w): round(v, 2) for w, v in per_min.items()},
        "ratio_2_over_1": round(per_min[2] / per_min[1], 3),
        "seconds": {str(w): [round(x, 2) for x in t] for w, t in times.items()},
    }
    emit(report, args.json)


if __name__ == "__main__":
    main()
