"""Region-sized histories on training photos, for the CPU speed defaults (issue 18).

The shipped stop was tuned on 64x64 crops; a photo's region stops on the summed loss of
its tiles, which is smoother.  ``record`` restores region-sized crops of *training* photos
(never the held-out ones) as ``diip-run`` does (image scope, joint loop) to a cap with no
stop, once per (learning rate, tile overlap), and keeps per iteration the region's summed
loss, Laplacian variance, PSNR against the clean crop, the residual guard's correlation
and the seam ratio.  ``choose`` replays the runtime's own ``decide`` and guard rule over
those histories for each candidate and writes the scores beside the choice.

    python bench/cpu_tune.py record --out bench/results/cpu_tune_histories.json
    python bench/cpu_tune.py choose --histories bench/results/cpu_tune_histories.json

``steps`` chooses Adam steps per evaluation of the chain and the cap in evaluations from
region histories recorded with ``record --steps-per-eval N`` against one step:

    python bench/cpu_tune.py record --configs 0.03@8 --tasks noise25 --iters 100 \
        --out bench/results/cpu_tune_region_histories_steps1.json
    python bench/cpu_tune.py record --configs 0.03@8 --iters 60 --steps-per-eval 2 \
        --out bench/results/cpu_tune_region_histories_steps2.json
    python bench/cpu_tune.py steps --histories bench/results/cpu_tune_region_histories_steps2.json \
        --reference-histories bench/results/cpu_tune_region_histories_steps1.json [--write]

``jpeg-cap`` asks what the JPEG crops' stop-rule score would cost: training crops run with
the shipped optimiser to twice its cap, scored at each cap against the starting defaults:

    diip-tune record --export models/default-export --n 12 --task noise25 --task jpeg10 \
        --max-iters 80 --threads 2 --out bench/results/cpu_tune_crop_histories_steps2.json
    python bench/cpu_tune.py jpeg-cap
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# (option, its default in bench/results, what it holds): the files the modes read
RESULT_FILES = (
    ("--optimiser-choice", "cpu_tune_optimiser_choice.json", "optimiser: where its choice is written"),
    ("--optimiser-histories", "cpu_tune_optimiser_histories.json", "optimiser: its candidates' crop histories"),
    ("--heldout-histories", "tune_heldout_histories.json", "heldout: crops under the starting defaults"),
    (
        "--shipped-heldout-histories",
        "tune_heldout_histories_shipped.json",
        "held-out crops recorded with the shipped optimiser (diip-tune record --held-out)",
    ),
    (
        "--study-heldout-histories",
        "tune_heldout_histories_betas_0.7_0.99.json",
        "held-out crops recorded with the optimiser study's pick",
    ),
    (
        "--reference-histories",
        "cpu_tune_histories.json",
        "choose: region histories of the optimiser the optimiser step started from",
    ),
    ("--histories", "cpu_tune_histories.json", "region histories (record's --out)"),
    ("--crop-histories", "tune_histories.json", "diip-tune's training crops, one step per evaluation, to 150"),
    (
        "--crop-histories-steps",
        "cpu_tune_crop_histories_steps2.json",
        "jpeg-cap: training crops recorded with the shipped optimiser past its cap (diip-tune record)",
    ),
    (
        "--crop-guard-histories",
        "cpu_tune_crop_histories_guard.json",
        "steps: training crops recorded with the shipped optimiser (diip-tune record), for the early guard",
    ),
    ("--cpu-results", "cpu.json", "jpeg-cap: bench/cpu.py's results"),
)


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


def cap_on_regions(noise_runs: list, target: float, first: int, max_loss_db: float) -> tuple:
    """(cap, mean noise PSNR by cap): the first cap, from ``first`` in steps of 10 up to the
    shortest recorded run, whose region runs restore noise within ``max_loss_db`` of
    ``target``; the longest recorded where none does."""
    longest = min(len(r["psnr"]) for r in noise_runs)
    by_cap = {
        c: round(float(np.mean([r["psnr"][c - 1] for r in noise_runs])), 3) for c in range(first, longest + 1, 10)
    }
    fits = [c for c, v in by_cap.items() if v >= target - max_loss_db]
    return (min(fits) if fits else longest), by_cap


def early_guard_scores(runs: list, limit: float, candidates, final: int) -> tuple:
    """Per candidate iteration g: whether every run's guard decision at g is the one at index
    ``final`` of its history, and the noise / JPEG correlations there; then the first g
    that agrees with every noise run clearly kept (at most 0.8 of ``limit``), or None."""
    from diip_deploy.runtime.optimise.guard import keeps_restoration

    scores = {
        g: {
            "agrees": all(
                keeps_restoration(r["corr"][g - 1], limit) == keeps_restoration(r["corr"][final], limit) for r in runs
            ),
            "noise25_max_corr": round(max(r["corr"][g - 1] for r in runs if r["task"] == "noise25"), 3),
            "jpeg10_min_corr": round(min((r["corr"][g - 1] for r in runs if r["task"] == "jpeg10"), default=1.0), 3),
        }
        for g in candidates
    }
    margin = 0.8 * limit  # a kept region must be clearly kept: its correlation still falls
    good = [g for g, v in scores.items() if v["agrees"] and v["noise25_max_corr"] <= margin]
    rule = f"first iteration where every run's early decision is its final one, noise below {margin:.2f}"
    return scores, (min(good) if good else None), rule


def early_losses_on_crops(samples: list, limit: float, candidates, cap: int) -> dict:
    """Per candidate iteration g and task: how many crops the early guard at g hands back
    although the guard at the cap would keep their restoration.  A crop is one tile, the
    smallest region a photo can have, so its correlation is the noisiest: what a region's
    margin hides shows here."""
    from diip_deploy.runtime.optimise.guard import keeps_restoration

    def lost(s, g):
        c = s["correlation"]
        return not keeps_restoration(c[g - 1], limit) and keeps_restoration(c[min(cap, len(c)) - 1], limit)

    tasks = sorted({s["task"] for s in samples})
    return {g: {t: sum(lost(s, g) for s in samples if s["task"] == t) for t in tasks} for g in candidates}


def one_step_choice(manifest, name: str) -> int:
    """``max_iters`` or ``guard_at`` as chosen at one Adam step per evaluation (kept beside
    the choice in evaluations since two steps are shipped)."""
    earlier = manifest.data["validation"]["cpu_speed"][name]
    return earlier.get("one_step_choice", earlier)["chosen"]


def _same_optimiser(run: dict, rule) -> bool:
    """Whether recorded runs (or a choice) used the rule's learning rate and Adam betas
    (runs recorded before the betas were a setting used torch's, 0.9 and 0.999); ``rule``
    is settings or a dict of them."""

    def get(obj, name, default=None):
        return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name)

    ours = (get(run, "lr"), get(run, "adam_beta1", 0.9), get(run, "adam_beta2", 0.999))
    return ours == (get(rule, "lr"), get(rule, "adam_beta1", 0.9), get(rule, "adam_beta2", 0.999))


def choose(args) -> dict:
    """The overlap, the early guard iteration and the iteration cap, each by its rule,
    with the scores that chose them (training photos only)."""
    from diip_deploy.bench.tune import score
    from diip_deploy.manifest import load_manifest
    from diip_deploy.runtime.images.tiling import plan_tiles

    manifest = load_manifest(args.export)
    rule = manifest.settings()
    runs = [r for r in json.loads(args.histories.read_text())["runs"] if _same_optimiser(r, rule)]
    out: dict = {"lr": rule.lr, "split": "training photos only", "runs": len(runs)}

    # 1. iteration cap: the optimiser's choice where it chose the shipped optimiser, else on
    # diip-tune's crop histories (64 crops a task, run to 150)
    picked = json.loads(args.optimiser_choice.read_text()) if args.optimiser_choice.exists() else None
    from_optimiser = picked is not None and _same_optimiser(picked["chosen"], rule)
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
            if r["task"] == "noise25" and r["overlap"] == overlap and _same_optimiser(r, picked["reference"])
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


def steps(args) -> dict:
    """Adam steps per evaluation of the chain, on the training regions: the fewest
    evaluations (a cap in steps of 10) at which ``--histories`` (recorded with
    ``--steps-per-eval``) restore the noise regions within ``--max-loss-db`` of
    ``--reference-histories`` (one step per evaluation) at the shipped cap; then the early
    guard's iteration by ``choose``'s rule (every run's early decision is its final one,
    noise well under the threshold) and, where ``--crop-guard-histories`` exist, no
    training crop's noise restoration handed back early; and the JPEG regions' result at
    the new cap."""
    from diip_deploy.manifest import load_manifest

    manifest = load_manifest(args.export)
    shipped = manifest.settings()
    new = [r for r in json.loads(args.histories.read_text())["runs"] if r.get("steps_per_eval", 1) > 1]
    ref = [
        r
        for r in json.loads(args.reference_histories.read_text())["runs"]
        if r.get("steps_per_eval", 1) == 1 and _same_optimiser(r, shipped)
    ]
    if not new or not ref:
        raise SystemExit("steps: need region histories with --steps-per-eval above 1 and a reference at 1")
    per_eval = new[0]["steps_per_eval"]
    ref_k = min(one_step_choice(manifest, "max_iters"), min(len(r["psnr"]) for r in ref))

    def mean_at(runs, task, k):
        return round(float(np.mean([r["psnr"][k - 1] for r in runs if r["task"] == task])), 3)

    target = mean_at(ref, "noise25", ref_k)
    cap, by_cap = cap_on_regions([r for r in new if r["task"] == "noise25"], target, 10, args.max_loss_db)
    candidates = [g for g in (8, 10, 12, 14, 16, 20) if g < cap]
    agree, first_agreeing, guard_rule = early_guard_scores(new, shipped.residual_guard, candidates, cap - 1)
    crop_losses = None
    if args.crop_guard_histories.exists():  # single-tile crops too: no noise restoration lost early
        crops = json.loads(args.crop_guard_histories.read_text())
        if not crops["split"].startswith("training") or crops["settings"].get("steps_per_eval") != per_eval:
            raise SystemExit("steps: --crop-guard-histories must be training crops recorded with --steps-per-eval")
        crop_losses = early_losses_on_crops(crops["samples"], shipped.residual_guard, candidates, cap)
        good = [g for g in candidates if g >= (first_agreeing or cap) and crop_losses[g].get("noise25", 0) == 0]
        first_agreeing = min(good) if good else None
        guard_rule += (
            f"; and no noise crop of {args.crop_guard_histories.name} handed back early that the guard at the cap keeps"
        )
    out = {
        "split": "training photos only",
        "regions": sorted({r["photo"] for r in new}),
        "steps_per_eval": per_eval,
        "reference": {"steps_per_eval": 1, "max_iters": ref_k, "noise25_psnr": target},
        "max_iters": {
            "chosen": cap,
            "noise25_psnr_by_cap": by_cap,
            "rule": f"fewest evaluations (steps of 10) whose noise regions are within {args.max_loss_db} dB of one "
            f"step per evaluation at {ref_k}",
        },
        "jpeg10_psnr_at_cap": {
            "input": round(float(np.mean([r["input_psnr"] for r in new if r["task"] == "jpeg10"])), 3),
            "restored": mean_at(new, "jpeg10", cap),
            "reference_restored": mean_at(ref, "jpeg10", ref_k) if any(r["task"] == "jpeg10" for r in ref) else None,
        },
        "guard_at": {
            "chosen": first_agreeing or shipped.guard_at,
            "scores": agree,
            **({"crops_lost_early": crop_losses} if crop_losses else {}),
            "rule": guard_rule,
        },
        "evaluation_seconds": {
            "steps": round(float(np.mean([r["seconds"] / len(r["psnr"]) for r in new])), 3),
            "reference": round(float(np.mean([r["seconds"] / len(r["psnr"]) for r in ref])), 3),
        },
    }
    print(json.dumps(out, indent=1))
    return out


def candidate_settings(text: str) -> dict:
    """'lr/beta1/beta2' -> the settings it names."""
    lr, b1, b2 = (float(x) for x in text.split("/"))
    return {"lr": lr, "adam_beta1": b1, "adam_beta2": b2}


def optimiser(args) -> dict:
    """Adam's learning rate and betas, chosen on diip-tune's training crops (fp32, run to
    ``--iters`` with no stop), judged by the manifest's auto-stop PSNR at each cap: the
    (candidate, cap) with the fewest iterations that restores noise as well as the shipped
    optimiser at its cap, and JPEG no worse.  The first candidate is the shipped one."""
    from diip_deploy.bench.tune import record as record_crops
    from diip_deploy.bench.tune import score
    from diip_deploy.manifest import load_manifest

    manifest = load_manifest(args.export)
    # the study runs at one Adam step per evaluation, against the cap chosen for it
    shipped = {**manifest.defaults, "steps_per_eval": 1, "max_iters": one_step_choice(manifest, "max_iters")}
    crop_rule = {k: v for k, v in shipped.items() if k not in ("tile_overlap", "guard_at")}
    path = args.optimiser_histories
    kept = json.loads(path.read_text()) if path.exists() else {"histories": {}}
    for text in args.candidates.split(","):
        if text in kept["histories"]:
            continue
        given = candidate_settings(text)
        h = record_crops(
            args.export,
            args.crops,
            64,
            args.tasks.split(","),
            given["lr"],
            args.iters,
            8,
            args.threads,
            overrides={**{k: v for k, v in given.items() if k != "lr"}, "steps_per_eval": 1},
            log=lambda m: print(m, file=sys.stderr),
        )
        kept["histories"][text] = h
        path.write_text(json.dumps(kept) + "\n")
        print(f"{text}: {h['seconds']} s", file=sys.stderr)
    first = args.candidates.split(",")[0]
    if shipped["max_iters"] > args.iters:
        raise SystemExit(
            f"--iters {args.iters} is below the shipped cap {shipped['max_iters']}: the reference needs it"
        )
    caps = sorted({c for c in (30, 40, 45, 50, 60, 70, 80, 100) if c <= args.iters} | {shipped["max_iters"]})
    scores = {
        text: {cap: score(h, {**crop_rule, "max_iters": cap}) for cap in caps} for text, h in kept["histories"].items()
    }
    ref = scores[first][shipped["max_iters"]]
    # noise as good as the shipped optimiser at its cap; JPEG no worse than the shipped
    # optimiser at the same cap (a photo's JPEG is the guard's: it returns the input)
    ok = [
        (cap, -sc["noise25"]["auto"], text)
        for text, by_cap in scores.items()
        for cap, sc in by_cap.items()
        if sc["noise25"]["auto"] >= ref["noise25"]["auto"] - args.max_loss_db / 2
        and sc["jpeg10"]["auto"] >= scores[first][cap]["jpeg10"]["auto"] - args.max_loss_db
    ]
    cap, _, text = min(ok)
    return {
        "tool": "bench/cpu_tune.py optimiser",
        "split": "training photos only",
        "crops_per_task": args.crops,
        "precision": "fp32",
        "chosen": {**candidate_settings(text), "max_iters": cap},
        "reference": {**candidate_settings(first), "max_iters": shipped["max_iters"]},
        "auto_psnr": {
            text: {cap: {t: v["auto"] for t, v in sc.items()} for cap, sc in by_cap.items()}
            for text, by_cap in scores.items()
        },
        "rule": f"fewest iterations whose crop auto-stop PSNR on noise25 is within {args.max_loss_db / 2} dB "
        f"of the reference's at its cap, and on jpeg10 within {args.max_loss_db} dB of the reference's at the "
        "same cap",
    }


def crop_rules(manifest) -> tuple:
    """The shipped settings as diip-tune scores a crop (one tile: no overlap), and the same
    with the defaults this issue started from (bench/cpu.py's OLD) over them."""
    sys.path.insert(0, str(REPO / "bench"))
    from cpu import OLD

    crop_rule = {k: v for k, v in manifest.defaults.items() if k != "tile_overlap"}
    return crop_rule, {**crop_rule, **{k: v for k, v in OLD["options"].items() if k in crop_rule}}


def jpeg_cap(args) -> dict:
    """What the JPEG crops' stop-rule score would cost in speed, on *training* crops: the
    shipped rule's scores at caps from the shipped one up to the length of
    ``--crop-histories-steps`` (recorded with the shipped optimiser), against the defaults
    this issue started from on the same crops (``--crop-histories``, one step per
    evaluation, cap 150).  Each cap's noise-photo speed-up is cpu.json's shipped noise row
    scaled by the cap (that photo runs to the cap): an estimate, not a timing."""
    from diip_deploy.bench.tune import score
    from diip_deploy.manifest import load_manifest

    crop_rule, old_rule = crop_rules(load_manifest(args.export))
    new = json.loads(args.crop_histories_steps.read_text())
    if new["settings"].get("steps_per_eval", 1) != crop_rule["steps_per_eval"]:
        raise SystemExit("jpeg-cap: --crop-histories-steps were not recorded with the shipped steps per evaluation")
    names = {(s["task"], s["crop"]) for s in new["samples"]}
    ref = json.loads(args.crop_histories.read_text())
    same_crops = [s for s in ref["samples"] if (s["task"], s["crop"]) in names]
    ref = {**ref, "n_per_task": new["n_per_task"], "samples": same_crops}
    tasks = sorted({s["task"] for s in new["samples"]})
    before = score(ref, old_rule)
    noise = next(r for r in json.loads(args.cpu_results.read_text())["photo"]["rows"] if r["task"] == "noise25")
    shipped_cap = crop_rule["max_iters"]
    noise_old_s, noise_new_s = noise["old"]["seconds"], noise["new"]["seconds"]
    by_cap = {}
    for cap in range(shipped_cap, new["settings"]["max_iters"] + 1, 10):
        scores = score(new, {**crop_rule, "max_iters": cap})
        by_cap[cap] = {
            **{t: {"auto": scores[t]["auto"], "returned": scores[t]["returned"]} for t in tasks},
            "noise_photo_speedup_estimate": round(noise_old_s / (noise_new_s * cap / shipped_cap), 2),
        }
    reached = [c for c, row in by_cap.items() if row["jpeg10"]["auto"] >= before["jpeg10"]["auto"]]
    return {
        "split": "training photos only",
        "crops_per_task": new["n_per_task"],
        "histories": str(args.crop_histories_steps.relative_to(REPO)),
        "before": {
            "rule": {k: old_rule[k] for k in ("steps_per_eval", "max_iters", "guard_at")},
            **{t: {"auto": before[t]["auto"], "stop": before[t]["stop"]} for t in tasks},
        },
        "shipped_by_cap": by_cap,
        "jpeg10_auto_no_worse_from_cap": reached[0] if reached else None,
        "noise_photo_speedup_basis": f"bench/results/cpu.json noise25 row ({noise['measured']}), scaled by the cap",
    }


def heldout(args) -> dict:
    """diip-tune's held-out crop scores under the defaults this issue started from (fp32
    histories recorded to 150, the guard judging only the final result) and under the
    shipped ones (their own histories, recorded with the shipped optimiser where
    ``--shipped-heldout-histories`` exists): a report, never a choice.  Crops are one tile
    each, so the overlap does not enter.  ``auto`` is the stop rule's result; where the
    histories hold residual correlations, ``returned`` is what diip-run hands back after
    the guard (early at ``guard_at``, then on the stop's result)."""
    from diip_deploy.bench.tune import score
    from diip_deploy.manifest import load_manifest

    before = json.loads(args.heldout_histories.read_text())
    path = args.shipped_heldout_histories
    after = json.loads(path.read_text()) if path.exists() else before
    manifest = load_manifest(args.export)
    crop_rule, old_rule = crop_rules(manifest)
    out = {"crops_per_task": before["n_per_task"]}
    entries = [("before", args.heldout_histories, before, old_rule), ("shipped", path, after, crop_rule)]
    study = args.study_heldout_histories
    if args.optimiser_choice.exists() and study.exists():  # the optimiser study's crop pick, not adopted
        pick = json.loads(args.optimiser_choice.read_text())["chosen"]
        # the study ran at one step per evaluation, with the guard chosen for that
        one_step = {"steps_per_eval": 1, "guard_at": one_step_choice(manifest, "guard_at")}
        entries.append(("optimiser_study", study, json.loads(study.read_text()), {**crop_rule, **pick, **one_step}))
    for name, where, h, rule in entries:
        out[name] = {
            "histories": str((where if h is not before else args.heldout_histories).relative_to(REPO)),
            "optimiser": h["settings"],
            "max_iters": rule["max_iters"],
            "guard_at": rule["guard_at"],
            "scores": score(h, rule),  # score ends each run at the rule's cap
        }
    print(json.dumps(out, indent=1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("record", "choose", "heldout", "optimiser", "steps", "jpeg-cap"))
    ap.add_argument("--steps-per-eval", type=int, default=1, help="record: Adam steps per evaluation of the chain")
    ap.add_argument("--candidates", default="0.03/0.9/0.999,0.03/0.8/0.99", help="lr/beta1/beta2, comma separated")
    ap.add_argument("--crops", type=int, default=12, help="optimiser: training crops a task")
    for flag, name, what in RESULT_FILES:
        ap.add_argument(flag, type=Path, default=RESULTS / name, help=what)
    ap.add_argument("--max-loss-db", type=float, default=0.1)
    ap.add_argument("--write", action="store_true", help="write the choice into the export's manifest")
    ap.add_argument(
        "--not-adopted",
        metavar="WHY",
        default=None,
        help="optimiser --write: record the study in the manifest, defaults unchanged, with why",
    )
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--photos", default="skimage/astronaut,skimage/motorcycle_left")
    ap.add_argument("--tasks", default="noise25,jpeg10")
    ap.add_argument("--configs", default="0.03@16,0.1@16,0.1@8", help="lr@overlap, comma separated")
    ap.add_argument("--crop", type=int, default=160)
    ap.add_argument("--iters", type=int, default=90)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "cpu_tune_histories.json")
    args = ap.parse_args()
    if args.mode == "record":
        record(args)
        print(f"wrote {args.out}", file=sys.stderr)
        return
    if args.mode == "optimiser":
        choice = optimiser(args)
        print(json.dumps(choice, indent=1))
        args.optimiser_choice.write_text(json.dumps(choice, indent=1) + "\n")
        if args.write:
            from diip_deploy.manifest import read_data, set_defaults, write_manifest

            data = read_data(args.export)
            speed = data.setdefault("validation", {}).setdefault("cpu_speed", {})
            study = {k: v for k, v in choice.items() if k != "chosen"}
            study["crop_choice"] = choice["chosen"]  # the manifest's shape of the study
            if args.not_adopted:  # the study recorded beside the defaults, which stay
                speed["optimiser"] = {**speed.get("optimiser", {}), **study, "adopted": False, "why": args.not_adopted}
                what = f"the study, not adopted ({args.not_adopted})"
            else:
                set_defaults(data, {**data["defaults"], **choice["chosen"]})
                speed["optimiser"] = {**study, "adopted": True}
                what = str(choice["chosen"])
            write_manifest(args.export, data)
            print(f"wrote {what} into {args.export}/manifest.json", file=sys.stderr)
        return
    if args.mode == "steps":
        choice = steps(args)
        out = REPO / "bench" / "results" / "cpu_tune_steps_choice.json"
        out.write_text(json.dumps(choice, indent=1) + "\n")
        if args.write:
            from diip_deploy.manifest import read_data, set_defaults, write_manifest

            data = read_data(args.export)
            set_defaults(
                data,
                {
                    "steps_per_eval": choice["steps_per_eval"],
                    "max_iters": choice["max_iters"]["chosen"],
                    "guard_at": choice["guard_at"]["chosen"],
                },
            )
            speed = data.setdefault("validation", {}).setdefault("cpu_speed", {})
            speed["steps_per_eval"] = choice
            for name in ("max_iters", "guard_at"):  # now chosen in evaluations; the one-step choice kept
                earlier = speed.get(name, {})
                earlier = earlier.get("one_step_choice", earlier) if isinstance(earlier, dict) else earlier
                speed[name] = {
                    "chosen": choice[name]["chosen"],
                    "from": "validation.cpu_speed.steps_per_eval",
                    "one_step_choice": earlier,
                }
            write_manifest(args.export, data)
            print(f"wrote {args.export}/manifest.json", file=sys.stderr)
        return
    if args.mode == "jpeg-cap":
        out = jpeg_cap(args)
        print(json.dumps(out, indent=1))
        (REPO / "bench" / "results" / "cpu_jpeg_cap.json").write_text(json.dumps(out, indent=1) + "\n")
        return
    if args.mode == "heldout":
        (REPO / "bench" / "results" / "cpu_heldout_scores.json").write_text(json.dumps(heldout(args), indent=1) + "\n")
        return
    choice = choose(args)
    out = args.out.with_name("cpu_tune_choice.json") if args.out.name.endswith("histories.json") else args.out
    out.write_text(json.dumps(choice, indent=1) + "\n")
    if args.write:
        from diip_deploy.manifest import read_data, set_defaults, write_manifest

        data = read_data(args.export)
        chosen = {k: choice[k]["chosen"] for k in ("max_iters", "tile_overlap", "guard_at")}
        set_defaults(data, {**data["defaults"], **chosen})
        earlier = data.setdefault("validation", {}).get("cpu_speed", {})
        data["validation"]["cpu_speed"] = {
            "tool": "bench/cpu_tune.py choose",
            **choice,
            **({"optimiser": earlier["optimiser"]} if "optimiser" in earlier else {}),
        }
        write_manifest(args.export, data)
        print(f"wrote {chosen} into {args.export}/manifest.json", file=sys.stderr)


if __name__ == "__main__":
    main()
