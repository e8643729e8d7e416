"""Two sets of runtime settings on one export, side by side, as diip-run returns them: the
crops and noises of the learning curve (``prior_curve.py``: held-out photos with
``--held-out``, else validation crops of the training photos, saturated ones included), each
restored under the export's defaults and under ``--set`` overrides, from the same starting
noises, in one run.  Prints and writes the crop-for-crop gain (mean +- standard error, crops
won) and NL-means on the same inputs, so a settings change is judged the way issue 27 judges
a prior.  Quality only; it times nothing.

    python bench/settings_compare.py --base adam_beta2=0.999 --set adam_beta2=0.95 --held-out --crops 16 --seeds 3 \\
        --against-shipped-of direct-more 4000 --json bench/results/adam_beta2/heldout_b2_0.95.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prior_curve import SHIPPED, nlmeans_crops, noisy, restore_crops  # noqa: E402

from diip_deploy.bench.metrics import gain_summary  # noqa: E402


def parse_sets(pairs: List[str]) -> Dict[str, Any]:
    """``KEY=VALUE`` settings, each value read as JSON where it parses (numbers, true), else kept
    as text (``straight``); the names are RestoreSettings' fields, checked when the runtime opens."""
    out: Dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE, not {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def compare(
    export: Path,
    crops: List[Any],
    base_given: Dict[str, Any],
    ours_given: Dict[str, Any],
    seeds: int,
    threads: int,
) -> Dict[str, Any]:
    """Each (name, clean) crop, noised as the learning curve noises it, restored under both
    settings from the same starting noises; NL-means beside them on the same inputs."""
    from diip_deploy.manifest import load_manifest

    ys = noisy(crops)
    base, _ = restore_crops(export, crops, ys, threads, base_given, seeds)
    ours, _ = restore_crops(export, crops, ys, threads, ours_given, seeds)
    baseline = nlmeans_crops(crops, ys)
    manifest = load_manifest(export)
    return {
        "export": str(export),
        "weights_sha256": manifest.data["model"]["weights_sha256"],
        "task": "noise25, 64x64, ORT fp32, as diip-run returns it (stop rule and residual guard)",
        "start_seeds": seeds,
        "base_settings": {**manifest.defaults, **base_given},
        "overrides": ours_given,
        "mean_psnr": round(float(np.mean(ours)), 3),
        "base_mean_psnr": round(float(np.mean(base)), 3),
        "nlmeans_mean_psnr": round(float(np.mean(baseline)), 3),
        **gain_summary(ours, base),
        "over_nlmeans": gain_summary(ours, baseline),
        "crops": [name for name, _ in crops],
        "psnr": ours,
        "base_psnr": base,
        "nlmeans_psnr": baseline,
    }


def over_shipped_of(result: Dict[str, Any], run: str, step: str, held_out: bool) -> Dict[str, Any]:
    """The gain over the prior a learning-curve point was measured beside (its ``shipped_psnr``),
    refused unless the point restored the same crops from as many starting noises."""
    from prior_compare import find
    from prior_curve import REPO

    points = json.loads((REPO / "bench" / "results" / "prior_curve.json").read_text())["points"]
    point = find(points, run, int(step), held_out)
    if point["crops"] != result["crops"] or point.get("start_seeds") != result["start_seeds"]:
        raise SystemExit(f"{point['label']} was measured on other crops or starting noises")
    return {"point": point["label"], **gain_summary(result["psnr"], point["shipped_psnr"])}


def main() -> None:
    from diip_deploy.bench.tune import tuning_crops

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=SHIPPED)
    ap.add_argument("--set", dest="sets", action="append", required=True, metavar="KEY=VALUE")
    ap.add_argument("--base", action="append", default=[], metavar="KEY=VALUE", help="overrides on the base side too")
    ap.add_argument("--held-out", action="store_true", help="crops of the held-out photos (ordinary colours only)")
    ap.add_argument("--crops", type=int, default=16)
    ap.add_argument("--saturated", type=int, default=8, help="validation only: this many saturated crops besides")
    ap.add_argument("--seeds", type=int, default=3, help="starting noises per crop, averaged (0, 1, ...)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--against-shipped-of",
        nargs=2,
        metavar=("RUN", "STEP"),
        default=None,
        help="also the gain over the prior that a learning-curve point (prior_curve.json) had beside it, "
        "crop for crop on the same crops and starting noises (e.g. the first prior, beside direct-more)",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    base_given = parse_sets(args.base)
    ours_given = {**base_given, **parse_sets(args.sets)}
    crops = tuning_crops(args.crops, 64, 0, args.held_out, saturated=0 if args.held_out else args.saturated)
    result = {
        "tool": "bench/settings_compare.py",
        "split": "HELD-OUT photos" if args.held_out else "training photos (validation crops)",
        **compare(args.export, crops, base_given, ours_given, args.seeds, args.threads),
    }
    if args.against_shipped_of:
        result["over_shipped_of"] = over_shipped_of(result, *args.against_shipped_of, args.held_out)
    lists = ("crops", "psnr", "base_psnr", "nlmeans_psnr", "base_settings")
    print(json.dumps({k: v for k, v in result.items() if k not in lists}, indent=1))
    if args.json:
        from diip_deploy.runtime.images.codec import save_json

        args.json.parent.mkdir(parents=True, exist_ok=True)
        save_json(args.json, result)


if __name__ == "__main__":
    main()
