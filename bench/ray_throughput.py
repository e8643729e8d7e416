"""Ray throughput: images per minute with 1 and 2 workers (1 ONNX Runtime thread each),
same images and options, alternated in one run; prints JSON and writes it.

    python bench/ray_throughput.py --rounds 2 --json bench/results/ray.json
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import ray

    from diip_deploy.runtime.outputs import expand_inputs, plan_outputs
    from diip_deploy.runtime.ray_runner import run_jobs
    from diip_deploy.runtime.restorer import TileSettings

    examples = sorted((REPO / "examples").glob("*.png"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    times = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i in range(args.images):
            (src / f"img{i}.png").write_bytes(examples[i % len(examples)].read_bytes())
        for r in range(args.rounds):
            for workers in (1, 2):
                found, _ = expand_inputs([src])
                jobs, _ = plan_outputs(found, Path(tmp) / f"out_{r}_{workers}")
                t0 = time.perf_counter()
                results = run_jobs(jobs, str(args.export), "ort-cpu", 1, TileSettings(), {"max_iters": args.max_iters,
                                   "stop": "none"}, "local", workers)
                assert all(x["ok"] for x in results), results
                times[workers].append(time.perf_counter() - t0)
    ray.shutdown()
    per_min = {w: 60 * args.images / statistics.median(t) for w, t in times.items()}
    report = {"benchmark": "ray_throughput", "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "cpus": 2, "images": args.images, "size": "64x64", "max_iters": args.max_iters, "threads_per_worker": 1,
              "images_per_minute": {str(w): round(v, 2) for w, v in per_min.items()},
              "ratio_2_over_1": round(per_min[2] / per_min[1], 3),
              "seconds": {str(w): [round(x, 2) for x in t] for w, t in times.items()}}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
