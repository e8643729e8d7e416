"""Time per DIIP iteration: the ONNX Runtime runner against the torch reference (eager),
alternated in one run, printed as JSON with the ratio (< 1: the runtime is faster).

    python bench/runtime_vs_torch.py --model models/default --export models/default-onnx --size 64
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="diffusers folder the export came from")
    ap.add_argument("--export", required=True, help="diip-export output folder")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3, help="iterations timed per round and side")
    ap.add_argument("--gradients", default="surrogate,exact")
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args()

    import torch

    from diip_deploy.bench.speed import runtime_vs_torch

    results = runtime_vs_torch(
        args.model, args.export, args.size, args.threads, args.rounds, args.iters, tuple(args.gradients.split(","))
    )
    report = {
        "benchmark": "runtime_vs_torch",
        "model": args.model,
        "export": args.export,
        "rounds": args.rounds,
        "iters": args.iters,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "results": results,
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
