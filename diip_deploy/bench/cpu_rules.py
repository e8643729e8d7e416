"""Pure rules over recorded DIIP histories that choose the CPU speed defaults.

``bench/cpu_tune.py`` records region and crop histories and writes its choices into the
manifest; the rules it chooses by live here, as functions of the histories alone, so they
can be read and tested apart from the recording.
"""

from __future__ import annotations

import numpy as np


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


def same_optimiser(run: dict, rule) -> bool:
    """Whether recorded runs (or a choice) used the rule's learning rate and Adam betas
    (runs recorded before the betas were a setting used torch's, 0.9 and 0.999); ``rule``
    is settings or a dict of them."""

    def get(obj, name, default=None):
        return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name)

    ours = (get(run, "lr"), get(run, "adam_beta1", 0.9), get(run, "adam_beta2", 0.999))
    return ours == (get(rule, "lr"), get(rule, "adam_beta1", 0.9), get(rule, "adam_beta2", 0.999))


def candidate_settings(text: str) -> dict:
    """'lr/beta1/beta2' -> the settings it names."""
    lr, b1, b2 = (float(x) for x in text.split("/"))
    return {"lr": lr, "adam_beta1": b1, "adam_beta2": b2}
