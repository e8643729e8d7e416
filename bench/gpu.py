"""GPU benchmark of the runtime (issue: GPU runtime): seconds per DIIP iteration and device
memory for the shipped export on ONNX Runtime, per precision (fp32, and fp16 where the
export has diip-fp16 copies), with and without IO binding and CUDA graphs, and the
device loop (iterate_surrogate.onnx: state in device buffers, one call per iteration,
with and without CUDA graphs), at 64, 256 and 512, plus one 1-megapixel tiled photo per
loop (3 iterations timed, the full photo estimated at the iteration cap).  Reads
pre-exported graphs only: no diffusers needed.

    python bench/gpu.py --json bench/results/gpu.json              # on a GPU machine (ort-cuda)
    python bench/gpu.py --dry-run                                   # this script's own check, on the CPU
    python bench/gpu.py --save-torch cache/unet.ts                  # where diffusers is: the torch side
    python bench/gpu.py --torch cache/unet.ts --json ...            # ... then torch eager beside ORT

The torch eager reference is the same chain with autograd (diip_deploy/export/reference.py)
over the model as TorchScript, traced once where diffusers is installed, so the GPU machine
needs torch alone; each size reports ORT's best variant over torch eager as a ratio.

Writes JSON with the device named; each variant runs alone, so one that fails (a shape
that CUDA graphs refuse, a missing provider) is recorded with its one-line error.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))  # its sibling gpu_timing.py, however this script is loaded

from gpu_timing import (  # noqa: E402
    gpu_name,
    loop_parity,
    save_torchscript,
    time_chain,
    time_device_loop,
    time_torch,
)


def time_photo(
    export: Path,
    backend: str,
    height: int,
    width: int,
    iters: int,
    precision: str,
    threads: Optional[int],
    loop: str = "host",
) -> Dict[str, Any]:
    """A tiled photo through the Restorer (the shipped path), ``iters`` iterations, no early
    stop; the full photo estimated at the manifest's iteration cap."""
    from diip_deploy.runtime.restorer import Restorer

    img = np.random.default_rng(0).random((height, width, 3)).astype(np.float32)
    with Restorer(
        export, backend, threads, batch=16, max_iters=iters, stop="none", precision=precision, loop=loop
    ) as r:
        cap = int(r.manifest.defaults["max_iters"])
        t0 = time.perf_counter()
        _, rep = r.restore_array(img)
        seconds = time.perf_counter() - t0
    return {
        "size": [width, height],
        "tiles": rep["tiling"]["tiles"],
        "iterations": iters,
        "loop": rep["run"]["loop"],
        "seconds": round(seconds, 3),
        "s_per_iter": round(seconds / iters, 4),
        "estimated_seconds_at_cap": round(seconds / iters * cap, 1),
        "cap": cap,
    }


def _row(row: Dict[str, Any], measure) -> Dict[str, Any]:
    """One variant timed; its failure is a line in the JSON, not a lost run."""
    try:
        row.update(measure())
    except Exception as e:
        row["error"] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    print(json.dumps(row), file=sys.stderr)
    return row


def main() -> None:
    from diip_deploy.bench.report import emit
    from diip_deploy.manifest import load_manifest

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--backend", default="ort-cuda")
    ap.add_argument("--sizes", default="64,256,512")
    ap.add_argument("--tile-batch", type=int, default=16, help="also time this many 64x64 tiles in one call")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--photo", default="1024x1024", help="HxW of the tiled photo ('' to skip)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, 2 iterations: checks the script")
    ap.add_argument("--torch", type=Path, default=None, help="TorchScript model (--save-torch) to time beside ORT")
    ap.add_argument("--save-torch", type=Path, default=None, help="trace --model to TorchScript here and exit")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "default", help="diffusers model for --save-torch")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if a.save_torch:
        save_torchscript(a.model, a.save_torch)
        print(f"wrote {a.save_torch}", file=sys.stderr)
        return
    if a.dry_run:
        a.backend, a.sizes, a.iters, a.photo, a.tile_batch = "ort-cpu", "16,32", 2, "48x64", 4
    manifest = load_manifest(a.export)
    precisions = ["fp32"] + (["fp16"] if manifest.has_graph("unet_fp16") else [])
    variants = [
        (p, io, cg)
        for p in precisions
        for io, cg in ((False, False), (True, False), (True, True))
        if not cg or a.backend == "ort-cuda"
    ]
    loop_precisions = [
        p
        for p in ("fp32", "fp16")
        if manifest.has_graph("iterate_surrogate" + ("_fp16" if p == "fp16" else "")) and p in precisions
    ]
    loop_variants = [(p, cg) for p in loop_precisions for cg in ([False, True] if a.backend == "ort-cuda" else [False])]
    shapes = [(1, int(s)) for s in a.sizes.split(",")] + (
        [(a.tile_batch, 64 if not a.dry_run else 16)] if a.tile_batch > 1 else []
    )
    results: List[Dict[str, Any]] = []
    for batch, size in shapes:
        for precision, io, cg in variants:
            row: Dict[str, Any] = {
                "batch": batch,
                "size": size,
                "precision": precision,
                "io_binding": io,
                "cuda_graph": cg,
            }
            results.append(
                _row(row, lambda: time_chain(manifest, a.backend, size, batch, a.iters, precision, io, cg, a.threads))
            )
        for precision, cg in loop_variants:
            row = {"batch": batch, "size": size, "precision": precision, "loop": "device", "cuda_graph": cg}
            results.append(
                _row(row, lambda: time_device_loop(manifest, a.backend, size, batch, a.iters, cg, a.threads, precision))
            )
        if a.torch:
            ort_best = min(
                (x["s_per_iter"] for x in results if x["batch"] == batch and x["size"] == size and "s_per_iter" in x),
                default=None,
            )

            def torch_row() -> Dict[str, Any]:
                t = time_torch(a.torch, manifest, size, batch, a.iters, "cpu" if a.backend == "ort-cpu" else "cuda")
                return {**t, **({"ort_best_over_torch": round(ort_best / t["s_per_iter"], 3)} if ort_best else {})}

            results.append(
                _row({"batch": batch, "size": size, "reference": "torch eager, autograd (surrogate)"}, torch_row)
            )
    photo = None
    if a.photo:
        h, w = (int(v) for v in a.photo.split("x"))
        runs = [(p, "host") for p in precisions] + [(p, "device") for p in loop_precisions]
        photo = {
            f"{p}_{loop}": time_photo(a.export, a.backend, h, w, 3 if not a.dry_run else 1, p, a.threads, loop)
            for p, loop in runs
        }
        print(json.dumps(photo), file=sys.stderr)
    parity = _row(
        {"check": f"device loop on {a.backend} against the host loop on ort-cpu"},
        lambda: loop_parity(manifest, a.backend, 64 if not a.dry_run else 16, 4, a.iters, a.threads),
    )
    report = {
        "benchmark": "gpu",
        "backend": a.backend,
        "device": gpu_name() or platform.processor() or platform.machine(),
        "export": str(a.export),
        "dry_run": a.dry_run,
        "iterations_timed": a.iters,
        "chain": results,
        "photo": photo,
        "parity": parity,
        "torch_reference": str(a.torch) if a.torch else None,
    }
    emit(report, a.json)


if __name__ == "__main__":
    main()
