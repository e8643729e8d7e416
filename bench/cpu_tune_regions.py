"""cpu_tune.py record and choose: region-sized histories of training photos, and the cap,
overlap and early guard chosen on them (see cpu_tune.py for how to run them)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from diip_deploy.bench.cpu_rules import (
    cap_on_regions,
    early_guard_scores,
    same_optimiser,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def record(args) -> dict:
    from diip_deploy.bench.degrade import TASKS
    from diip_deploy.bench.metrics import psnr
    from diip_deploy.bench.tiled import seam_ratio
    from diip_deploy.runtime.optimise.guard import residual_correlation
    from diip_deploy.runtime.restorer import Restorer
    from diip_deploy.train.photos import training_photos

    names = args.photos.split(",")
    train = training_photos(names)
    runs = []
    for lr, overlap in [(float(a), int(b)) for a, b in (c.split("@") for c in args.configs.split(","))]:
        r = Restorer(
            args.export,
            "ort-cpu",
            args.threads,
            stop="none",
            max_iters=args.iters,
            lr=lr,
            tile_overlap=overlap,
            guard_at=0,  # whole histories: the early guard is what they choose
            steps_per_eval=args.steps_per_eval,
        )
        for task in args.tasks.split(","):
            for i, name in enumerate(names):
                clean = train[name][: args.crop, : args.crop].astype(np.float64)
                damaged = TASKS[task](clean, seed=i).astype(np.float32)
                layout = r.layout(damaged)
                h, w = clean.shape[:2]
                dmg = layout.blend(range(len(layout.plan)), layout.tiles.__getitem__)
                rows = {"psnr": [], "corr": [], "seam": []}

                def keep(info, layout=layout, clean=clean, dmg=dmg, rows=rows, h=h, w=w):
                    img = info["image"][0]
                    out = np.clip((img[:, :h, :w].transpose(1, 2, 0) + 1) / 2, 0, 1)
                    rows["psnr"].append(round(psnr(clean, out), 4))
                    rows["corr"].append(round(residual_correlation(img, dmg), 4))
                    k = int(info["k"][0])
                    rows["seam"].append(round(seam_ratio(out, layout.plan), 4) if k % 10 == 9 else None)

                t0 = time.perf_counter()
                res = r.restore_unit(layout, 0, keep)
                run = {
                    "task": task,
                    "photo": name,
                    "lr": lr,
                    "adam_beta1": r.settings.adam_beta1,
                    "adam_beta2": r.settings.adam_beta2,
                    "steps_per_eval": r.settings.steps_per_eval,
                    "overlap": overlap,
                    "tiles": len(layout.plan),
                    "input_psnr": round(psnr(clean, damaged), 4),
                    "clean_seam": round(seam_ratio(clean, layout.plan), 4),
                    "loss": [round(x, 7) for x in res.history["loss"]],
                    "laplacian_var": [round(x, 7) for x in res.history["laplacian_var"]],
                    **rows,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
                runs.append(run)
                best = int(np.argmax(run["psnr"]))
                print(
                    json.dumps({k: v for k, v in run.items() if not isinstance(v, list)} | {"best": best}), flush=True
                )
                args.out.write_text(json.dumps({"iters": args.iters, "crop": args.crop, "runs": runs}) + "\n")
        r.close()
    return {"iters": args.iters, "crop": args.crop, "runs": runs}


def choose(args) -> dict:
    """The overlap, the early guard iteration and the iteration cap, each by its rule,
    with the scores that chose them (training photos only)."""
    from diip_deploy.bench.tune_scoring import score
    from diip_deploy.manifest import load_manifest
    from diip_deploy.runtime.images.tiling import plan_tiles

    manifest = load_manifest(args.export)
    rule = manifest.settings()
    runs = [r for r in json.loads(args.histories.read_text())["runs"] if same_optimiser(r, rule)]
    out: dict = {"lr": rule.lr, "split": "training photos only", "runs": len(runs)}

    # 1. iteration cap: the optimiser's choice where it chose the shipped optimiser, else on
    # diip-tune's crop histories (64 crops a task, run to 150)
    picked = json.loads(args.optimiser_choice.read_text()) if args.optimiser_choice.exists() else None
    from_optimiser = picked is not None and same_optimiser(picked["chosen"], rule)
    if from_optimiser:
        out["max_iters"] = {
            "chosen": picked["chosen"]["max_iters"],
            "from": "bench/cpu_tune.py optimiser (validation.cpu_speed.optimiser)",
            "rule": picked["rule"],
        }
        cap = picked["chosen"]["max_iters"]
    else:
        crops = json.loads(args.crop_histories.read_text())
        caps = {}
        for cap in (60, 80, 90, 100, 110, 120, 150):
            caps[cap] = {t: v["auto"] for t, v in score(crops, {**manifest.defaults, "max_iters": cap}).items()}
        full = caps[150]["noise25"]
        cap = min(c for c, sc in caps.items() if sc["noise25"] >= full - args.max_loss_db / 2)
        out["max_iters"] = {
            "chosen": cap,
            "noise25_auto_psnr_by_cap": {c: sc["noise25"] for c, sc in caps.items()},
            "rule": f"smallest cap whose crop auto-stop PSNR on noise25 is within {args.max_loss_db / 2} dB of 150's",
        }

    # 2. overlap: fewest tiles whose regions restore as well (PSNR at the cap) with seams no
    # worse; with one overlap recorded, the earlier choice stands
    overlaps = sorted({r["overlap"] for r in runs})
    earlier = manifest.data.get("validation", {}).get("cpu_speed", {}).get("tile_overlap")
    if len(overlaps) == 1 and earlier is not None:
        out["tile_overlap"] = {**earlier, "note": "chosen on the region histories of the optimiser before"}
        overlap = earlier["chosen"]
    else:
        k = min(cap, min(len(r["psnr"]) for r in runs)) - 1
        by_overlap = {}
        for o in sorted({r["overlap"] for r in runs}):
            noise = [r for r in runs if r["overlap"] == o and r["task"] == "noise25"]
            seams = [[x for x in r["seam"] if x is not None][-1] / r["clean_seam"] for r in noise]
            by_overlap[o] = {
                "noise25_psnr": round(float(np.mean([r["psnr"][k] for r in noise])), 3),
                "seam_ratio_vs_clean": round(float(np.mean(seams)), 3),
                "tiles_512x384": len(plan_tiles(384, 512, manifest.tile_size, o)),
            }
        widest = max(by_overlap)
        ok = [
            o
            for o, v in by_overlap.items()
            if v["noise25_psnr"] >= by_overlap[widest]["noise25_psnr"] - args.max_loss_db
            and v["seam_ratio_vs_clean"] <= by_overlap[widest]["seam_ratio_vs_clean"] + 0.05
        ]
        overlap = min(ok, key=lambda o: by_overlap[o]["tiles_512x384"])
        out["tile_overlap"] = {
            "chosen": overlap,
            "at_iteration": k,
            "scores": by_overlap,
            "rule": f"fewest tiles within {args.max_loss_db} dB of overlap {widest}, seams within 0.05",
        }

    # 2b. the cap on regions too: a photo's region runs to the cap (its summed loss is smoother
    # than a crop's), so the cap must restore the training regions' noise as well as the
    # shipped optimiser did at its longest recorded run (--reference-histories)
    if from_optimiser and args.reference_histories.exists():
        ref_runs = [
            r
            for r in json.loads(args.reference_histories.read_text())["runs"]
            if r["task"] == "noise25" and r["overlap"] == overlap and same_optimiser(r, picked["reference"])
        ]
        new_runs = [r for r in runs if r["task"] == "noise25" and r["overlap"] == overlap]
        ref_k = min(len(r["psnr"]) for r in ref_runs)
        ref_psnr = float(np.mean([r["psnr"][ref_k - 1] for r in ref_runs]))
        cap, by_cap = cap_on_regions(new_runs, ref_psnr, cap, args.max_loss_db)
        out["max_iters"] = {
            "chosen": cap,
            "crop_cap": out["max_iters"],
            "regions_noise25_psnr_by_cap": by_cap,
            "reference_regions_noise25_psnr": {"iteration": ref_k, "psnr": round(ref_psnr, 3)},
            "rule": f"the crop cap, raised in steps of 10 until the training regions' noise PSNR at the cap is "
            f"within {args.max_loss_db} dB of the shipped optimiser's at its longest recorded run",
        }

    # 3. early guard: the first iteration whose decision matches the final one on every run
    agree, first_agreeing, guard_rule = early_guard_scores(runs, rule.residual_guard, (8, 12, 16, 20, 24, 32, 40), -1)
    out["guard_at"] = {
        "chosen": first_agreeing or 0,
        "residual_guard": rule.residual_guard,
        "scores": agree,
        "rule": guard_rule,
    }
    # 4. the stop on region histories: where each slope threshold would stop a region, and
    # what that costs against running on to the last recorded iteration
    from dataclasses import replace

    from diip_deploy.runtime.optimise.stopping import decide

    stops = {}
    for eps in (1e-3, 3e-4, rule.eps):
        r_ = replace(rule, eps=eps)
        rows = []
        for r in runs:
            d = decide(r["loss"], r["laplacian_var"], r_)
            k_ = d.iteration if d else len(r["psnr"]) - 1
            rows.append({"task": r["task"], "stop": k_, "psnr_lost_db": round(r["psnr"][-1] - r["psnr"][k_], 3)})
        noise = [x for x in rows if x["task"] == "noise25"]
        stops[f"{eps:g}"] = {
            "noise25_mean_stop": float(np.mean([x["stop"] for x in noise])),
            "noise25_mean_psnr_lost_db": round(float(np.mean([x["psnr_lost_db"] for x in noise])), 3),
        }
    out["stop_on_regions"] = {
        "kept": {k: getattr(rule, k) for k in ("stop", "eps", "slope_window", "patience", "slope_fit")},
        "scores": stops,
        "note": "no threshold stops a region much before the last recorded iteration (its summed loss "
        "still falls): the cap decides",
    }
    print(json.dumps(out, indent=1))
    return out
