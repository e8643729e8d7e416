"""cpu_tune.py steps, optimiser, jpeg-cap and heldout: the studies over recorded histories
(see cpu_tune.py for how to run them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from diip_deploy.bench.cpu_rules import (
    candidate_settings,
    cap_on_regions,
    early_guard_scores,
    early_losses_on_crops,
    one_step_choice,
    same_optimiser,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


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
        if r.get("steps_per_eval", 1) == 1 and same_optimiser(r, shipped)
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


def optimiser(args) -> dict:
    """Adam's learning rate and betas, chosen on diip-tune's training crops (fp32, run to
    ``--iters`` with no stop), judged by the manifest's auto-stop PSNR at each cap: the
    (candidate, cap) with the fewest iterations that restores noise as well as the shipped
    optimiser at its cap, and JPEG no worse.  The first candidate is the shipped one."""
    from diip_deploy.bench.tune import record as record_crops
    from diip_deploy.bench.tune_scoring import score
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
    from diip_deploy.bench.tune_scoring import score
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
    from diip_deploy.bench.tune_scoring import score
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
