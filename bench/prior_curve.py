"""A training checkpoint of the default prior, judged as DIIP uses it (issue 27): one
point of the learning curve, validation DIIP PSNR against CPU-hours.

Takes the EMA weights of a ``diip-train`` checkpoint (its ``--work`` folder), exports them
as ``diip-export`` would (the shipped export's chain and defaults), restores noisy
validation crops of the training photos, ordinary and saturated, as ``diip-run`` does, and
restores the same crops with the shipped export beside it in the same run.  Appends the
point to the JSON, so runs across sessions build the curve.  Quality only.

    python bench/prior_curve.py --work ~/diip-cache/runs/wide-c32-p64.work --label wide-c32-p64
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "default-export"
SHIPPED_CPU_HOURS = 4621.2 * 2 / 3600  # models/default/training.json: 4,621 s on 2 threads
BETAS_TAG = "adam betas"  # how a point names Adam betas other than torch's in its defaults


def export_checkpoint(work: Path, out: Path) -> Dict[str, Any]:
    """The checkpoint's EMA as a pipeline folder, exported with the shipped chain and
    defaults; returns what the checkpoint says of its training."""
    from diip_deploy.export.pipeline import export_model
    from diip_deploy.manifest import load_manifest
    from diip_deploy.train.trainer import load_ema, save_pipeline

    unet, state = load_ema(work)
    made = state["settings"]
    save_pipeline(unet, out / "pipeline")
    shipped = load_manifest(SHIPPED)
    timesteps = list(shipped.chain_spec.timesteps)
    export_model(
        str(out / "pipeline"),
        out / "export",
        steps=len(timesteps),
        timesteps=timesteps,
        gradient="surrogate",
        defaults=shipped.defaults,
        log=lambda m: None,
    )
    cpu = state.get("cpu_seconds")
    return {"step": state["step"], "cpu_seconds": None if cpu is None else round(cpu, 1), "settings": made}


def noisy(crops: List[Any]) -> List[np.ndarray]:
    """Each crop with its own noise (seed: its position), as both priors get it."""
    from diip_deploy.bench.degrade import TASKS

    return [TASKS["noise25"](clean, seed=i).astype(np.float32) for i, (_, clean) in enumerate(crops)]


def nlmeans_crops(crops: List[Any], ys: List[np.ndarray]) -> List[float]:
    """Each noisy crop's PSNR after scikit-image's non-local means (sigma estimated): the
    classical filter issue 27 asks DIIP to beat by 1 dB, on the very same inputs."""
    from diip_deploy.bench.classic import nlmeans
    from diip_deploy.bench.metrics import psnr

    return [round(float(psnr(nlmeans(y), clean)), 3) for (_, clean), y in zip(crops, ys)]


def restore_crops(
    export: Path,
    crops: List[Any],
    inputs: List[np.ndarray],
    threads: int,
    given: Optional[Dict[str, Any]] = None,
    seeds: int = 1,
) -> Tuple[List[float], List[np.ndarray]]:
    """Each crop's PSNR as diip-run returns it from its noisy input, averaged over ``seeds``
    starting noises (seed 0 alone by default: a difference of 0.2 dB between priors on a
    few crops is within what the start alone moves), and each crop's restoration from seed 0.
    ``given``: settings over the export's defaults, as diip-run's options give them."""
    from diip_deploy.bench.metrics import psnr
    from diip_deploy.runtime.restorer import Restorer

    scores, firsts = [], []
    with Restorer(export, "ort-cpu", threads, **(given or {})) as r:
        for (_, clean), y in zip(crops, inputs):
            restored = [r.restore_array(y, seed=start)[0] for start in range(seeds)]
            scores.append(round(float(np.mean([psnr(clean, x) for x in restored])), 3))
            firsts.append(restored[0])
    return scores, firsts


def run_name(label: str) -> str:
    """The training run a point belongs to: its label up to the first ' ('."""
    return label.split(" (")[0]


def on_split(point: Dict[str, Any], held_out: bool) -> bool:
    """Whether a point was measured on held-out crops (or, ``held_out`` false, validation
    crops of the training photos); the oldest points record no split and are on neither."""
    return point.get("split", "").startswith("HELD-OUT" if held_out else "training")


def append_point(path: Path, point: Dict[str, Any]) -> None:
    """Add a point to the curve's JSON under an exclusive lock, written by rename: two
    measurements finishing at once both land, and a kill never leaves half a file."""
    import fcntl

    from diip_deploy.runtime.images.codec import write_atomic

    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        curve = json.loads(path.read_text()) if path.is_file() else {"points": []}
        curve["points"].append(point)
        write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(curve, indent=1) + "\n"))


def main() -> None:
    from diip_deploy.bench.tune import tuning_crops

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--work", type=Path, required=True, help="diip-train's --work folder, or a checkpoint it kept (--keep-every)"
    )
    ap.add_argument("--label", required=True)
    ap.add_argument("--threads", type=int, default=2, help="of the training run, for CPU-hours; and of the restores")
    ap.add_argument("--init-cpu-hours", type=float, default=SHIPPED_CPU_HOURS, help="what --init-from weights cost")
    ap.add_argument(
        "--train-cpu-hours",
        type=float,
        default=None,
        help="the run's own CPU-hours where its checkpoint predates cpu_seconds (e.g. from ps's TIME)",
    )
    ap.add_argument("--held-out", action="store_true", help="crops of the held-out photos (ordinary colours only)")
    ap.add_argument("--crops", type=int, default=8)
    ap.add_argument("--saturated", type=int, default=8)
    ap.add_argument(
        "--clamp-gradient", choices=("mask", "straight"), default=None, help="default: the shipped export's"
    )
    ap.add_argument("--seeds", type=int, default=1, help="starting noises per crop, averaged (0, 1, ...)")
    ap.add_argument("--sheet", type=Path, default=None, help="PNG: clean | noisy | shipped prior | checkpoint per crop")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "prior_curve.json")
    args = ap.parse_args()
    crops = tuning_crops(args.crops, 64, 0, args.held_out, saturated=0 if args.held_out else args.saturated)
    from diip_deploy.manifest import load_manifest
    from diip_deploy.runtime.optimise.optim import ADAM_BETAS
    from diip_deploy.schedule import ddim_timesteps

    shipped_manifest = load_manifest(SHIPPED)
    shipped_defaults = shipped_manifest.defaults
    chosen = args.clamp_gradient or shipped_defaults.get("clamp_gradient", "mask")
    defaults = f"lr {shipped_defaults['lr']}, cap {shipped_defaults['max_iters']}, --clamp-gradient {chosen}"
    timesteps = list(shipped_manifest.chain_spec.timesteps)
    if timesteps != ddim_timesteps(len(timesteps)):  # points before the chain moved name none
        defaults += f", timesteps {','.join(map(str, timesteps))}"
    betas = (shipped_defaults.get("adam_beta1", ADAM_BETAS[0]), shipped_defaults.get("adam_beta2", ADAM_BETAS[1]))
    if betas != ADAM_BETAS:  # points before beta2 moved (the thirteenth session) name none
        defaults += f", {BETAS_TAG} {betas[0]:g}/{betas[1]:g}"
    ys = noisy(crops)
    given = {} if args.clamp_gradient is None else {"clamp_gradient": args.clamp_gradient}
    with tempfile.TemporaryDirectory() as tmp:
        made = export_checkpoint(args.work, Path(tmp))
        ours, ours_seen = restore_crops(Path(tmp) / "export", crops, ys, args.threads, given, args.seeds)
    shipped, shipped_seen = restore_crops(SHIPPED, crops, ys, args.threads, given, args.seeds)
    if args.sheet:
        from diip_deploy.bench.report import image_grid
        from diip_deploy.runtime.images.codec import save_image

        rows = [list(r) for r in zip([c for _, c in crops], ys, shipped_seen, ours_seen)]
        save_image(args.sheet, image_grid([[np.clip(t, 0, 1) for t in row] for row in rows]))
    own = args.train_cpu_hours if made["cpu_seconds"] is None else made["cpu_seconds"] / 3600
    if own is None:
        raise SystemExit("this checkpoint records no CPU time: give --train-cpu-hours")
    point = {
        "label": args.label,
        "step": made["step"],
        "cpu_hours": round(args.init_cpu_hours + own, 2),
        "training": made["settings"],
        "task": f"noise25, 64x64, the shipped export's defaults ({defaults}), ORT fp32",
        "start_seeds": args.seeds,
        "split": "HELD-OUT photos" if args.held_out else "training photos (validation crops)",
        "crops": [name for name, _ in crops],
        "mean_psnr": round(float(np.mean(ours)), 3),
        "shipped_mean_psnr": round(float(np.mean(shipped)), 3),
        # the baseline moves when a prior ships
        "shipped_weights_sha256": shipped_manifest.data["model"]["weights_sha256"],
        "psnr": ours,
        "shipped_psnr": shipped,
    }
    baseline = nlmeans_crops(crops, ys)
    point.update({"nlmeans_mean_psnr": round(float(np.mean(baseline)), 3), "nlmeans_psnr": baseline})
    append_point(args.json, point)
    lists = ("crops", "psnr", "shipped_psnr", "nlmeans_psnr")
    print(json.dumps({k: v for k, v in point.items() if k not in lists}, indent=1))


if __name__ == "__main__":
    main()
